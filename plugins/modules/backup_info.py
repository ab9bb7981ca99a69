#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: backup_info
short_description: List the logical backups in a bucket, from their manifests
description:
  - Lists every backup of one source (or of every source under the prefix), newest first, read from the
    manifests. A folder without a manifest is listed as incomplete (an unfinished or failed run) and is never
    offered for restore.
  - A manifest only says a backup was committed. With O(verify) (the default) every object of every complete
    backup is checked with a HEAD (no data read) and the row says C(verified) true, or false with the C(problems)
    (an object missing or of another size); without it C(verified) is null (not checked).
  - With O(from_secondary) O(s3) is the immutable bucket and the rows are the backups its secure-copy records name,
    read at their recorded versions (a delete marker on top of a key does not hide a locked backup).
  - Read-only; runs the same in check mode.
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.s3
options:
  source:
    description: Source name to list. Omit to list every source under O(prefix).
    type: str
  prefix:
    description: Key prefix of all backups in the bucket.
    type: str
    default: backups
  include_incomplete:
    description: Also list folders without a manifest.
    type: bool
    default: true
  verify:
    description: Check every object of every complete backup with a HEAD (present, the manifest's size).
    type: bool
    default: true
  from_secondary:
    description: O(s3) is the immutable bucket; list the backups its secure-copy records name (O(source) required).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: Read-only.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: pgdr.supabase.logical_backup
"""

EXAMPLES = r"""
- name: List the backups of production
  pgdr.supabase.backup_info:
    source: production
    s3: "{{ backup_s3 }}"
  register: listing

- name: Show the newest complete backup
  ansible.builtin.debug:
    msg: "{{ listing.backups | selectattr('complete') | first }}"
"""

RETURN = r"""
backups:
  description: One row per backup, newest first.
  returned: always
  type: list
  elements: dict
  contains:
    backup_id:
      description: Sortable UTC timestamp id.
      type: str
      sample: 20261128T000000Z
    complete:
      description: Whether the manifest exists (only complete backups can be restored).
      type: bool
    source:
      description: Source name.
      type: str
    started_at:
      description: Start of the dump (complete backups only).
      type: str
    size:
      description: Bytes stored.
      type: int
    objects:
      description: Number of objects.
      type: int
    verified:
      description: C(true) when every object was found with the manifest's size, C(false) (see C(problems)), or
        C(null) when not checked.
      type: bool
    problems:
      description: What the check found wrong, one line per object.
      type: list
      elements: str
    proof:
      description:
        - The backup's proof (its C(proof.json), written by playbooks/prove.yml) - C(result) (V(passed) or
          V(failed)), C(proven_at), C(duration_s), C(restore_s); C(null) when it was never proven. Complete
          backups of the primary bucket only.
      type: dict
sources:
  description: Source names listed.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import fail, s3_spec, s3_target


def main():
    module = AnsibleModule(
        argument_spec={
            "source": {"type": "str"},
            "s3": s3_spec(),
            "prefix": {"type": "str", "default": "backups"},
            "include_incomplete": {"type": "bool", "default": True},
            "verify": {"type": "bool", "default": True},
            "from_secondary": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    from ansible_collections.pgdr.supabase.plugins.module_utils import catalog, immutable, proof

    p = module.params
    try:
        target = s3_target(p["s3"])
        target.check_bucket(step="list backups")
        if p["from_secondary"] and not p["source"]:
            module.fail_json(msg="from_secondary lists one source: give source (the name in object keys)")
        sources = [p["source"]] if p["source"] else catalog.list_sources(target, p["prefix"])
        backups = []
        for source in sources:
            if p["from_secondary"]:
                backups += immutable.list_secured(target, p["prefix"], source, verify=p["verify"])
                continue
            rows = catalog.list_backups(
                target, p["prefix"], source, include_incomplete=p["include_incomplete"], verify=p["verify"]
            )
            backups += proof.annotate(target, p["prefix"], source, rows)
        module.exit_json(changed=False, sources=sources, backups=backups)
    except Exception as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: backup_select
short_description: Choose a logical backup to restore and verify its checksums
description:
  - Resolves V(latest), a backup id, or V(before:<ISO-8601 time>) (the newest complete backup taken before that
    time) to one complete backup, reads its manifest, and streams every object to compare its size and SHA-256
    with the manifest, without writing anything anywhere.
  - Incomplete backups (no manifest) are never chosen. A corrupted or missing object fails the task, naming
    the object, before anything is written to a restore target.
  - Read-only; runs the same in check mode.
version_added: "0.1.0"
author: pgdr authors
extends_documentation_fragment:
  - pgdr.supabase.s3
options:
  source:
    description: Source name whose backups are considered.
    type: str
    required: true
  backup:
    description: V(latest), a backup id such as V(20261128T000000Z), or V(before:2026-11-28T14:00:00Z).
    type: str
    default: latest
  prefix:
    description: Key prefix of all backups in the bucket.
    type: str
    default: backups
  verify:
    description:
      - V(full) streams every object and checks its SHA-256; V(exists) only checks that the manifest's objects
        exist with the right sizes; V(none) skips both (the restore still verifies while it downloads).
    type: str
    default: full
    choices: [full, exists, none]
attributes:
  check_mode:
    support: full
    details: Read-only.
  diff_mode:
    support: none
seealso:
  - module: pgdr.supabase.logical_restore
  - module: pgdr.supabase.backup_info
"""

EXAMPLES = r"""
- name: Choose the newest backup taken before the incident and verify it
  pgdr.supabase.backup_select:
    source: production
    backup: "before:2026-11-28T14:00:00Z"
    s3: "{{ backup_s3 }}"
  register: chosen
"""

RETURN = r"""
backup_id:
  description: Id of the chosen backup.
  returned: always
  type: str
  sample: 20261128T000000Z
manifest_key:
  description: Key of its manifest.
  returned: always
  type: str
manifest:
  description: The backup's manifest (objects with keys, sizes and SHA-256, row counts, schema fingerprint, migrations).
  returned: always
  type: dict
verified:
  description: One entry per object checked, with its size and SHA-256.
  returned: always
  type: list
  elements: dict
age_s:
  description: Seconds between the backup's snapshot and now (the RPO if this backup is restored now).
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import (
    Interrupted,
    backup_set_spec,
    fail,
    long_running,
    s3_target,
)


def main():
    module = AnsibleModule(
        argument_spec={
            **backup_set_spec(),
            "backup": {"type": "str", "default": "latest"},
            "verify": {"type": "str", "default": "full", "choices": ["full", "exists", "none"]},
        },
        supports_check_mode=True,
    )
    long_running(module)  # stops cleanly on SIGTERM and when the controller is gone (issue 9.11)
    from ansible_collections.pgdr.supabase.plugins.module_utils import catalog, selection

    p = module.params
    try:
        target = s3_target(p["s3"])
        target.check_bucket(step="select backup")
        row = selection.resolve(target, p["prefix"], p["source"], p["backup"])
        manifest = selection.load_manifest(target, p["prefix"], p["source"], row["backup_id"])
        if p["verify"] == "full":
            verified = selection.verify_objects(target, manifest)
        elif p["verify"] == "exists":
            verified = selection.check_objects_exist(target, manifest)
        else:
            verified = []
        age = (catalog.utcnow() - selection.parse_time(manifest["started_at"])).total_seconds()
        module.exit_json(
            changed=False,
            backup_id=row["backup_id"],
            manifest_key=catalog.manifest_key(p["prefix"], p["source"], row["backup_id"]),
            manifest=manifest,
            verified=verified,
            age_s=round(age, 1),
            msg=f"backup {row['backup_id']} of {p['source']} chosen ({p['backup']}); "
            f"{len(verified)} objects verified ({p['verify']})",
        )
    except (Exception, Interrupted) as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()

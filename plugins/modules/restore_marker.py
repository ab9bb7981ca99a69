#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: restore_marker
short_description: Read a restored database's marker, or record its verification in it
description:
  - Every database a restore made carries a marker (the database's comment, or C(pgdr_restore.marker) in a
    project restored in place) naming the backup it holds and whether the restore completed.
  - With O(state=read) it returns the marker; with O(state=verified) it records the outcome of the verification
    and smoke tests (O(checks)) in it, so that a promote can refuse a database that was not verified.
  - A second run with the same outcome changes nothing.
version_added: "0.2.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  dsn:
    description: Connection string of the restored database. Never logged.
    type: str
    required: true
  state:
    description: V(read) returns the marker; V(verified) records O(checks) in it.
    type: str
    default: read
    choices: [read, verified]
  checks:
    description: The checks' results (each with C(name) and C(ok)), for O(state=verified).
    type: list
    elements: dict
    default: []
attributes:
  check_mode:
    support: full
    details: Reads the marker and says whether recording would change it; writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: pgdr.supabase.logical_restore
  - module: pgdr.supabase.verify_restore
"""

EXAMPLES = r"""
- name: Record that the restored database passed verification and smoke tests
  pgdr.supabase.restore_marker:
    dsn: "{{ restored_dsn }}"
    state: verified
    checks: "{{ verification.checks + smoke.checks }}"

- name: Read what a database holds
  pgdr.supabase.restore_marker:
    dsn: "{{ candidate_dsn }}"
  register: marker
"""

RETURN = r"""
marker:
  description:
    - The marker (backup id, status, and C(verified) with C(ok), C(checks), C(failed), C(at)); null without one.
  returned: always
  type: dict
verified:
  description: Whether the marker records a passed verification.
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import fail


def main():
    module = AnsibleModule(
        argument_spec={
            "dsn": {"type": "str", "required": True, "no_log": True},
            "state": {"type": "str", "default": "read", "choices": ["read", "verified"]},
            "checks": {"type": "list", "elements": "dict", "default": []},
        },
        supports_check_mode=True,
    )
    from ansible_collections.pgdr.supabase.plugins.module_utils import logical_restore, pg

    p = module.params
    try:
        with pg.connect(p["dsn"], step="connect to the restored database", application_name="pgdr marker") as conn:
            if p["state"] == "read":
                marker = logical_restore.marker_of(conn)
                changed = False
            else:
                changed, marker = logical_restore.record_checks(conn, p["checks"], dry_run=module.check_mode)
    except Exception as exc:  # the one error path
        fail(module, exc)
    verified = bool(((marker or {}).get("verified") or {}).get("ok"))
    module.exit_json(changed=changed, marker=marker, verified=verified)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: supabase_backups_info
short_description: List a hosted Supabase project's managed backups and its point-in-time recovery window
description:
  - Reads the project's Supabase-managed backups from the Management API, whether PITR is on, and the window a
    PITR restore can reach (earliest and latest restorable time).
  - With PITR on the backups list is often empty, and the window is what counts. Its upper bound lags real time by
    1 to 2 minutes (WAL is archived every 2 minutes).
  - Read-only; runs the same in check mode. 429 and 5xx answers are retried with jittered backoff.
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.supabase_api
  - pgdr.supabase.supabase_api.project
attributes:
  check_mode:
    support: full
    details: Read-only.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: pgdr.supabase.supabase_pitr_restore
  - module: pgdr.supabase.supabase_project_info
"""

EXAMPLES = r"""
- name: Read the PITR window
  pgdr.supabase.supabase_backups_info:
    token: "{{ vault_supabase_token }}"
    project_ref: abcdefghijklmnopqrst
  register: managed

- name: Show it
  ansible.builtin.debug:
    msg: "PITR {{ managed.window.earliest }} .. {{ managed.window.latest }}"
  when: managed.pitr_enabled
"""

RETURN = r"""
pitr_enabled:
  description: Whether the PITR add-on is on.
  returned: always
  type: bool
walg_enabled:
  description: Whether WAL-G (physical backups) is on.
  returned: always
  type: bool
region:
  description: The project's region.
  returned: always
  type: str
window:
  description:
    - The PITR window (C(earliest), C(latest) as ISO-8601 UTC, C(earliest_unix), C(latest_unix)); null without PITR.
  returned: always
  type: dict
  sample:
    earliest: "2026-11-21T10:00:00Z"
    latest: "2026-11-28T09:58:30Z"
    earliest_unix: 1795255200
    latest_unix: 1795859910
backups:
  description:
    - The managed backups, newest first (C(id), C(is_physical_backup), C(status), C(inserted_at)).
    - Can be empty with PITR.
  returned: always
  type: list
  elements: dict
latest_backup:
  description: The newest C(COMPLETED) backup, or null.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import fail


def main():
    from ansible_collections.pgdr.supabase.plugins.module_utils import supabase_api

    module = AnsibleModule(argument_spec=dict(supabase_api.MODULE_ARGUMENT_SPEC), supports_check_mode=True)
    p = module.params
    try:
        api = supabase_api.api_from_params(p)
        summary = supabase_api.backups_summary(api.backups(p["project_ref"]))
        module.exit_json(changed=False, **summary)
    except Exception as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: supabase_project_info
short_description: Read a hosted Supabase project's status and the health of its services
description:
  - Reads the project (status, region, database version) and the health of its services from the Supabase
    Management API. C(ready) is true when the status is C(ACTIVE_HEALTHY) and every service asked for is
    C(ACTIVE_HEALTHY).
  - Read-only; runs the same in check mode. 429 and 5xx answers are retried with jittered backoff.
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.supabase_api
  - pgdr.supabase.supabase_api.project
options:
  services:
    description: Services whose health is read.
    type: list
    elements: str
    default: [auth, db, pooler, realtime, rest, storage]
attributes:
  check_mode:
    support: full
    details: Read-only.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: pgdr.supabase.supabase_backups_info
  - module: pgdr.supabase.supabase_pitr_restore
"""

EXAMPLES = r"""
- name: Read the project's status
  pgdr.supabase.supabase_project_info:
    token: "{{ vault_supabase_token }}"
    project_ref: abcdefghijklmnopqrst
  register: project

- name: Require a healthy project
  ansible.builtin.assert:
    that: project.ready
"""

RETURN = r"""
project:
  description: The project as the API describes it (ref, name, region, organization_slug, created_at, status, database).
  returned: always
  type: dict
status:
  description: Project status, for example C(ACTIVE_HEALTHY) or C(RESTORING).
  returned: always
  type: str
  sample: ACTIVE_HEALTHY
health:
  description: One entry per service, with C(name), C(status) and, when unhealthy, C(error).
  returned: always
  type: list
  elements: dict
ready:
  description: Whether the project is C(ACTIVE_HEALTHY) and every service is healthy.
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import fail


def main():
    from ansible_collections.pgdr.supabase.plugins.module_utils import supabase_api

    module = AnsibleModule(
        argument_spec={
            **supabase_api.MODULE_ARGUMENT_SPEC,
            "services": {"type": "list", "elements": "str", "default": list(supabase_api.HEALTH_SERVICES)},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        api = supabase_api.api_from_params(p)
        project = api.project(p["project_ref"]) or {}
        health = api.health(p["project_ref"], p["services"]) or []
        status = project.get("status")
        ready = status == supabase_api.READY and all(s.get("status") == supabase_api.HEALTHY for s in health)
        module.exit_json(changed=False, project=project, status=status, health=health, ready=ready)
    except Exception as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: supabase_project
short_description: Create a hosted Supabase project to restore into, wait until it serves, or delete it
description:
  - With O(state=present), finds the project called O(name) in O(organization) or creates it through the Management
    API (C(POST /v1/projects)), then waits until it is C(ACTIVE_HEALTHY), every service in O(services) is healthy
    and its database accepts a connection. Returns the project (with its database host), its URL and its API keys
    (anon and service_role, publishable and secret, those the project has); register the result with C(no_log).
    The connection string is the filter C(pgdr.supabase.project_db_url) of O(db_url_template), the project and
    O(db_pass) (a module's result cannot carry a C(no_log) password).
  - A project that does not serve by O(wait_timeout) fails naming the project and its last status; with
    O(delete_on_failure) it is deleted first, otherwise kept for a look.
  - A create request that may have reached the API is never sent twice (the projects are listed before a resend).
  - With O(state=absent), deletes the project called O(name) (or O(project_ref)); nothing to do when it is gone.
  - Check mode creates and deletes nothing; it says what a run would do and reads an existing project's details.
version_added: "0.2.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.supabase_api
options:
  state:
    description: C(present) to find or create the project and wait for it, C(absent) to delete it.
    type: str
    choices: [present, absent]
    default: present
  name:
    description:
      - Project name, the key the module finds the project by (so a second run reuses it). Required unless
        O(state=absent) with O(project_ref).
    type: str
  project_ref:
    description: With O(state=absent), the ref of the project to delete (instead of O(name)).
    type: str
  organization:
    description: Organization slug (or id) the project belongs to. Required to create one.
    type: str
  region:
    description: Region of a new project, for example C(eu-west-1). Required to create one.
    type: str
  db_pass:
    description:
      - Password of the new project's C(postgres) role, from the vault. Keep it there; a kept project is reached
        with it.
    type: str
  instance_size:
    description: Compute size of a new project (C(desired_instance_size)); empty for the organization's default.
    type: str
  services:
    description: Services that must be healthy before the project counts as serving.
    type: list
    elements: str
    default: [auth, db, pooler, realtime, rest, storage]
  wait_timeout:
    description: Seconds to wait for the project to serve.
    type: int
    default: 1200
  poll_interval:
    description: Seconds between two status reads while waiting.
    type: int
    default: 10
  delete_on_failure:
    description: Delete the project when it does not come to serve (a throwaway restore target).
    type: bool
    default: false
  db_url_template:
    description:
      - The connection string of the project's database, with C({ref}), C({host}) (the database host the API
        gives), C({region}) and C({password}) (URL-quoted O(db_pass)). The direct host is IPv6 unless the project has
        the IPv4 add-on; the session pooler is
        C(postgresql://postgres.{ref}:{password}@aws-0-{region}.pooler.supabase.com:5432/postgres).
    type: str
    default: postgresql://postgres:{password}@{host}:5432/postgres?sslmode=require
  url_template:
    description: The project's API URL (C(SUPABASE_URL)), with C({ref}).
    type: str
    default: https://{ref}.supabase.co
  env_names:
    description:
      - The settings to return in RV(env), as variable name to kind, kind one of C(url), C(anon), C(service_role),
        C(publishable), C(secret). A kind the project lacks fails, naming the keys it has.
    type: dict
    default: {}
attributes:
  check_mode:
    support: full
    details: Creates, waits for and deletes nothing; reads an existing project.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: pgdr.supabase.supabase_project_info
  - module: pgdr.supabase.logical_restore
  - module: pgdr.supabase.env
"""

EXAMPLES = r"""
- name: A new project to restore into
  pgdr.supabase.supabase_project:
    token: "{{ vault_supabase_token }}"
    name: acme-restore-20261202t000000z
    organization: acme
    region: eu-west-1
    db_pass: "{{ vault_new_project_db_password }}"
    delete_on_failure: true
  register: new_project
  no_log: true

- name: Delete it after the drill
  pgdr.supabase.supabase_project:
    token: "{{ vault_supabase_token }}"
    name: acme-restore-20261202t000000z
    organization: acme
    state: absent
"""

RETURN = r"""
created:
  description: Whether this run created the project.
  returned: state is present
  type: bool
planned:
  description: Whether this was only a plan (check mode, or a project still coming up in check mode).
  returned: state is present
  type: bool
deleted:
  description: Whether this run deleted the project.
  returned: state is absent
  type: bool
ref:
  description: The project's ref (empty in check mode before it exists).
  returned: always
  type: str
project:
  description: The project (ref, name, organization, region, status, db_host, db_version).
  returned: state is present
  type: dict
url:
  description: The project's API URL.
  returned: state is present
  type: str
keys:
  description: The project's API keys by kind (anon, service_role, publishable, secret; secrets).
  returned: state is present
  type: dict
env:
  description: The settings named in O(env_names), variable to value (secrets), for the staging env store.
  returned: state is present
  type: dict
  sample: {SUPABASE_URL: https://abcdefghijklmnopqrst.supabase.co, SUPABASE_ANON_KEY: eyJ...}
wait:
  description: Seconds waited and the status timeline while the project came up.
  returned: state is present
  type: dict
msg:
  description: What was done, in one line.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import fail


def main():
    from ansible_collections.pgdr.supabase.plugins.module_utils import hosted_project, supabase_api

    module = AnsibleModule(
        argument_spec={
            **supabase_api.CONNECTION_ARGUMENT_SPEC,
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "name": {"type": "str"},
            "project_ref": {"type": "str"},
            "organization": {"type": "str"},
            "region": {"type": "str"},
            "db_pass": {"type": "str", "no_log": True},
            "instance_size": {"type": "str"},
            "services": {"type": "list", "elements": "str", "default": list(supabase_api.HEALTH_SERVICES)},
            "wait_timeout": {"type": "int", "default": 1200},
            "poll_interval": {"type": "int", "default": 10},
            "delete_on_failure": {"type": "bool", "default": False},
            "db_url_template": {"type": "str", "default": hosted_project.DEFAULT_DB_URL_TEMPLATE},
            "url_template": {"type": "str", "default": hosted_project.DEFAULT_URL_TEMPLATE},
            "env_names": {"type": "dict", "default": {}},
        },
        required_if=[("state", "present", ("name", "organization", "region", "db_pass"))],
        required_one_of=[("name", "project_ref")],
        supports_check_mode=True,
    )
    p = module.params
    try:
        api = supabase_api.api_from_connection(p)
        if p["state"] == "absent":
            if p["project_ref"]:
                supabase_api.validate_ref(p["project_ref"])
            result = hosted_project.remove_project(
                api, name=p["name"], organization=p["organization"], ref=p["project_ref"], check_mode=module.check_mode
            )
        else:
            result = hosted_project.ensure_project(
                api,
                name=p["name"],
                organization=p["organization"],
                region=p["region"],
                db_pass=p["db_pass"],
                instance_size=p["instance_size"],
                wait_timeout=p["wait_timeout"],
                poll_interval=p["poll_interval"],
                services=p["services"],
                delete_on_failure=p["delete_on_failure"],
                db_url_template=p["db_url_template"],
                url_template=p["url_template"],
                env_names=p["env_names"],
                check_mode=module.check_mode,
            )
        module.exit_json(**result)
    except Exception as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()

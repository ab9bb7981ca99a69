#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: env
short_description: Set environment variables in a dotenv file, SSM, Secrets Manager or a hook store
description:
  - Sets the given variables (for example C(SUPABASE_DB_URL), C(DATABASE_URL)) in an environment store, writing
    only those that differ. Used to re-point staging at a restored database.
  - The values are secrets. They are never returned; the plan holds names and actions, the diff masked values
    (V(postgresql://postgres:********@host:5432/postgres), V(****a1b2)).
  - O(state=read) returns the current values in clear in RV(values), for a play that passes them on; such a task
    needs C(no_log=true).
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.env_store
options:
  values:
    description: Variables to set, a dict of C(NAME) to value. Never logged. Required with O(state=present).
    type: dict
  names:
    description: Variables to read with O(state=read).
    type: list
    elements: str
  state:
    description: V(present) sets the values; V(read) only reads O(names).
    type: str
    default: present
    choices: [present, read]
attributes:
  check_mode:
    support: full
    details: Reads the store and returns the plan; writes nothing.
  diff_mode:
    support: full
    details: Names with masked values before and after.
  platform:
    platforms: posix
seealso:
  - module: pgdr.supabase.promote
"""

EXAMPLES = r"""
- name: Point staging at the restored database
  pgdr.supabase.env:
    store:
      type: ssm
      prefix: /myapp/staging
      region: eu-west-1
    values:
      SUPABASE_DB_URL: "{{ restored_dsn }}"
      DATABASE_URL: "{{ restored_dsn }}"

- name: Read what staging points at (the result holds secrets)
  pgdr.supabase.env:
    store: {type: dotenv, path: /srv/app/staging.env}
    names: [SUPABASE_DB_URL]
    state: read
  register: staging_env
  no_log: true
"""

RETURN = r"""
plan:
  description: One entry per variable, C(name) and C(action) (V(add), V(change) or V(unchanged)); no values.
  returned: with O(state=present)
  type: list
  elements: dict
  sample: [{name: SUPABASE_DB_URL, action: change}]
diff:
  description: Masked before/after (in diff mode).
  returned: in diff mode
  type: dict
values:
  description: The current values of O(names), in clear (C(null) when absent). Use C(no_log) on the task.
  returned: with O(state=read)
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import (
    Interrupted,
    fail,
    long_running,
    warn_cleaned,
)


def main():
    from ansible_collections.pgdr.supabase.plugins.module_utils import envstore, envstore_common

    module = AnsibleModule(
        argument_spec={
            "store": envstore.store_spec(),
            "values": {"type": "dict", "no_log": True},
            "names": {"type": "list", "elements": "str"},
            "state": {"type": "str", "default": "present", "choices": ["present", "read"]},
        },
        required_if=[("state", "present", ["values"]), ("state", "read", ["names"])],
        supports_check_mode=True,
    )
    long_running(module)  # stops cleanly on SIGTERM and when the controller is gone (issue 9.11)
    p = module.params
    try:
        store = envstore.make_store(p["store"])
        if p["state"] == "read":
            envstore_common.check_names(p["names"], store.label())
            module.exit_json(changed=False, values=store.read(p["names"]))
        result = envstore.ensure(store, p["values"], check_mode=module.check_mode, diff=module._diff)
        actions = [f"{s['name']}: {s['action']}" for s in result["plan"]]
        result["msg"] = f"{store.label()}: " + ", ".join(actions)
        warn_cleaned(module, result)
        module.exit_json(**result)
    except (Exception, Interrupted) as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()

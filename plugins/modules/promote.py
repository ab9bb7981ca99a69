#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: promote
short_description: Swap production's connection strings for a restored database, or roll the swap back
description:
  - O(action=promote) sets the given variables (production's C(SUPABASE_DB_URL), C(DATABASE_URL), ...) in the
    store after writing a rollback record with their previous values, the time, the reason, the target's name and
    the promoted values' masked form. Promoting values already in place changes nothing and leaves the record alone.
  - O(action=rollback) puts back the values the last promote replaced (removing variables it added) and marks the
    record rolled back; a second rollback changes nothing.
  - "Both need the typed confirmation: O(confirm) must equal O(target_name)."
  - >-
    Where the record lives: dotenv, the sibling file C(<file>.pgdr-rollback.json) (mode 600); ssm, parameters under
    C(<prefix>/_pgdr_rollback/); secretsmanager, the secret C(<name>-pgdr-rollback); command, the hook's own C(set)
    with names C(<NAME>__PGDR_PREVIOUS) and C(PGDR_ROLLBACK_RECORD). O(record_location) overrides it.
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.env_store
options:
  action:
    description: V(promote) or V(rollback).
    type: str
    required: true
    choices: [promote, rollback]
  values:
    description: Variables to promote, a dict of C(NAME) to value. Never logged. Required with O(action=promote).
    type: dict
  target_name:
    description: Name of the production target the store belongs to (from the inventory), recorded in the record.
    type: str
    required: true
  confirm:
    description: The typed confirmation; must equal O(target_name) exactly, for promote and for rollback.
    type: str
  record_location:
    description: Where the rollback record lives, instead of the store's default (a file, a parameter path, a secret
      name, or a hook variable name).
    type: str
  reason:
    description: Why (recorded in the rollback record).
    type: str
  initiator:
    description: Who (recorded in the rollback record).
    type: str
attributes:
  check_mode:
    support: full
    details: Checks the confirmation, reads the store and the record, returns the plan; writes nothing.
  diff_mode:
    support: full
    details: Names with masked values before and after.
  platform:
    platforms: posix
seealso:
  - module: pgdr.supabase.env
"""

EXAMPLES = r"""
- name: Promote the restored database
  pgdr.supabase.promote:
    action: promote
    store: {type: dotenv, path: /srv/app/production.env}
    values:
      SUPABASE_DB_URL: "{{ restored_dsn }}"
      DATABASE_URL: "{{ restored_dsn }}"
    target_name: acme-production
    confirm: "{{ promote_confirm }}"
    reason: "primary lost"

- name: Roll the promote back
  pgdr.supabase.promote:
    action: rollback
    store: {type: dotenv, path: /srv/app/production.env}
    target_name: acme-production
    confirm: "{{ rollback_confirm }}"
"""

RETURN = r"""
plan:
  description: One entry per variable, C(name) and C(action) (V(add), V(change), V(remove), V(unchanged)); no values.
  returned: always
  type: list
  elements: dict
record:
  description: The rollback record without the previous values in clear (target, state, times, masked values).
  returned: always
  type: dict
record_location:
  description: Where the rollback record is.
  returned: always
  type: str
diff:
  description: Masked before/after (in diff mode).
  returned: in diff mode
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
    from ansible_collections.pgdr.supabase.plugins.module_utils import envstore, promote

    module = AnsibleModule(
        argument_spec={
            "action": {"type": "str", "required": True, "choices": ["promote", "rollback"]},
            "store": envstore.store_spec(),
            "values": {"type": "dict", "no_log": True},
            "target_name": {"type": "str", "required": True},
            "confirm": {"type": "str"},
            "record_location": {"type": "str"},
            "reason": {"type": "str"},
            "initiator": {"type": "str"},
        },
        required_if=[("action", "promote", ["values"])],
        supports_check_mode=True,
    )
    long_running(module)  # stops cleanly on SIGTERM and when the controller is gone (issue 9.11)
    p = module.params
    try:
        var = "promote_confirm" if p["action"] == "promote" else "rollback_confirm"
        how = f"-e {var}={{target}} (module option confirm: {{target}})"
        promote.check_confirmation(p["target_name"], p["confirm"], p["action"], how=how)
        store = envstore.make_store(p["store"])
        common = {"record_location": p["record_location"], "check_mode": module.check_mode, "diff": module._diff}
        if p["action"] == "promote":
            result = promote.promote(
                store, p["values"], p["target_name"], reason=p["reason"], initiator=p["initiator"], **common
            )
        else:
            result = promote.rollback(store, p["target_name"], reason=p["reason"], **common)
        warn_cleaned(module, result)
        module.exit_json(**result)
    except (Exception, Interrupted) as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()

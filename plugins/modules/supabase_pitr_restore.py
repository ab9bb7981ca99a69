#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: supabase_pitr_restore
short_description: Restore a hosted Supabase project in place to a point in time (destructive)
description:
  - Restores the project's database in place to O(target_time) through the Management API PITR restore, then
    waits until the project is C(ACTIVE_HEALTHY) and every service is healthy.
  - B(Destructive.) The project goes offline during the restore and every change made after the target time is
    lost. It runs only when O(confirm) is exactly the project ref.
  - Before restoring it checks the token and ref, that PITR is on, that the target is inside the PITR window (whose
    upper bound lags real time by 1 to 2 minutes) and that the project is C(ACTIVE_HEALTHY) or C(ACTIVE_UNHEALTHY).
    A target outside the window fails here, with the window in the message.
  - B(Not idempotent.) The API keeps no record of past restores that a client can read, so a second run restores
    again, and loses whatever was written since the first. The typed confirmation is the guard; a run that finds
    the project still C(RESTORING) (for example after a wait that timed out) refuses to start another restore.
  - There is no API to cancel a restore. If the project stays C(RESTORING) past O(wait_timeout), the module fails
    with an escalation message (open a support ticket with the project ref and the restore time).
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.supabase_api
  - pgdr.supabase.supabase_api.project
options:
  target_time:
    description:
      - The point in time to restore to, as ISO-8601 with a time zone (V(2026-11-28T10:15:00Z)) or unix seconds.
        A time without a zone is refused. Fractions of a second are dropped.
    type: str
    required: true
  confirm:
    description: Typed confirmation; must be exactly O(project_ref). Anything else fails and says what to type.
    type: str
  reason:
    description: Why the restore is done; returned in the result for the incident record.
    type: str
  wait_timeout:
    description:
      - Seconds to wait, after the restore request, for the project and its services to be healthy.
        V(0) returns right after the request without waiting.
    type: int
    default: 3600
  poll_interval:
    description: Seconds between two status reads while waiting.
    type: float
    default: 15
  dsn:
    description:
      - The project's database connection string (the one the checks after the restore use). Only returned, with
        its password masked, as C(restore.dsn); never connected to here. Never logged.
    type: str
attributes:
  check_mode:
    support: full
    details: Checks token, ref, PITR window, target and project status with read-only calls, and returns the plan
      without restoring.
  diff_mode:
    support: full
    details: The diff says which point in time the project's data would be at, before and after.
  platform:
    platforms: posix
seealso:
  - module: pgdr.supabase.supabase_backups_info
  - module: pgdr.supabase.supabase_project_info
"""

EXAMPLES = r"""
- name: Restore production to just before the bad migration
  pgdr.supabase.supabase_pitr_restore:
    token: "{{ vault_supabase_token }}"
    project_ref: abcdefghijklmnopqrst
    target_time: "2026-11-28T10:14:00Z"
    confirm: abcdefghijklmnopqrst
    reason: bad migration 20261128101200 dropped a column
  register: restore
"""

RETURN = r"""
restore:
  description:
    - The one result every restore module returns (M(pgdr.supabase.logical_restore),
      M(pgdr.supabase.pgbackrest_restore), M(pgdr.supabase.supabase_pitr_restore)); M(pgdr.supabase.record) takes
      it as it is (its O(pgdr.supabase.record#module:restore) option).
    - C(dsn) the restored database's connection string with its password masked (the role puts the password back
      into a C(no_log) fact; empty while only planned for a target that does not exist yet), C(target) where it
      went, C(backup) (C(id), C(source), C(taken_at), and C(objects) for a logical backup), C(point_in_time) (the
      moment aimed at, C(target_time), and where the method knows it where replay stopped; null when the backup
      itself is given back), C(rpo_s) (data lost relative to it when measured; null when unknown), C(timings)
      (seconds per step), C(verification) (C(state) V(checksums), V(repository) or V(none), what the restore itself
      verified), C(method) (V(logical), V(pitr), V(supabase_pitr)), C(mode), C(planned) (check mode, only
      planned) and C(details) (what the record also keeps).
  returned: always
  type: dict
  sample:
    method: logical
    mode: new_database
    dsn: "postgresql://postgres:********@127.0.0.1:5433/restore_20261128t000000z"
    target: "127.0.0.1:5433/restore_20261128t000000z"
    backup: {id: 20261128T000000Z, source: production, taken_at: "2026-11-28T00:00:04Z"}
    point_in_time: null
    rpo_s: null
    timings: {download_verify: 1.2, data: 4.5}
    verification: {state: checksums}
    planned: false
    details: {}
plan:
  description: What the run did or would do (C(action), C(project_ref), C(project_status), C(target) with the
    verdict against the window, C(window), C(warning)).
  returned: always
  type: dict
target:
  description: The recovery target, ISO-8601 UTC, whole seconds.
  returned: always
  type: str
  sample: "2026-11-28T10:14:00Z"
target_unix:
  description: The recovery target as sent to the API (C(recovery_time_target_unix)).
  returned: always
  type: int
window:
  description: The PITR window read before restoring (C(earliest), C(latest), C(earliest_unix), C(latest_unix)).
  returned: always
  type: dict
requested_at:
  description: When the restore was requested (ISO-8601 UTC); absent in check mode.
  returned: changed and not check mode
  type: str
wait:
  description: The wait after the request (C(elapsed) seconds, the final C(status) and C(health), and a C(timeline)
    of the statuses seen); absent in check mode and with O(wait_timeout=0).
  returned: when waited
  type: dict
reason:
  description: The reason given.
  returned: always
  type: str
msg:
  description: One line saying what happened.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import fail


def restore_of(p, target, wait=None, planned=False):
    """The restore result (restore_result.build): the project restored in place to the target time."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import pg, restore_result

    ref = p["project_ref"]
    return restore_result.build(
        "supabase_pitr",
        "in_place",
        pg.mask_password(p["dsn"]) if p["dsn"] else "",
        f"project {ref}",
        {"id": f"pitr {target}", "source": f"project {ref}"},
        point_in_time={"target_time": target},
        timings={"wait_healthy": (wait or {}).get("elapsed") or 0},
        # The platform restores its own backups; nothing of them is ours to verify.
        verification={"state": "none"},
        planned=planned,
    )


def main():
    from ansible_collections.pgdr.supabase.plugins.module_utils import supabase_api, timefmt

    module = AnsibleModule(
        argument_spec={
            **supabase_api.MODULE_ARGUMENT_SPEC,
            "target_time": {"type": "str", "required": True},
            "confirm": {"type": "str"},
            "reason": {"type": "str"},
            "wait_timeout": {"type": "int", "default": 3600},
            "poll_interval": {"type": "float", "default": 15},
            "dsn": {"type": "str", "no_log": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    ref = p["project_ref"]
    try:
        supabase_api.validate_ref(ref)
        supabase_api.parse_target(p["target_time"])
        supabase_api.check_confirmation(p["confirm"], ref)
        api = supabase_api.api_from_params(p)
        plan = supabase_api.plan_pitr_restore(api, ref, p["target_time"])
        target = plan["target"]
        result = {
            "changed": True,
            "plan": plan,
            "target": target["target"],
            "target_unix": target["target_unix"],
            "window": plan["window"],
            "reason": p["reason"],
            "diff": {
                "before": f"project {ref}: data as of now\n",
                "after": f"project {ref}: data as of {target['target']} (restored in place)\n",
            },
        }
        if module.check_mode:
            module.exit_json(
                restore=restore_of(p, target["target"], planned=True),
                msg=f"would restore project {ref} in place to {target['target']}",
                **result,
            )
        result["requested_at"] = timefmt.iso_seconds(timefmt.utcnow())
        api.restore_pitr(ref, target["target_unix"])
        if p["wait_timeout"] <= 0:
            module.exit_json(
                restore=restore_of(p, target["target"]),
                msg=f"restore of project {ref} to {target['target']} requested; not waited",
                **result,
            )
        result["wait"] = api.wait_for(
            ref,
            timeout=p["wait_timeout"],
            poll_interval=p["poll_interval"],
            expect_transition_within=min(supabase_api.TRANSITION_GRACE, p["wait_timeout"]),
        )
        module.exit_json(
            restore=restore_of(p, target["target"], result["wait"]),
            msg=f"restored project {ref} in place to {target['target']}; healthy after {result['wait']['elapsed']} s",
            **result,
        )
    except Exception as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()

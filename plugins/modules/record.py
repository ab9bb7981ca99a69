#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: record
short_description: Record a restore, drill, promote or rollback in the incident log, the JSON-lines log and its reports
description:
  - Appends an entry (time in UTC, initiator, reason, whether the run changed anything, backup, target, each
    check's result, durations, measured RTO and RPO against their targets, outcome, the error of a failed run)
    to a Markdown incident log and a JSON-lines log, and writes the run's report as JSON, Markdown and a
    self-contained HTML page (inline CSS and SVG, nothing loaded from anywhere). With O(history_path), also
    rewrites the history page of every recorded run (see M(pgdr.supabase.history_report)).
  - Every run is its own entry, whatever state it reached; an input it cannot read (a point in time that is
    not a time) becomes a note on the entry, never a failure. The same run recorded twice (same kind, start
    time, initiator and reason; a retried task) is recorded once.
  - Operator-supplied text (reason, initiator, errors) is escaped in the Markdown and HTML; the JSON-lines log
    keeps it as given. Nothing secret is written; connection-string passwords are masked.
version_added: "0.1.0"
author: pgdr authors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - pgdr.supabase.s3
options:
  kind:
    description: What happened.
    type: str
    required: true
    choices: [restore, drill, promote, rollback, pitr_restore, supabase_pitr_restore]
  outcome:
    description: V(success) or V(failed).
    type: str
    required: true
    choices: [success, failed]
  reason:
    description: Why it was run (the operator's words).
    type: str
    default: ""
  initiator:
    description: Who ran it; default the OS user (the AWX user when the playbook passes C(awx_user_name)).
    type: str
  run_changed:
    description:
      - Whether the run changed anything. V(false) records a rerun that found everything in place; the entry is
        written all the same and the task then reports C(changed=false), so a second run of a playbook stays
        unchanged. Omit when unknown.
    type: bool
  restore:
    description:
      - The C(restore) result of a restore module (M(pgdr.supabase.logical_restore),
        M(pgdr.supabase.pgbackrest_restore), M(pgdr.supabase.supabase_pitr_restore)), taken as it is. Its
        C(backup), C(target), C(point_in_time) (its C(target_time); the whole of it in C(details.point_in_time)
        when it says more), C(rpo_s), C(timings) and C(details) stand in for O(backup), O(target),
        O(point_in_time), O(rpo_s), O(durations) and O(details), which, when given as well, add to it (O(durations)
        and O(details) merged, the others only where the result has nothing).
    type: dict
    default: {}
    suboptions:
      method:
        description: V(logical), V(pitr) or V(supabase_pitr).
        type: str
      mode:
        description: Where it went (V(new_database), V(project), V(new_project), V(new_cluster), V(in_place)).
        type: str
      dsn:
        description: The restored database's connection string; not recorded. Never logged.
        type: str
      target:
        description: Where it went, never secret.
        type: str
      backup:
        description: C(id), C(source), C(taken_at) (and C(objects) for a logical backup).
        type: dict
      point_in_time:
        description: C(target_time) and, where the method knows it, where replay stopped; null for none.
        type: dict
      rpo_s:
        description: Data lost relative to C(point_in_time) when measured; null when unknown.
        type: float
      timings:
        description: Seconds per step.
        type: dict
      verification:
        description: What the restore itself verified (C(state)).
        type: dict
      planned:
        description: Only planned (check mode).
        type: bool
      details:
        description: What else the record keeps (C(disarmed)).
        type: dict
  backup:
    description: The backup involved, with C(id), C(source), C(taken_at) and C(objects) (name, size, sha256).
    type: dict
    default: {}
  target:
    description: Where it went, as C(host:port/database) (masked if a connection string is given).
    type: str
  checks:
    description: Each check's result as a dict with C(name), C(ok), C(summary), C(details) and C(duration_s).
    type: list
    elements: dict
    default: []
  durations:
    description: Seconds per step, in the order the steps ran (the report's timeline).
    type: dict
    default: {}
  started_at:
    description: Start of the run (UTC epoch seconds); with O(verified_at) gives the measured RTO.
    type: float
  verified_at:
    description: When the restore was verified (UTC epoch seconds).
    type: float
  point_in_time:
    description:
      - The point the restore aims at (ISO-8601 time or UTC epoch seconds); the RPO is its distance to the
        backup's C(taken_at). Default O(started_at) (restoring the latest data available at the start).
      - Text that is not a time is recorded as a note, with no RPO.
      - Kept in the event as C(point_in_time); a PITR's C(details.point_in_time) (where replay stopped, the last
        replayed commit, the timeline, the base backup) and C(details.not_checked) show in the entry and the report.
    type: str
  rpo_s:
    description:
      - The achieved RPO in seconds when the restore path measured it (for PITR the target time minus the last
        replayed commit, the data lost relative to the target);
        overrides the distance between O(point_in_time) and the backup's C(taken_at). Negative means not measured.
    type: float
  details:
    description:
      - Anything else worth keeping, shown in the reports. C(error) is what stopped a failed run, C(disarmed) the
        list of what was disarmed in staging (cron jobs, webhooks); any other key is shown as a table.
    type: dict
    default: {}
  incidents_path:
    description: Markdown incident log to append to.
    type: path
    required: true
  jsonl_path:
    description: JSON-lines log to append to.
    type: path
    required: true
  report_dir:
    description: Folder for the run's JSON, Markdown and HTML report.
    type: path
  history_path:
    description: The history page to rewrite after recording (HTML); omit for none.
    type: path
  s3:
    description:
      - The bucket whose manifests the history page charts (backup size and duration per day); only read.
        Omit to leave the backups out of the page. A bucket that cannot be read is said on the page.
    required: false
  prefix:
    description: Key prefix of the backups in O(s3).
    type: str
    default: backups
  source:
    description: Source name whose backups the history page charts.
    type: str
  drill_max_age_days:
    description: The history page says plainly when the last successful drill is older than this.
    type: int
    default: 90
attributes:
  check_mode:
    support: full
    details: Says what would be recorded and which files would be written; writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Record the drill
  pgdr.supabase.record:
    kind: drill
    outcome: success
    run_changed: true
    reason: quarterly drill
    backup: {id: 20261128T000000Z, source: production, taken_at: "2026-11-28T00:00:03Z"}
    target: 127.0.0.1:5433/restore_20261128t000000z
    checks: [{name: tenant_isolation, ok: true, details: ""}]
    durations: {download_verify: 3.1, data: 410.0, post_data: 95.2}
    started_at: 1795850000.0
    verified_at: 1795850420.0
    details: {disarmed: ["cron job nightly-report", "webhook on public.orders"]}
    incidents_path: docs/ops/incidents.md
    jsonl_path: docs/ops/restore-events.jsonl
    report_dir: reports
    history_path: reports/history.html
    s3: "{{ backup_s3 }}"
    source: production
"""

RETURN = r"""
event:
  description: The event as recorded (the earlier one when this run is recorded already).
  returned: always
  type: dict
paths:
  description:
    - Files of the record (incidents, jsonl, history, report_json, report_md, report_html). The report paths are
      the files written (or, for a run recorded already, its earlier files); null in check mode and without a
      reports folder.
  returned: always
  type: dict
would_write:
  description: In check mode, the files a real run would write or append to.
  returned: in check mode
  type: list
  elements: str
recorded:
  description: Whether the entry was written now.
  returned: always
  type: bool
history:
  description: What the history page says (counts, the last successful drill, whether it is too old) and where
    its backups were read from.
  returned: when the history page was written
  type: dict
key:
  description: The run's identity; the same run is recorded once.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import fail, s3_spec, s3_target

# The history's bucket is read after the run, perhaps because S3 failed it: give up quickly.
HISTORY_S3_SETTINGS = {"max_attempts": 2, "connect_timeout": 5, "read_timeout": 30}


def main():
    module = AnsibleModule(
        argument_spec={
            "kind": {
                "type": "str",
                "required": True,
                "choices": ["restore", "drill", "promote", "rollback", "pitr_restore", "supabase_pitr_restore"],
            },
            "outcome": {"type": "str", "required": True, "choices": ["success", "failed"]},
            "reason": {"type": "str", "default": ""},
            "initiator": {"type": "str"},
            "run_changed": {"type": "bool"},
            "restore": {
                "type": "dict",
                "default": {},
                "options": {
                    "method": {"type": "str"},
                    "mode": {"type": "str"},
                    "dsn": {"type": "str", "no_log": True},
                    "target": {"type": "str"},
                    "backup": {"type": "dict"},
                    "point_in_time": {"type": "dict"},
                    "rpo_s": {"type": "float"},
                    "timings": {"type": "dict"},
                    "verification": {"type": "dict"},
                    "planned": {"type": "bool"},
                    "details": {"type": "dict"},
                },
            },
            "backup": {"type": "dict", "default": {}},
            "target": {"type": "str"},
            "checks": {"type": "list", "elements": "dict", "default": []},
            "durations": {"type": "dict", "default": {}},
            "started_at": {"type": "float"},
            "verified_at": {"type": "float"},
            "point_in_time": {"type": "str"},
            "rpo_s": {"type": "float"},
            "details": {"type": "dict", "default": {}},
            "incidents_path": {"type": "path", "required": True},
            "jsonl_path": {"type": "path", "required": True},
            "report_dir": {"type": "path"},
            "history_path": {"type": "path"},
            "s3": {**s3_spec(), "required": False},
            "prefix": {"type": "str", "default": "backups"},
            "source": {"type": "str"},
            "drill_max_age_days": {"type": "int", "default": 90},
        },
        supports_check_mode=True,
    )
    from ansible_collections.pgdr.supabase.plugins.module_utils import audit, restore_result

    p = dict(module.params)
    try:
        if p["restore"]:
            taken = restore_result.record_inputs(p["restore"])
            for name in ("backup", "target", "point_in_time", "rpo_s"):
                if taken[name] not in (None, "", {}):
                    p[name] = taken[name]
            p["durations"] = {**taken["durations"], **p["durations"]}
            p["details"] = {**taken["details"], **p["details"]}
        rto, rpo, notes = audit.measure(
            p["started_at"], p["verified_at"], p["point_in_time"], p["rpo_s"], p["backup"].get("taken_at")
        )
        event = audit.build_event(
            p["kind"],
            p["outcome"],
            p["reason"],
            audit.initiator(p["initiator"]),
            backup=p["backup"],
            target=p["target"],
            checks=p["checks"],
            durations=p["durations"],
            rto_s=rto,
            rpo_s=rpo,
            details=p["details"],
            changed=p["run_changed"],
            started_at=p["started_at"],
            notes=notes,
            point_in_time=p["point_in_time"],
        )
        result = audit.record(
            event,
            p["incidents_path"],
            p["jsonl_path"],
            p["report_dir"],
            module.check_mode,
            history_path=p["history_path"],
            history_target=s3_target(p["s3"], **HISTORY_S3_SETTINGS) if p["s3"] else None,
            history_prefix=p["prefix"],
            history_source=p["source"],
            drill_max_age_days=p["drill_max_age_days"],
        )
        for warning in result.pop("warnings", []):
            module.warn(warning)
        module.exit_json(**result)
    except Exception as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()

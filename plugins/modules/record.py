#!/usr/bin/python
# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: record
short_description: Record a restore, drill, promote or rollback in the incident log, the JSON-lines log and a report
description:
  - Appends an entry (time in UTC, initiator, reason, backup, target, each check's result, durations, measured
    RTO and RPO against their targets, outcome) to a Markdown incident log and a JSON-lines log, and writes the
    run's report as JSON and Markdown.
  - The same event (kind, backup, target, outcome and check results) is recorded once; a rerun that changed
    nothing records nothing new.
  - Nothing secret is written; connection strings are masked.
version_added: "0.1.0"
author: pgdr authors
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
  backup:
    description: The backup involved, with C(id), C(source), C(taken_at) and C(objects) (name, size, sha256).
    type: dict
    default: {}
  target:
    description: Where it went, as C(host:port/database) (masked if a connection string is given).
    type: str
  checks:
    description: Each check's result as a dict with C(name), C(ok) and C(details).
    type: list
    elements: dict
    default: []
  durations:
    description: Seconds per step.
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
    type: str
  rpo_s:
    description:
      - The achieved RPO in seconds when the restore path measured it (the newest archived WAL's age for PITR);
        overrides the distance between O(point_in_time) and the backup's C(taken_at). Negative means not measured.
    type: float
  details:
    description: Anything else worth keeping (for example the error that stopped a failed run).
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
    description: Folder for the run's JSON and Markdown report.
    type: path
attributes:
  check_mode:
    support: full
    details: Says what would be recorded; writes nothing.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Record the drill
  pgdr.supabase.record:
    kind: drill
    outcome: success
    reason: quarterly drill
    backup: {id: 20261128T000000Z, source: production, taken_at: "2026-11-28T00:00:03Z"}
    target: 127.0.0.1:5433/restore_20261128t000000z
    checks: [{name: tenant_isolation, ok: true, details: ""}]
    started_at: 1795850000.0
    verified_at: 1795850420.0
    incidents_path: docs/ops/incidents.md
    jsonl_path: docs/ops/restore-events.jsonl
    report_dir: reports
"""

RETURN = r"""
event:
  description: The event as recorded.
  returned: always
  type: dict
paths:
  description: Files written (incidents, jsonl, report_json, report_md).
  returned: always
  type: dict
key:
  description: The event's identity; an event with the same key is recorded once.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import fail


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
        },
        supports_check_mode=True,
    )
    from ansible_collections.pgdr.supabase.plugins.module_utils import audit, selection

    p = module.params
    try:
        rto = p["verified_at"] - p["started_at"] if p["verified_at"] and p["started_at"] else None
        rpo = None
        point = p["started_at"]
        if p["point_in_time"]:
            text = p["point_in_time"]
            point = float(text) if text.replace(".", "", 1).isdigit() else selection.parse_time(text).timestamp()
        if p["rpo_s"] is not None and p["rpo_s"] >= 0:
            rpo = p["rpo_s"]
        elif point and p["backup"].get("taken_at"):
            rpo = max(0.0, point - selection.parse_time(p["backup"]["taken_at"]).timestamp())
        event = audit.build_event(
            p["kind"],
            p["outcome"],
            p["reason"],
            audit.initiator(p["initiator"]),
            backup=p["backup"],
            target=p["target"],
            checks=p["checks"],
            durations=p["durations"],
            rto_s=round(rto, 1) if rto is not None else None,
            rpo_s=round(rpo, 1) if rpo is not None else None,
            details=p["details"],
        )
        result = audit.record(event, p["incidents_path"], p["jsonl_path"], p["report_dir"], module.check_mode)
        module.exit_json(event=event, **result)
    except Exception as exc:  # the one error path
        fail(module, exc)


if __name__ == "__main__":
    main()

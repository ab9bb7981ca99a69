"""The record of every restore, drill, promote and rollback: an entry in a Markdown incident log and a
JSON-lines log, and a JSON plus Markdown report of the run with measured RTO and RPO.

An event is recorded once: its key (kind, backup, target, outcome and the checks' results) is looked up in
the JSON-lines log first, so running the same successful drill again records nothing new.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re

from ansible_collections.pgdr.supabase.plugins.module_utils import catalog
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError, redact

KINDS = ("restore", "drill", "promote", "rollback", "pitr_restore", "supabase_pitr_restore")
RTO_TARGET_S = 4 * 3600
RPO_TARGET_S = 3600
INCIDENTS_HEADER = """# Restore and promotion log

Every restore, drill, promote and rollback run by the runbooks appends an entry here (newest last), and
the same entry as one JSON line to the JSON-lines log next to the reports. Do not edit past entries.
"""


def initiator(explicit=None):
    """Who ran it: the AWX/Controller user when the job passes it, else the OS user (the sudo caller first)."""
    if explicit:
        return str(explicit)
    return os.environ.get("SUDO_USER") or getpass.getuser()


def _fmt_duration(seconds):
    if seconds is None:
        return "n/a"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _check(check):
    """A check's result as recorded: name, ok, a one-line summary, and its details (structured, masked)."""
    details = check.get("details")
    masked = json.loads(redact(json.dumps(details, default=str))) if details is not None else None
    summary = check.get("summary") or (details if isinstance(details, str) else "")
    return {"name": check.get("name"), "ok": bool(check.get("ok")), "summary": redact(summary), "details": masked}


def build_event(
    kind,
    outcome,
    reason,
    who,
    backup=None,
    target=None,
    checks=(),
    durations=None,
    rto_s=None,
    rpo_s=None,
    details=None,
    now=None,
):
    """The event as recorded: everything an auditor asks (when, who, why, what, result), no secret."""
    if kind not in KINDS:
        raise DRError(f"unknown event kind {kind!r}; expected one of {', '.join(KINDS)}", step="record")
    checks = [_check(c) for c in checks]
    event = {
        "time": catalog.isoformat(now or catalog.utcnow()),
        "kind": kind,
        "outcome": outcome,
        "initiator": who,
        "reason": reason,
        "backup": backup or {},
        "target": redact(target),
        "checks": checks,
        "checks_passed": sum(1 for c in checks if c["ok"]),
        "checks_failed": sum(1 for c in checks if not c["ok"]),
        "durations_s": durations or {},
        "rto_s": rto_s,
        "rto_target_s": RTO_TARGET_S,
        "rto_met": None if rto_s is None else rto_s <= RTO_TARGET_S,
        "rpo_s": rpo_s,
        "rpo_target_s": RPO_TARGET_S,
        "rpo_met": None if rpo_s is None else rpo_s <= RPO_TARGET_S,
        "details": details or {},
    }
    identity = {k: event[k] for k in ("kind", "outcome", "target")}
    identity["backup_id"] = event["backup"].get("id")
    identity["checks"] = [(c["name"], c["ok"]) for c in checks]
    event["key"] = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return event


def already_recorded(jsonl_path, key):
    if not os.path.exists(jsonl_path):
        return False
    with open(jsonl_path, encoding="utf-8") as fh:
        for line in fh:
            try:
                if json.loads(line).get("key") == key:
                    return True
            except ValueError:
                continue
    return False


def markdown_entry(event):
    backup = event["backup"]
    lines = [
        f"## {event['time']} {event['kind']} {event['outcome'].upper()}",
        "",
        f"- Initiator: {event['initiator']}",
        f"- Reason: {event['reason'] or '(none given)'}",
        f"- Backup: {backup.get('id', 'n/a')} of {backup.get('source', 'n/a')}"
        + (f", taken {backup['taken_at']}" if backup.get("taken_at") else ""),
        f"- Target: {event['target'] or 'n/a'}",
        f"- RTO: {_fmt_duration(event['rto_s'])} (target {_fmt_duration(event['rto_target_s'])}"
        + ("" if event["rto_met"] is None else (", met" if event["rto_met"] else ", MISSED"))
        + ")",
        f"- RPO: {_fmt_duration(event['rpo_s'])} (target {_fmt_duration(event['rpo_target_s'])}"
        + ("" if event["rpo_met"] is None else (", met" if event["rpo_met"] else ", MISSED"))
        + ")",
        f"- Checks: {event['checks_passed']} passed, {event['checks_failed']} failed",
    ]
    for check in event["checks"]:
        mark = "pass" if check["ok"] else "FAIL"
        lines.append(f"  - {mark} {check['name']}" + (f": {check['summary']}" if check["summary"] else ""))
        # A check made of tests (a pgTAP file): each failing test with its diagnostics.
        for test in ((check.get("details") or {}).get("failed_tests") or [])[:10]:
            diagnostics = " / ".join(test.get("diagnostics") or [])
            lines.append(
                f"    - not ok {test.get('number')} {test.get('description')}"
                + (f": {diagnostics}" if diagnostics else "")
            )
    if event["durations_s"]:
        steps = ", ".join(f"{k} {_fmt_duration(v)}" for k, v in event["durations_s"].items())
        lines.append(f"- Durations: {steps}")
    lines.append(f"- Event key: {event['key']}")
    return "\n".join(lines) + "\n"


def report_markdown(event):
    verdict = "PASSED" if event["outcome"] == "success" else "FAILED"
    header = f"# {event['kind'].replace('_', ' ').title()} report: {verdict}\n\n"
    checksums = event["backup"].get("objects") or []
    body = markdown_entry(event).split("\n", 2)[2]
    if checksums:
        body += "\n## Backup objects\n\n| object | size | SHA-256 |\n|---|---|---|\n"
        body += "".join(f"| {o['name']} | {o['size']} | `{o['sha256']}` |\n" for o in checksums)
    return header + body


def _append(path, text, header=None):
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        new = not os.path.exists(path)
        with open(path, "a", encoding="utf-8") as fh:
            if new and header:
                fh.write(header + "\n")
            fh.write(text)
    except OSError as exc:
        raise DRError(
            f"cannot write the record: {exc.strerror}",
            step="record",
            subject=path,
            hint="check the path and its permissions (record paths are inventory settings)",
        ) from exc


def record(event, incidents_path, jsonl_path, report_dir=None, check_mode=False):
    """Append the event to both logs and write the report, unless the same event is recorded already."""
    stamp = event["time"].replace(":", "").replace("-", "").split(".")[0]
    backup_id = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(event["backup"].get("id") or "none")).strip("-")
    base = os.path.join(report_dir, f"{event['kind']}-{backup_id}-{stamp}") if report_dir else None
    paths = {
        "incidents": incidents_path,
        "jsonl": jsonl_path,
        "report_json": f"{base}.json" if base else None,
        "report_md": f"{base}.md" if base else None,
    }
    if already_recorded(jsonl_path, event["key"]):
        return {"changed": False, "key": event["key"], "paths": paths, "msg": "this event is recorded already"}
    if check_mode:
        return {"changed": True, "key": event["key"], "paths": paths, "msg": "would record the event"}
    _append(incidents_path, "\n" + markdown_entry(event), header=INCIDENTS_HEADER)
    _append(jsonl_path, json.dumps(event, sort_keys=True) + "\n")
    if base:
        _append(paths["report_json"], json.dumps(event, indent=2, sort_keys=True) + "\n")
        _append(paths["report_md"], report_markdown(event))
    return {"changed": True, "key": event["key"], "paths": paths, "msg": "event recorded"}

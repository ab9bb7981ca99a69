"""The record of every restore, drill, promote and rollback: an entry in a Markdown incident log and a
JSON-lines log, the run's report as JSON, Markdown and a self-contained HTML page with measured RTO and RPO,
and the history page of every run.

Every run is its own entry, whatever state it reached: a run that failed on bad input before the restore, a
rerun that changed nothing (its entry says so). The record takes what the run knew and marks the rest unknown;
an input it cannot read (a point in time that is not a time) becomes a note on the entry, never a failure of
the record. An event's key is the run's identity (kind, start time, initiator, reason): the same run recorded
twice (a retried task) is recorded once, while two runs are two entries.

Operator-supplied text is escaped in the Markdown and HTML (one helper, :mod:`render`); the JSON-lines log keeps
the raw value. Connection-string passwords are masked everywhere.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import uuid

from ansible_collections.pgdr.supabase.plugins.module_utils import history, pages, render, timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError, redact
from ansible_collections.pgdr.supabase.plugins.module_utils.render import md

KINDS = ("restore", "drill", "promote", "rollback", "pitr_restore", "supabase_pitr_restore")
RTO_TARGET_S = 4 * 3600
RPO_TARGET_S = 3600
INCIDENTS_HEADER = """# Restore and promotion log

Every restore, drill, promote and rollback run by the runbooks appends an entry here (newest last), and
the same entry as one JSON line to the JSON-lines log next to the reports. Do not edit past entries.
"""
REPORT_SUFFIXES = (".json", ".md", ".html")


def initiator(explicit=None):
    """Who ran it: the AWX/Controller user when the job passes it, else the OS user (the sudo caller first)."""
    if explicit:
        return str(explicit)
    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (a container)
        return f"uid {os.getuid()}"


def _masked(value):
    """A JSON value with every connection-string password masked, string by string (masking the JSON text
    instead would let ``password=\\S+`` eat the quotes around it)."""
    if isinstance(value, dict):
        return {redact(str(k)): _masked(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(str(value))


def _check(check):
    """A check's result as recorded: name, ok, a one-line summary, its duration, and its details (masked)."""
    if not isinstance(check, dict):
        check = {"name": str(check), "ok": False, "summary": "not a check result"}
    details = check.get("details")
    summary = check.get("summary") or (details if isinstance(details, str) else "")
    out = {
        "name": redact(str(check.get("name") or "unnamed")),
        "ok": bool(check.get("ok")),
        "summary": redact(str(summary)),
        "details": _masked(details),
    }
    if isinstance(check.get("duration_s"), (int, float)):
        out["duration_s"] = check["duration_s"]
    return out


def _epoch(value):
    """A positive number of UTC epoch seconds, or None."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def _moment(value):
    """An ISO-8601 time or UTC epoch seconds as epoch seconds; ValueError when it is neither."""
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    return timefmt.parse(text).timestamp()


def measure(started_at=None, verified_at=None, point_in_time=None, rpo_s=None, taken_at=None):
    """(RTO, RPO, notes) from whatever the run reached; a value that cannot be measured is None, with a note
    saying why when an input could not be read.

    RTO: verified minus started. RPO: the one the restore measured (rpo_s >= 0), else the point aimed at
    (default the start of the run) minus the backup's taken_at."""
    notes = []
    started, verified = _epoch(started_at), _epoch(verified_at)
    rto = round(verified - started, 1) if started and verified and verified >= started else None
    if rpo_s is not None:
        try:
            rpo_s = float(rpo_s)
        except (TypeError, ValueError):
            notes.append(f"the measured RPO {rpo_s!r} is not a number: ignored")
            rpo_s = None
    if rpo_s is not None and rpo_s >= 0:
        return rto, round(rpo_s, 1), notes
    point = started
    if point_in_time not in (None, ""):
        try:
            point = _moment(point_in_time)
        except ValueError:
            notes.append(f"the point in time {str(point_in_time)!r} is not an ISO-8601 time: the RPO is not measured")
            point = None
    if point is None or not taken_at:
        return rto, None, notes
    try:
        taken = _moment(taken_at)
    except ValueError:
        notes.append(f"the backup's time {str(taken_at)!r} is not an ISO-8601 time: the RPO is not measured")
        return rto, None, notes
    return rto, round(max(0.0, point - taken), 1), notes


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
    changed=None,
    started_at=None,
    notes=(),
    point_in_time=None,
):
    """The event as recorded: everything an auditor asks (when, who, why, what, result), no secret.
    point_in_time: the moment aimed at, as given (a PITR's target time); details.point_in_time, when the restore
    gives it, says where replay stopped, the last replayed commit, the timeline and the base backup."""
    if kind not in KINDS:
        raise DRError(f"unknown event kind {kind!r}; expected one of {', '.join(KINDS)}", step="record")
    checks = [_check(c) for c in checks or ()]
    backup = _masked(backup) if isinstance(backup, dict) else {}
    durations = {
        str(k): v for k, v in (durations or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    started = _epoch(started_at)
    event = {
        "time": timefmt.iso(now or timefmt.utcnow()),
        "kind": kind,
        "outcome": outcome,
        "changed": changed,
        "initiator": redact(who),
        "reason": redact(reason or ""),
        "started_at": timefmt.iso(started) if started else None,
        "backup": backup,
        "target": redact(target) or None,
        "point_in_time": redact(str(point_in_time)) if point_in_time not in (None, "") else None,
        "checks": checks,
        "checks_passed": sum(1 for c in checks if c["ok"]),
        "checks_failed": sum(1 for c in checks if not c["ok"]),
        "durations_s": durations,
        "rto_s": rto_s,
        "rto_target_s": RTO_TARGET_S,
        "rto_met": None if rto_s is None else rto_s <= RTO_TARGET_S,
        "rpo_s": rpo_s,
        "rpo_target_s": RPO_TARGET_S,
        "rpo_met": None if rpo_s is None else rpo_s <= RPO_TARGET_S,
        "details": _masked(details) or {},
        "notes": [redact(n) for n in notes],
    }
    # The run's identity: the same run recorded again (a retried task) has the same key; another run, even one
    # that found everything in place, has its own. Without a start time every call is a run of its own.
    identity = {"kind": kind, "initiator": event["initiator"], "reason": event["reason"]}
    identity["run"] = event["started_at"] or f"{event['time']} {uuid.uuid4().hex}"
    event["key"] = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return event


def find_recorded(jsonl_path, key):
    """The event with this key in the JSON-lines log, or None."""
    if not os.path.exists(jsonl_path):
        return None
    with open(jsonl_path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("key") == key:
                return event
    return None


def _objective_line(event, name):
    value, target, met = event[f"{name}_s"], event[f"{name}_target_s"], event[f"{name}_met"]
    word = "" if met is None else (", met" if met else ", MISSED")
    return f"- {name.upper()}: {render.duration(value)} (target {render.duration(target)}{word})"


def point_in_time_text(event):
    """One line on the moment restored (PITR): the target, where replay stopped, the last replayed commit, the
    timeline and the base backup; None when the run aimed at no point in time."""
    point = (event.get("details") or {}).get("point_in_time") or {}
    target = point.get("target_time") or event.get("point_in_time")
    if not target:
        return None
    text = f"target {target}"
    if point.get("restored_to") and point["restored_to"] != target:
        text += f", replay stopped at {point['restored_to']}"
    if point:
        text += f", last replayed commit {point.get('last_replayed_commit_at') or 'none'}"
    if point.get("timeline") is not None:
        text += f", timeline {point['timeline']}"
    if point.get("base_backup"):
        text += f", base backup {point['base_backup']}"
    return text


def point_in_time_lines(event):
    text = point_in_time_text(event)
    lines = [f"- Point in time: {md(text)}"] if text else []
    not_checked = (event.get("details") or {}).get("not_checked") or []
    lines += [f"- Not checked: {md(item)}" for item in not_checked]
    return lines


def markdown_entry(event):
    """The incident log's entry: every operator-supplied or run-supplied value escaped, each on its own line."""
    backup = event.get("backup") or {}
    details = event.get("details") or {}
    taken = f", taken {md(backup['taken_at'])}" if backup.get("taken_at") else ""
    changed = {True: "yes", False: "nothing (everything was in place already: a rerun)"}.get(
        event.get("changed"), "unknown"
    )
    lines = [
        f"## {event['time']} {event['kind']} {event['outcome'].upper()}",
        "",
        f"- Initiator: {md(event['initiator'])}",
        f"- Reason: {md(event['reason']) or '(none given)'}",
        f"- Changed: {changed}",
    ]
    if details.get("error"):
        lines.append(f"- Error: {md(details['error'])}")
    lines += [
        f"- Backup: {md(backup.get('id') or 'n/a')} of {md(backup.get('source') or 'n/a')}{taken}",
        f"- Target: {md(event.get('target') or 'n/a')}",
        *point_in_time_lines(event),
        _objective_line(event, "rto"),
        _objective_line(event, "rpo"),
        f"- Checks: {event['checks_passed']} passed, {event['checks_failed']} failed",
    ]
    for check in event["checks"]:
        mark = "pass" if check["ok"] else "FAIL"
        lines.append(f"  - {mark} {md(check['name'])}" + (f": {md(check['summary'])}" if check["summary"] else ""))
        # A check made of tests (a pgTAP file): each failing test with its diagnostics.
        details = check.get("details") if isinstance(check.get("details"), dict) else {}  # may be plain text
        for test in (details.get("failed_tests") or [])[:10]:
            diagnostics = " / ".join(test.get("diagnostics") or [])
            lines.append(
                f"    - not ok {test.get('number')} {md(test.get('description') or '')}"
                + (f": {md(diagnostics)}" if diagnostics else "")
            )
    if event["durations_s"]:
        steps = ", ".join(f"{md(k)} {render.duration(v)}" for k, v in event["durations_s"].items())
        lines.append(f"- Durations: {steps}")
    for note in event.get("notes") or []:
        lines.append(f"- Note: {md(note)}")
    report = (event.get("report") or {}).get("html")
    if report:
        lines.append(f"- Report: {md(report)}")
    lines.append(f"- Event key: {event['key']}")
    return "\n".join(lines) + "\n"


def report_markdown(event):
    verdict = pages.verdict(event)
    header = f"# {pages.kind_title(event['kind'])} report: {verdict}\n\n"
    body = markdown_entry(event).split("\n", 2)[2]
    objects = (event.get("backup") or {}).get("objects") or []
    if objects:
        body += "\n## Backup objects\n\n| object | size | SHA-256 |\n|---|---|---|\n"
        body += "".join(
            f"| {md(o.get('name'))} | {md(o.get('size'))} | {render.md_code(o.get('sha256') or '')} |\n"
            for o in objects
            if isinstance(o, dict)
        )
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


def report_base(event, report_dir):
    """<report_dir>/<kind>-<backup id>-<UTC time>, with -2, -3 ... when a report of that name exists already."""
    stamp = event["time"].replace(":", "").replace("-", "").split(".")[0]
    base = os.path.join(report_dir, f"{event['kind']}-{render.slug(event['backup'].get('id'))}-{stamp}")
    candidate, n = base, 1
    while any(os.path.exists(candidate + suffix) for suffix in REPORT_SUFFIXES):
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def record(
    event,
    incidents_path,
    jsonl_path,
    report_dir=None,
    check_mode=False,
    history_path=None,
    history_target=None,
    history_prefix="backups",
    history_source=None,
    drill_max_age_days=pages.DRILL_MAX_AGE_DAYS,
):
    """Write the run's reports (JSON, Markdown, HTML), append the event to both logs and rewrite the history page,
    unless this same run is recorded already. ``changed`` is true when the run itself changed something: the
    entry of a rerun that changed nothing is written all the same, and is not a change."""
    paths = {"incidents": incidents_path, "jsonl": jsonl_path, "history": history_path}
    earlier = find_recorded(jsonl_path, event["key"])
    if earlier is not None:
        paths.update(
            {f"report_{s.strip('.')}": (earlier.get("report") or {}).get(s.strip(".")) for s in REPORT_SUFFIXES}
        )
        return {
            "changed": False,
            "recorded": False,
            "key": event["key"],
            "paths": paths,
            "event": earlier,
            "msg": "this run is recorded already",
        }
    base = report_base(event, report_dir) if report_dir else None
    planned = {s.strip("."): f"{base}{s}" for s in REPORT_SUFFIXES} if base else {}
    run_changed = event.get("changed") is not False
    if check_mode:
        paths.update({f"report_{k}": None for k in ("json", "md", "html")})
        would = [*planned.values(), incidents_path, jsonl_path] + ([history_path] if history_path else [])
        return {
            "changed": run_changed,
            "recorded": False,
            "key": event["key"],
            "paths": paths,
            "would_write": would,
            "event": event,
            "msg": "would record the event",
        }
    event = dict(event, report=dict(planned, history=history_path) if planned else {"history": history_path})
    if base:
        history.write_atomic(planned["json"], json.dumps(event, indent=2) + "\n")
        history.write_atomic(planned["md"], report_markdown(event))
        history.write_atomic(planned["html"], pages.run_page(event))
    _append(incidents_path, "\n" + markdown_entry(event), header=INCIDENTS_HEADER)
    # Keys in the order they were built: the steps' durations keep the order they ran in.
    _append(jsonl_path, json.dumps(event) + "\n")
    result = {"changed": run_changed, "recorded": True, "key": event["key"], "event": event, "paths": paths}
    paths.update(
        {f"report_{k}": v for k, v in planned.items()} or {f"report_{k}": None for k in ("json", "md", "html")}
    )
    if history_path:
        # The entry and the run's reports are written: a history page that cannot be is a warning, not a
        # failure of the record (the next run rewrites it).
        try:
            written = history.write_history(
                history_path,
                jsonl_path,
                target=history_target,
                prefix=history_prefix,
                source=history_source,
                drill_max_age_days=drill_max_age_days,
            )
            result["history"] = {k: written[k] for k in ("summary", "backups_note")}
        except DRError as exc:
            paths["history"] = None
            result["warnings"] = [f"the history page was not written: {exc}"]
    result["msg"] = "event recorded" if run_changed else "event recorded: a run that changed nothing"
    return result

"""The history page: every recorded run read back from the JSON-lines log, and the backups read from their
manifests in the bucket, rendered by :mod:`pages` and written in one piece (a reader never sees half a page).

Reading the bucket is best effort: the page is the evidence of the runs, so a bucket that cannot be read (the
reason a restore failed, perhaps) is said on the page, never a reason not to write it.
"""

from __future__ import annotations

import json
import os
import re

from ansible_collections.pgdr.supabase.plugins.module_utils import catalog, files, pages, render, timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError, redact

_FOOTER = re.compile(r"<footer>.*?</footer>", re.DOTALL)


def load_events(jsonl_path):
    """(events, lines that are not an event) from the JSON-lines log; a missing log is an empty history."""
    events, bad = [], 0
    if not jsonl_path or not os.path.exists(jsonl_path):
        return events, bad
    try:
        with open(jsonl_path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    bad += 1
                    continue
                if isinstance(event, dict):
                    events.append(event)
                else:
                    bad += 1
    except OSError as exc:
        raise DRError(
            f"cannot read the JSON-lines log: {exc.strerror}",
            step="read events",
            subject=jsonl_path,
            hint="check the path (pgdr_events_path in the inventory) and its permissions",
        ) from exc
    return events, bad


def read_backups(target, prefix, source):
    """(rows, note): the source's backups from their manifests, newest first, or None and why they could not be
    read. Only reads."""
    where = target.where(catalog.source_prefix(prefix, source))
    try:
        rows = catalog.list_backups(target, prefix, source, include_incomplete=True)
    except DRError as exc:
        return None, f"The backups could not be read from {where}: {exc}"
    except Exception as exc:  # the page is still written; the note says what went wrong
        return None, redact(f"The backups could not be read from {where}: {type(exc).__name__}: {exc}")
    return rows, f"Backups of {source} read from their manifests in {where}."


def summary(events, now, drill_max_age_days=pages.DRILL_MAX_AGE_DAYS):
    """What a task result says about the history: counts and the drill status."""
    status = pages.drill_status(events, now, drill_max_age_days)
    return {
        "events": len(events),
        "drills": sum(1 for e in events if e.get("kind") == "drill"),
        "last_successful_drill": status["last"],
        "last_successful_drill_age_days": status["age_days"],
        "drill_stale": status["stale"],
        "drill_status": status["message"],
    }


def build(events, bad_lines, jsonl_path, backups, backups_note, now, drill_max_age_days, link_dir):
    log_note = f"{render.count(len(events), 'run')} recorded in {jsonl_path}"
    if bad_lines:
        log_note += f"; {render.count(bad_lines, 'line')} of the log not events, skipped"
    return pages.history_page(
        events,
        backups=backups,
        backups_note=backups_note,
        now=now,
        drill_max_age_days=drill_max_age_days,
        log_note=log_note,
        link_dir=link_dir,
    )


def same_page(path, text):
    """Whether the file at path already holds this page (the time it was written aside)."""
    try:
        with open(path, encoding="utf-8") as fh:
            current = fh.read()
    except OSError:
        return False
    return _FOOTER.sub("", current) == _FOOTER.sub("", text)


def write_atomic(path, text):
    """Write text to path in one piece (:func:`files.write_atomic`, mode 644), its folder made when missing."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        files.write_atomic(os.path.abspath(path), text, 0o644)
    except OSError as exc:
        raise DRError(
            f"cannot write {os.path.basename(path)}: {exc.strerror}",
            step="write report",
            subject=path,
            hint="check the path and its permissions (report paths are inventory settings)",
        ) from exc


def write_history(
    path,
    jsonl_path,
    target=None,
    prefix="backups",
    source=None,
    drill_max_age_days=pages.DRILL_MAX_AGE_DAYS,
    check_mode=False,
    now=None,
    extra_events=(),
):
    """Build the history page from the log (plus extra_events, not yet in it) and the bucket, and write it
    unless it holds the same already. Returns {changed, path, written, summary, backups_note}."""
    now = now or timefmt.utcnow()
    events, bad = load_events(jsonl_path)
    events += list(extra_events)
    if target is not None and source:
        backups, note = read_backups(target, prefix, source)
    else:
        backups, note = None, "Backups not read: no bucket was given (playbooks/report.yml reads them)."
    text = build(events, bad, jsonl_path, backups, note, now, drill_max_age_days, os.path.dirname(path))
    result = {"path": path, "summary": summary(events, now, drill_max_age_days), "backups_note": note}
    if same_page(path, text):
        return {**result, "changed": False, "written": False}
    if check_mode:
        return {**result, "changed": True, "written": False}
    write_atomic(path, text)
    return {**result, "changed": True, "written": True}

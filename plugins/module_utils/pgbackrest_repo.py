"""pgBackRest's repository read back: the ``info`` listing summarised and checked, ``verify`` read, the freshness
the monitor reports, the restorable window and the base backup chosen for a target time, and base backups taken.
"""

from __future__ import annotations

import time

from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.pgbackrest import classify
from ansible_collections.pgdr.supabase.plugins.module_utils.timefmt import iso_exact as iso

# ---------------------------------------------------------------------------------------------------------------
# Reading the repository


def parse_info(entry):
    """A plain summary of one stanza's info entry: status, backups (oldest first), archive range."""
    status = entry.get("status") or {}
    backups = []
    for b in entry.get("backup") or []:
        ts = b.get("timestamp") or {}
        archive = b.get("archive") or {}
        info = b.get("info") or {}
        backups.append(
            {
                "label": b.get("label"),
                "type": b.get("type"),
                "prior": b.get("prior"),
                "error": bool(b.get("error")),
                "start": iso(ts.get("start")),
                "stop": iso(ts.get("stop")),
                "start_ts": ts.get("start"),
                "stop_ts": ts.get("stop"),
                "wal_start": archive.get("start"),
                "wal_stop": archive.get("stop"),
                "size": info.get("size"),
                "repo_size": (info.get("repository") or {}).get("size"),
            }
        )
    backups.sort(key=lambda b: (b["stop_ts"] or 0, b["label"] or ""))
    archives = entry.get("archive") or []
    archive = archives[-1] if archives else {}
    db = (entry.get("db") or [{}])[-1]
    return {
        "stanza": entry.get("name"),
        "status_code": status.get("code"),
        "status": status.get("message"),
        # The stanza's status says "other"; the repository's says why (its first line: later ones may be raw bytes).
        "detail": "; ".join(
            (r.get("status") or {}).get("message", "").splitlines()[0]
            for r in entry.get("repo") or []
            if (r.get("status") or {}).get("code") not in (0, None) and (r.get("status") or {}).get("message")
        ),
        "exists": status.get("code") != 1,
        "cipher": entry.get("cipher"),
        "backups": backups,
        "archive": {"id": archive.get("id"), "min": archive.get("min"), "max": archive.get("max")},
        "system_id": db.get("system-id"),
        "pg_version": db.get("version"),
    }


def check_info(summary, repo_where="the repository"):
    """Raise for a stanza that cannot be read (missing, wrong passphrase, other); 'no valid backups' is a state."""
    code = summary["status_code"]
    if code in (0, 2):
        return
    raw = summary.get("detail") or summary["status"] or ""
    if code == 1:
        raise DRError(
            f"stanza {summary['stanza']!r} does not exist in {repo_where}",
            step="read the repository",
            subject=summary["stanza"],
            hint="run playbooks/pitr_setup.yml (it creates the stanza), or fix the stanza name or repository path",
        )
    message, hint = classify(raw)
    raise DRError(
        f"{message} (pgBackRest status {code}: {raw.splitlines()[0][:200] if raw else 'unknown'})",
        step="read the repository",
        subject=f"stanza {summary['stanza']} in {repo_where}",
        hint=hint,
    )


def read_stanza(tool, repo_where="the repository"):
    """info + the newest WAL's upload time, checked. Returns the summary with ``newest_wal_ts``."""
    summary = parse_info(tool.info())
    check_info(summary, repo_where)
    summary["newest_wal_ts"] = tool.newest_wal_time(summary["archive"]) if summary["archive"]["max"] else None
    summary["newest_wal_at"] = iso(summary["newest_wal_ts"])
    return summary


# ---------------------------------------------------------------------------------------------------------------
# Freshness (the monitor) and the choice of a base backup


def freshness(summary, now=None, max_wal_age_s=300, max_base_age_s=26 * 3600):
    """Ages of the newest archived WAL (the RPO right now) and of the newest base backup, against thresholds."""
    now = time.time() if now is None else now
    good = [b for b in summary.get("backups", []) if not b["error"] and b["stop_ts"]]
    newest_base = max((b["stop_ts"] for b in good), default=None)
    wal_ts = summary.get("newest_wal_ts")
    wal_age = round(now - wal_ts, 1) if wal_ts else None
    base_age = round(now - newest_base, 1) if newest_base else None
    return {
        "newest_wal_at": iso(wal_ts),
        "newest_wal_age_s": wal_age,
        "newest_base_backup_at": iso(newest_base),
        "newest_base_backup_age_s": base_age,
        "max_wal_age_s": max_wal_age_s,
        "max_base_age_s": max_base_age_s,
        "rpo_ok": wal_age is not None and wal_age <= max_wal_age_s,
        "base_ok": base_age is not None and base_age <= max_base_age_s,
    }


def restorable_window(summary):
    """(earliest, latest) restorable times as Unix seconds: the first good backup's end, and the last archived
    transaction end when it was read (``last_commit_ts``: what a restore by time can reach), else the newest WAL's
    upload."""
    good = [b for b in summary["backups"] if not b["error"] and b["stop_ts"]]
    if not good:
        return None, None
    latest = summary.get("last_commit_ts") if "last_commit_ts" in summary else summary.get("newest_wal_ts")
    return min(b["stop_ts"] for b in good), latest


def window_text(summary):
    earliest, latest = restorable_window(summary)
    if earliest is None:
        return "nothing is restorable (no complete backup)"
    if "last_commit_ts" in summary:
        end = f"{iso(latest)} (the last archived commit)" if latest else "(no commit archived since the backup)"
    else:
        end = iso(latest) if latest else "(no WAL archived)"
    return f"{iso(earliest)} .. {end}"


def choose_backup(summary, target, after_hint=None):
    """The newest good backup that ended at or before the target time; errors name the reachable window."""
    target_ts = target.timestamp()
    earliest, latest = restorable_window(summary)
    where = f"stanza {summary['stanza']}"
    if earliest is None:
        raise DRError(
            "the repository holds no complete backup, so there is nothing to restore from",
            step="choose a base backup",
            subject=where,
            hint="take one with playbooks/pitr_backup.yml -e type=full",
        )
    window = window_text(summary)
    if target_ts < earliest:
        raise DRError(
            f"target time {iso(target)} is before the earliest restorable time {iso(earliest)} "
            f"(the end of the first backup); the restorable window is {window}",
            step="choose a base backup",
            subject=where,
            hint=f"pick a time within {window}",
        )
    if latest is None or target_ts > latest:
        what = "the last archived commit" if "last_commit_ts" in summary else "the newest archived WAL"
        raise DRError(
            f"target time {iso(target)} is after {what} ({iso(latest)}): replay could not reach it; "
            f"the restorable window is {window}",
            step="choose a base backup",
            subject=where,
            hint=after_hint or f"pick a time within {window}, or wait for archiving to catch up (archive_timeout)",
        )
    good = [b for b in summary["backups"] if not b["error"] and b["stop_ts"] and b["stop_ts"] <= target_ts]
    chosen = max(good, key=lambda b: b["stop_ts"])
    return chosen, window


# ---------------------------------------------------------------------------------------------------------------
# Base backups


def newest_backup(summary):
    good = [b for b in summary["backups"] if not b["error"]]
    return good[-1] if good else None


def backup_plan(summary, backup_type):
    """Which type would really run: pgBackRest turns diff/incr into full when no full backup exists."""
    has_full = any(b["type"] == "full" and not b["error"] for b in summary["backups"])
    effective = backup_type if has_full or backup_type == "full" else "full"
    return {
        "requested_type": backup_type,
        "type": effective,
        "newest": newest_backup(summary),
        "note": None
        if effective == backup_type
        else f"no full backup exists yet, so the {backup_type} backup runs full",
    }


def take_backup(tool, backup_type, timeout=None):
    """Run the backup; returns the new backup's summary row and the duration."""
    before = {b["label"] for b in parse_info(tool.info())["backups"]}
    t0 = time.monotonic()
    tool.run("backup", f"--type={backup_type}", step=f"take a {backup_type} backup", timeout=timeout)
    duration = round(time.monotonic() - t0, 2)
    summary = read_stanza(tool)
    new = [b for b in summary["backups"] if b["label"] not in before]
    if not new:
        raise DRError(
            "pgbackrest backup succeeded but no new backup shows in the repository",
            step="read the repository",
            subject=f"stanza {tool.stanza}",
            hint="run pgbackrest info and read its log",
        )
    return {"backup": new[-1], "duration_s": duration, "summary": summary}

# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one result every restore returns, whatever the method (logical, pgBackRest PITR, Supabase PITR, a new
hosted project): what the record, the checks and the re-point read, so none of them needs to know the method.

    dsn            the restored database's connection string, password masked (the role puts it back, no_log)
    target         where it went (host:port/database, a new cluster, a project), never secret
    backup         id, source, taken_at (and objects, for a backup of ours)
    point_in_time  the moment aimed at and, where the method knows it, where replay stopped; null when the restore
                   gives back the backup itself
    rpo_s          data lost relative to point_in_time when the restore measured it; null when unknown (never -1)
    timings        seconds per step, in the order they ran
    verification   what the restore itself verified (state: checksums, repository, none) before any later check
    method, mode   logical/pitr/supabase_pitr; new_database, project, new_project, new_cluster, in_place
    planned        true in check mode when the restore is only planned (nothing may connect to dsn)
    details        what else the record keeps (disarmed, for a logical restore into staging)
"""

from __future__ import annotations

METHODS = ("logical", "pitr", "supabase_pitr")
VERIFICATION_STATES = ("checksums", "repository", "none")


def rpo(value):
    """The RPO as recorded: seconds >= 0, or None when it was not measured (a negative or missing value)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return round(value, 3) if value >= 0 else None


def build(
    method,
    mode,
    dsn,
    target,
    backup,
    point_in_time=None,
    rpo_s=None,
    timings=None,
    verification=None,
    planned=False,
    details=None,
):
    """The restore result. dsn must already be masked (pg.mask_password): a module's result is printed."""
    if method not in METHODS:
        raise ValueError(f"unknown restore method {method!r}")
    backup = dict(backup or {})
    verification = dict(verification or {"state": "none"})
    if verification.get("state") not in VERIFICATION_STATES:
        raise ValueError(f"unknown verification state {verification.get('state')!r}")
    return {
        "method": method,
        "mode": mode,
        "dsn": dsn or "",
        "target": target or "",
        "backup": {
            "id": backup.pop("id", "") or "",
            "source": backup.pop("source", "") or "",
            "taken_at": backup.pop("taken_at", None) or None,
            **backup,
        },
        "point_in_time": dict(point_in_time) if point_in_time else None,
        "rpo_s": rpo(rpo_s),
        "timings": {str(k): v for k, v in (timings or {}).items()},
        "verification": verification,
        "planned": bool(planned),
        "details": dict(details or {}),
    }


def record_inputs(restore):
    """What the incident log takes from a restore result: backup, target, point in time (as text), rpo_s,
    durations and the details worth keeping (where a PITR's replay stopped, what was disarmed)."""
    restore = restore or {}
    point = restore.get("point_in_time") or {}
    details = dict(restore.get("details") or {})
    if set(point) - {"target_time"}:
        details.setdefault("point_in_time", point)
    return {
        "backup": dict(restore.get("backup") or {}),
        "target": restore.get("target") or None,
        "point_in_time": point.get("target_time") or None,
        "rpo_s": rpo(restore.get("rpo_s")),
        "durations": dict(restore.get("timings") or {}),
        "details": details,
    }

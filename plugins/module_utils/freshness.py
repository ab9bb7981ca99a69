"""Freshness checks, run independently of the backup job (hourly by playbooks/monitor.yml).

Each check answers the same shape: ``{name, ok, skipped, age_s, threshold_s, details, error}``. A check never raises
for what it finds, nor for a store it cannot read: an unreadable bucket or repository is a failed check (``ok``
false, ``error`` set), because a monitor that stops at the first error would hide the others. Only wrong arguments
raise.

- ``check_logical``: the newest complete logical backup (its manifest's ``finished_at``) is at most ``max_age_s``
  old (the schedule plus a grace, 24 h + 2 h for a daily backup) and its objects are all there with the manifest's
  sizes (a HEAD each: a manifest alone only says the backup was committed); an incomplete backup newer than it,
  while no run holds the source's lock, is a failed or killed run; no complete backup at all is stale.
- ``check_secondary``: the newest backup secured and verified in the immutable bucket (from the secure-copy record
  ``immutable.py`` keeps next to each manifest) finished at most ``max_age_s`` ago, and, given the locked bucket,
  its recorded copies are intact: a delete marker or a newer version on top of a locked key is TAMPERING.
- ``check_pitr``: pgBackRest: the newest archived WAL is at most the RPO old (1 h), the newest base backup at most
  ``max_base_age_s``.
- ``check_supabase_pitr``: hosted Supabase: the latest point of the PITR window is at most the RPO old.

``now`` is injectable everywhere (a datetime or Unix seconds) so that a missed schedule can be tested without
waiting a day. A given ``now`` earlier than the newest backup is refused (a rehearsal at a time before the backup
would report a negative age as fresh); the host's own clock behind the bucket's is a failed check.
"""

from __future__ import annotations

import time
from datetime import datetime

from ansible_collections.pgdr.supabase.plugins.module_utils import catalog, timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.timefmt import iso_seconds as iso

DEFAULT_LOGICAL_MAX_AGE_S = 26 * 3600  # daily schedule + 2 h grace
DEFAULT_RPO_S = 3600
DEFAULT_BASE_MAX_AGE_S = 26 * 3600
DEFAULT_LOCK_STALE_AFTER = 600


def to_unix(now=None):
    if now is None:
        return time.time()
    if isinstance(now, datetime):
        return timefmt.parse(now).timestamp()
    if isinstance(now, str):
        try:
            return timefmt.parse(now).timestamp()
        except ValueError:
            raise DRError(
                f"{now!r} is not an ISO-8601 time", step="check freshness", hint="for example 2026-11-28T12:00:00Z"
            ) from None
    return float(now)


def human(seconds):
    if seconds is None:
        return "never"
    seconds = float(seconds)
    if abs(seconds) >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    if abs(seconds) >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def result(name, ok, age_s=None, threshold_s=None, details="", skipped=False, error=None, **extra):
    out = {
        "name": name,
        "ok": bool(ok),
        "skipped": skipped,
        "age_s": None if age_s is None else round(age_s, 1),
        "threshold_s": threshold_s,
        "details": details,
        "error": error,
    }
    out.update(extra)
    return out


def failed(name, exc, threshold_s=None):
    """A check that could not read its store: not fresh, with the reason."""
    return result(name, False, threshold_s=threshold_s, details=f"cannot check: {exc}", error=str(exc))


# -- logical backups --------------------------------------------------------------------------------------------


def _lock_holder(target, prefix, source, now, stale_after):
    """The lock's holder when a run holds it now (renewed within stale_after), else None."""
    holder = target.get_json(catalog.lock_key(prefix, source), step="read lock")
    if not holder:
        return None
    if now - float(holder.get("renewed_at", 0)) > stale_after:
        return None
    return holder


def _check_now(now_given, newest_backup_id, finished_unix, now):
    """A given ``now`` (a rehearsal) must not lie before the newest backup it judges."""
    if now_given is not None and now < finished_unix:
        raise DRError(
            f"the time to check as (now) {iso(now)} is earlier than the newest backup {newest_backup_id}, which "
            f"finished at {iso(finished_unix)}: its age would be negative",
            step="check freshness",
            hint=f"give a time after {iso(finished_unix)} as now, or none to check as of the current time",
        )


def check_logical(
    target,
    prefix,
    source,
    max_age_s=DEFAULT_LOGICAL_MAX_AGE_S,
    now=None,
    lock_stale_after=DEFAULT_LOCK_STALE_AFTER,
):
    """The newest complete logical backup of source is at most max_age_s old, its objects are there, and no run
    failed after it."""
    name = "logical"
    now_given = now
    now = to_unix(now)
    catalog.check_source_name(source)
    where = target.where(catalog.source_prefix(prefix, source))
    try:
        rows = catalog.list_backups(target, prefix, source)
        complete = [r for r in rows if r["complete"]]
        newest = complete[0] if complete else None
        newer_incomplete = [
            r["backup_id"]
            for r in rows
            if not r["complete"] and (newest is None or r["backup_id"] > newest["backup_id"])
        ]
        holder = _lock_holder(target, prefix, source, now, lock_stale_after) if newer_incomplete else None
        presence = None
        if newest is not None:
            manifest = target.get_json(catalog.manifest_key(prefix, source, newest["backup_id"]), step="read manifest")
            presence = catalog.check_presence(target, manifest) if manifest else None
    except DRError as exc:
        return failed(name, exc, max_age_s)
    extra = {
        "newest_backup_id": newest["backup_id"] if newest else None,
        "newest_finished_at": newest["finished_at"] if newest else None,
        "newest_verified": presence["verified"] if presence else None,
        "complete": len(complete),
        "incomplete_newer": newer_incomplete,
        "where": where,
    }
    if newest is None:
        details = f"no complete backup of {source} in {where}"
        if newer_incomplete:
            details += f" ({len(newer_incomplete)} incomplete: {', '.join(newer_incomplete)})"
        return result(name, False, None, max_age_s, details, **extra)
    finished = to_unix(newest["finished_at"])
    _check_now(now_given, newest["backup_id"], finished, now)
    age = now - finished
    parts = [f"newest complete backup {newest['backup_id']} finished {human(age)} ago"]
    ok = age <= max_age_s
    if age < 0:
        ok = False
        parts.append(f"it finished {human(-age)} in the future of this host's clock: check the clocks")
    elif not ok:
        parts.append(f"older than {human(max_age_s)}: a scheduled backup was missed or failed")
    if presence and not presence["verified"]:
        ok = False
        parts.append("DAMAGED, it cannot be restored: " + "; ".join(presence["problems"]))
    elif presence:
        parts.append(f"its {len(manifest['objects'])} objects are there")
    if newer_incomplete:
        if holder:
            parts.append(f"{newer_incomplete[0]} is being taken now ({holder.get('purpose')} on {holder.get('host')})")
        else:
            ok = False
            parts.append(
                f"incomplete backup {', '.join(newer_incomplete)} newer than it and no run holds the lock: "
                "a run failed or was killed"
            )
    return result(name, ok, age, max_age_s, "; ".join(parts), **extra)


# -- the immutable secondary copy ----------------------------------------------------------------------------------


def check_secondary(
    target, prefix, source, max_age_s=DEFAULT_LOGICAL_MAX_AGE_S, now=None, look_back=10, secondary=None
):
    """The newest backup secured and verified in the immutable bucket finished at most max_age_s ago, and (with
    ``secondary``, the locked bucket) its recorded copies are intact.

    Reads the secure-copy record that ``immutable.py`` keeps next to each manifest (``read_record``: ``status``
    ``secured``, ``verified_at``, per-object ``verified``), newest backup first, up to look_back backups. With
    ``secondary`` it then checks the recorded versions in the locked bucket of that backup and of every older one
    among the look_back newest (present, locked until the recorded date, size and ETag as recorded, nothing on top
    of them): a delete marker or a newer version on top of a locked key is TAMPERING, never ok. Without it the
    record is trusted (say so in the details). Skipped with a note when ``immutable.py`` is absent.
    """
    name = "secondary"
    try:
        from ansible_collections.pgdr.supabase.plugins.module_utils import immutable
    except ImportError:
        immutable = None
    reader = getattr(immutable, "read_record", None) if immutable else None
    if reader is None:
        return result(
            name,
            True,
            threshold_s=max_age_s,
            skipped=True,
            details="skipped: the secure-copy record (immutable.py read_record) is not available in this version",
        )
    now_given = now
    now = to_unix(now)
    try:
        rows = catalog.list_backups(target, prefix, source, include_incomplete=False)
        if not rows:
            return result(name, False, None, max_age_s, f"no complete backup of {source} to secure")
        unsecured = []
        newest = None
        for row in rows[:look_back]:
            record = reader(target, catalog.manifest_key(prefix, source, row["backup_id"])) or {}
            objects = record.get("objects") or []
            if (
                record.get("status") == "secured"
                and record.get("verified_at")
                and objects
                and all(o.get("verified") for o in objects)
            ):
                newest = (row, record)
                break
            unsecured.append(f"{row['backup_id']} ({record.get('status') or 'no secure copy'})")
        findings = None
        if newest is not None and secondary is not None:
            # Every secured backup of the window, not only the newest: tampering with an older copy is as loud.
            moment = timefmt.from_unix(now)
            findings = []
            for row in rows[:look_back]:
                if row["backup_id"] > newest[0]["backup_id"]:
                    continue  # not secured yet (named in the details)
                _record, found = immutable.inspect_backup(target, secondary, prefix, source, row["backup_id"], moment)
                findings += [dict(f, backup_id=row["backup_id"]) for f in found]
    except DRError as exc:
        return failed(name, exc, max_age_s)
    not_yet = f"; not secured: {', '.join(unsecured)}" if unsecured else ""
    if newest is None:
        return result(name, False, None, max_age_s, f"none of the newest {len(unsecured)} backups is secured{not_yet}")
    row, record = newest
    _check_now(now_given, row["backup_id"], to_unix(row["finished_at"]), now)
    age = now - to_unix(row["finished_at"])
    ok = age <= max_age_s
    details = (
        f"newest secured and verified copy {row['backup_id']} (verified {record.get('verified_at')}) finished "
        f"{human(age)} ago{not_yet}"
    )
    if not ok:
        details += f"; older than {human(max_age_s)}: the secure copy is not keeping up"
    if findings:
        ok = False
        details += "; " + immutable.describe_tampering(secondary, findings)
    elif findings is not None:
        details += "; its locked copies (and those of the older secured backups checked) are intact"
    else:
        details += "; the locked copies themselves were not checked (no secondary bucket given)"
    return result(
        name,
        ok,
        age,
        max_age_s,
        details,
        backup_id=row["backup_id"],
        unsecured=unsecured,
        tampering=findings or [],
    )


# -- pgBackRest --------------------------------------------------------------------------------------------------


def check_pitr(
    stanza,
    config_file,
    rpo_s=DEFAULT_RPO_S,
    max_base_age_s=DEFAULT_BASE_MAX_AGE_S,
    now=None,
    tool=None,
):
    """The newest archived WAL is at most rpo_s old and the newest base backup at most max_base_age_s old."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import pgbackrest as pb
    from ansible_collections.pgdr.supabase.plugins.module_utils import pgbackrest_repo as pb_repo

    name = "pitr"
    now = to_unix(now)
    try:
        tool = tool or pb.PgBackRest(stanza, config_file=config_file)
        summary = pb_repo.parse_info(tool.info())
        if not summary["exists"]:
            return result(name, False, None, rpo_s, f"stanza {stanza} does not exist in the repository")
        pb_repo.check_info(summary)
        summary["newest_wal_ts"] = tool.newest_wal_time(summary["archive"]) if summary["archive"]["max"] else None
        fresh = pb_repo.freshness(summary, now=now, max_wal_age_s=rpo_s, max_base_age_s=max_base_age_s)
    except DRError as exc:
        return failed(name, exc, rpo_s)
    wal_age, base_age = fresh["newest_wal_age_s"], fresh["newest_base_backup_age_s"]
    parts = [
        f"newest archived WAL {human(wal_age)} old (RPO {human(rpo_s)})" if wal_age is not None else "no archived WAL",
        f"newest base backup {human(base_age)} old (limit {human(max_base_age_s)})"
        if base_age is not None
        else "no base backup",
    ]
    if not fresh["rpo_ok"]:
        parts.append("WAL archiving is late or stopped")
    if not fresh["base_ok"]:
        parts.append("a base backup is missing or late")
    return result(
        name,
        fresh["rpo_ok"] and fresh["base_ok"],
        wal_age,
        rpo_s,
        "; ".join(parts),
        base_age_s=base_age,
        base_threshold_s=max_base_age_s,
        freshness=fresh,
    )


# -- hosted Supabase -----------------------------------------------------------------------------------------------


def check_supabase_pitr(project_ref, token=None, api_url=None, rpo_s=DEFAULT_RPO_S, now=None, api=None, timeout=30):
    """The latest point of the project's PITR window is at most rpo_s old."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import supabase_api

    name = "supabase_pitr"
    now = to_unix(now)
    try:
        supabase_api.validate_ref(project_ref)
        api = api or supabase_api.ManagementAPI(
            token, base_url=api_url or supabase_api.DEFAULT_API_URL, timeout=timeout, max_retries=2
        )
        response = api.backups(project_ref)
    except DRError as exc:
        return failed(name, exc, rpo_s)
    if not (response or {}).get("pitr_enabled"):
        return result(name, False, None, rpo_s, f"PITR is not enabled for project {project_ref}")
    window = supabase_api.pitr_window(response)
    if window is None:
        return result(name, False, None, rpo_s, f"project {project_ref} has PITR but no window yet")
    latest = window[1].timestamp()
    age = now - latest
    ok = age <= rpo_s
    details = f"latest restorable point {iso(latest)} is {human(age)} old (RPO {human(rpo_s)})"
    if not ok:
        details += ": the managed WAL archiving is late"
    return result(
        name,
        ok,
        age,
        rpo_s,
        details,
        earliest=iso(window[0].timestamp()),
        latest=iso(latest),
    )


def summarize(checks):
    """(all ok, one line naming each failing check)."""
    failing = [c for c in checks if not c["ok"]]
    return not failing, "; ".join(f"{c['name']}: {c['details']}" for c in failing)

"""Retention of the backups of one source in one bucket: hot for hot_days, then a colder storage class, expired
after expire_days; the newest verified backups are never expired, and nothing still locked is touched.

Three kinds of sets are retained alike: the logical backups (``logical/<backup_id>/``), the Storage runs
(``storage/manifests/<run_id>.json`` and the files they reference) and the config snapshots
(``config/<snapshot_id>.json``), each with its secure-copy record.

Rules that keep a running or damaged backup from costing the good ones:

- a folder is never touched while the source's lock is live (a backup may be writing it);
- an incomplete folder is aged by its newest activity (object, multipart upload or part), not by its backup id
  (the window's start: a backup that started late or runs long is not "a day old" while it still uploads);
- a backup counts toward ``keep_min`` only when it was verified now (a HEAD of every object, sizes matching the
  manifest): a manifest whose objects are gone must not stand in for a good backup;
- a deletion refused by Object Lock is reported as "locked until <date>", a refusal for want of permission as
  such.

``plan_retention`` is pure (backups, a fixed ``now``, the policy) so every decision can be tested without S3;
``run`` reads the bucket, plans, and applies (lifecycle rule where the endpoint takes it, explicit storage-class
moves and deletions where it does not). In check mode it only plans.
"""

from __future__ import annotations

import datetime as dt

from ansible_collections.pgdr.supabase.plugins.module_utils import catalog, timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.lock import SourceLock
from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import S3_ERRORS, error_code, is_not_found, translate

KEEP, COLD, EXPIRE = "keep", "cold", "expire"
SETS = ("logical", "storage", "config")
DENIED_CODES = ("AccessDenied", "403")
DAY = 86400.0
FOREVER = dt.datetime.max.replace(tzinfo=dt.UTC)
UNSUPPORTED_CODES = ("NotImplemented", "XNotImplemented", "MethodNotAllowed", "UnsupportedOperation", "501", "405")
STORAGE_CLASS_REJECTED = ("InvalidStorageClass", *UNSUPPORTED_CODES)
LIFECYCLE_MODES = ("auto", "off")


def rule_id(prefix, source):
    return f"pgdr-retention-{catalog.source_prefix(prefix, source).rstrip('/').replace('/', '-')}"[:255]


def validate_policy(hot_days=14, expire_days=60, keep_min=1, lock_days=None, grace_hours=24):
    """Refuse a policy that cannot be honoured: cold before hot, nothing kept, or a lock that fights it.

    A lock shorter than hot_days would let a backup's immutable copy be deleted while it is still a recent
    backup; a lock longer than expire_days means expiry would try to delete copies still locked."""
    step = "check retention policy"
    for name, value in (("hot_days", hot_days), ("expire_days", expire_days), ("keep_min", keep_min)):
        if not isinstance(value, int) or value < 0:
            raise DRError(f"{name} must be a whole number >= 0, not {value!r}", step=step)
    if expire_days <= hot_days:
        raise DRError(
            f"expire_days ({expire_days}) must be greater than hot_days ({hot_days})",
            step=step,
            hint="backups move to cold storage after hot_days and are expired after expire_days",
        )
    if keep_min < 1:
        raise DRError("keep_min must be at least 1: the newest complete backup is never expired", step=step)
    if grace_hours is None or grace_hours < 1:
        raise DRError("grace_hours must be at least 1 (a running backup must not be removed)", step=step)
    if lock_days:
        if lock_days < hot_days:
            raise DRError(
                f"the object lock ({lock_days} days) is shorter than the hot retention ({hot_days} days): the "
                "immutable copy of a recent backup could be deleted",
                step=step,
                hint=f"lock copies for at least {hot_days} days, or lower hot_days",
            )
        if lock_days > expire_days:
            raise DRError(
                f"the object lock ({lock_days} days) is longer than the expiry ({expire_days} days): expiry would "
                "fight the lock and copies would outlive the retention policy",
                step=step,
                hint=f"lock copies for at most {expire_days} days, or raise expire_days to {lock_days}",
            )


def backup_time(backup_id):
    return catalog.parse_backup_id(backup_id)


def plan_retention(
    backups,
    now,
    hot_days=14,
    cold_days=60,
    keep_min=1,
    lock_days=None,
    grace_hours=24,
    locks=None,
    cold_storage_class="STANDARD_IA",
    storage_classes=None,
):
    """One decision per backup: keep, cold (move to cold_storage_class) or expire, with its age and reason.

    backups: rows of catalog.list_backups, optionally with ``verified`` (False: checked and found damaged, with
    ``problems``; such a backup never counts toward keep_min), ``last_activity`` (an incomplete folder's newest
    object, upload or part: its age is counted from there) and ``running`` (the live lock's holder: an
    incomplete folder is then never touched). locks: backup_id -> latest retain-until of any of its object versions
    (FOREVER for a legal hold); a backup still locked at ``now`` is kept. storage_classes: backup_id -> set of
    storage classes of its objects (a backup already all in cold_storage_class is not moved again)."""
    validate_policy(hot_days, cold_days, keep_min, lock_days, grace_hours)
    locks = locks or {}
    storage_classes = storage_classes or {}
    rows = sorted(backups, key=lambda r: r["backup_id"], reverse=True)
    good = [r for r in rows if r["complete"] and r.get("verified") is not False]
    protected = {r["backup_id"] for r in good[:keep_min]}
    decisions = []
    for row in rows:
        backup_id = row["backup_id"]
        age_days = (now - backup_time(backup_id)).total_seconds() / DAY
        decision = {
            "backup_id": backup_id,
            "complete": row["complete"],
            "age_days": round(age_days, 2),
            "size": row.get("size"),
        }
        if row.get("verified") is not None:
            decision["verified"] = row["verified"]
        damaged = row["complete"] and row.get("verified") is False
        if not row["complete"]:
            activity = row.get("last_activity")
            idle_hours = (now - activity).total_seconds() / 3600 if activity else age_days * 24
            decision["idle_hours"] = round(idle_hours, 2)
            if row.get("running"):
                action, reason = KEEP, f"incomplete and the source's lock is live ({row['running']}): not touched"
            elif idle_hours >= grace_hours:
                action = EXPIRE
                reason = f"incomplete (no manifest), nothing written to it for {idle_hours:.1f} h (>= {grace_hours} h)"
            else:
                action = KEEP
                reason = (
                    f"incomplete, last written {idle_hours:.1f} h ago, within the {grace_hours} h grace period "
                    "(may still be running)"
                )
        elif age_days >= cold_days:
            if backup_id in protected:
                action, reason = KEEP, f"one of the newest {keep_min} verified complete backups: never expired"
            else:
                action, reason = EXPIRE, f"older than {cold_days} days"
        elif age_days >= hot_days and cold_storage_class:
            classes = storage_classes.get(backup_id)
            if classes and classes == {cold_storage_class}:
                action, reason = KEEP, f"cold already ({cold_storage_class})"
            else:
                action, reason = COLD, f"older than {hot_days} days: move to {cold_storage_class}"
        else:
            action, reason = KEEP, f"hot (younger than {hot_days} days)" if age_days < hot_days else "hot"
        if damaged:
            decision["problems"] = row.get("problems") or []
            reason += "; DAMAGED (" + "; ".join(decision["problems"][:3]) + "): not counted toward keep_min"
        locked_until = locks.get(backup_id)
        if action == EXPIRE and locked_until and locked_until > now:
            action = KEEP
            reason = f"due to expire but locked until {timefmt.iso(locked_until)}: not attempted"
            decision["locked_until"] = timefmt.iso(locked_until)
        decision.update(action=action, reason=reason)
        decisions.append(decision)
    return decisions


# --------------------------------------------------------------------------------------------- reading the bucket


def _versioning(target):
    try:
        return target.client.get_bucket_versioning(Bucket=target.bucket).get("Status") or "Disabled"
    except S3_ERRORS as exc:
        if error_code(exc) in UNSUPPORTED_CODES:
            return "Disabled"
        raise translate(exc, "read bucket versioning", target.where()) from exc


def _list_objects(target, prefix):
    """(key, size, storage class, last modified) of every current object under prefix."""
    try:
        pages = target.client.get_paginator("list_objects_v2").paginate(Bucket=target.bucket, Prefix=prefix)
        return [
            (o["Key"], o["Size"], o.get("StorageClass") or "STANDARD", _utc(o.get("LastModified")))
            for page in pages
            for o in page.get("Contents", [])
        ]
    except S3_ERRORS as exc:
        raise translate(exc, "list objects", target.where(prefix)) from exc


def _utc(moment):
    return moment.astimezone(dt.UTC) if isinstance(moment, dt.datetime) else None


def last_activity(target, folder, objects=None):
    """When anything was last written under folder: its newest object, or an unfinished multipart upload (when it
    started, and its newest part). None when nothing is there."""
    objects = _list_objects(target, folder) if objects is None else objects
    moments = [o[3] for o in objects if o[3]]
    try:
        pages = target.client.get_paginator("list_multipart_uploads").paginate(Bucket=target.bucket, Prefix=folder)
        uploads = [u for page in pages for u in page.get("Uploads", [])]
        for upload in uploads:
            moments.append(_utc(upload.get("Initiated")))
            parts = target.client.list_parts(Bucket=target.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            moments += [_utc(p.get("LastModified")) for p in parts.get("Parts", [])]
    except S3_ERRORS as exc:
        if error_code(exc) not in UNSUPPORTED_CODES and not is_not_found(exc):
            raise translate(exc, "list multipart uploads", target.where(folder)) from exc
    moments = [m for m in moments if m]
    return max(moments) if moments else None


def live_lock(target, key, stale_after=600):
    """Who holds the lock object at key now (a description), or None when nobody does or the lock is stale."""
    holder = target.get_json(key, step="read lock")
    if not holder:
        return None
    lock = SourceLock(target, key, "retention", stale_after=stale_after)
    return None if lock.is_stale(holder) else lock.describe(holder)


def _list_versions(target, prefix):
    """(key, version id, is delete marker) of every version under prefix."""
    try:
        pages = target.client.get_paginator("list_object_versions").paginate(Bucket=target.bucket, Prefix=prefix)
        found = []
        for page in pages:
            found += [(v["Key"], v["VersionId"], False) for v in page.get("Versions", [])]
            found += [(m["Key"], m["VersionId"], True) for m in page.get("DeleteMarkers", [])]
        return found
    except S3_ERRORS as exc:
        raise translate(exc, "list object versions", target.where(prefix)) from exc


def lock_of(target, key, version_id=None):
    """The retain-until of one object (version): its lock date, FOREVER under a legal hold, None when unlocked."""
    extra = {"VersionId": version_id} if version_id else {}
    try:
        head = target.client.head_object(Bucket=target.bucket, Key=key, **extra)
    except S3_ERRORS as exc:
        if is_not_found(exc):
            return None
        raise translate(exc, "read object lock", target.where(key)) from exc
    if head.get("ObjectLockLegalHoldStatus") == "ON":
        return FOREVER
    until = head.get("ObjectLockRetainUntilDate")
    return until.astimezone(dt.UTC) if until else None


def backup_lock(target, folder, versioned):
    """The latest retain-until of any object (version) of a backup, or None when nothing is locked."""
    return items_lock(target, _items(target, folder, versioned, markers=False))


def items_lock(target, items):
    """The latest retain-until of any of the (key, version) items (no delete markers), or None when none is
    locked."""
    dates = [d for d in (lock_of(target, key, version) for key, version in items) if d]
    return max(dates) if dates else None


def _items(target, prefix, versioned, exact=None, markers=True):
    """(key, version) of every version under prefix (with delete markers unless markers=False); in an unversioned
    bucket (key, None) of every object. ``exact``: that key only."""
    if versioned:
        found = _list_versions(target, prefix)
        return [(k, v) for k, v, m in found if (exact is None or k == exact) and (markers or not m)]
    return [(k, None) for k, *_unused in _list_objects(target, prefix) if exact is None or k == exact]


def delete_item(target, key, version, now=None, step="expire backup"):
    """Delete one object (version), never with a governance bypass. A refusal is explained: Object Lock ("locked
    until <date>"; the error carries ``locked_until``) or the identity's permissions."""
    extra = {"VersionId": version} if version else {}
    where = target.where(key) + (f" version {version}" if version else "")
    try:
        target.client.delete_object(Bucket=target.bucket, Key=key, **extra)
    except S3_ERRORS as exc:
        if is_not_found(exc):
            return
        if error_code(exc) not in DENIED_CODES:
            raise translate(exc, step, where) from exc
        raise refusal(target, key, version, step, now) from exc


def refusal(target, key, version, step, now=None):
    """The error for a deletion the endpoint refused (AccessDenied): locked, or not permitted.

    The lock is judged at the real time, whatever ``now`` the plan was made at (a rehearsal ahead of time): that is
    when the endpoint refused."""
    now = timefmt.utcnow()
    where = target.where(key) + (f" version {version}" if version else "")
    try:
        until = lock_of(target, key, version)
    except DRError:
        until = None
    if until and until > now:
        text = "under a legal hold" if until == FOREVER else f"locked until {timefmt.iso(until)}"
        error = DRError(
            f"Object Lock refused the deletion: the object is {text}",
            step=step,
            subject=where,
            hint="nothing to fix: retention keeps it and expires it after that date (a lock is never fought)",
        )
        error.locked_until = until
        return error
    return DRError(
        "the S3 identity may not delete this object (AccessDenied; it is not locked)",
        step=step,
        subject=where,
        hint="run retention with an identity allowed s3:DeleteObject and s3:DeleteObjectVersion on this bucket "
        "(never s3:BypassGovernanceRetention); in the locked bucket that is not the backup writer (docs/immutable.md)",
    )


# --------------------------------------------------------------------------------------------- lifecycle


def desired_rule(prefix, source, hot_days, expire_days, cold_storage_class, grace_hours, lifecycle_expiration):
    rule = {
        "ID": rule_id(prefix, source),
        "Filter": {"Prefix": catalog.source_prefix(prefix, source)},
        "Status": "Enabled",
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": max(1, -(-grace_hours // 24))},
    }
    if cold_storage_class:
        rule["Transitions"] = [{"Days": hot_days, "StorageClass": cold_storage_class}]
    if lifecycle_expiration:
        rule["Expiration"] = {"Days": expire_days}
    return rule


def _current_rules(target):
    """The bucket's lifecycle rules, [] when none, or None when the endpoint does not implement lifecycle."""
    try:
        return target.client.get_bucket_lifecycle_configuration(Bucket=target.bucket).get("Rules", [])
    except S3_ERRORS as exc:
        if error_code(exc) == "NoSuchLifecycleConfiguration":
            return []
        if error_code(exc) in UNSUPPORTED_CODES:
            return None
        raise translate(exc, "read lifecycle configuration", target.where()) from exc


def _rule_matches(current, wanted):
    keys = ("Filter", "Status", "Transitions", "Expiration", "AbortIncompleteMultipartUpload")
    return all(current.get(k) == wanted.get(k) for k in keys)


def apply_lifecycle(target, wanted, check_mode):
    """Put the source's lifecycle rule (keeping every other rule of the bucket). Returns its status:
    ``in_place``, ``would_put``, ``put``, or ``unsupported`` with the endpoint's answer."""
    rules = _current_rules(target)
    if rules is None:
        return {"status": "unsupported", "detail": "the endpoint does not implement lifecycle configuration"}
    mine = next((r for r in rules if r.get("ID") == wanted["ID"]), None)
    if mine and _rule_matches(mine, wanted):
        return {"status": "in_place", "rule": wanted}
    if check_mode:
        return {"status": "would_put", "rule": wanted, "current": mine}
    others = [r for r in rules if r.get("ID") != wanted["ID"]]
    try:
        target.client.put_bucket_lifecycle_configuration(
            Bucket=target.bucket, LifecycleConfiguration={"Rules": [*others, wanted]}
        )
    except S3_ERRORS as exc:
        code = error_code(exc)
        if code in (*UNSUPPORTED_CODES, "InvalidStorageClass", "InvalidRequest", "MalformedXML"):
            message = exc.response.get("Error", {}).get("Message") or code
            return {"status": "unsupported", "detail": f"the endpoint refused the rule: {code}: {message}"}
        raise translate(exc, "put lifecycle configuration", target.where()) from exc
    return {"status": "put", "rule": wanted, "previous": mine}


# --------------------------------------------------------------------------------------------- applying


def move_object(target, key, storage_class):
    """Rewrite an object onto itself in another storage class, keeping its content type and metadata."""
    client = target.client
    head = client.head_object(Bucket=target.bucket, Key=key)
    client.copy_object(
        Bucket=target.bucket,
        Key=key,
        CopySource={"Bucket": target.bucket, "Key": key},
        StorageClass=storage_class,
        MetadataDirective="REPLACE",
        ContentType=head.get("ContentType") or "application/octet-stream",
        Metadata=head.get("Metadata") or {},
    )


def delete_backup(target, folder, versioned, now=None):
    """Delete a backup's manifest first (it becomes incomplete, never half-restorable), then the rest; in a
    versioned bucket every version and delete marker, never with a governance bypass."""
    manifest = folder + catalog.MANIFEST_NAME
    items = _items(target, folder, versioned)
    items.sort(key=lambda item: item[0] != manifest)
    for key, version in items:
        delete_item(target, key, version, now)
    return len(items)


def delete_items(target, items, now=None, step="expire"):
    """Delete (key, version) items in order; returns how many."""
    for key, version in items:
        delete_item(target, key, version, now, step=step)
    return len(items)


def run(
    target,
    prefix,
    source,
    now=None,
    hot_days=14,
    expire_days=60,
    keep_min=1,
    lock_days=None,
    grace_hours=24,
    cold_storage_class="STANDARD_IA",
    lifecycle="auto",
    lifecycle_expiration=False,
    check_mode=False,
    sets=SETS,
    lock_stale_after=600,
):
    """Plan and (unless check_mode) apply retention for one source in one bucket: its logical backups (the
    result's top level: decisions, moved, expired, skipped, lifecycle) and, in ``sets``, its Storage runs
    (``storage``) and config snapshots (``config``)."""
    now = now or timefmt.utcnow()
    validate_policy(hot_days, expire_days, keep_min, lock_days, grace_hours)
    if lifecycle not in LIFECYCLE_MODES:
        raise DRError(f"lifecycle must be one of {', '.join(LIFECYCLE_MODES)}, not {lifecycle!r}", step="retention")
    unknown = [name for name in sets if name not in SETS]
    if unknown:
        raise DRError(f"unknown sets {unknown}: choose from {', '.join(SETS)}", step="retention")
    catalog.check_source_name(source)
    target.check_bucket(step="retention")
    versioned = _versioning(target) == "Enabled"
    result = {
        "changed": False,
        "bucket": target.bucket,
        "versioned": versioned,
        "now": timefmt.iso(now),
        "decisions": [],
        "moved": [],
        "expired": [],
        "skipped": [],
        "lifecycle": {"status": "off"},
    }
    policy = {
        "hot_days": hot_days,
        "cold_days": expire_days,
        "keep_min": keep_min,
        "lock_days": lock_days,
        "grace_hours": grace_hours,
    }
    if "logical" in sets:
        _run_logical(
            target,
            prefix,
            source,
            now,
            versioned,
            policy,
            cold_storage_class,
            lifecycle,
            lifecycle_expiration,
            check_mode,
            lock_stale_after,
            result,
        )
    if "storage" in sets:
        result["storage"] = run_storage(target, prefix, source, now, versioned, policy, check_mode, lock_stale_after)
    if "config" in sets:
        result["config"] = run_config(target, prefix, source, now, versioned, policy, check_mode)
    result["changed"] = result["changed"] or any(result.get(k, {}).get("changed") for k in ("storage", "config"))
    return result


def _run_logical(
    target,
    prefix,
    source,
    now,
    versioned,
    policy,
    cold_storage_class,
    lifecycle,
    lifecycle_expiration,
    check_mode,
    lock_stale_after,
    result,
):
    lock_key = catalog.lock_key(prefix, source)
    backups = catalog.list_backups(target, prefix, source, verify=True)
    holder = live_lock(target, lock_key, lock_stale_after)
    classes = {}
    for row in backups:
        folder = catalog.backup_prefix(prefix, source, row["backup_id"])
        objects = _list_objects(target, folder)
        classes[row["backup_id"]] = {cls for _unused, _unused, cls, _unused in objects}
        if not row["complete"]:
            row["last_activity"] = last_activity(target, folder, objects)
            row["running"] = holder
    policy = {**policy, "cold_storage_class": cold_storage_class, "storage_classes": classes}
    first = plan_retention(backups, now, **policy)
    locks = {}
    for decision in first:
        if decision["action"] == EXPIRE:
            folder = catalog.backup_prefix(prefix, source, decision["backup_id"])
            locks[decision["backup_id"]] = backup_lock(target, folder, versioned)
    decisions = plan_retention(backups, now, locks=locks, **policy)
    result["decisions"] = decisions
    if lifecycle == "auto":
        wanted = desired_rule(
            prefix,
            source,
            policy["hot_days"],
            policy["cold_days"],
            cold_storage_class,
            policy["grace_hours"],
            lifecycle_expiration,
        )
        result["lifecycle"] = apply_lifecycle(target, wanted, check_mode)
        if result["lifecycle"]["status"] in ("put", "would_put"):
            result["changed"] = True
    transitions_by_rule = cold_storage_class and result["lifecycle"]["status"] in ("in_place", "put")

    moves_possible, moves_possible_reason = True, None
    for decision in decisions:
        backup_id, action = decision["backup_id"], decision["action"]
        folder = catalog.backup_prefix(prefix, source, backup_id)
        if action == COLD:
            if transitions_by_rule:
                decision["by"] = "lifecycle rule"
                continue
            if versioned:
                result["skipped"].append(
                    {
                        "backup_id": backup_id,
                        "action": COLD,
                        "reason": "versioned bucket: a copy onto itself would keep the hot version (and its lock); "
                        "use a lifecycle transition on this bucket",
                    }
                )
                continue
            if not moves_possible:
                result["skipped"].append({"backup_id": backup_id, "action": COLD, "reason": moves_possible_reason})
                continue
            if check_mode:
                result["moved"].append({"backup_id": backup_id, "storage_class": cold_storage_class, "done": False})
                result["changed"] = True
                continue
            try:
                for key, _unused, cls, _unused in _list_objects(target, folder):
                    if cls != cold_storage_class:
                        move_object(target, key, cold_storage_class)
            except S3_ERRORS as exc:
                if error_code(exc) in STORAGE_CLASS_REJECTED:
                    moves_possible = False
                    moves_possible_reason = (
                        f"the endpoint rejects storage class {cold_storage_class}: {error_code(exc)}"
                    )
                    result["skipped"].append({"backup_id": backup_id, "action": COLD, "reason": moves_possible_reason})
                    continue
                raise translate(exc, "move to cold storage", target.where(folder)) from exc
            result["moved"].append({"backup_id": backup_id, "storage_class": cold_storage_class, "done": True})
            result["changed"] = True
        elif action == EXPIRE:
            if check_mode:
                result["expired"].append({"backup_id": backup_id, "complete": decision["complete"], "done": False})
                result["changed"] = True
                continue
            if not decision["complete"]:
                # A backup may have started since the plan: look again right before deleting an incomplete folder.
                running = live_lock(target, lock_key, lock_stale_after)
                if running:
                    result["skipped"].append(
                        {"backup_id": backup_id, "action": EXPIRE, "reason": f"the source's lock is live ({running})"}
                    )
                    continue
            try:
                removed = delete_backup(target, folder, versioned, now)
            except DRError as exc:
                if getattr(exc, "locked_until", None) is None:
                    raise
                result["skipped"].append({"backup_id": backup_id, "action": EXPIRE, "reason": str(exc)})
                result["changed"] = True  # what was deleted before the refusal (at least its manifest) is gone
                continue
            result["expired"].append(
                {"backup_id": backup_id, "complete": decision["complete"], "done": True, "objects": removed}
            )
            result["changed"] = True


# --------------------------------------------------------------------------------------------- Storage and config


def _expire_sets(target, decisions, items_of, now, check_mode, out):
    """Expire the sets the decisions say (each set's (key, version) items from items_of(set_id)): a set with a
    version still locked is kept; a deletion refused by the lock is reported, not fought."""
    for decision in decisions:
        if decision["action"] != EXPIRE:
            continue
        set_id = decision["backup_id"]
        items = items_of(set_id)
        until = items_lock(target, [(k, v) for k, v, marker in items if not marker])
        if until and until > now:
            decision.update(
                action=KEEP,
                locked_until=timefmt.iso(until),
                reason=f"due to expire but locked until {timefmt.iso(until)}: not attempted",
            )
            continue
        if check_mode:
            out["expired"].append({"id": set_id, "done": False})
            out["changed"] = True
            continue
        try:
            delete_items(target, [(k, v) for k, v, _unused in items], now)
        except DRError as exc:
            if getattr(exc, "locked_until", None) is None:
                raise
            out["skipped"].append({"id": set_id, "action": EXPIRE, "reason": str(exc)})
            continue
        out["expired"].append({"id": set_id, "done": True, "objects": len(items)})
        out["changed"] = True


def _versions_of(target, keys, versioned):
    """(key, version, is marker) of every version of the given keys (one listing per key)."""
    out = []
    for key in keys:
        if versioned:
            out += [(k, v, m) for k, v, m in _list_versions(target, key) if k == key]
        else:
            out += [(k, None, False) for k, *_unused in _list_objects(target, key) if k == key]
    return out


def run_config(target, prefix, source, now, versioned, policy, check_mode):
    """Expire config snapshots (and their secure-copy records) like backups: never the newest keep_min."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import config_snapshot

    out = {"changed": False, "decisions": [], "expired": [], "skipped": []}
    ids = config_snapshot.list_snapshots(target, prefix, source)
    rows = [{"backup_id": i, "complete": True} for i in ids]
    out["decisions"] = plan_retention(rows, now, **policy, cold_storage_class=None)
    base = config_snapshot.config_prefix(prefix, source)

    def items_of(snapshot_id):
        keys = [config_snapshot.snapshot_key(prefix, source, snapshot_id), f"{base}secured/{snapshot_id}.json"]
        return _versions_of(target, keys, versioned)

    _expire_sets(target, out["decisions"], items_of, now, check_mode, out)
    return out


def run_storage(target, prefix, source, now, versioned, policy, check_mode, lock_stale_after=600):
    """Expire Storage runs like backups (never the newest keep_min verified runs), then remove the stored files no
    remaining run lists as live, once they are older than the grace period and no Storage backup holds its lock."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import storage_assets as sa

    out = {"changed": False, "decisions": [], "expired": [], "skipped": [], "collected": [], "collect": None}
    sprefix = sa.storage_prefix(prefix, source)
    runs = sa.list_runs(target, sprefix)
    if not runs:
        return out
    stored = {
        key: (size, modified) for key, size, _unused, modified in _list_objects(target, sa.data_prefixes(sprefix)[0])
    }
    for data_prefix in sa.data_prefixes(sprefix)[1:]:
        stored.update({key: (size, modified) for key, size, _unused, modified in _list_objects(target, data_prefix)})
    manifests = {run: sa.load_manifest(target, sprefix, run) for run in runs}
    rows = []
    for run_id, manifest in manifests.items():
        live = [e for e in manifest["objects"] if not e.get("deleted")]
        missing = [e for e in live if stored.get(e["stored_key"], (None,))[0] != e["size"]]
        row = {"backup_id": run_id, "complete": True, "verified": not missing}
        if missing:
            row["problems"] = [f"{len(missing)} stored files missing or of another size, e.g. {missing[0]['key']}"]
        rows.append(row)
    out["decisions"] = plan_retention(rows, now, **policy, cold_storage_class=None)

    def items_of(run_id):
        return _versions_of(target, [sa.manifest_key(sprefix, run_id), sa.record_key(sprefix, run_id)], versioned)

    _expire_sets(target, out["decisions"], items_of, now, check_mode, out)
    expired = {e["id"] for e in out["expired"]}
    kept = [run for run in runs if run not in expired]
    referenced = {e["stored_key"] for run in kept for e in manifests[run]["objects"] if not e.get("deleted")}
    holder = live_lock(target, sa.lock_key(sprefix), lock_stale_after)
    if holder:
        out["collect"] = f"not collected: the Storage lock is live ({holder})"
        return out
    grace = dt.timedelta(hours=policy["grace_hours"])
    unreferenced = [
        k for k, (_unused, modified) in stored.items() if k not in referenced and modified and now - modified >= grace
    ]
    out["collect"] = f"{len(unreferenced)} stored files no remaining run lists"
    for key in unreferenced:
        items = _versions_of(target, [key], versioned)
        until = items_lock(target, [(k, v) for k, v, marker in items if not marker])
        if until and until > now:
            out["skipped"].append({"id": key, "action": "collect", "reason": f"locked until {timefmt.iso(until)}"})
            continue
        if not check_mode:
            try:
                delete_items(target, [(k, v) for k, v, _unused in items], now, step="collect stored file")
            except DRError as exc:
                if getattr(exc, "locked_until", None) is None:
                    raise
                out["skipped"].append({"id": key, "action": "collect", "reason": str(exc)})
                continue
        out["collected"].append({"key": key, "done": not check_mode})
        out["changed"] = True
    return out

"""Retention of the logical backups of one source in one bucket: hot for hot_days, then a colder storage class,
expired after expire_days; the newest complete backups are never expired, and nothing still locked is touched.

``plan_retention`` is pure (backups, a fixed ``now``, the policy) so every decision can be tested without S3;
``run`` reads the bucket, plans, and applies (lifecycle rule where the endpoint takes it, explicit storage-class
moves and deletions where it does not). In check mode it only plans.
"""

from __future__ import annotations

import datetime as dt

from ansible_collections.pgdr.supabase.plugins.module_utils import catalog
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import S3_ERRORS, error_code, is_not_found, translate

KEEP, COLD, EXPIRE = "keep", "cold", "expire"
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

    backups: rows of catalog.list_backups. locks: backup_id -> latest retain-until of any of its object versions
    (FOREVER for a legal hold); a backup still locked at ``now`` is kept. storage_classes: backup_id -> set of
    storage classes of its objects (a backup already all in cold_storage_class is not moved again)."""
    validate_policy(hot_days, cold_days, keep_min, lock_days, grace_hours)
    locks = locks or {}
    storage_classes = storage_classes or {}
    rows = sorted(backups, key=lambda r: r["backup_id"], reverse=True)
    protected = {r["backup_id"] for r in [r for r in rows if r["complete"]][:keep_min]}
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
        if not row["complete"]:
            if age_days * 24 >= grace_hours:
                action, reason = EXPIRE, f"incomplete (no manifest) and older than {grace_hours} h"
            else:
                action, reason = KEEP, f"incomplete, within the {grace_hours} h grace period (may still be running)"
        elif age_days >= cold_days:
            if backup_id in protected:
                action, reason = KEEP, f"one of the newest {keep_min} complete backups: never expired"
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
        locked_until = locks.get(backup_id)
        if action == EXPIRE and locked_until and locked_until > now:
            action = KEEP
            reason = f"due to expire but locked until {catalog.isoformat(locked_until)}: not attempted"
            decision["locked_until"] = catalog.isoformat(locked_until)
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
    """(key, size, storage class) of every current object under prefix."""
    try:
        pages = target.client.get_paginator("list_objects_v2").paginate(Bucket=target.bucket, Prefix=prefix)
        return [
            (o["Key"], o["Size"], o.get("StorageClass") or "STANDARD")
            for page in pages
            for o in page.get("Contents", [])
        ]
    except S3_ERRORS as exc:
        raise translate(exc, "list objects", target.where(prefix)) from exc


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
    if versioned:
        items = [(key, version) for key, version, marker in _list_versions(target, folder) if not marker]
    else:
        items = [(key, None) for key, _, _ in _list_objects(target, folder)]
    dates = [d for d in (lock_of(target, key, version) for key, version in items) if d]
    return max(dates) if dates else None


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


def delete_backup(target, folder, versioned):
    """Delete a backup's manifest first (it becomes incomplete, never half-restorable), then the rest; in a
    versioned bucket every version and delete marker, never with a governance bypass."""
    manifest = folder + catalog.MANIFEST_NAME
    if versioned:
        items = _list_versions(target, folder)
        items.sort(key=lambda item: item[0] != manifest)
        for key, version, _ in items:
            try:
                target.client.delete_object(Bucket=target.bucket, Key=key, VersionId=version)
            except S3_ERRORS as exc:
                raise translate(exc, "expire backup", f"{target.where(key)} version {version}") from exc
        return len(items)
    keys = [key for key, _, _ in _list_objects(target, folder)]
    keys.sort(key=lambda key: key != manifest)
    target.delete_keys(keys, step="expire backup")
    return len(keys)


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
):
    """Plan and (unless check_mode) apply retention for one source in one bucket."""
    now = now or catalog.utcnow()
    validate_policy(hot_days, expire_days, keep_min, lock_days, grace_hours)
    if lifecycle not in LIFECYCLE_MODES:
        raise DRError(f"lifecycle must be one of {', '.join(LIFECYCLE_MODES)}, not {lifecycle!r}", step="retention")
    catalog.check_source_name(source)
    target.check_bucket(step="retention")
    versioned = _versioning(target) == "Enabled"
    backups = catalog.list_backups(target, prefix, source)
    classes = {}
    for row in backups:
        folder = catalog.backup_prefix(prefix, source, row["backup_id"])
        classes[row["backup_id"]] = {cls for _, _, cls in _list_objects(target, folder)}
    policy = {
        "hot_days": hot_days,
        "cold_days": expire_days,
        "keep_min": keep_min,
        "lock_days": lock_days,
        "grace_hours": grace_hours,
        "cold_storage_class": cold_storage_class,
        "storage_classes": classes,
    }
    first = plan_retention(backups, now, **policy)
    locks = {}
    for decision in first:
        if decision["action"] == EXPIRE:
            folder = catalog.backup_prefix(prefix, source, decision["backup_id"])
            locks[decision["backup_id"]] = backup_lock(target, folder, versioned)
    decisions = plan_retention(backups, now, locks=locks, **policy)

    result = {
        "changed": False,
        "bucket": target.bucket,
        "versioned": versioned,
        "now": catalog.isoformat(now),
        "decisions": decisions,
        "moved": [],
        "expired": [],
        "skipped": [],
        "lifecycle": {"status": "off"},
    }
    if lifecycle == "auto":
        wanted = desired_rule(
            prefix, source, hot_days, expire_days, cold_storage_class, grace_hours, lifecycle_expiration
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
                for key, _, cls in _list_objects(target, folder):
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
            removed = delete_backup(target, folder, versioned)
            result["expired"].append(
                {"backup_id": backup_id, "complete": decision["complete"], "done": True, "objects": removed}
            )
            result["changed"] = True
    return result

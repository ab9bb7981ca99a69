"""The immutable secondary copy: an Object Lock bucket checked for drift, and every complete backup copied into
it under the same keys, locked per object and verified by SHA-256 against the manifest.

Where a backup's copy stands is kept in a small record next to its manifest in the primary bucket
(``<backup folder>/secured.json``): the secondary bucket and endpoint, each object's version id, lock mode and
retain-until date, when it was verified, and ``status`` (``secured`` or ``not_secured`` with the error). The
manifest itself is never rewritten: it is the backup's commit point, written once, and its copy in the locked
bucket stays byte-identical to the primary one so either can be checked against the other.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.pgdr.supabase.plugins.module_utils import catalog, timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import (
    S3_ERRORS,
    MultipartWriter,
    b64_from_hex,
    b64_sha256,
    error_code,
    is_not_found,
    server_copy,
    translate,
)
from ansible_collections.pgdr.supabase.plugins.module_utils.selection import check_digest, open_object

LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
_STRENGTH = {None: 0, "GOVERNANCE": 1, "COMPLIANCE": 2}
SSE_ALGORITHMS = ("AES256", "aws:kms")
RECORD_NAME = "secured.json"
# 2: the record is also kept, locked, in the locked bucket; each copy's ETag is recorded.
RECORD_VERSION = 2
STREAM_PART_SIZE = 16 * 1024 * 1024
# Objects copied, locked and verified (or inspected) at once; S3Target keeps 10 connections.
COPY_CONCURRENCY = 8
FAR_FUTURE = dt.datetime.max.replace(tzinfo=dt.UTC)
READ_SIZE = 4 * 1024 * 1024
METHODS = ("auto", "server", "stream")
# Answers of endpoints that do not implement a bucket feature at all (as opposed to "not configured").
UNSUPPORTED_CODES = ("NotImplemented", "XNotImplemented", "MethodNotAllowed", "UnsupportedOperation", "501", "405")
NEW_BUCKET_HINT = (
    "Object Lock can only be switched on when a bucket is created: create a new bucket with Object Lock "
    "(pgdr.supabase.immutable_bucket with create=true and a new name), point the secondary copy at it, and keep "
    "the old bucket until its copies expire"
)


def _parse_iso(text):
    return timefmt.parse(text) if text else None


def _as_utc(moment):
    return moment.astimezone(dt.UTC) if moment else None


# --------------------------------------------------------------------------------------------- bucket state


def bucket_state(target):
    """What the bucket is now: exists, versioning, object lock, default retention and default encryption.

    ``sse`` is None (no default encryption), a dict, ``"unsupported"`` when the endpoint does not implement
    bucket encryption, or ``"unreadable"`` when the identity may not read it: those are states, not failures."""
    client, bucket = target.client, target.bucket
    state = {
        "bucket": bucket,
        "exists": True,
        "versioning": None,
        "object_lock": False,
        "default_retention": None,
        "sse": None,
    }
    try:
        client.head_bucket(Bucket=bucket)
    except S3_ERRORS as exc:
        if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
            state["exists"] = False
            return state
        raise translate(exc, "read bucket state", target.where()) from exc
    try:
        state["versioning"] = client.get_bucket_versioning(Bucket=bucket).get("Status") or "Disabled"
        try:
            config = client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
        except S3_ERRORS as exc:
            if error_code(exc) not in ("ObjectLockConfigurationNotFoundError", *UNSUPPORTED_CODES):
                raise
            config = {}
        state["object_lock"] = config.get("ObjectLockEnabled") == "Enabled"
        default = (config.get("Rule") or {}).get("DefaultRetention")
        if default:
            days = default.get("Days") or (default.get("Years") or 0) * 365
            state["default_retention"] = {"mode": default.get("Mode"), "days": days}
        try:
            rules = client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
            applied = (rules[0] if rules else {}).get("ApplyServerSideEncryptionByDefault") or {}
            if applied:
                state["sse"] = {"algorithm": applied.get("SSEAlgorithm"), "kms_key_id": applied.get("KMSMasterKeyID")}
        except S3_ERRORS as exc:
            code = error_code(exc)
            if code in UNSUPPORTED_CODES:
                state["sse"] = "unsupported"
            elif code in ("AccessDenied", "403"):
                # The backup writer need not read it (SeaweedFS lets only an admin); it matters only when the
                # policy asks for default encryption, and then it is drift that names the permission.
                state["sse"] = "unreadable"
            elif code != "ServerSideEncryptionConfigurationNotFoundError":
                raise
    except S3_ERRORS as exc:
        raise translate(exc, "read bucket state", target.where()) from exc
    return state


def check_lock_settings(mode, days, step="check lock settings"):
    if mode not in LOCK_MODES:
        raise DRError(
            f"lock mode {mode!r} is not one of {', '.join(LOCK_MODES)}",
            step=step,
            hint="use COMPLIANCE in production and GOVERNANCE only for tests",
        )
    if not isinstance(days, int) or days < 0:
        raise DRError(f"lock days must be a whole number of days >= 0, not {days!r}", step=step)


def check_sse(sse, step="check encryption settings"):
    if sse is None:
        return None
    algorithm = sse.get("algorithm")
    if algorithm not in SSE_ALGORITHMS:
        raise DRError(
            f"server-side encryption algorithm {algorithm!r} is not one of {', '.join(SSE_ALGORITHMS)}",
            step=step,
            hint="use {algorithm: AES256} or {algorithm: aws:kms, kms_key_id: <key arn or alias>}",
        )
    if algorithm == "AES256" and sse.get("kms_key_id"):
        raise DRError("kms_key_id is only used with algorithm aws:kms", step=step)
    return {"algorithm": algorithm, "kms_key_id": sse.get("kms_key_id") or None}


def plan_bucket(state, mode="COMPLIANCE", days=30, sse=None, create=True, extend=False):
    """Compare the bucket with what the secondary copy needs. Returns ``{"steps": [...], "drift": [...]}``.

    Steps only ever add or strengthen protection (create the bucket with Object Lock, add or extend the default
    retention, add default encryption). Whatever would need weakening or cannot be changed is drift. A step on a
    bucket that exists already (a default retention or encryption that is missing, perhaps removed, or weaker
    than the policy) restores something: it carries ``drift`` (what was found), which the run reports."""
    steps, drift = [], []
    sse = check_sse(sse)
    wanted = {"mode": mode, "days": days} if days else None
    if not state["exists"]:
        if not create:
            drift.append("the bucket does not exist")
            return {"steps": steps, "drift": drift}
        steps.append({"action": "create_bucket", "object_lock": True})
        if wanted:
            steps.append({"action": "set_default_retention", "from": None, "to": wanted})
        if sse:
            steps.append({"action": "set_encryption", "from": None, "to": sse})
        return {"steps": steps, "drift": drift}
    if not state["object_lock"]:
        drift.append("Object Lock is not enabled on the bucket, so its copies could be deleted or overwritten")
        return {"steps": steps, "drift": drift}
    if state["versioning"] != "Enabled":
        drift.append(f"versioning is {state['versioning']} on an Object Lock bucket (it must be Enabled)")
    current = state["default_retention"]
    if wanted:
        if current is None:
            steps.append(
                {
                    "action": "set_default_retention",
                    "from": None,
                    "to": wanted,
                    "drift": f"the bucket has no default retention (the policy wants {mode} {days} days): "
                    "it was removed, or never set",
                }
            )
        else:
            weaker_mode = _STRENGTH[current["mode"]] < _STRENGTH[mode]
            shorter = current["days"] < days
            if weaker_mode or shorter:
                stronger = {
                    "mode": current["mode"] if _STRENGTH[current["mode"]] >= _STRENGTH[mode] else mode,
                    "days": max(current["days"], days),
                }
                if extend:
                    steps.append(
                        {
                            "action": "set_default_retention",
                            "from": current,
                            "to": stronger,
                            "drift": f"the default retention is {current['mode']} {current['days']} days, weaker "
                            f"than the policy's {mode} {days} days",
                        }
                    )
                else:
                    drift.append(
                        f"the default retention is {current['mode']} {current['days']} days, weaker than the policy's "
                        f"{mode} {days} days (extend it with extend_retention=true; it is never shortened)"
                    )
    if sse:
        now = state["sse"]
        if now == "unsupported":
            drift.append("the endpoint does not support default bucket encryption, but the policy asks for it")
        elif now == "unreadable":
            drift.append(
                "this identity may not read the bucket's default encryption (s3:GetEncryptionConfiguration), which "
                "the policy asks for"
            )
        elif now is None:
            steps.append(
                {
                    "action": "set_encryption",
                    "from": None,
                    "to": sse,
                    "drift": f"the bucket has no default encryption (the policy wants {sse['algorithm']})",
                }
            )
        elif now["algorithm"] != sse["algorithm"] or (sse["kms_key_id"] and now["kms_key_id"] != sse["kms_key_id"]):
            drift.append(
                f"the bucket encrypts with {now['algorithm']} (key {now['kms_key_id']}), the policy asks for "
                f"{sse['algorithm']} (key {sse['kms_key_id']}); change one of them deliberately"
            )
    return {"steps": steps, "drift": drift}


def _apply_bucket_step(target, step, region):
    client, bucket = target.client, target.bucket
    if step["action"] == "create_bucket":
        extra = {}
        if region and region != "us-east-1":
            extra["CreateBucketConfiguration"] = {"LocationConstraint": region}
        client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True, **extra)
    elif step["action"] == "set_default_retention":
        rule = {"DefaultRetention": {"Mode": step["to"]["mode"], "Days": step["to"]["days"]}}
        client.put_object_lock_configuration(
            Bucket=bucket, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": rule}
        )
    elif step["action"] == "set_encryption":
        applied = {"SSEAlgorithm": step["to"]["algorithm"]}
        if step["to"]["kms_key_id"]:
            applied["KMSMasterKeyID"] = step["to"]["kms_key_id"]
        client.put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": applied}]},
        )


def ensure_bucket(target, mode="COMPLIANCE", days=30, sse=None, create=True, extend=False, check_mode=False):
    """Make sure the secondary bucket is an Object Lock bucket with at least the policy's default retention.

    Drift that cannot be fixed without weakening something (no Object Lock, versioning off, a weaker default
    retention without ``extend``, other encryption) is an error naming the bucket and what to do; nothing is ever
    weakened. Drift that can be fixed by restoring protection (a missing default retention or encryption) is fixed
    and reported in ``drift``: ``{"found", "action", "restored", "error"}`` each, ``restored`` false in check mode
    or when the identity may not change the bucket (the backup writer should not: an admin restores it then).
    In check mode nothing is written."""
    check_lock_settings(mode, days, step="ensure immutable bucket")
    before = bucket_state(target)
    plan = plan_bucket(before, mode=mode, days=days, sse=sse, create=create, extend=extend)
    if plan["drift"]:
        hint = NEW_BUCKET_HINT if not before["object_lock"] and before["exists"] else None
        if not before["exists"]:
            hint = "create the bucket with Object Lock (create=true) or fix the bucket name in the inventory"
        raise DRError(
            "the secondary bucket cannot hold immutable copies: " + "; ".join(plan["drift"]),
            step="ensure immutable bucket",
            subject=target.where(),
            hint=hint or "fix the bucket's settings as described (never by weakening them) and run again",
        )
    reports = {
        index: {"found": step["drift"], "action": step["action"], "to": step["to"], "restored": False, "error": None}
        for index, step in enumerate(plan["steps"])
        if step.get("drift")
    }
    after = before
    applied = []
    if plan["steps"] and not check_mode:
        region = target.client.meta.region_name
        for index, step in enumerate(plan["steps"]):
            report = reports.get(index)
            try:
                _apply_bucket_step(target, step, region)
            except S3_ERRORS as exc:
                if report is not None and error_code(exc) in ("AccessDenied", "403"):
                    report["error"] = (
                        f"not restored: this identity may not change the bucket ({error_code(exc)}); the bucket's "
                        "admin must restore it (the copies keep their own locks meanwhile)"
                    )
                    continue
                raise translate(exc, f"ensure immutable bucket: {step['action']}", target.where()) from exc
            applied.append(step)
            if report is not None:
                report["restored"] = True
        after = bucket_state(target)
    drift = list(reports.values())
    changed = bool(applied) if not check_mode else bool(plan["steps"])
    return {"changed": changed, "steps": plan["steps"], "before": before, "after": after, "drift": drift}


def describe_drift(target, drift):
    """One warning per drift found: what, and whether it was restored."""
    lines = []
    for item in drift:
        if item["restored"]:
            outcome = f"restored ({item['action']} to {item['to']})"
        elif item["error"]:
            outcome = item["error"]
        else:
            outcome = f"would restore ({item['action']} to {item['to']})"
        lines.append(f"DRIFT on {target.where()}: {item['found']}; {outcome}")
    return lines


# --------------------------------------------------------------------------------------------- records


def record_key(manifest_key):
    return manifest_key.rsplit("/", 1)[0] + "/" + RECORD_NAME


def retain_until_for(backup_id, lock_days):
    """Copies stay locked lock_days after the backup was taken (so the lock ends when retention may expire it)."""
    return catalog.parse_backup_id(backup_id) + dt.timedelta(days=lock_days)


def same_endpoint(primary, secondary):
    return primary.client.meta.endpoint_url == secondary.client.meta.endpoint_url


def choose_method(primary, secondary, method="auto"):
    if method not in METHODS:
        raise DRError(f"copy method {method!r} is not one of {', '.join(METHODS)}", step="secure backup")
    if method == "auto":
        return "server" if same_endpoint(primary, secondary) else "stream"
    return method


def read_record(primary, manifest_key):
    """The secure-copy record next to a manifest in the primary bucket, or None."""
    return primary.get_json(record_key(manifest_key), step="read secure-copy record")


def record(target, prefix, source, backup_id):
    """The secure-copy record of a backup in the primary bucket, with two flags for readers such as the freshness
    check: ``secured`` (the last attempt secured it) and ``verified`` (every copy was verified). A backup never
    secured gives ``{"status": None, "secured": False, "verified": False}``."""
    found = read_record(target, catalog.manifest_key(prefix, source, backup_id))
    if found is None:
        return {"status": None, "secured": False, "verified": False}
    objects = found.get("objects") or []
    verified = bool(found.get("verified_at")) and bool(objects) and all(o.get("verified") for o in objects)
    return {**found, "secured": found.get("status") == "secured", "verified": verified}


def key_versions(target, key, step="list versions"):
    """Every version and delete marker of exactly key, oldest first: dicts with version_id, delete_marker,
    is_latest, size, etag, last_modified.

    S3 lists the versions of a key newest first; that order (not the times, which have a resolution of one second)
    decides between two versions written in the same second."""
    found = []
    try:
        pages = target.client.get_paginator("list_object_versions").paginate(Bucket=target.bucket, Prefix=key)
        for page in pages:
            for item in page.get("Versions", []):
                if item["Key"] == key:
                    found.append(_version_row(item, False))
            for item in page.get("DeleteMarkers", []):
                if item["Key"] == key:
                    found.append(_version_row(item, True))
    except S3_ERRORS as exc:
        raise translate(exc, step, target.where(key)) from exc
    versions = [v for v in found if not v["delete_marker"]]
    markers = [v for v in found if v["delete_marker"]]
    for rank, row in enumerate(reversed(versions)):
        row["rank"] = rank
    for rank, row in enumerate(reversed(markers)):
        row["rank"] = rank
    oldest = dt.datetime.min.replace(tzinfo=dt.UTC)
    return sorted(found, key=lambda v: (v["last_modified"] or oldest, v["is_latest"], v["rank"]))


def _version_row(item, marker):
    return {
        "version_id": item.get("VersionId"),
        "delete_marker": marker,
        "is_latest": bool(item.get("IsLatest")),
        "size": None if marker else item.get("Size"),
        "etag": None if marker else _etag(item.get("ETag")),
        "last_modified": _as_utc(item.get("LastModified")),
    }


def _etag(value):
    return str(value).strip('"') if value else None


def _get_version(target, key, version_id, step):
    """The bytes of that version of key; None when it is not there."""
    try:
        return target.client.get_object(Bucket=target.bucket, Key=key, VersionId=version_id)["Body"].read()
    except S3_ERRORS as exc:
        if is_not_found(exc):
            return None
        raise translate(exc, step, f"{target.where(key)} version {version_id}") from exc


def _read_version_json(target, key, version_id, step):
    body = _get_version(target, key, version_id, step)
    if body is None:
        return None, None
    try:
        return json.loads(body), hashlib.sha256(body).hexdigest()
    except ValueError:
        return None, hashlib.sha256(body).hexdigest()


def read_locked_record(secondary, key, now=None):
    """The secure-copy record kept in the locked bucket itself: written once, locked like the copies.

    Which version is the record: the oldest version still locked whose manifest version still exists, else the
    oldest readable version. Anyone with write access can put a newer version (a forged record) on top, but nobody
    can slip a version under a locked one, so the oldest locked version is the one written when the copy was
    secured. Returns ``(record or None, info)``; ``info`` names the version used and the versions found after it
    (``newer``), which are tampering while that record is locked."""
    now = now or timefmt.utcnow()
    versions = [v for v in key_versions(secondary, key, step="read secure-copy record") if not v["delete_marker"]]
    info = {"key": key, "version_id": None, "newer": [], "locked_until": None}
    fallback = None
    for version in versions:
        try:
            _mode, until, _unused = _version_lock(secondary, key, version["version_id"])
        except S3_ERRORS as exc:
            if is_not_found(exc):
                continue
            raise translate(exc, "read secure-copy record", secondary.where(key)) from exc
        found, _unused = _read_version_json(secondary, key, version["version_id"], "read secure-copy record")
        if not isinstance(found, dict) or found.get("status") != "secured":
            continue
        if fallback is None:
            fallback = (found, version, until)
        if until and until > now and _manifest_version_exists(secondary, found):
            return found, _record_info(info, version, until, versions)
    if fallback is None:
        return None, info
    found, version, until = fallback
    return found, _record_info(info, version, until, versions)


def _record_info(info, version, until, versions):
    info.update(version_id=version["version_id"], locked_until=timefmt.iso(until))
    info["newer"] = [v["version_id"] for v in versions[versions.index(version) + 1 :]]
    return info


def _manifest_version_exists(secondary, found):
    """Whether the set's manifest (its last recorded object) is still there at the recorded version."""
    objects = found.get("objects") or []
    entry = objects[-1] if objects else None
    if not entry or not entry.get("version_id"):
        return False
    return _version_present(secondary, entry["key"], entry["version_id"], "read secure-copy record")


def _version_present(secondary, key, version_id, step):
    """Whether that version of key is in the bucket (a HEAD; a version id the server does not know is absent)."""
    try:
        secondary.client.head_object(Bucket=secondary.bucket, Key=key, VersionId=version_id)
    except S3_ERRORS as exc:
        if is_not_found(exc) or error_code(exc) in ("400", "InvalidArgument"):
            return False
        raise translate(exc, step, secondary.where(key)) from exc
    return True


# --------------------------------------------------------------------------------------------- tampering

TAMPER_KINDS = ("delete_marker", "newer_version", "lock", "digest", "gone", "record")


def inspect_copies(secondary, objects, now=None, extra_record=None):
    """Check each recorded copy in the locked bucket while its lock lasts: the recorded version is there with the
    recorded size and digest (ETag, and the stored SHA-256 checksum where the endpoint keeps one), locked at least
    until the recorded date, and nothing (a delete marker, a newer version) sits on top of it. A HEAD and a version
    listing per object; no data is read.

    Returns a list of findings ``{"kind", "name", "key", "version_id", "detail"}``; kinds are TAMPER_KINDS."""
    now = now or timefmt.utcnow()
    # Once the lock is over, what happens to the key is retention's business.
    locked = [o for o in objects if (_parse_iso(o.get("retain_until")) or FAR_FUTURE) > now]
    with ThreadPoolExecutor(max_workers=COPY_CONCURRENCY, thread_name_prefix="inspect-copy") as pool:
        findings = [f for found in pool.map(lambda obj: _inspect_one(secondary, obj), locked) for f in found]
    if extra_record and extra_record.get("newer"):
        findings.append(
            {
                "kind": "record",
                "name": "secure-copy record",
                "key": extra_record["key"],
                "version_id": extra_record["version_id"],
                "detail": f"{len(extra_record['newer'])} newer version(s) of the secure-copy record "
                f"({', '.join(extra_record['newer'])}) were put on top of the locked one",
            }
        )
    return findings


def _inspect_one(secondary, obj):
    key, version_id, name = obj["key"], obj["version_id"], obj["name"]
    out = []

    def finding(kind, detail):
        out.append({"kind": kind, "name": name, "key": key, "version_id": version_id, "detail": detail})

    try:
        head = secondary.client.head_object(
            Bucket=secondary.bucket, Key=key, VersionId=version_id, ChecksumMode="ENABLED"
        )
    except S3_ERRORS as exc:
        if is_not_found(exc) or error_code(exc) in ("400", "InvalidArgument"):
            finding("gone", f"the locked version {version_id} of {name} is gone")
            return out
        raise translate(exc, "check secure copy", f"{secondary.where(key)} version {version_id}") from exc
    this = f"version {version_id} of {name}"
    if head.get("ContentLength") != obj["size"]:
        finding("digest", f"{this} has {head.get('ContentLength')} bytes, the record says {obj['size']}")
    etag = _etag(head.get("ETag"))
    if obj.get("etag") and etag != obj["etag"]:
        finding("digest", f"{this} has ETag {etag}, the record says {obj['etag']}")
    checksum = head.get("ChecksumSHA256")
    if checksum and "-" not in checksum and obj.get("sha256") and checksum != b64_from_hex(obj["sha256"]):
        finding("digest", f"{this} has SHA-256 checksum {checksum}, not the manifest's")
    recorded_until = _parse_iso(obj.get("retain_until"))
    until = _as_utc(head.get("ObjectLockRetainUntilDate"))
    if recorded_until and (until is None or until < recorded_until - dt.timedelta(seconds=1)):
        finding("lock", f"{this} is locked until {timefmt.iso(until)}, the record says {timefmt.iso(recorded_until)}")
    latest = next((v for v in key_versions(secondary, key, step="check secure copy") if v["is_latest"]), None)
    if latest and latest["version_id"] != version_id:
        when = timefmt.iso(latest["last_modified"])
        if latest["delete_marker"]:
            finding(
                "delete_marker", f"a delete marker ({latest['version_id']}, {when}) hides the locked version of {name}"
            )
        else:
            finding(
                "newer_version",
                f"a newer version {latest['version_id']} ({latest['size']} bytes, {when}) was put on top of the "
                f"locked version of {name}",
            )
    return out


def describe_tampering(secondary, findings):
    """One line for an alert: TAMPERING, where, and each finding."""
    return f"TAMPERING in the immutable bucket {secondary.where()}: " + "; ".join(
        f"{f['key']}: {f['detail']}" for f in findings
    )


def is_tampering(findings):
    return any(f["kind"] != "gone" for f in findings)


# --------------------------------------------------------------------------------------------- copying


def _version_lock(secondary, key, version_id):
    head = secondary.client.head_object(Bucket=secondary.bucket, Key=key, VersionId=version_id)
    return head.get("ObjectLockMode"), _as_utc(head.get("ObjectLockRetainUntilDate")), head


def ensure_lock(secondary, key, version_id, mode, retain_until, step="lock copy"):
    """The version is locked with at least mode until retain_until: extend it when it is not (never shorten).

    Some endpoints ignore the lock headers of a copy (SeaweedFS does), so the lock is always read back."""
    where = secondary.where(key)
    try:
        current_mode, current_until, head = _version_lock(secondary, key, version_id)
        if current_until is None or current_until < retain_until or _STRENGTH[current_mode] < _STRENGTH[mode]:
            new_mode = current_mode if _STRENGTH[current_mode] > _STRENGTH[mode] else mode
            new_until = max(retain_until, current_until) if current_until else retain_until
            secondary.client.put_object_retention(
                Bucket=secondary.bucket,
                Key=key,
                VersionId=version_id,
                Retention={"Mode": new_mode, "RetainUntilDate": new_until},
            )
            current_mode, current_until, head = _version_lock(secondary, key, version_id)
    except S3_ERRORS as exc:
        raise translate(exc, step, f"{where} version {version_id}") from exc
    if current_until is None or current_until < retain_until - dt.timedelta(seconds=1):
        raise DRError(
            f"the copy is not locked until {timefmt.iso(retain_until)} (the endpoint reports {current_mode} until "
            f"{timefmt.iso(current_until)})",
            step=step,
            subject=f"{where} version {version_id}",
            hint="check that the secondary bucket has Object Lock and the identity may s3:PutObjectRetention",
        )
    return {"mode": current_mode, "retain_until": timefmt.iso(current_until), "etag": _etag(head.get("ETag"))}


def _lock_args(mode, retain_until):
    return {"ObjectLockMode": mode, "ObjectLockRetainUntilDate": retain_until}


def _locked_put_args(mode, retain_until):
    """A PutObject with a lock must name its checksum algorithm (AWS refuses it otherwise, as moto does); the
    SHA-256 itself is sent with the body."""
    return {**_lock_args(mode, retain_until), "ChecksumAlgorithm": "SHA256"}


def _stream_copy(primary, secondary, obj, mode, retain_until, step):
    """Download from primary and upload to secondary; data that does not match the manifest is never committed."""
    key = obj["key"]
    body = open_object(primary, obj, step)
    digest, size = hashlib.sha256(), 0
    try:
        if obj["size"] < STREAM_PART_SIZE:
            data = body.read()
            digest.update(data)
            size = len(data)
            check_digest(primary, obj, size, digest.hexdigest(), step)
            resp = secondary.client.put_object(
                Bucket=secondary.bucket,
                Key=key,
                Body=data,
                ChecksumSHA256=b64_sha256(data),
                ContentType="application/octet-stream",
                **_locked_put_args(mode, retain_until),
            )
            return resp.get("VersionId")
        writer = MultipartWriter(secondary, key, part_size=STREAM_PART_SIZE, extra_args=_lock_args(mode, retain_until))
        try:
            for chunk in body.iter_chunks(READ_SIZE):
                digest.update(chunk)
                size += len(chunk)
                writer.write(chunk)
            check_digest(primary, obj, size, digest.hexdigest(), step)
        except BaseException:
            writer.abort()
            raise
        writer.close()
    finally:
        body.close()
    return secondary.client.head_object(Bucket=secondary.bucket, Key=key).get("VersionId")


def verify_version(secondary, obj, version_id, step="verify copy"):
    """Stream one version of the copy and compare its size and SHA-256 with the manifest's."""
    try:
        body = secondary.client.get_object(Bucket=secondary.bucket, Key=obj["key"], VersionId=version_id)["Body"]
        digest, size = hashlib.sha256(), 0
        try:
            for chunk in body.iter_chunks(READ_SIZE):
                digest.update(chunk)
                size += len(chunk)
        finally:
            body.close()
    except S3_ERRORS as exc:
        if is_not_found(exc):
            raise DRError(
                f"the copy of {obj['name']} is missing",
                step=step,
                subject=f"{secondary.where(obj['key'])} version {version_id}",
                hint="run the secure copy again",
            ) from exc
        raise translate(exc, step, secondary.where(obj["key"])) from exc
    check_digest(secondary, obj, size, digest.hexdigest(), step)


def object_entry(target, key, name, step="read object"):
    """A small object (a manifest, a snapshot) described like a backup object: its bytes' size and SHA-256."""
    try:
        data = target.client.get_object(Bucket=target.bucket, Key=key)["Body"].read()
    except S3_ERRORS as exc:
        raise translate(exc, step, target.where(key)) from exc
    return {"name": name, "key": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _copy_one(primary, secondary, obj, method, mode, retain_until):
    step = f"copy {obj['name']}"
    try:
        if method == "server":
            return server_copy(primary, obj["key"], secondary, obj["key"], obj["size"], _lock_args(mode, retain_until))
        return _stream_copy(primary, secondary, obj, mode, retain_until, step)
    except S3_ERRORS as exc:
        raise translate(exc, step, secondary.where(obj["key"])) from exc


def _reusable(secondary, obj, previous):
    """A copy recorded for an earlier set (a Storage file kept by several runs) that can be locked longer instead of
    copied again: same key and SHA-256, and the recorded version is still there."""
    known = previous.get(obj["key"]) if previous else None
    if not known or known.get("sha256") != obj["sha256"] or not known.get("version_id"):
        return None
    return known if _version_present(secondary, obj["key"], known["version_id"], "check earlier copy") else None


def _secure_one(primary, secondary, obj, method, mode, retain_until, previous):
    known = _reusable(secondary, obj, previous)
    version_id = known["version_id"] if known else _copy_one(primary, secondary, obj, method, mode, retain_until)
    lock = ensure_lock(secondary, obj["key"], version_id, mode, retain_until, step=f"lock {obj['name']}")
    entry = {
        **{k: obj[k] for k in ("name", "key", "size", "sha256")},
        "version_id": version_id,
        "lock_mode": lock["mode"],
        "retain_until": lock["retain_until"],
        "etag": lock["etag"],
        "verified": bool(known),
        "reused": bool(known),
    }
    return entry


def _verify_entry(secondary, entry):
    if not entry["verified"]:
        verify_version(secondary, entry, entry["version_id"], step=f"verify copy of {entry['name']}")
        entry["verified"] = True


def _in_parallel(method, obj):
    """Server-side copies and small streamed ones run side by side; a large streamed copy holds several parts in
    memory, so those run one at a time."""
    return method == "server" or obj["size"] < STREAM_PART_SIZE


def copy_set(primary, secondary, entries, method, mode, retain_until, previous=None):
    """Copy each entry (objects first, the manifest last, once every object is locked and verified), lock every
    copy until retain_until, and stream every copy made now back to compare its SHA-256 with the entry's. Copies
    recorded for an earlier set (``previous``: key -> recorded entry) are locked longer instead of copied again;
    they were verified when they were made. Objects are handled COPY_CONCURRENCY at a time.

    Returns the recorded entries in the entries' order; raises a DRError naming the object on the first failure
    (with ``copied``, the entries done, on the error)."""
    objects, manifest = entries[:-1], entries[-1]
    done = {}

    def work(index):
        obj = objects[index] if index < len(objects) else manifest
        done[index] = _secure_one(primary, secondary, obj, method, mode, retain_until, previous)
        _verify_entry(secondary, done[index])

    try:
        with ThreadPoolExecutor(max_workers=COPY_CONCURRENCY, thread_name_prefix="secure-copy") as pool:
            futures = [pool.submit(work, i) for i, obj in enumerate(objects) if _in_parallel(method, obj)]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        for index, obj in enumerate(objects):
            if not _in_parallel(method, obj):
                work(index)
        work(len(objects))
    except DRError as exc:
        exc.copied = [done[i] for i in sorted(done)]
        raise
    return [done[i] for i in range(len(entries))]


def _write_primary_record(primary, key, data, existing):
    """The record in the primary bucket: a failed attempt never replaces a secured record."""
    if existing is not None and existing.get("status") == "secured" and json.loads(data).get("status") != "secured":
        return
    primary.put_bytes(key, data, step="write secure-copy record")


def _write_locked_record(secondary, key, data, mode, retain_until):
    """The record in the locked bucket, locked like the copies it names (written once per securing)."""
    resp = secondary.put_bytes(
        key, data, step="write secure-copy record to the locked bucket", extra_args=_locked_put_args(mode, retain_until)
    )
    version_id = resp.get("VersionId")
    ensure_lock(secondary, key, version_id, mode, retain_until, step="lock secure-copy record")
    return version_id


def _matches(found, secondary, entries, mode):
    if not found or found.get("status") != "secured":
        return False
    if found.get("secondary", {}).get("bucket") != secondary.bucket:
        return False
    if found.get("secondary", {}).get("endpoint_url") != secondary.client.meta.endpoint_url:
        return False
    if _STRENGTH[found.get("mode")] < _STRENGTH[mode]:
        return False
    wanted = {o["key"]: o["sha256"] for o in entries}
    recorded = {o["key"]: o["sha256"] for o in found.get("objects", [])}
    return wanted == recorded


def check_secured(primary, secondary, manifest, manifest_key, mode, retain_until, now=None):
    """Why the backup needs (re)securing, or None when its record says secured and every recorded version is
    still there, locked at least until retain_until. Returns ``(reason, record)``; tampering is reported by
    :func:`inspect_copies`, not as a reason to copy again (the locked versions are intact)."""
    entries = [dict(o) for o in manifest["objects"]] + [object_entry(primary, manifest_key, "manifest")]
    found = read_record(primary, manifest_key)
    return _reason(secondary, found, entries, mode, retain_until, now)[:2]


def _reason(secondary, found, entries, mode, retain_until, now):
    if found is None:
        return "no secure copy yet", found, []
    if found.get("status") != "secured":
        return f"the last attempt did not secure it: {found.get('error')}", found, []
    if not _matches(found, secondary, entries, mode):
        return "the record names another bucket, endpoint, lock mode or set of objects", found, []
    findings = inspect_copies(secondary, found["objects"], now)
    gone = [f for f in findings if f["kind"] == "gone"]
    if gone:
        return f"{gone[0]['detail']}: copying again", found, findings
    for obj in found["objects"]:
        until = _parse_iso(obj.get("retain_until"))
        if until is None or until < retain_until - dt.timedelta(seconds=1):
            return (
                f"the copy of {obj['name']} is locked until {timefmt.iso(until)}, less than required",
                found,
                findings,
            )
    return None, found, findings


def secure_set(
    primary,
    secondary,
    entries,
    kind,
    set_id,
    record_at,
    retain_until,
    mode,
    method="auto",
    reverify=False,
    check_mode=False,
    now=None,
    previous=None,
    inspect=True,
):
    """Secure one set of objects (a logical backup, a Storage run, a config snapshot) in the locked bucket.

    ``entries``: ``{name, key, size, sha256}`` each, the set's manifest last; ``record_at``: the record's key (the
    same in both buckets). The set is copied, locked until retain_until and verified unless its record says it is
    secured and every recorded version is still there. Whatever is found on top of a locked version (a delete
    marker, a newer version) is reported as tampering (``status: tampered``): the locked versions are intact and
    stay what a restore reads, so nothing is copied again. With ``inspect`` false a set whose record says secured
    is taken as secured without a request to the locked bucket (older Storage runs: their files are inspected with
    the newest run that keeps them). Returns the row the modules report."""
    now = now or timefmt.utcnow()
    retain_until = _as_utc(retain_until)
    base = {
        "kind": kind,
        "backup_id": set_id,
        "record_key": record_at,
        "secondary": secondary.where(entries[-1]["key"].rsplit("/", 1)[0] + "/"),
        "mode": mode,
        "retain_until": timefmt.iso(retain_until),
        "findings": [],
    }
    if retain_until <= now:
        raise DRError(
            f"{kind} {set_id} is older than the lock period: a copy locked until {timefmt.iso(retain_until)} would not "
            "be protected at all",
            step="secure backup",
            subject=primary.where(entries[-1]["key"]),
            hint="secure newer backups, or raise the lock days",
        )
    found = primary.get_json(record_at, step="read secure-copy record")
    if not inspect and _matches(found, secondary, entries, mode):
        return {
            **base,
            "changed": False,
            "status": "secured",
            "reason": "secured already (record)",
            "method": found.get("method"),
            "objects": found["objects"],
            "verified_at": found.get("verified_at"),
        }
    reason, found, findings = _reason(secondary, found, entries, mode, retain_until, now)
    if reason is None:
        locked, info = read_locked_record(secondary, record_at, now)
        if locked is None and found.get("record_version", 1) >= 2:
            findings.append(
                {
                    "kind": "record",
                    "name": "secure-copy record",
                    "key": record_at,
                    "version_id": found.get("record_version_id"),
                    "detail": "the secure-copy record is missing from the locked bucket",
                }
            )
        elif locked is not None:
            findings += inspect_copies(secondary, [], now, extra_record=info)
        row = {
            **base,
            "changed": False,
            "status": "secured",
            "reason": "secured and locked already",
            "method": found.get("method"),
            "objects": found["objects"],
            "verified_at": found.get("verified_at"),
            "findings": findings,
        }
        if findings:
            row.update(status="tampered", reason=describe_tampering(secondary, findings))
        elif reverify and not check_mode:
            for obj in found["objects"]:
                verify_version(secondary, obj, obj["version_id"], step=f"re-verify copy of {obj['name']}")
            row["reason"] = (
                f"secured and locked already; every copy re-read and verified at {timefmt.iso(timefmt.utcnow())}"
            )
        return row
    method = choose_method(primary, secondary, method)
    planned = [{"name": o["name"], "key": o["key"], "size": o["size"], "sha256": o["sha256"]} for o in entries]
    if check_mode:
        return {
            **base,
            "changed": True,
            "status": "would_secure",
            "reason": reason,
            "method": method,
            "objects": planned,
            "findings": findings,
        }
    new = {
        "record_version": RECORD_VERSION,
        "kind": kind,
        "backup_id": set_id,
        "status": "not_secured",
        "secondary": {"bucket": secondary.bucket, "endpoint_url": secondary.client.meta.endpoint_url},
        "method": method,
        "mode": mode,
        "retain_until": timefmt.iso(retain_until),
        "objects": [],
        "started_at": timefmt.iso(now),
        "verified_at": None,
        "error": None,
    }
    try:
        new["objects"] = copy_set(primary, secondary, entries, method, mode, retain_until, previous)
    except DRError as exc:
        new["objects"] = getattr(exc, "copied", [])
        new["error"] = str(exc)
        _write_primary_record(primary, record_at, _dump(new), found)
        raise DRError(
            f"{kind} {set_id} is not secured: {exc.message}",
            step=exc.step,
            subject=exc.subject,
            hint=exc.hint or "run the secure copy again; the record says not_secured until it succeeds",
        ) from exc
    new["status"] = "secured"
    new["verified_at"] = timefmt.iso(timefmt.utcnow())
    new["record_version_id"] = _write_locked_record(secondary, record_at, _dump(new), mode, retain_until)
    _write_primary_record(primary, record_at, _dump(new), found)
    return {
        **base,
        "changed": True,
        "status": "secured",
        "reason": reason,
        "method": method,
        "objects": new["objects"],
        "verified_at": new["verified_at"],
        "findings": findings,
    }


def _dump(data):
    return json.dumps(data, indent=2, sort_keys=True).encode()


def secure_backup(
    primary,
    secondary,
    manifest,
    retain_until,
    mode,
    manifest_key=None,
    method="auto",
    reverify=False,
    check_mode=False,
    now=None,
):
    """Copy a complete logical backup (its objects, then its manifest) to the secondary bucket under the same keys,
    lock every copy until retain_until, verify each copy's SHA-256 against the manifest, and record the outcome
    next to the manifest in both buckets (see :func:`secure_set`)."""
    check_lock_settings(mode, 0, step="secure backup")
    if manifest_key is None:
        manifest_key = manifest["objects"][0]["key"].rsplit("/", 1)[0] + "/" + catalog.MANIFEST_NAME
    entries = [dict(o) for o in manifest["objects"]]
    entries.append(object_entry(primary, manifest_key, "manifest", step="read manifest"))
    return secure_set(
        primary,
        secondary,
        entries,
        "backup",
        manifest["backup_id"],
        record_key(manifest_key),
        retain_until,
        mode,
        method=method,
        reverify=reverify,
        check_mode=check_mode,
        now=now,
    )


def secure(
    primary,
    secondary,
    prefix,
    source,
    selector="latest",
    lock_days=30,
    mode="COMPLIANCE",
    method="auto",
    reverify=False,
    check_mode=False,
    now=None,
):
    """Secure one backup (``latest`` or an id) or, with selector ``pending``, every complete backup whose copy
    is not secured yet and that is still inside the lock period. Returns ``{"changed", "backups": [...]}``."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import selection

    now = now or timefmt.utcnow()
    check_lock_settings(mode, lock_days, step="secure backup")
    if lock_days < 1:
        raise DRError("lock days must be at least 1 for the secondary copy", step="secure backup")
    catalog.check_source_name(source)
    if selector == "pending":
        rows = [row for row in catalog.list_backups(primary, prefix, source) if row["complete"]]
    else:
        rows = [selection.resolve(primary, prefix, source, selector)]
    results = []
    for row in rows:
        backup_id = row["backup_id"]
        until = retain_until_for(backup_id, lock_days)
        if selector == "pending" and until <= now:
            results.append(_skipped("backup", backup_id, lock_days))
            continue
        manifest = selection.load_manifest(primary, prefix, source, backup_id)
        results.append(
            secure_backup(
                primary,
                secondary,
                manifest,
                until,
                mode,
                manifest_key=catalog.manifest_key(prefix, source, backup_id),
                method=method,
                reverify=reverify,
                check_mode=check_mode,
                now=now,
            )
        )
    return _summary(results)


def _skipped(kind, set_id, lock_days):
    return {
        "kind": kind,
        "backup_id": set_id,
        "changed": False,
        "status": "skipped",
        "reason": f"older than the lock period of {lock_days} days",
        "findings": [],
    }


def summarize_rows(results):
    """The result of securing several sets: changed, the rows, and the tampering found (ids and one line)."""
    tampered = [r for r in results if r["status"] == "tampered"]
    tampering = "; ".join(f"{r['kind']} {r['backup_id']}: {r['reason']}" for r in tampered)
    return {
        "changed": any(r["changed"] for r in results),
        "backups": results,
        "tampered": [r["backup_id"] for r in tampered],
        "tampering": tampering,
        "run_warnings": [f"{r['kind']} {r['backup_id']}: {r['reason']}" for r in tampered],
    }


_summary = summarize_rows


def describe_rows(results, check_mode=False):
    """One line saying what securing did: how many sets were secured now, already, skipped, tampered."""
    counts = {}
    for row in results:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    if not results:
        return "nothing to secure"
    parts = [f"{n} {status.replace('_', ' ')}" for status, n in sorted(counts.items())]
    verb = "would secure" if check_mode else "secured"
    return f"immutable copy ({verb}): " + ", ".join(parts)


# --------------------------------------------------------------------------------------------- reading the copy


def list_secured(secondary, prefix, source, primary=None, now=None, verify=False):
    """The backups of source that can be restored from the locked bucket, newest first, as listing rows: one per
    backup folder (found through its versions, so a folder whose current objects are all hidden by delete markers
    is still found) whose secure-copy record and recorded manifest version read back. With ``verify`` each row
    also says whether every recorded version is there with the manifest's size (``catalog.check_presence``)."""
    base = catalog.source_prefix(prefix, source)
    try:
        pages = secondary.client.get_paginator("list_object_versions").paginate(
            Bucket=secondary.bucket, Prefix=base, Delimiter="/"
        )
        folders = sorted({p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])})
    except S3_ERRORS as exc:
        raise translate(exc, "list secured backups", secondary.where(base)) from exc
    rows = []
    for folder in folders:
        backup_id = folder[len(base) :].strip("/")
        if not catalog.BACKUP_ID_RE.fullmatch(backup_id):
            continue
        try:
            # The primary bucket (perhaps gone) is read only for a backup the locked bucket has no record of.
            manifest, _record, _info = load_secured(secondary, prefix, source, backup_id, now=now)
        except DRError:
            if primary is None:
                continue
            try:
                manifest, _record, _info = load_secured(secondary, prefix, source, backup_id, primary=primary, now=now)
            except DRError:
                continue
        row = catalog.summarize(manifest)
        row["verified"] = None
        if verify:
            row.update(catalog.check_presence(secondary, manifest))
        rows.append(row)
    return sorted(rows, key=lambda r: r["backup_id"], reverse=True)


def load_secured(secondary, prefix, source, backup_id, primary=None, now=None):
    """The manifest of a backup as secured in the locked bucket, each object entry carrying the ``version_id`` of
    its locked copy (the readers pass it on, so a restore reads exactly the versions verified when the copy was
    secured, whatever version is current). The record comes from the locked bucket (its oldest locked version),
    else from the primary bucket (backups secured before the locked bucket kept its own record).

    Returns ``(manifest, record, info)``; ``info``: ``trusted`` (which record), ``warnings``."""
    manifest_key = catalog.manifest_key(prefix, source, backup_id)
    at = record_key(manifest_key)
    where = secondary.where(manifest_key)
    record_found, info = read_locked_record(secondary, at, now)
    trusted = f"the secure-copy record in the locked bucket (version {info['version_id']})"
    warnings = []
    primary_record = None
    if primary is not None:
        try:
            primary_record = read_record(primary, manifest_key)
        except DRError as exc:
            warnings.append(f"the primary bucket's record could not be read ({exc.message})")
    if record_found is None:
        if not (primary_record and primary_record.get("status") == "secured"):
            raise DRError(
                f"backup {backup_id} has no secure-copy record in the locked bucket"
                + (" nor in the primary bucket" if primary is not None else ""),
                step="select backup",
                subject=where,
                hint="list the secured backups (playbooks/list_backups.yml -e from_secondary=true) and pick one",
            )
        record_found, trusted = primary_record, "the secure-copy record in the primary bucket"
    elif primary_record and _versions(primary_record) != _versions(record_found):
        warnings.append(
            "the primary bucket's record names other versions than the locked record: the locked one was used"
        )
    if info.get("newer"):
        warnings.append(f"newer versions of the locked record were ignored: {', '.join(info['newer'])}")
    versions = {o["key"]: o for o in record_found.get("objects", [])}
    manifest_entry = versions.get(manifest_key)
    if not manifest_entry or not manifest_entry.get("version_id"):
        raise DRError("the secure-copy record names no manifest version", step="read manifest", subject=where)
    data = _read_version_bytes(secondary, manifest_key, manifest_entry["version_id"])
    if hashlib.sha256(data).hexdigest() != manifest_entry["sha256"]:
        raise DRError(
            f"the locked manifest version {manifest_entry['version_id']} does not match the SHA-256 recorded when the "
            "copy was secured",
            step="read manifest",
            subject=where,
            hint="restore another backup from the locked bucket, or from the primary bucket",
        )
    manifest = catalog.validate_manifest(json.loads(data), where)
    for obj in manifest["objects"]:
        recorded = versions.get(obj["key"])
        if not recorded or recorded.get("sha256") != obj["sha256"] or not recorded.get("version_id"):
            raise DRError(
                f"the secure-copy record has no locked version of {obj['name']} matching the manifest",
                step="read manifest",
                subject=secondary.where(obj["key"]),
                hint="secure the backup again from the primary bucket, or restore another backup",
            )
        obj["version_id"] = recorded["version_id"]
    return manifest, record_found, {"trusted": trusted, "warnings": warnings, "record": info}


def _versions(found):
    return {o["key"]: o.get("version_id") for o in found.get("objects", [])}


def _read_version_bytes(secondary, key, version_id):
    data = _get_version(secondary, key, version_id, "read manifest")
    if data is None:
        raise DRError(
            f"the locked manifest version {version_id} is missing",
            step="read manifest",
            subject=secondary.where(key),
            hint="restore another backup",
        )
    return data


def inspect_backup(primary, secondary, prefix, source, backup_id, now=None):
    """For the monitor: the recorded copies of one backup checked for tampering (see :func:`inspect_copies`).
    Returns ``(record, findings)``; record None when the backup was never secured."""
    manifest_key = catalog.manifest_key(prefix, source, backup_id)
    found = read_record(primary, manifest_key)
    if not found or found.get("status") != "secured":
        return found, []
    findings = inspect_copies(secondary, found.get("objects") or [], now)
    if found.get("record_version", 1) >= 2:
        locked, info = read_locked_record(secondary, record_key(manifest_key), now)
        if locked is None:
            findings.append(
                {
                    "kind": "record",
                    "name": "secure-copy record",
                    "key": record_key(manifest_key),
                    "version_id": None,
                    "detail": "the secure-copy record is missing from the locked bucket",
                }
            )
        else:
            findings += inspect_copies(secondary, [], now, extra_record=info)
    return found, findings


# --------------------------------------------------------------------------------------------- Storage and config


def _storage():
    from ansible_collections.pgdr.supabase.plugins.module_utils import storage_assets

    return storage_assets


def storage_entries(primary, sprefix, run_id, manifest):
    """What a Storage run needs in the locked bucket: every stored file its live objects point at (once each), then
    its manifest."""
    sa = _storage()
    seen, entries = set(), []
    for obj in manifest["objects"]:
        if obj.get("deleted") or not obj.get("stored_key") or obj["stored_key"] in seen:
            continue
        seen.add(obj["stored_key"])
        name = f"file {obj['bucket']}/{obj['key']}"
        entries.append({"name": name[:200], "key": obj["stored_key"], "size": obj["size"], "sha256": obj["sha256"]})
    entries.append(object_entry(primary, sa.manifest_key(sprefix, run_id), "manifest", step="read storage manifest"))
    return entries


def secure_storage(primary, secondary, prefix, source, lock_days, mode, method="auto", check_mode=False, now=None):
    """Secure every Storage run still inside the lock period, oldest first: its files and manifest copied, locked
    until the run's time plus lock_days, verified. A file an earlier run secured is locked longer, not copied again.
    Only the newest run is inspected for tampering (a file it keeps is inspected with it)."""
    sa = _storage()
    now = now or timefmt.utcnow()
    sprefix = sa.storage_prefix(prefix, source)
    runs = sa.list_runs(primary, sprefix)
    results, previous = [], None
    for run_id in runs:
        until = retain_until_for(run_id, lock_days)
        if until <= now:
            results.append(_skipped("storage run", run_id, lock_days))
            continue
        manifest = sa.load_manifest(primary, sprefix, run_id)
        row = secure_set(
            primary,
            secondary,
            storage_entries(primary, sprefix, run_id, manifest),
            "storage run",
            run_id,
            sa.record_key(sprefix, run_id),
            until,
            mode,
            method=method,
            check_mode=check_mode,
            now=now,
            previous=previous,
            inspect=run_id == runs[-1],
        )
        if row["status"] in ("secured", "tampered"):
            previous = {o["key"]: o for o in row["objects"]}
        results.append(row)
    return results


def config_record_key(prefix, source, snapshot_id):
    from ansible_collections.pgdr.supabase.plugins.module_utils import config_snapshot

    return f"{config_snapshot.config_prefix(prefix, source)}secured/{snapshot_id}.json"


def secure_config(primary, secondary, prefix, source, lock_days, mode, method="auto", check_mode=False, now=None):
    """Secure every config snapshot still inside the lock period (one small object each)."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import config_snapshot

    now = now or timefmt.utcnow()
    results = []
    for snapshot_id in config_snapshot.list_snapshots(primary, prefix, source):
        until = retain_until_for(snapshot_id, lock_days)
        if until <= now:
            results.append(_skipped("config snapshot", snapshot_id, lock_days))
            continue
        key = config_snapshot.snapshot_key(prefix, source, snapshot_id)
        results.append(
            secure_set(
                primary,
                secondary,
                [object_entry(primary, key, "snapshot", step="read config snapshot")],
                "config snapshot",
                snapshot_id,
                config_record_key(prefix, source, snapshot_id),
                until,
                mode,
                method=method,
                check_mode=check_mode,
                now=now,
            )
        )
    return results


def list_secured_runs(secondary, sprefix):
    """Storage run ids with a secure-copy record in the locked bucket (found through versions), oldest first."""
    base = f"{sprefix}secured/"
    try:
        pages = secondary.client.get_paginator("list_object_versions").paginate(Bucket=secondary.bucket, Prefix=base)
        names = {v["Key"][len(base) :] for page in pages for v in page.get("Versions", [])}
    except S3_ERRORS as exc:
        raise translate(exc, "list secured storage runs", secondary.where(base)) from exc
    return sorted(n[:-5] for n in names if n.endswith(".json") and catalog.BACKUP_ID_RE.fullmatch(n[:-5]))


def load_secured_run(secondary, sprefix, run_id, now=None):
    """A Storage run's manifest as secured in the locked bucket, every live object carrying the locked version of
    its stored file (``stored_version_id``), from the record kept in the locked bucket. Returns
    ``(manifest, record, info)``."""
    sa = _storage()
    at = sa.record_key(sprefix, run_id)
    found, info = read_locked_record(secondary, at, now)
    if found is None:
        raise DRError(
            f"storage run {run_id} has no secure-copy record in the locked bucket",
            step="select storage backup",
            subject=secondary.where(at),
            hint="pick a run that was secured (secure_copy.yml secures every run inside the lock period)",
        )
    recorded = {o["key"]: o for o in found["objects"]}
    entry = found["objects"][-1]
    data = _read_version_bytes(secondary, entry["key"], entry["version_id"])
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise DRError(
            f"the locked manifest of storage run {run_id} does not match the SHA-256 recorded when it was secured",
            step="read storage manifest",
            subject=secondary.where(entry["key"]),
            hint="restore another run",
        )
    manifest = sa.validate_manifest(json.loads(data), secondary.where(entry["key"]))
    for obj in manifest["objects"]:
        if obj.get("deleted"):
            continue
        copy = recorded.get(obj["stored_key"])
        if not copy or copy.get("sha256") != obj["sha256"]:
            raise DRError(
                f"the secure-copy record of storage run {run_id} has no locked copy of {obj['bucket']}/{obj['key']}",
                step="read storage manifest",
                subject=secondary.where(obj["stored_key"]),
                hint="secure the run again from the primary bucket, or restore another run",
            )
        obj["stored_version_id"] = copy["version_id"]
    return manifest, found, info

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

from ansible_collections.pgdr.supabase.plugins.module_utils import catalog
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import (
    S3_ERRORS,
    MultipartWriter,
    b64_sha256,
    error_code,
    is_not_found,
    translate,
)
from ansible_collections.pgdr.supabase.plugins.module_utils.selection import check_digest, open_object

LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
_STRENGTH = {None: 0, "GOVERNANCE": 1, "COMPLIANCE": 2}
SSE_ALGORITHMS = ("AES256", "aws:kms")
RECORD_NAME = "secured.json"
RECORD_VERSION = 1
# S3's CopyObject copies at most 5 GiB; bigger objects are copied part by part (UploadPartCopy).
MULTIPART_COPY_THRESHOLD = 5 * 1024 * 1024 * 1024
COPY_PART_SIZE = 512 * 1024 * 1024
STREAM_PART_SIZE = 16 * 1024 * 1024
READ_SIZE = 4 * 1024 * 1024
METHODS = ("auto", "server", "stream")
# Answers of endpoints that do not implement a bucket feature at all (as opposed to "not configured").
UNSUPPORTED_CODES = ("NotImplemented", "XNotImplemented", "MethodNotAllowed", "UnsupportedOperation", "501", "405")
NEW_BUCKET_HINT = (
    "Object Lock can only be switched on when a bucket is created: create a new bucket with Object Lock "
    "(pgdr.supabase.immutable_bucket with create=true and a new name), point the secondary copy at it, and keep "
    "the old bucket until its copies expire"
)


def utcnow():
    return dt.datetime.now(dt.UTC)


def _iso(moment):
    return catalog.isoformat(moment) if moment else None


def _parse_iso(text):
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def _as_utc(moment):
    return moment.astimezone(dt.UTC) if moment else None


# --------------------------------------------------------------------------------------------- bucket state


def bucket_state(target):
    """What the bucket is now: exists, versioning, object lock, default retention and default encryption.

    ``sse`` is None (no default encryption), a dict, or ``"unsupported"`` when the endpoint does not implement
    bucket encryption: that is a state, not a failure."""
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
    retention, add default encryption). Whatever would need weakening or cannot be changed is drift."""
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
            steps.append({"action": "set_default_retention", "from": None, "to": wanted})
        else:
            weaker_mode = _STRENGTH[current["mode"]] < _STRENGTH[mode]
            shorter = current["days"] < days
            if weaker_mode or shorter:
                stronger = {
                    "mode": current["mode"] if _STRENGTH[current["mode"]] >= _STRENGTH[mode] else mode,
                    "days": max(current["days"], days),
                }
                if extend:
                    steps.append({"action": "set_default_retention", "from": current, "to": stronger})
                else:
                    drift.append(
                        f"the default retention is {current['mode']} {current['days']} days, weaker than the policy's "
                        f"{mode} {days} days (extend it with extend_retention=true; it is never shortened)"
                    )
    if sse:
        now = state["sse"]
        if now == "unsupported":
            drift.append("the endpoint does not support default bucket encryption, but the policy asks for it")
        elif now is None:
            steps.append({"action": "set_encryption", "from": None, "to": sse})
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

    Drift (no Object Lock, versioning off, a weaker default retention without ``extend``, other encryption)
    is an error naming the bucket and what to do; nothing is ever weakened. In check mode nothing is written."""
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
    after = before
    if plan["steps"] and not check_mode:
        region = target.client.meta.region_name
        for step in plan["steps"]:
            try:
                _apply_bucket_step(target, step, region)
            except S3_ERRORS as exc:
                raise translate(exc, f"ensure immutable bucket: {step['action']}", target.where()) from exc
        after = bucket_state(target)
    return {"changed": bool(plan["steps"]), "steps": plan["steps"], "before": before, "after": after}


# --------------------------------------------------------------------------------------------- secure a backup


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


def _version_lock(secondary, key, version_id):
    head = secondary.client.head_object(Bucket=secondary.bucket, Key=key, VersionId=version_id)
    return head.get("ObjectLockMode"), _as_utc(head.get("ObjectLockRetainUntilDate")), head


def ensure_lock(secondary, key, version_id, mode, retain_until, step="lock copy"):
    """The version is locked with at least mode until retain_until: extend it when it is not (never shorten).

    Some endpoints ignore the lock headers of a copy (SeaweedFS does), so the lock is always read back."""
    where = secondary.where(key)
    try:
        current_mode, current_until, _ = _version_lock(secondary, key, version_id)
        if current_until is None or current_until < retain_until or _STRENGTH[current_mode] < _STRENGTH[mode]:
            new_mode = current_mode if _STRENGTH[current_mode] > _STRENGTH[mode] else mode
            new_until = max(retain_until, current_until) if current_until else retain_until
            secondary.client.put_object_retention(
                Bucket=secondary.bucket,
                Key=key,
                VersionId=version_id,
                Retention={"Mode": new_mode, "RetainUntilDate": new_until},
            )
            current_mode, current_until, _ = _version_lock(secondary, key, version_id)
    except S3_ERRORS as exc:
        raise translate(exc, step, f"{where} version {version_id}") from exc
    if current_until is None or current_until < retain_until - dt.timedelta(seconds=1):
        raise DRError(
            f"the copy is not locked until {_iso(retain_until)} (the endpoint reports {current_mode} until "
            f"{_iso(current_until)})",
            step=step,
            subject=f"{where} version {version_id}",
            hint="check that the secondary bucket has Object Lock and the identity may s3:PutObjectRetention",
        )
    return {"mode": current_mode, "retain_until": _iso(current_until)}


def _lock_args(mode, retain_until):
    return {"ObjectLockMode": mode, "ObjectLockRetainUntilDate": retain_until}


def _server_copy(primary, secondary, key, size, mode, retain_until):
    source = {"Bucket": primary.bucket, "Key": key}
    client = secondary.client
    if size <= MULTIPART_COPY_THRESHOLD:
        resp = client.copy_object(
            Bucket=secondary.bucket,
            Key=key,
            CopySource=source,
            ChecksumAlgorithm="SHA256",
            MetadataDirective="COPY",
            **_lock_args(mode, retain_until),
        )
        return resp.get("VersionId")
    upload = client.create_multipart_upload(
        Bucket=secondary.bucket, Key=key, ChecksumAlgorithm="SHA256", **_lock_args(mode, retain_until)
    )["UploadId"]
    try:
        parts = []
        for number, start in enumerate(range(0, size, COPY_PART_SIZE), start=1):
            end = min(start + COPY_PART_SIZE, size) - 1
            result = client.upload_part_copy(
                Bucket=secondary.bucket,
                Key=key,
                UploadId=upload,
                PartNumber=number,
                CopySource=source,
                CopySourceRange=f"bytes={start}-{end}",
            )["CopyPartResult"]
            part = {"PartNumber": number, "ETag": result["ETag"]}
            if result.get("ChecksumSHA256"):
                part["ChecksumSHA256"] = result["ChecksumSHA256"]
            parts.append(part)
        resp = client.complete_multipart_upload(
            Bucket=secondary.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        secondary.abort_upload(key, upload)
        raise
    return resp.get("VersionId")


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
                **_lock_args(mode, retain_until),
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


def _manifest_entry(primary, manifest_key):
    """The primary manifest's bytes described like a backup object, so it is copied and verified the same way."""
    try:
        data = primary.client.get_object(Bucket=primary.bucket, Key=manifest_key)["Body"].read()
    except S3_ERRORS as exc:
        raise translate(exc, "read manifest", primary.where(manifest_key)) from exc
    return {"name": "manifest", "key": manifest_key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def read_record(primary, manifest_key):
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


def _record_matches(record, secondary, manifest, mode):
    if not record or record.get("status") != "secured":
        return False
    if record.get("secondary", {}).get("bucket") != secondary.bucket:
        return False
    if record.get("secondary", {}).get("endpoint_url") != secondary.client.meta.endpoint_url:
        return False
    if _STRENGTH[record.get("mode")] < _STRENGTH[mode]:
        return False
    keys = {o["key"]: o["sha256"] for o in manifest["objects"]}
    recorded = {o["key"]: o["sha256"] for o in record.get("objects", []) if o["name"] != "manifest"}
    return keys == recorded


def check_secured(primary, secondary, manifest, manifest_key, mode, retain_until):
    """Why the backup needs (re)securing, or None when its record says secured and every recorded version
    still exists, locked at least until retain_until (a HEAD per object; no data read)."""
    record = read_record(primary, manifest_key)
    if record is None:
        return "no secure copy yet", record
    if record.get("status") != "secured":
        return f"the last attempt did not secure it: {record.get('error')}", record
    if not _record_matches(record, secondary, manifest, mode):
        return "the record names another bucket, endpoint, lock mode or set of objects", record
    for obj in record["objects"]:
        try:
            lock_mode, until, _ = _version_lock(secondary, obj["key"], obj["version_id"])
        except S3_ERRORS as exc:
            if is_not_found(exc) or error_code(exc) in ("400", "InvalidArgument"):
                return f"the copy of {obj['name']} (version {obj['version_id']}) is gone", record
            raise translate(exc, "check secure copy", secondary.where(obj["key"])) from exc
        if until is None or until < retain_until - dt.timedelta(seconds=1) or _STRENGTH[lock_mode] < _STRENGTH[mode]:
            return f"the copy of {obj['name']} is locked {lock_mode} until {_iso(until)}, less than required", record
    return None, record


def _write_record(primary, manifest_key, record):
    data = json.dumps(record, indent=2, sort_keys=True).encode()
    primary.put_bytes(record_key(manifest_key), data, step="write secure-copy record")


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
    """Copy a complete backup (its objects, then its manifest) to the secondary bucket under the same keys, lock
    every copy until retain_until, verify each copy's SHA-256 against the manifest, and record the outcome.

    Returns ``{"changed", "status", "reason", "method", "objects", "record_key", ...}``. A copy that does not
    verify raises a DRError naming the object, after the record says ``not_secured``."""
    now = now or utcnow()
    check_lock_settings(mode, 0, step="secure backup")
    backup_id = manifest["backup_id"]
    if manifest_key is None:
        manifest_key = manifest["objects"][0]["key"].rsplit("/", 1)[0] + "/" + catalog.MANIFEST_NAME
    retain_until = _as_utc(retain_until)
    base = {
        "backup_id": backup_id,
        "record_key": record_key(manifest_key),
        "secondary": secondary.where(manifest_key.rsplit("/", 1)[0] + "/"),
        "mode": mode,
        "retain_until": _iso(retain_until),
    }
    if retain_until <= now:
        raise DRError(
            f"backup {backup_id} is older than the lock period: a copy locked until {_iso(retain_until)} would not "
            "be protected at all",
            step="secure backup",
            subject=primary.where(manifest_key),
            hint="secure newer backups, or raise the lock days",
        )
    if reverify:
        reason = "re-verification asked for"
    else:
        reason, record = check_secured(primary, secondary, manifest, manifest_key, mode, retain_until)
    if reason is None:
        return {
            **base,
            "changed": False,
            "status": "secured",
            "reason": "secured and locked already",
            "method": record.get("method"),
            "objects": record["objects"],
            "verified_at": record.get("verified_at"),
        }
    method = choose_method(primary, secondary, method)
    entries = [dict(o) for o in manifest["objects"]] + [_manifest_entry(primary, manifest_key)]
    planned = [{"name": o["name"], "key": o["key"], "size": o["size"], "sha256": o["sha256"]} for o in entries]
    if check_mode:
        return {
            **base,
            "changed": True,
            "status": "would_secure",
            "reason": reason,
            "method": method,
            "objects": planned,
        }
    copied = []
    record = {
        "record_version": RECORD_VERSION,
        "backup_id": backup_id,
        "status": "not_secured",
        "secondary": {"bucket": secondary.bucket, "endpoint_url": secondary.client.meta.endpoint_url},
        "method": method,
        "mode": mode,
        "retain_until": _iso(retain_until),
        "objects": copied,
        "started_at": _iso(now),
        "verified_at": None,
        "error": None,
    }
    try:
        for obj in entries:
            step = f"copy {obj['name']}"
            try:
                if method == "server":
                    version_id = _server_copy(primary, secondary, obj["key"], obj["size"], mode, retain_until)
                else:
                    version_id = _stream_copy(primary, secondary, obj, mode, retain_until, step)
            except S3_ERRORS as exc:
                raise translate(exc, step, secondary.where(obj["key"])) from exc
            lock = ensure_lock(secondary, obj["key"], version_id, mode, retain_until, step=f"lock {obj['name']}")
            copied.append(
                {
                    **{k: obj[k] for k in ("name", "key", "size", "sha256")},
                    "version_id": version_id,
                    "lock_mode": lock["mode"],
                    "retain_until": lock["retain_until"],
                    "verified": False,
                }
            )
        for entry in copied:
            verify_version(secondary, entry, entry["version_id"], step=f"verify copy of {entry['name']}")
            entry["verified"] = True
    except DRError as exc:
        record["error"] = str(exc)
        _write_record(primary, manifest_key, record)
        raise DRError(
            f"backup {backup_id} is not secured: {exc.message}",
            step=exc.step,
            subject=exc.subject,
            hint=exc.hint or "run the secure copy again; the record says not_secured until it succeeds",
        ) from exc
    record["status"] = "secured"
    record["verified_at"] = _iso(utcnow())
    _write_record(primary, manifest_key, record)
    return {
        **base,
        "changed": True,
        "status": "secured",
        "reason": reason,
        "method": method,
        "objects": copied,
        "verified_at": record["verified_at"],
    }


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

    now = now or utcnow()
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
            results.append(
                {
                    "backup_id": backup_id,
                    "changed": False,
                    "status": "skipped",
                    "reason": f"older than the lock period of {lock_days} days",
                }
            )
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
    return {"changed": any(r["changed"] for r in results), "backups": results}

"""Storage assets: the files of a project's Storage buckets, copied incrementally into the backup bucket, and
restored into another project's buckets.

The source is any S3-compatible endpoint (Supabase Storage's is ``https://<ref>.storage.supabase.co/storage/v1/s3``,
path-style, SigV4, region = the project's region). Layout in the backup bucket, under ``<prefix>/<source>/storage/``::

    manifests/<run_id>.json                 one per run that changed something: the commit point
    blobs/<sha256[:2]>/<sha256>             the bytes of every file, stored once under their SHA-256
    staging/<run_id>/<n>                    a large file while it uploads (its SHA-256 is known at the end)
    secured/<run_id>.json                   where the run's copy in the locked bucket stands (immutable.py)
    _lock.json                              held while a run copies
    objects/<run_id>/<bucket>/<key>         the layout of runs taken before manifest version 2 (still restored)

Files are stored under their content's SHA-256, so a stored key has a fixed length whatever the source key (a
1015-byte key, valid at the source, cannot overflow S3's 1024-byte limit once a prefix is added), a file kept by
many runs or under many names is stored once, and nothing is ever overwritten. The manifest maps each original
bucket and key to its blob (``stored_key``) with its size, ETag, MD5, SHA-256, last-modified time and metadata
(content type, cache control, content disposition, encoding and language, user metadata), and lists every object,
so every manifest stays restorable on its own and an Object-Lock or versioned backup bucket works unchanged.

An object is unchanged when its size and ETag equal the manifest's; one whose last-modified time moved (or whose
metadata was never recorded) is read with a HEAD, so a change of metadata alone is found and recorded without
copying its bytes again. A single-part ETag is the MD5 of the bytes and is checked against the bytes copied; a
multipart ETag (``...-N``) is not an MD5 and is only compared as a string; the SHA-256 computed while copying is
what restore verifies. Objects deleted at the source, also while a run copies them, stay in the backup and are
marked ``deleted`` in the manifest.

A run whose listing matches the newest manifest writes nothing. What a run that never wrote its manifest (killed,
failed) left in staging/ (or objects/) is removed by the next run under the lock; blobs no remaining run lists
are removed by retention.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.pgdr.supabase.plugins.module_utils import catalog, timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.lock import SourceLock
from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import (
    S3_ERRORS,
    MultipartWriter,
    error_code,
    is_not_found,
    server_copy,
    translate,
)

MANIFEST_VERSION = 2
LIST_PAGE_SIZE = 1000
READ_CHUNK = 1024 * 1024
DEFAULT_PART_SIZE = 8 * 1024 * 1024
# The restore writes objects larger than this in parts of this size; the backup records the ETag such an upload
# gets, so a second restore recognises a large object it restored without reading it again.
RESTORE_PART_SIZE = DEFAULT_PART_SIZE
HEAD_CONCURRENCY = 8
# Restores before manifest version 2 marked each restored object with its SHA-256 in this user metadata; such
# objects are still recognised (and their metadata is put back to exactly what was backed up).
SHA256_METADATA = "pgdr-sha256"
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
_RUN_ID = re.compile(r"^\d{8}T\d{6}Z$")
# Object metadata kept per file: the response field and the PutObject/CopyObject argument share the name.
METADATA_FIELDS = ("ContentType", "CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage")
_ENTRY_FIELDS = {
    "ContentType": "content_type",
    "CacheControl": "cache_control",
    "ContentDisposition": "content_disposition",
    "ContentEncoding": "content_encoding",
    "ContentLanguage": "content_language",
}

# ---------------------------------------------------------------------------------------------------------------
# Layout and small pure helpers


def storage_spec(required=True):
    """The ``storage`` option of the modules: the S3 options without a bucket (a run covers several buckets)."""
    from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import S3_ARGUMENT_SPEC

    keys = ("endpoint_url", "region", "access_key", "secret_key", "session_token", "ca_bundle", "validate_certs")
    options = {k: dict(S3_ARGUMENT_SPEC[k]) for k in (*keys, "checksums")}
    return {"type": "dict", "required": required, "options": options}


def storage_target(params):
    """An S3Target of the Storage endpoint; each call names its bucket."""
    from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import s3_target

    return s3_target({k: v for k, v in params.items() if k in storage_spec()["options"]} | {"bucket": None})


def missing_warning(result, where):
    """The warning for objects referenced in storage.objects but missing from ``where``, naming a few of them."""
    check = result.get("cross_check") or {}
    missing = check.get("missing_count", 0)
    if not missing:
        return None
    names = ", ".join(f"{m['bucket']}/{m['key']}" for m in check.get("missing", [])[:5])
    more = f" and {missing - 5} more" if missing > 5 else ""
    return f"{missing} objects referenced in storage.objects are missing from {where}: {names}{more}"


def report_missing(module, result, fail_on_missing, where):
    """After a cross-check: objects referenced in storage.objects but missing from ``where`` fail the task
    (``fail_on_missing``) or make a warning (also kept in the result's ``warnings``)."""
    text = missing_warning(result, where)
    if text:
        if fail_on_missing:
            module.fail_json(msg=text, **result)
        module.warn(text)
        result.setdefault("run_warnings", []).append(text)


def storage_prefix(prefix, source):
    catalog.check_source_name(source)
    base = prefix.strip("/")
    return f"{base}/{source}/storage/" if base else f"{source}/storage/"


def manifest_key(sprefix, run_id):
    return f"{sprefix}manifests/{run_id}.json"


def record_key(sprefix, run_id):
    """Where the secure-copy record of a run lives (the same key in the primary and the locked bucket)."""
    return f"{sprefix}secured/{run_id}.json"


def objects_prefix(sprefix, run_id=None):
    """The folder of the layout before manifest version 2 (one copy per run under the original key)."""
    return f"{sprefix}objects/{run_id}/" if run_id else f"{sprefix}objects/"


def stored_key(sprefix, run_id, bucket, key):
    """A stored key in the layout before manifest version 2 (kept to read old runs)."""
    return f"{objects_prefix(sprefix, run_id)}{bucket}/{key}"


def blobs_prefix(sprefix):
    return f"{sprefix}blobs/"


def blob_key(sprefix, sha256):
    """Where the bytes with this SHA-256 are stored: a fixed-length key whatever the source key was."""
    return f"{blobs_prefix(sprefix)}{sha256[:2]}/{sha256}"


def staging_prefix(sprefix, run_id=None):
    return f"{sprefix}staging/{run_id}/" if run_id else f"{sprefix}staging/"


def data_prefixes(sprefix):
    """The folders that hold stored bytes (retention removes what no remaining run lists)."""
    return [blobs_prefix(sprefix), objects_prefix(sprefix)]


def lock_key(sprefix):
    return f"{sprefix}_lock.json"


def normalize_etag(etag):
    """An ETag without its quotes, lower case (``"abc"`` -> ``abc``); None stays None."""
    if etag is None:
        return None
    return str(etag).strip().strip('"').lower()


def is_md5_etag(etag):
    """True for a single-part ETag (32 hex digits, the MD5 of the bytes); a multipart one ends in ``-<parts>``."""
    return bool(_MD5_ETAG.match(normalize_etag(etag) or ""))


def multipart_etag(part_md5s):
    """The ETag S3 gives an object uploaded in these parts: MD5 of the parts' MD5 digests, then ``-<parts>``."""
    return hashlib.md5(b"".join(part_md5s)).hexdigest() + f"-{len(part_md5s)}"  # noqa: S324 - S3's ETag scheme


def metadata_of(response):
    """The metadata to keep from a GetObject/HeadObject response: the fields in METADATA_FIELDS that are set, and the
    user metadata (``x-amz-meta-*``)."""
    out = {_ENTRY_FIELDS[f]: response[f] for f in METADATA_FIELDS if response.get(f)}
    out["metadata"] = dict(response.get("Metadata") or {})
    return out


def recorded_metadata(entry):
    """The metadata a manifest entry records, in the shape of :func:`metadata_of`."""
    out = {k: entry[k] for k in _ENTRY_FIELDS.values() if entry.get(k)}
    out["metadata"] = dict(entry.get("metadata") or {})
    return out


def same_metadata(entry, response):
    """Whether a HEAD/GET response carries the metadata recorded in entry (missing and empty are the same). Every
    S3 response names a content type: one the entry does not record (the endpoint's default) is not compared."""
    found = metadata_of(response)
    if not entry.get("content_type"):
        found.pop("content_type", None)
    return found == recorded_metadata(entry)


def put_metadata_args(entry):
    """PutObject / CopyObject arguments that write the recorded metadata back."""
    reverse = {v: k for k, v in _ENTRY_FIELDS.items()}
    args = {reverse[k]: entry[k] for k in _ENTRY_FIELDS.values() if entry.get(k)}
    args["Metadata"] = dict(entry.get("metadata") or {})
    return args


def same_object(entry, listed):
    """Whether a manifest entry still describes a listed object: same size and same ETag string."""
    return (
        not entry.get("deleted")
        and int(entry["size"]) == int(listed["size"])
        and normalize_etag(entry.get("etag")) == normalize_etag(listed.get("etag"))
    )


def needs_recheck(entry, listed):
    """An object whose bytes look unchanged but whose metadata may have changed: its last-modified time moved, or
    the manifest never recorded its metadata (a run taken before metadata was kept)."""
    if "metadata" not in entry:
        return True
    before, now = _second(entry.get("last_modified")), _second(listed.get("last_modified"))
    return before is not None and now is not None and before != now


def _second(value):
    if not value:
        return None
    try:
        moment = timefmt.parse(value)
    except ValueError:
        return str(value)
    return moment.replace(microsecond=0)


def entry_id(obj):
    return (obj["bucket"], obj["key"])


def diff_listing(previous, listing, scanned_buckets):
    """Compare the source's listing with the newest manifest's entries.

    ``previous``: manifest entries (dicts with bucket, key, size, etag, deleted, ...); ``listing``: listed objects
    (bucket, key, size, etag, last_modified); ``scanned_buckets``: the buckets the listing covers. Entries of
    other buckets are carried over untouched. Returns ``{"new", "changed", "unchanged", "recheck", "deleted",
    "already_deleted", "carried"}``: lists of listed objects for new/changed, of manifest entries otherwise;
    ``recheck`` holds ``(entry, listed)`` pairs whose bytes look unchanged but whose metadata must be read again.
    """
    scanned = set(scanned_buckets)
    before = {entry_id(e): e for e in previous}
    now = {entry_id(o): o for o in listing}
    out = {
        "new": [],
        "changed": [],
        "unchanged": [],
        "recheck": [],
        "deleted": [],
        "already_deleted": [],
        "carried": [],
    }
    for ident, obj in sorted(now.items()):
        entry = before.get(ident)
        if entry is None or entry.get("deleted"):
            out["new"].append(obj)
        elif not same_object(entry, obj):
            out["changed"].append(obj)
        elif needs_recheck(entry, obj):
            out["recheck"].append((entry, obj))
        else:
            out["unchanged"].append(entry)
    for ident, entry in sorted(before.items()):
        if ident in now:
            continue
        if ident[0] not in scanned:
            out["carried"].append(entry)
        elif entry.get("deleted"):
            out["already_deleted"].append(entry)
        else:
            out["deleted"].append(entry)
    return out


def is_change(diff):
    return bool(diff["new"] or diff["changed"] or diff["deleted"] or diff.get("metadata"))


def new_run_id(moment=None):
    return catalog.backup_id_for(moment or timefmt.utcnow(), "every_run")


# ---------------------------------------------------------------------------------------------------------------
# Reading the source and the backup


def _call(step, subject, fn, **kwargs):
    try:
        return fn(**kwargs)
    except S3_ERRORS as exc:
        raise translate(exc, step, subject) from exc


def list_buckets(client):
    """Every bucket the Storage credentials see (ListBuckets)."""
    response = _call("list storage buckets", "ListBuckets", client.list_buckets)
    return sorted(b["Name"] for b in response.get("Buckets", []))


def list_objects(client, bucket, page_size=LIST_PAGE_SIZE):
    """Every object of a bucket, ListObjectsV2 in pages of at most page_size (Supabase answers at most 1000)."""
    found, token = [], None
    while True:
        kwargs = {"Bucket": bucket, "MaxKeys": page_size}
        if token:
            kwargs["ContinuationToken"] = token
        page = _call("list storage objects", f"s3://{bucket}/", client.list_objects_v2, **kwargs)
        for obj in page.get("Contents", []):
            modified = obj.get("LastModified")
            found.append(
                {
                    "bucket": bucket,
                    "key": obj["Key"],
                    "size": int(obj.get("Size", 0)),
                    "etag": normalize_etag(obj.get("ETag")),
                    "last_modified": timefmt.iso(modified) if isinstance(modified, dt.datetime) else modified,
                }
            )
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return found


def list_runs(backup, sprefix):
    """Run ids that have a manifest, oldest first."""
    runs = []
    for key, _size in backup.list_keys(f"{sprefix}manifests/", step="list storage manifests"):
        name = key.rsplit("/", 1)[-1]
        if name.endswith(".json") and _RUN_ID.match(name[:-5]):
            runs.append(name[:-5])
    return sorted(runs)


def validate_manifest(manifest, where):
    if not isinstance(manifest, dict) or manifest.get("kind") != "storage" or "objects" not in manifest:
        raise DRError("not a storage asset manifest", step="read storage manifest", subject=where)
    if manifest.get("manifest_version", 0) > MANIFEST_VERSION:
        raise DRError(
            f"storage manifest version {manifest['manifest_version']} is newer than this tool reads",
            step="read storage manifest",
            subject=where,
            hint="upgrade the runbooks to the version that wrote the backup",
        )
    return manifest


def load_manifest(backup, sprefix, run_id):
    key = manifest_key(sprefix, run_id)
    manifest = backup.get_json(key, step="read storage manifest")
    if manifest is None:
        raise DRError(
            f"storage backup run {run_id} has no manifest",
            step="select storage backup",
            subject=backup.where(key),
            hint="list the runs (pgdr.supabase.storage_restore in check mode shows them) and pick one that exists",
        )
    return validate_manifest(manifest, backup.where(key))


def select_run(runs, run_id="latest", at_or_before=None):
    """The run to restore: ``latest``, an exact id, or the newest at or before a backup id / UTC timestamp."""
    if not runs:
        return None
    if at_or_before:
        catalog.parse_backup_id(at_or_before)
        older = [r for r in runs if r <= at_or_before]
        return older[-1] if older else None
    if run_id in (None, "", "latest"):
        return runs[-1]
    catalog.parse_backup_id(run_id)
    return run_id if run_id in runs else None


# ---------------------------------------------------------------------------------------------------------------
# Backup


def plan_copy(source, buckets, backup, sprefix, run_id=None, limit=100):
    """What a run does: list the source (pages of 1000), compare with the newest manifest, and read the metadata
    of the objects whose bytes look unchanged but whose last-modified time moved (a HEAD each).

    ``source``: an S3Target of the Storage endpoint (its bucket is not used); ``buckets``: names, or empty for
    every bucket (ListBuckets); ``backup``: the backup bucket's S3Target; ``sprefix``: from :func:`storage_prefix`.
    """
    backup.check_bucket(step="check backup bucket")
    scanned = sorted(set(buckets)) if buckets else list_buckets(source.client)
    listing = []
    for bucket in scanned:
        listing += list_objects(source.client, bucket)
    runs = list_runs(backup, sprefix)
    previous = load_manifest(backup, sprefix, runs[-1]) if runs else None
    diff = diff_listing(previous["objects"] if previous else [], listing, scanned)
    _recheck(source, diff)
    run_id = run_id or new_run_id()
    if previous and run_id <= previous["run_id"]:
        run_id = _after(previous["run_id"])
    leftovers = find_leftovers(backup, sprefix, runs)
    copy = diff["new"] + diff["changed"]
    return {
        "action": "copy" if is_change(diff) else "none",
        "run_id": run_id,
        "previous_run": previous["run_id"] if previous else None,
        "buckets": scanned,
        "bucket": backup.bucket,
        "manifest_key": manifest_key(sprefix, run_id),
        "prefix": sprefix,
        "counts": {
            "listed": len(listing),
            "new": len(diff["new"]),
            "changed": len(diff["changed"]),
            "metadata": len(diff["metadata"]),
            "unchanged": len(diff["unchanged"]),
            "deleted": len(diff["deleted"]),
            "already_deleted": len(diff["already_deleted"]),
            "carried": len(diff["carried"]),
            "bytes_to_copy": sum(o["size"] for o in copy),
        },
        "copy": [_step(o, why) for why in ("new", "changed") for o in diff[why]][:limit],
        "metadata": [{"bucket": e["bucket"], "key": e["key"]} for e in diff["metadata"][:limit]],
        "deleted": [{"bucket": e["bucket"], "key": e["key"]} for e in diff["deleted"][:limit]],
        "truncated": len(copy) > limit or len(diff["deleted"]) > limit or len(diff["metadata"]) > limit,
        "leftovers": leftovers,
        "_diff": diff,
        "_previous": previous,
    }


def _head_source(source, obj):
    try:
        return source.client.head_object(Bucket=obj["bucket"], Key=obj["key"])
    except S3_ERRORS as exc:
        if is_not_found(exc):
            return None
        raise translate(exc, "read storage object metadata", f"s3://{obj['bucket']}/{obj['key']}") from exc


def _recheck(source, diff):
    """Sort the ``recheck`` pairs into changed bytes, changed metadata only (``metadata``: updated entries, no copy),
    unchanged, or deleted (gone since the listing)."""
    pairs = diff.pop("recheck")
    diff["metadata"] = []
    if not pairs:
        return
    with ThreadPoolExecutor(max_workers=HEAD_CONCURRENCY, thread_name_prefix="storage-head") as pool:
        heads = list(pool.map(lambda pair: _head_source(source, pair[1]), pairs))
    for (entry, listed), head in zip(pairs, heads, strict=True):
        if head is None:
            diff["deleted"].append(entry)
        elif int(head.get("ContentLength", -1)) != int(entry["size"]) or normalize_etag(head.get("ETag")) != (
            normalize_etag(entry.get("etag"))
        ):
            diff["changed"].append(listed)
        elif "metadata" in entry and same_metadata(entry, head):
            diff["unchanged"].append(entry)
        else:
            diff["metadata"].append({**entry, **metadata_of(head), "last_modified": listed.get("last_modified")})


def _after(run_id):
    moment = catalog.parse_backup_id(run_id) + dt.timedelta(seconds=1)
    return new_run_id(moment)


def _step(obj, why):
    return {"bucket": obj["bucket"], "key": obj["key"], "size": obj["size"], "why": why}


def find_leftovers(backup, sprefix, runs):
    """What runs that never committed left: files in staging/, run folders under objects/ without a manifest (the
    layout before manifest version 2), and unfinished multipart uploads."""
    committed = set(runs)
    folders = backup.list_common_prefixes(objects_prefix(sprefix), step="list storage runs")
    stale = [f for f in folders if f.rstrip("/").rsplit("/", 1)[-1] not in committed]
    staged = backup.list_common_prefixes(staging_prefix(sprefix), step="list storage staging")
    uploads = backup.list_uploads(objects_prefix(sprefix)) + backup.list_uploads(staging_prefix(sprefix))
    return {"folders": stale + staged, "uploads": [key for key, _unused in uploads]}


def remove_leftovers(backup, sprefix, runs, keep_run):
    removed = []
    committed = set(runs) | {keep_run}
    for where in (objects_prefix(sprefix), staging_prefix(sprefix)):
        for key, upload_id in backup.list_uploads(where):
            backup.abort_upload(key, upload_id)
            removed.append(key)
    folders = [
        f
        for f in backup.list_common_prefixes(objects_prefix(sprefix), step="list storage runs")
        if f.rstrip("/").rsplit("/", 1)[-1] not in committed
    ]
    folders += backup.list_common_prefixes(staging_prefix(sprefix), step="list storage staging")
    for folder in folders:
        keys = [k for k, _unused in backup.list_keys(folder, step="list leftovers")]
        backup.delete_keys(keys, step="remove leftovers")
        removed += keys
    return removed


class _Digests:
    """SHA-256 and MD5 of a stream, and the MD5 of each RESTORE_PART_SIZE part (for the ETag a restore will see)."""

    def __init__(self):
        self.sha256, self.md5 = hashlib.sha256(), hashlib.md5()  # noqa: S324 - compared with S3 ETags only
        self.parts, self._part, self._filled, self.size = [], hashlib.md5(), 0, 0  # noqa: S324

    def update(self, data):
        self.sha256.update(data)
        self.md5.update(data)
        self.size += len(data)
        view = memoryview(data)
        while view:
            take = min(len(view), RESTORE_PART_SIZE - self._filled)
            self._part.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == RESTORE_PART_SIZE:
                self.parts.append(self._part.digest())
                self._part, self._filled = hashlib.md5(), 0  # noqa: S324

    def restore_etag(self):
        if self.size <= RESTORE_PART_SIZE:
            return None
        parts = self.parts + ([self._part.digest()] if self._filled else [])
        return multipart_etag(parts)


def _blob_exists(backup, key, size):
    try:
        return int(backup.client.head_object(Bucket=backup.bucket, Key=key)["ContentLength"]) == int(size)
    except S3_ERRORS as exc:
        if is_not_found(exc):
            return False
        raise translate(exc, "check stored file", backup.where(key)) from exc


def _read_up_to(body, size, subject):
    chunks, got = [], 0
    while got < size:
        try:
            chunk = body.read(min(READ_CHUNK, size - got))
        except S3_ERRORS as exc:
            raise translate(exc, "read storage object", subject) from exc
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def copy_object(source, obj, backup, sprefix, run_id, part_size=DEFAULT_PART_SIZE, verify_etag=True):
    """Stream one object from the Storage endpoint into the backup bucket, stored under its SHA-256. Returns its
    manifest entry, or None when the object is gone (deleted since the listing).

    An object of at most part_size is read into memory, checked and written with one PUT; a larger one is
    uploaded in parts to staging/ and then copied inside the backup bucket to its blob (its SHA-256 is known only
    at the end). A blob that exists already (the same bytes under another name or in an earlier run) is not
    written again. A single-part ETag is the MD5 of the bytes: a mismatch means the copy is not what the source
    holds, and nothing is kept."""
    subject = f"s3://{obj['bucket']}/{obj['key']}"
    try:
        response = source.client.get_object(Bucket=obj["bucket"], Key=obj["key"])
    except S3_ERRORS as exc:
        if is_not_found(exc):
            return None
        raise translate(exc, "read storage object", subject) from exc
    body = response["Body"]
    digests = _Digests()
    staged = None
    try:
        first = _read_up_to(body, part_size + 1, subject)
        digests.update(first)
        if len(first) <= part_size:
            _check_copy(digests, response, obj, verify_etag, subject)
            key = blob_key(sprefix, digests.sha256.hexdigest())
            if not _blob_exists(backup, key, digests.size):
                backup.put_bytes(key, first, step="store storage object", content_type="application/octet-stream")
        else:
            staged = f"{staging_prefix(sprefix, run_id)}{uuid.uuid4().hex}"
            writer = MultipartWriter(backup, staged, part_size=part_size, concurrency=2)
            try:
                writer.write(first)
                while chunk := _read_up_to(body, READ_CHUNK, subject):
                    digests.update(chunk)
                    writer.write(chunk)
                writer.close()
            except BaseException:
                writer.abort()
                raise
            _check_copy(digests, response, obj, verify_etag, subject)
            key = blob_key(sprefix, digests.sha256.hexdigest())
            if not _blob_exists(backup, key, digests.size):
                try:
                    server_copy(backup, staged, backup, key, digests.size)
                except S3_ERRORS as exc:
                    raise translate(exc, "store storage object", backup.where(key)) from exc
    finally:
        body.close()
        if staged:
            backup.delete_keys([staged], step="remove staged copy")
    modified = response.get("LastModified")
    entry = {
        "bucket": obj["bucket"],
        "key": obj["key"],
        "size": digests.size,
        "etag": normalize_etag(response.get("ETag")) or obj.get("etag"),
        "md5": digests.md5.hexdigest(),
        "sha256": digests.sha256.hexdigest(),
        "last_modified": timefmt.iso(modified) if isinstance(modified, dt.datetime) else obj.get("last_modified"),
        "stored_key": key,
        "deleted": False,
        **metadata_of(response),
    }
    if digests.restore_etag():
        entry["restore_etag"] = {"part_size": RESTORE_PART_SIZE, "etag": digests.restore_etag()}
    return entry


def _check_copy(digests, response, obj, verify_etag, subject):
    etag = normalize_etag(response.get("ETag")) or obj.get("etag")
    expected = int(response.get("ContentLength", digests.size))
    problem = None
    if digests.size != expected:
        problem = f"read {digests.size} bytes, the endpoint announced {expected}"
    elif verify_etag and is_md5_etag(etag) and digests.md5.hexdigest() != etag:
        problem = f"the bytes read have MD5 {digests.md5.hexdigest()}, the object's ETag is {etag}"
    if problem:
        raise DRError(
            problem,
            step="copy storage object",
            subject=subject,
            hint="run again (the object may have changed while it was read); if it persists and the endpoint's "
            "ETags are not MD5s, set verify_etag to false",
        )


def apply_copy(
    plan, source, backup, source_name, endpoint=None, concurrency=4, part_size=DEFAULT_PART_SIZE, verify_etag=True
):
    """Copy what the plan lists and commit the run's manifest last. Call with the plan of :func:`plan_copy`.

    An object that is gone when the run reads it (deleted at the source since the listing) is recorded as deleted
    and the run goes on; it is named in ``vanished``. Returns the manifest."""
    diff, previous, sprefix, run_id = plan["_diff"], plan["_previous"], plan["prefix"], plan["run_id"]
    started = time.monotonic()
    started_at = timefmt.iso(timefmt.utcnow())
    todo = diff["new"] + diff["changed"]
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="storage-copy") as pool:
        futures = [
            pool.submit(copy_object, source, obj, backup, sprefix, run_id, part_size, verify_etag) for obj in todo
        ]
        results = [f.result() for f in futures]
    copied = [r for r in results if r is not None]
    earlier = {entry_id(e): e for e in (previous or {}).get("objects", [])}
    vanished = []
    for obj, got in zip(todo, results, strict=True):
        if got is None:
            known = earlier.get(entry_id(obj))
            base = dict(known) if known and not known.get("deleted") else {**_step(obj, "new"), "stored_key": None}
            base.pop("why", None)
            vanished.append(dict(base, deleted=True, deleted_in=run_id, vanished=True))
    entries = copied + diff["unchanged"] + diff["metadata"] + diff["already_deleted"] + diff["carried"] + vanished
    entries += [dict(e, deleted=True, deleted_in=run_id) for e in diff["deleted"]]
    entries.sort(key=entry_id)
    live = [e for e in entries if not e.get("deleted")]
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "kind": "storage",
        "run_id": run_id,
        "previous_run": previous["run_id"] if previous else None,
        "source": {"name": source_name, "endpoint": endpoint},
        "buckets": sorted(set(plan["buckets"]) | set((previous or {}).get("buckets", []))),
        "scanned_buckets": plan["buckets"],
        "started_at": started_at,
        "finished_at": timefmt.iso(timefmt.utcnow()),
        "duration_s": round(time.monotonic() - started, 3),
        "counts": {
            "objects": len(live),
            "bytes": sum(e["size"] for e in live),
            "deleted": len(entries) - len(live),
            "copied": len(copied),
            "bytes_copied": sum(e["size"] for e in copied),
            "new": len(diff["new"]),
            "changed": len(diff["changed"]),
            "metadata": len(diff["metadata"]),
            "newly_deleted": len(diff["deleted"]) + len(vanished),
            "vanished": len(vanished),
        },
        "vanished": [{"bucket": e["bucket"], "key": e["key"]} for e in vanished],
        "objects": entries,
    }
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    backup.put_bytes(plan["manifest_key"], data, step="commit storage manifest", if_none_match=True)
    return manifest


def backup_assets(
    source,
    buckets,
    backup,
    prefix,
    source_name,
    endpoint=None,
    check_mode=False,
    concurrency=4,
    part_size=DEFAULT_PART_SIZE,
    verify_etag=True,
    lock_wait=0,
    lock_stale_after=600,
    limit=100,
    cross_check_dsn=None,
):
    """The whole backup step: plan; unless check_mode or nothing changed, copy under the lock and commit.
    With cross_check_dsn, compare that database's storage.objects with the backup (as it is after the run).
    ``warnings`` names what the run found wrong without failing (files gone while it ran)."""
    sprefix = storage_prefix(prefix, source_name)
    plan = plan_copy(source, buckets, backup, sprefix, limit=limit)
    result = {
        "changed": plan["action"] == "copy",
        "plan": _public(plan),
        "run_id": plan["run_id"],
        "cleaned": [],
        "run_warnings": [],
    }

    def finish():
        diff = plan["_diff"]
        if cross_check_dsn:
            live = diff["new"] + diff["changed"] + diff["metadata"] + diff["unchanged"] + diff["carried"]
            gone = {entry_id(v) for v in (result.get("manifest") or {}).get("vanished", [])}
            live = [o for o in live if entry_id(o) not in gone]
            result["cross_check"] = cross_check(cross_check_dsn, {"objects": live}, result["plan"]["buckets"], limit)
        return result

    if check_mode:
        result["lock"] = backup.get_json(lock_key(sprefix), step="read lock")
        return finish()
    if plan["action"] == "none":
        # Nothing to copy: leftovers of a killed run are still removed (under the lock) when there are any.
        if plan["leftovers"]["folders"] or plan["leftovers"]["uploads"]:
            with SourceLock(backup, lock_key(sprefix), "storage backup", lock_wait, lock_stale_after):
                result["cleaned"] = remove_leftovers(backup, sprefix, list_runs(backup, sprefix), None)
            result["changed"] = True
        result["manifest_key"] = manifest_key(sprefix, plan["previous_run"]) if plan["previous_run"] else None
        result["run_id"] = plan["previous_run"]
        return finish()
    with SourceLock(backup, lock_key(sprefix), "storage backup", lock_wait, lock_stale_after):
        runs = list_runs(backup, sprefix)
        if (runs[-1] if runs else None) != plan["previous_run"]:
            # Another run committed between our listing and the lock: plan again against its manifest.
            plan = plan_copy(source, buckets, backup, sprefix, limit=limit)
            result.update(plan=_public(plan), run_id=plan["run_id"], changed=plan["action"] == "copy")
            if plan["action"] == "none":
                return finish()
        result["cleaned"] = remove_leftovers(backup, sprefix, runs, plan["run_id"])
        manifest = apply_copy(plan, source, backup, source_name, endpoint, concurrency, part_size, verify_etag)
    result.update(manifest=summary(manifest), manifest_key=plan["manifest_key"], changed=True)
    if manifest["vanished"]:
        names = ", ".join(f"{v['bucket']}/{v['key']}" for v in manifest["vanished"][:5])
        result["run_warnings"].append(
            f"{len(manifest['vanished'])} files were deleted at the source while the run copied them (recorded as "
            f"deleted): {names}"
        )
    return finish()


def _public(plan):
    return {k: v for k, v in plan.items() if not k.startswith("_")}


def summary(manifest):
    """A manifest without its object list (which can be long): ids, counts, times."""
    return {k: v for k, v in manifest.items() if k != "objects"}


# ---------------------------------------------------------------------------------------------------------------
# Restore


def _head(client, bucket, key):
    try:
        return client.head_object(Bucket=bucket, Key=key)
    except S3_ERRORS as exc:
        if is_not_found(exc):
            return None
        raise translate(exc, "check restored object", f"s3://{bucket}/{key}") from exc


def is_restored(head, entry, part_size=RESTORE_PART_SIZE):
    """Whether the object found at the destination holds the entry's bytes: the same size, and an ETag that those
    bytes give (the MD5 for one PUT, the recorded multipart ETag for a restore in parts of part_size), or the
    SHA-256 in the ``pgdr-sha256`` metadata that restores before version 2 wrote."""
    if head is None or int(head.get("ContentLength", -1)) != int(entry["size"]):
        return False
    if (head.get("Metadata") or {}).get(SHA256_METADATA) == entry["sha256"]:
        return True
    etag = normalize_etag(head.get("ETag"))
    if int(entry["size"]) <= part_size:
        return bool(entry.get("md5")) and etag == entry["md5"]
    recorded = entry.get("restore_etag") or {}
    return recorded.get("part_size") == part_size and etag == recorded.get("etag")


def bucket_exists(client, bucket):
    try:
        client.head_bucket(Bucket=bucket)
        return True
    except S3_ERRORS as exc:
        if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise translate(exc, "check restore bucket", f"s3://{bucket}/") from exc


def plan_restore(manifest, dest, bucket_map=None, buckets=None, limit=100, part_size=RESTORE_PART_SIZE, prune=False):
    """Per object: ``copy`` (absent or other bytes), ``metadata`` (the bytes are there, the metadata drifted: put
    back without copying), or ``skip``; per target bucket: exists or not; with prune, the objects in the target
    buckets that the run does not hold (to delete, so each bucket is exactly the run's state)."""
    bucket_map = bucket_map or {}
    wanted = [e for e in manifest["objects"] if not e.get("deleted") and (not buckets or e["bucket"] in buckets)]
    covered = sorted(
        {b for b in manifest.get("buckets", []) if not buckets or b in buckets} | {e["bucket"] for e in wanted}
    )
    targets = sorted({bucket_map.get(b, b) for b in covered})
    present = {b: bucket_exists(dest.client, b) for b in targets}
    copy, metadata, skip = [], [], 0
    for entry in wanted:
        target = bucket_map.get(entry["bucket"], entry["bucket"])
        head = _head(dest.client, target, entry["key"]) if present[target] else None
        if not is_restored(head, entry, part_size):
            copy.append(dict(entry, target_bucket=target, exists=head is not None))
        elif not same_metadata(entry, head):
            metadata.append(dict(entry, target_bucket=target, exists=True))
        else:
            skip += 1
    extra = []
    if prune:
        keep = {(bucket_map.get(e["bucket"], e["bucket"]), e["key"]) for e in wanted}
        for bucket in targets:
            if present[bucket]:
                extra += [o for o in list_objects(dest.client, bucket) if (bucket, o["key"]) not in keep]
    return {
        "action": "copy" if copy or metadata or extra or not all(present.values()) else "none",
        "run_id": manifest["run_id"],
        "buckets": [{"bucket": b, "exists": present[b]} for b in targets],
        "create_buckets": [b for b in targets if not present[b]],
        "counts": {
            "objects": len(wanted),
            "copy": len(copy),
            "metadata": len(metadata),
            "skip": skip,
            "overwrite": sum(1 for c in copy if c["exists"]),
            "bytes_to_copy": sum(c["size"] for c in copy),
            "prune": len(extra),
        },
        "copy": [
            {"from": c["stored_key"], "to": f"s3://{c['target_bucket']}/{c['key']}", "size": c["size"]}
            for c in copy[:limit]
        ],
        "metadata": [f"s3://{m['target_bucket']}/{m['key']}" for m in metadata[:limit]],
        "prune": [f"s3://{o['bucket']}/{o['key']}" for o in extra[:limit]],
        "truncated": len(copy) > limit or len(metadata) > limit or len(extra) > limit,
        "_copy": copy,
        "_metadata": metadata,
        "_prune": extra,
    }


def create_bucket(client, bucket, region):
    kwargs = {"Bucket": bucket}
    if region and region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        client.create_bucket(**kwargs)
    except S3_ERRORS as exc:
        if error_code(exc) not in ("BucketAlreadyOwnedByYou",):
            raise translate(exc, "create restore bucket", f"s3://{bucket}/") from exc


def restore_object(backup, entry, dest, part_size=DEFAULT_PART_SIZE):
    """Copy one stored object into its target bucket with the metadata recorded at backup (content type, cache
    control, ..., user metadata exactly), verifying the SHA-256 recorded at backup before the object becomes
    visible: a small object is checked in memory before its PUT, a large one before the multipart upload is
    completed (else aborted). An entry read from the locked bucket names the stored version to read
    (``stored_version_id``)."""
    bucket, key = entry["target_bucket"], entry["key"]
    where = f"s3://{bucket}/{key}"
    version = {"VersionId": entry["stored_version_id"]} if entry.get("stored_version_id") else {}
    response = _call(
        "read stored object",
        backup.where(entry["stored_key"]),
        backup.client.get_object,
        Bucket=backup.bucket,
        Key=entry["stored_key"],
        **version,
    )
    body = response["Body"]
    extra = put_metadata_args(entry)
    sha = hashlib.sha256()
    try:
        if int(entry["size"]) <= part_size:
            data = body.read()
            sha.update(data)
            _check_sha(sha, entry, backup)
            _call("write restored object", where, dest.client.put_object, Bucket=bucket, Key=key, Body=data, **extra)
            return
        upload = _call(
            "start restore upload", where, dest.client.create_multipart_upload, Bucket=bucket, Key=key, **extra
        )["UploadId"]
        try:
            parts, number = [], 0
            while True:
                data = _read_up_to(body, part_size, backup.where(entry["stored_key"]))
                if not data:
                    break
                number += 1
                sha.update(data)
                resp = _call(
                    "write restored object",
                    where,
                    dest.client.upload_part,
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload,
                    PartNumber=number,
                    Body=data,
                )
                parts.append({"PartNumber": number, "ETag": resp["ETag"]})
            _check_sha(sha, entry, backup)
            _call(
                "complete restored object",
                where,
                dest.client.complete_multipart_upload,
                Bucket=bucket,
                Key=key,
                UploadId=upload,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            with contextlib.suppress(*S3_ERRORS):
                dest.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
            raise
    finally:
        body.close()


def restore_metadata(entry, dest):
    """Put the recorded metadata back on an object whose bytes are right (a copy onto itself; no data sent)."""
    bucket, key = entry["target_bucket"], entry["key"]
    _call(
        "restore object metadata",
        f"s3://{bucket}/{key}",
        dest.client.copy_object,
        Bucket=bucket,
        Key=key,
        CopySource={"Bucket": bucket, "Key": key},
        MetadataDirective="REPLACE",
        **put_metadata_args(entry),
    )


def _check_sha(sha, entry, backup):
    if sha.hexdigest() != entry["sha256"]:
        raise DRError(
            f"the stored copy has SHA-256 {sha.hexdigest()}, the manifest says {entry['sha256']}",
            step="verify stored object",
            subject=backup.where(entry["stored_key"]),
            hint="the backup copy is damaged: restore from an older run or the immutable copy; nothing was written",
        )


def restore_assets(
    backup,
    manifest,
    dest,
    bucket_map=None,
    buckets=None,
    create_buckets=False,
    check_mode=False,
    concurrency=4,
    part_size=DEFAULT_PART_SIZE,
    region=None,
    limit=100,
    prune=False,
):
    """Copy a storage backup run's objects into the destination endpoint's buckets (the staging project).

    ``bucket_map`` renames buckets (``{"avatars": "avatars-staging"}``); ``buckets`` restores only those source
    buckets. Objects already there with the same bytes are skipped and a drifted metadata is put back, so a second
    run changes nothing. Objects in the destination that the manifest does not list are left alone, unless
    ``prune``: then they are deleted (after every object of the run is in place), so each bucket holds exactly
    the run's state; check mode lists them.
    """
    plan = plan_restore(manifest, dest, bucket_map, buckets, limit, part_size, prune)
    result = {
        "changed": plan["action"] == "copy",
        "plan": _public(plan),
        "restored": 0,
        "bytes_restored": 0,
        "metadata_restored": 0,
        "pruned": 0,
    }
    if plan["create_buckets"] and not create_buckets:
        raise DRError(
            f"the destination has no bucket {', '.join(plan['create_buckets'])}",
            step="check restore buckets",
            subject=dest.endpoint_url or "the destination endpoint",
            hint="create the buckets in the staging project, map them elsewhere (bucket_map), or set create_buckets",
        )
    if check_mode or plan["action"] == "none":
        return result
    for bucket in plan["create_buckets"]:
        create_bucket(dest.client, bucket, region)
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="storage-restore") as pool:
        for future in [pool.submit(restore_object, backup, e, dest, part_size) for e in plan["_copy"]]:
            future.result()
        for future in [pool.submit(restore_metadata, e, dest) for e in plan["_metadata"]]:
            future.result()
    for obj in plan["_prune"]:
        _call(
            "prune restored bucket",
            f"s3://{obj['bucket']}/{obj['key']}",
            dest.client.delete_object,
            Bucket=obj["bucket"],
            Key=obj["key"],
        )
    result["restored"] = len(plan["_copy"])
    result["bytes_restored"] = sum(e["size"] for e in plan["_copy"])
    result["metadata_restored"] = len(plan["_metadata"])
    result["pruned"] = len(plan["_prune"])
    return result


# ---------------------------------------------------------------------------------------------------------------
# Cross-check with storage.objects


def compare_rows(rows, manifest, buckets=None, limit=100):
    """Rows of storage.objects (bucket_id, name) against a manifest: referenced in the database but not in the
    backup (``missing``; also when the backup only has it as deleted), and in the backup but not in the database
    (``unreferenced``)."""
    live = {entry_id(e) for e in manifest["objects"] if not e.get("deleted")}
    rows = {(b, n) for b, n in rows if not buckets or b in buckets}
    in_scope = {i for i in live if not buckets or i[0] in buckets}
    missing = sorted(rows - live)
    unreferenced = sorted(in_scope - rows)
    return {
        "db_objects": len(rows),
        "backup_objects": len(in_scope),
        "missing_count": len(missing),
        "missing": [{"bucket": b, "key": k} for b, k in missing[:limit]],
        "unreferenced_count": len(unreferenced),
        "unreferenced": [{"bucket": b, "key": k} for b, k in unreferenced[:limit]],
    }


def cross_check(dsn, manifest, buckets=None, limit=100):
    """Read storage.objects of the database and compare it with the manifest (see :func:`compare_rows`)."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import pg

    with pg.connect(dsn, step="connect cross-check database") as conn:
        try:
            rows = conn.execute("SELECT bucket_id, name FROM storage.objects").fetchall()
        except Exception as exc:
            raise DRError(
                f"cannot read storage.objects: {exc}",
                step="cross-check storage.objects",
                subject=pg.describe_dsn(dsn),
                hint="point the cross-check at a Supabase database (it has the storage schema) with read access",
            ) from exc
    return compare_rows(rows, manifest, buckets, limit)

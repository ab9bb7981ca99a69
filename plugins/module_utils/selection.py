"""Choosing a backup to restore (latest, by id, or the newest before a time) and verifying its objects."""

from __future__ import annotations

import hashlib

from ansible_collections.pgdr.supabase.plugins.module_utils import catalog, timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import S3_ERRORS, is_not_found, translate, version_args

READ_SIZE = 4 * 1024 * 1024
LIST_HINT = "list the backups with: ansible-playbook playbooks/list_backups.yml"


def parse_time(text):
    """An ISO-8601 time (Z, an offset, or none meaning UTC) as an aware UTC datetime."""
    try:
        return timefmt.parse(text)
    except ValueError as exc:
        raise DRError(
            f"{text!r} is not an ISO-8601 time",
            step="select backup",
            hint="write it like 2026-11-28T14:30:00Z",
        ) from exc


def _started(row):
    return parse_time(row["started_at"])


def resolve(target, prefix, source, selector, rows=None):
    """The listing row of the backup that selector names: ``latest``, ``latest-proven`` (the newest backup whose
    proof passed, proof.py), a backup id, or ``before:<ISO time>``.

    Only complete backups (with a manifest) are ever chosen. ``rows`` replaces the bucket's listing (the immutable
    copy lists its backups from their secure-copy records).
    """
    selector = (selector or "latest").strip()
    where = target.where(catalog.source_prefix(prefix, source))
    rows = catalog.list_backups(target, prefix, source) if rows is None else rows
    complete = [row for row in rows if row["complete"]]
    if selector == "latest":
        if not complete:
            raise DRError(
                f"no complete backup of {source!r}",
                step="select backup",
                subject=where,
                hint="run playbooks/backup.yml first, or check the source name and prefix",
            )
        return complete[0]
    if selector == "latest-proven":
        return _latest_proven(target, prefix, source, complete, where)
    if selector.startswith("before:"):
        moment = parse_time(selector.split(":", 1)[1])
        eligible = [row for row in complete if _started(row) <= moment]
        if not eligible:
            oldest = complete[-1]["started_at"] if complete else None
            message = f"no complete backup of {source!r} was taken before {timefmt.iso(moment)}"
            if oldest:
                message += f"; the oldest was taken at {oldest}"
            raise DRError(message, step="select backup", subject=where, hint=LIST_HINT)
        return eligible[0]
    catalog.parse_backup_id(selector)
    for row in rows:
        if row["backup_id"] == selector:
            if not row["complete"]:
                raise DRError(
                    f"backup {selector} is incomplete (no manifest: a failed or unfinished run) and cannot be restored",
                    step="select backup",
                    subject=where,
                    hint=f"choose a complete backup; {LIST_HINT}",
                )
            return row
    nearest = ", ".join(row["backup_id"] for row in complete[:5]) or "none"
    raise DRError(
        f"unknown backup id {selector} for {source!r} (newest complete: {nearest})",
        step="select backup",
        subject=where,
        hint=LIST_HINT,
    )


def _latest_proven(target, prefix, source, complete, where):
    """The newest complete backup whose proof passed (its proof.json; the manifest is still verified as always)."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import proof

    for row in complete:
        record = proof.read_proof(target, prefix, source, row["backup_id"])
        if isinstance(record, dict) and record.get("result") == "passed":
            return row
    raise DRError(
        f"no backup of {source!r} was proven ({len(complete)} complete, none with a passed proof)",
        step="select backup",
        subject=where,
        hint="run playbooks/prove.yml, or choose -e backup=latest or a backup id; " + LIST_HINT,
    )


def load_manifest(target, prefix, source, backup_id):
    key = catalog.manifest_key(prefix, source, backup_id)
    manifest = target.get_json(key, step="read manifest")
    if manifest is None:
        raise DRError("the manifest is missing", step="read manifest", subject=target.where(key), hint=LIST_HINT)
    return catalog.validate_manifest(manifest, target.where(key))


def open_object(target, obj, step):
    """The streaming body of a backup object (its recorded version when the entry names one); a missing object is
    named."""
    try:
        return target.client.get_object(Bucket=target.bucket, Key=obj["key"], **version_args(obj))["Body"]
    except S3_ERRORS as exc:
        raise object_error(target, obj, step, exc) from exc


def object_error(target, obj, step, exc):
    """The error to raise when reading a backup object failed: a missing object is named as such."""
    if is_not_found(exc):
        return DRError(
            f"object {obj['name']} of the backup is missing",
            step=step,
            subject=target.where(obj["key"]),
            hint="restore another backup; this one is damaged",
        )
    return translate(exc, step, target.where(obj["key"]))


def check_digest(target, obj, size, digest, step):
    if size != obj["size"] or digest != obj["sha256"]:
        raise DRError(
            f"object {obj['name']} is corrupted: {size} bytes with SHA-256 {digest}, the manifest says "
            f"{obj['size']} bytes with SHA-256 {obj['sha256']}",
            step=step,
            subject=target.where(obj["key"]),
            hint="nothing was written to the target; restore another backup (or its immutable copy)",
        )


def verify_objects(target, manifest, step="verify checksums"):
    """Stream every object of the backup and compare its size and SHA-256 with the manifest (no disk used)."""
    results = []
    for obj in manifest["objects"]:
        body = open_object(target, obj, step)
        digest, size = hashlib.sha256(), 0
        try:
            for chunk in body.iter_chunks(READ_SIZE):
                digest.update(chunk)
                size += len(chunk)
        except S3_ERRORS as exc:
            raise translate(exc, step, target.where(obj["key"])) from exc
        finally:
            body.close()
        check_digest(target, obj, size, digest.hexdigest(), step)
        results.append({"name": obj["name"], "key": obj["key"], "size": size, "sha256": obj["sha256"], "ok": True})
    return results


def check_objects_exist(target, manifest, step="check objects"):
    """Every object of the backup exists with the manifest's size (a HEAD each; no data read)."""
    results = []
    for obj in manifest["objects"]:
        try:
            head = target.client.head_object(Bucket=target.bucket, Key=obj["key"], **version_args(obj))
        except S3_ERRORS as exc:
            raise object_error(target, obj, step, exc) from exc
        if head["ContentLength"] != obj["size"]:
            raise DRError(
                f"object {obj['name']} has {head['ContentLength']} bytes, the manifest says {obj['size']}",
                step=step,
                subject=target.where(obj["key"]),
                hint="restore another backup; this one is damaged",
            )
        results.append({"name": obj["name"], "key": obj["key"], "size": obj["size"], "ok": True})
    return results

"""What keeps one backup run from damaging another's: it removes only what it wrote itself, never a folder that
has a manifest, and a run that loses the race to commit reports the other run's backup.

issue 9.1. Two runs of the same window write the same keys. The lock (lock.py) keeps them apart; these rules hold
even when it did not (a run that stalled past ``lock_stale_after`` and lost its lock to another):

- ``WriteLedger`` notes each object this run completed, with the ETag the server gave it. The failure cleanup
  (``remove_own``) deletes exactly those, each with a delete conditional on that ETag: an object another run wrote
  over since is the other run's and stays.
- Nothing is deleted from a folder that has a manifest: a committed backup is never touched by a cleanup.
- ``commit_manifest`` confirms the lock (renewed now: nobody may take it over for ``lock_stale_after`` s), then
  writes the manifest only if absent. When another run committed first, it returns that run's manifest, and the
  caller reports that backup as its result.
- ``remove_leftovers`` (before a run starts, under the lock) removes what an earlier, unfinished run of the same
  window left: only while the folder has no manifest, aborting in-progress uploads and deleting each listed object
  only while it is still the version listed.
"""

from __future__ import annotations

import threading

from ansible_collections.pgdr.supabase.plugins.module_utils import catalog
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import S3_ERRORS, is_precondition_failed, translate


class WriteLedger:
    """The objects this run wrote: key -> ETag, in order. Thread-safe (uploads complete on worker threads)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.objects = {}

    def wrote(self, key, etag):
        with self._lock:
            self.objects[key] = etag

    def items(self):
        with self._lock:
            return list(self.objects.items())


def _folder_committed(target, manifest_key, step):
    return target.get_json(manifest_key, step=step) is not None


def remove_own(target, manifest_key, ledger, step="remove the unfinished backup"):
    """Delete the objects this run wrote (conditional on their ETags) unless the folder has a manifest now.

    Returns {"removed": [...], "kept": [...], "committed_by_other": bool}."""
    if _folder_committed(target, manifest_key, step):
        return {"removed": [], "kept": [k for k, _unused in ledger.items()], "committed_by_other": True}
    removed, kept = [], []
    for key, etag in ledger.items():
        if etag and target.delete_if_match(key, etag, step=step):
            removed.append(key)
        else:
            kept.append(key)
    return {"removed": removed, "kept": kept, "committed_by_other": False}


def remove_leftovers(target, folder, manifest_key, step="clean up an earlier unfinished backup"):
    """What an earlier unfinished run of this window left: its uploads aborted, its objects deleted (each only while
    still the version listed). Nothing when the folder has a manifest. Call it while holding the source's lock."""
    if _folder_committed(target, manifest_key, step):
        return []
    removed = []
    for key, upload_id in target.list_uploads(folder, step=step):
        target.abort_upload(key, upload_id, step=step)
        removed.append(f"upload {key}")
    try:
        pages = target.client.get_paginator("list_objects_v2").paginate(Bucket=target.bucket, Prefix=folder)
        listed = [(o["Key"], o.get("ETag")) for page in pages for o in page.get("Contents", [])]
    except S3_ERRORS as exc:
        raise translate(exc, step, target.where(folder)) from exc
    for key, etag in listed:
        if key == manifest_key:
            continue
        if etag and target.delete_if_match(key, etag, step=step):
            removed.append(key)
    return removed


def commit_manifest(target, manifest_key, body, lock, step="commit manifest"):
    """Write the manifest if absent, while this run provably holds the lock.

    Returns None when this run committed; the other run's manifest when another run committed first (this run
    then reports that backup). Raises when the lock was lost and nobody committed."""
    try:
        lock.confirm(step=step)
    except DRError:
        other = target.get_json(manifest_key, step=step)
        if other is not None:
            return other  # the run that took our lock over committed: its backup is the result
        raise
    try:
        target.put_bytes(manifest_key, body, step=step, if_none_match=True)
        return None
    except DRError as exc:
        if not is_precondition_failed(exc):
            raise
    other = target.get_json(manifest_key, step=step)
    if other is None:  # pragma: no cover - the manifest vanished between the write and the read
        raise DRError(
            "the manifest could not be written and is not there either",
            step=step,
            subject=target.where(manifest_key),
            hint="list the backups and run the backup again",
        )
    return other


def other_run_result(request, manifest_key, other, own):
    """The result of a run that lost the commit to another run: the other run's backup, changed=False."""
    catalog.validate_manifest(other, request.target.where(manifest_key))
    return {
        "changed": False,
        "backup_id": request.backup_id,
        "manifest_key": manifest_key,
        "manifest": other,
        "summary": catalog.summarize(other),
        "cleaned": own["removed"],
        "msg": f"another run committed backup {request.backup_id} of {request.source} first (started "
        f"{other.get('started_at')}); that backup is the result of this run, which committed nothing",
    }

"""Issue 18, items 5-8, against the sandbox: Storage backups that never stall and restore exactly.

- a 1015-byte key (valid at the source) is backed up and restored, and runs taken before the content-addressed
  layout still restore;
- a file deleted while the run copies it is recorded as deleted and the run completes;
- content type, cache control and user metadata are restored as they were, a change of metadata alone is found by
  the next backup, and drifted metadata at the destination is put back;
- restoring an older run with prune makes the bucket exactly that run (check mode lists what it would delete).

The Storage endpoint is the sandbox's SeaweedFS with the project's Storage keys (app-storage* only); the backup is
written by the backup writer, as the runbooks do."""

from __future__ import annotations

import hashlib
import json
import time
import uuid

import pytest
from botocore.exceptions import ClientError
from conftest import s3_params, sandbox_secrets

from ansible_collections.pgdr.supabase.plugins.module_utils import storage_assets as sa
from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import s3_target as make_target

pytestmark = pytest.mark.integration

# 1015 bytes: valid at the source (S3 allows 1024; SeaweedFS also wants each path segment at most 255 bytes), too
# long once the old layout's prefix (objects/<run_id>/<bucket>/) was put in front of it.
LONG_KEY = "/".join(["k" * 250] * 4) + "/" + "x" * 11


@pytest.fixture
def storage(sandbox):
    """The project's Storage endpoint (its own keys) and a bucket of the test's own on it."""
    target = sa.storage_target(s3_params(sandbox, identity="project_storage"))
    name = f"app-storage-t{uuid.uuid4().hex[:8]}"
    target.client.create_bucket(Bucket=name)
    buckets = [name]
    yield target, name, buckets
    for bucket in buckets:
        pages = target.client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for key in [o["Key"] for page in pages for o in page.get("Contents", [])]:
            target.client.delete_object(Bucket=bucket, Key=key)
        target.client.delete_bucket(Bucket=bucket)


@pytest.fixture
def backup(sandbox, prefix, s3_target):
    yield make_target(s3_params(sandbox, identity="writer"))
    s3_target.delete_keys([key for key, _ in s3_target.list_keys(f"{prefix}/")])


def listing(client, bucket):
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def run_backup(storage_target, bucket, backup_target, prefix):
    return sa.backup_assets(storage_target, [bucket], backup_target, prefix, "production")


def assert_no_secrets(run, state):
    for secret in sandbox_secrets(state):
        assert secret not in run.stdout


# --------------------------------------------------------------------------------------------- item 5


def test_a_1015_byte_key_is_backed_up_and_restored(run_playbook, sandbox, storage, backup, prefix):
    target, bucket, buckets = storage
    assert len(LONG_KEY.encode()) == 1015
    target.client.put_object(Bucket=bucket, Key=LONG_KEY, Body=b"long key\n")
    target.client.put_object(Bucket=bucket, Key="short.txt", Body=b"short\n")
    extra = {"pgdr_backup_prefix": prefix, "pgdr_storage_buckets": [bucket]}
    first = run_playbook("playbooks/storage_backup.yml", extra)
    assert first.rc == 0, first.stdout
    [result] = first.results("pgdr.supabase.storage_backup")
    manifest = backup.get_json(result["manifest_key"])
    entry = next(o for o in manifest["objects"] if o["key"] == LONG_KEY)
    sprefix = sa.storage_prefix(prefix, "production")
    assert entry["stored_key"] == sa.blob_key(sprefix, entry["sha256"])
    assert len(entry["stored_key"]) < 200
    # Where the layout before manifest version 2 put it, the key overflows: that stalled every later backup.
    with pytest.raises(ClientError, match="KeyTooLong"):
        backup.client.put_object(
            Bucket=backup.bucket, Key=sa.stored_key(sprefix, result["run_id"], bucket, LONG_KEY), Body=b"x"
        )
    again = run_playbook("playbooks/storage_backup.yml", extra)
    assert again.rc == 0 and again.changed() == 0, again.stdout

    staging = f"{bucket}-r"
    buckets.append(staging)
    restored = run_playbook(
        "playbooks/storage_restore.yml", {**extra, "pgdr_storage_restore_bucket_map": {bucket: staging}}
    )
    assert restored.rc == 0, restored.stdout
    assert target.client.get_object(Bucket=staging, Key=LONG_KEY)["Body"].read() == b"long key\n"
    for run in (first, again, restored):
        assert_no_secrets(run, sandbox)


def test_a_run_taken_before_the_new_layout_still_restores_and_is_carried_on(sandbox, storage, backup, prefix):
    """A manifest version 1 run (files under objects/<run_id>/<bucket>/<key>, no metadata recorded)."""
    target, bucket, buckets = storage
    sprefix = sa.storage_prefix(prefix, "production")
    run_id = "20260101T000000Z"
    body = b"from an old run\n"
    target.client.put_object(Bucket=bucket, Key="old.txt", Body=body)
    stored = sa.stored_key(sprefix, run_id, bucket, "old.txt")
    backup.put_bytes(stored, body, content_type="text/plain")
    etag = target.client.head_object(Bucket=bucket, Key="old.txt")["ETag"].strip('"')
    old = {
        "manifest_version": 1,
        "kind": "storage",
        "run_id": run_id,
        "buckets": [bucket],
        "objects": [
            {
                "bucket": bucket,
                "key": "old.txt",
                "size": len(body),
                "etag": etag,
                "md5": etag,
                "sha256": hashlib.sha256(body).hexdigest(),
                "content_type": "text/plain",
                "stored_key": stored,
                "deleted": False,
            }
        ],
    }
    backup.put_bytes(sa.manifest_key(sprefix, run_id), json.dumps(old).encode())
    staging = f"{bucket}-old"
    buckets.append(staging)
    dest = sa.storage_target(s3_params(sandbox, identity="project_storage"))
    restored = sa.restore_assets(backup, sa.load_manifest(backup, sprefix, run_id), dest, {bucket: staging}, None, True)
    assert restored["restored"] == 1
    assert target.client.get_object(Bucket=staging, Key="old.txt")["Body"].read() == body
    # The next backup reads the old entry's metadata once and keeps pointing at the old copy (no bytes copied).
    result = run_backup(target, bucket, backup, prefix)
    assert result["plan"]["counts"]["metadata"] == 1 and result["plan"]["counts"]["new"] == 0
    assert result["manifest"]["counts"]["copied"] == 0
    manifest = backup.get_json(result["manifest_key"])
    assert manifest["manifest_version"] == 2 and manifest["objects"][0]["stored_key"] == stored
    assert run_backup(target, bucket, backup, prefix)["changed"] is False


# --------------------------------------------------------------------------------------------- item 6


def test_a_file_deleted_while_the_run_copies_it_is_recorded_as_deleted(sandbox, storage, backup, prefix, monkeypatch):
    target, bucket, _ = storage
    for key in ("stays.txt", "vanishes.txt"):
        target.client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    real_list = sa.list_objects

    def list_then_delete(client, name, page_size=sa.LIST_PAGE_SIZE):
        found = real_list(client, name, page_size)
        client.delete_object(Bucket=name, Key="vanishes.txt")  # the file goes after the listing, before its copy
        return found

    monkeypatch.setattr(sa, "list_objects", list_then_delete)
    result = run_backup(target, bucket, backup, prefix)
    assert result["changed"] is True
    manifest = backup.get_json(result["manifest_key"])
    entries = {o["key"]: o for o in manifest["objects"]}
    assert entries["vanishes.txt"]["deleted"] is True and entries["vanishes.txt"]["vanished"] is True
    assert entries["stays.txt"]["deleted"] is False
    assert manifest["vanished"] == [{"bucket": bucket, "key": "vanishes.txt"}]
    [warning] = result["run_warnings"]
    assert "deleted at the source while the run copied them" in warning and f"{bucket}/vanishes.txt" in warning
    monkeypatch.setattr(sa, "list_objects", real_list)
    assert run_backup(target, bucket, backup, prefix)["changed"] is False


# --------------------------------------------------------------------------------------------- item 7


def test_metadata_is_restored_a_metadata_change_is_found_and_drift_is_put_back(sandbox, storage, backup, prefix):
    target, bucket, buckets = storage
    big = bytes(range(256)) * (9 * 1024 * 4)  # 9 MiB: restored in parts
    meta = {"ContentType": "image/png", "CacheControl": "max-age=3600", "Metadata": {"owner": "alice"}}
    target.client.put_object(Bucket=bucket, Key="avatar.png", Body=b"png bytes", **meta)
    target.client.put_object(Bucket=bucket, Key="video.mp4", Body=big, ContentType="video/mp4")
    first = run_backup(target, bucket, backup, prefix)
    sprefix = sa.storage_prefix(prefix, "production")
    staging = f"{bucket}-meta"
    buckets.append(staging)
    dest = sa.storage_target(s3_params(sandbox, identity="project_storage"))

    def restore(**kwargs):
        manifest = sa.load_manifest(backup, sprefix, sa.list_runs(backup, sprefix)[-1])
        return sa.restore_assets(backup, manifest, dest, {bucket: staging}, None, True, **kwargs)

    assert restore()["restored"] == 2
    head = target.client.head_object(Bucket=staging, Key="avatar.png")
    assert (head["ContentType"], head["CacheControl"], head["Metadata"]) == (
        "image/png",
        "max-age=3600",
        {"owner": "alice"},
    )
    assert target.client.head_object(Bucket=staging, Key="video.mp4")["ContentType"] == "video/mp4"
    assert restore()["changed"] is False  # the 9 MiB object too: recognised by the ETag its restore got

    # Metadata alone changes at the source (bytes and ETag the same): the next backup records it, copying nothing.
    time.sleep(1.1)
    target.client.copy_object(
        Bucket=bucket,
        Key="avatar.png",
        CopySource={"Bucket": bucket, "Key": "avatar.png"},
        MetadataDirective="REPLACE",
        ContentType="image/png",
        CacheControl="no-cache",
        Metadata={"owner": "bob"},
    )
    second = run_backup(target, bucket, backup, prefix)
    assert second["changed"] is True and second["run_id"] != first["run_id"]
    assert second["plan"]["counts"]["metadata"] == 1 and second["manifest"]["counts"]["copied"] == 0
    entry = next(o for o in backup.get_json(second["manifest_key"])["objects"] if o["key"] == "avatar.png")
    assert (entry["cache_control"], entry["metadata"]) == ("no-cache", {"owner": "bob"})

    # The restore puts the new metadata on the restored object without copying its bytes; then nothing to do.
    fixed = restore()
    assert (fixed["restored"], fixed["metadata_restored"]) == (0, 1)
    head = target.client.head_object(Bucket=staging, Key="avatar.png")
    assert (head["CacheControl"], head["Metadata"]) == ("no-cache", {"owner": "bob"})
    # Metadata drifted at the destination is put back too.
    target.client.copy_object(
        Bucket=staging,
        Key="avatar.png",
        CopySource={"Bucket": staging, "Key": "avatar.png"},
        MetadataDirective="REPLACE",
        ContentType="application/octet-stream",
        Metadata={"owner": "mallory"},
    )
    assert restore()["metadata_restored"] == 1
    head = target.client.head_object(Bucket=staging, Key="avatar.png")
    assert (head["ContentType"], head["Metadata"]) == ("image/png", {"owner": "bob"})
    assert restore()["changed"] is False


# --------------------------------------------------------------------------------------------- item 8


def test_restoring_an_older_run_with_prune_makes_the_bucket_exactly_that_run(
    run_playbook, sandbox, storage, backup, prefix
):
    target, bucket, buckets = storage
    for key in ("a.txt", "b.txt"):
        target.client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    older = run_backup(target, bucket, backup, prefix)["run_id"]
    time.sleep(1.1)
    target.client.put_object(Bucket=bucket, Key="later.txt", Body=b"added after the first run")
    run_backup(target, bucket, backup, prefix)
    staging = f"{bucket}-prune"
    buckets.append(staging)
    extra = {"pgdr_backup_prefix": prefix, "pgdr_storage_restore_bucket_map": {bucket: staging}}
    assert run_playbook("playbooks/storage_restore.yml", extra).rc == 0  # the newest run: a, b, later
    assert listing(target.client, staging) == ["a.txt", "b.txt", "later.txt"]

    kept = run_playbook("playbooks/storage_restore.yml", {**extra, "storage_run": older})
    assert kept.rc == 0, kept.stdout
    assert listing(target.client, staging) == ["a.txt", "b.txt", "later.txt"]  # later files are left by default

    planned = run_playbook("playbooks/storage_restore.yml", {**extra, "storage_run": older, "prune": True}, check=True)
    assert planned.rc == 0, planned.stdout
    assert f"would delete (not in the run) s3://{staging}/later.txt" in planned.stdout
    assert listing(target.client, staging) == ["a.txt", "b.txt", "later.txt"]

    pruned = run_playbook("playbooks/storage_restore.yml", {**extra, "storage_run": older, "prune": True})
    assert pruned.rc == 0, pruned.stdout
    [result] = pruned.results("pgdr.supabase.storage_restore")
    assert result["pruned"] == 1
    assert listing(target.client, staging) == ["a.txt", "b.txt"]
    again = run_playbook("playbooks/storage_restore.yml", {**extra, "storage_run": older, "prune": True})
    assert again.rc == 0 and again.changed() == 0, again.stdout
    for run in (kept, planned, pruned, again):
        assert_no_secrets(run, sandbox)

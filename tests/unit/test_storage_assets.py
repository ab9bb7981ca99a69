"""The storage assets engine without a sandbox: planning against fake listings, ETag handling, the cross-check,
run selection, and copy/restore verification against an in-memory S3 (moto)."""

from __future__ import annotations

import hashlib
import io
import json

import boto3
import pytest
from moto import mock_aws
from test_modules import argument_spec_of, run_module

from ansible_collections.pgdr.supabase.plugins.module_utils import storage_assets as sa
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import S3Target

MULTIPART_ETAG = "9b2cf535f27731c974343645a3985328-3"


MODIFIED = "2026-01-01T00:00:00.000000Z"


def listed(key, size=10, etag="0" * 32, bucket="avatars", last_modified=MODIFIED):
    return {"bucket": bucket, "key": key, "size": size, "etag": etag, "last_modified": last_modified}


def entry(key, size=10, etag="0" * 32, bucket="avatars", deleted=False, **extra):
    return {
        "bucket": bucket,
        "key": key,
        "size": size,
        "etag": etag,
        "sha256": "a" * 64,
        "md5": etag if sa.is_md5_etag(etag) else None,
        "stored_key": sa.blob_key("b/production/storage/", "a" * 64),
        "deleted": deleted,
        "last_modified": MODIFIED,
        "metadata": {},
        **extra,
    }


class TestPlanning:
    def test_new_changed_unchanged_deleted(self):
        previous = [entry("same"), entry("resized", size=10), entry("retagged", etag="1" * 32), entry("gone")]
        listing = [listed("same"), listed("resized", size=11), listed("retagged", etag="2" * 32), listed("fresh")]
        diff = sa.diff_listing(previous, listing, ["avatars"])
        assert [o["key"] for o in diff["new"]] == ["fresh"]
        assert sorted(o["key"] for o in diff["changed"]) == ["resized", "retagged"]
        assert [e["key"] for e in diff["unchanged"]] == ["same"]
        assert [e["key"] for e in diff["deleted"]] == ["gone"]
        assert sa.is_change(diff)

    def test_nothing_changed_is_no_change(self):
        previous = [entry("a"), entry("b", etag=MULTIPART_ETAG, size=20 * 1024 * 1024)]
        listing = [listed("a"), listed("b", etag=f'"{MULTIPART_ETAG.upper()}"', size=20 * 1024 * 1024)]
        diff = sa.diff_listing(previous, listing, ["avatars"])
        assert not sa.is_change(diff)
        assert len(diff["unchanged"]) == 2

    def test_multipart_etag_is_compared_as_string_and_size(self):
        big = 20 * 1024 * 1024
        previous = [entry("video", size=big, etag=MULTIPART_ETAG)]
        other_parts = MULTIPART_ETAG.replace("-3", "-4")
        assert not sa.is_md5_etag(MULTIPART_ETAG)
        assert sa.is_md5_etag('"' + "ab" * 16 + '"')
        diff = sa.diff_listing(previous, [listed("video", size=big, etag=other_parts)], ["avatars"])
        assert [o["key"] for o in diff["changed"]] == ["video"]
        diff = sa.diff_listing(previous, [listed("video", size=big + 1, etag=MULTIPART_ETAG)], ["avatars"])
        assert [o["key"] for o in diff["changed"]] == ["video"]

    def test_deleted_objects_stay_deleted_and_come_back_as_new(self):
        previous = [entry("was-deleted", deleted=True), entry("back", deleted=True)]
        diff = sa.diff_listing(previous, [listed("back")], ["avatars"])
        assert [e["key"] for e in diff["already_deleted"]] == ["was-deleted"]
        assert [o["key"] for o in diff["new"]] == ["back"]
        assert not diff["deleted"]

    def test_buckets_not_scanned_are_carried_not_deleted(self):
        previous = [entry("x", bucket="docs"), entry("y")]
        diff = sa.diff_listing(previous, [listed("y")], ["avatars"])
        assert [e["key"] for e in diff["carried"]] == ["x"]
        assert not diff["deleted"]
        assert not sa.is_change(diff)

    def test_layout(self):
        sprefix = sa.storage_prefix("backups", "production")
        assert sprefix == "backups/production/storage/"
        assert (
            sa.manifest_key(sprefix, "20260101T000000Z") == "backups/production/storage/manifests/20260101T000000Z.json"
        )
        # Runs before manifest version 2 stored each file under its key; they are still read.
        assert (
            sa.stored_key(sprefix, "20260101T000000Z", "avatars", "a/b.png")
            == "backups/production/storage/objects/20260101T000000Z/avatars/a/b.png"
        )
        with pytest.raises(DRError):
            sa.storage_prefix("backups", "bad/name")

    def test_stored_keys_have_a_fixed_length_whatever_the_source_key(self):
        """Issue 18 item 5: a 1015-byte key (S3 allows 1024) would overflow once the backup prefix is added."""
        sprefix = sa.storage_prefix("a-fairly-long/backup-prefix", "production")
        sha = hashlib.sha256(b"x").hexdigest()
        key = sa.blob_key(sprefix, sha)
        assert key == f"{sprefix}blobs/{sha[:2]}/{sha}"
        assert len(key.encode()) == len(sprefix) + 6 + 2 + 1 + 64 < 200

    def test_unchanged_bytes_with_a_new_last_modified_are_read_again(self):
        previous = [entry("same"), entry("touched"), entry("old-run", metadata=None)]
        del previous[2]["metadata"]
        listing = [listed("same"), listed("touched", last_modified="2026-02-01T00:00:00.000000Z"), listed("old-run")]
        diff = sa.diff_listing(previous, listing, ["avatars"])
        assert [e["key"] for e in diff["unchanged"]] == ["same"]
        assert sorted(pair[0]["key"] for pair in diff["recheck"]) == ["old-run", "touched"]

    def test_metadata_is_compared_field_by_field(self):
        e = entry("a", content_type="image/png", cache_control="max-age=60", metadata={"owner": "alice"})
        head = {"ContentType": "image/png", "CacheControl": "max-age=60", "Metadata": {"owner": "alice"}}
        assert sa.same_metadata(e, head)
        assert not sa.same_metadata(e, dict(head, CacheControl="no-cache"))
        assert not sa.same_metadata(e, dict(head, Metadata={"owner": "bob"}))
        assert not sa.same_metadata(e, dict(head, Metadata={"owner": "alice", sa.SHA256_METADATA: "a" * 64}))
        assert sa.put_metadata_args(e) == {
            "ContentType": "image/png",
            "CacheControl": "max-age=60",
            "Metadata": {"owner": "alice"},
        }

    def test_multipart_etag_is_the_md5_of_the_part_md5s(self):
        parts = [b"a" * 5, b"b" * 3]
        digests = [hashlib.md5(p).digest() for p in parts]  # noqa: S324
        assert sa.multipart_etag(digests) == hashlib.md5(b"".join(digests)).hexdigest() + "-2"  # noqa: S324

    def test_select_run(self):
        runs = ["20260101T000000Z", "20260102T000000Z", "20260103T000000Z"]
        assert sa.select_run(runs) == "20260103T000000Z"
        assert sa.select_run(runs, "20260102T000000Z") == "20260102T000000Z"
        assert sa.select_run(runs, "20260104T000000Z") is None
        assert sa.select_run(runs, at_or_before="20260102T120000Z") == "20260102T000000Z"
        assert sa.select_run(runs, at_or_before="20251231T000000Z") is None
        assert sa.select_run([], "latest") is None
        with pytest.raises(DRError):
            sa.select_run(runs, "yesterday")


class TestCrossCheckAndRestoreCheck:
    def test_rows_missing_from_the_backup_are_reported(self):
        manifest = {"objects": [entry("a"), entry("b", deleted=True), entry("c")]}
        rows = [("avatars", "a"), ("avatars", "b"), ("avatars", "ghost"), ("docs", "elsewhere")]
        result = sa.compare_rows(rows, manifest, buckets=["avatars"])
        assert result["missing"] == [{"bucket": "avatars", "key": "b"}, {"bucket": "avatars", "key": "ghost"}]
        assert result["missing_count"] == 2
        assert result["unreferenced"] == [{"bucket": "avatars", "key": "c"}]
        everything = sa.compare_rows(rows, manifest)
        assert {"bucket": "docs", "key": "elsewhere"} in everything["missing"]

    def test_is_restored(self):
        e = entry("a", size=3, etag="0" * 32)
        # Restores before manifest version 2 marked the bytes with this metadata: still recognised.
        assert sa.is_restored({"ContentLength": 3, "Metadata": {sa.SHA256_METADATA: "a" * 64}}, e)
        assert sa.is_restored({"ContentLength": 3, "ETag": '"' + "0" * 32 + '"', "Metadata": {}}, e)
        assert not sa.is_restored({"ContentLength": 4, "Metadata": {sa.SHA256_METADATA: "a" * 64}}, e)
        assert not sa.is_restored({"ContentLength": 3, "ETag": '"' + "1" * 32 + '"'}, e)
        assert not sa.is_restored(None, e)

    def test_a_large_object_is_recognised_by_the_etag_its_restore_gets(self):
        big = sa.RESTORE_PART_SIZE + 1
        e = entry("v", size=big, restore_etag={"part_size": sa.RESTORE_PART_SIZE, "etag": MULTIPART_ETAG})
        assert sa.is_restored({"ContentLength": big, "ETag": f'"{MULTIPART_ETAG}"'}, e)
        assert not sa.is_restored({"ContentLength": big, "ETag": '"' + "0" * 32 + '"'}, e)
        # Restored in parts of another size: another ETag, so it is copied again (never taken for done).
        assert not sa.is_restored({"ContentLength": big, "ETag": f'"{MULTIPART_ETAG}"'}, e, part_size=16 << 20)


class FakeBody(io.BytesIO):
    pass


class FakeSourceClient:
    """A Storage endpoint that answers one object with the given bytes, ETag and metadata (or NoSuchKey)."""

    def __init__(self, data, etag, gone=False, **metadata):
        self.data, self.etag, self.gone, self.metadata = data, etag, gone, metadata

    def get_object(self, Bucket, Key):
        if self.gone:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "gone"}}, "GetObject")
        return {"Body": FakeBody(self.data), "ETag": f'"{self.etag}"', "ContentLength": len(self.data), **self.metadata}


class FakeSource:
    def __init__(self, data, etag, gone=False, **metadata):
        self.client = FakeSourceClient(data, etag, gone, **metadata)


SPREFIX = "p/production/storage/"
RUN = "20260101T000000Z"


@pytest.fixture
def memory_s3():
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="backups")
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="staging")
        yield S3Target("backups", region="us-east-1", access_key="testing", secret_key="testing")


class TestCopyAndRestore:
    def test_copy_records_sha256_md5_metadata_and_stores_under_the_sha256(self, memory_s3):
        data = b"hello storage\n"
        md5 = hashlib.md5(data).hexdigest()  # noqa: S324
        source = FakeSource(data, md5, ContentType="text/plain", CacheControl="max-age=9", Metadata={"a": "b"})
        got = sa.copy_object(source, listed("k" * 1015, len(data), md5), memory_s3, SPREFIX, RUN)
        sha = hashlib.sha256(data).hexdigest()
        assert got["sha256"] == sha and got["md5"] == md5
        assert got["stored_key"] == sa.blob_key(SPREFIX, sha)
        assert (got["content_type"], got["cache_control"], got["metadata"]) == ("text/plain", "max-age=9", {"a": "b"})
        body = memory_s3.client.get_object(Bucket="backups", Key=got["stored_key"])["Body"].read()
        assert body == data
        # The same bytes under another name are stored once.
        again = sa.copy_object(FakeSource(data, md5), listed("other", len(data), md5), memory_s3, SPREFIX, RUN)
        assert again["stored_key"] == got["stored_key"]
        assert [k for k, _unused in memory_s3.list_keys("p/")] == [got["stored_key"]]

    def test_a_large_object_goes_through_staging_and_leaves_only_its_blob(self, memory_s3):
        part = 5 * 1024 * 1024
        data = bytes(range(256)) * (part // 256 * 2 + 7)
        got = sa.copy_object(
            FakeSource(data, MULTIPART_ETAG),
            listed("big", len(data), MULTIPART_ETAG),
            memory_s3,
            SPREFIX,
            RUN,
            part_size=part,
        )
        assert got["sha256"] == hashlib.sha256(data).hexdigest()
        assert [k for k, _unused in memory_s3.list_keys("p/")] == [got["stored_key"]]
        assert got["restore_etag"]["part_size"] == sa.RESTORE_PART_SIZE
        assert got["restore_etag"]["etag"].endswith("-2")

    def test_an_object_gone_since_the_listing_is_none(self, memory_s3):
        assert sa.copy_object(FakeSource(b"", "0" * 32, gone=True), listed("k"), memory_s3, SPREFIX, RUN) is None
        assert memory_s3.list_keys("p/") == []

    def test_copy_whose_bytes_do_not_match_the_md5_etag_fails_and_leaves_nothing(self, memory_s3):
        data = b"hello storage\n"
        with pytest.raises(DRError, match="MD5"):
            sa.copy_object(FakeSource(data, "f" * 32), listed("k", len(data)), memory_s3, SPREFIX, RUN)
        assert memory_s3.list_keys("p/") == []

    def test_copy_with_a_multipart_etag_is_not_md5_checked(self, memory_s3):
        data = b"x" * 100
        got = sa.copy_object(FakeSource(data, MULTIPART_ETAG), listed("k", 100), memory_s3, SPREFIX, RUN)
        assert got["etag"] == MULTIPART_ETAG
        assert got["sha256"] == hashlib.sha256(data).hexdigest()

    def test_unverified_etag_passes_with_verify_off(self, memory_s3):
        data = b"abc"
        got = sa.copy_object(FakeSource(data, "f" * 32), listed("k", 3), memory_s3, SPREFIX, RUN, verify_etag=False)
        assert got["size"] == 3

    @pytest.mark.parametrize("size_factor", [1, 3])
    def test_restore_refuses_a_damaged_copy_and_writes_nothing(self, memory_s3, size_factor):
        part = 5 * 1024 * 1024
        data = b"y" * (part * size_factor - 1)
        memory_s3.client.put_object(Bucket="backups", Key="p/k", Body=data)
        bad = dict(entry("k", size=len(data)), stored_key="p/k", sha256="0" * 64, target_bucket="staging")
        with pytest.raises(DRError, match="SHA-256"):
            sa.restore_object(memory_s3, bad, memory_s3, part_size=part)
        assert memory_s3.client.list_objects_v2(Bucket="staging").get("KeyCount", 0) == 0
        uploads = memory_s3.client.list_multipart_uploads(Bucket="staging").get("Uploads", [])
        assert uploads == []
        good = dict(bad, sha256=hashlib.sha256(data).hexdigest(), content_type="video/mp4", metadata={"x": "1"})
        sa.restore_object(memory_s3, good, memory_s3, part_size=part)
        head = memory_s3.client.head_object(Bucket="staging", Key="k")
        # The metadata is what was backed up, exactly: nothing of ours is added.
        assert head["Metadata"] == {"x": "1"} and head["ContentType"] == "video/mp4"

    def test_restore_into_a_missing_bucket_needs_create_buckets(self, memory_s3):
        manifest = {"run_id": "20260101T000000Z", "objects": [dict(entry("k"), stored_key="p/k")]}
        with pytest.raises(DRError, match="no bucket new-bucket"):
            sa.restore_assets(memory_s3, manifest, memory_s3, bucket_map={"avatars": "new-bucket"})
        result = sa.restore_assets(
            memory_s3, manifest, memory_s3, bucket_map={"avatars": "new-bucket"}, create_buckets=True, check_mode=True
        )
        assert result["plan"]["create_buckets"] == ["new-bucket"]
        assert "new-bucket" not in [b["Name"] for b in memory_s3.client.list_buckets()["Buckets"]]

    def test_prune_lists_then_deletes_what_the_run_does_not_hold(self, memory_s3):
        data = b"kept"
        memory_s3.client.put_object(Bucket="backups", Key="p/kept", Body=data)
        md5 = hashlib.md5(data).hexdigest()  # noqa: S324
        kept = dict(entry("kept", size=4, etag=md5), stored_key="p/kept", sha256=hashlib.sha256(data).hexdigest())
        manifest = {"run_id": RUN, "buckets": ["staging"], "objects": [dict(kept, bucket="staging")]}
        memory_s3.client.put_object(Bucket="staging", Key="later.txt", Body=b"added after the run")
        planned = sa.restore_assets(memory_s3, manifest, memory_s3, prune=True, check_mode=True)
        assert planned["plan"]["prune"] == ["s3://staging/later.txt"] and planned["pruned"] == 0
        assert memory_s3.client.head_object(Bucket="staging", Key="later.txt")
        left_alone = sa.restore_assets(memory_s3, manifest, memory_s3)
        assert left_alone["pruned"] == 0
        done = sa.restore_assets(memory_s3, manifest, memory_s3, prune=True)
        assert done["pruned"] == 1
        keys = [o["Key"] for o in memory_s3.client.list_objects_v2(Bucket="staging")["Contents"]]
        assert keys == ["kept"]
        assert sa.restore_assets(memory_s3, manifest, memory_s3, prune=True)["changed"] is False


STORAGE_MODULES = ("pgdr.supabase.storage_backup", "pgdr.supabase.storage_restore")


@pytest.mark.parametrize("name", STORAGE_MODULES)
def test_module_hides_secrets(name):
    """Docs against the spec: validate-modules (make sanity). Here: the secrets are no_log=True."""
    spec, kwargs = argument_spec_of(name)
    assert kwargs.get("supports_check_mode") is True
    for option in ("s3", "storage"):
        for key in ("secret_key", "session_token", "access_key"):
            assert spec[option]["options"][key].get("no_log") is True
    assert spec["cross_check_dsn"].get("no_log") is True


def test_backup_module_fails_on_unreachable_endpoint_without_secrets(capsys):
    secret = "Storage-Secret-Key-123"
    args = {
        "source": "production",
        "storage": {"endpoint_url": "http://127.0.0.1:1", "access_key": "AKIAX", "secret_key": secret},
        "s3": {"bucket": "dr", "endpoint_url": "http://127.0.0.1:1", "access_key": "AKIAX", "secret_key": secret},
    }
    code, result = run_module("pgdr.supabase.storage_backup", {**args, "_ansible_remote_tmp": "/tmp"}, capsys)
    assert code == 1
    assert "cannot reach the S3 endpoint" in result["msg"] or "check backup bucket" in result["msg"]
    assert secret not in json.dumps(result)

"""The restore engine's failure modes against the sandbox: a missing or truncated object, a full disk, the
ranged parallel download, and a failed restore that must leave the database under the final name alone."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import subprocess

import psycopg
import pytest
import zstandard
from backup_helpers import drop_database, dsn_for, new_database_request, write_v1_backup

from ansible_collections.pgdr.supabase.plugins.module_utils import logical_backup, logical_restore, verify
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import RangedReader

pytestmark = pytest.mark.integration


def backup(state, target, prefix):
    moment = dt.datetime(2022, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=random.randrange(10**8))
    req = logical_backup.BackupRequest(
        "production", state["production"]["dsn"], target, prefix=prefix, window="every_run", now=moment
    )
    return logical_backup.run(req)["manifest"]


def databases(state):
    with psycopg.connect(dsn_for(state, "staging", "postgres")) as conn:
        return {r[0] for r in conn.execute("select datname from pg_database")}


def data_object(manifest):
    return next(o for o in manifest["objects"] if o.get("kind") == "data")


def restore_request(state, manifest, target, **kwargs):
    """A restore into a new database on staging (from its platform template, which cannot have pg_cron)."""
    return new_database_request(state["staging"]["dsn"], manifest, target, **kwargs)


def test_a_missing_object_is_named_and_nothing_is_created(sandbox, s3_target, prefix):
    manifest = backup(sandbox, s3_target, prefix)
    s3_target.delete_keys([data_object(manifest)["key"]])
    before = databases(sandbox)
    with pytest.raises(DRError, match="object data-0001 of the backup is missing"):
        logical_restore.run(restore_request(sandbox, manifest, s3_target))
    assert databases(sandbox) == before


def test_a_truncated_object_is_named_with_both_sizes(sandbox, s3_target, prefix):
    manifest = backup(sandbox, s3_target, prefix)
    obj = data_object(manifest)
    body = s3_target.client.get_object(Bucket=s3_target.bucket, Key=obj["key"])["Body"].read()
    s3_target.client.put_object(Bucket=s3_target.bucket, Key=obj["key"], Body=body[:-100])
    before = databases(sandbox)
    with pytest.raises(DRError, match=rf"{obj['size'] - 100} bytes .* the manifest says {obj['size']} bytes"):
        logical_restore.run(restore_request(sandbox, manifest, s3_target))
    assert databases(sandbox) == before


def test_a_corrupted_data_object_fails_and_leaves_no_database(sandbox, s3_target, prefix):
    """Same size, one byte flipped: the object streams into COPY, the restore fails naming it when its digest
    does not match, and its temporary database is dropped (the rows it loaded were never committed)."""
    manifest = backup(sandbox, s3_target, prefix)
    obj = data_object(manifest)
    body = bytearray(s3_target.client.get_object(Bucket=s3_target.bucket, Key=obj["key"])["Body"].read())
    body[len(body) // 3] ^= 0x40
    s3_target.client.put_object(Bucket=s3_target.bucket, Key=obj["key"], Body=bytes(body))
    before = databases(sandbox)
    with pytest.raises(DRError, match=r"object data-0001 is corrupted"):
        logical_restore.run(restore_request(sandbox, manifest, s3_target))
    assert databases(sandbox) == before


def test_a_template_this_login_cannot_copy_is_refused_before_anything_is_created(sandbox, s3_target, prefix):
    """As on a hosted project, postgres may create databases but not copy the postgres database."""
    manifest = backup(sandbox, s3_target, prefix)
    before = databases(sandbox)
    for template, reason in (("postgres", "not marked IS_TEMPLATE"), ("no_such_template", "does not exist")):
        with pytest.raises(DRError, match=f"template database {template} .*{reason}") as info:
            logical_restore.run(restore_request(sandbox, manifest, s3_target, template=template))
        assert "platform_template" in info.value.hint
    assert databases(sandbox) == before


def test_ranged_reads_give_back_the_object_in_order(s3_target, prefix):
    payload = random.randbytes(5 * 1024 * 1024 + 12345)
    key = f"{prefix}/ranged.bin"
    s3_target.client.put_object(Bucket=s3_target.bucket, Key=key, Body=payload)
    etag = s3_target.client.head_object(Bucket=s3_target.bucket, Key=key)["ETag"]
    reader = RangedReader(s3_target, key, len(payload), etag, chunk=1024 * 1024, workers=3)
    assert b"".join(reader.iter_chunks()) == payload
    reader.close()
    reader = RangedReader(s3_target, key, len(payload), etag, chunk=1024 * 1024, workers=2)
    assert reader.read(10) == payload[:10] and reader.read() == payload[10:]
    reader.close()


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 32 KiB file system (tmpfs) as the restore's work folder: smaller than the backup's schema."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(folder)], check=False).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield str(folder)
    subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_is_refused_before_anything_is_written(sandbox, s3_target, prefix, tiny_disk):
    manifest = backup(sandbox, s3_target, prefix)
    before = databases(sandbox)
    req = restore_request(sandbox, manifest, s3_target, workdir=tiny_disk)
    with pytest.raises(DRError, match="not enough free disk for the restore's local copy") as info:
        logical_restore.run(req)
    assert tiny_disk in str(info.value)
    assert databases(sandbox) == before


def test_a_disk_that_fills_up_mid_download_is_named(sandbox, s3_target, prefix, tiny_disk, monkeypatch):
    manifest = backup(sandbox, s3_target, prefix)
    # Pretend the space check passed (another writer filled the disk after it): the write itself must fail clearly.
    monkeypatch.setattr(logical_restore, "_disk_needed", lambda _request: 0)
    req = restore_request(sandbox, manifest, s3_target, workdir=tiny_disk)
    with pytest.raises(DRError, match="No space left on device"):
        logical_restore.run(req)


def test_a_failed_restore_leaves_the_existing_database_alone(sandbox, s3_target, prefix):
    manifest = backup(sandbox, s3_target, prefix)
    req = restore_request(sandbox, manifest, s3_target)
    try:
        assert logical_restore.run(req)["changed"]
        # A second backup whose data cannot be restored (its schema object is garbage) into the same name.
        broken = backup(sandbox, s3_target, prefix)
        schema = next(o for o in broken["objects"] if o["name"] == "schema")
        bad = restore_request(sandbox, broken, s3_target, database="scratch_fail")
        garbage = zstandard.ZstdCompressor().compress(b"PGDMP not really an archive")
        s3_target.client.put_object(Bucket=s3_target.bucket, Key=schema["key"], Body=garbage)
        schema["size"] = len(garbage)
        schema["sha256"] = hashlib.sha256(garbage).hexdigest()
        with pytest.raises(DRError, match=r"schema archive|restore schema"):
            logical_restore.run(bad)
        names = databases(sandbox)
        assert "scratch_fail" not in names and bad.temp_database not in names
        with psycopg.connect(dsn_for(sandbox, "staging", req.database)) as conn:
            assert conn.execute("select count(*) from public.tenants").fetchone()[0] > 0
    finally:
        drop_database(sandbox, req.database)


def test_a_backup_taken_before_data_objects_existed_still_restores_and_verifies(sandbox, s3_target, prefix):
    """Manifest version 1 (roles, schema, one data archive, the migration history): restored through pg_restore,
    as the non-superuser postgres, and verified against its manifest (schema hashes, row counts)."""
    manifest = write_v1_backup(sandbox, s3_target, prefix)
    req = restore_request(sandbox, manifest, s3_target)
    try:
        result = logical_restore.run(req)
        assert result["changed"] is True
        dsn = dsn_for(sandbox, "staging", req.database)
        outcome = verify.verify_restore(dsn, manifest, sandbox["app"]["migrations_dir"])
        assert outcome["ok"], outcome["msg"]
        assert [c["name"] for c in outcome["checks"]] == ["migrations", "schema", "row_counts"]
        assert logical_restore.run(req)["changed"] is False
    finally:
        drop_database(sandbox, req.database)

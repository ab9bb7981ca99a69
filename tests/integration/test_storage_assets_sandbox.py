"""Storage assets and the config snapshot through their playbooks against the sandbox: incremental backup,
check mode, restore into a staging bucket, the storage.objects cross-check, and a snapshot without values."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
from conftest import sandbox_secrets

from ansible_collections.pgdr.supabase.plugins.module_utils import pg

pytestmark = pytest.mark.integration

FILES = {"a/one.txt": b"one\n", "b/two.bin": bytes(range(256)) * 10, "three.md": b"# three\n"}


@pytest.fixture
def storage_bucket(sandbox, s3_target):
    """A Storage bucket of the test's own on the sandbox endpoint, with a few files and its storage.buckets row."""
    name = f"app-storage-t{uuid.uuid4().hex[:8]}"
    client = s3_target.client
    client.create_bucket(Bucket=name)
    for key, body in FILES.items():
        client.put_object(Bucket=name, Key=key, Body=body)
    with pg.connect(sandbox["production"]["dsn"]) as conn:
        conn.execute("INSERT INTO storage.buckets (id, name) VALUES (%s, %s)", (name, name))
        for key in FILES:
            conn.execute("INSERT INTO storage.objects (bucket_id, name) VALUES (%s, %s)", (name, key))
    yield name
    with pg.connect(sandbox["production"]["dsn"]) as conn:
        conn.execute("DELETE FROM storage.objects WHERE bucket_id = %s", (name,))
        conn.execute("DELETE FROM storage.buckets WHERE id = %s", (name,))


def bucket_listing(client, bucket):
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted((o["Key"], o["Size"], o["ETag"]) for page in pages for o in page.get("Contents", []))
    except client.exceptions.NoSuchBucket:
        return None


def secrets(state):
    return sandbox_secrets(state)


def assert_no_secrets(run, values):
    for secret in values:
        assert secret not in run.stdout
        for event in run.events:
            assert secret not in json.dumps(event.get("event_data", {}).get("res", {}))


def test_backup_is_incremental_and_check_mode_touches_nothing(run_playbook, sandbox, s3_target, prefix, storage_bucket):
    extra = {"pgdr_backup_prefix": prefix, "pgdr_storage_buckets": [storage_bucket]}
    client = s3_target.client
    before = bucket_listing(client, storage_bucket), bucket_listing(client, s3_target.bucket)
    check = run_playbook("playbooks/storage_backup.yml", extra, check=True)
    assert check.rc == 0, check.stdout
    assert (bucket_listing(client, storage_bucket), bucket_listing(client, s3_target.bucket)) == before
    assert "would copy (new)" in check.stdout
    assert check.changed() == 1

    first = run_playbook("playbooks/storage_backup.yml", extra)
    assert first.rc == 0, first.stdout
    [result] = first.results("pgdr.supabase.storage_backup")
    assert result["changed"] and result["plan"]["counts"]["new"] == len(FILES)
    manifest = s3_target.get_json(result["manifest_key"])
    by_key = {o["key"]: o for o in manifest["objects"]}
    for key, body in FILES.items():
        assert by_key[key]["sha256"] == hashlib.sha256(body).hexdigest()
        stored = client.get_object(Bucket=s3_target.bucket, Key=by_key[key]["stored_key"])["Body"].read()
        assert stored == body
    assert result["cross_check"]["missing_count"] == 0
    listing = bucket_listing(client, s3_target.bucket)

    second = run_playbook("playbooks/storage_backup.yml", extra)
    assert second.rc == 0, second.stdout
    assert second.changed() == 0
    assert bucket_listing(client, s3_target.bucket) == listing

    client.put_object(Bucket=storage_bucket, Key="new/four.txt", Body=b"four\n")
    client.put_object(Bucket=storage_bucket, Key="a/one.txt", Body=b"one, changed\n")
    client.delete_object(Bucket=storage_bucket, Key="three.md")
    before = bucket_listing(client, storage_bucket), bucket_listing(client, s3_target.bucket)
    assert run_playbook("playbooks/storage_backup.yml", extra, check=True).rc == 0
    assert (bucket_listing(client, storage_bucket), bucket_listing(client, s3_target.bucket)) == before

    third = run_playbook("playbooks/storage_backup.yml", extra)
    assert third.rc == 0, third.stdout
    [result] = third.results("pgdr.supabase.storage_backup")
    counts = result["plan"]["counts"]
    assert (counts["new"], counts["changed"], counts["unchanged"], counts["deleted"]) == (1, 1, 1, 1)
    assert sorted(o["key"] for o in result["plan"]["copy"]) == ["a/one.txt", "new/four.txt"]
    manifest = s3_target.get_json(result["manifest_key"])
    # Only the new bytes were stored, each under its SHA-256 (content-addressed; nothing else was written).
    by_key = {o["key"]: o for o in manifest["objects"]}
    for key, body in (("a/one.txt", b"one, changed\n"), ("new/four.txt", b"four\n")):
        assert by_key[key]["stored_key"].endswith(
            "/blobs/" + hashlib.sha256(body).hexdigest()[:2] + "/" + hashlib.sha256(body).hexdigest()
        )
    after = {k for k, *_ in bucket_listing(client, s3_target.bucket)}
    written = sorted(after - {k for k, *_ in before[1]})
    assert written == sorted(
        [by_key["a/one.txt"]["stored_key"], by_key["new/four.txt"]["stored_key"], result["manifest_key"]]
    )
    deleted = [o for o in manifest["objects"] if o["deleted"]]
    assert [o["key"] for o in deleted] == ["three.md"]
    # The deleted file's row is still in storage.objects: the cross-check reports it as missing from the backup.
    assert result["cross_check"]["missing"] == [{"bucket": storage_bucket, "key": "three.md"}]
    assert "MISSING from the backup: " + storage_bucket + "/three.md" in third.stdout
    for run in (check, first, second, third):
        assert_no_secrets(run, secrets(sandbox))


def test_cross_check_finds_a_row_without_a_file(run_playbook, sandbox, prefix, storage_bucket):
    with pg.connect(sandbox["production"]["dsn"]) as conn:
        conn.execute(
            "INSERT INTO storage.objects (bucket_id, name) VALUES (%s, 'ghost/never-uploaded.png')", (storage_bucket,)
        )
    extra = {"pgdr_backup_prefix": prefix, "pgdr_storage_buckets": [storage_bucket]}
    run = run_playbook("playbooks/storage_backup.yml", extra)
    assert run.rc == 0, run.stdout
    [result] = run.results("pgdr.supabase.storage_backup")
    assert result["cross_check"]["missing"] == [{"bucket": storage_bucket, "key": "ghost/never-uploaded.png"}]
    assert "objects referenced in storage.objects are missing" in run.stdout
    failing = run_playbook("playbooks/storage_backup.yml", {**extra, "storage_backup_fail_on_missing": True})
    assert failing.rc != 0
    assert failing.changed() == 0


def test_restore_into_a_staging_bucket(run_playbook, sandbox, s3_target, prefix, storage_bucket):
    extra = {"pgdr_backup_prefix": prefix, "pgdr_storage_buckets": [storage_bucket]}
    assert run_playbook("playbooks/storage_backup.yml", extra).rc == 0
    staging = f"{storage_bucket}-staging"
    restore_vars = {**extra, "pgdr_storage_restore_bucket_map": {storage_bucket: staging}}
    client = s3_target.client

    check = run_playbook("playbooks/storage_restore.yml", restore_vars, check=True)
    assert check.rc == 0, check.stdout
    assert bucket_listing(client, staging) is None
    [planned] = check.results("pgdr.supabase.storage_restore")
    assert planned["plan"]["create_buckets"] == [staging]
    assert planned["plan"]["counts"]["copy"] == len(FILES)

    first = run_playbook("playbooks/storage_restore.yml", restore_vars)
    assert first.rc == 0, first.stdout
    assert first.changed() == 1
    for key, body in FILES.items():
        assert client.get_object(Bucket=staging, Key=key)["Body"].read() == body
    second = run_playbook("playbooks/storage_restore.yml", restore_vars)
    assert second.rc == 0 and second.changed() == 0

    # A staging object that differs is put back; one the backup does not know is left alone.
    client.put_object(Bucket=staging, Key="a/one.txt", Body=b"tampered")
    client.put_object(Bucket=staging, Key="staging-only.txt", Body=b"mine")
    third = run_playbook("playbooks/storage_restore.yml", restore_vars)
    [result] = third.results("pgdr.supabase.storage_restore")
    assert result["restored"] == 1 and result["plan"]["counts"]["overwrite"] == 1
    assert client.get_object(Bucket=staging, Key="a/one.txt")["Body"].read() == FILES["a/one.txt"]
    assert client.get_object(Bucket=staging, Key="staging-only.txt")["Body"].read() == b"mine"

    # Without create_buckets a missing bucket stops the run, naming the bucket.
    other = {
        **extra,
        "pgdr_storage_restore_bucket_map": {storage_bucket: f"{staging}-x"},
        "pgdr_storage_restore_create_buckets": False,
    }
    refused = run_playbook("playbooks/storage_restore.yml", other)
    assert refused.rc != 0 and f"no bucket {staging}-x" in refused.stdout
    for run in (check, first, second, third, refused):
        assert_no_secrets(run, secrets(sandbox))


def test_restore_of_a_damaged_copy_fails_and_writes_nothing(run_playbook, sandbox, s3_target, prefix, storage_bucket):
    extra = {"pgdr_backup_prefix": prefix, "pgdr_storage_buckets": [storage_bucket]}
    run = run_playbook("playbooks/storage_backup.yml", extra)
    [result] = run.results("pgdr.supabase.storage_backup")
    manifest = s3_target.get_json(result["manifest_key"])
    victim = next(o for o in manifest["objects"] if o["key"] == "a/one.txt")
    s3_target.client.put_object(Bucket=s3_target.bucket, Key=victim["stored_key"], Body=b"one\r\n"[:4])
    staging = f"{storage_bucket}-dmg"
    restore = run_playbook(
        "playbooks/storage_restore.yml", {**extra, "pgdr_storage_restore_bucket_map": {storage_bucket: staging}}
    )
    assert restore.rc != 0
    assert "verify stored object" in restore.stdout
    keys = [k for k, *_ in bucket_listing(s3_target.client, staging) or []]
    assert "a/one.txt" not in keys


def test_config_snapshot_has_names_and_no_values(run_playbook, sandbox, s3_target, prefix, tmp_path):
    from ansible_collections.pgdr.supabase.plugins.module_utils.envstore_dotenv import parse_dotenv

    source_env = Path(sandbox["env_files"]["production"]).read_text()
    env_file = tmp_path / "production.env"
    env_file.write_text(source_env)
    values = parse_dotenv(source_env)
    assert len(values) >= 3
    stores = [{"label": "production", "store": {"type": "dotenv", "path": str(env_file)}}]
    extra = {"pgdr_backup_prefix": prefix, "pgdr_config_snapshot_stores": stores, "snapshot_id": "20260101T000000Z"}
    check = run_playbook("playbooks/config_snapshot.yml", extra, check=True)
    assert check.rc == 0, check.stdout
    assert s3_target.list_keys(prefix) == []

    first = run_playbook("playbooks/config_snapshot.yml", extra)
    assert first.rc == 0, first.stdout
    [result] = first.results("pgdr.supabase.config_snapshot")
    stored = s3_target.client.get_object(Bucket=s3_target.bucket, Key=result["key"])["Body"].read().decode()
    snapshot = json.loads(stored)
    assert sorted(v["name"] for v in snapshot["variables"]) == sorted(values)
    assert all(v["present"] and len(v["hmac_sha256"]) == 64 for v in snapshot["variables"])
    key_file = f"{sandbox['dir']}/secrets/config-snapshot-hmac-key"
    hmac_key = Path(key_file).read_text().strip()
    for value in [*values.values(), hmac_key]:
        assert value not in stored
    again = run_playbook("playbooks/config_snapshot.yml", extra)
    assert again.rc == 0 and again.changed() == 0

    changed_name = "SUPABASE_ANON_KEY"
    env_file.write_text(source_env.replace(values[changed_name], values[changed_name][::-1] + "x"))
    later = run_playbook("playbooks/config_snapshot.yml", {**extra, "snapshot_id": "20260102T000000Z"})
    assert later.rc == 0, later.stdout
    [result] = later.results("pgdr.supabase.config_snapshot")
    assert result["changes"]["changed"] == [f"production: {changed_name}"]
    assert result["changes"]["added"] == [] and result["changes"]["removed"] == []
    assert f"changed production: {changed_name}" in later.stdout
    new_values = parse_dotenv(env_file.read_text())
    for run in (check, first, again, later):
        assert_no_secrets(run, [*secrets(sandbox), *values.values(), *new_values.values(), hmac_key])

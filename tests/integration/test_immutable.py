"""The immutable copy and retention against the sandbox's SeaweedFS: Object Lock enforced, copies verified,
corruption named, locks never fought, and check mode of both playbooks touching nothing.

Everything the runbooks do here runs as the sandbox's backup writer (no governance bypass, no deletes in the locked
bucket). Every copy made here is GOVERNANCE-locked; teardown removes it as the admin, with a governance bypass, so
nothing stays."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import uuid

import pytest
from botocore.exceptions import ClientError
from conftest import s3_params

from ansible_collections.pgdr.supabase.plugins.module_utils import (
    catalog,
    immutable,
    logical_backup,
    retention,
    s3,
    selection,
    timefmt,
)
from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import s3_target as make_target
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

pytestmark = pytest.mark.integration

DAY = dt.timedelta(days=1)


@pytest.fixture
def admin_secondary(sandbox):
    """The locked bucket as the sandbox's admin: for teardown and for what only an admin (or an attacker with more
    than the backup writer's keys) can do."""
    return make_target(s3_params(sandbox, bucket="immutable"))


@pytest.fixture
def secondary(sandbox, prefix, admin_secondary):
    """The locked bucket as the backup writer, as the runbooks use it."""
    target = make_target(s3_params(sandbox, bucket="immutable", identity="writer"))
    yield target
    purge_versions(admin_secondary, f"{prefix}/")


@pytest.fixture
def primary(sandbox, s3_target, prefix):
    yield make_target(s3_params(sandbox, identity="writer"))
    s3_target.delete_keys([key for key, _ in s3_target.list_keys(f"{prefix}/")])


def purge_versions(target, prefix):
    """Teardown only (as the admin): remove every version under prefix, bypassing GOVERNANCE locks."""
    pages = target.client.get_paginator("list_object_versions").paginate(Bucket=target.bucket, Prefix=prefix)
    for page in pages:
        for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
            target.client.delete_object(
                Bucket=target.bucket, Key=item["Key"], VersionId=item["VersionId"], BypassGovernanceRetention=True
            )
    for key, upload in target.list_uploads(prefix):
        target.abort_upload(key, upload)


def versions(target, prefix):
    pages = target.client.get_paginator("list_object_versions").paginate(Bucket=target.bucket, Prefix=prefix)
    found = []
    for page in pages:
        found += [(v["Key"], v["VersionId"], v["Size"], v.get("StorageClass")) for v in page.get("Versions", [])]
        found += [(m["Key"], m["VersionId"], "marker", None) for m in page.get("DeleteMarkers", [])]
    return sorted(found)


def take_backup(sandbox, target, prefix):
    request = logical_backup.BackupRequest(
        "production", sandbox["production"]["dsn"], target, prefix=prefix, window="every_run"
    )
    result = logical_backup.run(request)
    assert result["changed"] is True
    time.sleep(1.05 - time.time() % 1)  # ids have a resolution of one second: the next backup gets its own
    return result["backup_id"], result["manifest"]


def secure(primary, secondary, prefix, **kwargs):
    kwargs.setdefault("lock_days", 1)
    kwargs.setdefault("mode", "GOVERNANCE")
    return immutable.secure(primary, secondary, prefix, "production", **kwargs)


def flip_byte(target, key):
    data = bytearray(target.client.get_object(Bucket=target.bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    target.client.put_object(Bucket=target.bucket, Key=key, Body=bytes(data))


# --------------------------------------------------------------------------------------------- the bucket


def test_sandbox_immutable_bucket_has_versioning_and_lock(sandbox):
    state = immutable.bucket_state(make_target(s3_params(sandbox, bucket="immutable")))
    assert state["exists"] is True
    assert state["versioning"] == "Enabled"
    assert state["object_lock"] is True
    assert state["default_retention"] == {"mode": "GOVERNANCE", "days": sandbox["s3"]["lock_days"]}
    assert state["sse"] in (None, "unsupported") or isinstance(state["sse"], dict)


def test_bucket_without_object_lock_is_drift_and_left_alone(sandbox):
    target = make_target(s3_params(sandbox))
    before = immutable.bucket_state(target)
    with pytest.raises(DRError) as caught:
        immutable.ensure_bucket(target, mode="GOVERNANCE", days=1)
    message = str(caught.value)
    assert f"s3://{target.bucket}/" in message
    assert "Object Lock is not enabled" in message
    assert "create a new bucket with Object Lock" in message
    assert immutable.bucket_state(target) == before


def test_ensure_bucket_creates_checks_and_extends_a_new_bucket(sandbox):
    params = s3_params(sandbox, bucket="immutable")
    params["bucket"] = f"pgdr-test-{uuid.uuid4().hex[:10]}"
    target = make_target(params)
    try:
        planned = immutable.ensure_bucket(target, mode="GOVERNANCE", days=1, check_mode=True)
        assert planned["changed"] is True
        assert [s["action"] for s in planned["steps"]] == ["create_bucket", "set_default_retention"]
        assert immutable.bucket_state(target)["exists"] is False
        made = immutable.ensure_bucket(target, mode="GOVERNANCE", days=1)
        assert made["changed"] is True
        assert made["after"]["object_lock"] is True
        assert made["after"]["versioning"] == "Enabled"
        assert made["after"]["default_retention"] == {"mode": "GOVERNANCE", "days": 1}
        assert immutable.ensure_bucket(target, mode="GOVERNANCE", days=1)["changed"] is False
        # A longer policy is drift until extending is allowed; extending never shortens.
        with pytest.raises(DRError, match="weaker than the policy"):
            immutable.ensure_bucket(target, mode="GOVERNANCE", days=2)
        extended = immutable.ensure_bucket(target, mode="GOVERNANCE", days=2, extend=True)
        assert extended["after"]["default_retention"] == {"mode": "GOVERNANCE", "days": 2}
        assert immutable.ensure_bucket(target, mode="GOVERNANCE", days=1, extend=True)["changed"] is False
        assert immutable.bucket_state(target)["default_retention"]["days"] == 2
    finally:
        with contextlib.suppress(ClientError):
            target.client.delete_bucket(Bucket=target.bucket)


def test_missing_bucket_without_create_is_named(sandbox):
    params = s3_params(sandbox, bucket="immutable")
    params["bucket"] = f"pgdr-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(DRError, match="does not exist") as caught:
        immutable.ensure_bucket(make_target(params), mode="GOVERNANCE", days=1, create=False)
    assert params["bucket"] in str(caught.value)


# --------------------------------------------------------------------------------------------- securing


def test_secure_backup_copies_locks_verifies_and_is_idempotent(sandbox, primary, secondary, prefix):
    backup_id, manifest = take_backup(sandbox, primary, prefix)
    folder = catalog.backup_prefix(prefix, "production", backup_id)

    planned = secure(primary, secondary, prefix, check_mode=True)
    assert planned["changed"] is True
    assert planned["backups"][0]["status"] == "would_secure"
    assert versions(secondary, folder) == []
    assert primary.get_json(folder + immutable.RECORD_NAME) is None

    done = secure(primary, secondary, prefix)
    row = done["backups"][0]
    assert done["changed"] is True
    assert row["status"] == "secured"
    assert row["method"] == "server"
    names = [o["name"] for o in row["objects"]]
    assert names == [o["name"] for o in manifest["objects"]] + ["manifest"]
    retain_until = immutable.retain_until_for(backup_id, 1)
    for obj in row["objects"]:
        head = secondary.client.head_object(Bucket=secondary.bucket, Key=obj["key"], VersionId=obj["version_id"])
        assert head["ObjectLockMode"] == "GOVERNANCE"
        assert head["ObjectLockRetainUntilDate"] >= retain_until - dt.timedelta(seconds=1)
        assert obj["verified"] is True
    # The copy is a complete backup in its own right: its manifest reads back and every object verifies.
    copied_manifest = selection.load_manifest(secondary, prefix, "production", backup_id)
    assert copied_manifest == manifest
    assert all(r["ok"] for r in selection.verify_objects(secondary, copied_manifest))
    record = primary.get_json(folder + immutable.RECORD_NAME)
    assert record["status"] == "secured"
    assert record["secondary"]["bucket"] == secondary.bucket
    assert record["verified_at"]

    before = versions(secondary, folder)
    again = secure(primary, secondary, prefix)
    assert again["changed"] is False
    assert again["backups"][0]["status"] == "secured"
    assert secure(primary, secondary, prefix, check_mode=True)["changed"] is False
    assert versions(secondary, folder) == before
    # A stricter lock than recorded is a reason to secure again.
    reason, _ = immutable.check_secured(primary, secondary, manifest, catalog.manifest_key(prefix, "production",
                                        backup_id), "COMPLIANCE", retain_until)  # fmt: skip
    assert reason is not None


def test_locked_copy_cannot_be_deleted_or_shortened_by_version(sandbox, primary, secondary, admin_secondary, prefix):
    take_backup(sandbox, primary, prefix)
    row = secure(primary, secondary, prefix)["backups"][0]
    data = next(o for o in row["objects"] if o["name"].startswith("data"))
    client = secondary.client
    with pytest.raises(ClientError) as caught:
        client.delete_object(Bucket=secondary.bucket, Key=data["key"], VersionId=data["version_id"])
    assert caught.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError):
        client.put_object_retention(
            Bucket=secondary.bucket,
            Key=data["key"],
            VersionId=data["version_id"],
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)},
        )
    # The writer cannot even place a delete marker there (the bucket policy), but it can put a newer version:
    # that leaves the locked one intact and readable by its id, and the next secure copy calls it tampering.
    with pytest.raises(ClientError):
        client.delete_object(Bucket=secondary.bucket, Key=data["key"])
    client.put_object(Bucket=secondary.bucket, Key=data["key"], Body=b"ransom note")
    immutable.verify_version(secondary, data, data["version_id"])
    again = secure(primary, secondary, prefix)
    assert again["changed"] is False
    assert again["tampered"] == [row["backup_id"]]
    [finding] = again["backups"][0]["findings"]
    assert finding["kind"] == "newer_version" and finding["key"] == data["key"]
    # An identity that may delete (here the admin) only adds a delete marker without a version id.
    admin_secondary.client.delete_object(Bucket=secondary.bucket, Key=data["key"])
    immutable.verify_version(secondary, data, data["version_id"])
    kinds = {f["kind"] for f in secure(primary, secondary, prefix)["backups"][0]["findings"]}
    assert kinds == {"delete_marker"}


def test_stream_copy_of_a_corrupted_primary_object_is_refused_and_recorded(sandbox, primary, secondary, prefix):
    backup_id, manifest = take_backup(sandbox, primary, prefix)
    data = next(o for o in manifest["objects"] if o["name"].startswith("data"))
    flip_byte(primary, data["key"])
    with pytest.raises(DRError) as caught:
        secure(primary, secondary, prefix, method="stream")
    message = str(caught.value)
    assert f"backup {backup_id} is not secured" in message
    assert "object data-0001 is corrupted" in message
    assert data["key"] in message
    record = primary.get_json(catalog.backup_prefix(prefix, "production", backup_id) + immutable.RECORD_NAME)
    assert record["status"] == "not_secured"
    assert "object data-0001 is corrupted" in record["error"]
    # The corrupted data never reached the locked bucket.
    assert list(versions(secondary, data["key"])) == []
    # The next run tries again (the record is not taken for a secured copy).
    with pytest.raises(DRError, match="not secured"):
        secure(primary, secondary, prefix, method="stream")


def test_server_copy_that_fails_verification_is_named_and_recorded(sandbox, primary, secondary, prefix):
    backup_id, manifest = take_backup(sandbox, primary, prefix)
    schema = next(o for o in manifest["objects"] if o["name"] == "schema")
    flip_byte(primary, schema["key"])
    with pytest.raises(DRError) as caught:
        secure(primary, secondary, prefix, method="server")
    assert "[verify copy of schema]" in str(caught.value)
    assert "object schema is corrupted" in str(caught.value)
    record = primary.get_json(catalog.backup_prefix(prefix, "production", backup_id) + immutable.RECORD_NAME)
    assert record["status"] == "not_secured"
    assert [o["verified"] for o in record["objects"] if o["name"] == "schema"] == [False]
    planned = secure(primary, secondary, prefix, check_mode=True)["backups"][0]
    assert planned["status"] == "would_secure"
    assert "did not secure it" in planned["reason"]


def test_stream_and_multipart_server_copy_paths_verify(sandbox, primary, secondary, prefix, monkeypatch):
    first, _ = take_backup(sandbox, primary, prefix)
    streamed = secure(primary, secondary, prefix, selector=first, method="stream")["backups"][0]
    assert streamed["method"] == "stream"
    assert all(o["verified"] and o["lock_mode"] == "GOVERNANCE" for o in streamed["objects"])
    # Above the CopyObject limit the copy goes part by part (UploadPartCopy); force that path on small objects.
    monkeypatch.setattr(s3, "MULTIPART_COPY_THRESHOLD", 0)
    second, _ = take_backup(sandbox, primary, prefix)
    copied = secure(primary, secondary, prefix, selector=second, method="server")["backups"][0]
    assert copied["method"] == "server"
    assert copied["changed"] is True
    assert all(o["verified"] and o["lock_mode"] == "GOVERNANCE" for o in copied["objects"])
    # Re-verification reads every recorded copy back and copies nothing.
    before = versions(secondary, f"{prefix}/")
    again = secure(primary, secondary, prefix, selector=second, reverify=True)["backups"][0]
    assert again["changed"] is False and again["status"] == "secured"
    assert "re-read and verified" in again["reason"]
    assert versions(secondary, f"{prefix}/") == before


def test_pending_secures_every_unsecured_backup_and_skips_old_ones(sandbox, primary, secondary, prefix):
    first, _ = take_backup(sandbox, primary, prefix)
    second, _ = take_backup(sandbox, primary, prefix)
    assert first != second
    result = secure(primary, secondary, prefix, selector="pending")
    assert sorted(r["backup_id"] for r in result["backups"] if r["status"] == "secured") == sorted([first, second])
    assert secure(primary, secondary, prefix, selector="pending")["changed"] is False
    later = secure(primary, secondary, prefix, selector="pending", now=dt.datetime.now(dt.UTC) + 2 * DAY)
    assert {r["status"] for r in later["backups"]} == {"skipped"}
    with pytest.raises(DRError, match="older than the lock period"):
        secure(primary, secondary, prefix, now=dt.datetime.now(dt.UTC) + 2 * DAY)


# --------------------------------------------------------------------------------------------- retention


def make_incomplete(target, prefix, moment):
    backup_id = moment.strftime(timefmt.COMPACT_FORMAT)
    target.put_bytes(catalog.backup_prefix(prefix, "production", backup_id) + "data.pgdump.zst", b"partial")
    return backup_id


def test_retention_expires_old_backups_and_keeps_the_newest(sandbox, primary, prefix):
    older, _ = take_backup(sandbox, primary, prefix)
    newer, _ = take_backup(sandbox, primary, prefix)
    stale = make_incomplete(primary, prefix, dt.datetime.now(dt.UTC) - 2 * DAY)
    now = dt.datetime.now(dt.UTC) + 70 * DAY
    before = sorted(primary.list_keys(f"{prefix}/"))
    planned = retention.run(primary, prefix, "production", now=now, lifecycle="off", check_mode=True)
    actions = {d["backup_id"]: d["action"] for d in planned["decisions"]}
    assert actions == {newer: "keep", older: "expire", stale: "expire"}
    assert planned["changed"] is True
    assert sorted(primary.list_keys(f"{prefix}/")) == before

    done = retention.run(primary, prefix, "production", now=now, lifecycle="off")
    assert sorted(e["backup_id"] for e in done["expired"]) == sorted([older, stale])
    left = catalog.list_backups(primary, prefix, "production")
    assert [(r["backup_id"], r["complete"]) for r in left] == [(newer, True)]
    again = retention.run(primary, prefix, "production", now=now, lifecycle="off")
    assert again["changed"] is False


def test_retention_moves_to_cold_storage_where_lifecycle_is_not_supported(sandbox, primary, prefix):
    backup_id, _ = take_backup(sandbox, primary, prefix)
    now = dt.datetime.now(dt.UTC) + 20 * DAY
    result = retention.run(primary, prefix, "production", now=now, cold_storage_class="STANDARD_IA")
    assert result["lifecycle"]["status"] == "unsupported"
    assert "NotImplemented" in result["lifecycle"]["detail"]
    assert [m["backup_id"] for m in result["moved"]] == [backup_id]
    folder = catalog.backup_prefix(prefix, "production", backup_id)
    listed = primary.client.list_objects_v2(Bucket=primary.bucket, Prefix=folder)["Contents"]
    assert {o.get("StorageClass") for o in listed} == {"STANDARD_IA"}
    # Moved objects still match the manifest, and a second run changes nothing.
    assert all(r["ok"] for r in selection.verify_objects(primary, selection.load_manifest(primary, prefix,
               "production", backup_id)))  # fmt: skip
    assert retention.run(primary, prefix, "production", now=now, cold_storage_class="STANDARD_IA")["changed"] is False


def test_retention_never_attempts_a_locked_copy(sandbox, primary, secondary, prefix):
    older, _ = take_backup(sandbox, primary, prefix)
    newer, _ = take_backup(sandbox, primary, prefix)
    secure(primary, secondary, prefix, selector="pending", lock_days=3)
    now = dt.datetime.now(dt.UTC) + 1.5 * DAY  # older than expire_days, but the copies are locked 3 days
    deletes = []
    original = secondary.client.delete_object
    secondary.client.delete_object = lambda **kw: deletes.append(kw) or original(**kw)
    result = retention.run(secondary, prefix, "production", now=now, hot_days=0, expire_days=1, lifecycle="off")
    decisions = {d["backup_id"]: d for d in result["decisions"]}
    assert decisions[newer]["action"] == "keep"
    assert decisions[older]["action"] == "keep"
    assert "locked until" in decisions[older]["reason"]
    assert deletes == []
    assert result["changed"] is False
    folder = catalog.backup_prefix(prefix, "production", older)
    assert any(v[0] == folder + catalog.MANIFEST_NAME for v in versions(secondary, folder))


# --------------------------------------------------------------------------------------------- playbooks


def snapshot(primary, secondary, prefix):
    return versions(primary, f"{prefix}/"), versions(secondary, f"{prefix}/")


def test_playbooks_check_mode_changes_nothing_then_run_and_settle(sandbox, primary, secondary, prefix, run_playbook):
    backup_id, _ = take_backup(sandbox, primary, prefix)
    extravars = {"pgdr_backup_prefix": prefix}
    before = snapshot(primary, secondary, prefix)

    checked = run_playbook("playbooks/secure_copy.yml", extravars, check=True, diff=True)
    assert checked.rc == 0, checked.stdout
    planned = checked.results("pgdr.supabase.secure_backup")[0]
    assert planned["backups"][0]["status"] == "would_secure"
    assert snapshot(primary, secondary, prefix) == before

    aged = {**extravars, "retention_now": (dt.datetime.now(dt.UTC) + 70 * DAY).isoformat()}
    checked = run_playbook("playbooks/retention.yml", aged, check=True)
    assert checked.rc == 0, checked.stdout
    assert "keep" in checked.stdout
    assert snapshot(primary, secondary, prefix) == before

    done = run_playbook("playbooks/secure_copy.yml", extravars)
    assert done.rc == 0, done.stdout
    assert done.results("pgdr.supabase.secure_backup")[0]["backups"][0]["status"] == "secured"
    assert any(v[0].endswith(f"{backup_id}/manifest.json") for v in versions(secondary, f"{prefix}/"))
    again = run_playbook("playbooks/secure_copy.yml", extravars)
    assert again.rc == 0, again.stdout
    assert again.changed() == 0, again.stdout

    kept = run_playbook("playbooks/retention.yml", extravars)
    assert kept.rc == 0, kept.stdout
    assert kept.changed() == 0, kept.stdout

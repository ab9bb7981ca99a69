"""Issue 18, items 1-3 and 10: the immutable copy tried as someone holding the backup host's credentials would.

The runbooks run as the sandbox's backup writer. What the writer cannot do (delete a locked version, bypass
governance, place a delete marker) is proved here; what it can (put a newer version on top of a locked key, a
forged secure-copy record) and what an identity allowed to delete can (a delete marker) is done to the copy, and the
runbooks must call it tampering, loudly, while a restore from the locked bucket reads the recorded versions. The
admin identity is used only to play that stronger identity and to clean up."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import time
import uuid

import psycopg
import pytest
from alert_receiver import Receiver
from backup_helpers import drop_database, dsn_for, signing_key
from botocore.exceptions import ClientError
from conftest import s3_params, sandbox_secrets
from test_immutable import purge_versions

from ansible_collections.pgdr.supabase.plugins.module_utils import (
    catalog,
    freshness,
    immutable,
    logical_backup,
    retention,
    selection,
)
from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import s3_target as make_target
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import b64_sha256

pytestmark = pytest.mark.integration

HOOK = "/hook/immutable-attacks"
DAY = dt.timedelta(days=1)


@pytest.fixture
def rx():
    with Receiver() as receiver:
        yield receiver


@pytest.fixture
def admin_secondary(sandbox):
    return make_target(s3_params(sandbox, bucket="immutable"))


@pytest.fixture
def writer(sandbox, prefix, s3_target, admin_secondary):
    """The primary and the locked bucket as the backup writer; everything under the test's prefix goes afterwards."""
    primary = make_target(s3_params(sandbox, identity="writer"))
    secondary = make_target(s3_params(sandbox, bucket="immutable", identity="writer"))
    yield primary, secondary
    s3_target.delete_keys([key for key, _ in s3_target.list_keys(f"{prefix}/")])
    purge_versions(admin_secondary, f"{prefix}/")


def take_backup(sandbox, target, prefix, now=None):
    """A signed backup; its id is its moment to the second (now unless given), so two taken within one second are
    one backup."""
    request = logical_backup.BackupRequest(
        "production",
        sandbox["production"]["dsn"],
        target,
        prefix=prefix,
        window="every_run",
        signing_key=signing_key(sandbox),  # restores check the signature, from the locked bucket too
        now=now,
    )
    result = logical_backup.run(request)
    return result["backup_id"], result["manifest"]


def hook_texts(rx):
    return [json.loads(body)["text"] for body in rx.bodies(HOOK)]


def webhook(rx):
    return [{"type": "webhook", "name": "chat", "url": rx.url(HOOK)}]


def assert_no_secrets(run, state):
    for secret in sandbox_secrets(state):
        assert secret not in run.stdout


# --------------------------------------------------------------------------------------------- item 2


def test_the_backup_writer_cannot_destroy_a_locked_version(sandbox, writer, admin_secondary, prefix):
    primary, secondary = writer
    take_backup(sandbox, primary, prefix)
    row = immutable.secure(primary, secondary, prefix, "production", lock_days=1, mode="GOVERNANCE")["backups"][0]
    data = next(o for o in row["objects"] if o["name"].startswith("data"))
    c, bucket, key, version = secondary.client, secondary.bucket, data["key"], data["version_id"]
    sooner = {"Mode": "GOVERNANCE", "RetainUntilDate": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)}
    attempts = {
        "delete the version": lambda: c.delete_object(Bucket=bucket, Key=key, VersionId=version),
        "delete it bypassing governance": lambda: c.delete_object(
            Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True
        ),
        "shorten its lock": lambda: c.put_object_retention(Bucket=bucket, Key=key, VersionId=version, Retention=sooner),
        "shorten it bypassing governance": lambda: c.put_object_retention(
            Bucket=bucket, Key=key, VersionId=version, Retention=sooner, BypassGovernanceRetention=True
        ),
        "hide it under a delete marker": lambda: c.delete_object(Bucket=bucket, Key=key),
        "remove the bucket's default retention": lambda: c.put_object_lock_configuration(
            Bucket=bucket, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"}
        ),
        "expire it by a lifecycle rule": lambda: c.put_bucket_lifecycle_configuration(
            Bucket=bucket,
            LifecycleConfiguration={
                "Rules": [{"ID": "x", "Filter": {"Prefix": ""}, "Status": "Enabled", "Expiration": {"Days": 1}}]
            },
        ),
        "suspend versioning": lambda: c.put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": "Suspended"}
        ),
        "drop the bucket policy": lambda: c.delete_bucket_policy(Bucket=bucket),
    }
    for what, attempt in attempts.items():
        with pytest.raises(ClientError) as refused:
            attempt()
        assert refused.value.response["Error"]["Code"] in ("AccessDenied", "InvalidBucketState"), what
    batch = c.delete_objects(
        Bucket=bucket, BypassGovernanceRetention=True, Delete={"Objects": [{"Key": key, "VersionId": version}]}
    )
    assert [e["Code"] for e in batch.get("Errors", [])] == ["AccessDenied"]
    # After all of that the locked version is there, intact, locked as recorded, and nothing sits on top of it.
    immutable.verify_version(secondary, data, version)
    assert immutable.inspect_copies(secondary, row["objects"]) == []
    # The lock is GOVERNANCE: an identity allowed to bypass it (the admin, for cleanup) can; the writer cannot.
    throwaway = f"{prefix}/throwaway"
    made = admin_secondary.client.put_object(
        Bucket=bucket,
        Key=throwaway,
        Body=b"x",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=dt.datetime.now(dt.UTC) + DAY,
    )
    admin_secondary.client.delete_object(
        Bucket=bucket, Key=throwaway, VersionId=made["VersionId"], BypassGovernanceRetention=True
    )


# --------------------------------------------------------------------------------------------- item 1


def test_tampering_is_loud_and_a_restore_from_the_locked_bucket_reads_the_recorded_versions(
    run_playbook, sandbox, writer, admin_secondary, prefix, rx, tmp_path
):
    primary, secondary = writer
    backup_id, manifest = take_backup(sandbox, primary, prefix)
    common = {"pgdr_backup_prefix": prefix, "pgdr_alert_sinks": webhook(rx), "backup": backup_id}
    first = run_playbook("playbooks/secure_copy.yml", common)
    assert first.rc == 0, first.stdout
    assert hook_texts(rx) == []  # a clean secure copy alerts nobody

    folder = catalog.backup_prefix(prefix, "production", backup_id)
    record = primary.get_json(folder + immutable.RECORD_NAME)
    data = next(o for o in record["objects"] if o["name"].startswith("data"))
    # The backup keys put a newer version on top of the locked data; an identity that may delete hides the manifest
    # and the schema under delete markers; the backup keys put a forged secure-copy record on top of the locked one.
    ransom = b"ransom note"
    bad = secondary.client.put_object(Bucket=secondary.bucket, Key=data["key"], Body=ransom)["VersionId"]
    for name in ("manifest", "schema"):
        key = next(o["key"] for o in record["objects"] if o["name"] == name)
        admin_secondary.client.delete_object(Bucket=secondary.bucket, Key=key)
    forged = copy.deepcopy(record)
    for obj in forged["objects"]:
        if obj["name"].startswith("data"):
            obj.update(version_id=bad, size=len(ransom), sha256=hashlib.sha256(ransom).hexdigest())
    body = json.dumps(forged).encode()
    secondary.client.put_object(
        Bucket=secondary.bucket, Key=folder + immutable.RECORD_NAME, Body=body, ChecksumSHA256=b64_sha256(body)
    )
    # What the issue saw: read as current objects, the copy is no longer restorable.
    with pytest.raises(DRError):
        selection.verify_objects(secondary, manifest)

    again = run_playbook("playbooks/secure_copy.yml", common)
    assert again.rc != 0
    assert "TAMPERING in the immutable bucket" in again.stdout
    [alert] = hook_texts(rx)
    assert alert.startswith("pgdr secure copy of production (local) FAILED: ")
    for said in (
        "a newer version",
        "hides the locked version of manifest",
        "hides the locked version of schema",
        "newer version(s) of the secure-copy record",
    ):
        assert said in alert, said

    watched = run_playbook(
        "playbooks/monitor.yml",
        {"pgdr_backup_prefix": prefix, "pgdr_monitor_secondary": True, "pgdr_monitor_sinks": webhook(rx)},
    )
    assert watched.rc != 0
    assert "secondary: STALE" in watched.stdout and "TAMPERING" in watched.stdout
    assert "STALE" in hook_texts(rx)[-1] and "TAMPERING" in hook_texts(rx)[-1]

    listed = run_playbook("playbooks/list_backups.yml", {"pgdr_backup_prefix": prefix, "from_secondary": True})
    assert listed.rc == 0, listed.stdout
    assert f"{backup_id}  production  verified" in listed.stdout

    database = f"locked_{uuid.uuid4().hex[:10]}"
    try:
        restore_vars = {
            "pgdr_backup_prefix": prefix,
            "from_secondary": True,
            "backup": backup_id,
            "reason": "restore from the locked copy after tampering",
            "pgdr_restore_database": database,
            "pgdr_restore_mode": "new_database",  # the copy is read back from its own database
            "pgdr_restore_skip_extensions": ["pg_cron"],
            "pgdr_incidents_path": str(tmp_path / "ops" / "incidents.md"),
            "pgdr_events_path": str(tmp_path / "ops" / "events.jsonl"),
            "pgdr_reports_dir": str(tmp_path / "reports"),
        }
        restored = run_playbook("restore.yml", restore_vars)
        assert restored.rc == 0, restored.stdout[-4000:]
        assert "read from the locked copy" in restored.stdout
        [chosen] = restored.results("pgdr.supabase.backup_select")
        assert chosen["trusted"].startswith("the secure-copy record in the locked bucket")
        assert {o["name"]: o["version_id"] for o in chosen["manifest"]["objects"]} == {
            o["name"]: o["version_id"] for o in record["objects"] if o["name"] != "manifest"
        }
        with psycopg.connect(dsn_for(sandbox, "staging", database)) as conn:
            assert (
                conn.execute("select count(*) from public.events").fetchone()[0] == manifest["tables"]["public.events"]
            )
    finally:
        drop_database(sandbox, database)
    for run in (first, again, watched, listed, restored):
        assert_no_secrets(run, sandbox)


# --------------------------------------------------------------------------------------------- item 3


@pytest.fixture
def own_locked_bucket(sandbox):
    """An Object Lock bucket of the test's own (made by the admin, with the sandbox's policy for the writer), so
    that taking its default retention away does not disturb other tests."""
    import sandboxlib.s3 as sandbox_s3

    name = f"pgdr-locked-{uuid.uuid4().hex[:8]}"
    admin = make_target(dict(s3_params(sandbox, bucket="immutable"), bucket=name))
    admin.client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    admin.client.put_object_lock_configuration(
        Bucket=name,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
        },
    )
    state = copy.deepcopy(sandbox)
    state["s3"]["buckets"]["immutable"] = name
    admin.client.put_bucket_policy(Bucket=name, Policy=json.dumps(sandbox_s3.locked_bucket_policy(state)))
    yield admin
    purge_versions(admin, "")
    admin.client.delete_bucket_policy(Bucket=name)
    admin.client.delete_bucket(Bucket=name)


def test_a_removed_default_retention_is_drift_in_the_report_and_the_alert(
    run_playbook, sandbox, writer, own_locked_bucket, prefix, rx
):
    primary, _ = writer
    backup_id, _ = take_backup(sandbox, primary, prefix)
    bucket = own_locked_bucket.bucket
    own_locked_bucket.client.put_object_lock_configuration(
        Bucket=bucket, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"}
    )
    as_writer = dict(s3_params(sandbox, identity="writer"), bucket=bucket)
    as_admin = dict(s3_params(sandbox, bucket="immutable"), bucket=bucket)
    common = {
        "pgdr_backup_prefix": prefix,
        "pgdr_alert_sinks": webhook(rx),
        "backup": backup_id,
        "pgdr_secondary_bucket_retention_days": 1,
    }

    # The backup writer may not restore it: the drift is reported as not restored, for the bucket's admin.
    found = run_playbook("playbooks/secure_copy.yml", {**common, "pgdr_secondary_s3": as_writer})
    assert found.rc == 0, found.stdout
    assert f"DRIFT on s3://{bucket}/: the bucket has no default retention" in found.stdout
    assert "not restored: this identity may not change the bucket" in found.stdout
    [alert] = hook_texts(rx)
    assert alert.startswith("pgdr secure copy of production (local) succeeded with 1 warning")
    assert "DRIFT" in alert and "no default retention" in alert
    assert immutable.bucket_state(own_locked_bucket)["default_retention"] is None

    # An identity allowed to restores it, and says so.
    restored = run_playbook("playbooks/secure_copy.yml", {**common, "pgdr_secondary_s3": as_admin})
    assert restored.rc == 0, restored.stdout
    assert "no default retention" in restored.stdout and "restored (set_default_retention" in restored.stdout
    assert "restored (set_default_retention" in hook_texts(rx)[-1]
    assert immutable.bucket_state(own_locked_bucket)["default_retention"] == {"mode": "GOVERNANCE", "days": 1}

    # Nothing left to say: no drift, no alert, nothing changed.
    quiet = run_playbook("playbooks/secure_copy.yml", {**common, "pgdr_secondary_s3": as_writer})
    assert quiet.rc == 0 and quiet.changed() == 0, quiet.stdout
    assert "DRIFT" not in quiet.stdout and len(hook_texts(rx)) == 2


# --------------------------------------------------------------------------------------------- items 10 (and 9.10)


def test_a_deletion_refused_by_object_lock_says_locked_until_its_date(sandbox, writer, admin_secondary, prefix):
    primary, secondary = writer
    # Two backups an hour apart (taken within one second they would be one backup, the newest, never expired).
    older, _ = take_backup(sandbox, primary, prefix, now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    take_backup(sandbox, primary, prefix)
    immutable.secure(primary, secondary, prefix, "production", selector="pending", lock_days=1, mode="GOVERNANCE")
    # Judged 70 days ahead the copies' locks are over, so retention plans to expire the older backup; the endpoint,
    # whose clock says today, refuses: that must read as the lock it is, not as a missing permission.
    later = dt.datetime.now(dt.UTC) + 70 * DAY
    for target in (secondary, admin_secondary):
        result = retention.run(target, prefix, "production", now=later, lifecycle="off", sets=("logical",))
        assert [e["backup_id"] for e in result["expired"]] == []
        [skipped] = [s for s in result["skipped"] if s["backup_id"] == older]
        assert "Object Lock refused the deletion: the object is locked until" in skipped["reason"]
        assert "may not delete" not in skipped["reason"] and "s3:Delete" not in skipped["reason"]
    assert selection.load_manifest(secondary, prefix, "production", older)  # nothing of it was lost
    # A refusal that is not a lock names the permission: the writer may not delete even an unlocked version there.
    key = f"{prefix}/unlocked"
    made = admin_secondary.client.put_object(
        Bucket=secondary.bucket,
        Key=key,
        Body=b"x",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2),
    )
    time.sleep(3)
    with pytest.raises(DRError) as refused:
        retention.delete_item(secondary, key, made["VersionId"])
    assert "may not delete this object (AccessDenied; it is not locked)" in str(refused.value)
    assert "s3:DeleteObjectVersion" in refused.value.hint and "never s3:BypassGovernanceRetention" in refused.value.hint


def test_the_monitor_finds_tampering_with_an_older_copy_too(sandbox, writer, prefix):
    primary, secondary = writer
    older, _ = take_backup(sandbox, primary, prefix)
    time.sleep(1.05 - time.time() % 1)
    newer, _ = take_backup(sandbox, primary, prefix)
    immutable.secure(primary, secondary, prefix, "production", selector="pending", lock_days=1, mode="GOVERNANCE")
    assert freshness.check_secondary(primary, prefix, "production", secondary=secondary)["ok"] is True
    record = primary.get_json(catalog.backup_prefix(prefix, "production", older) + immutable.RECORD_NAME)
    data = next(o for o in record["objects"] if o["name"].startswith("data"))
    secondary.client.put_object(Bucket=secondary.bucket, Key=data["key"], Body=b"overwritten")
    check = freshness.check_secondary(primary, prefix, "production", secondary=secondary)
    assert check["ok"] is False and check["backup_id"] == newer
    assert [(f["backup_id"], f["kind"]) for f in check["tampering"]] == [(older, "newer_version")]
    assert "TAMPERING" in check["details"] and data["key"] in check["details"]

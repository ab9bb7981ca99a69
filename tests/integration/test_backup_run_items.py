"""The backup run as a whole against the sandbox: issue 18 items 4, 9 and 10, issue 9 items 2 and 8.

- the Storage runs and the config snapshots are secured in the locked bucket with the database backup, a Storage
  restore can read them from there, and retention expires them like backups;
- the success alert carries the run's warnings (Storage files missing from the backup, config drift by name only);
  a Storage failure after the database backup committed says the backup exists and which step failed;
- the monitor refuses a freshness_now earlier than the newest backup;
- a backup whose objects are gone is listed DAMAGED, alerts, and never counts toward keep_min;
- retention never touches a backup that is still running, and ages an incomplete folder by its newest write;
- a backup does not commit when its own objects are gone (the check the backup calls before its manifest)."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from pathlib import Path

import pytest
from alert_receiver import Receiver
from conftest import s3_params, sandbox_secrets
from test_immutable import purge_versions

from ansible_collections.pgdr.supabase.plugins.module_utils import (
    catalog,
    config_snapshot,
    immutable,
    logical_backup,
    pg,
    retention,
    timefmt,
)
from ansible_collections.pgdr.supabase.plugins.module_utils import storage_assets as sa
from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import s3_target as make_target
from ansible_collections.pgdr.supabase.plugins.module_utils.envstore_dotenv import parse_dotenv
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.lock import SourceLock

pytestmark = pytest.mark.integration

HOOK = "/hook/backup-run"
DAY = dt.timedelta(days=1)


@pytest.fixture
def rx():
    with Receiver() as receiver:
        yield receiver


@pytest.fixture
def writer(sandbox, prefix, s3_target):
    primary = make_target(s3_params(sandbox, identity="writer"))
    secondary = make_target(s3_params(sandbox, bucket="immutable", identity="writer"))
    yield primary, secondary
    s3_target.delete_keys([key for key, _ in s3_target.list_keys(f"{prefix}/")])
    purge_versions(make_target(s3_params(sandbox, bucket="immutable")), f"{prefix}/")


@pytest.fixture
def storage_bucket(sandbox):
    """A Storage bucket of the test's own, with two files and their storage.objects rows."""
    target = sa.storage_target(s3_params(sandbox, identity="project_storage"))
    name = f"app-storage-t{uuid.uuid4().hex[:8]}"
    target.client.create_bucket(Bucket=name)
    for key in ("a.txt", "b.txt"):
        target.client.put_object(Bucket=name, Key=key, Body=key.encode())
    with pg.connect(sandbox["production"]["dsn"]) as conn:
        conn.execute("INSERT INTO storage.buckets (id, name) VALUES (%s, %s)", (name, name))
        for key in ("a.txt", "b.txt"):
            conn.execute("INSERT INTO storage.objects (bucket_id, name) VALUES (%s, %s)", (name, key))
    made = [name]
    yield target, name, made
    with pg.connect(sandbox["production"]["dsn"]) as conn:
        conn.execute("DELETE FROM storage.objects WHERE bucket_id = %s", (name,))
        conn.execute("DELETE FROM storage.buckets WHERE id = %s", (name,))
    for bucket in made:
        for page in target.client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                target.client.delete_object(Bucket=bucket, Key=obj["Key"])
        target.client.delete_bucket(Bucket=bucket)


@pytest.fixture
def env_store(sandbox, tmp_path):
    path = tmp_path / "production.env"
    path.write_text(Path(sandbox["env_files"]["production"]).read_text())
    return path


def run_vars(prefix, rx, storage_bucket, env_store, **extra):
    return {
        "pgdr_backup_prefix": prefix,
        "pgdr_alert_sinks": [{"type": "webhook", "name": "chat", "url": rx.url(HOOK), "on": ["failed", "warning"]}],
        "pgdr_storage_buckets": [storage_bucket],
        "pgdr_config_snapshot_stores": [{"label": "production", "store": {"type": "dotenv", "path": str(env_store)}}],
        **extra,
    }


def hook_texts(rx):
    return [json.loads(body)["text"] for body in rx.bodies(HOOK)]


def assert_no_secrets(run, state, *more):
    for secret in [*sandbox_secrets(state), *more]:
        assert secret not in run.stdout


# --------------------------------------------------------------------------------------------- item 4


def test_storage_and_config_are_secured_with_the_backup_and_restore_from_the_locked_copy(
    run_playbook, sandbox, writer, prefix, rx, storage_bucket, env_store
):
    primary, secondary = writer
    target, bucket, made = storage_bucket
    extra = run_vars(prefix, rx, bucket, env_store)
    first = run_playbook("playbooks/backup.yml", extra)
    assert first.rc == 0, first.stdout[-4000:]
    [secured] = first.results("pgdr.supabase.secure_backup")
    kinds = {row["kind"]: row for row in secured["backups"]}
    assert set(kinds) == {"backup", "storage run", "config snapshot"}
    assert all(row["status"] == "secured" for row in secured["backups"])
    sprefix = sa.storage_prefix(prefix, "production")
    run_id = kinds["storage run"]["backup_id"]
    manifest = sa.load_manifest(primary, sprefix, run_id)
    blobs = {o["stored_key"] for o in manifest["objects"]}
    for obj in kinds["storage run"]["objects"]:
        head = secondary.client.head_object(Bucket=secondary.bucket, Key=obj["key"], VersionId=obj["version_id"])
        assert head["ObjectLockMode"] == "GOVERNANCE", obj["key"]
    assert blobs | {sa.manifest_key(sprefix, run_id)} == {o["key"] for o in kinds["storage run"]["objects"]}
    snapshot = kinds["config snapshot"]["objects"][0]
    assert snapshot["key"] == config_snapshot.snapshot_key(prefix, "production", kinds["config snapshot"]["backup_id"])

    again = run_playbook("playbooks/backup.yml", extra)
    assert again.rc == 0, again.stdout[-4000:]
    assert again.changed() == 0, again.stdout[-4000:]

    # The primary's Storage copies are gone (the day the primary is destroyed): the locked copy restores alone.
    primary.delete_keys(sorted(blobs), step="destroy the primary's copies")
    staging = f"{bucket}-locked"
    made.append(staging)
    restored = run_playbook(
        "playbooks/storage_restore.yml",
        {**extra, "from_secondary": True, "pgdr_storage_restore_bucket_map": {bucket: staging}},
    )
    assert restored.rc == 0, restored.stdout
    for key in ("a.txt", "b.txt"):
        assert target.client.get_object(Bucket=staging, Key=key)["Body"].read() == key.encode()
    for run in (first, again, restored):
        assert_no_secrets(run, sandbox)


def test_retention_expires_storage_runs_and_config_snapshots_like_backups(
    sandbox, writer, prefix, storage_bucket, env_store
):
    primary, secondary = writer
    target, bucket, _ = storage_bucket
    stores = [{"label": "production", "store": {"type": "dotenv", "path": str(env_store)}}]
    old_run = sa.backup_assets(target, [bucket], primary, prefix, "production")["run_id"]
    config_snapshot.run(primary, stores, prefix, "production", hashing="none", snapshot_id=old_run)
    time.sleep(1.1)
    target.client.delete_object(Bucket=bucket, Key="b.txt")  # only the old run keeps b.txt
    target.client.put_object(Bucket=bucket, Key="c.txt", Body=b"c.txt")
    new_run = sa.backup_assets(target, [bucket], primary, prefix, "production")["run_id"]
    config_snapshot.run(primary, stores, prefix, "production", hashing="none", snapshot_id=new_run)
    immutable.secure_storage(primary, secondary, prefix, "production", 1, "GOVERNANCE")
    immutable.secure_config(primary, secondary, prefix, "production", 1, "GOVERNANCE")
    sprefix = sa.storage_prefix(prefix, "production")
    old_b = next(o for o in sa.load_manifest(primary, sprefix, old_run)["objects"] if o["key"] == "b.txt")
    later = dt.datetime.now(dt.UTC) + 70 * DAY
    policy = {"now": later, "lifecycle": "off", "sets": ("storage", "config"), "grace_hours": 1}

    planned = retention.run(primary, prefix, "production", check_mode=True, **policy)
    assert sa.list_runs(primary, sprefix) == [old_run, new_run]  # check mode touched nothing
    assert [e["id"] for e in planned["storage"]["expired"]] == [old_run]
    assert [e["id"] for e in planned["config"]["expired"]] == [old_run]

    done = retention.run(primary, prefix, "production", **policy)
    assert sa.list_runs(primary, sprefix) == [new_run]
    assert config_snapshot.list_snapshots(primary, prefix, "production") == [new_run]
    # The file only the expired run listed is removed; the files the newest run lists stay.
    assert [c["key"] for c in done["storage"]["collected"]] == [old_b["stored_key"]]
    newest = sa.load_manifest(primary, sprefix, new_run)
    assert all(
        primary.client.head_object(Bucket=primary.bucket, Key=o["stored_key"])
        for o in newest["objects"]
        if not o["deleted"]
    )
    assert retention.run(primary, prefix, "production", **policy)["changed"] is False
    # In the locked bucket the same plan (judged 70 days ahead) is refused by the locks the endpoint still holds:
    # reported as locked, nothing lost.
    locked = retention.run(secondary, prefix, "production", **policy)
    assert locked["storage"]["expired"] == [] and locked["config"]["expired"] == []
    for kind in ("storage", "config"):
        [skipped] = locked[kind]["skipped"]
        assert skipped["id"] == old_run and "Object Lock refused the deletion" in skipped["reason"]
    assert sa.list_runs(secondary, sprefix) == [old_run, new_run]


# --------------------------------------------------------------------------------------------- item 9


def test_the_success_alert_carries_the_runs_warnings_and_config_drift_by_name(
    run_playbook, sandbox, writer, prefix, rx, storage_bucket, env_store
):
    _, bucket, _ = storage_bucket
    with pg.connect(sandbox["production"]["dsn"]) as conn:
        conn.execute("INSERT INTO storage.objects (bucket_id, name) VALUES (%s, 'ghost/never-uploaded.png')", (bucket,))
    extra = run_vars(prefix, rx, bucket, env_store, pgdr_backup_secondary_copy=False)
    first = run_playbook("playbooks/backup.yml", extra)
    assert first.rc == 0, first.stdout[-4000:]
    [alert] = hook_texts(rx)
    assert alert.startswith("pgdr backup of production (local) succeeded with 1 warning: ")
    assert f"{bucket}/ghost/never-uploaded.png" in alert and "missing from the storage backup" in alert

    values = parse_dotenv(env_store.read_text())
    new_value = values["SUPABASE_ANON_KEY"][::-1] + "drifted"
    env_store.write_text(env_store.read_text().replace(values["SUPABASE_ANON_KEY"], new_value))
    second = run_playbook("playbooks/backup.yml", extra)
    assert second.rc == 0, second.stdout[-4000:]
    drift = hook_texts(rx)[-1]
    assert "config drift since snapshot" in drift and "changed production: SUPABASE_ANON_KEY" in drift
    for run in (first, second):
        assert_no_secrets(run, sandbox, new_value, *values.values())
    for text in hook_texts(rx):
        assert new_value not in text and values["SUPABASE_ANON_KEY"] not in text


def test_a_storage_failure_after_the_database_backup_says_the_backup_exists(
    run_playbook, sandbox, writer, prefix, rx, storage_bucket, env_store
):
    primary, _ = writer
    _, bucket, _ = storage_bucket
    wrong = dict(s3_params(sandbox, identity="project_storage"), secret_key="Wr0ng-Storage-Secret-For-The-Test")
    wrong.pop("bucket")
    extra = run_vars(prefix, rx, bucket, env_store, pgdr_storage_s3=wrong)
    run = run_playbook("playbooks/backup.yml", extra)
    assert run.rc != 0
    [backup] = run.results("pgdr.supabase.logical_backup")
    assert primary.get_json(backup["manifest_key"])["backup_id"] == backup["backup_id"]
    [alert] = hook_texts(rx)
    assert alert.startswith("pgdr backup of production (local) FAILED at storage backup: ")
    assert f"the database backup {backup['backup_id']} is committed and restorable" in alert
    # The steps after the failed one still ran: the config snapshot was taken and the backup secured.
    assert run.results("pgdr.supabase.config_snapshot")[0]["snapshot_id"] == backup["backup_id"]
    assert run.results("pgdr.supabase.secure_backup")[0]["backups"][0]["status"] == "secured"
    assert "Wr0ng-Storage-Secret" not in run.stdout and "Wr0ng-Storage-Secret" not in alert


# --------------------------------------------------------------------------------------------- item 10 (monitor)


def take_backup(sandbox, target, prefix, moment=None):
    request = logical_backup.BackupRequest(
        "production", sandbox["production"]["dsn"], target, prefix=prefix, window="every_run", now=moment
    )
    result = logical_backup.run(request)
    time.sleep(1.05 - time.time() % 1)
    return result["backup_id"], result["manifest"]


def test_the_monitor_refuses_a_freshness_now_before_the_newest_backup(run_playbook, sandbox, writer, prefix):
    primary, _ = writer
    _, manifest = take_backup(sandbox, primary, prefix)
    before = (dt.datetime.fromisoformat(manifest["finished_at"].replace("Z", "+00:00")) - DAY).isoformat()
    run = run_playbook("playbooks/monitor.yml", {"pgdr_backup_prefix": prefix, "freshness_now": before})
    assert run.rc != 0
    assert "is earlier than the newest backup" in run.stdout and "its age would be negative" in run.stdout
    assert not run.results("pgdr.supabase.notify")  # no verdict at all, let alone "fresh"


# --------------------------------------------------------------------------------------------- issue 9.8


def test_a_backup_whose_objects_are_gone_is_damaged_everywhere(run_playbook, sandbox, writer, prefix, s3_target):
    primary, _ = writer
    good, _ = take_backup(sandbox, primary, prefix)
    damaged, manifest = take_backup(sandbox, primary, prefix)
    data = next(o for o in manifest["objects"] if o["name"].startswith("data"))
    s3_target.delete_keys([data["key"]])

    listed = run_playbook("playbooks/list_backups.yml", {"pgdr_backup_prefix": prefix})
    assert listed.rc == 0, listed.stdout
    assert (
        f"{damaged}  production  DAMAGED" in listed.stdout
        and f"object {data['name']} of the backup is missing" in listed.stdout
    )
    assert f"{good}  production  verified" in listed.stdout
    rows = {r["backup_id"]: r for r in listed.results("pgdr.supabase.backup_info")[0]["backups"]}
    assert (rows[damaged]["verified"], rows[good]["verified"]) == (False, True)

    watched = run_playbook("playbooks/monitor.yml", {"pgdr_backup_prefix": prefix})
    assert watched.rc != 0
    assert "DAMAGED, it cannot be restored" in watched.stdout

    # Seventy days on, keep_min=1 protects the newest *verified* backup, not the damaged one.
    later = dt.datetime.now(dt.UTC) + 70 * DAY
    result = retention.run(primary, prefix, "production", now=later, lifecycle="off", keep_min=1, sets=("logical",))
    actions = {d["backup_id"]: d["action"] for d in result["decisions"]}
    assert actions == {damaged: "expire", good: "keep"}
    assert selection_manifest(primary, prefix, good)


def selection_manifest(target, prefix, backup_id):
    return target.get_json(catalog.manifest_key(prefix, "production", backup_id))


# --------------------------------------------------------------------------------------------- issue 9.2


def test_retention_never_touches_a_running_backup(sandbox, writer, prefix):
    """A daily backup whose window started 30 h ago and still uploads: its id says it is stale, it is not."""
    primary, _ = writer
    take_backup(sandbox, primary, prefix)  # a complete backup, so keep_min does not matter here
    window = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=30)).strftime(timefmt.COMPACT_FORMAT)
    folder = catalog.backup_prefix(prefix, "production", window)
    lock = SourceLock(primary, catalog.lock_key(prefix, "production"), f"backup {window}", renew_every=1)
    with lock:
        primary.put_bytes(folder + "roles.sql.zst", b"roles so far")
        upload = primary.client.create_multipart_upload(Bucket=primary.bucket, Key=folder + "data.pgdump.zst")
        try:
            held = retention.run(primary, prefix, "production", lifecycle="off", sets=("logical",))
            [decision] = [d for d in held["decisions"] if d["backup_id"] == window]
            assert decision["action"] == "keep" and "the source's lock is live" in decision["reason"]
        finally:
            primary.client.abort_multipart_upload(
                Bucket=primary.bucket, Key=folder + "data.pgdump.zst", UploadId=upload["UploadId"]
            )
    # The lock is gone (the run ended without a manifest): aged by its newest write, not by its id.
    recent = retention.run(primary, prefix, "production", lifecycle="off", sets=("logical",))
    [decision] = [d for d in recent["decisions"] if d["backup_id"] == window]
    assert decision["action"] == "keep" and "last written 0." in decision["reason"]
    assert primary.list_keys(folder)
    # A day later nothing was written to it: now it goes.
    stale = retention.run(
        primary, prefix, "production", now=dt.datetime.now(dt.UTC) + 2 * DAY, lifecycle="off", sets=("logical",)
    )
    assert [e["backup_id"] for e in stale["expired"]] == [window]
    assert primary.list_keys(folder) == []


def test_a_backup_whose_own_objects_are_gone_is_not_committed(sandbox, writer, prefix):
    """catalog.require_presence, which the backup calls right before it writes its manifest."""
    primary, _ = writer
    _, manifest = take_backup(sandbox, primary, prefix)
    assert catalog.require_presence(primary, manifest)["verified"] is True
    schema = next(o for o in manifest["objects"] if o["name"] == "schema")
    primary.delete_keys([schema["key"]])
    with pytest.raises(DRError) as refused:
        catalog.require_presence(primary, manifest)
    message = str(refused.value)
    assert message.startswith(f"[commit manifest] backup {manifest['backup_id']} is not committed")
    assert "object schema of the backup is missing" in message and schema["key"] in message
    assert "nothing was committed" in refused.value.hint

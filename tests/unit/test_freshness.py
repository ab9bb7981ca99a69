"""Freshness checks without a sandbox: a bucket, a pgBackRest repository and the Management API faked in memory."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from alert_receiver import Receiver, closed_port

from ansible_collections.pgdr.supabase.plugins.module_utils import catalog, freshness, timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

DAY = 86400
NOW = datetime(2026, 9, 12, 12, 0, tzinfo=UTC).timestamp()
TOKEN = "sbp_" + "ab12" * 10
REF = "abcdefghijklmnopqrst"


class FakeClient:
    """head_object over the fake bucket's dict (the presence check of the newest backup)."""

    def __init__(self, target):
        self.target = target

    def head_object(self, Bucket, Key, **_kwargs):
        from botocore.exceptions import ClientError

        body = self.target.objects.get(Key)
        if body is None:
            raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")
        return {"ContentLength": len(body)}


class FakeTarget:
    """The reads the catalog makes, over a dict of key -> bytes."""

    def __init__(self, objects=None, error=None):
        self.objects = dict(objects or {})
        self.error = error
        self.bucket = "fake"
        self.client = FakeClient(self)

    def where(self, key=""):
        return f"s3://fake/{key}"

    def _check(self):
        if self.error:
            raise DRError(self.error, step="list backups", subject=self.where())

    def list_common_prefixes(self, prefix, step=None):
        self._check()
        found = {prefix + k[len(prefix) :].split("/", 1)[0] + "/" for k in self.objects if k.startswith(prefix)}
        return sorted(p for p in found if p[len(prefix) :].strip("/") and not p.endswith(".json/"))

    def get_json(self, key, step=None):
        self._check()
        body = self.objects.get(key)
        return None if body is None else json.loads(body)

    def list_keys(self, prefix, step=None):
        self._check()
        return [(k, len(v)) for k, v in sorted(self.objects.items()) if k.startswith(prefix)]


def manifest(backup_id, finished_at):
    return {
        "manifest_version": 1,
        "backup_id": backup_id,
        "source": {"name": "production"},
        "started_at": timefmt.iso(datetime.fromtimestamp(finished_at - 5, UTC)),
        "finished_at": timefmt.iso(datetime.fromtimestamp(finished_at, UTC)),
        "duration_s": 5,
        "objects": [
            {
                "name": "data",
                "key": catalog.backup_prefix("pre", "production", backup_id) + "data.pgdump.zst",
                "size": 10,
                "sha256": "0" * 64,
            }
        ],
    }


def with_backups(*backups, incomplete=(), lock=None):
    objects = {}
    for backup_id, finished_at in backups:
        objects[catalog.manifest_key("pre", "production", backup_id)] = json.dumps(manifest(backup_id, finished_at))
        objects[catalog.backup_prefix("pre", "production", backup_id) + "data.pgdump.zst"] = "x" * 10
    for backup_id in incomplete:
        objects[catalog.backup_prefix("pre", "production", backup_id) + "data.pgdump.zst"] = "x" * 3
    if lock:
        objects[catalog.lock_key("pre", "production")] = json.dumps(lock)
    return FakeTarget(objects)


# --- logical --------------------------------------------------------------------------------------------------


def test_a_fresh_backup_is_ok():
    target = with_backups(("20260911T000000Z", NOW - 3 * 3600), ("20260912T000000Z", NOW - 600))
    check = freshness.check_logical(target, "pre", "production", 26 * 3600, NOW)
    assert check["ok"] is True and check["name"] == "logical"
    assert check["age_s"] == 600 and check["threshold_s"] == 26 * 3600
    assert check["newest_backup_id"] == "20260912T000000Z"
    assert "finished 10 min ago" in check["details"]


def test_a_missed_schedule_is_stale():
    target = with_backups(("20260910T000000Z", NOW - 2 * DAY - 3600))
    check = freshness.check_logical(target, "pre", "production", 26 * 3600, NOW)
    assert check["ok"] is False
    assert check["age_s"] == 2 * DAY + 3600
    assert "a scheduled backup was missed or failed" in check["details"]


def test_the_threshold_is_inclusive():
    target = with_backups(("20260911T000000Z", NOW - 100))
    assert freshness.check_logical(target, "pre", "production", 100, NOW)["ok"] is True
    assert freshness.check_logical(target, "pre", "production", 99, NOW)["ok"] is False


def test_no_backup_at_all_is_stale():
    check = freshness.check_logical(FakeTarget(), "pre", "production", 26 * 3600, NOW)
    assert check["ok"] is False and check["age_s"] is None
    assert check["details"].startswith("no complete backup of production")


def test_an_incomplete_backup_newer_than_the_newest_is_a_failed_run():
    target = with_backups(("20260911T000000Z", NOW - 12 * 3600), incomplete=["20260912T000000Z"])
    check = freshness.check_logical(target, "pre", "production", 26 * 3600, NOW)
    assert check["ok"] is False
    assert check["incomplete_newer"] == ["20260912T000000Z"]
    assert "a run failed or was killed" in check["details"]


def test_an_incomplete_backup_under_a_live_lock_is_a_run_in_progress():
    lock = {"purpose": "backup 20260912T000000Z", "host": "db1", "pid": 1, "renewed_at": NOW - 30}
    target = with_backups(("20260911T000000Z", NOW - 12 * 3600), incomplete=["20260912T000000Z"], lock=lock)
    check = freshness.check_logical(target, "pre", "production", 26 * 3600, NOW)
    assert check["ok"] is True
    assert "is being taken now" in check["details"]
    # The same lock, no longer renewed: the run died.
    stale = freshness.check_logical(target, "pre", "production", 26 * 3600, NOW + 3600)
    assert stale["ok"] is False


def test_an_older_incomplete_backup_does_not_matter():
    target = with_backups(("20260912T000000Z", NOW - 3600), incomplete=["20260911T000000Z"])
    check = freshness.check_logical(target, "pre", "production", 26 * 3600, NOW)
    assert check["ok"] is True and check["incomplete_newer"] == []


def test_a_newest_backup_whose_objects_are_gone_is_damaged_not_fresh():
    target = with_backups(("20260912T000000Z", NOW - 600))
    del target.objects[catalog.backup_prefix("pre", "production", "20260912T000000Z") + "data.pgdump.zst"]
    check = freshness.check_logical(target, "pre", "production", 26 * 3600, NOW)
    assert check["ok"] is False and check["newest_verified"] is False
    assert "DAMAGED" in check["details"] and "object data of the backup is missing" in check["details"]
    # Of another size is as bad.
    target = with_backups(("20260912T000000Z", NOW - 600))
    target.objects[catalog.backup_prefix("pre", "production", "20260912T000000Z") + "data.pgdump.zst"] = "x"
    check = freshness.check_logical(target, "pre", "production", 26 * 3600, NOW)
    assert check["ok"] is False and "has 1 bytes, the manifest says 10" in check["details"]


def test_a_given_now_before_the_newest_backup_is_refused():
    target = with_backups(("20260912T000000Z", NOW - 600))
    with pytest.raises(DRError, match="earlier than the newest backup 20260912T000000Z") as caught:
        freshness.check_logical(target, "pre", "production", 26 * 3600, NOW - 3600)
    assert caught.value.hint.startswith("give a time after")
    # The host's own clock behind the bucket's is a failed check, not a refusal.
    real = freshness.to_unix(None)
    ahead = with_backups(("20260912T000000Z", real + 3600))
    check = freshness.check_logical(ahead, "pre", "production", 26 * 3600)
    assert check["ok"] is False and "in the future of this host's clock" in check["details"]


def test_an_unreadable_bucket_is_a_failed_check_not_an_exception():
    check = freshness.check_logical(FakeTarget(error="S3 answered AccessDenied"), "pre", "production", 60, NOW)
    assert check["ok"] is False
    assert "cannot check" in check["details"] and "AccessDenied" in check["error"]


def test_now_accepts_datetime_iso_and_seconds():
    assert freshness.to_unix(datetime.fromtimestamp(NOW, UTC)) == NOW
    assert freshness.to_unix("2026-09-12T12:00:00Z") == NOW
    assert freshness.to_unix(NOW) == NOW
    assert abs(freshness.to_unix(None) - time.time()) < 5
    with pytest.raises(DRError, match="not an ISO-8601 time"):
        freshness.to_unix("yesterday")


# --- secondary -----------------------------------------------------------------------------------------------


def test_secondary_is_skipped_while_the_immutable_record_is_missing(monkeypatch):
    import sys

    import ansible_collections.pgdr.supabase.plugins.module_utils as package

    monkeypatch.setitem(
        sys.modules, "ansible_collections.pgdr.supabase.plugins.module_utils.immutable", None
    )  # import fails
    monkeypatch.delattr(package, "immutable", raising=False)
    check = freshness.check_secondary(with_backups(("20260912T000000Z", NOW)), "pre", "production", 60, NOW)
    assert check["skipped"] is True and check["ok"] is True
    assert "not available" in check["details"]


def secured_record(status="secured", verified=True):
    return {
        "status": status,
        "verified_at": "2026-09-12T00:10:00Z" if status == "secured" else None,
        "objects": [{"name": "data", "verified": verified}],
    }


@pytest.mark.parametrize(
    ("records", "ok", "newest"),
    [
        ({"20260912T000000Z": secured_record()}, True, "20260912T000000Z"),
        # The newest is not secured yet, the one before is, and still young enough.
        ({"20260911T000000Z": secured_record()}, True, "20260911T000000Z"),
        ({"20260912T000000Z": secured_record(verified=False)}, False, None),
        ({"20260912T000000Z": secured_record("not_secured")}, False, None),
        ({}, False, None),
    ],
)
def test_secondary_reads_the_secure_copy_record(monkeypatch, records, ok, newest):
    import sys
    import types

    fake = types.ModuleType("immutable")
    asked = []

    def read_record(primary, manifest_key):
        backup_id = manifest_key.split("/")[-2]
        asked.append(backup_id)
        return records.get(backup_id)

    fake.read_record = read_record
    import ansible_collections.pgdr.supabase.plugins.module_utils as package

    monkeypatch.setitem(sys.modules, "ansible_collections.pgdr.supabase.plugins.module_utils.immutable", fake)
    monkeypatch.setattr(package, "immutable", fake, raising=False)
    target = with_backups(("20260911T000000Z", NOW - 10 * 3600), ("20260912T000000Z", NOW - 60))
    check = freshness.check_secondary(target, "pre", "production", 26 * 3600, NOW)
    assert asked[0] == "20260912T000000Z"
    assert check["ok"] is ok and check["skipped"] is False
    assert check.get("backup_id") == newest
    if newest == "20260911T000000Z":
        assert "not secured: 20260912T000000Z (no secure copy)" in check["details"]
    # The same secured copy, two days later, is stale.
    if ok:
        assert freshness.check_secondary(target, "pre", "production", 26 * 3600, NOW + 2 * DAY)["ok"] is False


def test_secondary_with_the_real_record_reader_and_no_record():
    check = freshness.check_secondary(with_backups(("20260912T000000Z", NOW)), "pre", "production", 60, NOW)
    assert check["skipped"] is False and check["ok"] is False
    assert "no secure copy" in check["details"]


# --- pgBackRest ----------------------------------------------------------------------------------------------


class FakeTool:
    def __init__(self, backups_stop, wal_ts, code=0):
        self.backups_stop = backups_stop
        self.wal_ts = wal_ts
        self.code = code

    def info(self):
        return {
            "name": "production",
            "status": {"code": self.code, "message": "ok" if self.code == 0 else "missing stanza path"},
            "backup": [
                {"label": f"b{i}", "type": "full", "timestamp": {"start": t - 10, "stop": t}}
                for i, t in enumerate(self.backups_stop)
            ],
            "archive": [{"id": "15-1", "min": "000000010000000000000001", "max": "000000010000000000000009"}],
        }

    def newest_wal_time(self, archive):
        return self.wal_ts


def test_pitr_fresh():
    check = freshness.check_pitr("production", "/x.conf", 3600, DAY, NOW, tool=FakeTool([NOW - 3600], NOW - 120))
    assert check["ok"] is True and check["age_s"] == 120 and check["base_age_s"] == 3600


def test_pitr_wal_archiving_stopped():
    check = freshness.check_pitr("production", "/x.conf", 3600, DAY, NOW, tool=FakeTool([NOW - 3600], NOW - 7200))
    assert check["ok"] is False and "WAL archiving is late or stopped" in check["details"]


def test_pitr_base_backup_late():
    check = freshness.check_pitr("production", "/x.conf", 3600, DAY, NOW, tool=FakeTool([NOW - 3 * DAY], NOW - 60))
    assert check["ok"] is False and "a base backup is missing or late" in check["details"]


def test_pitr_missing_stanza():
    check = freshness.check_pitr("production", "/x.conf", 3600, DAY, NOW, tool=FakeTool([], None, code=1))
    assert check["ok"] is False and "does not exist" in check["details"]


def test_pitr_without_pgbackrest_is_a_failed_check():
    check = freshness.check_pitr("production", "/nonexistent.conf", 3600, DAY, NOW)
    assert check["ok"] is False and check["error"]


# --- hosted Supabase -----------------------------------------------------------------------------------------


def backups_response(pitr=True, latest=None):
    return {
        "region": "eu-west-1",
        "pitr_enabled": pitr,
        "walg_enabled": True,
        "backups": [],
        "physical_backup_data": {}
        if latest is None
        else {"earliest_physical_backup_date_unix": int(latest - 7 * DAY), "latest_physical_backup_date_unix": latest},
    }


@pytest.mark.parametrize(("lag", "ok"), [(300, True), (3600, True), (3601, False)])
def test_supabase_pitr_window_age(lag, ok):
    path = f"/v1/projects/{REF}/database/backups"
    with Receiver() as rx:
        rx.json[path] = backups_response(latest=int(NOW - lag))
        check = freshness.check_supabase_pitr(REF, TOKEN, rx.url(), 3600, NOW)
    assert rx.paths() == [path]
    assert rx.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert check["ok"] is ok and check["age_s"] == lag
    assert TOKEN not in json.dumps(check)


def test_supabase_pitr_off_or_without_window_is_stale():
    path = f"/v1/projects/{REF}/database/backups"
    with Receiver() as rx:
        rx.json[path] = backups_response(pitr=False)
        off = freshness.check_supabase_pitr(REF, TOKEN, rx.url(), 3600, NOW)
        rx.json[path] = backups_response(pitr=True, latest=None)
        empty = freshness.check_supabase_pitr(REF, TOKEN, rx.url(), 3600, NOW)
    assert off["ok"] is False and "not enabled" in off["details"]
    assert empty["ok"] is False and "no window yet" in empty["details"]


def test_supabase_api_unreachable_is_a_failed_check():
    check = freshness.check_supabase_pitr(REF, TOKEN, f"http://127.0.0.1:{closed_port()}", 3600, NOW, timeout=2)
    assert check["ok"] is False and check["error"]
    assert TOKEN not in json.dumps(check)


def test_summarize_names_every_failing_check():
    checks = [
        freshness.result("logical", False, 10, 5, "too old"),
        freshness.result("pitr", True, 1, 5, "fine"),
        freshness.result("supabase_pitr", False, None, 5, "off"),
    ]
    ok, line = freshness.summarize(checks)
    assert ok is False and line == "logical: too old; supabase_pitr: off"

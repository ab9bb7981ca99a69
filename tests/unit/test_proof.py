"""The proof engine without a sandbox: the record, the plan, the write-once companion object, the listing's proof,
latest-proven, the monitor's proof check and the proof's Prometheus textfile (a bucket faked in memory)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from ansible_collections.pgdr.supabase.plugins.module_utils import alerts, catalog, proof, selection, timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

NOW = datetime(2026, 9, 12, 12, 0, tzinfo=UTC).timestamp()
HOUR = 3600


class FakeTarget:
    """The reads and the conditional write the proof makes, over a dict of key -> bytes."""

    bucket = "fake"

    def __init__(self):
        self.objects = {}
        self.puts = []

    def where(self, key=""):
        return f"s3://fake/{key}"

    def list_common_prefixes(self, prefix, step=None):
        found = {prefix + k[len(prefix) :].split("/", 1)[0] + "/" for k in self.objects if k.startswith(prefix)}
        return sorted(p for p in found if not p.endswith(".json/"))

    def list_keys(self, prefix, step=None):
        return [(k, len(v)) for k, v in sorted(self.objects.items()) if k.startswith(prefix)]

    def get_json(self, key, step=None):
        body = self.objects.get(key)
        return None if body is None else json.loads(body)

    def put_bytes(self, key, data, step=None, if_none_match=False, **_kwargs):
        self.puts.append((key, if_none_match))
        if if_none_match and key in self.objects:
            raise DRError(
                "S3 answered PreconditionFailed: At least one of the pre-conditions you specified did not hold"
            )
        self.objects[key] = data


def add_backup(target, backup_id, started, size=1000):
    manifest = {
        "manifest_version": 2,
        "backup_id": backup_id,
        "source": {"name": "production", "database_size": size},
        "started_at": timefmt.iso(datetime.fromtimestamp(started, UTC)),
        "finished_at": timefmt.iso(datetime.fromtimestamp(started + 5, UTC)),
        "duration_s": 5,
        "objects": [],
    }
    target.objects[catalog.manifest_key("pre", "production", backup_id)] = json.dumps(manifest).encode()
    return manifest


def prove(target, backup_id, result, at):
    manifest = selection.load_manifest(target, "pre", "production", backup_id)
    record = proof.build_record(
        backup_id, result, at - 60, at, restore_s=20, checks=[{"name": "c", "ok": True}], manifest=manifest
    )
    return proof.write_proof(target, "pre", "production", record)


def test_the_record_says_what_was_proven_and_how_long_it_took():
    record = proof.build_record(
        "20260912T000000Z",
        "failed",
        NOW - 90,
        NOW,
        restore_s=30.04,
        checks=[{"name": "catalog", "ok": True}, {"name": "content", "ok": False}],
        error="content: 1 table differs",
        database="h:1/proof_x",
        manifest={"started_at": "2026-09-12T00:00:01Z", "source": {"database_size": 7}},
    )
    assert record["result"] == "failed" and record["duration_s"] == 90.0 and record["restore_s"] == 30.0
    assert record["checks"] == {"total": 2, "passed": 1, "failed": ["content"]}
    assert record["taken_at"] == "2026-09-12T00:00:01Z" and record["database_size"] == 7
    with pytest.raises(DRError, match="unknown proof result 'ok'"):
        proof.build_record("20260912T000000Z", "ok", NOW, NOW)


def test_the_record_is_written_once_and_never_over_the_manifest():
    target = FakeTarget()
    add_backup(target, "20260912T000000Z", NOW - HOUR)
    manifest_before = dict(target.objects)
    written, record = prove(target, "20260912T000000Z", "passed", NOW)
    assert written and record["result"] == "passed"
    assert target.puts == [(proof.proof_key("pre", "production", "20260912T000000Z"), True)]
    assert {k: v for k, v in target.objects.items() if k in manifest_before} == manifest_before
    # A second write (another verdict, or a concurrent proof) keeps the first.
    again, kept = prove(target, "20260912T000000Z", "failed", NOW + 10)
    assert not again and kept["result"] == "passed"


def test_a_backup_without_a_manifest_cannot_be_proven():
    target = FakeTarget()
    record = proof.build_record("20260912T000000Z", "passed", NOW - 1, NOW)
    with pytest.raises(DRError, match="has no manifest: only a committed backup can be proven"):
        proof.write_proof(target, "pre", "production", record)


def test_the_plan_proves_skips_over_the_cap_or_does_nothing():
    target = FakeTarget()
    add_backup(target, "20260912T000000Z", NOW - HOUR, size=5000)
    plan = proof.plan(target, "pre", "production")
    assert plan["action"] == "prove" and plan["database"] == proof.throwaway_name("20260912T000000Z", "production")
    skipped = proof.plan(target, "pre", "production", max_database_bytes=4000)
    assert skipped["action"] == "skip" and "over this schedule's cap of 4000 bytes" in skipped["reason"]
    prove(target, "20260912T000000Z", "passed", NOW)
    assert proof.plan(target, "pre", "production", max_database_bytes=4000)["action"] == "none"


def test_throwaway_names_are_per_source_and_nothing_else_is_dropped():
    name = proof.throwaway_name("20260912T000000Z", "production")
    assert name.startswith("proof_20260912t000000z_") and name != proof.throwaway_name("20260912T000000Z", "other")
    proof.check_throwaway(name)
    proof.check_throwaway(name + proof.TEMP_SUFFIX)
    for other in ("postgres", "restore_20260912t000000z", "proof_20260912t000000z", name + "x"):
        with pytest.raises(DRError, match="is not a throwaway database of a proof"):
            proof.check_throwaway(other)
    with pytest.raises(DRError, match="prefix 'Proof-1' is not usable"):
        proof.throwaway_name("20260912T000000Z", "production", "Proof-1")


def test_listing_and_latest_proven():
    target = FakeTarget()
    add_backup(target, "20260910T000000Z", NOW - 50 * HOUR)
    add_backup(target, "20260911T000000Z", NOW - 26 * HOUR)
    add_backup(target, "20260912T000000Z", NOW - 2 * HOUR)
    with pytest.raises(DRError, match="no backup of 'production' was proven"):
        selection.resolve(target, "pre", "production", "latest-proven")
    prove(target, "20260910T000000Z", "passed", NOW - 49 * HOUR)
    prove(target, "20260911T000000Z", "failed", NOW - 25 * HOUR)
    rows = proof.annotate(target, "pre", "production", catalog.list_backups(target, "pre", "production"))
    assert [r["proof"] and r["proof"]["result"] for r in rows] == [None, "failed", "passed"]
    assert selection.resolve(target, "pre", "production", "latest-proven")["backup_id"] == "20260910T000000Z"
    assert selection.resolve(target, "pre", "production", "latest")["backup_id"] == "20260912T000000Z"


def test_the_monitor_check_alerts_on_a_stale_or_failed_proof():
    target = FakeTarget()
    add_backup(target, "20260911T000000Z", NOW - 30 * HOUR)
    never = proof.check_freshness(target, "pre", "production", 26 * HOUR, NOW)
    assert not never["ok"] and "was ever proven" in never["details"]
    prove(target, "20260911T000000Z", "passed", NOW - 29 * HOUR)
    stale = proof.check_freshness(target, "pre", "production", 26 * HOUR, NOW)
    assert not stale["ok"] and "older than 26.0 h" in stale["details"] and stale["age_s"] == 30 * HOUR
    assert proof.check_freshness(target, "pre", "production", 31 * HOUR, NOW)["ok"]
    add_backup(target, "20260912T000000Z", NOW - 2 * HOUR)
    prove(target, "20260912T000000Z", "failed", NOW - HOUR)
    failed = proof.check_freshness(target, "pre", "production", 31 * HOUR, NOW)
    assert not failed["ok"] and "the last proof, of backup 20260912T000000Z" in failed["details"]
    assert failed["last_proof_result"] == "failed" and failed["newest_proven_backup_id"] == "20260911T000000Z"


def test_the_proof_textfile_is_its_own_and_follows_passes_and_failures(tmp_path):
    sink = [{"type": "prometheus_textfile", "dir": str(tmp_path)}]
    taken = "2026-09-12T00:00:00Z"
    passed = {
        "backup_id": "20260912T000000Z",
        "proof": {"result": "passed", "duration_s": 50, "restore_s": 20, "taken_at": taken},
    }
    [record] = alerts.deliver(sink, alerts.backup_event("success", "db1", passed, run="proof"))
    assert record["delivered"] and record["target"].endswith("pgdr_proof_db1.prom")
    assert not (tmp_path / "pgdr_backup_db1.prom").exists()
    alerts.deliver(sink, alerts.backup_event("failed", "db1", "the proof failed", run="proof"))
    values = alerts.read_textfile(tmp_path / "pgdr_proof_db1.prom", "db1")
    assert values["pgdr_last_proven_backup_timestamp_seconds"] == datetime(2026, 9, 12, tzinfo=UTC).timestamp()
    assert values["pgdr_last_proof_duration_seconds"] == 50 and values["pgdr_last_proof_restore_seconds"] == 20
    assert values["pgdr_last_proof_success"] == 0 and values["pgdr_proof_failures_total"] == 1
    # A proof never pings the backup's dead-man's switch.
    hc = [{"type": "healthchecks", "url": "http://127.0.0.1:9/p"}]
    [skipped] = alerts.deliver(hc, alerts.backup_event("failed", "db1", "x", run="proof"))
    assert skipped["skipped"]

"""prove.yml against the sandbox: a good backup is proven (recorded next to its manifest, metrics written, the
throwaway database gone, staging untouched) and not proven twice; a corrupted backup and a backup that fails its
verification fail the proof, alert and leave nothing behind; a killed proof's leftover is dropped by the next run;
the monitor alerts on a stale or failed proof; --check changes nothing."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from alert_receiver import Receiver
from backup_helpers import drop_database, dsn_for
from conftest import REPO
from proc_helpers import descendants, kill_tree
from test_restore_playbooks import take_backup

from ansible_collections.pgdr.supabase.plugins.module_utils import catalog, proof, selection

pytestmark = pytest.mark.integration

HOOK = "/hook/T000/B000/proveTestWebhookToken17"
METRIC = re.compile(r'^([a-z_]+)\{source="production"\} (\S+)$', re.MULTILINE)


@pytest.fixture
def rx():
    with Receiver() as receiver:
        yield receiver


def prove_vars(prefix, tmp_path, rx, **extra):
    return {
        "pgdr_backup_prefix": prefix,
        "pgdr_alert_sinks": [
            {"type": "webhook", "name": "chat", "url": rx.url(HOOK)},
            {"type": "prometheus_textfile", "name": "metrics", "dir": str(tmp_path / "metrics")},
        ],
        **extra,
    }


def metrics(tmp_path):
    path = tmp_path / "metrics" / "pgdr_proof_production.prom"
    return {name: float(value) for name, value in METRIC.findall(path.read_text())}


def staging_state(state):
    """What a proof must leave as it was: staging's databases, its env file and the project's own marker."""
    with psycopg.connect(dsn_for(state, "staging", "postgres")) as conn:
        names = sorted(r[0] for r in conn.execute("select datname from pg_database"))
        has_marker = conn.execute("select to_regclass('pgdr_restore.marker') is not null").fetchone()[0]
        project = [r[0] for r in conn.execute("select marker::text from pgdr_restore.marker")] if has_marker else None
    return names, Path(state["env_files"]["staging"]).read_bytes(), project


def throwaways(state):
    with psycopg.connect(dsn_for(state, "staging", "postgres")) as conn:
        return sorted(r[0] for r in conn.execute("select datname from pg_database where datname like 'proof%'"))


def throwaway(backup_id):
    return proof.throwaway_name(backup_id, "production")


def record_of(target, prefix, backup_id):
    return target.get_json(proof.proof_key(prefix, "production", backup_id))


def corrupt_data_object(target, manifest):
    data = next(o for o in manifest["objects"] if o.get("kind") == "data")
    body = bytearray(target.client.get_object(Bucket=target.bucket, Key=data["key"])["Body"].read())
    body[len(body) // 2] ^= 0x01
    target.client.put_object(Bucket=target.bucket, Key=data["key"], Body=bytes(body))
    return data


def test_a_good_backup_is_proven_recorded_and_leaves_nothing(run_playbook, sandbox, s3_target, prefix, tmp_path, rx):
    manifest = take_backup(sandbox, s3_target, prefix)
    backup_id = manifest["backup_id"]
    before = staging_state(sandbox)
    keys_before = {key for key, _ in s3_target.list_keys(f"{prefix}/")}
    manifest_bytes = s3_target.client.get_object(
        Bucket=s3_target.bucket, Key=catalog.manifest_key(prefix, "production", backup_id)
    )["Body"].read()
    started = time.time()
    run = run_playbook("playbooks/prove.yml", prove_vars(prefix, tmp_path, rx))
    assert run.rc == 0, run.stdout[-4000:]
    assert f"PROOF PASSED: {backup_id}" in run.stdout

    record = record_of(s3_target, prefix, backup_id)
    assert record["result"] == "passed" and record["backup_id"] == backup_id and record["error"] is None
    assert record["checks"]["failed"] == [] and record["checks"]["total"] >= 10
    assert 0 < record["restore_s"] < record["duration_s"] <= time.time() - started
    assert record["taken_at"] == manifest["started_at"]
    assert record["throwaway_database"].endswith(f"/{throwaway(backup_id)}")
    # One object more, proof.json; the signed manifest byte for byte as it was.
    assert {key for key, _ in s3_target.list_keys(f"{prefix}/")} - keys_before == {
        proof.proof_key(prefix, "production", backup_id)
    }
    assert (
        s3_target.client.get_object(Bucket=s3_target.bucket, Key=catalog.manifest_key(prefix, "production", backup_id))[
            "Body"
        ].read()
        == manifest_bytes
    )
    # The throwaway database is gone; staging's databases, env and project marker are as they were.
    assert staging_state(sandbox) == before
    assert throwaway(backup_id) not in throwaways(sandbox)

    values = metrics(tmp_path)
    assert values["pgdr_last_proof_success"] == 1 and values["pgdr_proof_failures_total"] == 0
    assert values["pgdr_last_proven_backup_timestamp_seconds"] == pytest.approx(
        dt.datetime.fromisoformat(manifest["started_at"].replace("Z", "+00:00")).timestamp(), abs=0.01
    )
    assert values["pgdr_last_proof_duration_seconds"] == record["duration_s"]
    assert values["pgdr_last_proof_restore_seconds"] == record["restore_s"]
    assert rx.requests == []  # a passed proof does not page anyone
    for secret in (sandbox["s3"]["secret_key"], sandbox["staging"]["password"], sandbox["production"]["password"]):
        assert secret not in run.stdout

    # A second run finds the record and changes nothing.
    again = run_playbook("playbooks/prove.yml", prove_vars(prefix, tmp_path, rx))
    assert again.rc == 0, again.stdout[-3000:]
    assert again.changed() == 0 and f"backup {backup_id} was proven already: passed" in again.stdout
    assert record_of(s3_target, prefix, backup_id) == record

    # The listing says proven; a newer backup is unproven, and latest-proven still selects the proven one.
    newer = take_backup(sandbox, s3_target, prefix, moment=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    listing = run_playbook("playbooks/list_backups.yml", {"pgdr_backup_prefix": prefix})
    assert listing.rc == 0
    assert re.search(rf"{backup_id} .* proven {re.escape(record['proven_at'])}", listing.stdout)
    assert re.search(rf"{newer['backup_id']} .* unproven", listing.stdout)
    assert selection.resolve(s3_target, prefix, "production", "latest")["backup_id"] == newer["backup_id"]
    assert selection.resolve(s3_target, prefix, "production", "latest-proven")["backup_id"] == backup_id


def test_latest_proven_without_a_proven_backup_is_refused(sandbox, s3_target, prefix):
    take_backup(sandbox, s3_target, prefix)
    with pytest.raises(Exception, match=r"no backup of 'production' was proven \(1 complete"):
        selection.resolve(s3_target, prefix, "production", "latest-proven")


def test_a_corrupted_backup_fails_its_proof_alerts_and_leaves_nothing(
    run_playbook, sandbox, s3_target, prefix, tmp_path, rx
):
    manifest = take_backup(sandbox, s3_target, prefix)
    data = corrupt_data_object(s3_target, manifest)
    before = staging_state(sandbox)
    run = run_playbook("playbooks/prove.yml", prove_vars(prefix, tmp_path, rx))
    assert run.rc != 0
    assert f"object {data['name']} is corrupted" in run.stdout
    record = record_of(s3_target, prefix, manifest["backup_id"])
    assert record["result"] == "failed" and "is corrupted" in record["error"]
    assert staging_state(sandbox) == before  # no throwaway database left, staging as it was
    # The chat webhook got the failure; the metrics say it.
    [body] = rx.bodies(HOOK)
    text = json.loads(body)["text"]
    assert text.startswith("pgdr proof of production (local) FAILED") and "is corrupted" in text
    assert "proveTestWebhookToken17" not in run.stdout
    values = metrics(tmp_path)
    assert values["pgdr_last_proof_success"] == 0 and values["pgdr_proof_failures_total"] == 1
    assert "pgdr_last_proven_backup_timestamp_seconds" not in values

    # The monitor alerts on the failed proof.
    monitor = run_playbook(
        "playbooks/monitor.yml",
        {"pgdr_backup_prefix": prefix, "pgdr_monitor_proof": True, "pgdr_monitor_sinks": []},
    )
    assert monitor.rc != 0
    assert "no backup of production was ever proven" in monitor.stdout
    assert f"the last proof, of backup {manifest['backup_id']}" in monitor.stdout and "FAILED" in monitor.stdout


def test_a_backup_that_fails_verification_after_the_restore_leaves_nothing(
    run_playbook, sandbox, s3_target, prefix, tmp_path, rx
):
    """The restore into the throwaway database succeeds; verification fails: the database is dropped all the same."""
    manifest = take_backup(sandbox, s3_target, prefix)
    folder = tmp_path / "migrations"
    folder.mkdir()
    for path in Path(sandbox["app"]["migrations_dir"]).glob("*.sql"):
        (folder / path.name).write_text(path.read_text())
    (folder / "20230101000000_forgotten.sql").write_text("select 1;\n")
    before = staging_state(sandbox)
    run = run_playbook("playbooks/prove.yml", prove_vars(prefix, tmp_path, rx, pgdr_migrations_dir=str(folder)))
    assert run.rc != 0
    assert "restore of backup" in run.stdout or "restored into" in run.stdout  # it got past the restore
    record = record_of(s3_target, prefix, manifest["backup_id"])
    assert record["result"] == "failed" and "migrations" in record["checks"]["failed"]
    assert record["restore_s"] > 0
    assert "20230101000000" in record["error"]
    assert staging_state(sandbox) == before
    assert throwaway(manifest["backup_id"]) not in throwaways(sandbox)
    assert "pgdr proof of production (local) FAILED" in json.loads(rx.bodies(HOOK)[0])["text"]


def _wait_for_throwaway(state, name, proc, deadline_s=240):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if any(found.startswith(name) for found in throwaways(state)):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False


def test_a_killed_proof_is_cleaned_up_by_the_next_run(
    run_playbook, sandbox, sandbox_dir, s3_target, prefix, tmp_path, rx
):
    manifest = take_backup(sandbox, s3_target, prefix)
    name = throwaway(manifest["backup_id"])
    # A database of the throwaway form that no restore made: never ours to drop.
    foreign = throwaway(catalog.backup_id_for(dt.datetime(2001, 1, 1, tzinfo=dt.UTC), "every_run"))
    with psycopg.connect(dsn_for(sandbox, "staging", "postgres"), autocommit=True) as conn:
        conn.execute(f'create database "{foreign}" template platform_template')
    try:
        env = {
            **os.environ,
            "SANDBOX_DIR": str(sandbox_dir),
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        }
        extra = json.dumps(prove_vars(prefix, tmp_path, rx))
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "ansible-playbook"),
                "-i",
                "inventories/local/hosts.yml",
                "playbooks/prove.yml",
                "-e",
                extra,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            assert _wait_for_throwaway(sandbox, name, proc), "the proof never made its throwaway database"
        finally:
            # The whole tree at once, module processes and pg_restore included (a host or OOM kill): nothing gets
            # to clean up after itself (a module whose controller is merely gone drops its own database).
            kill_tree([proc.pid, *descendants(proc.pid)])
            proc.wait(timeout=30)
        left = [n for n in throwaways(sandbox) if n.startswith(name)]
        assert left, "the killed proof left nothing behind (nothing for the next run to clean up)"
        assert record_of(s3_target, prefix, manifest["backup_id"]) is None

        run = run_playbook("playbooks/prove.yml", prove_vars(prefix, tmp_path, rx))
        assert run.rc == 0, run.stdout[-4000:]
        (cleanup, *_rest) = [r for r in run.results("pgdr.supabase.proof") if "dropped" in r and "in_use" in r]
        assert sorted(cleanup["dropped"]) == sorted(left), cleanup
        assert f"PROOF PASSED: {manifest['backup_id']}" in run.stdout
        assert [n for n in throwaways(sandbox) if n.startswith(name)] == []
        assert foreign in throwaways(sandbox)  # no marker: not made by a restore, left alone
    finally:
        drop_database(sandbox, foreign)
        for leftover in [n for n in throwaways(sandbox) if n.startswith(name)]:
            drop_database(sandbox, leftover)


def test_the_monitor_alerts_on_a_stale_proof(run_playbook, sandbox, s3_target, prefix, tmp_path, rx):
    manifest = take_backup(sandbox, s3_target, prefix)
    assert run_playbook("playbooks/prove.yml", prove_vars(prefix, tmp_path, rx)).rc == 0
    sinks = [{"type": "webhook", "name": "chat", "url": rx.url(HOOK)}]
    base = {"pgdr_backup_prefix": prefix, "pgdr_monitor_proof": True, "pgdr_monitor_sinks": sinks}

    fresh = run_playbook("playbooks/monitor.yml", base)
    assert fresh.rc == 0, fresh.stdout[-3000:]
    (checks,) = fresh.results("pgdr.supabase.freshness")
    [check] = [c for c in checks["checks"] if c["name"] == "proof"]
    assert check["ok"] and check["newest_proven_backup_id"] == manifest["backup_id"]

    # 27 h later, with backups still taken (a logical threshold that keeps them fresh) but no proof since.
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=27)).strftime("%Y-%m-%dT%H:%M:%SZ")
    # monitor_now: the old name of freshness_now, which playbooks/monitor.yml still takes.
    stale = run_playbook("playbooks/monitor.yml", {**base, "monitor_now": later, "pgdr_monitor_max_age_s": 200000})
    assert stale.rc != 0
    (checks,) = stale.results("pgdr.supabase.freshness")
    assert checks["stale"] == ["proof"]
    assert f"newest proven backup {manifest['backup_id']}" in stale.stdout
    assert "older than 26.0 h: the proofs stopped or fail" in stale.stdout
    assert any("STALE" in json.loads(body)["text"] and "proof" in json.loads(body)["text"] for body in rx.bodies(HOOK))


def test_check_mode_changes_nothing(run_playbook, sandbox, s3_target, prefix, tmp_path, rx):
    manifest = take_backup(sandbox, s3_target, prefix)
    # A leftover of a killed proof (its marker says a restore made it): check mode only says it would drop it.
    leftover = throwaway("20010203T000000Z")
    with psycopg.connect(dsn_for(sandbox, "staging", "postgres"), autocommit=True) as conn:
        conn.execute(f'create database "{leftover}" template platform_template')
        marker = json.dumps({"backup_id": "20010203T000000Z", "status": "restoring"})
        conn.execute(f"comment on database \"{leftover}\" is 'pgdr:{marker}'")
    try:
        before = staging_state(sandbox), sorted(s3_target.list_keys(f"{prefix}/"))
        run = run_playbook("playbooks/prove.yml", prove_vars(prefix, tmp_path, rx), check=True, diff=True)
        assert run.rc == 0, run.stdout[-4000:]
        assert (staging_state(sandbox), sorted(s3_target.list_keys(f"{prefix}/"))) == before
        assert not (tmp_path / "metrics").exists() and rx.requests == []
        assert "would drop 1 throwaway database(s) left by earlier proofs" in run.stdout and leftover in run.stdout
        assert f"would restore backup {manifest['backup_id']}" in run.stdout
        assert "(would be written)" in run.stdout
        assert record_of(s3_target, prefix, manifest["backup_id"]) is None
        assert leftover in throwaways(sandbox)
    finally:
        drop_database(sandbox, leftover)


def test_a_database_over_the_cap_is_skipped_with_the_reason(run_playbook, sandbox, s3_target, prefix, tmp_path, rx):
    manifest = take_backup(sandbox, s3_target, prefix)
    before = staging_state(sandbox), sorted(s3_target.list_keys(f"{prefix}/"))
    run = run_playbook("playbooks/prove.yml", prove_vars(prefix, tmp_path, rx, pgdr_prove_max_database_bytes=1000))
    assert run.rc == 0, run.stdout[-3000:]
    assert "PROOF SKIPPED" in run.stdout and "over this schedule's cap of 1000 bytes" in run.stdout
    assert "pgdr_prove_max_database_bytes=0" in run.stdout
    assert run.changed() == 0
    assert (staging_state(sandbox), sorted(s3_target.list_keys(f"{prefix}/"))) == before
    assert record_of(s3_target, prefix, manifest["backup_id"]) is None


def test_a_proof_that_cannot_start_alerts(run_playbook, prefix, tmp_path, rx):
    run = run_playbook("playbooks/prove.yml", prove_vars(prefix, tmp_path, rx))
    assert run.rc != 0
    assert "the proof could not start" in run.stdout and "no complete backup of 'production'" in run.stdout
    [body] = rx.bodies(HOOK)
    text = json.loads(body)["text"]
    assert text.startswith("pgdr proof of production (local) FAILED: the proof could not start")
    assert metrics(tmp_path)["pgdr_proof_failures_total"] == 1

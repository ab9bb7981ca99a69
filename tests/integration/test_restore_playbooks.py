"""restore.yml and drill.yml through ansible-runner against the sandbox: the whole chain, its idempotence,
check mode, and each failure the runbook must stop on (with a record of it)."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

import psycopg
import pytest
from backup_helpers import drop_database, dsn_for, signing_key

from ansible_collections.pgdr.supabase.plugins.module_utils import catalog, logical_backup

pytestmark = pytest.mark.integration


def take_backup(state, target, prefix, moment=None):
    """A signed backup with an id of its own (a random past moment unless given), so its restored (or throwaway)
    database is this test's alone."""
    moment = moment or dt.datetime(2020, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=random.randrange(10**8))
    req = logical_backup.BackupRequest(
        "production",
        state["production"]["dsn"],
        target,
        prefix=prefix,
        window="every_run",
        now=moment,
        signing_key=signing_key(state),
    )
    return logical_backup.run(req)["manifest"]


def staging_databases(state):
    with psycopg.connect(dsn_for(state, "staging", "postgres")) as conn:
        return sorted(r[0] for r in conn.execute("select datname from pg_database"))


def restore_vars(prefix, tmp_path, **extra):
    return {
        "pgdr_backup_prefix": prefix,
        "reason": "integration test",
        "pgdr_incidents_path": str(tmp_path / "ops" / "incidents.md"),
        "pgdr_events_path": str(tmp_path / "ops" / "events.jsonl"),
        "pgdr_reports_dir": str(tmp_path / "reports"),
        **extra,
    }


def events(tmp_path):
    path = tmp_path / "ops" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def secrets(state):
    return [state["s3"]["secret_key"], state["production"]["password"], state["staging"]["password"]]


def assert_no_secrets(run, state):
    for secret in secrets(state):
        assert secret not in run.stdout


@pytest.fixture
def restored_db(sandbox):
    names = []
    yield names
    for name in names:
        drop_database(sandbox, name)


def project_marker(state):
    with psycopg.connect(state["staging"]["dsn"]) as conn:
        return conn.execute("select marker from pgdr_restore.marker").fetchone()[0]


def test_restore_then_again_changes_nothing(run_playbook, sandbox, s3_target, prefix, tmp_path):
    manifest = take_backup(sandbox, s3_target, prefix)
    env_file = Path(sandbox["env_files"]["staging"])

    # The sandbox's inventory restores into the staging project's own database (restore_mode project).
    run = run_playbook("restore.yml", restore_vars(prefix, tmp_path))
    assert run.rc == 0, run.stdout
    marker = project_marker(sandbox)
    assert marker["backup_id"] == manifest["backup_id"] and marker["status"] == "complete"
    assert marker["verified"]["ok"] is True and not marker["verified"]["failed"]
    assert sandbox["staging"]["dsn"].rsplit("@", 1)[1] in env_file.read_text()
    assert "RESTORE PASSED" in run.stdout and "RUN REPORT: PASSED" in run.stdout
    [event] = events(tmp_path)
    assert event["outcome"] == "success" and event["backup"]["id"] == manifest["backup_id"]
    assert event["initiator"] and event["reason"] == "integration test"
    assert event["rto_s"] > 0 and event["rpo_s"] is not None
    names = {c["name"] for c in event["checks"]}
    assert {"migrations", "catalog", "content", "participants_join_rejoin", "tenant_isolation_events"} <= names
    assert all(c["ok"] for c in event["checks"])
    report = Path(event_report(tmp_path))
    assert "PASSED" in report.read_text() and manifest["objects"][2]["sha256"] in report.read_text()
    assert_no_secrets(run, sandbox)

    env_before = env_file.read_bytes()
    again = run_playbook("restore.yml", restore_vars(prefix, tmp_path))
    assert again.rc == 0, again.stdout
    assert again.changed() == 0
    assert env_file.read_bytes() == env_before
    # The second run is recorded too, as a run that changed nothing.
    assert [e["changed"] for e in events(tmp_path)] == [True, False]


def event_report(tmp_path):
    [report] = sorted((tmp_path / "reports").glob("*.md"))
    return report


def test_check_mode_plans_every_step_and_touches_nothing(run_playbook, sandbox, s3_target, prefix, tmp_path):
    manifest = take_backup(sandbox, s3_target, prefix)
    env_files = {name: Path(path).read_bytes() for name, path in sandbox["env_files"].items()}
    before = staging_databases(sandbox), sorted(s3_target.list_keys(f"{prefix}/"))
    run = run_playbook("restore.yml", restore_vars(prefix, tmp_path), check=True, diff=True)
    assert run.rc == 0, run.stdout
    assert (staging_databases(sandbox), sorted(s3_target.list_keys(f"{prefix}/"))) == before
    assert {name: Path(path).read_bytes() for name, path in sandbox["env_files"].items()} == env_files
    assert not (tmp_path / "ops").exists() and not (tmp_path / "reports").exists()
    out = run.stdout
    assert f"would restore backup {manifest['backup_id']}" in out
    assert "SUPABASE_DB_URL" in out
    assert "would run" in out or "would_run" in out
    assert "would record the event" in out
    assert_no_secrets(run, sandbox)


def test_a_task_level_check_mode_rehearsal_of_a_new_database_connects_to_nothing(
    run_playbook, sandbox, s3_target, prefix, tmp_path
):
    """check_mode on a block (as AWX workflows and molecule rehearse) leaves ansible_check_mode false: the role must
    take 'only planned' from the restore result, never touch the database that does not exist yet, and write no
    marker and no record."""
    manifest = take_backup(sandbox, s3_target, prefix)
    play = tmp_path / "rehearse.yml"
    play.write_text(
        "- hosts: restore_hosts\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - name: Rehearse\n"
        "      check_mode: true\n"
        "      block:\n"
        "        - ansible.builtin.include_role:\n"
        "            name: pgdr.supabase.restore\n"
    )
    before = staging_databases(sandbox)
    env_before = Path(sandbox["env_files"]["staging"]).read_bytes()
    run = run_playbook(str(play), restore_vars(prefix, tmp_path))
    assert run.rc == 0, run.stdout[-6000:]
    assert staging_databases(sandbox) == before
    assert Path(sandbox["env_files"]["staging"]).read_bytes() == env_before
    assert not (tmp_path / "ops").exists() and not (tmp_path / "reports").exists()
    assert f"would restore backup {manifest['backup_id']}" in run.stdout
    assert "no restore marker" not in run.stdout


def test_corrupted_object_stops_before_anything_is_written(run_playbook, sandbox, s3_target, prefix, tmp_path):
    manifest = take_backup(sandbox, s3_target, prefix)
    data = next(o for o in manifest["objects"] if o.get("kind") == "data")
    body = bytearray(s3_target.client.get_object(Bucket=s3_target.bucket, Key=data["key"])["Body"].read())
    body[len(body) // 2] ^= 0x01
    s3_target.client.put_object(Bucket=s3_target.bucket, Key=data["key"], Body=bytes(body))
    before = staging_databases(sandbox)
    env_before = Path(sandbox["env_files"]["staging"]).read_bytes()
    run = run_playbook("restore.yml", restore_vars(prefix, tmp_path))
    assert run.rc != 0
    assert f"object {data['name']} is corrupted" in run.stdout and data["key"] in run.stdout
    assert staging_databases(sandbox) == before
    assert Path(sandbox["env_files"]["staging"]).read_bytes() == env_before
    [event] = events(tmp_path)
    assert event["outcome"] == "failed" and "corrupted" in event["details"]["error"]


def test_migrations_that_differ_from_the_folder_are_reported(run_playbook, sandbox, s3_target, prefix, tmp_path):
    take_backup(sandbox, s3_target, prefix)
    folder = tmp_path / "migrations"
    folder.mkdir()
    for path in Path(sandbox["app"]["migrations_dir"]).glob("*.sql"):
        (folder / path.name).write_text(path.read_text())
    (folder / "20230101000000_forgotten.sql").write_text("select 1;\n")
    run = run_playbook("restore.yml", restore_vars(prefix, tmp_path, pgdr_migrations_dir=str(folder)))
    assert run.rc != 0
    assert "20230101000000" in run.stdout
    [event] = events(tmp_path)
    [check] = [c for c in event["checks"] if c["name"] == "migrations"]
    assert not check["ok"] and "20230101000000" in json.dumps(check)


def test_a_dropped_tenant_policy_fails_the_smoke_tests_by_name(run_playbook, sandbox, s3_target, prefix, tmp_path):
    take_backup(sandbox, s3_target, prefix)
    assert run_playbook("restore.yml", restore_vars(prefix, tmp_path)).rc == 0
    with psycopg.connect(sandbox["staging"]["dsn"], autocommit=True) as conn:
        policies = conn.execute(
            "select policyname from pg_policies where schemaname = 'public' and tablename = 'events'"
        ).fetchall()
        assert policies
        for (name,) in policies:
            conn.execute(f'drop policy "{name}" on public.events')
        conn.execute("create policy wide_open on public.events for select to authenticated using (true)")
    # The restore finds its marker and changes nothing; the checks run again and catch the damage (verify names
    # the policies, the smoke test the leak), and the marker records the failed verification for promote.
    run = run_playbook("restore.yml", restore_vars(prefix, tmp_path))
    assert run.rc != 0
    assert "tenant_isolation_events" in run.stdout
    assert "policy: public.events.wide_open is not in the backup" in run.stdout
    failed = [e for e in events(tmp_path) if e["outcome"] == "failed"]
    assert failed and any(c["name"] == "tenant_isolation_events" and not c["ok"] for c in failed[-1]["checks"])
    assert project_marker(sandbox)["verified"]["ok"] is False


def test_staging_is_re_pointed_only_at_a_verified_database(run_playbook, sandbox, s3_target, prefix, tmp_path):
    """A new database whose smoke tests fail: the staging env keeps its previous value, byte for byte."""
    take_backup(sandbox, s3_target, prefix)
    failing = tmp_path / "checks"
    failing.mkdir()
    (failing / "always_fails.sql").write_text("-- expect: rows=0\nselect 1")
    env_file = Path(sandbox["env_files"]["staging"])
    before = env_file.read_bytes()
    database = f"repoint_{prefix.replace('-', '_')[-10:]}"
    extra = restore_vars(
        prefix,
        tmp_path,
        pgdr_restore_mode="new_database",
        pgdr_restore_database=database,
        pgdr_restore_skip_extensions=["pg_cron"],
        pgdr_smoke_checks_dir=str(failing),
    )
    try:
        run = run_playbook("restore.yml", extra)
        assert run.rc != 0
        assert "FAIL always_fails" in run.stdout
        assert database in staging_databases(sandbox)
        assert env_file.read_bytes() == before
    finally:
        drop_database(sandbox, database)


def test_production_is_refused_without_typed_confirmation(run_playbook, sandbox, s3_target, prefix, tmp_path):
    take_backup(sandbox, s3_target, prefix)
    with psycopg.connect(sandbox["production"]["dsn"]) as conn:
        before = conn.execute("select count(*) from public.tenants").fetchone()[0]
    extra = {"pgdr_restore_target_dsn": sandbox["production"]["dsn"], "pgdr_restore_mode": "project"}
    run = run_playbook("restore.yml", restore_vars(prefix, tmp_path, **extra))
    assert run.rc != 0
    assert "the restore target is a production database" in run.stdout
    where = f"{sandbox['production']['host']}:{sandbox['production']['port']}/postgres"
    assert f"confirm={where}" in run.stdout
    with psycopg.connect(sandbox["production"]["dsn"]) as conn:
        assert conn.execute("select count(*) from public.tenants").fetchone()[0] == before


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"backup": "20200101T000001Z"}, "unknown backup id 20200101T000001Z"),
        ({"backup": "before:2001-01-01T00:00:00Z"}, "no complete backup of 'production' was taken before"),
        ({"backup": "yesterday"}, "'yesterday' is not a backup id"),
        (
            {"pgdr_restore_target_dsn": "postgresql://postgres:x@127.0.0.1:1/postgres"},
            "cannot reach the database server",
        ),
        ({"pgdr_migrations_dir": "/nonexistent/migrations"}, "The migrations folder /nonexistent/migrations"),
        (
            {"pgdr_staging_env_store": {"type": "dotenv", "path": "/nonexistent/env/staging.env"}},
            "folder /nonexistent/env does not exist",
        ),
    ],
)
def test_bad_input_fails_early_naming_it(run_playbook, sandbox, s3_target, prefix, tmp_path, extra, expected):
    take_backup(sandbox, s3_target, prefix)
    before = staging_databases(sandbox)
    run = run_playbook("restore.yml", restore_vars(prefix, tmp_path, **extra))
    assert run.rc != 0
    assert expected in run.stdout, run.stdout[-3000:]
    assert staging_databases(sandbox) == before


def test_restore_needs_a_reason(run_playbook, sandbox, prefix, tmp_path):
    extra = restore_vars(prefix, tmp_path)
    extra["reason"] = ""
    run = run_playbook("restore.yml", extra)
    assert run.rc != 0 and 'Say why: -e reason="..."' in run.stdout


def test_drill_restores_the_latest_backup_and_never_promotes(run_playbook, sandbox, s3_target, prefix, tmp_path):
    take_backup(sandbox, s3_target, prefix)
    newest = take_backup(sandbox, s3_target, prefix)
    latest = catalog.list_backups(s3_target, prefix, "production")[0]["backup_id"]
    production_env = Path(sandbox["env_files"]["production"]).read_bytes()
    extra = restore_vars(prefix, tmp_path, promote=True, promote_confirm="sandbox-production")
    extra.pop("reason")
    run = run_playbook("playbooks/drill.yml", extra)
    assert run.rc == 0, run.stdout
    [event] = events(tmp_path)
    assert event["kind"] == "drill" and event["backup"]["id"] == latest
    assert event["reason"] == "quarterly restore drill"
    assert Path(sandbox["env_files"]["production"]).read_bytes() == production_env
    assert newest["backup_id"] in (latest, newest["backup_id"])

"""promote.yml and rollback.yml through ansible-runner against the sandbox's dotenv stores, as an operator runs them.

The smoke tests are switched off (promote_run_smoke_tests=false) except in the one test that needs the
smoke_tests role, which is skipped while that role does not exist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ansible_collections.pgdr.supabase.plugins.module_utils import envstore_dotenv

pytestmark = pytest.mark.integration

TARGET = "sandbox-production"
NO_SMOKE = {"promote_run_smoke_tests": False}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def env_files(sandbox):
    """The sandbox's env files, put back byte for byte (and the rollback record removed) after each test."""
    production = Path(sandbox["env_files"]["production"])
    staging = Path(sandbox["env_files"]["staging"])
    record = Path(f"{production}.pgdr-rollback.json")
    saved = {p: p.read_bytes() for p in (production, staging)}
    record.unlink(missing_ok=True)
    yield production, staging, record
    for path, data in saved.items():
        path.write_bytes(data)
    record.unlink(missing_ok=True)


def secrets(state):
    found = [state["production"]["password"], state["staging"]["password"], state["s3"]["secret_key"]]
    for target in ("production", "staging"):
        found += [state[target].get("anon_key"), state[target].get("service_role_key")]
    return [s for s in found if s]


def assert_no_secrets(run, state):
    for secret in secrets(state):
        assert secret not in run.stdout
        for event in run.events:
            assert secret not in str(event.get("stdout", ""))


def db_urls(path):
    values = envstore_dotenv.parse_dotenv(path.read_text())
    return values["SUPABASE_DB_URL"], values["DATABASE_URL"]


def test_promote_without_confirmation_fails_naming_the_value(run_playbook, sandbox, env_files):
    production, _, record = env_files
    before = production.read_bytes()
    for extra in ({}, {"promote_confirm": "production"}):
        run = run_playbook("playbooks/promote.yml", {**NO_SMOKE, **extra, "promote_dsn": sandbox["staging"]["dsn"]})
        assert run.rc != 0
        assert f"-e promote_confirm={TARGET}" in run.stdout
        assert production.read_bytes() == before and not record.exists()
        assert_no_secrets(run, sandbox)


def test_promote_then_again_then_rollback(run_playbook, sandbox, env_files):
    production, _, record = env_files
    original = production.read_bytes()
    staging_dsn = sandbox["staging"]["dsn"]
    extra = {**NO_SMOKE, "promote_dsn": staging_dsn, "promote_confirm": TARGET, "reason": "integration test"}

    check = run_playbook("playbooks/promote.yml", extra, check=True, diff=True)
    assert check.rc == 0, check.stdout
    assert production.read_bytes() == original and not record.exists()
    assert "postgresql://postgres:********@" in check.stdout

    first = run_playbook("playbooks/promote.yml", extra, diff=True)
    assert first.rc == 0, first.stdout
    assert first.changed() == 2  # the swap, and its record
    assert db_urls(production) == (staging_dsn, staging_dsn)
    # Only the two swapped lines differ.
    changed = [
        (a, b)
        for a, b in zip(original.decode().splitlines(), production.read_text().splitlines(), strict=True)
        if a != b
    ]
    assert [a.split("=")[0] for a, _ in changed] == ["SUPABASE_DB_URL", "DATABASE_URL"]
    [result] = [r for r in first.results("pgdr.supabase.promote") if r.get("changed")]
    assert result["record"]["state"] == "promoted" and result["record"]["target"] == TARGET
    assert result["record"]["reason"] == "integration test"
    promoted = production.read_bytes()

    second = run_playbook("playbooks/promote.yml", extra)
    assert second.rc == 0, second.stdout
    assert second.changed() == 0
    assert production.read_bytes() == promoted

    rollback_extra = {"rollback_confirm": TARGET, "reason": "integration test"}
    check_back = run_playbook("playbooks/rollback.yml", rollback_extra, check=True, diff=True)
    assert check_back.rc == 0, check_back.stdout
    assert production.read_bytes() == promoted

    back = run_playbook("playbooks/rollback.yml", rollback_extra)
    assert back.rc == 0, back.stdout
    assert back.changed() == 2  # the put-back, and its record
    assert production.read_bytes() == original

    again = run_playbook("playbooks/rollback.yml", rollback_extra)
    assert again.rc == 0 and again.changed() == 0
    assert production.read_bytes() == original
    for run in (check, first, second, check_back, back, again):
        assert_no_secrets(run, sandbox)


def test_promote_reads_the_dsn_staging_points_at(run_playbook, sandbox, env_files):
    production, staging, _ = env_files
    staging_dsn, _ = db_urls(staging)
    run = run_playbook("playbooks/promote.yml", {**NO_SMOKE, "promote_confirm": TARGET})
    assert run.rc == 0, run.stdout
    assert db_urls(production) == (staging_dsn, staging_dsn)
    assert_no_secrets(run, sandbox)


def test_promote_fails_when_staging_has_no_dsn(run_playbook, sandbox, env_files):
    production, staging, _ = env_files
    before = production.read_bytes()
    staging.write_text("# nothing here\n")
    run = run_playbook("playbooks/promote.yml", {**NO_SMOKE, "promote_confirm": TARGET})
    assert run.rc != 0
    assert "staging env store has no SUPABASE_DB_URL" in run.stdout and "-e promote_dsn=" in run.stdout
    assert production.read_bytes() == before


def test_rollback_needs_confirmation_and_a_record(run_playbook, sandbox, env_files):
    production, _, _ = env_files
    before = production.read_bytes()
    run = run_playbook("playbooks/rollback.yml", {})
    assert run.rc != 0 and f"-e rollback_confirm={TARGET}" in run.stdout
    run = run_playbook("playbooks/rollback.yml", {"rollback_confirm": TARGET})
    assert run.rc != 0 and "no rollback record" in run.stdout
    assert production.read_bytes() == before
    assert_no_secrets(run, sandbox)


def record_vars(tmp_path):
    return {
        "pgdr_incidents_path": str(tmp_path / "ops" / "incidents.md"),
        "pgdr_events_path": str(tmp_path / "ops" / "events.jsonl"),
        "pgdr_reports_dir": str(tmp_path / "reports"),
        "pgdr_history_path": str(tmp_path / "reports" / "history.html"),
    }


def test_every_promote_and_rollback_run_is_recorded(run_playbook, sandbox, env_files, tmp_path):
    extra = {**NO_SMOKE, **record_vars(tmp_path), "promote_dsn": sandbox["staging"]["dsn"], "reason": "primary lost"}
    runs = [
        run_playbook("playbooks/promote.yml", {**extra, "promote_confirm": "production"}),  # refused
        run_playbook("playbooks/promote.yml", {**extra, "promote_confirm": TARGET}),
        run_playbook("playbooks/promote.yml", {**extra, "promote_confirm": TARGET, "reason": "again"}),
        run_playbook("playbooks/rollback.yml", {**record_vars(tmp_path), "rollback_confirm": TARGET, "reason": "bad"}),
        run_playbook("playbooks/rollback.yml", {**record_vars(tmp_path), "rollback_confirm": TARGET, "reason": "bad"}),
    ]
    assert [r.rc == 0 for r in runs] == [False, True, True, True, True]
    path = tmp_path / "ops" / "events.jsonl"
    recorded = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(e["kind"], e["outcome"], e["changed"]) for e in recorded] == [
        ("promote", "failed", False),
        ("promote", "success", True),
        ("promote", "success", False),
        ("rollback", "success", True),
        ("rollback", "success", False),
    ]
    assert f"-e promote_confirm={TARGET}" in recorded[0]["details"]["error"]
    assert [e["reason"] for e in recorded] == ["primary lost", "primary lost", "again", "bad", "bad"]
    assert all(e["target"] == TARGET for e in recorded)
    assert [p["action"] for p in recorded[1]["details"]["plan"]] == ["change", "change"]
    for event in recorded:
        page = Path(event["report"]["html"]).read_text()
        for secret in secrets(sandbox):
            assert secret not in page
    assert runs[2].changed() == 0 and runs[4].changed() == 0
    for run in runs:
        assert_no_secrets(run, sandbox)
    history = (tmp_path / "reports" / "history.html").read_text()
    assert history.count("<tr><td>2") == 5  # one row per run


@pytest.mark.skipif(not (REPO / "roles" / "smoke_tests").is_dir(), reason="role smoke_tests does not exist yet")
def test_promote_runs_the_smoke_tests_first(run_playbook, sandbox, env_files):
    production, _, _ = env_files
    before = production.read_bytes()
    # Promoting production's own DSN changes nothing but still runs the smoke tests against it.
    run = run_playbook(
        "playbooks/promote.yml", {"promote_dsn": sandbox["production"]["dsn"], "promote_confirm": TARGET}
    )
    assert run.rc == 0, run.stdout
    assert "smoke_tests" in run.stdout
    assert run.changed() == 0 and production.read_bytes() == before
    assert_no_secrets(run, sandbox)

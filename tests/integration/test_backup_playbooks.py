"""backup.yml and list_backups.yml through ansible-runner against the sandbox, as an operator runs them."""

from __future__ import annotations

import pytest
from backup_helpers import row_counts
from conftest import s3_params

from ansible_collections.pgdr.supabase.plugins.module_utils import catalog, pg

pytestmark = pytest.mark.integration

# backup.yml with the dump only (no immutable copy, Storage files or config snapshot), for tests about the dump.
DUMP_ONLY = {
    "pgdr_backup_secondary_copy": False,
    "pgdr_backup_storage_assets": False,
    "pgdr_backup_config_snapshot": False,
}


def source_state(state):
    """What a run must not change on the source: schema objects and row counts."""
    dsn = state["production"]["dsn"]
    with pg.connect(dsn) as conn:
        objects = pg.schema_objects(conn, "supabase")
        tables = [name.split(".", 1) for name in (f"{s}.{t}" for s, t in pg.user_tables(conn, "supabase"))]
    return objects, row_counts(dsn, [f"{s}.{t}" for s, t in tables])


def bucket_state(target):
    return sorted(target.list_keys("")), sorted(target.list_uploads(""))


def secrets(state):
    return [state["s3"]["secret_key"], state["production"]["password"], state["staging"]["password"]]


def assert_no_secrets(run, state):
    for secret in secrets(state):
        assert secret not in run.stdout
        for event in run.events:
            assert secret not in str(event.get("stdout", ""))


def test_check_mode_on_a_fresh_prefix_touches_nothing(run_playbook, sandbox, s3_target, prefix):
    before = bucket_state(s3_target), source_state(sandbox)
    run = run_playbook("backup.yml", {"pgdr_backup_prefix": prefix}, check=True)
    assert run.rc == 0, run.stdout
    assert (bucket_state(s3_target), source_state(sandbox)) == before
    assert "would take backup" in run.stdout
    assert "would copy backup" in run.stdout
    for name in ("roles.sql.zst", "schema.pgdump.zst", "index.json.zst", "data-NNNN.copy.zst", "manifest.json"):
        assert f"s3://{s3_target.bucket}/{prefix}/production/logical/" in run.stdout and name in run.stdout
    assert_no_secrets(run, sandbox)


def test_backup_then_again_changes_nothing(run_playbook, sandbox, s3_target, prefix):
    first = run_playbook("backup.yml", {"pgdr_backup_prefix": prefix})
    assert first.rc == 0, first.stdout
    [result] = first.results("pgdr.supabase.logical_backup")
    assert result["changed"] is True
    # The immutable copy, the Storage files and the config snapshot ran too, and were secured/recorded.
    assert first.results("pgdr.supabase.secure_backup")[0]["changed"] is True
    assert first.results("pgdr.supabase.storage_backup") and first.results("pgdr.supabase.config_snapshot")
    manifest = result["manifest"]
    # The closing lines name the backup, its size, duration and every object's checksum.
    assert f"backup {result['backup_id']} of production" in first.stdout
    assert "RUN REPORT: PASSED" in first.stdout
    for obj in manifest["objects"]:
        assert obj["sha256"] in first.stdout
    listing = bucket_state(s3_target)

    second = run_playbook("backup.yml", {"pgdr_backup_prefix": prefix})
    assert second.rc == 0, second.stdout
    assert second.changed() == 0
    assert "exists already, nothing to do" in second.stdout
    assert bucket_state(s3_target) == listing

    # --check once the backup exists: nothing to do, and it says so.
    check = run_playbook("backup.yml", {"pgdr_backup_prefix": prefix}, check=True)
    assert check.rc == 0 and check.changed() == 0
    for run in (first, second, check):
        assert_no_secrets(run, sandbox)


def test_listing_shows_complete_and_incomplete_backups(run_playbook, sandbox, s3_target, prefix):
    assert run_playbook("backup.yml", {"pgdr_backup_prefix": prefix, **DUMP_ONLY}).rc == 0
    # An unfinished run's leftovers: an object without a manifest.
    s3_target.put_bytes(f"{prefix}/production/logical/20200101T000000Z/data.pgdump.zst", b"partial")
    run = run_playbook("playbooks/list_backups.yml", {"pgdr_backup_prefix": prefix})
    assert run.rc == 0, run.stdout
    [result] = run.results("pgdr.supabase.backup_info")
    rows = result["backups"]
    assert [r["complete"] for r in rows] == [True, False]
    assert rows[1]["backup_id"] == "20200101T000000Z"
    assert "2 backup(s)" in run.stdout and "INCOMPLETE" in run.stdout
    assert_no_secrets(run, sandbox)


def test_wrong_s3_secret_fails_clearly_without_leaking(run_playbook, sandbox, prefix):
    params = s3_params(sandbox)
    params["secret_key"] = "not-the-secret-" + "x" * 20
    run = run_playbook("backup.yml", {"pgdr_backup_prefix": prefix, "pgdr_backup_s3": params})
    assert run.rc != 0
    [result] = run.results("pgdr.supabase.logical_backup")
    assert "credentials" in result["msg"] and params["bucket"] in result["msg"]
    assert "not-the-secret-" not in run.stdout
    assert_no_secrets(run, sandbox)


def test_unreachable_source_fails_naming_it(run_playbook, sandbox, prefix):
    run = run_playbook(
        "backup.yml",
        {"pgdr_backup_prefix": prefix, "pgdr_source_dsn": "postgresql://postgres:hunter2hunter2@127.0.0.1:1/postgres"},
    )
    assert run.rc != 0
    [result] = run.results("pgdr.supabase.logical_backup")
    assert "[connect source] cannot reach the database server" in result["msg"]
    assert "127.0.0.1:1/postgres" in result["msg"]
    assert "hunter2hunter2" not in run.stdout


def test_manifest_is_the_only_commit(sandbox, s3_target, prefix, run_playbook):
    """A listing never offers a folder without a manifest as a backup to restore."""
    assert run_playbook("backup.yml", {"pgdr_backup_prefix": prefix, **DUMP_ONLY}).rc == 0
    rows = catalog.list_backups(s3_target, prefix, "production", include_incomplete=False)
    assert len(rows) == 1 and rows[0]["complete"]

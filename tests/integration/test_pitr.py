"""Point-in-time recovery with pgBackRest against the sandbox: archiving on production, a full backup, a restore to a
time into a new cluster, and each way a restore must refuse. Each test module run uses a repository path, a
configuration file and a folder of restored clusters of its own; at the end it stops every restored cluster and puts
production's archive_command back."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from ansible_collections.pgdr.supabase.plugins.module_utils import pgbackrest, timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils import pgbackrest_restore as pb_restore
from sandboxlib import pitr as pitr_sandbox

pytestmark = pytest.mark.integration

RUN_ID = uuid.uuid4().hex[:8]
TIMINGS = {}


@pytest.fixture(scope="module")
def world():
    return {}


def vars_for(sandbox):
    pg_root = sandbox["pg_root"]
    return {
        "pgdr_pgbackrest_repo_path": f"/pgbackrest/test-{RUN_ID}",
        "pgdr_pgbackrest_config_file": f"{pg_root}/pgbackrest/test-{RUN_ID}.conf",
        "pgdr_pgbackrest_work_dir": f"{pg_root}/pgbackrest/test-{RUN_ID}",
        "pgdr_pitr_root": f"{pg_root}/pitr/test-{RUN_ID}",
    }


def sql(sandbox, query, params=None, admin=False):
    """A query on production, as the app's postgres or (for the WAL functions) as the cluster's superuser."""
    with psycopg.connect(sandbox["production"]["admin_dsn" if admin else "dsn"], autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else None


def archive_settings(sandbox):
    return dict(
        sql(sandbox, "select name, setting from pg_settings where name in ('archive_command', 'archive_timeout')")
    )


def secrets(sandbox, cipher_pass):
    return [sandbox["s3"]["secret_key"], sandbox["production"]["password"], cipher_pass]


def assert_no_secrets(run, sandbox, cipher_pass):
    for secret in secrets(sandbox, cipher_pass):
        assert secret not in run.stdout
        for event in run.events:
            assert secret not in json.dumps(event.get("event_data", {}).get("res", {}))


@pytest.fixture
def pitr(world, run_playbook, sandbox, sandbox_dir):
    """Production archiving into this run's repository, with one full backup (made once per module)."""
    if "backup" not in world:
        extra = vars_for(sandbox)
        world["vars"] = extra
        world["sandbox"] = sandbox
        world["before_setup"] = archive_settings(sandbox)
        world["check"] = run_playbook("playbooks/pitr_setup.yml", extra, check=True)
        world["after_check"] = archive_settings(sandbox)
        world["config_after_check"] = Path(extra["pgdr_pgbackrest_config_file"]).exists()
        # Just before the first backup: a time nothing can be restored to.
        world["before_backup"] = sql(sandbox, "select clock_timestamp()")[0][0]
        t0 = time.monotonic()
        world["setup"] = run_playbook("playbooks/pitr_setup.yml", extra)
        TIMINGS["setup_s"] = round(time.monotonic() - t0, 2)
        assert world["setup"].rc == 0, world["setup"].stdout
        world["setup_again"] = run_playbook("playbooks/pitr_setup.yml", extra)
        world["backup_check"] = run_playbook("playbooks/pitr_backup.yml", {**extra, "type": "incr"}, check=True)
        t0 = time.monotonic()
        world["backup"] = run_playbook("playbooks/pitr_backup.yml", {**extra, "type": "full"})
        TIMINGS["full_backup_playbook_s"] = round(time.monotonic() - t0, 2)
        assert world["backup"].rc == 0, world["backup"].stdout
        world["cipher_pass"] = (Path(sandbox_dir) / "secrets" / "pgbackrest-cipher").read_text().strip()
    return world


@pytest.fixture(scope="module", autouse=True)
def cleanup(world):
    """Stop every restored cluster (before anyone stops S3) and put production's archive settings back."""
    yield
    sandbox = world.get("sandbox")
    if not sandbox:
        return
    stopped = pitr_sandbox.stop_restored(sandbox, under=world["vars"]["pgdr_pitr_root"])
    assert stopped, "the test restored at least one cluster, which should have been running"
    assert not [
        d
        for d in pitr_sandbox.restored_data_dirs(sandbox)
        if pgbackrest.cluster_running(pgbackrest.bin_dir_for(str(d)), str(d))
    ]
    sql(sandbox, "alter system reset archive_command", admin=True)
    sql(sandbox, "alter system reset archive_timeout", admin=True)
    sql(sandbox, "select pg_reload_conf()", admin=True)
    if TIMINGS:
        print("\nPITR timings:", json.dumps(TIMINGS, indent=2))
        Path(sandbox["dir"], "pitr-timings.json").write_text(json.dumps(TIMINGS, indent=2) + "\n")


def test_setup_check_mode_touches_nothing(pitr):
    run = pitr["check"]
    assert run.rc == 0, run.stdout
    assert pitr["after_check"] == pitr["before_setup"]
    assert not pitr["config_after_check"]
    [result] = run.results("pgdr.supabase.pgbackrest_stanza")
    assert result["changed"]
    steps = " | ".join(result["plan"]["steps"])
    assert "write" in steps and "create stanza production" in steps and "set archive_command" in steps


def test_setup_configures_archiving_and_a_second_run_changes_nothing(pitr):
    assert pitr["setup"].changed() == 1
    settings = archive_settings(pitr["sandbox"])
    config = pitr["vars"]["pgdr_pgbackrest_config_file"]
    assert settings["archive_command"] == f"pgbackrest --config={config} --stanza=production archive-push %p"
    assert settings["archive_timeout"] == "60"
    st = Path(config).stat()
    assert oct(st.st_mode & 0o777) == "0o600" and st.st_uid == pgbackrest.postgres_ids()[0]
    again = pitr["setup_again"]
    assert again.rc == 0, again.stdout
    assert again.changed() == 0
    [result] = again.results("pgdr.supabase.pgbackrest_stanza")
    assert result["plan"]["steps"] == [] and result["check"]["ok"]
    for run in (pitr["check"], pitr["setup"], again):
        assert_no_secrets(run, pitr["sandbox"], pitr["cipher_pass"])


def test_backup_check_mode_predicts_full_then_full_backup(pitr):
    [plan] = pitr["backup_check"].results("pgdr.supabase.pgbackrest_backup")
    assert plan["type"] == "full" and plan["newest"] is None and "no full backup" in plan["note"]
    [result] = pitr["backup"].results("pgdr.supabase.pgbackrest_backup")
    assert result["changed"] and result["backup"]["type"] == "full"
    assert result["backup"]["wal_start"] and result["backup"]["stop"]
    TIMINGS["full_backup_s"] = result["duration_s"]
    assert_no_secrets(pitr["backup"], pitr["sandbox"], pitr["cipher_pass"])


def test_info_reports_backups_and_freshness(pitr, run_playbook):
    run = run_playbook("playbooks/pitr_info.yml", pitr["vars"])
    assert run.rc == 0, run.stdout
    [info] = run.results("pgdr.supabase.pgbackrest_info")
    assert info["exists"] and len(info["backups"]) == 1
    fresh = info["freshness"]
    assert fresh["rpo_ok"] and fresh["base_ok"]
    assert 0 <= fresh["newest_wal_age_s"] < 120 and 0 <= fresh["newest_base_backup_age_s"] < 120
    assert info["window"]["earliest"] == info["backups"][0]["stop"]


def test_restore_to_a_time_keeps_exactly_the_rows_before_it(pitr, run_playbook, sandbox):
    sql(
        sandbox,
        "create table if not exists pitr_probe"
        " (id serial primary key, note text, at timestamptz default clock_timestamp())",
    )
    sql(sandbox, "truncate pitr_probe")
    for i in range(5):
        sql(sandbox, "insert into pitr_probe(note) values (%s)", (f"before-{i}",))
    target = sql(sandbox, "select clock_timestamp()")[0][0]
    time.sleep(0.05)
    for i in range(3):
        sql(sandbox, "insert into pitr_probe(note) values (%s)", (f"after-{i}",))
    segment = sql(sandbox, "select pg_walfile_name(pg_switch_wal())", admin=True)[0][0]
    deadline = time.monotonic() + 30
    while (sql(sandbox, "select last_archived_wal from pg_stat_archiver")[0][0] or "") < segment:
        assert time.monotonic() < deadline, f"segment {segment} was not archived within 30 s"
        time.sleep(0.2)
    expected = [n for (n,) in sql(sandbox, "select note from pitr_probe where at <= %s order by id", (target,))]
    assert expected == [f"before-{i}" for i in range(5)]
    target_time = timefmt.iso_exact(target)
    extra = {**pitr["vars"], "target_time": target_time, "cluster": "to-target"}
    data_dir = Path(pitr["vars"]["pgdr_pitr_root"], "to-target", "data")

    # Check mode names the backup and the WAL range and creates nothing.
    plan_run = run_playbook("playbooks/pitr_restore.yml", extra, check=True)
    assert plan_run.rc == 0, plan_run.stdout
    [plan] = plan_run.results("pgdr.supabase.pgbackrest_restore")
    label = pitr["backup"].results("pgdr.supabase.pgbackrest_backup")[0]["backup"]["label"]
    assert plan["plan"]["action"] == "restore" and plan["plan"]["backup"]["label"] == label
    assert f"would restore full backup {label}" in plan_run.stdout and plan["plan"]["wal_range"]["to"] >= segment
    assert not data_dir.parent.exists()

    t0 = time.monotonic()
    run = run_playbook("playbooks/pitr_restore.yml", extra)
    TIMINGS["restore_playbook_s"] = round(time.monotonic() - t0, 2)
    assert run.rc == 0, run.stdout
    [result] = run.results("pgdr.supabase.pgbackrest_restore")
    assert result["changed"] and result["plan"]["backup"]["label"] == label
    TIMINGS.update({f"restore_{k}": v for k, v in result["timings"].items()})
    TIMINGS["achieved_rpo_s"] = result["rpo_s"]
    port = result["port"]
    # The restored cluster's own password for the runbooks (issue 15.7), not production's.
    own = (Path(sandbox["dir"]) / "secrets" / "pitr-runbook-password").read_text().strip()
    dsn = f"postgresql://postgres:{own}@127.0.0.1:{port}/postgres"
    with psycopg.connect(dsn) as conn:
        rows = [n for (n,) in conn.execute("select note from pitr_probe order by id")]
        assert rows == expected
        assert conn.execute("select pg_is_in_recovery()").fetchone()[0] is False
        assert conn.execute("show archive_mode").fetchone()[0] == "off"
    marker = json.loads((data_dir / pb_restore.MARKER).read_text())
    assert marker["target_time"] == target_time and marker["port"] == port
    assert_no_secrets(run, sandbox, pitr["cipher_pass"])

    # The same restore again: the cluster is up and promoted, so nothing changes.
    again = run_playbook("playbooks/pitr_restore.yml", extra)
    assert again.rc == 0, again.stdout
    assert again.changed() == 0
    [second] = again.results("pgdr.supabase.pgbackrest_restore")
    assert second["plan"]["action"] == "none" and second["port"] == port


def test_restore_before_the_first_backup_names_the_window(pitr, run_playbook):
    extra = {**pitr["vars"], "target_time": timefmt.iso_exact(pitr["before_backup"]), "cluster": "too-early"}
    run = run_playbook("playbooks/pitr_restore.yml", extra)
    assert run.rc != 0
    assert "is before the earliest restorable time" in run.stdout and "the restorable window is" in run.stdout
    assert not Path(pitr["vars"]["pgdr_pitr_root"], "too-early").exists()


def test_restore_with_a_wrong_cipher_passphrase_fails_clearly(pitr, run_playbook):
    extra = {**pitr["vars"], "target_time": "2030-01-01T00:00:00Z", "cluster": "wrong-pass"}
    run = run_playbook("playbooks/pitr_restore.yml", {**extra, "pgdr_pgbackrest_cipher_pass": "not-the-passphrase"})
    assert run.rc != 0
    assert "cannot decrypt the repository: the cipher passphrase is wrong" in run.stdout
    assert "not-the-passphrase" not in run.stdout
    assert not Path(pitr["vars"]["pgdr_pitr_root"], "wrong-pass").exists()


def test_restore_of_a_missing_stanza_fails_clearly(pitr, run_playbook):
    extra = {**pitr["vars"], "target_time": "2030-01-01T00:00:00Z", "cluster": "no-stanza"}
    run = run_playbook("playbooks/pitr_restore.yml", {**extra, "pgdr_pgbackrest_stanza": "nostanza"})
    assert run.rc != 0
    assert "stanza 'nostanza' does not exist" in run.stdout and "pitr_setup.yml" in run.stdout


def test_restore_after_the_newest_archived_wal_names_the_window(pitr, run_playbook):
    extra = {**pitr["vars"], "target_time": "2099-01-01T00:00:00Z", "cluster": "too-late"}
    run = run_playbook("playbooks/pitr_restore.yml", extra)
    assert run.rc != 0
    assert "is after the last archived commit" in run.stdout and "the restorable window is" in run.stdout


def test_restore_refuses_a_data_folder_that_holds_something(pitr, run_playbook):
    root = Path(pitr["vars"]["pgdr_pitr_root"], "occupied", "data")
    root.mkdir(parents=True)
    (root / "precious.txt").write_text("keep me\n")
    extra = {
        **pitr["vars"],
        "target_time": pitr["backup"].results("pgdr.supabase.pgbackrest_backup")[0]["backup"]["stop"],
    }
    run = run_playbook("playbooks/pitr_restore.yml", {**extra, "cluster": "occupied"})
    assert run.rc != 0
    assert "exists and is not empty" in run.stdout
    assert (root / "precious.txt").read_text() == "keep me\n" and len(list(root.iterdir())) == 1


def test_schedule_writes_one_cron_file_and_a_second_run_changes_nothing(pitr, run_playbook, tmp_path):
    extra = {
        **pitr["vars"],
        "pgdr_pgbackrest_schedule": True,
        "pitr_pgbackrest_cron_dir": str(tmp_path),
        "pitr_pgbackrest_check": False,
    }
    first = run_playbook("playbooks/pitr_setup.yml", extra)
    assert first.rc == 0, first.stdout
    assert first.changed() == 1
    text = (tmp_path / "pgdr-pgbackrest-production").read_text()
    config = pitr["vars"]["pgdr_pgbackrest_config_file"]
    for when, kind in (("15 1 * * 0", "full"), ("15 1 * * 1-6", "diff"), ("45 * * * *", "incr")):
        assert f"{when} postgres pgbackrest --config={config} --stanza=production backup --type={kind}" in text
    again = run_playbook("playbooks/pitr_setup.yml", extra)
    assert again.rc == 0 and again.changed() == 0, again.stdout

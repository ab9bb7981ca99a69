"""Point-in-time recovery as an on-call engineer meets it (issue 15), on the sandbox: a rehearsal that connects
nowhere, a target after the last archived commit, a failed attempt retried by the same command, two identical
restores through restore.yml (the second changes nothing, both recorded with the moment restored), the checks a
PITR can have (migrations, the catalog against the source's, pg_amcheck), and no production secret in the restored
cluster's folder.

One archiving setup and one full base backup per module (repository path, configuration file and folder of
restored clusters of its own); at the end every restored cluster is stopped and production's archive settings are
put back."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from ansible_collections.pgdr.supabase.plugins.module_utils import pgbackrest, pitr_verify, timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils import pgbackrest_restore as pb_restore
from sandboxlib import pitr as pitr_sandbox

pytestmark = pytest.mark.integration

RUN_ID = uuid.uuid4().hex[:8]
TABLE = f"pitr_fidelity_{RUN_ID}"
MEASURED = {}


def sql(sandbox, query, params=None):
    """A query on production as its superuser (the WAL functions need one)."""
    with psycopg.connect(sandbox["production"]["admin_dsn"], autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else None


def now(sandbox):
    return sql(sandbox, "select clock_timestamp()")[0][0]


def switch_and_wait(sandbox):
    """Close the current WAL segment and wait until production archived it."""
    segment = sql(sandbox, "select pg_walfile_name(pg_switch_wal())")[0][0]
    deadline = time.monotonic() + 60
    while (sql(sandbox, "select last_archived_wal from pg_stat_archiver")[0][0] or "") < segment:
        assert time.monotonic() < deadline, f"segment {segment} was not archived within 60 s"
        time.sleep(0.2)


def insert(sandbox, note):
    sql(sandbox, f"insert into public.{TABLE}(note) values (%s)", (note,))  # noqa: S608 - the test's own table


def rows_of(dsn):
    with psycopg.connect(dsn) as conn:
        return [n for (n,) in conn.execute(f"select note from public.{TABLE} order by id")]  # noqa: S608


def own_password(sandbox):
    return (Path(sandbox["dir"]) / "secrets" / "pitr-runbook-password").read_text().strip()


def restored_dsn(sandbox, port, password=None):
    return f"postgresql://postgres:{password or own_password(sandbox)}@127.0.0.1:{port}/postgres"


def production_secrets(sandbox, cipher_pass):
    return {
        "s3 writer secret key": sandbox["s3"]["writer"]["secret_key"],
        "s3 writer access key": sandbox["s3"]["writer"]["access_key"],
        "s3 admin secret key": sandbox["s3"]["secret_key"],
        "repository cipher passphrase": cipher_pass,
        "production password": sandbox["production"]["password"],
        "production superuser password": sandbox["production"]["admin_password"],
    }


@pytest.fixture(scope="module")
def world():
    return {}


@pytest.fixture
def pitr(world, run_playbook, sandbox, sandbox_dir, tmp_path_factory):
    """Production archiving into this module's repository with one full backup, and a probe table (made before
    the backup, so every restore has it and the catalogs compare)."""
    if "vars" not in world:
        pg_root = sandbox["pg_root"]
        extra = {
            "pgdr_pgbackrest_repo_path": f"/pgbackrest/fidelity-{RUN_ID}",
            "pgdr_pgbackrest_config_file": f"{pg_root}/pgbackrest/fidelity-{RUN_ID}.conf",
            "pgdr_pgbackrest_work_dir": f"{pg_root}/pgbackrest/fidelity-{RUN_ID}",
            "pgdr_pitr_root": f"{pg_root}/pitr/fidelity-{RUN_ID}",
        }
        world.update(vars=extra, sandbox=sandbox)
        sql(sandbox, f"create table public.{TABLE} (id serial primary key, note text)")
        insert(sandbox, "before-backup")
        setup = run_playbook("playbooks/pitr_setup.yml", {**extra, "pitr_pgbackrest_check": False})
        assert setup.rc == 0, setup.stdout[-3000:]
        t0 = time.monotonic()
        backup = run_playbook("playbooks/pitr_backup.yml", {**extra, "type": "full"})
        MEASURED["full_backup_playbook_s"] = round(time.monotonic() - t0, 2)
        assert backup.rc == 0, backup.stdout[-3000:]
        world["label"] = backup.results("pgdr.supabase.pgbackrest_backup")[0]["backup"]["label"]
        world["cipher_pass"] = (Path(sandbox_dir) / "secrets" / "pgbackrest-cipher").read_text().strip()
        world["records"] = tmp_path_factory.mktemp("pitr-records")
    return world


@pytest.fixture(scope="module", autouse=True)
def cleanup(world):
    yield
    sandbox = world.get("sandbox")
    if not sandbox:
        return
    pitr_sandbox.stop_restored(sandbox, under=world["vars"]["pgdr_pitr_root"])
    sql(sandbox, f"drop table if exists public.{TABLE}")
    sql(sandbox, "alter system reset archive_command")
    sql(sandbox, "alter system reset archive_timeout")
    sql(sandbox, "select pg_reload_conf()")
    if MEASURED:
        print("\nPITR fidelity measurements:", json.dumps(MEASURED, indent=2))


def record_vars(pitr, tmp_path):
    """restore.yml's records, reports and staging env store in folders of the test's own."""
    records = pitr["records"]
    env_file = records / "staging.env"
    env_file.touch()
    return {
        "reason": "issue 15 test",
        "pgdr_incidents_path": str(records / "incidents.md"),
        "pgdr_events_path": str(records / "events.jsonl"),
        "pgdr_reports_dir": str(records / "reports"),
        "pgdr_staging_env_store": {"type": "dotenv", "path": str(env_file)},
    }


def events(pitr):
    path = pitr["records"] / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class CountingListener:
    """A TCP port that counts every connection made to it (and answers nothing)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.count += 1
            conn.close()

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.sock.close()


def test_rehearsal_connects_nowhere_and_names_the_planned_cluster(pitr, run_playbook, sandbox, tmp_path):
    """Issue 15.1: with PGHOST/PGPORT pointing elsewhere, --check of a PITR restore reads the repository, plans,
    and connects to no database: the checks list what they would do on the planned cluster."""
    insert(pitr["sandbox"], "rehearsal")
    target = timefmt.iso_exact(now(sandbox))
    time.sleep(0.05)
    insert(pitr["sandbox"], "after-rehearsal")  # a commit after the target, so the target is reachable
    switch_and_wait(sandbox)
    listener = CountingListener()
    before = rows_of(sandbox["production"]["admin_dsn"])
    try:
        extra = {**pitr["vars"], **record_vars(pitr, tmp_path), "restore_method": "pitr", "target_time": target}
        run = run_playbook("restore.yml", extra, check=True, env={"PGHOST": "127.0.0.1", "PGPORT": str(listener.port)})
    finally:
        listener.close()
    assert run.rc == 0, run.stdout[-4000:]
    assert listener.count == 0, f"check mode connected {listener.count} time(s) to libpq's default server"
    [planned] = run.results("pgdr.supabase.pgbackrest_restore")
    assert planned["plan"]["action"] == "restore" and planned["plan"]["backup"]["label"] == pitr["label"]
    [checked] = run.results("pgdr.supabase.pitr_verify")
    assert checked["checks"] == [] and checked["would_run"] == ["migrations", "catalog", "amcheck"]
    assert "(planned)" in checked["planned_target"] and pb_restore.cluster_name(target) in checked["planned_target"]
    [smoke] = run.results("pgdr.supabase.smoke")
    assert smoke["checks"] == [] and smoke["would_run"]
    assert "PITR_RESTORE PASSED: 0 checks passed" in run.stdout
    assert not run.results("pgdr.supabase.env")[1:], "staging's env would be re-pointed at an empty DSN"
    assert not Path(pitr["vars"]["pgdr_pitr_root"], pb_restore.cluster_name(target)).exists()
    assert rows_of(sandbox["production"]["admin_dsn"]) == before
    assert not events(pitr), "check mode wrote a record"


def test_a_target_after_the_last_archived_commit_names_the_reachable_window_and_a_retry_works(
    pitr, run_playbook, sandbox
):
    """Issue 15.2: on a quiet database the newest archived commit lags now; a target after it is refused in
    planning with the reachable window (no folder left), and the same command with the WAL switch allowed works."""
    insert(sandbox, "last-before-quiet")
    switch_and_wait(sandbox)  # everything so far archived; the next switch by archive_timeout is 60 s away
    time.sleep(0.2)
    target = timefmt.iso_exact(now(sandbox))
    extra = {**pitr["vars"], "target_time": target}
    refused = run_playbook("playbooks/pitr_restore.yml", {**extra, "pgdr_pitr_switch_wal": False})
    assert refused.rc != 0
    assert "is after the last archived commit" in refused.stdout and "the restorable window is" in refused.stdout
    assert "(the last archived commit)" in refused.stdout and "pitr_restore_switch_wal" in refused.stdout
    assert not Path(pitr["vars"]["pgdr_pitr_root"], pb_restore.cluster_name(target)).exists()

    t0 = time.monotonic()
    retried = run_playbook("playbooks/pitr_restore.yml", extra)
    MEASURED["restore_with_wal_switch_s"] = round(time.monotonic() - t0, 2)
    assert retried.rc == 0, retried.stdout[-4000:]
    [result] = retried.results("pgdr.supabase.pgbackrest_restore")
    assert result["plan"]["wal_switch"]["segment"]
    point = result["point_in_time"]
    expected = [n for (n,) in sql(sandbox, f"select note from public.{TABLE} order by id")]  # noqa: S608
    assert rows_of(restored_dsn(sandbox, result["port"])) == expected[: expected.index("last-before-quiet") + 1]
    assert point["target_time"] == target and point["last_replayed_commit_at"] <= target
    if point["stopped_by"].startswith("lsn"):  # nothing committed between the last commit and the target
        assert "replay stops right after that commit" in point["note"]
    MEASURED["quiet_target_rpo_s"] = point["rpo_s"]


def test_a_failed_attempt_is_cleaned_and_the_same_command_runs_again(pitr, run_playbook, sandbox):
    """Issue 15.2: a restore that fails after the files are restored (here: an address the cluster cannot listen
    on) stops and empties its folder, keeps no repository secret, and the same command, run again, restores."""
    insert(sandbox, "before-failure")
    target = timefmt.iso_exact(now(sandbox))
    insert(sandbox, "after-failure")
    switch_and_wait(sandbox)
    extra = {**pitr["vars"], "target_time": target, "cluster": "failed-then-retried"}
    folder = Path(pitr["vars"]["pgdr_pitr_root"], "failed-then-retried")
    failed = run_playbook("playbooks/pitr_restore.yml", {**extra, "pitr_restore_listen_addresses": "192.0.2.1"})
    assert failed.rc != 0
    assert "did not start" in failed.stdout and "run the same command again" in failed.stdout
    assert (folder / pb_restore.ATTEMPT).exists() and not list((folder / "data").iterdir())
    assert not (folder / "pgbackrest.conf").exists()
    (folder / "data" / "left-by-a-killed-run").write_text("x")  # what a killed attempt could leave

    again = run_playbook("playbooks/pitr_restore.yml", extra)
    assert again.rc == 0, again.stdout[-4000:]
    [result] = again.results("pgdr.supabase.pgbackrest_restore")
    assert result["changed"] and result["cleaned_failed_attempt"]["target_time"] == target
    assert not (folder / pb_restore.ATTEMPT).exists() and not (folder / "data" / "left-by-a-killed-run").exists()
    assert rows_of(restored_dsn(sandbox, result["port"]))[-1] == "before-failure"
    pitr["retried"] = result


def test_two_identical_restores_are_both_recorded_with_the_moment_restored(pitr, run_playbook, sandbox, tmp_path):
    """Issues 15.3, 15.4, 15.5, 15.6: restore.yml twice for one instant (spelled two ways): the second run changes
    nothing and is recorded as such; the record names the target, the last replayed commit, the timeline and the
    base backup, with RPO = target - last replayed commit; the checks are migrations, catalog and pg_amcheck."""
    insert(sandbox, "before-target")
    moment = now(sandbox)
    time.sleep(0.05)
    insert(sandbox, "after-target")
    switch_and_wait(sandbox)
    target = timefmt.iso_exact(moment)
    extra = {**pitr["vars"], **record_vars(pitr, tmp_path), "restore_method": "pitr", "target_time": target}
    t0 = time.monotonic()
    first = run_playbook("restore.yml", extra)
    MEASURED["restore_yml_pitr_s"] = round(time.monotonic() - t0, 2)
    assert first.rc == 0, first.stdout[-5000:]
    assert first.changed() > 0
    [restored] = first.results("pgdr.supabase.pgbackrest_restore")
    assert restored["name"] == pb_restore.cluster_name(target)
    [checked] = first.results("pgdr.supabase.pitr_verify")
    names = {c["name"]: c for c in checked["checks"]}
    assert set(names) == {"migrations", "catalog", "amcheck"} and all(c["ok"] for c in names.values()), names
    assert "source's current catalog" in names["catalog"]["summary"]
    assert names["amcheck"]["details"]["heap_relations"] > 0 and names["amcheck"]["details"]["btree_indexes"] > 0
    assert any(n.startswith("content:") for n in checked["not_checked"])
    MEASURED["amcheck_s"] = names["amcheck"]["duration_s"]
    MEASURED["catalog_objects"] = names["catalog"]["details"]["objects"]

    # The same instant, spelled with an offset: the same folder, nothing to do.
    offset = moment.astimezone(dt.timezone(dt.timedelta(hours=1)))
    second = run_playbook("restore.yml", {**extra, "target_time": offset.isoformat()})
    assert second.rc == 0, second.stdout[-5000:]
    assert second.changed() == 0, second.stdout[-5000:]
    [again] = second.results("pgdr.supabase.pgbackrest_restore")
    assert again["plan"]["action"] == "none" and again["port"] == restored["port"]

    first_event, second_event = [e for e in events(pitr) if e["kind"] == "pitr_restore"][-2:]
    assert first_event["changed"] is True and second_event["changed"] is False
    for event in (first_event, second_event):
        assert event["outcome"] == "success"
        point = event["details"]["point_in_time"]
        assert point["target_time"] == target and event["point_in_time"]
        assert point["last_replayed_commit_at"] and point["last_replayed_commit_at"] <= target
        assert point["timeline"] >= 2 and point["base_backup"] == pitr["label"]
        lost = moment.timestamp() - pgbackrest.parse_time(point["last_replayed_commit_at"]).timestamp()
        assert abs(event["rpo_s"] - lost) < 0.2, (event["rpo_s"], lost)
        assert {c["name"] for c in event["checks"]} >= {"migrations", "catalog", "amcheck"}
        assert event["details"]["not_checked"]
    MEASURED["rpo_s"] = first_event["rpo_s"]
    incidents = (pitr["records"] / "incidents.md").read_text()
    assert f"- Point in time: target {target}" in incidents.replace("\\", "")
    assert "- Not checked: content" in incidents
    page = Path(first_event["report"]["html"]).read_text()
    assert "Point in time" in page and "last replayed commit" in page
    assert rows_of(restored_dsn(sandbox, restored["port"]))[-1] == "before-target"
    pitr["restored"] = restored


def test_the_restored_cluster_keeps_no_production_secret_and_has_its_own_password(pitr, sandbox):
    """Issue 15.7: no file under the restored cluster's folder holds a production repository key, passphrase or
    password; production's password does not open it for the runbooks (its own does); it never archives."""
    restored = pitr.get("restored")
    if not restored:
        pytest.skip("needs the restore of test_two_identical_restores_are_both_recorded_with_the_moment_restored")
    folder = Path(restored["data_dir"]).parent
    assert not (folder / "pgbackrest.conf").exists()
    found = []
    secrets = production_secrets(sandbox, pitr["cipher_pass"])
    files = [p for p in folder.rglob("*") if p.is_file()]
    read = 0
    for path in files:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue  # the running cluster removed it since the listing (pg_internal.init, a temp file)
        read += 1
        found += [f"{what} in {path}" for what, secret in secrets.items() if secret.encode() in data]
    assert not found, found
    assert read > 500  # the whole cluster was read, not an empty folder
    auto = (folder / "data" / "postgresql.auto.conf").read_text()
    assert not [line for line in auto.splitlines() if line.startswith("restore_command")]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(restored_dsn(sandbox, restored["port"], sandbox["production"]["password"])).close()
    with psycopg.connect(restored_dsn(sandbox, restored["port"])) as conn:
        assert conn.execute("show archive_mode").fetchone()[0] == "off"
        assert conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()[0] is False


def test_amcheck_finds_a_damaged_heap_page(pitr, sandbox):
    """Issue 15.5: pg_amcheck really reads the restored cluster: a heap page overwritten on disk fails the check,
    naming the problem (the cluster of the retried restore is damaged on purpose; nothing else uses it)."""
    restored = pitr.get("retried")
    if not restored:
        pytest.skip("needs the restore of test_a_failed_attempt_is_cleaned_and_the_same_command_runs_again")
    data_dir, port = restored["data_dir"], restored["port"]
    args = {"data_dir": data_dir, "socket_dir": restored["socket_dir"], "port": port}
    args["admin_user"] = sandbox["production"]["admin_user"]
    args["dbname"] = "postgres"
    healthy = pitr_verify.check_amcheck(**args)
    assert healthy["ok"], healthy
    with psycopg.connect(restored_dsn(sandbox, port)) as conn:
        relative = conn.execute("select pg_relation_filepath(%s)", (f"public.{TABLE}",)).fetchone()[0]
    bin_dir = pgbackrest.bin_dir_for(data_dir)
    assert pgbackrest.stop_cluster(data_dir, bin_dir)
    with open(Path(data_dir, relative), "r+b") as fh:  # the tuples sit at the end of the table's first page
        fh.seek(8192 - 120)
        fh.write(b"\xff" * 64)
    started = pgbackrest.pg_ctl(bin_dir, data_dir, "start", "-w", "-l", str(Path(data_dir).parent / "log" / "x.log"))
    assert started.returncode == 0, started.stderr
    damaged = pitr_verify.check_amcheck(**args)
    assert not damaged["ok"], damaged
    assert damaged["details"]["problems"] and "pg_amcheck reports" in damaged["summary"]
    MEASURED["amcheck_damaged_summary"] = damaged["summary"][:200]

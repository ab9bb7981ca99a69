"""The logical backup engine against the real sandbox: round trip, idempotence, faults and bad input."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import oracle
import psycopg
import pytest
from backup_helpers import admin_dsn_for, drop_database, dsn_for, restore_with_tools, row_counts, scratch_database
from conftest import s3_params

from ansible_collections.pgdr.supabase.plugins.module_utils import catalog, logical_backup, pg
from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import s3_target as make_target
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.lock import SourceLock

pytestmark = pytest.mark.integration


def request(state, target, prefix, **kwargs):
    kwargs.setdefault("window", "daily")
    return logical_backup.BackupRequest("production", state["production"]["dsn"], target, prefix=prefix, **kwargs)


def bucket_listing(target):
    return sorted(target.list_keys("")), sorted(target.list_uploads(""))


def test_backup_round_trip_matches_manifest(sandbox, s3_target, prefix, tmp_path, repo):
    result = logical_backup.run(request(sandbox, s3_target, prefix))
    assert result["changed"] is True
    manifest = s3_target.get_json(result["manifest_key"])
    assert manifest == json.loads(json.dumps(result["manifest"]))
    assert manifest["manifest_version"] == catalog.MANIFEST_VERSION
    assert manifest["source"]["flavor"] == "supabase"
    assert manifest["source"]["server_version"].startswith("15.")
    assert manifest["tool"]["pg_dump_version"].startswith("15.")
    names = [o["name"] for o in manifest["objects"]]
    assert names[:3] == ["roles", "schema", "index"]
    assert names[3:] and all(n.startswith("data-") for n in names[3:])
    stored = dict(s3_target.list_keys(f"{prefix}/"))
    for obj in manifest["objects"]:
        assert stored[obj["key"]] == obj["size"]
        assert len(obj["sha256"]) == 64
    # Migration history: exactly the versions of the app's migration files.
    files = sorted(p.name.split("_", 1)[0] for p in (repo / "examples/app/supabase/migrations").glob("*.sql"))
    assert manifest["migrations"]["versions"] == files
    # Auth and storage data are in the backup; platform-only tables are not.
    assert manifest["tables"]["auth.users"] > 0
    assert "storage.objects" in manifest["tables"]
    assert "auth.schema_migrations" not in manifest["tables"]
    # The migration history travels with the data; pg_net's queue and pg_cron's run history never do.
    assert manifest["tables"]["supabase_migrations.schema_migrations"] == len(files)
    assert not any(name.startswith(("net.", "cron.")) for name in manifest["tables"])
    assert manifest["tables"]["public.events"] > 0
    assert manifest["data"]["rows"] == sum(manifest["tables"].values())

    database = scratch_database(sandbox)
    try:
        dsn = restore_with_tools(sandbox, s3_target, manifest, tmp_path, database)
        assert row_counts(dsn, manifest["tables"]) == manifest["tables"]
        # What the tools restored has, by an independent oracle, the content of production.
        source, copy = oracle.content(sandbox["production"]["dsn"]), oracle.content(dsn)
        assert {t: copy[t] for t in manifest["tables"] if t in copy} == {
            t: source[t] for t in manifest["tables"] if t in source
        }
    finally:
        drop_database(sandbox, database)


def test_row_counts_come_from_the_dump_snapshot(sandbox, s3_target, prefix):
    """Rows written while the dump runs are neither counted nor dumped."""
    req = request(sandbox, s3_target, prefix, window="every_run")
    original = pg.Snapshot

    class WriteAfterSnapshot(original):
        def __init__(self, dsn, **kw):
            super().__init__(dsn, **kw)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("insert into public.tenants(name, slug) values ('late', 'late-' || gen_random_uuid())")

    logical_backup.pg.Snapshot = WriteAfterSnapshot
    try:
        before = row_counts(sandbox["production"]["dsn"], ["public.tenants"])["public.tenants"]
        manifest = logical_backup.run(req)["manifest"]
    finally:
        logical_backup.pg.Snapshot = original
        with psycopg.connect(sandbox["production"]["dsn"], autocommit=True) as conn:
            conn.execute("delete from public.tenants where name = 'late'")
    assert manifest["tables"]["public.tenants"] == before


def test_second_run_in_the_same_window_changes_nothing(sandbox, s3_target, prefix):
    first = logical_backup.run(request(sandbox, s3_target, prefix))
    listing = bucket_listing(s3_target)
    second = logical_backup.run(request(sandbox, s3_target, prefix))
    assert second["changed"] is False
    assert second["backup_id"] == first["backup_id"]
    assert bucket_listing(s3_target) == listing
    # The next window takes a new backup.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    third = logical_backup.run(request(sandbox, s3_target, prefix, now=later))
    assert third["changed"] is True and third["backup_id"] != first["backup_id"]


def test_plan_reads_without_writing(sandbox, s3_target, prefix):
    before = bucket_listing(s3_target)
    plan = logical_backup.plan(request(sandbox, s3_target, prefix))
    assert plan["action"] == "create"
    assert [o["key"] for o in plan["objects"]] == [
        f"{prefix}/production/logical/{plan['backup_id']}/{name}"
        for name in ("roles.sql.zst", "schema.pgdump.zst", "index.json.zst", "data-NNNN.copy.zst")
    ]
    assert bucket_listing(s3_target) == before


def test_plain_postgres_source(sandbox, s3_target, prefix):
    with psycopg.connect(dsn_for(sandbox, "staging", "postgres"), autocommit=True) as conn:
        conn.execute("drop database if exists plainsrc with (force)")
        conn.execute("create database plainsrc template template0")
    try:
        dsn = dsn_for(sandbox, "staging", "plainsrc")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("create schema app; create table app.items(id int primary key, body text)")
            conn.execute("insert into app.items select i, repeat('x', i) from generate_series(1, 500) i")
        req = logical_backup.BackupRequest("plain", dsn, s3_target, prefix=prefix)
        manifest = logical_backup.run(req)["manifest"]
    finally:
        drop_database(sandbox, "plainsrc")
    assert manifest["source"]["flavor"] == "postgres"
    assert [o["name"] for o in manifest["objects"]] == ["roles", "schema", "index", "data-0001"]
    assert manifest["tables"] == {"app.items": 500}


# --- faults: nothing that looks like a backup is left -------------------------------------------------


@pytest.fixture(scope="module")
def larger_source(sandbox, sandbox_dir):
    """Enough data that the data object takes several 5 MiB parts."""
    import sandboxlib

    with psycopg.connect(sandbox["production"]["dsn"]) as conn:
        size = conn.execute("select pg_database_size(current_database())").fetchone()[0]
    if size < 80 * 1024 * 1024:
        sandboxlib.seed(sandbox_dir, mb=80)
    return sandbox


CHILD = """
import json, sys
sys.path.insert(0, {collections!r})
from ansible_collections.pgdr.supabase.plugins.module_utils import logical_backup
from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import s3_target
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
cfg = json.loads(sys.argv[1])
request = logical_backup.BackupRequest("production", cfg["dsn"], s3_target(cfg["s3"]), prefix=cfg["prefix"],
                                       window="daily", part_size=5 * 1024 * 1024, concurrency=1, jobs=1)
try:
    print(json.dumps({{"result": logical_backup.run(request)["backup_id"]}}))
except DRError as exc:
    print(json.dumps({{"error": str(exc), "step": exc.step}}))
"""


def backup_in_child(state, s3, prefix):
    """A backup in a process of its own (the test can stop it, as a slow network would), returning Popen."""
    code = CHILD.format(collections=str(Path(__file__).resolve().parents[2] / "collections"))
    cfg = {"dsn": state["production"]["dsn"], "s3": s3, "prefix": prefix}
    return subprocess.Popen([sys.executable, "-c", code, json.dumps(cfg)], stdout=subprocess.PIPE, text=True)


def pause_when_data_uploads(proc, target, prefix, deadline=60):
    """SIGSTOP the child as soon as a data object's multipart upload has begun."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if any(".copy." in key for key, _ in target.list_uploads(f"{prefix}/")):
            os.kill(proc.pid, signal.SIGSTOP)
            return
        if proc.poll() is not None:
            raise AssertionError("the backup ended before its data upload could be caught")
        time.sleep(0.01)
    raise AssertionError("no data upload started")


def finished(proc):
    os.kill(proc.pid, signal.SIGCONT)
    out, _ = proc.communicate(timeout=300)
    return json.loads(out.strip().splitlines()[-1])


def test_a_killed_data_session_leaves_nothing(larger_source, s3_target, prefix):
    state = larger_source
    proc = backup_in_child(state, s3_params(state), prefix)
    pause_when_data_uploads(proc, s3_target, prefix)
    # The server ends the backup's session that reads the rows (as an administrator or an OOM kill would).
    with psycopg.connect(admin_dsn_for(state, "production", "postgres"), autocommit=True) as conn:
        killed = conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'pgdr backup data'"
        ).fetchall()
    assert killed
    outcome = finished(proc)
    assert outcome.get("step") == "dump data", outcome
    assert "reading the rows of" in outcome["error"]
    assert s3_target.list_keys(f"{prefix}/") == []
    assert s3_target.list_uploads(f"{prefix}/") == []
    assert catalog.list_backups(s3_target, prefix, "production") == []


def test_a_failing_catalog_step_stops_the_data_workers_and_leaves_nothing(
    larger_source, s3_target, prefix, monkeypatch
):
    """The rows are dumped while the snapshot session reads the catalog: when that fails, no data worker may
    write (or finish) an object after the run has removed its own."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import fingerprint

    real_capture = fingerprint.capture

    def capture_then_fail(*args, **kwargs):
        real_capture(*args, **kwargs)
        end = time.monotonic() + 60
        while not any(".copy." in key for key, _ in s3_target.list_uploads(f"{prefix}/")):
            assert time.monotonic() < end, "no data upload started while the catalog was read"
            time.sleep(0.01)
        raise DRError("the catalog could not be read (provoked)", step="snapshot")

    monkeypatch.setattr(fingerprint, "capture", capture_then_fail)
    req = request(larger_source, s3_target, prefix, part_size=5 * 1024 * 1024, concurrency=1, jobs=2)
    error = _error(logical_backup.run, req)
    assert "provoked" in error.message
    time.sleep(1)  # a worker still running would write (or complete) an object about now
    assert s3_target.list_keys(f"{prefix}/") == []
    assert s3_target.list_uploads(f"{prefix}/") == []


def test_s3_stopping_mid_upload_commits_nothing_and_next_run_cleans_up(larger_source, sandbox_dir, prefix):
    import sandboxlib

    state = larger_source
    # Plain HTTP keeps the failure quick.
    params = s3_params(state, tls=False)
    target = make_target(params)
    proc = backup_in_child(state, params, prefix)
    pause_when_data_uploads(proc, target, prefix)
    sandboxlib.stop_s3(sandbox_dir)
    try:
        outcome = finished(proc)
        assert "error" in outcome, outcome
        assert "S3" in outcome["error"], outcome
    finally:
        sandboxlib.start_s3(sandbox_dir)
    req = request(state, target, prefix)
    assert target.get_json(catalog.manifest_key(prefix, "production", req.backup_id)) is None
    rows = catalog.list_backups(target, prefix, "production")
    assert all(not row["complete"] for row in rows)
    # The next run removes what the interrupted one left and commits a complete backup.
    retry = logical_backup.run(request(state, target, prefix))
    assert retry["changed"] is True
    assert target.list_uploads(f"{prefix}/") == []
    assert [r["complete"] for r in catalog.list_backups(target, prefix, "production")] == [True]


# --- bad input: each gets a clear error naming it ------------------------------------------------------


def _error(callable_, *args):
    with pytest.raises(DRError) as info:
        callable_(*args)
    return info.value


def test_unreachable_source(sandbox, s3_target, prefix):
    req = logical_backup.BackupRequest("production", "postgresql://postgres:pw@127.0.0.1:1/postgres", s3_target)
    error = _error(logical_backup.plan, req)
    assert error.step == "connect source"
    assert "cannot reach the database server" in str(error)
    assert "127.0.0.1:1/postgres" in str(error)


def test_wrong_password(sandbox, s3_target, prefix):
    p = sandbox["production"]
    dsn = f"postgresql://postgres:not-the-password@{p['host']}:{p['port']}/postgres"
    error = _error(logical_backup.run, logical_backup.BackupRequest("production", dsn, s3_target, prefix=prefix))
    assert "refused the credentials" in str(error)
    assert "not-the-password" not in str(error)
    assert error.hint and "password" in error.hint


def test_missing_bucket(sandbox, prefix):
    params = s3_params(sandbox)
    params["bucket"] = "no-such-bucket-here"
    error = _error(logical_backup.plan, request(sandbox, make_target(params), prefix))
    assert "bucket does not exist" in str(error)
    assert "no-such-bucket-here" in str(error)


@pytest.mark.parametrize("field", ["access_key", "secret_key"])
def test_wrong_s3_keys(sandbox, prefix, field):
    params = s3_params(sandbox)
    params[field] = "WRONG" + params[field][5:]
    error = _error(logical_backup.plan, request(sandbox, make_target(params), prefix))
    assert "refused" in str(error) and "credentials" in str(error)
    assert params["secret_key"] not in str(error)


def test_pg_dump_older_than_server(sandbox, s3_target, prefix, tmp_path):
    folder = tmp_path / "oldbin"
    folder.mkdir()
    for name in ("pg_dump", "pg_dumpall"):
        script = folder / name
        script.write_text(f"#!/bin/sh\necho '{name} (PostgreSQL) 14.10'\n")
        script.chmod(0o755)
    error = _error(logical_backup.plan, request(sandbox, s3_target, prefix, bin_dir=str(folder)))
    assert "pg_dump 14.10 is older than the server (15." in str(error)
    assert "install PostgreSQL 15 client tools" in str(error)


def test_a_held_lock_stops_a_second_run(sandbox, s3_target, prefix):
    holder = SourceLock(s3_target, catalog.lock_key(prefix, "production"), purpose="backup by another host")
    holder._body.update(host="other-host", pid=1)
    holder.acquire()
    try:
        error = _error(logical_backup.run, request(sandbox, s3_target, prefix))
        assert "another run is in progress" in str(error)
        assert "other-host" in str(error)
    finally:
        holder.release()
    assert logical_backup.run(request(sandbox, s3_target, prefix))["changed"] is True


def test_a_stale_lock_is_taken_over(sandbox, s3_target, prefix):
    key = catalog.lock_key(prefix, "production")
    stale = {"host": "gone-host", "pid": 1, "purpose": "backup", "taken_at": "x", "renewed_at": time.time() - 3600}
    s3_target.put_bytes(key, json.dumps(stale).encode())
    assert logical_backup.run(request(sandbox, s3_target, prefix))["changed"] is True
    assert s3_target.get_json(key) is None


def test_server_rejects_a_wrong_checksum(s3_target, prefix):
    """S3 checks the SHA-256 checksums we send: a corrupted body is refused, not stored."""
    with pytest.raises(Exception) as info:
        s3_target.client.put_object(
            Bucket=s3_target.bucket,
            Key=f"{prefix}/x",
            Body=b"payload",
            ChecksumSHA256="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
        )
    assert "BadDigest" in str(info.value) or "checksum" in str(info.value).lower()
    assert s3_target.list_keys(f"{prefix}/") == []


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("COPY public.no_such_table TO STDOUT", psycopg.errors.UndefinedTable),  # refused before any row
        (  # fails after 50,000 rows were sent
            "COPY (select case when g > 50000 then 1 / 0 else g end from generate_series(1, 100000) g) TO STDOUT",
            psycopg.errors.DivisionByZero,
        ),
    ],
)
def test_a_failing_copy_raises_the_servers_error_and_leaves_the_session_usable(sandbox, query, error):
    """tabledata reads COPY OUT from libpq itself: the server's error must come out as psycopg's, and the
    session must be left as psycopg expects it (here: a failed transaction that a rollback ends)."""
    from psycopg import sql

    from ansible_collections.pgdr.supabase.plugins.module_utils import tabledata

    with psycopg.connect(sandbox["production"]["dsn"]) as conn:
        tabledata.apply_settings(conn)
        with pytest.raises(error):
            tabledata.copy_rows(conn, sql.SQL(query), lambda block: None, tabledata.Digest())
        assert conn.info.transaction_status.name == "INERROR"
        conn.rollback()
        assert conn.execute("select 42").fetchone() == (42,)


def test_the_digest_read_from_libpq_equals_psycopgs_copy(sandbox):
    """The same rows folded through psycopg's own Copy iterator give the same digest and the same bytes."""
    import zlib

    from psycopg import sql

    from ansible_collections.pgdr.supabase.plugins.module_utils import tabledata

    query = "COPY (select * from public.events order by 1 limit 20000) TO STDOUT"
    with psycopg.connect(sandbox["production"]["dsn"]) as conn:
        tabledata.apply_settings(conn)
        blocks = []
        ours = tabledata.copy_rows(conn, sql.SQL(query), blocks.append, tabledata.Digest())
        theirs, data = tabledata.Digest(), bytearray()
        with conn.cursor().copy(query) as copy:
            for row in copy:
                theirs.rows += 1
                theirs.bytes += len(row)
                theirs.crc = (theirs.crc + zlib.crc32(row)) & tabledata.MASK64
                theirs.adler = (theirs.adler + zlib.adler32(row)) & tabledata.MASK64
                data += row
    assert ours.rows > 0
    assert ours.text() == theirs.text()
    assert b"".join(blocks) == bytes(data)

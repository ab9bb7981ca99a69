"""The logical backup engine against the real sandbox: round trip, idempotence, faults and bad input."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import stat
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from backup_helpers import drop_database, dsn_for, restore_with_tools, row_counts, scratch_database
from conftest import s3_params

from ansible_collections.pgdr.supabase.plugins.module_utils import catalog, logical_backup, pg
from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import s3_target as make_target
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.lock import SourceLock

pytestmark = pytest.mark.integration

REAL_BIN = Path("/usr/lib/postgresql/15/bin")


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
    assert [o["name"] for o in manifest["objects"]] == ["roles", "schema", "data", "migrations"]
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
    assert not any(name.startswith("supabase_migrations.") for name in manifest["tables"])
    assert manifest["tables"]["public.events"] > 0

    database = scratch_database(sandbox)
    try:
        dsn = restore_with_tools(sandbox, s3_target, manifest, tmp_path, database)
        assert row_counts(dsn, manifest["tables"]) == manifest["tables"]
        with pg.connect(dsn) as conn:
            restored = pg.schema_objects(conn, "supabase")
        assert pg.fingerprint(restored) == manifest["schema"]["fingerprint"]
        assert "policy public.participants.participants_tenant_isolation" in restored or any(
            k.startswith("policy public.") for k in restored
        )
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
        for name in ("roles.sql.zst", "schema.pgdump.zst", "data.pgdump.zst", "migrations.pgdump.zst")
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
    assert [o["name"] for o in manifest["objects"]] == ["roles", "schema", "data"]
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


THROTTLE = """#!{python}
# A pg_dump that runs the real one and passes its output on slowly, so a test can act mid-dump.
import os, subprocess, sys, time
proc = subprocess.Popen(["{real}", *sys.argv[1:]], stdout=subprocess.PIPE)
if "--version" in sys.argv:
    sys.stdout.buffer.write(proc.stdout.read()); sys.exit(proc.wait())
while chunk := proc.stdout.read(256 * 1024):
    sys.stdout.buffer.write(chunk); sys.stdout.buffer.flush(); time.sleep(0.02)
code = proc.wait()
if code < 0:
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


@pytest.fixture
def slow_bin(tmp_path):
    """A bin_dir whose pg_dump is throttled (pg_dumpall is the real one)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "pg_dump"
    script.write_text(THROTTLE.format(python=sys.executable, real=REAL_BIN / "pg_dump"))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    (folder / "pg_dumpall").symlink_to(REAL_BIN / "pg_dumpall")
    return str(folder)


def _real_data_dumps(port):
    """pids of real pg_dump processes dumping data from the given port."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        real = argv and argv[0] == str(REAL_BIN / "pg_dump").encode() and b"--data-only" in argv
        if real and any(f"port={port}".encode() in a for a in argv):
            pids.append(int(entry.name))
    return pids


def _run_in_thread(req):
    box = {}

    def work():
        try:
            box["result"] = logical_backup.run(req)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    return thread, box


def _wait_for_upload(target, prefix, deadline=60):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if target.list_uploads(f"{prefix}/"):
            return
        time.sleep(0.05)
    raise AssertionError("no multipart upload started")


def test_killed_pg_dump_leaves_nothing(larger_source, s3_target, prefix, slow_bin):
    state = larger_source
    req = request(state, s3_target, prefix, bin_dir=slow_bin, part_size=5 * 1024 * 1024, concurrency=1)
    thread, box = _run_in_thread(req)
    _wait_for_upload(s3_target, prefix)
    for pid in _real_data_dumps(state["production"]["port"]):
        os.kill(pid, signal.SIGKILL)
    thread.join(120)
    error = box.get("error")
    assert isinstance(error, DRError), box
    assert error.step == "dump data"
    assert "killed by signal 9" in str(error)
    assert s3_target.list_keys(f"{prefix}/") == []
    assert s3_target.list_uploads(f"{prefix}/") == []
    assert catalog.list_backups(s3_target, prefix, "production") == []


def test_s3_stopping_mid_upload_commits_nothing_and_next_run_cleans_up(larger_source, sandbox_dir, prefix, slow_bin):
    import sandboxlib

    state = larger_source
    # Plain HTTP and few retries keep the failure quick.
    target = make_target(s3_params(state, tls=False))
    target.client.meta.config.retries["max_attempts"] = 2
    req = request(state, target, prefix, bin_dir=slow_bin, part_size=5 * 1024 * 1024, concurrency=1)
    thread, box = _run_in_thread(req)
    _wait_for_upload(target, prefix)
    sandboxlib.stop_s3(sandbox_dir)
    try:
        thread.join(300)
        error = box.get("error")
        assert isinstance(error, DRError), box
        assert "upload" in (error.step or "") or "upload" in str(error)
        assert "cannot reach the S3 endpoint" in str(error) or "S3" in str(error)
    finally:
        sandboxlib.start_s3(sandbox_dir)
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

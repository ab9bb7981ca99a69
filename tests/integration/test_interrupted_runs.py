"""Runs that are killed or told to stop (issues 9.9, 9.11, 9.12), through restore.yml and backup.yml started as
ansible-playbook processes of the test's own; processes are found and killed by process tree only.

The restore's pg_restore is a stand-in that waits before the data step (marker file), so each kill lands while the
temporary database exists and the work folder holds the decrypted data dump."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from backup_helpers import drop_database, dsn_for, signing_key
from conftest import MAIN_PROJECT_LIMIT, REPO, s3_params
from proc_helpers import alive, descendants, find_in_tree, kill_tree, wait_for
from test_restore_playbooks import restore_vars

from ansible_collections.pgdr.supabase.plugins.module_utils import envstore, files, logical_backup, logical_restore

pytestmark = pytest.mark.integration

REAL_BIN = Path("/usr/lib/postgresql/15/bin")
WAITING_PG_RESTORE = """#!{python}
# pg_restore that waits {delay} s before building indexes and constraints, right after the data step (and says so
# in a marker file; a version 1 backup's data step is a pg_restore --data-only), then runs the real one.
import os, pathlib, sys, time
if "--data-only" in sys.argv or "--section=post-data" in sys.argv:
    pathlib.Path("{marker}").write_text(str(os.getpid()))
    time.sleep({delay})
os.execv("{real}", ["{real}", *sys.argv[1:]])
"""


@pytest.fixture(scope="module")
def backup(sandbox):
    """An encrypted backup of its own (the work folder then holds decrypted plaintext)."""
    from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import s3_target

    prefix = f"intr-{uuid.uuid4().hex[:8]}"
    moment = dt.datetime(2019, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=random.randrange(10**8))
    req = logical_backup.BackupRequest(
        "production",
        sandbox["production"]["dsn"],
        s3_target(s3_params(sandbox)),
        prefix=prefix,
        window="every_run",
        now=moment,
        encryption_recipients=[sandbox["age"]["recipient"]],
        signing_key=signing_key(sandbox),
    )
    manifest = logical_backup.run(req)["manifest"]
    return prefix, manifest


@pytest.fixture
def slow_bin(tmp_path):
    folder = tmp_path / "bin"
    folder.mkdir()
    marker = tmp_path / "data-step-started"
    script = folder / "pg_restore"
    script.write_text(
        WAITING_PG_RESTORE.format(python=sys.executable, delay=120, marker=marker, real=REAL_BIN / "pg_restore")
    )
    script.chmod(0o755)
    (folder / "psql").symlink_to(REAL_BIN / "psql")
    return folder, marker


@pytest.fixture
def database(sandbox):
    name = f"intr_{uuid.uuid4().hex[:8]}"
    yield name
    drop_database(sandbox, name)
    drop_database(sandbox, name[:46] + logical_restore.TEMP_SUFFIX)


def start_playbook(sandbox_dir, playbook, extravars, log):
    """ansible-playbook as a process of our own, in a process group of its own (pgid = its pid)."""
    varsfile = log.with_suffix(".vars.json")
    varsfile.write_text(json.dumps(extravars))
    env = {
        **os.environ,
        "SANDBOX_DIR": str(sandbox_dir),
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    with open(log, "wb") as out:
        return subprocess.Popen(
            [
                str(Path(sys.executable).parent / "ansible-playbook"),
                "-i",
                "inventories/local/hosts.yml",
                "--limit",
                MAIN_PROJECT_LIMIT,
                playbook,
                "-e",
                f"@{varsfile}",
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def temp_db_exists(state, name):
    with psycopg.connect(dsn_for(state, "staging", "postgres")) as conn:
        return bool(
            conn.execute(
                "select 1 from pg_database where datname = %s", (name[:46] + logical_restore.TEMP_SUFFIX,)
            ).fetchone()
        )


def work_folders(workdir):
    return sorted(p for p in Path(workdir).glob("pgdr-restore-*")) if Path(workdir).exists() else []


def interrupted_restore(sandbox, sandbox_dir, backup, database, slow_bin, tmp_path):
    """restore.yml started and waiting at the data step: (process, module pid, workdir, log)."""
    prefix, manifest = backup
    bin_dir, marker = slow_bin
    workdir = tmp_path / "work"
    extra = restore_vars(
        prefix,
        tmp_path,
        backup=manifest["backup_id"],
        # A new database (the killed run's temporary one is what must go), from the platform template.
        pgdr_restore_mode="new_database",
        pgdr_restore_skip_extensions=["pg_cron"],
        pgdr_restore_database=database,
        pgdr_restore_data_mode="file",
        pgdr_restore_bin_dir=str(bin_dir),
        pgdr_restore_workdir=str(workdir),
    )
    log = tmp_path / "playbook.log"
    proc = start_playbook(sandbox_dir, "restore.yml", extra, log)
    try:
        wait_for(marker.exists, 180, "the restore to reach its data step")
        [module] = wait_for(lambda: find_in_tree(proc.pid, "AnsiballZ_logical_restore", shells=False), 10, "the module")
    except BaseException:
        kill_tree([*descendants(proc.pid), proc.pid])
        raise
    return proc, module, workdir, log


def test_killing_the_playbook_stops_the_restore_and_cleans_up(
    sandbox, sandbox_dir, backup, database, slow_bin, tmp_path
):
    """issue 9.11: SIGKILL of ansible-playbook's process group; the module goes on in its own session unless it
    watches its controller."""
    proc, module, workdir, _ = interrupted_restore(sandbox, sandbox_dir, backup, database, slow_bin, tmp_path)
    tree = descendants(proc.pid)
    tool = int(slow_bin[1].read_text())
    assert temp_db_exists(sandbox, database) and work_folders(workdir)
    try:
        # The fault's premise: the module runs in another session (Ansible's worker calls setsid), so killing the
        # playbook's process group does not reach it.
        assert os.getsid(module) != os.getsid(proc.pid)
        killed = time.monotonic()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: not alive(module), 30, "the module to stop after its controller died")
        wait_for(lambda: not alive(tool), 10, "pg_restore to stop with the module")
        wait_for(lambda: not temp_db_exists(sandbox, database), 10, "the temporary database to be dropped")
        print(f"stopped and cleaned up {time.monotonic() - killed:.2f} s after the playbook was killed")
        assert work_folders(workdir) == []
        # The worker and the shell wrappers end once the module has (the worker cannot report to anyone).
        wait_for(lambda: not [pid for pid in tree if alive(pid)], 30, f"the rest of the tree to end: {tree}")
    finally:
        kill_tree(tree)


def test_sigterm_of_the_restore_drops_its_database_and_work_files(
    sandbox, sandbox_dir, backup, database, slow_bin, tmp_path
):
    """issue 9.9: every exit path removes the plaintext, SIGTERM included."""
    proc, module, workdir, log = interrupted_restore(sandbox, sandbox_dir, backup, database, slow_bin, tmp_path)
    tree = descendants(proc.pid)
    try:
        [folder] = work_folders(workdir)
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        files = list(folder.iterdir())
        assert any(p.name == "schema.pgdump" for p in files)
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files), [(p, oct(p.stat().st_mode)) for p in files]
        os.kill(module, signal.SIGTERM)
        assert proc.wait(120) != 0
    finally:
        kill_tree(tree)
    out = log.read_text()
    assert "[interrupted] the run stopped: SIGTERM received" in out
    assert not temp_db_exists(sandbox, database)
    assert work_folders(workdir) == []
    progress = [line for line in out.splitlines() if "progress of this restore: tail -f" in line]
    assert progress, out[-3000:]


def test_the_next_run_removes_what_a_killed_run_left_and_says_so(
    run_playbook, sandbox, sandbox_dir, backup, database, slow_bin, tmp_path
):
    """issue 9.9: SIGKILL of the whole tree leaves the work folder (nothing can run then); the next run removes it."""
    proc, module, workdir, _ = interrupted_restore(sandbox, sandbox_dir, backup, database, slow_bin, tmp_path)
    kill_tree([proc.pid, *descendants(proc.pid)])
    wait_for(lambda: not alive(module), 10, "the killed module to be gone")
    [left] = work_folders(workdir)
    assert (left / "schema.pgdump").exists()
    prefix, manifest = backup
    extra = restore_vars(
        prefix,
        tmp_path,
        backup=manifest["backup_id"],
        pgdr_restore_database=database,
        pgdr_restore_workdir=str(workdir),
    )
    run = run_playbook("restore.yml", extra)
    assert run.rc == 0, run.stdout[-3000:]
    assert (
        f"removed the work folder {left} (left by pid {module} (restore {manifest['backup_id']}), which is gone)"
        in (run.stdout)
    )
    assert work_folders(workdir) == []


def test_each_backup_run_has_a_progress_file_of_its_own(run_playbook, sandbox, s3_target, prefix):
    """issue 9.12: per run and per source, under the sandbox, its path printed."""
    extra = {
        "pgdr_backup_secondary_copy": False,
        "pgdr_backup_storage_assets": False,
        "pgdr_backup_config_snapshot": False,
    }
    paths = []
    for n in range(2):
        run = run_playbook("backup.yml", {**extra, "pgdr_backup_prefix": f"{prefix}-{n}"})
        assert run.rc == 0, run.stdout[-3000:]
        [path] = set(re.findall(r"progress of this backup: tail -f (\S+?\.progress)", run.stdout))
        paths.append(Path(path))
    assert paths[0] != paths[1]
    for path in paths:
        assert path.parent == Path(sandbox["dir"]) / "progress"
        assert path.name.startswith("pgdr-backup-production-")
        text = path.read_text()
        assert text.count(" started\n") >= 1 and "all objects stored" in text


def test_temporary_env_files_of_killed_writers_are_removed_and_named(tmp_path):
    """issue 9.9: an env-store write killed before its rename leaves a file with every value in clear."""
    env_file = tmp_path / "staging.env"
    env_file.write_text("DATABASE_URL=postgresql://u:Old-Pw@h/db\n")
    pid = int(subprocess.check_output(["sh", "-c", "echo $$"]).decode())  # a pid that has just ended
    stale = tmp_path / f".staging.env{files.TEMP_MARK}{pid}-abcd1234.tmp"
    stale.write_text("DATABASE_URL=postgresql://u:Secret-In-Clear@h/db\n")
    legacy = tmp_path / ".staging.env.k2j4h5g6.tmp"
    legacy.write_text("DATABASE_URL=postgresql://u:Secret-In-Clear@h/db\n")
    os.utime(legacy, (0, 0))
    live = tmp_path / f".staging.env{files.TEMP_MARK}{os.getppid()}-live1234.tmp"  # a live writer's: kept
    live.write_text("x")
    store = envstore.make_store({"type": "dotenv", "path": str(env_file)})
    result = envstore.ensure(store, {"DATABASE_URL": "postgresql://u:New-Pw@h/db"})
    assert sorted(result["cleaned"]) == sorted([str(stale), str(legacy)])
    assert not stale.exists() and not legacy.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["staging.env", live.name])

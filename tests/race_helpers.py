"""Running the engine in separate processes that start together (a barrier), as two real runs would.

Each racer is a spawned process (no fork of the test process and its S3 clients); it waits at a
multiprocessing barrier, runs its part and puts ("ok", result) or ("error", message, step) on a queue.
"""

from __future__ import annotations

import multiprocessing
import sys
import traceback

_CTX = multiprocessing.get_context("spawn")


def _paths():
    # The spawned interpreter gets the parent's sys.path; these make it explicit for the engine imports.
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    for extra in (repo / "collections", repo / "scripts", repo / "tests"):
        if str(extra) not in sys.path:
            sys.path.insert(0, str(extra))


def _target(s3):
    from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import s3_target

    return s3_target(s3)


def backup_racer(barrier, queue, s3, dsn, prefix, now_iso, lock_wait):
    """One logical backup of `production` into prefix, for the window of now_iso."""
    _paths()
    import datetime as dt

    from ansible_collections.pgdr.supabase.plugins.module_utils import logical_backup
    from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

    try:
        request = logical_backup.BackupRequest(
            "production",
            dsn,
            _target(s3),
            prefix=prefix,
            window="daily",
            now=dt.datetime.fromisoformat(now_iso),
            lock_wait=lock_wait,
        )
        logical_backup.plan(request)  # connect and read once before the barrier, so both start at the lock
        barrier.wait(timeout=60)
        result = logical_backup.run(request)
        queue.put(("ok", {"changed": result["changed"], "backup_id": result["backup_id"], "msg": result["msg"]}))
    except DRError as exc:
        queue.put(("error", str(exc), exc.step))
    except BaseException as exc:
        queue.put(("crash", f"{exc!r}\n{traceback.format_exc()}", None))


def lock_racer(barrier, queue, s3, key, hold_s):
    """Take the lock at key (it is stale when the race starts), hold it hold_s seconds, release it."""
    _paths()
    import time

    from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
    from ansible_collections.pgdr.supabase.plugins.module_utils.lock import SourceLock

    try:
        lock = SourceLock(_target(s3), key, purpose="lock race")
        barrier.wait(timeout=60)
        lock.acquire()
        try:
            time.sleep(hold_s)
            lock.confirm()
        finally:
            lock.release()
        queue.put(("ok", {"token": lock._body["token"]}))
    except DRError as exc:
        queue.put(("error", str(exc), exc.step))
    except BaseException as exc:
        queue.put(("crash", f"{exc!r}\n{traceback.format_exc()}", None))


def race(func, args_per_racer, timeout=300):
    """Start one process per argument tuple, all released by one barrier; return their outcomes."""
    barrier = _CTX.Barrier(len(args_per_racer))
    queue = _CTX.Queue()
    procs = [_CTX.Process(target=func, args=(barrier, queue, *args)) for args in args_per_racer]
    for proc in procs:
        proc.start()
    outcomes = [queue.get(timeout=timeout) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    return outcomes


def restore_racer(barrier, queue, s3, dsn, manifest, database):
    """One logical restore of manifest into database on the server of dsn."""
    _paths()
    from ansible_collections.pgdr.supabase.plugins.module_utils import logical_restore
    from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

    try:
        request = logical_restore.RestoreRequest(dsn, manifest, _target(s3), database=database)
        barrier.wait(timeout=60)
        result = logical_restore.run(request)
        queue.put(("ok", {"changed": result["changed"], "database": result["database"]}))
    except DRError as exc:
        queue.put(("error", str(exc), exc.step))
    except BaseException as exc:
        queue.put(("crash", f"{exc!r}\n{traceback.format_exc()}", None))


def promote_racer(barrier, queue, env_file, value, target_name):
    """One promote of value into the dotenv store env_file."""
    _paths()
    from ansible_collections.pgdr.supabase.plugins.module_utils import envstore, promote
    from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

    try:
        store = envstore.make_store({"type": "dotenv", "path": env_file})
        barrier.wait(timeout=60)
        result = promote.promote(store, {"DATABASE_URL": value}, target_name, reason="race")
        queue.put(("ok", {"changed": result["changed"], "value": value}))
    except DRError as exc:
        queue.put(("error", str(exc), exc.step))
    except BaseException as exc:
        queue.put(("crash", f"{exc!r}\n{traceback.format_exc()}", None))

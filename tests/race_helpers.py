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


DEAD_LOCK = {"host": "gone-host", "pid": 1, "purpose": "backup", "token": "dead", "taken_at": "x", "renewed_at": 0}


def _dead_lock(target, key):
    """The lock of a run killed long ago on another host: stale for everyone."""
    import json

    target.put_bytes(key, json.dumps(DEAD_LOCK).encode())


def backup_racer(barrier, queue, index, rounds, s3, dsn, prefix, now_iso, lock_wait):
    """rounds logical backups of `production`, one per round into prefix-<round> (the window of now_iso plus round
    days), each started with the other racer's through the barrier over a dead run's lock."""
    _paths()
    import datetime as dt

    from ansible_collections.pgdr.supabase.plugins.module_utils import catalog, logical_backup
    from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

    target = _target(s3)
    for round_ in range(rounds):
        pfx = f"{prefix}-{round_}"
        try:
            request = logical_backup.BackupRequest(
                "production",
                dsn,
                target,
                prefix=pfx,
                window="daily",
                now=dt.datetime.fromisoformat(now_iso) + dt.timedelta(days=round_),
                lock_wait=lock_wait,
            )
            logical_backup.plan(request)  # connect and read before the barrier, so both start at the lock
            if index == 0:
                _dead_lock(target, catalog.lock_key(pfx, "production"))
            barrier.wait(timeout=120)
            result = logical_backup.run(request)
            outcome = ("ok", {"changed": result["changed"], "backup_id": result["backup_id"], "msg": result["msg"]})
        except DRError as exc:
            outcome = ("error", str(exc), exc.step)
        except BaseException as exc:
            outcome = ("crash", f"{exc!r}\n{traceback.format_exc()}", None)
        queue.put((round_, index, outcome))
        barrier.wait(timeout=300)  # both done before the next round


def lock_racer(barrier, queue, index, rounds, s3, key, hold_s):
    """rounds times: take the lock at key (stale when the round starts), hold it hold_s seconds, release it."""
    _paths()
    import time

    from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
    from ansible_collections.pgdr.supabase.plugins.module_utils.lock import SourceLock

    target = _target(s3)
    for round_ in range(rounds):
        try:
            if index == 0:
                _dead_lock(target, key)
            lock = SourceLock(target, key, purpose="lock race")
            barrier.wait(timeout=60)
            lock.acquire()
            try:
                time.sleep(hold_s)
                lock.confirm()
            finally:
                lock.release()
            outcome = ("ok", {"token": lock._body["token"]})
        except DRError as exc:
            outcome = ("error", str(exc), exc.step)
        except BaseException as exc:
            outcome = ("crash", f"{exc!r}\n{traceback.format_exc()}", None)
        queue.put((round_, index, outcome))
        barrier.wait(timeout=60)


def rounds_race(func, rounds, args, racers=2, timeout=900):
    """racers persistent processes running func for rounds rounds, released together each round by one barrier.
    Returns the outcomes per round: [[outcome of racer 0, outcome of racer 1], ...]."""
    barrier = _CTX.Barrier(racers)
    queue = _CTX.Queue()
    procs = [_CTX.Process(target=func, args=(barrier, queue, i, rounds, *args)) for i in range(racers)]
    for proc in procs:
        proc.start()
    found = {}
    try:
        for _unused in range(rounds * racers):
            round_, index, outcome = queue.get(timeout=timeout)
            found.setdefault(round_, [None] * racers)[index] = outcome
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
    return [found[r] for r in sorted(found)]


def race(func, args_per_racer, timeout=300):
    """Start one process per argument tuple, all released by one barrier; return their outcomes."""
    barrier = _CTX.Barrier(len(args_per_racer))
    queue = _CTX.Queue()
    procs = [_CTX.Process(target=func, args=(barrier, queue, *args)) for args in args_per_racer]
    for proc in procs:
        proc.start()
    outcomes = [queue.get(timeout=timeout) for _unused in procs]
    for proc in procs:
        proc.join(timeout=30)
    return outcomes


def restore_racer(barrier, queue, s3, dsn, manifest, database):
    """One logical restore of manifest into database on the server of dsn."""
    _paths()
    from ansible_collections.pgdr.supabase.plugins.module_utils import logical_restore
    from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

    try:
        from backup_helpers import new_database_request

        request = new_database_request(dsn, manifest, _target(s3), database=database)
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

"""One restore at a time into one target database, the holder named (issue 9.7).

The lock is a PostgreSQL session-level advisory lock held by the restore's admin session on the target server for
the whole run (the session that creates, renames or drops the databases): a killed restore's session ends and its
lock with it, so there is nothing stale to judge. The key is (a constant for pgdr, a hash of the target database's
name); the holding session carries its purpose in ``application_name`` (``pgdr restore lock: restore
20261128T000000Z by host pid N``), so a second restore finds the holder through pg_locks and pg_stat_activity and
names it.

Advisory locks live in the database the session is connected to: two restores lock each other out when their
connection strings name the same maintenance database on the same server (the inventory's restore target does).
Seeing another role's application_name needs pg_read_all_stats (pg_monitor has it); without it the holder is
named by its backend pid and role.
"""

from __future__ import annotations

import os
import socket
import time
import zlib

from ansible_collections.pgdr.supabase.plugins.module_utils import pg
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

LOCK_CLASS = 0x70676472  # "pgdr"
APP_PREFIX = "pgdr restore lock: "


def lock_key(database):
    return LOCK_CLASS, zlib.crc32(database.encode()) & 0x7FFFFFFF


class RestoreTargetLock:
    def __init__(self, dsn, database, purpose, wait=0, poll=2.0, where=None):
        self.dsn = dsn
        self.database = database
        self.where = where or pg.describe_dsn(dsn)
        self.wait = wait
        self.poll = poll
        host = socket.gethostname().split(".")[0][:20]
        self.application_name = f"{APP_PREFIX}{purpose} by {host} pid {os.getpid()}"[:63]
        self.conn = None
        self.waited = 0.0

    def holder(self, conn):
        """Who holds the lock now: a sentence, or None."""
        key = lock_key(self.database)
        row = conn.execute(
            "select a.pid, a.usename, a.application_name, a.backend_start, a.client_addr::text"
            "  from pg_locks l left join pg_stat_activity a on a.pid = l.pid"
            " where l.locktype = 'advisory' and l.classid = %s and l.objid = %s and l.objsubid = 2 and l.granted"
            "   and l.database = (select oid from pg_database where datname = current_database())",
            key,
        ).fetchone()
        if row is None:
            return None
        pid, user, app, since, client = row
        who = app[len(APP_PREFIX) :] if app and app.startswith(APP_PREFIX) else f"a session of role {user}"
        return (
            f"{who} (backend pid {pid}{', from ' + client if client else ''}, since "
            f"{since.isoformat(timespec='seconds') if since else '?'})"
        )

    def acquire(self):
        """Take the lock on a session of its own (``self.conn``, autocommit), which the caller may use as its admin
        session. While waiting, the session is closed between tries: a waiting restore must not sit on the
        template database that the running one creates its database from."""
        started = time.monotonic()
        while True:
            conn = pg.connect(
                self.dsn, step="lock restore target", application_name=self.application_name, autocommit=True
            )
            try:
                if conn.execute("select pg_try_advisory_lock(%s, %s)", lock_key(self.database)).fetchone()[0]:
                    self.conn = conn
                    break
                who = self.holder(conn)
            finally:
                if self.conn is not conn:
                    conn.close()
            if time.monotonic() - started >= self.wait:
                raise DRError(
                    f"another restore into {self.database} is running: "
                    f"{who or 'another session (it just ended; run again)'}",
                    step="lock restore target",
                    subject=self.where,
                    hint="wait for it to finish (or stop it), or restore under another database name; raise "
                    "lock_wait to queue behind it",
                )
            time.sleep(self.poll)
        self.waited = time.monotonic() - started
        return self

    def release(self):
        if self.conn is not None:
            # Closing the session releases its advisory locks.
            self.conn.close()
            self.conn = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def for_request(request):
    """The lock of a logical restore request (its final database name on its target server)."""
    return RestoreTargetLock(
        request.target_dsn,
        request.database,
        purpose=f"restore {request.backup_id}",
        wait=getattr(request, "lock_wait", 0),
        where=request.where,
    )

#!/usr/bin/env python3
"""The sandbox's platform services, as far as the database sees them: sessions that stay connected.

On a hosted Supabase project PostgREST (as authenticator, LISTENing on the `pgrst` channel), Auth (as
supabase_auth_admin) and Storage (as supabase_storage_admin) keep sessions open on the project's `postgres`
database at all times; so, for example, `CREATE DATABASE ... TEMPLATE postgres` fails there. This process does the
same for each sandbox project, reconnects when a server restarts, and writes what it holds to a status file.

  scripts/platform_sessions.py --state <sandbox>/state.json --status <file>

Started and stopped by `scripts/sandbox up` / `down` (scripts/sandboxlib/extras.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import psycopg

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))
from sandboxlib.state import PLATFORM_LOGINS, TARGETS  # noqa: E402

CHECK_EVERY = 1.0
# What each service's session looks like to pg_stat_activity.
APPLICATION = {
    "authenticator": "postgrest",
    "supabase_auth_admin": "gotrue",
    "supabase_storage_admin": "storage-api",
}
LISTENER = "authenticator"


def write_status(path: Path, status: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".status-")
    with os.fdopen(fd, "w") as fh:
        json.dump(status, fh, sort_keys=True)
    os.replace(tmp, path)


def open_session(target: dict, login: str) -> psycopg.Connection:
    conn = psycopg.connect(
        host=target["host"],
        port=target["port"],
        dbname=target["dbname"],
        user=login,
        password=target["platform_passwords"][login],
        application_name=APPLICATION[login],
        connect_timeout=3,
        autocommit=True,
    )
    if login == LISTENER:
        conn.execute("LISTEN pgrst")
    return conn


def hold(sessions: dict, targets: dict[str, dict]) -> dict[str, dict[str, str]]:
    """One round: open the sessions that are missing (or were lost), check each with `select 1`; returns
    {target: {login: "connected" | "down: <reason>"}}. `sessions` maps (target, login) to its connection."""
    status: dict[str, dict[str, str]] = {}
    for name, target in targets.items():
        for login in PLATFORM_LOGINS:
            key = (name, login)
            conn = sessions.get(key)
            try:
                if conn is None or conn.closed:
                    conn = sessions[key] = open_session(target, login)
                conn.execute("select 1")
                status.setdefault(name, {})[login] = "connected"
            except psycopg.Error as exc:
                sessions.pop(key, None)
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                status.setdefault(name, {})[login] = f"down: {str(exc).strip().splitlines()[0][:200]}"
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("--status", required=True, type=Path)
    args = parser.parse_args()
    state = json.loads(args.state.read_text())
    stopping = False

    def stop(_signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sessions: dict[tuple[str, str], psycopg.Connection] = {}
    while not stopping:
        status = hold(sessions, {name: state[name] for name in TARGETS})
        write_status(args.status, status)
        time.sleep(CHECK_EVERY)
    for conn in sessions.values():
        with contextlib.suppress(psycopg.Error):
            conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

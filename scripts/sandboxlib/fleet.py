"""The fleet's other protected databases: production-b and production-c, small Supabase-like projects.

Each is a database of its own on the production server (the platform schemas without pg_cron, the sample app's
migrations, the demo tenants and a few events), so the sandbox starts no extra server: made once (about a
second), then only looked up. The inventory lists them as hosts of supabase_projects next to production.
"""

from __future__ import annotations

from pathlib import Path

from psycopg import sql

from . import app, pg
from .common import SandboxError, say, timed

# Host name in the inventory -> database on the production server.
FLEET = {"production-b": "production_b", "production-c": "production_c"}
# A few events each: the extra projects are small (bench/fleet.py seeds them bigger on a sandbox of its own).
FLEET_EVENTS = 2000
# pg_cron lives in the server's postgres database only (cron.database_name): in the fleet's databases a no-op
# stand-in of cron.schedule lets the sample app's migrations apply. The schema cron is platform-owned, so backups
# leave it out; there is no cron.job table, so a backup finds no jobs to carry.
CRON_STANDIN = """
CREATE SCHEMA IF NOT EXISTS cron;
CREATE OR REPLACE FUNCTION cron.schedule(job_name text, schedule text, command text) RETURNS bigint
    LANGUAGE sql AS 'SELECT 0::bigint';
GRANT USAGE ON SCHEMA cron TO postgres;
GRANT EXECUTE ON FUNCTION cron.schedule(text, text, text) TO postgres;
"""


def target(state: dict, name: str) -> dict:
    """A target dict (as state["production"] has) for one fleet database: the production server, its database."""
    server = state["production"]
    dbname = FLEET[name]
    host_port = f"{server['host']}:{server['port']}"
    return {
        "host": server["host"],
        "port": server["port"],
        "user": server["user"],
        "password": server["password"],
        "dbname": dbname,
        "dsn": f"postgresql://{server['user']}:{server['password']}@{host_port}/{dbname}",
        "admin_user": server["admin_user"],
        "admin_password": server["admin_password"],
        "admin_dsn": f"postgresql://{server['admin_user']}:{server['admin_password']}@{host_port}/{dbname}",
        "server": "production",
    }


def ensure(state: dict, migrations_dir: Path) -> None:
    """Make the fleet's databases that are missing and record them in state["fleet"]."""
    fleet = state.setdefault("fleet", {})
    server = state["production"]
    with pg.connect(server, autocommit=True) as conn:
        present = {
            row[0]
            for row in conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (list(FLEET.values()),))
        }
        for name, dbname in FLEET.items():
            fleet[name] = target(state, name)
            if dbname in present:
                continue
            with timed(f"postgres {name}: database {dbname}") as info:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER postgres").format(sql.Identifier(dbname)))
                made = fleet[name]
                try:
                    with pg.connect(made) as dconn:
                        app.apply_files(dconn, app.platform_files(with_cron=False))
                        dconn.execute(CRON_STANDIN)
                        dconn.commit()
                    app.apply_migrations(name, made, migrations_dir)
                    app.insert_demo_data(made, FLEET_EVENTS)
                except Exception:
                    # Half made: drop it, so that the next `up` makes it again from the start.
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
                    raise
                info["outcome"] = f"made on the production server ({FLEET_EVENTS} events)"
    say(f"fleet: {', '.join(f'{n} ({d})' for n, d in FLEET.items())} on the production server")


def resolve(state: dict, name: str) -> dict:
    """The target dict of production, staging or a fleet database, by its inventory name."""
    if name in ("production", "staging"):
        return state[name]
    if name in state.get("fleet", {}):
        return state["fleet"][name]
    raise SandboxError(f"unknown target {name!r} (one of production, staging, {', '.join(FLEET)})")

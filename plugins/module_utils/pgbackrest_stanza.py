"""Setting a cluster up for pgBackRest: its configuration file, the stanza, and archive_command on the server
(plan first, then apply; check mode plans only).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.pgbackrest import (
    PgBackRest,
    Settings,
    archive_command,
    config_matches,
    ensure_dir,
    render_config,
    write_private_file,
)
from ansible_collections.pgdr.supabase.plugins.module_utils.pgbackrest_repo import check_info, parse_info

# ---------------------------------------------------------------------------------------------------------------
# Setting a cluster up: configuration file, stanza, archive_command


@dataclass
class StanzaRequest:
    stanza: str
    settings: Settings
    config_file: str
    dsn: str
    pg_path: str | None = None
    pg_port: int | None = None
    pg_socket_path: str | None = None
    archive_timeout: int = 60
    binary: str = "pgbackrest"
    check: bool = True

    def reader(self):
        opts = dict(self.settings.repo.options())
        opts["log-level-file"] = "off"
        return PgBackRest(self.stanza, options=opts, secrets=self.settings.repo.secrets(), binary=self.binary)

    def tool(self):
        return PgBackRest(
            self.stanza, config_file=self.config_file, secrets=self.settings.repo.secrets(), binary=self.binary
        )


def _server_settings(conn):
    rows = conn.execute(
        "select name, setting from pg_settings where name = any(%s)",
        (
            [
                "data_directory",
                "port",
                "unix_socket_directories",
                "archive_mode",
                "wal_level",
                "archive_command",
                "archive_timeout",
            ],
        ),
    ).fetchall()
    return dict(rows)


def stanza_plan(req):
    """Compare the host with what it should be; returns the plan with its steps (empty: nothing to do)."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import pg

    with pg.connect(req.dsn, step="connect to the database", application_name="pgdr pitr setup") as conn:
        current = _server_settings(conn)
    where = pg.describe_dsn(req.dsn)
    if current.get("wal_level") == "minimal":
        raise DRError(
            "wal_level is minimal, so WAL cannot be archived for point-in-time recovery",
            step="check the server settings",
            subject=where,
            hint="set wal_level = replica and archive_mode = on in postgresql.conf, then restart PostgreSQL",
        )
    if current.get("archive_mode") not in ("on", "always"):
        raise DRError(
            f"archive_mode is {current.get('archive_mode')!r}; turning it on needs a restart, which this will not do",
            step="check the server settings",
            subject=where,
            hint="set archive_mode = on in postgresql.conf and restart PostgreSQL in a maintenance window",
        )
    sockets = [s.strip() for s in (current.get("unix_socket_directories") or "").split(",") if s.strip()]
    pg_path = req.pg_path or current["data_directory"]
    pg_port = req.pg_port or int(current["port"])
    pg_socket = req.pg_socket_path or (sockets[0] if sockets else None)
    import psycopg.conninfo

    pg_user = psycopg.conninfo.conninfo_to_dict(req.dsn).get("user")
    text = render_config(req.settings, req.stanza, pg_path, pg_port, pg_socket, pg_user=pg_user)
    command = archive_command(req.binary, req.config_file, req.stanza)
    steps = []
    if not config_matches(req.config_file, text):
        steps.append(
            f"{'update' if os.path.exists(req.config_file) else 'write'} {req.config_file} (mode 600, owner postgres)"
        )
    summary = parse_info(req.reader().info())
    if summary["status_code"] == 1:
        steps.append(f"create stanza {req.stanza} in {req.settings.repo.where()}")
    else:
        check_info(summary, req.settings.repo.where())
    if current.get("archive_command") != command:
        steps.append(f"set archive_command = '{command}' (ALTER SYSTEM, reload)")
    if int(current.get("archive_timeout") or 0) != req.archive_timeout:
        steps.append(f"set archive_timeout = {req.archive_timeout}s (ALTER SYSTEM, reload)")
    return {
        "steps": steps,
        "stanza": req.stanza,
        "config_file": req.config_file,
        "repo": req.settings.repo.where(),
        "pg": {"path": pg_path, "port": pg_port, "socket_path": pg_socket, "server": where},
        "archive_command": command,
        "archive_timeout": req.archive_timeout,
        "current": {
            "archive_command": current.get("archive_command"),
            "archive_timeout": current.get("archive_timeout"),
        },
        "stanza_exists": summary["status_code"] != 1,
        "_config_text": text,
    }


def _wait_setting(conn, name, value, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if conn.execute("select setting from pg_settings where name = %s", (name,)).fetchone()[0] == value:
            return
        time.sleep(0.1)
    raise DRError(
        f"{name} did not take the new value after pg_reload_conf()",
        step="reload the server configuration",
        hint="read the PostgreSQL log for configuration errors",
    )


def stanza_apply(req, plan):
    """Carry out the plan's steps in a safe order (the stanza exists before archive_command points at it)."""
    from psycopg import sql

    from ansible_collections.pgdr.supabase.plugins.module_utils import pg

    text = plan.pop("_config_text")
    for folder in req.settings.folders():
        ensure_dir(folder)
    if not config_matches(req.config_file, text):
        write_private_file(req.config_file, text)
    tool = req.tool()
    if not plan["stanza_exists"]:
        tool.run("stanza-create", step="create the stanza")
    with pg.connect(
        req.dsn, step="connect to the database", application_name="pgdr pitr setup", autocommit=True
    ) as conn:
        current = _server_settings(conn)
        wanted = {"archive_command": plan["archive_command"], "archive_timeout": str(req.archive_timeout)}
        changed = [k for k, v in wanted.items() if current.get(k) != v]
        for name in changed:
            conn.execute(sql.SQL("alter system set {} = {}").format(sql.Identifier(name), sql.Literal(wanted[name])))
        if changed:
            conn.execute("select pg_reload_conf()")
            for name in changed:
                _wait_setting(conn, name, wanted[name])
    result = {"plan": plan}
    if req.check:
        t0 = time.monotonic()
        tool.run("check", step="check archiving and the repository")
        result["check"] = {"ok": True, "duration_s": round(time.monotonic() - t0, 2)}
    return result

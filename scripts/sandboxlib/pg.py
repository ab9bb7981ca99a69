"""The sandbox's PostgreSQL 15 clusters: initdb, configuration, start, stop, connections."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import psycopg

from .common import PG_BIN, SandboxError, install_dir, run, say, tail, timed
from .state import check_ports_free

START_TIMEOUT = 60
STOP_TIMEOUT = 30
# A Unix socket path must fit in sockaddr_un.sun_path (108 bytes, with the terminating NUL).
MAX_SOCKET_PATH = 107

SETTINGS = """
# --- pgdr sandbox settings ---
listen_addresses = '{host}'
port = {port}
unix_socket_directories = '{socket_dir}'
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
wal_level = replica
max_wal_senders = 4
archive_mode = on
# Replaced later by the archiving role; archive_command only needs a reload to change.
archive_command = '/bin/true'
shared_buffers = 256MB
max_connections = 50
# pg_cron, as on a hosted project: jobs live in cron.job of the postgres database.
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
"""


def connect(target: dict, *, as_admin: bool = True, **kw) -> psycopg.Connection:
    """A psycopg connection to a target over TCP: as the platform's superuser (supabase_admin) by default, which
    is what the sandbox itself needs; as_admin=False connects as the runbooks' non-superuser `postgres`."""
    user, password = (
        (target["admin_user"], target["admin_password"]) if as_admin else (target["user"], target["password"])
    )
    params = {
        "host": target["host"],
        "port": target["port"],
        "user": user,
        "dbname": target["dbname"],
        "password": password,
        "connect_timeout": 5,
    }
    return psycopg.connect(**(params | kw))


def is_up(target: dict) -> bool:
    """True when the cluster accepts a password login on its TCP port."""
    try:
        with connect(target, connect_timeout=2) as conn:
            conn.execute("select 1")
    except psycopg.Error:
        return False
    return True


def _pg_ctl(target: dict, *args: str, timeout: float, check: bool = True) -> subprocess.CompletedProcess:
    return run(
        [PG_BIN / "pg_ctl", "-D", target["data_dir"], *args], as_postgres=True, timeout=timeout + 10, check=check
    )


def _running(target: dict) -> bool:
    """pg_ctl's view (the postmaster runs), which holds even while it refuses connections."""
    return _pg_ctl(target, "status", timeout=5, check=False).returncode == 0


def ensure_cluster(name: str, target: dict, tls: dict) -> bool:
    """initdb and configure the cluster unless it exists; returns True when it was created now."""
    data = Path(target["data_dir"])
    if (data / "PG_VERSION").exists():
        return False
    socket = Path(target["socket_dir"]) / f".s.PGSQL.{target['port']}"
    if len(str(socket)) > MAX_SOCKET_PATH:
        raise SandboxError(f"socket path too long for a Unix socket ({len(str(socket))} bytes): {socket}")
    with timed(f"postgres {name}: initdb") as info:
        # A half-made data folder from an interrupted run is started over.
        if data.exists():
            shutil.rmtree(data)
        base = data.parent
        install_dir(base.parent, "root", "755")
        for folder in (base, data, Path(target["socket_dir"]), Path(target["log_file"]).parent):
            install_dir(folder, "postgres", "700")
        pwfile = base / ".pwfile"
        pwfile.write_text(target["admin_password"] + "\n")
        shutil.chown(pwfile, "postgres", "postgres")
        pwfile.chmod(0o600)
        try:
            run(
                [
                    PG_BIN / "initdb",
                    "-D",
                    data,
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    # The bootstrap superuser is the platform's, as on a hosted project; `postgres` is made
                    # by the platform bootstrap as an ordinary role with CREATEROLE, CREATEDB, REPLICATION, BYPASSRLS.
                    "-U",
                    "supabase_admin",
                    "--data-checksums",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    f"--pwfile={pwfile}",
                ],
                as_postgres=True,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(SETTINGS.format(host=target["host"], port=target["port"], socket_dir=target["socket_dir"]))
        for source, dest, mode in ((tls["cert_file"], "server.crt", 0o644), (tls["key_file"], "server.key", 0o600)):
            shutil.copyfile(source, data / dest)
            shutil.chown(data / dest, "postgres", "postgres")
            (data / dest).chmod(mode)
        info["outcome"] = f"created in {data}"
    return True


def start(name: str, target: dict) -> None:
    """pg_ctl start -w unless it already runs."""
    where = f"{target['host']}:{target['port']}"
    if _running(target):
        say(f"postgres {name}: already running on {where}")
        return
    check_ports_free(f"postgres {name}", [target["port"]], target["host"])
    with timed(f"postgres {name}") as info:
        proc = _pg_ctl(
            target,
            "start",
            "-w",
            "-t",
            str(START_TIMEOUT),
            "-l",
            target["log_file"],
            timeout=START_TIMEOUT,
            check=False,
        )
        if proc.returncode != 0:
            raise SandboxError(
                f"postgres {name} did not start; last lines of {target['log_file']}:\n{tail(Path(target['log_file']))}"
            )
        info["outcome"] = f"started on {where}"


def stop(name: str, target: dict) -> None:
    """pg_ctl stop -m fast with a timeout, then -m immediate."""
    if not Path(target["data_dir"], "PG_VERSION").exists() or not _running(target):
        say(f"postgres {name}: not running")
        return
    with timed(f"postgres {name}") as info:
        proc = _pg_ctl(target, "stop", "-m", "fast", "-w", "-t", str(STOP_TIMEOUT), timeout=STOP_TIMEOUT, check=False)
        if proc.returncode == 0:
            info["outcome"] = "stopped"
        else:
            _pg_ctl(target, "stop", "-m", "immediate", "-w", "-t", str(STOP_TIMEOUT), timeout=STOP_TIMEOUT)
            info["outcome"] = "stopped (immediate, fast shutdown timed out)"

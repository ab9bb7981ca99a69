"""The sandbox's state folder: where everything lives, the state file, ports and secrets."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import secrets
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .common import HOST, SandboxError, postgres_can_reach

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DIR = REPO / ".sandbox"
MIGRATIONS_DIR = REPO / "examples" / "app" / "supabase" / "migrations"
SQL_DIR = REPO / "scripts" / "sandbox-sql"
TARGETS = ("production", "staging")
BUCKETS = {"primary": "dr-backups", "immutable": "dr-backups-locked", "storage": "app-storage"}
# SeaweedFS also listens on port + 10000 (gRPC) for each of these.
S3_PORT_NAMES = ("s3", "s3_https", "master", "volume", "filer", "admin")
GRPC_OFFSET = 10000
# Ports come from below the Linux ephemeral range (32768-60999), where outgoing connections take theirs;
# only SeaweedFS's gRPC twins (port + 10000, at most 42000) reach into it.
PORT_RANGE = (15000, 32000)
# 2: `postgres` is not a superuser (supabase_admin is), as on a hosted project; platform roles have passwords.
STATE_VERSION = 2
# The platform services' login roles, each holding a session on every project's postgres database.
PLATFORM_LOGINS = ("authenticator", "supabase_auth_admin", "supabase_storage_admin")
# S3 identities besides the admin (whose keys are s3.access_key / s3.secret_key, used by tests only): the backup
# writer the runbooks use, and the project's Storage keys (the Storage endpoint the Storage backup reads).
WRITER_NAME = "backup-writer"
STORAGE_IDENTITY_NAME = "project-storage"


def sandbox_dir(path: str | os.PathLike | None = None) -> Path:
    """The absolute state folder: the argument, else $SANDBOX_DIR, else <repo>/.sandbox."""
    return Path(path or os.environ.get("SANDBOX_DIR") or DEFAULT_DIR).absolute()


def state_file(root: Path) -> Path:
    return root / "state.json"


def fallback_pg_root(root: Path) -> Path:
    """Where PostgreSQL's folders go when the postgres user cannot reach the state folder."""
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:10]
    return Path("/var/tmp") / f"pgdr-sandbox-{digest}"  # noqa: S108 - a fixed, per-sandbox name on purpose


def load_state(root: str | os.PathLike | None = None) -> dict:
    """The stored state (no live checks); raises SandboxError when the sandbox was never created."""
    path = state_file(sandbox_dir(root))
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise SandboxError(f"no sandbox at {path.parent} (run: scripts/sandbox up)") from None
    if state.get("version") != STATE_VERSION:
        raise SandboxError(
            f"the sandbox at {path.parent} was made by another version of scripts/sandbox (state version "
            f"{state.get('version')}, this one writes {STATE_VERSION}): run scripts/sandbox destroy, then up"
        )
    return state


def save_state(state: dict) -> None:
    """Write the state file atomically (temporary file + rename), readable by root only."""
    root = Path(state["dir"])
    text = json.dumps(state, indent=2, sort_keys=True) + "\n"
    with contextlib.suppress(FileNotFoundError):
        if state_file(root).read_text() == text:
            return  # unchanged: leave the file (and its mtime) alone
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".state-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, state_file(root))


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Serialise commands that change one sandbox (two `up` at once would both pick ports)."""
    with open(root / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def port_free(port: int, host: str = HOST) -> bool:
    """Bind test on a loopback address (127.0.0.1 unless told).

    With SO_REUSEADDR, as the servers themselves bind: connections in TIME_WAIT left by a stopped server
    do not make its port look busy, while a listener still does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def check_ports_free(service: str, ports: list[int], host: str = HOST) -> None:
    """Fail with a clear message when a port kept in the state was taken by something else meanwhile."""
    busy = [port for port in ports if not port_free(port, host)]
    if busy:
        raise SandboxError(
            f"{service}: port(s) {', '.join(map(str, busy))} on {host} are in use by another program; "
            "stop it, or destroy this sandbox and create it again (new ports)"
        )


def pick_ports() -> dict[str, int]:
    """Random free loopback ports: two for PostgreSQL, and SeaweedFS's ports with their gRPC twins free too."""
    taken: set[int] = set()

    def pick(with_grpc: bool) -> int:
        for _unused in range(500):
            port = random.randint(*PORT_RANGE)  # noqa: S311 - spreading ports, not a secret
            wanted = {port, port + GRPC_OFFSET} if with_grpc else {port}
            if not wanted & taken and all(port_free(p) for p in wanted):
                taken.update(wanted)
                return port
        raise SandboxError("could not find free loopback ports")

    ports = {target: pick(False) for target in TARGETS}
    ports.update({name: pick(True) for name in S3_PORT_NAMES})
    return ports


def _keys(prefix: str, name: str) -> dict:
    return {"name": name, "access_key": prefix + secrets.token_hex(8).upper(), "secret_key": secrets.token_urlsafe(30)}


def ensure_identities(state: dict) -> bool:
    """Add the writer and the project-storage identities to a state made before they existed (chosen once)."""
    s3 = state["s3"]
    added = False
    wanted = (("writer", "WRITER", WRITER_NAME), ("project_storage", "STORAGE", STORAGE_IDENTITY_NAME))
    for field, prefix, name in wanted:
        if field not in s3:
            s3[field] = _keys(prefix, name)
            added = True
    return added


def new_state(root: Path) -> dict:
    """The state of a sandbox about to be created: paths, ports and secrets, chosen once."""
    pg_root = root / "pg" if postgres_can_reach(root) else fallback_pg_root(root)
    ports = pick_ports()
    tls = root / "tls"
    # The CA file must be readable by the postgres user too (pgBackRest runs as postgres).
    ca_file = tls / "ca.crt" if pg_root.is_relative_to(root) else pg_root / "tls" / "ca.crt"
    state = {
        "version": STATE_VERSION,
        "dir": str(root),
        "pg_root": str(pg_root),
        "ports": ports,
        "tls": {
            "dir": str(tls),
            "ca_file": str(ca_file),
            "cert_file": str(tls / "server.crt"),
            "key_file": str(tls / "server.key"),
        },
        "s3": {
            "endpoint": f"http://{HOST}:{ports['s3']}",
            # TLS clients such as pgBackRest need a host name, not an IP, to match the certificate.
            "endpoint_tls": f"https://localhost:{ports['s3_https']}",
            "ca_file": str(ca_file),
            "access_key": "SANDBOX" + secrets.token_hex(8).upper(),
            "secret_key": secrets.token_urlsafe(30),
            "region": "us-east-1",
            "buckets": dict(BUCKETS),
            # Default retention of the Object Lock bucket, in days.
            "lock_days": int(os.environ.get("SANDBOX_LOCK_DAYS", "1")),
            "data_dir": str(root / "s3" / "data"),
            "log_file": str(root / "logs" / "weed.log"),
            "pid_file": str(root / "s3" / "weed.pid"),
            "writer": _keys("WRITER", WRITER_NAME),
            "project_storage": _keys("STORAGE", STORAGE_IDENTITY_NAME),
        },
        "env_files": {t: str(root / "env" / f"{t}.env") for t in TARGETS},
        "app": {"migrations_dir": str(MIGRATIONS_DIR)},
    }
    for target in TARGETS:
        password = secrets.token_urlsafe(18)
        admin_password = secrets.token_urlsafe(18)
        base = pg_root / target
        state[target] = {
            "host": HOST,
            "port": ports[target],
            # The runbooks' role: `postgres`, not a superuser, as on a hosted project.
            "user": "postgres",
            "password": password,
            "dbname": "postgres",
            "dsn": f"postgresql://postgres:{password}@{HOST}:{ports[target]}/postgres",
            # The platform's superuser (it owns the platform and made the cluster); for the sandbox itself, the
            # tests' cleanup and self-hosted paths that need a superuser (pgBackRest). Never the runbooks' default.
            "admin_user": "supabase_admin",
            "admin_password": admin_password,
            "admin_dsn": f"postgresql://supabase_admin:{admin_password}@{HOST}:{ports[target]}/postgres",
            "data_dir": str(base / "data"),
            "socket_dir": str(base / "run"),
            "log_file": str(base / "log" / "postgresql.log"),
            "platform_passwords": {name: secrets.token_urlsafe(18) for name in PLATFORM_LOGINS},
            "anon_key": secrets.token_urlsafe(32),
            "service_role_key": secrets.token_urlsafe(32),
            "initialized": False,
        }
    return state

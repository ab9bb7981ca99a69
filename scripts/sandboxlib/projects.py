"""Projects created through the Management API stand-in (POST /v1/projects) as real PostgreSQL servers.

A hosted project is reached at its database host on port 5432 (database `postgres`, user `postgres`). Here each
provisioned project gets a cluster of its own, made like the sandbox's staging (initdb as the postgres OS user with
supabase_admin as the bootstrap superuser, the platform bootstrap, pg_cron, TLS), listening on a loopback address
of its own (127.x.y.z: Linux routes all of 127/8 to lo) on the stand-in's database port (5432 by default), with
its Unix socket in its own folder; the platform services' sessions are held on its `postgres` database.

Addresses are claimed machine-wide (a file per address under CLAIMS_DIR, made with O_EXCL, naming the project's
folder) and checked with a bind test, so two sandboxes or test workers on one machine never pick the same one.
The `postgres` role's password is the POST's db_pass: it is set in the database and kept nowhere else.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import threading
from pathlib import Path

import psycopg

from . import app, pg, tls
from .common import SandboxError, install_dir, say
from .state import PLATFORM_LOGINS, load_state, port_free

DEFAULT_DB_PORT = 5432
CLAIMS_DIR = Path("/var/tmp/pgdr-loopback-claims")  # noqa: S108 - machine-wide on purpose: shared by all sandboxes
# 127.0.0.0/16 is left alone (127.0.0.1 is every other service's, Debian maps the host name to 127.0.1.1).
SECOND_OCTETS = (64, 254)
PICK_ATTEMPTS = 200
SESSIONS_EVERY = 1.0


def _claim_owner(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("owner")
    except (OSError, ValueError):
        return None


def claim_address(owner: Path, port: int) -> str:
    """A loopback address of our own for `owner` (a project's folder, which must exist): free in the machine-wide
    claims and free for a bind on `port`. A claim whose owner folder is gone is stale and taken over."""
    install_dir(CLAIMS_DIR, "root", "755")
    for _unused in range(PICK_ATTEMPTS):
        address = ".".join(
            str(n)
            for n in (127, random.randint(*SECOND_OCTETS), random.randint(0, 255), random.randint(1, 254))  # noqa: S311 - spreading addresses
        )
        path = CLAIMS_DIR / address
        if path.exists():
            holder = _claim_owner(path)
            if holder is None or Path(holder).exists():
                continue
            path.unlink(missing_ok=True)  # stale: its project's folder is gone
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump({"owner": str(owner), "pid": os.getpid()}, fh)
        if port_free(port, address):
            return address
        path.unlink(missing_ok=True)
    raise SandboxError(
        f"no free loopback address for port {port} after {PICK_ATTEMPTS} tries (is something listening on "
        f"0.0.0.0:{port}?): stop it, or start the stand-in with another --db-port"
    )


def release_address(address: str, owner: str) -> None:
    """Drop the claim on `address` if it is `owner`'s."""
    path = CLAIMS_DIR / address
    if _claim_owner(path) == str(owner):
        path.unlink(missing_ok=True)


class Sessions:
    """The platform services' sessions on each ready project's postgres database (scripts/platform_sessions.py's
    rounds, in a thread of the stand-in), with the last round's status per project."""

    def __init__(self, every: float = SESSIONS_EVERY):
        self.lock = threading.Lock()
        self.targets: dict[str, dict] = {}
        self.conns: dict[tuple[str, str], psycopg.Connection] = {}
        self.status: dict[str, dict[str, str]] = {}
        self.every = every
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="project-sessions", daemon=True)
        self.thread.start()

    def _round(self) -> None:
        import platform_sessions  # scripts/, beside this package

        self.status = platform_sessions.hold(self.conns, self.targets)

    def hold(self, ref: str, cluster: dict) -> None:
        with self.lock:
            self.targets[ref] = cluster
            self._round()

    def release(self, ref: str) -> None:
        with self.lock:
            self.targets.pop(ref, None)
            self.status.pop(ref, None)
            for key in [k for k in self.conns if k[0] == ref]:
                with contextlib.suppress(psycopg.Error):
                    self.conns.pop(key).close()

    def snapshot(self) -> dict:
        with self.lock:
            return json.loads(json.dumps(self.status))

    def _loop(self) -> None:
        while not self.stopping.wait(self.every):
            with self.lock:
                self._round()

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        for ref in list(self.targets):
            self.release(ref)


class Provisioner:
    """Makes, restarts and removes the clusters of the stand-in's projects inside one sandbox."""

    def __init__(self, sandbox_dir, db_port: int = DEFAULT_DB_PORT):
        self.sandbox = load_state(sandbox_dir)
        self.db_port = db_port
        self.sessions = Sessions()

    def plan(self, ref: str) -> dict:
        """The project's cluster, before anything runs: its folder made, its address claimed, its secrets chosen.
        Quick, so that the POST's answer already knows the host; provision() does the slow part."""
        base = Path(self.sandbox["pg_root"]) / "projects" / ref
        install_dir(base.parent, "root", "755")
        install_dir(base, "postgres", "700")
        try:
            address = claim_address(base, self.db_port)
        except SandboxError:
            shutil.rmtree(base, ignore_errors=True)
            raise
        return {
            "host": address,
            "port": self.db_port,
            "user": "postgres",
            "dbname": "postgres",
            "admin_user": "supabase_admin",
            "admin_password": secrets.token_urlsafe(18),
            "platform_passwords": {name: secrets.token_urlsafe(18) for name in PLATFORM_LOGINS},
            "base_dir": str(base),
            "data_dir": str(base / "data"),
            "socket_dir": str(base / "run"),
            "log_file": str(base / "log" / "postgresql.log"),
            "cert_dir": str(Path(self.sandbox["dir"]) / "supabase-api" / "certs" / ref),
            # Clients verify the server with the sandbox's CA: the certificate names the project's address.
            "ca_file": self.sandbox["tls"]["ca_file"],
        }

    def provision(self, ref: str, cluster: dict, db_pass: str) -> None:
        """initdb, configure, start, platform bootstrap (postgres's password = db_pass), platform sessions."""
        name = f"project {ref}"
        certs = tls.issue_server_cert(self.sandbox, cluster["host"], Path(cluster["cert_dir"]))
        pg.ensure_cluster(name, cluster, certs)
        pg.start(name, cluster)
        app.bootstrap(name, {**cluster, "password": db_pass})
        self.sessions.hold(ref, cluster)

    def resume(self, ref: str, cluster: dict) -> None:
        """After a stand-in restart: start the cluster unless it runs (its address claimed again if the claim is
        gone), and hold its sessions again."""
        path = CLAIMS_DIR / cluster["host"]
        if _claim_owner(path) != cluster["base_dir"]:
            install_dir(CLAIMS_DIR, "root", "755")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                raise SandboxError(
                    f"project {ref}: its address {cluster['host']} is claimed by {_claim_owner(path)}; "
                    "delete the project and create it again"
                ) from None
            with os.fdopen(fd, "w") as fh:
                json.dump({"owner": cluster["base_dir"], "pid": os.getpid()}, fh)
        pg.start(f"project {ref}", cluster)
        self.sessions.hold(ref, cluster)

    def remove(self, ref: str, cluster: dict) -> None:
        """Sessions closed, the cluster stopped (pg_ctl -D its data folder), its folders and claim removed."""
        self.sessions.release(ref)
        remove_cluster(ref, cluster)

    def close(self) -> None:
        self.sessions.close()


def remove_cluster(ref: str, cluster: dict) -> None:
    if Path(cluster["data_dir"], "PG_VERSION").exists():
        pg.stop(f"project {ref}", cluster)
    shutil.rmtree(cluster["base_dir"], ignore_errors=True)
    shutil.rmtree(cluster["cert_dir"], ignore_errors=True)
    release_address(cluster["host"], cluster["base_dir"])
    say(f"project {ref}: removed")


# -- for scripts/sandbox: the provisioned projects, read from the stand-in's state file -------------------------


def provisioned(state: dict) -> dict[str, dict]:
    """{ref: project} of the stand-in's projects that have a cluster (none when the stand-in never ran)."""
    api = state.get("supabase_api")
    if not api:
        return {}
    try:
        projects = json.loads(Path(api["state_file"]).read_text()).get("projects", {})
    except (OSError, ValueError):
        return {}
    return {ref: p for ref, p in projects.items() if p.get("cluster")}


def stop_all(state: dict) -> None:
    """Stop every provisioned project's cluster (by its data folder); the stand-in is stopped first."""
    for ref, project in provisioned(state).items():
        cluster = project["cluster"]
        if Path(cluster["data_dir"], "PG_VERSION").exists():
            pg.stop(f"project {ref}", cluster)


def release_all(state: dict) -> None:
    """Drop the address claims of every provisioned project (destroy removes their folders)."""
    for project in provisioned(state).values():
        release_address(project["cluster"]["host"], project["cluster"]["base_dir"])


def summary(state: dict) -> list[dict]:
    """Each provisioned project without secrets, with `up` (a login as supabase_admin works) computed live."""
    found = []
    for ref, project in sorted(provisioned(state).items()):
        cluster = project["cluster"]
        found.append(
            {
                "ref": ref,
                "name": project.get("name"),
                "host": cluster["host"],
                "port": cluster["port"],
                "dbname": cluster["dbname"],
                "user": cluster["user"],
                "data_dir": cluster["data_dir"],
                "provision": (project.get("provision") or {}).get("state"),
                "up": pg.is_up(cluster),
            }
        )
    return found

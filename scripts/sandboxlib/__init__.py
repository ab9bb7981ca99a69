"""The local sandbox: two PostgreSQL 15 clusters set up like Supabase projects and an S3 endpoint.

`production` carries the platform schemas and the sample app with demo data, and the fleet's two smaller
projects (databases production_b and production_c, fleet.py); `staging` only the platform (a restore target);
SeaweedFS serves the backup buckets and the app's Storage bucket. Everything lives under
one state folder, described by its state.json. The `scripts/sandbox` CLI and the tests call these functions.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from pathlib import Path

import psycopg

from . import app, extras, fleet, pg, pitr, projects, s3, tls
from .common import SandboxError, say
from .state import (
    TARGETS,
    ensure_identities,
    fallback_pg_root,
    load_state,
    locked,
    new_state,
    sandbox_dir,
    save_state,
    state_file,
)

__all__ = [
    "SandboxError",
    "connect",
    "destroy",
    "down",
    "load_state",
    "psql",
    "sandbox_dir",
    "seed",
    "start_s3",
    "status",
    "stop_s3",
    "up",
]

ENV_FILE = """\
# The {name} sandbox project, as a runbook's dotenv file expects it.
SUPABASE_DB_URL={dsn}
DATABASE_URL={dsn}
# The sandbox runs no API gateway: nothing listens here.
SUPABASE_URL=http://127.0.0.1:54321
SUPABASE_ANON_KEY={anon_key}
SUPABASE_SERVICE_ROLE_KEY={service_role_key}
"""


def up(root: str | os.PathLike | None = None) -> dict:
    """Create or start the sandbox; idempotent. Returns the status (state plus live `up` flags)."""
    root = sandbox_dir(root)
    start = time.monotonic()
    if not root.exists():
        root.mkdir(parents=True)
        # The postgres user may need to traverse it; the secrets in it are files readable by root only.
        root.chmod(0o755)
    with locked(root):
        if state_file(root).exists():
            state = load_state(root)
            say(f"sandbox: {root}")
            if ensure_identities(state):
                save_state(state)
                say("s3: added the backup writer and project-storage identities")
        else:
            state = new_state(root)
            save_state(state)
            where = "" if state["pg_root"].startswith(str(root)) else f" (PostgreSQL under {state['pg_root']})"
            say(f"sandbox: creating {root}{where}")
        tls.ensure_tls(state)
        s3.start(state)
        s3.ensure_buckets(state)
        for name in TARGETS:
            target = state[name]
            created = pg.ensure_cluster(name, target, state["tls"])
            pg.start(name, target)
            if created or not target["initialized"]:
                app.bootstrap(name, target)
            if name == "production":
                app.apply_migrations(name, target, Path(state["app"]["migrations_dir"]))
                app.ensure_demo_data(state)
            target["initialized"] = True
            save_state(state)
        fleet.ensure(state, Path(state["app"]["migrations_dir"]))
        save_state(state)
        _write_env_files(state)
        extras.ensure_age_key(state)
        extras.ensure_signing_key(state)
        extras.ensure_identities(state, TARGETS)
        extras.start_api(state)
        extras.start_sessions(state)
        save_state(state)
    say(f"sandbox: up ({time.monotonic() - start:.1f} s)")
    return status(root)


def _write_env_files(state: dict) -> None:
    """Dotenv files, made once: a runbook rewrites the staging one later, so they are never overwritten."""
    for name, env_file in state["env_files"].items():
        path = Path(env_file)
        if path.exists():
            continue
        path.parent.mkdir(mode=0o700, exist_ok=True)
        target = state[name]
        text = ENV_FILE.format(
            name=name, dsn=target["dsn"], anon_key=target["anon_key"], service_role_key=target["service_role_key"]
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        say(f"env: wrote {path}")


def down(root: str | os.PathLike | None = None) -> None:
    """Stop the services, keeping their data: PostgreSQL first (its archiver may be pushing to S3), then S3."""
    root = sandbox_dir(root)
    if not state_file(root).exists():
        say(f"sandbox: nothing to stop at {root}")
        return
    state = load_state(root)
    with locked(Path(state["dir"])):
        # Clusters restored by the PITR runbook archive nowhere, but stop them first all the same.
        pitr.stop_restored(state)
        extras.stop_sessions(state)
        for name in TARGETS:
            pg.stop(name, state[name])
        # The stand-in first (it holds sessions on its projects and could be provisioning), then its projects.
        extras.stop_api(state)
        projects.stop_all(state)
        s3.stop(state)


def status(root: str | os.PathLike | None = None) -> dict:
    """The state with, for each service, `up` computed live."""
    state = copy.deepcopy(load_state(root))
    for name in TARGETS:
        state[name]["up"] = pg.is_up(state[name])
    state["s3"]["up"] = s3.running_pid(state) is not None and s3.answers(state)
    if "supabase_api" in state:
        state["supabase_api"]["up"] = extras.api_pid(state) is not None and extras.api_answers(state)
    state["platform_sessions"] = {"up": extras.sessions_pid(state) is not None and extras.sessions_connected(state)}
    # Projects created through the stand-in (POST /v1/projects), each a PostgreSQL server of its own.
    state["projects"] = projects.summary(state)
    return state


def seed(
    root: str | os.PathLike | None = None, rows: int | None = None, mb: float | None = None, target: str = "production"
) -> dict:
    """Add realistic events to a target's public.events: `rows` of them, or `mb` MB of database growth."""
    state = load_state(root)
    return app.seed_events(target, fleet.resolve(state, target), rows=rows, mb=mb)


def destroy(root: str | os.PathLike | None = None) -> None:
    """Stop everything and remove the state folder and PostgreSQL's folders outside it."""
    root = sandbox_dir(root)
    if not root.exists():
        say(f"sandbox: nothing at {root}")
        return
    if not any(root.iterdir()):
        root.rmdir()
        say(f"sandbox: removed the empty folder {root}")
        return
    if not (state_file(root).exists() or (root / ".lock").exists()):
        raise SandboxError(f"{root} does not look like a sandbox (no state.json): not removing it")
    pg_roots = {fallback_pg_root(root)}
    if state_file(root).exists():
        state = load_state(root)
        down(root)
        projects.release_all(state)
        pg_roots.add(Path(state["pg_root"]))
    for path in pg_roots:
        if path.exists() and not path.is_relative_to(root):
            shutil.rmtree(path)
    shutil.rmtree(root)
    say(f"sandbox: removed {root}")


def start_s3(root: str | os.PathLike | None = None) -> None:
    """Start the S3 endpoint alone (after stop_s3)."""
    s3.start(load_state(root))


def stop_s3(root: str | os.PathLike | None = None) -> None:
    """Stop the S3 endpoint alone, as an outage would."""
    s3.stop(load_state(root))


def connect(
    root: str | os.PathLike | None = None, target: str = "production", as_admin: bool = False, **kw
) -> psycopg.Connection:
    """A psycopg connection to `production`, `staging` or a fleet database (`production-b`, `production-c`) as
    postgres (not a superuser, as the runbooks connect), or with as_admin=True as the platform's superuser."""
    return pg.connect(fleet.resolve(load_state(root), target), as_admin=as_admin, **kw)


def psql(root: str | os.PathLike | None, target: str, query: str, params=None, as_admin: bool = False) -> list[tuple]:
    """Run one SQL statement (autocommit) and return its rows ([] for statements without a result)."""
    with connect(root, target, as_admin=as_admin, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []

"""The sandbox's smaller pieces: an age key pair for client-side encryption, an Ed25519 key pair that signs
backup manifests, each cluster's system identifier (the production guard decides on it), and two detached
processes like SeaweedFS: the local stand-in of the Supabase Management API (scripts/supabase_api_standin.py) and
the platform services' sessions (scripts/platform_sessions.py), which keep the projects' postgres databases in use
as PostgREST, Auth and Storage do on a hosted project."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .common import PG_BIN, SandboxError, pid_alive, run, say, tail
from .projects import DEFAULT_DB_PORT
from .state import PLATFORM_LOGINS, PORT_RANGE, REPO, TARGETS, port_free

READY_TIMEOUT = 15


def ensure_age_key(state: dict) -> bool:
    """An age identity under <dir>/secrets (root-only) and its public recipient in the state; made once."""
    import pyrage

    secrets_dir = Path(state["dir"]) / "secrets"
    identity_file = secrets_dir / "age-identity.txt"
    if state.get("age") and identity_file.exists():
        return False
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    identity = pyrage.x25519.Identity.generate()
    fd = os.open(identity_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{identity}\n")
    state["age"] = {"identity_file": str(identity_file), "recipient": str(identity.to_public())}
    say("age: made the sandbox's backup encryption key")
    return True


def ensure_signing_key(state: dict) -> bool:
    """An Ed25519 key pair that signs backup manifests: the private key under <dir>/secrets (root-only), the
    public key in the state (the inventory lists it as trusted); made once."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key_file = Path(state["dir"]) / "secrets" / "manifest-signing-key.pem"
    if state.get("signing") and key_file.exists():
        return False
    key_file.parent.mkdir(mode=0o700, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    state["signing"] = {"private_key_file": str(key_file), "public_key": "ed25519:" + base64.b64encode(raw).decode()}
    say("signing: made the sandbox's manifest signing key")
    return True


def ensure_identities(state: dict, targets) -> None:
    """Each cluster's system identifier (from pg_controldata, which needs no SQL privilege), as the inventory of a
    real deployment records production's."""
    for name in targets:
        target = state[name]
        if target.get("system_identifier"):
            continue
        out = run([PG_BIN / "pg_controldata", "-D", target["data_dir"]], as_postgres=True).stdout
        for line in out.splitlines():
            if line.startswith("Database system identifier:"):
                target["system_identifier"] = line.split(":", 1)[1].strip()
        if not target.get("system_identifier"):
            raise SandboxError(f"pg_controldata printed no system identifier for {name}")


def _api(state: dict) -> dict:
    """The stand-in's settings, added to older states on first use (a free port picked once)."""
    if "supabase_api" not in state:
        # A random free port, like the other services', so that two sandboxes starting at once do not collide.
        port = next((p for p in random.sample(range(*PORT_RANGE), 200) if port_free(p)), None)
        if port is None:
            raise SandboxError("no free loopback port for the Management API stand-in")
        folder = Path(state["dir"]) / "supabase-api"
        state["supabase_api"] = {
            "url": f"http://127.0.0.1:{port}",
            "port": port,
            "state_file": str(folder / "projects.json"),
            "pid_file": str(folder / "standin.pid"),
            "log_file": str(Path(state["dir"]) / "logs" / "supabase-api.log"),
        }
    return state["supabase_api"]


def _pid(pid_file: str) -> int | None:
    try:
        pid = int(Path(pid_file).read_text())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def _start(label: str, argv: list[str], service: dict, ready) -> None:
    """Start a detached process (its own session), wait until ready() says it serves, or fail with its log."""
    Path(service["pid_file"]).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    Path(service["log_file"]).parent.mkdir(parents=True, exist_ok=True)
    with open(service["log_file"], "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    Path(service["pid_file"]).write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + READY_TIMEOUT
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(label, service)
            raise SandboxError(f"the {label} did not start; last lines of its log:\n{tail(Path(service['log_file']))}")
        time.sleep(0.1)


def _stop(label: str, service: dict) -> None:
    """SIGTERM to the process group, 10 s, then SIGKILL."""
    pid = _pid(service["pid_file"])
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    Path(service["pid_file"]).unlink(missing_ok=True)
    say(f"{label}: stopped")


def api_pid(state: dict) -> int | None:
    api = state.get("supabase_api")
    return _pid(api["pid_file"]) if api else None


def api_answers(state: dict) -> bool:
    api = state.get("supabase_api")
    if not api:
        return False
    try:
        urllib.request.urlopen(api["url"] + "/v1/projects", timeout=2)  # noqa: S310 - our own loopback endpoint
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # it answers, and wants a token
    except OSError:
        return False
    return True


def _api_argv(state: dict) -> list[str]:
    api = state["supabase_api"]
    script = REPO / "scripts" / "supabase_api_standin.py"
    # --sandbox: a project created through the API is a real PostgreSQL server (sandboxlib/projects.py).
    return [
        sys.executable,
        str(script),
        "--port",
        str(api["port"]),
        "--state",
        api["state_file"],
        "--sandbox",
        state["dir"],
        "--db-port",
        str(api.get("db_port", DEFAULT_DB_PORT)),
    ]


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return []


def start_api(state: dict) -> None:
    api = _api(state)
    argv = _api_argv(state)
    pid = api_pid(state)
    if pid and _cmdline(pid) == argv:
        say(f"supabase api stand-in: already running on {api['url']}")
        return
    if pid:
        # Started by an older scripts/sandbox with other options (e.g. without --sandbox): start it again.
        _stop("supabase api stand-in (other options)", api)
    _start("Management API stand-in", argv, api, lambda: api_answers(state))
    say(f"supabase api stand-in: started on {api['url']}")


def stop_api(state: dict) -> None:
    if state.get("supabase_api"):
        _stop("supabase api stand-in", state["supabase_api"])


def _sessions(state: dict) -> dict:
    folder = Path(state["dir"]) / "platform-sessions"
    return {
        "pid_file": str(folder / "sessions.pid"),
        "log_file": str(Path(state["dir"]) / "logs" / "platform-sessions.log"),
        "status_file": str(folder / "status.json"),
    }


def sessions_pid(state: dict) -> int | None:
    return _pid(_sessions(state)["pid_file"])


def sessions_connected(state: dict) -> bool:
    """True when every platform login holds its session on every project (the process's own status file)."""
    try:
        status = json.loads(Path(_sessions(state)["status_file"]).read_text())
    except (OSError, ValueError):
        return False
    return all(status.get(target, {}).get(login) == "connected" for target in TARGETS for login in PLATFORM_LOGINS)


def start_sessions(state: dict) -> None:
    """The platform services' sessions on each project's postgres database (authenticator LISTENs, as PostgREST)."""
    service = _sessions(state)
    if sessions_pid(state):
        say("platform sessions: already running")
        return
    Path(service["status_file"]).unlink(missing_ok=True)
    script = REPO / "scripts" / "platform_sessions.py"
    argv = [
        sys.executable,
        str(script),
        "--state",
        str(Path(state["dir"]) / "state.json"),
        "--status",
        service["status_file"],
    ]
    _start("platform sessions", argv, service, lambda: sessions_connected(state))
    say(f"platform sessions: {', '.join(PLATFORM_LOGINS)} connected to each project's postgres database")


def stop_sessions(state: dict) -> None:
    _stop("platform sessions", _sessions(state))

"""Small helpers shared by the sandbox modules: commands, timed progress lines, processes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
HOST = "127.0.0.1"


class SandboxError(RuntimeError):
    """A failure with a message meant for a person (the CLI prints it without a traceback)."""


def say(message: str) -> None:
    """One progress line, flushed at once so it interleaves correctly with child output."""
    print(message, flush=True)


@contextlib.contextmanager
def timed(label: str) -> Iterator[dict]:
    """Print `label: <outcome> (<seconds> s)` when the block ends; the block may set info["outcome"]."""
    info = {"outcome": "done"}
    start = time.monotonic()
    yield info
    say(f"{label}: {info['outcome']} ({time.monotonic() - start:.1f} s)")


def run(cmd: Sequence[str | Path], *, as_postgres: bool = False, timeout: float = 120, check: bool = True, **kw):
    """Run a command and capture its output; as_postgres runs it through `runuser -u postgres`.

    The working directory is `/` so the postgres user never starts in a folder it cannot enter.
    """
    argv = [str(c) for c in cmd]
    if as_postgres:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    proc = subprocess.run(argv, cwd="/", capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if check and proc.returncode != 0:
        raise SandboxError(f"{' '.join(argv)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    return proc


def postgres_can_reach(path: Path) -> bool:
    """True when the postgres OS user can traverse every folder down to `path`."""
    return run(["test", "-x", path], as_postgres=True, check=False).returncode == 0


def install_dir(path: Path, owner: str = "root", mode: str = "700") -> None:
    """Create a folder (and parents) with an owner and mode, like `install -d`."""
    run(["install", "-d", "-o", owner, "-g", owner, "-m", mode, path])


def pid_alive(pid: int) -> bool:
    """True when `pid` runs and is not a zombie (a zombie child of this process is reaped on the way)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] != "Z":
        return True
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return False


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, or a note that it is missing."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"

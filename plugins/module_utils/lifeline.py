"""A module run stops when its controller is gone or it is told to stop, and leaves the clean state of any failure.

issue 9.11 (and the SIGTERM part of 9.9). Ansible runs a module in a process of its own, below the worker that
ansible-playbook forked; the worker calls setsid(), so killing ansible-playbook's process group (SIGKILL, a lost
terminal, a CI runner that gives up) leaves the worker, the shell wrappers and the module running. Three things
make the module stop instead:

- ``install()`` makes SIGTERM and SIGHUP raise ``Interrupted`` in the main thread (a BaseException, so no
  ``except Exception`` swallows it): the run unwinds through its normal failure path (temporary database dropped,
  uploads aborted, work files removed) and the module reports "interrupted".
- It asks Linux for SIGTERM when the module's parent dies (``prctl(PR_SET_PDEATHSIG)`` through ctypes), and
  watches the controller itself: walking up from the module past shells and privilege wrappers (sh, su, sudo) to
  the first ansible process, it watches that one and every ansible process directly above it (the worker and
  ansible-playbook); without an ansible ancestor (a module run over ssh) it watches the first real ancestor (the
  ssh session). A watched process that is gone (or whose pid now belongs to another process) sends this process
  SIGTERM, once a second at most.
- ``tool_argv()`` starts the client tools (pg_dump, pg_restore, psql) under ``setpriv --pdeathsig TERM``, so they
  stop when the module dies, even when it is killed outright. PR_SET_PDEATHSIG fires when the parent *thread*
  ends: only wrap tools started from a thread that waits for them (the engine's are).

All of this is Linux-only and does nothing elsewhere (no /proc, no prctl).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1
POLL_S = 1.0
_WRAPPERS = {"sh", "bash", "dash", "zsh", "ksh", "su", "sudo", "runuser", "doas", "setpriv", "env", "timeout"}


class Interrupted(BaseException):
    """The run was told to stop (SIGTERM, SIGHUP) or its controller is gone."""


_state = {"reason": None, "watcher": None, "installed": False}


def _raise(signum, _frame):
    reason = _state["reason"] or f"{signal.Signals(signum).name} received"
    raise Interrupted(reason)


def _stat(pid):
    """(parent pid, start time in clock ticks) of pid, or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after its closing parenthesis.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[19]


def process_start(pid):
    """The start time of pid (clock ticks since boot), or None when it does not run (or there is no /proc)."""
    found = _stat(pid)
    return found[1] if found else None


def _argv(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return []


def _is_ansible(argv):
    return any(os.path.basename(a).startswith("ansible") for a in argv[:2])


def _is_wrapper(argv):
    return bool(argv) and os.path.basename(argv[0]) in _WRAPPERS


def ancestors(pid=None):
    """[(pid, start, argv)] from the parent of pid up to (not including) pid 1."""
    chain = []
    current = _stat(pid or os.getpid())
    while current and current[0] > 1:
        parent = current[0]
        current = _stat(parent)
        if current is None:
            break
        chain.append((parent, current[1], _argv(parent)))
    return chain


def controllers(chain):
    """The processes whose end means this run must stop (see the module docstring)."""
    for index, (_unused, _unused, argv) in enumerate(chain):
        if _is_ansible(argv):
            watched = []
            for entry in chain[index:]:
                if not _is_ansible(entry[2]):
                    break
                watched.append(entry)
            return watched
        if not _is_wrapper(argv):
            return [chain[index]]
    return chain[:1]


def _gone(entry):
    pid, start, _unused = entry
    now = _stat(pid)
    return now is None or now[1] != start


def _watch(watched, interval):
    while True:
        for entry in watched:
            if _gone(entry):
                name = os.path.basename(entry[2][1] if len(entry[2]) > 1 else (entry[2] or ["?"])[0])
                _state["reason"] = f"the controller ({name}, pid {entry[0]}) is gone"
                os.kill(os.getpid(), signal.SIGTERM)
                return
        threading.Event().wait(interval)


def _set_pdeathsig():
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def install(interval=POLL_S):
    """Make this process stop cleanly on SIGTERM/SIGHUP and when its controller is gone. Main thread only; once."""
    if _state["installed"] or threading.current_thread() is not threading.main_thread():
        return None
    _state["installed"] = True
    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGHUP, _raise)
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getppid()
    _set_pdeathsig()
    watched = controllers(ancestors())
    if os.getppid() != parent:  # the parent died before the death signal was armed
        _state["reason"] = "the controller is gone (the module's parent ended before it started)"
        os.kill(os.getpid(), signal.SIGTERM)
    if watched:
        thread = threading.Thread(target=_watch, args=(watched, interval), name="controller-watch", daemon=True)
        thread.start()
        _state["watcher"] = thread
    return [(pid, argv[:2]) for pid, _unused, argv in watched]


_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def tool_argv(argv):
    """argv run so that the tool gets SIGTERM when the process that started it dies (setpriv --pdeathsig)."""
    if _SETPRIV:
        return [_SETPRIV, "--pdeathsig", "TERM", "--", *argv]
    return list(argv)

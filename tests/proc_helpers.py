"""Processes by tree, never by name: the descendants of a process we started, and killing exactly those."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def _parent(pid):
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2 :].split()[1])


def cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def descendants(root):
    """Every live process below root (children, grandchildren, ...)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _parent(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def wait_for(predicate, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def find_in_tree(root, needle, shells=True):
    """The pids below root whose command line contains needle (without the sh -c wrappers unless shells)."""
    return [
        pid
        for pid in descendants(root)
        if needle in cmdline(pid) and (shells or not cmdline(pid).startswith(("/bin/sh ", "sh ")))
    ]


def kill_tree(pids, sig=signal.SIGKILL):
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

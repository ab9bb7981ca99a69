"""A private work folder per run, for plaintext that must touch disk (decrypted dumps), and the removal of those
that killed runs left behind.

issue 9.9. ``WorkFolder(parent, kind, label)``:

- first removes the work folders of this kind that runs on this host left when they were killed (the process
  named in the folder's owner record is gone, or its pid now belongs to another process), and older folders
  without an owner record (made before this helper) not touched for ``LEGACY_STALE_S``; ``removed`` lists them
  and the caller says so in its output;
- makes ``<parent>/pgdr-<kind>-<label>-<random>/`` with mode 0700 and an owner record (host, pid, the process's
  start time, when);
- ``open_private(path)`` creates a file inside with mode 0600 (never following a symlink, never reusing a file);
- ``remove()`` deletes it all; call it from a ``finally`` (SIGTERM reaches it through lifeline.Interrupted).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time

from ansible_collections.pgdr.supabase.plugins.module_utils import lifeline, timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

OWNER_FILE = ".pgdr-owner.json"
LEGACY_STALE_S = 3600
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _alive(pid, start):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = lifeline.process_start(pid)
    return now is None or start is None or now == start


def _stale(path):
    """Why the folder at path is a killed run's, or None when it may belong to a live run."""
    try:
        with open(os.path.join(path, OWNER_FILE), encoding="utf-8") as fh:
            owner = json.load(fh)
    except FileNotFoundError:
        age = time.time() - os.stat(path).st_mtime
        if age > LEGACY_STALE_S:
            return f"no owner record, untouched for {age / 3600:.1f} h"
        return None
    except (OSError, ValueError):
        return None
    if owner.get("host") != socket.gethostname():
        return None  # another host's run: not ours to judge
    pid = int(owner.get("pid") or 0)
    if pid and not _alive(pid, owner.get("start")):
        return f"left by pid {pid} ({owner.get('purpose')}), which is gone"
    return None


def sweep(parent, kind):
    """Remove the work folders of kind that killed runs on this host left in parent. Returns [(path, why)]."""
    removed = []
    try:
        names = os.listdir(parent)
    except FileNotFoundError:
        return removed
    for name in sorted(names):
        path = os.path.join(parent, name)
        if not name.startswith(f"pgdr-{kind}-") or not os.path.isdir(path) or os.path.islink(path):
            continue
        why = _stale(path)
        if why:
            shutil.rmtree(path, ignore_errors=True)
            removed.append((path, why))
    return removed


class WorkFolder:
    def __init__(self, parent, kind, label, purpose=None):
        self.parent = parent
        try:
            os.makedirs(parent, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise DRError(
                f"cannot make the work folder's parent: {exc.strerror}",
                step="prepare work folder",
                subject=parent,
                hint="point the workdir at a folder this user can write",
            ) from exc
        self.removed = sweep(parent, kind)
        self.path = tempfile.mkdtemp(prefix=f"pgdr-{kind}-{_SAFE.sub('_', label)[:40]}-", dir=parent)
        os.chmod(self.path, 0o700)
        owner = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "start": lifeline.process_start(os.getpid()),
            "purpose": purpose or f"{kind} {label}",
            "created_at": timefmt.iso(timefmt.utcnow()),
        }
        with self.open_private(os.path.join(self.path, OWNER_FILE), "w") as fh:
            json.dump(owner, fh)

    def join(self, name):
        return os.path.join(self.path, name)

    @staticmethod
    def open_private(path, mode="wb"):
        """A new file at path, mode 0600, refusing an existing file or a symlink."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        return os.fdopen(fd, mode)

    def notes(self):
        """One line per stale folder removed, for the run's output."""
        return [f"removed the work folder {path} ({why})" for path, why in self.removed]

    def remove(self):
        shutil.rmtree(self.path, ignore_errors=True)

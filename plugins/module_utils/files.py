"""Writing a file in one piece: a temporary file in the same folder, then renamed over the target, so that a reader
sees the old content or the new, never half of it.

The temporary file is ``.<name>.pgdr-<pid>-<random>.tmp``, mode 0600 until it is renamed, and removed when the
write fails. A writer killed before the rename leaves it behind: :func:`remove_stale_temp_files` removes those of
dead writers (they may hold secrets in clear).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import time

TEMP_MARK = ".pgdr-"
# A temporary file named by mkstemp alone (the older writers) counts as stale once untouched this long.
LEGACY_TEMP_STALE_S = 600
_LEGACY_TEMP = re.compile(r"^\.(?P<base>.+)\.[A-Za-z0-9_]{8}\.tmp$")


def write_atomic(path, data, mode=0o644, owner=None, keep_existing=False, fsync=False, fsync_dir=False):
    """Write data (str, written as UTF-8, or bytes) to path through a temporary file and a rename.

    mode: the file's permission bits. owner: (uid, gid) given to the file when running as root. keep_existing: a
    file already at path keeps its mode and owner (mode and owner then apply to a new file only). fsync: the data
    reaches the disk before the rename; fsync_dir: the rename too (the folder is synced after it)."""
    folder = os.path.dirname(path) or "."
    if keep_existing:
        try:
            info = os.stat(path)
            mode, owner = stat.S_IMODE(info.st_mode), (info.st_uid, info.st_gid)
        except FileNotFoundError:
            pass
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}{TEMP_MARK}{os.getpid()}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if owner and os.geteuid() == 0:
            os.chown(tmp, *owner)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync_dir:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def pid_alive(pid):
    """Whether a process of that pid exists on this host (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(path):
    """The temporary copies of path that killed writers left (they hold every value of the file in clear).

    A temporary file is ``.<name>.pgdr-<pid>-<random>.tmp``: stale once that process is gone. Older ones, named by
    mkstemp alone (``.<name>.<8 characters>.tmp``), count as stale once untouched for LEGACY_TEMP_STALE_S.
    Returns the paths removed (issue 9.9)."""
    folder = os.path.dirname(path) or "."
    base = os.path.basename(path)
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        stale = False
        prefix = f".{base}{TEMP_MARK}"
        if name.startswith(prefix) and name.endswith(".tmp"):
            pid = name[len(prefix) :].split("-", 1)[0]
            stale = pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid))
        else:
            legacy = _LEGACY_TEMP.match(name)
            if legacy and legacy["base"] == base:
                try:
                    stale = time.time() - os.lstat(os.path.join(folder, name)).st_mtime > LEGACY_TEMP_STALE_S
                except OSError:
                    stale = False
        if stale:
            try:
                os.unlink(os.path.join(folder, name))
                removed.append(os.path.join(folder, name))
            except OSError:
                pass
    return removed

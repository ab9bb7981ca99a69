"""What every environment store shares: the Store interface, the masking of values, plans and masked diffs (pure),
variable-name checks, and the StoreLock that keeps promotes and rollbacks of one store apart.

Values never leave the stores in clear except through :meth:`Store.read`: plans hold names and actions, diffs hold
masked values (:func:`mask`), errors name the store and the variable, not the value.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
import time
from urllib.parse import urlsplit

from ansible_collections.pgdr.supabase.plugins.module_utils import timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError, redact

STORE_TYPES = ("dotenv", "ssm", "secretsmanager", "command")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
ABSENT = None

# ---------------------------------------------------------------------------------------------------------------
# Masking, plans and diffs (pure)


def mask(value):
    """The shape of a value without its secret.

    URLs keep scheme, user, host, port, path and query keys, with the password (and query values that look like
    secrets) replaced by ``********``: ``postgresql://postgres:********@db.example:5432/postgres``. Anything else
    becomes ``****`` plus its last 4 characters when it is at least 12 long (``****a1b2``), else ``****``.
    An absent variable is ``(absent)``.
    """
    if value is None:
        return "(absent)"
    value = str(value)
    if "://" in value and "\n" not in value:
        try:
            parts = urlsplit(value)
            netloc = parts.netloc
            if "@" in netloc:
                userinfo, hostport = netloc.rsplit("@", 1)
                user = userinfo.split(":", 1)[0]
                netloc = f"{user}:********@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
            query = redact(parts.query) if parts.query else ""
            if query:
                query = re.sub(
                    r"(?i)\b((?:password|passwd|pwd|secret|token|key|sslpassword)[^=&]*)=[^&]*", r"\1=********", query
                )
            text = f"{parts.scheme}://{netloc}{parts.path}"
            return f"{text}?{query}" if query else text
        except ValueError:
            pass
    if len(value) >= 12:
        return f"****{value[-4:]}"
    return "****"


def plan(current, desired):
    """Per-name action, without values: ``add`` (absent now), ``change`` (differs) or ``unchanged``."""
    steps = []
    for name, value in desired.items():
        before = current.get(name)
        if before is None:
            action = "add"
        elif str(before) != str(value):
            action = "change"
        else:
            action = "unchanged"
        steps.append({"name": name, "action": action})
    return steps


def restore_plan(current, previous):
    """Like :func:`plan` for putting back recorded values, where an absent previous value means ``remove``."""
    steps = []
    for name, value in previous.items():
        before = current.get(name)
        if value is None:
            action = "unchanged" if before is None else "remove"
        elif before is None:
            action = "add"
        else:
            action = "unchanged" if str(before) == str(value) else "change"
        steps.append({"name": name, "action": action})
    return steps


def is_change(steps):
    return any(step["action"] != "unchanged" for step in steps)


def masked(values):
    return {name: mask(value) for name, value in values.items()}


def masked_diff(current, desired, before_header="before", after_header="after"):
    """Ansible's diff dict for current -> desired, values masked. A value whose change hides entirely inside the
    masked part (a new password in the same URL) is marked so the diff never looks like no change."""
    before, after = [], []
    for name, value in desired.items():
        old = current.get(name)
        old_text, new_text = mask(old), mask(value)
        if old is not None:
            before.append(f"{name}={old_text}\n")
        if value is not None:
            note = ""
            if old is not None and str(old) != str(value) and old_text == new_text:
                note = "  # changed (the difference is in the masked part)"
            after.append(f"{name}={new_text}{note}\n")
    return {
        "before": "".join(before),
        "after": "".join(after),
        "before_header": before_header,
        "after_header": after_header,
    }


def check_names(names, store_label):
    for name in names:
        if not isinstance(name, str) or not _NAME.match(name):
            raise DRError(
                f"invalid variable name {name!r}",
                step="check env values",
                subject=store_label,
                hint="use letters, digits and '_' (starting with a letter or '_'), e.g. SUPABASE_DB_URL",
            )


# ---------------------------------------------------------------------------------------------------------------
# Stores


class Store:
    """A store of named variables. Subclasses implement ``read``, ``write``, ``delete`` and the rollback record."""

    kind = "?"

    def label(self):
        raise NotImplementedError

    def read(self, names):
        """Current values of the given names: ``{NAME: value or None (absent)}``."""
        raise NotImplementedError

    def write(self, values):
        """Set every ``NAME: value`` given (values already known to differ)."""
        raise NotImplementedError

    def delete(self, names):
        raise NotImplementedError

    def preflight(self):
        """Checks a check-mode run makes so that it fails where the real run would (no writes)."""

    # Temporary files of killed runs that this run removed (dotenv), for the run's output.
    cleaned = ()

    def lock(self, purpose):
        """The store's StoreLock (a context manager): one promote or rollback at a time."""
        return StoreLock(host_lock_path(self.kind, self.label()), self.label(), purpose)

    # The rollback record of promote(): see promote.py.
    def default_record_location(self):
        raise NotImplementedError

    def load_record(self, location):
        raise NotImplementedError

    def save_record(self, location, record):
        raise NotImplementedError

    def error(self, message, step, names=(), hint=None, values=()):
        subject = self.label()
        if names:
            subject += f", variable {', '.join(names)}"
        return DRError(redact(message, [str(v) for v in values if v]), step=step, subject=subject, hint=hint)


class StoreLock:
    """One promote or rollback at a time per env store, the holder named (issue 9.7).

    An flock(2) on a lock file: ``<file>.pgdr-lock`` next to a dotenv file (every run on the host that holds the
    file sees it); for the other store kinds, a file per store under ``/var/tmp/pgdr-locks-<uid>/`` on the control
    host (it keeps two runs on this host apart, not runs on two controllers). The kernel drops the lock when the
    holder dies, so a killed run leaves nothing stale; the file keeps the last holder's description."""

    def __init__(self, path, label, purpose):
        self.path = path
        self.label = label
        self.purpose = purpose
        self._fd = None

    def acquire(self):
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            who = (
                f"{holder['purpose']} on {holder.get('host')} (pid {holder.get('pid')}) since {holder.get('since')}"
                if holder
                else "a run that is just starting"
            )
            raise DRError(
                f"another promote or rollback of this store is running: {who}",
                step="lock env store",
                subject=self.label,
                hint="wait for it to finish and check its result before running again",
            ) from None
        holder = {
            "purpose": self.purpose,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": timefmt.iso(timefmt.utcnow()),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd
        return self

    @staticmethod
    def _holder(fd):
        """The holder's description; it writes it right after taking the lock, so wait a moment for it."""
        for _unused in range(20):
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                holder = {}
            if holder.get("purpose"):
                return holder
            time.sleep(0.025)
        return None

    def release(self):
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def host_lock_path(kind, label):
    digest = hashlib.sha256(label.encode()).hexdigest()[:16]
    return os.path.join("/var/tmp", f"pgdr-locks-{os.getuid()}", f"{kind}-{digest}.lock")  # noqa: S108

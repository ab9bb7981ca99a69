"""A lock object in the bucket so that two runs against the same source never interleave.

Taken with a conditional write (If-None-Match), renewed while the run lasts, released at the end. A lock
whose holder stopped renewing it (killed run) goes stale after ``stale_after`` seconds; a lock taken on
this host by a process that no longer exists is stale at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid

from ansible_collections.pgdr.supabase.plugins.module_utils import catalog
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import error_code


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SourceLock:
    # Tokens of the locks this process holds now: a lock naming this process but not held is a leftover.
    _held = set()

    def __init__(self, target, key, purpose, wait=0, stale_after=600, renew_every=60, poll=2.0):
        self.target = target
        self.key = key
        self.purpose = purpose
        self.wait = wait
        self.stale_after = stale_after
        self.renew_every = renew_every
        self.poll = poll
        self.waited = 0.0
        self._stop = threading.Event()
        self._thread = None
        self._body = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "purpose": purpose,
            "token": uuid.uuid4().hex,
            "taken_at": catalog.isoformat(catalog.utcnow()),
        }

    def _payload(self):
        body = dict(self._body, renewed_at=time.time())
        return json.dumps(body).encode()

    def holder(self):
        """The current lock's content, or None."""
        return self.target.get_json(self.key, step="read lock")

    def is_stale(self, holder):
        if holder.get("host") == socket.gethostname():
            pid = int(holder.get("pid", 0))
            if pid == os.getpid():
                return holder.get("token") not in SourceLock._held
            if not _pid_alive(pid):
                return True
        return time.time() - float(holder.get("renewed_at", 0)) > self.stale_after

    def describe(self, holder):
        age = time.time() - float(holder.get("renewed_at", 0))
        return (
            f"{holder.get('purpose', 'a run')} on {holder.get('host')} (pid {holder.get('pid')}) holds "
            f"{self.target.where(self.key)} since {holder.get('taken_at')}, last renewed {age:.0f} s ago"
        )

    def acquire(self):
        started = time.monotonic()
        while True:
            try:
                self.target.put_bytes(self.key, self._payload(), step="take lock", if_none_match=True)
                break
            except DRError as exc:
                cause = exc.__cause__
                if error_code(cause) not in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                    raise
            holder = self.holder()
            if holder is not None and self.is_stale(holder):
                self.target.delete_keys([self.key], step="remove stale lock")
                continue
            if holder is not None and time.monotonic() - started >= self.wait:
                raise DRError(
                    f"another run is in progress: {self.describe(holder)}",
                    step="take lock",
                    hint=f"wait for it to finish, or, if it was killed, remove the lock after {self.stale_after} s "
                    "(it goes stale by itself); raise lock_wait to queue behind it",
                )
            time.sleep(self.poll)
        self.waited = time.monotonic() - started
        SourceLock._held.add(self._body["token"])
        self._thread = threading.Thread(target=self._renew, name="lock-renew", daemon=True)
        self._thread.start()
        return self

    def _renew(self):
        while not self._stop.wait(self.renew_every):
            # The run itself reports S3 trouble; a missed renewal only shortens the lock's life.
            with contextlib.suppress(DRError):
                self.target.put_bytes(self.key, self._payload(), step="renew lock")

    def release(self):
        SourceLock._held.discard(self._body["token"])
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        holder = self.holder()
        if holder and holder.get("token") == self._body["token"]:
            self.target.delete_keys([self.key], step="release lock")

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        try:
            self.release()
        except DRError:
            if exc[0] is None:
                raise
        return False

"""A lock object in the bucket so that two runs against the same source never interleave.

Every change of the lock object is a compare-and-swap: it is taken with a conditional write (If-None-Match: *);
a stale lock is taken over only by a write conditional on the stale lock's ETag (If-Match), so of two runs that
both judge it stale exactly one gets it; renewals are conditional on the holder's own last ETag, so a run whose
lock was taken over learns it (``lost``) instead of writing over the new holder; the release is a delete
conditional on the same ETag. A lock whose holder stopped renewing it (killed run) goes stale after
``stale_after`` seconds; a lock taken on this host by a process that no longer exists is stale at once.

``confirm()`` renews the lock right now and fails when it was lost: a run calls it just before its commit, so it
commits only while it holds a lock that nobody may take over for the next ``stale_after`` seconds.

The servers this runs against must honour If-Match on PutObject and DeleteObject (AWS S3 does; SeaweedFS 4.48
does, measured under concurrency by tests/integration/test_backup_races.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid

from ansible_collections.pgdr.supabase.plugins.module_utils import timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.files import pid_alive
from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import is_precondition_failed


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
        self.etag = None
        self.lost = None  # who took the lock over, once renewing it failed
        self.took_over = None  # the stale holder this run took the lock from
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._body = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "purpose": purpose,
            "token": uuid.uuid4().hex,
            "taken_at": timefmt.iso(timefmt.utcnow()),
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
            if not pid_alive(pid):
                return True
        return time.time() - float(holder.get("renewed_at", 0)) > self.stale_after

    def describe(self, holder):
        age = time.time() - float(holder.get("renewed_at", 0))
        return (
            f"{holder.get('purpose', 'a run')} on {holder.get('host')} (pid {holder.get('pid')}) holds "
            f"{self.target.where(self.key)} since {holder.get('taken_at')}, last renewed {age:.0f} s ago"
        )

    def _write(self, step, **condition):
        """One conditional write of the lock; True when it landed (then self.etag is ours), False when the
        condition did not hold."""
        try:
            resp = self.target.put_bytes(self.key, self._payload(), step=step, **condition)
        except DRError as exc:
            if is_precondition_failed(exc):
                return False
            raise
        self.etag = (resp or {}).get("ETag")
        return True

    def acquire(self):
        started = time.monotonic()
        while True:
            if self._write("take lock", if_none_match=True):
                break
            holder, etag = self.target.get_json_etag(self.key, step="read lock")
            if holder is not None and self.is_stale(holder):
                # Take it over only if it is still the stale lock we judged: of two runs doing this, one wins.
                if self._write("take over stale lock", if_match=etag):
                    self.took_over = self.describe(holder)
                    break
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
        self.lost = None
        SourceLock._held.add(self._body["token"])
        self._thread = threading.Thread(target=self._renew, name="lock-renew", daemon=True)
        self._thread.start()
        return self

    def _renew_once(self, step):
        """Renew the lock if it is still ours; note who took it otherwise."""
        with self._write_lock:
            if self.lost:
                return False
            if self._write(step, if_match=self.etag):
                return True
            holder = self.holder()
            self.lost = self.describe(holder) if holder else "nobody (the lock object was removed)"
            return False

    def _renew(self):
        while not self._stop.wait(self.renew_every):
            # The run itself reports S3 trouble; a missed renewal only shortens the lock's life.
            with contextlib.suppress(DRError):
                if not self._renew_once("renew lock"):
                    return

    def confirm(self, step="confirm lock"):
        """Renew now; raise when another run took the lock over (this run must then not commit anything)."""
        if not self._renew_once(step) or self.lost:
            raise DRError(
                f"this run lost its lock to another run: {self.lost}",
                step=step,
                subject=self.target.where(self.key),
                hint="this run stalled longer than lock_stale_after; nothing was committed by it. Check the other "
                "run's result, and raise lock_stale_after if runs can stall this long",
            )

    def release(self):
        SourceLock._held.discard(self._body["token"])
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        with self._write_lock:
            if not self.lost and self.etag:
                # Conditional: a lock another run took over stays with it.
                self.target.delete_if_match(self.key, self.etag, step="release lock")

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        try:
            self.release()
        except DRError:
            if exc[0] is None:
                raise
        return False

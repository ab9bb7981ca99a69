"""Client-side encryption of backup objects with age (X25519 recipients), streamed, so that whoever holds
the bucket cannot read the dumps. Restores decrypt with an identity from a vault or a lookup."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading

from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

try:
    import pyrage

    HAS_PYRAGE = True
except ImportError:  # pragma: no cover - reported when encryption is asked for
    HAS_PYRAGE = False


def _need_pyrage(step):
    if not HAS_PYRAGE:
        raise DRError("the pyrage package (age encryption) is not installed", step=step, hint="run 'make setup'")


def parse_recipients(recipients, step="check encryption"):
    """age recipients (age1...) as pyrage objects; a malformed one is named (its first characters only)."""
    _need_pyrage(step)
    parsed = []
    for text in recipients:
        try:
            parsed.append(pyrage.x25519.Recipient.from_str(text.strip()))
        except Exception as exc:  # pyrage raises RecipientError or ValueError
            raise DRError(
                f"{text.strip()[:12]}... is not an age recipient (expected age1... from 'age-keygen')",
                step=step,
                hint="fix encryption_recipients in the inventory",
            ) from exc
    if not parsed:
        raise DRError(
            "encryption is on but no recipient is given",
            step=step,
            hint="list at least one age recipient (age1...) in encryption_recipients",
        )
    return parsed


def parse_identities(identities, step="check decryption"):
    """age identities (AGE-SECRET-KEY-1...) as pyrage objects; never echoes the key."""
    _need_pyrage(step)
    parsed = []
    for text in identities:
        try:
            parsed.append(pyrage.x25519.Identity.from_str(text.strip()))
        except Exception as exc:
            raise DRError(
                "an age identity is malformed (expected AGE-SECRET-KEY-1...)",
                step=step,
                hint="check the decryption identity in the vault or lookup",
            ) from exc
    return parsed


def check_can_decrypt(manifest, identities, where=None, step="check decryption"):
    """Before anything is read (issue 9.10): an encrypted backup needs an identity, and one of the given identities
    must match one of each encrypted object's recipients. Names the recipients, never the identities."""
    encrypted = [o for o in manifest.get("objects") or [] if o.get("encryption")]
    if not encrypted:
        return None
    if not identities:
        raise DRError(
            f"backup {manifest.get('backup_id')} is encrypted ({len(encrypted)} objects) and no decryption identity "
            "was given",
            step=step,
            subject=where,
            hint="pass the age identity from the vault (pgdr_backup_decryption_identities)",
        )
    mine = {str(identity.to_public()) for identity in parse_identities(identities, step)}
    for obj in encrypted:
        recipients = set((obj.get("encryption") or {}).get("recipients") or [])
        if recipients and not (recipients & mine):
            raise DRError(
                f"none of the given age identities matches object {obj['name']} of backup {manifest.get('backup_id')}: "
                f"it is encrypted to {', '.join(sorted(r[:16] + '...' for r in recipients))}",
                step=step,
                subject=where,
                hint="use the identity whose public key (age-keygen -y) is one of those recipients",
            )
    return len(encrypted)


class EncryptingWriter:
    """A write-only stream that age-encrypts what it receives into ``sink`` (another writer).

    pyrage pulls its input, so the encryption runs on a thread of its own reading from a pipe that write()
    fills; memory stays at the pipe's and pyrage's small buffers. ``plain_sha256`` is the SHA-256 of what
    was written (the compressed plaintext), checked again after decryption on restore.
    """

    def __init__(self, sink, recipients):
        self._sink = sink
        self._recipients = recipients
        self._plain = hashlib.sha256()
        self.plain_size = 0
        read_fd, write_fd = os.pipe()
        self._reader = os.fdopen(read_fd, "rb", buffering=1024 * 1024)
        self._writer = os.fdopen(write_fd, "wb", buffering=1024 * 1024)
        self._error = None
        self._thread = threading.Thread(target=self._run, name="age-encrypt", daemon=True)
        self._thread.start()

    def _run(self):
        try:
            pyrage.encrypt_io(self._reader, self._sink, self._recipients)
        except BaseException as exc:  # reported by write()/close()
            self._error = exc
        finally:
            self._reader.close()

    def write(self, data):
        if self._error:
            raise self._error
        self._plain.update(data)
        self.plain_size += len(data)
        try:
            self._writer.write(data)
        except BrokenPipeError:
            raise self._error or DRError("the encryption stopped", step="encrypt") from None
        return len(data)

    def flush(self):
        return None

    @property
    def plain_sha256(self):
        return self._plain.hexdigest()

    def close(self):
        """Finish the age stream; raises what the encryption thread raised."""
        with contextlib.suppress(BrokenPipeError):
            self._writer.close()
        self._thread.join()
        if self._error:
            raise DRError(f"encryption failed: {self._error}", step="encrypt") from self._error

    def abort(self):
        with contextlib.suppress(OSError):
            self._writer.close()
        self._thread.join(timeout=10)


class _HashingReader(io.RawIOBase):
    """Reads a stream (an S3 body) and hashes what passes; keeps the error the stream raised, which pyrage turns
    into a DecryptError of its own."""

    def __init__(self, body, digest):
        self._body = body
        self._digest = digest
        self.size = 0
        self.error = None

    def readable(self):
        return True

    def readinto(self, buffer):
        try:
            data = self._body.read(len(buffer))
        except BaseException as exc:
            self.error = exc
            raise
        n = len(data)
        buffer[:n] = data
        self._digest.update(data)
        self.size += n
        return n


class _Sink(io.RawIOBase):
    """Hands decrypted bytes on; keeps the error the consumer raised (pg_restore gone, a full disk)."""

    def __init__(self, write):
        self._write = write
        self.error = None

    def writable(self):
        return True

    def write(self, data):
        try:
            self._write(bytes(data))
        except BaseException as exc:
            self.error = exc
            raise
        return len(data)


def decrypt_stream(body, stored_digest, identities, write):
    """Decrypt an age stream from body into write(chunk); returns the stored size.

    A failure of the stream itself (S3 gone mid-object) or of the consumer is raised as that failure, not as a
    decryption error (issue 9.10); only a real decryption failure says to check the identity."""
    reader = _HashingReader(body, stored_digest)
    sink = _Sink(write)
    try:
        pyrage.decrypt_io(io.BufferedReader(reader, 1024 * 1024), sink, identities)
    except Exception as exc:
        cause = reader.error or sink.error
        if cause is not None:
            raise cause from None
        if isinstance(exc, pyrage.DecryptError):
            raise DRError(
                f"cannot decrypt: {exc}",
                step="decrypt",
                hint="use the age identity that matches one of the backup's recipients",
            ) from exc
        raise
    return reader.size

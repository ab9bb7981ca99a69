"""The one exception type of the engine, and the secret redaction every message goes through."""

from __future__ import annotations

import re

# postgresql://user:secret@host/db and key=value style passwords.
# The password runs to the last '@' before the host, so a raw '@' inside it is masked too.
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<secret>[^/\s]+)(?P<tail>@)", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>'[^']*'|\S+)", re.IGNORECASE)


def redact(text, secrets=()):
    """Return text with passwords in URLs and key=value pairs, and every given secret, masked."""
    if text is None:
        return text
    text = _URL_PASSWORD.sub(r"\g<head>********\g<tail>", str(text))
    text = _KV_PASSWORD.sub(r"\g<head>********", text)
    for secret in secrets:
        if secret and len(str(secret)) >= 4:
            text = text.replace(str(secret), "********")
    return text


class DRError(Exception):
    """A failure the operator can act on.

    ``step`` names the runbook step (``connect source``, ``upload data``), ``subject`` what it failed on
    (a redacted connection string, a bucket, an object key), ``hint`` what to do next.
    """

    def __init__(self, message, step=None, subject=None, hint=None):
        self.message = message
        self.step = step
        self.subject = subject
        self.hint = hint
        super().__init__(str(self))

    def __str__(self):
        parts = []
        if self.step:
            parts.append(f"[{self.step}]")
        parts.append(self.message)
        if self.subject:
            parts.append(f"({self.subject})")
        text = " ".join(parts)
        if self.hint:
            text += f". Next: {self.hint}"
        return redact(text)

    def to_dict(self):
        return {"step": self.step, "subject": redact(self.subject), "hint": self.hint, "message": str(self)}


def output_tail(fh, limit=1500):
    """The end of a tool's captured output (a binary file), redacted, for an error message."""
    fh.seek(0)
    text = fh.read().decode("utf-8", "replace").strip()
    return redact(text[-limit:]) if text else "no error output"

"""The ``dotenv`` store: a file of ``NAME=value`` lines, parsed and rendered byte for byte (see :mod:`envstore`),
written in one piece (flushed, renamed, mode and owner kept), its rollback record a sibling file (mode 600).
"""

from __future__ import annotations

import json
import os
import re

from ansible_collections.pgdr.supabase.plugins.module_utils import files
from ansible_collections.pgdr.supabase.plugins.module_utils.envstore_common import Store, StoreLock
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

_LINE = re.compile(
    r"^(?P<lead>[ \t]*(?:export[ \t]+)?)(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)(?P<sep>[ \t]*=[ \t]*)(?P<rest>.*?)$"
)
_SAFE = re.compile(r"^[A-Za-z0-9_./:@%+,=?&~-]*$")


def _split_eol(line):
    for eol in ("\r\n", "\n", "\r"):
        if line.endswith(eol):
            return line[: -len(eol)], eol
    return line, ""


def parse_value(rest):
    """The part after ``=``: quoted ('...' literal, "..." with escapes) or bare (a `` #`` starts a comment).

    Returns (value, quote, tail): quote is ``'``, ``"`` or ``""``; tail is what follows the value on the line
    (spaces and an inline comment), kept when the line is rewritten.
    """
    if rest.startswith("'"):
        end = rest.find("'", 1)
        if end > 0:
            return rest[1:end], "'", rest[end + 1 :]
        return rest[1:], "'", ""
    if rest.startswith('"'):
        out, i = [], 1
        escapes = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "'": "'", "$": "$"}
        while i < len(rest):
            char = rest[i]
            if char == "\\" and i + 1 < len(rest):
                nxt = rest[i + 1]
                out.append(escapes.get(nxt, "\\" + nxt))
                i += 2
                continue
            if char == '"':
                return "".join(out), '"', rest[i + 1 :]
            out.append(char)
            i += 1
        return "".join(out), '"', ""
    comment = re.search(r"[ \t]#", rest)
    body = rest[: comment.start()] if comment else rest
    value = body.strip()
    return value, "", rest[len(body.rstrip()) :]


def format_value(value, prefer=None):
    """A value as written after ``NAME=``. A new line (prefer None) is bare when the value only holds URL-safe
    characters, else single-quoted, else double-quoted with escapes. A rewritten line keeps its former quoting
    when that quoting holds the value exactly (so a rollback gives the very bytes back)."""
    value = str(value)
    multiline = "\n" in value or "\r" in value
    can_single = "'" not in value and not multiline
    can_bare = not multiline and not value.startswith(("'", '"')) and parse_value(value)[0] == value
    if prefer is None and _SAFE.match(value):
        return value
    if prefer == "" and can_bare:
        return value
    if prefer in (None, "", "'") and can_single:
        return f"'{value}'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def parse_dotenv(text):
    """``{NAME: value}`` of a dotenv text (the last occurrence of a name wins, as loaders do)."""
    values = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match and not line.lstrip().startswith("#"):
            values[match["name"]] = parse_value(match["rest"])[0]
    return values


def render_dotenv(text, values, remove=()):
    """The text with the lines of ``values`` set and the lines of ``remove`` dropped; every other byte kept."""
    lines = text.splitlines(keepends=True)
    out, seen = [], set()
    for line in lines:
        body, eol = _split_eol(line)
        match = _LINE.match(body)
        if not match or body.lstrip().startswith("#"):
            out.append(line)
            continue
        name = match["name"]
        if name in remove:
            if not eol and out:
                # The last line, without a line end: the line before it becomes the last, without one too.
                out[-1] = _split_eol(out[-1])[0]
            continue
        if name in values:
            _unused, quote, tail = parse_value(match["rest"])
            out.append(f"{match['lead']}{name}{match['sep']}{format_value(values[name], quote)}{tail}{eol}")
            seen.add(name)
            continue
        out.append(line)
    new = [name for name in values if name not in seen]
    if new:
        eol = "\n"
        for line in lines:
            if _split_eol(line)[1]:
                eol = _split_eol(line)[1]
                break
        # A file without a final line end keeps that shape, so removing the names again gives the same bytes.
        final = eol
        if out and not _split_eol(out[-1])[1]:
            out[-1] += eol
            final = ""
        out.extend(f"{name}={format_value(values[name])}{eol}" for name in new)
        out[-1] = _split_eol(out[-1])[0] + final
    return "".join(out)


def atomic_write(path, data, default_mode=0o600, cleaned=None):
    """Write bytes to path in one piece (:func:`files.write_atomic`): flushed to disk, folder synced, mode and
    owner kept (default_mode for a new file).

    First removes the temporary files writers killed before their rename left (appended to ``cleaned``)."""
    stale = files.remove_stale_temp_files(path)
    if cleaned is not None:
        cleaned.extend(stale)
    files.write_atomic(path, data, default_mode, keep_existing=True, fsync=True, fsync_dir=True)


class DotenvStore(Store):
    kind = "dotenv"

    def __init__(self, path):
        if not path:
            raise DRError("a dotenv store needs a path", step="configure env store", hint="set store.path")
        # Write through a symlink to its target, so the link stays a link.
        self.path = os.path.realpath(os.path.expanduser(path))
        self.given = path
        self.cleaned = []

    def label(self):
        return f"dotenv store {self.given}"

    def _text(self, step, names=()):
        try:
            with open(self.path, "rb") as fh:
                return fh.read().decode("utf-8", "surrogateescape")
        except FileNotFoundError:
            return ""
        except OSError as exc:
            raise self.error(
                f"cannot read the file: {exc.strerror}", step, names, hint="check the file's permissions"
            ) from exc

    def read(self, names):
        values = parse_dotenv(self._text("read env store", names))
        return {name: values.get(name) for name in names}

    def preflight(self):
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            raise self.error(
                f"folder {folder} does not exist",
                "write env store",
                hint="create the folder, or fix store.path in the inventory",
            )
        target = self.path if os.path.exists(self.path) else folder
        if not os.access(target, os.W_OK) or not os.access(folder, os.W_OK):
            raise self.error(
                f"{target} is not writable by this user (the file is replaced through a temporary file in {folder})",
                "write env store",
                hint="run as the file's owner (become) or fix the permissions of the file and its folder",
            )

    def _replace(self, text, names, step, values=()):
        self.preflight_for(names, step)
        try:
            atomic_write(self.path, text.encode("utf-8", "surrogateescape"), cleaned=self.cleaned)
        except OSError as exc:
            raise self.error(
                f"cannot write the file: {exc.strerror}",
                step,
                names,
                hint="check the folder exists and is writable by this user, and that the disk has room",
                values=values,
            ) from exc

    def preflight_for(self, names, step):
        try:
            self.preflight()
        except DRError as exc:
            exc.subject = f"{self.label()}, variable {', '.join(names)}" if names else exc.subject
            exc.step = step
            raise

    def write(self, values):
        text = self._text("write env store", list(values))
        self._replace(render_dotenv(text, values), list(values), "write env store", values.values())

    def delete(self, names):
        text = self._text("write env store", names)
        self._replace(render_dotenv(text, {}, remove=set(names)), list(names), "write env store")

    def default_record_location(self):
        return f"{self.path}.pgdr-rollback.json"

    def lock(self, purpose):
        return StoreLock(f"{self.path}.pgdr-lock", self.label(), purpose)

    def load_record(self, location):
        try:
            with open(location, encoding="utf-8") as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise DRError(
                f"cannot read the rollback record: {exc}",
                step="read rollback record",
                subject=location,
                hint="restore the file from a backup or remove it if it is garbage",
            ) from exc

    def save_record(self, location, record):
        try:
            atomic_write(
                location, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode(), 0o600, cleaned=self.cleaned
            )
            os.chmod(location, 0o600)
        except OSError as exc:
            raise DRError(
                f"cannot write the rollback record: {exc.strerror}",
                step="write rollback record",
                subject=location,
                hint="make the folder writable by this user; nothing was swapped",
            ) from exc

"""Environment stores: one interface over the places an application reads its variables from.

A store holds named variables (``SUPABASE_DB_URL``, ``DATABASE_URL``, ...). Four kinds:

``dotenv``
    A file of ``NAME=value`` lines. Comments, blank lines, order, unrelated lines and line endings are kept byte
    for byte; only the lines of the names written change (all of them when a name appears twice), new names are
    appended. Values are written unquoted when they only hold URL-safe characters, else in single quotes, else
    (a value with a single quote or a newline) in double quotes with ``\\``, ``"`` and ``\\n`` escaped. Writes go
    to a temporary file in the same folder, are flushed to disk and renamed over the file (atomic); the file's
    mode and owner are kept, a new file gets mode 600. A missing file reads as empty; a missing folder is an error.
    Settings: ``path``.
``ssm``
    AWS SSM Parameter Store: variable ``NAME`` is parameter ``<prefix>/NAME``, written as ``SecureString`` (with
    ``kms_key_id`` when given; ``secure: false`` writes ``String``). Settings: ``prefix``, ``kms_key_id``,
    ``secure`` and the AWS connection settings.
``secretsmanager``
    AWS Secrets Manager: ONE secret (``secret_id``) holding a JSON object ``{"NAME": "value", ...}``. Writing merges
    into the object, keeping other keys and their order; a missing secret reads as empty and is created on the
    first write (with ``kms_key_id`` when given). Settings: ``secret_id``, ``kms_key_id`` and the AWS settings.
``command``
    A hook for any other store: ``get`` and ``set`` (and optional ``delete``) are argument vectors, run without a
    shell. The variable's name is appended as the last argument (or replaces ``{name}`` in an argument). ``get``
    prints the value on stdout (one trailing newline is dropped) and exits 0, or exits ``absent_rc`` (default 3)
    when the variable is not set; ``set`` reads the value on stdin, never from its command line. Settings:
    ``get``, ``set``, ``delete``, ``absent_rc``, ``env`` (extra environment), ``timeout``.

AWS connection settings: ``region``, ``endpoint_url``, ``access_key``, ``secret_key``, ``session_token``,
``ca_bundle``, ``validate_certs``, ``connect_timeout``, ``max_attempts``.

Values never leave this module in clear except through :meth:`Store.read`: plans hold names and actions, diffs
hold masked values (:func:`mask`), errors name the store and the variable, not the value.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
import subprocess
import time
from urllib.parse import urlsplit

from ansible_collections.pgdr.supabase.plugins.module_utils import files, timefmt
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


# --- dotenv ----------------------------------------------------------------------------------------------------

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
            _, quote, tail = parse_value(match["rest"])
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
        for _ in range(20):
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


# --- AWS -------------------------------------------------------------------------------------------------------

_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "KMSAccessDeniedException"}
_BAD_CREDENTIALS = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "ExpiredTokenException",
}


class AwsStore(Store):
    service = "?"

    def __init__(self, settings):
        self.settings = settings
        self._client = None

    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            s = self.settings
            verify = s.get("ca_bundle") or s.get("validate_certs", True)
            self._client = boto3.session.Session().client(
                self.service,
                region_name=s.get("region") or "us-east-1",
                endpoint_url=s.get("endpoint_url") or None,
                aws_access_key_id=s.get("access_key") or None,
                aws_secret_access_key=s.get("secret_key") or None,
                aws_session_token=s.get("session_token") or None,
                verify=verify,
                config=Config(
                    connect_timeout=s.get("connect_timeout") or 5,
                    read_timeout=30,
                    retries={"mode": "standard", "max_attempts": s.get("max_attempts") or 3},
                ),
            )
        return self._client

    def where(self):
        s = self.settings
        return s.get("endpoint_url") or f"the {self.service} endpoint of region {s.get('region') or 'us-east-1'}"

    def translate(self, exc, step, names=(), action="", values=()):
        """The one place AWS library errors become DRErrors."""
        from botocore.exceptions import (
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            text = exc.response.get("Error", {}).get("Message", "") or str(exc)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            # Some endpoints answer a JSON-protocol call with an XML error body that botocore cannot parse.
            inner = re.search(r"<Code>([^<]+)</Code>", text)
            if inner:
                code = inner.group(1)
                message = re.search(r"<Message>([^<]*)</Message>", text)
                text = message.group(1) if message else code
            if code in _DENIED or (status == 403 and code not in _BAD_CREDENTIALS):
                return self.error(
                    f"access denied ({code}): {text}",
                    step,
                    names,
                    hint=f"grant the credentials {action or 'the needed permission'} on it (and kms:Encrypt/Decrypt "
                    "on its KMS key), or use credentials that have it",
                    values=values,
                )
            if code in _BAD_CREDENTIALS:
                return self.error(
                    f"the credentials were refused ({code})",
                    step,
                    names,
                    hint="check access_key/secret_key (or the host's AWS credentials) and the region",
                    values=values,
                )
            return self.error(f"{code}: {text}", step, names, hint="see the AWS error above", values=values)
        if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)):
            return self.error(
                f"cannot reach {self.where()}: {exc}",
                step,
                names,
                hint="check endpoint_url/region and the network path (proxy, VPC endpoint), then run again",
                values=values,
            )
        if isinstance(exc, NoCredentialsError):
            return self.error(
                "no AWS credentials found",
                step,
                names,
                hint="set access_key/secret_key in the store settings or give the host an instance role",
            )
        return self.error(f"{type(exc).__name__}: {exc}", step, names, hint="see the error above", values=values)

    def call(self, step, names, action, fn, *args, values=(), **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self.translate(exc, step, names, action, values) from exc


class SsmStore(AwsStore):
    kind = service = "ssm"

    def __init__(self, settings):
        super().__init__(settings)
        prefix = settings.get("prefix")
        if not prefix or not prefix.startswith("/"):
            raise DRError(
                "an ssm store needs a path prefix starting with '/'",
                step="configure env store",
                subject=f"ssm prefix {prefix!r}",
                hint="set store.prefix, e.g. /myapp/production",
            )
        self.prefix = prefix.rstrip("/")

    def label(self):
        return f"ssm store {self.prefix}/ at {self.where()}"

    def param(self, name, base=None):
        return f"{base or self.prefix}/{name}"

    def _get(self, params, step, names):
        found = {}
        for start in range(0, len(params), 10):
            batch = params[start : start + 10]
            response = self.call(
                step,
                names,
                "ssm:GetParameters",
                self.client().get_parameters,
                Names=batch,
                WithDecryption=True,
            )
            for item in response.get("Parameters", []):
                found[item["Name"]] = item["Value"]
        return found

    def read(self, names):
        found = self._get([self.param(n) for n in names], "read env store", list(names))
        return {n: found.get(self.param(n)) for n in names}

    def _put(self, name, value, step, label_names):
        kwargs = {"Name": name, "Value": str(value), "Overwrite": True}
        if self.settings.get("secure", True):
            kwargs["Type"] = "SecureString"
            if self.settings.get("kms_key_id"):
                kwargs["KeyId"] = self.settings["kms_key_id"]
        else:
            kwargs["Type"] = "String"
        self.call(step, label_names, "ssm:PutParameter", self.client().put_parameter, values=[value], **kwargs)

    def write(self, values):
        for name, value in values.items():
            self._put(self.param(name), value, "write env store", [name])

    def _delete(self, params, step, names):
        client = self.client()
        for param, name in zip(params, names, strict=True):
            try:
                client.delete_parameter(Name=param)
            except client.exceptions.ParameterNotFound:
                continue
            except Exception as exc:
                from botocore.exceptions import BotoCoreError, ClientError

                if isinstance(exc, (BotoCoreError, ClientError)):
                    raise self.translate(exc, step, [name], "ssm:DeleteParameter") from exc
                raise

    def delete(self, names):
        self._delete([self.param(n) for n in names], "write env store", list(names))

    # Record: <prefix>/_pgdr_rollback/_record holds the metadata (JSON), <prefix>/_pgdr_rollback/<NAME> each
    # previous value (SecureString); a name that was absent before has no parameter.
    def default_record_location(self):
        return f"{self.prefix}/_pgdr_rollback"

    def load_record(self, location):
        meta = self._get([f"{location}/_record"], "read rollback record", [])
        if not meta:
            return None
        record = json.loads(meta[f"{location}/_record"])
        names = [n for n in record.get("names", []) if n not in record.get("absent_before", [])]
        found = self._get([self.param(n, location) for n in names], "read rollback record", names)
        record["previous"] = {n: found.get(self.param(n, location)) for n in record.get("names", [])}
        return record

    def save_record(self, location, record):
        record = dict(record)
        previous = record.pop("previous")
        for name, value in previous.items():
            if value is not None:
                self._put(self.param(name, location), value, "write rollback record", [name])
        gone = [n for n, v in previous.items() if v is None]
        self._delete([self.param(n, location) for n in gone], "write rollback record", gone)
        record["absent_before"] = gone
        self._put(f"{location}/_record", json.dumps(record, sort_keys=True), "write rollback record", [])


class SecretsManagerStore(AwsStore):
    kind = service = "secretsmanager"

    def __init__(self, settings):
        super().__init__(settings)
        if not settings.get("secret_id"):
            raise DRError(
                "a secretsmanager store needs secret_id",
                step="configure env store",
                hint="set store.secret_id to the name or ARN of the secret holding the JSON object of variables",
            )
        self.secret_id = settings["secret_id"]

    def label(self):
        return f"secretsmanager store {self.secret_id} at {self.where()}"

    def _load(self, secret_id, step, names):
        client = self.client()
        try:
            response = client.get_secret_value(SecretId=secret_id)
        except client.exceptions.ResourceNotFoundException:
            return None
        except Exception as exc:
            from botocore.exceptions import BotoCoreError, ClientError

            if isinstance(exc, (BotoCoreError, ClientError)):
                raise self.translate(exc, step, names, "secretsmanager:GetSecretValue") from exc
            raise
        try:
            data = json.loads(response.get("SecretString") or "")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise self.error(
                f"secret {secret_id} does not hold a JSON object",
                step,
                names,
                hint='store the variables as one JSON object {"NAME": "value", ...} or use another secret',
            )
        return data

    def read(self, names):
        data = self._load(self.secret_id, "read env store", list(names)) or {}
        return {n: (None if data.get(n) is None else str(data[n])) for n in names}

    def _store(self, secret_id, data, step, names, values=()):
        exists = self._load(secret_id, step, names) is not None
        text = json.dumps(data)
        if exists:
            self.call(
                step,
                names,
                "secretsmanager:PutSecretValue",
                self.client().put_secret_value,
                SecretId=secret_id,
                SecretString=text,
                values=values,
            )
            return
        kwargs = {"Name": secret_id, "SecretString": text}
        if self.settings.get("kms_key_id"):
            kwargs["KmsKeyId"] = self.settings["kms_key_id"]
        self.call(step, names, "secretsmanager:CreateSecret", self.client().create_secret, values=values, **kwargs)

    def write(self, values):
        data = self._load(self.secret_id, "write env store", list(values)) or {}
        data.update({k: str(v) for k, v in values.items()})
        self._store(self.secret_id, data, "write env store", list(values), values.values())

    def delete(self, names):
        data = self._load(self.secret_id, "write env store", list(names))
        if data is None:
            return
        for name in names:
            data.pop(name, None)
        self._store(self.secret_id, data, "write env store", list(names))

    # Record: a separate secret <name>-pgdr-rollback holding the record as JSON (previous values included).
    def default_record_location(self):
        name = self.secret_id
        if name.startswith("arn:"):
            # arn:aws:secretsmanager:region:account:secret:NAME-AbCdEf (AWS appends 6 random characters).
            name = re.sub(r"-[A-Za-z0-9]{6}$", "", name.split(":secret:", 1)[-1])
        return f"{name}-pgdr-rollback"

    def load_record(self, location):
        return self._load(location, "read rollback record", [])

    def save_record(self, location, record):
        self._store(location, record, "write rollback record", [], [v for v in record["previous"].values() if v])


# --- command ---------------------------------------------------------------------------------------------------


class CommandStore(Store):
    kind = "command"

    def __init__(self, settings):
        self.get_argv = settings.get("get") or []
        self.set_argv = settings.get("set") or []
        self.delete_argv = settings.get("delete") or []
        if not self.get_argv or not self.set_argv:
            raise DRError(
                "a command store needs 'get' and 'set' argument lists",
                step="configure env store",
                hint="set store.get and store.set, e.g. get: [/usr/local/bin/envctl, get]",
            )
        self.absent_rc = settings.get("absent_rc", 3)
        self.env = {str(k): str(v) for k, v in (settings.get("env") or {}).items()}
        self.timeout = settings.get("timeout") or 60

    def label(self):
        return f"command store {self.get_argv[0]}"

    @staticmethod
    def argv(base, name):
        if any("{name}" in arg for arg in base):
            return [str(arg).replace("{name}", name) for arg in base]
        return [*map(str, base), name]

    def run(self, base, name, step, stdin=None, secrets=()):
        argv = self.argv(base, name)
        try:
            proc = subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                text=True,
                env={**os.environ, **self.env},
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise self.error(
                f"hook {argv[0]} not found", step, [name], hint="install the hook or fix the store's argv"
            ) from exc
        except PermissionError as exc:
            raise self.error(
                f"hook {argv[0]} is not executable", step, [name], hint="chmod +x the hook or fix the store's argv"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise self.error(
                f"hook {' '.join(argv[:-1])} did not finish within {self.timeout} s",
                step,
                [name],
                hint="check what the hook waits for, or raise store.timeout",
            ) from exc
        return proc

    def hook_error(self, proc, base, name, step, secrets=()):
        tail = (proc.stderr or "").strip()[-500:]
        return self.error(
            f"hook {' '.join(map(str, base))} exited {proc.returncode}" + (f": {tail}" if tail else ""),
            step,
            [name],
            hint="run the hook by hand with the same arguments and fix what it reports",
            values=secrets,
        )

    def get(self, name, step="read env store"):
        proc = self.run(self.get_argv, name, step)
        if proc.returncode == self.absent_rc:
            return None
        if proc.returncode != 0:
            raise self.hook_error(proc, self.get_argv, name, step, [proc.stdout])
        out = proc.stdout
        return out[:-1] if out.endswith("\n") else out

    def set(self, name, value, step="write env store"):
        proc = self.run(self.set_argv, name, step, stdin=str(value))
        if proc.returncode != 0:
            raise self.hook_error(proc, self.set_argv, name, step, [value])

    def remove(self, name, step="write env store"):
        if not self.delete_argv:
            raise self.error(
                "the variable must be removed but the store has no 'delete' hook",
                step,
                [name],
                hint="add store.delete (argv) or remove the variable by hand",
            )
        proc = self.run(self.delete_argv, name, step)
        if proc.returncode not in (0, self.absent_rc):
            raise self.hook_error(proc, self.delete_argv, name, step)

    def read(self, names):
        return {n: self.get(n) for n in names}

    def write(self, values):
        for name, value in values.items():
            self.set(name, value)

    def delete(self, names):
        for name in names:
            self.remove(name)

    # Record: <NAME>__PGDR_PREVIOUS holds each previous value (through the hook's own set), PGDR_ROLLBACK_RECORD
    # the metadata (JSON); an absent previous value is stored as the record's absent_before list, not as a variable.
    # The location is the metadata variable's name.
    def default_record_location(self):
        return "PGDR_ROLLBACK_RECORD"

    def load_record(self, location):
        text = self.get(location, "read rollback record")
        if text is None:
            return None
        record = json.loads(text)
        absent = set(record.get("absent_before", []))
        record["previous"] = {
            n: (None if n in absent else self.get(f"{n}__PGDR_PREVIOUS", "read rollback record"))
            for n in record.get("names", [])
        }
        return record

    def save_record(self, location, record):
        record = dict(record)
        previous = record.pop("previous")
        for name, value in previous.items():
            if value is not None:
                self.set(f"{name}__PGDR_PREVIOUS", value, "write rollback record")
        record["absent_before"] = [n for n, v in previous.items() if v is None]
        self.set(location, json.dumps(record, sort_keys=True), "write rollback record")


def make_store(spec):
    """A store from its settings dict: ``{"type": "dotenv", "path": ...}``, ``{"type": "ssm", "prefix": ...}``..."""
    if not isinstance(spec, dict) or spec.get("type") not in STORE_TYPES:
        kind = spec.get("type") if isinstance(spec, dict) else spec
        raise DRError(
            f"unknown env store type {kind!r}",
            step="configure env store",
            hint=f"set store.type to one of {', '.join(STORE_TYPES)}",
        )
    kind = spec["type"]
    if kind == "dotenv":
        return DotenvStore(spec.get("path"))
    if kind == "ssm":
        return SsmStore(spec)
    if kind == "secretsmanager":
        return SecretsManagerStore(spec)
    return CommandStore(spec)


# ---------------------------------------------------------------------------------------------------------------
# The operation of pgdr.supabase.env


def ensure(store, values, check_mode=False, diff=False):
    """Set the variables to the values: read, plan, write what differs unless check_mode.

    Returns ``{"changed", "plan", "diff"?}``; the plan lists names and actions only.
    """
    check_names(values, store.label())
    values = {k: str(v) for k, v in values.items()}
    current = store.read(list(values))
    steps = plan(current, values)
    changed = is_change(steps)
    result = {"changed": changed, "plan": steps}
    if diff:
        result["diff"] = masked_diff(current, values, f"{store.label()} (current)", f"{store.label()} (desired)")
    if not changed:
        return result
    if check_mode:
        store.preflight()
        return result
    store.write({s["name"]: values[s["name"]] for s in steps if s["action"] != "unchanged"})
    if store.cleaned:
        result["cleaned"] = list(store.cleaned)
    return result


# Argument spec of the ``store`` option, shared by pgdr.supabase.env and pgdr.supabase.promote.
STORE_OPTIONS = {
    "type": {"type": "str", "required": True, "choices": list(STORE_TYPES)},
    "path": {"type": "path"},
    "prefix": {"type": "str"},
    "secret_id": {"type": "str"},
    "kms_key_id": {"type": "str"},
    "secure": {"type": "bool", "default": True},
    "region": {"type": "str"},
    "endpoint_url": {"type": "str"},
    "access_key": {"type": "str", "no_log": True},
    "secret_key": {"type": "str", "no_log": True},
    "session_token": {"type": "str", "no_log": True},
    "ca_bundle": {"type": "path"},
    "validate_certs": {"type": "bool", "default": True},
    "connect_timeout": {"type": "int", "default": 5},
    "max_attempts": {"type": "int", "default": 3},
    "get": {"type": "list", "elements": "str"},
    "set": {"type": "list", "elements": "str"},
    "delete": {"type": "list", "elements": "str"},
    "absent_rc": {"type": "int", "default": 3},
    "env": {"type": "dict", "no_log": True},
    "timeout": {"type": "int", "default": 60},
}


def store_spec():
    return {"type": "dict", "required": True, "options": dict(STORE_OPTIONS)}

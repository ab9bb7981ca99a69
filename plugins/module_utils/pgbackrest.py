"""Point-in-time recovery for self-hosted PostgreSQL through pgBackRest: its configuration, its commands (run as
the postgres user with a configuration file of the project's own), its repository listing, the choice of a base
backup for a target time, and the restore of that time into a new cluster on a port of its own.

Secrets (the repository cipher passphrase, the S3 secret key) never reach a command line or a message: they live in
the configuration file (mode 600, owned by postgres) or in the environment of the pgBackRest process.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ansible_collections.pgdr.supabase.plugins.module_utils import files, timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError, redact
from ansible_collections.pgdr.supabase.plugins.module_utils.timefmt import iso_exact as iso

PG_USER = "postgres"
DEFAULT_BIN_DIR = "/usr/lib/postgresql/{major}/bin"
# Written into a restored cluster's data folder once it is up and promoted: what was restored, from where, to when.
MARKER = "pgdr-pitr.json"
MARKER_VERSION = 2
# Written next to the data folder when a restore starts, removed when it completes: a folder that holds this and no
# marker is what a failed or killed attempt left, and the next attempt cleans it and restores again.
ATTEMPT = "pgdr-pitr-attempt.json"
# How many of the newest archived WAL segments are read (pg_waldump) to find the last archived commit.
COMMIT_SCAN_SEGMENTS = 32
# Written last into a restored cluster's postgresql.auto.conf (read after postgresql.conf, so these win).
RESTORED_SETTINGS = """
# --- pgdr: restored cluster (point-in-time recovery); never archives into the source's repository ---
port = {port}
unix_socket_directories = '{socket_dir}'
listen_addresses = '{listen_addresses}'
archive_mode = 'off'
archive_command = ''
"""
# Ports for restored clusters come from below the Linux ephemeral range, like the sandbox's.
PORT_RANGE = (15000, 32000)

# The repository options every pgBackRest module shares (one nested dict option named ``repo``).
REPO_ARGUMENT_SPEC = {
    "bucket": {"type": "str", "required": True},
    "endpoint": {"type": "str", "required": True},
    "port": {"type": "int", "default": 443},
    "region": {"type": "str", "default": "us-east-1"},
    "access_key": {"type": "str", "required": True, "no_log": True},
    "secret_key": {"type": "str", "required": True, "no_log": True},
    "ca_file": {"type": "path"},
    "verify_tls": {"type": "bool", "default": True},
    "uri_style": {"type": "str", "default": "path", "choices": ["path", "host"]},
    "path": {"type": "str", "required": True},
    "cipher_type": {"type": "str", "default": "aes-256-cbc", "choices": ["aes-256-cbc", "none"]},
    "cipher_pass": {"type": "str", "no_log": True},
}


def repo_spec():
    return {"type": "dict", "required": True, "options": dict(REPO_ARGUMENT_SPEC)}


# ---------------------------------------------------------------------------------------------------------------
# Times


def parse_time(value, what="target time"):
    """An aware UTC datetime from ISO-8601 (``2026-11-28T21:14:09Z``, ``2026-11-28 21:14:09.1+00``); naive = UTC."""
    try:
        return timefmt.parse(value)
    except ValueError:
        raise DRError(
            f"cannot read the {what} {value!r}",
            step="read the target time",
            hint="give an ISO-8601 time with its offset, for example 2026-11-28T21:14:09Z",
        ) from None


def pg_time(value):
    """The form PostgreSQL's recovery_target_time and pgBackRest's --target read: '2026-11-28 21:14:09.123456+00'."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def cluster_name(target):
    """The folder name of a restored cluster: pitr-<the target as a UTC instant>, 20261128T184713Z, with the
    fraction of a second when it has one (20261128T184713.000100Z). Two spellings of one instant share a name;
    two instants never do (the digits of 18:47:13+00:01 and of 18:47:13.0001Z used to be the same)."""
    return f"pitr-{timefmt.compact(parse_time(target), fraction=True)}"


# ---------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class Repo:
    """Repository 1 on S3."""

    bucket: str
    endpoint: str
    path: str
    access_key: str
    secret_key: str
    port: int = 443
    region: str = "us-east-1"
    ca_file: str | None = None
    verify_tls: bool = True
    uri_style: str = "path"
    cipher_type: str = "aes-256-cbc"
    cipher_pass: str | None = None

    def __post_init__(self):
        if self.cipher_type != "none" and not self.cipher_pass:
            raise DRError(
                "the repository is encrypted (cipher_type aes-256-cbc) but no cipher passphrase was given",
                step="read the repository settings",
                subject=self.where(),
                hint="set repo.cipher_pass from a vault file or a lookup",
            )
        if not self.path.startswith("/"):
            raise DRError(
                f"the repository path must be absolute, got {self.path!r}",
                step="read the repository settings",
                hint="for example /pgbackrest/production",
            )

    def where(self):
        return f"s3://{self.bucket}{self.path} at {self.endpoint}:{self.port}"

    def secrets(self):
        return [s for s in (self.secret_key, self.cipher_pass, self.access_key) if s]

    def options(self):
        """repo1-* options, secrets included (for the configuration file or the environment, never argv)."""
        opts = {
            "repo1-type": "s3",
            "repo1-path": self.path,
            "repo1-s3-bucket": self.bucket,
            "repo1-s3-endpoint": self.endpoint,
            "repo1-storage-port": str(self.port),
            "repo1-s3-region": self.region,
            "repo1-s3-key": self.access_key,
            "repo1-s3-key-secret": self.secret_key,
            "repo1-s3-uri-style": self.uri_style,
        }
        if self.ca_file:
            opts["repo1-storage-ca-file"] = self.ca_file
        if not self.verify_tls:
            opts["repo1-storage-verify-tls"] = "n"
        if self.cipher_type != "none":
            opts["repo1-cipher-type"] = self.cipher_type
            opts["repo1-cipher-pass"] = self.cipher_pass
        return opts


def repo_from_params(params):
    return Repo(**{k: params.get(k) for k in REPO_ARGUMENT_SPEC if params.get(k) is not None})


@dataclass
class Settings:
    """The [global] section: the repository, pgBackRest's own folders, retention and performance."""

    repo: Repo
    lock_path: str
    log_path: str
    spool_path: str
    retention_full: int = 2
    retention_diff: int | None = None
    process_max: int = 2
    compress_type: str = "zst"
    compress_level: int | None = None
    archive_async: bool = False
    start_fast: bool = True
    log_level_file: str = "info"
    extra: dict = field(default_factory=dict)

    def options(self):
        opts = dict(self.repo.options())
        opts["repo1-retention-full"] = str(self.retention_full)
        if self.retention_diff:
            opts["repo1-retention-diff"] = str(self.retention_diff)
        opts.update(
            {
                "process-max": str(self.process_max),
                "compress-type": self.compress_type,
                "start-fast": "y" if self.start_fast else "n",
                "archive-async": "y" if self.archive_async else "n",
                "lock-path": self.lock_path,
                "log-path": self.log_path,
                "spool-path": self.spool_path,
                "log-level-console": "warn",
                "log-level-file": self.log_level_file,
            }
        )
        if self.compress_level is not None:
            opts["compress-level"] = str(self.compress_level)
        opts.update({k: str(v) for k, v in self.extra.items()})
        return opts

    def folders(self):
        return [self.lock_path, self.log_path, self.spool_path]


def render_config(settings, stanza, pg_path, pg_port=None, pg_socket_path=None, pg_user=None):
    """pgbackrest.conf text: [global] with the repository and settings, [<stanza>] with the cluster. pg_user is
    the role pgBackRest logs in as over the socket (its default is the OS user's name, postgres, which is not a
    superuser on a Supabase-shaped cluster; backups need a superuser for the backup functions)."""
    check_stanza_name(stanza)
    lines = ["# Written by pgdr (pgdr_pgbackrest_* modules); changes here are overwritten.", "[global]"]
    lines += [f"{k}={v}" for k, v in settings.options().items()]
    lines += ["", f"[{stanza}]", f"pg1-path={pg_path}"]
    if pg_port:
        lines.append(f"pg1-port={pg_port}")
    if pg_socket_path:
        lines.append(f"pg1-socket-path={pg_socket_path}")
    if pg_user and pg_user != PG_USER:
        lines.append(f"pg1-user={pg_user}")
    return "\n".join(lines) + "\n"


def check_stanza_name(stanza):
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", stanza or ""):
        raise DRError(
            f"invalid stanza name {stanza!r}",
            step="read the stanza",
            hint="use letters, digits, '.', '_' and '-' (for example production)",
        )


def env_options(options):
    """PGBACKREST_* environment variables for pgBackRest options (how secrets reach it without a file)."""
    return {"PGBACKREST_" + k.upper().replace("-", "_"): v for k, v in options.items()}


# ---------------------------------------------------------------------------------------------------------------
# Files owned by postgres


def postgres_ids():
    try:
        entry = pwd.getpwnam(PG_USER)
    except KeyError:
        raise DRError(
            "there is no postgres user on this host",
            step="find the postgres user",
            hint="install PostgreSQL and pgBackRest (make setup) on the database host",
        ) from None
    return entry.pw_uid, entry.pw_gid


def ensure_dir(path, mode=0o700):
    """Create path and its missing parents owned by postgres; True when something was created."""
    path = os.path.abspath(path)
    missing = []
    probe = path
    while not os.path.isdir(probe):
        missing.append(probe)
        probe = os.path.dirname(probe)
    uid, gid = postgres_ids()
    for folder in reversed(missing):
        os.mkdir(folder, mode)
        if os.geteuid() == 0:
            os.chown(folder, uid, gid)
        os.chmod(folder, mode)
    return bool(missing)


def file_state(path):
    """(text, mode, owner uid) of a file, or None when it does not exist."""
    try:
        st = os.stat(path)
        with open(path) as fh:
            return fh.read(), st.st_mode & 0o777, st.st_uid
    except FileNotFoundError:
        return None


def config_matches(path, text):
    current = file_state(path)
    return current is not None and current[0] == text and current[1] == 0o600 and current[2] == postgres_ids()[0]


def write_private_file(path, text):
    """Write text atomically (:func:`files.write_atomic`), mode 600, owned by postgres."""
    ensure_dir(os.path.dirname(path), 0o700)
    files.write_atomic(path, text, 0o600, owner=postgres_ids())


# ---------------------------------------------------------------------------------------------------------------
# Running pgBackRest


def as_postgres(argv):
    """argv run as postgres: through runuser when root, as is when already postgres."""
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_USER, "--", *argv]
    if pwd.getpwuid(os.geteuid()).pw_name != PG_USER:
        raise DRError(
            "pgBackRest and PostgreSQL commands must run as root or postgres",
            step="run as postgres",
            hint="run the task with become: true",
        )
    return list(argv)


_CIPHER = (
    "cannot decrypt the repository: the cipher passphrase is wrong, or the repository is not encrypted with it",
    "use the passphrase the repository was created with (repo.cipher_pass)",
)
# (any of these words in pgBackRest's lower-cased message, what it means, what to do next), first match wins.
_FAILURES = (
    (
        ("missing stanza path", "filemissingerror", "unable to open missing file"),
        "the stanza does not exist in the repository",
        "run playbooks/pitr_setup.yml (stanza-create), or check the stanza name and repository path",
    ),
    (("formaterror", "cryptoerror", "unable to load info file"), *_CIPHER),
    (
        ("403", "invalidaccesskeyid", "signaturedoesnotmatch", "accessdenied"),
        "the S3 endpoint refused the credentials",
        "check repo.access_key and repo.secret_key",
    ),
    (("nosuchbucket",), "the bucket does not exist", "create the bucket or fix repo.bucket"),
    (
        ("tls", "certificate"),
        "the TLS connection to S3 failed",
        "check repo.endpoint (a host name, not an IP), repo.port and repo.ca_file",
    ),
    (
        ("unable to connect", "hostconnecterror", "unable to get address"),
        "cannot reach the S3 endpoint",
        "check that it is up and that repo.endpoint and repo.port are right",
    ),
    (
        ("archive_mode", "archive-push", "archive_command", "wal segment"),
        "WAL archiving does not work",
        "run playbooks/pitr_setup.yml and read the PostgreSQL log",
    ),
)


def classify(text):
    """(message, hint) for pgBackRest's common failures."""
    low = text.lower()
    for words, message, hint in _FAILURES:
        if any(w in low for w in words):
            return message, hint
    return "pgBackRest failed", "read the message above and pgBackRest's log in its log-path"


class PgBackRest:
    """One stanza, through a configuration file (config_file) or, with none, through the environment (options)."""

    def __init__(self, stanza, config_file=None, options=None, secrets=(), binary="pgbackrest", timeout=3600):
        check_stanza_name(stanza)
        self.stanza = stanza
        self.config_file = config_file
        self.options = dict(options or {})
        self.secrets = list(secrets)
        self.binary = binary
        self.timeout = timeout

    def argv(self, *args):
        return [self.binary, f"--config={self.config_file or '/dev/null'}", f"--stanza={self.stanza}", *args]

    def run(self, *args, step, check=True, timeout=None, raw=False):
        """Run a pgBackRest command; raw: its standard output as bytes (repo-get of a WAL segment)."""
        env = dict(os.environ)
        env.update(env_options(self.options))
        # runuser passes the environment on, so options (secrets included) never appear on a command line.
        argv = as_postgres(self.argv(*args))
        try:
            proc = subprocess.run(
                argv,
                cwd="/",
                env=env,
                capture_output=True,
                timeout=timeout or self.timeout,
                check=False,
            )
        except FileNotFoundError:
            raise DRError(
                f"{self.binary} is not installed",
                step=step,
                hint="install the pgbackrest package (make setup)",
            ) from None
        except subprocess.TimeoutExpired:
            raise DRError(
                f"pgBackRest {args[0]} did not finish within {timeout or self.timeout} s",
                step=step,
                subject=self.stanza,
                hint="read pgBackRest's log in its log-path; raise the timeout for large databases",
            ) from None
        if not raw:
            proc.stdout = redact(proc.stdout.decode(errors="replace"), self.secrets)
        proc.stderr = redact(proc.stderr.decode(errors="replace"), self.secrets)
        if check and proc.returncode != 0:
            text = (proc.stderr or proc.stdout).strip()
            message, hint = classify(text)
            raise DRError(
                f"{message}: pgbackrest {args[0]} exited {proc.returncode}: {text[:1500]}",
                step=step,
                subject=f"stanza {self.stanza}",
                hint=hint,
            )
        return proc

    def info(self):
        """The stanza's entry of ``info --output=json`` (raw)."""
        out = self.run("info", "--output=json", step="read the repository").stdout
        try:
            data = json.loads(out, strict=False)  # a wrong passphrase puts raw bytes into messages
        except ValueError:
            raise DRError(
                f"pgbackrest info printed no JSON: {out[:300]!r}", step="read the repository", subject=self.stanza
            ) from None
        for entry in data:
            if entry.get("name") == self.stanza:
                return entry
        return {"name": self.stanza, "status": {"code": 1, "message": "missing stanza path"}}

    def repo_ls(self, path):
        out = self.run("repo-ls", "--output=json", path, step="list the repository").stdout
        return json.loads(out or "{}")

    def newest_wal_time(self, archive):
        """Upload time (Unix seconds) of the newest archived WAL segment, from the repository listing."""
        newest = archive.get("max") if archive else None
        if not newest:
            return None
        listing = self.repo_ls(f"archive/{self.stanza}/{archive['id']}/{newest[:16]}")
        times = [v.get("time") for k, v in listing.items() if k.startswith(newest) and v.get("type") == "file"]
        newest_time = max((t for t in times if t), default=None)
        # S3 keeps whole seconds: the upload happened within the second after the one it shows.
        return newest_time + 1 if newest_time else None

    def archived_segments(self, archive):
        """Repository paths of the archived WAL segments of the newest archive id, newest first (at most
        COMMIT_SCAN_SEGMENTS of them, walking back through the newest timeline-and-log folders)."""
        newest = archive.get("max") if archive else None
        if not newest:
            return []
        base = f"archive/{self.stanza}/{archive['id']}"
        folders = sorted(
            (k for k, v in self.repo_ls(base).items() if v.get("type") == "path" and re.fullmatch(r"[0-9A-F]{16}", k)),
            reverse=True,
        )
        paths = []
        for folder in folders:
            names = sorted(
                (k for k, v in self.repo_ls(f"{base}/{folder}").items() if v.get("type") == "file"), reverse=True
            )
            paths += [f"{base}/{folder}/{n}" for n in names if re.match(r"[0-9A-F]{24}-", n) and n[:24] <= newest]
            if len(paths) >= COMMIT_SCAN_SEGMENTS:
                break
        return paths[:COMMIT_SCAN_SEGMENTS]

    def repo_get(self, path):
        """A repository file's content, decrypted by pgBackRest (still compressed)."""
        return self.run("repo-get", path, step="read archived WAL", raw=True).stdout

    def last_archived_commit(self, archive, bin_dir):
        """(aware datetime, LSN, segment) of the last transaction end (commit or abort) in the archive: the newest
        moment replay can reach (recovery by time stops only before a later transaction end; up to this one it can
        stop by LSN). (None, None, None) when no segment holds one."""
        for path in self.archived_segments(archive):
            name = os.path.basename(path)[:24]
            moment, lsn = last_commit_in_segment(name, decompress(path, self.repo_get(path)), bin_dir)
            if moment is not None:
                return moment, lsn, name
        return None, None, None

    def verify(self):
        """``verify`` re-reads the repository; it exits 0 even when it finds damage, so read its report."""
        out = self.run("verify", "--output=text", "--verbose", step="verify the repository").stdout
        return parse_verify(out)


# ---------------------------------------------------------------------------------------------------------------
# Archived WAL: where the last archived transaction ended

_XACT_END = re.compile(
    r"rmgr: Transaction .*lsn: ([0-9A-F]+/[0-9A-F]+),.*desc: (?:COMMIT|ABORT)\S*(?: \d+:)? "
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC"
)


def decompress(path, data):
    """A WAL segment's bytes from its repository file (zst, gz, bz2, lz4 or none, by the file's extension)."""
    if path.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 30)
    if path.endswith(".gz"):
        import gzip

        return gzip.decompress(data)
    if path.endswith(".bz2"):
        import bz2

        return bz2.decompress(data)
    if path.endswith(".lz4"):
        try:
            import lz4.frame
        except ImportError:
            raise DRError(
                "the archive is compressed with lz4 and the lz4 Python package is not installed",
                step="read archived WAL",
                subject=path,
                hint="install python3-lz4 on the restore host",
            ) from None
        return lz4.frame.decompress(data)
    return data


def last_commit_in(waldump_output):
    """(time, LSN) of the last transaction end in pg_waldump's output (run with TZ=UTC): an aware datetime to the
    microsecond as pg_waldump prints it, and the record's LSN; (None, None) when there is none."""
    found = None
    for line in waldump_output.splitlines():
        match = _XACT_END.search(line)
        if match:
            found = match
    if not found:
        return None, None
    return timefmt.parse(found.group(2)), found.group(1)


def last_commit_in_segment(name, segment, bin_dir):
    """pg_waldump over one segment's bytes, written to a private temporary file under the segment's name (which
    pg_waldump reads the segment's position from)."""
    with tempfile.TemporaryDirectory(prefix="pgdr-wal-") as folder:
        path = os.path.join(folder, name)
        with open(path, "wb") as fh:
            fh.write(segment)
        try:
            proc = subprocess.run(
                [os.path.join(bin_dir, "pg_waldump"), path],
                cwd=folder,
                env={**os.environ, "TZ": "UTC"},
                capture_output=True,
                text=True,
                errors="replace",
                timeout=120,
                check=False,
            )
        except FileNotFoundError:
            raise DRError(
                f"pg_waldump is not in {bin_dir}",
                step="read archived WAL",
                hint="install the PostgreSQL server package of the source's major version",
            ) from None
    # pg_waldump ends with an error at the first incomplete record (the segment's end): its output still counts.
    return last_commit_in(proc.stdout)


# ---------------------------------------------------------------------------------------------------------------
# Reading the repository


def parse_info(entry):
    """A plain summary of one stanza's info entry: status, backups (oldest first), archive range."""
    status = entry.get("status") or {}
    backups = []
    for b in entry.get("backup") or []:
        ts = b.get("timestamp") or {}
        archive = b.get("archive") or {}
        info = b.get("info") or {}
        backups.append(
            {
                "label": b.get("label"),
                "type": b.get("type"),
                "prior": b.get("prior"),
                "error": bool(b.get("error")),
                "start": iso(ts.get("start")),
                "stop": iso(ts.get("stop")),
                "start_ts": ts.get("start"),
                "stop_ts": ts.get("stop"),
                "wal_start": archive.get("start"),
                "wal_stop": archive.get("stop"),
                "size": info.get("size"),
                "repo_size": (info.get("repository") or {}).get("size"),
            }
        )
    backups.sort(key=lambda b: (b["stop_ts"] or 0, b["label"] or ""))
    archives = entry.get("archive") or []
    archive = archives[-1] if archives else {}
    db = (entry.get("db") or [{}])[-1]
    return {
        "stanza": entry.get("name"),
        "status_code": status.get("code"),
        "status": status.get("message"),
        # The stanza's status says "other"; the repository's says why (its first line: later ones may be raw bytes).
        "detail": "; ".join(
            (r.get("status") or {}).get("message", "").splitlines()[0]
            for r in entry.get("repo") or []
            if (r.get("status") or {}).get("code") not in (0, None) and (r.get("status") or {}).get("message")
        ),
        "exists": status.get("code") != 1,
        "cipher": entry.get("cipher"),
        "backups": backups,
        "archive": {"id": archive.get("id"), "min": archive.get("min"), "max": archive.get("max")},
        "system_id": db.get("system-id"),
        "pg_version": db.get("version"),
    }


def check_info(summary, repo_where="the repository"):
    """Raise for a stanza that cannot be read (missing, wrong passphrase, other); 'no valid backups' is a state."""
    code = summary["status_code"]
    if code in (0, 2):
        return
    raw = summary.get("detail") or summary["status"] or ""
    if code == 1:
        raise DRError(
            f"stanza {summary['stanza']!r} does not exist in {repo_where}",
            step="read the repository",
            subject=summary["stanza"],
            hint="run playbooks/pitr_setup.yml (it creates the stanza), or fix the stanza name or repository path",
        )
    message, hint = classify(raw)
    raise DRError(
        f"{message} (pgBackRest status {code}: {raw.splitlines()[0][:200] if raw else 'unknown'})",
        step="read the repository",
        subject=f"stanza {summary['stanza']} in {repo_where}",
        hint=hint,
    )


def read_stanza(tool, repo_where="the repository"):
    """info + the newest WAL's upload time, checked. Returns the summary with ``newest_wal_ts``."""
    summary = parse_info(tool.info())
    check_info(summary, repo_where)
    summary["newest_wal_ts"] = tool.newest_wal_time(summary["archive"]) if summary["archive"]["max"] else None
    summary["newest_wal_at"] = iso(summary["newest_wal_ts"])
    return summary


_VERIFY_COUNTS = re.compile(r"missing: (\d+), checksum invalid: (\d+), size invalid: (\d+), other: (\d+)")


def parse_verify(text):
    """{ok, status, problems: [lines]} from ``verify --output=text --verbose``."""
    problems = []
    status = None
    previous = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("status:"):
            status = stripped.split(":", 1)[1].strip()
        match = _VERIFY_COUNTS.search(stripped)
        if match and any(int(n) for n in match.groups()):
            problems.append(f"{previous} -> {stripped}")
        if "status:" in stripped and "invalid" in stripped and "status: valid" not in stripped:
            problems.append(stripped)
        previous = stripped
    ok = status == "ok" and not problems
    if status is None:
        problems.append("verify printed no status")
    return {"ok": ok, "status": status, "problems": problems, "report": text.strip()}


# ---------------------------------------------------------------------------------------------------------------
# Freshness (the monitor) and the choice of a base backup


def freshness(summary, now=None, max_wal_age_s=300, max_base_age_s=26 * 3600):
    """Ages of the newest archived WAL (the RPO right now) and of the newest base backup, against thresholds."""
    now = time.time() if now is None else now
    good = [b for b in summary.get("backups", []) if not b["error"] and b["stop_ts"]]
    newest_base = max((b["stop_ts"] for b in good), default=None)
    wal_ts = summary.get("newest_wal_ts")
    wal_age = round(now - wal_ts, 1) if wal_ts else None
    base_age = round(now - newest_base, 1) if newest_base else None
    return {
        "newest_wal_at": iso(wal_ts),
        "newest_wal_age_s": wal_age,
        "newest_base_backup_at": iso(newest_base),
        "newest_base_backup_age_s": base_age,
        "max_wal_age_s": max_wal_age_s,
        "max_base_age_s": max_base_age_s,
        "rpo_ok": wal_age is not None and wal_age <= max_wal_age_s,
        "base_ok": base_age is not None and base_age <= max_base_age_s,
    }


def restorable_window(summary):
    """(earliest, latest) restorable times as Unix seconds: the first good backup's end, and the last archived
    transaction end when it was read (``last_commit_ts``: what a restore by time can reach), else the newest WAL's
    upload."""
    good = [b for b in summary["backups"] if not b["error"] and b["stop_ts"]]
    if not good:
        return None, None
    latest = summary.get("last_commit_ts") if "last_commit_ts" in summary else summary.get("newest_wal_ts")
    return min(b["stop_ts"] for b in good), latest


def window_text(summary):
    earliest, latest = restorable_window(summary)
    if earliest is None:
        return "nothing is restorable (no complete backup)"
    if "last_commit_ts" in summary:
        end = f"{iso(latest)} (the last archived commit)" if latest else "(no commit archived since the backup)"
    else:
        end = iso(latest) if latest else "(no WAL archived)"
    return f"{iso(earliest)} .. {end}"


def choose_backup(summary, target, after_hint=None):
    """The newest good backup that ended at or before the target time; errors name the reachable window."""
    target_ts = target.timestamp()
    earliest, latest = restorable_window(summary)
    where = f"stanza {summary['stanza']}"
    if earliest is None:
        raise DRError(
            "the repository holds no complete backup, so there is nothing to restore from",
            step="choose a base backup",
            subject=where,
            hint="take one with playbooks/pitr_backup.yml -e type=full",
        )
    window = window_text(summary)
    if target_ts < earliest:
        raise DRError(
            f"target time {iso(target)} is before the earliest restorable time {iso(earliest)} "
            f"(the end of the first backup); the restorable window is {window}",
            step="choose a base backup",
            subject=where,
            hint=f"pick a time within {window}",
        )
    if latest is None or target_ts > latest:
        what = "the last archived commit" if "last_commit_ts" in summary else "the newest archived WAL"
        raise DRError(
            f"target time {iso(target)} is after {what} ({iso(latest)}): replay could not reach it; "
            f"the restorable window is {window}",
            step="choose a base backup",
            subject=where,
            hint=after_hint or f"pick a time within {window}, or wait for archiving to catch up (archive_timeout)",
        )
    good = [b for b in summary["backups"] if not b["error"] and b["stop_ts"] and b["stop_ts"] <= target_ts]
    chosen = max(good, key=lambda b: b["stop_ts"])
    return chosen, window


# ---------------------------------------------------------------------------------------------------------------
# PostgreSQL side: settings for archiving, and restored clusters


def archive_command(binary, config_file, stanza):
    return f"{binary} --config={config_file} --stanza={stanza} archive-push %p"


def psql(bin_dir, socket_dir, port, query, user=PG_USER, timeout=15, stdin=None, dbname="postgres"):
    """Run one query as the postgres OS user over the Unix socket (works with trust and peer authentication);
    stdin: the statement is read from standard input instead (never on a command line)."""
    connection = ["-h", socket_dir, "-p", str(port), "-U", user, "-d", dbname]
    argv = as_postgres(
        [
            os.path.join(bin_dir, "psql"),
            "-XAtq",
            "-v",
            "ON_ERROR_STOP=1",
            *connection,
            *(["-c", query] if query else []),
        ]
    )
    proc = subprocess.run(
        argv, cwd="/", input=stdin, capture_output=True, text=True, errors="replace", timeout=timeout, check=False
    )
    return proc.returncode, proc.stdout.strip(), proc.stderr.strip()


def bin_dir_for(data_dir, bin_dir=None):
    if bin_dir:
        return bin_dir
    try:
        with open(os.path.join(data_dir, "PG_VERSION")) as fh:
            major = fh.read().strip()
    except OSError:
        major = "15"
    return DEFAULT_BIN_DIR.format(major=major)


def pg_ctl(bin_dir, data_dir, *args, timeout=120):
    argv = as_postgres([os.path.join(bin_dir, "pg_ctl"), "-D", data_dir, *args])
    return subprocess.run(argv, cwd="/", capture_output=True, text=True, errors="replace", timeout=timeout, check=False)


def cluster_running(bin_dir, data_dir):
    return os.path.isfile(os.path.join(data_dir, "PG_VERSION")) and pg_ctl(bin_dir, data_dir, "status").returncode == 0


def stop_cluster(data_dir, bin_dir=None, timeout=30):
    """Stop a restored cluster (fast, then immediate). True when it was running."""
    bin_dir = bin_dir_for(data_dir, bin_dir)
    if not cluster_running(bin_dir, data_dir):
        return False
    proc = pg_ctl(bin_dir, data_dir, "stop", "-m", "fast", "-w", "-t", str(timeout), timeout=timeout + 10)
    if proc.returncode != 0:
        pg_ctl(bin_dir, data_dir, "stop", "-m", "immediate", "-w", "-t", str(timeout), timeout=timeout + 10)
    return True


def port_free(port, host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(host="127.0.0.1"):
    for _ in range(200):
        port = random.randint(*PORT_RANGE)  # noqa: S311 - spreading ports, not a secret
        if port_free(port, host):
            return port
    raise DRError("no free port found for the restored cluster", step="choose a port", hint="set the port option")


def tail(path, lines=15):
    try:
        with open(path, errors="replace") as fh:
            return "\n".join(fh.read().splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def dir_empty(path):
    return not os.path.exists(path) or (os.path.isdir(path) and not os.listdir(path))


def read_marker(data_dir):
    try:
        with open(os.path.join(data_dir, MARKER)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------------------
# Restore to a time into a new cluster


@dataclass
class RestoreRequest:
    stanza: str
    repo: Repo
    target_time: datetime
    data_dir: str
    port: int = 0
    config_file: str | None = None
    work_dir: str | None = None
    socket_dir: str | None = None
    log_file: str | None = None
    listen_addresses: str = "127.0.0.1"
    bin_dir: str | None = None
    timeout: int = 600
    process_max: int = 2
    verify: bool = True
    binary: str = "pgbackrest"
    # The source's superuser DSN: with switch_wal, a target after the last archived commit first forces a WAL
    # switch there (and waits until that segment is archived), so everything committed up to now can be reached.
    source_dsn: str | None = None
    switch_wal: bool = False
    # The restored cluster's superuser, reached over its Unix socket as the postgres OS user (peer or trust, as
    # the source's pg_hba.conf has it); it sets the runbook user's own password.
    admin_user: str = PG_USER
    runbook_user: str | None = None
    runbook_password: str | None = None
    dbname: str = "postgres"

    def __post_init__(self):
        self.data_dir = os.path.abspath(self.data_dir)
        base = os.path.dirname(self.data_dir)
        self.config_file = self.config_file or os.path.join(base, "pgbackrest.conf")
        self.work_dir = self.work_dir or os.path.join(base, "pgbackrest")
        self.socket_dir = self.socket_dir or os.path.join(base, "run")
        self.log_file = self.log_file or os.path.join(base, "log", "postgresql.log")
        self.attempt_file = os.path.join(base, ATTEMPT)
        if self.source_dsn is not None and not str(self.source_dsn).strip():
            self.source_dsn = None

    @property
    def host(self):
        return self.listen_addresses.split(",")[0].strip()

    def settings(self):
        w = self.work_dir
        return Settings(
            self.repo,
            lock_path=os.path.join(w, "lock"),
            log_path=os.path.join(w, "log"),
            spool_path=os.path.join(w, "spool"),
            process_max=self.process_max,
        )

    def reader(self):
        """pgBackRest reading the repository through the environment: no file is written (check mode)."""
        opts = dict(self.repo.options())
        opts["log-level-file"] = "off"
        opts["log-level-console"] = "warn"
        return PgBackRest(self.stanza, options=opts, secrets=self.repo.secrets(), binary=self.binary)

    def marker_matches(self, marker):
        return bool(marker) and (
            marker.get("stanza") == self.stanza
            and marker.get("repo") == self.repo.where()
            and parse_time(marker.get("target_time")) == self.target_time
        )

    def secrets(self):
        return [*self.repo.secrets(), self.runbook_password]


def read_attempt(req):
    try:
        with open(req.attempt_file) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def force_wal_switch(dsn, timeout=120):
    """pg_switch_wal() on the source, then wait until the segment it closed is archived. Everything committed
    before the returned moment (Unix seconds) is then in the repository."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import pg

    step = "force a WAL switch on the source"
    with pg.connect(dsn, step=step, application_name="pgdr pitr restore", autocommit=True) as conn:
        switched_at = float(conn.execute("select extract(epoch from clock_timestamp())").fetchone()[0])
        try:
            segment = conn.execute("select pg_walfile_name(pg_switch_wal())").fetchone()[0]
        except pg.psycopg.Error as exc:
            raise DRError(
                f"pg_switch_wal() failed on the source: {str(exc).strip().splitlines()[0]}",
                step=step,
                subject=pg.describe_dsn(dsn),
                hint="give a superuser DSN of the source (pitr_restore_source_dsn), or turn the switch off and pick "
                "a time within the restorable window",
            ) from None
        deadline = time.monotonic() + timeout
        while True:
            archived, failed = conn.execute(
                "select last_archived_wal, last_failed_wal from pg_stat_archiver"
            ).fetchone()
            if (archived or "") >= segment:
                break
            if time.monotonic() > deadline:
                raise DRError(
                    f"WAL segment {segment} was not archived within {timeout} s after the switch"
                    + (f" (the last failed segment is {failed})" if failed else ""),
                    step=step,
                    subject=pg.describe_dsn(dsn),
                    hint="check archiving on the source (playbooks/pitr_info.yml, the PostgreSQL log), then run the "
                    "same command again",
                )
            time.sleep(0.3)
    return {"switched_at": iso(switched_at), "switched_at_ts": switched_at, "segment": segment}


def _read_reachable(req, reader, bin_dir):
    summary = read_stanza(reader, req.repo.where())
    moment, summary["last_commit_lsn"], summary["last_commit_segment"] = reader.last_archived_commit(
        summary["archive"], bin_dir
    )
    summary["last_commit_at"] = moment
    summary["last_commit_ts"] = moment.timestamp() if moment else None
    return summary


def restore_plan(req, check_mode=False):
    """What a restore run does: 'none' (restored, up and promoted already), 'start' (restored, stopped) or 'restore'
    (with the base backup, the WAL range, the reachable window and the time replay stops at). Raises for a data
    folder that holds something else. A folder a failed or killed attempt left (its attempt file, no marker) is
    cleaned by the restore (``clean_failed``). With switch_wal and the source's DSN, a target after the last
    archived commit forces a WAL switch on the source first (only planned in check mode)."""
    marker = read_marker(req.data_dir)
    plan = {"data_dir": req.data_dir, "target_time": iso(req.target_time), "stanza": req.stanza}
    if req.marker_matches(marker):
        running = cluster_running(bin_dir_for(req.data_dir, req.bin_dir), req.data_dir)
        plan.update(
            action="none" if running else "start",
            port=marker["port"],
            backup=marker.get("backup"),
            wal_range=marker.get("wal_range"),
            window=marker.get("window"),
            point_in_time=marker.get("point_in_time") or {},
            marker=marker,
        )
        if running and req.runbook_user and req.runbook_password:
            plan["runbook_login"] = "works" if runbook_login_works(req, marker["port"]) else "refused"
            if plan["runbook_login"] == "refused":
                plan["action"] = "password"
        return plan
    attempt = read_attempt(req)
    if not dir_empty(req.data_dir) and not (attempt and not marker):
        other = ""
        if marker:
            other = f" (it holds a restore of {marker.get('target_time')} from stanza {marker.get('stanza')})"
        raise DRError(
            f"the data folder exists and is not empty{other}; a restore never writes over anything",
            step="check the new data folder",
            subject=req.data_dir,
            hint="choose a new cluster name or data folder, or remove that one after checking it is not needed",
        )
    reader = req.reader()
    summary = parse_info(reader.info())
    check_info(summary, req.repo.where())
    bin_dir = req.bin_dir or DEFAULT_BIN_DIR.format(major=summary.get("pg_version") or "15")
    summary = _read_reachable(req, reader, bin_dir)
    target_ts = req.target_time.timestamp()
    switch = None
    last = summary["last_commit_ts"]
    reachable = window_text(summary)
    if (last is None or target_ts > last) and req.switch_wal and req.source_dsn and target_ts <= time.time():
        if check_mode:
            switch = {"planned": True}
            summary = dict(summary, last_commit_ts=target_ts)  # what the switch is for; the real run re-reads
        else:
            switch = force_wal_switch(req.source_dsn, min(req.timeout, 300))
            summary = _read_reachable(req, reader, bin_dir)
            last = summary["last_commit_ts"]
            reachable = window_text(summary)
    # Replay by time stops only before a transaction that ended after the target: at the last archived commit
    # itself, or after it, there is none, so replay stops by LSN right after that commit instead. That is the state
    # at the target when the target is that commit's time, or when a WAL switch after the target proves that no
    # transaction ended between that commit and the target.
    stop_lsn, note = None, None
    if not (switch and switch.get("planned")) and summary["last_commit_at"] is not None:
        if req.target_time == summary["last_commit_at"]:
            stop_lsn = summary["last_commit_lsn"]
        elif switch and last < target_ts <= switch["switched_at_ts"]:
            stop_lsn = summary["last_commit_lsn"]
            note = (
                f"no transaction ended between the last archived commit {iso(summary['last_commit_at'])} and the "
                f"target {iso(req.target_time)} (WAL switched on the source at {switch['switched_at']} and archived):"
                " replay stops right after that commit, which is the state at the target"
            )
    after_hint = (
        "pick a time within the window; or let the run force a WAL switch on the source first "
        "(pitr_restore_switch_wal: true with pitr_restore_source_dsn, a superuser DSN of the source), or wait for "
        "the source's archive_timeout; then run the same command again"
    )
    effective = summary["last_commit_at"] if stop_lsn else req.target_time
    backup, window = choose_backup(summary, effective, after_hint=after_hint)
    if switch and switch.get("planned"):
        window = f"{reachable}; the WAL switch makes everything committed until then reachable"
        note = "would force a WAL switch on the source first (the target is after the last archived commit)"
    plan.update(
        action="restore",
        port=req.port or None,
        backup=backup,
        wal_range={"from": backup["wal_start"], "to": summary["archive"]["max"]},
        window=window,
        restore_to=iso(effective),
        stop_lsn=stop_lsn,
        last_archived_commit_at=iso(summary["last_commit_ts"]) if not (switch and switch.get("planned")) else None,
        wal_switch={k: v for k, v in switch.items() if k != "switched_at_ts"} if switch else None,
        note=note,
        newest_wal_at=summary["newest_wal_at"],
        system_id=summary["system_id"],
        verify=req.verify,
        clean_failed=bool(attempt) and not marker,
        failed_attempt=attempt if attempt and not marker else None,
        bin_dir=bin_dir,
    )
    return plan


def wait_promoted(req, bin_dir, port, deadline):
    """Poll until the cluster is out of recovery; fail early when the server stopped (a failed recovery)."""
    while True:
        rc, out, _ = psql(bin_dir, req.socket_dir, port, "select pg_is_in_recovery()", user=req.admin_user)
        if rc == 0 and out == "f":
            return
        if not cluster_running(bin_dir, req.data_dir):
            log = tail(req.log_file)
            raise DRError(
                f"the restored cluster stopped during recovery:\n{log}",
                step="replay WAL",
                subject=req.data_dir,
                hint=recovery_hint(log, "read the log lines above"),
            )
        if time.monotonic() > deadline:
            raise DRError(
                f"recovery did not finish within {req.timeout} s (pg_is_in_recovery() is still true)",
                step="replay WAL",
                subject=req.data_dir,
                hint=f"follow {req.log_file}; raise the timeout for a long WAL range",
            )
        time.sleep(0.3)


def start_cluster(req, bin_dir, port):
    proc = pg_ctl(
        bin_dir,
        req.data_dir,
        "start",
        "-w",
        "-t",
        str(req.timeout),
        "-l",
        req.log_file,
        timeout=req.timeout + 30,
    )
    if proc.returncode != 0 and not cluster_running(bin_dir, req.data_dir):
        raise DRError(
            f"the restored cluster did not start on port {port}:\n{tail(req.log_file)}",
            step="start the restored cluster",
            subject=req.data_dir,
            hint=recovery_hint(
                tail(req.log_file), "read the log; a port in use or a failed recovery are the usual causes"
            ),
        )


def recovery_hint(log, default):
    """What to do next, from the restored cluster's log."""
    if "recovery ended before configured recovery target was reached" in log:
        return (
            "the archived WAL ends before the target time (nothing committed after it has been archived yet, as on "
            "a quiet database): pick an earlier time, or wait for the next archived WAL and run the same command again"
        )
    return default


def scram_verifier(password, salt=None, iterations=4096):
    """A SCRAM-SHA-256 verifier of password, as PostgreSQL stores it: ALTER ROLE ... PASSWORD with it sends no
    plaintext to the server (nor to its log)."""
    import base64
    import hashlib
    import hmac

    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(data):
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def runbook_login_works(req, port):
    """Whether the runbook user logs in over TCP with its own password."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import pg

    try:
        with pg.psycopg.connect(
            host=req.host,
            port=port,
            user=req.runbook_user,
            password=req.runbook_password,
            dbname=req.dbname,
            connect_timeout=5,
            application_name="pgdr pitr restore",
        ):
            return True
    except pg.psycopg.OperationalError:
        return False


def set_runbook_password(req, bin_dir, port):
    """Give the runbook user of the restored cluster its own password (the source's no longer opens it)."""
    from psycopg import sql

    statement = (
        sql.SQL("alter role {} password {}")
        .format(sql.Identifier(req.runbook_user), sql.Literal(scram_verifier(req.runbook_password)))
        .as_string(None)
    )
    rc, _, err = psql(bin_dir, req.socket_dir, port, None, user=req.admin_user, stdin=statement)
    if rc != 0:
        raise DRError(
            f"cannot set the runbook user's password on the restored cluster: {redact(err, req.secrets())[:300]}",
            step="set the restored cluster's password",
            subject=f"{req.data_dir}, role {req.runbook_user}",
            hint="pitr_restore_admin_user must be a superuser of the source that the postgres OS user reaches over "
            "the Unix socket (peer or trust in its pg_hba.conf), and pitr_restore_user a role of the source",
        )
    if not runbook_login_works(req, port):
        raise DRError(
            f"the restored cluster refuses {req.runbook_user} over TCP with its new password",
            step="set the restored cluster's password",
            subject=f"{req.host}:{port}",
            hint="check the restored cluster's pg_hba.conf (a copy of the source's): it must allow password logins "
            "from this host",
        )


def forget_repository(req):
    """After promotion the cluster needs the repository no more: remove the configuration file (the S3 keys and
    the cipher passphrase) and the restore_command that names it."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(req.config_file)
    auto = os.path.join(req.data_dir, "postgresql.auto.conf")
    with contextlib.suppress(FileNotFoundError):
        with open(auto) as fh:
            lines = fh.read().splitlines()
        kept = [
            f"# {line}  (removed by pgdr after recovery)" if line.strip().startswith("restore_command") else line
            for line in lines
        ]
        if kept != lines:
            uid, gid = postgres_ids()
            with open(auto, "w") as fh:
                fh.write("\n".join(kept) + "\n")
            if os.geteuid() == 0:
                os.chown(auto, uid, gid)


def clean_failed(req, bin_dir):
    """Stop and empty what a failed attempt left in the data folder (never a completed restore: it has a marker),
    and remove the repository's configuration file."""
    if read_marker(req.data_dir):
        return
    stop_cluster(req.data_dir, bin_dir)
    if os.path.isdir(req.data_dir):
        for name in os.listdir(req.data_dir):
            path = os.path.join(req.data_dir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(req.config_file)


def point_in_time(req, plan, last_xact, timeline):
    """What the record says about the moment restored: the target, where replay stopped, the last replayed commit,
    the timeline, the base backup, and the RPO relative to the target (target minus the last replayed commit)."""
    rpo = None
    if last_xact:
        rpo = round(max(0.0, req.target_time.timestamp() - parse_time(last_xact).timestamp()), 3)
    return {
        "target_time": iso(req.target_time),
        "restored_to": plan.get("restore_to") or iso(req.target_time),
        "stopped_by": f"lsn {plan['stop_lsn']}" if plan.get("stop_lsn") else "time",
        "last_replayed_commit_at": last_xact or None,
        "timeline": timeline,
        "base_backup": (plan.get("backup") or {}).get("label"),
        "base_backup_type": (plan.get("backup") or {}).get("type"),
        "window": plan.get("window"),
        "last_archived_commit_at": plan.get("last_archived_commit_at"),
        "wal_switch": plan.get("wal_switch"),
        "note": plan.get("note"),
        "rpo_s": rpo,
    }


def restore(req, plan):
    """Carry out a plan from restore_plan(); returns the result (timings, the cluster's port and socket)."""
    started = time.monotonic()
    result = {"plan": plan, "changed": plan["action"] != "none", "data_dir": req.data_dir}
    port = plan.get("port") or req.port
    if plan["action"] in ("none", "password"):
        bin_dir = bin_dir_for(req.data_dir, req.bin_dir)
        if plan["action"] == "password":
            set_runbook_password(req, bin_dir, port)
        result.update(port=port, marker=plan["marker"], point_in_time=plan["point_in_time"])
        return result
    if plan["action"] == "start":
        bin_dir = bin_dir_for(req.data_dir, req.bin_dir)
        if not port_free(port):
            raise DRError(
                f"port {port} of the restored cluster is taken by another program",
                step="start the restored cluster",
                subject=req.data_dir,
                hint="stop that program, or restore into a new folder",
            )
        start_cluster(req, bin_dir, port)
        wait_promoted(req, bin_dir, port, time.monotonic() + req.timeout)
        if req.runbook_user and req.runbook_password and not runbook_login_works(req, port):
            set_runbook_password(req, bin_dir, port)
        result.update(port=port, marker=plan["marker"], point_in_time=plan["point_in_time"])
        result["timings"] = {"start_s": round(time.monotonic() - started, 2)}
        return result

    bin_dir = plan.get("bin_dir") or bin_dir_for(req.data_dir, req.bin_dir)
    port = port or pick_port()
    if not port_free(port):
        raise DRError(
            f"port {port} is in use", step="choose a port", subject=req.data_dir, hint="choose another port or 0"
        )
    timings = {}
    if plan.get("clean_failed"):
        clean_failed(req, bin_dir)
        result["cleaned_failed_attempt"] = plan.get("failed_attempt")
    ensure_dir(os.path.dirname(req.data_dir))
    write_private_file(
        req.attempt_file,
        json.dumps(
            {
                "target_time": iso(req.target_time),
                "stanza": req.stanza,
                "started_at": iso(time.time()),
            }
        )
        + "\n",
    )
    try:
        marker = _restore_files_and_replay(req, plan, bin_dir, port, timings, started)
    except BaseException as exc:
        clean_failed(req, bin_dir)
        if isinstance(exc, DRError):
            exc.hint = (exc.hint or "read the message above") + (
                "; the failed attempt's data folder was stopped and emptied (its log stays): run the same command "
                "again once the cause is fixed"
            )
        raise
    with contextlib.suppress(FileNotFoundError):
        os.unlink(req.attempt_file)
    result.update(port=port, marker=marker, timings=timings, point_in_time=marker["point_in_time"])
    result["last_replayed_transaction_at"] = marker["point_in_time"]["last_replayed_commit_at"]
    result["timeline"] = marker["point_in_time"]["timeline"]
    return result


def _restore_files_and_replay(req, plan, bin_dir, port, timings, started):
    if req.verify:
        t0 = time.monotonic()
        report = req.reader().verify()
        timings["verify_s"] = round(time.monotonic() - t0, 2)
        if not report["ok"]:
            raise DRError(
                "pgbackrest verify found damage in the repository: " + "; ".join(report["problems"])[:1500],
                step="verify the repository",
                subject=req.repo.where(),
                hint="restore from another backup or repository; do not trust this one until the cause is found",
            )
    settings = req.settings()
    for folder in [*settings.folders(), req.socket_dir, os.path.dirname(req.log_file)]:
        ensure_dir(folder)
    ensure_dir(req.data_dir)
    # The repository's keys are in this file only while the files are restored and WAL is replayed.
    write_private_file(
        req.config_file, render_config(settings, req.stanza, req.data_dir, port, pg_socket_path=req.socket_dir)
    )
    try:
        tool = PgBackRest(req.stanza, config_file=req.config_file, secrets=req.repo.secrets(), binary=req.binary)
        t0 = time.monotonic()
        tool.run(
            "restore",
            f"--set={plan['backup']['label']}",
            *(
                ["--type=lsn", f"--target={plan['stop_lsn']}"]
                if plan.get("stop_lsn")
                else ["--type=time", f"--target={pg_time(req.target_time)}"]
            ),
            "--target-action=promote",
            "--archive-mode=off",
            step="restore the base backup",
            timeout=req.timeout,
        )
        timings["restore_s"] = round(time.monotonic() - t0, 2)
        with open(os.path.join(req.data_dir, "postgresql.auto.conf"), "a") as fh:
            fh.write(
                RESTORED_SETTINGS.format(port=port, socket_dir=req.socket_dir, listen_addresses=req.listen_addresses)
            )
        t0 = time.monotonic()
        start_cluster(req, bin_dir, port)
        wait_promoted(req, bin_dir, port, time.monotonic() + req.timeout)
        timings["replay_s"] = round(time.monotonic() - t0, 2)
    finally:
        forget_repository(req)
    rc, out, _ = psql(
        bin_dir,
        req.socket_dir,
        port,
        "select coalesce(to_char(pg_last_xact_replay_timestamp() at time zone 'UTC',"
        " 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), ''),"
        " ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int",
        user=req.admin_user,
    )
    last_xact, timeline = [*out.split("|"), "", ""][:2] if rc == 0 else ("", "")
    if plan.get("stop_lsn"):
        # Stopping by LSN right after that commit, PostgreSQL does not count it in pg_last_xact_replay_timestamp()
        # (it checks the LSN first), though it replayed it: the commit's own time is what was restored.
        last_xact = plan["restore_to"]
    if req.runbook_user and req.runbook_password:
        set_runbook_password(req, bin_dir, port)
    timings["total_s"] = round(time.monotonic() - started, 2)
    marker = {
        "version": MARKER_VERSION,
        "stanza": req.stanza,
        "repo": req.repo.where(),
        "target_time": iso(req.target_time),
        "backup": plan["backup"],
        "wal_range": plan["wal_range"],
        "window": plan["window"],
        "port": port,
        "socket_dir": req.socket_dir,
        "restored_at": iso(time.time()),
        "last_replayed_transaction_at": last_xact or None,
        "point_in_time": point_in_time(req, plan, last_xact, int(timeline) if timeline.strip().isdigit() else None),
        "timings": timings,
    }
    write_private_file(os.path.join(req.data_dir, MARKER), json.dumps(marker, indent=2, sort_keys=True) + "\n")
    return marker


# ---------------------------------------------------------------------------------------------------------------
# Setting a cluster up: configuration file, stanza, archive_command


@dataclass
class StanzaRequest:
    stanza: str
    settings: Settings
    config_file: str
    dsn: str
    pg_path: str | None = None
    pg_port: int | None = None
    pg_socket_path: str | None = None
    archive_timeout: int = 60
    binary: str = "pgbackrest"
    check: bool = True

    def reader(self):
        opts = dict(self.settings.repo.options())
        opts["log-level-file"] = "off"
        return PgBackRest(self.stanza, options=opts, secrets=self.settings.repo.secrets(), binary=self.binary)

    def tool(self):
        return PgBackRest(
            self.stanza, config_file=self.config_file, secrets=self.settings.repo.secrets(), binary=self.binary
        )


def _server_settings(conn):
    rows = conn.execute(
        "select name, setting from pg_settings where name = any(%s)",
        (
            [
                "data_directory",
                "port",
                "unix_socket_directories",
                "archive_mode",
                "wal_level",
                "archive_command",
                "archive_timeout",
            ],
        ),
    ).fetchall()
    return dict(rows)


def stanza_plan(req):
    """Compare the host with what it should be; returns the plan with its steps (empty: nothing to do)."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import pg

    with pg.connect(req.dsn, step="connect to the database", application_name="pgdr pitr setup") as conn:
        current = _server_settings(conn)
    where = pg.describe_dsn(req.dsn)
    if current.get("wal_level") == "minimal":
        raise DRError(
            "wal_level is minimal, so WAL cannot be archived for point-in-time recovery",
            step="check the server settings",
            subject=where,
            hint="set wal_level = replica and archive_mode = on in postgresql.conf, then restart PostgreSQL",
        )
    if current.get("archive_mode") not in ("on", "always"):
        raise DRError(
            f"archive_mode is {current.get('archive_mode')!r}; turning it on needs a restart, which this will not do",
            step="check the server settings",
            subject=where,
            hint="set archive_mode = on in postgresql.conf and restart PostgreSQL in a maintenance window",
        )
    sockets = [s.strip() for s in (current.get("unix_socket_directories") or "").split(",") if s.strip()]
    pg_path = req.pg_path or current["data_directory"]
    pg_port = req.pg_port or int(current["port"])
    pg_socket = req.pg_socket_path or (sockets[0] if sockets else None)
    import psycopg.conninfo

    pg_user = psycopg.conninfo.conninfo_to_dict(req.dsn).get("user")
    text = render_config(req.settings, req.stanza, pg_path, pg_port, pg_socket, pg_user=pg_user)
    command = archive_command(req.binary, req.config_file, req.stanza)
    steps = []
    if not config_matches(req.config_file, text):
        steps.append(
            f"{'update' if os.path.exists(req.config_file) else 'write'} {req.config_file} (mode 600, owner postgres)"
        )
    summary = parse_info(req.reader().info())
    if summary["status_code"] == 1:
        steps.append(f"create stanza {req.stanza} in {req.settings.repo.where()}")
    else:
        check_info(summary, req.settings.repo.where())
    if current.get("archive_command") != command:
        steps.append(f"set archive_command = '{command}' (ALTER SYSTEM, reload)")
    if int(current.get("archive_timeout") or 0) != req.archive_timeout:
        steps.append(f"set archive_timeout = {req.archive_timeout}s (ALTER SYSTEM, reload)")
    return {
        "steps": steps,
        "stanza": req.stanza,
        "config_file": req.config_file,
        "repo": req.settings.repo.where(),
        "pg": {"path": pg_path, "port": pg_port, "socket_path": pg_socket, "server": where},
        "archive_command": command,
        "archive_timeout": req.archive_timeout,
        "current": {
            "archive_command": current.get("archive_command"),
            "archive_timeout": current.get("archive_timeout"),
        },
        "stanza_exists": summary["status_code"] != 1,
        "_config_text": text,
    }


def _wait_setting(conn, name, value, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if conn.execute("select setting from pg_settings where name = %s", (name,)).fetchone()[0] == value:
            return
        time.sleep(0.1)
    raise DRError(
        f"{name} did not take the new value after pg_reload_conf()",
        step="reload the server configuration",
        hint="read the PostgreSQL log for configuration errors",
    )


def stanza_apply(req, plan):
    """Carry out the plan's steps in a safe order (the stanza exists before archive_command points at it)."""
    from psycopg import sql

    from ansible_collections.pgdr.supabase.plugins.module_utils import pg

    text = plan.pop("_config_text")
    for folder in req.settings.folders():
        ensure_dir(folder)
    if not config_matches(req.config_file, text):
        write_private_file(req.config_file, text)
    tool = req.tool()
    if not plan["stanza_exists"]:
        tool.run("stanza-create", step="create the stanza")
    with pg.connect(
        req.dsn, step="connect to the database", application_name="pgdr pitr setup", autocommit=True
    ) as conn:
        current = _server_settings(conn)
        wanted = {"archive_command": plan["archive_command"], "archive_timeout": str(req.archive_timeout)}
        changed = [k for k, v in wanted.items() if current.get(k) != v]
        for name in changed:
            conn.execute(sql.SQL("alter system set {} = {}").format(sql.Identifier(name), sql.Literal(wanted[name])))
        if changed:
            conn.execute("select pg_reload_conf()")
            for name in changed:
                _wait_setting(conn, name, wanted[name])
    result = {"plan": plan}
    if req.check:
        t0 = time.monotonic()
        tool.run("check", step="check archiving and the repository")
        result["check"] = {"ok": True, "duration_s": round(time.monotonic() - t0, 2)}
    return result


# ---------------------------------------------------------------------------------------------------------------
# Base backups


def newest_backup(summary):
    good = [b for b in summary["backups"] if not b["error"]]
    return good[-1] if good else None


def backup_plan(summary, backup_type):
    """Which type would really run: pgBackRest turns diff/incr into full when no full backup exists."""
    has_full = any(b["type"] == "full" and not b["error"] for b in summary["backups"])
    effective = backup_type if has_full or backup_type == "full" else "full"
    return {
        "requested_type": backup_type,
        "type": effective,
        "newest": newest_backup(summary),
        "note": None
        if effective == backup_type
        else f"no full backup exists yet, so the {backup_type} backup runs full",
    }


def take_backup(tool, backup_type, timeout=None):
    """Run the backup; returns the new backup's summary row and the duration."""
    before = {b["label"] for b in parse_info(tool.info())["backups"]}
    t0 = time.monotonic()
    tool.run("backup", f"--type={backup_type}", step=f"take a {backup_type} backup", timeout=timeout)
    duration = round(time.monotonic() - t0, 2)
    summary = read_stanza(tool)
    new = [b for b in summary["backups"] if b["label"] not in before]
    if not new:
        raise DRError(
            "pgbackrest backup succeeded but no new backup shows in the repository",
            step="read the repository",
            subject=f"stanza {tool.stanza}",
            hint="run pgbackrest info and read its log",
        )
    return {"backup": new[-1], "duration_s": duration, "summary": summary}


def describe_plan(plan):
    """One line for check mode and reports."""
    if plan["action"] == "none":
        return f"{plan['data_dir']} holds the restore of {plan['target_time']}, up and promoted; nothing to do"
    if plan["action"] == "password":
        return f"{plan['data_dir']} holds the restore of {plan['target_time']}; would set the runbook user's password"
    if plan["action"] == "start":
        return f"{plan['data_dir']} holds the restore of {plan['target_time']}; would start it on port {plan['port']}"
    b = plan["backup"]
    port = plan["port"] or "a free port"
    to = plan["target_time"]
    if plan.get("restore_to") and plan["restore_to"] != plan["target_time"]:
        to = f"{plan['restore_to']} (the state at {plan['target_time']})"
    text = (
        f"would restore {b['type']} backup {b['label']} (ended {b['stop']}) and replay WAL {plan['wal_range']['from']}"
        f" .. {plan['wal_range']['to']} up to {to} into {plan['data_dir']} on {port}"
        f" (restorable window {plan['window']})"
    )
    if plan.get("clean_failed"):
        text += "; would first clean the folder a failed attempt left"
    if plan.get("note"):
        text += f"; {plan['note']}"
    return text


def describe_result(result):
    plan = result["plan"]
    if plan["action"] == "none":
        return describe_plan(plan)
    if plan["action"] == "password":
        return f"set the runbook user's password on the restore of {plan['target_time']} in {plan['data_dir']}"
    t = result.get("timings") or {}
    if plan["action"] == "start":
        return f"started the restore of {plan['target_time']} in {plan['data_dir']} on port {result['port']}"
    point = result.get("point_in_time") or {}
    text = (
        f"restored {plan['backup']['label']} + WAL to {plan['target_time']} into {plan['data_dir']}, promoted, on port "
        f"{result['port']} (restore {t.get('restore_s')} s, replay {t.get('replay_s')} s, total {t.get('total_s')} s);"
        f" last replayed commit {point.get('last_replayed_commit_at') or 'none'}, timeline {point.get('timeline')}"
    )
    if plan.get("note"):
        text += f"; {plan['note']}"
    return text

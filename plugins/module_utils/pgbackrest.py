"""pgBackRest for self-hosted PostgreSQL, the common part: the repository options, the configuration file (rendered,
written mode 600 and owned by postgres), the pgBackRest commands (run as the postgres user with a configuration file
of the project's own, their failures classified), the archived WAL read back, and the PostgreSQL cluster helpers.

The steps built on it: :mod:`pgbackrest_repo` (the repository listing, freshness, base backups),
:mod:`pgbackrest_stanza` (a cluster set up for archiving), :mod:`pgbackrest_restore` (a time restored into a new
cluster).

Secrets (the repository cipher passphrase, the S3 secret key) never reach a command line or a message: they live in
the configuration file (mode 600, owned by postgres) or in the environment of the pgBackRest process.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import tempfile
from dataclasses import dataclass, field

from ansible_collections.pgdr.supabase.plugins.module_utils import files, timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError, redact

PG_USER = "postgres"
DEFAULT_BIN_DIR = "/usr/lib/postgresql/{major}/bin"
# How many of the newest archived WAL segments are read (pg_waldump) to find the last archived commit.
COMMIT_SCAN_SEGMENTS = 32


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

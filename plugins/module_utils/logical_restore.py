"""The logical restore: verified download, then roles -> schema -> data (replica mode) -> indexes and
constraints -> migration history, into a NEW database that takes its final name only after success.

A database restored by this module carries a marker (its comment, JSON after ``pgdr:``) naming the backup
it holds: a second run with the same backup finds it and changes nothing. A failed run drops its
temporary database and local files; the database under the final name, if any, is never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

from ansible_collections.pgdr.supabase.plugins.module_utils import (
    catalog,
    crypto,
    identity,
    lifeline,
    pg,
    target_lock,
    workfolder,
)
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError, output_tail
from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import S3_ERRORS, RangedReader, is_not_found, translate
from ansible_collections.pgdr.supabase.plugins.module_utils.selection import READ_SIZE, check_digest, open_object

try:
    import zstandard

    HAS_ZSTD = True
except ImportError:  # pragma: no cover - reported by the modules
    HAS_ZSTD = False

try:
    from psycopg import errors as pg_errors
    from psycopg import sql
except ImportError:  # pragma: no cover
    pg_errors = sql = None

MARKER_PREFIX = "pgdr:"
TEMP_SUFFIX = "__pgdr_restoring"
MODES = ("new_database", "existing")
# stream: the data object goes from S3 straight into pg_restore (no local copy; indexes still build in parallel);
# file: a verified local copy first, then pg_restore -j for the data too (needs its uncompressed size on disk).
DATA_MODES = ("stream", "file")
# Identifiers PostgreSQL accepts unquoted are all we create, so names never need quoting games in messages.
DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_CREATE_ROLE = re.compile(r'^CREATE ROLE (?P<role>"(?:[^"]|"")+"|[^\s;]+);\s*$')


class RestoreRequest:
    """Everything a restore needs; built by the module from its parameters."""

    def __init__(
        self,
        target_dsn,
        manifest,
        target,
        database=None,
        database_prefix="restore",
        mode="new_database",
        template=None,
        jobs=2,
        bin_dir=None,
        workdir=None,
        production=(),
        allow_over_production=False,
        confirm=None,
        progress_file=None,
        decryption_identities=(),
        data_mode="stream",
        lock_wait=0,
    ):
        if mode not in MODES:
            raise DRError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}", step="plan restore")
        self.target_dsn = target_dsn
        self.manifest = manifest
        self.target = target
        self.mode = mode
        self.backup_id = manifest["backup_id"]
        _, _, dsn_db = pg.dsn_parts(target_dsn)
        if mode == "existing":
            self.database = dsn_db
        else:
            self.database = database or f"{database_prefix}_{self.backup_id.lower()}"
        if not DATABASE_NAME.fullmatch(self.database):
            raise DRError(
                f"database name {self.database!r} is not usable",
                step="plan restore",
                hint="use lowercase letters, digits and '_' (at most 63 characters)",
            )
        self.temp_database = self.database if mode == "existing" else self.database[:46] + TEMP_SUFFIX
        self.maintenance_db = dsn_db
        self.template = template or (dsn_db if manifest["source"].get("flavor") == "supabase" else "template0")
        self.jobs = max(1, int(jobs))
        self.bin_dir = bin_dir
        self.workdir = workdir or tempfile.gettempdir()
        self.production = list(production or [])
        self.allow_over_production = allow_over_production
        self.confirm = confirm
        self.progress_file = progress_file
        if data_mode not in DATA_MODES:
            raise DRError(
                f"unknown data_mode {data_mode!r}; expected one of {', '.join(DATA_MODES)}", step="plan restore"
            )
        self.data_mode = data_mode
        self.tools = None  # {name: path}, found once by _tools()
        self.manifest_sha256 = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
        self.identities = crypto.parse_identities(decryption_identities) if decryption_identities else None
        self.lock_wait = lock_wait  # pgdr guards (issue 9.7): seconds to queue behind another restore of the target

    @property
    def where(self):
        host, port, _ = pg.dsn_parts(self.target_dsn)
        return f"{host}:{port}/{self.database}"


def production_guard(request):
    """Refuse a production target unless overridden with a typed confirmation: decided on the server's identity
    (pgdr guards, issue 9.3: identity.py)."""
    return identity.production_guard(request)


def read_marker(conn, database):
    """The pgdr marker of a database: None when it does not exist, {} when it exists without a marker."""
    row = conn.execute(
        "select shobj_description(oid, 'pg_database') from pg_database where datname = %s", (database,)
    ).fetchone()
    if row is None:
        return None
    comment = row[0] or ""
    if comment.startswith(MARKER_PREFIX):
        try:
            return json.loads(comment[len(MARKER_PREFIX) :])
        except ValueError:
            return {}
    return {}


def write_marker(conn, database, marker):
    text = MARKER_PREFIX + json.dumps(marker, sort_keys=True)
    conn.execute(sql.SQL("comment on database {} is {}").format(sql.Identifier(database), sql.Literal(text)))


def _object(manifest, name):
    for obj in manifest["objects"]:
        if obj["name"] == name:
            return obj
    return None


def _tools(request):
    """pg_restore and psql of the backup's major version or newer (looked up once per request)."""
    if request.tools is not None:
        return request.tools
    tools = {}
    needed_major = int(str(request.manifest["tool"]["pg_dump_version"]).split(".")[0])
    for name in ("pg_restore", "psql"):
        path = pg.find_binary(name, request.bin_dir, needed_major * 10000)
        num, text = pg.tool_version(path)
        if name == "pg_restore" and num // 10000 < needed_major:
            raise DRError(
                f"pg_restore {text} cannot read archives of pg_dump {request.manifest['tool']['pg_dump_version']}",
                step="check client tools",
                subject=path,
                hint=f"install PostgreSQL {needed_major} client tools (or newer) and point bin_dir at them",
            )
        tools[name] = path
    request.tools = tools
    return tools


def _local_objects(request):
    """Names of the objects copied to local disk before the restore (all but a streamed data object)."""
    return [
        o["name"] for o in request.manifest["objects"] if not (o["name"] == "data" and request.data_mode == "stream")
    ]


def _disk_needed(request):
    local = _local_objects(request)
    return sum(int(o.get("raw_size") or o["size"]) for o in request.manifest["objects"] if o["name"] in local)


def plan(request):
    """What a run would do, read without writing: the marker found, the steps, the disk needed."""
    guard = production_guard(request)
    with pg.connect(request.target_dsn, step="connect restore target") as conn:
        marker = read_marker(conn, request.database)
        template_exists = read_marker(conn, request.template) is not None or request.template == "template0"
        server = pg.server_facts(conn)
    _tools(request)
    same_backup = bool(marker) and marker.get("backup_id") == request.backup_id
    if same_backup and marker.get("manifest_sha256") not in (None, request.manifest_sha256):
        raise DRError(
            f"database {request.database} holds another backup with the id {request.backup_id} (another source, "
            "bucket or prefix)",
            step="plan restore",
            subject=request.where,
            hint="choose another database name (-e pgdr_restore_database=...) or drop that database after checking it",
        )
    done = same_backup and marker.get("status") == "complete"
    if not done and request.mode == "new_database" and marker is not None:
        raise DRError(
            f"database {request.database} exists already and holds "
            + (f"backup {marker.get('backup_id')}" if marker else "something not restored by this tool"),
            step="plan restore",
            subject=request.where,
            hint="choose another database name (-e pgdr_restore_database=...) or drop that database after checking it",
        )
    if not template_exists and request.mode == "new_database":
        raise DRError(
            f"template database {request.template} does not exist",
            step="plan restore",
            subject=request.where,
            hint="set the template option to a platform-ready database",
        )
    free = shutil.disk_usage(request.workdir).free if os.path.isdir(request.workdir) else None
    steps = (
        []
        if done
        else [
            f"download and verify {len(request.manifest['objects'])} objects into {request.workdir} "
            f"({_disk_needed(request)} bytes needed, {free} free)",
            f"create database {request.temp_database} from template {request.template}"
            if request.mode == "new_database"
            else f"restore into the existing database {request.database}",
            "restore roles (existing ones kept)",
            "restore schema (pre-data)",
            "restore data in replica mode, "
            + ("streamed from S3, verified as it arrives" if request.data_mode == "stream" else "from the local copy"),
            "build indexes and constraints (post-data)",
            "restore migration history"
            if _object(request.manifest, "migrations")
            else "no migration history in backup",
            f"rename {request.temp_database} to {request.database} and mark it with backup {request.backup_id}"
            if request.mode == "new_database"
            else f"mark {request.database} with backup {request.backup_id}",
        ]
    )
    return {
        "action": "none" if done else "restore",
        "backup_id": request.backup_id,
        "database": request.database,
        "target": request.where,
        "mode": request.mode,
        "template": request.template if request.mode == "new_database" else None,
        "server_version": server["server_version"],
        "marker": marker or None,
        "production_guard": guard,
        "disk_needed": _disk_needed(request),
        "disk_free": free,
        "steps": steps,
    }


class _Steps:
    """Timings per step, and progress lines to a file an operator can follow."""

    def __init__(self, progress_file):
        self.progress_file = progress_file
        self.timings = {}

    def line(self, text):
        catalog.append_progress(self.progress_file, text)

    def run(self, name, func, *args):
        self.line(f"{name}: started")
        started = time.monotonic()
        result = func(*args)
        self.timings[name] = round(time.monotonic() - started, 3)
        self.line(f"{name}: done in {self.timings[name]} s")
        return result


def _open_ranged(target, obj, step):
    """The object as a stream of parallel ranged reads; a missing object or one of another size is named now."""
    try:
        head = target.client.head_object(Bucket=target.bucket, Key=obj["key"])
    except S3_ERRORS as exc:
        if is_not_found(exc):
            open_object(target, obj, step).close()  # raises the "object ... is missing" error every step uses
        raise translate(exc, step, target.where(obj["key"])) from exc
    if head["ContentLength"] != obj["size"]:
        check_digest(target, obj, head["ContentLength"], "(not read: the size differs)", step)
    return RangedReader(target, obj["key"], obj["size"], head["ETag"], step=step)


def stream_verified(target, obj, write, identities=None, step="download"):
    """Read one object (parallel ranged GETs), check its size and SHA-256 as it streams, decrypt it when it is
    encrypted (and check the plaintext's SHA-256), decompress it and hand the bytes to write(chunk).

    The digest is compared at the end: a caller that writes somewhere must only keep the result when this
    returns. Returns the verified entry (name, size, raw size, sha256)."""
    encrypted = bool(obj.get("encryption"))
    if encrypted and not identities:
        raise DRError(
            f"object {obj['name']} is encrypted and no decryption identity was given",
            step=step,
            subject=target.where(obj["key"]),
            hint="pass the age identity (from the vault) as decryption_identities",
        )
    body = _open_ranged(target, obj, step)
    digest, size, raw = hashlib.sha256(), 0, 0
    decompressor = zstandard.ZstdDecompressor().decompressobj()

    def out(chunk):
        nonlocal raw
        data = decompressor.decompress(chunk)
        raw += len(data)
        write(data)

    try:
        if encrypted:
            plain = hashlib.sha256()

            def decrypted(chunk):
                plain.update(chunk)
                out(chunk)

            size = crypto.decrypt_stream(body, digest, identities, decrypted)
            if plain.hexdigest() != obj.get("plain_sha256"):
                raise DRError(
                    f"object {obj['name']} decrypts to other bytes than were backed up",
                    step=step,
                    subject=target.where(obj["key"]),
                    hint="restore another backup",
                )
        else:
            for chunk in body.iter_chunks(READ_SIZE):
                digest.update(chunk)
                size += len(chunk)
                out(chunk)
    except S3_ERRORS as exc:
        raise translate(exc, step, target.where(obj["key"])) from exc
    except zstandard.ZstdError as exc:
        # A damaged object usually fails here first; say which, with its digest so far if the size is off.
        raise DRError(
            f"object {obj['name']} is corrupted (it does not decompress: {exc})",
            step=step,
            subject=target.where(obj["key"]),
            hint="restore another backup (or its immutable copy)",
        ) from exc
    finally:
        body.close()
    check_digest(target, obj, size, digest.hexdigest(), step)
    return {"name": obj["name"], "size": size, "raw_size": raw, "sha256": obj["sha256"]}


def fetch_verified(target, obj, dest, identities=None, step="download"):
    """Download one object into the file dest, verified (see stream_verified)."""
    try:
        with workfolder.WorkFolder.open_private(dest) as fh:  # pgdr guards (issue 9.9): mode 0600
            return stream_verified(target, obj, fh.write, identities, step)
    except OSError as exc:
        raise DRError(
            f"cannot write {dest}: {exc.strerror}",
            step=step,
            subject=dest,
            hint="free disk space or point the restore workdir at a bigger volume",
        ) from exc


def restore_streamed(tool_argv, env, target, obj, identities, step, where):
    """Stream one verified object straight into pg_restore's standard input (no local copy).

    pg_restore writes into the temporary database as the bytes arrive; the object's SHA-256 is checked when
    the stream ends, and a mismatch fails the restore, so the database is dropped and never switched to."""
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(  # pgdr guards (issue 9.11): the tool stops when this process dies
            lifeline.tool_argv(tool_argv), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors, env=env
        )
        try:
            try:
                verified = stream_verified(target, obj, proc.stdin.write, identities, "download")
            except BrokenPipeError:
                verified = None  # pg_restore stopped reading: its own error is the one to report
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if code != 0 or verified is None:
            raise _tool_failed(tool_argv[0], code, errors, step, where)
    return verified


def download_all(request, folder, names):  # names: _local_objects(request)
    """The named objects into files, verified, before anything is written to the target."""
    objects = [obj for obj in request.manifest["objects"] if obj["name"] in names]
    needed = _disk_needed(request)
    free = shutil.disk_usage(folder).free
    if free < needed * 1.05:
        raise DRError(
            f"not enough free disk for the restore's local copy: {needed} bytes needed, {free} free",
            step="download",
            subject=folder,
            hint="free disk space or point the restore workdir at a bigger volume",
        )
    files, verified = {}, []
    for obj in objects:
        dest = os.path.join(folder, obj["key"].rsplit("/", 1)[-1].removesuffix(".age").removesuffix(".zst"))
        verified.append(fetch_verified(request.target, obj, dest, request.identities))
        files[obj["name"]] = dest
    return files, verified


def idempotent_roles(path):
    """Rewrite CREATE ROLE lines so that a role that exists already is kept (roles are cluster-wide)."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            match = _CREATE_ROLE.match(line)
            if match:
                role = match.group("role")
                out.append(
                    f"DO $pgdr$ BEGIN CREATE ROLE {role}; EXCEPTION WHEN duplicate_object THEN "
                    f"RAISE NOTICE 'role {role.replace(chr(39), chr(39) * 2)} exists, kept'; END $pgdr$;\n"
                )
                continue
            out.append(line)
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(out)


def _run_tool(argv, env, step, where):
    with tempfile.TemporaryFile() as errors:
        code = subprocess.run(  # pgdr guards (issue 9.11): the tool stops when this process dies
            lifeline.tool_argv(argv), stdout=subprocess.DEVNULL, stderr=errors, env=env, check=False
        ).returncode
        if code != 0:
            raise _tool_failed(argv[0], code, errors, step, where)


def _tool_failed(tool, code, errors, step, where):
    return DRError(
        f"{os.path.basename(tool)} failed (exit {code}): {output_tail(errors)}",
        step=step,
        subject=where,
        hint="nothing was switched: the previous database is untouched; fix the cause and rerun",
    )


def _create_database(conn, request):
    deadline = time.monotonic() + 30
    while True:
        try:
            conn.execute(
                sql.SQL("create database {} template {}").format(
                    sql.Identifier(request.temp_database), sql.Identifier(request.template)
                )
            )
            return
        except pg_errors.ObjectInUse as exc:
            # CREATE DATABASE ... TEMPLATE needs the template to have no other sessions for a moment.
            if time.monotonic() > deadline:
                raise DRError(
                    f"template database {request.template} stays in use by other sessions",
                    step="create database",
                    subject=request.where,
                    hint="close the sessions on the template or use another template",
                ) from exc
            time.sleep(0.5)


def _drop(conn, database):
    conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(database)))


def run(request):
    """Restore unless the target already holds this backup. Returns the result the module reports."""
    # pgdr guards (issue 9.7): one restore at a time per target database; the lock's session is the admin session.
    with target_lock.for_request(request) as lock:
        return _run(request, lock.conn)


def _run(request, admin):
    if not HAS_ZSTD:
        raise DRError("the zstandard Python package is not installed", step="start", hint="run 'make setup'")
    started = time.monotonic()
    current = plan(request)
    if current["action"] == "none":
        return {
            "changed": False,
            "database": request.database,
            "backup_id": request.backup_id,
            "plan": current,
            "marker": current["marker"],
            "msg": f"{request.where} holds backup {request.backup_id} already; nothing to do",
        }
    tools = _tools(request)
    steps = _Steps(request.progress_file)
    steps.line(f"restore of backup {request.backup_id} into {request.where} started")
    # pgdr guards (issue 9.9): a 0700 folder of this run's own; killed runs' folders are removed (and said so).
    work = workfolder.WorkFolder(request.workdir, "restore", request.backup_id, f"restore {request.backup_id}")
    folder = work.path
    for note in work.notes():
        steps.line(note)
    created = False
    try:
        identity.check_same_server(admin, current["production_guard"], request.where)  # pgdr guards (issue 9.3)
        files, verified = steps.run("download_verify", download_all, request, folder, _local_objects(request))
        if request.mode == "new_database":
            marker = read_marker(admin, request.temp_database)
            if marker is not None:
                if marker.get("status") != "restoring":
                    raise DRError(
                        f"database {request.temp_database} exists and was not made by an earlier restore",
                        step="create database",
                        subject=request.where,
                        hint="drop it after checking it, or choose another database name",
                    )
                _drop(admin, request.temp_database)
            steps.run("create_database", _create_database, admin, request)
            created = True
        write_marker(
            admin,
            request.temp_database,
            {"backup_id": request.backup_id, "status": "restoring", "source": request.manifest["source"]["name"]},
        )
        conninfo, env = pg.client_env(request.target_dsn, dbname=request.temp_database, app_name="pgdr restore")
        where = request.where
        psql = [tools["psql"], "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", f"--dbname={conninfo}"]
        restore = [tools["pg_restore"], "--exit-on-error", f"--dbname={conninfo}"]
        # Loading sessions do not wait for WAL flushes: the database is unused until it is complete and renamed.
        replica = dict(env, PGOPTIONS="-c session_replication_role=replica -c synchronous_commit=off")
        idempotent_roles(files["roles"])
        steps.run("roles", _run_tool, [*psql, "-f", files["roles"]], env, "restore roles", where)
        steps.run(
            "schema",
            _run_tool,
            [*restore, "--single-transaction", "--section=pre-data", files["schema"]],
            env,
            "restore schema",
            where,
        )
        if request.data_mode == "stream":
            data = next(o for o in request.manifest["objects"] if o["name"] == "data")
            verified.append(
                steps.run(
                    "data",
                    restore_streamed,
                    [*restore, "--data-only"],
                    replica,
                    request.target,
                    data,
                    request.identities,
                    "restore data",
                    where,
                )
            )
        else:
            steps.run(
                "data",
                _run_tool,
                [*restore, f"--jobs={request.jobs}", "--data-only", files["data"]],
                replica,
                "restore data",
                where,
            )
        steps.run(
            "post_data",
            _run_tool,
            [*restore, f"--jobs={request.jobs}", "--section=post-data", files["schema"]],
            env,
            "build indexes and constraints",
            where,
        )
        if "migrations" in files:
            steps.run(
                "migrations",
                _run_tool,
                [*restore, "--single-transaction", "--clean", "--if-exists", files["migrations"]],
                env,
                "restore migration history",
                where,
            )
        marker = {
            "backup_id": request.backup_id,
            "status": "complete",
            "source": request.manifest["source"]["name"],
            "manifest_sha256": request.manifest_sha256,
            "restored_at": catalog.isoformat(catalog.utcnow()),
        }
        if request.mode == "new_database":
            admin.execute(
                sql.SQL("alter database {} rename to {}").format(
                    sql.Identifier(request.temp_database), sql.Identifier(request.database)
                )
            )
        write_marker(admin, request.database, marker)
        steps.line(f"restore of backup {request.backup_id} into {request.where} complete")
    except BaseException:
        if created:
            try:
                _drop(admin, request.temp_database)
            except Exception:  # the original error matters more; the next run drops it
                steps.line(f"could not drop {request.temp_database}; the next run drops it")
        raise
    finally:
        admin.close()
        work.remove()
    return {
        "changed": True,
        "database": request.database,
        "backup_id": request.backup_id,
        "plan": current,
        "marker": marker,
        "objects": verified,
        "timings": steps.timings,
        "duration_s": round(time.monotonic() - started, 3),
        "cleaned": work.notes(),  # pgdr guards (issue 9.9)
        "msg": f"backup {request.backup_id} restored into {request.where} in {time.monotonic() - started:.1f} s",
    }

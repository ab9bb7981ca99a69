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
    dumpspec,
    fingerprint,
    identity,
    lifeline,
    loader,
    pg,
    project,
    tabledata,
    target_lock,
    timefmt,
    workfolder,
)
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError, output_tail
from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import (
    S3_ERRORS,
    RangedReader,
    is_not_found,
    translate,
    version_args,
)
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
MODES = ("new_database", "project")
V1_DATA_LEFT_OUT = ("cron", "net")
# stream: the data object goes from S3 straight into pg_restore (no local copy; indexes still build in parallel);
# file: a verified local copy first, then pg_restore -j for the data too (needs its uncompressed size on disk).
DATA_MODES = ("stream", "file")
# Identifiers PostgreSQL accepts unquoted are all we create, so names never need quoting games in messages.
DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


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
        skip_extensions=(),
        disarm=True,
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
        if mode == "project":
            self.database = dsn_db
        else:
            self.database = database or f"{database_prefix}_{self.backup_id.lower()}"
        if not DATABASE_NAME.fullmatch(self.database):
            raise DRError(
                f"database name {self.database!r} is not usable",
                step="plan restore",
                hint="use lowercase letters, digits and '_' (at most 63 characters)",
            )
        self.temp_database = self.database if mode == "project" else self.database[:46] + TEMP_SUFFIX
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
        self.skip_extensions = list(skip_extensions or ())
        self.disarm = bool(disarm)
        self.version = int(manifest.get("manifest_version", 1))
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
    needed_major = int(str(request.manifest["tool"]["pg_dump_version"]).split(".", maxsplit=1)[0])
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
    """Names of the objects copied to local disk before the restore: the small ones (roles, schema, index, a
    version 1 migration history), and a version 1 data archive with data_mode file; data objects always stream."""
    return [
        o["name"]
        for o in request.manifest["objects"]
        if o.get("kind") != "data" and not (o["name"] == "data" and request.data_mode == "stream")
    ]


def _disk_needed(request):
    local = _local_objects(request)
    return sum(int(o.get("raw_size") or o["size"]) for o in request.manifest["objects"] if o["name"] in local)


def _read_target_marker(conn, request):
    """The marker of the database the restore would write: the new database's comment, or the project's table."""
    if request.mode == "project":
        return project.read_marker(conn)
    return read_marker(conn, request.database)


def _template_use(conn, name):
    """Whether this login can copy the template: "usable", or why not (CREATE DATABASE ... TEMPLATE needs
    CREATEDB and either a database marked IS_TEMPLATE, ownership of it, or superuser)."""
    row = conn.execute(
        "select d.datistemplate, pg_has_role(current_user, d.datdba, 'member'), r.rolsuper, r.rolcreatedb"
        " from pg_roles r left join pg_database d on d.datname = %s where r.rolname = current_user",
        (name,),
    ).fetchone()
    is_template, owns, superuser, createdb = row
    if is_template is None:
        return "does not exist"
    if not (superuser or createdb):
        return "cannot be copied: this login may not create databases (CREATEDB)"
    if not (is_template or owns or superuser):
        return (
            "cannot be copied by this login: it is not marked IS_TEMPLATE and the login neither owns it "
            "nor is superuser"
        )
    return "usable"


def plan(request):
    """What a run would do, read without writing: the marker found, the steps, the disk needed."""
    guard = production_guard(request)
    with pg.connect(request.target_dsn, step="connect restore target") as conn:
        marker = _read_target_marker(conn, request)
        template = _template_use(conn, request.template) if request.mode == "new_database" else "usable"
        server = pg.server_facts(conn)
    _tools(request)
    same_backup = bool(marker) and marker.get("backup_id") == request.backup_id
    if request.mode == "project":
        # The project holds whatever was restored last; another backup (even under the same id) replaces it.
        same_backup = same_backup and marker.get("manifest_sha256") == request.manifest_sha256
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
    if template != "usable" and not done:
        raise DRError(
            f"template database {request.template} {template}",
            step="plan restore",
            subject=request.where,
            hint="set the template option to a platform-ready database marked IS_TEMPLATE (the sandbox has "
            "platform_template), or restore with mode project into a new project",
        )
    free = shutil.disk_usage(request.workdir).free if os.path.isdir(request.workdir) else None
    data = [o for o in request.manifest["objects"] if o.get("kind") == "data"]
    steps = [] if done else _planned_steps(request, marker, data, free)
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


def _planned_steps(request, marker, data, free):
    first = (
        [f"create database {request.temp_database} from template {request.template}"]
        if request.mode == "new_database"
        else [
            f"mark {request.database} as restoring, then remove the app "
            + (f"of backup {marker.get('backup_id')} " if marker else "")
            + "(the app's schemas, public's objects, the app's objects on the platform's tables, the platform "
            "rows the backup carries); platform objects stay"
        ]
    )
    if request.version >= 2:
        load = [
            "set the default privileges of the app's roles to the built-in ones for the load",
            "restore roles (existing ones kept)",
            "restore schema (pre-data; entries the platform owns left out)",
            f"restore data: {len(data)} objects by {request.jobs} workers in replica mode, streamed from S3 and "
            "verified as they arrive",
            f"build indexes and constraints (post-data, {request.jobs} jobs)",
            "restore the app's objects on the platform's tables and the webhooks"
            + (" (disabled)" if request.disarm else ""),
            "set sequence values, owners, privileges and default privileges equal to the backup's",
            "refresh the materialized views the source had populated",
            "schedule the cron jobs" + (" (inactive)" if request.disarm else ""),
        ]
    else:
        load = [
            "restore roles (existing ones kept)",
            "restore schema (pre-data)",
            "restore data in replica mode, "
            + ("streamed from S3, verified as it arrives" if request.data_mode == "stream" else "from the local copy"),
            "build indexes and constraints (post-data)",
            "restore migration history" if _object(request.manifest, "migrations") else "no migration history",
        ]
    last = (
        f"rename {request.temp_database} to {request.database} and mark it with backup {request.backup_id}"
        if request.mode == "new_database"
        else f"mark {request.database} with backup {request.backup_id}"
    )
    return [
        f"download and verify the small objects into {request.workdir} ({_disk_needed(request)} bytes needed, "
        f"{free} free)",
        *first,
        *load,
        last,
    ]


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
        head = target.client.head_object(Bucket=target.bucket, Key=obj["key"], **version_args(obj))
    except S3_ERRORS as exc:
        if is_not_found(exc):
            open_object(target, obj, step).close()  # raises the "object ... is missing" error every step uses
        raise translate(exc, step, target.where(obj["key"])) from exc
    if head["ContentLength"] != obj["size"]:
        check_digest(target, obj, head["ContentLength"], "(not read: the size differs)", step)
    return RangedReader(target, obj["key"], obj["size"], head["ETag"], step=step, version_id=obj.get("version_id"))


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
    tabledata.bound_memory()
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
    report = {}
    try:
        identity.check_same_server(admin, current["production_guard"], request.where)  # pgdr guards (issue 9.3)
        files, verified = steps.run("download_verify", download_all, request, folder, _local_objects(request))
        if request.mode == "new_database":
            steps.run("create_database", _create_temp_database, admin, request)
            created = True
            write_marker(admin, request.temp_database, _marker(request, "restoring"))
        dsn = pg.with_database(request.target_dsn, request.temp_database)
        with pg.connect(dsn, step="connect restore target", application_name="pgdr restore") as conn:
            if request.mode == "project":
                report["cleaned"] = steps.run("clean", _clean_project, conn, request, files)
            if request.version >= 2:
                report.update(steps.run("load", _load, request, conn, dsn, tools, files, verified, steps))
            else:
                report.update(_load_v1(request, conn, dsn, tools, files, verified, steps))
            if request.mode == "project":
                marker = _marker(request, "complete", report)
                project.write_marker(conn, marker)
                conn.commit()
        if request.mode == "new_database":
            admin.execute(
                sql.SQL("alter database {} rename to {}").format(
                    sql.Identifier(request.temp_database), sql.Identifier(request.database)
                )
            )
            marker = _marker(request, "complete", report)
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
        "report": report,
        "timings": steps.timings,
        "duration_s": round(time.monotonic() - started, 3),
        "cleaned": work.notes(),  # pgdr guards (issue 9.9)
        "msg": f"backup {request.backup_id} restored into {request.where} in {time.monotonic() - started:.1f} s",
    }


def _marker(request, status, report=None):
    marker = {
        "backup_id": request.backup_id,
        "status": status,
        "source": request.manifest["source"]["name"],
        "manifest_sha256": request.manifest_sha256,
    }
    if status == "complete":
        marker["restored_at"] = timefmt.iso(timefmt.utcnow())
    for key in ("disarmed", "cron_jobs", "extensions_skipped"):
        if report and report.get(key):
            marker[key] = report[key]
    return marker


def _create_temp_database(admin, request):
    """A new database for the restore, from the template; a leftover of a killed run of the same restore is
    dropped first (its marker says restoring), anything else under that name is refused."""
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
    _create_database(admin, request)


def _clean_project(conn, request, files):
    """Mark the project restoring and remove the app an earlier restore (or anyone) put there."""
    index = loader.read_index(files["index"]) if "index" in files else {}
    marker = project.read_marker(conn)
    scope = fingerprint.Scope(conn, request.manifest["source"].get("flavor") or "supabase")
    tables = [pg.quote_table(schema, name) for schema, name in _platform_table_names(request, index)]
    statements = project.cleanup_statements(conn, scope, tables, marker)
    conn.commit()
    done = project.run_cleanup(conn, statements, request.where)
    project.write_marker(conn, _marker(request, "restoring", {"cron_jobs": (marker or {}).get("cron_jobs")}))
    conn.commit()
    return done


def _platform_table_names(request, index):
    """(schema, table) of the platform's tables whose rows the backup carries: a project restore empties them."""
    flavor = request.manifest["source"].get("flavor") or "supabase"
    if index.get("sections"):
        names = {(s["schema"], s["table"]) for secs in index["sections"].values() for s in secs}
    else:  # version 1: the manifest's row counts name every table of the data archive
        names = {tuple(key.split(".", 1)) for key in request.manifest.get("tables") or {}}
    return sorted((schema, table) for schema, table in names if not dumpspec.schema_in_dump(schema, flavor))


def _load(request, conn, dsn, tools, files, verified, steps):
    """The version 2 load (loader.py); returns its report."""
    index = loader.read_index(files["index"])
    load = loader.Loader(request, conn, dsn, tools, files, index, steps)
    steps.run("prepare", load.prepare)
    steps.run("roles", load.roles)
    steps.run("schema", load.schema, "pre-data")

    def produce(obj, write):
        verified.append(stream_verified(request.target, obj, write, request.identities, "restore data"))

    loaded = steps.run("data", load.data, produce)
    steps.run("post_data", load.schema, "post-data", request.jobs)
    steps.run("platform_objects", load.platform_objects)
    steps.run("sequences", load.sequences)
    privileges = steps.run("privileges", load.privileges)
    steps.run("matviews", load.matviews)
    jobs = steps.run("cron_jobs", load.cron_jobs)
    steps.run("finish", load.give_back_memberships)
    return {
        **load.report,
        "rows": sum(loaded.values()),
        "tables": len(loaded),
        "privilege_statements": privileges,
        "cron_jobs": jobs,
    }


def _load_v1(request, conn, dsn, tools, files, verified, steps):
    """A backup of manifest version 1: the data in one pg_dump archive, the migration history in another."""
    load = loader.Loader(request, conn, dsn, tools, files, {}, steps)
    steps.run("prepare", load.prepare)
    steps.run("roles", load.roles)
    steps.run("schema", load.schema, "pre-data")
    conninfo, env = pg.client_env(dsn, app_name="pgdr restore")
    restore = [tools["pg_restore"], "--exit-on-error", "--no-owner", f"--dbname={conninfo}"]
    # Loading sessions do not wait for WAL flushes: the database is unused until it is complete and renamed.
    replica = dict(env, PGOPTIONS="-c session_replication_role=replica -c synchronous_commit=off")
    # Version 1 archives hold pg_cron's tables and pg_net's queue too: a restore's role may not write cron.job
    # (a hosted project forbids it) and must not resend production's queued requests.
    data_only = ["--data-only", *(f"--exclude-schema={s}" for s in V1_DATA_LEFT_OUT)]
    if request.data_mode == "stream":
        data = next(o for o in request.manifest["objects"] if o["name"] == "data")
        verified.append(
            steps.run(
                "data",
                restore_streamed,
                [*restore, *data_only],
                replica,
                request.target,
                data,
                request.identities,
                "restore data",
                request.where,
            )
        )
    else:
        steps.run(
            "data",
            _run_tool,
            [*restore, f"--jobs={request.jobs}", *data_only, files["data"]],
            replica,
            "restore data",
            request.where,
        )
    steps.run("post_data", load.schema, "post-data", request.jobs)
    if "migrations" in files:
        steps.run(
            "migrations",
            _run_tool,
            [*restore, "--single-transaction", "--data-only", files["migrations"]],
            env,
            "restore migration history",
            request.where,
        )
    return load.report


def read_index(target, manifest, identities=None, step="read index"):
    """The index of a version 2 backup (catalog fingerprint, content digests, data sections), read and verified
    like every object; None for a version 1 backup."""
    obj = _object(manifest, loader.INDEX_NAME)
    if obj is None:
        return None
    chunks = []
    stream_verified(target, obj, chunks.append, identities, step)
    return json.loads(b"".join(chunks))


def marker_of(conn):
    """The marker of the database conn is connected to: the project's table, else the database's comment."""
    marker = project.read_marker(conn)
    if marker is None:
        marker = read_marker(conn, conn.info.dbname)
    return marker or None


def record_checks(conn, checks, dry_run=False):
    """Write the verification and smoke tests' outcome into the restored database's marker (promote reads it).
    Returns (changed, marker)."""
    marker = marker_of(conn)
    if not marker or marker.get("status") != "complete":
        raise DRError(
            "the database holds no completed restore (no restore marker, or one that says restoring)",
            step="record verification",
            subject=f"database {conn.info.dbname}",
            hint="restore into it first (restore.yml)",
        )
    failed = [c["name"] for c in checks if not c.get("ok")]
    verified = {
        "ok": bool(checks) and not failed,
        "checks": [{"name": c["name"], "ok": bool(c.get("ok"))} for c in checks],
        "failed": failed,
    }
    previous = {k: v for k, v in (marker.get("verified") or {}).items() if k != "at"}
    if previous == verified:
        return False, marker
    marker = dict(marker, verified=dict(verified, at=timefmt.iso(timefmt.utcnow())))
    if not dry_run:
        if project.read_marker(conn) is not None:
            project.write_marker(conn, marker)
        else:
            write_marker(conn, conn.info.dbname, marker)
        conn.commit()
    return True, marker

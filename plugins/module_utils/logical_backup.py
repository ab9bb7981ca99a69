"""The logical backup: pg_dump -> zstd -> SHA-256 -> S3 multipart upload, with the manifest as commit point.

``plan()`` reads the source and the bucket and says what a run would do; ``run()`` does it. Nothing is
buffered on disk; memory is bounded by part size x upload concurrency plus zstd's window.
"""

from __future__ import annotations

import json
import signal
import subprocess
import tempfile
import threading
import time

from ansible_collections.pgdr.supabase.plugins.module_utils import (
    catalog,
    crypto,
    dumpspec,
    lifeline,
    pg,
    runsafety,
    signing,
)
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError, output_tail
from ansible_collections.pgdr.supabase.plugins.module_utils.lock import SourceLock
from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import MultipartWriter, part_size_for

try:
    import zstandard

    HAS_ZSTD = True
except ImportError:  # pragma: no cover - reported by the modules
    HAS_ZSTD = False

TOOL_NAME = "pgdr"
TOOL_VERSION = "0.1.0"
READ_SIZE = 1024 * 1024


class BackupRequest:
    """Everything a backup run needs; built by the module from its parameters."""

    def __init__(
        self,
        source,
        dsn,
        target,
        prefix="backups",
        window="daily",
        flavor="auto",
        bin_dir=None,
        compression_level=1,
        compression_threads=1,
        part_size=None,
        concurrency=3,
        count_rows=True,
        lock_wait=0,
        lock_stale_after=600,
        progress_file=None,
        now=None,
        encryption_recipients=(),
        sse=None,
        signing_key=None,
    ):
        catalog.check_source_name(source)
        self.source = source
        self.dsn = dsn
        self.target = target
        self.prefix = prefix
        self.window = window
        self.flavor = flavor
        self.bin_dir = bin_dir
        self.compression_level = compression_level
        self.compression_threads = compression_threads
        self.part_size = part_size
        self.concurrency = concurrency
        self.count_rows = count_rows
        self.lock_wait = lock_wait
        self.lock_stale_after = lock_stale_after
        self.progress_file = progress_file
        self.now = now or catalog.utcnow()
        self.backup_id = catalog.backup_id_for(self.now, window)
        self.recipient_texts = [r.strip() for r in encryption_recipients or ()]
        self.recipients = crypto.parse_recipients(self.recipient_texts) if self.recipient_texts else None
        self.sse_args = sse_arguments(sse)
        self.preflight = None  # (source facts, client tools), read once by _preflight()
        self.written = runsafety.WriteLedger()  # pgdr guards (issue 9.1): the objects this run wrote
        # pgdr guards (issue 9.6): the manifest is signed with this Ed25519 key (PEM), read before anything runs
        self.signing_key = signing.load_private_key(signing_key) if signing_key else None

    def key(self, name):
        return catalog.backup_prefix(self.prefix, self.source, self.backup_id) + name

    def object_key(self, obj):
        """Key of a dump object: .zst, then .age when it is encrypted."""
        return self.key(obj.filename + (".zst.age" if self.recipients else ".zst"))


def sse_arguments(sse):
    """S3 server-side encryption arguments from {"algorithm": "AES256"|"aws:kms", "kms_key_id": ...}."""
    if not sse or not sse.get("algorithm"):
        return {}
    if sse["algorithm"] not in ("AES256", "aws:kms"):
        raise DRError(
            f"unknown server-side encryption {sse['algorithm']!r}; expected AES256 or aws:kms",
            step="check encryption",
            hint="fix the s3 sse setting in the inventory",
        )
    args = {"ServerSideEncryption": sse["algorithm"]}
    if sse["algorithm"] == "aws:kms" and sse.get("kms_key_id"):
        args["SSEKMSKeyId"] = sse["kms_key_id"]
    return args


def _source_facts(request):
    with pg.connect(request.dsn, step="connect source") as conn:
        facts = pg.server_facts(conn)
    flavor = facts["flavor"] if request.flavor == "auto" else request.flavor
    host, port, _ = pg.dsn_parts(request.dsn)
    return dict(facts, flavor=flavor, host=host, port=port, name=request.source)


def _tools(request, facts):
    tools = {}
    for name in ("pg_dump", "pg_dumpall"):
        path = pg.find_binary(name, request.bin_dir, facts["server_version_num"])
        num, text = pg.tool_version(path)
        pg.check_dump_compatible(num, text, facts["server_version_num"], facts["server_version"], tool=name)
        tools[name] = {"path": path, "version": text}
    return tools


def _preflight(request):
    """The source's facts and the client tools, with the bucket checked: read once per request (the module
    plans, then runs)."""
    if request.preflight is None:
        facts = _source_facts(request)
        tools = _tools(request, facts)
        request.target.check_bucket(step="check bucket")
        request.preflight = (facts, tools)
    return request.preflight


def plan(request):
    """What a run would do now, read without writing anything: the source, the objects and their keys,
    and whether the backup of this window exists already (then a run changes nothing)."""
    facts, tools = _preflight(request)
    manifest = request.target.get_json(request.key(catalog.MANIFEST_NAME), step="read manifest")
    leftovers = (
        []
        if manifest
        else request.target.list_keys(catalog.backup_prefix(request.prefix, request.source, request.backup_id))
    )
    holder = request.target.get_json(catalog.lock_key(request.prefix, request.source), step="read lock")
    objects = dumpspec.backup_objects(facts["flavor"], snapshot=None, has_migrations=facts["has_migrations"])
    return {
        "action": "none" if manifest else "create",
        "backup_id": request.backup_id,
        "window": request.window,
        "source": {
            k: facts[k] for k in ("name", "host", "port", "database", "server_version", "flavor", "database_size")
        },
        "tools": {name: tool["version"] for name, tool in tools.items()},
        "bucket": request.target.bucket,
        "manifest_key": request.key(catalog.MANIFEST_NAME),
        "objects": [
            {
                "name": o.name,
                "key": request.object_key(o),
                "format": o.format,
                "tool": o.kind,
                "description": o.description,
            }
            for o in objects
        ],
        "leftovers": [key for key, _ in leftovers],
        "encryption": f"age, to {len(request.recipients)} recipient(s)" if request.recipients else "none",
        "server_side_encryption": request.sse_args.get("ServerSideEncryption") or "none",
        "lock": holder,
        "existing": catalog.summarize(manifest) if manifest else None,
        "existing_manifest": manifest,
    }


class _Progress:
    """Progress lines with rates to a file an operator can follow (tail -f) during a long dump."""

    def __init__(self, path, every=5.0):
        self.path = path
        self.every = every
        self._last = 0.0
        self.name = None
        self.started = 0.0

    def line(self, text):
        catalog.append_progress(self.path, text)

    def begin(self, name):
        self.name, self.started, self._last = name, time.monotonic(), time.monotonic()
        self.line(f"{name}: started")

    def stored(self, size):
        now = time.monotonic()
        if self.path and now - self._last >= self.every:
            self._last = now
            rate = size / max(now - self.started, 1e-6) / 1e6
            self.line(f"{self.name}: {size / 1e6:.0f} MB stored ({rate:.0f} MB/s compressed)")


def _dump_object(request, obj, tools, conninfo, env, part_size, progress):
    """Stream one dump object into S3 (through zstd, and age when encrypting); return its manifest entry."""
    key = request.object_key(obj)
    argv = [tools[obj.kind]["path"], *obj.args, f"--dbname={conninfo}"]
    started = time.monotonic()
    progress.begin(obj.name)
    writer = MultipartWriter(
        request.target,
        key,
        part_size=part_size,
        concurrency=request.concurrency,
        on_progress=progress.stored,
        extra_args=request.sse_args,
        ledger=request.written,  # pgdr guards (issue 9.1)
    )
    sink = crypto.EncryptingWriter(writer, request.recipients) if request.recipients else writer
    compressor = zstandard.ZstdCompressor(
        level=request.compression_level, threads=request.compression_threads, write_checksum=True
    )
    with tempfile.TemporaryFile() as errors:
        # pgdr guards (issue 9.11): the tool stops when this process dies
        proc = subprocess.Popen(lifeline.tool_argv(argv), stdout=subprocess.PIPE, stderr=errors, env=env, bufsize=0)
        try:
            if obj.name == "roles":
                text = proc.stdout.read().decode("utf-8")
                raw = "".join(dumpspec.filter_roles_sql(text.splitlines(keepends=True), obj.flavor)).encode("utf-8")
                sink.write(compressor.compress(raw))
                raw_size = len(raw)
            else:
                raw_size, _ = compressor.copy_stream(proc.stdout, sink, read_size=READ_SIZE, write_size=READ_SIZE)
            code = proc.wait()
            if code != 0:
                how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
                raise DRError(
                    f"{obj.kind} {how}: {output_tail(errors, 800)}",
                    step=f"dump {obj.name}",
                    subject=pg.describe_dsn(request.dsn),
                    hint="read the message above; the backup was not committed",
                )
            if sink is not writer:
                sink.close()
            size, sha256 = writer.close()
        except BaseException as exc:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if sink is not writer:
                sink.abort()
            abort_error = writer.abort()
            if isinstance(exc, DRError) and abort_error:
                exc.message += f" (aborting the upload also failed: {abort_error})"
            raise
        finally:
            proc.stdout.close()
    duration = time.monotonic() - started
    progress.line(f"{obj.name}: done, {raw_size / 1e6:.1f} MB dumped, {size / 1e6:.1f} MB stored, {duration:.1f} s")
    entry = {
        "name": obj.name,
        "key": key,
        "format": obj.format,
        "size": size,
        "sha256": sha256,
        "raw_size": raw_size,
        "compression": {"algorithm": "zstd", "level": request.compression_level},
        "encryption": None,
        "server_side_encryption": request.sse_args.get("ServerSideEncryption"),
        "parts": len(writer.parts) or 1,
        "duration_s": round(duration, 3),
        "description": obj.description,
    }
    if sink is not writer:
        # sha256 covers what is stored; plain_sha256 what decryption must give back (the zstd stream).
        entry["encryption"] = {"algorithm": "age-x25519", "recipients": request.recipient_texts}
        entry["plain_sha256"] = sink.plain_sha256
        entry["plain_size"] = sink.plain_size
    return entry


def _cleanup(request, step):
    """Remove what an earlier unfinished backup of this id left (never anything of a committed one): runsafety.py."""
    folder = catalog.backup_prefix(request.prefix, request.source, request.backup_id)
    return runsafety.remove_leftovers(request.target, folder, request.key(catalog.MANIFEST_NAME), step=step)


def _count_in_background(snapshot, tables):
    box = {}

    def work():
        started = time.monotonic()
        try:
            box["counts"] = pg.row_counts(snapshot.conn, tables)
        except BaseException as exc:  # reported by the caller
            box["error"] = exc
        box["duration"] = time.monotonic() - started

    thread = threading.Thread(target=work, name="row-counts", daemon=True)
    thread.start()
    return thread, box


class _Interrupted(BaseException):
    pass


def _raise_interrupted(signum, _frame):
    raise _Interrupted(signal.Signals(signum).name)


def run(request):
    """Take the backup unless this window's backup exists. Returns the result the module reports."""
    if not HAS_ZSTD:
        raise DRError("the zstandard Python package is not installed", step="start", hint="run 'make setup'")
    started_wall = catalog.utcnow()
    started = time.monotonic()
    timings = {}
    facts, tools = _preflight(request)
    timings["preflight"] = time.monotonic() - started
    manifest_key = request.key(catalog.MANIFEST_NAME)
    previous = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    if previous is not None:
        signal.signal(signal.SIGTERM, _raise_interrupted)
    lock = SourceLock(
        request.target,
        catalog.lock_key(request.prefix, request.source),
        purpose=f"backup {request.backup_id}",
        wait=request.lock_wait,
        stale_after=request.lock_stale_after,
    )
    try:
        with lock:
            timings["lock_wait"] = lock.waited
            existing = request.target.get_json(manifest_key, step="read manifest")
            if existing is not None:
                summary = catalog.summarize(catalog.validate_manifest(existing, request.target.where(manifest_key)))
                return {
                    "changed": False,
                    "backup_id": request.backup_id,
                    "manifest_key": manifest_key,
                    "manifest": existing,
                    "summary": summary,
                    "cleaned": [],
                    "msg": f"backup {request.backup_id} of {request.source} exists already (window "
                    f"{request.window}); nothing to do",
                }
            cleaned = _cleanup(request, step="clean up an earlier unfinished backup")
            try:
                manifest = _take(request, facts, tools, timings, started_wall)
                manifest["timings"] = {k: round(v, 3) for k, v in timings.items()}
                manifest = signing.sign(manifest, request.signing_key)  # pgdr guards (issue 9.6): signed last
                body = json.dumps(manifest, indent=2, sort_keys=True).encode()
                t0 = time.monotonic()
                # pgdr guards (issue 9.1): commit only while holding the lock; another run's commit is our result.
                other = runsafety.commit_manifest(request.target, manifest_key, body, lock)
                timings["manifest"] = time.monotonic() - t0
            except BaseException as exc:
                try:
                    # pgdr guards (issue 9.1): only this run's own objects, never a committed folder.
                    runsafety.remove_own(request.target, manifest_key, request.written)
                except DRError as cleanup_error:
                    if isinstance(exc, DRError):
                        exc.message += (
                            f" (its objects could not be removed yet: {cleanup_error}; the next run removes them)"
                        )
                if isinstance(exc, _Interrupted):
                    raise DRError(
                        f"interrupted by {exc}",
                        step="backup",
                        subject=request.source,
                        hint="nothing was committed; run the backup again",
                    ) from None
                raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if other is not None:  # pgdr guards (issue 9.1)
        return runsafety.other_run_result(request, manifest_key, other, {"removed": []})
    return {
        "changed": True,
        "backup_id": request.backup_id,
        "manifest_key": manifest_key,
        "manifest": manifest,
        "summary": catalog.summarize(manifest),
        "cleaned": cleaned,
        "msg": f"backup {request.backup_id} of {request.source} taken: {catalog.summarize(manifest)['size']} bytes "
        f"in {manifest['duration_s']} s",
    }


def _take(request, facts, tools, timings, started_wall):
    progress = _Progress(request.progress_file)
    progress.line(f"backup {request.backup_id} of {request.source} started")
    conninfo, env = pg.client_env(request.dsn, app_name="pgdr backup")
    part_size = request.part_size or part_size_for(facts["database_size"])
    t0 = time.monotonic()
    snapshot = pg.Snapshot(request.dsn)
    try:
        tables = pg.user_tables(snapshot.conn, facts["flavor"])
        objects_defs = pg.schema_objects(snapshot.conn, facts["flavor"])
        versions = pg.migration_versions(snapshot.conn)
        timings["snapshot"] = time.monotonic() - t0
        counter = _count_in_background(snapshot, tables) if request.count_rows else None
        objects = []
        for obj in dumpspec.backup_objects(facts["flavor"], snapshot.id, facts["has_migrations"]):
            t1 = time.monotonic()
            objects.append(_dump_object(request, obj, tools, conninfo, env, part_size, progress))
            timings[f"dump_{obj.name}"] = time.monotonic() - t1
        counts = None
        if counter:
            t1 = time.monotonic()
            counter[0].join()
            timings["row_counts_wait"] = time.monotonic() - t1
            if "error" in counter[1]:
                raise DRError(
                    f"counting rows failed: {counter[1]['error']}",
                    step="count rows",
                    subject=pg.describe_dsn(request.dsn),
                )
            counts = counter[1]["counts"]
    finally:
        if counter and counter[0].is_alive():
            # A dump failed while the rows were still being counted: stop the count before closing its session.
            snapshot.conn.cancel()
            counter[0].join(timeout=30)
        snapshot.close()
    finished_wall = catalog.utcnow()
    progress.line(f"backup {request.backup_id} of {request.source}: all objects stored")
    return {
        "manifest_version": catalog.MANIFEST_VERSION,
        "kind": "logical",
        "backup_id": request.backup_id,
        "window": request.window,
        "source": {
            k: facts[k]
            for k in (
                "name",
                "host",
                "port",
                "database",
                "server_version",
                "server_version_num",
                "system_identifier",
                "flavor",
                "database_size",
            )
        },
        "tool": {
            "name": TOOL_NAME,
            "version": TOOL_VERSION,
            "pg_dump_version": tools["pg_dump"]["version"],
            "pg_dumpall_version": tools["pg_dumpall"]["version"],
        },
        "started_at": catalog.isoformat(started_wall),
        "finished_at": catalog.isoformat(finished_wall),
        "duration_s": round((finished_wall - started_wall).total_seconds(), 3),
        "restore_order": [o["name"] for o in objects],
        "objects": objects,
        "tables": counts,
        "schema": {"fingerprint": pg.fingerprint(objects_defs), "objects": objects_defs},
        "migrations": {"versions": versions},
    }

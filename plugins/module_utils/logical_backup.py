"""The logical backup: roles and schema through pg_dumpall/pg_dump, every table's rows as COPY streams in data
objects written by parallel workers, and an index (the app's catalog fingerprint, the objects it puts on the
platform's tables, each table's content digest, sequence values), each stream -> zstd -> (age) -> SHA-256 -> S3
multipart upload; the manifest, written last, is the commit point.

Everything reads one snapshot, exported by a repeatable-read transaction: the dumps, the COPY sessions, the
fingerprint and the row counts describe one instant. ``plan()`` reads the source and the bucket and says what a
run would do; ``run()`` does it. Nothing is buffered on disk; memory is bounded by jobs x (upload concurrency + 1)
x part size plus zstd's windows.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import tempfile
import threading
import time

from ansible_collections.pgdr.supabase.plugins.module_utils import (
    catalog,
    crypto,
    disarm,
    dumpspec,
    fingerprint,
    lifeline,
    loader,
    pg,
    runsafety,
    signing,
    tabledata,
    timefmt,
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
TOOL_VERSION = "0.2.0"
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
        jobs=2,
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
        self.jobs = max(1, int(jobs))
        self.lock_wait = lock_wait
        self.lock_stale_after = lock_stale_after
        self.progress_file = progress_file
        self.now = now or timefmt.utcnow()
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
        return self.stored_key(obj.filename)

    def stored_key(self, filename):
        return self.key(filename + (".zst.age" if self.recipients else ".zst"))


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
    host, port, _unused = pg.dsn_parts(request.dsn)
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
    objects = dumpspec.backup_objects(facts["flavor"])
    with pg.connect(request.dsn, step="connect source") as conn:
        tables = tabledata.list_tables(conn, facts["flavor"])
        parts = tabledata.plan_for(conn, tables)
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
        ]
        + [
            {
                "name": loader.INDEX_NAME,
                "key": request.stored_key("index.json"),
                "format": "json",
                "tool": "pgdr",
                "description": "catalog fingerprint, content digests, data sections",
            },
            {
                "name": "data",
                "key": request.stored_key("data-NNNN.copy"),
                "format": "copy",
                "tool": "COPY",
                "description": f"rows of {len(tables)} tables in {len(parts)} objects, written by {request.jobs} "
                "workers",
            },
        ],
        "leftovers": [key for key, _unused in leftovers],
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


class _Store:
    """One object of the backup set being written: bytes -> zstd -> (age) -> S3 multipart upload with SHA-256.

    Nothing is visible under the key until close(); abort() removes what was uploaded."""

    def __init__(self, request, name, key, part_size, progress=None, concurrency=None):
        self.request = request
        self.name = name
        self.key = key
        self.started = time.monotonic()
        self.writer = MultipartWriter(
            request.target,
            key,
            part_size=part_size,
            concurrency=concurrency or request.concurrency,
            on_progress=progress.stored if progress else None,
            extra_args=request.sse_args,
            ledger=request.written,  # what this run wrote: a failed run removes only that (runsafety)
        )
        self.sink = crypto.EncryptingWriter(self.writer, request.recipients) if request.recipients else self.writer
        self.compressor = zstandard.ZstdCompressor(
            level=request.compression_level, threads=request.compression_threads, write_checksum=True
        )
        self._stream = None
        self.raw_size = 0

    def write(self, data):
        if self._stream is None:
            self._stream = self.compressor.stream_writer(self.sink, closefd=False, write_size=READ_SIZE)
        self._stream.write(data)
        self.raw_size += len(data)

    def copy_stream(self, fh):
        """Compress a whole stream (a tool's stdout) in one go."""
        read, _unused = self.compressor.copy_stream(fh, self.sink, read_size=READ_SIZE, write_size=READ_SIZE)
        self.raw_size += read

    def close(self, **extra):
        """Complete the object; returns its manifest entry (extra keys added)."""
        if self._stream is None:
            self.write(b"")
        self._stream.flush(zstandard.FLUSH_FRAME)
        if self.sink is not self.writer:
            self.sink.close()
        size, sha256 = self.writer.close()
        entry = {
            "name": self.name,
            "key": self.key,
            "size": size,
            "sha256": sha256,
            "raw_size": self.raw_size,
            "compression": {"algorithm": "zstd", "level": self.request.compression_level},
            "encryption": None,
            "server_side_encryption": self.request.sse_args.get("ServerSideEncryption"),
            "parts": len(self.writer.parts) or 1,
            "duration_s": round(time.monotonic() - self.started, 3),
            **extra,
        }
        if self.sink is not self.writer:
            # sha256 covers what is stored; plain_sha256 what decryption must give back (the zstd stream).
            entry["encryption"] = {"algorithm": "age-x25519", "recipients": self.request.recipient_texts}
            entry["plain_sha256"] = self.sink.plain_sha256
            entry["plain_size"] = self.sink.plain_size
        return entry

    def abort(self):
        """Remove the upload; returns the abort's own error, if any."""
        if self.sink is not self.writer:
            self.sink.abort()
        return self.writer.abort()


def _dump_object(request, obj, tools, conninfo, env, part_size, progress):
    """Stream one pg_dump/pg_dumpall object into S3; return its manifest entry."""
    argv = [tools[obj.kind]["path"], *obj.args, f"--dbname={conninfo}"]
    progress.begin(obj.name)
    store = _Store(request, obj.name, request.object_key(obj), part_size, progress)
    with tempfile.TemporaryFile() as errors:
        # pgdr guards (issue 9.11): the tool stops when this process dies
        proc = subprocess.Popen(lifeline.tool_argv(argv), stdout=subprocess.PIPE, stderr=errors, env=env, bufsize=0)
        try:
            if obj.name == "roles":
                text = proc.stdout.read().decode("utf-8")
                store.write("".join(dumpspec.filter_roles_sql(text.splitlines(keepends=True), obj.flavor)).encode())
            else:
                store.copy_stream(proc.stdout)
            code = proc.wait()
            if code != 0:
                how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
                raise DRError(
                    f"{obj.kind} {how}: {output_tail(errors, 800)}",
                    step=f"dump {obj.name}",
                    subject=pg.describe_dsn(request.dsn),
                    hint="read the message above; the backup was not committed",
                )
            entry = store.close(format=obj.format, description=obj.description)
        except BaseException as exc:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            _aborted(store, exc)
            raise
        finally:
            proc.stdout.close()
    progress.line(
        f"{obj.name}: done, {entry['raw_size'] / 1e6:.1f} MB dumped, {entry['size'] / 1e6:.1f} MB stored, "
        f"{entry['duration_s']:.1f} s"
    )
    return entry


def _aborted(store, exc):
    abort_error = store.abort()
    if isinstance(exc, DRError) and abort_error:
        exc.message += f" (aborting the upload also failed: {abort_error})"


def _data_session(request, snapshot_id):
    """A session reading the backup's snapshot, with the settings every COPY of the data set uses."""
    conn = pg.connect(request.dsn, step="connect source", application_name="pgdr backup data")
    conn.isolation_level = pg.psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    pg.import_snapshot(conn, snapshot_id)
    tabledata.apply_settings(conn)
    return conn


def _dump_part(request, snapshot_id, number, part, part_size, progress, stopped):
    """Write one data object: the COPY streams of its tables (or range of pages), each folded into its content
    digest on the way. Returns (manifest entry, sections). Gives up at the next write once stopped is set."""
    name = f"data-{number:04d}"
    conn = _data_session(request, snapshot_id)
    store = _Store(request, name, request.stored_key(f"{name}.copy"), part_size, concurrency=2)
    sections, offset = [], 0

    def write(block):
        if stopped.is_set():
            raise DRError("stopped: another step of the backup failed", step="dump data", subject=name)
        store.write(block)

    try:
        for table, pages in part:
            digest = tabledata.copy_rows(conn, tabledata.copy_out_query(table, pages), write, tabledata.Digest())
            sections.append(
                {
                    "schema": table.schema,
                    "table": table.name,
                    "columns": table.columns,
                    "pages": list(pages) if pages else None,
                    "offset": offset,
                    "length": digest.bytes,
                    "rows": digest.rows,
                    "digest": digest.text(),
                }
            )
            offset += digest.bytes
        entry = store.close(
            format="copy",
            kind="data",
            rows=sum(s["rows"] for s in sections),
            tables=len(sections),
            description=f"rows of {len(sections)} table section(s) in COPY text format",
        )
    except BaseException as exc:
        _aborted(store, exc)
        if isinstance(exc, pg.psycopg.Error):
            raise DRError(
                f"reading the rows of {table.key} failed: {str(exc).strip().splitlines()[0]}",
                step="dump data",
                subject=pg.describe_dsn(request.dsn),
                hint="read the message above; the backup was not committed",
            ) from exc
        raise
    finally:
        conn.close()
    progress.line(
        f"{name}: {entry['rows']} rows of {entry['tables']} table section(s), {entry['raw_size'] / 1e6:.1f} MB, "
        f"stored {entry['size'] / 1e6:.1f} MB in {entry['duration_s']:.1f} s"
    )
    return entry, sections


class _DataDump:
    """Every table's rows in data objects, written by request.jobs workers (threads) in the snapshot, started at
    once and running alongside the caller. wait() returns the manifest entries, their sections and the content
    digest of each table; stop() makes the workers give up at their next write and waits for them."""

    def __init__(self, request, snapshot, tables, part_size, progress):
        parts = tabledata.plan_for(snapshot.conn, tables)
        progress.line(f"data: {len(tables)} tables in {len(parts)} objects, {request.jobs} workers")
        self.tables = tables
        self.workers = tabledata.Workers(request.jobs)
        self._results = self._error = None

        def work():
            try:
                self._results = self.workers.run(
                    list(enumerate(parts, 1)),
                    lambda item: _dump_part(
                        request, snapshot.id, item[0], item[1], part_size, progress, self.workers.stopped
                    ),
                )
            except BaseException as exc:  # handed to wait()
                self._error = exc

        self._thread = threading.Thread(target=work, name="data", daemon=True)
        self._thread.start()

    @property
    def duration(self):
        return self.workers.duration

    def stop(self):
        self.workers.stopped.set()
        self._thread.join()

    def wait(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        entries = [entry for entry, _unused in self._results]
        sections = {entry["name"]: secs for entry, secs in self._results}
        content = {}
        for secs in sections.values():
            for section in secs:
                key = f"{section['schema']}.{section['table']}"
                digest = tabledata.Digest.parse(section["digest"])
                content[key] = content[key].merge(digest) if key in content else digest
        for table in self.tables:  # a table whose every range was empty still has its digest
            content.setdefault(table.key, tabledata.Digest())
        return entries, sections, {key: digest.text() for key, digest in sorted(content.items())}


def _store_index(request, index, part_size):
    """The index object: compressed JSON (and encrypted like the rest), its digest in the manifest."""
    store = _Store(request, loader.INDEX_NAME, request.stored_key("index.json"), part_size)
    try:
        store.write(json.dumps(index, sort_keys=True, separators=(",", ":")).encode())
        return store.close(format="json", description="catalog fingerprint, content digests, data sections")
    except BaseException as exc:
        _aborted(store, exc)
        raise


def _cleanup(request, step):
    """Remove what an earlier unfinished backup of this id left (never anything of a committed one): runsafety.py."""
    folder = catalog.backup_prefix(request.prefix, request.source, request.backup_id)
    return runsafety.remove_leftovers(request.target, folder, request.key(catalog.MANIFEST_NAME), step=step)


class _Interrupted(BaseException):
    pass


def _raise_interrupted(signum, _frame):
    raise _Interrupted(signal.Signals(signum).name)


def run(request):
    """Take the backup unless this window's backup exists. Returns the result the module reports."""
    if not HAS_ZSTD:
        raise DRError("the zstandard Python package is not installed", step="start", hint="run 'make setup'")
    tabledata.bound_memory()
    started_wall = timefmt.utcnow()
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
                # Every object is there as written (nothing removed it while the backup ran), or no commit.
                catalog.require_presence(request.target, manifest)
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
    flavor = facts["flavor"]
    t0 = time.monotonic()
    snapshot = pg.Snapshot(request.dsn)
    data = None
    try:
        tables = tabledata.list_tables(snapshot.conn, flavor)
        pg.lock_tables(snapshot.conn, [(t.schema, t.name) for t in tables])
        # The rows are read by their own workers while this thread reads the catalog and runs the dumps: every
        # session reads the same exported snapshot, so nothing waits for the others to finish.
        data = _DataDump(request, snapshot, tables, part_size, progress)
        scope = fingerprint.Scope(snapshot.conn, flavor)
        catalog_fp = fingerprint.capture(snapshot.conn, flavor, scope)
        platform = fingerprint.platform_ddl(snapshot.conn, scope) if flavor == "supabase" else []
        hooks = disarm.webhooks(snapshot.conn, scope)
        jobs = disarm.cron_jobs(snapshot.conn, scope)
        outgoing = disarm.outgoing_functions(snapshot.conn, scope)
        not_carried = pg.not_carried(snapshot.conn, flavor)
        sequences = pg.sequence_values(snapshot.conn, flavor)
        versions = pg.migration_versions(snapshot.conn)
        timings["snapshot"] = time.monotonic() - t0
        objects = []
        for obj in dumpspec.backup_objects(flavor, snapshot.id):
            t1 = time.monotonic()
            objects.append(_dump_object(request, obj, tools, conninfo, env, part_size, progress))
            timings[f"dump_{obj.name}"] = time.monotonic() - t1
        data_entries, sections, content = data.wait()
        timings["dump_data"] = data.duration
    except BaseException:
        if data is not None:
            data.stop()  # no worker writes an object after this run has started removing its own
        raise
    finally:
        snapshot.close()
    counts = {key: tabledata.Digest.parse(text).rows for key, text in content.items()}
    index = {
        "index_version": 1,
        "fingerprint": catalog_fp,
        "platform_ddl": [item for item in platform if item["key"] not in {h["key"] for h in hooks}],
        "webhooks": hooks,
        "cron_jobs": jobs,
        "outgoing_functions": outgoing,
        "not_carried": not_carried,
        "content": content,
        "sections": sections,
        "sequences": sequences,
        "extensions": {
            key.split(" ", 1)[1]: entry["def"]
            for key, entry in catalog_fp["objects"].items()
            if key.startswith("extension ")
        },
    }
    t1 = time.monotonic()
    objects.append(_store_index(request, index, part_size))
    timings["index"] = time.monotonic() - t1
    objects += data_entries
    finished_wall = timefmt.utcnow()
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
        "started_at": timefmt.iso(started_wall),
        "finished_at": timefmt.iso(finished_wall),
        "duration_s": round((finished_wall - started_wall).total_seconds(), 3),
        "restore_order": [o["name"] for o in objects],
        "objects": objects,
        "data": {
            "format": "copy",
            "objects": len(data_entries),
            "jobs": request.jobs,
            "tables": len(content),
            "rows": sum(counts.values()),
            "raw_size": sum(e["raw_size"] for e in data_entries),
        },
        "tables": counts,
        "schema": {"fingerprint": catalog_fp_digest(catalog_fp), "objects": len(catalog_fp["objects"])},
        "migrations": {"versions": versions},
    }


def catalog_fp_digest(catalog_fp):
    """One SHA-256 over the catalog fingerprint (the manifest's summary of it; the index holds it whole)."""
    return hashlib.sha256(json.dumps(catalog_fp, sort_keys=True).encode()).hexdigest()

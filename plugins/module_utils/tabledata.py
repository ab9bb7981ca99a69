"""Table data as objects of the backup set: every table's rows as a COPY stream, several tables (or one range of
pages of a big table) to an object, dumped and loaded by parallel workers; and a content digest per table that
the dump computes as the rows pass and that verification computes again from a restored database.

The content digest of a table is order-independent: the number of rows, their bytes in COPY text format, and two
64-bit sums of a CRC-32 and an Adler-32 of each row. So a table loaded by two workers at once, or reordered by the
database, gives the same digest, and the digest costs about 0.1 µs per row on the way (no second read of the
source). Every session that reads or writes rows uses the same settings, so a row has one text form.
"""

from __future__ import annotations

import ctypes
import queue
import select
import threading
import time
import zlib

from ansible_collections.pgdr.supabase.plugins.module_utils import dumpspec
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

try:
    import psycopg
    from psycopg import pq, sql
except ImportError:  # pragma: no cover - reported by the modules
    psycopg = pq = sql = None

# One text form for every row, whatever the server's or the role's defaults (pg_dump sets most of these too);
# row_security off makes a table that RLS would filter fail instead of being dumped in part.
SESSION_SETTINGS = (
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("TimeZone", "UTC"),
    ("bytea_output", "hex"),
    ("row_security", "off"),
    ("synchronize_seqscans", "off"),
    ("statement_timeout", "0"),
    ("lock_timeout", "0"),
    ("idle_in_transaction_session_timeout", "0"),
)
PART_BYTES = 64 * 1024 * 1024  # an object holds tables up to about this much data (their size on disk)
CHUNK_BYTES = 256 * 1024 * 1024  # a table bigger than this is split into ranges of pages of about this size
# ... and at most this many tables: thousands of small tables (a schema per tenant) spread over several objects,
# so that every worker has some to dump and to load.
PART_TABLES = 250
WRITE_SIZE = 1024 * 1024
MASK64 = (1 << 64) - 1
TID_RANGE_SCANS = 140000  # PostgreSQL 14 reads a range of pages without a full scan


# glibc raises its mmap threshold (up to 32 MiB) each time a big block is freed, after which the data path's
# 8 MiB ranges and 1 MiB pieces come from the threads' heaps and stay there: a restore with jobs=2 peaked at
# ~610 MB instead of ~280 MB (bench/README.md). A fixed threshold keeps blocks of 4 MiB and more in mmap, which
# goes back to the system at free().
MMAP_THRESHOLD = 4 * 1024 * 1024
_M_MMAP_THRESHOLD = -3


def bound_memory():
    """Pin glibc's mmap threshold for this process (the data workers' memory stays ~ jobs x pieces in flight).
    Does nothing where there is no glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False


def apply_settings(conn):
    """SESSION_SETTINGS on conn, in one round trip."""
    calls = ", ".join("pg_catalog.set_config(%s, %s, false)" for setting in SESSION_SETTINGS)
    conn.execute(f"select {calls}", [item for setting in SESSION_SETTINGS for item in setting])


class Table:
    """A table whose rows the backup holds."""

    def __init__(self, schema, name, columns, size, pages):
        self.schema = schema
        self.name = name
        self.columns = list(columns)  # quoted column names, generated columns left out (as pg_dump does)
        self.size = int(size)
        self.pages = int(pages)

    @property
    def key(self):
        return f"{self.schema}.{self.name}"


def list_tables(conn, flavor):
    """The tables of the data set, in the conn's snapshot, biggest first: every ordinary table (partitions are
    tables of their own) that is not an extension's, but in the schemas and the tables the dump excludes; plus the
    migration history. (cron.job, an extension's table holding the app's jobs, travels in the index instead.)"""
    rows = conn.execute(
        """
        select n.nspname, c.relname,
               coalesce((select array_agg(quote_ident(a.attname) order by a.attnum) from pg_attribute a
                          where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped and a.attgenerated = ''),
                        '{}'),
               pg_relation_size(c.oid) + coalesce(pg_relation_size(nullif(c.reltoastrelid, 0)), 0),
               pg_relation_size(c.oid) / current_setting('block_size')::int
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where c.relkind = 'r'
           and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass and d.objid = c.oid
                            and d.deptype = 'e')
         order by 4 desc, 1, 2"""
    ).fetchall()
    tables = [
        Table(*row)
        for row in rows
        if dumpspec.table_in_data(row[0], row[1], flavor) or row[0] == dumpspec.MIGRATIONS_SCHEMA
    ]
    return tables


def plan_parts(tables, part_bytes=PART_BYTES, chunk_bytes=CHUNK_BYTES, split=True, part_tables=PART_TABLES):
    """The data objects to write: [[(table, (first_page, end_page) | None), ...], ...].

    A table bigger than chunk_bytes gets objects of its own, one per range of pages (the last range is open,
    so rows on pages added since the size was read are not missed); the others share objects of about
    part_bytes and at most part_tables tables, the biggest first, so that objects come out of similar size."""
    parts, small = [], []
    for table in tables:
        if split and table.size > chunk_bytes and table.pages > 1:
            count = -(-table.size // chunk_bytes)
            step = -(-table.pages // count)
            for start in range(0, table.pages, step):
                end = start + step if start + step < table.pages else None
                parts.append([(table, (start, end))])
        else:
            small.append(table)
    current, size = [], 0
    for table in small:
        if current and (size + table.size > part_bytes or len(current) >= part_tables):
            parts.append(current)
            current, size = [], 0
        current.append((table, None))
        size += table.size
    if current:
        parts.append(current)
    return parts


def _ident(table):
    return sql.SQL("{}.{}").format(sql.Identifier(table.schema), sql.Identifier(table.name))


def _columns(table):
    return sql.SQL(", ").join(sql.SQL(c) for c in table.columns)


def copy_out_query(table, pages=None):
    """COPY ... TO STDOUT of a table, or of a range of its pages (a TID range scan)."""
    if pages is None:
        return sql.SQL("COPY {} ({}) TO STDOUT").format(_ident(table), _columns(table))
    start, end = pages
    where = sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({start},0)"))
    if end is not None:
        where = sql.SQL("{} AND ctid < {}::tid").format(where, sql.Literal(f"({end},0)"))
    return sql.SQL("COPY (SELECT {} FROM ONLY {} WHERE {}) TO STDOUT").format(_columns(table), _ident(table), where)


def copy_in_query(schema, name, columns):
    return sql.SQL("COPY {}.{} ({}) FROM STDIN").format(
        sql.Identifier(schema), sql.Identifier(name), sql.SQL(", ").join(sql.SQL(c) for c in columns)
    )


class Digest:
    """The order-independent content digest of rows in COPY text form."""

    __slots__ = ("adler", "bytes", "crc", "rows")

    def __init__(self, rows=0, nbytes=0, crc=0, adler=0):
        self.rows, self.bytes, self.crc, self.adler = rows, nbytes, crc, adler

    def merge(self, other):
        return Digest(
            self.rows + other.rows,
            self.bytes + other.bytes,
            (self.crc + other.crc) & MASK64,
            (self.adler + other.adler) & MASK64,
        )

    def text(self):
        return f"{self.rows}:{self.bytes}:{self.crc:016x}:{self.adler:016x}"

    @classmethod
    def parse(cls, text):
        rows, nbytes, crc, adler = text.split(":")
        return cls(int(rows), int(nbytes), int(crc, 16), int(adler, 16))


def copy_rows(conn, query, write, digest):
    """Run a COPY ... TO STDOUT (query: a psycopg sql.Composable), folding each row into digest and handing the
    rows on in blocks of about 1 MiB.

    The server sends every row as a message of its own (the protocol says so of COPY OUT), so a message is a row.
    Rows are read straight from libpq (conn.pgconn) and folded into the digest a batch at a time with map(): per
    row that is one libpq call and a list append, where psycopg's Copy iterator runs a generator and a wait loop
    per row and holds the GIL that the other workers need (about 3x the client CPU on a big table)."""
    crc32, adler32 = zlib.crc32, zlib.adler32
    batch, size = [], 0

    def fold():
        digest.rows += len(batch)
        digest.bytes += size
        digest.crc = (digest.crc + sum(map(crc32, batch))) & MASK64
        digest.adler = (digest.adler + sum(map(adler32, batch))) & MASK64
        write(b"".join(batch))

    for row in _copy_out(conn, query.as_bytes(conn)):
        batch.append(row)
        size += len(row)
        if size >= WRITE_SIZE:
            fold()
            batch, size = [], 0
    if batch:
        fold()
    return digest


def _copy_out(conn, query):
    """The rows of a COPY ... TO STDOUT sent on conn's libpq connection (inside conn's transaction, if any).

    A failed query or COPY raises the server's error as psycopg would (a psycopg.Error); the connection is left
    idle (or in its transaction) afterwards, as psycopg expects it."""
    pgconn = conn.pgconn
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN)
    pgconn.send_query(query)
    result = _next_result(pgconn, poller)
    if result is None or result.status != pq.ExecStatus.COPY_OUT:
        _end_results(conn, poller, result)
    get = pgconn.get_copy_data
    while True:
        length, data = get(1)  # 1: never block inside libpq (it would hold the GIL); poll below instead
        if length > 0:
            yield data
        elif length == 0:
            poller.poll()
            pgconn.consume_input()
        else:  # -1: the COPY is over (-2, an error, raises in get_copy_data)
            break
    _end_results(conn, poller, _next_result(pgconn, poller), ok=pq.ExecStatus.COMMAND_OK)


def _next_result(pgconn, poller):
    if pgconn.flush():  # psycopg keeps libpq non-blocking: the query may not be sent at once
        writable = select.poll()
        writable.register(pgconn.socket, select.POLLOUT)
        while pgconn.flush():
            writable.poll()
    while True:
        pgconn.consume_input()
        if not pgconn.is_busy():
            return pgconn.get_result()
        poller.poll()


def _end_results(conn, poller, result, ok=None):
    """Read the remaining results (the connection is idle after); raise the server's error unless result is ok."""
    while _next_result(conn.pgconn, poller) is not None:
        pass
    if result is None or result.status != ok:
        if result is not None and result.status == pq.ExecStatus.FATAL_ERROR:
            raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
        status = result.status.name if result is not None else "no result"
        raise psycopg.OperationalError(f"unexpected result of a COPY TO STDOUT: {status}")


def plan_for(conn, tables):
    """plan_parts for the server behind conn (ranges of pages only where it scans them without a full scan)."""
    return plan_parts(tables, split=conn.info.server_version >= TID_RANGE_SCANS)


def table_digest(conn, schema, name, columns, pages=None):
    """The content digest of a table (or a range of its pages) in conn, computed the way the dump computes it."""
    table = Table(schema, name, columns, 0, 0)
    return copy_rows(conn, copy_out_query(table, pages), lambda _chunk: None, Digest())


class _Chunks:
    """Hands out the decompressed bytes of one object as they arrive from a producer thread (bounded queue)."""

    _END = object()

    def __init__(self, depth=8):
        self._queue = queue.Queue(maxsize=depth)
        self._pending = b""
        self.error = None
        self.done = False

    # producer side
    def put(self, chunk):
        if chunk:
            self._queue.put(chunk)

    def finish(self, error=None):
        self.error = error
        self._queue.put(self._END)

    # consumer side
    def read(self, limit):
        """Up to limit bytes; b"" at the end of the stream."""
        if not self._pending:
            item = self._queue.get()
            if item is self._END:
                self.done = True
                if self.error:
                    raise self.error
                return b""
            self._pending = item
        data, self._pending = self._pending[:limit], self._pending[limit:]
        return data

    def drain(self):
        """Wait for the producer's end (and its verdict on the object's digest)."""
        while not self.done:
            if self.read(WRITE_SIZE):
                raise DRError("the data object holds more bytes than its sections", step="restore data")


def load_object(conn, produce, sections, where, special=None):
    """Load one data object into conn's database: produce(write) streams the object's verified, decompressed bytes
    (on a thread of its own; it raises when the object's digest does not match); each section's bytes go to a
    COPY ... FROM STDIN of its table. Everything happens in one transaction, committed only after the producer
    has verified the whole object. special maps a table to a callable taking (conn, bytes) for the tables loaded
    another way (cron.job). Returns {table: rows loaded}."""
    chunks = _Chunks()

    def run():
        try:
            produce(chunks.put)
        except BaseException as exc:  # handed to the consumer, which raises it
            chunks.finish(exc)
        else:
            chunks.finish()

    producer = threading.Thread(target=run, name="data-stream", daemon=True)
    producer.start()
    loaded = {}
    try:
        with conn.transaction():
            for section in sections:
                remaining = int(section["length"])
                schema, name = section["schema"], section["table"]
                handler = (special or {}).get(f"{schema}.{name}")
                collected = bytearray() if handler else None
                if remaining and handler is None:
                    with conn.cursor().copy(copy_in_query(schema, name, section["columns"])) as copy:
                        remaining = _pump(chunks, remaining, copy.write)
                elif remaining:
                    remaining = _pump(chunks, remaining, collected.extend)
                if remaining:
                    raise DRError(
                        f"the data object ended {remaining} bytes before the end of table {schema}.{name}",
                        step="restore data",
                        subject=where,
                        hint="restore another backup (or its immutable copy)",
                    )
                if handler:
                    handler(conn, bytes(collected))
                loaded[f"{schema}.{name}"] = loaded.get(f"{schema}.{name}", 0) + int(section["rows"])
            chunks.drain()
    finally:
        producer.join(timeout=60)
    return loaded


def _pump(chunks, remaining, write):
    while remaining:
        data = chunks.read(min(remaining, WRITE_SIZE))
        if not data:
            break
        write(data)
        remaining -= len(data)
    return remaining


class Workers:
    """Run jobs on n threads, the first failure stopping the rest (their results are discarded). Setting
    stopped from outside also stops them before their next task (and tasks may watch it)."""

    def __init__(self, jobs):
        self.jobs = max(1, int(jobs))
        self.stopped = threading.Event()

    def run(self, tasks, work):
        """work(task) for every task; returns the results in task order or raises the first error."""
        pending = queue.Queue()
        for index, task in enumerate(tasks):
            pending.put((index, task))
        results, errors = {}, []
        stop = self.stopped

        def loop():
            while not stop.is_set():
                try:
                    index, task = pending.get_nowait()
                except queue.Empty:
                    return
                try:
                    results[index] = work(task)
                except BaseException as exc:  # the first error wins; the others stop at their next task
                    errors.append(exc)
                    stop.set()
                    return

        threads = [threading.Thread(target=loop, name=f"worker-{i}", daemon=True) for i in range(self.jobs)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.duration = time.monotonic() - started
        if errors:
            raise errors[0]
        if stop.is_set():
            raise DRError("stopped before every task had run", step="workers")
        return [results[i] for i in range(len(results))]

"""What runs inside the databases: the platform bootstrap, the sample app's migrations, seeds, storage objects."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

from botocore.exceptions import ClientError
from psycopg import sql

from . import pg, s3
from .common import SandboxError, say, timed
from .state import SQL_DIR

MIGRATION_NAME = re.compile(r"^(\d{14})_(.+)\.sql$")
DEMO_EVENTS = 20000
BATCH_ROWS = 25000
PROGRESS_EVERY = 5
MB = 1024 * 1024
# Files of the app's Storage bucket; their rows go to storage.objects of production.
STORAGE_FILES = {
    "public/welcome.md": ("text/markdown", b"# Welcome\n\nSessions, participants and events of the demo tenants.\n"),
    "avatars/acme/user01.svg": ("image/svg+xml", b'<svg xmlns="http://www.w3.org/2000/svg"><rect width="8"/></svg>\n'),
    "exports/globex/attendance.csv": ("text/csv", b"session,user,joined_at\nworkshop,user02,2024-01-05T10:00:00Z\n"),
}


# Run in the cron database only (pg_cron lives in the database that cron.database_name names).
CRON_FILE = "07_cron.sql"
# A database on staging made like a project's, without sessions on it: the template of restores into a new
# database (restore_mode new_database) and of throwaway proofs; `postgres` itself is always in use.
PLATFORM_TEMPLATE = "platform_template"


def platform_files(with_cron: bool) -> list[Path]:
    files = sorted(SQL_DIR.glob("[0-9][0-9]_*.sql"))
    return [f for f in files if with_cron or f.name != CRON_FILE]


def apply_files(conn, files: list[Path]) -> None:
    for path in files:
        with conn.transaction():
            conn.execute(path.read_text())


def bootstrap(name: str, target: dict) -> None:
    """Create the platform roles, schemas, tables and grants of a fresh Supabase project (idempotent), as the
    platform's superuser; then give the login roles their passwords. Staging also gets the platform template."""
    with timed(f"postgres {name}: platform bootstrap") as info, pg.connect(target) as conn:
        files = platform_files(with_cron=True)
        apply_files(conn, files)
        conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(target["password"])))
        for login, password in target["platform_passwords"].items():
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(login), sql.Literal(password)))
        conn.commit()
        info["outcome"] = f"{len(files)} SQL files applied"
    if name == "staging":
        ensure_platform_template(name, target)


def ensure_platform_template(name: str, target: dict) -> None:
    """The platform template database (made once): the platform bootstrap without pg_cron, cloneable by postgres."""
    with pg.connect(target, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PLATFORM_TEMPLATE,)).fetchone():
            return
        with timed(f"postgres {name}: {PLATFORM_TEMPLATE}") as info:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(PLATFORM_TEMPLATE)))
            with pg.connect(target, dbname=PLATFORM_TEMPLATE) as tconn:
                apply_files(tconn, platform_files(with_cron=False))
            conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE true").format(sql.Identifier(PLATFORM_TEMPLATE)))
            info["outcome"] = "made (the platform without pg_cron)"


def migration_files(folder: Path) -> list[tuple[str, str, Path]]:
    """(version, name, path) of every migration file, in version order."""
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = MIGRATION_NAME.match(path.name)
        if not match:
            raise SandboxError(f"migration file name is not <14 digits>_<name>.sql: {path}")
        found.append((match[1], match[2], path))
    return found


def split_statements(text: str) -> list[str]:
    """The statements recorded with a migration: a naive split on `;` at line ends, as the history needs no more."""
    return [part.strip() for part in re.split(r";\s*\n", text) if part.strip()]


def apply_migrations(name: str, target: dict, folder: Path) -> None:
    """Apply the migrations not yet recorded, each file in one transaction, recording it like the Supabase CLI."""
    # As postgres, not a superuser: a hosted project's migrations run as that role.
    with timed(f"postgres {name}: migrations") as info, pg.connect(target, as_admin=False) as conn:
        done = {row[0] for row in conn.execute("SELECT version FROM supabase_migrations.schema_migrations")}
        pending = [m for m in migration_files(folder) if m[0] not in done]
        for version, label, path in pending:
            text = path.read_text()
            with conn.transaction():
                conn.execute(text)
                conn.execute(
                    "INSERT INTO supabase_migrations.schema_migrations (version, name, statements) VALUES (%s, %s, %s)",
                    (version, label, split_statements(text)),
                )
        info["outcome"] = f"{len(pending)} applied, {len(done)} already recorded"


def ensure_demo_data(state: dict) -> None:
    """On an empty production app: tenants, users, sessions, participants, some events and storage objects."""
    target = state["production"]
    with pg.connect(target, as_admin=False) as conn:
        if conn.execute("SELECT count(*) FROM public.tenants").fetchone()[0]:
            say("postgres production: demo data present")
            return
    with timed("postgres production: demo data") as info:
        insert_demo_data(target, DEMO_EVENTS)
        with pg.connect(target, as_admin=False) as conn:
            size = _database_size(conn)
        info["outcome"] = f"3 tenants, 30 users, {DEMO_EVENTS} events, database {size / MB:.0f} MB"
    ensure_storage_objects(state)


def insert_demo_data(target: dict, events: int) -> None:
    """The demo tenants, users, sessions and participants and `events` events, in one transaction; then ANALYZE."""
    with pg.connect(target, as_admin=False) as conn:
        with conn.transaction():
            conn.execute((SQL_DIR / "seed-demo.sql").read_text())
            _insert_events(conn, events)
        conn.execute("ANALYZE")


def ensure_storage_objects(state: dict) -> None:
    """Put the demo files in the storage bucket and their rows in storage.objects (both idempotently)."""
    bucket = state["s3"]["buckets"]["storage"]
    client = s3.client(state)
    with pg.connect(state["production"], as_admin=False) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO storage.buckets (id, name, public) VALUES (%s, %s, false) ON CONFLICT DO NOTHING",
            (bucket, bucket),
        )
        for key, (mimetype, body) in STORAGE_FILES.items():
            try:
                client.head_object(Bucket=bucket, Key=key)
            except ClientError:
                client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=mimetype)
            metadata = {
                "eTag": f'"{hashlib.md5(body).hexdigest()}"',  # noqa: S324 - the S3 ETag, not security
                "size": len(body),
                "mimetype": mimetype,
                "cacheControl": "max-age=3600",
                "contentLength": len(body),
                "httpStatusCode": 200,
            }
            conn.execute(
                "INSERT INTO storage.objects (bucket_id, name, metadata) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (bucket, key, json.dumps(metadata)),
            )


def _insert_events(conn, rows: int) -> None:
    conn.execute((SQL_DIR / "events-batch.sql").read_text(), {"rows": rows})


def seed_events(name: str, target: dict, *, rows: int | None = None, mb: float | None = None) -> dict:
    """Add `rows` events, or add events until the database has grown by `mb` MB; then ANALYZE.

    Batches are generated on the server, one committed transaction each, by one connection per CPU
    (at most 4) so that seeding gigabytes takes minutes; a progress line comes every few seconds.
    """
    if (rows is None) == (mb is None):
        raise SandboxError("seed needs exactly one of rows or mb")
    if (rows if rows is not None else mb) <= 0:
        raise SandboxError("seed needs a positive number of rows or MB")
    with pg.connect(target, as_admin=False, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('public.events')").fetchone()[0] is None:
            raise SandboxError(f"{name} has no public.events table (the sample app lives in production)")
        if not conn.execute("SELECT exists (SELECT FROM public.participants)").fetchone()[0]:
            raise SandboxError(f"{name} has no participants to attach events to")
        start_size = _database_size(conn)
    lock = threading.Lock()
    counts = {"claimed": 0, "added": 0}
    done = threading.Event()

    def claim() -> int:
        """The size of the next batch, 0 when the goal is reached."""
        with lock:
            if done.is_set():
                return 0
            batch = BATCH_ROWS if rows is None else min(BATCH_ROWS, rows - counts["claimed"])
            counts["claimed"] += batch
            return batch

    def work() -> None:
        with pg.connect(target, as_admin=False, autocommit=True) as conn:
            # Commits need not wait for their WAL flush here: a seed lost in a crash is simply run again.
            conn.execute("SET synchronous_commit = off")
            while batch := claim():
                _insert_events(conn, batch)
                with lock:
                    counts["added"] += batch
                if mb is not None and _database_size(conn) - start_size >= mb * MB:
                    done.set()

    goal = f"{rows} rows" if rows is not None else f"+{mb:g} MB"
    start = time.monotonic()
    workers = max(1, min(4, os.cpu_count() or 1))
    with pg.connect(target, as_admin=False, autocommit=True) as conn, ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(work) for _unused in range(workers)]
        try:
            while wait(futures, timeout=PROGRESS_EVERY, return_when=FIRST_EXCEPTION).not_done:
                grown, elapsed = _database_size(conn) - start_size, time.monotonic() - start
                say(
                    f"seed {name}: {counts['added']} rows, +{grown / MB:.0f} MB "
                    f"({grown / MB / elapsed:.1f} MB/s) toward {goal}"
                )
                if any(f.done() and f.exception() for f in futures):
                    break
        finally:
            done.set()
        for future in futures:
            future.result()
        conn.execute("ANALYZE public.events")
        elapsed = time.monotonic() - start
        size = _database_size(conn)
    grown = size - start_size
    say(
        f"seed {name}: added {counts['added']} events, +{grown / MB:.0f} MB in {elapsed:.1f} s "
        f"({grown / MB / max(elapsed, 0.001):.1f} MB/s); database {size / MB:.0f} MB"
    )
    return {"rows": counts["added"], "bytes": grown, "seconds": round(elapsed, 1), "size": size}


def _database_size(conn) -> int:
    return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]

"""Shapes benchmark: backup and restore of four shapes of database, each against the raw baselines in one run.

Shapes (each in a database of its own on the sandbox's production cluster):
  big      one big table: the production database grown with realistic public.events rows (today's seed)
  many     --tables tables (default 200) of about size/tables each (default 2 GiB / 200 = ~10 MB)
  catalog  --catalog-tables small tables (default 5,000) in --catalog-schemas schemas (default 50)
  wide     wide rows: TOASTed jsonb documents and incompressible bytea
For each shape, interleaved rounds of:
  backup   raw  pg_dump -Fc -Z0 > /dev/null
           ours logical_backup.run(...) to S3
  restore  raw  createdb -T template0 + pg_restore -j N of a local pg_dump -Fc (as the platform's superuser)
           ours logical_restore.run(...), new_database mode from the platform template (as postgres)
plus, on `many`, our restore with jobs=1, and on `catalog`, the catalog fingerprint's share of the backup.
Each job runs as a child process (bench/run.py's measure(): wall time, CPU, peak RSS of the process tree).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from psycopg import sql

# bench/run.py puts the engine (the collection's module_utils) and scripts/ on the path.
from restore import conninfo_for, env_for
from run import (
    DEFAULT_SANDBOX,
    GIB,
    MIB,
    REPO,
    clear_prefix,
    fmt_range,
    loadavg,
    log,
    machine_facts,
    measure,
    s3_params,
    summarize,
    target_for,
)

import sandboxlib  # after run, which puts scripts/ on the path
from ansible_collections.pgdr.supabase.plugins.module_utils import fingerprint, logical_restore, pg, verify
from sandboxlib import app as sandbox_app
from sandboxlib import extras as sandbox_extras
from sandboxlib import pg as sandbox_pg

BENCH = Path(__file__).resolve().parent
BACKUP_CHILD = BENCH / "child.py"
RESTORE_CHILD = BENCH / "restore_child.py"
SHAPES = ("big", "many", "catalog", "wide")
DB_PREFIX = "bench_shape_"
RESTORED_PREFIX = "bench_shapes_"
S3_PREFIX = "bench-shapes"
SOURCE = "bench"
TEMPLATE = sandbox_app.PLATFORM_TEMPLATE
SKIP_EXTENSIONS = ["pg_cron"]  # the platform template cannot have it (pg_cron lives in the postgres database)
# Bytes a row of `many` takes on disk with its indexes (measured: about 190 heap + 60 index); a table's row
# count is its share of the size over this, so tables come out near their goal.
MANY_ROW_BYTES = 250
CATALOG_ROWS = 20  # rows of each small table of `catalog`
WIDE_ROW_BYTES = 14 * 1024  # a `wide` row: about 4 KiB of jsonb (compressed by TOAST) and 6-14 KiB of bytea
SEED_WORKERS = 2
TARGETS = (
    # (name, shapes, limit, unit)
    ("backup / raw dump", SHAPES, 1.4, "x"),
    ("backup peak tree RSS", SHAPES, 300.0, "MB"),
    ("restore / pg_restore -j", SHAPES, 1.15, "x"),
    ("restore / pg_restore -j (many)", ("many",), 1.0, "x"),
    ("fingerprint share of backup (catalog)", ("catalog",), 0.10, "share"),
)


# ---------------------------------------------------------------------------------------------- seeding plans


def database_of(shape: str) -> str:
    return DB_PREFIX + shape


def many_statements(tables: int, total_bytes: int) -> list[str]:
    """The SQL that makes shape `many`: `tables` tables in public of about total_bytes / tables each."""
    rows = max(1, total_bytes // tables // MANY_ROW_BYTES)
    out = []
    for i in range(1, tables + 1):
        name = sql.Identifier("public", f"items_{i:04d}").as_string(None)
        out.append(  # only integers and quoted names go in these statements
            f"CREATE TABLE {name} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, account uuid NOT NULL, "  # noqa: S608
            "created_at timestamptz NOT NULL, status text NOT NULL, amount numeric(12,2), note text, attrs jsonb);\n"
            f"INSERT INTO {name} (account, created_at, status, amount, note, attrs) "
            "SELECT extensions.uuid_generate_v4(), now() - g * interval '37 seconds', "
            "(ARRAY['open','paid','void','refunded'])[1 + g % 4], (g % 100000) / 100.0, "
            "concat_ws(' ', md5(g::text), CASE WHEN g % 3 = 0 THEN md5((g * 7)::text) END), "
            "jsonb_build_object('plan', (ARRAY['free','pro','team'])[1 + g % 3], 'seats', g % 50, "
            f"'ref', substr(md5((g * 13)::text), 1, 12)) FROM generate_series(1, {rows}) g;\n"
            f"CREATE INDEX ON {name} (account, created_at);"
        )
    return out


def catalog_statements(tables: int, schemas: int) -> list[str]:
    """The SQL that makes shape `catalog`: one statement list per schema, `tables` small tables spread over
    `schemas` schemas (schema-per-tenant): each with a primary key, a unique index and CATALOG_ROWS rows."""
    out = []
    per_schema = [tables // schemas + (1 if s < tables % schemas else 0) for s in range(schemas)]
    for s, count in enumerate(per_schema, 1):
        schema = sql.Identifier(f"tenant_{s:03d}").as_string(None)
        parts = [f"CREATE SCHEMA {schema};"]
        for t in range(1, count + 1):
            name = f"{schema}.{sql.Identifier(f't_{t:04d}').as_string(None)}"
            parts.append(
                f"CREATE TABLE {name} (id integer PRIMARY KEY, slug text NOT NULL UNIQUE, created_at timestamptz "  # noqa: S608
                "NOT NULL DEFAULT now(), data jsonb);\n"
                f"INSERT INTO {name} (id, slug, data) SELECT g, 'item-' || g || '-' || substr(md5(g::text), 1, 8), "
                f"jsonb_build_object('n', g, 'tag', md5(g::text)) FROM generate_series(1, {CATALOG_ROWS}) g;"
            )
        out.append("\n".join(parts))
    return out


def wide_statements(total_bytes: int, batches: int = 8) -> list[str]:
    """The inserts that fill shape `wide` (public.documents, WIDE_SETUP before them and WIDE_FINISH after):
    TOASTed jsonb and bytea, in `batches` statements that may run at once."""
    rows = max(batches, total_bytes // WIDE_ROW_BYTES)
    per = -(-rows // batches)
    out = []
    for b in range(batches):
        first, last = b * per + 1, min(rows, (b + 1) * per)
        if first > last:
            break
        out.append(
            "INSERT INTO public.documents SELECT g, extensions.uuid_generate_v4(), 'document ' || g, "  # noqa: S608
            "(SELECT jsonb_build_object('sections', jsonb_agg(jsonb_build_object('n', s, 'text', "
            "md5((g * 1000 + s)::text) || ' ' || md5((g * 1000 + s + 1)::text), 'score', s * g % 97)), "
            "'version', g % 7) FROM generate_series(1, 40) s), "
            "extensions.gen_random_bytes(1024) || (SELECT string_agg(extensions.gen_random_bytes(1024), ''::bytea) "
            "FROM generate_series(1, 5 + (g % 9)) WHERE g > 0), now() - g * interval '1 minute' "
            f"FROM generate_series({first}, {last}) g;"
        )
    return out


WIDE_SETUP = (
    "CREATE TABLE public.documents (id bigint PRIMARY KEY, owner uuid NOT NULL, title text NOT NULL, "
    "doc jsonb NOT NULL, blob bytea NOT NULL, created_at timestamptz NOT NULL);"
)
WIDE_FINISH = "CREATE INDEX ON public.documents (owner, created_at);"


def seed_plan(shape: str, args) -> dict:
    """What seeding a shape runs: {"setup": [...], "statements": [...], "finish": [...], "parallel": bool,
    "params": {...}}: setup one after the other, then statements (on SEED_WORKERS sessions when parallel), then
    finish. big uses the sandbox's own seed (sandboxlib.seed) and has no statements."""
    total = int(args.size_gb * GIB)
    if shape == "big":
        return {"statements": [], "parallel": False, "params": {"size_gb": args.size_gb}}
    if shape == "many":
        return {
            "statements": many_statements(args.tables, total),
            "parallel": True,
            "params": {"size_gb": args.size_gb, "tables": args.tables},
        }
    if shape == "catalog":
        return {
            "statements": catalog_statements(args.catalog_tables, args.catalog_schemas),
            "parallel": True,
            "params": {"tables": args.catalog_tables, "schemas": args.catalog_schemas},
        }
    if shape == "wide":
        return {
            "setup": [WIDE_SETUP],
            "statements": wide_statements(total),
            "finish": [WIDE_FINISH],
            "parallel": True,
            "params": {"size_gb": args.size_gb},
        }
    raise ValueError(f"unknown shape {shape!r}")


# ---------------------------------------------------------------------------------------------- lock table


def lock_settings(state: dict) -> dict:
    """Each cluster's lock table: max_locks_per_transaction x (max_connections + max_prepared_transactions)
    locks on objects for all sessions together. pg_dump locks every table it dumps; a transaction that creates or
    fills thousands of tables (shape catalog) holds a lock on each, so the defaults (64 x 50 here) run out."""
    out = {}
    for name in ("production", "staging"):
        with sandbox_pg.connect(state[name], autocommit=True) as conn:
            row = conn.execute(
                "select current_setting('max_locks_per_transaction')::int, current_setting('max_connections')::int,"
                " current_setting('max_prepared_transactions')::int"
            ).fetchone()
        out[name] = {"max_locks_per_transaction": row[0], "max_connections": row[1], "capacity": row[0] * sum(row[1:])}
    return out


def set_max_locks(root: Path, state: dict, value: int) -> dict:
    """Set max_locks_per_transaction on both clusters of the bench sandbox (ALTER SYSTEM as the platform's
    superuser) and restart the sandbox when it changed. Only for a sandbox of the bench's own."""
    current = lock_settings(state)
    if all(c["max_locks_per_transaction"] == value for c in current.values()):
        return current
    for name in ("production", "staging"):
        with sandbox_pg.connect(state[name], autocommit=True) as conn:
            conn.execute(sql.SQL("alter system set max_locks_per_transaction = {}").format(sql.Literal(value)))
    log(f"max_locks_per_transaction = {value} on both clusters: restarting them ({root})")
    with contextlib.redirect_stdout(sys.stderr):
        # PostgreSQL only (S3 keeps running): the platform sessions first, as sandboxlib.down stops them.
        sandbox_extras.stop_sessions(state)
        for name in ("production", "staging"):
            sandbox_pg.stop(name, state[name])
            sandbox_pg.start(name, state[name])
        sandbox_extras.start_sessions(state)
    return lock_settings(sandboxlib.status(root))


# ---------------------------------------------------------------------------------------------- the bench


class ShapesBench:
    def __init__(self, args, state: dict):
        self.args = args
        self.state = state
        self.root = Path(state["dir"])
        self.work = self.root / "bench-shapes-work"
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(mode=0o700)
        self.log_file = self.work / "children.log"
        self.prod = state["production"]
        self.staging_dsn = state["staging"]["dsn"]
        self.staging_admin_dsn = state["staging"]["admin_dsn"]
        with pg.connect(self.staging_dsn) as conn:
            self.facts = pg.server_facts(conn)
        version = self.facts["server_version_num"]
        self.bin = {name: pg.find_binary(name, None, version) for name in ("pg_dump", "pg_restore", "createdb")}
        self.python = sys.executable
        self.counter = 0
        self.params = s3_params(state, False)
        self.target = target_for(self.params)

    # -------------------------------------------------------------------------------------- seeding

    def source_dsn(self, shape: str) -> str:
        return self.prod["dsn"] if shape == "big" else pg.with_database(self.prod["dsn"], database_of(shape))

    def database_name(self, shape: str) -> str:
        return self.prod["dbname"] if shape == "big" else database_of(shape)

    def seed(self, shape: str) -> dict:
        """Make the shape's database unless it is there with the same parameters (a marker comment says so)."""
        plan = seed_plan(shape, self.args)
        started = time.monotonic()
        if shape == "big":
            with contextlib.redirect_stdout(sys.stderr):
                goal = int(self.args.size_gb * GIB)
                for _unused in range(5):
                    size = self.db_size(shape)
                    if size >= goal:
                        break
                    log(f"seeding big: {size / MIB:.0f} MB, {(goal - size) / MIB:.0f} MB to go")
                    sandboxlib.seed(self.root, mb=(goal - size) / MIB + 8)
            return {"seeded": time.monotonic() - started > 1, "seconds": round(time.monotonic() - started, 1)}
        name = database_of(shape)
        marker = json.dumps(plan["params"], sort_keys=True)
        with sandbox_pg.connect(self.prod, autocommit=True) as admin:
            row = admin.execute(
                "select shobj_description(oid, 'pg_database') from pg_database where datname = %s", (name,)
            ).fetchone()
            if row and row[0] == marker:
                return {"seeded": False, "seconds": 0.0}
            log(f"seeding {shape} into {name} ({marker})")
            admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
            admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        # The platform (without pg_cron), as the platform template has it; the app's objects are postgres's.
        with sandbox_pg.connect(self.prod, dbname=name) as conn:
            sandbox_app._apply(conn, sandbox_app._platform_files(with_cron=False))
            conn.execute(sql.SQL("grant create on database {} to postgres").format(sql.Identifier(name)))
            conn.commit()

        def work(statement: str) -> None:
            with sandbox_pg.connect(self.prod, as_admin=False, dbname=name, autocommit=True) as conn:
                conn.execute("SET synchronous_commit = off")
                conn.execute(statement)

        for statement in plan.get("setup", []):
            work(statement)
        statements = plan["statements"]
        with ThreadPoolExecutor(SEED_WORKERS if plan["parallel"] else 1) as pool:
            for done, _unused in enumerate(pool.map(work, statements), 1):
                if done % max(1, len(statements) // 5) == 0:
                    log(f"  {shape}: {done}/{len(statements)} statements, {time.monotonic() - started:.0f} s")
        for statement in plan.get("finish", []):
            work(statement)
        with sandbox_pg.connect(self.prod, dbname=name, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            conn.execute(sql.SQL("comment on database {} is {}").format(sql.Identifier(name), sql.Literal(marker)))
            conn.execute("CHECKPOINT")
        return {"seeded": True, "seconds": round(time.monotonic() - started, 1)}

    def db_size(self, shape: str) -> int:
        with pg.connect(self.source_dsn(shape)) as conn:
            return conn.execute("select pg_database_size(current_database())").fetchone()[0]

    def shape_facts(self, shape: str) -> dict:
        with pg.connect(self.source_dsn(shape)) as conn:
            row = conn.execute(
                "select pg_database_size(current_database()), count(*),"
                " coalesce(sum(pg_total_relation_size(c.oid)), 0), count(distinct n.nspname)"
                " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
                " where c.relkind = 'r' and (n.nspname = 'public' or n.nspname like 'tenant\\_%')"
            ).fetchone()
            relations = conn.execute("select count(*) from pg_class").fetchone()[0]
        return {
            "database_bytes": row[0],
            "app_tables": row[1],
            "app_bytes": int(row[2]),
            "app_schemas": row[3],
            "pg_class_rows": relations,
        }

    # -------------------------------------------------------------------------------------- backup jobs

    def raw_dump(self, shape: str) -> dict:
        """pg_dump -Fc -Z0 of the shape's database to /dev/null (stdout), as postgres like our backup."""
        conninfo = conninfo_for(self.prod["dsn"], self.database_name(shape))
        argv = [self.bin["pg_dump"], "-Fc", "-Z0", f"--dbname={conninfo}"]
        return measure(argv, env=env_for(self.prod["dsn"]), log_file=self.log_file, to_null=True)

    def _child(self, child: Path, cfg: dict) -> dict:
        result_file = self.work / "child-result.json"
        result_file.unlink(missing_ok=True)
        cfg = dict(cfg, result_file=str(result_file))
        result = measure(
            [self.python, str(child)],
            stdin_data=json.dumps(cfg).encode(),
            env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
            log_file=self.log_file,
        )
        if result["exit_code"] == 0:
            result["child"] = json.loads(result_file.read_text())
        return result

    def backup(self, shape: str, keep: bool = False) -> dict:
        """Our backup of the shape (child.py's engine job); keep=True leaves it in S3 for the restores."""
        self.counter += 1
        prefix = f"{S3_PREFIX}-{shape}-{self.counter}"
        clear_prefix(self.target, prefix)
        result = self._child(
            BACKUP_CHILD,
            {
                "job": "engine",
                "dsn": self.source_dsn(shape),
                "source": SOURCE,
                "prefix": prefix,
                "s3": self.params,
                "options": {"jobs": self.args.jobs},
            },
        )
        result["prefix"] = prefix
        if result["exit_code"] == 0 and keep:
            result["manifest"] = self.target.get_json(result["child"]["manifest_key"], step="read manifest")
        else:
            clear_prefix(self.target, prefix)
        return result

    # -------------------------------------------------------------------------------------- restore jobs

    def drop(self, database: str) -> None:
        with pg.connect(self.staging_admin_dsn) as conn:
            conn.autocommit = True
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(database)))
            conn.execute("CHECKPOINT")  # no run pays for writing out the previous run's pages

    def drop_leftovers(self) -> list[str]:
        with pg.connect(self.staging_admin_dsn) as conn:
            names = [
                r[0]
                for r in conn.execute(
                    "select datname from pg_database where datname like %s",
                    (RESTORED_PREFIX.replace("_", r"\_") + "%",),
                )
            ]
        for name in names:
            self.drop(name)
        return names

    def baseline_dump(self, shape: str) -> tuple[Path, dict]:
        """The local pg_dump -Fc (gzip) of the whole shape database the baseline restores; unmeasured."""
        path = self.work / f"{shape}.dump"
        conninfo = conninfo_for(self.prod["dsn"], self.database_name(shape))
        result = measure(
            [self.bin["pg_dump"], "-Fc", "-f", str(path), f"--dbname={conninfo}"],
            env=env_for(self.prod["dsn"]),
            log_file=self.log_file,
        )
        if result["exit_code"] != 0:
            raise SystemExit(f"bench: the baseline pg_dump of {shape} failed; see {self.log_file}")
        # pg_cron cannot be created outside the postgres database: the baseline leaves out its entries (the
        # extension, its schema's objects and their grants), as our restore skips it (SKIP_EXTENSIONS).
        listing = subprocess.run(
            [self.bin["pg_restore"], "-l", str(path)], check=True, capture_output=True, text=True
        ).stdout.splitlines(keepends=True)
        kept = [line for line in listing if not re.search(r"\b(pg_cron|cron)\b", line)]
        list_file = self.work / f"{shape}.list"
        list_file.write_text("".join(kept))
        return path, {"wall_s": result["wall_s"], "bytes": path.stat().st_size, "left_out": len(listing) - len(kept)}

    def raw_restore(self, dump: Path) -> dict:
        """createdb -T template0 + pg_restore -j N of the local dump, as the platform's superuser (a full dump
        holds the platform's schemas, which only it may own)."""
        self.counter += 1
        database = f"{RESTORED_PREFIX}raw_{self.counter}"
        script = '"$1" --maintenance-db="$2" --template=template0 "$3" && exec "$4" --jobs="$5" --dbname="$6" "$7" "$8"'
        argv = [
            "/bin/sh",
            "-c",
            script,
            "baseline",
            self.bin["createdb"],
            conninfo_for(self.staging_admin_dsn, "postgres"),
            database,
            self.bin["pg_restore"],
            str(self.args.jobs),
            conninfo_for(self.staging_admin_dsn, database),
            f"--use-list={dump.with_suffix('.list')}",
            str(dump),
        ]
        try:
            return measure(argv, env=env_for(self.staging_admin_dsn), log_file=self.log_file)
        finally:
            self.drop(database)

    def restore(self, manifest: dict, jobs: int, check: bool = False) -> dict:
        """Our restore into a new database on staging (restore_child.py), as postgres, from the platform
        template; check=True also runs the full content check on the restored database (unmeasured)."""
        self.counter += 1
        database = f"{RESTORED_PREFIX}pgdr_{self.counter}"
        manifest_file = self.work / "manifest.json"
        manifest_file.write_text(json.dumps(manifest))
        try:
            result = self._child(
                RESTORE_CHILD,
                {
                    "dsn": self.staging_dsn,
                    "manifest_file": str(manifest_file),
                    "s3": self.params,
                    "database": database,
                    "jobs": jobs,
                    "workdir": str(self.work),
                    "template": TEMPLATE,
                    "skip_extensions": SKIP_EXTENSIONS,
                },
            )
            if result["exit_code"] == 0 and check:
                index = logical_restore.read_index(self.target, manifest)
                content = verify.check_content(pg.with_database(self.staging_dsn, database), index, jobs=jobs)
                result["content_check"] = {k: content[k] for k in ("ok", "summary", "duration_s") if k in content} | {
                    "differences": content.get("details", {}).get("differences", [])[:5]
                }
            return result
        finally:
            self.drop(database)

    # -------------------------------------------------------------------------------------- fingerprint

    def fingerprint_alone(self, shape: str) -> float:
        """Seconds fingerprint.capture takes on the shape's database by itself (as the backup calls it)."""
        with pg.connect(self.source_dsn(shape)) as conn:
            started = time.monotonic()
            flavor = pg.server_facts(conn)["flavor"]
            fingerprint.capture(conn, flavor, fingerprint.Scope(conn, flavor))
            return time.monotonic() - started

    # -------------------------------------------------------------------------------------- one shape

    def run_shape(self, shape: str) -> dict:
        args = self.args
        out = {"shape": shape, "seed": self.seed(shape), "facts": self.shape_facts(shape)}
        log(f"{shape}: {out['facts']['app_tables']} app tables, database {out['facts']['database_bytes'] / MIB:.0f} MB")
        warm = self.raw_dump(shape)  # fills the page cache
        if warm["exit_code"] != 0:
            raise SystemExit(f"bench: pg_dump of {shape} failed; see {self.log_file}")
        samples = {"backup_raw": [], "backup_pgdr": [], "restore_raw": [], "restore_pgdr": [], "restore_pgdr_j1": []}
        manifest = None
        for i in range(1, args.repeat + 1):
            for name in ("backup_raw", "backup_pgdr"):
                result = self.raw_dump(shape) if name == "backup_raw" else self.backup(shape, keep=i == args.repeat)
                if result["exit_code"] != 0:
                    raise SystemExit(f"bench: {shape} {name} failed; see {self.log_file}")
                result["round"] = i
                manifest = result.pop("manifest", manifest)
                samples[name].append(result)
                log(
                    f"  {shape} {name} {i}/{args.repeat}: {result['wall_s']:.2f} s, {result['peak_tree_rss_mb']:.0f} MB"
                )
        out["backup_prefix"] = samples["backup_pgdr"][-1]["prefix"]
        out["fingerprint_alone_s"] = [round(self.fingerprint_alone(shape), 3) for _unused in range(args.repeat)]
        dump, out["baseline_dump"] = self.baseline_dump(shape)
        try:
            names = ["restore_raw", "restore_pgdr"] + (["restore_pgdr_j1"] if shape == "many" and args.scaling else [])
            for i in range(1, args.repeat + 1):
                for name in names:
                    if name == "restore_raw":
                        result = self.raw_restore(dump)
                    else:
                        jobs = 1 if name == "restore_pgdr_j1" else args.jobs
                        result = self.restore(manifest, jobs, check=name == "restore_pgdr" and i == 1)
                    if result["exit_code"] != 0:
                        raise SystemExit(f"bench: {shape} {name} failed; see {self.log_file}")
                    result["round"] = i
                    samples[name].append(result)
                    log(
                        f"  {shape} {name} {i}/{args.repeat}: {result['wall_s']:.2f} s, "
                        f"{result['peak_tree_rss_mb']:.0f} MB"
                    )
        finally:
            dump.unlink(missing_ok=True)
            dump.with_suffix(".list").unlink(missing_ok=True)
            clear_prefix(self.target, out["backup_prefix"])
        out["manifest"] = {
            "objects": [
                {k: o.get(k) for k in ("name", "kind", "size", "raw_size", "tables", "duration_s")}
                for o in manifest["objects"]
            ],
            "timings": manifest.get("timings"),
            "data": manifest.get("data"),
        }
        out["samples"] = {k: v for k, v in samples.items() if v}
        out["summary"] = {k: summarize(v) for k, v in out["samples"].items()}
        out["derived"] = derived(out)
        return out


# ---------------------------------------------------------------------------------------------- report


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def derived(out: dict) -> dict:
    """Ratios, the fingerprint's share and per-stage throughputs of one shape."""
    s = out["summary"]
    backups = out["samples"]["backup_pgdr"]

    def timing(runs, key):
        return med([(r.get("child") or {}).get("timings", {}).get(key) for r in runs])

    data_raw = (out["manifest"]["data"] or {}).get("raw_size") or 0
    d = {
        "backup_ratio": s["backup_pgdr"]["wall_s"]["median"] / s["backup_raw"]["wall_s"]["median"],
        "backup_peak_rss_mb": s["backup_pgdr"]["peak_tree_rss_mb"]["max"],
        "restore_ratio": s["restore_pgdr"]["wall_s"]["median"] / s["restore_raw"]["wall_s"]["median"],
        "restore_peak_rss_mb": s["restore_pgdr"]["peak_tree_rss_mb"]["max"],
        "raw_restore_peak_rss_mb": s["restore_raw"]["peak_tree_rss_mb"]["max"],
        "backup_snapshot_s": timing(backups, "snapshot"),
        "backup_dump_data_s": timing(backups, "dump_data"),
        "backup_inner_s": med([r["child"]["inner_s"] for r in backups]),
        "fingerprint_alone_s": med(out["fingerprint_alone_s"]),
        "data_raw_bytes": data_raw,
    }
    restores = out["samples"]["restore_pgdr"]
    # run() alone, without starting Python and importing boto3/psycopg (seconds on a loaded machine)
    d["backup_inner_ratio"] = d["backup_inner_s"] / s["backup_raw"]["wall_s"]["median"]
    d["restore_inner_s"] = med([r["child"]["inner_s"] for r in restores])
    d["restore_inner_ratio"] = d["restore_inner_s"] / s["restore_raw"]["wall_s"]["median"]
    d["fingerprint_share_snapshot"] = d["backup_snapshot_s"] / s["backup_pgdr"]["wall_s"]["median"]
    d["fingerprint_share_alone"] = d["fingerprint_alone_s"] / s["backup_pgdr"]["wall_s"]["median"]
    d["backup_data_mb_s"] = data_raw / MIB / d["backup_dump_data_s"] if d["backup_dump_data_s"] else None
    for name in ("restore_pgdr", "restore_pgdr_j1"):
        runs = out["samples"].get(name)
        if runs:
            steps = {k: timing(runs, k) for k in runs[0]["child"]["timings"]}
            d[f"{name}_steps"] = steps
            if steps.get("data"):
                d[f"{name}_data_mb_s"] = data_raw / MIB / steps["data"]
    if "restore_pgdr_j1" in s:
        d["restore_j1_over_j2"] = s["restore_pgdr_j1"]["wall_s"]["median"] / s["restore_pgdr"]["wall_s"]["median"]
        d["data_j1_over_j2"] = d["restore_pgdr_j1_steps"]["data"] / d["restore_pgdr_steps"]["data"]
    return d


def evaluate(shapes: dict) -> list[dict]:
    rows = []
    for name, which, limit, unit in TARGETS:
        for shape in which:
            if shape not in shapes:
                continue
            d = shapes[shape]["derived"]
            value = {
                "backup / raw dump": d["backup_ratio"],
                "backup peak tree RSS": d["backup_peak_rss_mb"],
                "restore / pg_restore -j": d["restore_ratio"],
                "restore / pg_restore -j (many)": d["restore_ratio"],
                "fingerprint share of backup (catalog)": d["fingerprint_share_snapshot"],
            }[name]
            rows.append(
                {
                    "target": name,
                    "shape": shape,
                    "value": round(value, 3),
                    "limit": limit,
                    "unit": unit,
                    "pass": value <= limit,
                }
            )
    return rows


def markdown(report: dict) -> str:
    facts = report["machine"]
    lines = [
        f"### Shapes benchmark {report['started_at']}",
        "",
        f"Size option {report['size_gb']:g} GiB per shape (big, many, wide); many: {report['tables']} tables; "
        f"catalog: {report['catalog_tables']} tables in {report['catalog_schemas']} schemas; {report['repeat']} "
        f"run(s) of each job, interleaved; jobs={report['jobs']} (pg_restore --jobs and RestoreRequest/"
        "BackupRequest jobs); S3 over HTTP (SeaweedFS on the same machine).",
        f"Machine: {facts['nproc']} CPUs, {facts['mem_total_mb']:.0f} MB RAM, load average before "
        f"{' '.join(f'{x:.2f}' for x in facts['load_before'])}, after "
        f"{' '.join(f'{x:.2f}' for x in facts.get('load_after', []))} "
        "(shared with other work: read ratios, not seconds).",
        "",
        "| Shape | Database MB | Tables | Backup raw s | Backup pgdr s | Ratio | Backup RSS MB | Restore raw s "
        "| Restore pgdr s | Ratio | Restore RSS MB (raw) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for out in report["shapes"].values():
        out["derived"] = derived(out)  # recomputed, so that --report renders older results the same way
    for shape, out in report["shapes"].items():
        s, d, f = out["summary"], out["derived"], out["facts"]
        lines.append(
            f"| {shape} | {f['database_bytes'] / MIB:.0f} | {f['app_tables']} "
            f"| {fmt_range(s['backup_raw']['wall_s'], 2)} "
            f"| {fmt_range(s['backup_pgdr']['wall_s'], 2)} | {d['backup_ratio']:.2f} | {d['backup_peak_rss_mb']:.0f} "
            f"| {fmt_range(s['restore_raw']['wall_s'], 2)} | {fmt_range(s['restore_pgdr']['wall_s'], 2)} "
            f"| {d['restore_ratio']:.2f} | {d['restore_peak_rss_mb']:.0f} ({d['raw_restore_peak_rss_mb']:.0f}) |"
        )
    lines += ["", "| Target | Shape | Value | Limit | Result |", "|---|---|---:|---:|---|"]
    for t in report["targets"]:
        fmt = {"x": "{:.2f}", "MB": "{:.0f} MB", "share": "{:.1%}"}[t["unit"]]
        lines.append(
            f"| {t['target']} | {t['shape']} | {fmt.format(t['value'])} | ≤ {fmt.format(t['limit'])} "
            f"| {'PASS' if t['pass'] else 'FAIL'} |"
        )
    for shape, out in report["shapes"].items():
        d = out["derived"]
        steps = d.get("restore_pgdr_steps") or {}
        parts = ", ".join(f"{k} {v:.2f}" for k, v in steps.items() if v and v >= 0.05)
        check = (out["samples"]["restore_pgdr"][0].get("content_check") or {}).get("summary", "not run")
        bdata = f"{d['backup_data_mb_s']:.0f}" if d.get("backup_data_mb_s") else "-"
        rdata = f"{d['restore_pgdr_data_mb_s']:.0f}" if d.get("restore_pgdr_data_mb_s") else "-"
        objects = sum(1 for o in out["manifest"]["objects"] if o.get("kind") == "data")
        lines += [
            "",
            f"{shape}: inside the child, backup run() {d['backup_inner_s']:.2f} s ({d['backup_inner_ratio']:.2f}x the "
            f"raw dump), restore run() {d['restore_inner_s']:.2f} s ({d['restore_inner_ratio']:.2f}x the raw restore); "
            f"data {d['data_raw_bytes'] / MIB:.0f} MB raw in {objects} object(s); backup snapshot step "
            f"{d['backup_snapshot_s']:.2f} s ({d['fingerprint_share_snapshot']:.1%} "
            f"of the backup; fingerprint.capture alone {d['fingerprint_alone_s']:.2f} s, "
            f"{d['fingerprint_share_alone']:.1%}), dump_data {d['backup_dump_data_s']:.2f} s ({bdata} MB/s); "
            f"restore steps (medians, s): {parts}; data load {rdata} MB/s; content check: {check}.",
        ]
        if "restore_j1_over_j2" in d:
            lines.append(
                f"{shape} scaling: restore jobs=1 {out['summary']['restore_pgdr_j1']['wall_s']['median']:.2f} s vs "
                f"jobs={report['jobs']} {out['summary']['restore_pgdr']['wall_s']['median']:.2f} s "
                f"({d['restore_j1_over_j2']:.2f}x); data step {d['restore_pgdr_j1_steps']['data']:.2f} s vs "
                f"{d['restore_pgdr_steps']['data']:.2f} s ({d['data_j1_over_j2']:.2f}x)."
            )
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--sandbox", type=Path, default=DEFAULT_SANDBOX, help=f"sandbox (default {DEFAULT_SANDBOX})")
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("--size-gb", type=float, default=2.0, help="GiB of big, many and wide (default 2)")
    parser.add_argument("--tables", type=int, default=200, help="tables of many (default 200)")
    parser.add_argument("--catalog-tables", type=int, default=5000, help="tables of catalog (default 5000)")
    parser.add_argument("--catalog-schemas", type=int, default=50, help="schemas of catalog (default 50)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each job (default 3)")
    parser.add_argument("--jobs", type=int, default=2, help="jobs of our backup and restore and pg_restore (default 2)")
    parser.add_argument(
        "--scaling", action=argparse.BooleanOptionalAction, default=True, help="also restore many with jobs=1"
    )
    parser.add_argument(
        "--max-locks-per-transaction",
        type=int,
        metavar="N",
        help="set it on both clusters of the bench sandbox first (restarts it): see bench/README.md, catalog",
    )
    parser.add_argument("--out", type=Path, help="JSON results (default bench/results/shapes-<timestamp>.json)")
    parser.add_argument(
        "--report",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="measure nothing: print the table of earlier results (several files: their shapes side by side)",
    )
    args = parser.parse_args(argv)
    args.shape_list = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if not args.shape_list or set(args.shape_list) - set(SHAPES):
        parser.error(f"--shapes: a comma-separated list of {', '.join(SHAPES)}")
    if args.repeat < 1 or args.size_gb <= 0 or args.jobs < 1 or args.tables < 1:
        parser.error("--repeat, --jobs and --tables >= 1, --size-gb > 0")
    if args.catalog_tables < 1 or not 1 <= args.catalog_schemas <= args.catalog_tables:
        parser.error("--catalog-tables >= --catalog-schemas >= 1")
    return args


def render(files: list[Path]) -> str:
    """The Markdown of earlier results; the first file's run facts head it, the shapes of all are listed."""
    reports = [json.loads(f.read_text()) for f in files]
    report = dict(reports[0], shapes={})
    for other in reports:
        report["shapes"].update(other["shapes"])
    report["targets"] = evaluate({k: dict(v, derived=derived(v)) for k, v in report["shapes"].items()})
    notes = [
        f"{f.name}: {', '.join(r['shapes'])} at {r['size_gb']:g} GiB, catalog {r['catalog_tables']} tables, "
        f"{r['repeat']} run(s), load {' '.join(f'{x:.1f}' for x in r['machine']['load_before'])} -> "
        f"{' '.join(f'{x:.1f}' for x in r['machine'].get('load_after', []))}"
        for f, r in zip(files, reports, strict=True)
    ]
    return markdown(report) + "\n\nFrom: " + "; ".join(notes) + "."


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report:
        print(render(args.report))
        return 0
    started_at = dt.datetime.now(dt.UTC)
    out_file = args.out or REPO / "bench" / "results" / f"shapes-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    wall_start = time.monotonic()
    root = args.sandbox.absolute()
    log(f"sandbox {root}; shapes {', '.join(args.shape_list)}; size {args.size_gb:g} GiB")
    with contextlib.redirect_stdout(sys.stderr):
        sandboxlib.up(root)
    state = sandboxlib.status(root)
    if args.max_locks_per_transaction:
        locks = set_max_locks(root, state, args.max_locks_per_transaction)
        state = sandboxlib.status(root)
    else:
        locks = lock_settings(state)
    bench = ShapesBench(args, state)
    machine = machine_facts()
    machine.update(server_version=bench.facts["server_version"], sandbox=str(root), lock_tables=locks)
    report = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "size_gb": args.size_gb,
        "tables": args.tables,
        "catalog_tables": args.catalog_tables,
        "catalog_schemas": args.catalog_schemas,
        "repeat": args.repeat,
        "jobs": args.jobs,
        "machine": machine,
        "shapes": {},
    }
    try:
        bench.drop_leftovers()
        for shape in args.shape_list:
            log(f"shape {shape}")
            report["shapes"][shape] = bench.run_shape(shape)
            # Partial results survive a later failure.
            out_file.parent.mkdir(parents=True, exist_ok=True)
            out_file.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    finally:
        bench.drop_leftovers()
    machine["load_after"] = loadavg()
    report["duration_s"] = round(time.monotonic() - wall_start, 1)
    report["targets"] = evaluate(report["shapes"])
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    print(markdown(report))
    print(f"\nResults: {out_file}; took {report['duration_s']:.0f} s.")
    shutil.rmtree(bench.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

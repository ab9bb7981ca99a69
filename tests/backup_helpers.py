"""Test-side tools: read a backup back with nothing but boto3, zstd and the PostgreSQL client tools.

Deliberately independent of the engine's restore code, so a test that restores with these checks the
backup itself, not the engine agreeing with itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import uuid
from pathlib import Path

import psycopg
import zstandard

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def fetch_object(target, key, dest):
    """Download key, check nothing, decompress to dest; return the SHA-256 of the stored bytes."""
    body = target.client.get_object(Bucket=target.bucket, Key=key)["Body"].read()
    Path(dest).write_bytes(zstandard.ZstdDecompressor().decompressobj().decompress(body))
    return hashlib.sha256(body).hexdigest()


def signing_key(state):
    """The sandbox's manifest signing key (PEM), as the inventory hands it to backups."""
    return Path(state["signing"]["private_key_file"]).read_text()


def dsn_for(state, target, dbname):
    t = state[target]
    return f"postgresql://{t['user']}:{t['password']}@{t['host']}:{t['port']}/{dbname}"


def scratch_database(state, target="staging"):
    """A new database on the target cluster, made from its platform template (`postgres` itself is always in use by
    the platform sessions, as on a hosted project)."""
    name = f"scratch_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn_for(state, target, "postgres"), autocommit=True) as conn:
        conn.execute(f'create database "{name}" template platform_template')
    return name


def drop_database(state, name, target="staging"):
    with psycopg.connect(dsn_for(state, target, "postgres"), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


def admin_dsn_for(state, target, dbname):
    t = state[target]
    return f"postgresql://{t['admin_user']}:{t['admin_password']}@{t['host']}:{t['port']}/{dbname}"


def restore_with_tools(state, target, manifest, workdir, dbname, db_target="staging"):
    """Restore a backup into dbname with the client tools and plain COPY only, as the cluster's superuser: no
    engine code, so a test that restores with this checks the backup itself.

    Roles with psql; the schema's pre-data with pg_restore; each data object's sections (byte ranges of the
    decompressed object, listed in the index) with COPY ... FROM STDIN; post-data with pg_restore; the app's
    objects on the platform's tables from the index's statements. Extensions the database cannot have (pg_cron
    outside cron.database_name) are left out. Returns the database's connection string (as postgres)."""
    admin = admin_dsn_for(state, db_target, dbname)
    files = {}
    for obj in manifest["objects"]:
        dest = Path(workdir, obj["key"].rsplit("/", 1)[-1].removesuffix(".zst"))
        assert fetch_object(target, obj["key"], dest) == obj["sha256"], obj["key"]
        files[obj["name"]] = dest
    index = json.loads(Path(files["index"]).read_text())

    def run(*argv, env=None):
        subprocess.run(argv, check=True, capture_output=True, env={**os.environ, **(env or {})})

    run(str(PG_BIN / "psql"), "-q", "-d", admin, "-f", str(files["roles"]))
    with psycopg.connect(admin, autocommit=True) as conn:
        # The template's platform defaults would grant every new object to the API roles; the backup's own
        # default privileges and ACLs are what must come back.
        # (Both roles': this restore runs as the superuser, whose objects get supabase_admin's defaults.)
        for role in ("postgres", "supabase_admin"):
            for kind in ("TABLES", "SEQUENCES", "FUNCTIONS"):
                conn.execute(
                    f"alter default privileges for role {role} in schema public revoke all on {kind} "
                    "from postgres, anon, authenticated, service_role"
                )
    listing = subprocess.run(
        [str(PG_BIN / "pg_restore"), "-l", str(files["schema"])], capture_output=True, text=True, check=True
    ).stdout
    # Left out: what the template database has already (the platform's event triggers and publication) or cannot
    # have (pg_cron lives only in the database cron.database_name names).
    skip = ("pg_cron", " cron ", "EVENT TRIGGER", "PUBLICATION - supabase_realtime")
    keep = [line for line in listing.splitlines() if not any(s in line for s in skip)]
    Path(workdir, "schema.list").write_text("\n".join(keep) + "\n")
    pre = [str(PG_BIN / "pg_restore"), "--exit-on-error", "-L", str(Path(workdir, "schema.list")), "-d", admin]
    run(*pre, "--section=pre-data", str(files["schema"]))
    with psycopg.connect(admin) as conn:
        conn.execute("set session_replication_role = replica")
        for name, sections in index["sections"].items():
            raw = Path(files[name]).read_bytes()
            for section in sections:
                chunk = raw[section["offset"] : section["offset"] + section["length"]]
                ident = psycopg.sql.SQL("{}.{} ({})").format(
                    psycopg.sql.Identifier(section["schema"]),
                    psycopg.sql.Identifier(section["table"]),
                    psycopg.sql.SQL(", ").join(psycopg.sql.SQL(c) for c in section["columns"]),
                )
                with conn.cursor().copy(psycopg.sql.SQL("copy {} from stdin").format(ident)) as copy:
                    copy.write(chunk)
    run(*pre, "--section=post-data", str(files["schema"]))
    with psycopg.connect(state["production"]["dsn"]) as conn:
        populated = conn.execute(
            "select format('%I.%I', schemaname, matviewname) from pg_matviews where ispopulated"
        ).fetchall()
    with psycopg.connect(admin) as conn:
        for item in index["platform_ddl"]:
            for statement in item["sql"]:
                conn.execute(statement)
        for _name, (last, called, ident) in index["sequences"].items():
            conn.execute("select setval(%s, %s, %s)", (ident, last, called))
        # The materialized views production has populated (a data-only restore leaves them empty).
        for (ident,) in populated:
            conn.execute(f"refresh materialized view {ident}")
    return dsn_for(state, db_target, dbname)


def row_counts(dsn, tables):
    counts = {}
    with psycopg.connect(dsn) as conn:
        for name in tables:
            schema, table = name.split(".", 1)
            query = psycopg.sql.SQL("select count(*) from {}.{}").format(
                psycopg.sql.Identifier(schema), psycopg.sql.Identifier(table)
            )
            counts[name] = conn.execute(query).fetchone()[0]
    return counts


# The pg_dump arguments a version 1 backup was taken with (one archive of data, one of the migration history).
V1_SCHEMA_EXCLUDE = [
    "information_schema",
    "pg_*",
    "_analytics",
    "_realtime",
    "_supavisor",
    "auth",
    "etl",
    "extensions",
    "pgbouncer",
    "realtime",
    "storage",
    "supabase_functions",
    "supabase_migrations",
    "cron",
    "dbdev",
    "graphql",
    "graphql_public",
    "net",
    "pgmq",
    "pgsodium",
    "pgsodium_masks",
    "pgtle",
    "repack",
    "vault",
    "topology",
    "tiger",
    "tiger_data",
    "timescaledb_*",
]
V1_DATA_EXCLUDE = [
    "information_schema",
    "pg_*",
    "graphql*",
    "pgsodium*",
    "pgtle",
    "repack",
    "vault",
    "etl",
    "extensions",
    "pgbouncer",
    "realtime",
    "supabase_migrations",
    "_analytics",
    "_realtime",
    "_supavisor",
]


def write_v1_backup(state, target, prefix, backup_id="20240101T000000Z"):
    """A backup as the tool wrote them before data objects existed (manifest version 1): roles, schema, data and
    migration history as pg_dumpall/pg_dump wrote them, zstd-compressed, with a version 1 manifest."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import dumpspec, pg

    dsn = state["production"]["dsn"]
    folder = f"{prefix}/production/logical/{backup_id}/"
    custom = ["--format=custom", "--compress=0"]
    dumps = {
        "roles": ([str(PG_BIN / "pg_dumpall"), "--roles-only", "--no-role-passwords", "--no-comments"], "plain"),
        "schema": (
            [str(PG_BIN / "pg_dump"), *custom, "--schema-only", *[f"--exclude-schema={s}" for s in V1_SCHEMA_EXCLUDE]],
            "custom",
        ),
        "data": (
            [
                str(PG_BIN / "pg_dump"),
                *custom,
                "--data-only",
                *[f"--exclude-schema={s}" for s in V1_DATA_EXCLUDE],
                "--exclude-table=auth.schema_migrations",
                "--exclude-table=storage.migrations",
                "--exclude-table=supabase_functions.migrations",
            ],
            "custom",
        ),
        "migrations": ([str(PG_BIN / "pg_dump"), *custom, "--schema=supabase_migrations"], "custom"),
    }
    objects = []
    for name, (argv, fmt) in dumps.items():
        raw = subprocess.run([*argv, f"--dbname={dsn}"], capture_output=True, check=True).stdout
        if name == "roles":
            text = raw.decode()
            raw = "".join(dumpspec.filter_roles_sql(text.splitlines(keepends=True), "supabase")).encode()
        body = zstandard.ZstdCompressor().compress(raw)
        key = folder + f"{name}.{'sql' if fmt == 'plain' else 'pgdump'}.zst"
        target.client.put_object(Bucket=target.bucket, Key=key, Body=body)
        objects.append(
            {
                "name": name,
                "key": key,
                "format": fmt,
                "size": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
                "raw_size": len(raw),
                "compression": {"algorithm": "zstd", "level": 3},
                "encryption": None,
            }
        )
    with psycopg.connect(dsn) as conn:
        facts = pg.server_facts(conn)
        tables = list(pg.user_tables(conn, "supabase"))
        counts = pg.row_counts(conn, tables)
        schema_objects = pg.schema_objects(conn, "supabase")
        versions = pg.migration_versions(conn)
    manifest = {
        "manifest_version": 1,
        "kind": "logical",
        "backup_id": backup_id,
        "window": "daily",
        "source": {
            "name": "production",
            "host": state["production"]["host"],
            "port": state["production"]["port"],
            "database": "postgres",
            "server_version": facts["server_version"],
            "server_version_num": facts["server_version_num"],
            "system_identifier": facts["system_identifier"],
            "flavor": "supabase",
            "database_size": facts["database_size"],
        },
        "tool": {"name": "pgdr", "version": "0.1.0", "pg_dump_version": "15.18", "pg_dumpall_version": "15.18"},
        "started_at": "2024-01-01T00:00:00.000000Z",
        "finished_at": "2024-01-01T00:00:10.000000Z",
        "duration_s": 10.0,
        "restore_order": list(dumps),
        "objects": objects,
        "tables": counts,
        "schema": {"fingerprint": pg.fingerprint(schema_objects), "objects": schema_objects},
        "migrations": {"versions": versions},
    }
    target.client.put_object(Bucket=target.bucket, Key=folder + "manifest.json", Body=json.dumps(manifest).encode())
    return manifest


def mark_as_restored(state, dbname, backup_id, **extra):
    """A restore marker on a database restored by the tools above (what the engine's restores write), saying
    what the restore left out on purpose (pg_cron: the template database cannot have it)."""
    marker = {"backup_id": backup_id, "status": "complete", "extensions_skipped": ["pg_cron"], **extra}
    with psycopg.connect(dsn_for(state, "staging", "postgres"), autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("comment on database {} is {}").format(
                psycopg.sql.Identifier(dbname), psycopg.sql.Literal("pgdr:" + json.dumps(marker, sort_keys=True))
            )
        )


def copy_database(state, source, prefix="copy"):
    """A copy of a database on staging, with its marker (CREATE DATABASE ... TEMPLATE does not copy comments)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn_for(state, "staging", "postgres"), autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("create database {} template {}").format(
                psycopg.sql.Identifier(name), psycopg.sql.Identifier(source)
            )
        )
        comment = conn.execute(
            "select shobj_description(oid, 'pg_database') from pg_database where datname = %s", (source,)
        ).fetchone()[0]
        if comment:
            conn.execute(
                psycopg.sql.SQL("comment on database {} is {}").format(
                    psycopg.sql.Identifier(name), psycopg.sql.Literal(comment)
                )
            )
    return name


def new_database_request(dsn, manifest, target, **kwargs):
    """A new_database restore as a hosted project's postgres must ask for it: from the platform-ready template
    (postgres may not copy the project's own database), without pg_cron (one per cluster)."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import logical_restore

    if kwargs.get("mode", "new_database") == "new_database":
        kwargs.setdefault("template", "platform_template")
        kwargs.setdefault("skip_extensions", ["pg_cron"])
    return logical_restore.RestoreRequest(dsn, manifest, target, **kwargs)


@contextlib.contextmanager
def restored_with_tools(state, workdir, label):
    """Production backed up by the engine under a prefix of its own, restored into a new staging database with
    the client tools and marked as restored: {target, prefix, manifest (as stored), manifest_key, database}.
    The database and the prefix's objects are removed afterwards."""
    from conftest import s3_params

    from ansible_collections.pgdr.supabase.plugins.module_utils import logical_backup
    from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import s3_target

    target = s3_target(s3_params(state))
    prefix = f"test-{label}-{uuid.uuid4().hex[:10]}"
    result = logical_backup.run(
        logical_backup.BackupRequest(
            "production", state["production"]["dsn"], target, prefix=prefix, window="every_run"
        )
    )
    manifest = target.get_json(result["manifest_key"])
    database = scratch_database(state)
    try:
        restore_with_tools(state, target, manifest, workdir, database)
        mark_as_restored(state, database, manifest["backup_id"])
        yield {
            "target": target,
            "prefix": prefix,
            "manifest": manifest,
            "manifest_key": result["manifest_key"],
            "database": database,
        }
    finally:
        drop_database(state, database)
        target.delete_keys([key for key, _unused in target.list_keys(f"{prefix}/")])

"""Test-side tools: read a backup back with nothing but boto3, zstd and the PostgreSQL client tools.

Deliberately independent of the engine's restore code, so a test that restores with these checks the
backup itself, not the engine agreeing with itself.
"""

from __future__ import annotations

import hashlib
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
    """A new database on the target cluster, made from its bootstrapped `postgres` database (like a new project)."""
    name = f"scratch_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn_for(state, target, "postgres"), autocommit=True) as conn:
        conn.execute(f'create database "{name}" template postgres')
    return name


def drop_database(state, name, target="staging"):
    with psycopg.connect(dsn_for(state, target, "postgres"), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


def restore_with_tools(state, target, manifest, workdir, dbname, db_target="staging"):
    """Restore a backup's objects into dbname in the documented order, with psql and pg_restore only."""
    dsn = dsn_for(state, db_target, dbname)
    files = {}
    for obj in manifest["objects"]:
        dest = Path(workdir, obj["key"].rsplit("/", 1)[-1].removesuffix(".zst"))
        assert fetch_object(target, obj["key"], dest) == obj["sha256"], obj["key"]
        files[obj["name"]] = dest

    def run(*argv, env=None):
        subprocess.run(argv, check=True, capture_output=True, env={**os.environ, **(env or {})})

    run(str(PG_BIN / "psql"), "-q", "-d", dsn, "-f", str(files["roles"]))
    run(str(PG_BIN / "pg_restore"), "--exit-on-error", "--section=pre-data", "-d", dsn, str(files["schema"]))
    run(
        str(PG_BIN / "pg_restore"),
        "--exit-on-error",
        "-j",
        "2",
        "-d",
        dsn,
        str(files["data"]),
        env={"PGOPTIONS": "-c session_replication_role=replica"},
    )
    run(str(PG_BIN / "pg_restore"), "--exit-on-error", "--section=post-data", "-d", dsn, str(files["schema"]))
    if "migrations" in files:
        run(str(PG_BIN / "pg_restore"), "--exit-on-error", "--data-only", "-d", dsn, str(files["migrations"]))
    return dsn


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

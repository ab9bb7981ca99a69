"""An oracle independent of the engine: two databases compared with plain catalog queries, content hashes and a
``pg_dump --schema-only`` diff. Nothing here imports the engine, so a test that uses it checks the restore, not the
engine agreeing with itself.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

import psycopg

PG_BIN = Path("/usr/lib/postgresql/15/bin")
# The schemas of the platform whose state a restore is not meant to copy (the target has its own), and the
# tool's marker schema. pg_net's queue (net) is left out of every backup on purpose: it would resend production's
# requests.
NOT_COMPARED = ("pg_catalog", "information_schema", "pg_toast", "pgdr_restore", "net")
_SCHEMAS = "n.nspname <> all(%(skip)s) and n.nspname !~ '^pg_(temp|toast)'"
_SORTED = "(select array_agg(x::text order by x::text) from unnest({}) x)::text"

QUERIES = {
    "relation ACL, owner and RLS": f"""
        select n.nspname, c.relname, c.relkind::text, coalesce({_SORTED.format("c.relacl")}, 'default'),
               pg_get_userbyid(c.relowner), c.relrowsecurity::text, c.relforcerowsecurity::text
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where {_SCHEMAS} and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')""",
    "function ACL, owner and body": f"""
        select n.nspname, p.proname, pg_get_function_identity_arguments(p.oid),
               coalesce({_SORTED.format("p.proacl")}, 'default'), pg_get_userbyid(p.proowner), p.prosecdef::text,
               md5(p.prosrc)
          from pg_proc p join pg_namespace n on n.oid = p.pronamespace where {_SCHEMAS}""",
    "column ACL": f"""
        select n.nspname, c.relname, a.attname, {_SORTED.format("a.attacl")}
          from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
         where a.attacl is not null and {_SCHEMAS}""",
    "schema ACL and owner": f"""
        select n.nspname, pg_get_userbyid(n.nspowner), {_SORTED.format("n.nspacl")}
          from pg_namespace n where {_SCHEMAS}""",
    "default ACL": f"""
        select pg_get_userbyid(d.defaclrole), coalesce(n.nspname, '-'), d.defaclobjtype::text,
               {_SORTED.format("d.defaclacl")}
          from pg_default_acl d left join pg_namespace n on n.oid = d.defaclnamespace""",
    "trigger": """
        select t.tgrelid::regclass::text, t.tgname, t.tgenabled::text, pg_get_triggerdef(t.oid)
          from pg_trigger t where not t.tgisinternal""",
    "policy (every schema)": """
        select schemaname, tablename, policyname, permissive, roles::text, cmd, coalesce(qual, ''),
               coalesce(with_check, '') from pg_policies""",
    "publication table": "select pubname, schemaname, tablename from pg_publication_tables",
    "materialized view populated": "select schemaname, matviewname, ispopulated::text from pg_matviews",
    "extension": "select extname, extversion, extnamespace::regnamespace::text from pg_extension",
    "event trigger": "select evtname, pg_get_userbyid(evtowner), evtenabled::text from pg_event_trigger",
}
_TABLES = f"""
    select format('%%I.%%I', n.nspname, c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.relkind = 'r' and {_SCHEMAS} and n.nspname not in ('cron', 'vault', 'realtime', 'extensions')
       and format('%%I.%%I', n.nspname, c.relname) not in
           ('auth.schema_migrations', 'storage.migrations', 'supabase_functions.migrations')"""


def _rows(conn, query):
    return {tuple(str(v) for v in row) for row in conn.execute(query, {"skip": list(NOT_COMPARED)}).fetchall()}


def catalog(dsn):
    """{query name: set of rows} of a database."""
    with psycopg.connect(dsn) as conn:
        conn.execute("set search_path = ''")
        return {name: _rows(conn, query) for name, query in QUERIES.items()}


def sequences(dsn):
    with psycopg.connect(dsn) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "select format('%%I.%%I', schemaname, sequencename) from pg_sequences"
                " where schemaname <> all(%s) and schemaname <> 'cron'",
                (list(NOT_COMPARED),),
            ).fetchall()
        ]
        return {n: conn.execute(f"select last_value, is_called from {n}").fetchone() for n in names}


def content(dsn):
    """{table: (rows, md5 of every row's text, sorted)} of every table a backup carries."""
    with psycopg.connect(dsn) as conn:
        conn.execute("set timezone = 'UTC'")
        conn.execute("set extra_float_digits = 3")
        tables = [r[0] for r in conn.execute(_TABLES, {"skip": list(NOT_COMPARED)}).fetchall()]
        return {
            t: conn.execute(
                f"select count(*), md5(coalesce(string_agg(x::text, E'\\n' order by x::text), '')) from {t} x"
            ).fetchone()
            for t in tables
        }


def cron_jobs(dsn):
    with psycopg.connect(dsn) as conn:
        if not conn.execute("select to_regclass('cron.job') is not null").fetchone()[0]:
            return None
        return sorted(
            conn.execute("select jobname, schedule, command, database, username, active from cron.job").fetchall()
        )


def schema_dump(dsn):
    """The lines of pg_dump --schema-only, as a multiset (order is the dump's, not the catalog's)."""
    out = subprocess.run(
        [str(PG_BIN / "pg_dump"), "--schema-only", "--exclude-schema=pgdr_restore", f"--dbname={dsn}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return Counter(line for line in out.splitlines() if not re.match(r"^(--|$|\\(un)?restrict )", line))


def differences(source, restored):
    """Every difference between two databases, as readable lines."""
    found = []
    a, b = catalog(source), catalog(restored)
    for name in QUERIES:
        found += [f"{name}: only in the source: {row}" for row in sorted(a[name] - b[name])]
        found += [f"{name}: only in the restored copy: {row}" for row in sorted(b[name] - a[name])]
    sa, sb = sequences(source), sequences(restored)
    found += [f"sequence {n}: {sa.get(n)} vs {sb.get(n)}" for n in sorted(set(sa) | set(sb)) if sa.get(n) != sb.get(n)]
    ca, cb = content(source), content(restored)
    found += [f"content {t}: {ca.get(t)} vs {cb.get(t)}" for t in sorted(set(ca) | set(cb)) if ca.get(t) != cb.get(t)]
    da, db = schema_dump(source), schema_dump(restored)
    found += [f"schema dump, only in the source: {line}" for line in sorted((da - db).elements())]
    found += [f"schema dump, only in the restored copy: {line}" for line in sorted((db - da).elements())]
    return found

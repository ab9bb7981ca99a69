"""A Supabase project's own ``postgres`` database as the restore target (``restore_mode: project``).

Only that database is served by the project's API, so a drill that should prove the app restores into it, in
place. It cannot be swapped in atomically like a new database, so:
- a marker table (``pgdr_restore.marker``, the tool's own schema, invisible to the API roles) says which backup the
  database holds and whether its restore completed; a restore in progress or failed says ``restoring``;
- before loading, the app an earlier restore (or anyone) put there is removed: the app's schemas, every object in
  ``public`` that is not an extension's, the app's objects on the platform's tables, the rows of the platform
  tables the backup carries, and the cron jobs an earlier restore scheduled. Platform objects stay untouched.
A failed restore leaves ``restoring``; the next run removes what it left and loads again.
"""

from __future__ import annotations

import json

from ansible_collections.pgdr.supabase.plugins.module_utils import fingerprint
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

try:
    from psycopg import sql
except ImportError:  # pragma: no cover - reported by the modules
    sql = None

SCHEMA = fingerprint.TOOL_SCHEMA


def read_marker(conn):
    """The project's marker: None when no restore ever ran here."""
    exists = conn.execute("select to_regclass(%s) is not null", (f"{SCHEMA}.marker",)).fetchone()[0]
    if not exists:
        return None
    row = conn.execute(sql.SQL("select marker from {}.marker where id = 1").format(sql.Identifier(SCHEMA))).fetchone()
    return row[0] if row else None


def write_marker(conn, marker):
    conn.execute(
        sql.SQL(
            "create schema if not exists {schema}; "
            "create table if not exists {schema}.marker (id int primary key default 1 check (id = 1), "
            "marker jsonb not null, updated_at timestamptz not null default now())"
        ).format(schema=sql.Identifier(SCHEMA))
    )
    conn.execute(
        sql.SQL(
            "insert into {}.marker (id, marker) values (1, %s) "
            "on conflict (id) do update set marker = excluded.marker, updated_at = now()"
        ).format(sql.Identifier(SCHEMA)),
        (json.dumps(marker, sort_keys=True),),
    )


# Objects of public that are the app's (not an extension's), to drop before loading, dependants first.
_PUBLIC_OBJECTS = """
    select kind, ident from (
        select case c.relkind when 'm' then 'MATERIALIZED VIEW' when 'v' then 'VIEW' when 'f' then 'FOREIGN TABLE'
                              when 'S' then 'SEQUENCE' else 'TABLE' end as kind,
               format('%%I.%%I', n.nspname, c.relname) as ident,
               case c.relkind when 'm' then 1 when 'v' then 2 when 'S' then 4 else 3 end as rank
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = 'public' and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
           and not (c.relkind = 'r' and c.relispartition)
           and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass and d.objid = c.oid
                            and d.deptype = 'e')
           -- a sequence a column owns (serial, identity) goes with its table
           and not (c.relkind = 'S' and exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass
                                                   and d.objid = c.oid and d.deptype in ('a', 'i')
                                                   and d.refobjid <> c.oid))
        union all
        select case p.prokind when 'p' then 'PROCEDURE' when 'a' then 'AGGREGATE' else 'FUNCTION' end,
               format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)), 5
          from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where n.nspname = 'public'
           and not exists (select 1 from pg_depend d where d.classid = 'pg_proc'::regclass and d.objid = p.oid
                            and d.deptype = 'e')
        union all
        select case t.typtype when 'd' then 'DOMAIN' else 'TYPE' end, format('%%I.%%I', n.nspname, t.typname), 6
          from pg_type t join pg_namespace n on n.oid = t.typnamespace
         where n.nspname = 'public' and t.typtype in ('e', 'd', 'c', 'r')
           and (t.typrelid = 0 or (select relkind from pg_class where oid = t.typrelid) = 'c')
           and not exists (select 1 from pg_depend d where d.classid = 'pg_type'::regclass and d.objid = t.oid
                            and d.deptype in ('e', 'i'))
    ) o order by rank, ident"""
# The app's objects on the platform's tables, as the fingerprint sees them.
_PLATFORM_OBJECTS = """
    select 'TRIGGER', format('%%I ON %%I.%%I', t.tgname, n.nspname, c.relname)
      from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
      join pg_proc f on f.oid = t.tgfoid join pg_namespace fn on fn.oid = f.pronamespace
     where not t.tgisinternal and n.nspname = any(%(platform)s)
       and not (fn.nspname = any(%(platform)s) and pg_get_userbyid(f.proowner) = any(%(platform_roles)s))
    union all
    select 'POLICY', format('%%I ON %%I.%%I', p.polname, n.nspname, c.relname)
      from pg_policy p join pg_class c on c.oid = p.polrelid join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = any(%(platform)s)
       and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass and d.objid = c.oid
                        and d.deptype = 'e')
    union all
    select case p.prokind when 'p' then 'PROCEDURE' else 'FUNCTION' end,
           format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname = any(%(platform)s) and p.prokind in ('f', 'p')
       and pg_get_userbyid(p.proowner) = any(%(app_roles)s)
       and not exists (select 1 from pg_depend d where d.classid = 'pg_proc'::regclass and d.objid = p.oid
                        and d.deptype = 'e')"""
_PLATFORM_PUBLICATION_TABLES = """
    select format('%%I', p.pubname), format('%%I.%%I', n.nspname, c.relname)
      from pg_publication_rel r join pg_publication p on p.oid = r.prpubid
      join pg_class c on c.oid = r.prrelid join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = any(%(platform)s)"""


def cleanup_statements(conn, scope, platform_tables, marker=None):
    """The statements that remove the app from the project's database, leaving the platform: [Statement].

    platform_tables: quoted names of the platform tables whose rows the backup carries (emptied, together)."""
    params = scope.params()
    statements = []
    for schema in scope.app_schemas:
        if schema != "public":
            statements.append(fingerprint.Statement(f"DROP SCHEMA IF EXISTS {_q(schema)} CASCADE;", why="app schema"))
    for kind, ident in conn.execute(_PUBLIC_OBJECTS, params).fetchall():
        statements.append(fingerprint.Statement(f"DROP {kind} IF EXISTS {ident} CASCADE;", why="app object"))
    if scope.platform_schemas:
        for kind, ident in conn.execute(_PLATFORM_OBJECTS, params).fetchall():
            statements.append(
                fingerprint.Statement(f"DROP {kind} IF EXISTS {ident} CASCADE;", why="app object on the platform")
            )
        for publication, table in conn.execute(_PLATFORM_PUBLICATION_TABLES, params).fetchall():
            statements.append(
                fingerprint.Statement(f"ALTER PUBLICATION {publication} DROP TABLE {table};", why="publication")
            )
        grants = {
            k: v for k, v in fingerprint.capture(conn, scope.flavor, scope)["objects"].items() if k.startswith("grant ")
        }
        statements += fingerprint.acl_statements({"objects": {}}, {"objects": grants}, scope.current)
    if platform_tables:
        statements.append(
            fingerprint.Statement(f"TRUNCATE {', '.join(platform_tables)};", why="platform rows the backup replaces")
        )
    for jobid in (marker or {}).get("cron_jobs", []):
        statements.append(
            fingerprint.Statement(
                f"SELECT cron.unschedule(jobid) FROM cron.job WHERE jobid = {int(jobid)} "  # noqa: S608 - an integer
                "AND username = current_user;",
                why="a job an earlier restore scheduled",
            )
        )
    return statements


def run_cleanup(conn, statements, where):
    """Run the cleanup in one transaction (DDL is transactional: all of it or nothing)."""
    try:
        with conn.transaction():
            return fingerprint.run_statements(conn, statements)
    except Exception as exc:
        raise DRError(
            f"removing the earlier app from the project failed: {str(exc).strip().splitlines()[0]}",
            step="clean the project",
            subject=where,
            hint="the project is unchanged; fix the privilege named above (the restore runs as the project's "
            "postgres role) and run again",
        ) from exc


def _q(name):
    return '"' + name.replace('"', '""') + '"'

"""PostgreSQL access for the engine: connections with clear errors, server facts, snapshot-consistent row
counts, a schema fingerprint and the applied migration versions."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from urllib.parse import quote

from ansible_collections.pgdr.supabase.plugins.module_utils import dumpspec
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError, redact

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    HAS_PSYCOPG = True
except ImportError:  # pragma: no cover - reported by the modules
    HAS_PSYCOPG = False

DEFAULT_BIN_DIRS = ("/usr/lib/postgresql/{major}/bin",)


def dsn_parts(dsn):
    """(host, port, dbname) of a connection string in URL or key=value form, with libpq's defaults."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise DRError(
            "the connection string cannot be parsed",
            step="read connection string",
            hint="use postgresql://user:password@host:port/dbname",
        ) from exc
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return host, int(params.get("port") or 5432), params.get("dbname") or params.get("user") or "postgres"


def require_dsn(dsn, step="connect"):
    """Refuse an empty connection string: libpq would fill it from PGHOST, PGPORT, PGUSER and the local socket,
    and so connect to a database nobody named (production, when the shell points there)."""
    if dsn is None or not str(dsn).strip():
        raise DRError(
            "no connection string was given (it is empty); refusing to fall back to libpq's defaults (PGHOST, "
            "PGPORT, the local socket), which may name another database",
            step=step,
            hint="pass the database's DSN; in check mode, a database that a restore has only planned cannot be "
            "connected to: its checks are listed, not run",
        )
    return dsn


def describe_dsn(dsn):
    """host:port/dbname of a connection string, without user or password (for messages and manifests)."""
    host, port, dbname = dsn_parts(dsn)
    return f"{'[' + host + ']' if ':' in host else host}:{port}/{dbname}"


def connect(dsn, step="connect", application_name="pgdr", connect_timeout=10, **kwargs):
    """Open a connection; wrong credentials, an unreachable host and a missing database each get their own message."""
    if not HAS_PSYCOPG:
        raise DRError("psycopg is not installed on the host that runs the module", step=step, hint="run 'make setup'")
    require_dsn(dsn, step)
    where = describe_dsn(dsn)
    try:
        return psycopg.connect(dsn, application_name=application_name, connect_timeout=connect_timeout, **kwargs)
    except psycopg.OperationalError as exc:
        text = redact(str(exc)).strip()
        if "password authentication failed" in text or "no password supplied" in text:
            hint = "check the database user and password in the vault or secret store"
            message = "the database refused the credentials"
        elif "does not exist" in text and "database" in text:
            hint = "check the database name in the connection string"
            message = "the database does not exist"
        else:
            hint = "check that the server is up, the host and port are right, and a firewall lets this host in"
            message = "cannot reach the database server"
        raise DRError(
            f"{message}: {text.splitlines()[0] if text else exc}", step=step, subject=where, hint=hint
        ) from exc


def client_env(dsn, dbname=None, app_name="pgdr"):
    """(conninfo without password, environment with PGPASSWORD) for a client tool, so that no secret shows in
    a process listing. dbname replaces the connection string's database."""
    params = conninfo_to_dict(require_dsn(dsn, "prepare a client tool's connection"))
    password = params.pop("password", None)
    if dbname:
        params["dbname"] = dbname
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    env["PGAPPNAME"] = app_name
    return make_conninfo(**params), env


def quote_table(schema, name):
    """A schema-qualified, quoted table name for a statement."""
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name)).as_string(None)


def with_database(dsn, dbname):
    """The same connection string pointing at another database (password kept). A URL stays a URL, so applications
    that only read URLs (SUPABASE_DB_URL) can use the result."""
    if "://" in dsn:
        head, rest = dsn.split("://", 1)
        netloc, path = rest.split("/", 1) if "/" in rest else (rest, "")
        query = path.partition("?")[2]
        return f"{head}://{netloc}/{quote(dbname, safe='')}" + (f"?{query}" if query else "")
    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo(**params)


MASK = "********"


def mask_password(dsn):
    """The connection string with its password replaced by ******** (a URL stays a URL); safe to print."""
    if not dsn:
        return dsn
    params = conninfo_to_dict(dsn)
    if "password" not in params:
        return dsn
    if "://" in dsn:
        head, rest = dsn.split("://", 1)
        userinfo, at, hostpart = rest.rpartition("@")
        return f"{head}://{userinfo.split(':', 1)[0]}:{MASK}{at}{hostpart}"
    params["password"] = MASK
    return make_conninfo(**params)


def url(user, password, host, port, dbname):
    """postgresql://user:password@host:port/dbname, every part quoted (the mask ******** kept as it is)."""
    netloc = f"[{host}]" if ":" in host else host
    secret = password if password == MASK else quote(password or "", safe="")
    return f"postgresql://{quote(user, safe='')}:{secret}@{netloc}:{port}/{quote(dbname, safe='')}"


def unmask(masked, password=None, dsn=None):
    """A connection string masked by mask_password with its password put back: the one given, or the one of dsn
    (the connection string it was derived from). Without a password to put back, it is returned as it is."""
    if not masked:
        return masked
    if password is None and dsn:
        password = conninfo_to_dict(dsn).get("password")
    if password is None or MASK not in masked:
        return masked
    if "://" in masked:
        head, rest = masked.split("://", 1)
        userinfo, at, hostpart = rest.rpartition("@")
        return f"{head}://{userinfo.replace(':' + MASK, ':' + quote(password, safe=''), 1)}{at}{hostpart}"
    params = conninfo_to_dict(masked)
    params["password"] = password
    return make_conninfo(**params)


def server_facts(conn):
    """Version, database, size and flavour of the server behind conn."""
    row = conn.execute(
        "select current_setting('server_version_num')::int, current_setting('server_version'), current_database(),"
        " pg_database_size(current_database()), (select system_identifier::text from pg_control_system()),"
        " exists(select 1 from pg_namespace where nspname = 'auth')"
        " and exists(select 1 from pg_roles where rolname = 'authenticated'),"
        " exists(select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        "        where n.nspname = 'supabase_migrations' and c.relname = 'schema_migrations')"
    ).fetchone()
    return {
        "server_version_num": row[0],
        "server_version": row[1].split()[0],
        "database": row[2],
        "database_size": row[3],
        "system_identifier": row[4],
        "flavor": "supabase" if row[5] else "postgres",
        "has_migrations": row[6],
    }


def find_binary(name, bin_dir=None, server_version_num=None):
    """Path of a PostgreSQL client binary: bin_dir if given, else the matching /usr/lib/postgresql/N/bin, else PATH."""
    candidates = []
    if bin_dir:
        candidates.append(os.path.join(bin_dir, name))
    else:
        if server_version_num:
            major = server_version_num // 10000
            candidates += [os.path.join(d.format(major=major), name) for d in DEFAULT_BIN_DIRS]
        found = shutil.which(name)
        if found:
            candidates.append(found)
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    raise DRError(
        f"{name} not found",
        step="find client tools",
        subject=bin_dir or "PATH",
        hint="install the PostgreSQL client package matching the server, or set the bin_dir option",
    )


def tool_version(path):
    """(version_num, version text) of a PostgreSQL client binary, e.g. (150018, '15.18')."""
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", out) or re.search(r"(\d+)(?:\.(\d+))?", out)
    if not match:
        raise DRError(f"cannot read the version of {path}: {out!r}", step="check client tools", subject=path)
    major, minor = int(match.group(1)), int(match.group(2) or 0)
    return major * 10000 + minor, f"{major}.{minor}"


def check_dump_compatible(tool_num, tool_text, server_num, server_text, tool="pg_dump"):
    """pg_dump must be of the server's major version or newer."""
    if tool_num // 10000 < server_num // 10000:
        raise DRError(
            f"{tool} {tool_text} is older than the server ({server_text}); pg_dump would abort with a version mismatch",
            step="check client tools",
            subject=tool,
            hint=f"install PostgreSQL {server_num // 10000} client tools (or newer) and point bin_dir at them",
        )


class Snapshot:
    """A repeatable-read transaction whose snapshot is exported for pg_dump --snapshot.

    Row counts, the fingerprint and the migration versions read here see exactly what the dumps see.
    Keep it open until every pg_dump has started.
    """

    def __init__(self, dsn, application_name="pgdr backup snapshot"):
        self.conn = connect(dsn, step="open snapshot", application_name=application_name)
        self.conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        self.conn.read_only = True
        self.id = self.conn.execute("select pg_export_snapshot()").fetchone()[0]

    def close(self):
        try:
            self.conn.rollback()
        finally:
            self.conn.close()


def import_snapshot(conn, snapshot_id):
    """Make conn's (new) transaction read the exported snapshot; it must be its first statement."""
    conn.execute(sql.SQL("set transaction snapshot {}").format(sql.Literal(snapshot_id)))


def lock_tables(conn, tables, batch=500):
    """ACCESS SHARE locks on (schema, table) in conn's transaction, as pg_dump takes them: no DDL can change a
    table while its rows are read. A server with fewer lock slots than tables fails here, naming the setting."""
    try:
        for start in range(0, len(tables), batch):
            names = sql.SQL(", ").join(
                sql.SQL("{}.{}").format(sql.Identifier(s), sql.Identifier(t)) for s, t in tables[start : start + batch]
            )
            conn.execute(sql.SQL("lock table {} in access share mode").format(names))
    except psycopg.errors.OutOfMemory as exc:
        raise DRError(
            f"the server cannot lock {len(tables)} tables at once: {exc}",
            step="lock tables",
            hint="raise max_locks_per_transaction on the source (pg_dump needs the same)",
        ) from exc


def sequence_values(conn, flavor):
    """{"schema.sequence": [last_value, is_called, quoted name]} of every sequence whose schema's data the backup
    holds."""
    rows = conn.execute(
        "select s.schemaname, s.sequencename, format('%I.%I', s.schemaname, s.sequencename) from pg_sequences s"
        " order by 1, 2"
    ).fetchall()
    values = {}
    for schema, name, ident in rows:
        if not (dumpspec.table_in_data(schema, name, flavor) or schema == dumpspec.MIGRATIONS_SCHEMA):
            continue
        if dumpspec.matches(schema, dumpspec.EXTENSION_SCHEMAS_WITHOUT_SEQUENCES):
            continue
        # ident is quoted by format('%I.%I') above.
        last_value, is_called = conn.execute(f"select last_value, is_called from {ident}").fetchone()  # noqa: S608
        values[f"{schema}.{name}"] = [last_value, is_called, ident]
    return values


def not_carried(conn, flavor):
    """What the source has that no logical backup can carry, to say so in the report: {what: count}."""
    found = {}
    if flavor == "supabase" and conn.execute("select to_regclass('vault.secrets') is not null").fetchone()[0]:
        try:
            with conn.transaction():  # a savepoint: a refusal must not end the snapshot's transaction
                count = conn.execute("select count(*) from vault.secrets").fetchone()[0]
        except psycopg.errors.InsufficientPrivilege:
            count = None
        if count is None or count:
            found["vault.secrets"] = (
                f"{count if count is not None else 'some'} secret(s) encrypted with the source project's own key: a "
                "restore into another project cannot decrypt them; create them again there"
            )
    return found


def user_tables(conn, flavor):
    """(schema, table) of every ordinary table whose rows the data object holds, sorted."""
    rows = conn.execute(
        "select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where c.relkind = 'r'"
        " and not exists (select 1 from pg_depend d where d.objid = c.oid and d.deptype = 'e')"
        " order by 1, 2"
    ).fetchall()
    return [(s, t) for s, t in rows if dumpspec.table_in_data(s, t, flavor)]


def row_counts(conn, tables):
    """Exact row counts, {"schema.table": n}, read in conn's transaction."""
    counts = {}
    for schema, table in tables:
        query = sql.SQL("select count(*) from only {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        counts[f"{schema}.{table}"] = conn.execute(query).fetchone()[0]
    return counts


# Each query yields (kind, name, definition) rows for the schemas in the dump; the fingerprint hashes them.
_FINGERPRINT_QUERIES = {
    "table": """
        select 'table', n.nspname || '.' || c.relname,
               c.relkind::text || ' rls=' || c.relrowsecurity || ' force=' || c.relforcerowsecurity || ' cols=' ||
               coalesce((select string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) ||
                        case when a.attnotnull then ' not null' else '' end ||
                        coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), ''), ', ' order by a.attnum)
                  from pg_attribute a left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
                 where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped), '')
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where c.relkind in ('r', 'p', 'v', 'm', 'f', 'S') and n.nspname = any(%(schemas)s)""",
    "constraint": """
        select 'constraint', n.nspname || '.' || c.relname || '.' || k.conname, pg_get_constraintdef(k.oid)
          from pg_constraint k join pg_class c on c.oid = k.conrelid join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = any(%(schemas)s)""",
    "index": """
        select 'index', n.nspname || '.' || i.relname, pg_get_indexdef(i.oid)
          from pg_index x join pg_class i on i.oid = x.indexrelid join pg_namespace n on n.oid = i.relnamespace
         where n.nspname = any(%(schemas)s)""",
    "policy": """
        select 'policy', n.nspname || '.' || c.relname || '.' || p.polname,
               p.polcmd::text || ' ' || p.polpermissive || ' to ' ||
               coalesce((select string_agg(r.rolname, ',' order by r.rolname) from pg_roles r
                          where r.oid = any(p.polroles)), 'public') ||
               ' using ' || coalesce(pg_get_expr(p.polqual, p.polrelid), '') ||
               ' check ' || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '')
          from pg_policy p join pg_class c on c.oid = p.polrelid join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = any(%(schemas)s)""",
    "function": """
        select 'function', n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
               md5(pg_get_functiondef(p.oid))
          from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where p.prokind in ('f', 'p') and n.nspname = any(%(schemas)s)
           and not exists (select 1 from pg_depend d where d.objid = p.oid and d.deptype = 'e')""",
    "view": """
        select 'view', n.nspname || '.' || c.relname, pg_get_viewdef(c.oid)
          from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.relkind in ('v', 'm')
           and n.nspname = any(%(schemas)s)""",
    "trigger": """
        select 'trigger', n.nspname || '.' || c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid)
          from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
         where not t.tgisinternal and n.nspname = any(%(schemas)s)""",
    "type": """
        select 'type', n.nspname || '.' || t.typname, t.typtype::text ||
               coalesce(' ' || (select string_agg(e.enumlabel, ',' order by e.enumsortorder)
                                  from pg_enum e where e.enumtypid = t.oid), '')
          from pg_type t join pg_namespace n on n.oid = t.typnamespace
         where t.typtype in ('e', 'd', 'c') and n.nspname = any(%(schemas)s) and (t.typrelid = 0 or
               (select relkind from pg_class where oid = t.typrelid) = 'c')""",
}


def schema_objects(conn, flavor):
    """{"kind name": sha256 of its definition} for every object in the schemas the schema dump holds."""
    schemas = [
        s for (s,) in conn.execute("select nspname from pg_namespace").fetchall() if dumpspec.schema_in_dump(s, flavor)
    ]
    objects = {}
    for query in _FINGERPRINT_QUERIES.values():
        for kind, name, definition in conn.execute(query, {"schemas": schemas}).fetchall():
            objects[f"{kind} {name}"] = hashlib.sha256((definition or "").encode()).hexdigest()
    return dict(sorted(objects.items()))


def fingerprint(objects):
    """One SHA-256 over the sorted object hashes."""
    digest = hashlib.sha256()
    for name, value in sorted(objects.items()):
        digest.update(f"{name}={value}\n".encode())
    return digest.hexdigest()


def migration_versions(conn):
    """Applied Supabase migration versions, sorted; [] when the history table does not exist."""
    exists = conn.execute("select to_regclass('supabase_migrations.schema_migrations') is not null").fetchone()[0]
    if not exists:
        return []
    return [v for (v,) in conn.execute("select version from supabase_migrations.schema_migrations order by 1")]

"""What goes into a logical backup: the objects, their pg_dump arguments, and the Supabase filters.

Pure functions, no I/O. The lists follow what the Supabase CLI's ``db dump`` excludes (see SUPABASE.md).
"""

from __future__ import annotations

import fnmatch
import re

# Roles every Supabase project already has: their CREATE/ALTER lines are dropped from the roles dump.
SUPABASE_RESERVED_ROLES = (
    "anon",
    "authenticated",
    "authenticator",
    "cli_login_*",
    "dashboard_user",
    "pgbouncer",
    "postgres",
    "service_role",
    "supabase_*",
    "pgsodium_keyholder",
    "pgsodium_keyiduser",
    "pgsodium_keymaker",
    "pgtle_admin",
)
# On a plain PostgreSQL source only the bootstrap superuser is dropped (pg_dumpall skips pg_* itself).
POSTGRES_RESERVED_ROLES = ("postgres",)

# Platform schemas left out of the schema dump: the target project already has them.
SUPABASE_SCHEMA_EXCLUDE = (
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
    "_timescaledb_*",
)
# Schemas whose data is left out: auth and storage data ARE kept.
SUPABASE_DATA_EXCLUDE = (
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
    # pg_net's request queue: a copy of production's would send production's pending requests from staging.
    "net",
)
SUPABASE_DATA_EXCLUDE_TABLES = (
    "auth.schema_migrations",
    "storage.migrations",
    "supabase_functions.migrations",
    # pg_cron's run history (logs of production's runs).
    "cron.job_run_details",
)
# Schemas of extensions whose sequences are the extension's own (a restore makes new jobs, with new ids).
EXTENSION_SCHEMAS_WITHOUT_SEQUENCES = ("cron",)
MIGRATIONS_SCHEMA = "supabase_migrations"
SYSTEM_SCHEMAS = ("information_schema", "pg_*")

FLAVORS = ("supabase", "postgres")


def matches(name, patterns):
    """True when name matches one of pg_dump-style patterns (only ``*`` is used in our lists)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


class DumpObject:
    """One object of the backup set: what to run and how it is stored."""

    def __init__(self, name, kind, args, fmt, description, flavor):
        self.name = name  # roles | schema | data | migrations
        self.kind = kind  # pg_dump | pg_dumpall
        self.args = list(args)
        self.format = fmt  # plain | custom
        self.description = description
        self.flavor = flavor

    @property
    def filename(self):
        return f"{self.name}.{'sql' if self.format == 'plain' else 'pgdump'}"

    def __repr__(self):
        return f"DumpObject({self.name!r}, {self.kind!r}, {self.args!r})"


def _excludes(flag, patterns):
    return [f"{flag}={pattern}" for pattern in patterns]


def backup_objects(flavor, snapshot=None):
    """The objects of a logical backup that pg_dumpall and pg_dump write, in restore order: the roles and the
    schema. The rows come next, as COPY streams (tabledata), then the index.

    Every pg_dump reads the same exported snapshot, so schema, data and the manifest describe one instant.
    """
    if flavor not in FLAVORS:
        raise ValueError(f"unknown flavor {flavor!r}; expected one of {', '.join(FLAVORS)}")
    snap = [f"--snapshot={snapshot}"] if snapshot else []
    # -Z0: pg_dump hands out raw bytes; the pipeline compresses with zstd, faster than pg_dump's gzip.
    custom = ["--format=custom", "--compress=0", *snap]
    roles = DumpObject(
        "roles",
        "pg_dumpall",
        ["--roles-only", "--no-role-passwords", "--no-comments"],
        "plain",
        "cluster roles, reserved platform roles filtered out, no passwords",
        flavor,
    )
    if flavor == "supabase":
        schema = DumpObject(
            "schema",
            "pg_dump",
            [*custom, "--schema-only", *_excludes("--exclude-schema", SUPABASE_SCHEMA_EXCLUDE)],
            "custom",
            "schema of the application schemas",
            flavor,
        )
    else:
        schema = DumpObject(
            "schema", "pg_dump", [*custom, "--schema-only"], "custom", "schema of every user schema", flavor
        )
    return [roles, schema]


def schema_in_dump(schema, flavor):
    """True when the schema's definitions are in the schema object (used for the fingerprint)."""
    if matches(schema, SYSTEM_SCHEMAS):
        return False
    return flavor != "supabase" or not matches(schema, SUPABASE_SCHEMA_EXCLUDE)


def table_in_data(schema, table, flavor):
    """True when the table's rows are in the data object (used for the row counts)."""
    if matches(schema, SYSTEM_SCHEMAS):
        return False
    if flavor != "supabase":
        return True
    return not matches(schema, SUPABASE_DATA_EXCLUDE) and f"{schema}.{table}" not in SUPABASE_DATA_EXCLUDE_TABLES


_ROLE_LINE = re.compile(r'^(?P<verb>CREATE|ALTER) ROLE (?P<role>"(?:[^"]|"")+"|\S+?)[ ;]')
_GRANT_LINE = re.compile(r'^GRANT (?P<granted>"(?:[^"]|"")+"|\S+) TO (?P<member>"(?:[^"]|"")+"|\S+?)(?P<rest>[ ;].*)$')
_GRANTED_BY = re.compile(r" GRANTED BY (\"(?:[^\"]|\"\")+\"|\S+?)(?=;)")
_PARAMETER_GRANT = re.compile(r"^GRANT .+ ON PARAMETER \S+ TO (?P<grantees>.+?)(?: WITH GRANT OPTION)?;\s*$")


def _unquote(name):
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def filter_roles_sql(lines, flavor):
    """Drop the reserved roles from pg_dumpall --roles-only output; yields the kept lines.

    CREATE/ALTER ROLE of a reserved role, memberships of a reserved role in a reserved or built-in (``pg_*``)
    role, and parameter privileges of reserved roles go (the target has them, and only its platform may grant
    them); memberships and privileges of an application role stay. ``GRANTED BY`` clauses are dropped because the
    grantor may not exist on the target.
    """
    reserved = SUPABASE_RESERVED_ROLES if flavor == "supabase" else POSTGRES_RESERVED_ROLES
    platform = (*reserved, "pg_*")  # the built-in roles are every cluster's
    for line in lines:
        role = _ROLE_LINE.match(line)
        if role and matches(_unquote(role.group("role")), reserved):
            continue
        parameter = _PARAMETER_GRANT.match(line)
        if parameter and all(matches(_unquote(g.strip()), reserved) for g in parameter.group("grantees").split(",")):
            continue  # the platform's own parameter privileges (SET session_replication_role for postgres)
        grant = _GRANT_LINE.match(line.rstrip("\n"))
        if grant:
            if matches(_unquote(grant.group("granted")), platform) and matches(
                _unquote(grant.group("member")), reserved
            ):
                continue
            yield _GRANTED_BY.sub("", line)
            continue
        yield line

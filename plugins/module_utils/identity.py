"""Which server and database a connection really reaches, and the production guard decided on it.

issue 9.3. The spelling of a connection string says little: a Unix-socket DSN, ``hostaddr=``, a service file or
``PGHOST`` in the environment reach production as well as its TCP host name does. So "is this production" is
decided on the server's own identity, read through the very session the restore writes with:

- ``system_identifier`` from ``pg_control_system()`` (unique per cluster, kept by physical replicas and
  pgBackRest restores of it), and
- the database written: its name (and oid, once it exists).

Production's identities come from the inventory (``pgdr_production_databases`` entries with ``system_identifier``
and ``database``) and from the backup's manifest (``source.system_identifier`` and ``source.database``: restoring
a backup over the very database it was taken from is restoring over production). The older host/port/database
comparison stays as an additional refusal, never as a permission.

Who may run ``pg_control_system()``: PostgreSQL 15 grants EXECUTE on it to PUBLIC (measured on the sandbox), so a
non-superuser such as hosted Supabase's ``postgres`` reads it unless the platform revoked it (UNCONFIRMED for
hosted Supabase; pg_monitor does not grant it either way). Both answers are handled: when it is not executable, the
refusal names the grant to make; the restore never runs without knowing which server it writes into.
"""

from __future__ import annotations

import socket

from ansible_collections.pgdr.supabase.plugins.module_utils import pg
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

try:
    from psycopg import errors as pg_errors
except ImportError:  # pragma: no cover
    pg_errors = None

READ_IT = "read it on that server as a superuser: select system_identifier from pg_control_system()"
GRANT_HINT = (
    "have a superuser run once on that server: grant execute on function pg_catalog.pg_control_system() to {user}; "
    "the restore refuses to write into a server whose identity it cannot read"
)


def read_identity(conn, where, database=None):
    """The identity of the server behind conn: {system_identifier, database, database_oid, user}.

    ``database`` names the database to describe (default the session's own); its oid is None while it does not
    exist. Raises a DRError naming the missing privilege when pg_control_system() is not executable."""
    try:
        row = conn.execute(
            "select current_user, current_database(), (select rolsuper from pg_roles where rolname = current_user),"
            " has_function_privilege('pg_catalog.pg_control_system()', 'execute')"
        ).fetchone()
        user, current, superuser, can_read = row
        if not can_read:
            raise DRError(
                f"cannot read the identity of the server: the role {user} "
                f"{'is not a superuser and ' if not superuser else ''}may not execute pg_control_system()",
                step="safety check",
                subject=where,
                hint=GRANT_HINT.format(user=user),
            )
        database = database or current
        system_identifier, oid = conn.execute(
            "select (select system_identifier::text from pg_control_system()),"
            " (select oid::bigint from pg_database where datname = %s)",
            (database,),
        ).fetchone()
    except DRError:
        _end_transaction(conn)
        raise
    except Exception as exc:  # psycopg errors: a privilege revoked between the two queries, a broken session
        _end_transaction(conn)
        if pg_errors is not None and isinstance(exc, pg_errors.InsufficientPrivilege):
            raise DRError(
                f"cannot read the identity of the server: {exc}".strip(),
                step="safety check",
                subject=where,
                hint=GRANT_HINT.format(user="the restore role"),
            ) from exc
        raise DRError(f"cannot read the identity of the server: {exc}", step="safety check", subject=where) from exc
    _end_transaction(conn)
    if not system_identifier:
        raise DRError(
            "cannot read the identity of the server: pg_control_system() gave no system_identifier",
            step="safety check",
            subject=where,
            hint="the restore refuses to write into a server whose identity it cannot read",
        )
    return {"system_identifier": str(system_identifier), "database": database, "database_oid": oid, "user": user}


def _end_transaction(conn):
    if not conn.autocommit:
        conn.rollback()


def _addresses(host):
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return {host}


def production_identities(production, manifest):
    """Every (system_identifier, database) known to be production, each with where it was learned."""
    known = []
    for entry in production or ():
        if entry.get("system_identifier"):
            known.append(
                {
                    "system_identifier": str(entry["system_identifier"]).strip(),
                    "database": entry.get("database") or "postgres",
                    "learned_from": "the inventory's production databases",
                    "name": entry.get("name")
                    or f"{entry.get('host', '?')}:{entry.get('port') or 5432}/{entry.get('database') or 'postgres'}",
                }
            )
    source = (manifest or {}).get("source") or {}
    if source.get("system_identifier"):
        known.append(
            {
                "system_identifier": str(source["system_identifier"]),
                "database": source.get("database") or "postgres",
                "learned_from": f"the backup's manifest (backup {manifest.get('backup_id')} was taken from it)",
                "name": f"source {source.get('name')}",
            }
        )
    return known


def _address_match(production, target_dsn, database):
    """The inventory entry matching the DSN's host, port and database (the older check), or None."""
    host, port, _unused = pg.dsn_parts(target_dsn)
    for entry in production or ():
        same_host = _addresses(str(entry.get("host", ""))) & _addresses(host)
        if same_host and int(entry.get("port") or 5432) == port and entry.get("database", "postgres") == database:
            return entry
    return None


def production_guard(request, conn=None):
    """Refuse a target that is production by identity (or by address) unless overridden with a typed confirmation.

    Reads the identity through conn (or a connection of its own to request.target_dsn). Returns the verdict:
    {production, confirmed?, identity, matched?, warnings}."""
    where = request.where
    own = conn is None
    if own:
        conn = pg.connect(request.target_dsn, step="connect restore target")
    try:
        # existing mode writes into the session's own database, whatever the DSN's spelling says it is
        found = read_identity(conn, where, database=None if request.mode == "existing" else request.database)
    finally:
        if own:
            conn.close()
    known = production_identities(request.production, request.manifest)
    warnings = [
        f"production entry {e.get('host', '?')}:{e.get('port') or 5432}/{e.get('database') or 'postgres'} has no "
        f"system_identifier and is matched by its address only: add system_identifier to it ({READ_IT})"
        for e in request.production or ()
        if not e.get("system_identifier")
    ]
    if not known:
        raise DRError(
            f"cannot tell whether {where} is production: neither the backup's manifest nor the inventory's production "
            "databases record a system_identifier",
            step="safety check",
            subject=where,
            hint=f"add system_identifier to each pgdr_production_databases entry ({READ_IT})",
        )
    matched = next(
        (
            k
            for k in known
            if k["system_identifier"] == found["system_identifier"] and k["database"] == found["database"]
        ),
        None,
    )
    by_address = None if matched else _address_match(request.production, request.target_dsn, request.database)
    verdict = {"production": False, "identity": found, "warnings": warnings}
    if matched is None and by_address is None:
        return verdict
    what = (
        f"{matched['name']}, known from {matched['learned_from']}"
        if matched
        else "named in the inventory's production databases (same host, port and database)"
    )
    message = (
        f"the restore target is a production database: {what} (server {found['system_identifier']}, "
        f"database {found['database']})"
    )
    if not request.allow_over_production:
        raise DRError(
            message,
            step="safety check",
            subject=where,
            hint="restore into staging; to really overwrite production set allow_restore_over_production=true and "
            f"confirm={where}",
        )
    if request.confirm != where:
        raise DRError(
            "restoring over production needs a typed confirmation",
            step="safety check",
            subject=where,
            hint=f"pass confirm={where} exactly",
        )
    return dict(verdict, production=True, confirmed=True, matched=what)


def check_same_server(conn, verdict, where):
    """The session that writes is on the server the guard checked (a DSN with several hosts, or a name that now
    resolves elsewhere, could reach another one)."""
    found = read_identity(conn, where, database=verdict["identity"]["database"])
    if found["system_identifier"] != verdict["identity"]["system_identifier"]:
        raise DRError(
            f"the restore's session reached server {found['system_identifier']}, not the server "
            f"{verdict['identity']['system_identifier']} the safety check read",
            step="safety check",
            subject=where,
            hint="the connection string reaches more than one server (several hosts, or a name that changed): give "
            "the restore target one server",
        )

"""Verification of a cluster restored to a point in time (pgBackRest). No logical manifest describes the moment
restored, so this checks what can be checked without one, and says plainly what it did not check:

- ``migrations``: the restored migration history against the repository's migration files (the verify engine's
  comparison);
- ``catalog``: the restored catalog (every object of the app with its definition, owner and ACL, the app's policies
  and triggers on the platform's tables, default privileges, publication membership, extensions) against the
  source's *current* catalog, with the verify engine's fingerprint. Compared only when the source's migration
  history is the restored one, that is when the app's schema has not changed through migrations since the target;
  otherwise it is not compared, naming the migrations applied since;
- ``amcheck``: ``pg_amcheck`` on the restored database, every heap table and btree index (amcheck's extension is
  installed for the check and dropped after it when the database did not have it).

Nothing here writes to the restored database but that extension, for the length of the check.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

from ansible_collections.pgdr.supabase.plugins.module_utils import fingerprint, pg, verify
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError
from ansible_collections.pgdr.supabase.plugins.module_utils.pgbackrest import as_postgres, bin_dir_for, psql

CHECKS = ("migrations", "catalog", "amcheck")
# Said in every report: what a physical restore to a time cannot be verified against.
NOT_CHECKED_ALWAYS = (
    "content: no logical backup was taken at the target time, so there are no row counts or content digests of that "
    "moment to compare the restored rows with",
    "sequences and cron jobs: the source's have moved on since the target, so they are not compared",
)
_AMCHECK_PROBLEM = re.compile(r"^(heap table|btree index|error|pg_amcheck: error)", re.IGNORECASE)


def _read(dsn, step):
    """(applied migration versions, flavor, fingerprint) of a database, in one read-only snapshot."""
    with pg.connect(dsn, step=step, application_name="pgdr pitr verify") as conn:
        conn.isolation_level = pg.psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        try:
            applied = pg.migration_versions(conn)
            flavor = pg.server_facts(conn)["flavor"]
            scope = fingerprint.Scope(conn, flavor)
            return applied, flavor, fingerprint.capture(conn, flavor, scope)
        finally:
            conn.rollback()


def catalog_against_source(restored, source):
    """The ``catalog`` check, or (None, why) when the source's schema changed since the target."""
    applied, _, restored_fp = restored
    source_applied, _, source_fp = source
    since = [v for v in source_applied if v not in set(applied)]
    gone = [v for v in applied if v not in set(source_applied)]
    if since or gone:
        why = (
            "catalog: not compared with the source's current catalog, because the app's schema changed since the target"
        )
        if since:
            why += f" (migrations applied on the source since: {', '.join(since)})"
        if gone:
            why += f" (migrations in the restored history that the source no longer has: {', '.join(gone)})"
        return None, why
    check = verify.check_catalog(source_fp, restored_fp)
    check["details"]["differences"] = [d.replace("the backup", "the source") for d in check["details"]["differences"]]
    check["details"]["compared_with"] = "the source's current catalog (same migration history as the restored copy)"
    if check["ok"]:
        check["summary"] = (
            f"{check['details']['objects']} objects, their owners and privileges match the source's current catalog"
        )
    else:
        check["summary"] = (
            check["summary"].replace("the backup", "the source")
            + " (against the source's current catalog: a change made after the target outside migrations, such as"
            " the incident itself, shows here too)"
        )
    return check, None


def check_amcheck(data_dir, socket_dir, port, admin_user, dbname, bin_dir=None, timeout=1800):
    """The ``amcheck`` check: pg_amcheck over every heap table and btree index of the database."""
    started = time.monotonic()
    bin_dir = bin_dir_for(data_dir, bin_dir)

    def sql(query):
        rc, out, err = psql(bin_dir, socket_dir, port, query, user=admin_user, dbname=dbname, timeout=60)
        if rc != 0:
            raise DRError(
                f"cannot prepare amcheck on the restored cluster: {err[:300]}",
                step="check the restored cluster's physical integrity",
                subject=f"{socket_dir}:{port}/{dbname}",
                hint="the admin user must be a superuser the postgres OS user reaches over the Unix socket; the "
                "amcheck extension comes with the PostgreSQL server package",
            )
        return out

    created = sql("select count(*) from pg_extension where extname = 'amcheck'") == "0"
    if created:
        sql("create extension amcheck")
    try:
        relations = sql(
            "select count(*) filter (where c.relkind in ('r', 'm', 't')), count(*) filter (where c.relkind = 'i'"
            " and am.amname = 'btree') from pg_class c left join pg_am am on am.oid = c.relam"
            " where c.relpersistence <> 't'"
        )
        argv = [
            os.path.join(bin_dir, "pg_amcheck"),
            "-h",
            socket_dir,
            "-p",
            str(port),
            "-U",
            admin_user,
            "-d",
            dbname,
            "--no-password",
            "--heapallindexed",
        ]
        try:
            proc = subprocess.run(
                as_postgres(argv),
                cwd="/",
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return verify.check_result(
                "amcheck", False, f"pg_amcheck did not finish within {timeout} s", {"argv": argv}, started
            )
    finally:
        if created:
            sql("drop extension amcheck")
    output = (proc.stdout + proc.stderr).strip()
    problems = [line for line in output.splitlines() if _AMCHECK_PROBLEM.match(line.strip())]
    heaps, indexes = [*relations.split("|"), "?", "?"][:2]
    details = {
        "database": dbname,
        "rc": proc.returncode,
        "heap_relations": int(heaps) if heaps.isdigit() else None,
        "btree_indexes": int(indexes) if indexes.isdigit() else None,
        "options": "heap, btree, --heapallindexed",
        "problems": problems[:50],
        "output_tail": output[-2000:],
    }
    if proc.returncode == 0 and not problems:
        summary = f"pg_amcheck found no corruption in {heaps} heap relations and {indexes} btree indexes of {dbname}"
        return verify.check_result("amcheck", True, summary, details, started)
    shown = problems or output.splitlines()[-3:] or [f"exit code {proc.returncode}"]
    summary = verify._listed(f"pg_amcheck reports {len(problems) or 'a'} problem(s) in {dbname}", shown, limit=3)
    return verify.check_result("amcheck", False, summary, details, started)


def verify_pitr(dsn, source_dsn=None, migrations_dir=None, amcheck=None, fail_on_pending=False, amcheck_skipped=None):
    """Every check of a cluster restored to a time; returns {ok, checks, failed, not_checked, database, msg}.

    dsn: the restored database (the runbooks' login); source_dsn: the source, for its current catalog (None: the
    catalog is not compared); amcheck: {data_dir, socket_dir, port, admin_user, dbname, bin_dir} (None: no
    physical check)."""
    files = verify.migration_files(migrations_dir) if migrations_dir else None
    checks, not_checked = [], list(NOT_CHECKED_ALWAYS)
    started = time.monotonic()
    restored = _read(dsn, "connect to the restored cluster")
    checks.append(verify._timed(verify.check_migrations(restored[0], files, None, fail_on_pending), started))
    if files is None:
        not_checked.append("migrations against the repository: no migrations folder was given")
    if source_dsn:
        started = time.monotonic()
        source = _read(source_dsn, "connect to the source (its current catalog)")
        check, why = catalog_against_source(restored, source)
        if check:
            checks.append(verify._timed(check, started))
        else:
            not_checked.append(why)
    else:
        not_checked.append("catalog: no DSN of the source was given to compare with")
    if amcheck:
        checks.append(check_amcheck(**amcheck))
    else:
        not_checked.append(f"physical integrity: {amcheck_skipped or 'pg_amcheck was not asked for'}")
    result = verify.summarize(checks, database=pg.describe_dsn(dsn), not_checked=not_checked)
    result["msg"] += f"; not checked: {len(not_checked)} item(s)"
    return result


def planned(target, source_dsn=None, migrations_dir=None, amcheck=True):
    """Check mode before the restore: the checks a real run makes, on which planned target; connects nowhere."""
    would = ["migrations"] + (["catalog"] if source_dsn else []) + (["amcheck"] if amcheck else [])
    return {
        "ok": True,
        "checks": [],
        "failed_checks": [],
        "would_run": would,
        "not_checked": list(NOT_CHECKED_ALWAYS),
        "planned_target": target,
        "skipped_reason": "check mode: the restored cluster is only planned; no database was connected to",
        "msg": f"check mode: would run {', '.join(would)} on {target} after the restore"
        + (f", the catalog against the source {pg.describe_dsn(source_dsn)}" if source_dsn else "")
        + (f", migrations against {migrations_dir}" if migrations_dir else ""),
    }

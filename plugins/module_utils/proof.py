"""Proving backups: a restore test of each backup into a throwaway database, and its record next to the manifest.

A proof restores a backup into a throwaway database on the restore server (``proof_<backup id>``), runs the full
verification and the smoke tests on it, and drops it whatever happened. Its verdict is written once, next to the
manifest, as ``proof.json`` (a conditional put, If-None-Match: a second proof of the same backup finds it and
changes nothing). The manifest itself is never touched: it is the signed commit point.

``proof.json`` is not signed: it is a report, never a reason to trust a backup. A restore that selects
``latest-proven`` still verifies the manifest's signature and every object's checksum before it reads anything.

A proof killed mid-way (its process, its host or its controller gone) leaves its throwaway database behind, under
its final name or the restore's temporary name: the next proof drops every database whose name is a throwaway's
and whose pgdr marker says a restore made it (or that has the restore's temporary name), unless a restore holds its
lock or a session is using it (a proof running now). Run one proof of a source at a time all the same: between its
restore and its checks, a running proof's database has neither. Only the source's own throwaway databases are
considered (their names end with a tag of the source's name).
"""

from __future__ import annotations

import json
import re
import time
import zlib

from ansible_collections.pgdr.supabase.plugins.module_utils import catalog, pg, timefmt
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

# The restore engine's database marker (a comment starting pgdr:) and temporary name, which the cleanup recognises.
from ansible_collections.pgdr.supabase.plugins.module_utils.logical_restore import MARKER_PREFIX, TEMP_SUFFIX
from ansible_collections.pgdr.supabase.plugins.module_utils.s3 import is_precondition_failed

PROOF_NAME = "proof.json"
PROOF_VERSION = 1
RESULTS = ("passed", "failed")
DATABASE_PREFIX = "proof"
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,15}$")


def proof_key(prefix, source, backup_id):
    return catalog.backup_prefix(prefix, source, backup_id) + PROOF_NAME


def source_tag(source):
    """Eight hex digits naming the source in throwaway names: two sources' proofs of the same backup id on one
    server never share a database (source names may hold characters a database name should not)."""
    catalog.check_source_name(source)
    return f"{zlib.crc32(source.encode()) & 0xFFFFFFFF:08x}"


def throwaway_name(backup_id, source, database_prefix=DATABASE_PREFIX):
    """The throwaway database of a backup's proof: ``proof_20261128t000000z_<source tag>``."""
    check_database_prefix(database_prefix)
    catalog.parse_backup_id(backup_id)
    return f"{database_prefix}_{backup_id.lower()}_{source_tag(source)}"


def check_database_prefix(database_prefix):
    if not PREFIX_RE.fullmatch(database_prefix or ""):
        raise DRError(
            f"throwaway database prefix {database_prefix!r} is not usable",
            step="plan proof",
            hint="use 1 to 16 lowercase letters and digits, starting with a letter (default proof)",
        )


def _throwaway_re(database_prefix, source=None):
    tag = source_tag(source) if source else "[0-9a-f]{8}"
    return re.compile(rf"^{re.escape(database_prefix)}_\d{{8}}t\d{{6}}z_{tag}(?:{re.escape(TEMP_SUFFIX)})?$")


# -- the record ---------------------------------------------------------------------------------------------------


def read_proof(target, prefix, source, backup_id):
    """The proof record of a backup, or None when it was never proven."""
    return target.get_json(proof_key(prefix, source, backup_id), step="read proof")


def build_record(
    backup_id, result, started_at, finished_at, restore_s=None, checks=(), error=None, database=None, manifest=None
):
    """The proof record: what was proven, when, how long it took (wall time and the restore itself), the checks."""
    if result not in RESULTS:
        raise DRError(f"unknown proof result {result!r}; expected passed or failed", step="record proof")
    checks = [c for c in checks or [] if isinstance(c, dict)]
    failed = [str(c.get("name")) for c in checks if not c.get("ok")]
    return {
        "proof_version": PROOF_VERSION,
        "backup_id": backup_id,
        "result": result,
        "proven_at": timefmt.iso(_moment(finished_at)),
        "started_at": timefmt.iso(_moment(started_at)),
        "duration_s": round(max(0.0, float(finished_at) - float(started_at)), 1),
        "restore_s": None if restore_s in (None, "") else round(float(restore_s), 1),
        "taken_at": (manifest or {}).get("started_at"),
        "database_size": ((manifest or {}).get("source") or {}).get("database_size"),
        "throwaway_database": database,
        "checks": {"total": len(checks), "passed": len(checks) - len(failed), "failed": failed},
        "error": error or None,
    }


def _moment(unix):

    return timefmt.from_unix(float(unix))


def write_proof(target, prefix, source, record):
    """Write the record once (If-None-Match). Returns (written, the record now in the bucket): a record already
    there (an earlier proof, or a concurrent one that won) is kept and returned."""
    key = proof_key(prefix, source, record["backup_id"])
    if target.get_json(catalog.manifest_key(prefix, source, record["backup_id"]), step="record proof") is None:
        raise DRError(
            f"backup {record['backup_id']} has no manifest: only a committed backup can be proven",
            step="record proof",
            subject=target.where(key),
            hint="list the backups with playbooks/list_backups.yml",
        )
    existing = target.get_json(key, step="record proof")
    if existing is not None:
        return False, existing
    data = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    try:
        target.put_bytes(key, data, step="record proof", if_none_match=True)
    except DRError as exc:
        if is_precondition_failed(exc):
            return False, target.get_json(key, step="record proof")
        raise
    return True, record


def annotate(target, prefix, source, rows):
    """Add each complete listing row's proof: ``proof`` (result, proven_at, duration_s, restore_s) or None."""
    for row in rows:
        if not row.get("complete"):
            continue
        record = read_proof(target, prefix, source, row["backup_id"])
        row["proof"] = (
            {k: record.get(k) for k in ("result", "proven_at", "duration_s", "restore_s")}
            if isinstance(record, dict)
            else None
        )
    return rows


# -- what to prove ------------------------------------------------------------------------------------------------


def plan(target, prefix, source, selector="latest", max_database_bytes=0, database_prefix=DATABASE_PREFIX):
    """Which backup a proof takes and whether it runs: ``action`` prove, none (proven already) or skip (too large
    for this schedule's cap). Raises when there is no complete backup."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import selection

    row = selection.resolve(target, prefix, source, selector)
    backup_id = row["backup_id"]
    manifest = selection.load_manifest(target, prefix, source, backup_id)
    size = (manifest.get("source") or {}).get("database_size")
    existing = read_proof(target, prefix, source, backup_id)
    out = {
        "backup_id": backup_id,
        "database": throwaway_name(backup_id, source, database_prefix),
        "database_size": size,
        "max_database_bytes": int(max_database_bytes or 0),
        "existing": existing,
        "proof_key": proof_key(prefix, source, backup_id),
    }
    if existing is not None:
        out["action"] = "none"
        out["reason"] = (
            f"backup {backup_id} was proven already: {existing.get('result')} at {existing.get('proven_at')}"
        )
    elif max_database_bytes and size is not None and int(size) > int(max_database_bytes):
        out["action"] = "skip"
        out["reason"] = (
            f"backup {backup_id} is of a {int(size)} byte database, over this schedule's cap of "
            f"{int(max_database_bytes)} bytes (pgdr_prove_max_database_bytes): the weekly proof "
            "(-e pgdr_prove_max_database_bytes=0) proves it"
        )
    else:
        out["action"] = "prove"
        out["reason"] = f"backup {backup_id} is unproven"
    return out


# -- throwaway databases ------------------------------------------------------------------------------------------


def leftovers(conn, dsn, source, database_prefix=DATABASE_PREFIX, keep=()):
    """Throwaway databases of earlier proofs of source on the server of conn (a session on the maintenance database
    of dsn): ``[{database, marker, sessions, restoring}]``. Only names of the throwaway form whose pgdr marker says a
    restore made them, or the restore's temporary name (a run killed between its CREATE DATABASE and its marker
    leaves it unmarked); ``keep`` names are left out. ``restoring`` names the restore that holds the database's
    restore lock now (target_lock.py), ``sessions`` counts the other sessions on it: either means a proof is running
    there."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import target_lock

    check_database_prefix(database_prefix)
    pattern = _throwaway_re(database_prefix, source)
    rows = conn.execute(
        """select d.datname, shobj_description(d.oid, 'pg_database'),
                  (select count(*) from pg_stat_activity a where a.datname = d.datname and a.pid <> pg_backend_pid())
           from pg_database d order by d.datname"""
    ).fetchall()
    found = []
    for name, comment, sessions in rows:
        if not pattern.fullmatch(name) or name in keep:
            continue
        marker = _marker(comment)
        if not marker.get("backup_id") and not name.endswith(TEMP_SUFFIX):
            continue  # not made by a restore: never ours to drop
        final = name.removesuffix(TEMP_SUFFIX)
        holder = target_lock.RestoreTargetLock(dsn, final, "proof cleanup").holder(conn)
        found.append({"database": name, "marker": marker, "sessions": int(sessions), "restoring": holder})
    return found


def _marker(comment):
    if comment and comment.startswith(MARKER_PREFIX):
        try:
            value = json.loads(comment[len(MARKER_PREFIX) :])
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}
    return {}


def check_throwaway(database, database_prefix=DATABASE_PREFIX):
    """Refuse any name but a throwaway database's (``proof_<backup id>``, or the restore's temporary name)."""
    check_database_prefix(database_prefix)
    if not _throwaway_re(database_prefix).fullmatch(database or ""):
        raise DRError(
            f"{database!r} is not a throwaway database of a proof; refusing to drop it",
            step="drop throwaway database",
            hint=f"a proof drops only databases named {database_prefix}_<backup id>_<source tag>",
        )


def database_exists(conn, database):
    return conn.execute("select 1 from pg_database where datname = %s", (database,)).fetchone() is not None


def drop_database(conn, database, database_prefix=DATABASE_PREFIX, wait_s=10):
    """Drop one throwaway database (refusing any other name). Returns True when it existed."""
    from psycopg import sql

    check_throwaway(database, database_prefix)
    if not database_exists(conn, database):
        return False
    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(database)))
            return True
        except Exception as exc:  # a session still closing; FORCE ends the others
            if time.monotonic() > deadline:
                raise DRError(
                    f"cannot drop the throwaway database {database}: {exc}",
                    step="drop throwaway database",
                    hint="drop it by hand (drop database ... with (force)); the next proof tries again",
                ) from exc
            time.sleep(0.5)


def connect_admin(dsn):
    return pg.connect(dsn, step="connect restore server", application_name="pgdr proof", autocommit=True)


# -- freshness ----------------------------------------------------------------------------------------------------


def check_freshness(target, prefix, source, max_age_s, now, rows=None):
    """The monitor's proof check: the newest proven backup was taken at most max_age_s ago, and the newest proof
    did not fail. Same shape as the freshness checks; never raises for what it finds."""
    from ansible_collections.pgdr.supabase.plugins.module_utils import freshness

    name = "proof"
    try:
        rows = catalog.list_backups(target, prefix, source, include_incomplete=False) if rows is None else rows
        complete = annotate(target, prefix, source, [r for r in rows if r["complete"]])
    except DRError as exc:
        return freshness.failed(name, exc, max_age_s)
    proven = [r for r in complete if (r.get("proof") or {}).get("result") == "passed"]
    tried = [r for r in complete if r.get("proof")]
    newest = proven[0] if proven else None
    last = tried[0] if tried else None
    extra = {
        "newest_proven_backup_id": newest["backup_id"] if newest else None,
        "newest_proven_at": newest["proof"]["proven_at"] if newest else None,
        "last_proof_backup_id": last["backup_id"] if last else None,
        "last_proof_result": last["proof"]["result"] if last else None,
    }
    parts, ok, age = [], True, None
    if newest is None:
        ok = False
        parts.append(f"no backup of {source} was ever proven (run playbooks/prove.yml after each backup)")
    else:
        age = now - freshness.to_unix(newest["started_at"])
        parts.append(
            f"newest proven backup {newest['backup_id']} (proven {newest['proof']['proven_at']}) was taken "
            f"{freshness.human(age)} ago"
        )
        if age > max_age_s:
            ok = False
            parts.append(f"older than {freshness.human(max_age_s)}: the proofs stopped or fail")
    if last is not None and last["proof"]["result"] != "passed":
        ok = False
        parts.append(f"the last proof, of backup {last['backup_id']} at {last['proof']['proven_at']}, FAILED")
    return freshness.result(name, ok, age, max_age_s, "; ".join(parts), **extra)

"""Restore verification: migration history against the repository's files and the manifest, the schema
against the manifest's object hashes, row counts against the manifest, and an optional command of the team's.

Every check is a dict ``{name, ok, summary, details, duration_s}``; a failed check names what differs (versions,
objects, tables) so the operator knows where to look. Nothing here writes to the database.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

from ansible_collections.pgdr.supabase.plugins.module_utils import pg
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError, redact

MIGRATION_FILE_RE = re.compile(r"^(?P<version>\d+)_(?P<name>.+)\.sql$")
STEP = "verify migrations"
OUTPUT_TAIL = 2000
VERIFY_CHECKS = ("migrations", "schema", "row_counts")


def _version_key(version):
    return (int(version), version)


def migration_files(folder):
    """Sorted versions of the ``<digits>_<name>.sql`` files in folder (only the digit prefix counts).

    Other files are ignored, as the Supabase CLI ignores them; two files with the same version are an error."""
    if not folder or not os.path.isdir(folder):
        raise DRError(
            "the migrations folder does not exist",
            step=STEP,
            subject=str(folder),
            hint="set the migrations path (verify_migrations_dir, or migrations_dir of pgdr.supabase.verify_restore) "
            "to the repository's supabase/migrations folder",
        )
    seen = {}
    for name in sorted(os.listdir(folder)):
        match = MIGRATION_FILE_RE.match(name)
        if not match or not os.path.isfile(os.path.join(folder, name)):
            continue
        version = match["version"]
        if version in seen:
            raise DRError(
                f"two migration files share version {version}: {seen[version]} and {name}",
                step=STEP,
                subject=str(folder),
                hint="give one of them a new timestamp prefix",
            )
        seen[version] = name
    return sorted(seen, key=_version_key)


def compare_migrations(applied, files, fail_on_pending=False):
    """Applied versions against file versions, as SUPABASE.md defines a mismatch.

    - ``extra_in_db``: applied but no file has that version;
    - ``missing_in_db``: a file older than the newest applied version that was never applied;
    - ``pending``: files newer than the newest applied version (not applied yet): a failure only with
      fail_on_pending.
    """
    applied_set, files_set = set(applied), set(files)
    newest = max(applied_set, key=_version_key) if applied_set else None
    not_applied = sorted(files_set - applied_set, key=_version_key)
    missing = [v for v in not_applied if newest is not None and _version_key(v) < _version_key(newest)]
    pending = [v for v in not_applied if v not in missing]
    extra = sorted(applied_set - files_set, key=_version_key)
    return {
        "missing_in_db": missing,
        "extra_in_db": extra,
        "pending": pending,
        "newest_applied": newest,
        "ok": not missing and not extra and not (pending and fail_on_pending),
    }


def check_result(name, ok, summary, details=None, started=None):
    """One check's result in the shape every verification and smoke check shares."""
    return {
        "name": name,
        "ok": bool(ok),
        "summary": summary,
        "details": details or {},
        "duration_s": round(time.monotonic() - started, 3) if started is not None else 0.0,
    }


def _listed(label, items, limit=10):
    items = list(items)
    shown = ", ".join(str(i) for i in items[:limit])
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"{label}: {shown}{more}"


def check_migrations(applied, files, manifest_versions, fail_on_pending=False):
    """The ``migrations`` check: history in the database vs the files and vs the manifest (either may be None)."""
    started = time.monotonic()
    details = {"applied": list(applied)}
    problems, notes = [], []
    ok = True
    if files is not None:
        comparison = compare_migrations(applied, files, fail_on_pending)
        details.update(files=list(files), **{k: v for k, v in comparison.items() if k != "ok"})
        ok = ok and comparison["ok"]
        if comparison["missing_in_db"]:
            problems.append(_listed("files never applied", comparison["missing_in_db"]))
        if comparison["extra_in_db"]:
            problems.append(_listed("applied without a file", comparison["extra_in_db"]))
        if comparison["pending"]:
            (problems if fail_on_pending else notes).append(_listed("pending", comparison["pending"]))
    if manifest_versions is not None:
        lost = sorted(set(manifest_versions) - set(applied), key=_version_key)
        gained = sorted(set(applied) - set(manifest_versions), key=_version_key)
        details.update(manifest_versions=list(manifest_versions), missing_vs_manifest=lost, extra_vs_manifest=gained)
        ok = ok and not lost and not gained
        if lost:
            problems.append(_listed("in the backup but not in the database", lost))
        if gained:
            problems.append(_listed("in the database but not in the backup", gained))
    if files is None and manifest_versions is None:
        notes.append("nothing to compare with (no migrations folder, no manifest)")
    summary = f"{len(applied)} applied" + "".join(f"; {p}" for p in problems + notes)
    return check_result("migrations", ok, summary, details, started)


def check_schema(objects, manifest_schema):
    """The ``schema`` check: restored object hashes vs the manifest's, by name; fingerprint only when the
    manifest carries no per-object hashes."""
    started = time.monotonic()
    actual_fp = pg.fingerprint(objects)
    expected = (manifest_schema or {}).get("objects")
    expected_fp = (manifest_schema or {}).get("fingerprint")
    details = {"fingerprint": actual_fp, "expected_fingerprint": expected_fp, "objects": len(objects)}
    if expected:
        missing = sorted(set(expected) - set(objects))
        extra = sorted(set(objects) - set(expected))
        changed = sorted(k for k in set(expected) & set(objects) if expected[k] != objects[k])
        details.update(missing=missing, extra=extra, changed=changed, mode="objects")
        ok = not (missing or extra or changed)
        problems = [
            _listed(label, items)
            for label, items in (("missing", missing), ("extra", extra), ("changed", changed))
            if items
        ]
        summary = f"{len(objects)} objects match the backup" if ok else "; ".join(problems)
        return check_result("schema", ok, summary, details, started)
    if not expected_fp:
        details["mode"] = "none"
        return check_result("schema", True, "skipped: the manifest holds no schema fingerprint", details, started)
    details["mode"] = "fingerprint"
    ok = actual_fp == expected_fp
    summary = (
        f"fingerprint matches the backup ({len(objects)} objects)"
        if ok
        else "fingerprint differs from the backup; the manifest given holds no per-object hashes, so the objects "
        "cannot be named: pass the manifest's key and bucket (manifest_key + s3) instead of the module result"
    )
    return check_result("schema", ok, summary, details, started)


def check_row_counts(counts, expected):
    """The ``row_counts`` check: {"schema.table": n} in the restored database vs the manifest's counts.

    A table of the manifest missing from the database counts as None."""
    started = time.monotonic()
    if expected is None:
        return check_result("row_counts", True, "skipped: the backup was taken without row counts", {}, started)
    mismatches = {
        table: {"expected": n, "actual": counts.get(table)}
        for table, n in sorted(expected.items())
        if counts.get(table) != n
    }
    details = {"tables": len(expected), "mismatches": mismatches}
    if not mismatches:
        return check_result("row_counts", True, f"{len(expected)} tables match the backup", details, started)
    described = [
        f"{t} expected {m['expected']}, got {'no table' if m['actual'] is None else m['actual']}"
        for t, m in mismatches.items()
    ]
    return check_result("row_counts", False, _listed("row counts differ", described), details, started)


def run_command(argv, dsn, cwd=None, timeout=600, name="command"):
    """Run a team's own check: argv with the database in SUPABASE_DB_URL and DATABASE_URL; its exit code decides.

    The tail of its output comes back in details, with the connection string and passwords masked."""
    started = time.monotonic()
    argv = [str(a) for a in argv or []]
    if not argv:
        raise DRError("the command is empty", step=name, hint="give the command as a list: [program, arg, ...]")
    env = {**os.environ, "SUPABASE_DB_URL": dsn, "DATABASE_URL": dsn}
    details = {"argv": [redact(a, [dsn]) for a in argv], "cwd": cwd}
    try:
        proc = subprocess.run(
            argv, cwd=cwd or None, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        details["error"] = str(exc)
        return check_result(name, False, f"cannot run {argv[0]}: not found", details, started)
    except NotADirectoryError as exc:
        details["error"] = str(exc)
        return check_result(name, False, f"cannot run {argv[0]} in {cwd}: not a directory", details, started)
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"") + (exc.stderr or b"")
        output = output.decode(errors="replace") if isinstance(output, bytes) else output
        details["output_tail"] = redact(output[-OUTPUT_TAIL:], [dsn])
        return check_result(name, False, f"{argv[0]} did not finish within {timeout} s", details, started)
    output = (proc.stdout or "") + (proc.stderr or "")
    details.update(rc=proc.returncode, output_tail=redact(output[-OUTPUT_TAIL:], [dsn]))
    ok = proc.returncode == 0
    last = details["output_tail"].strip().splitlines()[-1:] if output.strip() else []
    summary = f"{argv[0]} exited {proc.returncode}" + (f": {last[0][:200]}" if last and not ok else "")
    return check_result(name, ok, summary, details, started)


def database_exists(dsn):
    """False when the server answers that the database does not exist (a restore that was only planned);
    any other connection failure is raised."""
    try:
        conn = pg.connect(dsn, step="connect to the restored database", application_name="pgdr verify")
    except DRError as exc:
        if exc.message.startswith("the database does not exist"):
            return False
        raise
    conn.close()
    return True


def resolve_flavor(conn, manifest, flavor):
    if flavor and flavor != "auto":
        return flavor
    source = (manifest or {}).get("source") or {}
    return source.get("flavor") or pg.server_facts(conn)["flavor"]


def _counts(conn, tables):
    """Row counts of the given "schema.table" names; None for a table that does not exist."""
    present = []
    for name in tables:
        schema, _, table = name.partition(".")
        if conn.execute("select to_regclass(format('%%I.%%I', %s::text, %s::text))", (schema, table)).fetchone()[0]:
            present.append((schema, table))
    counts = {name: None for name in tables}
    counts.update(pg.row_counts(conn, present))
    return counts


def verify_restore(
    dsn,
    manifest,
    migrations_dir=None,
    flavor="auto",
    command=None,
    command_cwd=None,
    command_timeout=600,
    fail_on_pending=False,
):
    """Run every verification of a restored database; return {ok, checks, failed, database, flavor, msg}.

    manifest may be None (files only) or a manifest without per-object schema hashes (fingerprint only)."""
    files = migration_files(migrations_dir) if migrations_dir else None
    manifest = manifest or {}
    checks = []
    with pg.connect(dsn, step="connect to the restored database", application_name="pgdr verify") as conn:
        # One read-only snapshot: counts, schema and history describe the same instant.
        conn.isolation_level = pg.psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        try:
            flavor = resolve_flavor(conn, manifest, flavor)
            started = time.monotonic()
            applied = pg.migration_versions(conn)
            manifest_versions = (manifest.get("migrations") or {}).get("versions") if manifest else None
            checks.append(_timed(check_migrations(applied, files, manifest_versions, fail_on_pending), started))
            if manifest:
                started = time.monotonic()
                checks.append(_timed(check_schema(pg.schema_objects(conn, flavor), manifest.get("schema")), started))
                started = time.monotonic()
                expected = manifest.get("tables")
                counts = _counts(conn, sorted(expected)) if expected is not None else {}
                checks.append(check_row_counts(counts, expected))
                if expected is not None:
                    user = {f"{s}.{t}" for s, t in pg.user_tables(conn, flavor)}
                    checks[-1]["details"]["tables_not_in_backup"] = sorted(user - set(expected))
                _timed(checks[-1], started)
        finally:
            conn.rollback()
    if command:
        checks.append(run_command(command, dsn, cwd=command_cwd, timeout=command_timeout))
    return summarize(checks, database=pg.describe_dsn(dsn), flavor=flavor)


def _timed(check, started):
    """Count the reading that fed a check into its duration."""
    check["duration_s"] = round(time.monotonic() - started, 3)
    return check


def summarize(checks, **extra):
    """The overall result of a list of checks: ok only when every check is."""
    failed = [c["name"] for c in checks if not c["ok"]]
    msg = (
        f"{len(checks) - len(failed)}/{len(checks)} checks passed; failed: "
        + "; ".join(f"{c['name']}: {c['summary']}" for c in checks if not c["ok"])
        if failed
        else f"all {len(checks)} checks passed"
    )
    return {"ok": not failed, "checks": checks, "failed": failed, "msg": msg, **extra}

"""Restore verification: the migration history against the repository's files and the backup, and the
restored database against the backup's own record of its source, taken in the backup's snapshot:

- ``catalog``: every object of the app (schema objects, the app's objects on the platform's tables, owners, ACLs,
  default privileges, publication membership, extensions), the materialized views' populated state, sequence
  values and the cron jobs, compared with the fingerprint in the backup's index; every difference is named
  (``grant: public.notes to anon (INSERT, DELETE) is not in the backup``); what the restore disarmed on purpose
  (the marker lists it) is reported, not failed;
- ``content``: each table's content digest recomputed from the restored rows (``full``), or its row count
  (``counts``), or nothing (``off``);
- backups of manifest version 1 have no index: ``schema`` and ``row_counts`` compare with the manifest instead;
- and an optional command of the team's.

Every check is a dict ``{name, ok, summary, details, duration_s}``. Nothing here writes to the database.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time

from ansible_collections.pgdr.supabase.plugins.module_utils import fingerprint, pg, tabledata
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError, redact

MIGRATION_FILE_RE = re.compile(r"^(?P<version>\d+)_(?P<name>.+)\.sql$")
STEP = "verify migrations"
OUTPUT_TAIL = 2000
VERIFY_CHECKS = ("migrations", "catalog", "content")
VERIFY_CHECKS_V1 = ("migrations", "schema", "row_counts")
CONTENT_MODES = ("full", "counts", "off")


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


def check_catalog(
    expected_fp,
    actual_fp,
    ignore=(),
    sequences=None,
    actual_sequences=None,
    jobs=None,
    actual_jobs=None,
    disarmed=(),
    notes=(),
):
    """The ``catalog`` check: the restored catalog against the backup's fingerprint, object by object, and the
    sequence values and cron jobs against the index. ignore: keys the restore changed on purpose (disarmed)."""
    started = time.monotonic()
    diffs = fingerprint.compare(expected_fp, actual_fp, ignore=set(ignore))
    notes = list(notes)
    for name, value in sorted((sequences or {}).items()):
        have = (actual_sequences or {}).get(name)
        if have is None:
            diffs.append({"kind": "sequence", "object": name, "message": f"sequence: {name} is missing"})
        elif (have[0], have[1]) != (value[0], value[1]):
            message = (
                f"sequence: {name} is at {have[0]} (called {have[1]}); the backup says {value[0]} (called {value[1]})"
            )
            if int(have[0]) > int(value[0]):
                notes.append(message + " (ahead: written to since the restore)")
            else:
                diffs.append({"kind": "sequence", "object": name, "message": message})
    if jobs is not None:
        diffs += _compare_jobs(jobs, actual_jobs or [], disarmed)
    for item in disarmed:
        notes.append(f"disarmed: {item['key']} {item['state']}")
    details = {
        "differences": [d["message"] for d in diffs],
        "objects": len(expected_fp.get("objects", {})),
        "notes": notes,
        "ignored": sorted(ignore),
    }
    if diffs:
        summary = _listed(f"{len(diffs)} difference(s)", [d["message"] for d in diffs], limit=5)
    else:
        summary = f"{len(expected_fp.get('objects', {}))} objects, their owners and privileges match the backup"
        if notes:
            summary += f" ({len(notes)} note(s))"
    return check_result("catalog", not diffs, summary, details, started)


def _compare_jobs(expected, actual, disarmed):
    def key(job):
        return (job.get("jobname"), job["schedule"], job["command"], job["database"], job["username"])

    diffs = []
    inactive_on_purpose = {d["key"] for d in disarmed if d["kind"] == "cron"}
    have = {key(j): j for j in actual}
    for job in expected:
        found = have.pop(key(job), None)
        label = job.get("jobname") or job["command"][:60]
        if found is None:
            diffs.append({"kind": "cron", "object": label, "message": f"cron job: {label} is missing"})
        elif bool(found["active"]) != bool(job["active"]) and f"cron {label}" not in inactive_on_purpose:
            state = "active" if found["active"] else "inactive"
            diffs.append({"kind": "cron", "object": label, "message": f"cron job: {label} is {state}"})
    for job in have.values():
        label = job.get("jobname") or job["command"][:60]
        diffs.append({"kind": "cron", "object": label, "message": f"cron job: {label} is not in the backup"})
    return diffs


def read_cron_jobs(conn, app_roles):
    if not conn.execute("select to_regclass('cron.job') is not null").fetchone()[0]:
        return None
    rows = conn.execute("select jobname, schedule, command, database, username, active from cron.job").fetchall()
    return [
        {"jobname": j, "schedule": s, "command": c, "database": d, "username": u, "active": a}
        for j, s, c, d, u, a in rows
        if u in app_roles
    ]


def read_sequences(conn, names):
    """{name: [last_value, is_called]} of the index's sequences in the restored database (missing ones left out)."""
    found = {}
    for name, value in names.items():
        ident = value[2]
        if conn.execute("select to_regclass(%s) is not null", (ident,)).fetchone()[0]:
            last, called = conn.execute(f"select last_value, is_called from {ident}").fetchone()  # noqa: S608
            found[name] = [last, called]
    return found


def content_tasks(conn, index):
    """[(table, columns, pages)] to digest: whole tables, or ranges of pages of the big ones (in parallel)."""
    columns = {}
    for sections in index.get("sections", {}).values():
        for section in sections:
            columns.setdefault(
                f"{section['schema']}.{section['table']}", (section["schema"], section["table"], section["columns"])
            )
    tasks = []
    for key in sorted(index.get("content", {})):
        schema, table, cols = columns.get(key, (*key.split(".", 1), None))
        row = conn.execute(
            "select pg_relation_size(c.oid) + coalesce(pg_relation_size(nullif(c.reltoastrelid, 0)), 0),"
            " pg_relation_size(c.oid) / current_setting('block_size')::int"
            " from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = %s and c.relname = %s",
            (schema, table),
        ).fetchone()
        if row is None or cols is None:
            tasks.append((key, schema, table, cols, "missing"))
            continue
        size, pages = row
        if size > tabledata.CHUNK_BYTES and pages > 1:
            count = -(-size // tabledata.CHUNK_BYTES)
            step = -(-pages // count)
            for start in range(0, pages, step):
                tasks.append((key, schema, table, cols, (start, start + step if start + step < pages else None)))
        else:
            tasks.append((key, schema, table, cols, None))
    return tasks


def check_content(dsn, index, mode="full", jobs=2, counts=None, expected_counts=None):
    """The ``content`` check: every table's content digest (``full``) or row count (``counts``) against the
    backup's; ``off`` reports that nothing was compared."""
    started = time.monotonic()
    if mode == "off":
        return check_result("content", True, "not compared (content verification is off)", {"mode": "off"}, started)
    if mode == "counts":
        result = check_row_counts(counts or {}, expected_counts)
        result.update(name="content")
        result["details"]["mode"] = "counts"
        result["summary"] = f"row counts: {result['summary']}"
        return result
    expected = index.get("content", {})
    with pg.connect(dsn, step="connect to the restored database", application_name="pgdr verify") as conn:
        tasks = content_tasks(conn, index)

    sessions, opened = threading.local(), []

    def digest(task):
        key, schema, table, cols, pages = task
        if pages == "missing":
            return key, None
        conn = getattr(sessions, "conn", None)
        if conn is None:  # one session a worker, for all its tables (thousands of tables: thousands of logins)
            conn = sessions.conn = pg.connect(
                dsn, step="connect to the restored database", application_name="pgdr verify"
            )
            opened.append(conn)
            # Each COPY its own read-only transaction: no lock outlives its table (a session holding thousands of
            # them would exhaust the server's lock table).
            conn.autocommit = True
            conn.execute("set default_transaction_read_only = on")
            tabledata.apply_settings(conn)
        return key, tabledata.table_digest(conn, schema, table, cols, pages)

    try:
        results = tabledata.Workers(jobs).run(tasks, digest)
    finally:
        for conn in opened:
            conn.close()
    actual = {}
    for key, value in results:
        if value is None:
            actual[key] = None
        else:
            actual[key] = actual[key].merge(value) if actual.get(key) else value
    differences = []
    for key in sorted(expected):
        want, have = tabledata.Digest.parse(expected[key]), actual.get(key)
        if have is None:
            differences.append(f"content: {key} is missing")
        elif have.text() != want.text():
            how = f"{have.rows} rows, the backup's {want.rows}" if have.rows != want.rows else "same row count"
            differences.append(f"content: {key} differs (digest; {how})")
    rows = sum(d.rows for d in actual.values() if d)
    details = {
        "mode": "full",
        "tables": len(expected),
        "rows": rows,
        "differences": differences,
        "workers": jobs,
        "tasks": len(tasks),
    }
    summary = (
        _listed(f"{len(differences)} table(s) differ", differences, limit=5)
        if differences
        else f"{len(expected)} tables ({rows} rows) have the backup's content digest"
    )
    return check_result("content", not differences, summary, details, started)


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
    index=None,
    content="full",
    jobs=2,
    marker=None,
):
    """Run every verification of a restored database; return {ok, checks, failed, database, flavor, msg}.

    With the backup's index (manifest version 2): ``migrations``, ``catalog`` and ``content`` (``content`` is
    full, counts or off). Without it: ``migrations``, ``schema`` and ``row_counts`` against the manifest (which may
    be None: files only). marker: the restored database's marker (what the restore disarmed on purpose)."""
    if content not in CONTENT_MODES:
        raise DRError(
            f"unknown content verification {content!r}; expected one of {', '.join(CONTENT_MODES)}", step="verify"
        )
    files = migration_files(migrations_dir) if migrations_dir else None
    manifest = manifest or {}
    checks = []
    counts = {}
    with pg.connect(dsn, step="connect to the restored database", application_name="pgdr verify") as conn:
        # One read-only snapshot: the catalog, counts and history describe the same instant.
        conn.isolation_level = pg.psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        try:
            flavor = resolve_flavor(conn, manifest, flavor)
            started = time.monotonic()
            applied = pg.migration_versions(conn)
            manifest_versions = (manifest.get("migrations") or {}).get("versions") if manifest else None
            checks.append(_timed(check_migrations(applied, files, manifest_versions, fail_on_pending), started))
            expected = manifest.get("tables")
            if index:
                started = time.monotonic()
                scope = fingerprint.Scope(conn, flavor)
                actual_fp = fingerprint.capture(conn, flavor, scope)
                disarmed = (marker or {}).get("disarmed", [])
                skipped = [f"extension {name}" for name in (marker or {}).get("extensions_skipped", [])]
                check = check_catalog(
                    index["fingerprint"],
                    actual_fp,
                    ignore=[d["key"] for d in disarmed if d["kind"] == "webhook"] + skipped,
                    sequences=index.get("sequences"),
                    actual_sequences=read_sequences(conn, index.get("sequences", {})),
                    jobs=index.get("cron_jobs")
                    if "pg_cron" not in (marker or {}).get("extensions_skipped", [])
                    else None,
                    actual_jobs=read_cron_jobs(conn, scope.app_roles),
                    disarmed=disarmed,
                    notes=[f"left out by the restore (skip_extensions): {', '.join(skipped)}"] if skipped else (),
                )
                checks.append(_timed(check, started))
                if content == "counts" and expected is not None:
                    counts = _counts(conn, sorted(expected))
            elif manifest:
                started = time.monotonic()
                checks.append(_timed(check_schema(pg.schema_objects(conn, flavor), manifest.get("schema")), started))
                started = time.monotonic()
                counts = _counts(conn, sorted(expected)) if expected is not None else {}
                checks.append(check_row_counts(counts, expected))
                if expected is not None:
                    user = {f"{s}.{t}" for s, t in pg.user_tables(conn, flavor)}
                    checks[-1]["details"]["tables_not_in_backup"] = sorted(user - set(expected))
                _timed(checks[-1], started)
        finally:
            conn.rollback()
    if index:
        checks.append(check_content(dsn, index, content, jobs, counts, expected))
    if command:
        checks.append(run_command(command, dsn, cwd=command_cwd, timeout=command_timeout))
    return summarize(checks, database=pg.describe_dsn(dsn), flavor=flavor, content=content if index else None)


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

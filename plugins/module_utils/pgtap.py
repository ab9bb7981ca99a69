"""The app's own pgTAP suite (``supabase/tests``, as ``supabase test db`` runs it) against a restored database.

Each test file (``*.sql`` or ``*.pg``, in sub-folders too) runs with ``pg_prove`` as the connecting role (the
runbooks' non-superuser ``postgres``), in one transaction that is always rolled back: the engine writes a small
wrapper per file that opens the transaction (unless the file's first statement does), includes the file, and rolls
back (unless the file's last statement does). Before anything runs, each file is read and refused when it could
end the transaction or leave it (``COMMIT``, ``\\c``, ``\\i``, statements after its ``ROLLBACK``).

pgTAP itself is created in the ``extensions`` schema only when the database lacks it, and dropped again
afterwards, so the restored copy still equals its source (verification compares the catalogs). Extension files
come from the PostgreSQL server's packages (Debian ``postgresql-15-pgtap``); ``pg_prove`` from
``libtap-parser-sourcehandler-pgtap-perl``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

from ansible_collections.pgdr.supabase.plugins.module_utils import pg, smoke
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError, redact
from ansible_collections.pgdr.supabase.plugins.module_utils.verify import check_result

STEP = "pgtap tests"
SUFFIXES = (".sql", ".pg")
SCHEMA = "extensions"
EXTENSION = "pgtap"
DEFAULT_TIMEOUT = 300
NAME_PREFIX = "pgtap:"
OUTPUT_TAIL = 2000
SHOWN_FAILURES = 5

# psql meta-commands that leave the file's transaction or run something outside it.
REFUSED_META = {"c", "connect", "i", "ir", "include", "include_relative", "!", "gexec", "o", "out", "w", "write"}
# psql meta-commands that send the query buffer, as ';' does.
SENDING_META = {"g", "gx", "gset", "gdesc"}
_BEGIN = re.compile(r"^(begin|start\s+transaction)\b", re.IGNORECASE)
_ROLLBACK = re.compile(r"^(rollback|abort)\b(?!\s+(work\s+|transaction\s+)?to\b)(?!\s+prepared\b)", re.IGNORECASE)
_ENDING = re.compile(r"^(commit|end|prepare\s+transaction|rollback\s+prepared)\b|^(commit\s+prepared)\b", re.IGNORECASE)
_PLAN = re.compile(r"(?<![\w.])(?:\w+\.)?plan\s*\(\s*(\d+)\s*\)", re.IGNORECASE)
_NO_PLAN = re.compile(r"(?<![\w.])(?:\w+\.)?no_plan\s*\(\s*\)", re.IGNORECASE)
_CREATE_EXTENSION = re.compile(
    r"^create\s+extension\s+(?:if\s+not\s+exists\s+)?(\"(?:[^\"]|\"\")+\"|[A-Za-z_][\w$-]*)", re.IGNORECASE
)
# How PostgreSQL says an extension is not there: not installable on this server, or not installed in this database.
_MISSING_EXTENSION = (
    re.compile(r'extension "(?P<name>[^"]+)" is not available'),
    re.compile(r'could not open extension control file "[^"]*/(?P<name>[^/"]+)\.control"'),
    re.compile(r'required extension "(?P<name>[^"]+)" is not installed'),
    re.compile(r'extension "(?P<name>[^"]+)" does not exist'),
)
_TAP_TEST = re.compile(r"^(?P<not>not )?ok (?P<number>\d+)(?:\s*-?\s*(?P<description>.*?))?\s*$")
_TAP_PLAN = re.compile(r"^1\.\.(?P<count>\d+)")
_DIRECTIVE = re.compile(r"\s*#\s*(?P<kind>TODO|SKIP)\b\s*(?P<reason>.*)$", re.IGNORECASE)
_PSQL_ERROR = re.compile(r"^psql:(?P<file>.+?):(?P<line>\d+):\s*(?P<severity>ERROR|FATAL):\s*(?P<message>.*)$")
# An error as the server reports it, with or without psql's file:line prefix, and the lines that belong to it.
_ERROR_LINE = re.compile(r"^(?:psql:.+?:\d+:\s*)?(?:ERROR|FATAL):")
_ERROR_MORE = re.compile(r"^(?:DETAIL|HINT|CONTEXT|LINE \d+):")
_PSQL_FAILED = re.compile(r"^psql: error: (?P<message>.*)$")
# libpq keywords as the environment variables psql reads, so that nothing of the connection is on a command line.
LIBPQ_ENV = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "service": "PGSERVICE",
    "options": "PGOPTIONS",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "sslpassword": "PGSSLPASSWORD",
    "channel_binding": "PGCHANNELBINDING",
    "gssencmode": "PGGSSENCMODE",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "requiressl": "PGREQUIRESSL",
}


def _bad(message, path, hint=None):
    return DRError(
        message,
        step="load pgtap tests",
        subject=str(path),
        hint=hint or "fix the test file: each file runs in one transaction that pgdr rolls back",
    )


def resolve_dir(pgtap_dir=None, migrations_dir=None):
    """The pgTAP folder to run: pgtap_dir when given (it must exist), else the ``tests`` folder next to the
    migrations folder when there is one (``supabase/tests`` beside ``supabase/migrations``), else None."""
    if pgtap_dir:
        if not os.path.isdir(pgtap_dir):
            raise DRError(
                "the pgTAP test folder does not exist",
                step="load pgtap tests",
                subject=str(pgtap_dir),
                hint="set pgdr_pgtap_dir (smoke_tests_pgtap_dir) to the app's supabase/tests folder, or leave it "
                "empty to use the one next to the migrations folder when there is one",
            )
        return os.path.abspath(pgtap_dir)
    if migrations_dir:
        sibling = os.path.join(os.path.dirname(os.path.abspath(os.path.normpath(migrations_dir))), "tests")
        if os.path.isdir(sibling):
            return sibling
    return None


def scan(text):
    """The top-level SQL statements of a psql script, as [(first line, text)], and its meta-commands as
    [(line, name)]. Quotes, dollar quotes and comments are respected; ``\\g``/``\\gset`` end a statement as ``;``
    does."""
    statements, meta, buf = [], [], []
    start = None
    i, n, line = 0, len(text), 1

    def flush():
        nonlocal buf, start
        statement = "".join(buf).strip()
        if statement:
            statements.append((start, statement))
        buf, start = [], None

    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
            buf.append(ch)
            i += 1
        elif ch == "-" and text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end == -1 else end
        elif ch == "/" and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end == -1:
                raise ValueError(f"line {line}: unterminated /* comment")
            line += text.count("\n", i, end)
            buf.append(" ")
            i = end + 2
        elif ch == "\\":
            end = text.find("\n", i)
            end = n if end == -1 else end
            command = re.match(r"\\([^\s\\]*)", text[i:end]).group(1)
            meta.append((line, command))
            if command in SENDING_META:
                flush()
            i = end
        elif ch in ("'", '"') or (ch == "$" and smoke.dollar_tag(text, i)):
            j = smoke.quoted_end(text, i, f"line {line}: ")
            if start is None:
                start = line
            buf.append(text[i:j])
            line += text.count("\n", i, j)
            i = j
        elif ch == ";":
            flush()
            i += 1
        else:
            if start is None and not ch.isspace():
                start = line
            buf.append(ch)
            i += 1
    flush()
    return statements, meta


def plan_count(statements):
    """The number of tests a file plans (``select plan(12)``), or None (``no_plan()`` or no plan at all)."""
    for _unused, statement in statements:
        code = re.sub(r"'(?:[^']|'')*'", "''", statement)
        if _NO_PLAN.search(code):
            return None
        match = _PLAN.search(code)
        if match:
            return int(match.group(1))
    return None


def extensions_created(statements):
    """Names of the extensions a file creates (other than pgTAP itself), in order."""
    names = []
    for _unused, statement in statements:
        match = _CREATE_EXTENSION.match(statement)
        if match:
            name = match.group(1)
            name = name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()
            if name != EXTENSION and name not in names:
                names.append(name)
    return names


def transaction_shape(statements, meta, path):
    """(opens, closes): whether the file's first statement opens the transaction and whether its last one rolls
    it back. A DRError naming the line when the file could commit or run anything outside the transaction."""
    for line, command in meta:
        if command in REFUSED_META:
            raise _bad(
                f"line {line}: psql's \\{command} is not allowed in a test file: it leaves the transaction pgdr "
                "rolls back (or runs something outside it)",
                path,
                hint="inline what the file includes, and keep the test on the one connection pg_prove opens",
            )
    in_transaction = True  # the wrapper opens it when the file does not
    for line, statement in statements:
        if _ENDING.match(statement):
            raise _bad(
                f"line {line}: {statement.split()[0].upper()} is not allowed in a test file: every file runs in one "
                "transaction that is rolled back",
                path,
                hint="end the file with ROLLBACK (or nothing: pgdr rolls back itself), never COMMIT",
            )
        if _ROLLBACK.match(statement):
            in_transaction = False
        elif _BEGIN.match(statement):
            in_transaction = True
        elif not in_transaction:
            raise _bad(
                f"line {line}: a statement after the file's ROLLBACK would run outside a transaction and stay",
                path,
                hint="move it before the ROLLBACK, or open a new transaction with BEGIN first",
            )
    opens = bool(statements) and bool(_BEGIN.match(statements[0][1]))
    return opens, not in_transaction


def load_file(path, root):
    """A test file's definition: name (its path under the folder), plan count, extensions it creates and how
    it treats the transaction."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise _bad(f"cannot read the test file: {exc}", path) from exc
    try:
        statements, meta = scan(text)
    except ValueError as exc:
        raise _bad(str(exc), path) from exc
    if not statements:
        raise _bad("the test file holds no SQL statement", path)
    opens, closes = transaction_shape(statements, meta, path)
    return {
        "name": NAME_PREFIX + os.path.relpath(path, root),
        "path": os.path.abspath(path),
        "plan": plan_count(statements),
        "extensions": extensions_created(statements),
        "opens": opens,
        "closes": closes,
    }


def load_suite(folder):
    """Every test file under folder, sorted by path (as pg_prove orders them); [] for no folder. A folder without
    any test file is an error (a wrong folder would otherwise test nothing)."""
    if not folder:
        return []
    paths = []
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        paths += [os.path.join(current, f) for f in files if f.endswith(SUFFIXES) and not f.startswith(".")]
    if not paths:
        raise DRError(
            "the pgTAP test folder holds no *.sql or *.pg test file",
            step="load pgtap tests",
            subject=str(folder),
            hint="point pgdr_pgtap_dir at the app's supabase/tests folder",
        )
    return [load_file(p, folder) for p in sorted(paths, key=lambda p: os.path.relpath(p, folder))]


def planned(suite):
    """What check mode shows: each file and the number of tests it plans (None: no plan declared)."""
    return [{"name": t["name"], "file": t["path"], "plan": t["plan"], "extensions": t["extensions"]} for t in suite]


# --- TAP ------------------------------------------------------------------------------------------------------


def parse_tap(text):
    """The TAP of one file (pg_prove --verbose output or psql's own): {"planned", "tests": [{number, ok,
    description, directive, diagnostics}], "diagnostics": lines before the first test}. Harness lines
    (``Dubious ...``, ``Failed 1/3 subtests``, a lone ``ok``) are not TAP and are left out."""
    planned_count, tests, leading = None, [], []
    for raw in text.splitlines():
        line = raw.strip()
        if planned_count is None and (match := _TAP_PLAN.match(line)):
            planned_count = int(match["count"])
            continue
        match = _TAP_TEST.match(line)
        if match:
            description = match["description"] or ""
            directive = None
            found = _DIRECTIVE.search(description)
            if found:
                directive = f"{found['kind'].upper()} {found['reason']}".strip()
                description = description[: found.start()].strip()
            tests.append(
                {
                    "number": int(match["number"]),
                    "ok": match["not"] is None,
                    "description": description,
                    "directive": directive,
                    "diagnostics": [],
                }
            )
            continue
        if line.startswith("#"):
            text_line = line[1:].strip()
            if text_line.startswith("Looks like "):
                continue
            (tests[-1]["diagnostics"] if tests else leading).append(text_line)
    return {"planned": planned_count, "tests": tests, "diagnostics": leading}


def failed_tests(tap):
    """The failing tests of a parsed TAP stream (a TODO test that fails does not count, as in TAP)."""
    return [t for t in tap["tests"] if not t["ok"] and not (t["directive"] or "").startswith("TODO")]


def missing_extension(text):
    """The name of the extension the error output's errors say is missing, or None. Only errors count: a NOTICE
    such as 'extension "x" does not exist, skipping' (DROP EXTENSION IF EXISTS) is not a failure."""
    errors, in_error = [], False
    for raw in (text or "").splitlines():
        line = raw.strip()
        if _ERROR_LINE.match(line):
            in_error = True
        elif not _ERROR_MORE.match(line):
            in_error = False
        if in_error:
            errors.append(line)
    for pattern in _MISSING_EXTENSION:
        match = pattern.search("\n".join(errors))
        if match:
            return match["name"]
    return None


def first_error(stderr):
    """(line, message) of the first psql ERROR/FATAL in the error output (line 0: psql could not connect), or
    None."""
    for raw in (stderr or "").splitlines():
        match = _PSQL_ERROR.match(raw.strip())
        if match:
            return int(match["line"]), match["message"].strip()
        match = _PSQL_FAILED.match(raw.strip())
        if match:
            return 0, "psql could not connect: " + match["message"].strip()
    return None


def judge(test, tap, returncode, stderr, missing=None):
    """(ok, summary, details) of one file from its TAP, pg_prove's exit code and the error output."""
    failures = failed_tests(tap)
    ran = len(tap["tests"])
    planned_count = tap["planned"]
    details = {
        "file": test["path"],
        "planned": planned_count,
        "ran": ran,
        "passed": sum(1 for t in tap["tests"] if t["ok"]),
        "failed_tests": [
            {"number": t["number"], "description": t["description"], "diagnostics": t["diagnostics"]} for t in failures
        ],
    }
    if missing is None:
        missing = missing_extension(stderr)
    error = first_error(stderr)
    if missing:
        details["missing_extension"] = missing
    elif error:
        details["error"] = {"line": error[0], "message": error[1]}
    verdict = _verdict(tap, failures, error, missing) or _count_verdict(tap, returncode)
    return not verdict, verdict or f"{ran}/{planned_count} tests passed", details


def _verdict(tap, failures, error, missing):
    """Why a file failed (a missing extension, failing tests, an error), in one line, or ""."""
    ran, planned_count = len(tap["tests"]), tap["planned"]
    if missing:
        return (
            f"needs the extension {missing}, which this database does not have "
            "(install it on the server, or create it in the restored database before the tests)"
        )
    if failures:
        shown = "; ".join(f"#{t['number']} {t['description'] or '(no description)'}" for t in failures[:SHOWN_FAILURES])
        more = f" (+{len(failures) - SHOWN_FAILURES} more)" if len(failures) > SHOWN_FAILURES else ""
        return f"{len(failures)} of {planned_count or ran} tests failed: {shown}{more}"
    if error:
        where = f"stopped after {ran} of {planned_count or '?'} tests: line {error[0]}: " if error[0] else ""
        return where + error[1]
    return ""


def _count_verdict(tap, returncode):
    """Why a file whose tests all passed still failed (no plan, fewer tests than planned, an exit code), or ""."""
    ran, planned_count = len(tap["tests"]), tap["planned"]
    if planned_count is None:
        return f"no plan in the TAP output ({ran} tests ran); the file must call plan(n) or no_plan()"
    if ran != planned_count:
        return f"planned {planned_count} tests but ran {ran}"
    if returncode != 0:
        return f"pg_prove exited {returncode} with every test passing (see the output)"
    return ""


# --- the database side ------------------------------------------------------------------------------------------


def pgtap_installed(conn):
    """The schema pgTAP is installed in, or None."""
    row = conn.execute(
        "select n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace where e.extname = %s",
        (EXTENSION,),
    ).fetchone()
    return row[0] if row else None


def available_extensions(conn, names):
    """Of the given extension names, those the server has installable (pg_available_extensions)."""
    if not names:
        return set()
    rows = conn.execute("select name from pg_available_extensions where name = any(%s)", (list(names),)).fetchall()
    return {r[0] for r in rows}


def _create(dsn, who):
    with pg.connect(dsn, step="connect to install pgTAP", application_name="pgdr pgtap") as conn:
        conn.execute(f"create extension {EXTENSION} with schema {SCHEMA}")
        # Tests call pgTAP as anon/authenticated too (set local role); an app that narrowed the default
        # privileges for functions (revoke ... from public) would leave them refused otherwise. The grants go
        # with the extension when it is dropped.
        conn.execute(
            "do $$ declare f regprocedure; begin"
            " for f in select d.objid::regprocedure from pg_depend d join pg_extension e on e.oid = d.refobjid"
            "  where e.extname = 'pgtap' and d.classid = 'pg_proc'::regclass and d.deptype = 'e' loop"
            "  execute format('grant execute on function %s to public', f); end loop; end $$"
        )
        conn.commit()
    return who


def ensure_pgtap(dsn, admin_dsn=None):
    """pgTAP in the database: {"created": bool, "schema", "by"}. Created in ``extensions`` only when missing, as
    the connecting role, or as admin_dsn's role when that one may not."""
    with pg.connect(dsn, step="connect for pgtap tests", application_name="pgdr pgtap") as conn:
        schema = pgtap_installed(conn)
        if schema:
            return {"created": False, "schema": schema, "by": None}
        if not available_extensions(conn, [EXTENSION]):
            raise DRError(
                "pgTAP is not installed on the database server (no pgtap in pg_available_extensions)",
                step=STEP,
                subject=pg.describe_dsn(dsn),
                hint="install the server package (Debian: postgresql-15-pgtap) on the restored database's server",
            )
        has_schema = conn.execute("select to_regnamespace(%s) is not null", (SCHEMA,)).fetchone()[0]
        if not has_schema:
            raise DRError(
                f"the database has no {SCHEMA} schema to install pgTAP into",
                step=STEP,
                subject=pg.describe_dsn(dsn),
                hint=f"create the schema {SCHEMA} (every Supabase project has it), or install pgTAP yourself",
            )
    try:
        return {"created": True, "schema": SCHEMA, "by": _create(dsn, "dsn")}
    except pg.psycopg.errors.InsufficientPrivilege as exc:
        if not admin_dsn:
            raise DRError(
                f"this login may not create the pgtap extension: {exc.diag.message_primary}",
                step=STEP,
                subject=pg.describe_dsn(dsn),
                hint="give the admin connection (pgdr_pgtap_admin_dsn / smoke_tests_pgtap_admin_dsn), or create "
                f"pgTAP in the {SCHEMA} schema before the tests",
            ) from exc
    return {"created": True, "schema": SCHEMA, "by": _create(admin_dsn, "admin_dsn")}


def drop_pgtap(dsn, admin_dsn, installed):
    """Drop pgTAP again when this run created it (with the connection that created it)."""
    if not installed or not installed.get("created"):
        return
    who = admin_dsn if installed.get("by") == "admin_dsn" else dsn
    with pg.connect(who, step="connect to remove pgTAP", application_name="pgdr pgtap") as conn:
        conn.execute(f"drop extension if exists {EXTENSION}")
        conn.commit()


def sequence_state(conn):
    """{"schema.name": last value or None (never called)} of every sequence this login may read; None values
    also stand for sequences it may not read (they cannot be told apart, and are left alone)."""
    rows = conn.execute(
        "select format('%I.%I', schemaname, sequencename), last_value from pg_sequences"
        " where has_sequence_privilege(format('%I.%I', schemaname, sequencename), 'SELECT')"
    ).fetchall()
    return dict(rows)


def reset_sequences(dsn, before):
    """Set back the sequences the suite advanced (nextval is not rolled back with the transaction), so the
    database is left as it was: (names reset, names this login may not set back)."""
    reset, refused = [], []
    with pg.connect(dsn, step="connect to reset sequences", application_name="pgdr pgtap") as conn:
        after = sequence_state(conn)
        for name, value in sorted(after.items()):
            if name not in before or before[name] == value:
                continue
            try:
                with conn.transaction():
                    if before[name] is None:
                        conn.execute(
                            "select setval(%s::regclass, (select start_value from pg_sequences"
                            " where format('%%I.%%I', schemaname, sequencename) = %s), false)",
                            (name, name),
                        )
                    else:
                        conn.execute("select setval(%s::regclass, %s, true)", (name, before[name]))
                reset.append(name)
            except pg.psycopg.errors.InsufficientPrivilege:
                refused.append(name)
        conn.commit()
    return reset, refused


def sequences_result(refused, before):
    """The failed check for sequences the suite advanced that could not be set back (verification would name
    them as differences from the backup)."""
    fixes = "; ".join(
        f"select setval('{n}', {before[n]}, true)" if before[n] is not None else f"alter sequence {n} restart"
        for n in refused
    )
    return check_result(
        NAME_PREFIX + "sequences",
        False,
        f"the suite advanced {', '.join(refused)} and this login may not set them back: as their owner run {fixes}",
        {"sequences": refused},
    )


# --- running ----------------------------------------------------------------------------------------------------


def wrapper_text(test, schema):
    """The psql script pg_prove runs for a test file: the pgTAP schema on the search path, the transaction, the
    file, the rollback."""
    lines = [
        "\\set ON_ERROR_STOP 1",
        f"do $pgdr$ begin if not ({_literal(schema)} = any(current_schemas(false))) then perform"
        f" set_config('search_path', current_setting('search_path') || ', ' || quote_ident({_literal(schema)}),"
        " false); end if; end $pgdr$;",
    ]
    if not test["opens"]:
        lines.append("begin;")
    lines.append("\\i " + _psql_quote(test["path"]))
    if not test["closes"]:
        lines.append("rollback;")
    return "\n".join(lines) + "\n"


def _literal(text):
    return "'" + text.replace("'", "''") + "'"


def _psql_quote(path):
    return "'" + path.replace("\\", "\\\\").replace("'", "\\'") + "'"


def client_env(dsn):
    """The environment psql (under pg_prove) connects with: the connection string as PG* variables."""
    try:
        params = pg.conninfo_to_dict(dsn)
    except pg.psycopg.ProgrammingError as exc:
        raise DRError("the connection string cannot be parsed", step=STEP, hint="check the DSN") from exc
    unknown = sorted(set(params) - set(LIBPQ_ENV))
    if unknown:
        raise DRError(
            f"the connection string uses options psql cannot take from the environment: {', '.join(unknown)}",
            step=STEP,
            subject=pg.describe_dsn(dsn),
            hint="use a connection string with host, port, dbname, user, password and ssl options only",
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({LIBPQ_ENV[k]: str(v) for k, v in params.items()})
    env["PGAPPNAME"] = "pgdr pgtap"
    return env


def find_tools(dsn):
    """(pg_prove, psql) paths; psql of the server's major version when installed."""
    pg_prove = shutil.which("pg_prove")
    if not pg_prove:
        raise DRError(
            "pg_prove not found",
            step=STEP,
            subject="PATH",
            hint="install it (Debian: libtap-parser-sourcehandler-pgtap-perl; 'make setup' does)",
        )
    with pg.connect(dsn, step="connect for pgtap tests", application_name="pgdr pgtap") as conn:
        version = pg.server_facts(conn)["server_version_num"]
    return pg_prove, pg.find_binary("psql", server_version_num=version)


def _terminate(dsn, application_name):
    """End the server session of a file that ran past its timeout (its transaction rolls back)."""
    with pg.connect(dsn, step="end a pgtap session", application_name="pgdr pgtap") as conn:
        conn.execute(
            "select pg_terminate_backend(pid, 5000) from pg_stat_activity"
            " where application_name = %s and datname = current_database()",
            (application_name,),
        )


def run_file(test, dsn, tools, schema, workdir, timeout=DEFAULT_TIMEOUT, secrets=()):
    """Run one test file with pg_prove through its wrapper; its check result."""
    started = time.monotonic()
    pg_prove, psql = tools
    handle, wrapper = tempfile.mkstemp(dir=workdir, suffix=".sql")
    with os.fdopen(handle, "w", encoding="utf-8") as fh:
        fh.write(wrapper_text(test, schema))
    env = client_env(dsn)
    # A name of its own, so that a file past its timeout can have its server session ended too.
    env["PGAPPNAME"] = f"pgdr pgtap {uuid.uuid4().hex[:12]}"
    argv = [pg_prove, "--verbose", "--nocolor", "--norc", "--ext", ".sql", "--psql-bin", psql, wrapper]
    secrets = [dsn, *secrets]
    try:
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
    except OSError as exc:
        raise DRError(f"cannot run pg_prove: {exc}", step=STEP, subject=pg_prove, hint="reinstall pg_prove") from exc
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        _terminate(dsn, env["PGAPPNAME"])
        tap = parse_tap(stdout)
        details = {"file": test["path"], "planned": tap["planned"], "ran": len(tap["tests"])}
        details["output_tail"] = redact((stdout + stderr)[-OUTPUT_TAIL:], secrets)
        summary = f"did not finish within {timeout} s (after {len(tap['tests'])} tests); its transaction rolled back"
        return check_result(test["name"], False, summary, details, started)
    tap = parse_tap(stdout)
    ok, summary, details = judge(test, tap, proc.returncode, stderr.replace(wrapper, test["path"]))
    if not ok and stderr.strip():
        details["output_tail"] = redact(stderr.replace(wrapper, test["path"]).strip()[-OUTPUT_TAIL:], secrets)
    return check_result(test["name"], ok, redact(summary, secrets), details, started)


def missing_result(test, missing):
    """The result of a file that creates an extension the server does not have: it is not run."""
    tap = {"planned": test["plan"], "tests": [], "diagnostics": []}
    ok, summary, details = judge(test, tap, 0, "", missing=missing)
    return check_result(test["name"], ok, summary, details)


def run_suite(dsn, suite, admin_dsn=None, timeout=DEFAULT_TIMEOUT):
    """Run every file of the suite; one check result per file. pgTAP is installed for the run when missing and
    removed again afterwards, whatever happens in between."""
    if not suite:
        return []
    tools = find_tools(dsn)
    with pg.connect(dsn, step="connect for pgtap tests", application_name="pgdr pgtap") as conn:
        wanted = sorted({name for t in suite for name in t["extensions"]})
        available = available_extensions(conn, wanted)
        sequences = sequence_state(conn)
    secrets = [admin_dsn] if admin_dsn else []
    results = []
    installed = ensure_pgtap(dsn, admin_dsn)
    workdir = tempfile.mkdtemp(prefix="pgdr-pgtap-")
    try:
        for test in suite:
            missing = next((name for name in test["extensions"] if name not in available), None)
            if missing:
                results.append(missing_result(test, missing))
                continue
            results.append(run_file(test, dsn, tools, installed["schema"], workdir, timeout, secrets))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        try:
            reset, refused = reset_sequences(dsn, sequences)
        finally:
            drop_pgtap(dsn, admin_dsn, installed)
    for result in results:
        result["details"]["pgtap"] = {**{k: installed[k] for k in ("created", "schema")}, "sequences_reset": reset}
    if refused:
        results.append(sequences_result(refused, sequences))
    return results

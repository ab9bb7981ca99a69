"""Smoke tests as data: folders of ``*.sql`` check files, each run in a transaction that is always rolled back.

A check file starts with a header of comment lines, ``-- key: value``:

``name``        the check's name (default: the file name without ``.sql``); a later folder's check of the same
                name replaces an earlier one, so a team can override a shipped check.
``expect``      required; what the LAST statement must give:
                ``rows=<n>``  exactly n rows;
                ``value=<text>``  exactly one row whose first column, as text, is <text> (true/false for booleans,
                null for NULL);
                ``error=<SQLSTATE or substring>``  the statement fails with that SQLSTATE (five characters, e.g.
                42501) or with a message containing the text (case-insensitive);
                ``empty``  no rows (or a statement that returns none, such as an UPDATE).
``as_user``     act as this signed-in user: a literal uuid, or a SQL expression giving one, evaluated at the
                moment of the switch (so it can find a user the file created). The engine then runs
                ``set_config('role', <role>, true)`` and ``set_config('request.jwt.claims',
                '{"sub": <uuid>, "role": <role>, ...}', true)``, as the Supabase API does for a request.
``role``        the database role to act as (default ``authenticated``; with no as_user: claims hold the role only).
``tenant``      optional literal or SQL expression; readable as ``current_setting('pgdr.tenant')`` and added to
                the claims as ``app_metadata.tenant_id``, for apps whose policies read the tenant from the token.
``setup``       comma-separated files (relative to the check's folder) run first, as the connecting role. Files
                whose name starts with ``_`` are never checks themselves: that is where shared fixtures live.
``timeout``     seconds each statement may take (default 30).
``description`` free text, shown in the results.

The body holds one or more statements separated by ``;``. Statements before a line ``-- @user`` run as the
connecting role (to create fixtures, e.g. a user in auth.users); from that line on, as the user. Without the
line, a check with as_user or role acts as the user from its first statement. The user of ``as_user`` is also
readable as ``current_setting('pgdr.user')``. Transaction control (BEGIN, COMMIT, ROLLBACK, ...) is refused: the
transaction always ends in a rollback, so the database is left exactly as it was (sequences aside).
"""

from __future__ import annotations

import json
import os
import re
import ssl
import time
import urllib.error
import urllib.request

from ansible_collections.pgdr.supabase.plugins.module_utils import pg
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError, redact
from ansible_collections.pgdr.supabase.plugins.module_utils.verify import check_result, run_command, summarize

STEP = "smoke tests"
HEADER_KEYS = ("name", "description", "expect", "as_user", "role", "tenant", "setup", "timeout")
HEADER_RE = re.compile(r"^--\s*(?P<key>[A-Za-z_]+)\s*:\s*(?P<value>.*?)\s*$")
USER_MARKER = "@user"
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
SQLSTATE_RE = re.compile(r"^(?=.*\d)[0-9A-Z]{5}$")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
ROLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TRANSACTION_CONTROL = re.compile(
    r"^\s*(begin|start\s+transaction|commit|end|abort|rollback(?!\s+to\b)|prepare\s+transaction|savepoint\s*$)\b",
    re.IGNORECASE,
)
DEFAULT_TIMEOUT = 30
SHOWN_ROWS = 5


def _bad(message, path, hint="fix the check file; the format is described in roles/smoke_tests/README.md"):
    return DRError(message, step="load smoke checks", subject=str(path), hint=hint)


def parse_expect(text):
    """``rows=3`` -> {"kind": "rows", "value": 3}; ``value=x``, ``error=42501``, ``empty`` likewise."""
    text = (text or "").strip()
    if text.lower() == "empty":
        return {"kind": "empty"}
    kind, sep, value = text.partition("=")
    kind = kind.strip().lower()
    if not sep or kind not in ("rows", "value", "error"):
        raise ValueError(f"expect must be rows=<n>, value=<text>, error=<sqlstate or text> or empty, not {text!r}")
    value = value.strip()
    if kind == "rows":
        if not value.isdigit():
            raise ValueError(f"rows= needs a whole number, not {value!r}")
        return {"kind": "rows", "value": int(value)}
    if kind == "error":
        if not value:
            raise ValueError("error= needs a SQLSTATE or a part of the message")
        return {"kind": "error", "value": value, "sqlstate": bool(SQLSTATE_RE.match(value))}
    return {"kind": "value", "value": value}


def describe_expect(expect):
    if expect["kind"] == "rows":
        return f"{expect['value']} rows"
    if expect["kind"] == "value":
        return f"value {expect['value']!r}"
    if expect["kind"] == "error":
        return f"error {expect['value']}"
    return "no rows"


def as_text(value):
    """A column value as the text a check compares: true/false, null, else str()."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def match_expectation(expect, outcome):
    """(ok, message) for the last statement's outcome: {"rows": [tuples] or None, "error": None or
    {"sqlstate", "message"}}. rows is None when the statement returns no result set."""
    error = outcome.get("error")
    if expect["kind"] == "error":
        return _match_error(expect, error)
    if error:
        return False, f"expected {describe_expect(expect)}, got error {error.get('sqlstate')}: {error.get('message')}"
    return _match_rows(expect, outcome.get("rows"))


def _match_error(expect, error):
    if not error:
        return False, f"expected {describe_expect(expect)}, the statement succeeded"
    if expect["sqlstate"]:
        ok = error.get("sqlstate") == expect["value"]
    else:
        ok = expect["value"].lower() in (error.get("message") or "").lower()
    got = f"{error.get('sqlstate')}: {error.get('message')}"
    return ok, f"failed as expected ({got})" if ok else f"expected {describe_expect(expect)}, got {got}"


def _match_rows(expect, rows):
    count = len(rows) if rows is not None else 0
    if expect["kind"] == "empty":
        return count == 0, "no rows" if count == 0 else f"expected no rows, got {count}"
    if expect["kind"] == "rows":
        if rows is None:
            return False, f"expected {expect['value']} rows, the statement returns no rows"
        ok = count == expect["value"]
        return ok, f"{count} rows" if ok else f"expected {expect['value']} rows, got {count}"
    if rows is None or count != 1 or not rows[0]:
        return False, f"expected {describe_expect(expect)}, got {count} rows"
    got = as_text(rows[0][0])
    ok = got == expect["value"]
    return ok, f"value {got!r}" if ok else f"expected {describe_expect(expect)}, got {got!r}"


def dollar_tag(text, i):
    """The dollar-quote tag (``$$``, ``$body$``) starting at i, or None (``$1`` or a tag inside a word is none)."""
    if i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_"):
        return None
    match = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", text[i:])
    return match.group(0) if match else None


def quoted_end(text, i, where=""):
    """Index just past the quoted literal, identifier or dollar-quoted body starting at i (``E'...'`` escapes
    and doubled quotes respected); ValueError, its message prefixed with where, when it is not closed."""
    ch = text[i]
    if ch == "$":
        tag = dollar_tag(text, i)
        end = text.find(tag, i + len(tag))
        if end == -1:
            raise ValueError(f"{where}unterminated {tag} quote")
        return end + len(tag)
    escapes = ch == "'" and i > 0 and text[i - 1] in "eE" and (i < 2 or not text[i - 2].isalnum())
    j, n = i + 1, len(text)
    while True:
        if j >= n:
            raise ValueError(f"{where}unterminated {ch} quote")
        if escapes and text[j] == "\\":
            j += 2
            continue
        if text[j] == ch:
            if j + 1 < n and text[j + 1] == ch:
                j += 2
                continue
            return j + 1
        j += 1


def split_statements(text):
    """(statements, user_from): the SQL statements of a body split on top-level ``;`` (quotes, dollar quotes and
    comments respected), and the index of the first statement after the ``-- @user`` line (None without one)."""
    statements, buf, user_from = [], [], None
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "-" and text.startswith("--", i):
            end = text.find("\n", i)
            end = n if end == -1 else end
            if text[i + 2 : end].strip() == USER_MARKER:
                if "".join(buf).strip():
                    raise ValueError("the -- @user line is inside a statement; put it between statements")
                if user_from is not None:
                    raise ValueError("more than one -- @user line")
                user_from = len(statements)
            else:
                buf.append(text[i:end])
            i = end
        elif ch == "/" and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end == -1:
                raise ValueError("unterminated /* comment")
            buf.append(text[i : end + 2])
            i = end + 2
        elif ch in ("'", '"') or (ch == "$" and dollar_tag(text, i)):
            end = quoted_end(text, i)
            buf.append(text[i:end])
            i = end
        elif ch == ";":
            statement = _without_leading_comments("".join(buf))
            if _has_code(statement):
                statements.append(statement)
            buf = []
            i += 1
        else:
            buf.append(ch)
            i += 1
    statement = _without_leading_comments("".join(buf))
    if _has_code(statement):
        statements.append(statement)
    return statements, user_from


def _without_leading_comments(statement):
    return re.sub(r"^(\s*--[^\n]*(\n|$))+", "", statement).strip()


def _has_code(statement):
    """Whether a statement holds more than comments and blanks."""
    stripped = re.sub(r"--[^\n]*", "", statement)
    stripped = re.sub(r"/\*.*?\*/", "", stripped, flags=re.DOTALL)
    return bool(stripped.strip())


def _first_code(statement):
    stripped = re.sub(r"--[^\n]*", "", statement)
    return re.sub(r"/\*.*?\*/", "", stripped, flags=re.DOTALL).strip()


def parse_header(text):
    """{key: value} of the leading ``-- key: value`` lines (known keys only; other comments are prose)."""
    header = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            break
        match = HEADER_RE.match(stripped)
        if match and match["key"].lower() in HEADER_KEYS:
            key = match["key"].lower()
            if key in header:
                raise ValueError(f"header key {key!r} given twice")
            header[key] = match["value"]
    return header


def parse_check(path, text=None):
    """A check file's definition; a DRError naming the file when it is unusable."""
    path = str(path)
    if text is None:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise _bad(f"cannot read the check file: {exc.strerror}", path) from exc
    try:
        header = parse_header(text)
        if "expect" not in header:
            raise ValueError("the header has no '-- expect:' line")
        expect = parse_expect(header["expect"])
        statements, user_from = split_statements(text)
        timeout = header.get("timeout") or str(DEFAULT_TIMEOUT)
        if not re.match(r"^\d+(\.\d+)?$", timeout) or float(timeout) <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    except ValueError as exc:
        raise _bad(str(exc), path) from exc
    name = header.get("name") or os.path.basename(path)[: -len(".sql")]
    if not NAME_RE.match(name):
        raise _bad(f"check name {name!r} may hold letters, digits, '.', '_' and '-' only", path)
    if not statements:
        raise _bad("the check file holds no statement", path)
    for statement in statements:
        if TRANSACTION_CONTROL.match(_first_code(statement)):
            raise _bad(
                f"transaction control is not allowed in a check ({_first_code(statement).split()[0].upper()}): "
                "every check runs in one transaction that is rolled back",
                path,
            )
    role = header.get("role") or ("authenticated" if header.get("as_user") else None)
    if role and not ROLE_RE.match(role):
        raise _bad(f"role {role!r} is not a role name", path)
    if user_from is not None and not role:
        raise _bad("the file has a -- @user line but no '-- as_user:' or '-- role:' header", path)
    folder = os.path.dirname(path)
    setup = [s.strip() for s in (header.get("setup") or "").split(",") if s.strip()]
    setup_files = []
    for item in setup:
        setup_path = os.path.normpath(os.path.join(folder, item))
        if not os.path.isfile(setup_path):
            raise _bad(f"the setup file {item} does not exist", path, hint=f"create {setup_path} or fix '-- setup:'")
        setup_files.append(setup_path)
    return {
        "name": name,
        "path": path,
        "description": header.get("description", ""),
        "expect": expect,
        "as_user": header.get("as_user"),
        "role": role,
        "tenant": header.get("tenant"),
        "setup": setup_files,
        "timeout": float(timeout),
        "statements": statements,
        "user_from": (0 if role else None) if user_from is None else user_from,
    }


def load_checks(folders):
    """Every check of the folders, in file-name order per folder; a later folder's check replaces an earlier
    check of the same name. A missing folder is an error naming it."""
    checks = {}
    for folder in folders:
        if not folder:
            continue
        if not os.path.isdir(folder):
            raise DRError(
                "the smoke check folder does not exist",
                step="load smoke checks",
                subject=str(folder),
                hint="set smoke_tests_checks_dir / smoke_tests_extra_checks_dir to a folder of *.sql check files",
            )
        names_here = {}
        for entry in sorted(os.listdir(folder)):
            if not entry.endswith(".sql") or entry.startswith("_"):
                continue
            check = parse_check(os.path.join(folder, entry))
            if check["name"] in names_here:
                raise _bad(f"check name {check['name']!r} is used by {names_here[check['name']]} too", check["path"])
            names_here[check["name"]] = entry
            checks.pop(check["name"], None)
            checks[check["name"]] = check
    return list(checks.values())


def _execute(cur, statement):
    cur.execute(statement, prepare=False)
    return cur.fetchall() if cur.description is not None else None


def _resolve(cur, expression, cast):
    """A literal uuid as is; anything else evaluated as a SQL expression."""
    if UUID_RE.match(expression.strip()):
        return expression.strip()
    row = _execute(cur, f"select ({expression})::{cast}")
    return None if not row or row[0][0] is None else str(row[0][0])


def _impersonate(cur, check):
    claims = {"role": check["role"]}
    settings = {"role": check["role"]}
    if check["as_user"]:
        user = _resolve(cur, check["as_user"], "uuid")
        if user is None:
            raise _Failed(f"as_user gave no user: {check['as_user']}")
        claims.update(sub=user, aud="authenticated")
        settings["pgdr.user"] = user
    if check["tenant"]:
        tenant = _resolve(cur, check["tenant"], "text")
        if tenant is None:
            raise _Failed(f"tenant gave nothing: {check['tenant']}")
        claims["app_metadata"] = {"tenant_id": tenant}
        settings["pgdr.tenant"] = tenant
    settings["request.jwt.claims"] = json.dumps(claims)
    # The role last: the expressions above run as the connecting role.
    for key in ("pgdr.user", "pgdr.tenant", "request.jwt.claims", "role"):
        if key in settings:
            cur.execute("select set_config(%s, %s, true)", (key, settings[key]))
    return claims


class _Failed(Exception):
    pass


def _error_of(exc):
    diag = getattr(exc, "diag", None)
    return {
        "sqlstate": getattr(exc, "sqlstate", None),
        "message": (getattr(diag, "message_primary", None) or str(exc)).strip(),
    }


def run_check(conn, check, secrets=()):
    """Run one check in a transaction that is rolled back whatever happens; return its result."""
    started = time.monotonic()
    details = {"file": check["path"], "expect": describe_expect(check["expect"]), "description": check["description"]}
    ok, summary = False, ""
    try:
        with conn.cursor() as cur:
            timeout_ms = str(int(check["timeout"] * 1000))
            cur.execute(
                "select set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true)",
                (timeout_ms, timeout_ms),
            )
            for setup_path in check["setup"]:
                with open(setup_path, encoding="utf-8") as fh:
                    for number, statement in enumerate(split_statements(fh.read())[0], 1):
                        _step(cur, statement, f"setup {os.path.basename(setup_path)} statement {number}", conn)
            last = len(check["statements"]) - 1
            for index, statement in enumerate(check["statements"]):
                if index == check["user_from"]:
                    details["claims"] = _impersonate(cur, check)
                if index < last:
                    _step(cur, statement, f"statement {index + 1}", conn)
                    continue
                try:
                    outcome = {"rows": _execute(cur, statement), "error": None}
                except pg.psycopg.Error as exc:
                    outcome = {"rows": None, "error": _error_of(exc)}
                _still_in_transaction(conn)
                ok, summary = match_expectation(check["expect"], outcome)
                if outcome["rows"]:
                    details["rows"] = [[as_text(v) for v in row] for row in outcome["rows"][:SHOWN_ROWS]]
                    details["row_count"] = len(outcome["rows"])
                if outcome["error"]:
                    details["error"] = outcome["error"]
    except _Failed as exc:
        ok, summary = False, str(exc)
    except pg.psycopg.Error as exc:  # the engine's own statements (timeouts, impersonation) failed
        error = _error_of(exc)
        ok, summary = False, f"{error['sqlstate']}: {error['message']}"
    finally:
        _end(conn)
    details = json.loads(redact(json.dumps(details), secrets))
    return check_result(check["name"], ok, redact(summary, secrets), details, started)


def _step(cur, statement, label, conn):
    try:
        _execute(cur, statement)
    except pg.psycopg.Error as exc:
        error = _error_of(exc)
        raise _Failed(f"{label} failed: {error['sqlstate']}: {error['message']}") from exc
    _still_in_transaction(conn)


def _still_in_transaction(conn):
    status = conn.info.transaction_status
    if status not in (pg.psycopg.pq.TransactionStatus.INTRANS, pg.psycopg.pq.TransactionStatus.INERROR):
        raise _Failed("the check ended its transaction; what it wrote may have been committed")


def _end(conn):
    """Roll back; a connection that broke is left for the caller to replace."""
    if conn.closed or conn.broken:
        return
    try:
        conn.rollback()
    except pg.psycopg.OperationalError:
        conn.close()


def http_check(spec):
    """GET (or spec["method"]) a URL; ok when the status is the expected one (default 200)."""
    started = time.monotonic()
    url = spec.get("url")
    if not url or not str(url).startswith(("http://", "https://")):
        raise DRError(
            "the HTTP check needs an http:// or https:// url",
            step=STEP,
            subject=redact(url),
            hint="set smoke_tests_http.url",
        )
    expected = int(spec.get("status") or 200)
    timeout = float(spec.get("timeout") or 10)
    name = spec.get("name") or "http"
    context = None
    if str(url).startswith("https://"):
        context = ssl.create_default_context(cafile=spec.get("ca_file") or None)
        if spec.get("validate_certs") is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    # The scheme is checked above: http(s) only, never file: or others.
    request = urllib.request.Request(url, method=spec.get("method") or "GET", headers=spec.get("headers") or {})  # noqa: S310
    secrets = [v for v in (spec.get("headers") or {}).values() if v]
    details = {"url": redact(url, secrets), "expected_status": expected}
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        details["error"] = redact(str(reason), secrets)
        return check_result(name, False, f"no answer from {details['url']}: {details['error']}", details, started)
    details["status"] = status
    ok = status == expected
    summary = f"{details['url']} answered {status}" + ("" if ok else f", expected {expected}")
    return check_result(name, ok, summary, details, started)


def run_smoke(dsn, checks, http=None, command=None, command_cwd=None, command_timeout=600, pgtap_run=None):
    """Run the SQL checks (each rolled back), the app's pgTAP files (pgtap_run: {suite, admin_dsn, timeout}, see
    pgtap.run_suite), then the optional HTTP check and command; return the summary."""
    pgtap_run = pgtap_run or {}
    planned_checks(checks, http, command, pgtap_run.get("suite"))
    results = []
    secrets = [dsn]
    if checks:
        conn = pg.connect(dsn, step="connect for smoke tests", application_name="pgdr smoke tests")
        try:
            for check in checks:
                if conn.closed or conn.broken:
                    conn = pg.connect(dsn, step="connect for smoke tests", application_name="pgdr smoke tests")
                results.append(run_check(conn, check, secrets))
        finally:
            conn.close()
    if pgtap_run.get("suite"):
        from ansible_collections.pgdr.supabase.plugins.module_utils import pgtap

        results.extend(pgtap.run_suite(dsn, **pgtap_run))
    if http and http.get("url"):
        results.append(http_check(http))
    if command:
        results.append(run_command(command, dsn, cwd=command_cwd, timeout=command_timeout))
    return summarize(results, database=pg.describe_dsn(dsn))


def planned_checks(checks, http=None, command=None, pgtap_suite=None):
    """Names of the checks a run would make (for check mode when the database does not exist yet)."""
    names = [c["name"] for c in checks] + [t["name"] for t in pgtap_suite or []]
    if http and http.get("url"):
        names.append(http.get("name") or "http")
    if command:
        names.append("command")
    if not names:
        raise DRError(
            "there is no smoke check to run: the check folders hold no *.sql check, there is no pgTAP folder, and "
            "no HTTP check or command is set",
            step=STEP,
            hint="point smoke_tests_checks_dir at a folder of check files (the role's files/checks by default)",
        )
    return names


_QUALIFIED = re.compile(
    r'(?<![\w."$])(?P<schema>"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)\s*\.\s*'
    r'(?P<name>"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)(?P<call>\s*\()?'
)


def _ident(text):
    return text[1:-1].replace('""', '"') if text.startswith('"') else text.lower()


def references(check):
    """The schema-qualified relations and functions a check (and its setup files) names: sorted
    [("relation"|"function", "schema.name")]. Aliases (p.id) are left to the caller to tell apart."""
    texts = list(check.get("statements", []))
    for path in check.get("setup", []):
        with open(path, encoding="utf-8") as fh:
            texts.append(fh.read())
    found = set()
    for raw in texts:
        text = re.sub(r"'(?:[^']|'')*'", "''", re.sub(r"--[^\n]*", " ", raw))
        for match in _QUALIFIED.finditer(text):
            kind = "function" if match["call"] else "relation"
            found.add((kind, f"{_ident(match['schema'])}.{_ident(match['name'])}"))
    return sorted(found)


def plan_against_backup(checks, fingerprint):
    """Per check, what it uses of the app's schemas and whether the backup has it: [{name, uses, missing}].

    Only names in the app's schemas count (the platform's, such as auth.uid(), are the target's; an alias such
    as p.id never names a schema)."""
    objects = fingerprint.get("objects", {})
    schemas = set(fingerprint.get("app_schemas", []))
    relations = {
        k.split(" ", 1)[1]
        for k in objects
        if k.split(" ", 1)[0] in ("table", "view", "matview", "sequence", "foreign_table")
    }
    functions = {
        k.split(" ", 1)[1].split("(", 1)[0] for k in objects if k.split(" ", 1)[0] in ("function", "procedure")
    }
    plan = []
    for check in checks:
        uses, missing = [], []
        for kind, name in references(check):
            if name.split(".", 1)[0] not in schemas:
                continue
            label = f"{name}()" if kind == "function" else name
            uses.append(label)
            if name not in (functions if kind == "function" else relations):
                missing.append(label)
        plan.append({"name": check["name"], "uses": uses, "missing": missing})
    return plan

"""Restore verification and smoke checks without a sandbox: migration comparison, check-file parsing,
expectation matching, the command and HTTP checks, and the two modules' argument handling."""

from __future__ import annotations

import http.server
import importlib.util
import json
import sys
import threading
from pathlib import Path

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.pgdr.supabase.plugins.module_utils import smoke, verify
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

REPO = Path(__file__).resolve().parents[2]
CHECKS = REPO / "roles" / "smoke_tests" / "files" / "checks"
PASSWORD = "Sup3r-Secret-Pw"
DSN = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/postgres"


def write(folder, name, text=""):
    path = Path(folder, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- migration files and comparison ---------------------------------------------------------------------------


def test_migration_files_sorted_by_version_and_only_the_digit_prefix_counts(tmp_path):
    for name in ("20240105000000_events.sql", "20240101000000_tenants.sql", "20240103000000_a_b_c.sql"):
        write(tmp_path, name)
    for name in ("README.md", "seed.sql", "20240109000000_notes.txt", "_20240110000000_x.sql"):
        write(tmp_path, name)
    (tmp_path / "20240111000000_dir.sql").mkdir()
    assert verify.migration_files(tmp_path) == ["20240101000000", "20240103000000", "20240105000000"]


def test_migration_files_sort_numerically_when_lengths_differ(tmp_path):
    write(tmp_path, "9_early.sql")
    write(tmp_path, "10_later.sql")
    assert verify.migration_files(tmp_path) == ["9", "10"]


def test_missing_migrations_folder_names_the_path_and_the_setting(tmp_path):
    missing = tmp_path / "no" / "migrations"
    with pytest.raises(DRError) as err:
        verify.migration_files(missing)
    assert str(missing) in str(err.value)
    assert "migrations path" in str(err.value)
    assert err.value.step == "verify migrations"


def test_two_files_with_one_version_are_refused(tmp_path):
    write(tmp_path, "20240101000000_a.sql")
    write(tmp_path, "20240101000000_b.sql")
    with pytest.raises(DRError, match="share version 20240101000000"):
        verify.migration_files(tmp_path)


FILES = ["20240101", "20240102", "20240103"]


@pytest.mark.parametrize(
    ("applied", "files", "missing", "extra", "pending", "ok"),
    [
        (FILES, FILES, [], [], [], True),
        ([*FILES, "20240104"], FILES, [], ["20240104"], [], False),
        (["20240101", "20240103"], FILES, ["20240102"], [], [], False),
        (["20240101"], FILES, [], [], ["20240102", "20240103"], True),
        ([], FILES, [], [], FILES, True),
        (["20231231"], FILES, [], ["20231231"], FILES, False),
        (["20240102"], FILES, ["20240101"], [], ["20240103"], False),
    ],
    ids=["equal", "extra-in-db", "older-file-not-applied", "pending", "empty-history", "only-unknown", "mixed"],
)
def test_compare_migrations(applied, files, missing, extra, pending, ok):
    result = verify.compare_migrations(applied, files)
    assert result["missing_in_db"] == missing
    assert result["extra_in_db"] == extra
    assert result["pending"] == pending
    assert result["ok"] is ok


def test_pending_fails_only_when_asked():
    assert verify.compare_migrations(["20240101"], FILES)["ok"] is True
    assert verify.compare_migrations(["20240101"], FILES, fail_on_pending=True)["ok"] is False


def test_migrations_check_names_versions_against_files_and_manifest():
    check = verify.check_migrations(["20240101", "20240103", "20240109"], FILES, ["20240101", "20240102", "20240103"])
    assert check["name"] == "migrations"
    assert not check["ok"]
    assert check["details"]["missing_in_db"] == ["20240102"]
    assert check["details"]["extra_in_db"] == ["20240109"]
    assert check["details"]["missing_vs_manifest"] == ["20240102"]
    assert check["details"]["extra_vs_manifest"] == ["20240109"]
    assert "20240102" in check["summary"]
    assert "20240109" in check["summary"]


def test_migrations_check_passes_with_pending_files_and_says_so():
    check = verify.check_migrations(["20240101"], FILES, ["20240101"])
    assert check["ok"]
    assert "pending: 20240102, 20240103" in check["summary"]
    assert not verify.check_migrations(["20240101"], FILES, ["20240101"], fail_on_pending=True)["ok"]


def test_migrations_check_fails_when_the_database_lost_the_manifests_history():
    check = verify.check_migrations(["20240101"], None, ["20240101", "20240102"])
    assert not check["ok"]
    assert "in the backup but not in the database: 20240102" in check["summary"]


# --- schema and row counts ------------------------------------------------------------------------------------

OBJECTS = {"table public.a": "h1", "table public.b": "h2", "policy public.a.p": "h3"}


def test_schema_check_names_missing_extra_and_changed_objects():
    restored = {"table public.a": "CHANGED", "policy public.a.p": "h3", "index public.new_idx": "h9"}
    check = verify.check_schema(restored, {"objects": OBJECTS, "fingerprint": "x"})
    assert not check["ok"]
    assert check["details"]["missing"] == ["table public.b"]
    assert check["details"]["extra"] == ["index public.new_idx"]
    assert check["details"]["changed"] == ["table public.a"]
    for name in ("table public.b", "index public.new_idx", "table public.a"):
        assert name in check["summary"]


def test_schema_check_passes_on_equal_objects():
    check = verify.check_schema(dict(OBJECTS), {"objects": OBJECTS, "fingerprint": "x"})
    assert check["ok"]
    assert check["details"]["mode"] == "objects"


def test_schema_check_falls_back_to_the_fingerprint_and_says_how_to_name_objects():
    from ansible_collections.pgdr.supabase.plugins.module_utils import pg

    good = verify.check_schema(dict(OBJECTS), {"fingerprint": pg.fingerprint(OBJECTS)})
    assert good["ok"]
    assert good["details"]["mode"] == "fingerprint"
    bad = verify.check_schema({**OBJECTS, "table public.b": "other"}, {"fingerprint": pg.fingerprint(OBJECTS)})
    assert not bad["ok"]
    assert "manifest_key" in bad["summary"]


def test_row_counts_check_names_each_table_with_both_numbers():
    check = verify.check_row_counts(
        {"public.events": 990, "public.profiles": 30, "auth.users": None},
        {"public.events": 1000, "public.profiles": 30, "auth.users": 30},
    )
    assert not check["ok"]
    assert check["details"]["mismatches"] == {
        "auth.users": {"expected": 30, "actual": None},
        "public.events": {"expected": 1000, "actual": 990},
    }
    assert "public.events expected 1000, got 990" in check["summary"]
    assert "auth.users expected 30, got no table" in check["summary"]
    assert "public.profiles" not in check["summary"]


def test_row_counts_check_is_skipped_without_counts_in_the_manifest():
    check = verify.check_row_counts({}, None)
    assert check["ok"]
    assert check["summary"].startswith("skipped")


def test_summarize_names_every_failed_check():
    checks = [
        verify.check_result("a", True, "fine"),
        verify.check_result("b", False, "broken"),
        verify.check_result("c", False, "worse"),
    ]
    result = verify.summarize(checks)
    assert not result["ok"]
    assert result["failed"] == ["b", "c"]
    assert "b: broken" in result["msg"]
    assert "c: worse" in result["msg"]


# --- the command check ----------------------------------------------------------------------------------------


def test_command_gets_the_dsn_in_its_environment_and_its_output_is_redacted(tmp_path):
    script = "import os; print(os.environ['SUPABASE_DB_URL']); print(os.environ['DATABASE_URL']); print(os.getcwd())"
    check = verify.run_command([sys.executable, "-c", script], DSN, cwd=str(tmp_path))
    assert check["ok"], check
    assert check["details"]["rc"] == 0
    assert PASSWORD not in json.dumps(check)
    assert "127.0.0.1:1/postgres" in check["details"]["output_tail"]
    assert str(tmp_path) in check["details"]["output_tail"]


def test_command_exit_code_decides():
    check = verify.run_command([sys.executable, "-c", "import sys; print('bad thing'); sys.exit(3)"], DSN)
    assert not check["ok"]
    assert check["details"]["rc"] == 3
    assert "exited 3: bad thing" in check["summary"]


def test_command_not_found_and_timeout_fail_the_check():
    missing = verify.run_command(["/nonexistent/program"], DSN)
    assert not missing["ok"]
    assert "not found" in missing["summary"]
    slow = verify.run_command([sys.executable, "-c", "import time; time.sleep(5)"], DSN, timeout=0.3)
    assert not slow["ok"]
    assert "did not finish within 0.3 s" in slow["summary"]


def test_empty_command_is_refused():
    with pytest.raises(DRError, match="command is empty"):
        verify.run_command([], DSN)


# --- check files: header, statements, expectations ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rows=3", {"kind": "rows", "value": 3}),
        (" rows = 0 ", {"kind": "rows", "value": 0}),
        ("value=rows=1 active=1", {"kind": "value", "value": "rows=1 active=1"}),
        ("error=42501", {"kind": "error", "value": "42501", "sqlstate": True}),
        ("error=P0001", {"kind": "error", "value": "P0001", "sqlstate": True}),
        ("error=row-level security", {"kind": "error", "value": "row-level security", "sqlstate": False}),
        ("error=ERROR", {"kind": "error", "value": "ERROR", "sqlstate": False}),
        ("empty", {"kind": "empty"}),
    ],
)
def test_parse_expect(text, expected):
    assert smoke.parse_expect(text) == expected


@pytest.mark.parametrize("text", ["", "rows", "rows=x", "rows=-1", "count=3", "error=", "value"])
def test_parse_expect_refuses_nonsense(text):
    with pytest.raises(ValueError):
        smoke.parse_expect(text)


def test_parse_header_reads_known_keys_until_the_first_statement():
    text = (
        "-- name: my_check\n-- Note: prose, not a key\n--expect:rows=1\n\n-- as_user: (select 1)\n"
        "select 1;\n-- tenant: too late\n"
    )
    assert smoke.parse_header(text) == {"name": "my_check", "expect": "rows=1", "as_user": "(select 1)"}


def test_parse_header_refuses_a_key_given_twice():
    with pytest.raises(ValueError, match="twice"):
        smoke.parse_header("-- expect: rows=1\n-- expect: rows=2\nselect 1")


def test_split_statements_respects_quotes_dollar_quotes_and_comments():
    text = (
        "-- expect: rows=1\n"
        "insert into t values ('a;b', 'it''s; fine', E'x\\';y');\n"
        "do $body$ begin perform 1; perform 2; end $body$;\n"
        'select $$;$$, "odd;name" /* ; */ from t -- trailing ; comment\n;\n'
        "-- @user\n"
        "select $1::int;\n"
        "select 2"
    )
    statements, user_from = smoke.split_statements(text)
    assert len(statements) == 5
    assert statements[0].startswith("insert") and "'it''s; fine'" in statements[0]
    assert statements[1].startswith("do $body$") and statements[1].endswith("$body$")
    assert "/* ; */" in statements[2]
    assert statements[3] == "select $1::int"
    assert statements[4] == "select 2"
    assert user_from == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("select 'open", "unterminated"),
        ("select $x$ open", "unterminated"),
        ("select 1 /* open", "unterminated"),
        ("select\n-- @user\n1;", "inside a statement"),
        ("select 1;\n-- @user\nselect 2;\n-- @user\nselect 3", "more than one"),
    ],
)
def test_split_statements_refuses_broken_bodies(text, message):
    with pytest.raises(ValueError, match=message):
        smoke.split_statements(text)


def test_parse_check_reads_a_full_definition(tmp_path):
    write(tmp_path, "_fixture.sql", "select 1;")
    path = write(
        tmp_path,
        "join.sql",
        "-- name: join_check\n-- description: joins\n-- setup: _fixture.sql\n"
        "-- as_user: 00000000-0000-4000-8000-000000000001\n-- tenant: (select 'acme')\n-- timeout: 5\n"
        "-- expect: value=ok\ninsert into x values (1);\n-- @user\nselect 'ok';\n",
    )
    check = smoke.parse_check(path)
    assert check["name"] == "join_check"
    assert check["setup"] == [str(tmp_path / "_fixture.sql")]
    assert check["role"] == "authenticated"
    assert check["user_from"] == 1
    assert check["timeout"] == 5.0
    assert check["expect"] == {"kind": "value", "value": "ok"}
    assert check["statements"] == ["insert into x values (1)", "select 'ok'"]


def test_parse_check_defaults_name_to_the_file_and_acts_as_user_from_the_start(tmp_path):
    check = smoke.parse_check(write(tmp_path, "plain_check.sql", "-- as_user: (select 1)\n-- expect: empty\nselect 1"))
    assert check["name"] == "plain_check"
    assert check["user_from"] == 0
    no_user = smoke.parse_check(write(tmp_path, "as_owner.sql", "-- expect: rows=1\nselect 1"))
    assert no_user["role"] is None and no_user["user_from"] is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("select 1", "no '-- expect:' line"),
        ("-- expect: rows=many\nselect 1", "whole number"),
        ("-- expect: rows=1\n", "no statement"),
        ("-- expect: rows=1\ncommit;\nselect 1", "transaction control"),
        ("-- expect: rows=1\nselect 1;\nBEGIN;", "transaction control"),
        ("-- expect: rows=1\nrollback;", "transaction control"),
        ("-- expect: rows=1\n/* c */ end;", "transaction control"),
        ("-- expect: rows=1\nselect 1;\n-- @user\nselect 2", "no '-- as_user:'"),
        ("-- expect: rows=1\n-- setup: _nope.sql\nselect 1", "setup file _nope.sql does not exist"),
        ("-- name: bad name\n-- expect: rows=1\nselect 1", "letters, digits"),
        ("-- role: bad-role\n-- expect: rows=1\nselect 1", "not a role name"),
        ("-- timeout: 0\n-- expect: rows=1\nselect 1", "timeout"),
    ],
)
def test_parse_check_refuses_bad_files_naming_the_file(tmp_path, body, message):
    path = write(tmp_path, "bad.sql", body)
    with pytest.raises(DRError, match=message) as err:
        smoke.parse_check(path)
    assert str(path) in str(err.value)


def test_rollback_to_savepoint_is_allowed(tmp_path):
    path = write(tmp_path, "sp.sql", "-- expect: rows=1\nsavepoint a;\nrollback to savepoint a;\nselect 1")
    assert len(smoke.parse_check(path)["statements"]) == 3


@pytest.mark.parametrize(
    ("expect", "outcome", "ok", "message"),
    [
        ("rows=0", {"rows": []}, True, "0 rows"),
        ("rows=0", {"rows": [(1,)] * 12}, False, "expected 0 rows, got 12"),
        ("rows=2", {"rows": None}, False, "returns no rows"),
        ("empty", {"rows": None}, True, "no rows"),
        ("empty", {"rows": [(1,)]}, False, "expected no rows, got 1"),
        ("value=true", {"rows": [(True,)]}, True, "value 'true'"),
        ("value=null", {"rows": [(None,)]}, True, "value 'null'"),
        ("value=3", {"rows": [(3, "x")]}, True, "value '3'"),
        ("value=3", {"rows": [(4,)]}, False, "expected value '3', got '4'"),
        ("value=3", {"rows": [(3,), (3,)]}, False, "got 2 rows"),
        ("error=42501", {"error": {"sqlstate": "42501", "message": "new row violates"}}, True, "as expected"),
        ("error=42501", {"error": {"sqlstate": "23505", "message": "duplicate"}}, False, "got 23505"),
        (
            "error=Row-Level Security",
            {"error": {"sqlstate": "42501", "message": "violates row-level security"}},
            True,
            "as expected",
        ),
        ("error=42501", {"rows": [(1,)]}, False, "the statement succeeded"),
        ("rows=1", {"error": {"sqlstate": "42P01", "message": "relation does not exist"}}, False, "got error 42P01"),
    ],
)
def test_match_expectation(expect, outcome, ok, message):
    outcome = {"rows": None, "error": None, **outcome}
    got_ok, got_message = smoke.match_expectation(smoke.parse_expect(expect), outcome)
    assert got_ok is ok
    assert message in got_message


def test_load_checks_skips_fixtures_and_a_later_folder_overrides_by_name(tmp_path):
    base = tmp_path / "base"
    extra = tmp_path / "extra"
    write(base, "_fixture.sql", "not a check at all")
    write(base, "a.sql", "-- expect: rows=1\nselect 1")
    write(base, "b.sql", "-- expect: rows=1\nselect 1")
    write(base, "notes.txt", "ignored")
    write(extra, "override.sql", "-- name: a\n-- expect: rows=2\nselect 1 union all select 2")
    write(extra, "c.sql", "-- expect: empty\nselect 1 where false")
    checks = smoke.load_checks([str(base), "", str(extra)])
    # The replacing check runs where its own folder puts it (file-name order there).
    assert [c["name"] for c in checks] == ["b", "c", "a"]
    assert checks[2]["expect"] == {"kind": "rows", "value": 2}


def test_load_checks_refuses_a_missing_folder_and_duplicate_names(tmp_path):
    with pytest.raises(DRError, match="does not exist") as err:
        smoke.load_checks([str(tmp_path / "nope")])
    assert str(tmp_path / "nope") in str(err.value)
    write(tmp_path, "one.sql", "-- name: same\n-- expect: rows=1\nselect 1")
    write(tmp_path, "two.sql", "-- name: same\n-- expect: rows=1\nselect 1")
    with pytest.raises(DRError, match=r"'same' is used by one\.sql"):
        smoke.load_checks([str(tmp_path)])


def test_the_shipped_checks_parse_and_cover_the_runbook():
    checks = smoke.load_checks([str(CHECKS)])
    names = [c["name"] for c in checks]
    assert "auth_user_uid" in names
    assert "participants_join_rejoin" in names
    for table in ("profiles", "sessions", "participants", "events"):
        assert f"tenant_isolation_{table}" in names
    assert "tenant_isolation_insert_events" in names
    for check in checks:
        assert check["role"] == "authenticated", check["name"]
        if check["name"].startswith("tenant_isolation_insert"):
            assert check["expect"]["kind"] == "error"


def test_nothing_to_run_is_an_error():
    with pytest.raises(DRError, match="no smoke check to run"):
        smoke.planned_checks([], {}, [])
    assert smoke.planned_checks([], {"url": "http://x"}, ["true"]) == ["http", "command"]


# --- the HTTP check -------------------------------------------------------------------------------------------


@pytest.fixture
def http_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(204 if self.path == "/ok" else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_check_compares_the_status(http_server):
    assert smoke.http_check({"url": f"{http_server}/ok", "status": 204})["ok"]
    bad = smoke.http_check({"url": f"{http_server}/down", "status": 200, "name": "app"})
    assert not bad["ok"]
    assert bad["name"] == "app"
    assert "answered 503, expected 200" in bad["summary"]


def test_http_check_fails_when_nothing_answers_and_refuses_other_schemes():
    down = smoke.http_check({"url": "http://127.0.0.1:1/", "timeout": 2})
    assert not down["ok"]
    assert "no answer" in down["summary"]
    with pytest.raises(DRError, match="http:// or https://"):
        smoke.http_check({"url": "file:///etc/passwd"})


# --- the modules ----------------------------------------------------------------------------------------------


def run_module(name, args, capsys, check_mode=False):
    spec = importlib.util.spec_from_file_location(
        f"_pgdr_test_{name}", REPO / "plugins" / "modules" / f"{name.rsplit('.', 1)[-1]}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if check_mode:
        args = {**args, "_ansible_check_mode": True}
    with patch_module_args(args), pytest.raises(SystemExit) as exited:
        module.main()
    return exited.value.code, json.loads(capsys.readouterr().out)


MANIFEST = {"manifest_version": 1, "migrations": {"versions": []}, "schema": {"fingerprint": "x"}, "tables": {}}


@pytest.mark.parametrize("check_mode", [False, True])
def test_verify_module_names_a_missing_migrations_folder_before_connecting(capsys, tmp_path, check_mode):
    missing = str(tmp_path / "supabase" / "migrations")
    rc, result = run_module(
        "pgdr.supabase.verify_restore",
        {"dsn": DSN, "manifest": MANIFEST, "migrations_dir": missing},
        capsys,
        check_mode,
    )
    assert rc == 1
    assert missing in result["msg"]
    assert PASSWORD not in json.dumps(result)


@pytest.mark.parametrize("check_mode", [False, True])
def test_verify_module_unreachable_database_fails_without_the_password(capsys, check_mode):
    rc, result = run_module("pgdr.supabase.verify_restore", {"dsn": DSN, "manifest": MANIFEST}, capsys, check_mode)
    assert rc == 1
    assert "cannot reach the database server" in result["msg"]
    assert "127.0.0.1:1/postgres" in result["msg"]
    assert PASSWORD not in json.dumps(result)


def test_verify_module_needs_exactly_one_manifest_source(capsys):
    rc, result = run_module("pgdr.supabase.verify_restore", {"dsn": DSN}, capsys)
    assert rc == 1
    assert "name the backup (manifest, manifest_key or backup_id)" in result["msg"]
    rc, result = run_module("pgdr.supabase.verify_restore", {"dsn": DSN, "manifest_key": "k.json"}, capsys)
    assert rc == 1
    assert "s3" in result["msg"]
    rc, result = run_module(
        "pgdr.supabase.verify_restore", {"dsn": DSN, "manifest": MANIFEST, "manifest_key": "k.json"}, capsys
    )
    assert rc == 1
    assert "mutually exclusive" in result["msg"]


def test_verify_module_refuses_something_that_is_not_a_manifest(capsys):
    rc, result = run_module("pgdr.supabase.verify_restore", {"dsn": DSN, "manifest": {"objects": []}}, capsys)
    assert rc == 1
    assert "not a backup manifest" in result["msg"]


def test_smoke_module_names_a_bad_check_file_before_connecting(capsys, tmp_path):
    bad = write(tmp_path, "broken.sql", "select 1")
    rc, result = run_module(
        "pgdr.supabase.smoke", {"dsn": DSN, "checks_dirs": [str(tmp_path)]}, capsys, check_mode=True
    )
    assert rc == 1
    assert str(bad) in result["msg"]
    assert "expect" in result["msg"]


def test_smoke_module_unreachable_database_fails_without_the_password(capsys):
    rc, result = run_module("pgdr.supabase.smoke", {"dsn": DSN, "checks_dirs": [str(CHECKS)]}, capsys)
    assert rc == 1
    assert "cannot reach the database server" in result["msg"]
    assert PASSWORD not in json.dumps(result)


def test_smoke_module_without_sql_checks_runs_the_command_and_fails_naming_it(capsys):
    rc, result = run_module(
        "pgdr.supabase.smoke", {"dsn": DSN, "command": [sys.executable, "-c", "raise SystemExit(2)"]}, capsys
    )
    assert rc == 1
    assert result["failed_checks"] == ["command"]
    assert result["changed"] is False
    assert "command:" in result["msg"]


@pytest.mark.parametrize("name", ["pgdr.supabase.verify_restore", "pgdr.supabase.smoke"])
def test_dsn_is_no_log(name):
    text = (REPO / "plugins" / "modules" / f"{name.rsplit('.', 1)[-1]}.py").read_text()
    assert '"dsn": {"type": "str", "required": True, "no_log": True}' in text

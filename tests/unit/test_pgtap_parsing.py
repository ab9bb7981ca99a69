"""The pgTAP engine without a database: finding test files, plan counts, the transaction rules, TAP parsing, the
missing-extension message, and each file's verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ansible_collections.pgdr.supabase.plugins.module_utils import pgtap
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

REPO = Path(__file__).resolve().parents[2]
APP_TESTS = REPO / "examples" / "app" / "supabase" / "tests"
APP_MIGRATIONS = REPO / "examples" / "app" / "supabase" / "migrations"

# pg_prove --verbose output of a file with one failing test, as pg_prove 3.36 prints it (with the trailing blanks
# after the file name and the subtest count).
PG_PROVE_FAILED = """/tmp/x/a.sql ..{trailing}
1..3
ok 1 - first
not ok 2 - second is wrong
# Failed test 2: "second is wrong"
#         have: 1
#         want: 2
ok 3
# Looks like you failed 1 test of 3
Failed 1/3 subtests{trailing}

Test Summary Report
-------------------
/tmp/x/a.sql (Wstat: 0 Tests: 3 Failed: 1)
  Failed test:  2
Files=1, Tests=3,  1 wallclock secs ( 0.01 usr  0.01 sys +  0.06 cusr  0.00 csys =  0.08 CPU)
Result: FAIL
""".format(trailing=" ")

PG_PROVE_PASSED = """/tmp/x/b.sql ..{trailing}
1..2
ok 1 - one
ok 2 - two # SKIP not on this server
ok
All tests successful.
Files=1, Tests=2,  0 wallclock secs
Result: PASS
""".format(trailing=" ")


def write(folder, name, text):
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_tap_of_a_failing_file_names_the_test_and_keeps_its_diagnostics():
    tap = pgtap.parse_tap(PG_PROVE_FAILED)
    assert tap["planned"] == 3
    assert [(t["number"], t["ok"], t["description"]) for t in tap["tests"]] == [
        (1, True, "first"),
        (2, False, "second is wrong"),
        (3, True, ""),
    ]
    assert tap["tests"][1]["diagnostics"] == ['Failed test 2: "second is wrong"', "have: 1", "want: 2"]
    assert [t["number"] for t in pgtap.failed_tests(tap)] == [2]


def test_harness_lines_are_not_tests_and_directives_are_read():
    tap = pgtap.parse_tap(PG_PROVE_PASSED)
    # The lone "ok" pg_prove prints after the file is the harness's, not a test.
    assert [t["number"] for t in tap["tests"]] == [1, 2]
    assert tap["tests"][1]["description"] == "two"
    assert tap["tests"][1]["directive"] == "SKIP not on this server"


def test_a_failing_todo_test_does_not_fail_the_file():
    tap = pgtap.parse_tap("1..2\nok 1 - fine\nnot ok 2 - later # TODO not written yet\n")
    assert pgtap.failed_tests(tap) == []
    ok, summary, _unused = pgtap.judge({"path": "t.sql"}, tap, 0, "")
    assert ok and summary == "2/2 tests passed"


def test_a_no_plan_file_gets_its_plan_at_the_end():
    assert pgtap.parse_tap("ok 1\nok 2\n1..2\n")["planned"] == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("begin;\nselect plan(12);\nselect ok(true);\nrollback;\n", 12),
        ("select * from plan( 3 );", 3),
        ("select extensions.plan(4);", 4),
        ("select no_plan();\nselect ok(true);", None),
        ("select ok(true);", None),
        ("-- select plan(9);\nselect plan(2);", 2),
        ("select 'plan(7)';\nselect plan(1);", 1),
    ],
)
def test_plan_count(text, expected):
    statements, _unused = pgtap.scan(text)
    assert pgtap.plan_count(statements) == expected


def test_scan_respects_quotes_comments_dollar_bodies_and_psql_meta_commands():
    text = (
        "\\set ECHO none\n"
        "begin;\n"
        "/* a; comment */ select 'a;b', $$x;y$$ as \"c;d\";\n"
        "select id from auth.users limit 1 \\gset\n"
        "select ok(true); -- trailing; comment\n"
        "rollback;\n"
    )
    statements, meta = pgtap.scan(text)
    assert [s for _unused, s in statements] == [
        "begin",
        "select 'a;b', $$x;y$$ as \"c;d\"",
        "select id from auth.users limit 1",
        "select ok(true)",
        "rollback",
    ]
    assert [line for line, _unused in statements] == [2, 3, 4, 5, 6]
    assert meta == [(1, "set"), (4, "gset")]


def test_files_that_roll_back_themselves_are_not_wrapped_twice():
    statements, meta = pgtap.scan("begin;\nselect plan(1);\nselect ok(true);\nrollback;\n")
    assert pgtap.transaction_shape(statements, meta, "t.sql") == (True, True)
    statements, meta = pgtap.scan("select plan(1);\nselect ok(true);\n")
    assert pgtap.transaction_shape(statements, meta, "t.sql") == (False, False)
    wrapper = pgtap.wrapper_text({"path": "/x/t.sql", "opens": False, "closes": False}, "extensions")
    lines = wrapper.splitlines()
    assert lines[-3:] == ["begin;", "\\i '/x/t.sql'", "rollback;"]
    wrapper = pgtap.wrapper_text({"path": "/x/it's.sql", "opens": True, "closes": True}, "extensions")
    assert wrapper.splitlines()[-1] == "\\i '/x/it\\'s.sql'"
    assert "begin;" not in wrapper and "rollback;" not in wrapper


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("begin;\nselect plan(1);\nselect ok(true);\ncommit;\n", "line 4: COMMIT is not allowed"),
        ("select plan(1);\nend;\n", "line 2: END is not allowed"),
        ("begin;\nprepare transaction 'x';\n", "PREPARE is not allowed"),
        ("begin;\nselect plan(1);\nrollback;\ninsert into t values (1);\n", "line 4: a statement after the file"),
        ("\\c other\nselect plan(1);\n", "line 1: psql's \\c is not allowed"),
        ("select plan(1);\n\\i helpers.sql\n", "line 2: psql's \\i is not allowed"),
        ("select plan(1);\n\\! rm -rf /\n", "psql's \\! is not allowed"),
    ],
)
def test_files_that_could_commit_or_leave_the_transaction_are_refused(tmp_path, text, message):
    path = write(tmp_path, "bad.sql", text)
    with pytest.raises(DRError, match="load pgtap tests") as raised:
        pgtap.load_file(str(path), str(tmp_path))
    assert message in raised.value.message
    assert str(path) in str(raised.value)
    assert raised.value.hint


def test_rollback_to_savepoint_and_a_second_transaction_are_allowed(tmp_path):
    text = (
        "begin;\nsavepoint s;\nselect plan(1);\nrollback to savepoint s;\nselect ok(true);\nrollback;\n"
        "begin;\nselect 1;\nrollback;\n"
    )
    test = pgtap.load_file(str(write(tmp_path, "ok.sql", text)), str(tmp_path))
    assert (test["opens"], test["closes"]) == (True, True)


def test_an_empty_or_unterminated_file_is_refused(tmp_path):
    with pytest.raises(DRError, match="holds no SQL statement"):
        pgtap.load_file(str(write(tmp_path, "empty.sql", "-- nothing\n")), str(tmp_path))
    with pytest.raises(DRError, match="unterminated"):
        pgtap.load_file(str(write(tmp_path, "open.sql", "select 'oops;\n")), str(tmp_path))


def test_the_suite_is_every_sql_and_pg_file_sorted_by_path(tmp_path):
    write(tmp_path, "b.sql", "select plan(1);")
    write(tmp_path, "a.pg", "select plan(2);")
    write(tmp_path, "rls/c.sql", 'create extension if not exists "basejump-supabase_test_helpers";\nselect plan(3);')
    write(tmp_path, "notes.md", "not a test")
    write(tmp_path, ".hidden/x.sql", "select plan(9);")
    suite = pgtap.load_suite(str(tmp_path))
    assert [(t["name"], t["plan"]) for t in suite] == [("pgtap:a.pg", 2), ("pgtap:b.sql", 1), ("pgtap:rls/c.sql", 3)]
    assert suite[2]["extensions"] == ["basejump-supabase_test_helpers"]
    assert pgtap.planned(suite)[0] == {
        "name": "pgtap:a.pg",
        "file": str(tmp_path / "a.pg"),
        "plan": 2,
        "extensions": [],
    }


def test_a_folder_without_tests_is_an_error_and_no_folder_is_no_suite(tmp_path):
    with pytest.raises(DRError, match=r"holds no \*.sql or \*.pg test file"):
        pgtap.load_suite(str(tmp_path))
    assert pgtap.load_suite(None) == []


def test_the_folder_is_the_given_one_or_tests_next_to_the_migrations(tmp_path):
    assert pgtap.resolve_dir(None, str(APP_MIGRATIONS)) == str(APP_TESTS)
    assert pgtap.resolve_dir(None, str(APP_MIGRATIONS) + "/") == str(APP_TESTS)
    (tmp_path / "migrations").mkdir()
    assert pgtap.resolve_dir(None, str(tmp_path / "migrations")) is None
    assert pgtap.resolve_dir("", "") is None
    assert pgtap.resolve_dir(str(APP_TESTS), None) == str(APP_TESTS)
    with pytest.raises(DRError, match="the pgTAP test folder does not exist") as raised:
        pgtap.resolve_dir(str(tmp_path / "nope"), str(APP_MIGRATIONS))
    assert "pgdr_pgtap_dir" in raised.value.hint


def test_the_sample_app_suite_loads_with_its_plans():
    suite = pgtap.load_suite(str(APP_TESTS))
    assert [t["name"] for t in suite] == [
        "pgtap:01_rls_tenant_isolation.sql",
        "pgtap:02_participants_join_rejoin.sql",
        "pgtap:03_signup_provisioning.sql",
        "pgtap:04_anon_refused.sql",
    ]
    assert all(t["plan"] and t["opens"] and t["closes"] and not t["extensions"] for t in suite)


@pytest.mark.parametrize(
    ("stderr", "name"),
    [
        (
            'psql:/t/a.sql:2: ERROR:  extension "basejump-supabase_test_helpers" is not available\n'
            'DETAIL:  Could not open extension control file "/usr/share/postgresql/15/extension/'
            'basejump-supabase_test_helpers.control": No such file or directory.',
            "basejump-supabase_test_helpers",
        ),
        (
            'ERROR:  could not open extension control file "/usr/share/postgresql/14/extension/pg_jsonschema.control"',
            "pg_jsonschema",
        ),
        ('ERROR:  required extension "postgis" is not installed', "postgis"),
        ('ERROR:  extension "vector" does not exist', "vector"),
        ("psql:/t/a.sql:4: ERROR:  division by zero", None),
        # A notice is not a failure (DROP EXTENSION IF EXISTS of an extension that is not there).
        ('psql:/t/a.sql:3: NOTICE:  extension "vector" does not exist, skipping', None),
        ('psql:/t/a:b.sql:2: ERROR:  extension "vector" is not available', "vector"),
    ],
)
def test_missing_extension_is_read_from_the_error_output(stderr, name):
    assert pgtap.missing_extension(stderr) == name


def test_verdicts():
    test = {"path": "/t/a.sql"}
    ok, summary, details = pgtap.judge(test, pgtap.parse_tap(PG_PROVE_FAILED), 1, "")
    assert not ok
    assert summary == "1 of 3 tests failed: #2 second is wrong"
    assert details["failed_tests"][0]["diagnostics"][1:] == ["have: 1", "want: 2"]

    stopped = pgtap.parse_tap("1..3\nok 1 - one\n")
    ok, summary, details = pgtap.judge(test, stopped, 3, "psql:/t/a.sql:4: ERROR:  division by zero\n")
    assert (ok, summary) == (False, "stopped after 1 of 3 tests: line 4: division by zero")
    assert details["error"] == {"line": 4, "message": "division by zero"}

    missing = 'psql:/t/a.sql:2: ERROR:  extension "basejump-supabase_test_helpers" is not available'
    ok, summary, details = pgtap.judge(test, pgtap.parse_tap(""), 3, missing)
    assert not ok and summary.startswith("needs the extension basejump-supabase_test_helpers,")
    assert details["missing_extension"] == "basejump-supabase_test_helpers"

    colon = pgtap.judge(test, stopped, 3, "psql:/t/a:b.sql:4: ERROR:  division by zero\n")
    assert colon[1] == "stopped after 1 of 3 tests: line 4: division by zero"

    ok, summary, _unused = pgtap.judge(
        test, pgtap.parse_tap(""), 2, "psql: error: connection to server failed: refused"
    )
    assert (ok, summary) == (False, "psql could not connect: connection to server failed: refused")
    assert pgtap.judge(test, pgtap.parse_tap("1..3\nok 1\nok 2\n"), 0, "")[1] == "planned 3 tests but ran 2"
    assert "no plan" in pgtap.judge(test, pgtap.parse_tap("ok 1\n"), 0, "")[1]
    assert pgtap.judge(test, pgtap.parse_tap("1..1\nok 1\n"), 0, "") == (
        True,
        "1/1 tests passed",
        {"file": "/t/a.sql", "planned": 1, "ran": 1, "passed": 1, "failed_tests": []},
    )


def test_many_failures_are_shown_five_at_a_time():
    tap = pgtap.parse_tap("1..7\n" + "".join(f"not ok {n} - t{n}\n" for n in range(1, 8)))
    summary = pgtap.judge({"path": "x"}, tap, 1, "")[1]
    assert summary == "7 of 7 tests failed: #1 t1; #2 t2; #3 t3; #4 t4; #5 t5 (+2 more)"


def test_the_connection_goes_to_psql_in_the_environment_only():
    env = pgtap.client_env("postgresql://postgres:S3cret-pw@127.0.0.1:5432/app?sslmode=require")
    assert {k: env[k] for k in ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSSLMODE")} == {
        "PGHOST": "127.0.0.1",
        "PGPORT": "5432",
        "PGDATABASE": "app",
        "PGUSER": "postgres",
        "PGPASSWORD": "S3cret-pw",
        "PGSSLMODE": "require",
    }
    with pytest.raises(DRError, match="cannot take from the environment: krbsrvname") as raised:
        pgtap.client_env("host=h user=u password=S3cret-pw krbsrvname=x")
    assert "S3cret-pw" not in json.dumps(raised.value.to_dict())


def test_a_missing_pg_prove_is_named_before_anything_connects(monkeypatch):
    monkeypatch.setattr(pgtap.shutil, "which", lambda name: None)
    with pytest.raises(DRError, match="pg_prove not found") as raised:
        pgtap.find_tools("postgresql://postgres:pw@127.0.0.1:1/postgres")
    assert "libtap-parser-sourcehandler-pgtap-perl" in raised.value.hint


def test_sequences_that_could_not_be_set_back_say_how_to(monkeypatch):
    result = pgtap.sequences_result(["public.a", "public.b"], {"public.a": 7, "public.b": None})
    assert result["name"] == "pgtap:sequences" and not result["ok"]
    assert result["summary"].endswith("select setval('public.a', 7, true); alter sequence public.b restart")


def test_the_record_shows_each_failing_pgtap_test_with_its_diagnostics():
    from ansible_collections.pgdr.supabase.plugins.module_utils import audit

    ok, summary, details = pgtap.judge({"path": "/t/a.sql"}, pgtap.parse_tap(PG_PROVE_FAILED), 1, "")
    check = {"name": "pgtap:a.sql", "ok": ok, "summary": summary, "details": details}
    event = audit.build_event("drill", "failed", "test", "me", checks=[check, {"name": "catalog", "ok": True}])
    lines = audit.markdown_entry(event).splitlines()
    at = lines.index("  - FAIL pgtap:a.sql: 1 of 3 tests failed: \\#2 second is wrong")  # operator text escaped
    assert lines[at + 1] == '    - not ok 2 second is wrong: Failed test 2: "second is wrong" / have: 1 / want: 2'
    assert lines[at + 2] == "  - pass catalog"

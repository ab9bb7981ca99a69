"""The app's pgTAP suite on a restored copy, through the smoke module: the sample app's suite passes and leaves the
copy equal to its source (the engine's verification and an independent oracle); a failing test is named with its
diagnostics; a file needing an extension the server lacks names it; check mode runs nothing and touches nothing;
pgTAP is created only for the run (by the admin login when postgres may not) and never dropped when it was there."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import psycopg
import pytest
from backup_helpers import (
    admin_dsn_for,
    copy_database,
    drop_database,
    dsn_for,
    restored_with_tools,
)
from oracle import differences
from test_verify_smoke import execute, run_module

from ansible_collections.pgdr.supabase.plugins.module_utils import logical_restore, pg, pgtap, verify
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MIGRATIONS = REPO / "examples" / "app" / "supabase" / "migrations"
APP_TESTS = REPO / "examples" / "app" / "supabase" / "tests"
SUITE = [
    ("pgtap:01_rls_tenant_isolation.sql", 22),
    ("pgtap:02_participants_join_rejoin.sql", 9),
    ("pgtap:03_signup_provisioning.sql", 7),
    ("pgtap:04_anon_refused.sql", 9),
]


@pytest.fixture(scope="module")
def golden(sandbox, tmp_path_factory):
    """Production backed up by the engine and restored into a new staging database with the client tools."""
    with restored_with_tools(sandbox, tmp_path_factory.mktemp("restore"), "pgtap") as restored:
        database, manifest = restored["database"], restored["manifest"]
        yield {
            "database": database,
            "manifest": manifest,
            "index": logical_restore.read_index(restored["target"], manifest),
            "differences": differences(sandbox["production"]["dsn"], dsn_for(sandbox, "staging", database)),
        }


@pytest.fixture
def copy(sandbox, golden):
    name = copy_database(sandbox, golden["database"])
    yield {"name": name, "dsn": dsn_for(sandbox, "staging", name), "admin_dsn": admin_dsn_for(sandbox, "staging", name)}
    drop_database(sandbox, name)


def smoke(dsn, check_mode=False, **args):
    return run_module("pgdr.supabase.smoke", {"dsn": dsn, "checks_dirs": [], **args}, check_mode=check_mode)


def has_pgtap(dsn):
    with psycopg.connect(dsn) as conn:
        return conn.execute("select count(*) from pg_extension where extname = 'pgtap'").fetchone()[0] == 1


def engine_verify(dsn, golden):
    with pg.connect(dsn) as conn:
        marker = logical_restore.marker_of(conn)
    return verify.verify_restore(dsn, golden["manifest"], str(MIGRATIONS), index=golden["index"], marker=marker)


def suite_dir(tmp_path, files):
    folder = tmp_path / "tests"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_the_sample_suite_passes_on_a_restored_copy_which_still_equals_its_source(sandbox, copy, golden):
    assert engine_verify(copy["dsn"], golden)["ok"]
    assert not has_pgtap(copy["dsn"])
    # The default folder: supabase/tests next to the migrations.
    rc, result = smoke(copy["dsn"], migrations_dir=str(MIGRATIONS))
    assert rc == 0, result["msg"]
    assert result["changed"] is False
    assert result["pgtap_dir"] == str(APP_TESTS)
    assert [(c["name"], c["ok"], c["summary"]) for c in result["checks"]] == [
        (name, True, f"{count}/{count} tests passed") for name, count in SUITE
    ]
    details = result["checks"][0]["details"]
    assert details["pgtap"]["created"] is True and details["pgtap"]["schema"] == "extensions"
    # The suite's inserts into invoices and invitations used their sequences; those are set back.
    assert set(details["pgtap"]["sequences_reset"]) >= {"public.invoice_number_seq", "public.invitations_id_seq"}
    # pgTAP is gone again, and the copy equals its backup (the engine) and production (an independent oracle).
    assert not has_pgtap(copy["dsn"])
    verified = engine_verify(copy["dsn"], golden)
    assert verified["ok"], verified["msg"]
    assert differences(sandbox["production"]["dsn"], copy["dsn"]) == golden["differences"]
    assert sandbox["staging"]["password"] not in json.dumps(result)


def test_a_leaky_policy_fails_the_test_that_guards_it_by_name_with_its_diagnostics(copy):
    execute(
        copy["dsn"],
        'drop policy "members read events of their tenant" on public.events',
        'create policy "leaky" on public.events for select to authenticated using (true)',
    )
    rc, result = smoke(copy["dsn"], pgtap_dir=str(APP_TESTS))
    assert rc == 1
    assert result["failed_checks"] == ["pgtap:01_rls_tenant_isolation.sql"]
    failed = next(c for c in result["checks"] if not c["ok"])
    assert failed["summary"] == "1 of 22 tests failed: #10 events: no event of another tenant is visible"
    [test] = failed["details"]["failed_tests"]
    assert test["number"] == 10
    assert test["diagnostics"][0] == 'Failed test 10: "events: no event of another tenant is visible"'
    assert test["diagnostics"][1].startswith("have: ") and test["diagnostics"][2] == "want: 0"
    assert "pgtap:01_rls_tenant_isolation.sql: 1 of 22 tests failed" in result["msg"]
    assert all(c["ok"] for c in result["checks"] if c is not failed)
    assert not has_pgtap(copy["dsn"])


def test_a_suite_with_one_failing_test_names_it(copy, tmp_path):
    folder = suite_dir(
        tmp_path,
        {
            "one_fails.sql": "begin;\nselect plan(3);\nselect ok(true, 'fine');\n"
            "select is((select count(*)::int from public.tenants where slug = 'acme'), 2, 'acme is there twice');\n"
            "select ok(true, 'also fine');\nselect * from finish();\nrollback;\n",
        },
    )
    rc, result = smoke(copy["dsn"], pgtap_dir=str(folder))
    assert rc == 1
    [check] = result["checks"]
    assert check["summary"] == "1 of 3 tests failed: #2 acme is there twice"
    assert check["details"]["failed_tests"][0]["diagnostics"][1:] == ["have: 1", "want: 2"]
    assert (check["details"]["planned"], check["details"]["ran"], check["details"]["passed"]) == (3, 3, 2)


def test_a_file_that_stops_on_an_error_names_the_line_and_the_error(copy, tmp_path):
    folder = suite_dir(tmp_path, {"stops.pg": "select plan(2);\nselect ok(true);\nselect * from public.nope;\n"})
    rc, result = smoke(copy["dsn"], pgtap_dir=str(folder))
    assert rc == 1
    [check] = result["checks"]
    assert check["summary"] == 'stopped after 1 of 2 tests: line 3: relation "public.nope" does not exist'
    assert not has_pgtap(copy["dsn"])


def test_a_file_needing_an_extension_the_server_lacks_names_it(copy, tmp_path):
    folder = suite_dir(
        tmp_path,
        {
            "00_helpers.sql": 'begin;\ncreate extension if not exists "basejump-supabase_test_helpers";\n'
            "select plan(1);\nselect ok(tests.get_supabase_uid('x') is null);\nrollback;\n",
            # The same need, hidden from the file reading (inside a DO block): found in the error output.
            "01_hidden.sql": "begin;\nselect plan(1);\n"
            "do $$ begin execute 'create extension pg_jsonschema'; end $$;\nselect ok(true);\nrollback;\n",
            # A notice about an extension that is not there is no failure.
            "02_plain.sql": "begin;\nselect plan(1);\ndrop extension if exists vector;\n"
            "select ok(true, 'runs anyway');\nrollback;\n",
        },
    )
    rc, result = smoke(copy["dsn"], pgtap_dir=str(folder))
    assert rc == 1
    assert result["failed_checks"] == ["pgtap:00_helpers.sql", "pgtap:01_hidden.sql"]
    helpers, hidden, plain = result["checks"]
    assert helpers["summary"].startswith("needs the extension basejump-supabase_test_helpers, which this database")
    assert helpers["details"]["missing_extension"] == "basejump-supabase_test_helpers"
    assert hidden["summary"].startswith("needs the extension pg_jsonschema,")
    assert "pgTAP" not in hidden["summary"] and "ERROR" not in hidden["summary"]
    assert plain["ok"]
    assert not has_pgtap(copy["dsn"])


def test_check_mode_lists_files_and_plans_and_touches_nothing(sandbox, copy):
    before = differences(sandbox["production"]["dsn"], copy["dsn"])
    rc, result = smoke(copy["dsn"], check_mode=True, migrations_dir=str(MIGRATIONS))
    assert rc == 0, result["msg"]
    assert result["changed"] is False and result["checks"] == []
    assert [(p["name"], p["plan"]) for p in result["pgtap_plan"]] == SUITE
    assert result["would_run"] == [name for name, _ in SUITE]
    assert "4 pgTAP files listed, not run" in result["msg"]
    assert not has_pgtap(copy["dsn"])
    # Catalog, sequences, content and the schema dump: as they were.
    assert differences(sandbox["production"]["dsn"], copy["dsn"]) == before


def test_check_mode_before_the_restore_lists_the_plans(sandbox):
    missing = dsn_for(sandbox, "staging", "pgdr_pgtap_not_restored_yet")
    rc, result = smoke(missing, check_mode=True, migrations_dir=str(MIGRATIONS))
    assert rc == 0, result["msg"]
    assert result["skipped_reason"].startswith("the database does not exist yet")
    assert [(p["name"], p["plan"]) for p in result["pgtap_plan"]] == SUITE


def test_a_test_file_that_commits_is_refused_before_anything_runs(copy, tmp_path):
    folder = suite_dir(
        tmp_path,
        {
            "commits.sql": "begin;\nselect plan(1);\ninsert into public.tenants "
            "(name, slug) values ('x', 'x');\ncommit;\n"
        },
    )
    rc, result = smoke(copy["dsn"], pgtap_dir=str(folder))
    assert rc == 1
    assert "line 4: COMMIT is not allowed in a test file" in result["msg"]
    assert not has_pgtap(copy["dsn"])
    with psycopg.connect(copy["dsn"]) as conn:
        assert conn.execute("select count(*) from public.tenants where slug = 'x'").fetchone()[0] == 0


def test_pgtap_the_source_had_stays(copy, tmp_path):
    execute(copy["dsn"], "create extension pgtap with schema extensions")
    folder = suite_dir(tmp_path, {"t.sql": "select plan(1);\nselect ok(true);\n"})
    rc, result = smoke(copy["dsn"], pgtap_dir=str(folder))
    assert rc == 0, result["msg"]
    assert result["checks"][0]["details"]["pgtap"]["created"] is False
    assert has_pgtap(copy["dsn"])


def test_when_postgres_may_not_create_pgtap_the_admin_login_does(sandbox, copy, tmp_path):
    execute(copy["admin_dsn"], "revoke create on schema extensions from postgres")
    with pytest.raises(DRError, match="this login may not create the pgtap extension") as raised:
        pgtap.ensure_pgtap(copy["dsn"])
    assert "pgdr_pgtap_admin_dsn" in raised.value.hint
    rc, result = smoke(copy["dsn"], pgtap_dir=str(APP_TESTS))
    assert rc == 1
    assert "may not create the pgtap extension" in result["msg"]
    rc, result = smoke(copy["dsn"], pgtap_dir=str(APP_TESTS), pgtap_admin_dsn=copy["admin_dsn"])
    assert rc == 0, result["msg"]
    assert all(c["ok"] for c in result["checks"])
    assert not has_pgtap(copy["dsn"])
    assert sandbox["staging"]["admin_password"] not in json.dumps(result)


def test_a_missing_pgtap_folder_is_named(copy, tmp_path):
    rc, result = smoke(copy["dsn"], pgtap_dir=str(tmp_path / "nope"))
    assert rc == 1
    assert "the pgTAP test folder does not exist" in result["msg"]
    assert str(tmp_path / "nope") in result["msg"]


def test_a_file_that_runs_past_its_timeout_fails_and_rolls_back(copy, tmp_path):
    folder = suite_dir(
        tmp_path,
        {
            "slow.sql": "begin;\nselect plan(1);\ninsert into public.tenants (name, slug) values ('slow', 'slow');\n"
            "select pg_sleep(30);\nselect ok(true);\nrollback;\n"
        },
    )
    rc, result = smoke(copy["dsn"], pgtap_dir=str(folder), pgtap_timeout=2)
    assert rc == 1
    assert result["checks"][0]["summary"].startswith("did not finish within 2 s")
    assert not has_pgtap(copy["dsn"])
    with psycopg.connect(copy["dsn"]) as conn:
        assert conn.execute("select count(*) from public.tenants where slug = 'slow'").fetchone()[0] == 0


# --- through the restore runbook ------------------------------------------------------------------------------


def test_restore_yml_records_each_pgtap_file_and_stops_on_a_failing_one(
    run_playbook, sandbox, s3_target, prefix, tmp_path
):
    from test_restore_playbooks import events, restore_vars, take_backup

    take_backup(sandbox, s3_target, prefix)
    folder = tmp_path / "tests"
    shutil.copytree(APP_TESTS, folder)
    (folder / "05_fails.sql").write_text(
        "begin;\nselect plan(2);\nselect ok(true, 'fine');\n"
        "select is((select count(*)::int from public.tenants), 99, 'there are 99 tenants');\nrollback;\n"
    )
    extra = restore_vars(prefix, tmp_path, pgdr_pgtap_dir=str(folder))

    planned = run_playbook("restore.yml", extra, check=True)
    assert planned.rc == 0, planned.stdout[-3000:]
    assert "would run pgtap:01_rls_tenant_isolation.sql (22 tests planned)" in planned.stdout
    assert "would run pgtap:05_fails.sql (2 tests planned)" in planned.stdout

    run = run_playbook("restore.yml", extra)
    assert run.rc != 0
    assert "PASS pgtap:01_rls_tenant_isolation.sql: 22/22 tests passed" in run.stdout
    assert "FAIL pgtap:05_fails.sql: 1 of 2 tests failed: #2 there are 99 tenants" in run.stdout
    assert "not ok 2 - there are 99 tenants: Failed test 2" in run.stdout
    [event] = [e for e in events(tmp_path) if e["outcome"] == "failed"]
    recorded = {c["name"]: c["ok"] for c in event["checks"] if c["name"].startswith("pgtap:")}
    assert recorded == {**{name: True for name, _ in SUITE}, "pgtap:05_fails.sql": False}
    report = next((tmp_path / "reports").glob("*.md")).read_text()
    # The Markdown report escapes operator text (_ and # are written \\_ and \\#).
    assert "pgtap:05\\_fails.sql: 1 of 2 tests failed: \\#2 there are 99 tenants" in report
    assert 'not ok 2 there are 99 tenants: Failed test 2: "there are 99 tenants" / have: 3 / want: 99' in report
    [recorded_file] = [c for c in event["checks"] if c["name"] == "pgtap:05_fails.sql"]
    assert recorded_file["details"]["failed_tests"][0]["diagnostics"][1:] == ["have: 3", "want: 99"]
    # The suite left nothing behind: pgTAP is gone and the restored project equals production but for the
    # webhook the restore disarms on purpose.
    assert not has_pgtap(sandbox["staging"]["dsn"])
    found = differences(sandbox["production"]["dsn"], sandbox["staging"]["dsn"])
    assert [d for d in found if '"send invitation email"' not in d] == []


def test_a_sequence_the_suite_advanced_and_may_not_set_back_is_a_failed_check(copy, tmp_path):
    execute(
        copy["admin_dsn"],
        "create sequence public.pgtap_usage_only",
        # The platform's default privileges give postgres (and the API roles it is a member of) UPDATE too: take
        # it away, keep USAGE (nextval).
        "revoke all on sequence public.pgtap_usage_only from postgres, anon, authenticated, service_role",
        "grant usage, select on sequence public.pgtap_usage_only to postgres",
    )
    folder = suite_dir(tmp_path, {"t.sql": "select plan(1);\nselect ok(nextval('public.pgtap_usage_only') = 1);\n"})
    rc, result = smoke(copy["dsn"], pgtap_dir=str(folder))
    assert rc == 1
    assert result["failed_checks"] == ["pgtap:sequences"]
    summary = result["checks"][-1]["summary"]
    assert summary.startswith("the suite advanced public.pgtap_usage_only and this login may not set them back")
    assert "alter sequence public.pgtap_usage_only restart" in summary
    assert not has_pgtap(copy["dsn"])


def test_a_database_without_the_extensions_schema_is_named(sandbox, tmp_path):
    name = f"plain_{uuid.uuid4().hex[:8]}"
    execute(dsn_for(sandbox, "staging", "postgres"), f'create database "{name}" template template0')
    try:
        dsn = dsn_for(sandbox, "staging", name)
        with pytest.raises(DRError, match="the database has no extensions schema to install pgTAP into") as raised:
            pgtap.run_suite(dsn, pgtap.load_suite(str(APP_TESTS)))
        assert "create the schema extensions" in raised.value.hint
        assert not has_pgtap(dsn)
    finally:
        drop_database(sandbox, name)


def test_a_server_without_pgtap_is_named(copy, monkeypatch):
    # The server package is installed on this machine: pretend pg_available_extensions does not list it.
    real = pgtap.available_extensions
    monkeypatch.setattr(pgtap, "available_extensions", lambda conn, names: real(conn, names) - {"pgtap"})
    with pytest.raises(DRError, match="pgTAP is not installed on the database server") as raised:
        pgtap.ensure_pgtap(copy["dsn"])
    assert "postgresql-15-pgtap" in raised.value.hint


def test_files_run_as_the_runbooks_login_with_pgtap_on_their_search_path(copy, tmp_path):
    # A login whose search path lacks the extensions schema still finds pgTAP's functions.
    execute(copy["admin_dsn"], f'alter role postgres in database "{copy["name"]}" set search_path = "$user", public')
    folder = suite_dir(
        tmp_path,
        {
            "who.sql": "select plan(3);\n"
            "select is(current_user::text, 'postgres', 'runs as postgres');\n"
            "select is((select rolsuper from pg_roles where rolname = current_user), false, 'not a superuser');\n"
            "select is(current_setting('transaction_isolation') is not null and "
            "(select count(*) from pg_stat_activity where pid = pg_backend_pid() and xact_start is not null) = 1,"
            " true, 'inside a transaction');\n",
        },
    )
    rc, result = smoke(copy["dsn"], pgtap_dir=str(folder))
    assert rc == 0, result["msg"]
    assert result["checks"][0]["summary"] == "3/3 tests passed"


def test_check_mode_runs_the_sql_checks_and_only_lists_the_pgtap_files(sandbox, copy, repo):
    before = differences(sandbox["production"]["dsn"], copy["dsn"])
    shipped = str(repo / "roles" / "smoke_tests" / "files" / "checks")
    rc, result = smoke(copy["dsn"], check_mode=True, checks_dirs=[shipped], migrations_dir=str(MIGRATIONS))
    assert rc == 0, result["msg"]
    names = [c["name"] for c in result["checks"]]
    assert "tenant_isolation_events" in names and not any(n.startswith("pgtap:") for n in names)
    assert [(p["name"], p["plan"]) for p in result["pgtap_plan"]] == SUITE
    assert result["msg"].endswith("; check mode: 4 pgTAP files listed, not run")
    assert not has_pgtap(copy["dsn"])
    assert differences(sandbox["production"]["dsn"], copy["dsn"]) == before

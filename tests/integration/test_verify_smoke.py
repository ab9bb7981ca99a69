"""Restore verification and smoke tests against the real sandbox: the default checks pass on production and
leave it as it was; on a restored copy, each kind of damage is caught and named by the right check."""

from __future__ import annotations

import importlib.util
import json
import shutil
import uuid
from pathlib import Path

import psycopg
import pytest
from backup_helpers import (
    copy_database,
    drop_database,
    dsn_for,
    restored_with_tools,
    write_v1_backup,
)
from conftest import s3_params
from psycopg import sql

from ansible_collections.pgdr.supabase.plugins.module_utils import logical_restore, pg, smoke, verify
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHECKS = REPO / "roles" / "smoke_tests" / "files" / "checks"
MIGRATIONS = REPO / "examples" / "app" / "supabase" / "migrations"
WATCHED = (
    "auth.users",
    "auth.identities",
    "public.tenants",
    "public.profiles",
    "public.sessions",
    "public.participants",
    "public.events",
)


def run_module(name, args, check_mode=False):
    """Run a module's main() in this process; return (exit code, result)."""
    import contextlib
    import io

    from ansible.module_utils.testing import patch_module_args

    spec = importlib.util.spec_from_file_location(
        f"_pgdr_it_{name}", REPO / "plugins" / "modules" / f"{name.rsplit('.', 1)[-1]}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if check_mode:
        args = {**args, "_ansible_check_mode": True}
    out = io.StringIO()
    with patch_module_args(args), contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        module.main()
    return exited.value.code, json.loads(out.getvalue())


def database_state(dsn):
    """Row count and a content hash of every watched table, the schema fingerprint and the migration history."""
    state = {}
    with psycopg.connect(dsn) as conn:
        for name in WATCHED:
            schema, table = name.split(".")
            query = sql.SQL("select count(*), md5(coalesce(string_agg(t::text, '|' order by t.id), '')) from {}.{} t")
            state[name] = conn.execute(query.format(sql.Identifier(schema), sql.Identifier(table))).fetchone()
        state["fingerprint"] = pg.fingerprint(pg.schema_objects(conn, "supabase"))
        state["migrations"] = pg.migration_versions(conn)
    return state


def execute(dsn, *statements):
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture(scope="module")
def golden(sandbox, tmp_path_factory):
    """A restored copy of production on staging (backup engine + restore with the client tools), and the
    backup's manifest as stored in S3 (with every object's hash)."""
    with restored_with_tools(sandbox, tmp_path_factory.mktemp("restore"), "verify") as restored:
        target, manifest = restored["target"], restored["manifest"]
        yield {
            "database": restored["database"],
            "manifest": manifest,
            "manifest_key": restored["manifest_key"],
            "target": target,
            "index": logical_restore.read_index(target, manifest),
            # The same production as a backup of manifest version 1 would describe it (schema hashes, counts).
            "v1": write_v1_backup(sandbox, target, restored["prefix"]),
        }


@pytest.fixture
def copy(sandbox, golden):
    """A fresh copy of the restored database for one test to damage."""
    name = copy_database(sandbox, golden["database"])
    yield dsn_for(sandbox, "staging", name)
    drop_database(sandbox, name)


def check_named(result, name):
    return next(c for c in result["checks"] if c["name"] == name)


def engine_verify(copy, golden, migrations_dir):
    """The engine's verification of a copy, with the marker the copy carries (as the module reads it)."""
    with pg.connect(copy) as conn:
        marker = logical_restore.marker_of(conn)
    return verify.verify_restore(copy, golden["manifest"], migrations_dir, index=golden["index"], marker=marker)


def v2_args(copy, golden, sandbox):
    """The verify module's arguments for a backup with an index: the manifest and the bucket holding the index."""
    return {"dsn": copy, "manifest": golden["manifest"], "s3": s3_params(sandbox), "migrations_dir": str(MIGRATIONS)}


# --- smoke tests ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("check_mode", [False, True])
def test_default_smoke_checks_pass_on_production_and_leave_it_as_it_was(sandbox, check_mode):
    dsn = sandbox["production"]["dsn"]
    before = database_state(dsn)
    rc, result = run_module("pgdr.supabase.smoke", {"dsn": dsn, "checks_dirs": [str(CHECKS)]}, check_mode=check_mode)
    assert rc == 0, result["msg"]
    assert result["changed"] is False
    assert result["ok"] and result["failed_checks"] == []
    names = [c["name"] for c in result["checks"]]
    assert names == [c["name"] for c in smoke.load_checks([str(CHECKS)])]
    assert all(c["ok"] for c in result["checks"])
    # The fixtures the checks created were really there while they ran (a tenant A user saw its own rows) ...
    assert check_named(result, "participants_join_rejoin")["summary"] == "value 'rows=1 active=1 rejoin_count=1'"
    assert "row-level security" in check_named(result, "tenant_isolation_insert_events")["summary"]
    # ... and nothing of them is left: same rows, same contents, same schema, same history.
    assert database_state(dsn) == before
    assert sandbox["production"]["password"] not in json.dumps(result)


def test_default_smoke_checks_pass_on_a_restored_copy(copy):
    rc, result = run_module("pgdr.supabase.smoke", {"dsn": copy, "checks_dirs": [str(CHECKS)]})
    assert rc == 0, result["msg"]


def test_dropped_tenant_isolation_policy_fails_the_isolation_check_by_name(copy):
    execute(copy, 'drop policy "members read events of their tenant" on public.events')
    rc, result = run_module("pgdr.supabase.smoke", {"dsn": copy, "checks_dirs": [str(CHECKS)]})
    assert rc == 1
    assert result["failed_checks"] == ["tenant_isolation_events"]
    assert "tenant_isolation_events: expected 0 rows, got 1" in result["msg"]
    assert check_named(result, "tenant_isolation_events")["details"]["rows"] == [["own tenant row not visible", "null"]]


def test_a_policy_that_lets_every_tenant_through_is_named_with_the_rows_it_leaks(copy, golden):
    execute(
        copy,
        'drop policy "members read events of their tenant" on public.events',
        'create policy "leaky" on public.events for select to authenticated using (true)',
    )
    rc, result = run_module("pgdr.supabase.smoke", {"dsn": copy, "checks_dirs": [str(CHECKS)]})
    assert rc == 1
    assert result["failed_checks"] == ["tenant_isolation_events"]
    leaked = golden["manifest"]["tables"]["public.events"] + 1  # every production event plus tenant B's fixture
    assert f"tenant_isolation_events: expected 0 rows, got {leaked}" in result["msg"]
    assert check_named(result, "tenant_isolation_events")["details"]["rows"][0][0] == "row of another tenant visible"


def test_an_insert_into_another_tenant_that_succeeds_fails_the_insert_check(copy):
    execute(
        copy,
        'drop policy "members add events to their tenant" on public.events',
        'create policy "anyone adds" on public.events for insert to authenticated with check (true)',
    )
    rc, result = run_module("pgdr.supabase.smoke", {"dsn": copy, "checks_dirs": [str(CHECKS)]})
    assert rc == 1
    assert result["failed_checks"] == ["tenant_isolation_insert_events"]
    assert "expected error row-level security, the statement succeeded" in result["msg"]


def test_broken_rejoin_fails_the_join_check(copy):
    # A join_session that no longer reuses the row: a rejoin does not count.
    execute(
        copy,
        """create or replace function public.join_session(p_session uuid) returns public.participants
           language plpgsql security invoker set search_path = '' as $$
           declare result public.participants;
           begin
             update public.participants set left_at = null where session_id = p_session
               and user_id = (select auth.uid()) returning * into result;
             if result.id is null then
               insert into public.participants (session_id, tenant_id, user_id)
               select s.id, s.tenant_id, (select auth.uid()) from public.sessions s where s.id = p_session
               returning * into result;
             end if;
             return result;
           end $$""",
    )
    rc, result = run_module("pgdr.supabase.smoke", {"dsn": copy, "checks_dirs": [str(CHECKS)]})
    assert rc == 1
    assert result["failed_checks"] == ["participants_join_rejoin"]
    assert "expected value 'rows=1 active=1 rejoin_count=1', got 'rows=1 active=1 rejoin_count=0'" in result["msg"]


def test_a_missing_function_fails_the_join_check_naming_the_statement(copy):
    execute(copy, "drop function public.leave_session(uuid)")
    rc, result = run_module("pgdr.supabase.smoke", {"dsn": copy, "checks_dirs": [str(CHECKS)]})
    assert rc == 1
    assert result["failed_checks"] == ["participants_join_rejoin"]
    assert "statement 2 failed: 42883" in check_named(result, "participants_join_rejoin")["summary"]


def test_extra_checks_run_and_roll_back_even_when_they_fail(sandbox, tmp_path):
    dsn = sandbox["production"]["dsn"]
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "writes_then_fails.sql").write_text(
        "-- expect: rows=1\ninsert into public.tenants (name, slug) values ('x', 'pgdr-it-x');\nselect * from nope;\n"
    )
    (extra / "nobody.sql").write_text(
        "-- as_user: (select id from auth.users where email = 'nobody@example.invalid')\n-- expect: rows=0\nselect 1"
    )
    (extra / "auth_user_uid.sql").write_text("-- name: auth_user_uid\n-- expect: value=replaced\nselect 'replaced'")
    (extra / "as_owner.sql").write_text("-- expect: rows=1\nselect count(*) from public.tenants")
    before = database_state(dsn)
    rc, result = run_module("pgdr.supabase.smoke", {"dsn": dsn, "checks_dirs": [str(CHECKS), str(extra)]})
    assert rc == 1
    assert sorted(result["failed_checks"]) == ["nobody", "writes_then_fails"]
    assert "42P01" in check_named(result, "writes_then_fails")["summary"]
    assert "as_user gave no user" in check_named(result, "nobody")["summary"]
    assert check_named(result, "auth_user_uid")["summary"] == "value 'replaced'"
    assert [c["name"] for c in result["checks"]].count("auth_user_uid") == 1
    assert database_state(dsn) == before


def test_smoke_http_check_and_command(sandbox, tmp_path):
    dsn = sandbox["production"]["dsn"]
    rc, result = run_module(
        "pgdr.supabase.smoke",
        {
            "dsn": dsn,
            "checks_dirs": [],
            "http": {"url": sandbox["s3"]["endpoint"] + "/", "status": 403, "name": "s3_endpoint"},
            "command": ["sh", "-c", 'exec psql "$SUPABASE_DB_URL" -XAtc "select count(*) from public.tenants"'],
        },
    )
    assert rc == 0, result["msg"]
    assert [c["name"] for c in result["checks"]] == ["s3_endpoint", "command"]
    assert result["checks"][1]["details"]["output_tail"].strip() == "3"
    rc, result = run_module(
        "pgdr.supabase.smoke", {"dsn": dsn, "http": {"url": sandbox["s3"]["endpoint"] + "/", "status": 200}}
    )
    assert rc == 1
    assert result["failed_checks"] == ["http"]


# --- restore verification -------------------------------------------------------------------------------------


def test_verify_passes_on_a_faithful_copy_with_the_manifest_from_the_bucket(copy, golden, sandbox):
    rc, result = run_module(
        "pgdr.supabase.verify_restore",
        {
            "dsn": copy,
            "manifest_key": golden["manifest_key"],
            "s3": s3_params(sandbox),
            "migrations_dir": str(MIGRATIONS),
        },
    )
    assert rc == 0, result["msg"]
    assert result["changed"] is False
    assert [c["name"] for c in result["checks"]] == ["migrations", "catalog", "content"]
    assert result["content"] == "full"
    assert check_named(result, "content")["details"]["tables"] == len(golden["index"]["content"])
    assert sandbox["s3"]["secret_key"] not in json.dumps(result)


def test_deleted_history_row_is_reported_missing_by_version(copy, golden, sandbox):
    execute(copy, "delete from supabase_migrations.schema_migrations where version = '20240103000000'")
    rc, result = run_module("pgdr.supabase.verify_restore", v2_args(copy, golden, sandbox))
    assert rc == 1
    # The history is a table of the backup too: its content differs as well.
    assert result["failed_checks"] == ["migrations", "content"]
    details = check_named(result, "migrations")["details"]
    assert details["missing_in_db"] == ["20240103000000"]
    assert details["missing_vs_manifest"] == ["20240103000000"]
    assert "20240103000000" in result["msg"]


def test_history_without_files_and_files_without_history(copy, golden, tmp_path):
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, folder)
    (folder / "20240102120000_forgotten.sql").write_text("select 1;\n")
    (folder / "20240105000000_events.sql").unlink()
    result = engine_verify(copy, golden, str(folder))
    details = check_named(result, "migrations")["details"]
    assert not result["ok"]
    assert details["missing_in_db"] == ["20240102120000"]
    assert details["extra_in_db"] == ["20240105000000"]
    assert details["missing_vs_manifest"] == [] and details["extra_vs_manifest"] == []


def test_a_newer_file_is_pending_and_fails_only_when_asked(copy, golden, sandbox, tmp_path):
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, folder)
    (folder / "20990101000000_future.sql").write_text("select 1;\n")
    args = {**v2_args(copy, golden, sandbox), "migrations_dir": str(folder)}
    rc, result = run_module("pgdr.supabase.verify_restore", args)
    assert rc == 0, result["msg"]
    assert check_named(result, "migrations")["details"]["pending"] == ["20990101000000"]
    assert "pending: 20990101000000" in check_named(result, "migrations")["summary"]
    rc, result = run_module("pgdr.supabase.verify_restore", {**args, "fail_on_pending": True})
    assert rc == 1
    assert result["failed_checks"] == ["migrations"]


def test_changed_column_is_named_by_the_catalog_check(copy, golden):
    execute(copy, "alter table public.profiles alter column display_name drop not null")
    result = engine_verify(copy, golden, str(MIGRATIONS))
    assert result["failed"] == ["catalog"]
    catalog = check_named(result, "catalog")
    assert catalog["details"]["differences"] == ["table: public.profiles differs from the backup (definition)"]
    # The same change, against a version 1 manifest (object hashes): named by the schema check.
    result = verify.verify_restore(copy, golden["v1"], str(MIGRATIONS))
    assert result["failed"] == ["schema"]
    schema = check_named(result, "schema")
    assert schema["details"]["changed"] == ["table public.profiles"]
    assert schema["details"]["missing"] == [] and schema["details"]["extra"] == []
    assert "changed: table public.profiles" in schema["summary"]


def test_dropped_policy_and_new_index_are_named_and_a_stripped_manifest_falls_back_to_the_fingerprint(copy, golden):
    execute(
        copy,
        'drop policy "members read events of their tenant" on public.events',
        "create index pgdr_it_idx on public.events (kind)",
    )
    result = engine_verify(copy, golden, str(MIGRATIONS))
    differences = check_named(result, "catalog")["details"]["differences"]
    assert "policy: public.events.members read events of their tenant is missing" in differences
    assert "index: public.pgdr_it_idx is not in the backup" in differences
    result = verify.verify_restore(copy, golden["v1"], str(MIGRATIONS))
    schema = check_named(result, "schema")
    assert schema["details"]["missing"] == ["policy public.events.members read events of their tenant"]
    assert schema["details"]["extra"] == ["index public.pgdr_it_idx"]
    stripped = {**golden["v1"], "schema": {"fingerprint": golden["v1"]["schema"]["fingerprint"]}}
    result = verify.verify_restore(copy, stripped, str(MIGRATIONS))
    schema = check_named(result, "schema")
    assert not schema["ok"]
    assert schema["details"]["mode"] == "fingerprint"
    assert "manifest_key" in schema["summary"]


def test_deleted_rows_are_named_by_table_with_both_counts(copy, golden, sandbox):
    expected = golden["manifest"]["tables"]["public.events"]
    execute(copy, "delete from public.events where id in (select id from public.events limit 7)")
    rc, result = run_module("pgdr.supabase.verify_restore", v2_args(copy, golden, sandbox))
    assert rc == 1
    assert result["failed_checks"] == ["content"]
    assert f"content: public.events differs (digest; {expected - 7} rows, the backup's {expected})" in result["msg"]
    # Counts only: the same table, with both numbers.
    rc, result = run_module("pgdr.supabase.verify_restore", {**v2_args(copy, golden, sandbox), "content": "counts"})
    assert rc == 1 and result["content"] == "counts"
    content = check_named(result, "content")
    assert content["details"]["mismatches"] == {"public.events": {"expected": expected, "actual": expected - 7}}
    assert f"public.events expected {expected}, got {expected - 7}" in result["msg"]
    rc, result = run_module("pgdr.supabase.verify_restore", {**v2_args(copy, golden, sandbox), "content": "off"})
    assert rc == 0 and "not compared" in check_named(result, "content")["summary"]


def test_verify_command_decides_and_sees_the_restored_database(copy, golden, sandbox):
    args = v2_args(copy, golden, sandbox)
    probe = 'test "$(psql "$DATABASE_URL" -XAtc "select count(*) from public.tenants")" = 3'
    rc, result = run_module("pgdr.supabase.verify_restore", {**args, "command": ["sh", "-c", probe]})
    assert rc == 0, result["msg"]
    rc, result = run_module(
        "pgdr.supabase.verify_restore", {**args, "command": ["sh", "-c", probe.replace("= 3", "= 4")]}
    )
    assert rc == 1
    assert result["failed_checks"] == ["command"]


def test_missing_migrations_folder_is_a_clear_error(copy, golden, tmp_path):
    missing = tmp_path / "supabase" / "migrations"
    with pytest.raises(DRError) as err:
        verify.verify_restore(copy, golden["manifest"], str(missing))
    assert str(missing) in str(err.value)
    rc, result = run_module(
        "pgdr.supabase.verify_restore", {"dsn": copy, "manifest": golden["manifest"], "migrations_dir": str(missing)}
    )
    assert rc == 1
    assert str(missing) in result["msg"]
    assert "migrations path" in result["msg"]


def test_missing_manifest_key_is_a_clear_error(copy, sandbox):
    rc, result = run_module(
        "pgdr.supabase.verify_restore", {"dsn": copy, "manifest_key": "nope/manifest.json", "s3": s3_params(sandbox)}
    )
    assert rc == 1
    assert "no manifest at this key" in result["msg"]
    assert "nope/manifest.json" in result["msg"]


# --- check mode before the database exists --------------------------------------------------------------------


def test_check_mode_on_a_database_not_restored_yet_lists_what_would_run(sandbox, golden):
    dsn = dsn_for(sandbox, "staging", f"not_restored_{uuid.uuid4().hex[:6]}")
    rc, result = run_module(
        "pgdr.supabase.verify_restore",
        {"dsn": dsn, "manifest": golden["manifest"], "migrations_dir": str(MIGRATIONS), "command": ["true"]},
        check_mode=True,
    )
    assert rc == 0, result
    assert result["changed"] is False
    assert result["would_run"] == ["migrations", "catalog", "content", "command"]
    assert "does not exist yet" in result["skipped_reason"]
    rc, result = run_module("pgdr.supabase.smoke", {"dsn": dsn, "checks_dirs": [str(CHECKS)]}, check_mode=True)
    assert rc == 0, result
    assert result["would_run"] == [c["name"] for c in smoke.load_checks([str(CHECKS)])]
    # Outside check mode a missing database is an error.
    rc, result = run_module("pgdr.supabase.smoke", {"dsn": dsn, "checks_dirs": [str(CHECKS)]})
    assert rc == 1
    assert "the database does not exist" in result["msg"]


# --- the roles ------------------------------------------------------------------------------------------------


def test_roles_print_a_line_per_check_and_fail_naming_the_failed_check(run_playbook, sandbox, golden, tmp_path):
    extra = tmp_path / "team-checks"
    extra.mkdir()
    (extra / "team_rule.sql").write_text("-- expect: rows=0\nselect 1")
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        f"""---
- name: Verify and smoke-test production against its backup
  hosts: production
  gather_facts: false
  tasks:
    - name: Verify migrations
      ansible.builtin.include_role:
        name: pgdr.supabase.verify_migrations
      vars:
        verify_migrations_dsn: "{{{{ pgdr_sandbox.production.dsn }}}}"
        verify_migrations_manifest_key: {golden["manifest_key"]}
        verify_migrations_s3: "{{{{ pgdr_backup_s3 }}}}"
        verify_migrations_dir: "{{{{ pgdr_sandbox.app.migrations_dir }}}}"
    - name: Run the smoke tests
      ansible.builtin.include_role:
        name: pgdr.supabase.smoke_tests
      vars:
        smoke_tests_dsn: "{{{{ pgdr_sandbox.production.dsn }}}}"
        smoke_tests_extra_checks_dir: {extra}
"""
    )
    run = run_playbook(str(playbook))
    assert run.rc != 0
    assert run.changed() == 0
    for line in (
        "PASS migrations:",
        "PASS catalog:",
        "PASS content:",
        "PASS tenant_isolation_events:",
        "FAIL team_rule: expected 0 rows, got 1",
    ):
        assert line in run.stdout, run.stdout[-4000:]
    [smoke_result] = run.results("pgdr.supabase.smoke")
    assert smoke_result["failed_checks"] == ["team_rule"]
    assert sandbox["production"]["password"] not in run.stdout

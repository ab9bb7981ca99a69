"""A restore equals its source: the sample app's production, backed up with backup.yml and restored with
restore.yml into the staging project's own database (as the non-superuser postgres, platform sessions connected),
compared with production by an oracle that shares no code with the engine (catalog queries, content hashes, a
pg_dump --schema-only diff); and playbooks/verify.yml naming each kind of difference on a damaged copy."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from backup_helpers import admin_dsn_for, copy_database, drop_database
from conftest import playbook_runner, s3_params
from oracle import cron_jobs, differences

from ansible_collections.pgdr.supabase.plugins.module_utils import logical_restore
from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import s3_target as make_target

pytestmark = pytest.mark.integration

# What a restore changes on purpose: the webhook is disabled (staging must not call production's hooks).
DISARMED_WEBHOOK = '"send invitation email"'


@pytest.fixture(scope="module")
def world(sandbox, sandbox_dir, tmp_path_factory):
    """The daily backup of production, then the restore runbook into staging's project database."""
    run = playbook_runner(sandbox_dir, tmp_path_factory.mktemp("fidelity"))
    prefix = f"fidelity-{uuid.uuid4().hex[:8]}"
    extra = {"pgdr_backup_prefix": prefix, "pgdr_backup_storage_assets": False, "pgdr_backup_secondary_copy": False}
    backup = run("playbooks/backup.yml", extra)
    assert backup.rc == 0, backup.stdout[-3000:]
    restore = run("playbooks/restore.yml", {**extra, "reason": "fidelity test"})
    assert restore.rc == 0, restore.stdout[-3000:]
    [result] = restore.results("pgdr.supabase.logical_restore")
    return {"run": run, "extra": extra, "restore": restore, "result": result, "prefix": prefix}


def test_the_restored_project_equals_production_by_an_independent_oracle(sandbox, world):
    assert world["result"]["plan"]["mode"] == "project"
    found = differences(sandbox["production"]["dsn"], sandbox["staging"]["dsn"])
    webhook = [d for d in found if DISARMED_WEBHOOK in d]
    assert [d for d in found if DISARMED_WEBHOOK not in d] == []
    # The one difference on purpose: the webhook's trigger is there, disabled.
    assert any("only in the source" in d and "'O'" in d for d in webhook)
    assert any("only in the restored copy" in d and "'D'" in d for d in webhook)


def test_cron_jobs_come_back_inactive(sandbox, world):
    source, restored = cron_jobs(sandbox["production"]["dsn"]), cron_jobs(sandbox["staging"]["dsn"])
    assert [j[:5] for j in source] == [j[:5] for j in restored]
    assert all(j[5] for j in source) and not any(j[5] for j in restored)
    disarmed = world["result"]["report"]["disarmed"]
    assert {d["kind"] for d in disarmed} == {"cron", "webhook"}
    assert all(d["rearm"] for d in disarmed)


def test_anon_is_refused_what_production_refused(sandbox, world):
    with psycopg.connect(sandbox["staging"]["dsn"]) as conn:
        conn.execute("set role anon")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for function"):
            conn.execute("select public.tenant_revenue(gen_random_uuid())")
        conn.rollback()
        conn.execute("set role anon")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for table invoices"):
            conn.execute("select * from public.invoices")
        conn.rollback()
        conn.execute("set role anon")
        # A column grant: anon may read an account's name, not its email.
        conn.execute("select id, display_name from public.accounts").fetchall()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select email from public.accounts")


def test_a_signup_on_the_restored_copy_provisions_an_account(sandbox, world):
    with psycopg.connect(sandbox["staging"]["dsn"]) as conn:
        user = conn.execute(
            "insert into auth.users (email, raw_user_meta_data) values ('new@acme.example', '{\"full_name\": \"New\"}')"
            " returning id"
        ).fetchone()[0]
        assert conn.execute("select display_name from public.accounts where id = %s", (user,)).fetchone() == ("New",)
        conn.rollback()


def test_materialized_views_come_back_as_they_were(sandbox, world):
    with psycopg.connect(sandbox["staging"]["dsn"]) as conn:
        assert conn.execute("select count(*) from public.daily_revenue").fetchone()[0] > 0
        assert conn.execute("select ispopulated from pg_matviews where matviewname = 'tenant_activity'").fetchone() == (
            False,
        )


def test_the_runbooks_ran_as_a_role_that_is_not_a_superuser(sandbox, world):
    with psycopg.connect(sandbox["staging"]["dsn"]) as conn:
        assert conn.execute("select current_user, rolsuper from pg_roles where rolname = current_user").fetchone() == (
            "postgres",
            False,
        )
    assert "postgres:" in sandbox["staging"]["dsn"]


def test_a_second_restore_changes_nothing_and_verify_passes(world):
    again = world["run"]("playbooks/restore.yml", {**world["extra"], "reason": "fidelity test, again"})
    assert again.rc == 0, again.stdout[-3000:]
    [result] = again.results("pgdr.supabase.logical_restore")
    assert result["changed"] is False
    verify = world["run"]("playbooks/verify.yml", world["extra"], check=True)
    assert verify.rc == 0, verify.stdout[-3000:]
    assert "PASS catalog" in verify.stdout and "PASS content" in verify.stdout


# --- verify names each kind of difference ------------------------------------------------------------------


@pytest.fixture(scope="module")
def golden(sandbox, world, tmp_path_factory):
    """The same backup restored into a new database (not disarmed, so it equals production), to copy and damage."""
    target = make_target(s3_params(sandbox))
    backup_id = world["result"]["backup_id"]
    manifest = target.get_json(f"{world['prefix']}/production/logical/{backup_id}/manifest.json")
    request = logical_restore.RestoreRequest(
        sandbox["staging"]["dsn"],
        manifest,
        target,
        database=f"golden_{uuid.uuid4().hex[:8]}",
        template="platform_template",
        workdir=str(tmp_path_factory.mktemp("golden")),
        skip_extensions=["pg_cron"],
        disarm=False,
        decryption_identities=[Path(sandbox["age"]["identity_file"]).read_text()],
    )
    logical_restore.run(request)
    yield {"database": request.database, "backup_id": backup_id}
    drop_database(sandbox, request.database)


DAMAGE = [
    (
        "grant insert, delete on public.invoices to anon",
        "grant: public.invoices to anon (INSERT, DELETE) is not in the backup",
    ),
    ("drop trigger on_auth_user_created on auth.users", "trigger: auth.users.on_auth_user_created is missing"),
    ("update public.tenants set name = name || '!' where slug = 'acme'", "content: public.tenants differs"),
    ("refresh materialized view public.daily_revenue with no data", "matview: public.daily_revenue is not populated"),
    (
        'drop policy "users manage their own avatar" on storage.objects',
        "policy: storage.objects.users manage their own avatar is missing",
    ),
    (
        "alter default privileges for role postgres in schema public grant execute on functions to anon",
        "default privileges for role postgres in schema public on functions: grant to anon (EXECUTE) is not in",
    ),
    (
        "revoke select (display_name) on public.accounts from anon",
        "grant: public.accounts.display_name to anon (SELECT) is missing",
    ),
    (
        "alter publication supabase_realtime drop table public.invitations",
        "publication table: supabase_realtime public.invitations is missing",
    ),
    ("select setval('public.invoice_number_seq', 10)", "sequence: public.invoice_number_seq is at 10"),
    (
        "alter table public.invoices no force row level security",
        "rls: public.invoices is enabled; the backup says enabled, forced",
    ),
    ("delete from public.events where ctid = (select min(ctid) from public.events)", "content: public.events differs"),
]


def copy_of(sandbox, golden):
    """A copy of the golden restore, with its marker (what the restore left out on purpose)."""
    return copy_database(sandbox, golden["database"], "damaged")


def test_verify_passes_on_an_undamaged_copy(sandbox, world, golden):
    copy = copy_of(sandbox, golden)
    try:
        run = world["run"]("playbooks/verify.yml", {**world["extra"], "database": copy})
        assert run.rc == 0, run.stdout[-3000:]
        assert "extension pg_cron" in run.stdout  # reported as left out by the restore, not failed
    finally:
        drop_database(sandbox, copy)


@pytest.mark.parametrize(("damage", "named"), DAMAGE, ids=[d[1].split(":")[0] + f"-{i}" for i, d in enumerate(DAMAGE)])
def test_verify_names_the_difference(sandbox, world, golden, damage, named):
    copy = copy_of(sandbox, golden)
    try:
        # As the platform's superuser where postgres may not (a trigger on auth.users is the platform's table).
        with psycopg.connect(admin_dsn_for(sandbox, "staging", copy), autocommit=True) as conn:
            conn.execute(damage)
        run = world["run"]("playbooks/verify.yml", {**world["extra"], "database": copy})
        assert run.rc != 0, run.stdout[-2000:]
        assert named in run.stdout, run.stdout[-3000:]
        assert "FAIL catalog:" in run.stdout or "FAIL content:" in run.stdout, run.stdout[-2000:]
    finally:
        drop_database(sandbox, copy)

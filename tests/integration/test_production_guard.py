"""issue 9.3: the production guard decides on the server's identity, not on the spelling of the DSN.

Every spelling that reaches the sandbox's production cluster (a Unix socket, hostaddr= under another name, a
service file, PGHOST/PGPORT in the environment) is refused; a role that may not read pg_control_system() is
refused with the grant to make; once granted, the same role passes."""

from __future__ import annotations

import datetime as dt
import random
import uuid

import psycopg
import pytest
from backup_helpers import admin_dsn_for, signing_key
from test_restore_playbooks import restore_vars

from ansible_collections.pgdr.supabase.plugins.module_utils import logical_backup, logical_restore
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def manifest(sandbox):
    from conftest import s3_params

    from ansible_collections.pgdr.supabase.plugins.module_utils.ansible_common import s3_target

    moment = dt.datetime(2020, 6, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=random.randrange(10**7))
    req = logical_backup.BackupRequest(
        "production",
        sandbox["production"]["dsn"],
        s3_target(s3_params(sandbox)),
        prefix=f"guard-{uuid.uuid4().hex[:8]}",
        window="every_run",
        now=moment,
        signing_key=signing_key(sandbox),
    )
    return logical_backup.run(req)["manifest"]


def inventory_production(state, with_identity=True):
    entry = {"host": state["production"]["host"], "port": state["production"]["port"], "database": "postgres"}
    if with_identity:
        entry["system_identifier"] = state["production"]["system_identifier"]
    return [entry]


def plan(state, target, manifest, dsn, **kwargs):
    kwargs.setdefault("production", inventory_production(state))
    if kwargs.get("mode", "new_database") == "new_database":
        # As on a hosted project: postgres copies the platform-ready template, which cannot have pg_cron.
        kwargs.setdefault("template", "platform_template")
        kwargs.setdefault("skip_extensions", ["pg_cron"])
    req = logical_restore.RestoreRequest(dsn, manifest, target, **kwargs)
    return logical_restore.plan(req)


def refused(state, target, manifest, dsn, **kwargs):
    with pytest.raises(DRError) as info:
        plan(state, target, manifest, dsn, **kwargs)
    assert info.value.step == "safety check", info.value
    return str(info.value)


def spellings(state, tmp_path):
    p = state["production"]
    service_file = tmp_path / "pg_service.conf"
    service_file.write_text(
        f"[prod]\nhost={p['host']}\nport={p['port']}\ndbname=postgres\nuser=postgres\npassword={p['password']}\n"
    )
    return {
        "unix socket": (f"host={p['socket_dir']} port={p['port']} dbname=postgres user=postgres", {}),
        "hostaddr under another name": (
            f"host=db.staging.invalid hostaddr=127.0.0.1 port={p['port']} dbname=postgres user=postgres "
            f"password={p['password']}",
            {},
        ),
        "service file": ("service=prod", {"PGSERVICEFILE": str(service_file)}),
        "PGHOST and PGPORT": ("dbname=postgres user=postgres", {"PGHOST": p["socket_dir"], "PGPORT": str(p["port"])}),
    }


@pytest.mark.parametrize(
    "spelling", ["unix socket", "hostaddr under another name", "service file", "PGHOST and PGPORT"]
)
@pytest.mark.parametrize("inventory", ["with identity", "manifest only"])
def test_every_spelling_of_production_is_refused(
    sandbox, s3_target, manifest, tmp_path, monkeypatch, spelling, inventory
):
    dsn, env = spellings(sandbox, tmp_path)[spelling]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    production = inventory_production(sandbox) if inventory == "with identity" else []
    message = refused(sandbox, s3_target, manifest, dsn, mode="project", production=production)
    assert "the restore target is a production database" in message
    assert sandbox["production"]["system_identifier"] in message
    learned = "the inventory" if inventory == "with identity" else "the backup's manifest"
    assert learned in message
    assert sandbox["production"]["password"] not in message


def test_the_typed_confirmation_still_lets_an_operator_through(sandbox, s3_target, manifest, tmp_path):
    dsn, _ = spellings(sandbox, tmp_path)["unix socket"]
    where = f"{sandbox['production']['socket_dir']}:{sandbox['production']['port']}/postgres"
    message = refused(sandbox, s3_target, manifest, dsn, mode="project", allow_over_production=True, confirm="x")
    assert f"confirm={where}" in message
    result = plan(sandbox, s3_target, manifest, dsn, mode="project", allow_over_production=True, confirm=where)
    assert result["production_guard"]["production"] is True and result["production_guard"]["confirmed"] is True


def test_staging_is_not_production_and_the_identity_is_reported(sandbox, s3_target, manifest):
    result = plan(sandbox, s3_target, manifest, sandbox["staging"]["dsn"], database="guard_never_made")
    guard = result["production_guard"]
    assert guard["production"] is False
    assert guard["identity"]["system_identifier"] == sandbox["staging"]["system_identifier"]
    assert guard["identity"]["database"] == "guard_never_made" and guard["identity"]["database_oid"] is None
    assert guard["warnings"] == []


def test_an_entry_without_identity_is_matched_by_address_and_warned_about(sandbox, s3_target, manifest):
    no_source = dict(manifest, source=dict(manifest["source"], system_identifier=None))
    production = inventory_production(sandbox, with_identity=False)
    result = plan(
        sandbox,
        s3_target,
        no_source,
        sandbox["staging"]["dsn"],
        production=[*production, {"system_identifier": sandbox["production"]["system_identifier"], "database": "pg"}],
    )
    assert any("has no system_identifier" in w for w in result["production_guard"]["warnings"])
    message = refused(
        sandbox, s3_target, no_source, sandbox["production"]["dsn"], mode="project", production=production
    )
    assert "cannot tell whether" in message and "system_identifier" in message


@pytest.fixture
def restricted_role(sandbox):
    """A login role like hosted Supabase's postgres: CREATEDB, member of pg_monitor, not a superuser."""
    name = f"guard_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    admin = admin_dsn_for(sandbox, "staging", "postgres")  # pg_control_system()'s grants need its owner
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"create role {name} login createdb password '{password}' in role pg_monitor")
    yield name, f"postgresql://{name}:{password}@{sandbox['staging']['host']}:{sandbox['staging']['port']}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("grant execute on function pg_catalog.pg_control_system() to public")
        conn.execute(f"revoke execute on function pg_catalog.pg_control_system() from {name}")
        conn.execute(f"drop role {name}")


def test_a_non_superuser_reads_the_identity_as_postgresql_grants_it(sandbox, s3_target, manifest, restricted_role):
    """PostgreSQL 15's default: EXECUTE on pg_control_system() for PUBLIC, so hosted-like roles pass."""
    name, dsn = restricted_role
    result = plan(sandbox, s3_target, manifest, dsn, database="guard_never_made")
    assert result["production_guard"]["identity"]["user"] == name
    assert result["production_guard"]["identity"]["system_identifier"] == sandbox["staging"]["system_identifier"]


def test_a_role_that_cannot_read_the_identity_is_refused_then_passes_once_granted(
    sandbox, s3_target, manifest, restricted_role
):
    """A platform that revoked it (the other possible answer on hosted Supabase)."""
    name, dsn = restricted_role
    with psycopg.connect(admin_dsn_for(sandbox, "staging", "postgres"), autocommit=True) as conn:
        conn.execute("revoke execute on function pg_catalog.pg_control_system() from public")
    message = refused(sandbox, s3_target, manifest, dsn, database="guard_never_made")
    assert f"the role {name} is not a superuser and may not execute pg_control_system()" in message
    assert f"grant execute on function pg_catalog.pg_control_system() to {name}" in message
    with psycopg.connect(admin_dsn_for(sandbox, "staging", "postgres"), autocommit=True) as conn:
        conn.execute(f"grant execute on function pg_catalog.pg_control_system() to {name}")
    result = plan(sandbox, s3_target, manifest, dsn, database="guard_never_made")
    assert result["production_guard"]["production"] is False
    assert result["production_guard"]["identity"]["user"] == name


def test_restore_yml_over_a_socket_dsn_leaves_production_alone(run_playbook, sandbox, s3_target, manifest, tmp_path):
    """The fault as reported: an in-place (project mode) restore, production reached over its Unix socket."""
    prefix = manifest["objects"][0]["key"].split("/")[0]
    p = sandbox["production"]
    with psycopg.connect(p["dsn"]) as conn:
        before = conn.execute("select count(*), max(created_at) from public.tenants").fetchone()
    extra = {
        "pgdr_restore_target_dsn": f"host={p['socket_dir']} port={p['port']} dbname=postgres user=postgres",
        "pgdr_restore_mode": "project",
        "backup": manifest["backup_id"],
    }
    run = run_playbook("restore.yml", restore_vars(prefix, tmp_path, **extra))
    assert run.rc != 0
    assert "the restore target is a production database" in run.stdout
    with psycopg.connect(p["dsn"]) as conn:
        assert conn.execute("select count(*), max(created_at) from public.tenants").fetchone() == before

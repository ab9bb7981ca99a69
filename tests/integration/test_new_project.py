"""restore_mode new_project through restore.yml: a new project made through the Management API stand-in (a real
PostgreSQL server set up like a hosted project, reached at the host the API gives, port 5432, as the non-superuser
postgres), restored into, compared with production by the independent oracle, staging re-pointed at its database,
URL and keys; a second run that changes nothing; a rehearsal that creates nothing; a throwaway project deleted
after the run; a project that never comes up, and a token that may not create projects."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest
import supabase_api_standin as standin
from oracle import differences
from test_restore_playbooks import events, restore_vars, take_backup

from ansible_collections.pgdr.supabase.plugins.module_utils import logical_restore
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

pytestmark = pytest.mark.integration

# What a restore changes on purpose: the webhook is disabled (staging must not call production's hooks).
DISARMED_WEBHOOK = '"send invitation email"'
# A well-formed token the stand-in is told to give read access only.
READ_ONLY_TOKEN = "sbp_" + "0ead0" + "1" * 35


def api(sandbox, method, path, body=None, token=standin.DEFAULT_TOKEN):
    return standin.call(sandbox["supabase_api"]["url"], method, path, body, token=token)


def projects_called(sandbox, name):
    status, listed = api(sandbox, "GET", "/v1/projects")
    assert status == 200, listed
    return [p for p in listed if p["name"] == name]


def posts(sandbox):
    requests = api(sandbox, "GET", "/_standin/requests")[1]
    return [r for r in requests if (r["method"], r["path"]) == ("POST", "/v1/projects")]


def read_env(path):
    values = {}
    for line in Path(path).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            name, value = line.split("=", 1)
            values[name.strip().removeprefix("export ")] = value.strip().strip("'\"")
    return values


@pytest.fixture
def world(sandbox, s3_target, prefix, tmp_path):
    """A backup of production, a staging env file of the test's own, the project name restore.yml will use;
    every project of that name is deleted (with its server) afterwards."""
    manifest = take_backup(sandbox, s3_target, prefix)
    env_file = tmp_path / "staging.env"
    env_file.write_text(Path(sandbox["env_files"]["staging"]).read_text())
    env_file.chmod(0o600)
    name = f"np-{prefix}-{manifest['backup_id'].lower()}"
    extra = {
        "pgdr_restore_mode": "new_project",
        "pgdr_new_project_name_prefix": f"np-{prefix}",
        "pgdr_staging_env_store": {"type": "dotenv", "path": str(env_file)},
    }
    yield {"manifest": manifest, "env_file": env_file, "name": name, "vars": restore_vars(prefix, tmp_path, **extra)}
    for project in projects_called(sandbox, name):
        api(sandbox, "DELETE", f"/v1/projects/{project['ref']}")


def test_a_restore_into_a_new_project_equals_production_and_staging_gets_its_url_and_keys(
    run_playbook, sandbox, world, tmp_path
):
    run = run_playbook("restore.yml", world["vars"])
    assert run.rc == 0, run.stdout[-4000:]
    [project] = projects_called(sandbox, world["name"])
    ref, host = project["ref"], project["database"]["host"]

    # Staging's settings point at the new project: its database at the host the API gives, its URL, its keys as
    # the API lists them (read here with the raw API, not through the runbook's client).
    env = read_env(world["env_file"])
    keys = api(sandbox, "GET", f"/v1/projects/{ref}/api-keys?reveal=true")[1]
    by_name = {k["name"]: k["api_key"] for k in keys if k["type"] == "legacy"}
    assert env["SUPABASE_URL"] == f"https://{ref}.supabase.co"
    assert env["SUPABASE_ANON_KEY"] == by_name["anon"]
    assert env["SUPABASE_SERVICE_ROLE_KEY"] == by_name["service_role"]
    dsn = env["SUPABASE_DB_URL"]
    assert env["DATABASE_URL"] == dsn
    assert f"@{host}:5432/postgres" in dsn

    # The restored project equals production by the oracle; the one difference on purpose is the disarmed webhook.
    found = differences(sandbox["production"]["dsn"], dsn)
    assert [d for d in found if DISARMED_WEBHOOK not in d] == []
    with psycopg.connect(dsn) as conn:
        user, superuser = conn.execute(
            "select current_user, rolsuper from pg_roles where rolname = current_user"
        ).fetchone()
    assert (user, superuser) == ("postgres", False)

    [event] = events(tmp_path)
    assert event["outcome"] == "success" and event["backup"]["id"] == world["manifest"]["backup_id"]
    assert event["target"].startswith(f"new project {ref}: ")
    details = event["details"]["new_project"]
    assert details["ref"] == ref and details["created"] is True and details["kept"] is True
    assert details["deleted"] is False and details["wait_s"] > 0
    # Secrets never reach the output: the keys, and the project's postgres password (the sandbox's vault file).
    password = (Path(sandbox["dir"]) / "secrets" / "new-project-db-password").read_text().strip()
    assert password and password in dsn
    for secret in [password, *(k["api_key"] for k in keys)]:
        assert secret not in run.stdout

    # Again: the project is found by name, the restore is done already, staging's settings are what they are.
    posted, env_before = len(posts(sandbox)), world["env_file"].read_bytes()
    again = run_playbook("restore.yml", world["vars"])
    assert again.rc == 0, again.stdout[-4000:]
    assert again.changed() == 0
    assert len(posts(sandbox)) == posted
    assert world["env_file"].read_bytes() == env_before
    assert [p["ref"] for p in projects_called(sandbox, world["name"])] == [ref]


def test_a_rehearsal_creates_nothing_and_says_what_it_would_create(run_playbook, sandbox, world):
    posted, env_before = len(posts(sandbox)), world["env_file"].read_bytes()
    run = run_playbook("restore.yml", world["vars"], check=True, diff=True)
    assert run.rc == 0, run.stdout[-4000:]
    assert f"would create project {world['name']} in organization pgdr-sandbox" in run.stdout
    assert len(posts(sandbox)) == posted
    assert projects_called(sandbox, world["name"]) == []
    assert world["env_file"].read_bytes() == env_before


def test_a_throwaway_project_is_deleted_after_the_run_and_staging_is_left_alone(run_playbook, sandbox, world, tmp_path):
    env_before = world["env_file"].read_bytes()
    run = run_playbook("restore.yml", {**world["vars"], "pgdr_new_project_keep": False})
    assert run.rc == 0, run.stdout[-4000:]
    assert "RESTORE PASSED" in run.stdout
    assert projects_called(sandbox, world["name"]) == []
    assert world["env_file"].read_bytes() == env_before
    [event] = events(tmp_path)
    details = event["details"]["new_project"]
    assert event["outcome"] == "success"
    assert details["created"] is True and details["kept"] is False and details["deleted"] is True
    state = api(sandbox, "GET", "/_standin/state")[1]
    assert details["ref"] not in state["projects"]


def test_a_project_that_never_comes_up_fails_naming_it_and_is_deleted(run_playbook, sandbox, world, tmp_path):
    posted = len(posts(sandbox))
    api(sandbox, "POST", "/_standin/switches", {"hang_create": True})
    try:
        run = run_playbook(
            "restore.yml", {**world["vars"], "pgdr_new_project_keep": False, "new_project_wait_timeout": 8}
        )
    finally:
        api(sandbox, "POST", "/_standin/switches", {"hang_create": False})
    assert run.rc != 0
    assert len(posts(sandbox)) == posted + 1  # one create, never resent
    assert "did not become ACTIVE_HEALTHY within 8 s (last status COMING_UP)" in run.stdout
    assert "was deleted (it is a throwaway target" in run.stdout
    assert projects_called(sandbox, world["name"]) == []
    [event] = events(tmp_path)
    assert event["outcome"] == "failed" and "COMING_UP" in event["details"]["error"]


def test_a_token_that_may_not_create_projects_fails_before_anything_is_created(run_playbook, sandbox, world, tmp_path):
    status, answer = api(sandbox, "POST", "/_standin/tokens", {"token": READ_ONLY_TOKEN, "scopes": ["read"]})
    assert status == 200, answer
    try:
        run = run_playbook("restore.yml", {**world["vars"], "pgdr_supabase_token": READ_ONLY_TOKEN})
    finally:
        api(sandbox, "POST", "/_standin/tokens", {"token": READ_ONLY_TOKEN, "scopes": None})
    assert run.rc != 0
    assert "the token is not allowed to create a project (HTTP 403" in run.stdout
    assert "cannot create projects in organization pgdr-sandbox" in run.stdout and "nothing was created" in run.stdout
    assert projects_called(sandbox, world["name"]) == []
    assert READ_ONLY_TOKEN not in run.stdout
    [event] = events(tmp_path)
    assert event["outcome"] == "failed" and "not allowed to create a project" in event["details"]["error"]


# -- a project whose postgres lacks a privilege the restore needs --------------------------------------------------


@pytest.fixture
def project_server(sandbox, prefix):
    """A project of the test's own made through the stand-in (a server of its own, so revoking there touches no
    other test): {dsn (postgres), admin_dsn (the platform's superuser)}; deleted with its server afterwards."""
    password = f"pw-{prefix}"
    body = {"name": f"grants-{prefix}", "db_pass": password, "organization_slug": "pgdr-sandbox", "region": "x"}
    status, created = api(sandbox, "POST", "/v1/projects", body)
    assert status == 201, created
    ref = created["ref"]
    try:
        deadline = time.monotonic() + 180
        while api(sandbox, "GET", f"/v1/projects/{ref}")[1]["status"] != "ACTIVE_HEALTHY":
            assert time.monotonic() < deadline, api(sandbox, "GET", "/_standin/state")[1]["projects"][ref]
            time.sleep(0.5)
        cluster = api(sandbox, "GET", "/_standin/state")[1]["projects"][ref]["cluster"]
        where = f"{cluster['host']}:{cluster['port']}/postgres?sslmode=require"
        yield {
            "dsn": f"postgresql://postgres:{password}@{where}",
            "admin_dsn": f"postgresql://{cluster['admin_user']}:{cluster['admin_password']}@{where}",
        }
    finally:
        api(sandbox, "DELETE", f"/v1/projects/{ref}")


@pytest.mark.parametrize(
    ("revoke", "names", "hint"),
    [
        (
            "revoke set on parameter session_replication_role from postgres",
            "may not set session_replication_role",
            "GRANT SET ON PARAMETER session_replication_role TO <role>",
        ),
        ("revoke trigger on auth.users from postgres", "permission denied for table users", "lacks this privilege"),
    ],
)
def test_a_privilege_the_restore_needs_is_named_with_its_object(
    sandbox, s3_target, prefix, project_server, revoke, names, hint
):
    manifest = take_backup(sandbox, s3_target, prefix)
    with psycopg.connect(project_server["admin_dsn"], autocommit=True) as conn:
        conn.execute(revoke)
    request = logical_restore.RestoreRequest(project_server["dsn"], manifest, s3_target, mode="project")
    with pytest.raises(DRError) as caught:
        logical_restore.run(request)
    assert names in caught.value.message
    assert hint in caught.value.hint
    if "auth.users" in revoke:
        # The statement that needed it names the object: the app's trigger on auth.users.
        assert "on_auth_user_created" in caught.value.message and "auth.users" in caught.value.message

"""The Supabase CLI (pinned, from the npm registry) as an independent client of the Management API stand-in and of
the sandbox's databases: what it sees must be what the runbooks see.

The CLI is installed by `make test-clients` into .tools/supabase-cli (or named by PGDR_SUPABASE_CLI). Its
`--profile FILE` points it at the stand-in, started in-process on a free port like the stand-in's own tests."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest
import supabase_api_standin as standin

from ansible_collections.pgdr.supabase.plugins.module_utils import dumpspec, pg, verify
from ansible_collections.pgdr.supabase.plugins.module_utils import supabase_api as sa

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CLI_VERSION = "2.117.0"
REF = standin.DEFAULT_PITR_REF
FAST = {"restoring": 0.6, "coming_up": 0.3, "services": 0.3}
# Schemas the CLI's schema dump leaves out that a backup of ours carries on purpose, and why.
CARRIED_ON_PURPOSE = {}


def cli_path():
    found = os.environ.get("PGDR_SUPABASE_CLI") or str(
        REPO / ".tools" / "supabase-cli" / "node_modules" / ".bin" / "supabase"
    )
    if not os.access(found, os.X_OK):
        pytest.fail(
            f"the Supabase CLI is not installed at {found}: run 'make test-clients' (npm i -E supabase@{CLI_VERSION})"
        )
    return found


@pytest.fixture(scope="module")
def cli():
    path = cli_path()
    version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert version.strip() == CLI_VERSION
    return path


@pytest.fixture
def server(tmp_path):
    srv = standin.Server(port=0, state_file=tmp_path / "supabase-api.json").start()
    with srv.standin.lock:  # restores that take a second, not minutes
        srv.standin.state["switches"]["timings"] = FAST
    yield srv
    srv.stop()


@pytest.fixture
def api(server):
    return sa.ManagementAPI(standin.DEFAULT_TOKEN, base_url=server.url, timeout=5, max_retries=3, backoff=0.01)


@pytest.fixture
def run_cli(cli, tmp_path):
    """Run the CLI with its own HOME, the stand-in's token, no telemetry; returns stdout (stderr on failure)."""

    def run(*args, profile=None, cwd=None, check=True, token=standin.DEFAULT_TOKEN):
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path / "home"),
            "SUPABASE_ACCESS_TOKEN": token,
            "DO_NOT_TRACK": "1",
            "SUPABASE_TELEMETRY_DISABLED": "1",
        }
        argv = [cli, *args] + (["--profile", str(profile)] if profile else [])
        # cwd: the CLI writes supabase/.temp/ where it runs, so never in the checkout. No stdin: never a prompt.
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=cwd or tmp_path,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            pytest.fail(f"supabase {' '.join(args[:2])} failed ({done.returncode}): {done.stderr[-800:]}")
        return done

    return run


@pytest.fixture
def profile(server, tmp_path):
    path = tmp_path / "standin-profile.yaml"
    path.write_text(
        f"name: pgdr-standin\napi_url: {server.url}\ndashboard_url: {server.url}/dashboard\nproject_host: supabase.co\n"
    )
    return path


def test_backups_list_shows_the_window_the_runbooks_see(run_cli, profile, api):
    listed = json.loads(run_cli("backups", "list", "--project-ref", REF, "-o", "json", profile=profile).stdout)
    ours = api.backups(REF)
    earliest, latest = sa.pitr_window(ours)
    assert listed["pitr_enabled"] is True and listed["region"] == ours["region"]
    data = listed["physical_backup_data"]
    assert data["earliest_physical_backup_date_unix"] == int(earliest.timestamp())
    # The latest point moves with the clock: both reads are seconds apart at most.
    assert abs(data["latest_physical_backup_date_unix"] - int(latest.timestamp())) <= 5


def test_a_restore_the_cli_starts_goes_through_the_states_our_waiter_follows(run_cli, profile, api):
    _earliest, latest = sa.pitr_window(api.backups(REF))
    target = int(latest.timestamp()) - 600
    run_cli("backups", "restore", "--project-ref", REF, "-t", str(target), profile=profile)
    assert api.project(REF)["status"] == "RESTORING"
    timeline = api.wait_for(REF, timeout=30, poll_interval=0.1)
    statuses = [step["status"] for step in timeline] if isinstance(timeline, list) else str(timeline)
    assert "RESTORING" in str(statuses)
    assert api.project(REF)["status"] == "ACTIVE_HEALTHY"
    assert {s["status"] for s in api.health(REF)} == {"ACTIVE_HEALTHY"}


def test_a_restore_outside_the_window_is_refused_to_the_cli_too(run_cli, profile, api):
    earliest, _latest = sa.pitr_window(api.backups(REF))
    done = run_cli(
        "backups",
        "restore",
        "--project-ref",
        REF,
        "-t",
        str(int(earliest.timestamp()) - 3600),
        profile=profile,
        check=False,
    )
    assert done.returncode != 0
    assert "within range" in done.stderr + done.stdout
    assert api.project(REF)["status"] == "ACTIVE_HEALTHY"


def test_the_api_keys_the_cli_lists_are_the_ones_the_repoint_reads(run_cli, profile, api):
    listed = json.loads(run_cli("projects", "api-keys", "--project-ref", REF, "-o", "json", profile=profile).stdout)
    ours = api.api_keys(REF, reveal=True)  # the re-point reads the values; outputs only ever show them masked
    assert [(k["name"], k.get("type")) for k in listed] == [(k["name"], k.get("type")) for k in ours]
    for theirs, mine in zip(listed, ours, strict=True):
        shown = theirs["api_key"]
        if "·" in shown:  # the CLI masks a secret key unless asked to reveal it: its visible start must match
            assert mine["api_key"].startswith(shown.split("·", 1)[0])
        else:
            assert shown == mine["api_key"]


def test_the_cli_lists_the_projects_the_token_sees(run_cli, profile):
    listed = json.loads(run_cli("projects", "list", "-o", "json", profile=profile).stdout)
    assert {p["ref"] for p in listed} == {standin.DEFAULT_PITR_REF, standin.DEFAULT_NOPITR_REF}


def test_the_cli_lists_the_organization_projects_are_created_in(run_cli, profile):
    listed = json.loads(run_cli("orgs", "list", "-o", "json", profile=profile).stdout)
    assert [(o["id"], o["slug"]) for o in listed] == [("pgdr-sandbox", "pgdr-sandbox")]


def test_the_cli_creates_lists_reads_the_keys_of_and_deletes_a_project(run_cli, profile, api, server):
    create = ["projects", "create", "pgdr-cli-target", "--org-id", "pgdr-sandbox", "--region", "eu-central-1"]
    created = json.loads(run_cli(*create, "--db-password", "a-cli-db-pass", "-o", "json", profile=profile).stdout)
    ref = created["ref"]
    assert re.fullmatch(r"[a-z]{20}", ref) and created["id"] == ref
    assert created["status"] == "COMING_UP" and created["organization_slug"] == "pgdr-sandbox"
    # What the CLI sent is what the runbooks' module sends.
    assert ("POST", "/v1/projects") in [(r["method"], r["path"]) for r in server.standin.requests]
    assert "a-cli-db-pass" not in json.dumps(server.standin.state)
    listed = {p["ref"]: p for p in json.loads(run_cli("projects", "list", "-o", "json", profile=profile).stdout)}
    assert listed[ref]["name"] == "pgdr-cli-target"
    assert api.wait_for(ref, timeout=10, poll_interval=0.05)["status"] == "ACTIVE_HEALTHY"
    keys = json.loads(run_cli("projects", "api-keys", "--project-ref", ref, "-o", "json", profile=profile).stdout)
    ours = api.api_keys(ref, reveal=True)
    assert [(k["name"], k["type"]) for k in keys] == [(k["name"], k["type"]) for k in ours]
    assert {k["api_key"] for k in keys if k["type"] == "legacy"} == {
        k["api_key"] for k in ours if k["type"] == "legacy"
    }
    done = run_cli("projects", "delete", ref, "--yes", profile=profile)
    assert "Deleted project: pgdr-cli-target" in done.stdout
    assert ref not in {p["ref"] for p in json.loads(run_cli("projects", "list", "-o", "json", profile=profile).stdout)}
    gone = run_cli("projects", "delete", ref, "--yes", profile=profile, check=False)
    assert gone.returncode != 0 and "does not exist" in gone.stderr


def test_the_cli_is_refused_a_project_for_a_read_only_token_or_an_unknown_organization(run_cli, profile, server):
    reader = "sbp_" + "0123456789" * 4
    with server.standin.lock:
        server.standin.state["tokens"].append(reader)
        server.standin.state["token_scopes"][reader] = ["read"]
    create = ["projects", "create", "pgdr-cli-target", "--db-password", "pw", "--region", "eu-central-1"]
    refused = run_cli(*create, "--org-id", "pgdr-sandbox", profile=profile, check=False, token=reader)
    assert refused.returncode != 0 and "required scope" in refused.stderr
    unknown = run_cli(*create, "--org-id", "no-such-org", profile=profile, check=False)
    assert unknown.returncode != 0 and "no-such-org not found" in unknown.stderr
    assert set(server.standin.state["projects"]) == {standin.DEFAULT_PITR_REF, standin.DEFAULT_NOPITR_REF}


def test_a_project_the_cli_creates_on_the_sandbox_is_a_server_its_db_password_logs_into(run_cli, sandbox, tmp_path):
    url = sandbox["supabase_api"]["url"]
    profile = tmp_path / "sandbox-profile.yaml"
    profile.write_text(
        f"name: pgdr-sandbox\napi_url: {url}\ndashboard_url: {url}/dashboard\nproject_host: supabase.co\n"
    )
    create = ["projects", "create", "pgdr-cli-real", "--org-id", "pgdr-sandbox", "--region", "eu-central-1"]
    ref = json.loads(run_cli(*create, "--db-password", "cli-real-pass", "-o", "json", profile=profile).stdout)["ref"]
    try:
        api = sa.ManagementAPI(standin.DEFAULT_TOKEN, base_url=url, timeout=10)
        api.wait_for(ref, timeout=120, poll_interval=0.2)
        host = api.project(ref)["database"]["host"]
        with psycopg.connect(
            host=host, port=5432, dbname="postgres", user="postgres", password="cli-real-pass", sslmode="require"
        ) as conn:
            assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
    finally:
        run_cli("projects", "delete", ref, "--yes", profile=profile)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=host, port=5432, dbname="postgres", user="postgres", connect_timeout=3).close()


def _migration_table(text):
    """(local, remote) versions from `supabase migration list`'s table (cells may be blank)."""
    local, remote = set(), set()
    for line in text.splitlines():
        cells = [c.strip().strip("`").strip() for c in line.split("|")]
        if len(cells) != 3 or not any(re.fullmatch(r"\d{14}", c) for c in cells[:2]):
            continue
        if re.fullmatch(r"\d{14}", cells[0]):
            local.add(cells[0])
        if re.fullmatch(r"\d{14}", cells[1]):
            remote.add(cells[1])
    return local, remote


def test_migration_list_agrees_with_the_migrations_check(run_cli, sandbox, tmp_path):
    # A copy of the app's migrations: the CLI writes supabase/.temp/ into its workdir.
    app = tmp_path / "app"
    shutil.copytree(sandbox["app"]["migrations_dir"], app / "supabase" / "migrations")
    done = run_cli("migration", "list", "--db-url", sandbox["production"]["dsn"], "--workdir", str(app))
    local, remote = _migration_table(done.stdout)
    with psycopg.connect(sandbox["production"]["dsn"]) as conn:
        applied = set(pg.migration_versions(conn))
    files = verify.migration_files(sandbox["app"]["migrations_dir"])
    assert remote == applied and local == set(files)
    # Our check passes exactly when the CLI shows every version on both sides.
    assert verify.check_migrations(sorted(applied), files, None)["ok"] is (local == remote)


def test_the_cli_schema_dump_excludes_no_platform_schema_our_backup_would_carry(run_cli, sandbox):
    done = run_cli("db", "dump", "--db-url", sandbox["production"]["dsn"], "--dry-run")
    # The script holds the password (PGPASSWORD); only the exclusion list is looked at, never printed whole.
    match = re.search(r'--exclude-schema "([^"]+)"', done.stdout)
    assert match, "the CLI's dry run no longer shows --exclude-schema"
    theirs = set(match.group(1).split("|"))
    ours = set(dumpspec.SUPABASE_SCHEMA_EXCLUDE)
    missing = theirs - ours - set(CARRIED_ON_PURPOSE)
    assert not missing, (
        f"platform schemas the Supabase CLI leaves out of a schema dump and our backups do not: {missing}"
    )

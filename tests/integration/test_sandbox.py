"""The sandbox itself: services up, idempotent `up`, Supabase-like platform, the sample app's RLS and functions.

Uses the session fixtures `sandbox` (the status dict after `sandboxlib.up`) and `sandbox_dir` from tests/conftest.py.
"""

from __future__ import annotations

import json
import secrets
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import supabase_api_standin as standin  # noqa: E402

import sandboxlib  # noqa: E402
from sandboxlib import app, pg, projects, s3  # noqa: E402
from sandboxlib.common import pid_alive  # noqa: E402
from sandboxlib.state import PLATFORM_LOGINS  # noqa: E402

# Every test needs the sandbox up, whether or not it reads its status.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("sandbox")]
TENANT_COLUMNS = {
    "tenants": "id",
    "profiles": "tenant_id",
    "sessions": "tenant_id",
    "participants": "tenant_id",
    "events": "tenant_id",
}


def as_user(conn: psycopg.Connection, user_id: str) -> None:
    """Act as a signed-in user for the rest of the current transaction, as PostgREST would."""
    claims = json.dumps({"sub": user_id, "role": "authenticated"})
    conn.execute(
        "SELECT set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)", (claims,)
    )


def tenant_user(conn: psycopg.Connection, slug: str) -> tuple[str, str]:
    """(user id, tenant id) of one user of the tenant with this slug."""
    row = conn.execute(
        "SELECT p.id::text, t.id::text FROM public.profiles p JOIN public.tenants t ON t.id = p.tenant_id "
        "WHERE t.slug = %s ORDER BY p.display_name LIMIT 1",
        (slug,),
    ).fetchone()
    assert row, f"no user in tenant {slug}"
    return row


def test_status_reports_every_service_up(sandbox_dir):
    state = sandboxlib.status(sandbox_dir)
    assert state["production"]["up"] is True
    assert state["staging"]["up"] is True
    assert state["s3"]["up"] is True
    for name in ("production", "staging"):
        target = state[name]
        assert target["dsn"] == f"postgresql://postgres:{target['password']}@127.0.0.1:{target['port']}/postgres"
        assert Path(target["data_dir"], "PG_VERSION").read_text().strip() == "15"
    assert state["production"]["port"] != state["staging"]["port"]
    assert state["app"]["migrations_dir"] == str(REPO / "examples" / "app" / "supabase" / "migrations")


def test_second_up_changes_nothing(sandbox, sandbox_dir):
    env_files = {name: Path(path).read_bytes() for name, path in sandbox["env_files"].items()}
    again = sandboxlib.up(sandbox_dir)
    assert again["ports"] == sandbox["ports"]
    for name in ("production", "staging"):
        assert again[name]["password"] == sandbox[name]["password"]
        assert again[name]["up"]
    assert again["s3"]["secret_key"] == sandbox["s3"]["secret_key"]
    assert {name: Path(path).read_bytes() for name, path in again["env_files"].items()} == env_files
    for path in [*again["env_files"].values(), Path(sandbox_dir) / "state.json"]:
        assert Path(path).stat().st_mode & 0o777 == 0o600


def test_env_files_point_at_the_clusters(sandbox):
    # The runbooks re-point these files at restored databases, so only the server (and password) must match.
    for name, path in sandbox["env_files"].items():
        values = dict(line.split("=", 1) for line in Path(path).read_text().splitlines() if "=" in line)
        assert values["SUPABASE_DB_URL"] == values["DATABASE_URL"]
        server = sandbox[name]["dsn"].rsplit("/", 1)[0]
        assert values["SUPABASE_DB_URL"].rsplit("/", 1)[0] == server
        assert values["SUPABASE_ANON_KEY"]
        assert values["SUPABASE_SERVICE_ROLE_KEY"]


def test_platform_roles_and_schemas_on_both_clusters(sandbox_dir):
    for target in ("production", "staging"):
        roles = dict(sandboxlib.psql(sandbox_dir, target, "SELECT rolname, rolbypassrls FROM pg_roles"))
        for role in (
            "anon",
            "authenticated",
            "service_role",
            "authenticator",
            "supabase_admin",
            "supabase_auth_admin",
            "supabase_storage_admin",
            "dashboard_user",
        ):
            assert role in roles, f"{target}: role {role} missing"
        assert roles["service_role"] is True
        assert roles["authenticated"] is False
        schemas = {r[0] for r in sandboxlib.psql(sandbox_dir, target, "SELECT nspname FROM pg_namespace")}
        assert {"auth", "storage", "extensions", "supabase_migrations", "graphql_public", "realtime"} <= schemas
        extensions = dict(
            sandboxlib.psql(
                sandbox_dir,
                target,
                "SELECT extname, extnamespace::regnamespace::text FROM pg_extension",
            )
        )
        assert extensions["uuid-ossp"] == extensions["pgcrypto"] == "extensions"


def test_bootstrap_sql_is_idempotent(sandbox):
    app.bootstrap("staging", sandbox["staging"])


def test_staging_holds_no_app_but_what_a_restore_put_there(sandbox_dir):
    """The sandbox never seeds staging: the app is there only after a restore, which marks the database."""
    [(app, marker)] = sandboxlib.psql(
        sandbox_dir, "staging", "SELECT to_regclass('public.tenants'), to_regclass('pgdr_restore.marker')"
    )
    assert app is None or marker is not None


def test_archive_command_changes_with_a_reload(sandbox_dir):
    rows = sandboxlib.psql(
        sandbox_dir,
        "production",
        "SELECT name, setting, context FROM pg_settings WHERE name IN ('archive_command', 'archive_mode', "
        "'wal_level', 'ssl', 'fsync')",
    )
    settings = {name: (setting, context) for name, setting, context in rows}
    assert settings["archive_command"] == ("/bin/true", "sighup")
    assert settings["archive_mode"][0] == "on"
    assert settings["wal_level"][0] == "replica"
    assert settings["ssl"][0] == "on"
    assert settings["fsync"][0] == "on"


def test_tls_connection_verifies_against_the_sandbox_ca(sandbox):
    ca_file = sandbox["s3"]["ca_file"]
    with sandboxlib.connect(sandbox["dir"], "production", sslmode="verify-full", sslrootcert=ca_file) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0] is True


def test_wrong_password_is_refused(sandbox):
    target = sandbox["production"]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host=target["host"],
            port=target["port"],
            user="postgres",
            dbname="postgres",
            password=target["password"] + "x",
            connect_timeout=5,
        )


def test_migrations_recorded_equal_the_files(sandbox):
    files = app.migration_files(Path(sandbox["app"]["migrations_dir"]))
    assert len(files) >= 5
    rows = sandboxlib.psql(
        sandbox["dir"],
        "production",
        "SELECT version, name, cardinality(statements) FROM supabase_migrations.schema_migrations ORDER BY version",
    )
    assert [(version, name) for version, name, _ in rows] == [(version, name) for version, name, _ in files]
    assert all(count >= 1 for _, _, count in rows)


def test_demo_data_is_there(sandbox_dir):
    ((tenants, users, events, objects),) = sandboxlib.psql(
        sandbox_dir,
        "production",
        "SELECT (SELECT count(*) FROM public.tenants), (SELECT count(*) FROM auth.users), "
        "(SELECT count(*) FROM public.events), (SELECT count(*) FROM storage.objects)",
    )
    assert tenants == 3
    assert users == 30
    assert events >= 10000
    assert objects >= 2


def test_rls_isolates_tenants(sandbox):
    with sandboxlib.connect(sandbox["dir"], "production") as conn:
        user_a, tenant_a = tenant_user(conn, "acme")
        _, tenant_b = tenant_user(conn, "globex")
        (session_b,) = conn.execute(
            "SELECT id FROM public.sessions WHERE tenant_id = %s LIMIT 1", (tenant_b,)
        ).fetchone()
        as_user(conn, user_a)
        assert conn.execute("SELECT current_user").fetchone()[0] == "authenticated"
        # Each app table and the column holding its tenant.
        for table, column in TENANT_COLUMNS.items():
            query = sql.SQL("SELECT count(*) FROM public.{} WHERE {} <> %s").format(
                sql.Identifier(table), sql.Identifier(column)
            )
            seen = conn.execute(query, (tenant_a,)).fetchone()[0]
            assert seen == 0, f"{table}: {seen} rows of other tenants visible"
        assert conn.execute("SELECT count(*) FROM public.events").fetchone()[0] > 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO public.events (tenant_id, session_id, user_id, kind) VALUES (%s, %s, %s, 'x')",
                (tenant_b, session_b, user_a),
            )
        conn.rollback()


def test_join_then_rejoin_keeps_one_row(sandbox):
    with sandboxlib.connect(sandbox["dir"], "production") as conn:
        user_a, tenant_a = tenant_user(conn, "acme")
        session = conn.execute(
            "SELECT s.id FROM public.sessions s WHERE s.tenant_id = %s AND NOT EXISTS "
            "(SELECT FROM public.participants p WHERE p.session_id = s.id AND p.user_id = %s) LIMIT 1",
            (tenant_a, user_a),
        ).fetchone()
        if session is None:  # the user is in every session of the tenant: start from a new one
            session = conn.execute(
                "INSERT INTO public.sessions (tenant_id, title, starts_at) VALUES (%s, 'test', now()) RETURNING id",
                (tenant_a,),
            ).fetchone()
        as_user(conn, user_a)
        first = conn.execute("SELECT rejoin_count, left_at FROM public.join_session(%s)", session).fetchone()
        assert first == (0, None)
        conn.execute("SELECT public.leave_session(%s)", session)
        left = conn.execute(
            "SELECT left_at FROM public.participants WHERE session_id = %s AND user_id = %s", (session[0], user_a)
        ).fetchone()[0]
        assert left is not None
        second = conn.execute("SELECT rejoin_count, left_at FROM public.join_session(%s)", session).fetchone()
        assert second == (1, None)
        count = conn.execute(
            "SELECT count(*) FROM public.participants WHERE session_id = %s AND user_id = %s", (session[0], user_a)
        ).fetchone()[0]
        assert count == 1
        conn.rollback()


def test_s3_answers_and_has_the_buckets(sandbox):
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(sandbox["s3"]["endpoint"] + "/", timeout=5)  # noqa: S310 - the sandbox's http endpoint
    assert anonymous.value.code == 403
    for tls in (False, True):
        names = {b["Name"] for b in s3.client(sandbox, tls=tls).list_buckets()["Buckets"]}
        assert set(sandbox["s3"]["buckets"].values()) <= names


def test_immutable_bucket_has_object_lock(sandbox):
    client = s3.client(sandbox)
    config = client.get_object_lock_configuration(Bucket=sandbox["s3"]["buckets"]["immutable"])
    lock = config["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"
    assert lock["Rule"]["DefaultRetention"]["Mode"] == "GOVERNANCE"
    assert lock["Rule"]["DefaultRetention"]["Days"] >= 1


def test_storage_objects_match_the_storage_bucket(sandbox):
    bucket = sandbox["s3"]["buckets"]["storage"]
    keys = {o["Key"] for o in s3.client(sandbox).list_objects_v2(Bucket=bucket).get("Contents", [])}
    rows = sandboxlib.psql(
        sandbox["dir"], "production", "SELECT name FROM storage.objects WHERE bucket_id = %s", (bucket,)
    )
    assert {name for (name,) in rows} == keys
    assert len(keys) >= 2


def test_seed_adds_rows(sandbox_dir):
    before = sandboxlib.psql(sandbox_dir, "production", "SELECT count(*) FROM public.events")[0][0]
    result = sandboxlib.seed(sandbox_dir, rows=1000)
    after = sandboxlib.psql(sandbox_dir, "production", "SELECT count(*) FROM public.events")[0][0]
    assert result["rows"] == 1000
    assert after - before == 1000


# -- projects created through the Management API stand-in (POST /v1/projects), each a PostgreSQL server ----------

SERVICES = "auth,db,pooler,realtime,rest,storage"
FAST = {"coming_up": 0.3, "services": 0.3}


def create_project(url, db_pass, name="pgdr test target"):
    body = {"name": name, "db_pass": db_pass, "organization_slug": "pgdr-sandbox", "region": "eu-central-1"}
    status, created = standin.call(url, "POST", "/v1/projects", body)
    assert status == 201, created
    return created["ref"]


def phase(url, ref):
    _, project = standin.call(url, "GET", f"/v1/projects/{ref}")
    _, health = standin.call(url, "GET", f"/v1/projects/{ref}/health?services={SERVICES}")
    return project["status"], tuple(sorted({h["status"] for h in health}))


def wait_healthy(url, ref, timeout=120):
    """Seconds until the project is ACTIVE_HEALTHY with every service healthy."""
    start = time.monotonic()
    while (now := phase(url, ref)) != ("ACTIVE_HEALTHY", ("ACTIVE_HEALTHY",)):
        assert now[0] in ("COMING_UP", "ACTIVE_HEALTHY"), f"project {ref} is {now}: {project_record(url, ref)}"
        assert time.monotonic() - start < timeout, f"project {ref} still {now} after {timeout} s"
        time.sleep(0.1)
    return time.monotonic() - start


def project_record(url, ref):
    return standin.call(url, "GET", "/_standin/state")[1]["projects"].get(ref)


def wait_provisioned(url, ref, timeout=120):
    start = time.monotonic()
    while (project_record(url, ref)["provision"]["state"]) == "provisioning":
        assert time.monotonic() - start < timeout, f"project {ref} still provisioning after {timeout} s"
        time.sleep(0.1)
    return project_record(url, ref)


def login(host, db_pass, ca_file, **kw):
    return psycopg.connect(
        host=host,
        port=5432,
        dbname="postgres",
        user="postgres",
        password=db_pass,
        sslmode="verify-full",
        sslrootcert=ca_file,
        connect_timeout=5,
        **kw,
    )


def postmaster_pid(cluster):
    return int(Path(cluster["data_dir"], "postmaster.pid").read_text().split()[0])


def assert_removed(cluster, pid):
    assert not pid_alive(pid), f"postmaster {pid} still runs"
    assert not Path(cluster["base_dir"]).exists()
    assert not (projects.CLAIMS_DIR / cluster["host"]).exists()


@pytest.fixture
def own_standin(sandbox_dir, tmp_path):
    """A stand-in of the test's own (in-process, its own state file) provisioning into the sandbox, with short
    timings; the projects a test leaves are deleted with their servers."""
    srv = standin.Server(port=0, state_file=tmp_path / "api.json", sandbox=sandbox_dir).start()
    standin.call(srv.url, "POST", "/_standin/switches", {"timings": FAST})
    yield srv
    for ref, project in list(srv.standin.state["projects"].items()):
        if project.get("cluster"):
            standin.call(srv.url, "DELETE", f"/v1/projects/{ref}")
    srv.stop()


def test_a_created_project_is_a_hosted_like_server_at_its_host_and_delete_removes_it(sandbox, sandbox_dir):
    url = sandbox["supabase_api"]["url"]
    db_pass = "pw-" + secrets.token_urlsafe(12)
    ref = create_project(url, db_pass)
    try:
        seconds = wait_healthy(url, ref)
        print(f"project {ref}: POST to ACTIVE_HEALTHY with healthy services in {seconds:.1f} s")
        record = project_record(url, ref)
        cluster = record["cluster"]
        _, project = standin.call(url, "GET", f"/v1/projects/{ref}")
        host = project["database"]["host"]
        assert host == cluster["host"] and host.startswith("127.") and host != "127.0.0.1"
        ca_file = sandbox["tls"]["ca_file"]
        with login(host, db_pass, ca_file, autocommit=True) as conn:
            row = conn.execute(
                "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            assert row == (False, True, True, True)
            assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
            owners = dict(
                conn.execute(
                    "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname IN ('auth', 'storage')"
                ).fetchall()
            )
            assert owners == {"auth": "supabase_auth_admin", "storage": "supabase_storage_admin"}
            superusers = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolsuper")}
            assert superusers == {"supabase_admin"}
            assert conn.execute("SELECT extowner::regrole::text FROM pg_extension WHERE extname = 'pg_cron'").fetchone()
            assert conn.execute("SELECT count(*) FROM cron.job").fetchone() == (0,)
            held = {r[0] for r in conn.execute("SELECT usename FROM pg_stat_activity WHERE datname = 'postgres'")}
            assert held >= set(PLATFORM_LOGINS)
        # The platform services' sessions hold postgres, as on a hosted project: not even the platform can copy it.
        in_use = pytest.raises(psycopg.errors.ObjectInUse, match="being accessed by other users")
        with in_use, pg.connect(cluster, autocommit=True) as admin:
            admin.execute("CREATE DATABASE pgdr_probe TEMPLATE postgres")
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            login(host, "not-the-db-pass", ca_file).close()
        listed = {p["ref"]: p for p in sandboxlib.status(sandbox_dir)["projects"]}
        assert listed[ref]["up"] is True and listed[ref]["host"] == host
        state_file = Path(sandbox["supabase_api"]["state_file"])
        assert state_file.stat().st_mode & 0o777 == 0o600
        assert db_pass not in state_file.read_text()
        pid = postmaster_pid(cluster)
    finally:
        status, deleted = standin.call(url, "DELETE", f"/v1/projects/{ref}")
    assert status == 200 and deleted["ref"] == ref
    assert_removed(cluster, pid)
    assert standin.call(url, "GET", f"/v1/projects/{ref}")[0] == 404
    assert ref not in {p["ref"] for p in sandboxlib.status(sandbox_dir)["projects"]}


def test_a_project_that_never_becomes_healthy_is_a_server_that_delete_removes(own_standin, sandbox):
    url = own_standin.url
    standin.call(url, "POST", "/_standin/switches", {"hang_create": True})
    ref = create_project(url, "pw-hang")
    cluster = wait_provisioned(url, ref)["cluster"]
    time.sleep(sum(FAST.values()) + 0.2)
    assert phase(url, ref) == ("COMING_UP", ("COMING_UP",))
    with login(cluster["host"], "pw-hang", sandbox["tls"]["ca_file"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    pid = postmaster_pid(cluster)
    assert standin.call(url, "DELETE", f"/v1/projects/{ref}")[0] == 200
    assert_removed(cluster, pid)


def test_delete_during_provisioning_waits_for_it_and_removes_the_server(own_standin):
    url = own_standin.url
    ref = create_project(url, "pw-early")
    cluster = project_record(url, ref)["cluster"]
    status, deleted = standin.call(url, "DELETE", f"/v1/projects/{ref}")
    assert status == 200 and deleted["ref"] == ref
    assert not Path(cluster["base_dir"]).exists()
    assert not (projects.CLAIMS_DIR / cluster["host"]).exists()
    assert not pg.is_up(cluster)


def test_a_restart_after_down_starts_the_project_server_again(sandbox_dir, sandbox, tmp_path):
    state_file = tmp_path / "api.json"
    srv = standin.Server(port=0, state_file=state_file, sandbox=sandbox_dir).start()
    ref = None
    try:
        standin.call(srv.url, "POST", "/_standin/switches", {"timings": FAST})
        ref = create_project(srv.url, "pw-restart")
        wait_healthy(srv.url, ref)
        cluster = project_record(srv.url, ref)["cluster"]
        srv.stop()
        # What `scripts/sandbox down` does after stopping the stand-in.
        projects.stop_all({"supabase_api": {"state_file": str(state_file)}})
        assert not pg.is_up(cluster)
        srv = standin.Server(port=0, state_file=state_file, sandbox=sandbox_dir).start()
        assert pg.is_up(cluster)
        assert wait_healthy(srv.url, ref) < 5
        with login(cluster["host"], "pw-restart", sandbox["tls"]["ca_file"]) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    finally:
        if ref:
            standin.call(srv.url, "DELETE", f"/v1/projects/{ref}")
        srv.stop()


def test_a_project_that_cannot_get_an_address_ends_init_failed_and_leaves_nothing(sandbox_dir, sandbox, tmp_path):
    with socket.socket() as busy:
        # Something on every address's port: no loopback address can serve it.
        busy.bind(("0.0.0.0", 0))  # noqa: S104 - the point of the test
        busy.listen()
        port = busy.getsockname()[1]
        with standin.Server(port=0, state_file=tmp_path / "api.json", sandbox=sandbox_dir, db_port=port) as srv:
            ref = create_project(srv.url, "pw-none")
            assert phase(srv.url, ref) == ("INIT_FAILED", ("UNHEALTHY",))
            record = project_record(srv.url, ref)
            assert f"no free loopback address for port {port}" in record["provision"]["error"]
            assert "cluster" not in record
            assert not (Path(sandbox["pg_root"]) / "projects" / ref).exists()
            assert standin.call(srv.url, "DELETE", f"/v1/projects/{ref}")[0] == 200

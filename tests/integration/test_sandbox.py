"""The sandbox itself: services up, idempotent `up`, Supabase-like platform, the sample app's RLS and functions.

Uses the session fixtures `sandbox` (the status dict after `sandboxlib.up`) and `sandbox_dir` from tests/conftest.py.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import sandboxlib  # noqa: E402
from sandboxlib import app, s3  # noqa: E402

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

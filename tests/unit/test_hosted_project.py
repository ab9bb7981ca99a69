"""The pure parts of a new project as a restore target: its connection string, its keys, staging's settings."""

from __future__ import annotations

import pytest

from ansible_collections.pgdr.supabase.plugins.module_utils import hosted_project as hp
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError

REF = "abcdefghijklmnopqrst"
PROJECT = {"ref": REF, "region": "eu-west-1", "database": {"host": f"db.{REF}.supabase.co"}}
# The API's list of keys for a project with both kinds, as the Management API documents it.
KEYS = [
    {"name": "anon", "api_key": "eyJ.anon", "type": "legacy"},
    {"name": "service_role", "api_key": "eyJ.service", "type": "legacy"},
    {"name": "default", "api_key": "sb_publishable_x", "type": "publishable"},
    {"name": "default", "api_key": "sb_secret_x", "type": "secret"},
]


def test_the_direct_connection_quotes_the_password():
    dsn = hp.render_template(hp.DEFAULT_DB_URL_TEMPLATE, PROJECT, "p@ss/w:rd")
    assert dsn == f"postgresql://postgres:p%40ss%2Fw%3Ard@db.{REF}.supabase.co:5432/postgres?sslmode=require"


def test_the_pooler_template_and_the_summary_form():
    template = "postgresql://postgres.{ref}:{password}@aws-0-{region}.pooler.supabase.com:5432/postgres"
    summary = {"ref": REF, "region": "eu-west-1", "db_host": "127.0.4.9"}
    assert hp.render_template(template, summary, "pw") == (
        f"postgresql://postgres.{REF}:pw@aws-0-eu-west-1.pooler.supabase.com:5432/postgres"
    )
    assert hp.render_template("{host}", summary) == "127.0.4.9"


def test_an_unknown_placeholder_is_named():
    with pytest.raises(DRError) as caught:
        hp.render_template("postgresql://{user}@{host}/postgres", PROJECT, "pw")
    assert "{ref}, {host}, {region} and {password}" in caught.value.hint


def test_keys_by_kind():
    assert hp.pick_keys(KEYS) == {
        "anon": "eyJ.anon",
        "service_role": "eyJ.service",
        "publishable": "sb_publishable_x",
        "secret": "sb_secret_x",
    }


def test_settings_for_staging_and_a_missing_kind():
    names = {"SUPABASE_URL": "url", "SUPABASE_ANON_KEY": "anon", "SUPABASE_SECRET_KEY": "secret"}
    settings = hp.env_settings(names, "https://x.supabase.co", hp.pick_keys(KEYS), REF)
    assert settings == {
        "SUPABASE_URL": "https://x.supabase.co",
        "SUPABASE_ANON_KEY": "eyJ.anon",
        "SUPABASE_SECRET_KEY": "sb_secret_x",
    }
    with pytest.raises(DRError) as caught:
        hp.env_settings({"SUPABASE_ANON_KEY": "anon"}, "u", hp.pick_keys(KEYS[2:]), REF)
    assert "has no anon key for SUPABASE_ANON_KEY (it has: publishable, secret)" in str(caught.value)
    with pytest.raises(DRError) as caught:
        hp.env_settings({"SUPABASE_KEY": "jwt"}, "u", {}, REF)
    assert "not a project setting" in str(caught.value)


# -- against the Management API stand-in, in-process (its projects have no database here) -------------------------


@pytest.fixture
def standin_api():
    import supabase_api_standin as standin

    from ansible_collections.pgdr.supabase.plugins.module_utils.supabase_api import ManagementAPI

    server = standin.Server(port=0).start()
    standin.call(server.url, "POST", "/_standin/switches", {"timings": {"coming_up": 0.2, "services": 0.2}})
    yield standin, server, ManagementAPI(standin.DEFAULT_TOKEN, base_url=server.url, timeout=5)
    server.stop()


def names_of(standin, server):
    return [p["name"] for p in standin.call(server.url, "GET", "/v1/projects")[1]]


def ensure(api, **kwargs):
    args = {"name": "drill-x", "organization": "pgdr-sandbox", "region": "eu-central-1", "db_pass": "pw"}
    return hp.ensure_project(api, **{**args, "poll_interval": 0.1, "wait_timeout": 30, **kwargs})


def test_a_healthy_project_whose_database_never_answers_fails_naming_it_and_a_throwaway_is_deleted(standin_api):
    # Without a sandbox the stand-in's projects have no server: db.<ref>.supabase.co does not resolve here.
    standin, server, api = standin_api
    with pytest.raises(DRError) as caught:
        ensure(api, delete_on_failure=True, connect_timeout=1)
    assert "cannot reach the database server" in caught.value.message
    assert "was deleted (it is a throwaway target" in caught.value.message
    assert "session pooler in pgdr_new_project_db_url" in caught.value.hint
    assert "drill-x" not in names_of(standin, server)


def test_a_kept_project_that_does_not_come_up_stays_and_the_error_says_how_to_delete_it(standin_api):
    standin, server, api = standin_api
    standin.call(server.url, "POST", "/_standin/switches", {"hang_create": True})
    with pytest.raises(DRError) as caught:
        ensure(api, wait_timeout=1)
    ref = api.find_project("drill-x")["ref"]
    assert f"project {ref} did not become ACTIVE_HEALTHY within 1 s (last status COMING_UP)" in caught.value.message
    assert "is kept for a look" in caught.value.message and f"supabase projects delete {ref}" in caught.value.message
    assert "drill-x" in names_of(standin, server)

    # A rehearsal now finds it coming up: it plans to wait, and creates or waits for nothing.
    posts = len(standin.call(server.url, "GET", "/_standin/requests")[1])
    planned = ensure(api, check_mode=True)
    assert planned["planned"] and not planned["changed"] and planned["ref"] == ref
    assert "a run would wait until it serves" in planned["msg"]
    requests = standin.call(server.url, "GET", "/_standin/requests")[1][posts:]
    assert all(r["method"] == "GET" for r in requests)

    removed = hp.remove_project(api, name="drill-x", organization="pgdr-sandbox")
    assert removed["deleted"] and removed["ref"] == ref
    assert hp.remove_project(api, name="drill-x")["changed"] is False


def test_a_new_project_needs_its_password_before_any_call(standin_api):
    standin, server, api = standin_api
    before = len(standin.call(server.url, "GET", "/_standin/requests")[1])
    with pytest.raises(DRError) as caught:
        ensure(api, db_pass="")
    assert "pgdr_new_project_db_password" in caught.value.hint
    assert len(standin.call(server.url, "GET", "/_standin/requests")[1]) == before

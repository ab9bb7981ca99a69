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

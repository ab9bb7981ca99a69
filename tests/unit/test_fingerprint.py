"""The catalog fingerprint without a database: ACL items, the comparison's messages, and the statements that make a
restored copy's privileges equal its source's."""

from __future__ import annotations

import pytest

from ansible_collections.pgdr.supabase.plugins.module_utils import fingerprint as fp


def test_acl_items_parse_with_grant_options_public_and_quoted_names():
    assert fp.parse_aclitem("anon=arw*/postgres") == ("anon", {"a": False, "r": False, "w": True}, "postgres")
    assert fp.parse_aclitem("=X/postgres") == ("", {"X": False}, "postgres")
    assert fp.parse_aclitem('"my role"=r/"the owner"') == ("my role", {"r": False}, "the owner")
    with pytest.raises(ValueError, match="not an ACL item"):
        fp.parse_aclitem("garbage")


def test_acl_differences_compare_privileges_grant_options_and_grantors():
    extra, missing = fp.acl_differences(["anon=r/postgres"], ["anon=rad/postgres", "authenticated=r/postgres"])
    assert extra == {("anon", "postgres"): {"a": False, "d": False}, ("authenticated", "postgres"): {"r": False}}
    assert missing == {}
    extra, missing = fp.acl_differences(["x=r*/postgres"], ["x=r/postgres"])
    assert extra == {("x", "postgres"): {"r": False}} and missing == {("x", "postgres"): {"r": True}}
    extra, missing = fp.acl_differences(["x=r/postgres"], ["x=r/other"])
    assert extra == {("x", "other"): {"r": False}} and missing == {("x", "postgres"): {"r": False}}


def entry(acl, owner="postgres", ref="public.notes", definition="d1"):
    return {"def": definition, "owner": owner, "acl": acl, "ref": ref}


def test_compare_names_widened_and_missing_grants_in_the_issue_s_words():
    expected = {"objects": {"table public.notes": entry(["postgres=arwdDxt/postgres", "authenticated=r/postgres"])}}
    actual = {"objects": {"table public.notes": entry(["postgres=arwdDxt/postgres", "anon=ad/postgres"])}}
    messages = [d["message"] for d in fp.compare(expected, actual)]
    assert "grant: public.notes to anon (INSERT, DELETE) is not in the backup" in messages
    assert "grant: public.notes to authenticated (SELECT) is missing" in messages


def test_compare_names_missing_and_extra_objects_definitions_owners_and_matviews():
    expected = {
        "objects": {
            "trigger auth.users.on_auth_user_created": {"def": "t"},
            "function public.f()": entry([], definition="a"),
            "matview_data public.daily_revenue": {"def": "populated"},
            "extension pg_trgm": {"def": "1.6 in extensions"},
        }
    }
    actual = {
        "objects": {
            "function public.f()": entry([], owner="app", definition="b"),
            "policy public.x.p": {"def": "p"},
            "matview_data public.daily_revenue": {"def": "not populated"},
            "extension pg_trgm": {"def": "1.5 in extensions"},
            "extension plpgsql": {"def": "1.0 in pg_catalog"},
        }
    }
    messages = [d["message"] for d in fp.compare(expected, actual)]
    assert "trigger: auth.users.on_auth_user_created is missing" in messages
    assert "policy: public.x.p is not in the backup" in messages
    assert "function: public.f() differs from the backup (definition)" in messages
    assert "owner: function public.f() is owned by app; the backup says postgres" in messages
    assert "matview: public.daily_revenue is not populated" in messages
    assert "extension: pg_trgm is 1.5 in extensions; the backup says 1.6 in extensions" in messages
    # An extension the target has and the source had not takes nothing from the app.
    assert not [m for m in messages if "plpgsql" in m]


def test_ignored_keys_are_not_differences():
    expected = {"objects": {"trigger public.t.hook": {"def": "enabled"}}}
    actual = {"objects": {"trigger public.t.hook": {"def": "disabled"}}}
    assert fp.compare(expected, actual, ignore={"trigger public.t.hook"}) == []


def test_default_acls_compare_against_the_built_in_defaults_when_a_row_is_absent():
    # Globally, no row means the built-in defaults (PUBLIC may EXECUTE functions).
    expected = {"default_acls": {"postgres * f": ["postgres=X/postgres"]}}
    messages = [d["message"] for d in fp.compare(expected, {"default_acls": {}})]
    assert messages == [
        "default privileges for role postgres on functions: grant to PUBLIC (EXECUTE) is not in the backup"
    ]
    # In a schema, no row means nothing granted.
    actual = {"default_acls": {"postgres public f": ["anon=X/postgres"]}}
    messages = [d["message"] for d in fp.compare({"default_acls": {}}, actual)]
    assert messages == [
        "default privileges for role postgres in schema public on functions: grant to anon (EXECUTE) is not in "
        "the backup"
    ]


def test_acl_statements_revoke_what_the_source_did_not_grant_and_grant_what_it_did():
    expected = {"objects": {"function public.f(a int)": entry(["postgres=X/postgres"], ref="public.f(a integer)")}}
    actual = {
        "objects": {
            "function public.f(a int)": entry(
                ["postgres=X/postgres", "anon=X/postgres", "=X/postgres"], ref="public.f(a integer)"
            )
        }
    }
    sql = [s.sql for s in fp.acl_statements(expected, actual, "postgres")]
    assert sql == [
        "REVOKE EXECUTE ON ROUTINE public.f(a integer) FROM PUBLIC CASCADE;",
        'REVOKE EXECUTE ON ROUTINE public.f(a integer) FROM "anon" CASCADE;',
    ]
    sql = [s.sql for s in fp.acl_statements(actual, expected, "postgres")]
    assert sql == [
        "GRANT EXECUTE ON ROUTINE public.f(a integer) TO PUBLIC;",
        'GRANT EXECUTE ON ROUTINE public.f(a integer) TO "anon";',
    ]


def test_acl_statements_for_columns_grant_options_and_other_grantors():
    expected = {
        "objects": {
            "column public.t.c": {"def": "", "acl": ["anon=r/postgres"], "ref": ["public.t", "c"]},
            "table public.t": entry(["x=r*/postgres", "y=r/app_owner"], ref="public.t"),
        }
    }
    actual = {"objects": {"table public.t": entry(["x=r/postgres"], ref="public.t")}}
    statements = fp.acl_statements(expected, actual, "postgres")
    sql = [(s.role, s.sql) for s in statements]
    assert (None, 'GRANT SELECT (c) ON TABLE public.t TO "anon";') in sql
    assert (None, 'GRANT SELECT ON TABLE public.t TO "x" WITH GRANT OPTION;') in sql
    # An item another role granted is granted as that role.
    assert ("app_owner", 'GRANT SELECT ON TABLE public.t TO "y";') in sql


def test_default_acl_statements_bring_rows_to_the_backup_s_and_neutralize_to_built_in():
    actual = {"default_acls": {"postgres public r": ["anon=arwdDxt/postgres", "authenticated=r/postgres"]}}
    neutral = [s.sql for s in fp.default_acl_statements({"default_acls": {}}, actual, "postgres")]
    assert all(s.startswith('ALTER DEFAULT PRIVILEGES FOR ROLE "postgres" IN SCHEMA "public" REVOKE') for s in neutral)
    assert len(neutral) == 2
    expected = {"default_acls": {"postgres * f": ["postgres=X/postgres"]}}
    sql = [s.sql for s in fp.default_acl_statements(expected, {"default_acls": {}}, "postgres")]
    assert sql == ['ALTER DEFAULT PRIVILEGES FOR ROLE "postgres" REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;']


def test_owner_statements_use_each_kind_s_own_alter():
    expected = {"objects": {"matview public.m": entry([], owner="app", ref="public.m")}}
    actual = {"objects": {"matview public.m": entry([], owner="postgres", ref="public.m")}}
    assert [s.sql for s in fp.owner_statements(expected, actual)] == [
        'ALTER MATERIALIZED VIEW public.m OWNER TO "app";'
    ]


def test_app_granted_keeps_the_items_the_app_s_roles_granted():
    items = ["postgres=a*r*/supabase_admin", "my_reader=r/postgres", "anon=r/supabase_admin"]
    assert fp.app_granted(items, ["postgres", "my_reader"]) == ["my_reader=r/postgres"]

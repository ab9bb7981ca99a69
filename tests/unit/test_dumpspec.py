"""dumpspec: the objects of a logical backup, their pg_dump arguments and the Supabase filters."""

from __future__ import annotations

import pytest

from ansible_collections.pgdr.supabase.plugins.module_utils import dumpspec

# What pg_dumpall --roles-only prints on a Supabase project, with one application role and odd names.
ROLES_DUMP = '''\
--
-- Roles
--

CREATE ROLE anon;
ALTER ROLE anon WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE authenticated;
ALTER ROLE authenticated WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE "supabase_admin";
ALTER ROLE "supabase_admin" WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
CREATE ROLE cli_login_postgres;
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
CREATE ROLE app_reader;
ALTER ROLE app_reader WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE "Report ""Writer""";
ALTER ROLE "Report ""Writer""" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE anon_helper;

--
-- Role memberships
--

GRANT anon TO authenticator GRANTED BY supabase_admin;
GRANT authenticated TO "supabase_admin" GRANTED BY postgres;
GRANT authenticated TO app_reader GRANTED BY supabase_admin;
GRANT app_reader TO authenticator GRANTED BY "supabase_admin";
GRANT "Report ""Writer""" TO app_reader WITH INHERIT TRUE GRANTED BY postgres;
GRANT pg_read_all_data TO app_reader;
'''


def filtered(text, flavor="supabase"):
    return list(dumpspec.filter_roles_sql(text.splitlines(keepends=True), flavor))


class TestFilterRoles:
    def test_reserved_create_and_alter_lines_are_dropped(self):
        kept = "".join(filtered(ROLES_DUMP))
        for role in ("anon", "authenticated", "postgres", "cli_login_postgres"):
            assert f"CREATE ROLE {role};" not in kept
            assert f"ALTER ROLE {role} WITH" not in kept

    def test_quoted_reserved_role_is_dropped(self):
        kept = "".join(filtered(ROLES_DUMP))
        assert 'CREATE ROLE "supabase_admin";' not in kept
        assert 'ALTER ROLE "supabase_admin"' not in kept

    def test_application_roles_are_kept_including_quoted_names(self):
        kept = filtered(ROLES_DUMP)
        assert "CREATE ROLE app_reader;\n" in kept
        assert 'CREATE ROLE "Report ""Writer""";\n' in kept
        assert any(line.startswith('ALTER ROLE "Report ""Writer""" WITH') for line in kept)

    def test_a_name_that_only_starts_like_a_reserved_role_is_kept(self):
        assert "CREATE ROLE anon_helper;\n" in filtered(ROLES_DUMP)

    def test_membership_between_two_reserved_roles_is_dropped(self):
        kept = "".join(filtered(ROLES_DUMP))
        assert "GRANT anon TO authenticator" not in kept
        assert 'GRANT authenticated TO "supabase_admin"' not in kept

    def test_membership_involving_an_application_role_is_kept_without_granted_by(self):
        kept = filtered(ROLES_DUMP)
        assert "GRANT authenticated TO app_reader;\n" in kept
        assert "GRANT app_reader TO authenticator;\n" in kept
        assert 'GRANT "Report ""Writer""" TO app_reader WITH INHERIT TRUE;\n' in kept
        assert "GRANT pg_read_all_data TO app_reader;\n" in kept
        assert not [line for line in kept if "GRANTED BY" in line]

    def test_comments_and_blank_lines_pass_through(self):
        kept = filtered(ROLES_DUMP)
        assert "-- Roles\n" in kept
        assert "-- Role memberships\n" in kept
        assert "\n" in kept

    def test_postgres_flavor_drops_only_the_bootstrap_superuser(self):
        kept = "".join(filtered(ROLES_DUMP, flavor="postgres"))
        assert "CREATE ROLE postgres;" not in kept
        assert "ALTER ROLE postgres WITH" not in kept
        # Supabase's roles are ordinary roles on a plain PostgreSQL source.
        assert "CREATE ROLE anon;" in kept
        assert 'CREATE ROLE "supabase_admin";' in kept
        assert "GRANT anon TO authenticator;" in kept

    def test_exact_output_in_input_order(self):
        statements = [line for line in filtered(ROLES_DUMP) if line.startswith(("CREATE", "ALTER", "GRANT"))]
        assert statements == [
            "CREATE ROLE app_reader;\n",
            "ALTER ROLE app_reader WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;\n",
            'CREATE ROLE "Report ""Writer""";\n',
            'ALTER ROLE "Report ""Writer""" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION'
            " NOBYPASSRLS;\n",
            "CREATE ROLE anon_helper;\n",
            "GRANT authenticated TO app_reader;\n",
            "GRANT app_reader TO authenticator;\n",
            'GRANT "Report ""Writer""" TO app_reader WITH INHERIT TRUE;\n',
            "GRANT pg_read_all_data TO app_reader;\n",
        ]


def by_name(objects):
    return {o.name: o for o in objects}


class TestBackupObjects:
    @pytest.mark.parametrize("flavor", dumpspec.FLAVORS)
    def test_roles_object_has_no_passwords_and_is_plain(self, flavor):
        roles = by_name(dumpspec.backup_objects(flavor))["roles"]
        assert roles.kind == "pg_dumpall"
        assert "--roles-only" in roles.args
        assert "--no-role-passwords" in roles.args
        assert roles.format == "plain"
        assert roles.filename == "roles.sql"

    @pytest.mark.parametrize("flavor", dumpspec.FLAVORS)
    def test_pg_dump_writes_the_roles_and_the_schema_the_rows_travel_as_copy_streams(self, flavor):
        names = [o.name for o in dumpspec.backup_objects(flavor)]
        assert names == ["roles", "schema"]

    def test_supabase_schema_excludes_platform_schemas(self):
        schema = by_name(dumpspec.backup_objects("supabase"))["schema"]
        assert "--schema-only" in schema.args
        for excluded in ("auth", "storage", "supabase_migrations", "pg_*", "extensions", "realtime", "vault"):
            assert f"--exclude-schema={excluded}" in schema.args
        assert "--exclude-schema=public" not in schema.args

    def test_supabase_data_keeps_auth_storage_and_the_history_but_not_queues_and_logs(self):
        for schema, table in (("auth", "users"), ("storage", "objects"), ("public", "x"), ("cron", "job")):
            assert dumpspec.table_in_data(schema, table, "supabase"), (schema, table)
        for schema, table in (
            ("auth", "schema_migrations"),
            ("storage", "migrations"),
            ("supabase_functions", "migrations"),
            ("cron", "job_run_details"),
            ("net", "http_request_queue"),
            ("vault", "secrets"),
        ):
            assert not dumpspec.table_in_data(schema, table, "supabase"), (schema, table)

    def test_postgres_flavor_excludes_nothing(self):
        for obj in dumpspec.backup_objects("postgres"):
            assert not [a for a in obj.args if a.startswith(("--exclude-schema", "--exclude-table"))]

    @pytest.mark.parametrize("flavor", dumpspec.FLAVORS)
    def test_custom_objects_are_uncompressed_custom_format(self, flavor):
        custom = [o for o in dumpspec.backup_objects(flavor) if o.kind == "pg_dump"]
        assert custom
        for obj in custom:
            assert "--format=custom" in obj.args
            assert "--compress=0" in obj.args
            assert obj.format == "custom"
            assert obj.filename == f"{obj.name}.pgdump"

    @pytest.mark.parametrize("flavor", dumpspec.FLAVORS)
    def test_snapshot_flag_on_every_pg_dump_and_not_on_pg_dumpall(self, flavor):
        objects = dumpspec.backup_objects(flavor, snapshot="00000003-0000001B-1")
        for obj in objects:
            has_flag = "--snapshot=00000003-0000001B-1" in obj.args
            assert has_flag == (obj.kind == "pg_dump"), obj

    def test_no_snapshot_flag_without_a_snapshot(self):
        for obj in dumpspec.backup_objects("supabase"):
            assert not [a for a in obj.args if a.startswith("--snapshot")]

    def test_objects_carry_their_flavor(self):
        assert {o.flavor for o in dumpspec.backup_objects("postgres")} == {"postgres"}

    def test_unknown_flavor_is_refused_with_the_choices(self):
        with pytest.raises(ValueError, match=r"'mysql'.*supabase, postgres"):
            dumpspec.backup_objects("mysql")


class TestSchemaAndTableFilters:
    @pytest.mark.parametrize(
        ("schema", "flavor", "expected"),
        [
            ("public", "supabase", True),
            ("app", "supabase", True),
            ("auth", "supabase", False),
            ("storage", "supabase", False),
            ("supabase_migrations", "supabase", False),
            ("timescaledb_information", "supabase", False),
            ("auth", "postgres", True),
            ("public", "postgres", True),
            ("pg_catalog", "postgres", False),
            ("pg_toast", "supabase", False),
            ("information_schema", "postgres", False),
        ],
    )
    def test_schema_in_dump(self, schema, flavor, expected):
        assert dumpspec.schema_in_dump(schema, flavor) is expected

    @pytest.mark.parametrize(
        ("schema", "table", "flavor", "expected"),
        [
            ("public", "events", "supabase", True),
            ("auth", "users", "supabase", True),
            ("storage", "objects", "supabase", True),
            ("auth", "schema_migrations", "supabase", False),
            ("storage", "migrations", "supabase", False),
            ("supabase_functions", "migrations", "supabase", False),
            ("supabase_functions", "hooks", "supabase", True),
            ("supabase_migrations", "schema_migrations", "supabase", False),
            ("vault", "secrets", "supabase", False),
            ("graphql_public", "anything", "supabase", False),
            ("pgsodium_masks", "key", "supabase", False),
            ("auth", "schema_migrations", "postgres", True),
            ("vault", "secrets", "postgres", True),
            ("pg_catalog", "pg_class", "postgres", False),
            ("information_schema", "sql_features", "supabase", False),
        ],
    )
    def test_table_in_data(self, schema, table, flavor, expected):
        assert dumpspec.table_in_data(schema, table, flavor) is expected

    def test_filters_agree_with_the_dump_arguments(self):
        """Every schema the fingerprint counts is one the schema dump does not exclude, and vice versa."""
        schema_args = by_name(dumpspec.backup_objects("supabase"))["schema"].args
        excluded = [a.split("=", 1)[1] for a in schema_args if a.startswith("--exclude-schema=")]
        for name in ("public", "app", *[p.replace("*", "x") for p in excluded]):
            assert dumpspec.schema_in_dump(name, "supabase") is not dumpspec.matches(name, excluded)

    def test_matches_uses_whole_name_patterns(self):
        assert dumpspec.matches("supabase_admin", ["supabase_*"])
        assert not dumpspec.matches("my_supabase_admin", ["supabase_*"])
        assert not dumpspec.matches("Supabase_admin", ["supabase_*"])

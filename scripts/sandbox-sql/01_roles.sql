-- Platform roles of a fresh hosted Supabase project, as a pg_dumpall of one shows them. The cluster's bootstrap
-- superuser is supabase_admin (initdb -U supabase_admin), which runs these files. Idempotent: every role is created
-- only when missing, then its attributes are set, so a second run changes nothing.
DO $$
DECLARE
    spec record;
BEGIN
    FOR spec IN
        SELECT * FROM (VALUES
            ('anon',                       'NOLOGIN INHERIT'),
            ('authenticated',              'NOLOGIN INHERIT'),
            ('service_role',               'NOLOGIN INHERIT BYPASSRLS'),
            ('authenticator',              'LOGIN NOINHERIT'),
            -- The role the runbooks (and the app's migrations) use: NOT a superuser.
            ('postgres',                   'LOGIN INHERIT NOSUPERUSER CREATEROLE CREATEDB REPLICATION BYPASSRLS'),
            ('supabase_auth_admin',        'LOGIN NOINHERIT CREATEROLE'),
            ('supabase_storage_admin',     'LOGIN NOINHERIT CREATEROLE'),
            ('supabase_functions_admin',   'LOGIN NOINHERIT CREATEROLE'),
            ('supabase_realtime_admin',    'NOLOGIN NOINHERIT'),
            ('supabase_replication_admin', 'LOGIN REPLICATION'),
            ('supabase_read_only_user',    'LOGIN BYPASSRLS'),
            ('dashboard_user',             'NOLOGIN CREATEDB CREATEROLE REPLICATION'),
            ('pgbouncer',                  'LOGIN')
        ) AS r(name, attributes)
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = spec.name) THEN
            EXECUTE format('CREATE ROLE %I', spec.name);
        END IF;
        EXECUTE format('ALTER ROLE %I %s', spec.name, spec.attributes);
    END LOOP;
END
$$;

-- PostgREST logs in as authenticator and switches to one of these per request.
GRANT anon, authenticated, service_role TO authenticator;
GRANT authenticator TO supabase_storage_admin;
-- What a hosted project's postgres is a member of (all WITH ADMIN OPTION there).
GRANT anon, authenticated, service_role, authenticator TO postgres WITH ADMIN OPTION;
GRANT pg_monitor, pg_read_all_data, pg_signal_backend TO postgres WITH ADMIN OPTION;
GRANT supabase_realtime_admin TO postgres;
GRANT pg_read_all_data TO supabase_read_only_user;
-- PostgreSQL 15's parameter privileges: the documented restore runs SET session_replication_role = replica.
GRANT SET ON PARAMETER session_replication_role TO postgres;
-- A hosted project lets postgres manage policies on storage.objects without owning it (the supautils extension's
-- policy grants). The sandbox cannot load supautils: membership in the table owner's role stands in for it.
GRANT supabase_storage_admin TO postgres;

-- Like Supabase: the extensions schema is on the search path of the working roles.
ALTER ROLE postgres SET search_path = "$user", public, extensions;
ALTER ROLE supabase_admin SET search_path = "$user", public, auth, extensions;
ALTER ROLE supabase_auth_admin SET search_path = auth;
ALTER ROLE supabase_storage_admin SET search_path = storage;
ALTER ROLE authenticator SET statement_timeout = '8s';
ALTER ROLE anon SET statement_timeout = '3s';
ALTER ROLE authenticated SET statement_timeout = '8s';

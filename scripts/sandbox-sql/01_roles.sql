-- Platform roles of a fresh Supabase project. Idempotent: every role is created only when missing,
-- then its attributes are set, so a second run changes nothing.
DO $$
DECLARE
    spec record;
BEGIN
    FOR spec IN
        SELECT * FROM (VALUES
            ('anon',                   'NOLOGIN NOINHERIT'),
            ('authenticated',          'NOLOGIN NOINHERIT'),
            ('service_role',           'NOLOGIN NOINHERIT BYPASSRLS'),
            ('authenticator',          'LOGIN NOINHERIT'),
            ('supabase_admin',         'LOGIN SUPERUSER CREATEDB CREATEROLE REPLICATION BYPASSRLS'),
            ('supabase_auth_admin',    'LOGIN NOINHERIT CREATEROLE'),
            ('supabase_storage_admin', 'LOGIN NOINHERIT CREATEROLE'),
            ('dashboard_user',         'NOLOGIN CREATEDB CREATEROLE REPLICATION')
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
GRANT anon, authenticated, service_role TO postgres;

-- Like Supabase: the extensions schema is on the search path of the working roles.
ALTER ROLE postgres SET search_path = "$user", public, extensions;
ALTER ROLE supabase_admin SET search_path = "$user", public, extensions;
ALTER ROLE authenticator SET statement_timeout = '8s';
ALTER ROLE anon SET statement_timeout = '3s';
ALTER ROLE authenticated SET statement_timeout = '8s';

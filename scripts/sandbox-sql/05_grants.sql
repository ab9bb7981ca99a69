-- Privileges as on a fresh hosted project (supabase/postgres migrations, as of 2026): postgres may use but not
-- create in auth, and has every table privilege on the auth and storage tables but their migration tables; the
-- API roles use public, auth, storage and extensions; whatever postgres (or supabase_admin) creates in public is
-- granted to them by default privileges. Row Level Security does the rest.
GRANT ALL ON DATABASE postgres TO postgres, dashboard_user;
GRANT USAGE, CREATE ON SCHEMA public TO postgres;
GRANT USAGE ON SCHEMA public, auth, extensions, graphql_public, storage TO anon, authenticated, service_role;
GRANT ALL ON SCHEMA extensions TO postgres, dashboard_user;
GRANT USAGE ON SCHEMA auth TO postgres, dashboard_user;
GRANT USAGE ON SCHEMA storage TO postgres WITH GRANT OPTION;
GRANT ALL ON SCHEMA auth TO supabase_auth_admin;
GRANT ALL ON SCHEMA storage TO supabase_storage_admin;
GRANT ALL ON ALL TABLES IN SCHEMA auth TO supabase_auth_admin, dashboard_user, postgres;
GRANT ALL ON ALL SEQUENCES IN SCHEMA auth TO supabase_auth_admin, dashboard_user, postgres;
GRANT ALL ON ALL ROUTINES IN SCHEMA auth TO supabase_auth_admin, dashboard_user, postgres;
REVOKE ALL ON auth.schema_migrations FROM dashboard_user, postgres;
GRANT SELECT ON auth.schema_migrations TO postgres;
GRANT ALL ON ALL TABLES IN SCHEMA storage TO supabase_storage_admin;
GRANT ALL ON ALL TABLES IN SCHEMA storage TO postgres WITH GRANT OPTION;
REVOKE ALL ON storage.migrations FROM postgres;
GRANT SELECT ON storage.migrations TO postgres;
GRANT ALL ON storage.buckets, storage.objects TO anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION auth.uid(), auth.role(), auth.jwt() TO anon, authenticated, service_role, dashboard_user;
GRANT ALL ON ALL ROUTINES IN SCHEMA storage TO postgres, anon, authenticated, service_role;
GRANT ALL ON ALL TABLES IN SCHEMA extensions TO postgres, dashboard_user;

ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public
    GRANT ALL ON TABLES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public
    GRANT ALL ON SEQUENCES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public
    GRANT ALL ON FUNCTIONS TO postgres, anon, authenticated, service_role;

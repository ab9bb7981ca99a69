-- name: tenant_isolation_insert_sessions
-- description: a user of tenant A cannot create a session in tenant B (refused by row level security)
-- setup: _two_tenants.sql
-- as_user: c0ffee00-0000-4000-8000-00000000a002
-- expect: error=row-level security
insert into public.sessions (tenant_id, title, starts_at, created_by)
values ('c0ffee00-0000-4000-8000-00000000b001', 'pgdr smoke intrusion', now(), (select auth.uid()));

-- name: tenant_isolation_insert_events
-- description: a user of tenant A cannot add an event to tenant B (refused by row level security)
-- setup: _two_tenants.sql
-- as_user: c0ffee00-0000-4000-8000-00000000a002
-- expect: error=row-level security
insert into public.events (tenant_id, user_id, kind)
values ('c0ffee00-0000-4000-8000-00000000b001', (select auth.uid()), 'pgdr-smoke');

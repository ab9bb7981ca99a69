-- Shared fixture of the default checks (files starting with "_" are never checks themselves).
-- Runs as the connecting role, inside the check's transaction, so it is rolled back with it.
-- Two tenants of their own (A and B), one signed-up user in each with a profile, a session per tenant
-- with its user as participant, an event per tenant, and an empty session of tenant A for the join test.
-- Fixed ids make the checks readable; nothing of this survives the rollback.
insert into public.tenants (id, name, slug) values
    ('c0ffee00-0000-4000-8000-00000000a001', 'pgdr smoke tenant A', 'pgdr-smoke-a'),
    ('c0ffee00-0000-4000-8000-00000000b001', 'pgdr smoke tenant B', 'pgdr-smoke-b');

insert into auth.users (id, instance_id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
values
    ('c0ffee00-0000-4000-8000-00000000a002', '00000000-0000-0000-0000-000000000000', 'authenticated',
     'authenticated', 'pgdr-smoke-a@example.invalid', '{"provider": "email"}', '{}', now(), now()),
    ('c0ffee00-0000-4000-8000-00000000b002', '00000000-0000-0000-0000-000000000000', 'authenticated',
     'authenticated', 'pgdr-smoke-b@example.invalid', '{"provider": "email"}', '{}', now(), now());

insert into public.profiles (id, tenant_id, display_name) values
    ('c0ffee00-0000-4000-8000-00000000a002', 'c0ffee00-0000-4000-8000-00000000a001', 'pgdr smoke user A'),
    ('c0ffee00-0000-4000-8000-00000000b002', 'c0ffee00-0000-4000-8000-00000000b001', 'pgdr smoke user B');

insert into public.sessions (id, tenant_id, title, starts_at, created_by) values
    ('c0ffee00-0000-4000-8000-00000000a003', 'c0ffee00-0000-4000-8000-00000000a001', 'smoke A', now(),
     'c0ffee00-0000-4000-8000-00000000a002'),
    ('c0ffee00-0000-4000-8000-00000000a004', 'c0ffee00-0000-4000-8000-00000000a001', 'smoke A join', now(),
     'c0ffee00-0000-4000-8000-00000000a002'),
    ('c0ffee00-0000-4000-8000-00000000b003', 'c0ffee00-0000-4000-8000-00000000b001', 'smoke B', now(),
     'c0ffee00-0000-4000-8000-00000000b002');

insert into public.participants (session_id, tenant_id, user_id) values
    ('c0ffee00-0000-4000-8000-00000000a003', 'c0ffee00-0000-4000-8000-00000000a001',
     'c0ffee00-0000-4000-8000-00000000a002'),
    ('c0ffee00-0000-4000-8000-00000000b003', 'c0ffee00-0000-4000-8000-00000000b001',
     'c0ffee00-0000-4000-8000-00000000b002');

insert into public.events (tenant_id, session_id, user_id, kind) values
    ('c0ffee00-0000-4000-8000-00000000a001', 'c0ffee00-0000-4000-8000-00000000a003',
     'c0ffee00-0000-4000-8000-00000000a002', 'pgdr-smoke'),
    ('c0ffee00-0000-4000-8000-00000000b001', 'c0ffee00-0000-4000-8000-00000000b003',
     'c0ffee00-0000-4000-8000-00000000b002', 'pgdr-smoke');

-- Tenant isolation under RLS, table by table: a signed-in user of tenant A sees its own tenant's rows and none of
-- any other tenant's (the fixture's tenant B and every real tenant). The fixture is made here, inside the file's
-- transaction, so the suite works on any copy of the app, empty or full, and leaves nothing behind.
begin;
select plan(22);

-- Two tenants, one user each (signing up through auth.users provisions public.accounts), and one row of every
-- tenant-scoped table per tenant. As postgres (BYPASSRLS), so RLS does not get in the way of the fixture.
insert into public.tenants (id, name, slug) values
    ('7e570000-0000-4000-8000-00000000a001', 'pgtap tenant A', 'pgtap-a'),
    ('7e570000-0000-4000-8000-00000000b001', 'pgtap tenant B', 'pgtap-b');
insert into auth.users (id, aud, role, email, raw_user_meta_data) values
    ('7e570000-0000-4000-8000-00000000a002', 'authenticated', 'authenticated', 'pgtap-a@example.invalid', '{}'),
    ('7e570000-0000-4000-8000-00000000b002', 'authenticated', 'authenticated', 'pgtap-b@example.invalid', '{}');
insert into public.profiles (id, tenant_id, display_name) values
    ('7e570000-0000-4000-8000-00000000a002', '7e570000-0000-4000-8000-00000000a001', 'pgtap user A'),
    ('7e570000-0000-4000-8000-00000000b002', '7e570000-0000-4000-8000-00000000b001', 'pgtap user B');
insert into public.memberships (tenant_id, account_id, role) values
    ('7e570000-0000-4000-8000-00000000a001', '7e570000-0000-4000-8000-00000000a002', 'owner'),
    ('7e570000-0000-4000-8000-00000000b001', '7e570000-0000-4000-8000-00000000b002', 'owner');
insert into public.sessions (id, tenant_id, title, starts_at) values
    ('7e570000-0000-4000-8000-00000000a003', '7e570000-0000-4000-8000-00000000a001', 'pgtap A', now()),
    ('7e570000-0000-4000-8000-00000000b003', '7e570000-0000-4000-8000-00000000b001', 'pgtap B', now());
insert into public.participants (session_id, tenant_id, user_id) values
    ('7e570000-0000-4000-8000-00000000a003', '7e570000-0000-4000-8000-00000000a001',
     '7e570000-0000-4000-8000-00000000a002'),
    ('7e570000-0000-4000-8000-00000000b003', '7e570000-0000-4000-8000-00000000b001',
     '7e570000-0000-4000-8000-00000000b002');
insert into public.events (tenant_id, session_id, user_id, kind) values
    ('7e570000-0000-4000-8000-00000000a001', '7e570000-0000-4000-8000-00000000a003',
     '7e570000-0000-4000-8000-00000000a002', 'pgtap'),
    ('7e570000-0000-4000-8000-00000000b001', '7e570000-0000-4000-8000-00000000b003',
     '7e570000-0000-4000-8000-00000000b002', 'pgtap');
insert into public.invoices (tenant_id, amount_cents) values
    ('7e570000-0000-4000-8000-00000000a001', 1000),
    ('7e570000-0000-4000-8000-00000000b001', 2000);
insert into public."Audit Log" (tenant_id, account_id, action) values
    ('7e570000-0000-4000-8000-00000000a001', '7e570000-0000-4000-8000-00000000a002', 'pgtap'),
    ('7e570000-0000-4000-8000-00000000b001', '7e570000-0000-4000-8000-00000000b002', 'pgtap');
-- Invitations fire the "send invitation email" webhook: add them with triggers off (replica), as a restore does.
set local session_replication_role = replica;
insert into public.invitations (tenant_id, email) values
    ('7e570000-0000-4000-8000-00000000a001', 'invitee-a@example.invalid'),
    ('7e570000-0000-4000-8000-00000000b001', 'invitee-b@example.invalid');
set local session_replication_role = origin;

-- Act as user A, as the Supabase API does for a signed-in request.
select set_config('request.jwt.claims', '{"sub": "7e570000-0000-4000-8000-00000000a002", "role": "authenticated"}',
                  true);
set local role authenticated;

select is((select auth.uid()), '7e570000-0000-4000-8000-00000000a002'::uuid, 'the claims make user A signed in');

select is((select count(*)::int from public.tenants where id <> '7e570000-0000-4000-8000-00000000a001'), 0,
          'tenants: no other tenant is visible');
select is((select count(*)::int from public.tenants where id = '7e570000-0000-4000-8000-00000000a001'), 1,
          'tenants: the own tenant is visible');
select is((select count(*)::int from public.profiles where tenant_id <> '7e570000-0000-4000-8000-00000000a001'), 0,
          'profiles: no profile of another tenant is visible');
select is((select count(*)::int from public.profiles where tenant_id = '7e570000-0000-4000-8000-00000000a001'), 1,
          'profiles: the own tenant''s profile is visible');
select is((select count(*)::int from public.sessions where tenant_id <> '7e570000-0000-4000-8000-00000000a001'), 0,
          'sessions: no session of another tenant is visible');
select is((select count(*)::int from public.sessions where tenant_id = '7e570000-0000-4000-8000-00000000a001'), 1,
          'sessions: the own tenant''s session is visible');
select is((select count(*)::int from public.participants
            where tenant_id <> '7e570000-0000-4000-8000-00000000a001'), 0,
          'participants: no participant of another tenant is visible');
select is((select count(*)::int from public.participants
            where tenant_id = '7e570000-0000-4000-8000-00000000a001'), 1,
          'participants: the own tenant''s participant is visible');
select is((select count(*)::int from public.events where tenant_id <> '7e570000-0000-4000-8000-00000000a001'), 0,
          'events: no event of another tenant is visible');
select is((select count(*)::int from public.events where tenant_id = '7e570000-0000-4000-8000-00000000a001'), 1,
          'events: the own tenant''s event is visible');
select is((select count(*)::int from public.memberships
            where tenant_id <> '7e570000-0000-4000-8000-00000000a001'), 0,
          'memberships: no membership of another tenant is visible');
select is((select count(*)::int from public.invitations
            where tenant_id <> '7e570000-0000-4000-8000-00000000a001'), 0,
          'invitations: no invitation of another tenant is visible');
select is((select count(*)::int from public.invitations
            where tenant_id = '7e570000-0000-4000-8000-00000000a001'), 1,
          'invitations: the own tenant''s invitation is visible');
select is((select count(*)::int from public.invoices where tenant_id <> '7e570000-0000-4000-8000-00000000a001'), 0,
          'invoices: no invoice of another tenant is visible (forced RLS)');
select is((select count(*)::int from public.invoices where tenant_id = '7e570000-0000-4000-8000-00000000a001'), 1,
          'invoices: the own tenant''s invoice is visible');
select is((select count(*)::int from public."Audit Log"
            where tenant_id <> '7e570000-0000-4000-8000-00000000a001'), 0,
          'Audit Log: no entry of another tenant is visible (partitioned table)');
select is((select count(*)::int from public.accounts where id <> '7e570000-0000-4000-8000-00000000a002'), 0,
          'accounts: a user sees no account but its own');

-- Writes across the tenant line are refused by the policies' WITH CHECK.
select throws_ok(
    $$insert into public.events (tenant_id, user_id, kind)
      values ('7e570000-0000-4000-8000-00000000b001', '7e570000-0000-4000-8000-00000000a002', 'pgtap')$$,
    '42501', null, 'events: an insert into another tenant is refused');
select throws_ok(
    $$insert into public.sessions (tenant_id, title, starts_at)
      values ('7e570000-0000-4000-8000-00000000b001', 'sneaky', now())$$,
    '42501', null, 'sessions: an insert into another tenant is refused');
select is_empty(
    $$update public.sessions set title = 'taken over' where id = '7e570000-0000-4000-8000-00000000b003'
      returning id$$,
    'sessions: a session of another tenant cannot be updated');

-- The same as user B: the policies work for every tenant, not only the first.
select set_config('request.jwt.claims', '{"sub": "7e570000-0000-4000-8000-00000000b002", "role": "authenticated"}',
                  true);
select results_eq(
    $$select id from public.sessions$$,
    $$values ('7e570000-0000-4000-8000-00000000b003'::uuid)$$,
    'user B sees exactly the sessions of tenant B');

select * from finish();
rollback;

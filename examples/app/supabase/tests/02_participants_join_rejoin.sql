-- Participants join and rejoin: join_session() adds one row, leave_session() marks it left, joining again reuses
-- the row (left_at cleared, rejoin_count up). A session of another tenant cannot be joined.
begin;
select plan(9);

insert into public.tenants (id, name, slug) values
    ('7e570000-0000-4000-8000-00000000a011', 'pgtap join A', 'pgtap-join-a'),
    ('7e570000-0000-4000-8000-00000000b011', 'pgtap join B', 'pgtap-join-b');
insert into auth.users (id, aud, role, email) values
    ('7e570000-0000-4000-8000-00000000a012', 'authenticated', 'authenticated', 'pgtap-join-a@example.invalid');
insert into public.profiles (id, tenant_id, display_name) values
    ('7e570000-0000-4000-8000-00000000a012', '7e570000-0000-4000-8000-00000000a011', 'pgtap joiner');
insert into public.sessions (id, tenant_id, title, starts_at) values
    ('7e570000-0000-4000-8000-00000000a013', '7e570000-0000-4000-8000-00000000a011', 'pgtap join', now()),
    ('7e570000-0000-4000-8000-00000000b013', '7e570000-0000-4000-8000-00000000b011', 'pgtap other', now());

select set_config('request.jwt.claims', '{"sub": "7e570000-0000-4000-8000-00000000a012", "role": "authenticated"}',
                  true);
set local role authenticated;

select lives_ok($$select public.join_session('7e570000-0000-4000-8000-00000000a013')$$, 'a user joins a session');
select results_eq(
    $$select count(*)::int, count(*) filter (where left_at is null)::int, max(rejoin_count)
        from public.participants where session_id = '7e570000-0000-4000-8000-00000000a013'$$,
    $$values (1, 1, 0)$$,
    'after joining: one active participant row, rejoin_count 0');

select lives_ok($$select public.leave_session('7e570000-0000-4000-8000-00000000a013')$$, 'the user leaves');
select isnt((select left_at from public.participants where session_id = '7e570000-0000-4000-8000-00000000a013'),
            null, 'after leaving: the row stays, with left_at set');

select lives_ok($$select public.join_session('7e570000-0000-4000-8000-00000000a013')$$, 'the user rejoins');
select results_eq(
    $$select count(*)::int, count(*) filter (where left_at is null)::int, max(rejoin_count)
        from public.participants where session_id = '7e570000-0000-4000-8000-00000000a013'$$,
    $$values (1, 1, 1)$$,
    'after rejoining: still one row, active again, rejoin_count 1');

select lives_ok($$select public.join_session('7e570000-0000-4000-8000-00000000a013')$$, 'joining twice is harmless');
select is((select count(*)::int from public.participants where user_id = (select auth.uid())), 1,
          'joining while joined adds no row');

select throws_ok($$select public.join_session('7e570000-0000-4000-8000-00000000b013')$$, 'P0002', null,
                 'a session of another tenant cannot be joined (RLS hides it)');

select * from finish();
rollback;

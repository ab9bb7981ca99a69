-- Signup provisioning: a new row in auth.users (what Supabase Auth writes on signup) makes its public.accounts
-- row through the on_auth_user_created trigger, and the new user sees that account and no other.
begin;
select plan(7);

select has_trigger('auth', 'users', 'on_auth_user_created', 'auth.users has the signup trigger');
select trigger_is('auth', 'users', 'on_auth_user_created', 'public', 'handle_new_user',
                  'the signup trigger calls public.handle_new_user()');

insert into auth.users (id, aud, role, email, raw_user_meta_data) values
    ('7e570000-0000-4000-8000-00000000c001', 'authenticated', 'authenticated', 'pgtap-new@example.invalid',
     '{"full_name": "Pgtap Newcomer"}'),
    ('7e570000-0000-4000-8000-00000000c002', 'authenticated', 'authenticated', 'plain.name@example.invalid', '{}');

select results_eq(
    $$select email::text, display_name from public.accounts where id = '7e570000-0000-4000-8000-00000000c001'$$,
    $$values ('pgtap-new@example.invalid', 'Pgtap Newcomer')$$,
    'a signup provisions its account, named from full_name');
select is((select display_name from public.accounts where id = '7e570000-0000-4000-8000-00000000c002'), 'plain.name',
          'without full_name the account is named after the email''s local part');
select throws_ok(
    $$insert into auth.users (aud, role, email) values ('authenticated', 'authenticated', 'not-an-email')$$,
    '23514', null, 'a signup whose email the app cannot hold is refused (the email_address domain)');

select set_config('request.jwt.claims', '{"sub": "7e570000-0000-4000-8000-00000000c001", "role": "authenticated"}',
                  true);
set local role authenticated;
select results_eq($$select id from public.accounts$$, $$values ('7e570000-0000-4000-8000-00000000c001'::uuid)$$,
                  'the new user sees its own account and no other');
select throws_ok($$select public.tenant_revenue('7e570000-0000-4000-8000-00000000c001')$$, '42501', null,
                 'a signed-in user may not read billing (tenant_revenue is for service_role)');

select * from finish();
rollback;

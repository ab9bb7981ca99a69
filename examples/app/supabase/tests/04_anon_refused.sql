-- What anon (a visitor with the public API key) is refused: the functions and tables the app revoked. A restore
-- that let the target's default grants through would open these up.
begin;
select plan(9);

select ok(not has_function_privilege('anon', 'public.invite_member(text)', 'execute'),
          'anon has no EXECUTE on invite_member');
select ok(not has_function_privilege('anon', 'public.tenant_revenue(uuid)', 'execute'),
          'anon has no EXECUTE on tenant_revenue');
select ok(not has_function_privilege('anon', 'public.handle_new_user()', 'execute'),
          'anon has no EXECUTE on handle_new_user');
select ok(has_function_privilege('service_role', 'public.tenant_revenue(uuid)', 'execute'),
          'service_role keeps EXECUTE on tenant_revenue');

select set_config('request.jwt.claims', '{"role": "anon"}', true);
set local role anon;

select throws_ok($$select public.invite_member('someone@example.invalid')$$, '42501', null,
                 'anon cannot call invite_member');
select throws_ok($$select public.tenant_revenue(gen_random_uuid())$$, '42501', null,
                 'anon cannot call tenant_revenue');
select throws_ok($$select count(*) from public.invoices$$, '42501', null, 'anon cannot read invoices at all');
select throws_ok($$select email from public.accounts$$, '42501', null, 'anon cannot read account emails');
select lives_ok($$select id, display_name from public.accounts$$,
                'anon may read account names (the column grant)');

select * from finish();
rollback;

-- name: tenant_isolation_profiles
-- description: a user of tenant A sees no profiles row of any other tenant, and does see its own tenant's
-- setup: _two_tenants.sql
-- as_user: c0ffee00-0000-4000-8000-00000000a002
-- expect: rows=0
-- Every row returned is a problem: a row of another tenant that RLS let through, or a missing own row.
select 'row of another tenant visible' as problem, t.id::text as row_id
  from public.profiles t
 where t.tenant_id <> 'c0ffee00-0000-4000-8000-00000000a001'
union all
select 'own tenant row not visible', null
 where not exists (select 1 from public.profiles t where t.tenant_id = 'c0ffee00-0000-4000-8000-00000000a001');

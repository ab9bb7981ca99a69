-- name: participants_join_rejoin
-- description: a user joins a session, leaves it and joins again: still one participant row, rejoin_count 1
-- setup: _two_tenants.sql
-- as_user: c0ffee00-0000-4000-8000-00000000a002
-- expect: value=rows=1 active=1 rejoin_count=1
select public.join_session('c0ffee00-0000-4000-8000-00000000a004');
select public.leave_session('c0ffee00-0000-4000-8000-00000000a004');
select public.join_session('c0ffee00-0000-4000-8000-00000000a004');
select format('rows=%s active=%s rejoin_count=%s', count(*), count(*) filter (where p.left_at is null),
              coalesce(max(p.rejoin_count), 0))
  from public.participants p
 where p.session_id = 'c0ffee00-0000-4000-8000-00000000a004' and p.user_id = (select auth.uid());

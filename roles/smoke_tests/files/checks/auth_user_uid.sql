-- name: auth_user_uid
-- description: a user can be created in auth.users, and auth.uid() and auth.role() resolve under its claims
-- as_user: (select id from auth.users where email = 'pgdr-smoke-auth@example.invalid')
-- expect: value=c0ffee00-0000-4000-8000-00000000c001 authenticated
insert into auth.users (id, instance_id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
values ('c0ffee00-0000-4000-8000-00000000c001', '00000000-0000-0000-0000-000000000000', 'authenticated',
        'authenticated', 'pgdr-smoke-auth@example.invalid', '{"provider": "email"}', '{}', now(), now());

-- @user
select coalesce(auth.uid()::text, 'no uid') || ' ' || coalesce(auth.role(), 'no role');

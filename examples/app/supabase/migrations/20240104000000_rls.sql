-- Tenant isolation with Row Level Security, and the join/leave functions the client calls.

-- The signed-in user's tenant. SECURITY DEFINER so that reading profiles here is not itself
-- filtered by the profiles policy (which calls this function).
create function public.current_tenant_id() returns uuid
    language sql stable security definer
    set search_path = ''
as $$
    select p.tenant_id from public.profiles p where p.id = (select auth.uid())
$$;

alter table public.tenants enable row level security;
alter table public.profiles enable row level security;
alter table public.sessions enable row level security;
alter table public.participants enable row level security;

create policy "members read their tenant" on public.tenants
    for select to authenticated
    using (id = (select public.current_tenant_id()));

create policy "members read profiles of their tenant" on public.profiles
    for select to authenticated
    using (tenant_id = (select public.current_tenant_id()));

create policy "users update their own profile" on public.profiles
    for update to authenticated
    using (id = (select auth.uid()))
    with check (tenant_id = (select public.current_tenant_id()));

create policy "members use sessions of their tenant" on public.sessions
    for all to authenticated
    using (tenant_id = (select public.current_tenant_id()))
    with check (tenant_id = (select public.current_tenant_id()));

create policy "members read participants of their tenant" on public.participants
    for select to authenticated
    using (tenant_id = (select public.current_tenant_id()));

create policy "users join as themselves" on public.participants
    for insert to authenticated
    with check (user_id = (select auth.uid()) and tenant_id = (select public.current_tenant_id()));

create policy "users update their own participation" on public.participants
    for update to authenticated
    using (user_id = (select auth.uid()))
    with check (user_id = (select auth.uid()) and tenant_id = (select public.current_tenant_id()));

-- Join a session of the caller's tenant. Joining again after leaving reuses the row:
-- left_at is cleared and rejoin_count goes up, so there is only ever one row per user and session.
create function public.join_session(p_session uuid) returns public.participants
    language plpgsql security invoker
    set search_path = ''
as $$
declare
    result public.participants;
begin
    insert into public.participants as p (session_id, tenant_id, user_id)
    select s.id, s.tenant_id, (select auth.uid())
    from public.sessions s
    where s.id = p_session
    on conflict (session_id, user_id) do update
        set left_at = null,
            joined_at = now(),
            rejoin_count = p.rejoin_count + 1
    returning * into result;
    if result.id is null then
        raise exception 'session % not found', p_session using errcode = 'no_data_found';
    end if;
    return result;
end
$$;

-- Leave a session: the row stays, with left_at set.
create function public.leave_session(p_session uuid) returns void
    language sql security invoker
    set search_path = ''
as $$
    update public.participants
    set left_at = now()
    where session_id = p_session and user_id = (select auth.uid()) and left_at is null
$$;

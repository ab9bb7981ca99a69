-- The activity log: the big table of the app (and of the backup benchmarks).
create table public.events (
    id uuid primary key default gen_random_uuid(),
    tenant_id uuid not null references public.tenants (id),
    session_id uuid,
    user_id uuid,
    kind text not null,
    payload jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now()
);

create index events_tenant_created_idx on public.events (tenant_id, created_at);
create index events_session_idx on public.events (session_id);

alter table public.events enable row level security;

create policy "members read events of their tenant" on public.events
    for select to authenticated
    using (tenant_id = (select public.current_tenant_id()));

create policy "members add events to their tenant" on public.events
    for insert to authenticated
    with check (tenant_id = (select public.current_tenant_id()) and user_id = (select auth.uid()));

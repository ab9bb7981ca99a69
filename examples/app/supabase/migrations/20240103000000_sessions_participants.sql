-- Sessions users join and leave; a user has one participant row per session, reused on rejoin.
create table public.sessions (
    id uuid primary key default gen_random_uuid(),
    tenant_id uuid not null references public.tenants (id),
    title text not null,
    starts_at timestamptz not null,
    created_by uuid references auth.users (id) on delete set null
);

create index sessions_tenant_id_idx on public.sessions (tenant_id);

create table public.participants (
    id uuid primary key default gen_random_uuid(),
    session_id uuid not null references public.sessions (id) on delete cascade,
    tenant_id uuid not null references public.tenants (id),
    user_id uuid not null references auth.users (id) on delete cascade,
    joined_at timestamptz not null default now(),
    left_at timestamptz,
    rejoin_count integer not null default 0,
    unique (session_id, user_id)
);

create index participants_tenant_id_idx on public.participants (tenant_id);

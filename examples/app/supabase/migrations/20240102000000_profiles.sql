-- One profile per signed-up user (auth.users), tying the user to a tenant.
create table public.profiles (
    id uuid primary key references auth.users (id) on delete cascade,
    tenant_id uuid not null references public.tenants (id),
    display_name text not null,
    created_at timestamptz not null default now()
);

create index profiles_tenant_id_idx on public.profiles (tenant_id);

-- Tenants: every row of the app belongs to exactly one.
create table public.tenants (
    id uuid primary key default gen_random_uuid(),
    name text not null,
    slug text not null unique,
    created_at timestamptz not null default now()
);

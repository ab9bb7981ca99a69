-- Accounts, memberships, invitations and billing: the parts of a real Supabase app that a restore tends to lose
-- or to open up (see examples/app/README.md, "What a restore must keep").

-- Types of the app's own.
create type public.member_role as enum ('owner', 'admin', 'member');
create domain public.email_address as text check (value ~ '^[^@[:space:]]+@[^@[:space:]]+$');

-- Functions created from here on are not executable by anon, nor by PUBLIC: production narrowed the defaults.
alter default privileges for role postgres in schema public revoke execute on functions from anon;
alter default privileges for role postgres revoke execute on functions from public;

-- One account per signed-up user, made by a trigger on auth.users (the usual Supabase pattern).
create table public.accounts (
    id uuid primary key references auth.users (id) on delete cascade,
    email public.email_address not null,
    display_name text,
    created_at timestamptz not null default now()
);
comment on table public.accounts is 'One row per signed-up user, provisioned by public.handle_new_user()';

create function public.handle_new_user() returns trigger
    language plpgsql security definer
    set search_path = ''
as $$
begin
    insert into public.accounts (id, email, display_name)
    values (new.id, new.email, coalesce(new.raw_user_meta_data ->> 'full_name', split_part(new.email, '@', 1)));
    return new;
end
$$;
revoke execute on function public.handle_new_user() from authenticated, service_role;

create trigger on_auth_user_created
    after insert on auth.users
    for each row execute function public.handle_new_user();

-- Anonymous visitors may see who an account is, not its email: a column-level grant on a table revoked from anon.
revoke all on public.accounts from anon;
grant select (id, display_name) on public.accounts to anon;

create table public.memberships (
    tenant_id uuid not null references public.tenants (id) on delete cascade,
    account_id uuid not null references public.accounts (id) on delete cascade,
    role public.member_role not null default 'member',
    joined_at timestamptz not null default now(),
    primary key (tenant_id, account_id)
);

create table public.invitations (
    id bigint generated always as identity primary key,
    tenant_id uuid not null references public.tenants (id) on delete cascade,
    email public.email_address not null,
    token uuid not null default gen_random_uuid() unique,
    invited_by uuid references public.accounts (id) on delete set null,
    accepted_at timestamptz,
    created_at timestamptz not null default now()
);

-- Invoice numbers are a sequence of their own, started at 1000.
create sequence public.invoice_number_seq start with 1000;

create table public.invoices (
    id uuid primary key default gen_random_uuid(),
    tenant_id uuid not null references public.tenants (id) on delete cascade,
    number bigint not null default nextval('public.invoice_number_seq') unique,
    amount_cents integer not null check (amount_cents >= 0),
    vat_cents integer generated always as ((amount_cents * 20) / 100) stored,
    issued_on date not null default current_date,
    paid boolean not null default false
);
alter sequence public.invoice_number_seq owned by public.invoices.number;
-- Billing is none of anon's business at all.
revoke all on public.invoices from anon;
revoke all on sequence public.invoice_number_seq from anon;

-- A partitioned table with a quoted name: what members did, by year.
create table public."Audit Log" (
    id uuid not null default gen_random_uuid(),
    tenant_id uuid not null references public.tenants (id) on delete cascade,
    account_id uuid,
    action text not null,
    at timestamptz not null default now(),
    primary key (id, at)
) partition by range (at);
create table public."Audit Log 2024" partition of public."Audit Log" for values from ('2024-01-01') to ('2025-01-01');
create table public."Audit Log default" partition of public."Audit Log" default;

-- Tenant isolation: members see their tenant's rows; billing is forced under RLS even for its owner's sessions.
alter table public.accounts enable row level security;
alter table public.memberships enable row level security;
alter table public.invitations enable row level security;
alter table public.invoices enable row level security;
alter table public.invoices force row level security;
alter table public."Audit Log" enable row level security;

create policy "accounts see themselves" on public.accounts
    for select to authenticated
    using (id = (select auth.uid()));

create policy "members see the memberships of their tenant" on public.memberships
    for select to authenticated
    using (tenant_id = (select public.current_tenant_id()));

create policy "members see the invitations of their tenant" on public.invitations
    for select to authenticated
    using (tenant_id = (select public.current_tenant_id()));

create policy "members see the invoices of their tenant" on public.invoices
    for select to authenticated
    using (tenant_id = (select public.current_tenant_id()));

create policy "members see the audit log of their tenant" on public."Audit Log"
    for select to authenticated
    using (tenant_id = (select public.current_tenant_id()));

-- Inviting is for signed-in members only: SECURITY DEFINER, and (by the defaults above) not for anon or PUBLIC.
create function public.invite_member(p_email text) returns bigint
    language plpgsql security definer
    set search_path = ''
as $$
declare
    result bigint;
begin
    if (select auth.uid()) is null then
        raise exception 'sign in to invite' using errcode = '42501';
    end if;
    insert into public.invitations (tenant_id, email, invited_by)
    values ((select public.current_tenant_id()), p_email, (select auth.uid()))
    returning id into result;
    return result;
end
$$;
grant execute on function public.invite_member(text) to authenticated;

-- The billing summary: revoked from everyone, granted to service_role only.
create function public.tenant_revenue(p_tenant uuid) returns bigint
    language sql stable security definer
    set search_path = ''
as $$
    select coalesce(sum(amount_cents), 0)::bigint from public.invoices where tenant_id = p_tenant
$$;
revoke execute on function public.tenant_revenue(uuid) from authenticated;

-- Reporting: one materialized view kept populated, one created WITH NO DATA (never refreshed in production).
create materialized view public.daily_revenue as
    select tenant_id, issued_on, sum(amount_cents)::bigint as amount_cents, count(*) as invoices
    from public.invoices
    group by tenant_id, issued_on;
create unique index daily_revenue_key on public.daily_revenue (tenant_id, issued_on);
revoke all on public.daily_revenue from anon, authenticated;

create materialized view public.tenant_activity as
    select tenant_id, date_trunc('day', created_at) as day, count(*) as events
    from public.events
    group by 1, 2
with no data;

-- Realtime: clients subscribe to participants and invitations; broadcasts are tenant-scoped.
alter publication supabase_realtime add table public.participants, public.invitations;

create policy "members receive their tenant's broadcasts" on realtime.messages
    for select to authenticated
    using (topic = 'tenant:' || (select public.current_tenant_id())::text);

-- Storage: members read their tenant's exports; users write only their own avatar folder.
create function public.current_tenant_slug() returns text
    language sql stable security definer
    set search_path = ''
as $$
    select t.slug from public.tenants t where t.id = (select public.current_tenant_id())
$$;
grant execute on function public.current_tenant_slug() to authenticated;

create policy "members read their tenant's exports" on storage.objects
    for select to authenticated
    using (bucket_id = 'app-storage' and (storage.foldername(name))[1] = 'exports'
           and (storage.foldername(name))[2] = (select public.current_tenant_slug()));

create policy "users manage their own avatar" on storage.objects
    for insert to authenticated
    with check (bucket_id = 'app-storage' and (storage.foldername(name))[1] = 'avatars'
                and storage.filename(name) = (select auth.uid())::text || '.' || storage.extension(name));

-- Fuzzy search over display names (a trusted extension, enabled by the app in the extensions schema).
create extension if not exists pg_trgm with schema extensions;
create index accounts_display_name_trgm on public.accounts using gin (display_name extensions.gin_trgm_ops);

-- Jobs and hooks that run in production: a refresh every ten minutes, and a webhook on every new invitation.
select cron.schedule('refresh-daily-revenue', '*/10 * * * *', 'refresh materialized view public.daily_revenue');

create trigger "send invitation email"
    after insert on public.invitations
    for each row execute function supabase_functions.http_request(
        'https://hooks.example.com/invitations', 'POST', '{"Content-Type": "application/json"}', '{}', '1000'
    );

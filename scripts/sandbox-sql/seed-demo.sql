-- The demo data of a new production: 3 tenants with 10 users each, their profiles and sign-in
-- identities, 4 sessions per tenant, each user in 3 or 4 sessions (some left, some rejoined).
-- Runs once, on an empty app (the caller checks); the events come from events-batch.sql.
INSERT INTO public.tenants (name, slug) VALUES
    ('Acme Health', 'acme'), ('Globex Learning', 'globex'), ('Initech Events', 'initech');

INSERT INTO auth.users (instance_id, aud, role, email, encrypted_password, email_confirmed_at,
                        raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
SELECT '00000000-0000-0000-0000-000000000000', 'authenticated', 'authenticated',
       format('user%s@%s.example', lpad(i::text, 2, '0'), t.slug),
       extensions.crypt('sandbox-password', extensions.gen_salt('bf', 4)),
       now() - interval '60 days',
       jsonb_build_object('provider', 'email', 'providers', jsonb_build_array('email'), 'tenant', t.slug),
       jsonb_build_object('full_name', initcap(t.slug) || ' User ' || i),
       now() - interval '90 days' + i * interval '1 day', now()
FROM public.tenants t, generate_series(1, 10) i;

INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, created_at)
SELECT u.id::text, u.id, jsonb_build_object('sub', u.id::text, 'email', u.email), 'email', u.created_at
FROM auth.users u;

INSERT INTO public.profiles (id, tenant_id, display_name, created_at)
SELECT u.id, t.id, u.raw_user_meta_data ->> 'full_name', u.created_at
FROM auth.users u JOIN public.tenants t ON t.slug = u.raw_app_meta_data ->> 'tenant';

INSERT INTO public.sessions (tenant_id, title, starts_at, created_by)
SELECT t.id, format('%s %s #%s', t.name, (ARRAY['standup', 'workshop', 'webinar', 'review'])[i], i),
       now() - (30 - 7 * i) * interval '1 day',
       (SELECT p.id FROM public.profiles p WHERE p.tenant_id = t.id ORDER BY p.display_name LIMIT 1)
FROM public.tenants t, generate_series(1, 4) i;

-- Users with an even number join all 4 sessions of their tenant, the others 3 of them.
INSERT INTO public.participants (session_id, tenant_id, user_id, joined_at, left_at, rejoin_count)
SELECT s.id, s.tenant_id, p.id, s.starts_at,
       CASE WHEN (p.n + s.n) % 3 = 0 THEN s.starts_at + interval '45 minutes' END,
       (p.n * s.n) % 3
FROM (SELECT id, tenant_id, row_number() OVER (PARTITION BY tenant_id ORDER BY display_name) AS n
      FROM public.profiles) p
JOIN (SELECT id, tenant_id, starts_at, row_number() OVER (PARTITION BY tenant_id ORDER BY starts_at) AS n
      FROM public.sessions) s ON s.tenant_id = p.tenant_id
WHERE (p.n + s.n) % 4 <> 0 OR p.n % 2 = 0;

-- Accounts came from the trigger on auth.users. Every account is a member of its tenant; the first is its owner.
INSERT INTO public.memberships (tenant_id, account_id, role, joined_at)
SELECT p.tenant_id, p.id,
       CASE WHEN row_number() OVER (PARTITION BY p.tenant_id ORDER BY p.display_name) = 1
            THEN 'owner'::public.member_role ELSE 'member'::public.member_role END,
       p.created_at
FROM public.profiles p;

-- Two invitations per tenant (the webhook queues one request each), one accepted.
INSERT INTO public.invitations (tenant_id, email, invited_by, accepted_at)
SELECT t.id, format('guest%s@%s.example', i, t.slug),
       (SELECT m.account_id FROM public.memberships m WHERE m.tenant_id = t.id AND m.role = 'owner'),
       CASE WHEN i = 1 THEN now() - interval '3 days' END
FROM public.tenants t, generate_series(1, 2) i;

-- Twelve monthly invoices per tenant, and an audit trail in both partitions.
INSERT INTO public.invoices (tenant_id, amount_cents, issued_on, paid)
SELECT t.id, 1000 * (m + length(t.slug)), date '2024-01-01' + (m - 1) * interval '1 month', m < 11
FROM public.tenants t, generate_series(1, 12) m;

INSERT INTO public."Audit Log" (tenant_id, account_id, action, at)
SELECT m.tenant_id, m.account_id, (ARRAY['signed in', 'invited', 'paid'])[1 + (n % 3)],
       CASE WHEN n % 2 = 0 THEN timestamptz '2024-06-01' ELSE now() END - n * interval '1 hour'
FROM (SELECT tenant_id, account_id, row_number() OVER () AS n FROM public.memberships) m;

REFRESH MATERIALIZED VIEW public.daily_revenue;

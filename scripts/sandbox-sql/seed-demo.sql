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

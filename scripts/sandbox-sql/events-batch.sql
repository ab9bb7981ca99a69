-- One batch of realistic activity rows for public.events, generated on the server.
-- Parameter: rows (the number of rows). Each row takes a random participation (tenant, session, user) so
-- the foreign keys and the tenant of every event are consistent, a message of 2 to 8 phrases drawn from
-- phrases made up for this batch, a jsonb payload with a few keys and a time within the last 90 days.
-- Fixed slots (CASE ... END, skipped by concat_ws when NULL) instead of a subquery per row keep this
-- fast: a subquery per row costs more than the insert itself.
WITH vocabulary AS MATERIALIZED (
    SELECT string_to_array(
               'account action active add after again agenda alert answer app approve archive attach audio '
               'available backup balance batch before board break browser budget build button cache call '
               'camera cancel card change channel chat check client close cloud comment complete confirm '
               'connect contact copy create daily dashboard data deadline delete deliver device draft drop '
               'edit email enable error event expire export feedback field file filter finish follow form '
               'forward group guest handle help history host import invite issue join keyboard label late '
               'launch leave link list load lobby login mail manage meeting member message microphone minute '
               'mobile monday moderator mute network note notify offline online open order owner page panel '
               'password pause payment people phone photo plan play poll presenter preview print private '
               'profile project public question queue quick raise record refresh reminder remote reply report '
               'request reset resume retry review room save schedule screen search send server session share '
               'signal slide slow sound speaker start status stop stream submit summary support sync tablet '
               'task team template thread ticket timer today topic track transfer update upload user video '
               'view voice volume wait webinar week welcome window workshop zoom', ' ') AS words,
           ARRAY['session.joined', 'session.left', 'chat.message', 'poll.answered', 'hand.raised',
                 'screen.shared', 'recording.started', 'reaction.sent', 'file.uploaded', 'note.saved'] AS kinds,
           ARRAY['web', 'ios', 'android', 'desktop', 'api'] AS clients
),
ctx AS MATERIALIZED (
    SELECT v.words, v.kinds, v.clients, array_length(v.words, 1) AS nwords,
           ARRAY(
               SELECT concat_ws(' ',
                   v.words[1 + floor(random() * array_length(v.words, 1))::int],
                   v.words[1 + floor(random() * array_length(v.words, 1))::int],
                   CASE WHEN random() < 0.7 THEN v.words[1 + floor(random() * array_length(v.words, 1))::int] END,
                   CASE WHEN random() < 0.4 THEN v.words[1 + floor(random() * array_length(v.words, 1))::int] END)
               FROM generate_series(1, 300)
           ) AS phrases,
           p.tenants, p.sessions, p.users, p.n
    FROM vocabulary v,
         (SELECT array_agg(tenant_id) AS tenants, array_agg(session_id) AS sessions, array_agg(user_id) AS users,
                 count(*)::int AS n
          FROM public.participants) p
)
INSERT INTO public.events (tenant_id, session_id, user_id, kind, payload, created_at)
SELECT c.tenants[r.k], c.sessions[r.k], c.users[r.k],
       c.kinds[1 + floor(random() * array_length(c.kinds, 1))::int],
       jsonb_build_object(
           'message', concat_ws(' ',
               c.phrases[1 + floor(random() * 300)::int],
               c.phrases[1 + floor(random() * 300)::int],
               CASE WHEN r.len >= 3 THEN c.phrases[1 + floor(random() * 300)::int] END,
               CASE WHEN r.len >= 4 THEN c.phrases[1 + floor(random() * 300)::int] END,
               CASE WHEN r.len >= 5 THEN c.phrases[1 + floor(random() * 300)::int] END,
               CASE WHEN r.len >= 6 THEN c.phrases[1 + floor(random() * 300)::int] END,
               CASE WHEN r.len >= 7 THEN c.phrases[1 + floor(random() * 300)::int] END,
               CASE WHEN r.len >= 8 THEN c.phrases[1 + floor(random() * 300)::int] END),
           'client', c.clients[1 + floor(random() * array_length(c.clients, 1))::int],
           'ip', concat_ws('.', 10, floor(random() * 256)::int, floor(random() * 256)::int, 1 + mod(r.g, 250)),
           'duration_ms', floor(random() * random() * 60000)::int,
           'attempt', 1 + floor(random() * random() * 4)::int,
           'tags', to_jsonb(c.words[r.tag:r.tag + floor(random() * 4)::int - 1])
       ),
       now() - random() * interval '90 days'
FROM ctx c,
     LATERAL (
         SELECT g,
                1 + floor(random() * c.n)::int AS k,
                2 + floor(random() * random() * 7)::int AS len,
                1 + floor(random() * (c.nwords - 4))::int AS tag
         FROM generate_series(1, %(rows)s) g
     ) r
WHERE c.n > 0;

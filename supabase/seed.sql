-- Demo data for local runs (`make dev`): two clients, the three agents, a few SMS.
-- Fixed ids and ON CONFLICT DO NOTHING make it safe to load twice. Numbers are
-- from the French range reserved for fiction (+33 6 39 98 xx xx).
INSERT INTO public.agent_types (id, name, display_name) VALUES
    ('a0000000-0000-4000-8000-000000000001', 'louis', 'Louis'),
    ('a0000000-0000-4000-8000-000000000002', 'arthur', 'Arthur'),
    ('a0000000-0000-4000-8000-000000000003', 'alexandra', 'Alexandra')
ON CONFLICT DO NOTHING;

INSERT INTO public.clients (id, name) VALUES
    ('c0000000-0000-4000-8000-000000000001', 'Cabinet Dentaire Lumière'),
    ('c0000000-0000-4000-8000-000000000002', 'Garage Martin & Fils')
ON CONFLICT DO NOTHING;

INSERT INTO public.agent_deployments (id, name, slug, client_id, agent_type_id) VALUES
    ('d0000000-0000-4000-8000-000000000001', 'Lumière – rappels RDV', 'lumiere-louis',
     'c0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000001'),
    ('d0000000-0000-4000-8000-000000000002', 'Lumière – accueil', 'lumiere-alexandra',
     'c0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000003'),
    ('d0000000-0000-4000-8000-000000000003', 'Martin – prospection', 'martin-arthur',
     'c0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000002')
ON CONFLICT DO NOTHING;

INSERT INTO auth.users (id, email) VALUES
    ('e0000000-0000-4000-8000-000000000001', 'viewer@lumiere.example'),
    ('e0000000-0000-4000-8000-000000000002', 'admin@martin.example')
ON CONFLICT DO NOTHING;

INSERT INTO public.user_client_permissions (user_id, client_id, role) VALUES
    ('e0000000-0000-4000-8000-000000000001', 'c0000000-0000-4000-8000-000000000001', 'viewer'),
    ('e0000000-0000-4000-8000-000000000002', 'c0000000-0000-4000-8000-000000000002', 'admin')
ON CONFLICT DO NOTHING;

INSERT INTO public.agent_sms (
    id, deployment_id, phone_number, first_name, message_content, message_type,
    provider_message_sid, provider_status, status, sent_at, delivered_at, failed_at,
    failure_reason, provider_cost, voipia_margin, workflow_id
)
SELECT
    ('f0000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid,
    (ARRAY['d0000000-0000-4000-8000-000000000001',
           'd0000000-0000-4000-8000-000000000002',
           'd0000000-0000-4000-8000-000000000003'])[1 + n % 3]::uuid,
    '+3363998' || lpad((n % 7)::text, 4, '0'),
    (ARRAY['Camille', 'Louis', 'Inès', 'Hugo'])[1 + n % 4],
    CASE n % 3
        WHEN 0 THEN 'Bonjour, votre rendez-vous est confirmé demain à 14h00.'
        WHEN 1 THEN 'Merci de votre appel, voici le lien pour prendre rendez-vous.'
        ELSE 'Bonjour, suite à notre échange, je vous rappelle jeudi.'
    END,
    (ARRAY['appointment_reminder', 'notification', 'marketing'])[1 + n % 3],
    'SM' || md5('demo-' || n),
    CASE WHEN n % 10 = 0 THEN 'undelivered' WHEN n % 7 = 0 THEN 'sent' ELSE 'delivered' END,
    CASE WHEN n % 10 = 0 THEN 'failed' WHEN n % 7 = 0 THEN 'sent' ELSE 'delivered' END,
    now() - make_interval(hours => n * 5),
    CASE WHEN n % 10 <> 0 AND n % 7 <> 0 THEN now() - make_interval(hours => n * 5) + interval '4 seconds' END,
    CASE WHEN n % 10 = 0 THEN now() - make_interval(hours => n * 5) + interval '30 seconds' END,
    CASE WHEN n % 10 = 0 THEN 'Unreachable destination handset' END,
    0.0750,
    0.0300,
    'wf-demo-' || (n % 2)
FROM generate_series(1, 30) AS n
ON CONFLICT DO NOTHING;

-- A campaign from fourteen months ago, due for archiving, so that the retention
-- function has something to move locally (README: "Archive"). Not loaded again once
-- anything is archived: the archive would then hold a second copy.
INSERT INTO public.agent_sms (
    id, deployment_id, phone_number, first_name, message_content, message_type,
    provider_message_sid, provider_status, status, sent_at, delivered_at, provider_cost,
    voipia_margin, workflow_id
)
SELECT
    ('f0000000-0000-4000-8001-' || lpad(n::text, 12, '0'))::uuid,
    (ARRAY['d0000000-0000-4000-8000-000000000001',
           'd0000000-0000-4000-8000-000000000003'])[1 + n % 2]::uuid,
    '+3363998' || lpad((n % 5)::text, 4, '0'),
    (ARRAY['Camille', 'Louis', 'Inès', 'Hugo'])[1 + n % 4],
    'Bonjour, votre rendez-vous annuel approche : répondez OUI pour confirmer.',
    'appointment_reminder',
    'SM' || md5('demo-old-' || n),
    'delivered',
    'delivered',
    now() - interval '425 days' - make_interval(hours => n * 7),
    now() - interval '425 days' - make_interval(hours => n * 7) + interval '5 seconds',
    0.0750,
    0.0300,
    'wf-demo-0'
FROM generate_series(1, 12) AS n
WHERE NOT EXISTS (SELECT FROM private.sms_archive_objects)
ON CONFLICT DO NOTHING;

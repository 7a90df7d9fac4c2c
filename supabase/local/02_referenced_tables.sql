-- The production tables agent_sms refers to, with the columns the seed relies on.
-- Production has more columns; every extra one there is nullable or defaulted, so
-- nothing here depends on them. Their row-level security mirrors production's:
-- a user sees the clients they hold a permission for, and what hangs off them.
CREATE TABLE public.clients (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.agent_types (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL UNIQUE,
    display_name text NOT NULL
);

CREATE TABLE public.agent_deployments (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    slug text NOT NULL UNIQUE,
    client_id uuid NOT NULL REFERENCES public.clients (id) ON DELETE CASCADE,
    agent_type_id uuid NOT NULL REFERENCES public.agent_types (id),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.agent_calls (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    deployment_id uuid NOT NULL REFERENCES public.agent_deployments (id) ON DELETE CASCADE,
    phone_number text,
    first_name text,
    last_name text,
    started_at timestamptz NOT NULL DEFAULT now(),
    outcome text,
    total_cost numeric(10, 4),
    duration_seconds integer,
    metadata jsonb DEFAULT '{}'::jsonb
);

CREATE TABLE public.agent_arthur_prospects (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    deployment_id uuid REFERENCES public.agent_deployments (id) ON DELETE CASCADE,
    phone_number text,
    first_name text,
    last_name text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.agent_arthur_prospect_sequences (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    prospect_id uuid REFERENCES public.agent_arthur_prospects (id) ON DELETE CASCADE,
    name text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.user_client_permissions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    client_id uuid NOT NULL REFERENCES public.clients (id) ON DELETE CASCADE,
    role text NOT NULL DEFAULT 'viewer' CHECK (role IN ('viewer', 'admin')),
    UNIQUE (user_id, client_id)
);

ALTER TABLE public.clients ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.agent_types ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.agent_deployments ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.agent_calls ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.agent_arthur_prospects ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.agent_arthur_prospect_sequences ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.user_client_permissions ENABLE ROW LEVEL SECURITY;

CREATE POLICY users_view_own_permissions ON public.user_client_permissions
    FOR SELECT TO authenticated
    USING (user_id = (SELECT auth.uid()));

CREATE POLICY users_view_permitted_clients ON public.clients
    FOR SELECT TO authenticated
    USING (id IN (SELECT client_id FROM public.user_client_permissions
                  WHERE user_id = (SELECT auth.uid())));

CREATE POLICY authenticated_view_agent_types ON public.agent_types
    FOR SELECT TO authenticated
    USING (true);

CREATE POLICY users_view_permitted_deployments ON public.agent_deployments
    FOR SELECT TO authenticated
    USING (client_id IN (SELECT client_id FROM public.user_client_permissions
                         WHERE user_id = (SELECT auth.uid())));

CREATE POLICY users_view_permitted_calls ON public.agent_calls
    FOR SELECT TO authenticated
    USING (deployment_id IN (SELECT id FROM public.agent_deployments));

CREATE POLICY users_view_permitted_prospects ON public.agent_arthur_prospects
    FOR SELECT TO authenticated
    USING (deployment_id IN (SELECT id FROM public.agent_deployments));

CREATE POLICY users_view_permitted_sequences ON public.agent_arthur_prospect_sequences
    FOR SELECT TO authenticated
    USING (prospect_id IN (SELECT id FROM public.agent_arthur_prospects));

-- Row-level security for agent_sms, as the reference schema's policy table says:
--   users_view_accessible_sms  SELECT  authenticated  SMS of deployments of the user's clients
--   admins_manage_sms          ALL     authenticated  the same, for clients the user administers
--   service_insert_sms         INSERT  service_role   n8n records SMS
--   service_update_sms         UPDATE  service_role   status webhooks
-- anon has no policy and no grant: it sees and changes nothing.

-- The access rule is written once, here. It lives outside the API-exposed public
-- schema and runs as its owner so that it can read the permission tables whatever
-- their own policies are; it only ever answers for the caller's auth.uid().
CREATE SCHEMA IF NOT EXISTS private;
REVOKE ALL ON SCHEMA private FROM PUBLIC;
GRANT USAGE ON SCHEMA private TO authenticated, service_role;

CREATE FUNCTION private.accessible_deployment_ids(admin_only boolean DEFAULT false)
RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = ''
AS $$
    SELECT coalesce(array_agg(d.id), '{}')
    FROM public.user_client_permissions AS p
    JOIN public.agent_deployments AS d ON d.client_id = p.client_id
    WHERE p.user_id = (SELECT auth.uid())
      AND (NOT admin_only OR p.role = 'admin')
$$;

COMMENT ON FUNCTION private.accessible_deployment_ids(boolean) IS
    'Deployments of the clients the calling user may see (or, with admin_only, administer).';

REVOKE ALL ON FUNCTION private.accessible_deployment_ids(boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION private.accessible_deployment_ids(boolean) TO authenticated, service_role;

-- What the helper reads, indexed so it answers from the indexes alone.
CREATE INDEX IF NOT EXISTS idx_user_client_permissions_user_id
    ON public.user_client_permissions (user_id) INCLUDE (client_id, role);
CREATE INDEX IF NOT EXISTS idx_agent_deployments_client_id
    ON public.agent_deployments (client_id) INCLUDE (id);

ALTER TABLE public.agent_sms ENABLE ROW LEVEL SECURITY;

-- "(SELECT ...)::uuid[]" makes Postgres evaluate the helper once per statement (an InitPlan),
-- and "deployment_id = ANY (array)" lets the planner use the deployment indexes.
CREATE POLICY users_view_accessible_sms ON public.agent_sms
    FOR SELECT TO authenticated
    USING (deployment_id = ANY ((SELECT private.accessible_deployment_ids())::uuid[]));

CREATE POLICY admins_manage_sms ON public.agent_sms
    FOR ALL TO authenticated
    USING (deployment_id = ANY ((SELECT private.accessible_deployment_ids(admin_only => true))::uuid[]))
    WITH CHECK (deployment_id = ANY ((SELECT private.accessible_deployment_ids(admin_only => true))::uuid[]));

-- service_role has BYPASSRLS on Supabase; these two state its intent explicitly and
-- keep it working should that attribute ever be dropped.
CREATE POLICY service_insert_sms ON public.agent_sms
    FOR INSERT TO service_role
    WITH CHECK (true);

CREATE POLICY service_update_sms ON public.agent_sms
    FOR UPDATE TO service_role
    USING (true)
    WITH CHECK (true);

-- Supabase grants every table to anon and authenticated by default. TRUNCATE ignores
-- row-level security altogether, so it must not be granted to API users.
REVOKE ALL ON public.agent_sms FROM anon, authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.agent_sms TO authenticated;
GRANT ALL ON public.agent_sms TO service_role;

-- Row-level security for agent_sms. The reference schema's policy table, as this
-- project keeps it (docs/sms_tracking_schema.md, "Notes of this project"):
--   users_view_accessible_sms  SELECT  authenticated  SMS of deployments of the user's clients
--   admins_manage_sms          narrowed to nothing: only the service writes the ledger
--   service_insert_sms         INSERT  service_role   n8n records SMS (ingest_sms)
--   service_update_sms         UPDATE  service_role   status reports (record_sms_status)
-- anon has no policy and no grant. Who may do what at all is in
-- 20261206000100_roles_and_privileges.sql.

-- The access rule is written once, here. It lives outside the API-exposed public
-- schema and runs as its owner so that it can read the permission tables whatever
-- their own policies are; it only ever answers for the caller's auth.uid(). PARALLEL
-- RESTRICTED: a function with no label is PARALLEL UNSAFE, and one such call anywhere
-- in a query, even in an InitPlan evaluated once, makes the whole query serial.
CREATE SCHEMA IF NOT EXISTS private;

CREATE FUNCTION private.accessible_deployment_ids(admin_only boolean DEFAULT false)
RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(d.id), '{}')
    FROM public.user_client_permissions AS p
    JOIN public.agent_deployments AS d ON d.client_id = p.client_id
    WHERE p.user_id = (SELECT auth.uid())
      AND (NOT admin_only OR p.role = 'admin')
$$;

COMMENT ON FUNCTION private.accessible_deployment_ids(boolean) IS
    'Deployments of the clients the calling user may see (or, with admin_only, administer).';

-- What the helper reads, indexed so it answers from the indexes alone.
CREATE INDEX IF NOT EXISTS idx_user_client_permissions_user_id
    ON public.user_client_permissions (user_id) INCLUDE (client_id, role);
CREATE INDEX IF NOT EXISTS idx_agent_deployments_client_id
    ON public.agent_deployments (client_id) INCLUDE (id);

ALTER TABLE public.agent_sms ENABLE ROW LEVEL SECURITY;

-- "(SELECT ...)::uuid[]" makes Postgres evaluate the helper once per statement (an
-- InitPlan), and "deployment_id = ANY (array)" lets the planner use the deployment
-- indexes. One SELECT policy only: two permissive ones are ORed, and an OR of two
-- arrays can be neither an index condition nor hashed (every row a user read was then
-- searched through both: row-level security cost 1.4x - 1.8x).
CREATE POLICY users_view_accessible_sms ON public.agent_sms
    FOR SELECT TO authenticated
    USING (deployment_id = ANY ((SELECT private.accessible_deployment_ids())::uuid[]));

-- service_role has BYPASSRLS on Supabase; these two state its intent explicitly and
-- keep it working should that attribute ever be dropped.
CREATE POLICY service_insert_sms ON public.agent_sms
    FOR INSERT TO service_role
    WITH CHECK (true);

CREATE POLICY service_update_sms ON public.agent_sms
    FOR UPDATE TO service_role
    USING (true)
    WITH CHECK (true);

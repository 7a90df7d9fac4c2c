-- Row-level security without a per-row cost for get_sms_metrics (issue 3).
--
-- 1. One SELECT policy on agent_sms.
--
-- admins_manage_sms was FOR ALL, so it applied to SELECT too, where it adds nothing:
-- the deployments a user administers are among those they may see. But two permissive
-- SELECT policies are ORed, and an OR of two arrays can be neither an index condition
-- nor hashed: every row a dashboard read was searched linearly through both arrays,
-- about 250 ns a row for a user of 120 deployments (RLS cost 1.4x - 1.8x).
--
-- Now it is what the reference schema's policy table says it is for, INSERT, UPDATE and
-- DELETE, as one policy per command with the same rule; SELECT has one policy left, and
-- its array becomes the index condition of every read of agent_sms by deployment.
-- Who may do what is unchanged (tests/db/test_rls.py).
DROP POLICY admins_manage_sms ON public.agent_sms;

CREATE POLICY admins_insert_sms ON public.agent_sms
    FOR INSERT TO authenticated
    WITH CHECK (deployment_id = ANY ((SELECT private.accessible_deployment_ids(admin_only => true))::uuid[]));

CREATE POLICY admins_update_sms ON public.agent_sms
    FOR UPDATE TO authenticated
    USING (deployment_id = ANY ((SELECT private.accessible_deployment_ids(admin_only => true))::uuid[]))
    WITH CHECK (deployment_id = ANY ((SELECT private.accessible_deployment_ids(admin_only => true))::uuid[]));

CREATE POLICY admins_delete_sms ON public.agent_sms
    FOR DELETE TO authenticated
    USING (deployment_id = ANY ((SELECT private.accessible_deployment_ids(admin_only => true))::uuid[]));

-- 2. The metrics functions leave the deployments to that policy when nothing narrows
-- them further.
--
-- private.sms_scope now answers NULL when no filter is given and row-level security
-- applies to the caller: the policy already limits the read to the caller's
-- deployments, as its index condition. A list of the same deployments beside it would
-- be a second array on the same index column, and btree (before PostgreSQL 17) walks
-- every pair of the two arrays' elements: 14,400 pairs per scan for a user of 120
-- deployments (RLS cost 1.5x at the seed's volume). With a filter the list is a few
-- deployments, and so is the walk. service_role bypasses row-level security and keeps
-- the list, the index condition of its reads. The three functions that read the scope
-- are planned for the actual scope on every call, so a NULL scope leaves no condition.
-- The unfiltered read is then bounded by agent_sms's policy alone, no longer also by
-- agent_deployments' own: the same deployments here, and exactly what the caller's
-- plain SELECT on agent_sms returns anyway.
CREATE OR REPLACE FUNCTION private.sms_scope(
    p_client_id uuid, p_deployment_id uuid, p_agent_type_name text
) RETURNS uuid[]
LANGUAGE sql STABLE
SET search_path = ''
AS $$
    SELECT CASE
        WHEN p_client_id IS NULL AND p_deployment_id IS NULL AND p_agent_type_name IS NULL
             AND row_security_active('public.agent_sms') THEN NULL
        ELSE (
            SELECT coalesce(array_agg(d.id), '{}')
            FROM public.agent_deployments AS d
            JOIN public.agent_types AS t ON t.id = d.agent_type_id
            WHERE (p_client_id IS NULL OR d.client_id = p_client_id)
              AND (p_deployment_id IS NULL OR d.id = p_deployment_id)
              AND (p_agent_type_name IS NULL OR t.name = p_agent_type_name))
    END
$$;

-- A NULL scope reads whatever the caller may see, so it is only ever read under
-- row-level security: made under one role and read under another (a SECURITY DEFINER
-- wrapper, say), or by service_role, it would read every client's SMS. Each function
-- that reads a scope checks it first, and fails closed.
CREATE FUNCTION private.check_scope(p_deployments uuid[]) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = ''
AS $$
BEGIN
    IF p_deployments IS NULL AND NOT row_security_active('public.agent_sms') THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = 'an unnarrowed scope is read only under row-level security';
    END IF;
END
$$;

REVOKE ALL ON FUNCTION private.check_scope(uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION private.check_scope(uuid[]) TO authenticated, service_role;

CREATE OR REPLACE FUNCTION private.sms_period_figures(
    p_deployments uuid[], p_start timestamptz, p_end timestamptz
) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = ''
-- Planned for the actual scope and period on every call. A cached generic plan, which
-- plpgsql adopts after five calls, guesses a window of a few thousand rows whatever
-- the period is, and so never compiles the aggregates with JIT on large windows.
SET plan_cache_mode = force_custom_plan
AS $$
BEGIN
    PERFORM private.check_scope(p_deployments);
    RETURN (
        WITH g AS (
            SELECT s.message_type, s.deployment_id, s.workflow_id,
                count(*) AS total,
                count(*) FILTER (WHERE s.status = 'delivered') AS delivered,
                count(*) FILTER (WHERE s.status = 'failed') AS failed,
                count(*) FILTER (WHERE s.status = 'sent') AS sent,
                sum(s.billed_cost) AS cost,
                sum(s.provider_cost) AS provider_cost,
                sum(s.voipia_margin) AS margin,
                sum(s.character_count) AS characters,
                min(s.character_count) AS min_characters,
                max(s.character_count) AS max_characters,
                count(s.call_id) AS linked,
                -- An exact interval sum, converted once, rather than a numeric per row.
                sum(s.delivered_at - s.sent_at) FILTER (WHERE s.status = 'delivered')
                    AS delivery_time,
                count(s.delivered_at) FILTER (WHERE s.status = 'delivered') AS timed
            FROM public.agent_sms AS s
            WHERE (p_deployments IS NULL OR s.deployment_id = ANY (p_deployments))
              AND s.sent_at >= p_start
              AND s.sent_at < p_end
            GROUP BY s.message_type, s.deployment_id, s.workflow_id
        ), t AS (
            SELECT sum(g.total) AS total, sum(g.delivered) AS delivered,
                sum(g.failed) AS failed, sum(g.sent) AS sent, sum(g.cost) AS cost,
                sum(g.provider_cost) AS provider_cost, sum(g.margin) AS margin,
                sum(g.characters) AS characters, min(g.min_characters) AS min_characters,
                max(g.max_characters) AS max_characters, sum(g.linked) AS linked,
                sum(g.delivery_time) AS delivery_time, sum(g.timed) AS timed,
                count(DISTINCT g.deployment_id) AS deployments,
                count(DISTINCT g.workflow_id) AS workflows
            FROM g
        ), by_type AS (
            SELECT g.message_type, sum(g.total) AS total, sum(g.delivered) AS delivered,
                sum(g.cost) AS cost
            FROM g
            GROUP BY g.message_type
        )
        SELECT jsonb_build_object(
            'total_sms', coalesce(t.total, 0),
            'delivered_sms', coalesce(t.delivered, 0),
            'failed_sms', coalesce(t.failed, 0),
            'sent_sms', coalesce(t.sent, 0),
            'delivery_rate', private.percentage(t.delivered, t.total),
            'failure_rate', private.percentage(t.failed, t.total),
            'total_cost', round(coalesce(t.cost, 0), 2),
            'total_provider_cost', round(coalesce(t.provider_cost, 0), 2),
            'total_margin', round(coalesce(t.margin, 0), 2),
            'margin_percentage', private.percentage(t.margin, t.cost),
            'avg_cost_per_sms', round(t.cost / t.total, 2),
            -- The very division avg() makes: the sum over the count, both numeric.
            'avg_characters', round(t.characters / t.total),
            'min_characters', t.min_characters,
            'max_characters', t.max_characters,
            -- reverse() is one-to-one, so this counts the distinct numbers exactly. Numbers
            -- share their leading digits (country and operator) and differ in the last
            -- ones: reversed, the sort tells them apart by the first 8 bytes (its
            -- abbreviated keys) and runs about twice as fast; COLLATE "C" compares bytes,
            -- which is distinctness under any deterministic collation.
            'unique_recipients', (
                SELECT count(DISTINCT reverse(s.phone_number) COLLATE "C")
                FROM public.agent_sms AS s
                WHERE (p_deployments IS NULL OR s.deployment_id = ANY (p_deployments))
                  AND s.sent_at >= p_start
                  AND s.sent_at < p_end),
            'active_deployments', t.deployments,
            'active_workflows', t.workflows,
            'sms_linked_to_calls', coalesce(t.linked, 0),
            'call_linkage_rate', private.percentage(t.linked, t.total),
            'avg_delivery_time_seconds',
                round(EXTRACT(EPOCH FROM t.delivery_time) / nullif(t.timed, 0), 2),
            'by_message_type', (
                SELECT coalesce(jsonb_agg(jsonb_build_object(
                    'message_type', b.message_type,
                    'count', b.total,
                    'delivered', b.delivered,
                    'delivery_rate', private.percentage(b.delivered, b.total),
                    'cost', round(coalesce(b.cost, 0), 2)
                ) ORDER BY b.total DESC, b.message_type), '[]'::jsonb)
                FROM by_type AS b)
        )
        FROM t
    );
END
$$;

CREATE OR REPLACE FUNCTION public.get_sms_timeseries(
    p_start_date timestamptz,
    p_end_date timestamptz,
    p_bucket text DEFAULT 'day',
    p_client_id uuid DEFAULT NULL,
    p_deployment_id uuid DEFAULT NULL,
    p_agent_type_name text DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = ''
-- Planned for the actual scope, so that an unnarrowed scope (NULL) leaves no condition.
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v_deployments uuid[];
    v_step interval;
BEGIN
    PERFORM private.check_period(p_start_date, p_end_date);
    IF p_bucket NOT IN ('day', 'week') THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_bucket',
            MESSAGE = 'the bucket must be day or week';
    END IF;
    v_step := ('1 ' || p_bucket)::interval;
    v_deployments := private.sms_scope(p_client_id, p_deployment_id, p_agent_type_name);
    PERFORM private.check_scope(v_deployments);
    RETURN (
        SELECT coalesce(jsonb_agg(jsonb_build_object(
            'bucket_start', b.bucket_start,
            'total_sms', coalesce(f.total, 0),
            'delivered_sms', coalesce(f.delivered, 0),
            'failed_sms', coalesce(f.failed, 0),
            'sent_sms', coalesce(f.sent, 0),
            'delivery_rate', private.percentage(f.delivered, f.total),
            'cost', round(coalesce(f.cost, 0), 2)
        ) ORDER BY b.bucket_start), '[]'::jsonb)
        FROM generate_series(
            date_trunc(p_bucket, p_start_date, 'UTC'), p_end_date - interval '1 microsecond', v_step
        ) AS b(bucket_start)
        LEFT JOIN (
            SELECT date_trunc(p_bucket, s.sent_at, 'UTC') AS bucket_start,
                count(*) AS total,
                count(*) FILTER (WHERE s.status = 'delivered') AS delivered,
                count(*) FILTER (WHERE s.status = 'failed') AS failed,
                count(*) FILTER (WHERE s.status = 'sent') AS sent,
                sum(s.billed_cost) AS cost
            FROM public.agent_sms AS s
            WHERE (v_deployments IS NULL OR s.deployment_id = ANY (v_deployments))
              AND s.sent_at >= p_start_date AND s.sent_at < p_end_date
            GROUP BY 1
        ) AS f USING (bucket_start)
    );
END
$$;

CREATE OR REPLACE FUNCTION public.get_sms_failure_reasons(
    p_start_date timestamptz,
    p_end_date timestamptz,
    p_client_id uuid DEFAULT NULL,
    p_deployment_id uuid DEFAULT NULL,
    p_agent_type_name text DEFAULT NULL,
    p_limit integer DEFAULT 5
) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = ''
-- Planned for the actual scope, so that an unnarrowed scope (NULL) leaves no condition.
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v_deployments uuid[];
BEGIN
    PERFORM private.check_period(p_start_date, p_end_date);
    v_deployments := private.sms_scope(p_client_id, p_deployment_id, p_agent_type_name);
    PERFORM private.check_scope(v_deployments);
    RETURN (
        SELECT coalesce(jsonb_agg(jsonb_build_object('failure_reason', r.reason, 'count', r.count)
                                  ORDER BY r.count DESC, r.reason), '[]'::jsonb)
        FROM (
            SELECT coalesce(s.failure_reason, 'Unknown') AS reason, count(*) AS count
            FROM public.agent_sms AS s
            WHERE (v_deployments IS NULL OR s.deployment_id = ANY (v_deployments))
              AND s.status = 'failed'
              AND s.sent_at >= p_start_date AND s.sent_at < p_end_date
            GROUP BY 1
            ORDER BY 2 DESC, 1
            LIMIT greatest(p_limit, 0)
        ) AS r
    );
END
$$;

-- 3. The policy no longer keeps a user's reads from going parallel. A function with no
-- label is PARALLEL UNSAFE, and one such call anywhere in a query, even in an InitPlan
-- evaluated once, makes the whole query serial: a user's 30-day metrics at 100x ran on
-- one core where service_role's used two (1.5 s against 1.3 s). RESTRICTED lets the
-- query go parallel while this function still runs in the leader alone.
ALTER FUNCTION private.accessible_deployment_ids(boolean) PARALLEL RESTRICTED;

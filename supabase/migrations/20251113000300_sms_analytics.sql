-- Analytics: the seed's two views and get_sms_metrics, and for the dashboard's charts
-- get_sms_timeseries and get_sms_failure_reasons. All run with the caller's rights, so
-- row-level security decides what each user sees.

CREATE VIEW public.v_agent_sms_enriched WITH (security_invoker = true) AS
SELECT
    s.*,
    d.name AS deployment_name,
    d.slug AS deployment_slug,
    d.client_id,
    c.name AS client_name,
    d.agent_type_id,
    t.name AS agent_type_name,
    t.display_name AS agent_display_name,
    s.status = 'delivered' AS is_delivered,
    s.status = 'failed' AS is_failed,
    EXTRACT(EPOCH FROM s.delivered_at - s.sent_at) AS delivery_time_seconds
FROM public.agent_sms AS s
JOIN public.agent_deployments AS d ON d.id = s.deployment_id
JOIN public.clients AS c ON c.id = d.client_id
JOIN public.agent_types AS t ON t.id = d.agent_type_id;

COMMENT ON VIEW public.v_agent_sms_enriched IS
    'agent_sms with its deployment, client and agent context; respects the caller''s RLS.';

CREATE VIEW public.v_agent_communications WITH (security_invoker = true) AS
SELECT
    'call'::text AS communication_type,
    c.id,
    c.deployment_id,
    c.phone_number,
    c.first_name,
    c.last_name,
    c.started_at AS "timestamp",
    c.outcome AS result,
    c.total_cost AS cost,
    c.duration_seconds,
    NULL::text AS message_content,
    NULL::text AS message_type,
    NULL::text AS provider_message_sid,
    c.metadata
FROM public.agent_calls AS c
UNION ALL
SELECT
    'sms'::text,
    s.id,
    s.deployment_id,
    s.phone_number,
    s.first_name,
    s.last_name,
    s.sent_at,
    s.status,
    s.billed_cost,
    NULL::integer,
    s.message_content,
    s.message_type,
    s.provider_message_sid,
    s.metadata
FROM public.agent_sms AS s;

COMMENT ON VIEW public.v_agent_communications IS
    'Every agent touchpoint, calls and SMS, one row each; respects the caller''s RLS.';

-- A percentage of a base, rounded as the dashboard shows it; NULL over a zero base.
CREATE FUNCTION private.percentage(part numeric, base numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT round(100 * part / nullif(base, 0), 2) $$;

-- The deployments a query covers: the filters, within what the caller may see (the
-- deployments table's own row-level security applies). Written once for every RPC.
--
-- With no filter, under row-level security, it answers NULL: agent_sms's read policy
-- already limits the read to the caller's deployments, as its index condition, and a
-- list of the same deployments beside it would be a second array on the same index
-- column, which a B-tree (before PostgreSQL 17) walks pair by pair (14,400 pairs per
-- scan for a user of 120 deployments). service_role bypasses row-level security and
-- keeps the list, the index condition of its reads.
CREATE FUNCTION private.sms_scope(
    p_client_id uuid, p_deployment_id uuid, p_agent_type_name text
) RETURNS uuid[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
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
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_deployments IS NULL AND NOT row_security_active('public.agent_sms') THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = 'an unnarrowed scope is read only under row-level security';
    END IF;
END
$$;

-- What a period may be, for every RPC however it is called (Supabase exposes them all
-- to any signed-in user): finite, ending after it starts, at most 366 days long, so
-- that a series has at most 367 buckets.
CREATE FUNCTION private.check_period(p_start timestamptz, p_end timestamptz)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_start IS NULL OR NOT isfinite(p_start) THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_start_date',
            MESSAGE = 'start must be a date and time';
    END IF;
    IF p_end IS NULL OR NOT isfinite(p_end) THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_end_date',
            MESSAGE = 'end must be a date and time';
    END IF;
    IF p_end <= p_start THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_end_date',
            MESSAGE = 'end must be after start';
    END IF;
    IF p_end - p_start > interval '366 days' THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_end_date',
            MESSAGE = 'the period may cover at most 366 days';
    END IF;
END
$$;

-- What the KPIs read of agent_sms, in the order they read it: the unsealed SMS of some
-- deployments over a period, and the recipients of a period none of whose SMS have been
-- archived. Covering every column the figures use lets the period be
-- read from this index alone (an index-only scan, once VACUUM has marked the pages
-- all-visible) rather than from the wide rows, and per deployment it is a single
-- contiguous range.
CREATE INDEX idx_agent_sms_metrics ON public.agent_sms (deployment_id, sent_at)
    INCLUDE (status, message_type, failure_reason, character_count, billed_cost,
             provider_cost, voipia_margin, delivered_at, call_id, phone_number);

-- The figures of two adjacent periods, [p_previous_start, p_start) and [p_start, p_end)
-- (whole hours), over the SMS of the given deployments the caller may see, each with its
-- breakdown by message type, as {"previous": ..., "current": ...}: sums from the
-- aggregates and the unsealed rows, read once for both (private.sms_kpi_parts), distinct
-- counts of workflows and recipients from the sets of hours or the rows
-- (20261206000090_kpi_aggregates.sql).
CREATE FUNCTION private.sms_period_figures(
    p_deployments uuid[], p_previous_start timestamptz, p_start timestamptz, p_end timestamptz
) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (
        WITH g AS (
            SELECT * FROM private.sms_kpi_parts(p_deployments, p_previous_start, p_end, false,
                                                p_start)
        ), recipients AS (
            SELECT * FROM private.sms_unique_recipients(p_deployments, p_previous_start, p_start,
                                                        p_end, (SELECT sum(g.sms) FROM g))
        ), periods AS (
            SELECT p.name, p.starts_at, p.ends_at, p.recipients,
                private.sms_active_workflows(p_deployments, p.starts_at, p.ends_at) AS workflows
            FROM recipients AS r,
                LATERAL (VALUES ('previous', p_previous_start, p_start, r.previous),
                                ('current', p_start, p_end, r.current))
                    AS p(name, starts_at, ends_at, recipients)
        ), t AS (
            SELECT g.starts_at, sum(g.sms) AS total,
                coalesce(sum(g.sms) FILTER (WHERE g.status = 'delivered'), 0) AS delivered,
                coalesce(sum(g.sms) FILTER (WHERE g.status = 'failed'), 0) AS failed,
                coalesce(sum(g.sms) FILTER (WHERE g.status = 'sent'), 0) AS sent,
                CASE WHEN sum(g.billed_count) > 0 THEN sum(g.billed) END AS cost,
                sum(g.provider_cost) AS provider_cost, sum(g.margin) AS margin,
                sum(g.characters) AS characters, min(g.min_characters) AS min_characters,
                max(g.max_characters) AS max_characters, sum(g.linked) AS linked,
                sum(g.delivery_time) AS delivery_time, sum(g.timed) AS timed,
                count(DISTINCT g.deployment_id) AS deployments
            FROM g
            GROUP BY g.starts_at
        ), by_type AS (
            SELECT g.starts_at, g.message_type, sum(g.sms) AS total,
                coalesce(sum(g.sms) FILTER (WHERE g.status = 'delivered'), 0) AS delivered,
                sum(g.billed) AS cost
            FROM g
            GROUP BY g.starts_at, g.message_type
        )
        SELECT jsonb_object_agg(p.name, jsonb_build_object(
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
            'avg_characters', round(t.characters::numeric / t.total),
            'min_characters', t.min_characters,
            'max_characters', t.max_characters,
            'unique_recipients', p.recipients,
            'active_deployments', coalesce(t.deployments, 0),
            'active_workflows', p.workflows,
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
                FROM by_type AS b WHERE b.starts_at = p.starts_at)
        ))
        FROM periods AS p
        LEFT JOIN t ON t.starts_at = p.starts_at
    );
END
$$;

-- The seed's KPI contract. Periods are half-open, [start, end), widened to the whole
-- UTC hours they touch (the aggregates' finest bucket; the answer's "period" says which);
-- the previous period is the window of the same length before it. Runs with the caller's
-- rights: a user who names another client's id gets empty figures, not that client's.
CREATE FUNCTION public.get_sms_metrics(
    p_start_date timestamptz,
    p_end_date timestamptz,
    p_client_id uuid DEFAULT NULL,
    p_deployment_id uuid DEFAULT NULL,
    p_agent_type_name text DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_deployments uuid[];
    v_period record;
    v_previous_start timestamptz;
    v_figures jsonb;
    v_current jsonb;
    v_previous jsonb;
BEGIN
    PERFORM private.check_period(p_start_date, p_end_date);
    v_period := private.whole_hours(p_start_date, p_end_date);
    v_previous_start := v_period.starts_at - (v_period.ends_at - v_period.starts_at);
    v_deployments := private.sms_scope(p_client_id, p_deployment_id, p_agent_type_name);

    v_figures := private.sms_period_figures(v_deployments, v_previous_start, v_period.starts_at,
                                            v_period.ends_at);
    v_current := v_figures -> 'current';
    v_previous := v_figures -> 'previous';

    RETURN jsonb_build_object(
        'current_period', v_current,
        'previous_period', jsonb_build_object(
            'total_sms', v_previous -> 'total_sms',
            'delivered_sms', v_previous -> 'delivered_sms',
            'failed_sms', v_previous -> 'failed_sms',
            'delivery_rate', v_previous -> 'delivery_rate',
            'failure_rate', v_previous -> 'failure_rate',
            'total_cost', v_previous -> 'total_cost',
            'total_margin', v_previous -> 'total_margin',
            'avg_cost_per_sms', v_previous -> 'avg_cost_per_sms',
            'avg_characters', v_previous -> 'avg_characters',
            'unique_recipients', v_previous -> 'unique_recipients'
        ),
        'comparison', jsonb_build_object(
            'total_sms_change',
                (v_current ->> 'total_sms')::bigint - (v_previous ->> 'total_sms')::bigint,
            'total_sms_change_pct', private.percentage(
                (v_current ->> 'total_sms')::numeric - (v_previous ->> 'total_sms')::numeric,
                (v_previous ->> 'total_sms')::numeric),
            'delivered_sms_change',
                (v_current ->> 'delivered_sms')::bigint - (v_previous ->> 'delivered_sms')::bigint,
            'cost_change',
                (v_current ->> 'total_cost')::numeric - (v_previous ->> 'total_cost')::numeric,
            'cost_change_pct', private.percentage(
                (v_current ->> 'total_cost')::numeric - (v_previous ->> 'total_cost')::numeric,
                (v_previous ->> 'total_cost')::numeric)
        ),
        -- Beyond the seed's keys, beside them: the currency of every amount, and what a
        -- dashboard compares that the seed's previous period leaves out.
        'currency', private.billing_currency(),
        'period', jsonb_build_object(
            'start', v_period.starts_at, 'end', v_period.ends_at,
            'previous_start', v_previous_start),
        'previous_period_more', jsonb_build_object(
            'total_provider_cost', v_previous -> 'total_provider_cost',
            'avg_delivery_time_seconds', v_previous -> 'avg_delivery_time_seconds',
            'margin_percentage', v_previous -> 'margin_percentage'
        )
    );
END
$$;

-- What a dashboard may offer as filters: the clients, deployments and agent types the
-- caller's row-level security lets it read (SECURITY INVOKER).
CREATE FUNCTION public.get_sms_filters() RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_deployments uuid[];  -- NULL: every deployment (the service key, past RLS)
BEGIN
    IF row_security_active('public.agent_sms') THEN
        v_deployments := private.accessible_deployment_ids(false);
    END IF;
    RETURN (
    WITH visible AS (
        SELECT d.id, d.name, d.client_id, t.name AS agent_type
        FROM public.agent_deployments AS d
        JOIN public.agent_types AS t ON t.id = d.agent_type_id
        WHERE v_deployments IS NULL OR d.id = ANY (v_deployments)
    )
    SELECT jsonb_build_object(
        'clients', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', c.id, 'name', c.name)
                                              ORDER BY c.name, c.id), '[]')
                    FROM public.clients AS c WHERE c.id IN (SELECT client_id FROM visible)),
        'deployments', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                'id', v.id, 'name', v.name, 'client_id', v.client_id,
                                'agent_type', v.agent_type) ORDER BY v.name, v.id), '[]')
                        FROM visible AS v),
        'agent_types', (SELECT coalesce(jsonb_agg(DISTINCT v.agent_type), '[]') FROM visible AS v))
    );
END
$$;

COMMENT ON FUNCTION public.get_sms_filters() IS
    'The clients, deployments and agent types the caller may filter the KPIs by.';

COMMENT ON FUNCTION public.get_sms_metrics(timestamptz, timestamptz, uuid, uuid, text) IS
    'SMS KPIs for [p_start_date, p_end_date) and the period of the same length before it.';

-- Beyond the seed, for the dashboard's charts: per day or week (UTC), every bucket of
-- [p_start_date, p_end_date) whether it has SMS or not, oldest first.
CREATE FUNCTION public.get_sms_timeseries(
    p_start_date timestamptz,
    p_end_date timestamptz,
    p_bucket text DEFAULT 'day',
    p_client_id uuid DEFAULT NULL,
    p_deployment_id uuid DEFAULT NULL,
    p_agent_type_name text DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
-- Planned for the actual scope, so that an unnarrowed scope (NULL) leaves no condition.
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v_deployments uuid[];
    v_period record;
BEGIN
    PERFORM private.check_period(p_start_date, p_end_date);
    IF p_bucket NOT IN ('day', 'week') THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_bucket',
            MESSAGE = 'the bucket must be day or week';
    END IF;
    v_period := private.whole_hours(p_start_date, p_end_date);
    v_deployments := private.sms_scope(p_client_id, p_deployment_id, p_agent_type_name);
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
            date_trunc(p_bucket, v_period.starts_at, 'UTC'),
            v_period.ends_at - interval '1 microsecond', ('1 ' || p_bucket)::interval
        ) AS b(bucket_start)
        LEFT JOIN (
            SELECT date_trunc(p_bucket, p.starts_at, 'UTC') AS bucket_start,
                sum(p.sms) AS total,
                coalesce(sum(p.sms) FILTER (WHERE p.status = 'delivered'), 0) AS delivered,
                coalesce(sum(p.sms) FILTER (WHERE p.status = 'failed'), 0) AS failed,
                coalesce(sum(p.sms) FILTER (WHERE p.status = 'sent'), 0) AS sent,
                sum(p.billed) AS cost
            FROM private.sms_kpi_parts(v_deployments, v_period.starts_at, v_period.ends_at,
                                       true) AS p
            GROUP BY 1
        ) AS f USING (bucket_start)
    );
END
$$;

-- The most frequent failure reasons of the period, most frequent first.
CREATE FUNCTION public.get_sms_failure_reasons(
    p_start_date timestamptz,
    p_end_date timestamptz,
    p_client_id uuid DEFAULT NULL,
    p_deployment_id uuid DEFAULT NULL,
    p_agent_type_name text DEFAULT NULL,
    p_limit integer DEFAULT 5
) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
-- Planned for the actual scope, so that an unnarrowed scope (NULL) leaves no condition.
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v_deployments uuid[];
    v_period record;
BEGIN
    PERFORM private.check_period(p_start_date, p_end_date);
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_limit',
            MESSAGE = 'the number of failure reasons must be from 1 to 100';
    END IF;
    v_period := private.whole_hours(p_start_date, p_end_date);
    v_deployments := private.sms_scope(p_client_id, p_deployment_id, p_agent_type_name);
    RETURN (
        SELECT coalesce(jsonb_agg(jsonb_build_object('failure_reason', r.reason, 'count', r.count)
                                  ORDER BY r.count DESC, r.reason), '[]'::jsonb)
        FROM (
            SELECT coalesce(p.failure_reason, 'Unknown') AS reason, sum(p.sms) AS count
            FROM private.sms_kpi_parts(v_deployments, v_period.starts_at, v_period.ends_at,
                                       false) AS p
            WHERE p.status = 'failed'
            GROUP BY 1
            ORDER BY 2 DESC, 1
            LIMIT p_limit
        ) AS r
    );
END
$$;

-- Analytics: the two views and get_sms_metrics, as the reference schema defines them.
-- All three run with the caller's rights, so row-level security decides what each
-- user sees; anon is granted none of them.

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

REVOKE ALL ON public.v_agent_sms_enriched, public.v_agent_communications FROM PUBLIC, anon;
GRANT SELECT ON public.v_agent_sms_enriched, public.v_agent_communications
    TO authenticated, service_role;

-- A percentage of a base, rounded as the dashboard shows it; NULL over a zero base.
CREATE FUNCTION private.percentage(part numeric, base numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT round(100 * part / nullif(base, 0), 2) $$;

-- The deployments a query covers: the filters, within what the caller may see (the
-- deployments table's own row-level security applies). Written once for every RPC.
CREATE FUNCTION private.sms_scope(
    p_client_id uuid, p_deployment_id uuid, p_agent_type_name text
) RETURNS uuid[]
LANGUAGE sql STABLE
SET search_path = ''
AS $$
    SELECT coalesce(array_agg(d.id), '{}')
    FROM public.agent_deployments AS d
    JOIN public.agent_types AS t ON t.id = d.agent_type_id
    WHERE (p_client_id IS NULL OR d.client_id = p_client_id)
      AND (p_deployment_id IS NULL OR d.id = p_deployment_id)
      AND (p_agent_type_name IS NULL OR t.name = p_agent_type_name)
$$;

-- Refuses a period that does not end after it starts.
CREATE FUNCTION private.check_period(p_start timestamptz, p_end timestamptz) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_start IS NULL OR p_end IS NULL OR p_end <= p_start THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_end_date',
            MESSAGE = 'the period must end after it starts';
    END IF;
END
$$;

-- The figures of one period, over the SMS of the given deployments the caller may see.
CREATE FUNCTION private.sms_period_figures(
    p_deployments uuid[], p_start timestamptz, p_end timestamptz
) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = ''
AS $$
    SELECT jsonb_build_object(
        'total_sms', count(*),
        'delivered_sms', count(*) FILTER (WHERE s.status = 'delivered'),
        'failed_sms', count(*) FILTER (WHERE s.status = 'failed'),
        'sent_sms', count(*) FILTER (WHERE s.status = 'sent'),
        'delivery_rate', private.percentage(count(*) FILTER (WHERE s.status = 'delivered'), count(*)),
        'failure_rate', private.percentage(count(*) FILTER (WHERE s.status = 'failed'), count(*)),
        'total_cost', round(coalesce(sum(s.billed_cost), 0), 2),
        'total_provider_cost', round(coalesce(sum(s.provider_cost), 0), 2),
        'total_margin', round(coalesce(sum(s.voipia_margin), 0), 2),
        'margin_percentage', private.percentage(sum(s.voipia_margin), sum(s.billed_cost)),
        'avg_cost_per_sms', round(sum(s.billed_cost) / nullif(count(*), 0), 2),
        'avg_characters', round(avg(s.character_count)),
        'min_characters', min(s.character_count),
        'max_characters', max(s.character_count),
        -- COLLATE "C": distinctness is byte equality under any deterministic collation,
        -- and comparing bytes sorts several times faster than the locale's rules.
        'unique_recipients', count(DISTINCT s.phone_number COLLATE "C"),
        'active_deployments', count(DISTINCT s.deployment_id),
        'active_workflows', count(DISTINCT s.workflow_id COLLATE "C"),
        'sms_linked_to_calls', count(s.call_id),
        'call_linkage_rate', private.percentage(count(s.call_id), count(*)),
        -- An exact interval sum, converted once, rather than a numeric per row.
        'avg_delivery_time_seconds', round(
            EXTRACT(EPOCH FROM sum(s.delivered_at - s.sent_at) FILTER (WHERE s.status = 'delivered'))
            / nullif(count(s.delivered_at) FILTER (WHERE s.status = 'delivered'), 0),
            2
        )
    )
    FROM public.agent_sms AS s
    WHERE s.deployment_id = ANY (p_deployments)
      AND s.sent_at >= p_start
      AND s.sent_at < p_end
$$;

CREATE FUNCTION private.sms_by_message_type(
    p_deployments uuid[], p_start timestamptz, p_end timestamptz
) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = ''
AS $$
    SELECT coalesce(jsonb_agg(t.figures ORDER BY t.count DESC, t.message_type), '[]'::jsonb)
    FROM (
        SELECT s.message_type, count(*) AS count, jsonb_build_object(
            'message_type', s.message_type,
            'count', count(*),
            'delivered', count(*) FILTER (WHERE s.status = 'delivered'),
            'delivery_rate',
                private.percentage(count(*) FILTER (WHERE s.status = 'delivered'), count(*)),
            'cost', round(coalesce(sum(s.billed_cost), 0), 2)
        ) AS figures
        FROM public.agent_sms AS s
        WHERE s.deployment_id = ANY (p_deployments)
          AND s.sent_at >= p_start
          AND s.sent_at < p_end
        GROUP BY s.message_type
    ) AS t
$$;

REVOKE ALL ON FUNCTION private.percentage(numeric, numeric),
    private.sms_scope(uuid, uuid, text),
    private.check_period(timestamptz, timestamptz),
    private.sms_period_figures(uuid[], timestamptz, timestamptz),
    private.sms_by_message_type(uuid[], timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION private.percentage(numeric, numeric),
    private.sms_scope(uuid, uuid, text),
    private.check_period(timestamptz, timestamptz),
    private.sms_period_figures(uuid[], timestamptz, timestamptz),
    private.sms_by_message_type(uuid[], timestamptz, timestamptz)
    TO authenticated, service_role;

-- The seed's KPI contract. Periods are half-open, [start, end); the previous period
-- is the window of the same length ending at p_start_date. Runs with the caller's
-- rights: a user who names another client's id gets empty figures, not that client's.
CREATE FUNCTION public.get_sms_metrics(
    p_start_date timestamptz,
    p_end_date timestamptz,
    p_client_id uuid DEFAULT NULL,
    p_deployment_id uuid DEFAULT NULL,
    p_agent_type_name text DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = ''
AS $$
DECLARE
    v_deployments uuid[];
    v_previous_start timestamptz := p_start_date - (p_end_date - p_start_date);
    v_current jsonb;
    v_previous jsonb;
BEGIN
    PERFORM private.check_period(p_start_date, p_end_date);
    v_deployments := private.sms_scope(p_client_id, p_deployment_id, p_agent_type_name);

    v_current := private.sms_period_figures(v_deployments, p_start_date, p_end_date)
        || jsonb_build_object(
            'by_message_type',
            private.sms_by_message_type(v_deployments, p_start_date, p_end_date));
    v_previous := private.sms_period_figures(v_deployments, v_previous_start, p_start_date);

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
        )
    );
END
$$;

COMMENT ON FUNCTION public.get_sms_metrics(timestamptz, timestamptz, uuid, uuid, text) IS
    'SMS KPIs for [p_start_date, p_end_date) and the period of the same length before it.';

REVOKE ALL ON FUNCTION public.get_sms_metrics(timestamptz, timestamptz, uuid, uuid, text)
    FROM PUBLIC, anon;
GRANT EXECUTE ON FUNCTION public.get_sms_metrics(timestamptz, timestamptz, uuid, uuid, text)
    TO authenticated, service_role;

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
SET search_path = ''
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
            WHERE s.deployment_id = ANY (v_deployments)
              AND s.sent_at >= p_start_date AND s.sent_at < p_end_date
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
SET search_path = ''
AS $$
BEGIN
    PERFORM private.check_period(p_start_date, p_end_date);
    RETURN (
        SELECT coalesce(jsonb_agg(jsonb_build_object('failure_reason', r.reason, 'count', r.count)
                                  ORDER BY r.count DESC, r.reason), '[]'::jsonb)
        FROM (
            SELECT coalesce(s.failure_reason, 'Unknown') AS reason, count(*) AS count
            FROM public.agent_sms AS s
            WHERE s.deployment_id = ANY ((
                    SELECT private.sms_scope(p_client_id, p_deployment_id, p_agent_type_name)
                  )::uuid[])
              AND s.status = 'failed'
              AND s.sent_at >= p_start_date AND s.sent_at < p_end_date
            GROUP BY 1
            ORDER BY 2 DESC, 1
            LIMIT greatest(p_limit, 0)
        ) AS r
    );
END
$$;

REVOKE ALL ON FUNCTION
    public.get_sms_timeseries(timestamptz, timestamptz, text, uuid, uuid, text),
    public.get_sms_failure_reasons(timestamptz, timestamptz, uuid, uuid, text, integer)
    FROM PUBLIC, anon;
GRANT EXECUTE ON FUNCTION
    public.get_sms_timeseries(timestamptz, timestamptz, text, uuid, uuid, text),
    public.get_sms_failure_reasons(timestamptz, timestamptz, uuid, uuid, text, integer)
    TO authenticated, service_role;

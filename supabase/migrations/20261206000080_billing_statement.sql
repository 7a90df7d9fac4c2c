-- A client's statement for a month: one line per deployment and message type, with its
-- counts and amounts in the billing currency. Months are calendar months of a billing
-- time zone (Europe/Paris by default), restricted to zones whose month boundaries fall
-- on whole UTC hours, so that the hourly aggregates serve a statement exactly, archived
-- months included (private.sms_kpi_parts).
--
-- Rounding: each line's provider cost and billed amount are rounded to cents (half away
-- from zero) and its margin is their difference, so that the columns add up; the totals
-- add the rounded lines, so that the lines add up to the total an accountant sees. A line equals get_sms_metrics' by_message_type cost for that deployment and
-- month, which rounds the same sum the same way.
--
-- Under row-level security (SECURITY INVOKER): a viewer or an admin of the client reads
-- its statement, the service key every client's; anyone else gets empty lines.
CREATE FUNCTION public.get_sms_statement(
    p_client_id uuid, p_month date, p_time_zone text DEFAULT 'Europe/Paris'
) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_month date := date_trunc('month', p_month)::date;
    v_start timestamptz;
    v_end timestamptz;
BEGIN
    IF p_client_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'client_id',
            MESSAGE = 'a statement is for one client';
    END IF;
    IF p_month IS NULL OR NOT (p_month BETWEEN date '2000-01-01' AND date '2099-12-01') THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'month',
            MESSAGE = 'the month must be between 2000-01 and 2099-12';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_timezone_names WHERE name = p_time_zone) THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'time_zone',
            MESSAGE = 'the time zone must be an IANA name, such as Europe/Paris';
    END IF;
    v_start := v_month::timestamp AT TIME ZONE p_time_zone;
    v_end := (v_month + interval '1 month')::timestamp AT TIME ZONE p_time_zone;
    IF date_trunc('hour', v_start, 'UTC') <> v_start OR date_trunc('hour', v_end, 'UTC') <> v_end THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'time_zone',
            MESSAGE = 'the time zone''s months must begin on a whole UTC hour';
    END IF;

    RETURN (
        WITH lines AS (
            SELECT p.deployment_id, d.name AS deployment_name, p.message_type,
                sum(p.sms) AS sms,
                coalesce(sum(p.sms) FILTER (WHERE p.status = 'delivered'), 0) AS delivered,
                coalesce(sum(p.sms) FILTER (WHERE p.status = 'failed'), 0) AS failed,
                sum(p.unpriced) AS unpriced,
                round(sum(p.provider_cost), 2) AS provider_cost,
                round(sum(p.billed), 2) AS billed
            FROM private.sms_kpi_parts(private.sms_scope(p_client_id, NULL, NULL),
                                       v_start, v_end, false) AS p
            JOIN public.agent_deployments AS d ON d.id = p.deployment_id
            GROUP BY p.deployment_id, d.name, p.message_type
        )
        , shown AS (
            -- The margin is what the rounded amounts leave, so that each line's columns
            -- add up; an unpriced SMS's margin waits with it (billed_cost is NULL).
            SELECT l.*, l.billed - l.provider_cost AS margin FROM lines AS l
        )
        SELECT jsonb_build_object(
            'client_id', p_client_id,
            'month', to_char(v_month, 'YYYY-MM'),
            'time_zone', p_time_zone,
            'start', v_start,
            'end', v_end,
            'currency', private.billing_currency(),
            'lines', coalesce(jsonb_agg(to_jsonb(l) ORDER BY l.deployment_name, l.deployment_id,
                                        l.message_type), '[]'::jsonb),
            'totals', jsonb_build_object(
                'sms', coalesce(sum(l.sms), 0),
                'delivered', coalesce(sum(l.delivered), 0),
                'failed', coalesce(sum(l.failed), 0),
                'unpriced', coalesce(sum(l.unpriced), 0),
                'provider_cost', coalesce(sum(l.provider_cost), 0),
                'margin', coalesce(sum(l.margin), 0),
                'billed', coalesce(sum(l.billed), 0)))
        FROM shown AS l
    );
END
$$;

COMMENT ON FUNCTION public.get_sms_statement(uuid, date, text) IS
    'One client''s month in the billing currency: a line per deployment and message type.';

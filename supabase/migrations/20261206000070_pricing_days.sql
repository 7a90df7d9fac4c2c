-- Pricing by Twilio's Messages list (issue 19): reconcile prices final SMS a day (UTC)
-- at a time, listing that day's messages of each account (a page of up to 1,000 a
-- request) instead of asking for each SMS.

-- Claim the final SMS (delivered or failed) sent within p_max_age that have no provider
-- price at all, neither an amount nor a cost (an SMS whose amount waits for an exchange
-- rate has its price: price_pending_sms converts it, Twilio is not asked again), at most
-- p_limit, those asked least recently first. Grouped by the day (UTC) they were sent:
--   {"YYYY-MM-DD": {"new": [SID, ...], "again": [SID, ...], "sms": N}, ...}
-- "new": never asked (or given back); "again": asked before, Twilio had no price for
-- them yet; "sms": how many SMS that day holds in all, priced or not (how many pages
-- listing it would take). SIDs newest first, as Twilio lists them.
--
-- Twilio publishes a price some time after the final status (up to a day), and never
-- for some failures. So an SMS already asked about is due again only once as long has
-- passed since it was asked as had passed between its final status and that asking:
-- asked 15 minutes after its final status, again after 15 more, then at 1 h, 2 h,
-- 4 h...: about ten times within a week, not every run. Claiming stamps them (in
-- reconcile's checks), so runs that overlap take different SMS; a run gives back what
-- it did not get to (release_sms_to_reconcile), which then comes first. At most 50,000
-- SMS a run, sent within 400 days.
CREATE FUNCTION public.claim_sms_to_price(p_max_age interval, p_limit integer)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_days jsonb;
BEGIN
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 50000 THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_limit',
            MESSAGE = 'a run claims from 1 to 50000 SMS to price';
    END IF;
    IF p_max_age IS NULL OR p_max_age > interval '400 days' OR p_max_age < interval '0' THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_max_age',
            MESSAGE = 'reconcile looks at SMS sent from 0 to 400 days ago';
    END IF;
    PERFORM pg_advisory_xact_lock(private.pending_events_lock_key() + 1);
    WITH due AS (
        SELECT s.provider_message_sid AS sid, s.sent_at, r.checked_at IS NULL AS new,
               (s.sent_at AT TIME ZONE 'UTC')::date AS day
        FROM public.agent_sms AS s
        LEFT JOIN private.sms_reconcile_checks AS r USING (provider_message_sid)
        WHERE s.provider = 'twilio'
          AND s.provider_message_sid IS NOT NULL
          AND s.sent_at > now() - p_max_age
          AND s.status IN ('delivered', 'failed')
          AND s.provider_amount IS NULL AND s.provider_cost IS NULL
          AND (r.checked_at IS NULL
               OR now() - r.checked_at
                  >= r.checked_at - coalesce(s.delivered_at, s.failed_at, s.sent_at))
        ORDER BY r.checked_at NULLS FIRST, s.sent_at
        LIMIT p_limit
    ), stamped AS (
        INSERT INTO private.sms_reconcile_checks (provider_message_sid, checked_at)
        SELECT sid, now() FROM due
        ON CONFLICT (provider_message_sid) DO UPDATE SET checked_at = excluded.checked_at
    )
    SELECT coalesce(jsonb_object_agg(to_char(d.day, 'YYYY-MM-DD'), jsonb_build_object(
               'new', d.new, 'again', d.again,
               'sms', (SELECT count(*) FROM public.agent_sms AS a
                       WHERE a.sent_at >= d.day::timestamp AT TIME ZONE 'UTC'
                         AND a.sent_at < (d.day + 1)::timestamp AT TIME ZONE 'UTC'))),
           '{}')
    INTO v_days
    FROM (
        SELECT day,
               coalesce(jsonb_agg(sid ORDER BY sent_at DESC) FILTER (WHERE new), '[]') AS new,
               coalesce(jsonb_agg(sid ORDER BY sent_at DESC) FILTER (WHERE NOT new), '[]')
                   AS again
        FROM due
        GROUP BY day
    ) AS d;
    RETURN v_days;
END
$$;

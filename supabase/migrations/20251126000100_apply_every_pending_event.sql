-- Found by the reliability gauntlet (benchmarks/soak): an ingest whose SMS had more
-- than ten status reports waiting applied only the first ten or so.
--
-- apply_pending_sms_events looped over a cursor with FOR UPDATE OF s, e. PL/pgSQL
-- fetches a loop's rows ten at a time, and locks each as it is fetched; applying an
-- event updates its SMS, so a row fetched later found that SMS already modified by
-- this very transaction, and Postgres silently skips such a row in FOR UPDATE. Its
-- event stayed pending for good, and the SMS kept a stale status.
--
-- Now every pending event is locked and read before the first is applied. The SMS
-- rows need no lock: the trigger's caller has just inserted them.
CREATE OR REPLACE FUNCTION private.apply_pending_sms_events(p_sids text[]) RETURNS integer
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_events public.agent_sms_events[];
    v_event public.agent_sms_events;
BEGIN
    WITH pending AS (
        SELECT e.*
        FROM public.agent_sms_events AS e
        WHERE e.applied_at IS NULL AND e.provider_message_sid = ANY (p_sids)
          AND EXISTS (SELECT FROM public.agent_sms AS s
                      WHERE s.provider_message_sid = e.provider_message_sid)
        FOR UPDATE OF e
    )
    SELECT coalesce(array_agg(p::public.agent_sms_events ORDER BY p.id), '{}')
    INTO v_events FROM pending AS p;

    FOREACH v_event IN ARRAY v_events LOOP
        PERFORM private.apply_sms_event(v_event);
    END LOOP;
    RETURN cardinality(v_events);
END
$$;

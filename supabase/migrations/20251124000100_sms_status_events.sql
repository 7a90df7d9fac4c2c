-- Twilio status callbacks and reconciliation: an event history, and the state machine
-- that turns reports into agent_sms's status, written once and used by every writer
-- (callbacks, reconcile, and ingest applying reports that arrived before the SMS).

-- The seed's provider statuses: the KPI status each counts as, and the order a status
-- moves in. A status replaces the current one only when it ranks higher, so the outcome
-- does not depend on the order reports arrive in, a repeated report changes nothing, and
-- a final status is never replaced by a non-final one; among finals, a delivery receipt
-- wins over a failure.
--
-- The mappings are data, joined where they are needed: as SQL functions they would carry
-- a fixed search path like every function here, and a function with one is never
-- inlined into its caller's query (and, called from PL/pgSQL, is planned again on every
-- call: a callback cost 28% more, a 500-SMS ingest 23% more).
CREATE TABLE private.sms_provider_statuses (
    provider_status text     PRIMARY KEY,
    status          text     NOT NULL
        CONSTRAINT sms_provider_statuses_status_check
        CHECK (status IN ('sent', 'delivered', 'failed')),
    rank            smallint NOT NULL UNIQUE
);
INSERT INTO private.sms_provider_statuses (provider_status, status, rank) VALUES
    ('unknown', 'sent', 0), ('queued', 'sent', 1), ('sending', 'sent', 2), ('sent', 'sent', 3),
    ('failed', 'failed', 4), ('undelivered', 'failed', 5), ('delivered', 'delivered', 6);

-- Twilio's 14 message statuses, in the seed's terms.
CREATE TABLE private.twilio_statuses (
    twilio_status   text PRIMARY KEY,
    provider_status text NOT NULL REFERENCES private.sms_provider_statuses
);
INSERT INTO private.twilio_statuses (twilio_status, provider_status) VALUES
    ('queued', 'queued'), ('accepted', 'queued'), ('scheduled', 'queued'),
    ('sending', 'sending'), ('sent', 'sent'),
    ('delivered', 'delivered'), ('read', 'delivered'), ('partially_delivered', 'delivered'),
    ('undelivered', 'undelivered'), ('failed', 'failed'), ('canceled', 'failed'),
    ('receiving', 'unknown'), ('received', 'unknown'), ('unknown', 'unknown');

-- A readable failure_reason from Twilio's ErrorCode.
CREATE FUNCTION private.twilio_failure_reason(error_code integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN CASE error_code
        WHEN 21211 THEN 'Invalid destination number'
        WHEN 21408 THEN 'Destination region not enabled on this account'
        WHEN 21610 THEN 'Recipient opted out (replied STOP)'
        WHEN 21612 THEN 'Destination cannot be reached from this sender'
        WHEN 21614 THEN 'Destination is not a mobile number'
        WHEN 30001 THEN 'Queue overflow'
        WHEN 30002 THEN 'Account suspended'
        WHEN 30003 THEN 'Unreachable destination handset'
        WHEN 30004 THEN 'Message blocked'
        WHEN 30005 THEN 'Unknown destination handset'
        WHEN 30006 THEN 'Landline or unreachable carrier'
        WHEN 30007 THEN 'Filtered by the carrier'
        WHEN 30008 THEN 'Unknown error'
        WHEN 30009 THEN 'Missing segment'
        WHEN 30010 THEN 'Message price exceeds max price'
        WHEN 30034 THEN 'Sender not registered (A2P 10DLC)'
        WHEN 30410 THEN 'Provider timeout'
        WHEN 30500 THEN 'Carrier violation'
        ELSE 'Twilio error ' || error_code
    END;
END
$$;

-- The advisory lock that keeps a status report for a not-yet-recorded SMS from
-- slipping between an insert into agent_sms and that insert's look for pending events.
CREATE FUNCTION private.pending_events_lock_key() RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN 7419263580142; END $$;

-- Every accepted status report, in arrival order. A report whose SMS is not recorded
-- yet is pending (applied_at IS NULL); it keeps the recipient's number (E.164) only so
-- that erasure can find it, and forgets it once applied.
CREATE TABLE public.agent_sms_events (
    id                   bigint       GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider_message_sid text         NOT NULL,
    twilio_status        text         NOT NULL,
    error_code           integer,
    reported_at          timestamptz,
    received_at          timestamptz  NOT NULL DEFAULT now(),
    source               text         NOT NULL DEFAULT 'callback'
        CONSTRAINT agent_sms_events_source_check CHECK (source IN ('callback', 'reconcile')),
    applied_at           timestamptz,
    pending_phone_number text
);

COMMENT ON TABLE public.agent_sms_events IS
    'Status reports from Twilio, oldest first; pending until their SMS is recorded.';
COMMENT ON COLUMN public.agent_sms_events.reported_at IS
    'When Twilio stamped the status (RawDlrDoneDate, or the API''s date_updated).';

ALTER TABLE public.agent_sms_events ALTER COLUMN pending_phone_number SET STATISTICS 0;

-- Each report once: the same report again (Twilio retrying, a replayed callback: the
-- same SID, status, error code and carrier time) adds no row.
CREATE UNIQUE INDEX idx_agent_sms_events_report ON public.agent_sms_events
    (provider_message_sid, twilio_status, error_code, reported_at) NULLS NOT DISTINCT;
CREATE INDEX idx_agent_sms_events_pending ON public.agent_sms_events (received_at)
    WHERE applied_at IS NULL;
-- A hash index, for the reason idx_agent_sms_phone_number is one.
CREATE INDEX idx_agent_sms_events_pending_phone ON public.agent_sms_events
    USING hash (pending_phone_number) WHERE pending_phone_number IS NOT NULL;

-- Only the service writes or reads reports; no API user sees them.
ALTER TABLE public.agent_sms_events ENABLE ROW LEVEL SECURITY;

-- Which SMS reconcile has asked Twilio about, and when: each run starts with those
-- asked least recently, so a run cut short by rate limits resumes where it stopped.
CREATE TABLE private.sms_reconcile_checks (
    provider_message_sid text        PRIMARY KEY,
    checked_at           timestamptz NOT NULL
);

-- The status move, the only code that moves a status, on an SMS its caller has locked.
CREATE FUNCTION private.apply_sms_status(
    p_sid text, p_twilio_status text, p_error_code integer, p_when timestamptz
) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE public.agent_sms AS s
    SET provider_status = n.provider_status,
        status = n.status,
        delivered_at = CASE WHEN n.provider_status = 'delivered' THEN p_when
                            ELSE s.delivered_at END,
        failed_at = CASE
            WHEN n.provider_status IN ('failed', 'undelivered') THEN p_when
            WHEN n.provider_status = 'delivered' THEN NULL
            ELSE s.failed_at
        END,
        failure_reason = CASE
            WHEN n.provider_status IN ('failed', 'undelivered')
                THEN coalesce(private.twilio_failure_reason(p_error_code), s.failure_reason)
            WHEN n.provider_status = 'delivered' THEN NULL
            ELSE s.failure_reason
        END
    FROM private.twilio_statuses AS t
    JOIN private.sms_provider_statuses AS n USING (provider_status)
    WHERE t.twilio_status = p_twilio_status
      AND s.provider_message_sid = p_sid
      AND n.rank > coalesce((SELECT c.rank FROM private.sms_provider_statuses AS c
                             WHERE c.provider_status = s.provider_status), -1);
    RETURN FOUND;
END
$$;

-- Apply one pending report to its SMS, which the caller has locked.
CREATE FUNCTION private.apply_sms_event(p_event public.agent_sms_events)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_changed boolean := private.apply_sms_status(
        p_event.provider_message_sid, p_event.twilio_status, p_event.error_code,
        coalesce(p_event.reported_at, p_event.received_at));
BEGIN
    UPDATE public.agent_sms_events
    SET applied_at = now(), pending_phone_number = NULL
    WHERE id = p_event.id;
    RETURN v_changed;
END
$$;

-- Apply, in arrival order, the pending reports of SMS that are now recorded. Every
-- pending report is locked and read before the first is applied: locked as a cursor
-- fetched them (ten at a time), a report fetched after its SMS was updated by this very
-- transaction was skipped by FOR UPDATE, and stayed pending for good.
CREATE FUNCTION private.apply_pending_sms_events(p_sids text[]) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
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

-- Whoever records an SMS (ingest, a backfill), the reports that came first are applied
-- in the same statement, so the row is born with its true status. Runs as its owner.
CREATE FUNCTION private.agent_sms_apply_pending_events() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(private.pending_events_lock_key());
    PERFORM private.apply_pending_sms_events(ARRAY(
        SELECT n.provider_message_sid FROM new_rows AS n
        WHERE n.provider_message_sid IS NOT NULL));
    RETURN NULL;
END
$$;

CREATE TRIGGER agent_sms_apply_pending_events
    AFTER INSERT ON public.agent_sms
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION private.agent_sms_apply_pending_events();

-- One status report, from a callback or from reconcile. Atomic: when its SMS exists, the
-- report is applied under the SMS's row lock and recorded as applied, once. Its
-- arguments are checked before anything is written, so no insert can fail with the
-- recipient's number in its "Failing row".
--
-- A report for an SMS not recorded yet must not slip between an insert of that SMS
-- and the insert's look for pending reports. Every insert holds the advisory lock
-- shared until it commits (agent_sms_apply_pending_events); a report that finds no
-- SMS takes it exclusively, which waits for inserts in flight to commit, then looks
-- again before it is kept as pending.
CREATE FUNCTION public.record_sms_status(
    p_sid text,
    p_status text,
    p_error_code integer DEFAULT NULL,
    p_reported_at timestamptz DEFAULT NULL,
    p_to text DEFAULT NULL,
    p_source text DEFAULT 'callback',
    p_price numeric DEFAULT NULL,
    p_price_unit text DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_found boolean;
    v_changed boolean := false;
BEGIN
    IF p_sid IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'MessageSid',
            MESSAGE = 'MessageSid is required';
    END IF;
    IF NOT EXISTS (SELECT FROM private.twilio_statuses WHERE twilio_status = p_status) THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'MessageStatus',
            MESSAGE = 'MessageStatus is not a Twilio message status';
    END IF;
    IF p_source IS NULL OR p_source NOT IN ('callback', 'reconcile') THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_source',
            MESSAGE = 'the source must be callback or reconcile';
    END IF;
    IF p_price IS NOT NULL AND NOT (abs(p_price) < 1000000) THEN  -- NaN and Infinity too
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_price',
            MESSAGE = 'the price must be a finite amount';
    END IF;
    IF p_price_unit IS NOT NULL AND p_price_unit !~ '^[A-Za-z]{3}$' THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_price_unit',
            MESSAGE = 'the price unit must be a currency code';
    END IF;

    PERFORM 1 FROM public.agent_sms WHERE provider_message_sid = p_sid FOR UPDATE;
    v_found := FOUND;
    IF NOT v_found THEN
        PERFORM pg_advisory_xact_lock(private.pending_events_lock_key());
        PERFORM 1 FROM public.agent_sms WHERE provider_message_sid = p_sid FOR UPDATE;
        v_found := FOUND;
    END IF;

    IF v_found THEN
        v_changed := private.apply_sms_status(
            p_sid, p_status, p_error_code, coalesce(p_reported_at, now()));
        IF p_price IS NOT NULL THEN
            v_changed := private.price_sms(p_sid, p_price, p_price_unit) OR v_changed;
        END IF;
    ELSIF EXISTS (SELECT FROM private.erased_sids(ARRAY[p_sid])) THEN
        RETURN jsonb_build_object('pending', false, 'changed', false);
    END IF;

    INSERT INTO public.agent_sms_events
        (provider_message_sid, twilio_status, error_code, reported_at, source,
         applied_at, pending_phone_number)
    VALUES (p_sid, p_status, p_error_code, p_reported_at, p_source,
            CASE WHEN v_found THEN now() END, CASE WHEN NOT v_found THEN p_to END)
    ON CONFLICT (provider_message_sid, twilio_status, error_code, reported_at) DO NOTHING;

    RETURN jsonb_build_object('pending', NOT v_found, 'changed', v_changed);
END
$$;

COMMENT ON FUNCTION public.record_sms_status(text, text, integer, timestamptz, text, text, numeric, text)
    IS 'Records a Twilio status report and applies it through the status state machine.';

-- Claim the SMS whose status reconcile should ask Twilio about, one by one: still not
-- final p_min_age after sending, sent within p_max_age; those asked least recently
-- first. (Final SMS without a price are priced from Twilio's Messages list:
-- claim_sms_to_price.) Claiming stamps them, so runs that overlap take different SMS.
-- At most 5,000 SMS a run, sent within 400 days.
CREATE FUNCTION public.claim_sms_to_reconcile(
    p_min_age interval, p_max_age interval, p_limit integer
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_sids text[];
BEGIN
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 5000 THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_limit',
            MESSAGE = 'a run claims from 1 to 5000 SMS';
    END IF;
    IF p_min_age IS NULL OR p_max_age IS NULL OR p_max_age > interval '400 days'
       OR p_min_age < interval '0' THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_max_age',
            MESSAGE = 'reconcile looks at SMS sent from 0 to 400 days ago';
    END IF;
    PERFORM pg_advisory_xact_lock(private.pending_events_lock_key() + 1);
    SELECT coalesce(array_agg(c.provider_message_sid ORDER BY c.checked_at NULLS FIRST, c.sent_at),
                    '{}')
    INTO v_sids
    FROM (
        SELECT s.provider_message_sid, s.sent_at, r.checked_at
        FROM public.agent_sms AS s
        LEFT JOIN private.sms_reconcile_checks AS r USING (provider_message_sid)
        WHERE s.provider = 'twilio'
          AND s.provider_message_sid IS NOT NULL
          AND s.sent_at > now() - p_max_age
          AND s.status = 'sent' AND s.sent_at < now() - p_min_age
        ORDER BY r.checked_at NULLS FIRST, s.sent_at
        LIMIT p_limit
    ) AS c;

    INSERT INTO private.sms_reconcile_checks (provider_message_sid, checked_at)
    SELECT unnest(v_sids), now()
    ON CONFLICT (provider_message_sid) DO UPDATE SET checked_at = excluded.checked_at;
    RETURN to_jsonb(v_sids);
END
$$;

-- Give back claimed SMS a run did not get to (rate limit, time budget): they come
-- first next run.
CREATE FUNCTION public.release_sms_to_reconcile(p_sids text[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_released integer;
BEGIN
    IF cardinality(p_sids) > 5000 THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_sids',
            MESSAGE = 'a run gives back at most 5000 SMS';
    END IF;
    DELETE FROM private.sms_reconcile_checks WHERE provider_message_sid = ANY (p_sids);
    GET DIAGNOSTICS v_released = ROW_COUNT;
    RETURN v_released;
END
$$;

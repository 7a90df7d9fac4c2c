-- Twilio status callbacks and reconciliation: an event history, and the state machine
-- that turns events into agent_sms's status, written once and used by every writer
-- (callbacks, reconcile, and ingest applying events that arrived before the SMS).

-- Twilio reports 13 message statuses; the seed keeps 7 (provider_status) and 3
-- (status). Both mappings are written once, here, for ingest and status callbacks.
-- Neither touches a table, so they need no search_path pinning; without it Postgres
-- inlines them into the calling query, which halves the cost of a 500-SMS batch.
CREATE FUNCTION private.provider_status_of(twilio_status text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE twilio_status
        WHEN 'queued' THEN 'queued'
        WHEN 'accepted' THEN 'queued'
        WHEN 'scheduled' THEN 'queued'
        WHEN 'sending' THEN 'sending'
        WHEN 'sent' THEN 'sent'
        WHEN 'delivered' THEN 'delivered'
        WHEN 'read' THEN 'delivered'
        WHEN 'partially_delivered' THEN 'delivered'
        WHEN 'undelivered' THEN 'undelivered'
        WHEN 'failed' THEN 'failed'
        WHEN 'canceled' THEN 'failed'
        WHEN 'receiving' THEN 'unknown'
        WHEN 'received' THEN 'unknown'
        WHEN 'unknown' THEN 'unknown'
    END
$$;

CREATE FUNCTION private.sms_status_of(provider_status text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE provider_status
        WHEN 'delivered' THEN 'delivered'
        WHEN 'undelivered' THEN 'failed'
        WHEN 'failed' THEN 'failed'
        ELSE 'sent'
    END
$$;

REVOKE ALL ON FUNCTION private.provider_status_of(text), private.sms_status_of(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION private.provider_status_of(text), private.sms_status_of(text)
    TO service_role;

-- The advisory lock that keeps a status report for a not-yet-recorded SMS from
-- slipping between an insert into agent_sms and that insert's look for pending events.
CREATE FUNCTION private.pending_events_lock_key() RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT 7419263580142 $$;
GRANT EXECUTE ON FUNCTION private.pending_events_lock_key() TO service_role;

-- Every accepted status report, in arrival order. An event whose SMS is not recorded
-- yet is pending (applied_at IS NULL); it keeps the recipient's number (E.164) only
-- so that erasure can find it, and forgets it once applied.
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

CREATE INDEX idx_agent_sms_events_sid ON public.agent_sms_events (provider_message_sid, id);
CREATE INDEX idx_agent_sms_events_pending ON public.agent_sms_events (received_at)
    WHERE applied_at IS NULL;
CREATE INDEX idx_agent_sms_events_pending_phone ON public.agent_sms_events (pending_phone_number)
    WHERE pending_phone_number IS NOT NULL;

-- Only the service writes or reads events; no API user sees them.
ALTER TABLE public.agent_sms_events ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON public.agent_sms_events FROM anon, authenticated;
GRANT ALL ON public.agent_sms_events TO service_role;

-- The SIDs of SMS erased at their recipient's request (retention's erasure), as
-- SHA-256 digests, so that nothing here leads back to the message. A report that comes
-- for one afterwards is dropped, not kept as pending with the number it carries: an
-- erased number must not come back through a late callback.
CREATE TABLE private.sms_erased_sids (
    sid_sha256 bytea       PRIMARY KEY,
    erased_at  timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON private.sms_erased_sids TO service_role;

-- Which SMS reconcile has asked Twilio about, and when: each run starts with those
-- asked least recently, so a run cut short by rate limits resumes where it stopped.
CREATE TABLE private.sms_reconcile_checks (
    provider_message_sid text        PRIMARY KEY,
    checked_at           timestamptz NOT NULL
);
GRANT ALL ON private.sms_reconcile_checks TO service_role;

-- The order statuses may move in: a status replaces the current one only when it
-- ranks higher, so the outcome does not depend on the order events arrive in, a
-- repeated event changes nothing, and a final status is never replaced by a
-- non-final one. Among finals, a delivery receipt wins over a failure.
CREATE FUNCTION private.provider_status_rank(provider_status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE provider_status
        WHEN 'unknown' THEN 0
        WHEN 'queued' THEN 1
        WHEN 'sending' THEN 2
        WHEN 'sent' THEN 3
        WHEN 'failed' THEN 4
        WHEN 'undelivered' THEN 5
        WHEN 'delivered' THEN 6
    END
$$;

-- A readable failure_reason from Twilio's ErrorCode.
CREATE FUNCTION private.twilio_failure_reason(error_code integer) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE error_code
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
    END
$$;

REVOKE ALL ON FUNCTION private.provider_status_rank(text), private.twilio_failure_reason(integer)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION private.provider_status_rank(text),
    private.twilio_failure_reason(integer) TO service_role;

-- Apply one event to its SMS, which the caller has locked. The only code that moves
-- a status.
CREATE FUNCTION private.apply_sms_event(p_event public.agent_sms_events) RETURNS boolean
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_new text := private.provider_status_of(p_event.twilio_status);
    v_when timestamptz := coalesce(p_event.reported_at, p_event.received_at);
    v_changed boolean;
BEGIN
    UPDATE public.agent_sms AS s
    SET provider_status = v_new,
        status = private.sms_status_of(v_new),
        delivered_at = CASE WHEN v_new = 'delivered' THEN v_when ELSE s.delivered_at END,
        failed_at = CASE
            WHEN v_new IN ('failed', 'undelivered') THEN v_when
            WHEN v_new = 'delivered' THEN NULL
            ELSE s.failed_at
        END,
        failure_reason = CASE
            WHEN v_new IN ('failed', 'undelivered')
                THEN coalesce(private.twilio_failure_reason(p_event.error_code), s.failure_reason)
            WHEN v_new = 'delivered' THEN NULL
            ELSE s.failure_reason
        END
    WHERE s.provider_message_sid = p_event.provider_message_sid
      AND private.provider_status_rank(v_new)
          > coalesce(private.provider_status_rank(s.provider_status), -1);
    v_changed := FOUND;

    UPDATE public.agent_sms_events
    SET applied_at = now(), pending_phone_number = NULL
    WHERE id = p_event.id;
    RETURN v_changed;
END
$$;

REVOKE ALL ON FUNCTION private.apply_sms_event(public.agent_sms_events) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION private.apply_sms_event(public.agent_sms_events) TO service_role;

-- Apply, in arrival order, the pending events of SMS that are now recorded.
CREATE FUNCTION private.apply_pending_sms_events(p_sids text[]) RETURNS integer
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_event public.agent_sms_events;
    v_applied integer := 0;
BEGIN
    FOR v_event IN
        SELECT e.*
        FROM public.agent_sms_events AS e
        JOIN public.agent_sms AS s ON s.provider_message_sid = e.provider_message_sid
        WHERE e.applied_at IS NULL AND e.provider_message_sid = ANY (p_sids)
        ORDER BY e.id
        FOR UPDATE OF s, e
    LOOP
        PERFORM private.apply_sms_event(v_event);
        v_applied := v_applied + 1;
    END LOOP;
    RETURN v_applied;
END
$$;

REVOKE ALL ON FUNCTION private.apply_pending_sms_events(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION private.apply_pending_sms_events(text[]) TO service_role;

-- Whoever records an SMS (ingest, an admin, a backfill), the status reports that came
-- first are applied in the same statement, so the row is born with its true status.
-- Runs as its owner: an admin inserting through the API has no rights on private.
CREATE FUNCTION private.agent_sms_apply_pending_events() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(private.pending_events_lock_key());
    PERFORM private.apply_pending_sms_events(ARRAY(
        SELECT n.provider_message_sid FROM new_rows AS n
        WHERE n.provider_message_sid IS NOT NULL));
    RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION private.agent_sms_apply_pending_events() FROM PUBLIC;

CREATE TRIGGER agent_sms_apply_pending_events
    AFTER INSERT ON public.agent_sms
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION private.agent_sms_apply_pending_events();

-- One status report, from a callback or from reconcile. Atomic: the event is
-- recorded and, when its SMS exists, applied under the SMS's row lock.
--
-- A report for an SMS not recorded yet must not slip between an insert of that SMS
-- and the insert's look for pending events. Every insert holds the advisory lock
-- shared until it commits (agent_sms_apply_pending_events); a report that finds no
-- SMS takes it exclusively, which waits for inserts in flight to commit, then looks
-- again before parking the event.
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
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_event public.agent_sms_events;
    v_found boolean;
    v_changed boolean := false;
BEGIN
    IF private.provider_status_of(p_status) IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'MessageStatus',
            MESSAGE = 'MessageStatus is not a Twilio message status';
    END IF;

    INSERT INTO public.agent_sms_events
        (provider_message_sid, twilio_status, error_code, reported_at, source)
    VALUES (p_sid, p_status, p_error_code, p_reported_at, p_source)
    RETURNING * INTO v_event;

    PERFORM 1 FROM public.agent_sms WHERE provider_message_sid = p_sid FOR UPDATE;
    v_found := FOUND;
    IF NOT v_found THEN
        PERFORM pg_advisory_xact_lock(private.pending_events_lock_key());
        PERFORM 1 FROM public.agent_sms WHERE provider_message_sid = p_sid FOR UPDATE;
        v_found := FOUND;
    END IF;

    IF v_found THEN
        v_changed := private.apply_sms_event(v_event);
        IF p_price IS NOT NULL THEN
            -- billed_cost adds provider_cost and voipia_margin: a price in another
            -- currency than the row's is taken only when there is no margin to mix.
            UPDATE public.agent_sms
            SET provider_cost = abs(p_price),
                currency = coalesce(upper(p_price_unit), currency)
            WHERE provider_message_sid = p_sid AND provider_cost IS NULL
              AND (p_price_unit IS NULL OR upper(p_price_unit) = currency
                   OR coalesce(voipia_margin, 0) = 0);
            v_changed := v_changed OR FOUND;
        END IF;
    ELSIF EXISTS (SELECT FROM private.sms_erased_sids AS e
                  WHERE e.sid_sha256 = sha256(convert_to(p_sid, 'UTF8'))) THEN
        DELETE FROM public.agent_sms_events WHERE id = v_event.id;
        RETURN jsonb_build_object('pending', false, 'changed', false);
    ELSE
        UPDATE public.agent_sms_events SET pending_phone_number = p_to WHERE id = v_event.id;
    END IF;

    RETURN jsonb_build_object('pending', NOT v_found, 'changed', v_changed);
END
$$;

COMMENT ON FUNCTION public.record_sms_status(text, text, integer, timestamptz, text, text, numeric, text)
    IS 'Records a Twilio status report and applies it through the status state machine.';

REVOKE ALL ON FUNCTION public.record_sms_status(text, text, integer, timestamptz, text, text, numeric, text)
    FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.record_sms_status(text, text, integer, timestamptz, text, text, numeric, text)
    TO service_role;

-- Claim the SMS reconcile should ask Twilio about: still not final p_min_age after
-- sending, or final without a price; sent within p_max_age; those asked least recently
-- first. Claiming stamps them, so runs that overlap take different SMS.
CREATE FUNCTION public.claim_sms_to_reconcile(
    p_min_age interval, p_max_age interval, p_limit integer
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_sids text[];
BEGIN
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
          AND (
              (s.status = 'sent' AND s.sent_at < now() - p_min_age)
              OR (s.status <> 'sent' AND s.provider_cost IS NULL)
          )
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
LANGUAGE sql
SET search_path = ''
AS $$
    WITH released AS (
        DELETE FROM private.sms_reconcile_checks WHERE provider_message_sid = ANY (p_sids)
        RETURNING 1
    )
    SELECT count(*)::integer FROM released
$$;

REVOKE ALL ON FUNCTION public.claim_sms_to_reconcile(interval, interval, integer),
    public.release_sms_to_reconcile(text[]) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.claim_sms_to_reconcile(interval, interval, integer),
    public.release_sms_to_reconcile(text[]) TO service_role;

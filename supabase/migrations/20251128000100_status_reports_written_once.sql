-- A status report whose SMS is recorded is now written to the history once, already
-- applied. It used to be inserted pending, then updated as applied: a second version
-- of the event row, and a second entry in each of the table's three indexes (its
-- partial index's predicate, applied_at IS NULL, rules out a HOT update). A report for
-- an erased SMS is now refused before anything is written, where it used to be
-- inserted and deleted. The SMS row is locked first, so the event's id follows the
-- order in which reports are applied.
--
-- The status move itself, the state machine, stays written once: apply_sms_event()
-- (pending events, at ingest) and record_sms_status() both call apply_sms_status().

CREATE FUNCTION private.apply_sms_status(
    p_sid text, p_twilio_status text, p_error_code integer, p_when timestamptz
) RETURNS boolean
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_new text := private.provider_status_of(p_twilio_status);
BEGIN
    UPDATE public.agent_sms AS s
    SET provider_status = v_new,
        status = private.sms_status_of(v_new),
        delivered_at = CASE WHEN v_new = 'delivered' THEN p_when ELSE s.delivered_at END,
        failed_at = CASE
            WHEN v_new IN ('failed', 'undelivered') THEN p_when
            WHEN v_new = 'delivered' THEN NULL
            ELSE s.failed_at
        END,
        failure_reason = CASE
            WHEN v_new IN ('failed', 'undelivered')
                THEN coalesce(private.twilio_failure_reason(p_error_code), s.failure_reason)
            WHEN v_new = 'delivered' THEN NULL
            ELSE s.failure_reason
        END
    WHERE s.provider_message_sid = p_sid
      AND private.provider_status_rank(v_new)
          > coalesce(private.provider_status_rank(s.provider_status), -1);
    RETURN FOUND;
END
$$;

REVOKE ALL ON FUNCTION private.apply_sms_status(text, text, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION private.apply_sms_status(text, text, integer, timestamptz)
    TO service_role;

-- Apply one pending event to its SMS, which the caller has locked.
CREATE OR REPLACE FUNCTION private.apply_sms_event(p_event public.agent_sms_events)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = ''
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

-- One status report, from a callback or from reconcile. Atomic: when its SMS exists,
-- the report is applied under the SMS's row lock and recorded as applied.
--
-- A report for an SMS not recorded yet must not slip between an insert of that SMS
-- and the insert's look for pending events. Every insert holds the advisory lock
-- shared until it commits (agent_sms_apply_pending_events); a report that finds no
-- SMS takes it exclusively, which waits for inserts in flight to commit, then looks
-- again before it is kept as pending.
CREATE OR REPLACE FUNCTION public.record_sms_status(
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
    v_found boolean;
    v_changed boolean := false;
BEGIN
    IF private.provider_status_of(p_status) IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'MessageStatus',
            MESSAGE = 'MessageStatus is not a Twilio message status';
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
    ELSIF private.is_erased_sms(p_sid) THEN
        RETURN jsonb_build_object('pending', false, 'changed', false);
    END IF;

    INSERT INTO public.agent_sms_events
        (provider_message_sid, twilio_status, error_code, reported_at, source,
         applied_at, pending_phone_number)
    VALUES (p_sid, p_status, p_error_code, p_reported_at, p_source,
            CASE WHEN v_found THEN now() END, CASE WHEN NOT v_found THEN p_to END);

    RETURN jsonb_build_object('pending', NOT v_found, 'changed', v_changed);
END
$$;

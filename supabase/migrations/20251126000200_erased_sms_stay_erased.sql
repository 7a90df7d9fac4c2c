-- Found by the reliability gauntlet (benchmarks/soak): an SMS erased at its
-- recipient's request came back when n8n posted it again (a retry, a re-run of an old
-- execution), with the erased number, and nothing ever removed it.
--
-- The same for an archived SMS: erasing it from the archive did not remember its SID.
--
-- Now an erased SID is never recorded again, however it arrives:
--   * ingest_sms answers such an item {"gone": "provider_message_sid"} (HTTP 410) and
--     records the rest of its batch;
--   * a trigger refuses any insert of an erased SID, for the race the check above
--     cannot see: an erasure that commits while the insert waits on the row it
--     deletes. It raises 40001 (retry): ingest's retry then answers that item 410.

-- Remember these SIDs as erased, as SHA-256 digests (nothing personal), for good:
-- erasure calls it for the SMS it removes, hot (erase_hot_sms) or archived.
CREATE FUNCTION private.remember_erased_sids(p_sids text[]) RETURNS void
LANGUAGE sql
SET search_path = ''
AS $$
    INSERT INTO private.sms_erased_sids (sid_sha256)
    SELECT sha256(convert_to(sid, 'UTF8')) FROM unnest(p_sids) AS sid WHERE sid IS NOT NULL
    ON CONFLICT DO NOTHING;
$$;

REVOKE ALL ON FUNCTION private.remember_erased_sids(text[]) FROM PUBLIC;

-- As in 20251125000100_sms_retention.sql, remembering the SIDs through the function above.
CREATE OR REPLACE FUNCTION private.erase_hot_sms(p_phone_number text)
RETURNS TABLE (hot_rows integer, status_events integer, pending_events integer)
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_sids text[];
BEGIN
    WITH gone AS (
        DELETE FROM public.agent_sms AS s
        WHERE s.phone_number = p_phone_number
        RETURNING s.provider_message_sid
    )
    SELECT count(*)::integer, coalesce(array_agg(provider_message_sid), '{}')
    INTO hot_rows, v_sids
    FROM gone;

    DELETE FROM public.agent_sms_events AS e WHERE e.provider_message_sid = ANY (v_sids);
    GET DIAGNOSTICS status_events = ROW_COUNT;

    DELETE FROM public.agent_sms_events AS e
    WHERE e.applied_at IS NULL AND e.pending_phone_number = p_phone_number;
    GET DIAGNOSTICS pending_events = ROW_COUNT;

    DELETE FROM private.sms_reconcile_checks AS c WHERE c.provider_message_sid = ANY (v_sids);
    PERFORM private.remember_erased_sids(v_sids);
    RETURN NEXT;
END
$$;

-- Whether this SID belongs to an SMS erased at its recipient's request. Without a SET
-- clause (every name qualified instead), so that Postgres inlines it into the queries
-- that check each SMS of a batch, rather than calling it once per SMS.
CREATE FUNCTION private.is_erased_sms(p_sid text) RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT EXISTS (SELECT FROM private.sms_erased_sids AS e
                   WHERE e.sid_sha256 = pg_catalog.sha256(pg_catalog.convert_to(p_sid, 'UTF8')))
$$;

REVOKE ALL ON FUNCTION private.is_erased_sms(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION private.is_erased_sms(text) TO service_role;

CREATE FUNCTION private.agent_sms_refuse_erased() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
    IF EXISTS (SELECT FROM new_rows AS n WHERE private.is_erased_sms(n.provider_message_sid)) THEN
        RAISE EXCEPTION USING ERRCODE = '40001',
            MESSAGE = 'an SMS erased at its recipient''s request may not be recorded again';
    END IF;
    RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION private.agent_sms_refuse_erased() FROM PUBLIC;

CREATE TRIGGER agent_sms_refuse_erased
    AFTER INSERT ON public.agent_sms
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION private.agent_sms_refuse_erased();

-- As in 20251124000200_ingest_sms.sql, with the erased check.
CREATE OR REPLACE FUNCTION public.ingest_sms(p_messages jsonb) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_outcome jsonb;
    v_results jsonb;
BEGIN
    IF jsonb_typeof(p_messages) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', MESSAGE = 'messages must be a JSON array',
                              HINT = 'messages';
    END IF;
    -- Hold the referenced records until commit, so one deleted meanwhile is reported
    -- for its items instead of failing the whole batch at the foreign-key check.
    PERFORM 1 FROM public.agent_deployments
    WHERE id IN (SELECT (e ->> 'deployment_id')::uuid FROM jsonb_array_elements(p_messages) AS e)
    FOR KEY SHARE;
    PERFORM 1 FROM public.agent_calls
    WHERE id IN (SELECT (e ->> 'call_id')::uuid FROM jsonb_array_elements(p_messages) AS e)
    FOR KEY SHARE;
    PERFORM 1 FROM public.agent_arthur_prospects
    WHERE id IN (SELECT (e ->> 'prospect_id')::uuid FROM jsonb_array_elements(p_messages) AS e)
    FOR KEY SHARE;
    PERFORM 1 FROM public.agent_arthur_prospect_sequences
    WHERE id IN (SELECT (e ->> 'sequence_id')::uuid FROM jsonb_array_elements(p_messages) AS e)
    FOR KEY SHARE;

    WITH decoded AS (
        SELECT e.ord, m.*, d.client_id AS deployment_client_id,
            private.provider_status_of(m.provider_status) AS stored_status
        FROM jsonb_array_elements(p_messages) WITH ORDINALITY AS e(item, ord)
        CROSS JOIN LATERAL jsonb_populate_record(NULL::public.agent_sms, e.item) AS m
        LEFT JOIN public.agent_deployments AS d ON d.id = m.deployment_id
    ),
    checked AS (
        SELECT x.*,
            CASE
                -- Erased at its recipient's request: never recorded again.
                WHEN private.is_erased_sms(x.provider_message_sid) THEN 'erased'
                WHEN x.deployment_client_id IS NULL THEN 'deployment_id'
                WHEN x.call_id IS NOT NULL AND NOT EXISTS (
                    SELECT 1 FROM public.agent_calls AS c
                    JOIN public.agent_deployments AS cd ON cd.id = c.deployment_id
                    WHERE c.id = x.call_id AND cd.client_id = x.deployment_client_id
                ) THEN 'call_id'
                WHEN x.prospect_id IS NOT NULL AND NOT EXISTS (
                    SELECT 1 FROM public.agent_arthur_prospects AS p WHERE p.id = x.prospect_id
                ) THEN 'prospect_id'
                WHEN x.sequence_id IS NOT NULL AND NOT EXISTS (
                    SELECT 1 FROM public.agent_arthur_prospect_sequences AS s
                    WHERE s.id = x.sequence_id
                ) THEN 'sequence_id'
                WHEN x.provider_status IS NOT NULL AND x.stored_status IS NULL
                    THEN 'provider_status'
            END AS rejected,
            gen_random_uuid() AS new_id
        FROM decoded AS x
    ),
    planned AS (
        -- Only the first valid occurrence of a SID in the batch is inserted.
        SELECT c.*,
            c.rejected IS NULL AND c.ord = min(c.ord) FILTER (WHERE c.rejected IS NULL)
                OVER (PARTITION BY coalesce(c.provider_message_sid, c.new_id::text))
                AS is_first
        FROM checked AS c
    ),
    inserted AS (
        INSERT INTO public.agent_sms (
            id, deployment_id, call_id, prospect_id, sequence_id, phone_number, first_name,
            last_name, message_content, message_type, provider, provider_message_sid,
            provider_status, status, sent_at, provider_cost, voipia_margin, currency,
            workflow_id, workflow_execution_id, metadata
        )
        SELECT p.new_id, p.deployment_id, p.call_id, p.prospect_id, p.sequence_id,
            p.phone_number, p.first_name, p.last_name, p.message_content,
            coalesce(p.message_type, 'transactional'), coalesce(p.provider, 'twilio'),
            p.provider_message_sid, p.stored_status, private.sms_status_of(p.stored_status),
            p.sent_at, p.provider_cost, coalesce(p.voipia_margin, 0), coalesce(p.currency, 'EUR'),
            p.workflow_id, p.workflow_execution_id, coalesce(p.metadata, '{}'::jsonb)
        FROM planned AS p
        WHERE p.is_first
        -- One global order: batches sharing SIDs then wait on each other instead of
        -- deadlocking.
        ORDER BY p.provider_message_sid
        ON CONFLICT (provider_message_sid) DO NOTHING
        RETURNING id
    )
    SELECT jsonb_agg(
        jsonb_build_object(
            'sid', p.provider_message_sid,
            'deployment_id', p.deployment_id,
            'rejected', p.rejected,
            'id', CASE WHEN p.new_id IN (SELECT id FROM inserted) THEN p.new_id END
        ) ORDER BY p.ord)
    INTO v_outcome
    FROM planned AS p;

    -- A new statement: it sees rows a concurrent retry committed while we waited on
    -- its SID, as well as the ones inserted above.
    SELECT coalesce(jsonb_agg(
        CASE
            WHEN o.value ->> 'rejected' = 'erased'
                THEN jsonb_build_object('gone', 'provider_message_sid')
            WHEN o.value ->> 'rejected' IS NOT NULL
                THEN jsonb_build_object('rejected', o.value ->> 'rejected')
            WHEN o.value ->> 'id' IS NOT NULL
                THEN jsonb_build_object('id', o.value -> 'id', 'created', true)
            WHEN s.deployment_id::text IS DISTINCT FROM o.value ->> 'deployment_id'
                AND s.id IS NOT NULL
                -- The same SID recorded for another deployment: a mapping mistake.
                THEN jsonb_build_object('conflict', 'provider_message_sid')
            ELSE jsonb_build_object('id', s.id, 'created', false)
        END ORDER BY o.ord), '[]'::jsonb)
    INTO v_results
    FROM jsonb_array_elements(v_outcome) WITH ORDINALITY AS o(value, ord)
    LEFT JOIN public.agent_sms AS s
        ON o.value ->> 'id' IS NULL AND s.provider_message_sid = o.value ->> 'sid';

    -- An existing SID whose row vanished in between (erased, or its deployment
    -- deleted): nothing was recorded for it, so the caller must retry.
    IF v_results @> '[{"id": null}]' THEN
        RAISE EXCEPTION USING ERRCODE = '40001',
            MESSAGE = 'a recorded SMS disappeared during ingest; retry';
    END IF;

    RETURN v_results;
END
$$;

-- ingest_sms: record the SMS n8n sent, one row per Twilio Message SID, in one call.
-- Status reports that arrived first are applied by the insert itself (the trigger
-- agent_sms_apply_pending_events).

-- An SMS's links stay inside its tenant, whoever writes it: the call, the prospect and
-- the sequence it points at belong to a deployment of the same client as its own
-- deployment. Written once, for a set of SMS (item n of the result is element n of the
-- arrays): ingest_sms answers each item that breaks it with the column, and triggers
-- refuse any other write that would (through the API with the service key, a backfill).
-- A record that does not exist and one of another client get the same answer, so the
-- check tells nothing about other tenants.
CREATE FUNCTION private.links_outside_tenant(
    p_deployment_ids uuid[], p_call_ids uuid[], p_prospect_ids uuid[], p_sequence_ids uuid[]
) RETURNS TABLE (item bigint, link text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT l.item, l.link
    FROM (
        SELECT u.item, CASE
            WHEN u.call_id IS NOT NULL AND NOT EXISTS (
                SELECT FROM public.agent_calls AS c
                JOIN public.agent_deployments AS cd ON cd.id = c.deployment_id
                WHERE c.id = u.call_id AND cd.client_id = d.client_id
            ) THEN 'call_id'
            WHEN u.prospect_id IS NOT NULL AND NOT EXISTS (
                SELECT FROM public.agent_arthur_prospects AS p
                JOIN public.agent_deployments AS pd ON pd.id = p.deployment_id
                WHERE p.id = u.prospect_id AND pd.client_id = d.client_id
            ) THEN 'prospect_id'
            WHEN u.sequence_id IS NOT NULL AND NOT EXISTS (
                SELECT FROM public.agent_arthur_prospect_sequences AS q
                JOIN public.agent_arthur_prospects AS p ON p.id = q.prospect_id
                JOIN public.agent_deployments AS pd ON pd.id = p.deployment_id
                WHERE q.id = u.sequence_id AND pd.client_id = d.client_id
            ) THEN 'sequence_id'
        END AS link
        FROM unnest(p_deployment_ids, p_call_ids, p_prospect_ids, p_sequence_ids)
            WITH ORDINALITY AS u(deployment_id, call_id, prospect_id, sequence_id, item)
        LEFT JOIN public.agent_deployments AS d ON d.id = u.deployment_id
        WHERE u.call_id IS NOT NULL OR u.prospect_id IS NOT NULL OR u.sequence_id IS NOT NULL
    ) AS l
    WHERE l.link IS NOT NULL;
END
$$;

CREATE FUNCTION private.refuse_link_outside_tenant(p_link text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = p_link,
        MESSAGE = p_link || ' refers to a record that does not exist or belongs to another client';
END
$$;

-- Inserts: once per statement, over all its rows.
CREATE FUNCTION private.agent_sms_refuse_foreign_links() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_link text;
BEGIN
    SELECT f.link INTO v_link
    FROM (SELECT array_agg(n.deployment_id) AS deployments, array_agg(n.call_id) AS calls,
                 array_agg(n.prospect_id) AS prospects, array_agg(n.sequence_id) AS sequences
          FROM new_rows AS n
          WHERE n.call_id IS NOT NULL OR n.prospect_id IS NOT NULL
             OR n.sequence_id IS NOT NULL) AS a,
         private.links_outside_tenant(a.deployments, a.calls, a.prospects, a.sequences) AS f
    LIMIT 1;
    IF v_link IS NOT NULL THEN
        PERFORM private.refuse_link_outside_tenant(v_link);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER agent_sms_links_within_tenant
    AFTER INSERT ON public.agent_sms
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION private.agent_sms_refuse_foreign_links();

-- Updates: only of the links, and only those the update sets (all of them when it moves
-- the SMS to another deployment): a call deleted elsewhere sets call_id to NULL, which
-- must not fail because of the other links.
CREATE FUNCTION private.agent_sms_refuse_foreign_link_update() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_moved boolean := NEW.deployment_id IS DISTINCT FROM OLD.deployment_id;
    v_link text;
BEGIN
    SELECT f.link INTO v_link
    FROM private.links_outside_tenant(
        ARRAY[NEW.deployment_id],
        ARRAY[CASE WHEN v_moved OR NEW.call_id IS DISTINCT FROM OLD.call_id
                   THEN NEW.call_id END],
        ARRAY[CASE WHEN v_moved OR NEW.prospect_id IS DISTINCT FROM OLD.prospect_id
                   THEN NEW.prospect_id END],
        ARRAY[CASE WHEN v_moved OR NEW.sequence_id IS DISTINCT FROM OLD.sequence_id
                   THEN NEW.sequence_id END]) AS f;
    IF v_link IS NOT NULL THEN
        PERFORM private.refuse_link_outside_tenant(v_link);
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER agent_sms_link_updates_within_tenant
    BEFORE UPDATE OF deployment_id, call_id, prospect_id, sequence_id ON public.agent_sms
    FOR EACH ROW
    WHEN (NEW.call_id IS NOT NULL OR NEW.prospect_id IS NOT NULL OR NEW.sequence_id IS NOT NULL)
    EXECUTE FUNCTION private.agent_sms_refuse_foreign_link_update();

-- No personal data in the database server's log. A failed statement is logged with its
-- error, and Postgres writes values into some errors itself: "Failing row contains
-- (...)" (the number, names and text) under a CHECK or NOT NULL violation, the quoted
-- value of a bad input. ingest_sms, whose items carry all of that, raises every failure
-- again without those values; its own checks and the retryable failures (serialization,
-- deadlock, lock timeout) carry none, and go on as they were. A caught error is never
-- logged; only the one raised here is.
CREATE FUNCTION private.raise_without_values(
    p_sqlstate text, p_message text, p_hint text, p_column text
) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Ours, the retryable ones and programming errors (class 42: names, never values).
    IF p_sqlstate LIKE 'VP%' OR p_sqlstate LIKE '42%' OR p_sqlstate IN ('40001', '40P01', '55P03')
    THEN
        RAISE EXCEPTION USING ERRCODE = p_sqlstate, MESSAGE = p_message,
            HINT = coalesce(p_hint, '');
    ELSIF p_sqlstate LIKE '23%' THEN
        -- Postgres names the constraint and column in the message, and puts the row's
        -- values in the detail, which stays behind.
        RAISE EXCEPTION USING ERRCODE = p_sqlstate, MESSAGE = p_message,
            HINT = coalesce(p_column, '');
    ELSIF p_sqlstate LIKE '22%' THEN
        RAISE EXCEPTION USING ERRCODE = p_sqlstate,
            MESSAGE = 'a value has an invalid format or is out of range';
    ELSE
        RAISE EXCEPTION USING ERRCODE = p_sqlstate, MESSAGE = 'the SMS could not be recorded';
    END IF;
END
$$;

-- p_messages: a JSON array of SMS objects whose keys are agent_sms columns, already
-- validated and normalised by the caller (phone in E.164, decimals, timestamps).
-- provider_status may be any Twilio message status; it is stored in the seed's terms.
-- Returns a JSON array in the same order: {"id", "created"} per recorded item, or
-- {"rejected": "<column>"} when a referenced record does not exist or belongs to another
-- client, or the status is not Twilio's, or {"conflict": "provider_message_sid"} when
-- the SID is recorded for another deployment, or {"gone": "provider_message_sid"} when
-- the SMS was erased at its recipient's request.
--
-- Idempotent: a SID already recorded (by an earlier call, a concurrent retry, or an
-- earlier item of the same batch) is not inserted again; its existing id is returned
-- with created = false. References are checked per item, so one bad item does not
-- sink the batch: it comes back with the field it got wrong. The erased SIDs and the
-- links are checked once for the whole batch.
-- The records a batch refers to, locked (KEY SHARE) until its transaction ends; the
-- deployments that exist. Run as the migrator, as links_outside_tenant is: the owner of
-- this project's tables, who runs ingest_sms, may not lock (UPDATE) or even see (their
-- row-level security) the platform's tables.
CREATE FUNCTION private.hold_referenced_records(p_messages jsonb) RETURNS SETOF uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT d.id FROM public.agent_deployments AS d
    WHERE d.id IN (SELECT (e ->> 'deployment_id')::uuid FROM jsonb_array_elements(p_messages) AS e)
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
END
$$;

CREATE FUNCTION public.ingest_sms(p_messages jsonb) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_outcome jsonb;
    v_results jsonb;
    v_sqlstate text;
    v_message text;
    v_hint text;
    v_column text;
    v_deployments uuid[];
BEGIN
    IF jsonb_typeof(p_messages) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', MESSAGE = 'messages must be a JSON array',
                              HINT = 'messages';
    END IF;
    -- Hold the referenced records until commit, so one deleted meanwhile is reported
    -- for its items instead of failing the whole batch at the foreign-key check.
    v_deployments := ARRAY(SELECT private.hold_referenced_records(p_messages));

    WITH decoded AS (
        SELECT e.ord, m.*, m.deployment_id = ANY (v_deployments) AS deployment_known,
            t.provider_status AS stored_status, n.status AS stored_sms_status
        FROM jsonb_array_elements(p_messages) WITH ORDINALITY AS e(item, ord)
        CROSS JOIN LATERAL jsonb_populate_record(NULL::public.agent_sms, e.item) AS m
        LEFT JOIN private.twilio_statuses AS t ON t.twilio_status = m.provider_status
        LEFT JOIN private.sms_provider_statuses AS n ON n.provider_status = t.provider_status
    ),
    erased AS (
        SELECT e.sid
        FROM private.erased_sids(ARRAY(SELECT provider_message_sid FROM decoded)) AS e(sid)
    ),
    foreign_links AS (
        SELECT f.item, f.link
        FROM (SELECT array_agg(deployment_id ORDER BY ord) AS deployments,
                     array_agg(call_id ORDER BY ord) AS calls,
                     array_agg(prospect_id ORDER BY ord) AS prospects,
                     array_agg(sequence_id ORDER BY ord) AS sequences
              FROM decoded) AS a,
             private.links_outside_tenant(a.deployments, a.calls, a.prospects, a.sequences) AS f
    ),
    checked AS (
        SELECT x.*,
            CASE
                -- Erased at its recipient's request: never recorded again.
                WHEN x.provider_message_sid IN (SELECT sid FROM erased) THEN 'erased'
                WHEN NOT x.deployment_known THEN 'deployment_id'
                WHEN l.link IS NOT NULL THEN l.link
                WHEN x.provider_status IS NOT NULL AND x.stored_status IS NULL
                    THEN 'provider_status'
            END AS rejected,
            gen_random_uuid() AS new_id
        FROM decoded AS x
        LEFT JOIN foreign_links AS l ON l.item = x.ord
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
            p.provider_message_sid, p.stored_status, coalesce(p.stored_sms_status, 'sent'),
            p.sent_at, p.provider_cost, coalesce(p.voipia_margin, 0), p.currency,
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
EXCEPTION
    WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_sqlstate = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
            v_hint = PG_EXCEPTION_HINT, v_column = COLUMN_NAME;
        PERFORM private.raise_without_values(v_sqlstate, v_message, v_hint, v_column);
        RETURN NULL;  -- never reached: the line above raises
END
$$;

COMMENT ON FUNCTION public.ingest_sms(jsonb) IS
    'Records SMS sent through n8n, idempotently on provider_message_sid; see the migration.';

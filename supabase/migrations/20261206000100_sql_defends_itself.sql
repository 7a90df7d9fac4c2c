-- SQL that defends itself. Supabase exposes every table, view and function of the
-- public schema to any signed-in user through its API, not only through our functions,
-- and an outside attack acting as such a user found rules that lived only in Python or
-- trusted their callers. Each rule below now holds however the SQL is reached
-- (tests/db/test_attacks.py acts as that attacker). The privileges themselves are one
-- reviewed set, in the next migration.

-- 1. agent_sms is a ledger that only the service writes. Every column is a fact of
-- sending (recipient, text, links, workflow: n8n through ingest_sms), of delivery
-- (Twilio, through record_sms_status) or of money (Twilio's price and Voipia's margin),
-- so a client's admin reads their clients' SMS like a viewer and writes none of them:
-- the seed's admins_manage_sms (INSERT/UPDATE/DELETE) is narrowed to nothing. Deleting
-- an SMS is retention's work (archive, erasure), as the database's owner.
DROP POLICY admins_insert_sms ON public.agent_sms;
DROP POLICY admins_update_sms ON public.agent_sms;
DROP POLICY admins_delete_sms ON public.agent_sms;

-- 2. Every RPC bounds what it scans: a finite period of at most 366 days (so at most
-- 367 buckets of a series), and at most 100 failure reasons. The HTTP layer leaves this
-- rule to SQL.
CREATE OR REPLACE FUNCTION private.check_period(p_start timestamptz, p_end timestamptz)
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

-- The period is checked before the previous one is computed from it (an infinite end
-- failed there, as an arithmetic error rather than the rule).
CREATE OR REPLACE FUNCTION public.get_sms_metrics(
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
    v_current jsonb;
    v_previous jsonb;
BEGIN
    PERFORM private.check_period(p_start_date, p_end_date);
    v_deployments := private.sms_scope(p_client_id, p_deployment_id, p_agent_type_name);

    v_current := private.sms_period_figures(v_deployments, p_start_date, p_end_date);
    v_previous := private.sms_period_figures(
        v_deployments, p_start_date - (p_end_date - p_start_date), p_start_date);

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

CREATE OR REPLACE FUNCTION public.get_sms_failure_reasons(
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
BEGIN
    PERFORM private.check_period(p_start_date, p_end_date);
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_limit',
            MESSAGE = 'the number of failure reasons must be from 1 to 100';
    END IF;
    v_deployments := private.sms_scope(p_client_id, p_deployment_id, p_agent_type_name);
    PERFORM private.check_scope(v_deployments);
    RETURN (
        SELECT coalesce(jsonb_agg(jsonb_build_object('failure_reason', r.reason, 'count', r.count)
                                  ORDER BY r.count DESC, r.reason), '[]'::jsonb)
        FROM (
            SELECT coalesce(s.failure_reason, 'Unknown') AS reason, count(*) AS count
            FROM public.agent_sms AS s
            WHERE (v_deployments IS NULL OR s.deployment_id = ANY (v_deployments))
              AND s.status = 'failed'
              AND s.sent_at >= p_start_date AND s.sent_at < p_end_date
            GROUP BY 1
            ORDER BY 2 DESC, 1
            LIMIT p_limit
        ) AS r
    );
END
$$;

-- Reconcile's claims, bounded too (they are the service's, but an RPC defends itself
-- whoever holds the key): at most 5,000 SMS a run, sent within 400 days.
CREATE OR REPLACE FUNCTION public.claim_sms_to_reconcile(
    p_min_age interval, p_max_age interval, p_limit integer
) RETURNS jsonb
LANGUAGE plpgsql
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

CREATE OR REPLACE FUNCTION public.release_sms_to_reconcile(p_sids text[]) RETURNS integer
LANGUAGE plpgsql
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

-- 3. Every function runs with a fixed search path, the session's temporary schema
-- explicitly last. With search_path = '' Postgres still searches pg_temp first for
-- relations and types: a user's pg_temp.jsonb, met by auth.uid()'s cast inside a
-- SECURITY DEFINER function, ran the user's code as the function's owner. Functions
-- created here say so; the others are altered at the end.
--
-- A function with a SET clause is never inlined into the query that calls it, and a SQL
-- function called from PL/pgSQL is then planned again on every call. The small helpers
-- that ran per row or per callback (the status mappings, the erased-SID check) cost a
-- callback 28% more and a 500-SMS ingest 23% more that way. So the status mappings are
-- data, joined where they are needed; the per-SMS rules are set-based functions, called
-- once per statement for all its rows; the few scalar helpers left are PL/pgSQL, which
-- keeps its plans.

-- The seed's provider statuses: the KPI status each counts as, and the order a status
-- moves in. A status replaces the current one only when it ranks higher, so the outcome
-- does not depend on the order reports arrive in, a repeated report changes nothing, and
-- a final status is never replaced by a non-final one; among finals, a delivery receipt
-- wins over a failure.
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

CREATE OR REPLACE FUNCTION private.twilio_failure_reason(error_code integer) RETURNS text
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

CREATE OR REPLACE FUNCTION private.pending_events_lock_key() RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN 7419263580142; END $$;

CREATE OR REPLACE FUNCTION private.retention_run_lock_key() RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN 7419263580143; END $$;

CREATE OR REPLACE FUNCTION private.archive_write_lock_key() RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN 7419263580144; END $$;

-- The status move itself, as in 20251128000100_status_reports_written_once.sql, with
-- the mappings read from their tables.
CREATE OR REPLACE FUNCTION private.apply_sms_status(
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

DROP FUNCTION private.provider_status_of(text);
DROP FUNCTION private.sms_status_of(text);
DROP FUNCTION private.provider_status_rank(text);

-- 4. An SMS's links stay inside its tenant, whoever writes it: the call, the prospect
-- and the sequence it points at belong to a deployment of the same client as its own
-- deployment. Written once, for a set of SMS (item n of the result is element n of the
-- arrays): ingest_sms answers each item that breaks it with the column, and triggers
-- refuse any other write that would (through the API with the service key, a backfill).
-- A record that does not exist and one of another client get the same answer, so the
-- check tells nothing about other tenants.
CREATE FUNCTION private.links_outside_tenant(
    p_deployment_ids uuid[], p_call_ids uuid[], p_prospect_ids uuid[], p_sequence_ids uuid[]
) RETURNS TABLE (item bigint, link text)
LANGUAGE plpgsql STABLE
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

-- Erased SIDs stay erased on every write path. Which of these SIDs were erased, written
-- once: every reader of private.sms_erased_sids goes through it.
CREATE FUNCTION private.erased_sids(p_sids text[]) RETURNS SETOF text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT DISTINCT u.sid
    FROM unnest(p_sids) AS u(sid)
    JOIN private.sms_erased_sids AS e ON e.sid_sha256 = sha256(convert_to(u.sid, 'UTF8'));
END
$$;

DROP FUNCTION private.is_erased_sms(text);

-- Inserts, as in 20251126000200_erased_sms_stay_erased.sql (40001: an erasure that
-- committed while the insert waited; ingest's retry then answers the item 410).
CREATE OR REPLACE FUNCTION private.agent_sms_refuse_erased() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM private.erased_sids(ARRAY(SELECT n.provider_message_sid
                                                     FROM new_rows AS n))) THEN
        RAISE EXCEPTION USING ERRCODE = '40001',
            MESSAGE = 'an SMS erased at its recipient''s request may not be recorded again';
    END IF;
    RETURN NULL;
END
$$;

-- Updates that give an SMS an erased SID: refused for good (410).
CREATE FUNCTION private.agent_sms_refuse_erased_sid() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM private.erased_sids(ARRAY[NEW.provider_message_sid])) THEN
        RAISE EXCEPTION USING ERRCODE = 'VP410', HINT = 'provider_message_sid',
            MESSAGE = 'an SMS erased at its recipient''s request may not be recorded again';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER agent_sms_refuse_erased_sid
    BEFORE UPDATE OF provider_message_sid ON public.agent_sms
    FOR EACH ROW
    WHEN (NEW.provider_message_sid IS DISTINCT FROM OLD.provider_message_sid)
    EXECUTE FUNCTION private.agent_sms_refuse_erased_sid();

-- 5. No personal data in the database server's log. A failed statement is logged with
-- its error, and Postgres writes values into some errors itself: "Failing row contains
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

-- As in 20251126000200_erased_sms_stay_erased.sql, with the status mapping joined, the
-- erased SIDs and the links checked once for the whole batch, and every failure raised
-- without values.
CREATE OR REPLACE FUNCTION public.ingest_sms(p_messages jsonb) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_outcome jsonb;
    v_results jsonb;
    v_sqlstate text;
    v_message text;
    v_hint text;
    v_column text;
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
            t.provider_status AS stored_status, n.status AS stored_sms_status
        FROM jsonb_array_elements(p_messages) WITH ORDINALITY AS e(item, ord)
        CROSS JOIN LATERAL jsonb_populate_record(NULL::public.agent_sms, e.item) AS m
        LEFT JOIN public.agent_deployments AS d ON d.id = m.deployment_id
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
                WHEN x.deployment_client_id IS NULL THEN 'deployment_id'
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
EXCEPTION
    WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_sqlstate = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
            v_hint = PG_EXCEPTION_HINT, v_column = COLUMN_NAME;
        PERFORM private.raise_without_values(v_sqlstate, v_message, v_hint, v_column);
        RETURN NULL;  -- never reached: the line above raises
END
$$;

-- A status report: its arguments are checked before anything is written, so no insert
-- can fail with the recipient's number in its "Failing row". A report already recorded
-- (a replayed callback: the same SID, status, error code and carrier time) adds no
-- event row: the history holds each report once.
-- Reports recorded more than once before this (every replay was) keep their first row.
DELETE FROM public.agent_sms_events AS e
USING public.agent_sms_events AS first
WHERE first.provider_message_sid = e.provider_message_sid
  AND first.twilio_status = e.twilio_status
  AND first.error_code IS NOT DISTINCT FROM e.error_code
  AND first.reported_at IS NOT DISTINCT FROM e.reported_at
  AND first.id < e.id;
DROP INDEX public.idx_agent_sms_events_sid;
CREATE UNIQUE INDEX idx_agent_sms_events_report ON public.agent_sms_events
    (provider_message_sid, twilio_status, error_code, reported_at) NULLS NOT DISTINCT;

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

-- 6. Planner statistics never sample a person: ANALYZE keeps the most common values
-- and a histogram of every column it samples, in pg_statistic, where an erased number,
-- name or text would outlive the erasure. These columns are never sampled (no query
-- plans on their distribution; equality on phone_number has its own index). The old row
-- versions an erasure leaves are vacuumed by the erasure itself (functions/retention).
ALTER TABLE public.agent_sms
    ALTER COLUMN phone_number SET STATISTICS 0,
    ALTER COLUMN first_name SET STATISTICS 0,
    ALTER COLUMN last_name SET STATISTICS 0,
    ALTER COLUMN message_content SET STATISTICS 0,
    ALTER COLUMN metadata SET STATISTICS 0;
ALTER TABLE public.agent_sms_events ALTER COLUMN pending_phone_number SET STATISTICS 0;

-- The indexes that find a number (erasure, the contact timeline) hash it: a B-tree keeps
-- key values in its inner pages and page bounds, which no VACUUM removes, so an erased
-- number stayed in idx_agent_sms_phone_number. A hash index holds the hash code only.
DROP INDEX public.idx_agent_sms_phone_number;
CREATE INDEX idx_agent_sms_phone_number ON public.agent_sms USING hash (phone_number);
DROP INDEX public.idx_agent_sms_events_pending_phone;
CREATE INDEX idx_agent_sms_events_pending_phone ON public.agent_sms_events
    USING hash (pending_phone_number) WHERE pending_phone_number IS NOT NULL;

-- NaN is a numeric, and greater than every number: it passed the seed's ">= 0" checks
-- and turned a client's total cost into NaN.
ALTER TABLE public.agent_sms ADD CONSTRAINT agent_sms_amounts_finite_check
    CHECK (provider_cost <> 'NaN' AND voipia_margin <> 'NaN');

-- The fixed search path, for every function not created or replaced above (see 3).
ALTER FUNCTION private.accessible_deployment_ids(boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION private.agent_sms_apply_pending_events() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION private.apply_pending_sms_events(text[]) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION private.apply_sms_event(public.agent_sms_events)
    SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION private.check_scope(uuid[]) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION private.commit_archive_object(text, uuid[], bigint[], text, bigint, bytea[], integer[])
    SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION private.complete_erasure(text, bytea) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION private.erase_hot_sms(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION private.percentage(numeric, numeric) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION private.remember_erased_sids(text[]) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION private.sms_due_for_archive(timestamptz, integer)
    SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION private.sms_period_figures(uuid[], timestamptz, timestamptz)
    SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION private.sms_scope(uuid, uuid, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION public.agent_sms_touch_updated_at() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION public.get_sms_timeseries(timestamptz, timestamptz, text, uuid, uuid, text)
    SET search_path = pg_catalog, pg_temp;

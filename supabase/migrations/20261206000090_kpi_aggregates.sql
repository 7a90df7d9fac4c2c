-- KPIs that outlive the hot table, and stay fast on long periods.
--
-- What every KPI adds up is kept in aggregates, per deployment, message type, status
-- and failure reason, by the hour and, for long periods, by the day (UTC). They hold:
--   * every SMS of a sealed day: days before private.sms_kpi_seal's sealed_before,
--     which the retention run moves forward past the reconcile window, one day per
--     transaction (private.seal_next_sms_day);
--   * every SMS deleted from agent_sms before its day was sealed: archived or erased,
--     its anonymous contribution stays.
-- A KPI reads the aggregates for the whole period and agent_sms only after
-- sealed_before (private.sms_kpi_parts). A late change to a sealed SMS (a callback, a
-- price) moves its contribution in the same transaction, and so does an SMS recorded
-- late for a sealed day. Deleting a sealed SMS changes no aggregate.
--
-- Which workflows were active, and which recipients were sent to, do not add up across
-- hours: they are kept as sets of hours (hours since the epoch, as int4multirange), per
-- deployment, month and workflow, and per deployment and recipient, from the moment an
-- SMS is recorded. Erasure removes the recipient (its number, its hours);
-- the archive's expiry removes the hours it no longer holds.
--
-- Periods are whole UTC hours: every KPI function widens the period it is asked for to
-- the hours it touches (private.whole_hours).

-- The sums and counts from which every KPI follows exactly, for one bucket of one
-- deployment, message type, status and failure reason: an hour (grain 'hour'), or the
-- same sums per day ('day'), what long periods read. Sums of amounts are zero when
-- nothing was priced; billed_count tells them apart from a sum of zero.
CREATE TABLE private.sms_totals (
    grain          text        NOT NULL CONSTRAINT sms_totals_grain_check
        CHECK (grain IN ('hour', 'day')),
    starts_at      timestamptz NOT NULL,
    deployment_id  uuid        NOT NULL,
    message_type   text,
    status         text,
    failure_reason text,
    sms            bigint      NOT NULL,
    unpriced       bigint      NOT NULL,
    billed_count   bigint      NOT NULL,
    characters     bigint      NOT NULL,
    -- At most the smallest (at least the largest) count of the bucket's SMS: an SMS that
    -- moves to another status leaves its length behind, but stays in the same hour,
    -- deployment and message type (agent_sms_fixed_columns), which is what a minimum
    -- or maximum is ever taken over.
    min_characters integer,
    max_characters integer,
    provider_cost  numeric     NOT NULL,
    margin         numeric     NOT NULL,
    billed         numeric     NOT NULL,
    linked         bigint      NOT NULL,
    delivery_time  interval    NOT NULL,
    timed          bigint      NOT NULL
);
CREATE UNIQUE INDEX idx_sms_totals_key ON private.sms_totals
    (grain, deployment_id, starts_at, message_type, status, failure_reason) NULLS NOT DISTINCT;

COMMENT ON TABLE private.sms_totals IS
    'KPI sums per UTC hour and day: sealed days, and SMS deleted before theirs was sealed.';

-- Days before sealed_before are in the aggregates; no SMS sent from archived_before on
-- has been archived (no row: neither has happened).
CREATE TABLE private.sms_kpi_seal (
    singleton       boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    sealed_before   timestamptz NOT NULL DEFAULT '-infinity'
        CONSTRAINT sms_kpi_seal_whole_day_check
        CHECK (sealed_before = date_trunc('day', sealed_before, 'UTC')),
    archived_before timestamptz NOT NULL DEFAULT '-infinity'
);

-- The hours in which each deployment sent SMS from each workflow, a row per month (UTC):
-- a period reads the months it touches.
CREATE TABLE private.sms_workflow_hours (
    deployment_id uuid           NOT NULL,
    month         timestamptz    NOT NULL,
    workflow_id   text           NOT NULL,
    hours         int4multirange NOT NULL,
    PRIMARY KEY (deployment_id, month, workflow_id)
);

-- Recipients, numbered: what unique_recipients counts is these ids, which hash and
-- compare as integers. At random, not in sequence: an id a tenant sees for its own
-- recipient tells nothing of when, or whether, another tenant sent to the number (a PK
-- collision is skipped by ON CONFLICT and retried, note_sms_hours). Personal data:
-- erasure deletes the number, and with it its hours. Unique through a hash index, for
-- the reason idx_agent_sms_phone_number is one.
CREATE TABLE private.sms_recipients (
    id           bigint PRIMARY KEY
        DEFAULT ('x' || left(replace(gen_random_uuid()::text, '-', ''), 16))::bit(64)::bigint,
    phone_number text   NOT NULL,
    CONSTRAINT sms_recipients_phone_number_excl EXCLUDE USING hash (phone_number WITH =)
);
ALTER TABLE private.sms_recipients ALTER COLUMN phone_number SET STATISTICS 0;

-- The hours in which each deployment sent SMS to each recipient.
CREATE TABLE private.sms_recipient_hours (
    deployment_id uuid           NOT NULL,
    recipient_id  bigint         NOT NULL REFERENCES private.sms_recipients ON DELETE CASCADE,
    hours         int4multirange NOT NULL,
    PRIMARY KEY (deployment_id, recipient_id)
);
-- Counting distinct recipients over many deployments walks this index in recipient
-- order, every deployment's hours of a recipient together: a streaming count, where a
-- hash of millions of ids would spill to disk (4 s against 2 s for two 366-day periods
-- at 100 times the seed's volume, one scan for both).
CREATE INDEX idx_sms_recipient_hours_by_recipient ON private.sms_recipient_hours (recipient_id)
    INCLUDE (deployment_id, hours);

-- Read with the caller's rights, as agent_sms is: the same one policy.
ALTER TABLE private.sms_totals ENABLE ROW LEVEL SECURITY;
ALTER TABLE private.sms_workflow_hours ENABLE ROW LEVEL SECURITY;
CREATE POLICY users_view_accessible_totals ON private.sms_totals
    FOR SELECT TO authenticated
    USING (deployment_id = ANY ((SELECT private.accessible_deployment_ids())::uuid[]));
CREATE POLICY users_view_accessible_workflow_hours ON private.sms_workflow_hours
    FOR SELECT TO authenticated
    USING (deployment_id = ANY ((SELECT private.accessible_deployment_ids())::uuid[]));

-- The hour an instant falls in, as hours since the epoch.
CREATE FUNCTION private.epoch_hour(p_at timestamptz) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT floor(EXTRACT(EPOCH FROM p_at) / 3600)::integer $$;

-- A period widened to the whole UTC hours it touches.
CREATE FUNCTION private.whole_hours(p_start timestamptz, p_end timestamptz,
                                    OUT starts_at timestamptz, OUT ends_at timestamptz)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT date_trunc('hour', p_start, 'UTC'),
           date_trunc('hour', p_end - interval '1 microsecond', 'UTC') + interval '1 hour'
$$;

CREATE FUNCTION private.sealed_before() RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce((SELECT sealed_before FROM private.sms_kpi_seal), '-infinity') $$;

CREATE FUNCTION private.archived_before() RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce((SELECT archived_before FROM private.sms_kpi_seal), '-infinity') $$;

-- The archive moved SMS sent up to p_last: a period that reaches its hour counts
-- recipients from their sets of hours. (The hour, not the instant: an API role reads
-- this table, and an SMS's sending time is its tenant's.)
CREATE FUNCTION private.note_archived_through(p_last timestamptz) RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO private.sms_kpi_seal AS k (archived_before)
    VALUES (date_trunc('hour', p_last, 'UTC') + interval '1 hour')
    ON CONFLICT (singleton) DO UPDATE
    SET archived_before = greatest(k.archived_before, excluded.archived_before);
$$;

-- What the aggregates count of an SMS: its key and measures, without its text or
-- number, so that a day of a million SMS folds in one array well under 1 GB.
CREATE TYPE private.sms_fact AS (
    sent_at         timestamptz,
    deployment_id   uuid,
    message_type    text,
    status          text,
    failure_reason  text,
    character_count integer,
    provider_cost   numeric,
    voipia_margin   numeric,
    billed_cost     numeric,
    call_id         uuid,
    delivered_at    timestamptz
);

CREATE FUNCTION private.sms_fact(p_sms public.agent_sms) RETURNS private.sms_fact
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ROW(p_sms.sent_at, p_sms.deployment_id, p_sms.message_type, p_sms.status,
               p_sms.failure_reason, p_sms.character_count, p_sms.provider_cost,
               p_sms.voipia_margin, p_sms.billed_cost, p_sms.call_id,
               p_sms.delivered_at)::private.sms_fact
$$;

-- Move SMS into the aggregates (p_added) or out of them (p_removed): their sums and
-- counts, by the hour and by the day. A bucket left with no SMS goes. Rows are upserted
-- in key order, as every writer does, so that two folds never deadlock.
CREATE FUNCTION private.fold_sms_totals(p_added private.sms_fact[], p_removed private.sms_fact[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    WITH moved AS (
        SELECT a, 1 AS sign FROM unnest(p_added) AS a
        UNION ALL
        SELECT r, -1 FROM unnest(p_removed) AS r
    ), hourly AS (
        SELECT date_trunc('hour', (m.a).sent_at, 'UTC') AS starts_at, (m.a).deployment_id,
            (m.a).message_type, (m.a).status, (m.a).failure_reason,
            sum(m.sign) AS sms,
            sum(m.sign) FILTER (WHERE (m.a).provider_cost IS NULL) AS unpriced,
            sum(m.sign) FILTER (WHERE (m.a).billed_cost IS NOT NULL) AS billed_count,
            sum(m.sign * (m.a).character_count) AS characters,
            min((m.a).character_count) FILTER (WHERE m.sign > 0) AS min_characters,
            max((m.a).character_count) FILTER (WHERE m.sign > 0) AS max_characters,
            sum(m.sign * (m.a).provider_cost) AS provider_cost,
            sum(m.sign * (m.a).voipia_margin) AS margin,
            sum(m.sign * (m.a).billed_cost) AS billed,
            sum(m.sign) FILTER (WHERE (m.a).call_id IS NOT NULL) AS linked,
            sum(m.sign * ((m.a).delivered_at - (m.a).sent_at))
                FILTER (WHERE (m.a).status = 'delivered') AS delivery_time,
            sum(m.sign) FILTER (WHERE (m.a).status = 'delivered'
                                  AND (m.a).delivered_at IS NOT NULL) AS timed
        FROM moved AS m
        GROUP BY 1, 2, 3, 4, 5
    ), deltas AS (
        SELECT 'hour' AS grain, h.* FROM hourly AS h
        UNION ALL
        SELECT 'day', date_trunc('day', h.starts_at, 'UTC'), h.deployment_id, h.message_type,
            h.status, h.failure_reason, sum(h.sms), sum(h.unpriced), sum(h.billed_count),
            sum(h.characters), min(h.min_characters), max(h.max_characters),
            sum(h.provider_cost), sum(h.margin), sum(h.billed), sum(h.linked),
            sum(h.delivery_time), sum(h.timed)
        FROM hourly AS h
        GROUP BY 2, 3, 4, 5, 6
    )
    INSERT INTO private.sms_totals AS t
    SELECT d.grain, d.starts_at, d.deployment_id, d.message_type, d.status, d.failure_reason,
        d.sms, coalesce(d.unpriced, 0), coalesce(d.billed_count, 0), d.characters,
        d.min_characters, d.max_characters, coalesce(d.provider_cost, 0),
        coalesce(d.margin, 0), coalesce(d.billed, 0), coalesce(d.linked, 0),
        coalesce(d.delivery_time, interval '0'), coalesce(d.timed, 0)
    FROM deltas AS d
    ORDER BY d.grain, d.deployment_id, d.starts_at, d.message_type, d.status, d.failure_reason
    ON CONFLICT (grain, deployment_id, starts_at, message_type, status, failure_reason)
    DO UPDATE SET
        sms = t.sms + excluded.sms, unpriced = t.unpriced + excluded.unpriced,
        billed_count = t.billed_count + excluded.billed_count,
        characters = t.characters + excluded.characters,
        min_characters = least(t.min_characters, excluded.min_characters),
        max_characters = greatest(t.max_characters, excluded.max_characters),
        provider_cost = t.provider_cost + excluded.provider_cost,
        margin = t.margin + excluded.margin, billed = t.billed + excluded.billed,
        linked = t.linked + excluded.linked,
        delivery_time = t.delivery_time + excluded.delivery_time,
        timed = t.timed + excluded.timed;

    IF cardinality(p_removed) > 0 THEN
        -- A bucket an SMS is taken out of held it: anything else is a bug, never a
        -- figure to publish.
        IF EXISTS (SELECT FROM private.sms_totals AS t, unnest(p_removed) AS r
                   WHERE t.sms < 0 AND t.grain = 'hour' AND t.deployment_id = r.deployment_id
                     AND t.starts_at = date_trunc('hour', r.sent_at, 'UTC')) THEN
            RAISE EXCEPTION 'an aggregate would hold fewer than no SMS';
        END IF;
        DELETE FROM private.sms_totals AS t
        USING unnest(p_removed) AS r
        WHERE t.sms = 0 AND t.deployment_id = r.deployment_id
          AND t.starts_at = date_trunc(t.grain, r.sent_at, 'UTC');
    END IF;
END
$$;

-- The hours each deployment and workflow, and each deployment and recipient, were
-- active in: added as SMS are recorded, never taken back (but by erasure and expiry).
-- A set that already holds the hour is left alone, and unlocked; the others are upserted
-- in key order. An erasure may delete a recipient between these statements: then the
-- statement that found it gone fails as a serialization failure (40001), which every
-- caller retries, and the retry numbers the recipient again.
CREATE FUNCTION private.note_sms_hours(p_rows public.agent_sms[]) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO private.sms_workflow_hours AS w (deployment_id, month, workflow_id, hours)
    SELECT n.deployment_id, date_trunc('month', n.sent_at, 'UTC'), n.workflow_id,
        range_agg(int4range(private.epoch_hour(n.sent_at), private.epoch_hour(n.sent_at) + 1))
    FROM unnest(p_rows) AS n
    WHERE n.workflow_id IS NOT NULL
      AND NOT EXISTS (SELECT FROM private.sms_workflow_hours AS o
                      WHERE o.deployment_id = n.deployment_id
                        AND o.month = date_trunc('month', n.sent_at, 'UTC')
                        AND o.workflow_id = n.workflow_id
                        AND o.hours @> private.epoch_hour(n.sent_at))
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (deployment_id, month, workflow_id) DO UPDATE SET hours = w.hours + excluded.hours;

    INSERT INTO private.sms_recipients (phone_number)
    SELECT DISTINCT n.phone_number FROM unnest(p_rows) AS n
    WHERE NOT EXISTS (SELECT FROM private.sms_recipients AS r
                      WHERE r.phone_number = n.phone_number)
    ORDER BY 1
    ON CONFLICT DO NOTHING;

    BEGIN
        INSERT INTO private.sms_recipient_hours AS h (deployment_id, recipient_id, hours)
        SELECT n.deployment_id, r.id,
            range_agg(int4range(private.epoch_hour(n.sent_at),
                                private.epoch_hour(n.sent_at) + 1))
        FROM unnest(p_rows) AS n
        -- A number at a time, through the hash index: the planner, which keeps no
        -- statistics of numbers, would otherwise hash the whole dictionary for a batch.
        CROSS JOIN LATERAL (SELECT d.id FROM private.sms_recipients AS d
                            WHERE d.phone_number = n.phone_number LIMIT 1) AS r
        WHERE NOT EXISTS (SELECT FROM private.sms_recipient_hours AS o
                          WHERE o.deployment_id = n.deployment_id AND o.recipient_id = r.id
                            AND o.hours @> private.epoch_hour(n.sent_at))
        GROUP BY 1, 2
        ORDER BY 1, 2
        ON CONFLICT (deployment_id, recipient_id) DO UPDATE SET hours = h.hours + excluded.hours;
    EXCEPTION WHEN foreign_key_violation THEN
        RAISE EXCEPTION USING ERRCODE = '40001',
            MESSAGE = 'a recipient was erased while its SMS was recorded';
    END;
    IF EXISTS (SELECT FROM unnest(p_rows) AS n
               WHERE NOT EXISTS (SELECT FROM private.sms_recipients AS r
                                 WHERE r.phone_number = n.phone_number)) THEN
        RAISE EXCEPTION USING ERRCODE = '40001',
            MESSAGE = 'a recipient could not be numbered yet';
    END IF;
END
$$;

-- The triggers that keep the aggregates, one per kind of write (a trigger with
-- transition tables serves one). They run as the tables' owner, whoever writes.
CREATE FUNCTION private.agent_sms_kpis_inserted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_sealed_before timestamptz := private.sealed_before();
BEGIN
    PERFORM private.note_sms_hours(ARRAY(SELECT n::public.agent_sms FROM new_rows AS n));
    IF EXISTS (SELECT FROM new_rows AS n WHERE n.sent_at < v_sealed_before) THEN
        PERFORM private.fold_sms_totals(
            ARRAY(SELECT private.sms_fact(n::public.agent_sms) FROM new_rows AS n
                  WHERE n.sent_at < v_sealed_before), '{}');
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION private.agent_sms_kpis_updated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_sealed_before timestamptz := private.sealed_before();
BEGIN
    IF EXISTS (SELECT FROM old_rows AS o WHERE o.sent_at < v_sealed_before) THEN
        PERFORM private.fold_sms_totals(
            ARRAY(SELECT private.sms_fact(n::public.agent_sms) FROM new_rows AS n
                  WHERE n.sent_at < v_sealed_before),
            ARRAY(SELECT private.sms_fact(o::public.agent_sms) FROM old_rows AS o
                  WHERE o.sent_at < v_sealed_before));
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION private.agent_sms_kpis_deleted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_sealed_before timestamptz := private.sealed_before();
BEGIN
    IF EXISTS (SELECT FROM old_rows AS o WHERE o.sent_at >= v_sealed_before) THEN
        PERFORM private.fold_sms_totals(
            ARRAY(SELECT private.sms_fact(o::public.agent_sms) FROM old_rows AS o
                  WHERE o.sent_at >= v_sealed_before), '{}');
    END IF;
    RETURN NULL;
END
$$;

-- Triggers of the same event fire in the order of their names. This one's comes before
-- agent_sms_apply_pending_events': an SMS recorded late for a sealed day is in the
-- aggregates before a report that waited for it moves it out of its first status.
CREATE TRIGGER agent_sms_add_to_kpis
    AFTER INSERT ON public.agent_sms
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION private.agent_sms_kpis_inserted();
CREATE TRIGGER agent_sms_move_in_kpis
    AFTER UPDATE ON public.agent_sms
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION private.agent_sms_kpis_updated();
CREATE TRIGGER agent_sms_keep_in_kpis
    AFTER DELETE ON public.agent_sms
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION private.agent_sms_kpis_deleted();

-- What an SMS is counted under never changes once it is recorded: its deployment, hour,
-- message type, workflow, recipient and text (and so its length). Only its status,
-- its amounts and its links move.
CREATE FUNCTION private.agent_sms_refuse_fixed_column_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'agent_sms',
        MESSAGE = 'an SMS''s deployment, sending time, type, workflow, number and text'
                  ' are fixed once it is recorded';
END
$$;

CREATE TRIGGER agent_sms_fixed_columns
    BEFORE UPDATE ON public.agent_sms
    FOR EACH ROW
    WHEN (NEW.deployment_id IS DISTINCT FROM OLD.deployment_id
          OR NEW.sent_at IS DISTINCT FROM OLD.sent_at
          OR NEW.message_type IS DISTINCT FROM OLD.message_type
          OR NEW.workflow_id IS DISTINCT FROM OLD.workflow_id
          OR NEW.phone_number IS DISTINCT FROM OLD.phone_number
          OR NEW.message_content IS DISTINCT FROM OLD.message_content)
    EXECUTE FUNCTION private.agent_sms_refuse_fixed_column_change();

-- Seal the next day before p_before (UTC days) that holds SMS, with the empty days
-- before it: fold its SMS into the aggregates and move sealed_before past it. Writes
-- to agent_sms wait meanwhile (SHARE), so that none slips between the fold and the
-- move. Returns the new sealed_before, or NULL when nothing is left to seal.
CREATE FUNCTION private.seal_next_sms_day(p_before timestamptz) RETURNS timestamptz
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- Writes queue behind a lock that waits: a seal that cannot have the table at once (a
-- VACUUM holds it, say) gives up (55P03) rather than hold every write back.
SET lock_timeout = '2s'
AS $$
DECLARE
    v_limit timestamptz := date_trunc('day', p_before, 'UTC');
    v_from timestamptz;
    v_to timestamptz;
BEGIN
    LOCK TABLE public.agent_sms IN SHARE MODE;
    INSERT INTO private.sms_kpi_seal DEFAULT VALUES ON CONFLICT DO NOTHING;
    SELECT sealed_before INTO v_from FROM private.sms_kpi_seal FOR UPDATE;
    IF v_from >= v_limit THEN
        RETURN NULL;
    END IF;
    SELECT date_trunc('day', min(s.sent_at), 'UTC') + interval '1 day' INTO v_to
    FROM public.agent_sms AS s
    WHERE s.sent_at >= v_from AND s.sent_at < v_limit;
    v_to := coalesce(v_to, v_limit);
    PERFORM private.fold_sms_totals(
        ARRAY(SELECT private.sms_fact(s) FROM public.agent_sms AS s
              WHERE s.sent_at >= v_from AND s.sent_at < v_to), '{}');
    UPDATE private.sms_kpi_seal SET sealed_before = v_to;
    RETURN v_to;
END
$$;

-- The archive's expiry: the recipients' hours before p_before go with it, and a
-- recipient left with none.
CREATE FUNCTION private.expire_recipient_hours(p_before timestamptz) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_cut int4multirange := int4multirange(int4range(NULL, private.epoch_hour(p_before)));
    v_forgotten integer;
BEGIN
    UPDATE private.sms_recipient_hours SET hours = hours - v_cut WHERE hours && v_cut;
    DELETE FROM private.sms_recipient_hours WHERE isempty(hours);
    DELETE FROM private.sms_recipients AS r
    WHERE NOT EXISTS (SELECT FROM private.sms_recipient_hours AS h WHERE h.recipient_id = r.id);
    GET DIAGNOSTICS v_forgotten = ROW_COUNT;
    RETURN v_forgotten;
END
$$;

-- What a KPI adds up over [p_start, p_end) (whole hours), for the given deployments
-- (NULL: whatever row-level security lets the caller see): the aggregates' whole days
-- and edge hours, and the unsealed rows of agent_sms, by deployment, message type,
-- status and failure reason, and by part of the period: its days if p_by_day, else
-- [p_start, p_split) and [p_split, p_end) (a whole hour; NULL: the period is one part),
-- each keyed by its first instant.
CREATE FUNCTION private.sms_kpi_parts(
    p_deployments uuid[], p_start timestamptz, p_end timestamptz, p_by_day boolean,
    p_split timestamptz DEFAULT NULL
) RETURNS TABLE (
    starts_at timestamptz, deployment_id uuid, message_type text, status text,
    failure_reason text, sms bigint, unpriced bigint, billed_count bigint,
    characters bigint, min_characters integer, max_characters integer,
    provider_cost numeric, margin numeric, billed numeric, linked bigint,
    delivery_time interval, timed bigint
)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v_sealed_before timestamptz := private.sealed_before();
    v_first_day timestamptz := date_trunc('day', p_start - interval '1 microsecond', 'UTC')
                               + interval '1 day';
    v_last_day timestamptz := greatest(date_trunc('day', p_end, 'UTC'), v_first_day);
    v_split timestamptz := coalesce(p_split, p_start);
    -- A day the split cuts is read by the hour.
    v_split_day timestamptz := CASE WHEN v_split <> date_trunc('day', v_split, 'UTC')
                                    THEN date_trunc('day', v_split, 'UTC') END;
BEGIN
    PERFORM private.check_scope(p_deployments);
    IF p_start <> date_trunc('hour', p_start, 'UTC') OR p_end <> date_trunc('hour', p_end, 'UTC')
       OR v_split <> date_trunc('hour', v_split, 'UTC') OR v_split < p_start OR v_split > p_end THEN
        RAISE EXCEPTION 'a KPI period is whole hours, and split within it';
    END IF;
    RETURN QUERY
    SELECT x.part, x.deployment_id, x.message_type, x.status, x.failure_reason,
        sum(x.sms)::bigint, sum(x.unpriced)::bigint, sum(x.billed_count)::bigint,
        sum(x.characters)::bigint, min(x.min_characters), max(x.max_characters),
        sum(x.provider_cost), sum(x.margin), sum(x.billed), sum(x.linked)::bigint,
        sum(x.delivery_time), sum(x.timed)::bigint
    FROM (
        SELECT CASE WHEN p_by_day THEN t.starts_at
                    WHEN t.starts_at >= v_split THEN v_split ELSE p_start END AS part,
            t.deployment_id, t.message_type, t.status, t.failure_reason, t.sms, t.unpriced,
            t.billed_count, t.characters, t.min_characters, t.max_characters,
            t.provider_cost, t.margin, t.billed, t.linked, t.delivery_time, t.timed
        FROM private.sms_totals AS t
        WHERE t.grain = 'day'
          AND (p_deployments IS NULL OR t.deployment_id = ANY (p_deployments))
          AND t.starts_at >= v_first_day AND t.starts_at < v_last_day
          AND t.starts_at IS DISTINCT FROM v_split_day
        UNION ALL
        SELECT CASE WHEN p_by_day THEN date_trunc('day', t.starts_at, 'UTC')
                    WHEN t.starts_at >= v_split THEN v_split ELSE p_start END,
            t.deployment_id, t.message_type, t.status, t.failure_reason, t.sms, t.unpriced,
            t.billed_count, t.characters, t.min_characters, t.max_characters,
            t.provider_cost, t.margin, t.billed, t.linked, t.delivery_time, t.timed
        FROM private.sms_totals AS t
        WHERE t.grain = 'hour'
          AND (p_deployments IS NULL OR t.deployment_id = ANY (p_deployments))
          AND ((t.starts_at >= p_start AND t.starts_at < least(v_first_day, p_end))
               OR (t.starts_at >= greatest(v_last_day, p_start) AND t.starts_at < p_end)
               OR (t.starts_at >= v_split_day AND t.starts_at < v_split_day + interval '1 day'
                   AND t.starts_at >= v_first_day AND t.starts_at < v_last_day))
        UNION ALL
        SELECT CASE WHEN p_by_day THEN date_trunc('day', s.sent_at, 'UTC')
                    WHEN s.sent_at >= v_split THEN v_split ELSE p_start END,
            s.deployment_id, s.message_type, s.status, s.failure_reason, count(*),
            count(*) FILTER (WHERE s.provider_cost IS NULL), count(s.billed_cost),
            sum(s.character_count), min(s.character_count), max(s.character_count),
            coalesce(sum(s.provider_cost), 0), coalesce(sum(s.voipia_margin), 0),
            coalesce(sum(s.billed_cost), 0), count(s.call_id),
            coalesce(sum(s.delivered_at - s.sent_at) FILTER (WHERE s.status = 'delivered'),
                     interval '0'),
            count(s.delivered_at) FILTER (WHERE s.status = 'delivered')
        FROM public.agent_sms AS s
        WHERE (p_deployments IS NULL OR s.deployment_id = ANY (p_deployments))
          AND s.sent_at >= greatest(p_start, v_sealed_before) AND s.sent_at < p_end
        GROUP BY 1, 2, 3, 4, 5
    ) AS x
    GROUP BY 1, 2, 3, 4, 5;
END
$$;

-- How many distinct recipients were sent to in [p_previous_start, p_start) and in
-- [p_start, p_end) (whole hours), over the given deployments as sms_kpi_parts reads
-- them, p_sms SMS in all: from the SMS themselves while none of the two periods' has been
-- archived and they are fewer than half the recipients' sets of hours, else from those
-- sets, in one walk for both periods. Both count the same numbers (an erased one in neither).
--
-- As the tables' owner, over the deployments the caller may see, which it works out
-- itself: the API role the call runs as (the "role" setting, which a definer does not
-- change) is service_role, which names its deployments, or a user, whose are those of
-- accessible_deployment_ids(). So no API role reads the sets of recipients, whose ids
-- span tenants, and the scope is a constant the filter hashes, where row-level
-- security's array would be searched element by element for each of millions of rows.
CREATE FUNCTION private.sms_unique_recipients(
    p_deployments uuid[], p_previous_start timestamptz, p_start timestamptz,
    p_end timestamptz, p_sms numeric, OUT previous bigint, OUT current bigint
)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
-- What a sort of the period's numbers may hold in memory before it spills to disk.
SET work_mem = '64MB'
-- Recipients are grouped in order (the index's, or a sort's), never hashed: a hash of
-- millions of ids spills to disk, and took 1.5 s where the ordered walk takes 1.0 s
-- (one agent type, 366 days, 100x).
SET enable_hashagg = off
AS $$
DECLARE
    v_current int4range := int4range(private.epoch_hour(p_start), private.epoch_hour(p_end));
    v_previous int4range := int4range(private.epoch_hour(p_previous_start),
                                      private.epoch_hour(p_start));
    v_scope uuid[];
BEGIN
    IF current_setting('role') = 'service_role' THEN
        -- Read as the owner, outside row-level security: a NULL scope is refused.
        PERFORM private.check_scope(p_deployments);
        v_scope := p_deployments;
    ELSE
        v_scope := ARRAY(SELECT unnest(private.accessible_deployment_ids())
                         INTERSECT
                         SELECT unnest(coalesce(p_deployments,
                                                private.accessible_deployment_ids())));
    END IF;
    -- A walk of the sets costs about what a sort of twice as many SMS does (at 100x,
    -- 1.7 s for 6M sets; 1.2 s for 3M SMS).
    IF p_previous_start >= private.archived_before()
       AND p_sms < (SELECT c.reltuples / 2 FROM pg_catalog.pg_class AS c
                    WHERE c.oid = 'private.sms_recipient_hours'::regclass) THEN
        -- reverse() is one-to-one, so this counts the distinct numbers exactly. Numbers
        -- share their leading digits (country and operator) and differ in the last
        -- ones: reversed, the sort tells them apart by the first 8 bytes (its
        -- abbreviated keys) and runs about twice as fast; COLLATE "C" compares bytes,
        -- which is distinctness under any deterministic collation.
        SELECT count(DISTINCT reverse(s.phone_number) COLLATE "C") FILTER (WHERE s.sent_at < p_start),
               count(DISTINCT reverse(s.phone_number) COLLATE "C") FILTER (WHERE s.sent_at >= p_start)
        INTO previous, current
        FROM public.agent_sms AS s
        WHERE s.deployment_id = ANY (v_scope)
          AND s.sent_at >= p_previous_start AND s.sent_at < p_end;
        RETURN;
    END IF;
    SELECT count(*) FILTER (WHERE r.in_previous), count(*) FILTER (WHERE r.in_current)
    INTO previous, current
    FROM (SELECT h.recipient_id, bool_or(h.hours && v_previous) AS in_previous,
                 bool_or(h.hours && v_current) AS in_current
          FROM private.sms_recipient_hours AS h
          WHERE h.deployment_id = ANY (v_scope)
            AND h.hours && int4range(lower(v_previous), upper(v_current))
          GROUP BY h.recipient_id) AS r;
END
$$;

-- How many distinct workflows sent SMS in [p_start, p_end) (whole hours), over the
-- given deployments as sms_kpi_parts reads them.
CREATE FUNCTION private.sms_active_workflows(
    p_deployments uuid[], p_start timestamptz, p_end timestamptz
) RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
BEGIN
    PERFORM private.check_scope(p_deployments);
    RETURN (SELECT count(DISTINCT w.workflow_id)
            FROM private.sms_workflow_hours AS w
            WHERE (p_deployments IS NULL OR w.deployment_id = ANY (p_deployments))
              AND w.month >= date_trunc('month', p_start, 'UTC') AND w.month < p_end
              AND w.hours && int4range(private.epoch_hour(p_start), private.epoch_hour(p_end)));
END
$$;

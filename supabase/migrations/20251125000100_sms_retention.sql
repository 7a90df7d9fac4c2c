-- Retention: archiving old SMS to S3, expiring the archive, and erasing a phone number
-- everywhere. The archive's manifest, its keyed-hash phone index and the erasure audit
-- live in the private schema, which PostgREST does not expose: only the retention job,
-- connected directly as the tables' owner, reads them, and writes them only through the
-- functions below.

-- Two advisory locks. The run lock keeps retention runs from overlapping. The archive
-- write lock is taken by each transaction that changes archived objects (a batch from
-- its upload to its commit, an expiry, an erasure's rewrite of one object), so that an
-- erasure never misses an object being written and never races a batch.
CREATE FUNCTION private.retention_run_lock_key() RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN 7419263580143; END $$;

CREATE FUNCTION private.archive_write_lock_key() RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN 7419263580144; END $$;

-- One row per archive object. An object is recorded as 'writing' (committed) before
-- it is uploaded, and becomes 'archived' in the transaction that deletes its rows from
-- agent_sms. A 'writing' object found with no batch in progress was left by a crash:
-- its rows are still in agent_sms, and the object is deleted, every version of it.
CREATE TABLE private.sms_archive_objects (
    object_key   text        PRIMARY KEY,
    state        text        NOT NULL DEFAULT 'writing'
        CONSTRAINT sms_archive_objects_state_check CHECK (state IN ('writing', 'archived')),
    row_count    integer     CONSTRAINT sms_archive_objects_row_count_check CHECK (row_count > 0),
    min_sent_at  timestamptz,
    max_sent_at  timestamptz,
    sha256       text        CONSTRAINT sms_archive_objects_sha256_check
        CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes   bigint,
    created_at   timestamptz NOT NULL DEFAULT now(),
    archived_at  timestamptz,
    rewritten_at timestamptz,
    CONSTRAINT sms_archive_objects_archived_check CHECK (
        state = 'writing'
        OR (row_count IS NOT NULL AND min_sent_at IS NOT NULL AND max_sent_at IS NOT NULL
            AND sha256 IS NOT NULL AND size_bytes IS NOT NULL AND archived_at IS NOT NULL)
    )
);

COMMENT ON TABLE private.sms_archive_objects IS
    'The archive''s manifest: every Parquet object in the bucket, with what it holds.';

CREATE INDEX idx_sms_archive_objects_expiry ON private.sms_archive_objects (max_sent_at)
    WHERE state = 'archived';

-- Which objects hold a phone number, by HMAC-SHA256 of its E.164 form under a secret
-- the database never sees: erasure reads only these objects, and the index itself
-- reveals no number.
CREATE TABLE private.sms_archive_phone_index (
    phone_hash bytea   NOT NULL CONSTRAINT sms_archive_phone_index_hash_check
        CHECK (octet_length(phone_hash) = 32),
    object_key text    NOT NULL
        REFERENCES private.sms_archive_objects (object_key) ON DELETE CASCADE,
    row_count  integer NOT NULL CONSTRAINT sms_archive_phone_index_row_count_check
        CHECK (row_count > 0),
    PRIMARY KEY (phone_hash, object_key)
);

CREATE INDEX idx_sms_archive_phone_index_object ON private.sms_archive_phone_index (object_key);

-- Every erasure, for the privacy team's records: who asked, when, how much was erased
-- where, and whether it is complete. It holds the keyed hash, never the number.
CREATE TABLE private.sms_erasures (
    request_id              text        NOT NULL,
    phone_hash              bytea       NOT NULL,
    requester               text        NOT NULL,
    requested_at            timestamptz NOT NULL DEFAULT now(),
    completed_at            timestamptz,
    hot_rows                integer     NOT NULL DEFAULT 0,
    status_events           integer     NOT NULL DEFAULT 0,
    pending_events          integer     NOT NULL DEFAULT 0,
    archived_rows           integer     NOT NULL DEFAULT 0,
    objects_rewritten       integer     NOT NULL DEFAULT 0,
    objects_deleted         integer     NOT NULL DEFAULT 0,
    object_versions_deleted integer     NOT NULL DEFAULT 0,
    incomplete_reason       text,
    PRIMARY KEY (request_id, phone_hash)
);

CREATE INDEX idx_sms_erasures_incomplete ON private.sms_erasures (phone_hash)
    WHERE completed_at IS NULL;

-- The SIDs of SMS erased at their recipient's request, as SHA-256 digests, so that
-- nothing here leads back to the message; kept for good. A status report that comes for
-- one afterwards is dropped, not kept as pending with the number it carries, and no
-- writer may record one again.
CREATE TABLE private.sms_erased_sids (
    sid_sha256 bytea       PRIMARY KEY,
    erased_at  timestamptz NOT NULL DEFAULT now()
);

-- Remember these SIDs as erased: erasure calls it for the SMS it removes, hot
-- (erase_hot_sms) or archived.
CREATE FUNCTION private.remember_erased_sids(p_sids text[]) RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO private.sms_erased_sids (sid_sha256)
    SELECT sha256(convert_to(sid, 'UTF8')) FROM unnest(p_sids) AS sid WHERE sid IS NOT NULL
    ON CONFLICT DO NOTHING;
$$;

-- Which of these SIDs were erased, written once: every reader of the erased SIDs goes
-- through it, once per statement for all its rows.
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

-- Inserts (40001: an erasure that committed while the insert waited on the row it
-- deleted; ingest's retry then answers the item 410).
CREATE FUNCTION private.agent_sms_refuse_erased() RETURNS trigger
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

CREATE TRIGGER agent_sms_refuse_erased
    AFTER INSERT ON public.agent_sms
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION private.agent_sms_refuse_erased();

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

-- The rows the next archive object holds: the oldest SMS sent before p_before, from
-- one calendar month (UTC) so that each object sits in one year=/month= partition,
-- oldest first, locked until the caller's transaction ends so that no status update
-- slips in between the upload and the delete.
CREATE FUNCTION private.sms_due_for_archive(p_before timestamptz, p_limit integer)
RETURNS SETOF public.agent_sms
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_month_start timestamptz;
BEGIN
    SELECT date_trunc('month', min(s.sent_at), 'UTC') INTO v_month_start
    FROM public.agent_sms AS s
    WHERE s.sent_at < p_before;
    IF v_month_start IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT s.*
        FROM public.agent_sms AS s
        WHERE s.sent_at >= v_month_start
          AND s.sent_at < least(p_before, v_month_start + interval '1 month')
        ORDER BY s.sent_at, s.id
        LIMIT p_limit
        FOR UPDATE;
END
$$;

-- An object about to be uploaded: recorded as being written, in its own committed
-- transaction, so that a crash after the upload leaves a trace to clean. False when the
-- archive already holds exactly these SMS (they were put back into agent_sms).
CREATE FUNCTION private.begin_archive_object(p_object_key text) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO private.sms_archive_objects (object_key) VALUES (p_object_key)
    ON CONFLICT (object_key) DO UPDATE SET created_at = now()
    WHERE sms_archive_objects.state = 'writing';
    RETURN FOUND;
END
$$;

-- Objects a crash left between their upload and their commit: their rows are still in
-- agent_sms. With no batch in progress (under the archive write lock), every object
-- still being written is one.
CREATE FUNCTION private.unfinished_archive_objects() RETURNS SETOF text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT o.object_key FROM private.sms_archive_objects AS o
                 WHERE o.state = 'writing' ORDER BY o.object_key;
END
$$;

-- Objects whose newest SMS was sent before p_before: past the retention horizon, oldest
-- first.
CREATE FUNCTION private.expired_archive_objects(p_before timestamptz)
RETURNS TABLE (object_key text, row_count integer)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT o.object_key, o.row_count FROM private.sms_archive_objects AS o
                 WHERE o.state = 'archived' AND o.max_sent_at < p_before
                 ORDER BY o.max_sent_at;
END
$$;

-- An object gone from the bucket (expired, erased whole, or a crash's leftover): its
-- manifest entry and, with it, its index entries.
CREATE FUNCTION private.forget_archive_object(p_object_key text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM private.sms_archive_objects WHERE object_key = p_object_key;
END
$$;

-- An object rewritten without one number's rows (erasure): what it now holds, and the
-- number no longer in its index.
CREATE FUNCTION private.record_rewritten_object(
    p_object_key text, p_phone_hash bytea, p_row_count integer, p_sha256 text,
    p_size_bytes bigint, p_min_sent_at timestamptz, p_max_sent_at timestamptz
) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE private.sms_archive_objects
    SET row_count = p_row_count, sha256 = p_sha256, size_bytes = p_size_bytes,
        min_sent_at = p_min_sent_at, max_sent_at = p_max_sent_at, rewritten_at = now()
    WHERE object_key = p_object_key;
    DELETE FROM private.sms_archive_phone_index
    WHERE phone_hash = p_phone_hash AND object_key = p_object_key;
END
$$;

-- Status reports for an SMS that was never recorded, received before p_before: they
-- will never apply.
CREATE FUNCTION private.stale_pending_events(p_before timestamptz) RETURNS SETOF bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT e.id FROM public.agent_sms_events AS e
                 WHERE e.applied_at IS NULL AND e.received_at < p_before;
END
$$;

CREATE FUNCTION private.purge_pending_events(p_before timestamptz) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_purged integer;
BEGIN
    DELETE FROM public.agent_sms_events
    WHERE id IN (SELECT private.stale_pending_events(p_before));
    GET DIAGNOSTICS v_purged = ROW_COUNT;
    RETURN v_purged;
END
$$;

-- What a retention run would do now, changing nothing: the objects and rows it would
-- archive (one month of at most p_batch_size rows per object, as sms_due_for_archive
-- cuts them), the objects and rows it would expire, the leftovers it would delete and
-- the pending reports it would purge.
CREATE FUNCTION private.retention_forecast(
    p_archive_before timestamptz, p_batch_size integer, p_expire_before timestamptz,
    p_pending_before timestamptz
) RETURNS TABLE (
    archived_objects integer, archived_rows integer, expired_objects integer,
    expired_rows integer, unfinished_objects integer, pending_events integer
)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    SELECT coalesce(sum(ceil(m.n::numeric / p_batch_size)), 0), coalesce(sum(m.n), 0)
    INTO archived_objects, archived_rows
    FROM (SELECT count(*) AS n FROM public.agent_sms AS s
          WHERE s.sent_at < p_archive_before
          GROUP BY date_trunc('month', s.sent_at, 'UTC')) AS m;
    SELECT count(*), coalesce(sum(x.row_count), 0) INTO expired_objects, expired_rows
    FROM private.expired_archive_objects(p_expire_before) AS x;
    SELECT count(*) INTO unfinished_objects FROM private.unfinished_archive_objects();
    SELECT count(*) INTO pending_events FROM private.stale_pending_events(p_pending_before);
    RETURN NEXT;
END
$$;

-- Record an uploaded, verified object as archived, index its numbers, and delete its
-- rows, the status reports it holds, and reconcile's bookkeeping, all in the caller's
-- transaction. Refuses (and so rolls everything back) unless every row it was given
-- is deleted.
CREATE FUNCTION private.commit_archive_object(
    p_object_key text,
    p_ids uuid[],
    p_event_ids bigint[],
    p_sha256 text,
    p_size_bytes bigint,
    p_phone_hashes bytea[],
    p_phone_counts integer[]
) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_deleted integer;
    v_min timestamptz;
    v_max timestamptz;
BEGIN
    WITH gone AS (
        DELETE FROM public.agent_sms AS s
        WHERE s.id = ANY (p_ids)
        RETURNING s.sent_at, s.provider_message_sid
    ), checks AS (
        DELETE FROM private.sms_reconcile_checks AS c
        USING gone
        WHERE c.provider_message_sid = gone.provider_message_sid
    )
    SELECT count(*), min(sent_at), max(sent_at) INTO v_deleted, v_min, v_max FROM gone;

    IF v_deleted <> cardinality(p_ids) THEN
        RAISE EXCEPTION 'archive object % holds % rows but % were deleted',
            p_object_key, cardinality(p_ids), v_deleted
            USING ERRCODE = '40001';
    END IF;

    DELETE FROM public.agent_sms_events AS e WHERE e.id = ANY (p_event_ids);
    PERFORM private.note_archived_through(v_max);

    UPDATE private.sms_archive_objects
    SET state = 'archived', row_count = v_deleted, min_sent_at = v_min, max_sent_at = v_max,
        sha256 = p_sha256, size_bytes = p_size_bytes, archived_at = now()
    WHERE object_key = p_object_key AND state = 'writing';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'archive object % was not being written', p_object_key
            USING ERRCODE = '40001';
    END IF;

    INSERT INTO private.sms_archive_phone_index (phone_hash, object_key, row_count)
    SELECT h, p_object_key, n
    FROM unnest(p_phone_hashes, p_phone_counts) AS u(h, n);
END
$$;

-- Erase one number (E.164) from the hot tables: its SMS, their status reports, the
-- reports still pending for it, reconcile's bookkeeping of its SIDs, and the number
-- among the KPIs' recipients. The SIDs are
-- remembered as erased, so that a late status report for one is dropped rather than
-- kept with the number. Returns the counts; erasing twice returns zeros.
CREATE FUNCTION private.erase_hot_sms(p_phone_number text)
RETURNS TABLE (hot_rows integer, status_events integer, pending_events integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
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
    -- The number no longer counts as a recipient, archived days included; the erased
    -- SMS's other figures stay in the KPIs (20261206000090_kpi_aggregates.sql).
    DELETE FROM private.sms_recipients WHERE phone_number = p_phone_number;
    RETURN NEXT;
END
$$;

-- Held exclusively while an erasure's audit record (the tombstone of its numbers) is
-- written, and shared by every replay of a parked call (public.replay_parked_call): a
-- replay either commits before the tombstone, and the erasure's delete that follows
-- takes its rows, or sees the tombstone and is refused.
CREATE FUNCTION private.erasure_lock_key() RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN 7419263580145; END $$;

-- The audit record of an erasure, written before anything is erased: a failure from
-- there on leaves a record that says incomplete. The same request id continues it, but
-- only from the same requester.
CREATE FUNCTION private.open_erasure(
    p_request_id text, p_requester text, p_phone_hashes bytea[]
) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM private.sms_erasures AS e
               WHERE e.request_id = p_request_id AND e.requester <> p_requester) THEN
        RAISE EXCEPTION USING ERRCODE = 'VP409', HINT = 'X-Request-Id',
            MESSAGE = 'This request id belongs to another requester''s erasure;'
                      ' send a new X-Request-Id.';
    END IF;
    PERFORM pg_advisory_xact_lock(private.erasure_lock_key());
    INSERT INTO private.sms_erasures (request_id, phone_hash, requester)
    SELECT p_request_id, h, p_requester FROM unnest(p_phone_hashes) AS h
    ON CONFLICT DO NOTHING;
END
$$;

-- Add to an erasure's counts, in the caller's transaction: the one that erased them.
CREATE FUNCTION private.add_to_erasure(
    p_request_id text, p_phone_hash bytea,
    p_hot_rows integer DEFAULT 0, p_status_events integer DEFAULT 0,
    p_pending_events integer DEFAULT 0, p_archived_rows integer DEFAULT 0,
    p_objects_rewritten integer DEFAULT 0, p_objects_deleted integer DEFAULT 0,
    p_object_versions_deleted integer DEFAULT 0
) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE private.sms_erasures
    SET hot_rows = hot_rows + p_hot_rows,
        status_events = status_events + p_status_events,
        pending_events = pending_events + p_pending_events,
        archived_rows = archived_rows + p_archived_rows,
        objects_rewritten = objects_rewritten + p_objects_rewritten,
        objects_deleted = objects_deleted + p_objects_deleted,
        object_versions_deleted = object_versions_deleted + p_object_versions_deleted
    WHERE request_id = p_request_id AND phone_hash = p_phone_hash;
END
$$;

CREATE FUNCTION private.mark_erasure_incomplete(
    p_request_id text, p_phone_hash bytea, p_reason text
) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE private.sms_erasures SET incomplete_reason = p_reason
    WHERE request_id = p_request_id AND phone_hash = p_phone_hash;
END
$$;

-- Close an erasure, and every earlier one of the same number left incomplete: this
-- run has now erased it everywhere, so theirs is complete too.
CREATE FUNCTION private.complete_erasure(p_request_id text, p_phone_hash bytea)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE private.sms_erasures
    SET completed_at = now(),
        incomplete_reason = NULL
    WHERE phone_hash = p_phone_hash
      AND (completed_at IS NULL OR request_id = p_request_id);
$$;

-- Replaying what ingest_sms and twilio_status parked in the spill-over queue while the
-- database was unavailable (shared/spillover.py, functions/replay). A parked call is
-- made as it would have been, through the same function, unless the number it is about
-- was erased after it was parked: the erased-SID memory knows only the SIDs this
-- database had seen, and a parked SMS may never have reached it. The tombstone is the
-- erasure's audit record, which names the number by the keyed hash retention indexes
-- the archive with (ARCHIVE_INDEX_SECRET); the consumer sends that hash, never the
-- number alone. A call parked before an erasure completed, or while it is running, is
-- refused: the erasure's last delete would have taken the row had the call been made
-- then. Two minutes more allow for the function's clock and the database's to differ.
CREATE FUNCTION public.replay_parked_call(
    p_rpc text, p_args jsonb, p_phone_hash text, p_parked_at timestamptz
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_parked_at IS NULL OR NOT isfinite(p_parked_at)
       OR p_parked_at > now() + interval '5 minutes' THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_parked_at',
            MESSAGE = 'the time the call was parked is required, and not in the future';
    END IF;
    IF p_phone_hash IS NOT NULL AND p_phone_hash !~ '^[0-9a-f]{64}$' THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_phone_hash',
            MESSAGE = 'the phone hash must be 64 lowercase hex digits';
    END IF;
    IF p_rpc = 'ingest_sms' AND (jsonb_typeof(p_args -> 'p_messages') IS DISTINCT FROM 'array'
                                 OR jsonb_array_length(p_args -> 'p_messages') <> 1) THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_args',
            MESSAGE = 'a parked ingest holds exactly one SMS';
    END IF;
    IF p_phone_hash IS NULL AND (p_rpc = 'ingest_sms' OR p_args ->> 'p_to' IS NOT NULL) THEN
        RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_phone_hash',
            MESSAGE = 'a parked call about a number is replayed with the number''s hash';
    END IF;

    PERFORM pg_advisory_xact_lock_shared(private.erasure_lock_key());
    IF EXISTS (SELECT FROM private.sms_erasures AS e
               WHERE e.phone_hash = decode(p_phone_hash, 'hex')
                 AND p_parked_at <= coalesce(e.completed_at, now()) + interval '2 minutes') THEN
        RETURN jsonb_build_object('erased', true);
    END IF;

    IF p_rpc = 'ingest_sms' THEN
        RETURN jsonb_build_object('result', public.ingest_sms(p_args -> 'p_messages'));
    ELSIF p_rpc = 'record_sms_status' THEN
        RETURN jsonb_build_object('result', public.record_sms_status(
            p_args ->> 'p_sid', p_args ->> 'p_status', (p_args ->> 'p_error_code')::integer,
            (p_args ->> 'p_reported_at')::timestamptz, p_args ->> 'p_to',
            coalesce(p_args ->> 'p_source', 'callback'), (p_args ->> 'p_price')::numeric,
            p_args ->> 'p_price_unit'));
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'VP422', HINT = 'p_rpc',
        MESSAGE = 'only ingest_sms and record_sms_status calls are parked';
END
$$;

COMMENT ON FUNCTION public.replay_parked_call(text, jsonb, text, timestamptz) IS
    'Makes a call parked while the database was unavailable, unless its number was erased since.';

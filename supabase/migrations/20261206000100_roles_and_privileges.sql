-- Who may do what with this project's objects: the roles our functions log in as, and
-- the whole grant set, in one place. Supabase grants anon, authenticated and
-- service_role everything in public by default (ALTER DEFAULT PRIVILEGES ... GRANT ALL),
-- and PUBLIC may execute any new function: each object here is first stripped of every
-- grant to them, then given exactly what its callers need. tests/db/test_privileges.py
-- holds the catalogs to this list; a new object gets its line here.
--
-- Not here, because they are Supabase's and shared with the rest of the project: USAGE
-- on schema public (the three roles; CREATE for none), and CONNECT and TEMPORARY on the
-- database, which PUBLIC holds. Revoking TEMPORARY would take it from every role of the
-- project, Supabase's own services included. Instead a temporary object can neither
-- stand in for one of ours (every function runs with search_path = pg_catalog, pg_temp)
-- nor be attached to a table (no API role holds TRIGGER, below).

-- The login roles. The functions never connect as postgres, which owns the whole
-- project: a leaked connection string gives away only what its role holds. Passwords
-- are set by hand, never here (README, "Database roles"). Roles are cluster-wide, so
-- they are created only when absent.
--   sms_api        ingest_sms, twilio_status, reconcile and metrics, through the
--                  transaction pooler. As PostgREST's authenticator, it holds nothing
--                  of its own (NOINHERIT) and switches, per transaction, to the API
--                  role of the caller (shared/db.py).
--   sms_retention  the archive and erasure, through a session. It deletes what it
--                  archives or erases, keeps the archive's records and VACUUMs the
--                  erased rows away, which on PostgreSQL 15 only a table's owner may:
--                  so it belongs to sms_data_owner, which owns this project's tables
--                  and nothing else (not the functions, not the platform's tables).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sms_api') THEN
        CREATE ROLE sms_api LOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sms_retention') THEN
        CREATE ROLE sms_retention LOGIN INHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sms_data_owner') THEN
        CREATE ROLE sms_data_owner NOLOGIN;
    END IF;
END
$$;
GRANT anon, authenticated, service_role TO sms_api;
GRANT sms_data_owner TO sms_retention;

-- The tables pass to sms_data_owner. The migrator stays a member, so what it owns (the
-- functions, SECURITY DEFINER ones included) keeps an owner's rights on them; the new
-- owner needs CREATE on a table's schema only for the handover.
GRANT sms_data_owner TO CURRENT_USER;
GRANT CREATE ON SCHEMA public, private TO sms_data_owner;
ALTER TABLE public.agent_sms OWNER TO sms_data_owner;
ALTER TABLE public.agent_sms_events OWNER TO sms_data_owner;
ALTER TABLE private.sms_erased_sids OWNER TO sms_data_owner;
ALTER TABLE private.sms_reconcile_checks OWNER TO sms_data_owner;
ALTER TABLE private.sms_archive_objects OWNER TO sms_data_owner;
ALTER TABLE private.sms_archive_phone_index OWNER TO sms_data_owner;
ALTER TABLE private.sms_erasures OWNER TO sms_data_owner;
ALTER TABLE private.sms_provider_statuses OWNER TO sms_data_owner;
ALTER TABLE private.twilio_statuses OWNER TO sms_data_owner;
REVOKE CREATE ON SCHEMA public, private FROM sms_data_owner;

-- anon: nothing at all. authenticated: reads its clients' SMS (row-level security) and
-- the KPIs. service_role: what the functions do through ingest_sms, record_sms_status
-- and reconcile. sms_retention: the tables as their owner, and the retention functions
-- below.

REVOKE ALL ON SCHEMA private FROM PUBLIC, anon, authenticated, service_role;
GRANT USAGE ON SCHEMA private TO authenticated, service_role;
-- The owner's, for the foreign-key checks that run as the owner of the table they read.
GRANT USAGE ON SCHEMA private TO sms_data_owner;

-- Tables. TRUNCATE ignores row-level security, TRIGGER and REFERENCES act on a table
-- beyond its rows: no API role holds any of them.
REVOKE ALL ON public.agent_sms, public.agent_sms_events, private.sms_erased_sids,
    private.sms_reconcile_checks, private.sms_archive_objects,
    private.sms_archive_phone_index, private.sms_erasures, private.sms_provider_statuses,
    private.twilio_statuses
    FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON public.agent_sms TO authenticated;
GRANT SELECT, INSERT, UPDATE ON public.agent_sms, public.agent_sms_events TO service_role;
GRANT SELECT ON private.sms_erased_sids, private.sms_provider_statuses,
    private.twilio_statuses TO service_role;
GRANT SELECT, INSERT, UPDATE, DELETE ON private.sms_reconcile_checks TO service_role;

-- The tables of the platform that agent_sms refers to and that row-level security reads
-- (user_client_permissions is the root of every tenant's boundary) belong to the rest of
-- the project, which keeps their row privileges. But none of the API roles may TRUNCATE
-- them (it ignores row-level security: anon could empty user_client_permissions), nor
-- plant a TRIGGER on them (its function, from the session's temporary schema, would run
-- as whoever next writes the table: the owner, within a cascade), nor use them in a
-- foreign key of its own (REFERENCES).
REVOKE TRUNCATE, TRIGGER, REFERENCES ON public.clients, public.agent_types,
    public.agent_deployments, public.agent_calls, public.agent_arthur_prospects,
    public.agent_arthur_prospect_sequences, public.user_client_permissions
    FROM PUBLIC, anon, authenticated, service_role;

-- Sequences: none. An identity column draws from its own without the inserter's rights;
-- setval would break every status report, and last_value tells how many there were.
REVOKE ALL ON SEQUENCE public.agent_sms_events_id_seq
    FROM PUBLIC, anon, authenticated, service_role;

-- Views: read only (they run with the caller's rights, so row-level security applies).
REVOKE ALL ON public.v_agent_sms_enriched, public.v_agent_communications
    FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON public.v_agent_sms_enriched, public.v_agent_communications
    TO authenticated, service_role;

-- Functions.
REVOKE ALL ON FUNCTION
    public.agent_sms_touch_updated_at(),
    public.claim_sms_to_reconcile(interval, interval, integer),
    public.get_sms_failure_reasons(timestamptz, timestamptz, uuid, uuid, text, integer),
    public.get_sms_metrics(timestamptz, timestamptz, uuid, uuid, text),
    public.get_sms_timeseries(timestamptz, timestamptz, text, uuid, uuid, text),
    public.ingest_sms(jsonb),
    public.record_sms_status(text, text, integer, timestamptz, text, text, numeric, text),
    public.release_sms_to_reconcile(text[]),
    private.accessible_deployment_ids(boolean),
    private.add_to_erasure(text, bytea, integer, integer, integer, integer, integer, integer,
                           integer),
    private.agent_sms_apply_pending_events(),
    private.agent_sms_refuse_erased(),
    private.agent_sms_refuse_erased_sid(),
    private.agent_sms_refuse_foreign_link_update(),
    private.agent_sms_refuse_foreign_links(),
    private.apply_pending_sms_events(text[]),
    private.apply_sms_event(public.agent_sms_events),
    private.apply_sms_status(text, text, integer, timestamptz),
    private.archive_write_lock_key(),
    private.begin_archive_object(text),
    private.check_period(timestamptz, timestamptz),
    private.check_scope(uuid[]),
    private.commit_archive_object(text, uuid[], bigint[], text, bigint, bytea[], integer[]),
    private.complete_erasure(text, bytea),
    private.erase_hot_sms(text),
    private.erased_sids(text[]),
    private.expired_archive_objects(timestamptz),
    private.forget_archive_object(text),
    private.links_outside_tenant(uuid[], uuid[], uuid[], uuid[]),
    private.mark_erasure_incomplete(text, bytea, text),
    private.open_erasure(text, text, bytea[]),
    private.pending_events_lock_key(),
    private.percentage(numeric, numeric),
    private.purge_pending_events(timestamptz),
    private.raise_without_values(text, text, text, text),
    private.record_rewritten_object(text, bytea, integer, text, bigint, timestamptz,
                                    timestamptz),
    private.refuse_link_outside_tenant(text),
    private.remember_erased_sids(text[]),
    private.retention_forecast(timestamptz, integer, timestamptz, timestamptz),
    private.retention_run_lock_key(),
    private.sms_due_for_archive(timestamptz, integer),
    private.sms_period_figures(uuid[], timestamptz, timestamptz),
    private.sms_scope(uuid, uuid, text),
    private.stale_pending_events(timestamptz),
    private.twilio_failure_reason(integer),
    private.unfinished_archive_objects()
FROM PUBLIC, anon, authenticated, service_role;

-- The KPIs, for signed-in users (row-level security decides what they read) and the
-- service key; what they call runs with the caller's rights too.
GRANT EXECUTE ON FUNCTION
    public.get_sms_failure_reasons(timestamptz, timestamptz, uuid, uuid, text, integer),
    public.get_sms_metrics(timestamptz, timestamptz, uuid, uuid, text),
    public.get_sms_timeseries(timestamptz, timestamptz, text, uuid, uuid, text),
    private.check_period(timestamptz, timestamptz),
    private.check_scope(uuid[]),
    private.percentage(numeric, numeric),
    private.sms_period_figures(uuid[], timestamptz, timestamptz),
    private.sms_scope(uuid, uuid, text)
TO authenticated, service_role;

-- The read policy on agent_sms calls it as the reading user.
GRANT EXECUTE ON FUNCTION private.accessible_deployment_ids(boolean) TO authenticated;

-- What the service's RPCs and the triggers they fire call as service_role. The
-- SECURITY DEFINER triggers run as their owner and need no grant.
GRANT EXECUTE ON FUNCTION
    public.claim_sms_to_reconcile(interval, interval, integer),
    public.ingest_sms(jsonb),
    public.record_sms_status(text, text, integer, timestamptz, text, text, numeric, text),
    public.release_sms_to_reconcile(text[]),
    private.apply_sms_status(text, text, integer, timestamptz),
    private.erased_sids(text[]),
    private.links_outside_tenant(uuid[], uuid[], uuid[], uuid[]),
    private.pending_events_lock_key(),
    private.raise_without_values(text, text, text, text),
    private.refuse_link_outside_tenant(text),
    private.twilio_failure_reason(integer)
TO service_role;

-- What the archive and erasure call as sms_retention (functions/retention), and what
-- those call in turn.
GRANT EXECUTE ON FUNCTION
    private.add_to_erasure(text, bytea, integer, integer, integer, integer, integer, integer,
                           integer),
    private.archive_write_lock_key(),
    private.begin_archive_object(text),
    private.commit_archive_object(text, uuid[], bigint[], text, bigint, bytea[], integer[]),
    private.complete_erasure(text, bytea),
    private.erase_hot_sms(text),
    private.erased_sids(text[]),
    private.expired_archive_objects(timestamptz),
    private.forget_archive_object(text),
    private.mark_erasure_incomplete(text, bytea, text),
    private.open_erasure(text, text, bytea[]),
    private.pending_events_lock_key(),
    private.purge_pending_events(timestamptz),
    private.raise_without_values(text, text, text, text),
    private.record_rewritten_object(text, bytea, integer, text, bigint, timestamptz,
                                    timestamptz),
    private.remember_erased_sids(text[]),
    private.retention_forecast(timestamptz, integer, timestamptz, timestamptz),
    private.retention_run_lock_key(),
    private.sms_due_for_archive(timestamptz, integer),
    private.stale_pending_events(timestamptz),
    private.unfinished_archive_objects()
TO sms_retention;

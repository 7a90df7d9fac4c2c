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
-- project. Passwords are set by hand, never here (README, "Database roles"). Roles are
-- cluster-wide, so they are created only when absent, and their attributes set anyway.
--   sms_api        ingest_sms, twilio_status, reconcile and metrics, through the
--                  transaction pooler. As PostgREST's authenticator, it holds nothing
--                  of its own (NOINHERIT) and switches, per transaction, to the API
--                  role of the caller (shared/db.py): what it can do is what the
--                  service key can, through SQL.
--   sms_retention  the archive and erasure, through a session. It deletes what it
--                  archives or erases, keeps the archive's records and VACUUMs the
--                  erased rows away, which on PostgreSQL 15 and 16 only a table's owner
--                  may: so it belongs to sms_data_owner, which owns this project's
--                  tables and the functions that write them, and nothing else.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sms_api') THEN
        CREATE ROLE sms_api;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sms_retention') THEN
        CREATE ROLE sms_retention;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sms_data_owner') THEN
        CREATE ROLE sms_data_owner;
    END IF;
END
$$;
-- (REPLICATION and BYPASSRLS only a superuser gives, or takes away.)
ALTER ROLE sms_api LOGIN NOINHERIT NOCREATEROLE NOCREATEDB;
ALTER ROLE sms_retention LOGIN INHERIT NOCREATEROLE NOCREATEDB;
ALTER ROLE sms_data_owner NOLOGIN NOCREATEROLE NOCREATEDB;
GRANT anon, authenticated, service_role TO sms_api;
GRANT sms_data_owner TO sms_retention;

-- An owner may attach code to its tables (a trigger, a default) that then runs as
-- whoever writes them next. So nobody but their owner writes them: the tables, and the
-- SECURITY DEFINER functions that write them (ingest_sms, record_sms_status, reconcile's
-- three, replay_parked_call, the prices' and rates' three, and five triggers), and the count
-- of recipients, which reads one, pass to
-- sms_data_owner. What sms_retention could attach runs as sms_data_owner again, never as service_role or the migrator. The migrator keeps
-- the definer functions that read the platform's tables, which no role of ours may
-- (their row-level security, auth.uid()) and write none of ours: the tenant checks,
-- accessible_deployment_ids, links_outside_tenant, hold_referenced_records. It stays a
-- member of sms_data_owner to hand over; the new owner holds CREATE on their schemas
-- for the handover only.
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
ALTER TABLE private.billing_settings OWNER TO sms_data_owner;
ALTER TABLE private.exchange_rates OWNER TO sms_data_owner;
ALTER TABLE private.sms_totals OWNER TO sms_data_owner;
ALTER TABLE private.sms_kpi_seal OWNER TO sms_data_owner;
ALTER TABLE private.sms_workflow_hours OWNER TO sms_data_owner;
ALTER TABLE private.sms_recipients OWNER TO sms_data_owner;
ALTER TABLE private.sms_recipient_hours OWNER TO sms_data_owner;
ALTER FUNCTION public.ingest_sms(jsonb) OWNER TO sms_data_owner;
ALTER FUNCTION public.record_sms_status(text, text, integer, timestamptz, text, text, numeric,
                                        text) OWNER TO sms_data_owner;
ALTER FUNCTION public.claim_sms_to_reconcile(interval, interval, integer) OWNER TO sms_data_owner;
ALTER FUNCTION public.claim_sms_to_price(interval, integer) OWNER TO sms_data_owner;
ALTER FUNCTION public.release_sms_to_reconcile(text[]) OWNER TO sms_data_owner;
ALTER FUNCTION public.replay_parked_call(text, jsonb, text, timestamptz) OWNER TO sms_data_owner;
ALTER FUNCTION public.record_sms_prices(jsonb) OWNER TO sms_data_owner;
ALTER FUNCTION public.price_pending_sms() OWNER TO sms_data_owner;
ALTER FUNCTION public.store_exchange_rates(jsonb) OWNER TO sms_data_owner;
ALTER FUNCTION private.agent_sms_apply_pending_events() OWNER TO sms_data_owner;
ALTER FUNCTION private.agent_sms_refuse_erased() OWNER TO sms_data_owner;
ALTER FUNCTION private.agent_sms_kpis_inserted() OWNER TO sms_data_owner;
ALTER FUNCTION private.agent_sms_kpis_updated() OWNER TO sms_data_owner;
ALTER FUNCTION private.agent_sms_kpis_deleted() OWNER TO sms_data_owner;
ALTER FUNCTION private.sms_unique_recipients(uuid[], timestamptz, timestamptz, timestamptz,
                                            numeric) OWNER TO sms_data_owner;
REVOKE CREATE ON SCHEMA public, private FROM sms_data_owner;

-- anon: nothing at all. authenticated: reads its clients' SMS (row-level security) and
-- the KPIs. service_role: reads the SMS and the KPIs, and writes only by calling
-- ingest_sms, record_sms_status, reconcile's three and replay_parked_call, which run as
-- the tables' owner.
-- sms_retention: the tables as their owner, and the retention functions below.

REVOKE ALL ON SCHEMA private FROM PUBLIC, anon, authenticated, service_role;
GRANT USAGE ON SCHEMA private TO authenticated, service_role;
-- The owner's, for the foreign-key checks that run as the owner of the table they read.
GRANT USAGE ON SCHEMA private TO sms_data_owner;

-- Tables. TRUNCATE ignores row-level security, TRIGGER and REFERENCES act on a table
-- beyond its rows: no API role holds any of them.
REVOKE ALL ON public.agent_sms, public.agent_sms_events, private.sms_erased_sids,
    private.sms_reconcile_checks, private.sms_archive_objects,
    private.sms_archive_phone_index, private.sms_erasures, private.sms_provider_statuses,
    private.twilio_statuses, private.billing_settings, private.exchange_rates,
    private.sms_totals, private.sms_kpi_seal,
    private.sms_workflow_hours, private.sms_recipients, private.sms_recipient_hours
    FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON public.agent_sms TO authenticated, service_role;
-- What the KPI functions read with the caller's rights: the aggregates (under the same
-- row-level security as agent_sms) and how far they reach. Never the recipients, which
-- private.sms_unique_recipients counts as their owner.
GRANT SELECT ON private.sms_totals, private.sms_kpi_seal,
    private.sms_workflow_hours TO authenticated, service_role;

-- Every other table of the schema belongs to the rest of the project, which keeps their
-- row privileges. But none of the API roles may TRUNCATE one (it ignores row-level
-- security: anon could empty user_client_permissions, the root of every tenant's
-- boundary), nor plant a TRIGGER on one (its function, from the session's temporary
-- schema, would run as whoever next writes the table: its owner, within a cascade),
-- nor use one in a foreign key of its own (REFERENCES). Supabase grants them all three
-- on every table, and sms_api logs in with a SQL session as any of them: these are
-- taken from every table now, and from every table the migrator creates later.
REVOKE TRUNCATE, TRIGGER, REFERENCES ON ALL TABLES IN SCHEMA public
    FROM PUBLIC, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    REVOKE TRUNCATE, TRIGGER, REFERENCES ON TABLES FROM PUBLIC, anon, authenticated, service_role;

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
    public.claim_sms_to_price(interval, integer),
    public.claim_sms_to_reconcile(interval, interval, integer),
    public.get_sms_failure_reasons(timestamptz, timestamptz, uuid, uuid, text, integer),
    public.get_sms_filters(),
    public.get_sms_metrics(timestamptz, timestamptz, uuid, uuid, text),
    public.get_sms_statement(uuid, date, text),
    public.get_sms_timeseries(timestamptz, timestamptz, text, uuid, uuid, text),
    public.ingest_sms(jsonb),
    public.record_sms_status(text, text, integer, timestamptz, text, text, numeric, text),
    public.release_sms_to_reconcile(text[]),
    public.replay_parked_call(text, jsonb, text, timestamptz),
    public.record_sms_prices(jsonb),
    public.price_pending_sms(),
    public.store_exchange_rates(jsonb),
    private.accessible_deployment_ids(boolean),
    private.agent_sms_in_billing_currency(),
    private.billing_currency(),
    private.billing_currency_kept(),
    private.billing_rate(text, date),
    private.price_sms(text, numeric, text),
    private.add_to_erasure(text, bytea, integer, integer, integer, integer, integer, integer,
                           integer),
    private.agent_sms_apply_pending_events(),
    private.agent_sms_kpis_deleted(),
    private.agent_sms_kpis_inserted(),
    private.agent_sms_kpis_updated(),
    private.agent_sms_refuse_erased(),
    private.agent_sms_refuse_erased_sid(),
    private.agent_sms_refuse_fixed_column_change(),
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
    private.epoch_hour(timestamptz),
    private.erasure_lock_key(),
    private.expire_recipient_hours(timestamptz),
    private.expired_archive_objects(timestamptz),
    private.fold_sms_totals(private.sms_fact[], private.sms_fact[]),
    private.forget_archive_object(text),
    private.hold_referenced_records(jsonb),
    private.links_outside_tenant(uuid[], uuid[], uuid[], uuid[]),
    private.mark_erasure_incomplete(text, bytea, text),
    private.note_archived_through(timestamptz),
    private.note_sms_hours(public.agent_sms[]),
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
    private.seal_next_sms_day(timestamptz),
    private.archived_before(),
    private.sealed_before(),
    private.sms_due_for_archive(timestamptz, integer),
    private.sms_fact(public.agent_sms),
    private.sms_active_workflows(uuid[], timestamptz, timestamptz),
    private.sms_unique_recipients(uuid[], timestamptz, timestamptz, timestamptz, numeric),
    private.sms_kpi_parts(uuid[], timestamptz, timestamptz, boolean, timestamptz),
    private.sms_period_figures(uuid[], timestamptz, timestamptz, timestamptz),
    private.sms_scope(uuid, uuid, text),
    private.stale_pending_events(timestamptz),
    private.twilio_failure_reason(integer),
    private.unfinished_archive_objects(),
    private.whole_hours(timestamptz, timestamptz)
FROM PUBLIC, anon, authenticated, service_role;

-- The KPIs and the monthly statement, for signed-in users (row-level security decides
-- what they read) and the service key; what they call runs with the caller's rights too.
GRANT EXECUTE ON FUNCTION
    public.get_sms_failure_reasons(timestamptz, timestamptz, uuid, uuid, text, integer),
    public.get_sms_filters(),
    public.get_sms_metrics(timestamptz, timestamptz, uuid, uuid, text),
    public.get_sms_statement(uuid, date, text),
    public.get_sms_timeseries(timestamptz, timestamptz, text, uuid, uuid, text),
    private.billing_currency(),
    private.check_period(timestamptz, timestamptz),
    private.check_scope(uuid[]),
    private.epoch_hour(timestamptz),
    private.percentage(numeric, numeric),
    private.archived_before(),
    private.sealed_before(),
    private.sms_active_workflows(uuid[], timestamptz, timestamptz),
    private.sms_unique_recipients(uuid[], timestamptz, timestamptz, timestamptz, numeric),
    private.sms_kpi_parts(uuid[], timestamptz, timestamptz, boolean, timestamptz),
    private.sms_period_figures(uuid[], timestamptz, timestamptz, timestamptz),
    private.sms_scope(uuid, uuid, text),
    private.whole_hours(timestamptz, timestamptz)
TO authenticated, service_role;

-- The read policy on agent_sms calls it as the reading user, and the count of recipients
-- as the tables' owner, for that user.
GRANT EXECUTE ON FUNCTION private.accessible_deployment_ids(boolean) TO authenticated,
    sms_data_owner;

-- The service's RPCs, which run as the tables' owner.
GRANT EXECUTE ON FUNCTION
    public.claim_sms_to_price(interval, integer),
    public.claim_sms_to_reconcile(interval, interval, integer),
    public.ingest_sms(jsonb),
    public.record_sms_status(text, text, integer, timestamptz, text, text, numeric, text),
    public.release_sms_to_reconcile(text[]),
    public.replay_parked_call(text, jsonb, text, timestamptz),
    public.record_sms_prices(jsonb),
    public.price_pending_sms(),
    public.store_exchange_rates(jsonb)
TO service_role;

-- What they, and the triggers their writes fire, call as the owner.
GRANT EXECUTE ON FUNCTION
    private.apply_pending_sms_events(text[]),
    private.apply_sms_event(public.agent_sms_events),
    private.apply_sms_status(text, text, integer, timestamptz),
    private.agent_sms_in_billing_currency(),
    private.billing_currency(),
    private.billing_rate(text, date),
    private.epoch_hour(timestamptz),
    private.erased_sids(text[]),
    private.erasure_lock_key(),
    private.fold_sms_totals(private.sms_fact[], private.sms_fact[]),
    private.hold_referenced_records(jsonb),
    private.note_sms_hours(public.agent_sms[]),
    private.archived_before(),
    private.check_scope(uuid[]),
    private.sealed_before(),
    private.sms_fact(public.agent_sms),
    private.price_sms(text, numeric, text),
    private.links_outside_tenant(uuid[], uuid[], uuid[], uuid[]),
    private.pending_events_lock_key(),
    private.raise_without_values(text, text, text, text),
    private.refuse_link_outside_tenant(text),
    private.twilio_failure_reason(integer)
TO sms_data_owner;

-- What the archive and erasure call as sms_retention (functions/retention), and what
-- those call in turn.
GRANT EXECUTE ON FUNCTION
    private.add_to_erasure(text, bytea, integer, integer, integer, integer, integer, integer,
                           integer),
    private.archive_write_lock_key(),
    private.begin_archive_object(text),
    private.commit_archive_object(text, uuid[], bigint[], text, bigint, bytea[], integer[]),
    private.complete_erasure(text, bytea),
    private.epoch_hour(timestamptz),
    private.erase_hot_sms(text),
    private.erased_sids(text[]),
    private.erasure_lock_key(),
    private.expire_recipient_hours(timestamptz),
    private.expired_archive_objects(timestamptz),
    private.fold_sms_totals(private.sms_fact[], private.sms_fact[]),
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
    private.note_archived_through(timestamptz),
    private.retention_run_lock_key(),
    private.seal_next_sms_day(timestamptz),
    private.sms_fact(public.agent_sms),
    private.sms_due_for_archive(timestamptz, integer),
    private.stale_pending_events(timestamptz),
    private.unfinished_archive_objects()
TO sms_retention;

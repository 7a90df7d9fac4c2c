"""The catalogs of a fresh database, held to one reviewed list: what the API roles and
the functions' login roles may do with this project's objects, and that every function
runs with a fixed search path.

The database is owned by a role that is no superuser and applied its own migrations,
as on Supabase. The objects of supabase/local (Supabase's auth schema and the tables
other systems own) are production's, not this project's, and are left out.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tools.migrate import API_LOGIN, DATA_OWNER, RETENTION_LOGIN
from tools.schema import PLATFORM_TABLES as NOT_OURS

API_ROLES = ("anon", "authenticated", "service_role")
LOGIN_ROLES = (API_LOGIN, RETENTION_LOGIN)
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
SEQUENCE_PRIVILEGES = ("USAGE", "SELECT", "UPDATE")

# Every table of this project: sms_data_owner owns them, and retention's login role
# holds an owner's rights on them through it.
OUR_TABLES = (
    "public.agent_sms",
    "public.agent_sms_events",
    "private.billing_settings",
    "private.exchange_rates",
    "private.sms_archive_objects",
    "private.sms_archive_phone_index",
    "private.sms_erased_sids",
    "private.sms_erasures",
    "private.sms_provider_statuses",
    "private.sms_reconcile_checks",
    "private.twilio_statuses",
    "private.sms_totals",
    "private.sms_kpi_seal",
    "private.sms_workflow_hours",
    "private.sms_recipients",
    "private.sms_recipient_hours",
)
# The functions that write them: SECURITY DEFINER, run as the tables' owner, so that
# nothing attached to a table by its owner runs as anyone else.
OWNED_FUNCTIONS = (
    "public.ingest_sms(jsonb)",
    "public.record_sms_status(text,text,integer,timestamp with time zone,text,text,numeric,text)",
    "public.claim_sms_to_reconcile(interval,interval,integer)",
    "public.claim_sms_to_price(interval,integer)",
    "public.release_sms_to_reconcile(text[])",
    "public.replay_parked_call(text,jsonb,text,timestamp with time zone)",
    "public.record_sms_prices(jsonb)",
    "public.price_pending_sms()",
    "public.store_exchange_rates(jsonb)",
    "private.agent_sms_apply_pending_events()",
    "private.agent_sms_refuse_erased()",
    "private.agent_sms_kpis_inserted()",
    "private.agent_sms_kpis_updated()",
    "private.agent_sms_kpis_deleted()",
    "private.sms_unique_recipients(uuid[],timestamp with time zone,timestamp with time zone,"
    "timestamp with time zone,numeric)",
)
EVERYONES = {"database CONNECT", "database TEMPORARY", "schema public USAGE"}

# Every privilege a role holds on this project's objects, and on the schemas and the
# database they live in. Reviewed: a change here is a change of who may do what.
REVIEWED = {
    "anon": {
        # Supabase's, for every role (CONNECT and TEMPORARY through PUBLIC): see
        # supabase/migrations/20261206000100_roles_and_privileges.sql for why TEMPORARY stays.
        "database CONNECT",
        "database TEMPORARY",
        "schema public USAGE",
    },
    "authenticated": {
        "database CONNECT",
        "database TEMPORARY",
        "schema public USAGE",
        "schema private USAGE",
        "table public.agent_sms SELECT",
        "view public.v_agent_sms_enriched SELECT",
        "view public.v_agent_communications SELECT",
        "function public.get_sms_metrics(timestamptz,timestamptz,uuid,uuid,text)",
        "function public.get_sms_statement(uuid,date,text)",
        "function public.get_sms_timeseries(timestamptz,timestamptz,text,uuid,uuid,text)",
        "function public.get_sms_failure_reasons(timestamptz,timestamptz,uuid,uuid,text,integer)",
        "function public.get_sms_filters()",
        "function private.accessible_deployment_ids(boolean)",
        "function private.billing_currency()",
        "function private.check_period(timestamptz,timestamptz)",
        "function private.check_scope(uuid[])",
        "function private.percentage(numeric,numeric)",
        "function private.sms_period_figures(uuid[],timestamptz,timestamptz,timestamptz)",
        "function private.sms_scope(uuid,uuid,text)",
        # The KPIs' aggregates, under the same row-level security as agent_sms.
        "table private.sms_totals SELECT",
        "table private.sms_kpi_seal SELECT",
        "table private.sms_workflow_hours SELECT",
        "function private.epoch_hour(timestamptz)",
        "function private.archived_before()",
        "function private.sealed_before()",
        "function private.sms_active_workflows(uuid[],timestamptz,timestamptz)",
        "function private.sms_unique_recipients(uuid[],timestamptz,timestamptz,timestamptz,"
        "numeric)",
        "function private.sms_kpi_parts(uuid[],timestamptz,timestamptz,boolean,timestamptz)",
        "function private.whole_hours(timestamptz,timestamptz)",
    },
    "service_role": {
        "database CONNECT",
        "database TEMPORARY",
        "schema public USAGE",
        "schema private USAGE",
        # It writes nothing itself: the five RPCs below write, as the tables' owner.
        "table public.agent_sms SELECT",
        "view public.v_agent_sms_enriched SELECT",
        "view public.v_agent_communications SELECT",
        "function public.get_sms_metrics(timestamptz,timestamptz,uuid,uuid,text)",
        "function public.get_sms_statement(uuid,date,text)",
        "function public.get_sms_timeseries(timestamptz,timestamptz,text,uuid,uuid,text)",
        "function public.get_sms_failure_reasons(timestamptz,timestamptz,uuid,uuid,text,integer)",
        "function public.get_sms_filters()",
        "function public.ingest_sms(jsonb)",
        "function public.record_sms_status(text,text,integer,timestamptz,text,text,numeric,text)",
        "function public.claim_sms_to_reconcile(interval,interval,integer)",
        "function public.claim_sms_to_price(interval,integer)",
        "function public.release_sms_to_reconcile(text[])",
        "function public.replay_parked_call(text,jsonb,text,timestamptz)",
        "function public.record_sms_prices(jsonb)",
        "function public.price_pending_sms()",
        "function public.store_exchange_rates(jsonb)",
        "function private.billing_currency()",
        "function private.check_period(timestamptz,timestamptz)",
        "function private.check_scope(uuid[])",
        "function private.percentage(numeric,numeric)",
        "function private.sms_period_figures(uuid[],timestamptz,timestamptz,timestamptz)",
        "function private.sms_scope(uuid,uuid,text)",
        # The KPIs' aggregates, under the same row-level security as agent_sms.
        "table private.sms_totals SELECT",
        "table private.sms_kpi_seal SELECT",
        "table private.sms_workflow_hours SELECT",
        "function private.epoch_hour(timestamptz)",
        "function private.archived_before()",
        "function private.sealed_before()",
        "function private.sms_active_workflows(uuid[],timestamptz,timestamptz)",
        "function private.sms_unique_recipients(uuid[],timestamptz,timestamptz,timestamptz,"
        "numeric)",
        "function private.sms_kpi_parts(uuid[],timestamptz,timestamptz,boolean,timestamptz)",
        "function private.whole_hours(timestamptz,timestamptz)",
    },
    # Nothing of its own: it acts only as the API role it switches to (NOINHERIT).
    API_LOGIN: EVERYONES,
    RETENTION_LOGIN: EVERYONES
    | {"schema private USAGE"}
    | {f"table {table} {privilege}" for table in OUR_TABLES for privilege in TABLE_PRIVILEGES}
    | {f"sequence public.agent_sms_events_id_seq {p}" for p in SEQUENCE_PRIVILEGES}
    | {
        "function private.add_to_erasure(text,bytea,integer,integer,integer,integer,integer,"
        "integer,integer)",
        # The functions it owns, through sms_data_owner, and what they call.
        "function public.ingest_sms(jsonb)",
        "function public.record_sms_status(text,text,integer,timestamptz,text,text,numeric,text)",
        "function public.claim_sms_to_reconcile(interval,interval,integer)",
        "function public.claim_sms_to_price(interval,integer)",
        "function public.release_sms_to_reconcile(text[])",
        "function public.replay_parked_call(text,jsonb,text,timestamptz)",
        "function public.record_sms_prices(jsonb)",
        "function public.price_pending_sms()",
        "function public.store_exchange_rates(jsonb)",
        "function private.agent_sms_apply_pending_events()",
        "function private.agent_sms_in_billing_currency()",
        "function private.billing_currency()",
        "function private.billing_rate(text,date)",
        "function private.price_sms(text,numeric,text)",
        "function private.agent_sms_refuse_erased()",
        "function private.agent_sms_kpis_inserted()",
        "function private.agent_sms_kpis_updated()",
        "function private.agent_sms_kpis_deleted()",
        "function private.accessible_deployment_ids(boolean)",
        "function private.archived_before()",
        "function private.check_scope(uuid[])",
        "function private.sms_unique_recipients(uuid[],timestamptz,timestamptz,timestamptz,"
        "numeric)",
        "function private.epoch_hour(timestamptz)",
        "function private.fold_sms_totals(private.sms_fact[],private.sms_fact[])",
        "function private.sms_fact(public.agent_sms)",
        "function private.note_sms_hours(public.agent_sms[])",
        "function private.sealed_before()",
        "function private.apply_pending_sms_events(text[])",
        "function private.apply_sms_event(public.agent_sms_events)",
        "function private.apply_sms_status(text,text,integer,timestamptz)",
        "function private.hold_referenced_records(jsonb)",
        "function private.links_outside_tenant(uuid[],uuid[],uuid[],uuid[])",
        "function private.refuse_link_outside_tenant(text)",
        "function private.twilio_failure_reason(integer)",
        "function private.archive_write_lock_key()",
        "function private.begin_archive_object(text)",
        "function private.commit_archive_object(text,uuid[],bigint[],text,bigint,bytea[],"
        "integer[])",
        "function private.complete_erasure(text,bytea)",
        "function private.erase_hot_sms(text)",
        "function private.erased_sids(text[])",
        "function private.erasure_lock_key()",
        "function private.expired_archive_objects(timestamptz)",
        "function private.expire_recipient_hours(timestamptz)",
        "function private.seal_next_sms_day(timestamptz)",
        "function private.note_archived_through(timestamptz)",
        "function private.forget_archive_object(text)",
        "function private.mark_erasure_incomplete(text,bytea,text)",
        "function private.open_erasure(text,text,bytea[])",
        "function private.pending_events_lock_key()",
        "function private.purge_pending_events(timestamptz)",
        "function private.raise_without_values(text,text,text,text)",
        "function private.record_rewritten_object(text,bytea,integer,text,bigint,timestamptz,"
        "timestamptz)",
        "function private.remember_erased_sids(text[])",
        "function private.retention_forecast(timestamptz,integer,timestamptz,timestamptz)",
        "function private.retention_run_lock_key()",
        "function private.sms_due_for_archive(timestamptz,integer)",
        "function private.stale_pending_events(timestamptz)",
        "function private.unfinished_archive_objects()",
    },
}

PRIVILEGES_SQL = """
WITH roles AS (SELECT unnest(%(roles)s::text[]) AS role),
ours AS (
    SELECT c.oid, c.relkind, format('%%I.%%I', n.nspname, c.relname) AS name
    FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname IN ('public', 'private') AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND format('%%I.%%I', n.nspname, c.relname) <> ALL (%(not_ours)s::text[])
)
SELECT r.role, 'database ' || p.privilege
FROM roles AS r, unnest(ARRAY['CREATE', 'CONNECT', 'TEMPORARY']) AS p(privilege)
WHERE has_database_privilege(r.role, current_database(), p.privilege)
UNION ALL
SELECT r.role, format('schema %%s %%s', s.name, p.privilege)
FROM roles AS r, unnest(ARRAY['public', 'private']) AS s(name),
     unnest(ARRAY['USAGE', 'CREATE']) AS p(privilege)
WHERE has_schema_privilege(r.role, s.name, p.privilege)
UNION ALL
SELECT r.role, format('%%s %%s %%s',
                      CASE o.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'view' ELSE 'table' END,
                      o.name, p.privilege)
FROM roles AS r, ours AS o, unnest(%(table_privileges)s::text[]) AS p(privilege)
WHERE o.relkind <> 'S' AND has_table_privilege(r.role, o.oid, p.privilege)
UNION ALL
SELECT r.role, format('sequence %%s %%s', o.name, p.privilege)
FROM roles AS r, ours AS o, unnest(%(sequence_privileges)s::text[]) AS p(privilege)
WHERE o.relkind = 'S' AND has_sequence_privilege(r.role, o.oid, p.privilege)
UNION ALL
SELECT r.role, 'function ' || f.oid::regprocedure::text
FROM roles AS r, pg_proc AS f JOIN pg_namespace AS n ON n.oid = f.pronamespace
WHERE n.nspname IN ('public', 'private') AND has_function_privilege(r.role, f.oid, 'EXECUTE')
"""


@pytest.fixture(scope="module")
def catalog(owner_database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(owner_database_url, autocommit=True) as conn:
        conn.execute("SET search_path = ''")  # names in the catalogs' text come qualified
        yield conn


def privileges(conn: psycopg.Connection) -> dict[str, set[str]]:
    held: dict[str, set[str]] = {role: set() for role in REVIEWED}
    for role, privilege in conn.execute(
        PRIVILEGES_SQL,
        {
            "roles": list(REVIEWED),
            "not_ours": list(NOT_OURS),
            "table_privileges": list(TABLE_PRIVILEGES),
            "sequence_privileges": list(SEQUENCE_PRIVILEGES),
        },
    ):
        held[role].add(privilege.replace("timestamp with time zone", "timestamptz"))
    return held


def test_every_role_holds_exactly_the_reviewed_privileges(catalog: psycopg.Connection) -> None:
    held = privileges(catalog)
    for role in REVIEWED:
        assert held[role] - REVIEWED[role] == set(), f"{role} holds more than reviewed"
        assert REVIEWED[role] - held[role] == set(), f"{role} lacks what the list says"


def test_the_login_roles_log_in_with_no_power_beyond_their_memberships(
    catalog: psycopg.Connection,
) -> None:
    rows = catalog.execute(
        """
        SELECT r.rolname, r.rolcanlogin, r.rolinherit,
               r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication
                   OR r.rolbypassrls,
               ARRAY(SELECT DISTINCT g.rolname::text FROM pg_auth_members AS m
                     JOIN pg_roles AS g ON g.oid = m.roleid
                     WHERE m.member = r.oid ORDER BY 1)
        FROM pg_roles AS r WHERE r.rolname = ANY (%s) ORDER BY 1
        """,
        ([*LOGIN_ROLES, DATA_OWNER],),
    ).fetchall()
    assert rows == [
        (API_LOGIN, True, False, False, ["anon", "authenticated", "service_role"]),
        (DATA_OWNER, False, True, False, []),
        (RETENTION_LOGIN, True, True, False, [DATA_OWNER]),
    ]


def test_the_data_owner_owns_this_projects_tables_and_nothing_else(
    catalog: psycopg.Connection,
) -> None:
    owned = catalog.execute(
        "SELECT c.oid::regclass::text FROM pg_class AS c"
        " WHERE c.relowner = %s::regrole AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
        " UNION ALL SELECT p.oid::regprocedure::text FROM pg_proc AS p"
        " WHERE p.proowner = %s::regrole"
        " UNION ALL SELECT n.nspname::text FROM pg_namespace AS n WHERE n.nspowner = %s::regrole"
        " ORDER BY 1",
        (DATA_OWNER,) * 3,
    ).fetchall()
    assert [name for (name,) in owned] == sorted([*OUR_TABLES, *OWNED_FUNCTIONS])


@pytest.mark.parametrize("role", API_ROLES)
def test_what_no_api_role_ever_holds(catalog: psycopg.Connection, role: str) -> None:
    held = privileges(catalog)[role]
    assert not {p for p in held if p.startswith("sequence ")}, "no sequence privilege"
    for privilege in ("TRUNCATE", "REFERENCES", "TRIGGER"):
        assert not {p for p in held if p.endswith(f" {privilege}")}, privilege
    views = {p for p in held if p.startswith("view ")}
    assert all(p.endswith(" SELECT") for p in views), "views are read-only"
    assert "schema private CREATE" not in held
    assert "schema public CREATE" not in held
    assert "database CREATE" not in held


@pytest.mark.parametrize("role", API_ROLES)
def test_no_api_role_may_truncate_plant_a_trigger_on_or_reference_any_table(
    catalog: psycopg.Connection, role: str
) -> None:
    """Production's tables included: TRUNCATE ignores row-level security, and a trigger
    runs its function (from the session's temporary schema) as whoever writes next."""
    held = catalog.execute(
        "SELECT c.oid::regclass::text, p FROM pg_class AS c,"
        " unnest(ARRAY['TRUNCATE', 'TRIGGER', 'REFERENCES']) AS p"
        " WHERE c.relnamespace IN ('public'::regnamespace, 'private'::regnamespace)"
        "   AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
        "   AND has_table_privilege(%s, c.oid, p)",
        (role,),
    ).fetchall()
    assert held == []


def test_no_column_of_ours_has_grants_of_its_own(catalog: psycopg.Connection) -> None:
    granted = catalog.execute(
        "SELECT a.attrelid::regclass::text, a.attname FROM pg_attribute AS a"
        " JOIN pg_class AS c ON c.oid = a.attrelid"
        " WHERE c.relnamespace IN ('public'::regnamespace, 'private'::regnamespace)"
        "   AND a.attacl IS NOT NULL"
    ).fetchall()
    assert granted == []


def test_every_function_runs_with_a_fixed_search_path_and_temporary_objects_last(
    catalog: psycopg.Connection,
) -> None:
    rows = catalog.execute(
        """
        SELECT format('%I.%I', n.nspname, f.proname), f.prosecdef,
               (SELECT c FROM unnest(f.proconfig) AS c WHERE c LIKE 'search_path=%')
        FROM pg_proc AS f JOIN pg_namespace AS n ON n.oid = f.pronamespace
        WHERE n.nspname IN ('public', 'private')
        """
    ).fetchall()
    assert rows, "no function found: wrong database"
    unpinned = [name for name, _, path in rows if path is None]
    assert unpinned == []
    # pg_temp explicitly last: otherwise Postgres searches it first for relations and
    # types, and a caller's temporary object would stand in for ours.
    wrong = [name for name, _, path in rows if path != "search_path=pg_catalog, pg_temp"]
    assert wrong == []
    assert any(definer for _, definer, _ in rows), "the definers are among them"


def test_the_indexes_that_find_a_person_hold_no_value_of_theirs(
    catalog: psycopg.Connection,
) -> None:
    """A B-tree keeps key values in inner pages and page bounds that no VACUUM removes; a
    hash index holds hash codes only. (A B-tree may INCLUDE such a column: included
    values live in leaf entries only, which VACUUM removes.)"""
    keyed = catalog.execute(
        """
        SELECT i.indexrelid::regclass::text, am.amname
        FROM pg_index AS i
        JOIN pg_class AS c ON c.oid = i.indexrelid
        JOIN pg_am AS am ON am.oid = c.relam
        JOIN pg_attribute AS a ON a.attrelid = i.indrelid
            AND a.attnum = ANY ((i.indkey::int2[])[0:i.indnkeyatts - 1])
        WHERE i.indrelid IN ('public.agent_sms'::regclass, 'public.agent_sms_events'::regclass)
          AND a.attname IN ('phone_number', 'first_name', 'last_name', 'message_content',
                            'metadata', 'pending_phone_number')
        ORDER BY 1
        """
    ).fetchall()
    assert keyed == [
        ("public.idx_agent_sms_events_pending_phone", "hash"),
        ("public.idx_agent_sms_phone_number", "hash"),
    ]


def test_no_statistic_samples_a_person(catalog: psycopg.Connection) -> None:
    """ANALYZE samples every other column; these never (erasure would not reach them)."""
    sampled = catalog.execute(
        "SELECT attrelid::regclass::text, attname FROM pg_attribute"
        " WHERE attrelid IN ('public.agent_sms'::regclass, 'public.agent_sms_events'::regclass)"
        "   AND attnum > 0 AND NOT attisdropped AND attstattarget = 0"
        " ORDER BY 1, 2"
    ).fetchall()
    assert sampled == [
        ("public.agent_sms", "first_name"),
        ("public.agent_sms", "last_name"),
        ("public.agent_sms", "message_content"),
        ("public.agent_sms", "metadata"),
        ("public.agent_sms", "phone_number"),
        ("public.agent_sms_events", "pending_phone_number"),
    ]

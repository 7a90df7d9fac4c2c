"""Attacks on the SQL itself, as a signed-in user would make them.

Supabase exposes every table, view and function of `public` to any signed-in user
through its API, not only through our functions. Each test acts as that user: through
the API's path (the SQL PostgREST runs: the role and JWT claims set in the transaction,
then the statement) or through a SQL session with the API role (defence in depth), and
expects the SQL to refuse.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from shared.db import Caller, PostgresDatabase
from shared.errors import InvalidInputError, ServiceError
from tests.support.builders import Tenants, acting_as
from tools.embedded import as_user
from tools.migrate import API_LOGIN, DATA_OWNER, RETENTION_LOGIN


@pytest.fixture(scope="module")
def db(database_url: str) -> Iterator[PostgresDatabase]:
    # A short timeout: an unbounded scan must be refused, not merely cut off.
    database = PostgresDatabase(database_url, pool_size=2, timeout=5)
    yield database
    database.close()


def user(user_id: uuid.UUID) -> Caller:
    return Caller(claims={"role": "authenticated", "sub": str(user_id), "aud": "authenticated"})


def api_patch(
    conn: psycopg.Connection, table: str, body: dict[str, Any], where_id: uuid.UUID
) -> int:
    """PATCH /rest/v1/<table>?id=eq.<id>, as PostgREST runs it: the body's columns from
    json_populate_record, under the caller's role and row-level security."""
    columns = ", ".join(body)
    cur = conn.execute(
        f"UPDATE public.{table} SET ({columns}) = (SELECT {columns}"
        f" FROM json_populate_record(NULL::public.{table}, %s::json)) WHERE id = %s",
        (json.dumps(body), where_id),
    )
    return cur.rowcount


def api_post(conn: psycopg.Connection, table: str, body: dict[str, Any]) -> None:
    """POST /rest/v1/<table>, as PostgREST runs it."""
    columns = ", ".join(body)
    conn.execute(
        f"INSERT INTO public.{table} ({columns}) SELECT {columns}"
        f" FROM json_populate_record(NULL::public.{table}, %s::json)",
        (json.dumps(body),),
    )


def api_delete(conn: psycopg.Connection, table: str, where_id: uuid.UUID) -> int:
    """DELETE /rest/v1/<table>?id=eq.<id>."""
    return conn.execute(f"DELETE FROM public.{table} WHERE id = %s", (where_id,)).rowcount


def row_of(conn: psycopg.Connection, sms_id: uuid.UUID) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT provider_cost, voipia_margin, status, sent_at, call_id FROM agent_sms"
        " WHERE id = %s",
        (sms_id,),
    ).fetchone()


# --- 1. client admins rewriting billing and delivery facts -----------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"provider_cost": "0.0001"},
        {"voipia_margin": "9.0000"},
        {"status": "delivered", "provider_status": "delivered"},
        {"sent_at": (datetime.now(UTC) - timedelta(days=500)).isoformat()},
        {"delivered_at": datetime.now(UTC).isoformat()},
        {"message_content": "rewritten"},
        {"phone_number": "+33600000000"},
        {"metadata": {"rewritten": True}},
    ],
    ids=lambda change: "+".join(change),
)
def test_an_admin_cannot_rewrite_a_fact_of_their_own_clients_sms(
    tenants: Tenants, database_url: str, admin_conn: psycopg.Connection, change: dict[str, Any]
) -> None:
    target = tenants.sms_a[0]
    before = row_of(admin_conn, target)
    with (
        acting_as(database_url, "authenticated", tenants.admin_a) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        api_patch(conn, "agent_sms", change, target)
    assert row_of(admin_conn, target) == before


def test_an_admin_can_neither_add_nor_delete_sms(
    tenants: Tenants, database_url: str, admin_conn: psycopg.Connection
) -> None:
    with (
        acting_as(database_url, "authenticated", tenants.admin_a) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        api_post(
            conn,
            "agent_sms",
            {
                "deployment_id": str(tenants.deployments_a[0]),
                "phone_number": "+33639980001",
                "message_content": "forged",
                "sent_at": datetime.now(UTC).isoformat(),
                "provider_cost": "0",
            },
        )
    with (
        acting_as(database_url, "authenticated", tenants.admin_a) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        api_delete(conn, "agent_sms", tenants.sms_a[0])
    assert row_of(admin_conn, tenants.sms_a[0]) is not None


# --- 2. unbounded periods through the RPCs ------------------------------------------------


# Each call, and the argument the SQL names when it refuses it.
UNBOUNDED_PERIODS = [
    ("get_sms_timeseries", {"p_start_date": "2000-01-01T00:00:00Z", "p_end_date": "infinity"}),
    ("get_sms_timeseries", {"p_start_date": "-infinity", "p_end_date": "2026-01-01T00:00:00Z"}),
    (
        "get_sms_timeseries",
        {"p_start_date": "2000-01-01T00:00:00Z", "p_end_date": "2100-01-01T00:00:00Z"},
    ),
    (
        "get_sms_metrics",
        {"p_start_date": "2000-01-01T00:00:00Z", "p_end_date": "2100-01-01T00:00:00Z"},
    ),
    ("get_sms_metrics", {"p_start_date": "2000-01-01T00:00:00Z", "p_end_date": "infinity"}),
    (
        "get_sms_failure_reasons",
        {"p_start_date": "2000-01-01T00:00:00Z", "p_end_date": "2100-01-01T00:00:00Z"},
    ),
    (
        "get_sms_failure_reasons",
        {
            "p_start_date": "2026-01-01T00:00:00Z",
            "p_end_date": "2026-02-01T00:00:00Z",
            "p_limit": 100_000_000,
        },
    ),
]


@pytest.mark.parametrize(("function", "args"), UNBOUNDED_PERIODS)
def test_an_rpc_called_directly_refuses_what_it_may_not_scan(
    tenants: Tenants, db: PostgresDatabase, function: str, args: dict[str, Any]
) -> None:
    with pytest.raises(ServiceError) as refused:
        db.rpc(function, args, as_user=user(tenants.viewer_a))
    # Refused by the rule itself (private.check_period, the limit), which names the
    # argument, not by an error met while computing with it.
    assert isinstance(refused.value, InvalidInputError), refused.value
    expected = "p_limit" if "p_limit" in args else ("p_start_date", "p_end_date")
    assert refused.value.field in expected, refused.value.message


# --- 3. links outside the tenant, and erased SIDs back through an update --------------------


def b_records(conn: psycopg.Connection, tenants: Tenants) -> dict[str, uuid.UUID]:
    """A call, a prospect and a sequence of client B."""
    call = conn.execute(
        "INSERT INTO agent_calls (deployment_id) VALUES (%s) RETURNING id", (tenants.deployment_b,)
    ).fetchone()
    prospect = conn.execute(
        "INSERT INTO agent_arthur_prospects (deployment_id) VALUES (%s) RETURNING id",
        (tenants.deployment_b,),
    ).fetchone()
    assert call is not None
    assert prospect is not None
    sequence = conn.execute(
        "INSERT INTO agent_arthur_prospect_sequences (prospect_id) VALUES (%s) RETURNING id",
        (prospect[0],),
    ).fetchone()
    assert sequence is not None
    return {"call_id": call[0], "prospect_id": prospect[0], "sequence_id": sequence[0]}


@pytest.mark.parametrize("column", ["call_id", "prospect_id", "sequence_id"])
def test_an_admin_cannot_link_their_sms_to_another_clients_records(
    tenants: Tenants, database_url: str, admin_conn: psycopg.Connection, column: str
) -> None:
    foreign = b_records(admin_conn, tenants)[column]
    with (
        acting_as(database_url, "authenticated", tenants.admin_a) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        api_patch(conn, "agent_sms", {column: str(foreign)}, tenants.sms_a[0])


@pytest.mark.parametrize("column", ["call_id", "prospect_id", "sequence_id"])
def test_ingest_refuses_a_link_to_another_clients_records(
    tenants: Tenants, db: PostgresDatabase, admin_conn: psycopg.Connection, column: str
) -> None:
    foreign = b_records(admin_conn, tenants)[column]
    (result,) = db.rpc(
        "ingest_sms",
        {
            "p_messages": [
                {
                    "deployment_id": str(tenants.deployments_a[0]),
                    "phone_number": "+33639980002",
                    "message_content": "x",
                    "provider_message_sid": "SM" + uuid.uuid4().hex,
                    "sent_at": "2026-11-01T10:00:00Z",
                    column: str(foreign),
                }
            ]
        },
    )
    assert result == {"rejected": column}


@pytest.mark.parametrize("column", ["call_id", "prospect_id", "sequence_id"])
def test_no_writer_links_an_sms_outside_its_tenant(
    tenants: Tenants, database_url: str, admin_conn: psycopg.Connection, column: str
) -> None:
    """Not even the tables' owner (retention's role, a backfill) writing the table
    itself; the service key may not write it at all, only call the RPCs."""
    foreign = b_records(admin_conn, tenants)[column]
    with (
        acting_as(database_url, DATA_OWNER) as conn,
        pytest.raises(psycopg.Error) as refused,
    ):
        api_patch(conn, "agent_sms", {column: str(foreign)}, tenants.sms_a[0])
    assert refused.value.diag.sqlstate == "VP422"
    assert refused.value.diag.message_hint == column
    with (
        acting_as(database_url, "service_role") as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        api_patch(conn, "agent_sms", {column: str(foreign)}, tenants.sms_a[0])


@pytest.mark.parametrize("column", ["call_id", "prospect_id", "sequence_id"])
def test_no_insert_links_an_sms_outside_its_tenant(
    tenants: Tenants, database_url: str, admin_conn: psycopg.Connection, column: str
) -> None:
    """The tables' owner inserting rows itself, several at once, one of them foreign."""
    foreign = b_records(admin_conn, tenants)[column]
    own = b_records(admin_conn, tenants)  # B's own records, for B's own SMS: fine
    common = {"phone_number": "+33639980003", "message_content": "x",
              "sent_at": "2026-11-01T10:00:00Z"}  # fmt: skip
    rows = [
        common | {"deployment_id": str(tenants.deployment_b), column: str(own[column]),
                  "provider_message_sid": "SM" + uuid.uuid4().hex},
        common | {"deployment_id": str(tenants.deployments_a[0]), column: str(foreign),
                  "provider_message_sid": "SM" + uuid.uuid4().hex},
    ]  # fmt: skip
    columns = (
        f"deployment_id, phone_number, message_content, provider_message_sid, sent_at, {column}"
    )
    insert = (
        f"INSERT INTO agent_sms ({columns}) SELECT {columns}"
        " FROM json_populate_recordset(NULL::agent_sms, %s::json)"
    )
    with (
        acting_as(database_url, DATA_OWNER) as conn,
        pytest.raises(psycopg.Error) as refused,
    ):
        conn.execute(insert, (json.dumps(rows),))
    assert refused.value.diag.sqlstate == "VP422"
    assert refused.value.diag.message_hint == column


def test_an_erased_sid_cannot_come_back_through_an_update(
    tenants: Tenants, database_url: str, admin_conn: psycopg.Connection
) -> None:
    erased = "SM" + uuid.uuid4().hex
    admin_conn.execute("SELECT private.remember_erased_sids(%s)", ([erased],))
    with (
        acting_as(database_url, DATA_OWNER) as conn,
        pytest.raises(psycopg.Error) as refused,
    ):
        api_patch(conn, "agent_sms", {"provider_message_sid": erased}, tenants.sms_a[0])
    assert refused.value.diag.sqlstate == "VP410"


def test_what_the_tables_owner_attaches_runs_as_that_owner_only(
    tenants: Tenants, database_url: str
) -> None:
    """A leaked DATABASE_SESSION_URL: retention's role owns the tables (through
    sms_data_owner), and an owner may attach a trigger, from its session's temporary
    schema, that runs as whoever writes the table next. Nobody but the owner writes
    them: the service's RPCs run as the owner, so the trigger never runs as service_role
    or the migrator."""
    note = (
        "CREATE FUNCTION pg_temp.note_who() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " PERFORM set_config('attack.ran_as', current_user, false); RETURN NULL; END $$;"
        " CREATE TRIGGER zz_note_who AFTER INSERT OR UPDATE ON public.agent_sms"
        " FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.note_who()"
    )
    sms = {"deployment_id": str(tenants.deployment_b), "phone_number": "+33639980009",
           "message_content": "x", "sent_at": "2026-11-01T10:00:00Z",
           "provider_message_sid": "SM" + uuid.uuid4().hex}  # fmt: skip
    with psycopg.connect(as_user(database_url, RETENTION_LOGIN), autocommit=True) as owner:
        owner.execute(note)
        try:
            with psycopg.connect(as_user(database_url, API_LOGIN), autocommit=True) as service:
                service.execute("SET ROLE service_role")
                service.execute("SELECT public.ingest_sms(%s::jsonb)", (json.dumps([sms]),))
                service.execute(
                    "SELECT public.record_sms_status(%s, 'delivered')",
                    (sms["provider_message_sid"],),
                )
                ran_as = service.execute("SELECT current_setting('attack.ran_as', true)")
                assert ran_as.fetchone() == (DATA_OWNER,)
        finally:
            owner.execute("DROP TRIGGER zz_note_who ON public.agent_sms")


# --- 5. code run as a definer's owner through the session's temporary schema ----------------


def test_a_temporary_type_cannot_run_code_as_a_definers_owner(
    tenants: Tenants, database_url: str
) -> None:
    """auth.uid() casts to jsonb without a schema: inside a SECURITY DEFINER function whose
    path searches pg_temp first, the caller's own pg_temp.jsonb would be used, and its
    CHECK would run the caller's code as the owner."""
    with acting_as(database_url, "authenticated", tenants.viewer_a) as conn:
        try:
            conn.execute(
                f"""
                CREATE FUNCTION pg_temp.escalate(value pg_catalog.jsonb) RETURNS boolean
                LANGUAGE sql AS $$
                    INSERT INTO public.user_client_permissions (user_id, client_id, role)
                    SELECT '{tenants.viewer_a}', c.id, 'admin' FROM public.clients AS c
                    ON CONFLICT (user_id, client_id) DO UPDATE SET role = 'admin';
                    SELECT true
                $$;
                CREATE DOMAIN pg_temp.jsonb AS pg_catalog.jsonb CHECK (pg_temp.escalate(VALUE));
                """
            )
        except psycopg.errors.InsufficientPrivilege:
            return  # no temporary schema for API roles at all: nothing to hijack
        # In a savepoint: refused or not, the session goes on. Refused means the domain's
        # CHECK ran as the caller, who may not write permissions.
        with (
            contextlib.suppress(psycopg.errors.InsufficientPrivilege),
            conn.transaction(),
        ):
            conn.execute("SELECT private.accessible_deployment_ids()")
        conn.execute("DROP DOMAIN pg_temp.jsonb")
        roles = conn.execute(
            "SELECT role, count(*) FROM user_client_permissions GROUP BY role"
        ).fetchall()
    assert roles == [("viewer", 1)]


# --- 6. the events sequence -----------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT setval('public.agent_sms_events_id_seq', 9223372036854775807)",
        "SELECT nextval('public.agent_sms_events_id_seq')",
        "SELECT last_value FROM public.agent_sms_events_id_seq",
    ],
)
@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_api_roles_cannot_touch_a_sequence(
    tenants: Tenants, database_url: str, statement: str, role: str
) -> None:
    user_id = tenants.viewer_a if role == "authenticated" else None
    with (
        acting_as(database_url, role, user_id) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(statement)


# --- 7. the views -------------------------------------------------------------------------


@pytest.mark.parametrize("view", ["v_agent_sms_enriched", "v_agent_communications"])
def test_a_user_cannot_plant_a_trigger_on_a_view(
    tenants: Tenants, database_url: str, view: str
) -> None:
    with acting_as(database_url, "authenticated", tenants.viewer_a) as conn:
        conn.execute(
            "CREATE FUNCTION pg_temp.planted() RETURNS trigger LANGUAGE plpgsql"
            " AS $$ BEGIN RETURN NULL; END $$"
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                f"CREATE TRIGGER planted INSTEAD OF INSERT ON public.{view}"
                " FOR EACH ROW EXECUTE FUNCTION pg_temp.planted()"
            )


@pytest.mark.parametrize("view", ["v_agent_sms_enriched", "v_agent_communications"])
def test_a_user_may_only_read_a_view(tenants: Tenants, database_url: str, view: str) -> None:
    with acting_as(database_url, "authenticated", tenants.viewer_a) as conn:
        row = conn.execute(
            "SELECT array_agg(p ORDER BY p) FROM unnest(ARRAY['INSERT', 'UPDATE', 'DELETE',"
            " 'TRUNCATE', 'REFERENCES', 'TRIGGER']) AS p"
            " WHERE has_table_privilege(current_user, %s, p)",
            (f"public.{view}",),
        ).fetchone()
        assert row == (None,)


# --- money that is no amount ------------------------------------------------------------


def test_not_a_number_is_never_an_amount(
    tenants: Tenants, db: PostgresDatabase, database_url: str, admin_conn: psycopg.Connection
) -> None:
    """NaN is greater than every number: it passed the seed's ">= 0" and made a client's
    total cost NaN."""
    sms_sid = "SM" + uuid.uuid4().hex
    item = {"deployment_id": str(tenants.deployment_b), "phone_number": "+33639980004",
            "message_content": "x", "provider_message_sid": sms_sid,
            "sent_at": "2026-11-01T10:00:00Z"}  # fmt: skip
    for amount in ("provider_cost", "voipia_margin"):
        with pytest.raises(InvalidInputError):
            db.rpc("ingest_sms", {"p_messages": [item | {amount: "NaN"}]})
    db.rpc("ingest_sms", {"p_messages": [item]})
    for price, unit in (("NaN", "USD"), ("Infinity", "USD"), ("0.07", "US DOLLARS")):
        with pytest.raises(InvalidInputError) as refused:
            db.rpc("record_sms_status", {"p_sid": sms_sid, "p_status": "delivered",
                                         "p_price": price, "p_price_unit": unit})  # fmt: skip
        assert refused.value.field in ("p_price", "p_price_unit")
    stored = admin_conn.execute(
        "SELECT provider_cost, currency FROM agent_sms WHERE provider_message_sid = %s",
        (sms_sid,),
    ).fetchone()
    assert stored == (None, "EUR")


@pytest.mark.parametrize(
    "args",
    [
        {"p_min_age": "1 hour", "p_max_age": "7 days", "p_limit": None},
        {"p_min_age": "1 hour", "p_max_age": "7 days", "p_limit": 1_000_000},
        {"p_min_age": "0", "p_max_age": "1000 years", "p_limit": 10},
    ],
)
def test_reconcile_claims_are_bounded(
    tenants: Tenants, db: PostgresDatabase, args: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInputError):
        db.rpc("claim_sms_to_reconcile", args)


# --- the service's own RPCs stay the service's ---------------------------------------------


@pytest.mark.parametrize(
    ("function", "args"),
    [
        ("ingest_sms", {"p_messages": []}),
        ("record_sms_status", {"p_sid": "SM" + "0" * 32, "p_status": "delivered"}),
        ("claim_sms_to_reconcile", {"p_min_age": "1 hour", "p_max_age": "7 days", "p_limit": 1}),
        ("release_sms_to_reconcile", {"p_sids": []}),
        (
            "replay_parked_call",
            {
                "p_rpc": "record_sms_status",
                "p_args": {},
                "p_phone_hash": None,
                "p_parked_at": "2026-12-06T00:00:00Z",
            },
        ),
    ],
)
def test_a_user_cannot_call_the_services_rpcs(
    tenants: Tenants, db: PostgresDatabase, function: str, args: dict[str, Any]
) -> None:
    from shared.errors import ForbiddenError

    with pytest.raises(ForbiddenError):
        db.rpc(function, args, as_user=user(tenants.admin_a))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"p_parked_at": "2999-01-01T00:00:00Z"}, "p_parked_at"),  # past every erasure
        ({"p_parked_at": "infinity"}, "p_parked_at"),
        ({"p_phone_hash": None}, "p_phone_hash"),
        ({"p_phone_hash": "ab"}, "p_phone_hash"),
        ({"p_args": {"p_messages": [{}, {}]}}, "p_args"),  # two SMS under one number's hash
        ({"p_args": {"p_messages": {}}}, "p_args"),
        ({"p_rpc": "claim_sms_to_reconcile"}, "p_rpc"),
        (
            {
                "p_rpc": "record_sms_status",
                "p_args": {"p_sid": "SM" + "0" * 32, "p_status": "sent", "p_to": "+33612345678"},
                "p_phone_hash": None,
            },
            "p_phone_hash",
        ),
    ],
)
def test_a_replayed_call_cannot_slip_past_an_erasure(
    tenants: Tenants, db: PostgresDatabase, change: dict[str, Any], field: str
) -> None:
    """Even with the service key (any holder of it may call the RPC directly)."""
    args = {
        "p_rpc": "ingest_sms",
        "p_args": {"p_messages": [{}]},
        "p_phone_hash": "0" * 64,
        "p_parked_at": datetime.now(UTC).isoformat(),
    } | change
    with pytest.raises(InvalidInputError) as refused:
        db.rpc("replay_parked_call", args)
    assert refused.value.field == field

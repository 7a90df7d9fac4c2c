"""One contract, three ways in: PostgresDatabase, and SupabaseDatabase with a new
secret key and with the legacy service_role JWT, over HTTP to a PostgREST stand-in.

Every test runs against each adapter and expects the same values and errors.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from shared.db import SERVICE, Caller, Database, PostgresDatabase, SupabaseDatabase
from shared.errors import (
    ConflictError,
    ForbiddenError,
    InternalError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)
from tests.support.builders import JWT_SECRET, Tenants, make_jwt
from tests.support.fake_postgrest import FakePostgrest, Keys
from tools.relay import relay_to_database

KEYS = Keys(
    jwt_secret=JWT_SECRET,
    secret_key="sb_secret_" + "k" * 32,
    publishable_key="sb_publishable_" + "p" * 32,
    legacy_service_key=make_jwt({"role": "service_role"}, ttl=10 * 365 * 86400),
    legacy_anon_key=make_jwt({"role": "anon"}, ttl=10 * 365 * 86400),
)

# Test-only RPC functions: they exercise the port, not the product's SQL.
CONTRACT_FUNCTIONS = """
CREATE OR REPLACE FUNCTION public.contract_echo(p_text text, p_number numeric, p_id uuid,
    p_at timestamptz, p_doc jsonb, p_list text[] DEFAULT '{}', p_missing text DEFAULT NULL)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('text', p_text, 'number', p_number, 'id', p_id, 'at', p_at,
                              'doc', p_doc, 'list', p_list, 'missing', p_missing)
$$;
CREATE OR REPLACE FUNCTION public.contract_whoami() RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('role', current_user, 'uid', auth.uid())
$$;
CREATE OR REPLACE FUNCTION public.contract_visible_sms() RETURNS SETOF uuid
LANGUAGE sql STABLE AS $$ SELECT id FROM public.agent_sms ORDER BY id $$;
CREATE OR REPLACE FUNCTION public.contract_sms_rows() RETURNS TABLE (id uuid, status text)
LANGUAGE sql STABLE AS $$ SELECT id, status FROM public.agent_sms ORDER BY id LIMIT 2 $$;
CREATE OR REPLACE FUNCTION public.contract_count(p_deployment uuid) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT count(*) FROM public.agent_sms WHERE deployment_id = p_deployment
$$;
-- As the service's RPCs do, it writes as its owner: no API role writes agent_sms itself.
CREATE OR REPLACE FUNCTION public.contract_insert(p_deployment uuid, p_sid text,
    p_status text DEFAULT 'sent', p_phone text DEFAULT '+33639980000')
RETURNS uuid LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO public.agent_sms (deployment_id, provider_message_sid, status, phone_number,
                                  message_content, sent_at)
    VALUES (p_deployment, p_sid, p_status, p_phone, 'contract', now()) RETURNING id
$$;
-- The same insert as the caller: a user may not write the table at all.
CREATE OR REPLACE FUNCTION public.contract_insert_as_caller(p_deployment uuid, p_sid text)
RETURNS uuid LANGUAGE sql AS $$
    INSERT INTO public.agent_sms (deployment_id, provider_message_sid, phone_number,
                                  message_content, sent_at)
    VALUES (p_deployment, p_sid, '+33639980000', 'contract', now()) RETURNING id
$$;
CREATE OR REPLACE FUNCTION public.contract_raise(p_status text) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'VP' || p_status, MESSAGE = 'deployment_id is unknown',
                          HINT = 'deployment_id';
END $$;
CREATE OR REPLACE FUNCTION public.contract_service_only() RETURNS int LANGUAGE sql AS $$
    SELECT 1
$$;
REVOKE EXECUTE ON FUNCTION public.contract_service_only() FROM PUBLIC, anon, authenticated;
CREATE OR REPLACE FUNCTION public.contract_sleep(p_seconds float) RETURNS int LANGUAGE sql AS $$
    SELECT 1 FROM pg_sleep(p_seconds)
$$;
DO $$ BEGIN
    CREATE TYPE public.contract_pair AS (x integer, y text);
    CREATE DOMAIN public.contract_checked_pair AS public.contract_pair;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
CREATE OR REPLACE FUNCTION public.contract_pair(p_empty boolean) RETURNS public.contract_pair
LANGUAGE sql AS $$ SELECT CASE WHEN NOT p_empty THEN ROW(1, 'one')::public.contract_pair END $$;
CREATE OR REPLACE FUNCTION public.contract_checked_pair(p_empty boolean)
RETURNS public.contract_checked_pair LANGUAGE sql AS $$
    SELECT (CASE WHEN NOT p_empty THEN ROW(1, 'one')::public.contract_pair END)
        ::public.contract_checked_pair
$$;
CREATE SEQUENCE IF NOT EXISTS public.contract_runs;
CREATE OR REPLACE FUNCTION public.contract_count_and_sleep(p_seconds float) RETURNS bigint
LANGUAGE sql AS $$
    SELECT nextval('public.contract_runs') FROM pg_sleep(p_seconds)
$$;
"""


@pytest.fixture(scope="module")
def contract_functions(admin_conn: psycopg.Connection) -> None:
    admin_conn.execute(CONTRACT_FUNCTIONS)


@pytest.fixture(scope="module")
def postgres_database(database_url: str, contract_functions: None) -> Iterator[PostgresDatabase]:
    database = PostgresDatabase(database_url, pool_size=2)
    yield database
    database.close()


@pytest.fixture(scope="module")
def postgrest(postgres_database: PostgresDatabase) -> Iterator[FakePostgrest]:
    with FakePostgrest(postgres_database, KEYS) as server:
        yield server


@pytest.fixture(params=["postgres", "supabase-secret-key", "supabase-legacy-jwt"])
def db(
    request: pytest.FixtureRequest, postgres_database: PostgresDatabase, postgrest: FakePostgrest
) -> Iterator[Database]:
    if request.param == "postgres":
        yield postgres_database
        return
    key = KEYS.secret_key if request.param == "supabase-secret-key" else KEYS.legacy_service_key
    database = SupabaseDatabase(postgrest.url, key)
    yield database
    database.close()


def user(user_id: uuid.UUID | None, role: str = "authenticated") -> Caller:
    claims: dict[str, Any] = {"role": role, "aud": "authenticated"}
    if user_id is not None:
        claims["sub"] = str(user_id)
    return Caller(claims=claims, access_token=make_jwt(claims))


def test_arguments_and_results_cross_as_json(db: Database) -> None:
    result = db.rpc(
        "contract_echo",
        {
            "p_text": "Bonjour ✓",
            "p_number": "0.0750",
            "p_id": uuid.UUID(int=7),
            "p_at": "2026-11-01T10:00:00+01:00",
            "p_doc": {"nested": [1, 2.5, None, True]},
            "p_list": ["a", "b"],
        },
    )
    assert result == {
        "text": "Bonjour ✓",
        "number": 0.075,
        "id": str(uuid.UUID(int=7)),
        "at": "2026-11-01T09:00:00+00:00",
        "doc": {"nested": [1, 2.5, None, True]},
        "list": ["a", "b"],
        "missing": None,
    }


def test_scalar_set_and_table_results(db: Database, tenants: Tenants) -> None:
    assert db.rpc("contract_count", {"p_deployment": tenants.deployment_b}) == 3
    assert db.rpc("contract_visible_sms") == sorted(str(i) for i in tenants.sms_a + tenants.sms_b)
    rows = db.rpc("contract_sms_rows")
    assert [set(row) for row in rows] == [{"id", "status"}] * 2


def test_a_row_result_is_an_object_even_when_the_function_returns_null(db: Database) -> None:
    for name in ("contract_pair", "contract_checked_pair"):  # a composite, a domain over one
        assert db.rpc(name, {"p_empty": False}) == {"x": 1, "y": "one"}
        assert db.rpc(name, {"p_empty": True}) == {"x": None, "y": None}


def test_service_calls_run_as_service_role(db: Database) -> None:
    assert db.rpc("contract_whoami") == {"role": "service_role", "uid": None}
    assert db.rpc("contract_whoami", as_user=SERVICE) == {"role": "service_role", "uid": None}


def test_user_calls_run_as_the_user_under_rls(db: Database, tenants: Tenants) -> None:
    viewer = user(tenants.viewer_a)
    assert db.rpc("contract_whoami", as_user=viewer) == {
        "role": "authenticated",
        "uid": str(tenants.viewer_a),
    }
    assert db.rpc("contract_visible_sms", as_user=viewer) == sorted(str(i) for i in tenants.sms_a)
    assert db.rpc("contract_count", {"p_deployment": tenants.deployment_b}, as_user=viewer) == 0
    anon = user(None, role="anon")
    assert db.rpc("contract_whoami", as_user=anon) == {"role": "anon", "uid": None}


def test_a_unique_violation_is_a_conflict(db: Database, tenants: Tenants) -> None:
    sid = "SM" + uuid.uuid4().hex
    db.rpc("contract_insert", {"p_deployment": tenants.deployment_b, "p_sid": sid})
    with pytest.raises(ConflictError) as caught:
        db.rpc("contract_insert", {"p_deployment": tenants.deployment_b, "p_sid": sid})
    assert caught.value.field == "provider_message_sid"


def test_a_missing_reference_is_invalid_input_naming_the_field(db: Database, clean: object) -> None:
    with pytest.raises(InvalidInputError) as caught:
        db.rpc("contract_insert", {"p_deployment": uuid.uuid4(), "p_sid": "SMx"})
    assert caught.value.field == "deployment_id"
    assert caught.value.message == "deployment_id refers to a record that does not exist."


def test_a_check_violation_is_invalid_input_naming_the_field(
    db: Database, tenants: Tenants
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        db.rpc(
            "contract_insert",
            {"p_deployment": tenants.deployment_b, "p_sid": "SMy", "p_status": "lost"},
        )
    assert caught.value.field == "status"
    assert "lost" not in caught.value.message


def test_a_malformed_value_is_invalid_input_without_echoing_it(db: Database) -> None:
    with pytest.raises(InvalidInputError) as caught:
        db.rpc("contract_count", {"p_deployment": "+33639980000"})
    assert "+33639980000" not in caught.value.message


def test_rows_a_user_may_not_write_are_forbidden(db: Database, tenants: Tenants) -> None:
    with pytest.raises(ForbiddenError):
        db.rpc(
            "contract_insert_as_caller",
            {"p_deployment": tenants.deployment_b, "p_sid": "SMz"},
            as_user=user(tenants.viewer_a),
        )


def test_a_function_not_granted_to_the_caller_is_forbidden(db: Database, tenants: Tenants) -> None:
    assert db.rpc("contract_service_only") == 1
    with pytest.raises(ForbiddenError):
        db.rpc("contract_service_only", as_user=user(tenants.viewer_a))


@pytest.mark.parametrize(
    ("status", "error"),
    [("422", InvalidInputError), ("404", NotFoundError), ("409", ConflictError)],
)
def test_errors_raised_by_our_sql_keep_their_message_and_field(
    db: Database, status: str, error: type[Exception]
) -> None:
    with pytest.raises(error) as caught:
        db.rpc("contract_raise", {"p_status": status})
    assert caught.value.message == "deployment_id is unknown"  # type: ignore[attr-defined]
    assert caught.value.field == "deployment_id"  # type: ignore[attr-defined]


def test_an_unknown_function_or_argument_is_an_internal_error(db: Database) -> None:
    with pytest.raises(InternalError):
        db.rpc("contract_nonexistent")
    with pytest.raises(InternalError):
        db.rpc("contract_count", {"p_deployment": uuid.uuid4(), "p_unknown": 1})


def test_a_role_the_api_does_not_know_is_refused(db: Database) -> None:
    with pytest.raises(ForbiddenError):
        db.rpc("contract_whoami", as_user=user(None, role="postgres"))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_database_is_unavailable() -> None:
    port = closed_port()
    down = PostgresDatabase(f"postgresql://postgres@127.0.0.1:{port}/x", timeout=1, retry_after=7)
    with pytest.raises(UnavailableError) as caught:
        down.rpc("contract_whoami")
    assert caught.value.retry_after == 7
    down.close()


def test_calls_arriving_while_the_first_connection_is_made_share_that_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import psycopg_pool

    pools: list[psycopg_pool.ConnectionPool] = []

    class CountedPool(psycopg_pool.ConnectionPool):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            pools.append(self)

    monkeypatch.setattr(psycopg_pool, "ConnectionPool", CountedPool)
    down = PostgresDatabase(f"postgresql://postgres@127.0.0.1:{closed_port()}/x", timeout=1)
    together = threading.Barrier(4)
    failures: list[UnavailableError] = []

    def call() -> None:
        together.wait()
        try:
            down.rpc("contract_whoami")
        except UnavailableError as exc:
            failures.append(exc)

    callers = [threading.Thread(target=call) for _ in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    # One pool, one wait for its connection: not each caller in turn, timeout after timeout.
    assert (len(failures), len(pools)) == (4, 1)
    down.close()


def test_a_database_down_at_the_first_call_is_used_once_it_is_back(
    database_url: str, contract_functions: None
) -> None:
    link, via_link = relay_to_database(database_url)
    db = PostgresDatabase(via_link, timeout=0.5)
    outage = threading.Thread(target=link.cut, args=(1.5,))
    outage.start()
    try:
        with pytest.raises(UnavailableError):
            db.rpc("contract_whoami")
        outage.join()
        assert db.rpc("contract_whoami")["role"] == "service_role"
    finally:
        outage.join()
        db.close()
        link.close()


def test_an_unreachable_supabase_is_unavailable() -> None:
    down = SupabaseDatabase(f"http://127.0.0.1:{closed_port()}", KEYS.secret_key, timeout=1)
    with pytest.raises(UnavailableError):
        down.rpc("contract_whoami")


def test_supabase_reporting_its_database_down_is_unavailable(contract_functions: None) -> None:
    down = PostgresDatabase(f"postgresql://postgres@127.0.0.1:{closed_port()}/x", timeout=1)
    with FakePostgrest(down, KEYS) as server, pytest.raises(UnavailableError):
        SupabaseDatabase(server.url, KEYS.secret_key).rpc("contract_whoami")
    down.close()


def test_a_wrong_api_key_is_not_mistaken_for_an_outage(postgrest: FakePostgrest) -> None:
    with pytest.raises(InternalError):
        SupabaseDatabase(postgrest.url, "sb_secret_wrong").rpc("contract_whoami")


def test_secret_keys_never_travel_in_the_authorization_header(postgrest: FakePostgrest) -> None:
    postgrest.requests.clear()
    SupabaseDatabase(postgrest.url, KEYS.secret_key).rpc("contract_whoami")
    SupabaseDatabase(postgrest.url, KEYS.legacy_service_key).rpc("contract_whoami")
    new_key, legacy = postgrest.requests
    assert new_key["Apikey"] == KEYS.secret_key
    assert "Authorization" not in new_key
    assert legacy["Authorization"] == f"Bearer {KEYS.legacy_service_key}"


def test_a_dropped_connection_is_replaced_transparently(
    postgres_database: PostgresDatabase, admin_conn: psycopg.Connection
) -> None:
    postgres_database.rpc("contract_whoami")
    killed = [
        row[0]
        for row in admin_conn.execute(
            "SELECT pid FROM (SELECT pid FROM pg_stat_activity"
            "   WHERE application_name = '' AND pid <> pg_backend_pid()"
            "   AND datname = current_database() AND backend_type = 'client backend'"
            "   AND state = 'idle' OFFSET 0) AS idle"
            " WHERE pg_terminate_backend(pid)"
        )
    ]
    assert killed
    # As after a database restart: the server has closed them by the next call.
    while admin_conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (killed,)
    ).fetchone() != (0,):
        time.sleep(0.01)
    assert postgres_database.rpc("contract_whoami") == {"role": "service_role", "uid": None}


def test_a_runaway_statement_is_cut_off_and_reported_unavailable(
    database_url: str, contract_functions: None
) -> None:
    quick = PostgresDatabase(database_url, pool_size=1, timeout=0.5)
    with pytest.raises(UnavailableError) as caught:
        quick.rpc("contract_sleep", {"p_seconds": 5})
    assert getattr(caught.value.diagnostic, "code", None) == "57014"
    assert quick.rpc("contract_sleep", {"p_seconds": 0}) == 1
    quick.close()


def test_a_call_whose_connection_dies_midway_is_not_sent_again(
    postgres_database: PostgresDatabase, admin_conn: psycopg.Connection
) -> None:
    before = admin_conn.execute("SELECT last_value FROM public.contract_runs").fetchone()
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(postgres_database.rpc("contract_count_and_sleep", {"p_seconds": 2}))
        except UnavailableError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    killed = (0,)
    while killed == (0,) and worker.is_alive():
        row = admin_conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE query LIKE '%contract_count_and_sleep%' AND pid <> pg_backend_pid()"
        ).fetchone()
        killed = row if row is not None else (0,)
    worker.join()
    assert isinstance(outcome[0], UnavailableError)
    after = admin_conn.execute("SELECT last_value FROM public.contract_runs").fetchone()
    assert before is not None
    assert after is not None
    assert after[0] - before[0] <= 1  # a second attempt would have counted, and succeeded

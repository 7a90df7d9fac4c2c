"""The monthly statement end to end: a user's token or a service key in, a client's
month under row-level security out, as JSON or as CSV for accounting."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from shared import runtime
from shared.db import PostgresDatabase, database
from shared.settings import Settings
from tests.support.builders import JWT_SECRET, Tenants, forget_every_sms, insert_sms, make_jwt
from tests.support.served import serve

SERVICE_KEY = "s" * 40
DASHBOARD = "https://dashboard.example.com"


@pytest.fixture(scope="module")
def statement_url() -> Iterator[str]:
    for function in serve("metrics", "statement"):
        yield function.url


@pytest.fixture(autouse=True)
def services(database_url: str, shared_db: PostgresDatabase) -> Iterator[None]:
    settings = Settings(
        database_url=database_url,  # type: ignore[arg-type]
        supabase_jwt_secret=JWT_SECRET,  # type: ignore[arg-type]
        metrics_service_keys=SERVICE_KEY,  # type: ignore[arg-type]
        cors_allowed_origins=DASHBOARD,  # type: ignore[arg-type]
    )
    runtime.use(runtime.Services(settings, provided={database: shared_db}))
    yield
    runtime.use(None)


@pytest.fixture
def november(clean: psycopg.Connection, tenants: Tenants) -> Tenants:
    forget_every_sms(clean)
    for deployment, name in ((tenants.deployments_a[0], "=HYPERLINK(1)"),):
        clean.execute("UPDATE public.agent_deployments SET name = %s WHERE id = %s",
                      (name, deployment))  # fmt: skip
    for sent_at in ("2026-10-31T23:00:00Z", "2026-11-20T12:00:00Z"):  # both November in Paris
        insert_sms(clean, tenants.deployments_a[0], sent_at=sent_at, provider_cost="0.0500",
                   voipia_margin="0.0250")  # fmt: skip
    insert_sms(clean, tenants.deployment_b, sent_at="2026-11-20T12:00:00Z")
    return tenants


def get(url: str, token: str, **params: str) -> httpx.Response:
    return httpx.get(url, params=params, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def user(user_id: object) -> str:
    return make_jwt({"sub": str(user_id), "role": "authenticated", "aud": "authenticated"})


def test_a_viewer_reads_their_clients_month_in_the_billing_currency(
    statement_url: str, november: Tenants
) -> None:
    answer = get(statement_url, user(november.viewer_a), client_id=str(november.client_a),
                 month="2026-11")  # fmt: skip

    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "private, no-store"
    body = answer.json()
    assert (body["month"], body["currency"], body["time_zone"]) == (
        "2026-11",
        "EUR",
        "Europe/Paris",
    )
    (line,) = body["lines"]
    assert (line["sms"], line["provider_cost"], line["margin"], line["billed"]) == (
        2, 0.1, 0.05, 0.15,
    )  # fmt: skip
    assert body["totals"]["billed"] == 0.15


def test_another_clients_statement_is_empty_for_a_user_and_whole_for_a_service_key(
    statement_url: str, november: Tenants
) -> None:
    query = {"client_id": str(november.client_b), "month": "2026-11"}
    theirs = get(statement_url, user(november.viewer_a), **query)
    service = get(statement_url, SERVICE_KEY, **query)

    assert (theirs.status_code, theirs.json()["lines"]) == (200, [])
    assert service.json()["totals"]["sms"] == 1


def test_accounting_gets_a_csv_whose_rows_add_up_and_whose_cells_are_not_formulas(
    statement_url: str, november: Tenants
) -> None:
    answer = get(statement_url, SERVICE_KEY, client_id=str(november.client_a), month="2026-11",
                 format="csv")  # fmt: skip

    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/csv")
    assert f"sms-statement-{november.client_a}-2026-11.csv" in answer.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    *lines, total = rows
    assert total["deployment_name"] == "TOTAL"
    assert lines[0]["deployment_name"] == "'=HYPERLINK(1)"
    assert (lines[0]["billed"], total["billed"], total["currency"]) == ("0.15", "0.15", "EUR")
    assert sum(float(r["billed"]) for r in lines) == float(total["billed"])


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"month": "2026-11"}, "client_id"),
        ({"client_id": "x", "month": "2026-11"}, "client_id"),
        ({"client_id": "A", "month": "2026-13"}, "month"),
        ({"client_id": "A", "month": "1999-12"}, "month"),
        ({"client_id": "A", "month": "2026-11", "format": "xml"}, "format"),
    ],
)
def test_a_bad_query_is_told_by_its_parameter(
    statement_url: str, november: Tenants, params: dict[str, str], field: str
) -> None:
    client_a = {"client_id": str(november.client_a)} if params.get("client_id") == "A" else {}
    answer = get(statement_url, SERVICE_KEY, **(params | client_a))
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == field


def test_without_credentials_nobody_reads_a_statement(
    statement_url: str, november: Tenants
) -> None:
    query = {"client_id": str(november.client_a), "month": "2026-11"}
    answer = httpx.get(statement_url, params=query, timeout=30)
    assert answer.status_code == 401


def test_a_billing_time_zone_whose_months_begin_off_the_hour_is_a_setting_to_fix(
    statement_url: str, november: Tenants, database_url: str, shared_db: PostgresDatabase
) -> None:
    settings = Settings(
        database_url=database_url,  # type: ignore[arg-type]
        metrics_service_keys=SERVICE_KEY,  # type: ignore[arg-type]
        billing_time_zone="Asia/Kolkata",
    )
    runtime.use(runtime.Services(settings, provided={database: shared_db}))
    answer = get(statement_url, SERVICE_KEY, client_id=str(november.client_a), month="2026-11")
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "not_configured"


def test_a_browser_on_the_dashboards_origin_may_ask_and_no_other(statement_url: str) -> None:
    asks = {
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    allowed = httpx.options(statement_url, headers={"Origin": DASHBOARD} | asks, timeout=30)
    stranger = httpx.options(statement_url, headers={"Origin": "https://evil.example"} | asks,
                             timeout=30)  # fmt: skip
    no_preflight = httpx.options(statement_url, timeout=30)

    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == DASHBOARD
    assert stranger.status_code == 403
    assert "Access-Control-Allow-Origin" not in stranger.headers
    assert no_preflight.status_code == 405


def test_only_get_is_served(statement_url: str) -> None:
    answer = httpx.post(statement_url, headers={"Authorization": f"Bearer {SERVICE_KEY}"})
    assert answer.status_code == 405


def test_without_its_database_the_statement_says_to_retry(
    statement_url: str, november: Tenants, database_url: str
) -> None:
    gone = PostgresDatabase("postgresql://sms_api@127.0.0.1:9/postgres", pool_size=1, timeout=1)
    settings = Settings(
        database_url=database_url,  # type: ignore[arg-type]
        metrics_service_keys=SERVICE_KEY,  # type: ignore[arg-type]
    )
    runtime.use(runtime.Services(settings, provided={database: gone}))
    try:
        answer = get(statement_url, SERVICE_KEY, client_id=str(november.client_a), month="2026-11")
    finally:
        gone.close()
    assert answer.status_code == 503
    assert int(answer.headers["Retry-After"]) >= 1

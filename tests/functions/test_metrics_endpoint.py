"""metrics end to end: Supabase access tokens in, get_sms_metrics under RLS out."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from werkzeug.wrappers import Response

from functions.metrics import aws_lambda as metrics_lambda
from shared import runtime
from shared.db import SERVICE, PostgresDatabase, database
from shared.settings import Settings
from tests.support.builders import JWT_SECRET, NOV_1, WEEK, Shop, metrics
from tests.support.served import serve
from tools.lambda_events import function_url_event, headers_of
from tools.loopback import LoopbackServer

SERVICE_KEY = "m" * 40
DASHBOARD = "https://dashboard.example.com"
STRANGER = "https://elsewhere.example"
EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
STRANGER_KEY = ec.generate_private_key(ec.SECP256R1())


class Jwks(LoopbackServer):
    """The project's published keys, as Supabase Auth serves them."""

    def __init__(self) -> None:
        keys = [
            json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key())) | {"kid": "ec-1"},
            json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key())) | {"kid": "rsa-1"},
        ]
        self.body = json.dumps({"keys": keys})
        self.requests = 0
        super().__init__(self._wsgi)

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.requests += 1
        return Response(self.body, mimetype="application/json")(environ, start_response)

    @property
    def jwks_url(self) -> str:
        return self.url + "/auth/v1/.well-known/jwks.json"


@pytest.fixture(scope="module")
def jwks() -> Iterator[Jwks]:
    with Jwks() as server:
        yield server


@pytest.fixture(scope="module")
def metrics_url() -> Iterator[str]:
    for function in serve("metrics"):
        yield function.url


@pytest.fixture(autouse=True)
def services(database_url: str, shared_db: PostgresDatabase, jwks: Jwks) -> Iterator[None]:
    settings = Settings(
        database_url=database_url,  # type: ignore[arg-type]
        supabase_jwt_secret=JWT_SECRET,  # type: ignore[arg-type]
        supabase_jwks_url=jwks.jwks_url,  # type: ignore[arg-type]
        metrics_service_keys=SERVICE_KEY,  # type: ignore[arg-type]
        cors_allowed_origins=DASHBOARD,  # type: ignore[arg-type]
    )
    runtime.use(runtime.Services(settings, provided={database: shared_db}))
    yield
    runtime.use(None)


def token(
    user: Any,
    *,
    algorithm: str = "HS256",
    key: Any = JWT_SECRET,
    kid: str | None = None,
    ttl: int = 3600,
    **claims: Any,
) -> str:
    now = int(time.time())
    payload = {"sub": str(user), "role": "authenticated", "aud": "authenticated",
               "iat": now, "exp": now + ttl} | claims  # fmt: skip
    headers = {"kid": kid} if kid else None
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def get(url: str, bearer: str | None, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    week = {"start": NOV_1.isoformat(), "end": (NOV_1 + WEEK).isoformat()}
    return httpx.get(url, params=week | params, headers=headers, timeout=30)


@pytest.mark.parametrize("algorithm", ["HS256", "ES256", "RS256"])
def test_a_signed_in_user_gets_their_own_figures(
    metrics_url: str, shop: Shop, shared_db: PostgresDatabase, algorithm: str
) -> None:
    key: Any = {"HS256": JWT_SECRET, "ES256": EC_KEY, "RS256": RSA_KEY}[algorithm]
    kid = {"ES256": "ec-1", "RS256": "rsa-1"}.get(algorithm)
    response = get(metrics_url, token(shop.viewer_a, algorithm=algorithm, key=key, kid=kid))
    assert response.status_code == 200
    assert "private" in response.headers["Cache-Control"]
    body = response.json()
    assert body.pop("top_failure_reasons") == [{"failure_reason": "Unknown", "count": 1}]
    assert body == metrics(shared_db, client_id=shop.client_a)
    assert body["current_period"]["total_sms"] == 4


def test_a_dashboard_is_offered_only_the_filters_its_user_may_see(
    metrics_url: str, shop: Shop
) -> None:
    mine = get(metrics_url, token(shop.viewer_a), include="filters").json()["filters"]
    every = get(metrics_url, SERVICE_KEY, include="filters").json()["filters"]

    assert [c["id"] for c in mine["clients"]] == [str(shop.client_a)]
    assert {d["id"] for d in mine["deployments"]} == {str(shop.a_louis), str(shop.a_arthur)}
    assert sorted(mine["agent_types"]) == ["arthur", "louis"]
    assert {c["id"] for c in every["clients"]} == {str(shop.client_a), str(shop.client_b)}
    assert get(metrics_url, token(shop.viewer_a)).json().get("filters") is None  # not asked


def test_another_clients_id_gives_empty_figures(metrics_url: str, shop: Shop) -> None:
    response = get(metrics_url, token(shop.viewer_a), client_id=str(shop.client_b))
    assert response.status_code == 200
    assert response.json()["current_period"]["total_sms"] == 0


def test_a_service_key_sees_every_client(
    metrics_url: str, shop: Shop, shared_db: PostgresDatabase
) -> None:
    response = get(metrics_url, SERVICE_KEY)
    body = response.json()
    del body["top_failure_reasons"]
    assert body == metrics(shared_db, caller=SERVICE)
    assert response.json()["current_period"]["total_sms"] == 5


@pytest.mark.parametrize(
    "bad",
    ["missing", "expired", "wrong_secret", "wrong_audience", "none", "anon_role",
     "unknown_kid", "garbage", "service_role_claim"],
)  # fmt: skip
def test_tokens_that_are_not_valid_are_401(metrics_url: str, shop: Shop, bad: str) -> None:
    user = shop.viewer_a
    bearer: str | None = {
        "missing": None,
        "expired": token(user, ttl=-10),
        "wrong_secret": token(user, key="another-secret-that-is-long-enough-000000"),
        "wrong_audience": token(user, aud="somebody-else"),
        "none": jwt.encode(
            {
                "sub": str(user),
                "role": "authenticated",
                "aud": "authenticated",
                "exp": int(time.time()) + 60,
            },
            None,  # type: ignore[arg-type]
            algorithm="none",
        ),
        "anon_role": token(user, role="anon"),
        "unknown_kid": token(user, algorithm="ES256", key=STRANGER_KEY, kid="stolen"),
        "garbage": "not.a.token",
        "service_role_claim": token(user, role="service_role"),
    }[bad]
    response = get(metrics_url, bearer)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"client_id": "not-a-uuid"}, "client_id"),
        ({"deployment_id": "42"}, "deployment_id"),
        ({"start": "yesterday"}, "start"),
        ({"end": "2026-13-01T00:00:00Z"}, "end"),
        # A number would otherwise be read as Unix time: a period in 1970 (found by
        # Schemathesis).
        ({"end": "0.5"}, "end"),
        ({"start": "1764000000"}, "start"),
        ({"agent_type": "robert"}, "agent_type"),
        ({"surprise": "1"}, "surprise"),
    ],
)
def test_bad_parameters_are_422_naming_them(
    metrics_url: str, shop: Shop, params: dict[str, str], field: str
) -> None:
    response = get(metrics_url, token(shop.viewer_a), **params)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == field


@pytest.mark.parametrize(
    ("start", "end", "words"),
    [("2026-11-08T00:00:00Z", "2026-11-01T00:00:00Z", "after start"),
     ("2025-01-01T00:00:00Z", "2026-11-01T00:00:00Z", "at most 366 days")],
)  # fmt: skip
def test_a_period_backwards_or_too_long_is_422(
    metrics_url: str, shop: Shop, start: str, end: str, words: str
) -> None:
    response = get(metrics_url, token(shop.viewer_a), start=start, end=end)
    assert response.status_code == 422
    assert words in response.json()["error"]["message"]


def test_an_end_too_early_for_a_default_start_is_422_not_500(metrics_url: str, shop: Shop) -> None:
    # The default start, 30 days before, is before year 1 (found by Schemathesis).
    headers = {"Authorization": f"Bearer {token(shop.viewer_a)}"}
    response = httpx.get(
        metrics_url, params={"end": "0001-01-11T00:00:00Z"}, headers=headers, timeout=30
    )
    assert response.status_code == 422, response.text
    assert "end" in response.json()["error"]["message"]


def test_without_dates_it_is_the_last_30_days(metrics_url: str, shop: Shop) -> None:
    headers = {"Authorization": f"Bearer {token(shop.viewer_a)}"}
    response = httpx.get(metrics_url, headers=headers, timeout=30)
    assert response.status_code == 200
    assert set(response.json()) == {
        "current_period", "previous_period", "comparison", "top_failure_reasons", "currency",
        "previous_period_more", "period",
    }  # fmt: skip
    period = response.json()["period"]
    start, end = (datetime.fromisoformat(period[key]) for key in ("start", "end"))
    assert end - start == timedelta(days=30)
    assert datetime.now(UTC) < end <= datetime.now(UTC) + timedelta(hours=1)


def test_only_get_is_served(metrics_url: str, shop: Shop) -> None:
    response = httpx.post(metrics_url, headers={"Authorization": f"Bearer {SERVICE_KEY}"})
    assert response.status_code == 405


def test_the_jwks_is_fetched_once_and_cached(metrics_url: str, shop: Shop, jwks: Jwks) -> None:
    """Once per process (here, per test's Services), whatever the number of requests."""
    fetched_before = jwks.requests
    for _ in range(3):
        assert get(metrics_url, token(shop.viewer_a, algorithm="ES256", key=EC_KEY,
                                      kid="ec-1")).status_code == 200  # fmt: skip
    assert jwks.requests - fetched_before <= 1


def test_series_and_failure_reasons_sit_beside_the_seeds_keys(
    metrics_url: str, shop: Shop, shared_db: PostgresDatabase
) -> None:
    response = get(metrics_url, token(shop.viewer_a), series="day")
    body = response.json()
    assert set(body) == {
        "current_period", "previous_period", "comparison", "top_failure_reasons", "series",
        "currency", "previous_period_more", "period",
    }  # fmt: skip
    assert len(body["series"]) == 7
    assert sum(b["total_sms"] for b in body["series"]) == 4
    assert body["top_failure_reasons"] == [{"failure_reason": "Unknown", "count": 1}]
    rpc = metrics(shared_db, client_id=shop.client_a)
    assert {k: body[k] for k in rpc} == rpc
    assert get(metrics_url, token(shop.viewer_a), series="hour").status_code == 422


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_keys_that_cannot_be_fetched_are_an_outage_not_a_bad_token(
    metrics_url: str, shop: Shop, database_url: str, shared_db: PostgresDatabase
) -> None:
    closed = f"http://127.0.0.1:{closed_port()}/auth/v1/.well-known/jwks.json"
    settings = Settings(database_url=database_url, supabase_jwks_url=closed)  # type: ignore[arg-type]
    runtime.use(runtime.Services(settings, provided={database: shared_db}))
    response = get(metrics_url, token(shop.viewer_a, algorithm="ES256", key=EC_KEY, kid="ec-1"))
    assert response.status_code == 503
    assert "Retry-After" in response.headers


# --- a dashboard on another origin, from a browser (CORS) ------------------------------


def preflight(url: str, origin: str, method: str = "GET") -> httpx.Response:
    """What a browser sends before a cross-origin GET that carries Authorization."""
    headers = {"Origin": origin, "Access-Control-Request-Method": method,
               "Access-Control-Request-Headers": "authorization,x-request-id"}  # fmt: skip
    return httpx.options(url, headers=headers, timeout=30)


def from_dashboard(
    url: str, bearer: str | None, origin: str = DASHBOARD, **params: Any
) -> httpx.Response:
    headers = {"Origin": origin} | ({"Authorization": f"Bearer {bearer}"} if bearer else {})
    week = {"start": NOV_1.isoformat(), "end": (NOV_1 + WEEK).isoformat()}
    return httpx.get(url, params=week | params, headers=headers, timeout=30)


def listed(value: str | None) -> set[str]:
    return {item.strip().lower() for item in (value or "").split(",") if item.strip()}


def assert_lets_the_dashboard_read(response: httpx.Response) -> None:
    assert response.headers["Access-Control-Allow-Origin"] == DASHBOARD
    assert listed(response.headers["Access-Control-Expose-Headers"]) == {
        "x-request-id",
        "retry-after",
    }
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "origin" in listed(response.headers.get("Vary"))


def assert_allows_nothing(response: httpx.Response) -> None:
    assert not [name for name in response.headers if name.lower().startswith("access-control-")]
    assert "origin" in listed(response.headers.get("Vary"))


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_preflight_from_the_dashboard_is_204_with_what_it_may_send(
    metrics_url: str, method: str
) -> None:
    response = preflight(metrics_url, DASHBOARD, method)
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["Access-Control-Allow-Origin"] == DASHBOARD
    # Always GET alone: asked for another method, the browser sees it is not listed.
    assert response.headers["Access-Control-Allow-Methods"] == "GET"
    assert listed(response.headers["Access-Control-Allow-Headers"]) == {
        "authorization",
        "x-request-id",
    }
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "origin" in listed(response.headers["Vary"])
    assert response.headers["X-Request-Id"]


@pytest.mark.parametrize(
    "origin",
    [STRANGER, "null", "https://dashboard.example.com.elsewhere.example",
     "http://dashboard.example.com", "https://dashboard.example.com:8443"],
)  # fmt: skip
def test_a_preflight_from_another_origin_is_403_and_allows_nothing(
    metrics_url: str, origin: str
) -> None:
    response = preflight(metrics_url, origin)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert_allows_nothing(response)


def test_a_preflight_runs_neither_the_token_check_nor_the_query(metrics_url: str) -> None:
    # No way to verify a token, and a database that is not there: the GET cannot succeed
    # (500, not configured), and the preflight does not notice.
    settings = Settings(
        database_url=f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres",  # type: ignore[arg-type]
        cors_allowed_origins=DASHBOARD,  # type: ignore[arg-type]
    )
    runtime.use(runtime.Services(settings))
    assert preflight(metrics_url, DASHBOARD).status_code == 204
    answer = from_dashboard(metrics_url, "any.bearer.token")
    assert answer.json()["error"]["code"] == "not_configured"
    assert_lets_the_dashboard_read(answer)


def test_an_options_without_the_preflight_headers_is_still_405(metrics_url: str) -> None:
    for headers in ({}, {"Origin": DASHBOARD}, {"Access-Control-Request-Method": "GET"}):
        response = httpx.options(metrics_url, headers=headers, timeout=30)
        assert response.status_code == 405
        assert response.headers["Allow"] == "GET"
        assert "origin" in listed(response.headers["Vary"])


def test_the_dashboards_get_carries_the_cors_headers(metrics_url: str, shop: Shop) -> None:
    response = from_dashboard(metrics_url, token(shop.viewer_a))
    assert response.status_code == 200
    assert response.json()["current_period"]["total_sms"] == 4
    assert response.headers["Cache-Control"] == "private, no-store"
    assert_lets_the_dashboard_read(response)


@pytest.mark.parametrize(
    ("bearer", "params", "status"),
    [(None, {}, 401), ("wrong.bearer.token", {}, 401), (SERVICE_KEY, {"client_id": "x"}, 422)],
)
def test_errors_to_the_dashboard_carry_the_cors_headers_too(
    metrics_url: str, shop: Shop, bearer: str | None, params: dict[str, str], status: int
) -> None:
    response = from_dashboard(metrics_url, bearer, **params)
    assert response.status_code == status
    assert_lets_the_dashboard_read(response)


def test_a_405_to_the_dashboard_carries_the_cors_headers(metrics_url: str) -> None:
    response = httpx.post(metrics_url, headers={"Origin": DASHBOARD}, timeout=30)
    assert response.status_code == 405
    assert_lets_the_dashboard_read(response)


def test_an_outage_told_to_the_dashboard_lets_it_read_retry_after(
    metrics_url: str, shop: Shop, database_url: str, shared_db: PostgresDatabase
) -> None:
    closed = f"http://127.0.0.1:{closed_port()}/auth/v1/.well-known/jwks.json"
    settings = Settings(
        database_url=database_url,  # type: ignore[arg-type]
        supabase_jwks_url=closed,  # type: ignore[arg-type]
        cors_allowed_origins=DASHBOARD,  # type: ignore[arg-type]
    )
    runtime.use(runtime.Services(settings, provided={database: shared_db}))
    response = from_dashboard(
        metrics_url, token(shop.viewer_a, algorithm="ES256", key=EC_KEY, kid="ec-1")
    )
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert_lets_the_dashboard_read(response)


def test_another_origin_gets_its_answer_but_no_leave_to_read_it(
    metrics_url: str, shop: Shop
) -> None:
    # The browser, not the function, withholds the answer from that page.
    for bearer in (token(shop.viewer_a), None):
        response = from_dashboard(metrics_url, bearer, origin=STRANGER)
        assert response.status_code in (200, 401)
        assert_allows_nothing(response)


def test_every_answer_varies_on_origin_even_without_one(metrics_url: str, shop: Shop) -> None:
    response = get(metrics_url, token(shop.viewer_a))
    assert response.status_code == 200
    assert_allows_nothing(response)


def test_no_origin_may_call_unless_configured(
    metrics_url: str, shop: Shop, database_url: str, shared_db: PostgresDatabase
) -> None:
    settings = Settings(
        database_url=database_url,  # type: ignore[arg-type]
        supabase_jwt_secret=JWT_SECRET,  # type: ignore[arg-type]
    )
    runtime.use(runtime.Services(settings, provided={database: shared_db}))
    assert preflight(metrics_url, DASHBOARD).status_code == 403
    response = from_dashboard(metrics_url, token(shop.viewer_a))
    assert response.status_code == 200  # a same-origin or server caller is unaffected
    assert_allows_nothing(response)


def test_a_star_in_the_configuration_stops_every_answer_with_its_reason(
    metrics_url: str,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", "*")
    runtime.use(None)  # the function reads its settings from the environment
    with caplog.at_level(logging.ERROR, "sms.http"):
        answers = [preflight(metrics_url, DASHBOARD), from_dashboard(metrics_url, SERVICE_KEY)]
    for response in answers:
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "not_configured"
        assert_allows_nothing(response)
    assert any("CORS_ALLOWED_ORIGINS: '*' is refused" in r.getMessage() for r in caplog.records)


def test_behind_the_function_url_the_answers_are_the_same() -> None:
    allowed = metrics_lambda.handler(
        function_url_event("OPTIONS", headers={"Origin": DASHBOARD,
                                               "Access-Control-Request-Method": "GET"}),
        None,
    )  # fmt: skip
    assert allowed["statusCode"] == 204
    assert headers_of(allowed)["access-control-allow-origin"] == DASHBOARD
    refused = metrics_lambda.handler(
        function_url_event("OPTIONS", headers={"Origin": STRANGER,
                                               "Access-Control-Request-Method": "GET"}),
        None,
    )  # fmt: skip
    assert refused["statusCode"] == 403
    assert "access-control-allow-origin" not in headers_of(refused)
    unauthorized = metrics_lambda.handler(
        function_url_event("GET", headers={"Origin": DASHBOARD}), None
    )
    assert unauthorized["statusCode"] == 401
    assert headers_of(unauthorized)["access-control-allow-origin"] == DASHBOARD
    assert "origin" in listed(headers_of(unauthorized)["vary"])

"""metrics end to end: Supabase access tokens in, get_sms_metrics under RLS out."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from werkzeug.wrappers import Response

from shared import runtime
from shared.db import SERVICE, PostgresDatabase, database
from shared.settings import Settings
from tests.support.builders import JWT_SECRET, NOV_1, WEEK, Shop, metrics
from tests.support.served import serve
from tools.loopback import LoopbackServer

SERVICE_KEY = "m" * 40
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
        "current_period", "previous_period", "comparison", "top_failure_reasons",
    }  # fmt: skip


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
    }  # fmt: skip
    assert len(body["series"]) == 7
    assert sum(b["total_sms"] for b in body["series"]) == 4
    assert body["top_failure_reasons"] == [{"failure_reason": "Unknown", "count": 1}]
    seed_keys = {k: body[k] for k in ("current_period", "previous_period", "comparison")}
    assert seed_keys == metrics(shared_db, client_id=shop.client_a)
    assert get(metrics_url, token(shop.viewer_a), series="hour").status_code == 422


def test_keys_that_cannot_be_fetched_are_an_outage_not_a_bad_token(
    metrics_url: str, shop: Shop, database_url: str, shared_db: PostgresDatabase
) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/auth/v1/.well-known/jwks.json"
    settings = Settings(database_url=database_url, supabase_jwks_url=closed)  # type: ignore[arg-type]
    runtime.use(runtime.Services(settings, provided={database: shared_db}))
    response = get(metrics_url, token(shop.viewer_a, algorithm="ES256", key=EC_KEY, kid="ec-1"))
    assert response.status_code == 503
    assert "Retry-After" in response.headers

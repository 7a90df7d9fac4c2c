"""twilio_status served over real HTTP (callbacks and reconcile), into real Postgres."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest

from shared import runtime
from shared.db import PostgresDatabase, database
from tests.support.builders import Tenants, insert_sms
from tests.support.served import serve
from tests.support.status_callbacks import (
    MAIN_ACCOUNT,
    SUB_TOKEN,
    SUBACCOUNT,
    TOKEN,
    StoreRates,
    new_sid,
    settings_for,
    use_settings,
)
from tools.fake_twilio import FakeTwilio


@pytest.fixture(scope="module")
def status_url() -> Iterator[str]:
    for function in serve("twilio_status"):
        yield function.url.rstrip("/")


@pytest.fixture(scope="module")
def reconcile_url() -> Iterator[str]:
    for function in serve("twilio_status", target="reconcile"):
        yield function.url


@pytest.fixture(autouse=True)
def services(database_url: str, shared_db: PostgresDatabase) -> Iterator[runtime.Services]:
    current = runtime.Services(settings_for(database_url), provided={database: shared_db})
    runtime.use(current)
    yield current
    runtime.use(None)


@pytest.fixture
def sms_sid(tenants: Tenants, clean: psycopg.Connection) -> str:
    sid = new_sid()
    insert_sms(clean, tenants.deployment_b, provider_message_sid=sid, provider_status="queued")
    return sid


@pytest.fixture
def twilio_api(services: runtime.Services) -> Iterator[FakeTwilio]:
    with FakeTwilio({MAIN_ACCOUNT: TOKEN, SUBACCOUNT: SUB_TOKEN}) as api:
        use_settings(services, twilio_api_base_url=api.url)
        yield api


@pytest.fixture
def rates(clean: psycopg.Connection) -> StoreRates:
    """Stores ECB rates as the rates run does ((currency, date, units per euro), ...),
    over none: each test starts without any."""
    clean.execute("DELETE FROM private.exchange_rates")

    def store(*rates: tuple[str, str, str]) -> None:
        body = [{"currency": c, "date": d, "rate": r} for c, d, r in rates]
        clean.execute("SELECT public.store_exchange_rates(%s::jsonb)", (json.dumps(body),))

    return store

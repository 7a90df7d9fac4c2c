"""The exchange-rate job against tools/fake_ecb.py, into real Postgres through PgBouncer
as sms_api (the path production takes), in process, behind HTTP and as its schedule
invokes it on Lambda."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from shared import runtime
from shared.db import PostgresDatabase, database
from shared.settings import Settings
from tests.support.builders import Tenants, insert_sms
from tests.support.served import serve
from tools.fake_ecb import FakeEcb

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def rates_url() -> Iterator[str]:
    """exchange_rates served over real HTTP, as make dev serves it."""
    for function in serve("billing", target="exchange_rates"):
        yield function.url


@pytest.fixture
def ecb() -> Iterator[FakeEcb]:
    """The ECB, knowing USD and GBP on every weekday of the last 90 days."""
    with FakeEcb() as fake:
        yield fake


@pytest.fixture(autouse=True)
def services(
    database_url: str, shared_db: PostgresDatabase, ecb: FakeEcb, clean: psycopg.Connection
) -> Iterator[runtime.Services]:
    current = use_source(database_url, shared_db, ecb.rates_url)
    yield current
    runtime.use(None)


def use_source(database_url: str, db: PostgresDatabase, rates_url: str) -> runtime.Services:
    settings = Settings(database_url=database_url, ecb_rates_url=rates_url)  # type: ignore[arg-type]
    current = runtime.Services(settings, provided={database: db})
    runtime.use(current)
    return current


def today() -> date:
    return datetime.now(UTC).date()


def weekday_before(day: date, weekday: int) -> date:
    """The last such weekday (0 Monday) strictly before this day."""
    back = (day.weekday() - weekday - 1) % 7 + 1
    return day - timedelta(days=back)


def usd_sms(conn: psycopg.Connection, tenants: Tenants, sent: date, amount: str = "0.0790") -> str:
    """An SMS n8n recorded with Twilio's price in USD, sent at 10:00 UTC that day."""
    sid = "SM" + uuid.uuid4().hex
    insert_sms(
        conn,
        tenants.deployment_b,
        provider_message_sid=sid,
        sent_at=datetime.combine(sent, time(10), UTC),
        provider_cost=amount,
        currency="USD",
    )
    return sid


def priced(conn: psycopg.Connection, sid: str) -> dict[str, Any]:
    cur = conn.execute(
        "SELECT provider_cost, provider_amount, provider_currency, exchange_rate,"
        " exchange_rate_date, currency FROM agent_sms WHERE provider_message_sid = %s",
        (sid,),
    )
    row = cur.fetchone()
    assert row is not None
    assert cur.description is not None
    return dict(zip([c.name for c in cur.description], row, strict=True))


def converted(conn: psycopg.Connection, amount: str, usd_per_euro: Decimal) -> Decimal:
    """What the SQL makes of an amount in USD on a day one euro bought this many dollars:
    computed by Postgres, as the trigger computes it."""
    row = conn.execute(
        "SELECT round(%s::numeric * (1 / %s::numeric), 4)", (amount, usd_per_euro)
    ).fetchone()
    assert row is not None
    return Decimal(row[0])


def stored_rates(conn: psycopg.Connection) -> dict[tuple[date, str], Decimal]:
    rows = conn.execute("SELECT rate_date, currency, rate FROM private.exchange_rates").fetchall()
    return {(day, currency): rate for day, currency, rate in rows}

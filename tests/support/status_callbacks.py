"""Twilio status callbacks under test: the accounts, the settings, signing as Twilio
signs, and reading back what was stored."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
from twilio.request_validator import RequestValidator

from shared import runtime
from shared.db import database
from shared.settings import Settings
from tests.support.builders import Tenants, insert_sms
from tools.fake_twilio import status_callback

MAIN_ACCOUNT = "AC" + "a" * 32


SUBACCOUNT = "AC" + "b" * 32


TOKEN = "12345"  # Twilio's documented example token


SUB_TOKEN = "subaccount-token"


PUBLIC = "https://mycompany.com"


# Stores ECB rates as the rates run does: (currency, date, units per euro), ...
StoreRates = Callable[..., None]


def settings_for(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "twilio_account_sid": MAIN_ACCOUNT,
        "twilio_auth_token": TOKEN,
        "twilio_subaccounts": f"{SUBACCOUNT}:{SUB_TOKEN}",
        "public_base_url": PUBLIC,
    } | overrides
    return Settings(**values)


def use_settings(services: runtime.Services, **overrides: Any) -> None:
    database_url = services.settings.database_url
    assert database_url is not None
    runtime.use(
        runtime.Services(
            settings_for(database_url.get_secret_value(), **overrides),
            provided={database: services.db},
        )
    )


def new_sid() -> str:
    return "SM" + uuid.uuid4().hex


def callback(sid: str, status: str, **extra: str) -> dict[str, str]:
    return status_callback(MAIN_ACCOUNT, sid, status, **extra)


def post(
    status_url: str,
    params: dict[str, str],
    *,
    path: str = "/",
    token: str = TOKEN,
    signed_url: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST as Twilio does: form-encoded, signed over the public URL and every param."""
    signature = RequestValidator(token).compute_signature(signed_url or PUBLIC + path, params)
    return httpx.post(
        status_url + path,
        data=params,
        headers={"X-Twilio-Signature": signature} | (headers or {}),
        timeout=30,
    )


def row(conn: psycopg.Connection, sid: str) -> dict[str, Any]:
    cur = conn.execute("SELECT * FROM agent_sms WHERE provider_message_sid = %s", (sid,))
    found = cur.fetchone()
    assert found is not None
    assert cur.description is not None
    return dict(zip([c.name for c in cur.description], found, strict=True))


def events(conn: psycopg.Connection, sid: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT twilio_status, error_code, applied_at IS NOT NULL, pending_phone_number, source"
        " FROM agent_sms_events WHERE provider_message_sid = %s ORDER BY id",
        (sid,),
    ).fetchall()


def event_count(conn: psycopg.Connection) -> int:
    result = conn.execute("SELECT count(*) FROM agent_sms_events").fetchone()
    assert result is not None
    return int(result[0])


def old_sms(conn: psycopg.Connection, tenants: Tenants, **values: Any) -> str:
    sid = new_sid()
    sent = datetime.now(UTC) - timedelta(hours=3)
    insert_sms(
        conn,
        tenants.deployment_b,
        provider_message_sid=sid,
        sent_at=sent,
        provider_cost=None,
        **({"provider_status": "sent"} | values),
    )
    return sid

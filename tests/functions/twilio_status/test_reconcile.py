"""Reconcile against a local stand-in for Twilio's API: lost callbacks, prices, rate
limits, outages and refused credentials."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import psycopg

from shared import runtime
from tests.support.builders import Tenants, insert_sms
from tests.support.status_callbacks import (
    MAIN_ACCOUNT,
    SUBACCOUNT,
    events,
    new_sid,
    old_sms,
    row,
    use_settings,
)
from tools.fake_twilio import FakeTwilio


def test_reconcile_recovers_a_lost_callback_and_fills_in_the_price(
    reconcile_url: str, twilio_api: FakeTwilio, tenants: Tenants, clean: psycopg.Connection
) -> None:
    lost = old_sms(clean, tenants)
    twilio_api.add(MAIN_ACCOUNT, lost, status="delivered", price="-0.07500", price_unit="eur")
    in_sub = old_sms(clean, tenants)
    twilio_api.add(SUBACCOUNT, in_sub, status="undelivered", error_code=30005, price="-0.0750")
    vanished = old_sms(clean, tenants)
    recent = new_sid()
    insert_sms(clean, tenants.deployment_b, provider_message_sid=recent, provider_status="sent")

    response = httpx.post(reconcile_url, timeout=30)
    assert response.status_code == 200
    assert response.json() == {
        "candidates": 3,
        "asked": 2,
        "changed": 2,
        "not_found": 1,
        "errors": 0,
        "rate_limited": False,
        "twilio_unreachable": False,
    }
    delivered = row(clean, lost)
    assert (delivered["status"], delivered["provider_cost"], delivered["currency"]) == (
        "delivered",
        Decimal("0.0750"),
        "EUR",
    )
    assert delivered["delivered_at"] == datetime(2026, 11, 24, 10, 0, 5, tzinfo=UTC)
    failed = row(clean, in_sub)
    assert (failed["status"], failed["failure_reason"]) == ("failed", "Unknown destination handset")
    assert row(clean, vanished)["status"] == "sent"
    assert events(clean, lost)[-1][-1] == "reconcile"


def test_reconcile_prices_final_sms_that_have_no_price(
    reconcile_url: str, twilio_api: FakeTwilio, tenants: Tenants, clean: psycopg.Connection
) -> None:
    sid = old_sms(clean, tenants, status="delivered", provider_status="delivered")
    twilio_api.add(MAIN_ACCOUNT, sid, status="delivered", price="-0.0079", price_unit="USD")
    assert httpx.post(reconcile_url, timeout=30).json()["changed"] == 1
    priced = row(clean, sid)
    assert (priced["provider_cost"], priced["currency"], priced["status"]) == (
        Decimal("0.0079"),
        "USD",
        "delivered",
    )


def test_reconcile_stops_on_429_and_resumes_next_run(
    reconcile_url: str, twilio_api: FakeTwilio, tenants: Tenants, clean: psycopg.Connection
) -> None:
    sids = [old_sms(clean, tenants) for _ in range(5)]
    for sid in sids:
        twilio_api.add(MAIN_ACCOUNT, sid, status="delivered", price="-0.075")
    twilio_api.rate_limit_after = 2
    first = httpx.post(reconcile_url, timeout=30).json()
    assert (first["asked"], first["rate_limited"]) == (2, True)
    twilio_api.rate_limit_after = None
    second = httpx.post(reconcile_url, timeout=30).json()
    assert (second["candidates"], second["asked"], second["rate_limited"]) == (3, 3, False)
    finals = clean.execute(
        "SELECT count(*) FROM agent_sms WHERE provider_message_sid = ANY(%s)"
        " AND status = 'delivered'",
        (sids,),
    ).fetchone()
    assert finals == (5,)


def test_reconcile_without_twilio_credentials_fails_closed(
    reconcile_url: str, services: runtime.Services
) -> None:
    use_settings(services, twilio_account_sid=None, twilio_auth_token=None, twilio_subaccounts="")
    response = httpx.post(reconcile_url, timeout=30)
    assert response.status_code == 500


def test_reconcile_survives_a_bad_answer_and_goes_on(
    reconcile_url: str, twilio_api: FakeTwilio, tenants: Tenants, clean: psycopg.Connection
) -> None:
    broken = old_sms(clean, tenants)
    twilio_api.add(MAIN_ACCOUNT, broken, status="teleported")
    fine = old_sms(clean, tenants)
    twilio_api.add(MAIN_ACCOUNT, fine, status="delivered", price="-0.07")
    result = httpx.post(reconcile_url, timeout=30).json()
    assert (result["errors"], result["changed"]) == (1, 1)
    assert row(clean, fine)["status"] == "delivered"


def test_reconcile_with_refused_credentials_stops_and_says_so(
    reconcile_url: str, twilio_api: FakeTwilio, tenants: Tenants, clean: psycopg.Connection
) -> None:
    old_sms(clean, tenants)
    twilio_api.tokens[MAIN_ACCOUNT] = "rotated"
    assert httpx.post(reconcile_url, timeout=30).status_code == 500
    # Nothing was asked, so nothing stays claimed: the next run starts with it again.
    claimed = clean.execute("SELECT count(*) FROM private.sms_reconcile_checks").fetchone()
    assert claimed == (0,)


def test_a_price_in_another_currency_is_not_mixed_with_the_margin(
    reconcile_url: str, twilio_api: FakeTwilio, tenants: Tenants, clean: psycopg.Connection
) -> None:
    with_margin = old_sms(clean, tenants, status="delivered", provider_status="delivered",
                          voipia_margin="0.0300")  # fmt: skip
    twilio_api.add(MAIN_ACCOUNT, with_margin, status="delivered", price="-0.0079", price_unit="USD")
    no_margin = old_sms(clean, tenants, status="delivered", provider_status="delivered",
                        voipia_margin="0")  # fmt: skip
    twilio_api.add(MAIN_ACCOUNT, no_margin, status="delivered", price="-0.0079", price_unit="USD")
    httpx.post(reconcile_url, timeout=30)
    kept = row(clean, with_margin)
    assert (kept["provider_cost"], kept["currency"]) == (None, "EUR")
    priced = row(clean, no_margin)
    assert (priced["provider_cost"], priced["currency"]) == (Decimal("0.0079"), "USD")


def test_reconcile_when_twilio_cannot_be_reached_is_503_and_loses_nothing(
    reconcile_url: str, services: runtime.Services, tenants: Tenants, clean: psycopg.Connection
) -> None:
    sids = [old_sms(clean, tenants) for _ in range(3)]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    use_settings(services, twilio_api_base_url=closed)
    response = httpx.post(reconcile_url, timeout=30)
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    claimed = clean.execute(
        "SELECT count(*) FROM private.sms_reconcile_checks WHERE provider_message_sid = ANY(%s)",
        (sids,),
    ).fetchone()
    assert claimed == (0,)

"""Reconcile against a local stand-in for Twilio's API: lost callbacks, prices from the
Messages list (in the billing currency, by the rate of the send date), rate limits,
outages and refused credentials."""

from __future__ import annotations

import socket
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest

from shared import runtime
from tests.support.builders import Tenants, insert_sms
from tests.support.status_callbacks import (
    MAIN_ACCOUNT,
    SUBACCOUNT,
    StoreRates,
    events,
    new_sid,
    old_sms,
    row,
    use_settings,
)
from tools.fake_twilio import FakeTwilio, rfc2822


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
        "to_price": 0,  # both now final have their price from the fetch
        "asked": 2,
        "changed": 2,
        "priced": 0,
        "not_found": 1,
        "errors": 0,
        "twilio_requests": 5,  # main; main then subaccount; both for the vanished one
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


# --- prices, from the Messages list -------------------------------------------------------

USD_RATE = "1.0800"  # USD per euro
# What a 0.0079 USD SMS costs in euros, with the rate as stored (numeric(18,8)).
EUR_PER_USD = Decimal("0.92592593")


def days_ago(days: int, at: time = time(10, 0)) -> datetime:
    return datetime.combine(datetime.now(UTC).date() - timedelta(days=days), at, UTC)


def working_day(on_or_before: date | datetime) -> date:
    """The last day the ECB publishes rates (Monday to Friday) on or before this one."""
    day = on_or_before.date() if isinstance(on_or_before, datetime) else on_or_before
    while day.isoweekday() > 5:
        day -= timedelta(days=1)
    return day


def final_sms(
    conn: psycopg.Connection,
    tenants: Tenants,
    sent: list[datetime],
    status: str = "delivered",
) -> list[str]:
    """Final SMS without a price, sent at these times; done 5 s after sending."""
    sids = [new_sid() for _ in sent]
    conn.execute(
        """
        INSERT INTO agent_sms (deployment_id, phone_number, message_content,
                               provider_message_sid, sent_at, status, provider_status,
                               delivered_at, failed_at, provider_cost)
        SELECT %(deployment)s, '+33639980000', 'Bonjour', u.sid, u.sent, %(status)s,
               %(status)s,
               CASE WHEN %(status)s = 'delivered' THEN u.sent + interval '5 seconds' END,
               CASE WHEN %(status)s = 'failed' THEN u.sent + interval '5 seconds' END, NULL
        FROM unnest(%(sids)s::text[], %(sent)s::timestamptz[]) AS u(sid, sent)
        """,
        {"deployment": tenants.deployment_b, "status": status, "sids": sids, "sent": sent},
    )
    return sids


def on_twilio(
    api: FakeTwilio,
    account: str,
    sids: list[str],
    sent: list[datetime],
    price: str | None = "-0.00790",
    unit: str = "USD",
    **fields: Any,
) -> None:
    """The same messages as Twilio lists them, sent when we recorded them."""
    for sid, when in zip(sids, sent, strict=True):
        api.add(account, sid, status="delivered", price=price, price_unit=unit,
                date_sent=rfc2822(when), **fields)  # fmt: skip


def seconds_after(start: datetime, count: int) -> list[datetime]:
    return [start + timedelta(seconds=n) for n in range(count)]


def yesterday_on_twilio(
    conn: psycopg.Connection, tenants: Tenants, api: FakeTwilio, rates: StoreRates
) -> tuple[datetime, list[str]]:
    """Yesterday from 10:00, 2,500 final SMS a second apart (3 pages of Twilio's list),
    unpriced here and listed on the main account, with the day's USD rate stored."""
    day = days_ago(1)
    rates(("USD", str(working_day(day)), USD_RATE))
    sent = seconds_after(day, 2500)
    sids = final_sms(conn, tenants, sent)
    on_twilio(api, MAIN_ACCOUNT, sids, sent)
    return day, sids


def money(conn: psycopg.Connection, sids: list[str]) -> set[tuple[Any, ...]]:
    """The distinct money columns of these SMS."""
    return set(
        conn.execute(
            "SELECT provider_cost, currency, provider_amount, provider_currency, exchange_rate,"
            " exchange_rate_date FROM agent_sms WHERE provider_message_sid = ANY(%s)",
            (sids,),
        ).fetchall()
    )


def reconcile(url: str) -> dict[str, Any]:
    response = httpx.post(url, timeout=60)
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def test_final_sms_are_priced_from_the_messages_list_a_page_of_1000_a_request(
    reconcile_url: str,
    twilio_api: FakeTwilio,
    tenants: Tenants,
    clean: psycopg.Connection,
    rates: StoreRates,
) -> None:
    before, after = days_ago(2), days_ago(1)
    rate_date = working_day(before.date() - timedelta(days=1))
    rates(("USD", str(rate_date), USD_RATE))
    # The day before: 1,500 SMS in the main account and 20 in the subaccount, among 300
    # messages of someone else's in the main account; the day after, 700 in main.
    main_before = seconds_after(before, 1500)
    sids_main_before = final_sms(clean, tenants, main_before)
    on_twilio(twilio_api, MAIN_ACCOUNT, sids_main_before, main_before)
    strangers = seconds_after(before + timedelta(hours=1), 300)
    on_twilio(twilio_api, MAIN_ACCOUNT, [new_sid() for _ in strangers], strangers)
    sub_before = seconds_after(before + timedelta(hours=2), 20)
    sids_sub = final_sms(clean, tenants, sub_before)
    on_twilio(twilio_api, SUBACCOUNT, sids_sub, sub_before)
    main_after = seconds_after(after, 698)
    sids_after = final_sms(clean, tenants, main_after)
    on_twilio(twilio_api, MAIN_ACCOUNT, sids_after, main_after)
    # Failed: one charged Twilio's processing fee, one not charged (never priced).
    charged, free = final_sms(clean, tenants, [after - timedelta(seconds=1)] * 2, "failed")
    twilio_api.add(MAIN_ACCOUNT, charged, status="failed", error_code=30007, price="-0.00100",
                   price_unit="USD", date_sent=rfc2822(after))  # fmt: skip
    twilio_api.add(MAIN_ACCOUNT, free, status="failed", error_code=30500, price=None,
                   price_unit="USD", date_sent=rfc2822(after))  # fmt: skip
    rows_before = clean.execute("SELECT count(*) FROM agent_sms").fetchone()

    report = reconcile(reconcile_url)

    assert (report["to_price"], report["priced"], report["errors"]) == (2220, 2219, 0)
    # The day before: main's 1,800 messages in 2 pages, then the subaccount's 20 in one
    # (main did not have them); the day after: main's 700, one page, which had them all.
    assert twilio_api.counts == {"list": 4}
    assert report["twilio_requests"] == 4
    assert twilio_api.queries[0] == {"DateSent": str(before.date()), "PageSize": "1000"}
    assert twilio_api.queries[1] == {  # the next page as Twilio's next_page_uri names it
        "DateSent": str(before.date()),
        "PageSize": "1000",
        "Page": "1",
        "PageToken": "PA" + sids_main_before[800],  # the last on page 0
    }
    assert money(clean, sids_main_before + sids_sub + sids_after) == {
        (Decimal("0.0073"), "EUR", Decimal("0.0079"), "USD", EUR_PER_USD, rate_date)
    }
    assert money(clean, [charged]) == {
        (Decimal("0.0009"), "EUR", Decimal("0.0010"), "USD", EUR_PER_USD, rate_date)
    }
    assert money(clean, [free]) == {(None, "EUR", None, None, None, None)}
    # Someone else's messages changed nothing here.
    assert clean.execute("SELECT count(*) FROM agent_sms").fetchone() == rows_before

    # Priced, they are not asked about again; the one never charged waits its turn.
    again = reconcile(reconcile_url)
    assert (again["candidates"], again["twilio_requests"]) == (0, 0)


def test_a_day_whose_only_unpriced_sms_are_its_newest_costs_one_request(
    reconcile_url: str,
    twilio_api: FakeTwilio,
    tenants: Tenants,
    clean: psycopg.Connection,
    rates: StoreRates,
) -> None:
    _, sids = yesterday_on_twilio(clean, tenants, twilio_api, rates)
    clean.execute(  # all but the newest 10 priced already
        "UPDATE agent_sms SET provider_cost = 0.0073 WHERE provider_message_sid = ANY(%s)",
        (sids[:-10],),
    )
    report = reconcile(reconcile_url)
    assert (report["to_price"], report["priced"], report["twilio_requests"]) == (10, 10, 1)


def test_a_price_twilio_publishes_late_is_taken_when_the_sms_is_offered_again(
    reconcile_url: str,
    twilio_api: FakeTwilio,
    tenants: Tenants,
    clean: psycopg.Connection,
    rates: StoreRates,
) -> None:
    rates(("USD", str(working_day(days_ago(1))), USD_RATE))
    sent = [datetime.now(UTC) - timedelta(hours=3)]
    (sid,) = final_sms(clean, tenants, sent)
    on_twilio(twilio_api, MAIN_ACCOUNT, [sid], sent, price=None)

    first = reconcile(reconcile_url)
    assert (first["to_price"], first["priced"], first["twilio_requests"]) == (1, 0, 1)
    assert money(clean, [sid]) == {(None, "EUR", None, None, None, None)}
    # Asked 3 hours after its final status, it is offered again 3 hours later, not on
    # every run meanwhile.
    assert reconcile(reconcile_url)["twilio_requests"] == 0

    twilio_api.messages[(MAIN_ACCOUNT, sid)]["price"] = "-0.00790"
    clean.execute(  # as if it had been asked the moment it was delivered: due now
        "UPDATE private.sms_reconcile_checks AS c SET checked_at = s.delivered_at"
        " FROM agent_sms AS s WHERE s.provider_message_sid = c.provider_message_sid"
        " AND c.provider_message_sid = %s",
        (sid,),
    )
    twilio_api.reset_counts()
    second = reconcile(reconcile_url)
    assert (second["to_price"], second["priced"], second["twilio_requests"]) == (1, 1, 1)
    assert twilio_api.counts == {"fetch": 1}  # one SMS again: cheaper than its day's page
    ((cost, *_),) = money(clean, [sid])
    assert cost == Decimal("0.0073")


@pytest.mark.parametrize(
    ("again", "counts"),
    [(2, {"fetch": 2}), (10, {"list": 1})],
    ids=["fewer than the day's pages: fetched", "more: listed"],
)
def test_sms_asked_again_are_fetched_one_by_one_when_that_is_cheaper_than_listing(
    reconcile_url: str,
    twilio_api: FakeTwilio,
    tenants: Tenants,
    clean: psycopg.Connection,
    rates: StoreRates,
    again: int,
    counts: dict[str, int],
) -> None:
    _, sids = yesterday_on_twilio(clean, tenants, twilio_api, rates)
    clean.execute(
        "UPDATE agent_sms SET provider_cost = 0.0073 WHERE provider_message_sid = ANY(%s)",
        (sids[:-again],),
    )
    clean.execute(  # asked before, when they were delivered: due again
        "INSERT INTO private.sms_reconcile_checks (provider_message_sid, checked_at)"
        " SELECT provider_message_sid, delivered_at FROM agent_sms"
        " WHERE provider_message_sid = ANY(%s)",
        (sids[-again:],),
    )
    report = reconcile(reconcile_url)
    assert (report["to_price"], report["priced"]) == (again, again)
    assert twilio_api.counts == counts


@pytest.mark.parametrize("rate_age_days", [None, 8], ids=["no rate yet", "only a stale rate"])
def test_a_price_waiting_for_its_rate_is_not_asked_again_and_is_converted_when_it_comes(
    reconcile_url: str,
    twilio_api: FakeTwilio,
    tenants: Tenants,
    clean: psycopg.Connection,
    rates: StoreRates,
    rate_age_days: int | None,
) -> None:
    sent_at = days_ago(2)
    if rate_age_days is not None:  # older than the 7 days a rate may be used
        stale = working_day(sent_at.date() - timedelta(days=rate_age_days))
        rates(("USD", str(stale), USD_RATE))
    (sid,) = final_sms(clean, tenants, [sent_at])
    on_twilio(twilio_api, MAIN_ACCOUNT, [sid], [sent_at])

    first = reconcile(reconcile_url)
    assert (first["to_price"], first["priced"], first["twilio_requests"]) == (1, 0, 1)
    assert money(clean, [sid]) == {(None, "EUR", Decimal("0.0079"), "USD", None, None)}
    # Twilio gave its price: only the rate is missing, and Twilio is not asked again.
    again = reconcile(reconcile_url)
    assert (again["candidates"], again["twilio_requests"]) == (0, 0)
    assert twilio_api.counts == {"list": 1}

    fresh = working_day(sent_at)
    rates(("USD", str(fresh), USD_RATE))
    assert clean.execute("SELECT public.price_pending_sms() ->> 'priced'").fetchone() == ("1",)
    assert money(clean, [sid]) == {
        (Decimal("0.0073"), "EUR", Decimal("0.0079"), "USD", EUR_PER_USD, fresh)
    }


def test_the_rate_is_the_send_dates_or_the_last_before_it_never_a_later_one(
    reconcile_url: str,
    twilio_api: FakeTwilio,
    tenants: Tenants,
    clean: psycopg.Connection,
    rates: StoreRates,
) -> None:
    later = working_day(days_ago(1))  # a working day: its rate is published after...
    sent_at = datetime.combine(later - timedelta(days=1), time(10, 0), UTC)  # ...this SMS
    earlier = working_day(sent_at.date() - timedelta(days=1))
    rates(("USD", str(earlier), "1.1000"), ("USD", str(later), "1.0500"))
    (before_the_later_rate,) = final_sms(clean, tenants, [sent_at])
    on_that_day = datetime.combine(later, time(10, 0), UTC)
    (on_its_day,) = final_sms(clean, tenants, [on_that_day])
    on_twilio(twilio_api, MAIN_ACCOUNT, [before_the_later_rate], [sent_at])
    on_twilio(twilio_api, MAIN_ACCOUNT, [on_its_day], [on_that_day])

    assert reconcile(reconcile_url)["priced"] == 2
    assert money(clean, [before_the_later_rate]) == {
        (Decimal("0.0072"), "EUR", Decimal("0.0079"), "USD", Decimal("0.90909091"), earlier)
    }
    assert money(clean, [on_its_day]) == {
        (Decimal("0.0075"), "EUR", Decimal("0.0079"), "USD", Decimal("0.95238095"), later)
    }


def test_an_sms_twilio_lists_under_the_next_day_is_fetched_on_its_own(
    reconcile_url: str,
    twilio_api: FakeTwilio,
    tenants: Tenants,
    clean: psycopg.Connection,
    rates: StoreRates,
) -> None:
    rates(("USD", str(working_day(days_ago(3))), USD_RATE))
    recorded = days_ago(2, time(23, 59, 59))  # n8n's time; Twilio sent it after midnight
    (sid,) = final_sms(clean, tenants, [recorded])
    on_twilio(twilio_api, MAIN_ACCOUNT, [sid], [recorded + timedelta(seconds=3)])

    report = reconcile(reconcile_url)
    assert (report["priced"], report["not_found"], report["errors"]) == (1, 0, 0)
    assert twilio_api.counts == {"list": 2, "fetch": 1}  # its day in both accounts, then it
    ((cost, *_),) = money(clean, [sid])
    assert cost == Decimal("0.0073")


def test_a_429_while_listing_stops_the_run_and_the_next_one_takes_the_rest(
    reconcile_url: str,
    twilio_api: FakeTwilio,
    tenants: Tenants,
    clean: psycopg.Connection,
    rates: StoreRates,
) -> None:
    day, sids = yesterday_on_twilio(clean, tenants, twilio_api, rates)
    twilio_api.rate_limit_after = 2

    first = reconcile(reconcile_url)
    assert (first["rate_limited"], first["priced"], first["errors"]) == (True, 2000, 0)
    assert first["twilio_requests"] == 3
    # What it did not get to is given back: the next run takes it first.
    twilio_api.rate_limit_after = None
    twilio_api.reset_counts()
    second = reconcile(reconcile_url)
    assert (second["to_price"], second["priced"], second["rate_limited"]) == (500, 500, False)
    assert twilio_api.counts == {"list": 3}  # the oldest 500 are on the last page
    assert money(clean, sids) == {
        (Decimal("0.0073"), "EUR", Decimal("0.0079"), "USD", EUR_PER_USD, working_day(day))
    }


def test_status_repair_no_longer_fetches_final_sms_for_their_price(
    reconcile_url: str, twilio_api: FakeTwilio, tenants: Tenants, clean: psycopg.Connection
) -> None:
    # Final and unpriced: listed with its day, never fetched on its own.
    sent_at = datetime.now(UTC) - timedelta(hours=3)
    (final,) = final_sms(clean, tenants, [sent_at])
    on_twilio(twilio_api, MAIN_ACCOUNT, [final], [sent_at], price="-0.0750", unit="EUR")
    stuck = old_sms(clean, tenants)
    twilio_api.add(MAIN_ACCOUNT, stuck, status="delivered", price="-0.0750")
    report = reconcile(reconcile_url)
    assert (report["candidates"], report["to_price"], report["asked"]) == (2, 1, 1)
    assert (report["changed"], report["priced"]) == (1, 1)
    assert twilio_api.counts == {"fetch": 1, "list": 1}
    assert money(clean, [final, stuck]) == {
        (Decimal("0.0750"), "EUR", Decimal("0.0750"), "EUR", Decimal(1), sent_at.date())
    }


def test_an_sms_the_next_days_listing_showed_is_not_fetched_again(
    reconcile_url: str,
    twilio_api: FakeTwilio,
    tenants: Tenants,
    clean: psycopg.Connection,
    rates: StoreRates,
) -> None:
    rates(("USD", str(working_day(days_ago(3))), USD_RATE))
    recorded = days_ago(2, time(23, 59, 59))
    (crossing,) = final_sms(clean, tenants, [recorded])
    on_twilio(twilio_api, MAIN_ACCOUNT, [crossing], [recorded + timedelta(seconds=3)])
    next_day = days_ago(1)
    (later,) = final_sms(clean, tenants, [next_day])
    on_twilio(twilio_api, MAIN_ACCOUNT, [later], [next_day])

    report = reconcile(reconcile_url)
    assert (report["to_price"], report["priced"]) == (2, 2)
    # Its own day in both accounts, then the next day's page, which showed both.
    assert twilio_api.counts == {"list": 3}

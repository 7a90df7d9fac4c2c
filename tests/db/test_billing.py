"""Money in one currency (issue 19), in SQL: a provider's price in another currency is
kept as given and converted by the ECB's rate of the send date, or the last one before
it within max_rate_age, or waits unpriced; no total adds two currencies; a client's
monthly statement adds up, line by line, to what the metrics say."""

from __future__ import annotations

import json
import uuid
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from tests.support.builders import Tenants, acting_as, forget_every_sms, insert_sms


def store_rates(conn: psycopg.Connection, *rates: tuple[str, str, str]) -> None:
    body = [{"currency": c, "date": d, "rate": r} for c, d, r in rates]
    conn.execute("SELECT public.store_exchange_rates(%s::jsonb)", (json.dumps(body),))


def price(conn: psycopg.Connection, sid: str, amount: str, unit: str) -> bool:
    row = conn.execute(
        "SELECT private.price_sms(%s, %s::numeric, %s)", (sid, amount, unit)
    ).fetchone()
    assert row is not None
    return bool(row[0])


def money(conn: psycopg.Connection, sid: str) -> dict[str, Any]:
    cur = conn.execute(
        "SELECT provider_cost, billed_cost, currency, provider_amount, provider_currency,"
        " exchange_rate, exchange_rate_date FROM public.agent_sms WHERE provider_message_sid = %s",
        (sid,),
    )
    row = cur.fetchone()
    assert row is not None
    assert cur.description is not None
    return dict(zip([c.name for c in cur.description], row, strict=True))


def unpriced_sms(conn: psycopg.Connection, tenants: Tenants, sent_at: str) -> str:
    sid = "SM" + uuid.uuid4().hex
    insert_sms(conn, tenants.deployment_b, provider_message_sid=sid, sent_at=sent_at,
               provider_cost=None, voipia_margin="0.0300", status="delivered")  # fmt: skip
    return sid


def test_a_price_in_another_currency_is_kept_and_converted_by_the_rate_of_the_send_date(
    clean: psycopg.Connection, tenants: Tenants
) -> None:
    store_rates(clean, ("USD", "2026-11-23", "1.0500"), ("USD", "2026-11-24", "1.0600"))
    sid = unpriced_sms(clean, tenants, "2026-11-24T10:00:00Z")

    assert price(clean, sid, "-0.0079", "usd")  # Twilio's sign and case

    assert money(clean, sid) == {
        "provider_cost": Decimal("0.0075"),  # 0.0079 / 1.06, to 4 places
        "billed_cost": Decimal("0.0375"),
        "currency": "EUR",
        "provider_amount": Decimal("0.0079"),
        "provider_currency": "USD",
        "exchange_rate": (Decimal(1) / Decimal("1.06")).quantize(Decimal("1e-8")),
        "exchange_rate_date": date(2026, 11, 24),
    }


def test_without_a_rate_the_sms_waits_unpriced_and_is_priced_when_one_comes(
    clean: psycopg.Connection, tenants: Tenants
) -> None:
    sid = unpriced_sms(clean, tenants, "2026-11-29T10:00:00Z")  # a Sunday

    assert not price(clean, sid, "-0.0079", "USD")
    waiting = money(clean, sid)
    assert (waiting["provider_cost"], waiting["billed_cost"]) == (None, None)
    assert (waiting["provider_amount"], waiting["provider_currency"]) == (Decimal("0.0079"), "USD")

    # Published after the send date: never used for it. The Friday before: used.
    store_rates(clean, ("USD", "2026-11-30", "1.2000"))
    assert clean.execute("SELECT public.price_pending_sms()").fetchone() == (
        {"priced": 0, "waiting": 1, "oldest_waiting": "2026-11-29T10:00:00+00:00"},
    )
    store_rates(clean, ("USD", "2026-11-27", "1.0000"))
    (result,) = clean.execute("SELECT public.price_pending_sms()").fetchone() or ()
    assert (result["priced"], result["waiting"]) == (1, 0)
    priced = money(clean, sid)
    assert (priced["provider_cost"], priced["exchange_rate_date"]) == (
        Decimal("0.0079"), date(2026, 11, 27),
    )  # fmt: skip


def test_a_rate_older_than_the_allowed_age_is_never_used(
    clean: psycopg.Connection, tenants: Tenants
) -> None:
    store_rates(clean, ("USD", "2026-11-16", "1.0500"))  # 8 days before
    sid = unpriced_sms(clean, tenants, "2026-11-24T10:00:00Z")

    assert not price(clean, sid, "0.0079", "USD")
    assert money(clean, sid)["provider_cost"] is None
    store_rates(clean, ("USD", "2026-11-17", "1.0500"))  # 7 days before: allowed
    clean.execute("SELECT public.price_pending_sms()")
    assert money(clean, sid)["exchange_rate_date"] == date(2026, 11, 17)


def test_a_price_already_there_is_kept(clean: psycopg.Connection, tenants: Tenants) -> None:
    sid = unpriced_sms(clean, tenants, "2026-11-24T10:00:00Z")
    assert price(clean, sid, "-0.0700", "EUR")
    assert not price(clean, sid, "-0.0900", "EUR")  # a second report changes nothing
    assert money(clean, sid)["provider_cost"] == Decimal("0.0700")


def test_a_cost_n8n_sends_in_another_currency_is_converted_too(
    clean: psycopg.Connection, tenants: Tenants
) -> None:
    store_rates(clean, ("GBP", "2026-11-24", "0.8000"))
    sid = "SM" + uuid.uuid4().hex
    insert_sms(clean, tenants.deployment_b, provider_message_sid=sid, currency="GBP",
               provider_cost="0.0400", sent_at="2026-11-24T10:00:00Z")  # fmt: skip

    row = money(clean, sid)
    assert (row["currency"], row["provider_cost"]) == ("EUR", Decimal("0.0500"))
    assert (row["provider_amount"], row["provider_currency"]) == (Decimal("0.0400"), "GBP")


def test_no_row_is_in_another_currency_than_the_billing_one(
    clean: psycopg.Connection, tenants: Tenants
) -> None:
    sid = unpriced_sms(clean, tenants, "2026-11-24T10:00:00Z")
    update = "UPDATE public.agent_sms SET currency = 'USD' WHERE provider_message_sid = %s"
    with pytest.raises(psycopg.Error) as refused:
        clean.execute(update, (sid,))
    assert refused.value.sqlstate == "VP422"
    # Nor may the billing currency change under recorded SMS.
    with pytest.raises(psycopg.Error) as kept:
        clean.execute("UPDATE private.billing_settings SET currency = 'USD'")
    assert kept.value.sqlstate == "VP409"


def test_in_another_billing_currency_a_price_goes_through_the_euro(
    clean: psycopg.Connection, tenants: Tenants
) -> None:
    forget_every_sms(clean)
    clean.execute("UPDATE private.billing_settings SET currency = 'USD'")  # no SMS yet
    store_rates(clean, ("USD", "2026-11-24", "1.2000"), ("GBP", "2026-11-24", "0.8000"))
    sid = unpriced_sms(clean, tenants, "2026-11-24T10:00:00Z")

    assert price(clean, sid, "0.0400", "GBP")

    row = money(clean, sid)
    assert (row["currency"], row["provider_cost"]) == ("USD", Decimal("0.0600"))  # /0.8*1.2


def statement(conn: psycopg.Connection, client: uuid.UUID, month: str, zone: str = "Europe/Paris"):  # type: ignore[no-untyped-def]
    row = conn.execute(
        "SELECT public.get_sms_statement(%s, %s::date, %s)", (client, month, zone)
    ).fetchone()
    assert row is not None
    return row[0]


def test_a_month_is_a_month_of_the_billing_time_zone_and_its_lines_add_up(
    clean: psycopg.Connection, tenants: Tenants
) -> None:
    forget_every_sms(clean)  # the tenants' own SMS
    deployment = tenants.deployments_a[0]
    for sent_at, cost, kind in [
        ("2026-10-31T22:59:59Z", "0.0100", "transactional"),  # October, in Paris
        ("2026-10-31T23:00:00Z", "0.0333", "transactional"),  # 1 November, 00:00 in Paris
        ("2026-11-15T12:00:00Z", "0.0333", "transactional"),
        ("2026-11-15T12:00:00Z", "0.0333", "transactional"),
        ("2026-11-20T12:00:00Z", "0.0505", "marketing"),
        ("2026-11-30T22:59:59Z", None, "marketing"),  # unpriced yet
        ("2026-11-30T23:00:00Z", "0.0100", "marketing"),  # December, in Paris
    ]:
        insert_sms(clean, deployment, sent_at=sent_at, provider_cost=cost, message_type=kind,
                   voipia_margin="0.0100")  # fmt: skip

    november = statement(clean, tenants.client_a, "2026-11-17")

    assert (november["month"], november["currency"]) == ("2026-11", "EUR")
    assert november["start"] == "2026-10-31T23:00:00+00:00"
    assert november["end"] == "2026-11-30T23:00:00+00:00"
    lines = {line["message_type"]: line for line in november["lines"]}
    assert lines["transactional"] | {"deployment_id": None, "deployment_name": None} == {
        "deployment_id": None, "deployment_name": None, "message_type": "transactional",
        "sms": 3, "delivered": 0, "failed": 0, "unpriced": 0,
        "provider_cost": 0.1, "margin": 0.03, "billed": 0.13,  # 0.1299 rounded
    }  # fmt: skip
    assert (lines["marketing"]["sms"], lines["marketing"]["unpriced"]) == (2, 1)
    totals = november["totals"]
    assert totals["billed"] == sum(line["billed"] for line in november["lines"])
    assert totals["sms"] == 5

    # The metrics of the same instants give each line, rounded by the same rule.
    (metrics,) = (
        clean.execute(
            "SELECT public.get_sms_metrics(%s, %s, %s, %s)",
            (november["start"], november["end"], tenants.client_a, deployment),
        ).fetchone()
        or ()
    )
    by_type = {t["message_type"]: t for t in metrics["current_period"]["by_message_type"]}
    assert metrics["current_period"]["total_sms"] == totals["sms"]
    for kind, line in lines.items():
        assert (by_type[kind]["count"], by_type[kind]["cost"]) == (line["sms"], line["billed"])


@pytest.mark.parametrize(
    ("client", "month", "zone", "field"),
    [
        (None, "2026-11-01", "Europe/Paris", "client_id"),
        ("a", None, "Europe/Paris", "month"),
        ("a", "1999-12-01", "Europe/Paris", "month"),
        ("a", "2026-11-01", "Mars/Olympus", "time_zone"),
        ("a", "2026-11-01", "Asia/Kolkata", "time_zone"),  # +05:30
    ],
)
def test_a_statement_refuses_what_it_cannot_answer(
    clean: psycopg.Connection, tenants: Tenants, client: str | None, month: str | None,
    zone: str, field: str,
) -> None:  # fmt: skip
    with pytest.raises(psycopg.Error) as refused:
        statement(clean, tenants.client_a if client else None, month, zone)  # type: ignore[arg-type]
    assert (refused.value.sqlstate, refused.value.diag.message_hint) == ("VP422", field)


def test_a_user_reads_the_statements_of_their_own_clients_only(
    clean: psycopg.Connection, tenants: Tenants, database_url: str
) -> None:
    insert_sms(clean, tenants.deployments_a[0], sent_at="2026-11-10T10:00:00Z")
    insert_sms(clean, tenants.deployment_b, sent_at="2026-11-10T10:00:00Z")

    with acting_as(database_url, "authenticated", tenants.viewer_a) as conn:
        own, other = (
            statement(conn, c, "2026-11-01") for c in (tenants.client_a, tenants.client_b)
        )
    with acting_as(database_url, "service_role") as conn:
        theirs = statement(conn, tenants.client_b, "2026-11-01")

    assert own["totals"]["sms"] >= 1
    assert (other["lines"], other["totals"]["sms"]) == ([], 0)
    assert theirs["totals"]["sms"] >= 1


def test_a_margin_beside_another_currency_is_refused(
    clean: psycopg.Connection, tenants: Tenants
) -> None:
    """`currency` names the provider cost's; Voipia's margin is in the billing currency."""
    with pytest.raises(psycopg.Error) as refused:
        insert_sms(clean, tenants.deployment_b, currency="USD", provider_cost="1.0000",
                   voipia_margin="1.0000")  # fmt: skip
    assert (refused.value.sqlstate, refused.value.diag.message_hint) == ("VP422", "voipia_margin")


def test_a_price_waiting_for_a_rate_is_never_replaced(
    clean: psycopg.Connection, tenants: Tenants
) -> None:
    sid = unpriced_sms(clean, tenants, "2026-11-24T10:00:00Z")
    assert not price(clean, sid, "0.0500", "USD")  # no USD rate: it waits
    assert not price(clean, sid, "-9.9900", "EUR")  # another price later: not taken
    (priced,) = (
        clean.execute(
            "SELECT public.record_sms_prices(%s::jsonb)",
            (
                json.dumps(
                    [
                        {"sid": sid, "price": "-9.99", "price_unit": "EUR"},
                        {"sid": "SMx", "price": "1e999999", "price_unit": "EUR"},
                    ]
                ),
            ),
        ).fetchone()
        or ()
    )
    assert priced == 0  # and the absurd one did not sink the batch
    row = money(clean, sid)
    assert (row["provider_amount"], row["provider_currency"]) == (Decimal("0.0500"), "USD")


@pytest.mark.parametrize(
    ("rates", "sqlstate"),
    [
        ([("USD", "2026-11-28", "1.0")], "VP422"),  # a Saturday: the ECB publishes none
        ([("USD", "2099-01-05", "1.0")], "VP422"),  # ahead of time
        ([("USD", "1998-12-31", "1.0")], "VP422"),  # before the euro
        ([("USD", "2026-11-24", "1.0600"), ("USD", "2026-11-24", "1.5")], "VP409"),
    ],
)
def test_only_reference_rates_are_stored(
    clean: psycopg.Connection, rates: list[tuple[str, str, str]], sqlstate: str
) -> None:
    if sqlstate == "VP409":
        store_rates(clean, rates[0])
        rates = rates[1:]
    with pytest.raises(psycopg.Error) as refused:
        store_rates(clean, *rates)
    assert refused.value.sqlstate == sqlstate


def test_each_statement_line_adds_up(clean: psycopg.Connection, tenants: Tenants) -> None:
    forget_every_sms(clean)
    for cost in ("0.0050", "0.0050", None):
        insert_sms(clean, tenants.deployments_a[0], sent_at="2026-11-10T10:00:00Z",
                   provider_cost=cost, voipia_margin="0.0050")  # fmt: skip
    (line,) = statement(clean, tenants.client_a, "2026-11-01")["lines"]
    assert (line["provider_cost"], line["billed"], line["unpriced"]) == (0.01, 0.02, 1)
    assert line["provider_cost"] + line["margin"] == line["billed"]

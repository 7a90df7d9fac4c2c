"""The exchange-rate job's run: what it fetches, what it stores, what it prices."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import psycopg
import pytest

from functions.billing import ecb as source
from functions.billing import rates
from shared import runtime
from shared.errors import ConflictError, UnavailableError
from tests.functions.billing.conftest import (
    converted,
    priced,
    stored_rates,
    today,
    usd_sms,
    weekday_before,
)
from tests.support.builders import Tenants
from tools.fake_ecb import DAILY, HISTORY, HISTORY_DAYS, FakeEcb, sample_rates

pytestmark = pytest.mark.db


def test_a_first_run_takes_the_90_days_and_a_later_run_the_daily_file_alone(
    ecb: FakeEcb, clean: psycopg.Connection
) -> None:
    published = sample_rates()
    first = rates.run(runtime.services())
    assert ecb.requests == {DAILY: 1, HISTORY: 1}
    assert first.history is True
    last = max(published)
    assert first.rate_date == last.isoformat()
    assert stored_rates(clean) == {
        (day, currency): rate for day, day_rates in published.items()
        for currency, rate in day_rates.items()
    }  # fmt: skip
    everything = sum(len(day_rates) for day_rates in published.values())
    assert first.stored == everything
    assert first.fetched == everything + len(published[last])  # the daily's, twice

    # Nothing new: the daily file alone, nothing stored.
    again = rates.run(runtime.services())
    assert (again.history, again.stored, again.fetched) == (False, 0, len(published[last]))
    assert ecb.requests == {DAILY: 2, HISTORY: 1}


def test_a_new_day_is_stored_with_any_day_missed_before_it(
    ecb: FakeEcb, clean: psycopg.Connection
) -> None:
    """A run that finds a day new to the table reads the 90 days too: days the runs
    missed (they failed, or did not run) are filled in."""
    rates.run(runtime.services())
    missed = weekday_before(today() - timedelta(days=7), 2)
    clean.execute("DELETE FROM private.exchange_rates WHERE rate_date = %s", (missed,))
    new_day = today() + timedelta(days=1)  # the ECB is a day ahead of this machine
    ecb.today = new_day
    ecb.publish(new_day, USD="1.1111", GBP="0.8888")

    run = rates.run(runtime.services())
    assert (run.history, run.rate_date) == (True, new_day.isoformat())
    assert run.stored == 2 + 2  # the new day's and the missed day's, USD and GBP each
    assert ecb.requests[HISTORY] == 2
    stored = stored_rates(clean)
    assert stored[(new_day, "USD")] == Decimal("1.1111")
    assert (missed, "GBP") in stored


def test_a_file_that_revises_a_stored_rate_fails_the_run_and_changes_no_rate(
    ecb: FakeEcb, clean: psycopg.Connection
) -> None:
    """The ECB never revises a reference rate: a file that says otherwise for a day
    stored is no ECB file (a wrong source, or tampering), and an operator must look."""
    rates.run(runtime.services())
    kept = weekday_before(today() - timedelta(days=14), 3)
    before = stored_rates(clean)
    ecb.publish(kept, USD="2.0000")
    new_day = today() + timedelta(days=1)
    ecb.today = new_day
    ecb.publish(new_day, USD="1.1111", GBP="0.8888")

    with pytest.raises(ConflictError):
        rates.run(runtime.services())
    after = stored_rates(clean)
    assert after[(kept, "USD")] == before[(kept, "USD")]
    assert {day for day, _ in after} - {day for day, _ in before} == {new_day}  # the daily file


def test_an_sms_priced_in_usd_waits_for_the_rate_of_its_send_date_then_is_converted(
    ecb: FakeEcb, tenants: Tenants, clean: psycopg.Connection
) -> None:
    wednesday = weekday_before(today() - timedelta(days=7), 2)
    saturday = weekday_before(today() - timedelta(days=7), 5)
    on_wednesday = usd_sms(clean, tenants, wednesday)
    on_saturday = usd_sms(clean, tenants, saturday, amount="0.0500")
    # Before any rate: kept as Twilio gave it, unpriced in the billing currency.
    waiting = priced(clean, on_wednesday)
    assert waiting["provider_cost"] is None
    assert (waiting["provider_amount"], waiting["provider_currency"]) == (Decimal("0.0790"), "USD")
    assert waiting["currency"] == "EUR"

    run = rates.run(runtime.services())
    assert (run.priced, run.waiting, run.oldest_waiting) == (2, 0, None)

    usd = sample_rates()
    row = priced(clean, on_wednesday)
    assert row["exchange_rate_date"] == wednesday
    assert row["provider_cost"] == converted(clean, "0.0790", usd[wednesday]["USD"])
    assert row["exchange_rate"] == round(1 / usd[wednesday]["USD"], 8)
    assert (row["provider_amount"], row["provider_currency"]) == (Decimal("0.0790"), "USD")
    # No rate on a Saturday: Friday's, the last one before it (within 7 days).
    friday = saturday - timedelta(days=1)
    row = priced(clean, on_saturday)
    assert row["exchange_rate_date"] == friday
    assert row["provider_cost"] == converted(clean, "0.0500", usd[friday]["USD"])


def test_an_sms_sent_after_the_rates_are_in_is_priced_when_recorded(
    ecb: FakeEcb, tenants: Tenants, clean: psycopg.Connection
) -> None:
    rates.run(runtime.services())
    sid = usd_sms(clean, tenants, today())
    row = priced(clean, sid)
    assert row["provider_cost"] is not None
    assert today() - row["exchange_rate_date"] <= timedelta(days=3)  # a weekend at most


def test_an_sms_whose_last_rate_is_older_than_seven_days_before_it_keeps_waiting(
    ecb: FakeEcb, tenants: Tenants, clean: psycopg.Connection
) -> None:
    """The ECB's USD stops; GBP goes on. An SMS sent within 7 days of the last USD rate is
    priced by it; one sent later waits, whatever a run fetches, and says since when."""
    last_usd = weekday_before(today() - timedelta(days=30), 1)
    ecb.withdraw("USD", after=last_usd)
    within = usd_sms(clean, tenants, last_usd + timedelta(days=6))
    beyond_day = last_usd + timedelta(days=8)
    beyond = usd_sms(clean, tenants, beyond_day)

    run = rates.run(runtime.services())
    assert (run.priced, run.waiting) == (1, 1)
    assert run.oldest_waiting is not None
    assert datetime.fromisoformat(run.oldest_waiting) == datetime.combine(beyond_day, time(10), UTC)
    assert priced(clean, within)["exchange_rate_date"] == last_usd
    assert priced(clean, beyond)["provider_cost"] is None
    # Another run changes nothing for it.
    assert rates.run(runtime.services()).waiting == 1


def test_when_the_90_days_fail_what_the_daily_file_brought_still_prices(
    ecb: FakeEcb, tenants: Tenants, clean: psycopg.Connection
) -> None:
    """The run fails (the schedule sees it), after pricing with the day it stored; a
    later run that finds a new day takes the 90 days."""
    last = max(sample_rates())
    sid = usd_sms(clean, tenants, last)
    ecb.statuses[HISTORY] = 503
    with pytest.raises(UnavailableError, match=r"eurofxref-hist-90d\.xml answered HTTP 503"):
        rates.run(runtime.services())
    assert priced(clean, sid)["exchange_rate_date"] == last
    assert set(stored_rates(clean)) == {(last, "GBP"), (last, "USD")}

    del ecb.statuses[HISTORY]
    assert rates.run(runtime.services()).history is False  # no new day: not yet
    new_day = today() + timedelta(days=1)
    ecb.today = new_day
    ecb.publish(new_day, USD="1.2", GBP="0.9")
    assert rates.run(runtime.services()).history is True
    window = [d for d in ecb.rates if d > new_day - timedelta(days=HISTORY_DAYS)]
    assert set(stored_rates(clean)) == {(d, c) for d in window for c in ecb.rates[d]}


def test_a_file_larger_than_the_bound_is_refused_while_it_is_read(
    ecb: FakeEcb, clean: psycopg.Connection
) -> None:
    ecb.body = b"<" + b"x" * source.MAX_FILE_BYTES  # one byte over
    with pytest.raises(UnavailableError, match=r"eurofxref-daily\.xml could not be read: larger"):
        rates.run(runtime.services())
    assert stored_rates(clean) == {}

"""The exchange-rate job: the ECB's reference rates into the database, then the SMS that
waited for one priced.

A run reads the ECB's daily file and stores its rates (public.store_exchange_rates keeps
a day already stored, and refuses a different rate for it: the ECB never revises one).
When that brought a day new to the table (the first run, a run after days without one,
or simply the next business day), it also reads the
90-day file and stores what the table lacks of it, so that a day missed is filled in by
the next run that finds a new day. A run that found no new day (a second run the same
day, a weekend, a holiday) reads nothing more. The 90-day file is also what the first
run needs: an SMS is converted by the rate of its send date.

This job cannot ask the table which days it holds (the service role reads no rate;
only the two RPCs below are its to call), so "a new day" is the one thing it can tell,
from what storing the daily file stored.

Then public.price_pending_sms converts every SMS whose provider price waited for a rate
that is now there. What still waits after a run is something no run will price by
itself: its currency has no ECB rate, or its send date no rate within the billing
settings' max_rate_age. The count is the run's PricesWaitingForRate metric, which has an
alarm.

Safe to run at any time and as often as wanted: storing and pricing are idempotent.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from functions.billing import ecb
from shared.errors import ConfigurationError, ServiceError

if TYPE_CHECKING:
    from shared.db import Database
    from shared.runtime import Services

log = logging.getLogger("sms.billing")


@dataclass
class RatesRun:
    rate_date: str | None = None
    """The last day the ECB had published, by its daily file (ISO date)."""
    history: bool = False
    """Whether this run read the 90-day file too."""
    fetched: int = 0
    """Rates read from the ECB's files."""
    stored: int = 0
    """Rates new to the table."""
    priced: int = 0
    """SMS whose provider price was converted into the billing currency by this run."""
    waiting: int = 0
    """SMS whose provider price still waits for a rate."""
    oldest_waiting: str | None = None
    """The send time of the oldest of them (ISO 8601), or None."""

    @property
    def complete(self) -> bool:
        """Always: a run that could not read the ECB's files or reach the database
        raises. SMS left waiting are their own alarm's (PricesWaitingForRate), not a
        failed run: the next run would fetch nothing they lack."""
        return True

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def run(services: Services) -> RatesRun:
    db, base_url = services.db, str(services.settings.ecb_rates_url)
    daily = ecb.read(base_url, ecb.DAILY)
    outcome = RatesRun(rate_date=max(rate.day for rate in daily).isoformat(), fetched=len(daily))
    outcome.stored = _store(db, daily)
    failure: ServiceError | ConfigurationError | None = None
    if outcome.stored:
        try:
            history = ecb.read(base_url, ecb.HISTORY)
        except (ServiceError, ConfigurationError) as exc:
            # What the daily file brought still prices what it can; the run fails after.
            failure = exc
        else:
            outcome.history = True
            outcome.fetched += len(history)
            outcome.stored += _store(db, history)
    pending = db.rpc("price_pending_sms")
    outcome.priced = int(pending["priced"])
    outcome.waiting = int(pending["waiting"])
    outcome.oldest_waiting = pending["oldest_waiting"]
    log.info("exchange rates: %s", outcome.as_json(), extra=outcome.as_json())
    if outcome.waiting:
        log.warning(
            "exchange rates: %d SMS still wait for a rate, the oldest sent at %s",
            outcome.waiting,
            outcome.oldest_waiting,
            extra={"code": "prices_waiting_for_rate"},
        )
    if failure is not None:
        raise failure
    return outcome


def _store(db: Database, rates: list[ecb.Rate]) -> int:
    stored = db.rpc("store_exchange_rates", {"p_rates": [rate.as_json() for rate in rates]})
    return int(stored)

"""Prices from Twilio's Messages list: a page of up to 1,000 messages a request, per
account and per day (UTC), instead of one request per SMS.

The database says which final SMS still have no price, by the day they were sent
(claim_sms_to_price): those never asked ("new"), and those Twilio had no price for yet
when last asked ("again", offered at growing intervals). Each day with new SMS is
listed in each configured account (main first), page after page, newest first as
Twilio lists them; every page's prices go to record_sms_prices in one call (which
ignores SMS that are not ours or already priced, and keeps a price in another currency
for the exchange rate to convert). A day's listing stops once every new SMS of it was
seen and what else waits costs no more fetched one by one than the day's remaining
pages: a day whose only unpriced SMS are the last minutes' costs one request, not the
whole day, and a few stragglers of an old day cost a request each. So does an SMS that
no list of its day showed (Twilio dates a message by when it left, we by when n8n
recorded it: midnight may fall between). Twilio publishes a price some time after the
final status: an SMS shown without one keeps its claim's stamp, and the database offers
it again later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from twilio.http.http_client import TwilioHttpClient

from shared.errors import ConfigurationError

if TYPE_CHECKING:
    from twilio.rest import Client

    from shared.db import Database

log = logging.getLogger("sms.reconcile")

PAGE_SIZE = 1000  # Twilio's largest page
CLAIM_LIMIT = 50_000  # SMS a run takes to price (about 50 pages, at most 1.5 days at 100x)
SINGLE_FETCHES = 200  # SMS a run fetches one by one, at most
_RELEASE_CHUNK = 5000  # release_sms_to_reconcile's limit


class CountingHttpClient(TwilioHttpClient):  # type: ignore[misc]  # twilio is untyped
    """Twilio's HTTP client, counting the requests it sends (the run reports them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests = 0

    def request(self, *args: Any, **kwargs: Any) -> Any:
        self.requests += 1
        return super().request(*args, **kwargs)


class _Listing(Enum):
    SETTLED = "what still waits for this day is cheaper to fetch one by one"
    END = "the account's list of the day ended"
    STOPPED = "out of time"
    FAILED = "an answer the run cannot use"


@dataclass
class _Day:
    """One day's claimed SMS, those not seen yet."""

    new: set[str]  # never asked: the day is listed for them
    again: set[str]  # asked before, unpriced then: fetched one by one when fewer
    pages: int  # what listing the whole day takes, about (a page per 1,000 SMS of it)
    listed: int = 0  # pages listed so far

    def settled(self) -> bool:
        """Nothing new waits, and what waits again costs no more fetched one by one
        than the rest of the day's pages."""
        return not self.new and len(self.again) <= self.pages - self.listed

    def discard(self, sid: str) -> None:
        self.new.discard(sid)
        self.again.discard(sid)

    def waiting(self) -> list[str]:
        return sorted(self.new | self.again)


class RateLimitedError(Exception):
    """Twilio answered 429: the run stops here and resumes next run."""


def twilio_status(exc: Exception) -> int | None:
    """The HTTP status of a failed Twilio request: a fetch raises an exception that
    carries it (TwilioRestException, or TwilioServiceException for an RFC 9457 answer),
    a page TwilioException("Unable to fetch page", response)."""
    status = getattr(exc, "status", None)
    if status is None and len(exc.args) > 1:
        status = getattr(exc.args[1], "status_code", None)
    return status if isinstance(status, int) else None


def refused(client: Client) -> ConfigurationError:
    return ConfigurationError(
        f"Twilio refused the credentials of {client.account_sid}: check"
        " TWILIO_AUTH_TOKEN / TWILIO_SUBACCOUNTS"
    )


class Pricing:
    """One run's pricing. `run` prices what it can within `keep_going`; whatever
    happens, `give_back` hands the SMS it did not get to back to the next run."""

    def __init__(self, db: Database, clients: list[Client], within_days: int) -> None:
        self.db = db
        self.clients = clients
        claimed: dict[str, dict[str, Any]] = db.rpc(
            "claim_sms_to_price", {"p_max_age": f"{within_days} days", "p_limit": CLAIM_LIMIT}
        )
        self.days = {
            day: _Day(set(d["new"]), set(d["again"]), max(1, -(-int(d["sms"]) // PAGE_SIZE)))
            for day, d in claimed.items()
        }
        self.day_of = {sid: day for day, d in claimed.items() for sid in (*d["new"], *d["again"])}
        self.claimed = len(self.day_of)
        self.unseen = set(self.day_of)  # claimed SMS no listing or fetch showed yet
        self.priced = 0
        self.errors = 0
        self.not_found = 0
        self.answers = 0  # Twilio's answers, of any kind: it could be reached
        self.forget: list[str] = []  # shown with a price: their stamp is of no more use

    def run(self, keep_going: Callable[[], bool]) -> None:
        """Raises RateLimitedError, ConfigurationError, or what requests raises when Twilio
        cannot be reached; gives nothing back itself."""
        one_by_one: list[str] = []
        for name in sorted(self.days):
            day = self.days[name]
            failed = False
            for client in self.clients:
                if day.settled():
                    break
                if not keep_going():
                    return
                listed = self._list(client, name, day, keep_going)
                if listed is _Listing.STOPPED:
                    return
                failed = listed is _Listing.FAILED
                if failed:
                    break  # the day is given back whole
            if not failed:
                # What still waits is fetched one by one: cheaper than more pages, or
                # in no account's list of the day (Twilio dates a message by when it
                # left, we by when n8n recorded it: midnight may fall between).
                one_by_one += day.waiting()
                del self.days[name]
        # A later day's listing may have shown some; beyond SINGLE_FETCHES, they keep
        # their stamp and wait to be offered again.
        for sid in [sid for sid in one_by_one if sid in self.unseen][:SINGLE_FETCHES]:
            if not keep_going():
                return
            try:
                self._fetch(sid)
            except (ConfigurationError, RateLimitedError):
                raise
            except Exception as exc:
                if _unreachable(exc):
                    raise
                self.errors += 1
                log.warning("reconcile: pricing %s failed (%s)", sid, type(exc).__name__)

    def give_back(self) -> None:
        """Release what was claimed and not dealt with (it comes first next run), and the
        stamps of SMS Twilio showed with a price (of no more use)."""
        rest = [sid for day in self.days.values() for sid in day.waiting()]
        for chunk in _chunks(rest + self.forget, _RELEASE_CHUNK):
            self.db.rpc("release_sms_to_reconcile", {"p_sids": chunk})

    def _list(
        self, client: Client, name: str, day: _Day, keep_going: Callable[[], bool]
    ) -> _Listing:
        """List one day of one account, page after page, until what still waits for
        that day is cheaper fetched one by one (nothing, most often)."""
        from twilio.base.exceptions import TwilioException

        messages = client.api.v2010.accounts(client.account_sid).messages
        try:
            # A string, sent as is: the package writes a date as "YYYY-MM-DDT00:00:00Z".
            page = messages.page(date_sent=name, page_size=PAGE_SIZE)
            while True:
                self.answers += 1
                day.listed += 1
                self._record(page)
                if day.settled():
                    return _Listing.SETTLED
                if not keep_going():
                    return _Listing.STOPPED
                next_page = page.next_page()
                if next_page is None:
                    return _Listing.END
                page = next_page
        except TwilioException as exc:
            status = twilio_status(exc)
            if status == 429:
                raise RateLimitedError from None
            if status in (401, 403):
                raise refused(client) from None
            self.errors += 1
            log.warning("reconcile: listing %s of %s failed (HTTP %s)", name,
                        client.account_sid, status)  # fmt: skip
        except ConfigurationError:
            raise
        except Exception as exc:
            if _unreachable(exc):
                raise
            self.errors += 1
            log.warning("reconcile: pricing %s failed (%s)", name, type(exc).__name__)
        return _Listing.FAILED

    def _record(self, page: Iterable[Any]) -> None:
        prices = []
        for message in page:
            sid = message.sid
            if message.price is not None:
                prices.append(
                    {"sid": sid, "price": message.price, "price_unit": message.price_unit}
                )
            if sid in self.unseen:
                self.unseen.discard(sid)
                if day := self.days.get(self.day_of[sid]):
                    day.discard(sid)
                if message.price is not None:
                    self.forget.append(sid)
        if prices:
            self.priced += int(self.db.rpc("record_sms_prices", {"p_prices": prices}))

    def _fetch(self, sid: str) -> None:
        from twilio.base.exceptions import TwilioException

        for client in self.clients:
            try:
                message = client.api.v2010.accounts(client.account_sid).messages(sid).fetch()
            except TwilioException as exc:
                status = twilio_status(exc)
                if status == 404:
                    self.answers += 1
                    continue
                if status == 429:
                    raise RateLimitedError from None
                if status in (401, 403):
                    raise refused(client) from None
                self.errors += 1
                log.warning("reconcile: pricing %s failed (HTTP %s)", sid, status)
                return
            self.answers += 1
            self._record([message])
            return
        self.not_found += 1


def _unreachable(exc: Exception) -> bool:
    import requests

    return isinstance(exc, requests.ConnectionError | requests.Timeout)


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]

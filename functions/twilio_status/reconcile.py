"""Reconcile: ask Twilio's Messages API about SMS whose callbacks never came, and for
the prices callbacks never carry.

Two parts, in this order. SMS still not final an hour after sending are fetched one by
one (claim_sms_to_reconcile), and each answer goes through the same SQL as a callback.
Final SMS without a price are priced from Twilio's Messages list, a day and an account
at a time, up to 1,000 messages a request (pricing.py). Each run is bounded, takes the
SMS checked least recently first, stops cleanly when Twilio rate-limits or its time
budget runs out, gives back what it did not get to, and resumes there next run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from functions.twilio_status import callbacks
from functions.twilio_status.models import StatusReport
from functions.twilio_status.pricing import (
    CountingHttpClient,
    Pricing,
    RateLimitedError,
    refused,
    twilio_status,
)
from shared.db import Database
from shared.errors import ConfigurationError, UnavailableError

if TYPE_CHECKING:
    from twilio.rest import Client

    from shared.runtime import Services
    from shared.settings import Settings

log = logging.getLogger("sms.reconcile")


@dataclass
class ReconcileRun:
    candidates: int = 0  # SMS the run took: to_price of them for their price
    to_price: int = 0
    asked: int = 0  # SMS fetched one by one for their status, that Twilio answered about
    changed: int = 0
    priced: int = 0  # SMS the Messages list priced in the billing currency
    not_found: int = 0
    errors: int = 0
    twilio_requests: int = 0
    rate_limited: bool = False
    twilio_unreachable: bool = False

    @property
    def complete(self) -> bool:
        """False when the run could not deal with an SMS it took: a bad answer (errors),
        or Twilio stopping to answer part-way (the rest given back). A 429 or the time
        budget also ends a run early, and the rest is asked first next run, but that is
        the run pacing itself, not failing: it did what Twilio and its budget allowed
        (and a run that long shows in the Duration alarm)."""
        return not (self.errors or self.twilio_unreachable)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def run(services: Services) -> ReconcileRun:
    db, settings = services.db, services.settings
    clients = services.get(twilio_clients)
    requests_before = _requests_sent(clients)
    deadline = time.monotonic() + settings.reconcile_time_budget_seconds

    def keep_going() -> bool:
        return time.monotonic() <= deadline

    outcome = ReconcileRun()
    try:
        _repair_statuses(db, clients, settings, outcome, keep_going)
        answers = outcome.asked
        if not (outcome.rate_limited or outcome.twilio_unreachable) and keep_going():
            answers += _price(db, clients, settings, outcome, keep_going)
    finally:
        outcome.twilio_requests = _requests_sent(clients) - requests_before
    log.info("reconcile: %s", outcome.as_json(), extra=outcome.as_json())
    if outcome.twilio_unreachable and answers == 0:
        raise UnavailableError(
            "Twilio's API cannot be reached; the SMS will be asked about next run."
        )
    return outcome


def _repair_statuses(
    db: Database,
    clients: list[Client],
    settings: Settings,
    outcome: ReconcileRun,
    keep_going: Callable[[], bool],
) -> None:
    """Fetch, one by one, the SMS whose status is stuck."""
    import requests  # the HTTP library under twilio's client

    sids: list[str] = db.rpc(
        "claim_sms_to_reconcile",
        {
            "p_min_age": f"{settings.reconcile_after_minutes} minutes",
            "p_max_age": f"{settings.reconcile_within_days} days",
            "p_limit": settings.reconcile_batch_size,
        },
    )
    outcome.candidates += len(sids)
    done = 0  # SMS dealt with; the others are given back for the next run
    try:
        for sid in sids:
            if not keep_going():
                break
            try:
                _reconcile_one(db, clients, sid, settings, outcome)
            except ConfigurationError:
                raise
            except (requests.ConnectionError, requests.Timeout):
                # Twilio cannot be reached: asking about the rest would fail alike.
                outcome.twilio_unreachable = True
                break
            except Exception as exc:
                # One bad answer must not stall every SMS queued behind it.
                outcome.errors += 1
                log.warning("reconcile: %s failed (%s)", sid, type(exc).__name__)
            if outcome.rate_limited:
                break
            done += 1
    finally:
        if unasked := sids[done:]:
            db.rpc("release_sms_to_reconcile", {"p_sids": unasked})


def _price(
    db: Database,
    clients: list[Client],
    settings: Settings,
    outcome: ReconcileRun,
    keep_going: Callable[[], bool],
) -> int:
    """Price final SMS from the Messages list; how many answers Twilio gave."""
    import requests

    pricing = Pricing(db, clients, settings.reconcile_within_days)
    outcome.candidates += pricing.claimed
    outcome.to_price = pricing.claimed
    try:
        pricing.run(keep_going)
    except RateLimitedError:
        outcome.rate_limited = True
    except (requests.ConnectionError, requests.Timeout):
        outcome.twilio_unreachable = True
    finally:
        outcome.priced += pricing.priced
        outcome.errors += pricing.errors
        outcome.not_found += pricing.not_found
        pricing.give_back()
    return pricing.answers


def _reconcile_one(
    db: Database, clients: list[Client], sid: str, settings: Settings, outcome: ReconcileRun
) -> None:
    message = _fetch(clients, sid, outcome)
    if message is None:
        return
    report = StatusReport.model_validate(
        {"MessageSid": sid, "MessageStatus": message.status, "ErrorCode": message.error_code}
    ).model_copy(update={"reported_at": message.date_updated})
    result = callbacks.record(
        db,
        report,
        settings.default_phone_region,
        source="reconcile",
        price=message.price or None,
        price_unit=message.price_unit,
    )
    outcome.changed += bool(result is not None and result["changed"])


def twilio_clients(services: Services) -> list[Client]:
    """A client per configured Twilio account, main first (the composition root's
    factory): their HTTP sessions, and so their connections, last the process."""
    from twilio.rest import Client

    settings = services.settings
    accounts = settings.twilio_accounts()
    if not accounts:
        raise ConfigurationError(
            "reconcile needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or TWILIO_SUBACCOUNTS)"
        )
    clients = []
    for account_sid, token in accounts:
        client = Client(account_sid, token, http_client=CountingHttpClient(timeout=10))
        client.api.base_url = str(settings.twilio_api_base_url).rstrip("/")
        clients.append(client)
    return clients


def _requests_sent(clients: list[Client]) -> int:
    return sum(getattr(client.http_client, "requests", 0) for client in clients)


def _fetch(clients: list[Client], sid: str, outcome: ReconcileRun) -> Any:
    """The message from whichever configured account holds it, or None."""
    from twilio.base.exceptions import TwilioException

    for client in clients:
        try:
            message = client.api.v2010.accounts(client.account_sid).messages(sid).fetch()
        except TwilioException as exc:
            status = twilio_status(exc)
            if status == 404:
                continue
            if status == 429:
                outcome.rate_limited = True
                return None
            if status in (401, 403):
                raise refused(client) from None
            raise
        outcome.asked += 1
        return message
    outcome.not_found += 1
    return None

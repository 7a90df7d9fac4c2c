"""Reconcile: ask Twilio's Messages API about SMS whose callbacks never came.

It covers SMS still not final an hour after sending, and final SMS without a price
(Twilio prices a message only after sending it, and never in a callback). Each run is
bounded, asks about the SMS checked least recently first, stops cleanly when Twilio
rate-limits, and resumes there next run. Every answer goes through the same SQL as
a callback.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from functions.twilio_status import callbacks
from shared.db import Database
from shared.errors import ConfigurationError
from shared.models import StatusReport

if TYPE_CHECKING:
    from twilio.rest import Client

    from shared.settings import Settings

log = logging.getLogger("sms.reconcile")


@dataclass
class ReconcileRun:
    candidates: int = 0
    asked: int = 0
    changed: int = 0
    not_found: int = 0
    errors: int = 0
    rate_limited: bool = False

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def run(db: Database, settings: Settings) -> ReconcileRun:
    clients = _clients(settings)
    sids: list[str] = db.rpc(
        "sms_to_reconcile",
        {
            "p_min_age": f"{settings.reconcile_after_minutes} minutes",
            "p_max_age": f"{settings.reconcile_within_days} days",
            "p_limit": settings.reconcile_batch_size,
        },
    )
    outcome = ReconcileRun(candidates=len(sids))
    checked: list[str] = []
    for sid in sids:
        message = _fetch(clients, sid, outcome)
        if outcome.rate_limited:
            break
        checked.append(sid)
        if message is None:
            continue
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
        outcome.changed += bool(result["changed"])
    if checked:
        db.rpc("mark_sms_reconciled", {"p_sids": checked})
    log.info("reconcile: %s", outcome.as_json(), extra=outcome.as_json())
    return outcome


def _clients(settings: Settings) -> list[Client]:
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    accounts = settings.twilio_accounts()
    if not accounts:
        raise ConfigurationError(
            "reconcile needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or TWILIO_SUBACCOUNTS)"
        )
    clients = []
    for account_sid, token in accounts:
        client = Client(account_sid, token, http_client=TwilioHttpClient(timeout=10))
        client.api.base_url = str(settings.twilio_api_base_url).rstrip("/")
        clients.append(client)
    return clients


def _fetch(clients: list[Client], sid: str, outcome: ReconcileRun) -> Any:
    """The message from whichever configured account holds it, or None."""
    from twilio.base.exceptions import TwilioException, TwilioRestException

    for client in clients:
        try:
            message = client.api.v2010.accounts(client.account_sid).messages(sid).fetch()
        except TwilioRestException as exc:
            if exc.status == 404:
                continue
            if exc.status == 429:
                outcome.rate_limited = True
                return None
            outcome.errors += 1
            return None
        except TwilioException:
            outcome.errors += 1
            return None
        outcome.asked += 1
        return message
    outcome.not_found += 1
    return None

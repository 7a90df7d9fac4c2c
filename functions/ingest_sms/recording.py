"""Recording what n8n sent: validate every item, store the valid ones in one SQL call.

One SMS object gives one result; {"messages": [...]} gives one result per item, in
order. Idempotency and reference checks live in SQL (public.ingest_sms).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from functions.ingest_sms.models import IngestBatch, SmsIn
from shared.db import Database
from shared.errors import ConflictError, GoneError, InvalidInputError, ServiceError, invalid_input
from shared.spillover import PARKED, Spillover

log = logging.getLogger("sms.ingest")

MAX_BODY_BYTES = 1_000_000

_REJECTED_MESSAGES = {
    "deployment_id": "deployment_id refers to a deployment that does not exist.",
    "call_id": "call_id refers to a call that does not exist or belongs to another client.",
    "prospect_id": (
        "prospect_id refers to a prospect that does not exist or belongs to another client."
    ),
    "sequence_id": (
        "sequence_id refers to a sequence that does not exist or belongs to another client."
    ),
    "provider_status": "provider_status is not a Twilio message status.",
}


QUEUED_MESSAGE = (
    "The database is unavailable: this SMS is queued and will be recorded when it"
    " returns. Do not send it again."
)


@dataclass(frozen=True)
class Outcome:
    """What happened to one item: recorded (id, created), queued for replay while the
    database is unavailable, or refused (error)."""

    id: str | None = None
    created: bool | None = None
    queued: bool = False
    error: ServiceError | None = None

    def as_json(self) -> dict[str, Any]:
        if self.error is not None:
            return self.error.as_json()
        if self.queued:
            return {"queued": True, "message": QUEUED_MESSAGE}
        return {"id": self.id, "created": self.created}


def parse(body: Any) -> tuple[list[Any], bool]:
    """The items of a body, and whether it was a batch."""
    if isinstance(body, dict) and "messages" in body:
        return IngestBatch.model_validate(body).messages, True
    if isinstance(body, dict):
        return [body], False
    raise InvalidInputError('Send one SMS object, or {"messages": [...]} with up to 500.')


def validate(items: list[Any], region: str) -> list[SmsIn | ServiceError]:
    context = {"region": region, "received_at": datetime.now(UTC)}
    checked: list[SmsIn | ServiceError] = []
    for item in items:
        try:
            checked.append(SmsIn.model_validate(item, context=context))
        except ValidationError as exc:
            checked.append(invalid_input(exc))
    return checked


def record(
    db: Database, checked: list[SmsIn | ServiceError], spillover: Spillover
) -> list[Outcome]:
    valid = [item for item in checked if isinstance(item, SmsIn)]
    try:
        args = {"p_messages": [m.model_dump(exclude_none=True) for m in valid]}
        result = spillover.rpc_or_park(db, "ingest_sms", args, items="p_messages") if valid else []
    except ServiceError as exc:
        log.warning(
            "ingest: nothing recorded (%s)",
            exc.code,
            extra={"sids": [m.provider_message_sid for m in valid]},
        )
        raise
    if result is PARKED:
        queued = [Outcome(error=i) if isinstance(i, ServiceError) else Outcome(queued=True)
                  for i in checked]  # fmt: skip
        _log(checked, queued)
        return queued
    stored = iter(result)
    outcomes = []
    for item in checked:
        if isinstance(item, ServiceError):
            outcomes.append(Outcome(error=item))
            continue
        result = next(stored)
        if rejected := result.get("rejected"):
            outcomes.append(
                Outcome(error=InvalidInputError(_REJECTED_MESSAGES[rejected], field=rejected))
            )
        elif field := result.get("gone"):
            message = (
                "This SMS was erased at its recipient's request (GDPR): it is not recorded"
                " again. Nothing to fix in the workflow; do not retry."
            )
            outcomes.append(Outcome(error=GoneError(message, field=field)))
        elif field := result.get("conflict"):
            message = f"{field} is already recorded for another deployment."
            outcomes.append(Outcome(error=ConflictError(message, field=field)))
        else:
            outcomes.append(Outcome(id=result["id"], created=result["created"]))
    _log(checked, outcomes)
    return outcomes


def _log(checked: list[SmsIn | ServiceError], outcomes: list[Outcome]) -> None:
    sids = [item.provider_message_sid for item in checked if isinstance(item, SmsIn)]
    deployments = sorted({str(item.deployment_id) for item in checked if isinstance(item, SmsIn)})
    log.info(
        "ingest: %d created, %d existing, %d queued, %d refused",
        sum(o.created is True for o in outcomes),
        sum(o.created is False for o in outcomes),
        sum(o.queued for o in outcomes),
        sum(o.error is not None for o in outcomes),
        extra={"deployment_ids": deployments, "sids": sids},
    )


def batch_status(outcomes: list[Outcome]) -> int:
    """201 all new · 200 all recorded, some before · 202 queued · 207 some refused ·
    422 all refused."""
    refused = sum(o.error is not None for o in outcomes)
    if refused == len(outcomes):
        return 422
    if refused:
        return 207
    if any(o.queued for o in outcomes):
        return 202
    return 201 if all(o.created for o in outcomes) else 200

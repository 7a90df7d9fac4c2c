"""Replaying calls parked in the spill-over queue (shared/spillover.py).

Each message is one call, made through public.replay_parked_call as service_role: the
same SQL as the direct path, so a call is idempotent and may come in any order (a
status before its SMS is kept pending, as for a live callback). A message is:

* replayed: the call was made (an SMS recorded or found already there, a status
  applied or kept);
* refused for good: SQL will never take it (an unknown deployment, a SID recorded for
  another deployment, an erased SID, a value it refuses). n8n had its 202 long ago, so
  it is logged for an operator, with the SID and the reason, and counted (an alarm);
* erased: its number was erased after it was parked. Dropped, and counted;
* to retry: the database is unavailable again, or something unexpected failed. SQS
  delivers it again after its visibility timeout and, past its receive limit, moves it
  to the dead-letter queue (README, "The spill-over queue").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared import phones
from shared.errors import ServiceError, UnavailableError
from shared.spillover import ParkedCall

if TYPE_CHECKING:
    from shared.runtime import Services

log = logging.getLogger("sms.replay")

# What SQL raises for a call it will never take, however often it is made again.
_REFUSED_FOR_GOOD = frozenset({"invalid_input", "conflict", "gone", "not_found"})


@dataclass(frozen=True)
class Message:
    id: str
    body: str
    receive_count: int = 1


@dataclass
class ReplayReport:
    replayed: int = 0
    refused: int = 0
    erased: int = 0
    retry: list[str] = field(default_factory=list)
    """The ids of the messages to deliver again."""
    dead_lettered: int = 0
    """Of those, the ones past their last delivery: the dead-letter queue takes them."""

    @property
    def complete(self) -> bool:
        return not self.retry

    def as_json(self) -> dict[str, Any]:
        return {
            "replayed": self.replayed,
            "refused": self.refused,
            "erased": self.erased,
            "retry": len(self.retry),
            "dead_lettered": self.dead_lettered,
        }


def replay(services: Services, messages: list[Message], *, max_receives: int) -> ReplayReport:
    settings = services.settings
    if settings.archive_index_secret is None:
        raise settings.missing("archive_index_secret", purpose="replay (the erasure check)")
    secret = settings.archive_index_secret.get_secret_value().encode()
    report = ReplayReport()
    outage = False
    for message in messages:
        if outage:
            report.retry.append(message.id)  # the database is gone again: try later
            continue
        try:
            _replay_one(services, secret, message, report)
        except UnavailableError:
            outage = True
            report.retry.append(message.id)
        except Exception:
            log.exception("parked call %s not replayed", message.id)
            report.retry.append(message.id)
            if message.receive_count >= max_receives:
                report.dead_lettered += 1
    log.info("replay: %s", report.as_json())
    return report


def _replay_one(services: Services, secret: bytes, message: Message, report: ReplayReport) -> None:
    call = ParkedCall.from_body(message.body)
    number = call.phone_number
    context = {"message_id": message.id, "parked_request_id": call.request_id, "rpc": call.rpc}
    try:
        outcome = services.db.rpc(
            "replay_parked_call",
            {
                "p_rpc": call.rpc,
                "p_args": call.args,
                "p_phone_hash": phones.phone_hash(secret, number).hex() if number else None,
                "p_parked_at": call.parked_at,
            },
        )
    except ServiceError as exc:
        if exc.code not in _REFUSED_FOR_GOOD:
            raise
        _refused(report, call, exc.code, exc.field, context)
        return
    if outcome.get("erased"):
        report.erased += 1
        log.info("parked call dropped: its number was erased after it was parked", extra=context)
        return
    result = outcome["result"]
    if call.rpc == "ingest_sms":
        (stored,) = result
        for reason in ("rejected", "gone", "conflict"):
            if reason in stored:
                _refused(report, call, reason, stored[reason], context)
                return
    report.replayed += 1


def _refused(
    report: ReplayReport, call: ParkedCall, reason: str, field: str | None, context: dict[str, Any]
) -> None:
    """An operator's to look at: n8n was told the SMS was queued."""
    report.refused += 1
    sms = call.args["p_messages"][0] if call.rpc == "ingest_sms" else call.args
    log.error(
        "parked call refused for good on replay: %s (%s)",
        reason,
        field,
        extra=context
        | {
            "sid": sms.get("provider_message_sid") or sms.get("p_sid"),
            "deployment_id": sms.get("deployment_id"),
            "parked_at": call.parked_at.isoformat(),
            "code": "replay_refused",
        },
    )

"""Replaying calls parked in the spill-over queue (shared/spillover.py).

Each message is one call, made through public.replay_parked_call as service_role: the
same SQL as the direct path, so a call is idempotent and may come in any order (a
status before its SMS is kept pending, as for a live callback). A message is:

* replayed: the call was made (an SMS recorded or found already there, a status
  applied or kept);
* refused for good: SQL will never take it (an unknown deployment, a SID recorded for
  another deployment, an erased SID, a value it refuses), or it is older than
  SPILLOVER_MAX_AGE_DAYS (redriven late: an erasure receipt promised it gone). n8n had
  its 202 long ago, so it is logged for an operator, with the SID and the reason, and
  counted (an alarm);
* erased: its number was erased after it was parked, or while the erasure ran.
  Dropped, and counted;
* to retry: the database is unavailable again, or something unexpected failed. It is
  hidden for longer after each delivery (``postpone``: 1 minute, doubling, at most
  30 minutes), so that its MAX_RECEIVES deliveries span about 7.5 hours of outage before
  the dead-letter queue takes it (README, "The spill-over queue"). A message that is no
  parked call at all is delivered again at once, and reaches the dead-letter queue in
  seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared import phones
from shared.errors import ServiceError, UnavailableError
from shared.spillover import ParkedCall

if TYPE_CHECKING:
    from shared.runtime import Services

log = logging.getLogger("sms.replay")

# What SQL raises for a call it will never take, however often it is made again.
_REFUSED_FOR_GOOD = frozenset({"invalid_input", "conflict", "gone", "not_found"})
# The queue's redrive policy (serverless.yml, maxReceiveCount): after this many
# deliveries a message goes to the dead-letter queue. tests/deploy checks they agree.
MAX_RECEIVES = 20
FIRST_RETRY_SECONDS = 60
# Once the database is back, a message waits for its next delivery: at most this long.
LAST_RETRY_SECONDS = 1800


@dataclass(frozen=True)
class Message:
    id: str
    body: str
    receive_count: int = 1
    receipt_handle: str | None = None


def retry_delay(receive_count: int) -> int:
    """How long a message that failed on its nth delivery stays hidden before the next."""
    return int(min(FIRST_RETRY_SECONDS * 2 ** (max(receive_count, 1) - 1), LAST_RETRY_SECONDS))


def postpone(client: Any, queue_url: str, messages: list[Message], report: ReplayReport) -> None:
    """Hide each message to retry for its retry_delay: without it, SQS would deliver it
    again after the queue's visibility timeout, and a long outage would use up its
    deliveries within minutes. A failure here leaves that shorter timeout in force."""
    retry, unreadable = set(report.retry), set(report.unreadable)
    # A message on its last delivery is left to the queue's own visibility timeout: the
    # dead-letter queue takes it then, not a long delay later. One that is no parked
    # call at all is delivered again at once, to reach it within seconds.
    entries = [
        {"Id": str(i), "ReceiptHandle": m.receipt_handle,
         "VisibilityTimeout": 0 if m.id in unreadable else retry_delay(m.receive_count)}
        for i, m in enumerate(messages)
        if m.id in retry and m.receipt_handle and m.receive_count < MAX_RECEIVES
    ]  # fmt: skip
    try:
        failed = 0
        for start in range(0, len(entries), 10):
            answer = client.change_message_visibility_batch(
                QueueUrl=queue_url, Entries=entries[start : start + 10]
            )
            failed += len(answer.get("Failed", []))
    except Exception as exc:
        log.warning("retries not postponed (%s)", type(exc).__name__)
        return
    if failed:
        log.warning("%d of %d retries not postponed", failed, len(entries))


@dataclass
class ReplayReport:
    replayed: int = 0
    refused: int = 0
    erased: int = 0
    retry: list[str] = field(default_factory=list)
    """The ids of the messages to deliver again."""
    unreadable: list[str] = field(default_factory=list)
    """Of those, the ones that are no parked call: bound for the dead-letter queue."""
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
    oldest = datetime.now(UTC) - timedelta(days=settings.spillover_max_age_days)
    for message in messages:
        try:
            call = ParkedCall.from_body(message.body)
        except ValueError as exc:
            log.error("message %s is not a parked call (%s)", message.id, exc,
                      extra={"code": "replay_unreadable"})  # fmt: skip
            report.unreadable.append(message.id)
        else:
            try:
                if outage:
                    raise UnavailableError  # the database is gone again: all of them later
                _replay_one(services, secret, message.id, call, oldest, report)
                continue
            except UnavailableError:
                outage = True
            except Exception:
                log.exception("parked call %s not replayed", message.id)
        report.retry.append(message.id)
        if message.receive_count >= max_receives:
            report.dead_lettered += 1
            log.error("parked call %s goes to the dead-letter queue", message.id,
                      extra={"code": "replay_dead_lettered"})  # fmt: skip
    log.info("replay: %s", report.as_json())
    return report


def _replay_one(
    services: Services,
    secret: bytes,
    message_id: str,
    call: ParkedCall,
    oldest: datetime,
    report: ReplayReport,
) -> None:
    number = call.phone_number
    context = {"message_id": message_id, "parked_request_id": call.request_id, "rpc": call.rpc}
    if call.parked_at < oldest:
        # Past SPILLOVER_MAX_AGE_DAYS (redriven from the dead-letter queue, say): an
        # erasure receipt promised that no copy of it is left by now.
        _refused(report, call, "expired", "parked_at", context)
        return
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

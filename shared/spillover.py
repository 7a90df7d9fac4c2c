"""The spill-over queue: verified requests parked while the database is unavailable.

ingest_sms and twilio_status call the database through ``Spillover.rpc_or_park``. When
the database cannot serve the call (DatabaseUnavailableError: unreachable, silent past
the call's deadline, or saying it is unavailable), the call is parked in SQS as it
would have been made, one message per SMS, and the caller is told it is queued (202
for n8n, 200 for Twilio). functions/replay makes the parked calls once the database
is back, through public.replay_parked_call, in any order and idempotently. Only when
the queue cannot be reached either does the caller get 503 with Retry-After.

Nothing is parked before its request was authenticated and validated, and a login the
database refused is not an outage (shared.db.credentials_refused raises a plain
UnavailableError): neither reaches this module.

After one call found the database unavailable, the process parks at once for
OUTAGE_HOLD_SECONDS rather than make each request wait out its deadline: during an
outage an environment serves a parked request in milliseconds, and tries the database
again with the first request after the hold.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic_core import to_jsonable_python

from shared import emf, logs
from shared.errors import DatabaseUnavailableError, UnavailableError

if TYPE_CHECKING:
    from shared.db import Database
    from shared.runtime import Services

log = logging.getLogger("sms.spillover")

ParkableRpc = Literal["ingest_sms", "record_sms_status"]
PARKABLE_RPCS: frozenset[str] = frozenset({"ingest_sms", "record_sms_status"})
FORMAT_VERSION = 1
OUTAGE_HOLD_SECONDS = 5.0
# SQS takes up to 10 messages a batch call, 256 KiB in all (a parked SMS is at most
# about 20 KiB: 1,600 characters of text and 16 KiB of metadata).
_BATCH_MESSAGES = 10
_BATCH_BYTES = 200_000


class Parked:
    """What rpc_or_park returns when it parked the call instead of making it."""

    def __repr__(self) -> str:
        return "PARKED"


PARKED = Parked()


@dataclass(frozen=True)
class ParkedCall:
    """One call to make later, as the message body says it."""

    rpc: ParkableRpc
    args: dict[str, Any]
    parked_at: datetime
    request_id: str | None = None

    @property
    def phone_number(self) -> str | None:
        """The number the call is about, for the erasure check on replay."""
        if self.rpc == "ingest_sms":
            (message,) = self.args["p_messages"]
            return str(message["phone_number"])
        to = self.args.get("p_to")
        return str(to) if to else None

    def body(self) -> str:
        # ASCII only: SQS refuses some characters a text may hold (U+FFFE, U+FFFF), as
        # JSON escapes they pass.
        message = {
            "v": FORMAT_VERSION,
            "rpc": self.rpc,
            "args": self.args,
            "parked_at": self.parked_at,
            "request_id": self.request_id,
        }
        return json.dumps(to_jsonable_python(message), ensure_ascii=True, separators=(",", ":"))

    @classmethod
    def from_body(cls, body: str) -> ParkedCall:
        """The call a message carries; ValueError if it is not one we park."""
        data = json.loads(body)
        if not isinstance(data, dict) or data.get("v") != FORMAT_VERSION:
            raise ValueError("not a parked call of this format version")
        rpc, args = data.get("rpc"), data.get("args")
        if rpc not in PARKABLE_RPCS or not isinstance(args, dict):
            raise ValueError("not a call that is parked")
        if rpc == "ingest_sms" and not (
            isinstance(args.get("p_messages"), list) and len(args["p_messages"]) == 1
        ):
            raise ValueError("a parked ingest holds exactly one SMS")
        parked_at = datetime.fromisoformat(data["parked_at"])
        if parked_at.tzinfo is None:
            raise ValueError("parked_at has no time zone")
        return cls(rpc, args, parked_at, data.get("request_id"))


@dataclass
class Spillover:
    """The database, or the queue when the database is unavailable."""

    queue_url: str | None
    """None where no queue is configured: nothing is parked, the caller gets 503."""
    connect: Callable[[], Any] = field(repr=False, default=lambda: None)
    """Builds the SQS client, on the first call parked: boto3's import is paid in an
    outage, not by every cold start."""
    retry_after: int = 5
    hold_seconds: float = OUTAGE_HOLD_SECONDS
    _client: Any = field(default=None, init=False, repr=False)
    _outage_until: float = field(default=float("-inf"), init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def enabled(self) -> bool:
        return self.queue_url is not None

    def rpc_or_park(
        self,
        db: Database,
        rpc: ParkableRpc,
        args: dict[str, Any],
        *,
        items: str | None = None,
        parked_args: dict[str, Any] | None = None,
    ) -> Any:
        """db.rpc(rpc, args), or PARKED once the call is in the queue. ``items`` names
        an array argument parked one element per message (a batch of SMS);
        ``parked_args`` are what to park instead of ``args``, where the call made later
        must say more than the call made now (the time a status was received)."""
        if not self.enabled:
            return db.rpc(rpc, args)
        outage: DatabaseUnavailableError
        if time.monotonic() < self._outage_until:
            # Within the hold: parked without trying, and the hold is not made longer, so
            # the first request after it tries the database again.
            outage = DatabaseUnavailableError(retry_after=self.retry_after)
        else:
            try:
                result = db.rpc(rpc, args)
            except DatabaseUnavailableError as exc:
                outage = exc
                with self._lock:
                    self._outage_until = time.monotonic() + self.hold_seconds
            else:
                with self._lock:
                    self._outage_until = float("-inf")
                return result
        later = parked_args or args
        parts = [{items: [item]} for item in later[items]] if items else [later]
        self.park([ParkedCall(rpc, part, datetime.now(UTC), logs.request_id.get())
                   for part in parts], cause=outage)  # fmt: skip
        return PARKED

    def park(self, calls: list[ParkedCall], *, cause: Exception | None = None) -> None:
        """Send every call to the queue, or raise UnavailableError (503): some may have
        been sent, which replay's idempotency makes harmless when the caller retries."""
        from botocore.exceptions import BotoCoreError, ClientError

        pending = list(enumerate(c.body() for c in calls))
        try:
            with self._lock:
                if self._client is None:
                    self._client = self.connect()
            for _attempt in range(2):  # once more for what SQS failed to take, if it may
                pending, hopeless = self._send(pending)
                if not pending or hopeless:
                    break
        except (BotoCoreError, ClientError) as exc:
            log.error("spill-over queue unreachable: nothing parked for sure (%s)",
                      type(exc).__name__)  # fmt: skip
            raise UnavailableError(retry_after=self.retry_after) from cause
        if pending:
            log.error("spill-over queue refused %d of %d calls", len(pending), len(calls))
            raise UnavailableError(retry_after=self.retry_after) from cause
        log.warning("database unavailable: %d call(s) parked for replay", len(calls))
        emf.emit(emf.function_name("spillover"), {emf.PARKED: len(calls)})

    def _send(self, entries: list[tuple[int, str]]) -> tuple[list[tuple[int, str]], bool]:
        """Send in batches; what SQS did not take, and whether any of it never will be
        (a sender's fault, such as a message too large)."""
        assert self._client is not None
        failed: list[tuple[int, str]] = []
        hopeless = False
        for batch in _batches(entries):
            answer = self._client.send_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "MessageBody": body} for i, body in batch],
            )
            refused = {int(e["Id"]): bool(e.get("SenderFault")) for e in answer.get("Failed", [])}
            failed += [(i, body) for i, body in batch if i in refused]
            hopeless = hopeless or any(refused.values())
        return failed, hopeless


def _batches(entries: list[tuple[int, str]]) -> list[list[tuple[int, str]]]:
    batches: list[list[tuple[int, str]]] = []
    size = 0
    for entry in entries:
        length = len(entry[1].encode())
        if not batches or len(batches[-1]) == _BATCH_MESSAGES or size + length > _BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(entry)
        size += length
    return batches


def sqs_client(services: Services, *, read_timeout: float, attempts: int = 3) -> Any:
    """An SQS client for the queue (moto's server locally, SQS_ENDPOINT_URL)."""
    import boto3
    from botocore.config import Config

    endpoint = services.settings.sqs_endpoint_url
    return boto3.client(
        "sqs",
        endpoint_url=str(endpoint) if endpoint else None,
        config=Config(
            connect_timeout=1,
            read_timeout=read_timeout,
            retries={"total_max_attempts": attempts, "mode": "standard"},
        ),
    )


def spillover(services: Services) -> Spillover:
    """The composition root's factory."""
    settings = services.settings
    return Spillover(
        settings.spillover_queue_url,
        # One attempt, 1 s to connect and 1 to read: twilio_status has about 5 s in all,
        # and its database deadline has used most of them.
        lambda: sqs_client(services, read_timeout=1, attempts=1),
        retry_after=settings.retry_after_seconds,
    )

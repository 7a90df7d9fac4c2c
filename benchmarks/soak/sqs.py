"""A small SQS for the gauntlet and benchmarks/spillover, in a process of its own:
`python -m benchmarks.soak.sqs` listens on an ephemeral port and prints its URL.

Why not moto's: moto's SQS keeps a queue's messages in one list and goes through all of
them on every call (each SendMessage computes every queue attribute, a receive filters
the whole list, a delete looks for its receipt handle in it). On this machine a
SendMessageBatch took 40 ms with 500 messages queued, 300 ms with 2,000 and 600 ms with
4,000, on one client; with four at once, 2 s, and a receive with 4,000 queued 2 s: past
the one second ingest_sms and twilio_status give SQS (shared/spillover.py), while an
outage of the gauntlet's day parks thousands. SQS itself answers in milliseconds at any
depth.

What it does, as SQS does (the AWS JSON 1.0 protocol boto3 speaks): CreateQueue (with
VisibilityTimeout and a RedrivePolicy), GetQueueAttributes (QueueArn, VisibilityTimeout
and the three approximate counts), SendMessage(Batch) (at most 10 entries and 256 KiB a
request, SQS's characters only), ReceiveMessage (at most 10, long polling, a visibility
timeout of its own, ApproximateReceiveCount; a message received more than the redrive
policy's maxReceiveCount times goes to the dead-letter queue instead), DeleteMessage(Batch)
and ChangeMessageVisibility(Batch) by receipt handle (the last one given out only).
Messages are delivered at least once and in no promised order. No authentication.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
import json
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ACCOUNT = "123456789012"
REGION = "eu-west-3"
MAX_BATCH = 10
MAX_BYTES = 262_144
# The characters SQS takes in a message body.
_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


OPERATIONS = frozenset({
    "CreateQueue", "GetQueueAttributes", "SendMessage", "SendMessageBatch", "ReceiveMessage",
    "DeleteMessage", "DeleteMessageBatch", "ChangeMessageVisibility",
    "ChangeMessageVisibilityBatch",
})  # fmt: skip


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


class SqsError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass
class Message:
    id: str
    body: str
    sent: float
    visible_at: float
    receive_count: int = 0
    receipt: str | None = None


@dataclass
class Queue:
    name: str
    url: str
    visibility: float = 30.0
    dead_letters: Queue | None = None
    max_receives: int | None = None
    messages: dict[str, Message] = field(default_factory=dict)
    _due: list[tuple[float, int, str]] = field(default_factory=list)  # (visible_at, seq, id)
    _receipts: dict[str, str] = field(default_factory=dict)  # receipt handle -> message id

    @property
    def arn(self) -> str:
        return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{self.name}"

    def schedule(self, message: Message, seq: int) -> None:
        heapq.heappush(self._due, (message.visible_at, seq, message.id))

    def due(self, now: float) -> Message | None:
        """The next message a receive may take now (the heap's stale entries dropped)."""
        while self._due and self._due[0][0] <= now:
            visible_at, _, message_id = heapq.heappop(self._due)
            message = self.messages.get(message_id)
            if message is not None and message.visible_at == visible_at:
                return message
        return None

    def by_receipt(self, receipt: str) -> Message:
        message = self.messages.get(self._receipts.get(receipt, ""))
        if message is None or message.receipt != receipt:
            raise SqsError("ReceiptHandleIsInvalid", "The receipt handle is not valid.")
        return message

    def forget(self, message: Message) -> None:
        self.messages.pop(message.id, None)
        if message.receipt:
            self._receipts.pop(message.receipt, None)

    def hand_out(self, message: Message, now: float, visibility: float) -> str:
        if message.receipt:
            self._receipts.pop(message.receipt, None)
        message.receive_count += 1
        message.visible_at = now + visibility
        message.receipt = uuid.uuid4().hex + uuid.uuid4().hex
        self._receipts[message.receipt] = message.id
        return message.receipt


class Sqs:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.queues: dict[str, Queue] = {}
        self._lock = threading.Condition()
        self._seq = itertools.count()

    def call(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        handler = getattr(self, f"_{_snake(operation)}", None) if operation in OPERATIONS else None
        if handler is None:
            raise SqsError("UnsupportedOperation", f"{operation} is not supported here.")
        with self._lock:
            result: dict[str, Any] = handler(body)
            return result

    def _queue(self, body: dict[str, Any]) -> Queue:
        url = str(body.get("QueueUrl", ""))
        queue = self.queues.get(url.rstrip("/").rsplit("/", 1)[-1])
        if queue is None:
            raise SqsError("QueueDoesNotExist", "The specified queue does not exist.")
        return queue

    def _create_queue(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["QueueName"]
        if name not in self.queues:
            attributes = body.get("Attributes") or {}
            queue = Queue(name, f"{self.base_url}/{ACCOUNT}/{name}")
            queue.visibility = float(attributes.get("VisibilityTimeout", 30))
            if redrive := attributes.get("RedrivePolicy"):
                policy = json.loads(redrive)
                target = policy["deadLetterTargetArn"].rsplit(":", 1)[-1]
                queue.dead_letters = self.queues[target]
                queue.max_receives = int(policy["maxReceiveCount"])
            self.queues[name] = queue
        return {"QueueUrl": self.queues[name].url}

    def _get_queue_attributes(self, body: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(body)
        now = time.monotonic()
        visible = sum(m.visible_at <= now for m in queue.messages.values())
        values = {
            "QueueArn": queue.arn,
            "VisibilityTimeout": str(int(queue.visibility)),
            "ApproximateNumberOfMessages": str(visible),
            "ApproximateNumberOfMessagesNotVisible": str(len(queue.messages) - visible),
            "ApproximateNumberOfMessagesDelayed": "0",
        }
        names = body.get("AttributeNames") or ["All"]
        return {"Attributes": {k: v for k, v in values.items() if "All" in names or k in names}}

    def _send_message(self, body: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(body)
        (sent,) = self._send(queue, [{"Id": "0", "MessageBody": body.get("MessageBody", "")}])
        return {k: v for k, v in sent.items() if k != "Id"}

    def _send_message_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(body)
        entries = body.get("Entries") or []
        if not entries:
            raise SqsError("EmptyBatchRequest", "The batch request contains no entries.")
        if len(entries) > MAX_BATCH:
            raise SqsError("TooManyEntriesInBatchRequest", "At most 10 entries.")
        if sum(len(e.get("MessageBody", "").encode()) for e in entries) > MAX_BYTES:
            raise SqsError("BatchRequestTooLong", "The batch request is too long.")
        return {"Successful": self._send(queue, entries), "Failed": []}

    def _send(self, queue: Queue, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for entry in entries:
            text = entry.get("MessageBody", "")
            if not text or len(text.encode()) > MAX_BYTES or _INVALID.search(text):
                raise SqsError("InvalidMessageContents", "The message contains invalid characters.")
        now = time.monotonic()
        sent = []
        for entry in entries:
            message = Message(uuid.uuid4().hex, entry["MessageBody"], time.time(), now)
            queue.messages[message.id] = message
            queue.schedule(message, next(self._seq))
            sent.append(
                {"Id": entry["Id"], "MessageId": message.id, "MD5OfMessageBody": _md5(message.body)}
            )
        self._lock.notify_all()
        return sent

    def _receive_message(self, body: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(body)
        wanted = min(int(body.get("MaxNumberOfMessages", 1)), MAX_BATCH)
        visibility = float(body.get("VisibilityTimeout", queue.visibility))
        deadline = time.monotonic() + float(body.get("WaitTimeSeconds", 0))
        received: list[dict[str, Any]] = []
        while True:
            now = time.monotonic()
            while len(received) < wanted and (message := queue.due(now)) is not None:
                if queue.max_receives and message.receive_count >= queue.max_receives:
                    self._dead_letter(queue, message, now)
                    continue
                receipt = queue.hand_out(message, now, visibility)
                queue.schedule(message, next(self._seq))
                received.append({
                    "MessageId": message.id,
                    "ReceiptHandle": receipt,
                    "MD5OfBody": _md5(message.body),
                    "Body": message.body,
                    "Attributes": {
                        "ApproximateReceiveCount": str(message.receive_count),
                        "SentTimestamp": str(int(message.sent * 1000)),
                    },
                })  # fmt: skip
            if received or now >= deadline:
                return {"Messages": received} if received else {}
            # Long polling: woken by a send, or when the next hidden message is due.
            next_due = queue._due[0][0] if queue._due else deadline
            self._lock.wait(max(0.0, min(deadline, next_due) - now))

    def _dead_letter(self, queue: Queue, message: Message, now: float) -> None:
        queue.forget(message)
        target = queue.dead_letters
        if target is not None:
            moved = Message(message.id, message.body, message.sent, now, message.receive_count)
            target.messages[moved.id] = moved
            target.schedule(moved, next(self._seq))

    def _delete_message(self, body: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(body)
        queue.forget(queue.by_receipt(body["ReceiptHandle"]))
        return {}

    def _delete_message_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(body)
        return self._each(body, lambda e: queue.forget(queue.by_receipt(e["ReceiptHandle"])))

    def _change_message_visibility(self, body: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(body)
        self._change(queue, body)
        return {}

    def _change_message_visibility_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(body)
        return self._each(body, lambda e: self._change(queue, e))

    def _change(self, queue: Queue, entry: dict[str, Any]) -> None:
        message = queue.by_receipt(entry["ReceiptHandle"])
        message.visible_at = time.monotonic() + float(entry["VisibilityTimeout"])
        queue.schedule(message, next(self._seq))
        self._lock.notify_all()

    def _each(self, body: dict[str, Any], action: Any) -> dict[str, Any]:
        successful, failed = [], []
        for entry in body.get("Entries") or []:
            try:
                action(entry)
                successful.append({"Id": entry["Id"]})
            except SqsError as exc:
                failed.append({"Id": entry["Id"], "SenderFault": True, "Code": exc.code,
                               "Message": exc.message})  # fmt: skip
        return {"Successful": successful, "Failed": failed}


def serve() -> tuple[ThreadingHTTPServer, str]:
    """The server, bound to an ephemeral port, and its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    url = f"http://127.0.0.1:{server.server_address[1]}"
    server.sqs = Sqs(url)  # type: ignore[attr-defined]
    return server, url


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms wait

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        operation = self.headers.get("X-Amz-Target", "").removeprefix("AmazonSQS.")
        try:
            result = self.server.sqs.call(operation, json.loads(raw or b"{}"))  # type: ignore[attr-defined]
            self._answer(200, result)
        except SqsError as exc:
            self._answer(exc.status, {"__type": f"com.amazonaws.sqs#{exc.code}",
                                      "message": exc.message})  # fmt: skip

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("x-amzn-RequestId", uuid.uuid4().hex)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> int:
    server, url = serve()
    print(url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())

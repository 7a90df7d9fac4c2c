"""What Lambda's SQS event source does, for `make dev`, the tests and the benchmarks:
receive a batch, replay it, delete what needs no retry. A message left undeleted
comes back after the queue's visibility timeout, and past its receive limit moves to
the dead-letter queue by the queue's own redrive policy, as in AWS."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from functions.replay.replay import Message, ReplayReport, postpone, replay
from shared.spillover import sqs_client

if TYPE_CHECKING:
    from collections.abc import Callable

    from shared.runtime import Services

log = logging.getLogger("sms.replay")


def poll_once(
    services: Services, queue_url: str, *, max_receives: int, wait: int = 1
) -> ReplayReport:
    client = services.get(_client)
    answer = client.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=wait,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
    )
    received = answer.get("Messages", [])
    messages = [
        Message(
            m["MessageId"],
            m["Body"],
            int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
            m["ReceiptHandle"],
        )
        for m in received
    ]
    if not messages:
        return ReplayReport()
    report = replay(services, messages, max_receives=max_receives)
    if report.retry:
        postpone(client, queue_url, messages, report)
    done = [m for m in received if m["MessageId"] not in set(report.retry)]
    for start in range(0, len(done), 10):
        client.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(done[start : start + 10])
            ],
        )
    return report


def poll(
    services: Callable[[], Services],
    queue_url: str,
    *,
    max_receives: int,
    until_empty: bool = False,
    idle_sleep: float = 1.0,
) -> ReplayReport:
    """Replay until stopped (or, with until_empty, until a receive finds nothing)."""
    total = ReplayReport()
    while True:
        try:
            report = poll_once(services(), queue_url, max_receives=max_receives)
        except Exception:  # the queue or the settings: keep polling, as Lambda would
            log.exception("replay poll failed")
            time.sleep(idle_sleep)
            continue
        total.replayed += report.replayed
        total.refused += report.refused
        total.erased += report.erased
        total.dead_lettered += report.dead_lettered
        received = report.replayed + report.refused + report.erased + len(report.retry)
        if not received:
            if until_empty:
                return total
            time.sleep(idle_sleep)
        elif report.retry:
            time.sleep(idle_sleep)


def _client(services: Services) -> Any:
    # Long polls wait up to WaitTimeSeconds: the read timeout must be longer.
    return sqs_client(services, read_timeout=25)

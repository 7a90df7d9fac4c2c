"""The AWS Lambda handler (serverless.yml): the spill-over queue's event source.

SQS hands over up to a batch of parked calls; the ones to deliver again are reported
as batch item failures (ReportBatchItemFailures), so the rest are deleted."""

from __future__ import annotations

from typing import Any

from functions.replay.replay import Message, replay
from shared import emf, logs, runtime

# The queue's redrive policy (serverless.yml, maxReceiveCount): after this many
# deliveries a message goes to the dead-letter queue. tests/deploy checks they agree.
MAX_RECEIVES = 5


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    messages = [
        Message(
            record["messageId"],
            record["body"],
            int(record.get("attributes", {}).get("ApproximateReceiveCount", 1)),
        )
        for record in event.get("Records", [])
    ]
    with logs.bound_request_id(getattr(context, "aws_request_id", None) or "replay"):
        report = replay(runtime.services(), messages, max_receives=MAX_RECEIVES)
    emf.emit(
        emf.function_name("replay"),
        {
            emf.REPLAYED: report.replayed,
            emf.REPLAY_REFUSED: report.refused,
            emf.REPLAY_ERASED: report.erased,
            emf.REPLAY_DEAD_LETTERED: report.dead_lettered,
        },
    )
    return {"batchItemFailures": [{"itemIdentifier": i} for i in report.retry]}

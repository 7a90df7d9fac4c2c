"""The AWS Lambda handler (serverless.yml): the spill-over queue's event source.

SQS hands over up to a batch of parked calls; the ones to deliver again are reported
as batch item failures (ReportBatchItemFailures), so the rest are deleted."""

from __future__ import annotations

from typing import Any

from functions.replay.replay import MAX_RECEIVES as MAX_RECEIVES  # the redrive policy's
from functions.replay.replay import Message, postpone, replay
from shared import emf, logs, runtime
from shared.spillover import sqs_client


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    messages = [
        Message(
            record["messageId"],
            record["body"],
            int(record.get("attributes", {}).get("ApproximateReceiveCount", 1)),
            record.get("receiptHandle"),
        )
        for record in event.get("Records", [])
    ]
    with logs.bound_request_id(getattr(context, "aws_request_id", None) or "replay"):
        services = runtime.services()
        report = replay(services, messages, max_receives=MAX_RECEIVES)
        if report.retry and (queue_url := services.settings.spillover_queue_url):
            postpone(services.get(_client), queue_url, messages, report)
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


def _client(services: runtime.Services) -> Any:
    return sqs_client(services, read_timeout=5)

"""The AWS Lambda handlers (serverless.yml): erase behind its function URL, and the
retention run on a schedule (no URL: only the schedule runs it).

Both Lambda functions load this module, so the archive run is imported only when it
runs: erase's cold start never needs it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions.retention.context import retention_context
from functions.retention.main import erase as erase_entry_point
from shared import emf
from shared.lambda_adapter import http_handler, scheduled_handler

if TYPE_CHECKING:
    from functions.retention.archive import RetentionReport
    from shared.runtime import Services

erase = http_handler(erase_entry_point)


def _retention(services: Services) -> RetentionReport:
    from functions.retention import archive

    return archive.run(services.get(retention_context))


def retention_metrics(report: RetentionReport) -> dict[str, int]:
    return {
        emf.RETENTION_COMPLETE: int(report.complete),
        emf.RETENTION_ARCHIVED_ROWS: report.archived_rows,
        emf.RETENTION_EXPIRED_ROWS: report.expired_rows,
    }


retention = scheduled_handler(_retention, retention_metrics)

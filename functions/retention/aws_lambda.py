"""The AWS Lambda handlers (serverless.yml): erase behind its function URL, and the
retention run on a schedule (no URL: only the schedule runs it)."""

from typing import Any

from functions.retention import archive
from functions.retention.context import retention_context
from functions.retention.main import erase as erase_entry_point
from shared.lambda_adapter import http_handler, scheduled_handler
from shared.runtime import Services

erase = http_handler(erase_entry_point)


def _retention(services: Services) -> dict[str, Any]:
    return archive.run(services.get(retention_context)).as_json()


retention = scheduled_handler(_retention)

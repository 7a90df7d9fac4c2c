"""The AWS Lambda handlers (serverless.yml): status callbacks behind the function URL,
and reconcile on a schedule (no URL: only the schedule runs it)."""

from typing import Any

from functions.twilio_status import reconcile as reconciliation
from functions.twilio_status.main import twilio_status
from shared.lambda_adapter import http_handler, scheduled_handler
from shared.runtime import Services

handler = http_handler(twilio_status)


def _reconcile(services: Services) -> dict[str, Any]:
    return reconciliation.run(services).as_json()


reconcile = scheduled_handler(_reconcile)

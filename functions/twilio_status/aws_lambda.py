"""The AWS Lambda handlers (serverless.yml): status callbacks behind the function URL,
and reconcile on a schedule (no URL: only the schedule runs it).

Both Lambda functions load this module, so reconcile is imported only when it runs: a
callback's cold start never needs it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions.twilio_status.main import twilio_status
from shared import emf
from shared.lambda_adapter import http_handler, scheduled_handler

if TYPE_CHECKING:
    from functions.twilio_status.reconcile import ReconcileRun
    from shared.runtime import Services

handler = http_handler(twilio_status)


def _reconcile(services: Services) -> ReconcileRun:
    from functions.twilio_status import reconcile as reconciliation

    return reconciliation.run(services)


def reconcile_metrics(run: ReconcileRun) -> dict[str, int]:
    return {
        emf.RECONCILE_CHANGED: run.changed,
        emf.RECONCILE_NOT_FOUND: run.not_found,
        emf.RECONCILE_ERRORS: run.errors,
    }


reconcile = scheduled_handler(_reconcile, reconcile_metrics)

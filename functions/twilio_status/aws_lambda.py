"""The AWS Lambda handlers (serverless.yml): status callbacks behind the function URL,
and reconcile on a schedule (no URL: only the schedule runs it)."""

from functions.twilio_status import reconcile as reconciliation
from functions.twilio_status.main import twilio_status
from shared import emf
from shared.lambda_adapter import http_handler, scheduled_handler
from shared.runtime import Services

handler = http_handler(twilio_status)


def _reconcile(services: Services) -> reconciliation.ReconcileRun:
    return reconciliation.run(services)


def reconcile_metrics(run: reconciliation.ReconcileRun) -> dict[str, int]:
    return {
        emf.RECONCILE_CHANGED: run.changed,
        emf.RECONCILE_NOT_FOUND: run.not_found,
        emf.RECONCILE_ERRORS: run.errors,
    }


reconcile = scheduled_handler(_reconcile, reconcile_metrics)

"""HTTP entry points: Twilio's status callbacks, and the scheduled reconcile."""

from __future__ import annotations

from flask import Request, Response

from functions.twilio_status import callbacks
from functions.twilio_status import reconcile as reconciliation
from shared import runtime
from shared.http import endpoint, json_response


@endpoint("POST")
def twilio_status(request: Request) -> Response:
    services = runtime.services()
    params = callbacks.verified_params(request, services.settings)
    report = callbacks.parse(params)
    callbacks.record(services.db, report, services.settings.default_phone_region)
    return Response(status=200)


@endpoint("POST")
def reconcile(request: Request) -> Response:
    services = runtime.services()
    return json_response(reconciliation.run(services.db, services.settings).as_json())

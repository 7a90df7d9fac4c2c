"""HTTP entry points: Twilio's status callbacks, and the scheduled reconcile."""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions.twilio_status import callbacks
from shared import runtime
from shared.http import empty_response, endpoint, json_response
from shared.spillover import spillover

if TYPE_CHECKING:
    from werkzeug.wrappers import Request, Response


@endpoint("POST")
def twilio_status(request: Request) -> Response:
    services = runtime.services()
    params = callbacks.verified_params(request, services)
    report = callbacks.parse(params)
    services = runtime.services()  # new ones if the signature brought new secrets
    callbacks.record(
        services.db,
        report,
        services.settings.default_phone_region,
        spillover=services.get(spillover),
    )
    return empty_response()


@endpoint("POST")
def reconcile(request: Request) -> Response:
    # Here, not at the top: a callback's cold start never needs it.
    from functions.twilio_status import reconcile as reconciliation

    services = runtime.services()
    return json_response(reconciliation.run(services).as_json())

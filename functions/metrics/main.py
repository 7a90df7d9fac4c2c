"""HTTP entry point: the seed's get_sms_metrics for a logged-in dashboard user, whose
browser may call it from the dashboard's own origin (CORS_ALLOWED_ORIGINS)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions.metrics import kpis
from functions.metrics.models import MetricsQuery
from shared import runtime
from shared.auth import bearer_token, matches_api_key, verify_access_token
from shared.cors import cross_origin
from shared.db import SERVICE
from shared.errors import UnauthorizedError
from shared.http import endpoint, json_response

if TYPE_CHECKING:
    from werkzeug.wrappers import Request, Response


# Outside the boundary: it sees every answer, errors included, and answers a browser's
# preflight before the token check or the query could run.
@cross_origin
@endpoint("GET")
def metrics(request: Request) -> Response:
    services = runtime.services()
    token = bearer_token(request)
    if token is None:
        raise UnauthorizedError("Send the user's access token as 'Authorization: Bearer <token>'.")
    if matches_api_key(token, services.settings.metrics_service_keys):
        caller = SERVICE
    else:
        caller = verify_access_token(token, services)
    query = MetricsQuery.model_validate(request.args.to_dict())
    figures = kpis.read(services.db, query, caller)
    # Per-user figures: a shared cache must never hand them to someone else.
    return json_response(figures, headers={"Cache-Control": "private, no-store"})

"""HTTP entry point: the seed's get_sms_metrics for a logged-in dashboard user, whose
browser may call it from the dashboard's own origin (CORS_ALLOWED_ORIGINS)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions.metrics import kpis
from functions.metrics import statement as statements
from functions.metrics.models import MetricsQuery, StatementQuery
from shared import runtime
from shared.auth import bearer_token, matches_api_key, verify_access_token
from shared.cors import cross_origin
from shared.db import SERVICE, Caller
from shared.errors import UnauthorizedError
from shared.http import endpoint, json_response

if TYPE_CHECKING:
    from werkzeug.wrappers import Request, Response

    from shared.runtime import Services

# Per-user figures: a shared cache must never hand them to someone else.
PRIVATE = {"Cache-Control": "private, no-store"}


# Outside the boundary: it sees every answer, errors included, and answers a browser's
# preflight before the token check or the query could run.
@cross_origin
@endpoint("GET")
def metrics(request: Request) -> Response:
    services = runtime.services()
    caller = _caller(request, services)
    query = MetricsQuery.model_validate(request.args.to_dict())
    return json_response(kpis.read(services.db, query, caller), headers=PRIVATE)


@cross_origin
@endpoint("GET")
def statement(request: Request) -> Response:
    """A client's month, for its users (viewer or admin) and the service keys."""
    from werkzeug.wrappers import Response

    services = runtime.services()
    caller = _caller(request, services)
    query = StatementQuery.model_validate(request.args.to_dict())
    found = statements.read(services.db, query, caller, services.settings.billing_time_zone)
    if query.format == "json":
        return json_response(found, headers=PRIVATE)
    name = f"sms-statement-{query.client_id}-{query.month}.csv"
    return Response(
        statements.as_csv(found),
        mimetype="text/csv",
        headers=PRIVATE | {"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _caller(request: Request, services: Services) -> Caller:
    """A service key's holder (every client), or the signed-in user of the token."""
    token = bearer_token(request)
    if token is None:
        raise UnauthorizedError("Send the user's access token as 'Authorization: Bearer <token>'.")
    if matches_api_key(token, services.settings.metrics_service_keys):
        return SERVICE
    return verify_access_token(token, services)

"""HTTP entry point: n8n posts each SMS it sent through Twilio (see README, "n8n")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions.ingest_sms import recording
from shared import runtime
from shared.auth import require_api_key
from shared.http import endpoint, json_response, read_json
from shared.spillover import spillover

if TYPE_CHECKING:
    from werkzeug.wrappers import Request, Response


@endpoint("POST")
def ingest_sms(request: Request) -> Response:
    services = runtime.services()
    require_api_key(request, services.settings.ingest_api_keys, setting="INGEST_API_KEYS")
    items, is_batch = recording.parse(read_json(request, max_bytes=recording.MAX_BODY_BYTES))
    checked = recording.validate(items, services.settings.default_phone_region)
    outcomes = recording.record(services.db, checked, services.get(spillover))
    if not is_batch:
        (outcome,) = outcomes
        if outcome.error is not None:
            raise outcome.error
        return json_response(outcome.as_json(), recording.batch_status(outcomes))
    return json_response(
        {
            "results": [o.as_json() for o in outcomes],
            "created": sum(o.created is True for o in outcomes),
            "existing": sum(o.created is False for o in outcomes),
            "queued": sum(o.queued for o in outcomes),
            "refused": sum(o.error is not None for o in outcomes),
        },
        recording.batch_status(outcomes),
    )

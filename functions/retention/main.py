"""HTTP entry points: the scheduled retention run, and the privacy team's erasure."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

from functions.retention import erasure
from functions.retention.context import retention_context
from functions.retention.models import ErasureRequest, RetentionRequest
from shared import logs, runtime
from shared.auth import require_api_key
from shared.http import endpoint, json_response, read_json

if TYPE_CHECKING:
    from werkzeug.wrappers import Request, Response

log = logging.getLogger("sms.retention")

MAX_BODY_BYTES = 65_536


@endpoint("POST")
def retention(request: Request) -> Response:
    services = runtime.services()
    settings = services.settings
    require_api_key(request, settings.retention_api_keys, setting="RETENTION_API_KEYS")
    body = read_json(request, max_bytes=MAX_BODY_BYTES, if_empty={})
    options = RetentionRequest.model_validate(body)
    # Here, not at the top: erase, served from this module too, never needs it.
    from functions.retention import archive

    report = archive.run(
        services.get(retention_context), dry_run=options.dry_run, progress=_log_progress
    )
    return json_response(report.as_json())


@endpoint("POST")
def erase(request: Request) -> Response:
    services = runtime.services()
    settings = services.settings
    require_api_key(request, settings.privacy_api_keys, setting="PRIVACY_API_KEYS")
    ask = ErasureRequest.model_validate(
        read_json(request, max_bytes=MAX_BODY_BYTES),
        context={"region": settings.default_phone_region},
    )
    receipt = erasure.erase(
        services.get(retention_context),
        ask.phone_numbers,
        requester=ask.requester,
        request_id=logs.request_id.get() or uuid.uuid4().hex,
        dry_run=ask.dry_run,
    )
    if receipt.dry_run or receipt.complete:
        return json_response(receipt.as_json())
    # The archive could not be finished: the receipt says what was done, and the same
    # request again (same X-Request-Id, to continue its audit record) finishes it.
    retry_after = str(settings.retry_after_seconds)
    return json_response(receipt.as_json(), 503, {"Retry-After": retry_after})


def _log_progress(done: int, total: int) -> None:
    log.info("archived %d of %d rows", done, total)

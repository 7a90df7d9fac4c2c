"""Twilio status callbacks: verify the signature, then record the report.

Nothing is read from a callback before its signature checks out: an unknown
AccountSid, a missing or a wrong signature is 403 and touches no data.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pydantic import ValidationError

from functions.twilio_status.models import StatusReport
from shared.db import Database
from shared.errors import (
    BadRequestError,
    ConfigurationError,
    ForbiddenError,
    InvalidInputError,
    invalid_input,
)
from shared.lambda_adapter import PUBLIC_ORIGIN
from shared.phones import to_e164
from shared.spillover import PARKED, Spillover

if TYPE_CHECKING:
    from werkzeug.wrappers import Request

    from shared.runtime import Services
    from shared.settings import Settings

log = logging.getLogger("sms.status")

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_PATH_SAFE = "/:@!$&'()*+,;=-._~"  # RFC 3986 pchar: left as they are in a path


def signed_urls(request: Request, settings: Settings) -> list[str]:
    """The URL Twilio called, which its signature covers, in the forms it may have used.

    The origin is PUBLIC_BASE_URL, or behind a Lambda function URL the URL's own host,
    by which AWS routed the request: never a header a client writes (Host,
    X-Forwarded-Host), or a signature Twilio made for another URL of the same account
    would verify here. A callback URL configured on the bare host ("https://x.on.aws")
    reaches us as the path "/", so for the root both spellings are tried.
    """
    if settings.public_base_url is not None:
        origin = str(settings.public_base_url).rstrip("/")
    elif (function_url := request.environ.get(PUBLIC_ORIGIN)) is not None:
        origin = function_url
    else:
        raise ConfigurationError(
            "PUBLIC_BASE_URL is not set: twilio_status cannot tell which URL Twilio signed"
            " (set it to the public origin Twilio calls)"
        )
    # The path as it was sent, percent-escapes included: Twilio signed those bytes.
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if raw:
        path = raw.split("?", 1)[0]
    else:
        path = quote(request.environ.get("PATH_INFO", "/").encode("latin-1"), safe=_PATH_SAFE)
    query = f"?{request.query_string.decode()}" if request.query_string else ""
    urls = [origin + path + query]
    if path == "/":
        urls.append(origin + query)
    return urls


def verified_params(request: Request, services: Services) -> dict[str, str]:
    """Every parameter Twilio sent, once the signature over them and the URL is right.

    A signature no token in hand verifies may be Twilio's after a rotation this process
    has not seen: the secrets are read again (at most every 30 s: anyone can send a bad
    signature) and, if they changed, the callback is checked against them.
    """
    try:
        return _verified_params(request, services.settings)
    except SignatureError:
        renewed = services.renew()
        if renewed is None:
            raise
        return _verified_params(request, renewed.settings)


class SignatureError(ForbiddenError):
    """No configured token of the callback's account made its signature."""

    def __init__(self) -> None:
        super().__init__("The request is not signed by a configured Twilio account.")


def _verified_params(request: Request, settings: Settings) -> dict[str, str]:
    from twilio.request_validator import (
        SIGNATURE_HEADER,
        SIGNATURE_SETTINGS_HEADER,
        RequestValidator,
        get_signature_algorithm,
    )

    if request.mimetype not in FORM_TYPES:
        raise ForbiddenError("Not a Twilio status callback.")
    params = request.form  # a MultiDict: the validator signs every value of every name
    if None in params:
        # A multipart part without a name: Twilio never sends one, and the validator
        # cannot sort it among the names it signs.
        raise ForbiddenError("Not a Twilio status callback.")
    signature = request.headers.get(SIGNATURE_HEADER)
    account = params.get("AccountSid")
    if not settings.twilio_accounts():
        raise ConfigurationError(
            "TWILIO_AUTH_TOKEN is not set: twilio_status can verify no callback"
        )
    tokens = settings.twilio_tokens_for(account)
    if not signature:
        raise ForbiddenError("The request is not signed by a configured Twilio account.")
    algorithm = get_signature_algorithm(request.headers.get(SIGNATURE_SETTINGS_HEADER))
    urls = signed_urls(request, settings)
    if not any(
        RequestValidator(token).validate(url, params, signature, algorithm)
        for token in tokens
        for url in urls
    ):
        raise SignatureError()
    return params.to_dict()


def parse(params: dict[str, str]) -> StatusReport:
    """The report in a verified callback; 400 when it is not a message status report."""
    try:
        return StatusReport.model_validate(params)
    except ValidationError as exc:
        problem = invalid_input(exc)
        raise BadRequestError(problem.message, field=problem.field) from None


def record(
    db: Database,
    report: StatusReport,
    region: str,
    *,
    source: str = "callback",
    price: Any = None,
    price_unit: str | None = None,
    spillover: Spillover | None = None,
) -> dict[str, Any] | None:
    """What record_sms_status did; None when the report was parked for replay
    (a callback, with the database unavailable: reconcile passes no spillover)."""
    try:
        to = to_e164(report.to, region) if report.to else None
    except ValueError:
        to = None
    args = {
        "p_sid": report.sid,
        "p_status": report.status,
        "p_error_code": report.error_code,
        "p_reported_at": report.reported_at,
        "p_to": to,
        "p_source": source,
        "p_price": price,
        "p_price_unit": price_unit,
    }
    try:
        if spillover is None:
            outcome: dict[str, Any] = db.rpc("record_sms_status", args)
        elif (
            outcome := spillover.rpc_or_park(
                db,
                "record_sms_status",
                args,
                # Replayed later, a report without the carrier's time keeps the time it
                # came, not the time of its replay.
                parked_args=args | {"p_reported_at": report.reported_at or datetime.now(UTC)},
            )
        ) is PARKED:
            log.info("status %s for %s: parked", report.status, report.sid,
                     extra={"sid": report.sid, "source": source})  # fmt: skip
            return None
    except InvalidInputError as exc:
        raise BadRequestError(exc.message, field=exc.field) from None
    log.info(
        "status %s for %s: %s",
        report.status,
        report.sid,
        "pending" if outcome["pending"] else "changed" if outcome["changed"] else "no change",
        extra={"sid": report.sid, "source": source},
    )
    return outcome

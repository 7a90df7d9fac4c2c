"""Typed service errors: every failure a caller may see is one of these.

`shared.http` turns them into JSON responses in one place; nothing else decides a
status code. Messages are written for the caller: they never carry SQL, stack
traces, phone numbers or message texts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


class ServiceError(Exception):
    status = 500
    code = "internal_error"
    default_message = "Something went wrong on our side. Retry later; if it persists, report it."
    diagnostic: object | None = None
    """What a dependency reported, for logs and tests; never sent to a caller."""

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        self.message = message or self.default_message
        self.field = field
        super().__init__(self.message)

    def as_json(self) -> dict[str, Any]:
        """The body every error response has: {"error": {"code", "message", "field"?}}."""
        detail = {"code": self.code, "message": self.message}
        if self.field is not None:
            detail["field"] = self.field
        return {"error": detail}


class BadRequestError(ServiceError):
    status = 400
    code = "bad_request"
    default_message = "The request could not be read."


class UnauthorizedError(ServiceError):
    status = 401
    code = "unauthorized"
    default_message = "Missing or invalid credentials."


class ForbiddenError(ServiceError):
    status = 403
    code = "forbidden"
    default_message = "These credentials do not allow this operation."


class NotFoundError(ServiceError):
    status = 404
    code = "not_found"
    default_message = "Not found."


class MethodNotAllowedError(ServiceError):
    status = 405
    code = "method_not_allowed"
    default_message = "This method is not allowed here."

    def __init__(self, allowed: tuple[str, ...], message: str | None = None) -> None:
        self.allowed = allowed
        super().__init__(message or f"Use {' or '.join(allowed)}.")


class ConflictError(ServiceError):
    status = 409
    code = "conflict"
    default_message = "This record already exists."


class GoneError(ServiceError):
    status = 410
    code = "gone"
    default_message = "This record was erased and may not be recorded again."


class PayloadTooLargeError(ServiceError):
    status = 413
    code = "payload_too_large"
    default_message = "The request body is too large."


class UnsupportedMediaTypeError(ServiceError):
    status = 415
    code = "unsupported_media_type"
    default_message = "Unsupported content type."


class InvalidInputError(ServiceError):
    status = 422
    code = "invalid_input"
    default_message = "The request contains an invalid value."


class UnavailableError(ServiceError):
    """A dependency (database, storage, provider) cannot be reached right now.

    Callers are told to retry: nothing was half-written.
    """

    status = 503
    code = "unavailable"
    default_message = "A backing service is unavailable. Retry after the delay in Retry-After."

    def __init__(self, message: str | None = None, *, retry_after: int = 5) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class DatabaseUnavailableError(UnavailableError):
    """The database itself cannot serve calls right now: it cannot be reached, it does
    not answer in time, or it says it is unavailable (shared.db.classify). A request
    already verified may be parked for later (shared.spillover). Never a refused login
    of ours, which new credentials fix, not waiting."""


class InternalError(ServiceError):
    """A fault on our side that retrying will not fix on its own."""


class NotConfiguredError(ServiceError):
    """The function is missing a setting it needs to serve anyone (keys, tokens, its
    public URL): it fails closed, the same way in every function, and logs an error that
    an alarm can see."""

    code = "not_configured"
    default_message = (
        "This function is not configured to serve this request yet. Retrying will not help;"
        " report it."
    )


class ConfigurationError(Exception):
    """Start-up cannot proceed: a setting is missing or malformed.

    Raised before any request is served; the message names the variable.
    """


def invalid_input(exc: ValidationError) -> InvalidInputError:
    """A pydantic failure, told by field name and rule, never by the value received."""
    first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    reason = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
    if first["type"].endswith("_parsing"):
        # Pydantic's parse errors go on to quote what they found in the input.
        reason = reason.split(",", 1)[0]
    reason = reason.removeprefix("Value error, ")
    return InvalidInputError(f"{field}: {reason}" if field else reason, field=field)

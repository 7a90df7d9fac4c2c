"""The single boundary between HTTP and the service's logic.

``endpoint`` wraps every HTTP entry point: it binds a request id, checks the
method, and turns every failure into ``{"error": {"code", "message"}}`` with the
right status. Nothing else builds an error response, so no stack trace, SQL or
validation internals can reach a caller.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from shared import emf, logs
from shared.errors import (
    BadRequestError,
    ConfigurationError,
    InternalError,
    MethodNotAllowedError,
    NotConfiguredError,
    PayloadTooLargeError,
    ServiceError,
    UnavailableError,
    UnsupportedMediaTypeError,
    invalid_input,
)

if TYPE_CHECKING:
    from werkzeug.wrappers import Request, Response

log = logging.getLogger("sms.http")

_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

Handler = Callable[["Request"], "Response"]


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    from werkzeug.wrappers import Response

    text = json.dumps(body, default=to_jsonable_python, separators=(",", ":"))
    return Response(text, status=status, headers=headers, mimetype="application/json")


def empty_response(status: int = 200) -> Response:
    from werkzeug.wrappers import Response

    return Response(status=status)


JSON_TYPES = ("application/json",)


_REQUIRED: Any = object()


def read_json(request: Request, *, max_bytes: int, if_empty: Any = _REQUIRED) -> Any:
    """The request's JSON body, or the error that says what is wrong with it.

    With if_empty, a request without a body gets that instead. Whether there is one is
    read from the body itself: a chunked body has no Content-Length.
    """
    if if_empty is not _REQUIRED:
        data = _read_body(request, max_bytes)
        if not data:
            return if_empty
    if request.mimetype not in JSON_TYPES:
        raise UnsupportedMediaTypeError(
            "Send the body as JSON with 'Content-Type: application/json'."
        )
    if if_empty is _REQUIRED:
        data = _read_body(request, max_bytes)
    try:
        return json.loads(data, parse_constant=_not_json)
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8, bad syntax, NaN/Infinity and absurdly long numbers.
        where = (
            f" at line {exc.lineno}, column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else ""
        )
        raise BadRequestError(f"The body is not valid JSON{where}.") from None


def _read_body(request: Request, max_bytes: int) -> bytes:
    too_large = PayloadTooLargeError(f"The body must be at most {max_bytes} bytes.")
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large
    data: bytes = request.stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise too_large
    return data


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def error_response(error: ServiceError) -> Response:
    headers: dict[str, str] = {}
    if isinstance(error, MethodNotAllowedError):
        headers["Allow"] = ", ".join(error.allowed)
    if isinstance(error, UnavailableError):
        headers["Retry-After"] = str(error.retry_after)
    return json_response(error.as_json(), error.status, headers)


def endpoint(*methods: str) -> Callable[[Handler], Handler]:
    """Wrap a functions-framework handler in the error boundary."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def run(request: Request) -> Response:
            supplied = request.headers.get("X-Request-Id", "")
            rid = supplied if _SAFE_REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex
            with logs.bound_request_id(rid):
                try:
                    if request.method not in methods:
                        raise MethodNotAllowedError(methods)
                    response = handler(request)
                except ValidationError as exc:
                    response = error_response(invalid_input(exc))
                except ServiceError as exc:
                    _log_failure(exc)
                    response = error_response(exc)
                except ConfigurationError as exc:
                    log.error("not configured: %s", exc)
                    response = error_response(NotConfiguredError())
                except Exception:
                    log.exception("unhandled error")
                    response = error_response(InternalError())
            if response.status_code >= 500:
                _count_failure(handler.__name__, response.status_code)
            response.headers["X-Request-Id"] = rid
            return response

        return run

    return wrap


def _count_failure(entry_point: str, status: int) -> None:
    # This boundary answers every fault itself, so Lambda's Errors metric stays at 0; the
    # function URL's Url5xxCount sees the answers but cannot tell an unreachable
    # dependency (503) from a fault (500). A handler's own 503 (erase's incomplete
    # receipt) counts too.
    emf.emit(emf.function_name(entry_point), {emf.HTTP_5XX: 1, emf.HTTP_503: int(status == 503)})


def _log_failure(error: ServiceError) -> None:
    if error.status < 500:
        return
    diagnostic = error.diagnostic
    # Only the code: a database failure's message and details can quote row values.
    code = getattr(diagnostic, "code", None)
    log.warning("request failed: %s", error.code, extra={"dependency_code": code})

"""Calls from a browser dashboard on another origin (CORS): the one rule, for metrics.

Which origins: ``CORS_ALLOWED_ORIGINS`` (``Settings.cors_allowed_origins``), each exactly
as a browser sends it in ``Origin``; never ``*``. What they may do: ``GET`` with
``Authorization`` and ``X-Request-Id``, and read ``X-Request-Id`` and ``Retry-After``.

``cross_origin`` wraps an ``@endpoint`` handler from outside, so it sees every answer the
error boundary gives, errors included, and answers a preflight before the handler (its
token check, its query) could run.

It is the only CORS there is, behind the Lambda function URL as under functions-framework:
the URL has no CORS configuration of its own (serverless.yml; tests/deploy checks). With
one, Lambda would answer preflights itself, on its own terms, and add its headers to every
other response on top of the function's, and a browser refuses an
``Access-Control-Allow-Origin`` with two values
(https://docs.aws.amazon.com/lambda/latest/dg/urls-configuration.html#urls-cors).
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

from shared import runtime
from shared.errors import ConfigurationError, ForbiddenError
from shared.http import Handler, empty_response, endpoint

if TYPE_CHECKING:
    from werkzeug.wrappers import Request, Response

ALLOW_METHODS = ("GET",)
# Named one by one: a wildcard in Access-Control-Allow-Headers never covers Authorization.
ALLOW_HEADERS = ("Authorization", "X-Request-Id")
EXPOSE_HEADERS = ("X-Request-Id", "Retry-After")
# Chrome's ceiling. A preflight costs an invocation, so each browser asks once in two
# hours; an origin taken off the list is refused at once all the same, as its next
# answer carries no Access-Control-Allow-Origin.
MAX_AGE_SECONDS = 7200
# No Access-Control-Allow-Credentials: a bearer token the page sets itself is a request
# header like any other (ALLOW_HEADERS); credentials in CORS' sense are cookies and
# HTTP authentication, which no function here takes.

_ORIGIN = re.compile(r"(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?", re.IGNORECASE)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def exact_origin(text: str) -> str:
    """The origin as browsers write it in ``Origin`` (lowercase, no default port), or a
    ValueError that says how to write it."""
    if text == "*":
        raise ValueError(
            "'*' is refused: browsers send users' access tokens here, so list each dashboard"
            " origin exactly, such as https://dashboard.example.com"
        )
    match = _ORIGIN.fullmatch(text)
    port = int(match.group(3)) if match and match.group(3) else None
    if match is None or (port is not None and not 0 < port < 65536):
        raise ValueError(
            f"{text!r} is not an origin: write scheme://host[:port], such as"
            " https://dashboard.example.com or http://localhost:3000, without a path or a"
            " trailing slash"
        )
    scheme, host = match.group(1).lower(), match.group(2).lower()
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def cross_origin(handler: Handler) -> Handler:
    """Let the configured origins call this ``@endpoint`` handler from a browser."""

    # A boundary of its own, under the entry point's name (its logs, its 5xx metrics).
    @endpoint("OPTIONS")
    @functools.wraps(handler)
    def preflight(request: Request) -> Response:
        return _answer_preflight(request)

    @functools.wraps(handler)
    def run(request: Request) -> Response:
        if request.method == "OPTIONS" and _is_preflight(request):
            response = preflight(request)
        else:
            response = handler(request)
            _allow(request, response)
        # Whether the answer allows the caller depends on Origin: no cache may hand the
        # answer to one origin to another.
        response.vary.add("Origin")
        return response

    return run


def _is_preflight(request: Request) -> bool:
    return "Origin" in request.headers and "Access-Control-Request-Method" in request.headers


def _answer_preflight(request: Request) -> Response:
    if request.headers["Origin"] not in runtime.services().settings.cors_allowed_origins:
        # Without allow headers the browser stops there; the status says why to whoever
        # reads the network tab.
        raise ForbiddenError(
            "This origin may not call this function from a browser (see CORS_ALLOWED_ORIGINS)."
        )
    response = empty_response(204)
    response.headers["Access-Control-Allow-Origin"] = request.headers["Origin"]
    response.headers["Access-Control-Allow-Methods"] = ", ".join(ALLOW_METHODS)
    response.headers["Access-Control-Allow-Headers"] = ", ".join(ALLOW_HEADERS)
    response.headers["Access-Control-Max-Age"] = str(MAX_AGE_SECONDS)
    return response


def _allow(request: Request, response: Response) -> None:
    origin = request.headers.get("Origin")
    if origin is None:
        return
    try:
        allowed = runtime.services().settings.cors_allowed_origins
    except ConfigurationError:
        return  # the boundary has answered 500 and logged why; no origin is known good
    if origin in allowed:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSE_HEADERS)

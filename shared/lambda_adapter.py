"""Running the functions on AWS Lambda, unchanged.

Each ``functions/<name>/main.py`` stays a functions-framework function: it runs
under ``functions-framework`` locally and on Google Cloud Functions as it is. On
Lambda, ``http_handler(entry_point)`` serves it behind a function URL: apig-wsgi turns
the function-URL event (payload format 2.0) into a WSGI request for a one-route Flask
app that calls the entry point, and the response back into what Lambda returns.
``scheduled_handler(job)`` runs a job (reconcile, retention) on an EventBridge
schedule, which invokes Lambda directly rather than over HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from shared import logs, runtime

if TYPE_CHECKING:
    from flask import Request, Response

    from shared.runtime import Services

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]
# Every method reaches the entry point, whose @endpoint answers 405 with its own
# Allow header and error body, as it does under functions-framework.
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def http_handler(entry_point: Callable[[Request], Response]) -> LambdaHandler:
    """A Lambda handler for function-URL events that calls this entry point."""
    from apig_wsgi import make_lambda_handler
    from flask import Flask, request

    app = Flask(entry_point.__name__)

    def view(path: str = "") -> Response:
        return entry_point(request)

    app.add_url_rule("/", "root", view, methods=_METHODS)
    app.add_url_rule("/<path:path>", "path", view, methods=_METHODS)
    handler: LambdaHandler = make_lambda_handler(_raw_uri(app), binary_support=True)
    return handler


def scheduled_handler(job: Callable[[Services], Any]) -> LambdaHandler:
    """A Lambda handler for a scheduled job: runs it and returns its report."""

    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        request_id = getattr(context, "aws_request_id", None) or "scheduled"
        with logs.bound_request_id(request_id):
            report = job(runtime.services())
        result: dict[str, Any] = json.loads(json.dumps(report, default=str))
        return result

    return handle


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _raw_uri(app: WsgiApp) -> WsgiApp:
    """Hand the app the path as the client sent it, percent-escapes included, as
    gunicorn does in RAW_URI: Twilio's signature covers those exact bytes, and
    apig-wsgi gives only the decoded path."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        event = environ.get("apig_wsgi.full_event") or {}
        if "rawPath" in event:
            query = event.get("rawQueryString") or ""
            environ["RAW_URI"] = event["rawPath"] + (f"?{query}" if query else "")
        return app(environ, start_response)

    return wrapped

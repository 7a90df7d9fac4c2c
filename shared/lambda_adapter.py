"""Running the functions on AWS Lambda, unchanged.

Each ``functions/<name>/main.py`` stays a functions-framework function: it runs
under ``functions-framework`` locally and on Google Cloud Functions as it is. On
Lambda, ``http_handler(entry_point)`` serves it behind a function URL: apig-wsgi turns
the function-URL event (payload format 2.0) into a WSGI request for the entry point,
and its response back into what Lambda returns.
``scheduled_handler(job, metrics)`` runs a job (reconcile, retention) on an EventBridge
schedule, which invokes Lambda directly (asynchronously) rather than over HTTP.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from shared import emf, logs, runtime
from shared.errors import ConfigurationError, ServiceError

if TYPE_CHECKING:
    from werkzeug.wrappers import Request, Response

    from shared.runtime import Services

log = logging.getLogger("sms.lambda")

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]
# The WSGI environ key under which a function URL's public origin reaches the entry point.
PUBLIC_ORIGIN = "sms.public_origin"


def http_handler(entry_point: Callable[[Request], Response]) -> LambdaHandler:
    """A Lambda handler for function-URL events that calls this entry point.

    The entry point gets a werkzeug Request, the base of the Flask request that
    functions-framework hands it: the same interface, without importing Flask (a
    third of a cold start).
    """
    from apig_wsgi import make_lambda_handler
    from werkzeug.wrappers import Request

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        event = environ.get("apig_wsgi.full_event") or {}
        if domain := event.get("requestContext", {}).get("domainName"):
            # The function URL's own host, by which AWS routed the request to us: unlike
            # the Host header, no client chooses it.
            environ[PUBLIC_ORIGIN] = f"https://{domain}"
        if "rawPath" in event:
            # The path as the client sent it, percent-escapes included, as gunicorn
            # gives it in RAW_URI: Twilio's signature covers those exact bytes, and
            # apig-wsgi passes only the decoded path.
            query = event.get("rawQueryString") or ""
            environ["RAW_URI"] = event["rawPath"] + (f"?{query}" if query else "")
        response = entry_point(Request(environ))
        return response(environ, start_response)

    handler: LambdaHandler = make_lambda_handler(app, binary_support=True)
    return handler


class Report(Protocol):
    """What a scheduled job returns: its counts, and whether it did all it had to."""

    @property
    def complete(self) -> bool: ...

    def as_json(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=Report)


def scheduled_handler(
    job: Callable[[Services], R], metrics: Callable[[R], Mapping[str, int]]
) -> LambdaHandler:
    """A Lambda handler for a scheduled job: runs it and returns its report.

    A failed run fails the invocation, so Lambda's Errors metric, the alarms and the
    on-failure destination see it, but with the error's code only: Lambda prints an
    uncaught exception's message and traceback to the logs, and those could quote data.
    So does a run whose report says it is not complete, once the report is logged and
    its metrics written: it returned, but left work the schedule exists to get done.
    """
    name = job.__name__.strip("_")

    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        request_id = getattr(context, "aws_request_id", None) or "scheduled"
        with logs.bound_request_id(request_id):
            try:
                report = job(runtime.services())
            except ServiceError as exc:
                log.error("scheduled run failed: %s", exc.message, extra={"code": exc.code})
                raise ScheduledRunError(exc.code) from None
            except ConfigurationError as exc:
                # As the HTTP boundary tells it: a missing key or refused credentials, the
                # fix an operator's, not a bug's.
                log.error("not configured: %s", exc, extra={"code": "not_configured"})
                raise ScheduledRunError("not_configured") from None
            except Exception:
                log.exception("scheduled run failed")
                raise ScheduledRunError("internal") from None
            result: dict[str, Any] = json.loads(json.dumps(report.as_json(), default=str))
            emf.emit(emf.function_name(name), metrics(report))
            if not report.complete:
                log.error("scheduled run incomplete", extra={"code": "incomplete", **result})
                raise ScheduledRunError("incomplete")
        return result

    return handle


class ScheduledRunError(Exception):
    """What Lambda records for a failed scheduled run: the error code, nothing else."""

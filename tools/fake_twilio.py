"""A local stand-in for Twilio's Messages API (GET one message), for reconcile tests."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from werkzeug.wrappers import Request, Response

from tools.loopback import LoopbackServer

_MESSAGE_PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Messages/(\w+)\.json$")


def status_callback(account_sid: str, sid: str, status: str, **extra: str) -> dict[str, str]:
    """The form parameters Twilio posts to a StatusCallback for an outbound SMS."""
    return {
        "AccountSid": account_sid,
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "To": "+33612345678",
        "From": "+33700000000",
        "ApiVersion": "2010-04-01",
    } | extra


class FakeTwilio(LoopbackServer):
    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = tokens  # AccountSid -> auth token
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.rate_limit_after: int | None = None  # 429 once this many requests were served
        self.requests = 0
        super().__init__(self._wsgi)

    def add(self, account_sid: str, sid: str, **fields: Any) -> None:
        self.messages[(account_sid, sid)] = {
            "sid": sid,
            "account_sid": account_sid,
            "status": "sent",
            "error_code": None,
            "error_message": None,
            "price": None,
            "price_unit": "EUR",
            "date_created": "Tue, 24 Nov 2026 10:00:00 +0000",
            "date_sent": "Tue, 24 Nov 2026 10:00:01 +0000",
            "date_updated": "Tue, 24 Nov 2026 10:00:05 +0000",
            "direction": "outbound-api",
            "num_segments": "1",
        } | fields

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self._handle(Request(environ))(environ, start_response)

    def _handle(self, request: Request) -> Response:
        match = _MESSAGE_PATH.match(request.path)
        if request.method != "GET" or not match:
            return _error(404, 20404, "The requested resource was not found")
        account, sid = match.groups()
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        user, _, password = base64.b64decode(credentials or "Og==").decode().partition(":")
        if scheme != "Basic" or self.tokens.get(user) != password or user != account:
            return _error(401, 20003, "Authenticate")
        self.requests += 1
        if self.rate_limit_after is not None and self.requests > self.rate_limit_after:
            return _error(429, 20429, "Too Many Requests")
        message = self.messages.get((account, sid))
        if message is None:
            return _error(404, 20404, f"The requested resource /Messages/{sid}.json was not found")
        return Response(json.dumps(message), 200, mimetype="application/json")


def _error(status: int, code: int, message: str) -> Response:
    body = {"code": code, "message": message, "more_info": "", "status": status}
    return Response(json.dumps(body), status, mimetype="application/json")

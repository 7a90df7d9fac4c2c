"""A local stand-in for Twilio's Messages API, for reconcile tests, benchmarks and
`make dev`: fetch one message, and list an account's messages of a day, in pages.

    GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json
    GET /2010-04-01/Accounts/{AccountSid}/Messages.json?DateSent=YYYY-MM-DD&PageSize=N
        [&Page=N&PageToken=PA...]

The list answers as Twilio does: newest first (by date_sent), at most 1,000 a page
(50 when PageSize is not given), with Twilio's paging fields; next_page_uri carries
Page and a PageToken (the last SID of the page), and the next page starts after that
SID. DateSent takes a date only (a time in it is refused: this stand-in's choice, so a
client that sends one is caught). Requests are counted per endpoint (`counts`: "fetch"
and "list") and in all (`requests`); every list request's query is kept (`queries`).
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import Counter
from datetime import UTC, date, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

from werkzeug.wrappers import Request, Response

from tools.loopback import LoopbackServer

_ACCOUNT = r"/2010-04-01/Accounts/(AC[0-9a-f]{32})"
_MESSAGE_PATH = re.compile(rf"^{_ACCOUNT}/Messages/(\w+)\.json$")
_LIST_PATH = re.compile(rf"^{_ACCOUNT}/Messages\.json$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50


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


def rfc2822(when: datetime) -> str:
    """A time as Twilio's API writes it: "Tue, 24 Nov 2026 10:00:01 +0000"."""
    return format_datetime(when.astimezone(UTC)).replace("-0000", "+0000")


class FakeTwilio(LoopbackServer):
    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = tokens  # AccountSid -> auth token
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.rate_limit_after: int | None = None  # 429 once this many requests were served
        self.requests = 0
        self.counts: Counter[str] = Counter()  # "fetch", "list"
        self.queries: list[dict[str, str]] = []  # each list request's query parameters
        self._lock = threading.Lock()
        # (account, day) -> its SIDs, newest first; built on demand, dropped by add().
        self._days: dict[tuple[str, date], list[str]] | None = None
        super().__init__(self._wsgi)

    def add(self, account_sid: str, sid: str, **fields: Any) -> None:
        """A message as the API answers it. Without a date_sent, it is sent when it was
        last updated (date_updated) when that is given: moments apart in Twilio."""
        if "date_sent" not in fields and "date_updated" in fields:
            fields["date_sent"] = fields["date_updated"]
        with self._lock:
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
                "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
            } | fields
            self._days = None

    def reset_counts(self) -> None:
        with self._lock:
            self.requests = 0
            self.counts.clear()
            self.queries.clear()

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self._handle(Request(environ))(environ, start_response)

    def _handle(self, request: Request) -> Response:
        one = _MESSAGE_PATH.match(request.path)
        listing = _LIST_PATH.match(request.path)
        if request.method != "GET" or not (one or listing):
            return _error(404, 20404, "The requested resource was not found")
        account = (one or listing).group(1)  # type: ignore[union-attr]
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        user, _, password = base64.b64decode(credentials or "Og==").decode().partition(":")
        if scheme != "Basic" or self.tokens.get(user) != password or user != account:
            return _error(401, 20003, "Authenticate")
        with self._lock:
            self.requests += 1
            self.counts["fetch" if one else "list"] += 1
            if listing:
                self.queries.append(dict(request.args.items()))
            limited = self.rate_limit_after is not None and self.requests > self.rate_limit_after
        if limited:
            return _error(429, 20429, "Too Many Requests")
        if one:
            sid = one.group(2)
            message = self.messages.get((account, sid))
            if message is None:
                text = f"The requested resource /Messages/{sid}.json was not found"
                return _error(404, 20404, text)
            return Response(json.dumps(message), 200, mimetype="application/json")
        return self._list(request, account)

    def _list(self, request: Request, account: str) -> Response:
        args = request.args
        day_text = args.get("DateSent", "")
        if not _DATE.match(day_text):
            return _error(400, 20001, "DateSent must be a date, YYYY-MM-DD")
        try:
            day = date.fromisoformat(day_text)
            size = min(int(args.get("PageSize", DEFAULT_PAGE_SIZE)), MAX_PAGE_SIZE)
            number = int(args.get("Page", 0))
        except ValueError:
            return _error(400, 20001, "Invalid paging parameter")
        if size < 1 or number < 0:
            return _error(400, 20001, "Invalid paging parameter")
        sids = self._day(account, day)
        token = args.get("PageToken", "")
        if token.startswith("PA") and token[2:] in sids:
            start = sids.index(token[2:]) + 1
        else:
            start = number * size
        chunk = sids[start : start + size]
        path = f"/2010-04-01/Accounts/{account}/Messages.json"

        def uri(**paging: Any) -> str:
            return f"{path}?{urlencode({'DateSent': day_text, 'PageSize': size} | paging)}"

        with self._lock:
            messages = [self.messages[(account, sid)] for sid in chunk]
        more = start + size < len(sids)
        body = {
            "messages": messages,
            "end": start + len(chunk) - 1 if chunk else start,
            "first_page_uri": uri(Page=0),
            "next_page_uri": uri(Page=number + 1, PageToken="PA" + chunk[-1]) if more else None,
            "page": number,
            "page_size": size,
            "previous_page_uri": uri(Page=number - 1) if number else None,
            "start": start,
            "uri": uri(**{k: v for k, v in args.items() if k in ("Page", "PageToken")}),
        }
        return Response(json.dumps(body), 200, mimetype="application/json")

    def _day(self, account: str, day: date) -> list[str]:
        with self._lock:
            if self._days is None:
                days: dict[tuple[str, date], list[tuple[datetime, str]]] = {}
                for (owner, sid), message in self.messages.items():
                    if sent := message.get("date_sent"):
                        when = parsedate_to_datetime(sent).astimezone(UTC)
                        days.setdefault((owner, when.date()), []).append((when, sid))
                self._days = {
                    key: [sid for _, sid in sorted(found, reverse=True)]
                    for key, found in days.items()
                }
            return self._days.get((account, day), [])


def _error(status: int, code: int, message: str) -> Response:
    body = {"code": code, "message": message, "more_info": "", "status": status}
    return Response(json.dumps(body), status, mimetype="application/json")

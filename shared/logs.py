"""Structured JSON logs that carry the request id and never a phone number.

Code never logs phone numbers or message texts; the redacting filter is the
safety net for what slips through (a library's message, an exception's text).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# A run of 9 to 15 digits, optionally after "+", that is not part of a longer token
# (so UUID groups and SIDs stay readable).
_PHONE_LIKE = re.compile(r"(?<![\w-])\+?\d{9,15}(?![\w-])")


def redact(text: str) -> str:
    return _PHONE_LIKE.sub("[redacted]", text)


class JsonFormatter(logging.Formatter):
    _STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        entry.update(
            {
                k: redact(v) if isinstance(v, str) else v
                for k, v in record.__dict__.items()
                if k not in self._STANDARD and k[0] != "_"
            }
        )
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def _stamp_request_id(
    factory: Callable[..., logging.LogRecord],
) -> Callable[..., logging.LogRecord]:
    """Records carry the request id from the moment they are made, whoever formats them."""

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        if (rid := request_id.get()) is not None:
            record.request_id = rid
        return record

    make.stamps_request_id = True  # type: ignore[attr-defined]
    return make


if not getattr(logging.getLogRecordFactory(), "stamps_request_id", False):
    logging.setLogRecordFactory(_stamp_request_id(logging.getLogRecordFactory()))


def configure(level: str = "INFO") -> None:
    """Every record through the redacting JSON formatter, once.

    A host may have put its own handler on the root logger first (AWS Lambda's Python
    runtime does): that handler gets our formatter rather than a second handler beside
    it, which would write every record again, unredacted.
    """
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        if not isinstance(handler.formatter, JsonFormatter):
            handler.setFormatter(JsonFormatter())
    root.setLevel(level)
    # The twilio library logs every request it makes, headers included, at INFO.
    logging.getLogger("twilio.http_client").setLevel(max(logging.WARNING, root.level))
    pool = logging.getLogger("psycopg.pool")
    if _only_the_kind_of_errors not in pool.filters:
        pool.addFilter(_only_the_kind_of_errors)


def _only_the_kind_of_errors(record: logging.LogRecord) -> bool:
    """The pool logs each failed connection with libpq's message, which quotes a
    connection URL it cannot parse, password included: only the error's kind is kept
    (a refusal is told, without the URL, by the error our own code raises)."""
    if isinstance(record.args, tuple):
        record.args = tuple(
            type(arg).__name__ if isinstance(arg, BaseException) else arg for arg in record.args
        )
    return True


@contextmanager
def bound_request_id(value: str) -> Iterator[None]:
    token = request_id.set(value)
    try:
        yield
    finally:
        request_id.reset(token)

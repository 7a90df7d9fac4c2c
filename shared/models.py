"""What the wire models of two or more functions share."""

from __future__ import annotations

import re
from datetime import datetime

# A Twilio Message SID: what ingest_sms records and what twilio_status hears about.
TWILIO_MESSAGE_SID = r"(SM|MM)[0-9a-f]{32}"

# A number, or text that is one: pydantic would read it as Unix time (seconds, or
# milliseconds when large), so `"sent_at": 0` or `?end=0.5` would quietly mean 1970.
_NUMERIC = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")


def text_datetime(value: object) -> object:
    """Let only text (or a datetime) through to datetime parsing, never a number."""
    if value is None or isinstance(value, datetime):
        return value
    if not isinstance(value, str) or _NUMERIC.fullmatch(value):
        raise ValueError("must be an ISO 8601 date and time with an offset")
    return value

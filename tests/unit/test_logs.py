"""Logs: every record once, as redacted JSON, whoever set up the root logger first."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from shared import logs


@pytest.fixture
def lambda_like_root() -> Iterator[io.StringIO]:
    """A root logger as AWS Lambda's runtime leaves it: its own handler, plain text."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    root.handlers = [handler]
    yield stream
    root.handlers, root.level = saved[0], saved[1]


def test_a_hosts_handler_writes_redacted_json_and_only_once(
    lambda_like_root: io.StringIO,
) -> None:
    logs.configure("INFO")
    logs.configure("INFO")  # configuring again changes nothing
    logging.getLogger("sms.test").warning("could not reach +33612345678")
    lines = lambda_like_root.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["message"] == "could not reach [redacted]"
    assert "+33612345678" not in lambda_like_root.getvalue()

"""The OpenAPI contract (openapi.yaml) as the tests use it, and what the functions under
test really answered.

Every function the tests serve (tests/support/served.py, LocalFunction) goes
through ``record``: each response's (entry point, method, status) lands in ``ANSWERED``
for the whole test session. tests/functions/test_openapi.py compares that with the spec.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "openapi.yaml"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# (entry point, HTTP method, status): how often a served function gave that answer
# this session.
ANSWERED: Counter[tuple[str, str, int]] = Counter()
_answered_lock = threading.Lock()
# Tests left out of this session (-k, -m, --lf...): then not every status was provoked.
DESELECTED: list[str] = []


@cache
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    return loaded


def operations() -> dict[str, tuple[str, str, dict[str, Any]]]:
    """operationId -> (path, METHOD, operation object)."""
    found: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for path, item in spec()["paths"].items():
        for method in HTTP_METHODS:
            if operation := item.get(method):
                found[operation["operationId"]] = (path, method.upper(), operation)
    return found


def documented() -> set[tuple[str, str, int]]:
    """(operationId, METHOD, status) for every response the spec lists."""
    return {
        (operation_id, method, int(status))
        for operation_id, (_, method, operation) in operations().items()
        for status in operation["responses"]
    }


def record(entry_point: str, app: Callable[..., Iterable[bytes]]) -> Callable[..., Any]:
    """The WSGI app, noting the status of every answer it gives under entry_point's name."""

    def recorded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        def start(status: str, headers: Any, exc_info: Any = None) -> Any:
            with _answered_lock:
                ANSWERED[entry_point, environ["REQUEST_METHOD"], int(status.split()[0])] += 1
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return recorded

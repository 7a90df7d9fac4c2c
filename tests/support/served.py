"""Functions served over real HTTP, as functions-framework serves them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import functions_framework

from tests.support import openapi_contract
from tools.loopback import LoopbackServer

ROOT = Path(__file__).resolve().parents[2]


class LocalFunction(LoopbackServer):
    """One function's functions-framework app on a loopback port."""

    def __init__(self, name: str, target: str | None = None) -> None:
        source = ROOT / "functions" / name / "main.py"
        target = target or name
        app = functions_framework.create_app(target=target, source=str(source))
        # Every answer is noted, so that tests/functions/test_openapi.py can hold the spec to them.
        super().__init__(openapi_contract.record(target, app))

    @property
    def url(self) -> str:
        return super().url + "/"


def serve(name: str, target: str | None = None) -> Iterator[LocalFunction]:
    """For module fixtures: the function served for as long as the module runs."""
    with LocalFunction(name, target) as function:
        yield function

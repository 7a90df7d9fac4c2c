"""Functions under test are served over real HTTP, as functions-framework serves them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import functions_framework
import pytest

from shared.db import PostgresDatabase
from tests import openapi_contract
from tests.loopback import LoopbackServer

ROOT = Path(__file__).resolve().parents[2]


class LocalFunction(LoopbackServer):
    """One function's functions-framework app on a loopback port."""

    def __init__(self, name: str, target: str | None = None) -> None:
        source = ROOT / "functions" / name / "main.py"
        target = target or name
        app = functions_framework.create_app(target=target, source=str(source))
        # Every answer is noted, so that tests/test_openapi.py can hold the spec to them.
        super().__init__(openapi_contract.record(target, app))

    @property
    def url(self) -> str:
        return super().url + "/"


def serve(name: str, target: str | None = None) -> Iterator[LocalFunction]:
    """For module fixtures: the function served for as long as the module runs."""
    with LocalFunction(name, target) as function:
        yield function


@pytest.fixture(scope="module")
def shared_db(database_url: str) -> Iterator[PostgresDatabase]:
    """One pool for a module's functions, handed to them through runtime.Services."""
    db = PostgresDatabase(database_url, pool_size=8)
    yield db
    db.close()

"""ingest_sms served over real HTTP, into real Postgres."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared import runtime
from shared.db import PostgresDatabase, database
from shared.settings import Settings
from tests.support.ingest import (
    KEY,
    ROTATED_KEY,
)
from tests.support.served import serve


@pytest.fixture(scope="module")
def ingest_url() -> Iterator[str]:
    for function in serve("ingest_sms"):
        yield function.url


@pytest.fixture(autouse=True)
def services(database_url: str, shared_db: PostgresDatabase) -> Iterator[runtime.Services]:
    settings = Settings(database_url=database_url, ingest_api_keys=f"{KEY},{ROTATED_KEY}")  # type: ignore[arg-type]
    current = runtime.Services(settings, provided={database: shared_db})
    runtime.use(current)
    yield current
    runtime.use(None)

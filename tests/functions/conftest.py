"""The functions tier: each function over real HTTP, into real Postgres (and moto's S3)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.db import PostgresDatabase


@pytest.fixture(scope="module")
def shared_db(pooled_database_url: str) -> Iterator[PostgresDatabase]:
    """One pool for a module's functions, handed to them through runtime.Services: through
    PgBouncer in transaction mode, as production goes through Supabase's pooler."""
    db = PostgresDatabase(pooled_database_url, pool_size=8)
    yield db
    db.close()

"""The functions tier: each function over real HTTP, into real Postgres (and moto's S3)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from shared.db import PostgresDatabase
from tools.embedded import moto_s3_server

AWS_TEST_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "eu-west-3",
}


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's server, for every AWS service the functions use (S3, SQS), as make dev runs it."""
    for name, value in AWS_TEST_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    with moto_s3_server() as url:
        yield url


@pytest.fixture(scope="module")
def shared_db(pooled_database_url: str) -> Iterator[PostgresDatabase]:
    """One pool for a module's functions, handed to them through runtime.Services: through
    PgBouncer in transaction mode, as production goes through Supabase's pooler."""
    db = PostgresDatabase(pooled_database_url, pool_size=8)
    yield db
    db.close()

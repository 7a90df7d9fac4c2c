"""supabase/schema.sql is the schema the migrations build.

Both are applied to fresh databases on the test server, after what Supabase already has
(supabase/local), and their catalogs compared: the same tables, columns, constraints,
indexes, policies, triggers, views, functions with their bodies and settings, comments,
grants and status mappings. Catalogs, not text: the server may be another major version
than the pg_dump that wrote the file. When this fails, run `make schema`.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.support.catalog import describe
from tools import migrate
from tools.embedded import throwaway_database
from tools.schema import SCHEMA_FILE


@pytest.fixture
def migrated(server_url: str) -> Iterator[str]:
    with throwaway_database(server_url, prefix="sms_migrated") as url:
        migrate.apply(url, include_local=True, report=lambda _: None)
        yield url


@pytest.fixture
def from_schema_file(server_url: str, database_url: str) -> Iterator[str]:
    with throwaway_database(server_url, prefix="sms_schema_file") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            for path in sorted(migrate.LOCAL_DIR.glob("*.sql")):
                conn.execute(path.read_bytes())
            conn.execute(SCHEMA_FILE.read_bytes())
        yield url


def test_the_schema_file_builds_what_the_migrations_build(
    migrated: str, from_schema_file: str
) -> None:
    expected, found = describe(migrated), describe(from_schema_file)
    assert expected["functions"], "nothing read: wrong database"
    for kind in expected:
        missing = sorted(set(expected[kind]) - set(found[kind]))
        extra = sorted(set(found[kind]) - set(expected[kind]))
        assert (missing, extra) == ([], []), (
            f"supabase/schema.sql differs from the migrations in its {kind}: run `make schema`"
        )

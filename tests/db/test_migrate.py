"""The migration tool: name order, each file once, and a failing file leaves no trace."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tools import migrate
from tools.embedded import throwaway_database


@pytest.fixture
def empty_database(server_url: str) -> Iterator[str]:
    with throwaway_database(server_url, prefix="sms_migrate") as url:
        yield url


@pytest.fixture
def scratch_migrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of supabase/migrations the test may add files to."""
    directory = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, directory)
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", directory)
    monkeypatch.setattr(migrate, "ROOT", tmp_path)
    monkeypatch.setattr(
        migrate, "LOCAL_DIR", shutil.copytree(migrate.LOCAL_DIR, tmp_path / "local")
    )
    return directory


def test_files_apply_in_name_order_once(empty_database: str) -> None:
    applied = migrate.apply(empty_database, include_local=True, report=lambda _: None)
    local = sorted(p.name for p in migrate.LOCAL_DIR.glob("*.sql"))
    migrations = sorted(p.name for p in migrate.MIGRATIONS_DIR.glob("*.sql"))
    assert applied == local + migrations
    assert migrate.apply(empty_database, include_local=True, report=lambda _: None) == []
    with psycopg.connect(empty_database) as conn:
        versions = conn.execute(
            "SELECT version, name FROM supabase_migrations.schema_migrations ORDER BY version"
        ).fetchall()
    assert versions == [tuple(name.removesuffix(".sql").split("_", 1)) for name in migrations]


def test_the_seed_files_come_first_in_the_seed_order() -> None:
    names = sorted(p.name for p in migrate.MIGRATIONS_DIR.glob("*.sql"))
    assert names[0].endswith("_create_agent_sms_table.sql")
    assert names[1].endswith("_sms_rls_policies.sql")
    assert names[2].endswith("_sms_analytics.sql")


def test_a_failing_file_stops_the_run_names_itself_and_leaves_no_trace(
    empty_database: str, scratch_migrations: Path
) -> None:
    (scratch_migrations / "29990101000000_half_broken.sql").write_text(
        "CREATE TABLE public.half_applied (id int);\nSELECT * FROM no_such_table;\n"
    )
    (scratch_migrations / "29990101000001_after.sql").write_text(
        "CREATE TABLE public.later (id int);"
    )
    with pytest.raises(migrate.MigrationError) as caught:
        migrate.apply(empty_database, include_local=True, report=lambda _: None)
    message = str(caught.value)
    assert "29990101000000_half_broken.sql" in message
    assert 'relation "no_such_table" does not exist' in message
    with psycopg.connect(empty_database) as conn:
        tables = conn.execute(
            "SELECT to_regclass('public.half_applied'), to_regclass('public.later')"
        ).fetchone()
        recorded = conn.execute(
            "SELECT count(*) FROM supabase_migrations.schema_migrations WHERE version >= '2999'"
        ).fetchone()
        earlier = conn.execute("SELECT to_regclass('public.agent_sms')").fetchone()
    assert tables == (None, None)
    assert recorded == (0,)
    assert earlier == ("agent_sms",)
    # Once fixed, a re-run applies exactly what is left.
    (scratch_migrations / "29990101000000_half_broken.sql").write_text("SELECT 1;")
    assert migrate.apply(empty_database, include_local=True, report=lambda _: None) == [
        "29990101000000_half_broken.sql",
        "29990101000001_after.sql",
    ]


def test_a_badly_named_migration_is_refused(empty_database: str, scratch_migrations: Path) -> None:
    (scratch_migrations / "2025_add_things.sql").write_text("SELECT 1;")
    with pytest.raises(migrate.MigrationError, match=r"2025_add_things\.sql"):
        migrate.apply(empty_database, include_local=True, report=lambda _: None)


def test_the_cli_reports_the_failure_and_exits_non_zero(
    empty_database: str, scratch_migrations: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (scratch_migrations / "29990101000000_broken.sql").write_text("SELEC 1;")
    assert migrate.main(["--local", empty_database]) == 1
    assert "29990101000000_broken.sql failed and was not applied" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")
def test_psql_builds_a_working_database_from_empty(empty_database: str) -> None:
    files = sorted(migrate.LOCAL_DIR.glob("*.sql")) + sorted(migrate.MIGRATIONS_DIR.glob("*.sql"))
    for path in files:
        subprocess.run(
            ["psql", "-v", "ON_ERROR_STOP=1", "-q", "-d", empty_database, "-f", str(path)],
            check=True,
            capture_output=True,
        )
    with psycopg.connect(empty_database) as conn:
        policies = conn.execute(
            "SELECT count(*) FROM pg_policy WHERE polrelid = 'public.agent_sms'::regclass"
        ).fetchone()
    assert policies == (3,)


def test_the_demo_data_loads_and_reloads(empty_database: str) -> None:
    migrate.apply(empty_database, include_local=True, report=lambda _: None)
    migrate.load_seed(empty_database)
    migrate.load_seed(empty_database)
    with psycopg.connect(empty_database) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM clients), (SELECT count(*) FROM agent_sms),"
            " (SELECT count(DISTINCT status) FROM agent_sms)"
        ).fetchone()
    assert counts == (2, 42, 3)  # 30 recent SMS, 12 due for archiving

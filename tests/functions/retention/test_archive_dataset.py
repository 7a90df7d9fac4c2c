"""The archive as a dataset: DuckDB, reading the Parquet objects a real retention run
wrote with their Hive partitions (as Athena reads them through the Glue table), finds
for each archived month the figures get_sms_metrics gave while its SMS were in the
database; and get_sms_metrics gives them still after the run (README, "Querying the
archive")."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest

from functions.retention import archive
from functions.retention.context import Retention
from shared.db import PostgresDatabase
from tests.support.builders import Tenants, forget_every_sms, insert_sms, metrics
from tests.support.retention import ALICE, BOB, CAROL

pytestmark = pytest.mark.db

# What both sides give for a month, under get_sms_metrics' names.
FIGURES = ("total_sms", "delivered_sms", "failed_sms", "total_cost", "total_margin",
           "unique_recipients")  # fmt: skip
# README's DuckDB query ("Querying the archive"), over the folder the archive was
# downloaded to.
MONTHLY = """
    SELECT year, CAST(month AS INTEGER) AS month,
           count(*) AS total_sms,
           count(*) FILTER (WHERE status = 'delivered') AS delivered_sms,
           count(*) FILTER (WHERE status = 'failed') AS failed_sms,
           round(coalesce(sum(billed_cost), 0), 2) AS total_cost,
           round(coalesce(sum(voipia_margin), 0), 2) AS total_margin,
           count(DISTINCT phone_number) AS unique_recipients
    FROM read_parquet('{folder}/**/*.parquet', hive_partitioning = true)
    GROUP BY 1, 2
    ORDER BY 1, 2
"""

Month = tuple[int, int]


def months_ago(count: int) -> datetime:
    """The first instant (UTC) of the month `count` months before this one."""
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 - count
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


# Three whole UTC months, [first instant, first instant of the next): all over a year
# old (archived), none near the three years after which the archive expires.
PERIODS = [(months_ago(n), months_ago(n - 1)) for n in (16, 15, 14)]


def insert_month(
    conn: psycopg.Connection, tenants: Tenants, start: datetime, end: datetime, n: int
) -> int:
    """SMS over one month, its first and last instants included: every status, priced and
    unpriced, every message type, three deployments, numbers sent to more than once.
    Month n has n more SMS than the first, so no two months' figures are alike."""
    (a1, a2), b = tenants.deployments_a, tenants.deployment_b
    day = timedelta(days=1)
    rows: list[tuple[Any, ...]] = [
        (a1, start, ALICE, "delivered", "appointment_reminder", "0.0750", "0.0125"),
        (a2, start + 3 * day, BOB, "failed", "marketing", "0.0800", "0.0200"),
        (b, start + 10 * day, ALICE, "sent", "notification", "0.0450", "0.0100"),
        (b, start + 12 * day, CAROL, "delivered", "transactional", None, "0.0150"),
        (a1, start + 20 * day, BOB, "delivered", "marketing", "0.1234", "0.0321"),
        (a2, end - timedelta(microseconds=1), CAROL, "failed", "transactional", "0.0666", "0"),
    ] + [
        (b, start + (5 + k) * day, f"+3361000{n}{k:03d}", "delivered", "notification",
         "0.0512", "0.0088")
        for k in range(n)
    ]  # fmt: skip
    reported = {"delivered": "delivered_at", "failed": "failed_at"}
    for deployment, sent_at, phone, status, kind, cost, margin in rows:
        when = {reported[status]: sent_at + timedelta(seconds=5)} if status in reported else {}
        insert_sms(
            conn, deployment, sent_at=sent_at, phone_number=phone, status=status,
            provider_status="undelivered" if status == "failed" else status, message_type=kind,
            provider_cost=cost, voipia_margin=margin, **when,
        )  # fmt: skip
    return len(rows)


def of_metrics(db: PostgresDatabase) -> dict[Month, dict[str, Any]]:
    """get_sms_metrics' figures for each period, as the service role reads them."""
    found = {}
    for start, end in PERIODS:
        current = metrics(db, start, end)["current_period"]
        found[(start.year, start.month)] = {
            name: Decimal(str(current[name])) if name in ("total_cost", "total_margin")
            else current[name]
            for name in FIGURES
        }  # fmt: skip
    return found


@pytest.fixture(scope="module")
def db(database_url: str) -> Iterator[PostgresDatabase]:
    database = PostgresDatabase(database_url, pool_size=1)
    yield database
    database.close()


@dataclass(frozen=True)
class Archived:
    before: dict[Month, dict[str, Any]]
    """get_sms_metrics' figures before the run."""
    folder: Path
    """The archive bucket's objects under ARCHIVE_PREFIX, downloaded as `aws s3 sync` would."""


@pytest.fixture
def archived(
    retention: Retention, tenants: Tenants, clean: psycopg.Connection, db: PostgresDatabase,
    tmp_path: Path,
) -> Archived:  # fmt: skip
    forget_every_sms(clean)  # the tenants' own: these months' alone
    inserted = sum(
        insert_month(clean, tenants, start, end, n) for n, (start, end) in enumerate(PERIODS)
    )
    before = of_metrics(db)
    assert all(figures["total_sms"] > 0 for figures in before.values())

    report = archive.run(retention)

    assert (report.archived_rows, report.complete) == (inserted, True)
    assert report.archived_objects > len(PERIODS), "several objects a month (batches of 4)"
    assert clean.execute("SELECT count(*) FROM public.agent_sms").fetchone() == (0,)
    folder = tmp_path / "archive"
    s3, bucket = retention.bucket.client, retention.bucket.name
    prefix = retention.settings.archive_prefix
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            path = folder / entry["Key"].removeprefix(prefix)
            path.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, entry["Key"], str(path))
    return Archived(before, folder)


def test_duckdb_over_the_archive_gives_each_month_the_figures_of_get_sms_metrics(
    archived: Archived,
) -> None:
    with duckdb.connect() as duck:
        duck.execute("SET TimeZone = 'UTC'")
        rows = duck.execute(MONTHLY.format(folder=archived.folder)).fetchall()
        # Each object lies in the folder of its SMS's month: Athena's partitions are
        # the months get_sms_metrics is asked about.
        misplaced = duck.execute(
            f"SELECT count(*) FROM read_parquet('{archived.folder}/**/*.parquet',"
            " hive_partitioning = true)"
            " WHERE year(sent_at) <> year::INTEGER OR month(sent_at) <> month::INTEGER"
        ).fetchone()
    assert misplaced == (0,)
    found = {(int(year), int(month)): dict(zip(FIGURES, figures, strict=True))
             for year, month, *figures in rows}  # fmt: skip
    assert found == archived.before


def test_get_sms_metrics_of_an_archived_month_is_what_it_was_before_the_run(
    archived: Archived, db: PostgresDatabase
) -> None:
    """The dashboard's history does not change when its SMS move to the archive."""
    assert of_metrics(db) == archived.before

"""Retention under test: its settings, the people whose SMS it archives and erases, and
reading the whole state back independently of the code under test (every object
version in the bucket, every row in the database)."""

from __future__ import annotations

import hashlib
import hmac
import io
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from functions.retention.bucket import ArchiveBucket
from functions.retention.context import Retention, retention_context
from shared.errors import UnavailableError
from shared.runtime import Services
from shared.settings import Settings
from tests.support.builders import insert_sms

ALICE, BOB, CAROL = "+33612345001", "+33612345002", "+32470123456"

INDEX_SECRET = "archive-index-secret-for-tests-0123456789"
SCHEDULER_KEY = "s" * 40
PRIVACY_KEY = "p" * 40


def retention_for(settings: Settings) -> Retention:
    """Retention as a process builds it from these settings."""
    return Services(settings).get(retention_context)


def retention_settings(
    database_url: str, s3_endpoint: str, bucket_name: str, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "database_session_url": database_url,
        "archive_bucket": bucket_name,
        "s3_endpoint_url": s3_endpoint,
        "archive_index_secret": INDEX_SECRET,
        "archive_batch_size": 4,
    } | overrides
    return Settings(**values)


def sms_rows(
    conn: psycopg.Connection, ids: list[uuid.UUID] | None = None
) -> dict[str, dict[str, Any]]:
    cur = conn.execute(
        "SELECT * FROM public.agent_sms WHERE %s::uuid[] IS NULL OR id = ANY(%s::uuid[])",
        (ids, ids),
    )
    names = [column.name for column in cur.description or []]
    return {str(row[0]): dict(zip(names, row, strict=True)) for row in cur.fetchall()}


def phone_hash(number: str) -> bytes:
    return hmac.new(INDEX_SECRET.encode(), number.encode(), hashlib.sha256).digest()


def crash_on_call(
    monkeypatch: pytest.MonkeyPatch, bucket: ArchiveBucket, number: int, *, after_upload: bool
) -> None:
    """Make the bucket's n-th verified upload die, before or after the upload itself."""
    real = bucket.put_verified
    calls = iter(range(1, 1000))

    def put_verified(key: str, data: bytes, sha256: str) -> None:
        call = next(calls)
        if call == number and not after_upload:
            raise UnavailableError("S3 is down")
        real(key, data, sha256)
        if call == number:
            raise RuntimeError("the process died here")

    monkeypatch.setattr(bucket, "put_verified", put_verified)


def at(year: int, month: int, day: int, hour: int = 9) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def insert_contact_sms(
    conn: psycopg.Connection,
    deployment: uuid.UUID,
    sent_at: datetime,
    phone: str,
    extra: dict[str, Any],
) -> uuid.UUID:
    """One SMS whose text is its own, so that a scan can tell its traces from others'."""
    values = {"message_content": f"Texte {uuid.uuid4().hex[:8]} pour ce contact"} | extra
    return insert_sms(conn, deployment, sent_at=sent_at, phone_number=phone, **values)


def days_ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


@dataclass(frozen=True)
class ObjectVersion:
    key: str
    version_id: str
    latest: bool
    table: pa.Table | None
    """None for a delete marker."""


def object_versions(retention: Retention) -> list[ObjectVersion]:
    """Every version of every object in the archive bucket, delete markers included."""
    s3, bucket = retention.bucket.client, retention.bucket.name
    found = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for version in page.get("Versions", []):
            body = s3.get_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
            table = pq.read_table(io.BytesIO(body["Body"].read()))
            found.append(
                ObjectVersion(version["Key"], version["VersionId"], version["IsLatest"], table)
            )
        for marker in page.get("DeleteMarkers", []):
            found.append(
                ObjectVersion(marker["Key"], marker["VersionId"], marker["IsLatest"], None)
            )
    return found


def copies(conn: psycopg.Connection, retention: Retention) -> Counter[str]:
    """How many copies of each SMS id exist: rows in agent_sms plus rows in any object
    version. Every SMS in exactly one place means every count is 1."""
    counted: Counter[str] = Counter(
        str(row[0]) for row in conn.execute("SELECT id FROM public.agent_sms").fetchall()
    )
    for version in object_versions(retention):
        if version.table is not None:
            counted.update(str(sms_id) for sms_id in version.table["id"].to_pylist())
    return counted


def manifest(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    cur = conn.execute("SELECT * FROM private.sms_archive_objects ORDER BY object_key")
    names = [column.name for column in cur.description or []]
    return {row[0]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}


def traces(conn: psycopg.Connection, retention: Retention, needles: list[str]) -> list[str]:
    """Where any of these strings appears: every row of every table in every schema,
    read as text, and every row of every object version in the bucket."""
    found = []
    tables = conn.execute(
        "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables"
        " WHERE table_type = 'BASE TABLE'"
        "   AND table_schema NOT IN ('pg_catalog', 'information_schema')"
    ).fetchall()
    for (table,) in tables:
        for needle in needles:
            hits = conn.execute(
                f"SELECT count(*) FROM {table} AS t WHERE t::text LIKE %s",
                (f"%{needle}%",),
            ).fetchone()
            if hits and hits[0]:
                found.append(f"{table}: {hits[0]} rows")
    for version in object_versions(retention):
        if version.table is None:
            continue
        text = repr(version.table.to_pylist())
        found += [f"{version.key}@{version.version_id}" for n in needles if n in text]
    return found


def archived_rows(retention: Retention) -> dict[str, dict[str, Any]]:
    """Every row of every current object version, by SMS id."""
    rows: dict[str, dict[str, Any]] = {}
    for version in object_versions(retention):
        if version.latest and version.table is not None:
            rows |= {row["id"]: row for row in version.table.to_pylist()}
    return rows

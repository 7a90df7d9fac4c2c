"""Retention runs against the session's real Postgres and moto's S3 server, with
versioning on, as the deployed bucket has it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest

from functions.retention.context import Retention
from shared import runtime
from shared.settings import Settings
from tests.support.builders import Tenants
from tests.support.retention import (
    ALICE,
    BOB,
    CAROL,
    PRIVACY_KEY,
    SCHEDULER_KEY,
    at,
    days_ago,
    insert_contact_sms,
    retention_for,
    retention_settings,
)
from tools.embedded import create_versioned_bucket


@pytest.fixture(scope="session")
def s3_endpoint(moto_endpoint: str) -> str:
    return moto_endpoint


@pytest.fixture
def bucket_name(s3_endpoint: str) -> str:
    """A fresh, versioned bucket for each test."""
    name = f"archive-{uuid.uuid4().hex[:12]}"
    create_versioned_bucket(s3_endpoint, name)
    return name


@pytest.fixture
def retention(
    tenants: Tenants, retention_database_url: str, s3_endpoint: str, bucket_name: str
) -> Retention:
    """Retention over a clean database holding the two tenants, and an empty bucket."""
    return retention_for(retention_settings(retention_database_url, s3_endpoint, bucket_name))


@pytest.fixture
def old_sms(tenants: Tenants, clean: psycopg.Connection) -> list[uuid.UUID]:
    """Nine SMS due for archiving, in three months, and one that is not yet due."""
    a, b = tenants.deployments_a[0], tenants.deployment_b
    rows: list[tuple[uuid.UUID, datetime, str, dict[str, Any]]] = [
        (a, at(2025, 1, 5), ALICE, {"first_name": "Alice", "metadata": {"campaign": "jan"}}),
        (a, at(2025, 1, 6), ALICE, {"provider_status": "delivered", "status": "delivered",
                                    "delivered_at": at(2025, 1, 6, 10)}),
        (b, at(2025, 1, 7), BOB, {"last_name": "Martin", "voipia_margin": "0.0125"}),
        (a, at(2025, 1, 8), ALICE, {"status": "failed", "provider_status": "undelivered",
                                    "failed_at": at(2025, 1, 8, 10),
                                    "failure_reason": "Unknown destination handset"}),
        (b, at(2025, 1, 31, 23), BOB, {"workflow_id": "wf-1", "workflow_execution_id": "ex-9"}),
        (a, at(2025, 3, 10), CAROL, {"message_type": "marketing", "currency": "USD"}),
        (b, at(2025, 3, 11), BOB, {"provider_cost": None}),
        (a, at(2025, 3, 12), CAROL, {}),
        (b, days_ago(370), ALICE, {"message_content": "Rappel : rendez-vous demain 10h"}),
    ]  # fmt: skip
    ids = [
        insert_contact_sms(clean, deployment, sent_at, phone, extra)
        for deployment, sent_at, phone, extra in rows
    ]
    insert_contact_sms(clean, a, days_ago(359), ALICE, {})  # not due yet
    return ids


@pytest.fixture
def served_settings(
    tenants: Tenants, retention_database_url: str, s3_endpoint: str, bucket_name: str
) -> Iterator[Settings]:
    """What the served retention and erase functions run with: the test's database and
    bucket, and both kinds of key."""
    settings = retention_settings(
        retention_database_url,
        s3_endpoint,
        bucket_name,
        retention_api_keys=SCHEDULER_KEY,
        privacy_api_keys=PRIVACY_KEY,
    )
    runtime.use(runtime.Services(settings))
    yield settings
    runtime.use(None)

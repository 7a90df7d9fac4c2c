"""Archiving against real Postgres and moto's S3: the round trip, idempotence, expiry,
and crashes at every step leaving each SMS in exactly one place after a rerun."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from functions.retention import archive
from functions.retention.context import Retention
from shared.errors import ConflictError, ServiceError, UnavailableError
from tests.support.builders import Tenants
from tests.support.retention import (
    ALICE,
    BOB,
    copies,
    crash_on_call,
    days_ago,
    insert_contact_sms,
    manifest,
    object_versions,
    phone_hash,
    retention_for,
    retention_settings,
    sms_rows,
)

pytestmark = pytest.mark.db


def archived_value(value: Any) -> Any:
    """A database value as the archive must hold it."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def test_archive_round_trip_keeps_every_column_and_indexes_every_number(
    retention: Retention, old_sms: list[uuid.UUID], clean: psycopg.Connection
) -> None:
    sid = clean.execute(
        "SELECT provider_message_sid FROM agent_sms WHERE id = %s", (old_sms[1],)
    ).fetchone()
    assert sid is not None
    clean.execute(
        "INSERT INTO public.agent_sms_events (provider_message_sid, twilio_status, error_code,"
        " reported_at, received_at, applied_at) VALUES"
        " (%(sid)s, 'sent', NULL, NULL, '2025-01-06T09:00:05Z', now()),"
        " (%(sid)s, 'delivered', NULL, '2025-01-06T10:00:00Z', '2025-01-06T10:00:02Z', now())",
        {"sid": sid[0]},
    )
    originals = sms_rows(clean, old_sms)
    hot_before = set(sms_rows(clean)) - set(originals)

    report = archive.run(retention)

    assert report.as_json() == {
        "dry_run": False,
        "sealed_days": 12,  # the 11 days with SMS, then the empty days up to 8 days ago
        "archived_objects": 4,  # January in two batches of at most 4, March, November
        "archived_rows": 9,
        "expired_objects": 0,
        "expired_rows": 0,
        "unfinished_objects_removed": 0,
        "recipients_expired": 0,
        "pending_events_purged": 0,
        "complete": True,
    }
    assert set(sms_rows(clean)) == hot_before
    assert clean.execute(
        "SELECT count(*) FROM agent_sms_events WHERE provider_message_sid = %s", sid
    ).fetchone() == (0,)

    objects = manifest(clean)
    versions = object_versions(retention)
    assert sorted(v.key for v in versions) == sorted(objects), "one version per object"
    seen: dict[str, dict[str, Any]] = {}
    for version in versions:
        assert version.table is not None
        entry = objects[version.key]
        data = retention.bucket.read(version.key)
        assert data is not None
        assert entry["state"] == "archived"
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["size_bytes"] == len(data)
        assert entry["row_count"] == version.table.num_rows
        sent: list[datetime] = version.table["sent_at"].to_pylist()  # type: ignore[assignment]
        assert (entry["min_sent_at"], entry["max_sent_at"]) == (min(sent), max(sent))
        first = min(sent)
        assert re.fullmatch(
            rf"agent_sms/year={first:%Y}/month={first:%m}/{first:%Y%m%dT%H%M%S%f}Z-[0-9a-f]{{20}}\.parquet",
            version.key,
        )
        numbers: dict[str, int] = {}
        for row in version.table.to_pylist():
            seen[row["id"]] = row
            numbers[row["phone_number"]] = numbers.get(row["phone_number"], 0) + 1
        indexed = clean.execute(
            "SELECT phone_hash, row_count FROM private.sms_archive_phone_index"
            " WHERE object_key = %s",
            (version.key,),
        ).fetchall()
        assert sorted(indexed) == sorted((phone_hash(n), c) for n, c in numbers.items())

    assert set(seen) == set(originals)
    for sms_id, original in originals.items():
        row = seen[sms_id]
        for column, value in original.items():
            stored = row[column]
            if column == "metadata":
                stored = json.dumps(json.loads(stored), sort_keys=True)
            assert stored == archived_value(value), column
    events = json.loads(seen[str(old_sms[1])]["status_events"])
    assert [(e["twilio_status"], e["source"]) for e in events] == [
        ("sent", "callback"),
        ("delivered", "callback"),
    ]
    assert json.loads(seen[str(old_sms[0])]["status_events"]) == []
    assert seen[str(old_sms[2])]["billed_cost"] == Decimal("0.0875")


def test_a_second_run_finds_nothing_to_do(retention: Retention, old_sms: list[uuid.UUID]) -> None:
    archive.run(retention)
    again = archive.run(retention)
    assert (again.archived_objects, again.archived_rows, again.complete) == (0, 0, True)


def test_dry_run_forecasts_the_run_and_changes_nothing(
    retention: Retention, old_sms: list[uuid.UUID], clean: psycopg.Connection
) -> None:
    before = sms_rows(clean)
    forecast = archive.run(retention, dry_run=True)
    assert sms_rows(clean) == before
    assert object_versions(retention) == []
    report = archive.run(retention)
    assert (forecast.archived_objects, forecast.archived_rows) == (4, 9)
    assert (report.archived_objects, report.archived_rows) == (4, 9)


def test_progress_is_reported_per_object(retention: Retention, old_sms: list[uuid.UUID]) -> None:
    seen: list[tuple[int, int]] = []
    archive.run(retention, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 9), (4, 9), (5, 9), (8, 9), (9, 9)]


def test_runs_never_overlap(
    retention: Retention, old_sms: list[uuid.UUID], database_url: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as other_run:
        other_run.execute("SELECT pg_advisory_lock(private.retention_run_lock_key())")
        with pytest.raises(ConflictError, match="Another retention run is in progress"):
            archive.run(retention)
    assert object_versions(retention) == []
    assert archive.run(retention).archived_rows == 9


def test_a_run_out_of_time_stops_between_objects_and_the_next_resumes(
    retention: Retention, old_sms: list[uuid.UUID], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter(range(0, 10_000, 400))  # each look at the clock: 400 s later
    monkeypatch.setattr(archive, "clock", lambda: next(clock))
    first = archive.run(retention)
    assert (first.archived_objects, first.complete) == (1, False)
    monkeypatch.undo()
    second = archive.run(retention)
    assert (second.archived_rows, second.complete) == (5, True)


def test_objects_past_the_horizon_expire_with_every_version_and_their_index(
    tenants: Tenants,
    clean: psycopg.Connection,
    retention_database_url: str,
    s3_endpoint: str,
    bucket_name: str,
) -> None:
    retention = retention_for(
        retention_settings(
            retention_database_url, s3_endpoint, bucket_name, archive_expire_after_days=1095
        )
    )
    insert_contact_sms(clean, tenants.deployment_b, days_ago(1200), ALICE, {})
    insert_contact_sms(clean, tenants.deployment_b, days_ago(1199), BOB, {})
    kept = insert_contact_sms(clean, tenants.deployment_b, days_ago(500), ALICE, {})

    report = archive.run(retention)

    assert (report.archived_objects, report.expired_objects, report.expired_rows) == (2, 1, 2)
    versions = object_versions(retention)
    assert [v.table["id"].to_pylist() for v in versions if v.table] == [[str(kept)]]
    assert list(manifest(clean)) == [versions[0].key]
    assert clean.execute("SELECT count(*) FROM private.sms_archive_phone_index").fetchone() == (1,)


def test_pending_status_events_are_purged_after_their_age(
    retention: Retention, clean: psycopg.Connection
) -> None:
    clean.execute(
        "INSERT INTO public.agent_sms_events"
        " (provider_message_sid, twilio_status, received_at, applied_at, pending_phone_number)"
        " VALUES ('SM' || repeat('a', 32), 'delivered', now() - interval '31 days', NULL, %s),"
        "        ('SM' || repeat('b', 32), 'delivered', now() - interval '29 days', NULL, %s),"
        "        ('SM' || repeat('c', 32), 'delivered', now() - interval '90 days', now(), NULL)",
        (ALICE, BOB),
    )
    assert archive.run(retention).pending_events_purged == 1
    left = clean.execute("SELECT provider_message_sid FROM agent_sms_events ORDER BY 1").fetchall()
    assert left == [("SM" + "b" * 32,), ("SM" + "c" * 32,)]


# --- crashes: each leaves every SMS somewhere, and a rerun leaves it in one place ------


def object_versions_by_key(retention: Retention) -> dict[str, Any]:
    return {v.key: v.table for v in object_versions(retention)}


def assert_each_in_exactly_one_place(
    conn: psycopg.Connection, retention: Retention, ids: list[uuid.UUID]
) -> None:
    counted = copies(conn, retention)
    assert {str(i): counted[str(i)] for i in ids} == {str(i): 1 for i in ids}
    assert all(entry["state"] == "archived" for entry in manifest(conn).values())


def test_crash_after_upload_before_delete(
    retention: Retention,
    old_sms: list[uuid.UUID],
    clean: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    crash_on_call(monkeypatch, retention.bucket, 2, after_upload=True)
    with pytest.raises(RuntimeError):
        archive.run(retention)
    counted = copies(clean, retention)
    assert sorted(counted[str(i)] for i in old_sms) == [1] * 8 + [2], "one batch in both places"

    monkeypatch.undo()
    report = archive.run(retention)
    assert report.unfinished_objects_removed == 1
    assert_each_in_exactly_one_place(clean, retention, old_sms)


@pytest.fixture
def commit_fails_once(admin_conn: psycopg.Connection) -> Iterator[None]:
    """The second archive commit fails at COMMIT, after its rows were deleted."""
    admin_conn.execute(
        """
        CREATE SEQUENCE public.test_commits;
        CREATE FUNCTION public.test_fail_second_commit() RETURNS trigger LANGUAGE plpgsql
        SECURITY DEFINER AS $$
        BEGIN
            IF nextval('public.test_commits') = 2 THEN
                RAISE EXCEPTION 'the database went away at commit';
            END IF;
            RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER test_fail_second_commit
            AFTER UPDATE ON private.sms_archive_objects
            DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION public.test_fail_second_commit();
        """
    )
    try:
        yield
    finally:
        admin_conn.execute(
            "DROP TRIGGER test_fail_second_commit ON private.sms_archive_objects;"
            " DROP FUNCTION public.test_fail_second_commit(); DROP SEQUENCE public.test_commits"
        )


def test_crash_after_delete_before_commit(
    retention: Retention,
    old_sms: list[uuid.UUID],
    clean: psycopg.Connection,
    commit_fails_once: None,
) -> None:
    with pytest.raises(ServiceError):
        archive.run(retention)
    counted = copies(clean, retention)
    assert sorted(counted[str(i)] for i in old_sms) == [1] * 8 + [2]

    archive.run(retention)
    assert_each_in_exactly_one_place(clean, retention, old_sms)


def test_s3_failing_inside_a_batch(
    retention: Retention,
    old_sms: list[uuid.UUID],
    clean: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    crash_on_call(monkeypatch, retention.bucket, 3, after_upload=False)
    with pytest.raises(UnavailableError):
        archive.run(retention)
    assert sorted(copies(clean, retention)[str(i)] for i in old_sms) == [1] * 9

    monkeypatch.undo()
    archive.run(retention)
    assert_each_in_exactly_one_place(clean, retention, old_sms)


def test_an_unreachable_bucket_deletes_nothing(
    tenants: Tenants,
    old_sms: list[uuid.UUID],
    clean: psycopg.Connection,
    retention_database_url: str,
    bucket_name: str,
) -> None:
    nowhere = retention_settings(retention_database_url, "http://127.0.0.1:9", bucket_name)
    before = sms_rows(clean)
    with pytest.raises(UnavailableError, match="archive bucket"):
        archive.run(retention_for(nowhere))
    assert sms_rows(clean) == before


def test_an_archived_sms_put_back_never_overwrites_its_archived_object(
    retention: Retention, old_sms: list[uuid.UUID], clean: psycopg.Connection
) -> None:
    january = old_sms[0]
    originals = sms_rows(clean, [january, old_sms[-1]])
    archive.run(retention)
    before = object_versions_by_key(retention)

    def put_back(sms_id: uuid.UUID) -> None:
        row = originals[str(sms_id)]
        clean.execute(
            "INSERT INTO agent_sms (id, deployment_id, phone_number, message_content, sent_at)"
            " VALUES (%s, %s, %s, %s, %s)",
            (sms_id, row["deployment_id"], row["phone_number"], "restored", row["sent_at"]),
        )

    put_back(january)  # first of a batch of four: a batch of one now, another key
    assert archive.run(retention).archived_objects == 1
    after = object_versions_by_key(retention)
    assert {k: t for k, t in after.items() if k in before} == before
    assert len(after) == len(before) + 1

    put_back(old_sms[-1])  # alone in its object: the very same batch again
    with pytest.raises(ConflictError, match="already holds exactly these SMS"):
        archive.run(retention)
    assert object_versions_by_key(retention) == after


def test_the_time_budget_also_bounds_expiry_and_the_next_run_resumes(
    tenants: Tenants,
    clean: psycopg.Connection,
    retention_database_url: str,
    s3_endpoint: str,
    bucket_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    retention = retention_for(retention_settings(retention_database_url, s3_endpoint, bucket_name))
    for days in (1300, 1200):  # two months, two objects, both past the horizon
        insert_contact_sms(clean, tenants.deployment_b, days_ago(days), ALICE, {})
    expired: list[str] = []
    real_delete = retention.bucket.delete_versions

    def delete_versions(key: str, *, keep_current: bool) -> int:
        expired.append(key)
        return real_delete(key, keep_current=keep_current)

    monkeypatch.setattr(retention.bucket, "delete_versions", delete_versions)
    # Time stands still until the first object has expired, then the budget is gone.
    monkeypatch.setattr(archive, "clock", lambda: 10_000 if expired else 0)
    first = archive.run(retention)
    assert (first.archived_objects, first.expired_objects, first.complete) == (2, 1, False)

    monkeypatch.undo()
    second = archive.run(retention)
    assert (second.expired_objects, second.complete) == (1, True)
    assert object_versions(retention) == []

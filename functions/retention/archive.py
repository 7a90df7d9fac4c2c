"""The scheduled retention run: seal the KPIs of the days no status can change any more,
archive old SMS to S3, expire the archive, purge stale pending status events, in that
order (a row past the horizon is archived, then expired with its object: one path out
of the database for every row).

Archiving never loses a row. Each batch is one month's oldest rows, locked; they are
written as one Parquet object, read back and checked, and only then deleted, in the
transaction that records the object in the manifest. A crash at any point leaves
every row in the database, in the archive, or in both; the next run deletes any
object a crash left uncommitted (its rows are still in the database) and goes on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from functions.retention import archive_format
from functions.retention.context import Progress, Retention, Sessions, no_progress
from shared.errors import ConflictError

log = logging.getLogger("sms.retention")

# What the time budget is measured on.
clock = time.monotonic


@dataclass
class RetentionReport:
    dry_run: bool
    sealed_days: int = 0
    """Days whose KPIs were folded into the aggregates (a stretch without SMS is one)."""
    archived_objects: int = 0
    archived_rows: int = 0
    expired_objects: int = 0
    expired_rows: int = 0
    unfinished_objects_removed: int = 0
    recipients_expired: int = 0
    """Recipients the KPIs forgot with the archive's expiry (no SMS left in any hour)."""
    pending_events_purged: int = 0
    complete: bool = True
    """False when the time budget ended the run early (archive or expiry); the next
    run resumes."""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def run(
    retention: Retention, *, dry_run: bool = False, progress: Progress = no_progress
) -> RetentionReport:
    settings = retention.settings
    now = datetime.now(UTC)
    # A day is sealed once no report can change it: past reconcile's window, and a day
    # for callbacks that come late.
    seal_before = now - timedelta(days=settings.reconcile_within_days + 1)
    archive_before = now - timedelta(days=settings.archive_after_days)
    expire_before = now - timedelta(days=settings.archive_expire_after_days)
    pending_before = now - timedelta(days=settings.pending_events_max_age_days)
    report = RetentionReport(dry_run=dry_run)
    with retention.sessions() as sessions:
        forecast = _forecast(
            retention, sessions, RetentionReport(dry_run=True), archive_before, expire_before,
            pending_before,
        )  # fmt: skip
        if dry_run:
            return forecast
        sessions.hold_run_lock()
        report.unfinished_objects_removed = sessions.remove_unfinished_objects(retention.bucket)
        deadline = clock() + settings.retention_time_budget_seconds
        _seal(sessions, report, seal_before)
        _archive(retention, sessions, report, archive_before, forecast.archived_rows, progress,
                 deadline)  # fmt: skip
        _expire(retention, sessions, report, expire_before, deadline)
        report.recipients_expired = _expire_recipients(sessions, expire_before)
        report.pending_events_purged = _purge_pending_events(sessions, pending_before)
    log.info("retention run finished", extra=report.as_json())
    return report


def _seal(sessions: Sessions, report: RetentionReport, before: datetime) -> None:
    """Fold the KPIs of every day before `before` into the aggregates, a day per
    transaction (writes to agent_sms wait for each). Outside the time budget: a daily
    run seals one day, in well under a second at 100 times the seed's volume."""
    import psycopg

    while True:
        try:
            row = sessions.control.execute(
                "SELECT private.seal_next_sms_day(%s)", (before,)
            ).fetchone()
        except psycopg.errors.LockNotAvailable:
            # Something holds agent_sms (a VACUUM): the next run seals. Archiving an
            # unsealed day is still exact (its SMS are folded as they are deleted).
            log.warning("sealing left to the next run: agent_sms is locked")
            return
        if not row or row[0] is None:
            return
        report.sealed_days += 1


def _archive(
    retention: Retention,
    sessions: Sessions,
    report: RetentionReport,
    archive_before: datetime,
    due: int,
    progress: Progress,
    deadline: float,
) -> None:
    progress(0, due)
    while True:
        if clock() > deadline:
            report.complete = False
            return
        archived = _archive_one_object(retention, sessions, archive_before)
        if not archived:
            return
        report.archived_objects += 1
        report.archived_rows += archived
        progress(report.archived_rows, max(due, report.archived_rows))


def _archive_one_object(retention: Retention, sessions: Sessions, archive_before: datetime) -> int:
    """Archive the next batch due as one object; how many rows it held (0: none due)."""
    work = sessions.work
    with sessions.archive_write_lock():
        rows = work.execute(
            archive_format.SELECT_DUE, (archive_before, retention.settings.archive_batch_size)
        ).fetchall()
        if not rows:
            return 0
        events = work.execute(
            archive_format.SELECT_STATUS_EVENTS, (archive_format.sids_of(rows),)
        ).fetchall()
        batch = archive_format.batch_from_rows(rows, events)
        key = archive_format.object_key(retention.settings.archive_prefix, batch.table)
        # Committed before the upload, so that a crash after it leaves a trace to clean.
        recorded = sessions.control.execute(
            "SELECT private.begin_archive_object(%s)", (key,)
        ).fetchone()
        if not recorded or not recorded[0]:
            raise ConflictError(
                f"The archive already holds exactly these SMS ({key}): they were put back"
                " into agent_sms. Delete them from agent_sms, then run again."
            )
        encoded = archive_format.encode(batch.table)
        retention.bucket.put_verified(key, encoded.data, encoded.sha256)
        numbers = archive_format.numbers_in(batch.table)
        work.execute(
            "SELECT private.commit_archive_object(%s, %s::uuid[], %s, %s, %s, %s, %s)",
            (
                key,
                batch.table["id"].to_pylist(),
                batch.event_ids,
                encoded.sha256,
                len(encoded.data),
                [retention.phone_hash(number) for number in numbers],
                list(numbers.values()),
            ),
        )
    return len(rows)


def _expire(
    retention: Retention,
    sessions: Sessions,
    report: RetentionReport,
    expire_before: datetime,
    deadline: float,
) -> None:
    """Delete every archived object whose newest SMS is past the retention horizon."""
    expired = sessions.control.execute(
        "SELECT object_key, row_count FROM private.expired_archive_objects(%s)", (expire_before,)
    ).fetchall()
    for key, rows in expired:
        if clock() > deadline:
            report.complete = False
            return
        with sessions.archive_write_lock():
            # The object first: a crash before the manifest follows leaves an entry
            # whose object is already gone, which the next run deletes again.
            retention.bucket.delete_versions(key, keep_current=False)
            sessions.work.execute("SELECT private.forget_archive_object(%s)", (key,))
        report.expired_objects += 1
        report.expired_rows += rows


def _expire_recipients(sessions: Sessions, before: datetime) -> int:
    """The recipients' hours the expired archive held: no KPI counts them any more."""
    row = sessions.control.execute(
        "SELECT private.expire_recipient_hours(%s)", (before,)
    ).fetchone()
    return int(row[0]) if row else 0


def _purge_pending_events(sessions: Sessions, before: datetime) -> int:
    """Status reports for an SMS that was never recorded: they will never apply.

    Erased SIDs are kept for good (digests of random ids, nothing personal): they stop
    an erased SMS from coming back through a late report or an n8n replay."""
    row = sessions.control.execute("SELECT private.purge_pending_events(%s)", (before,)).fetchone()
    return int(row[0]) if row else 0


def _forecast(
    retention: Retention,
    sessions: Sessions,
    report: RetentionReport,
    archive_before: datetime,
    expire_before: datetime,
    pending_before: datetime,
) -> RetentionReport:
    """What a run would do now, changing nothing."""
    row = sessions.control.execute(
        "SELECT * FROM private.retention_forecast(%s, %s, %s, %s)",
        (archive_before, retention.settings.archive_batch_size, expire_before, pending_before),
    ).fetchone()
    assert row is not None  # one row, always
    (
        report.archived_objects,
        report.archived_rows,
        report.expired_objects,
        report.expired_rows,
        report.unfinished_objects_removed,
        report.pending_events_purged,
    ) = row
    return report

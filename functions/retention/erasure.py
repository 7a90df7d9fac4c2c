"""GDPR erasure of phone numbers, everywhere this service keeps them.

For each number (E.164): its SMS, their status events, its pending status events and
reconcile's bookkeeping leave the database in one transaction; then every archived
object that holds it, found through the keyed-hash index, is rewritten without its
rows, and every older version of that object is deleted. Each step is recorded in
the audit table (private.sms_erasures) in the transaction that makes it, so the
record never claims more than was done. An erasure the archive cut short is marked
incomplete; running it again finishes it, and closes the earlier record too.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from functions.retention import archive_format
from functions.retention.context import Progress, Retention, Sessions, no_progress
from shared.errors import UnavailableError

# How long an erasure waits for an archive batch being written to commit.
ARCHIVE_LOCK_WAIT_SECONDS = 30.0


@dataclass
class NumberErasure:
    """What was erased for one number (for a dry run: what would be)."""

    phone_hash: str
    hot_rows: int = 0
    status_events: int = 0
    pending_events: int = 0
    archived_rows: int = 0
    objects_rewritten: int = 0
    objects_deleted: int = 0
    object_versions_deleted: int = 0
    complete: bool | None = None
    """None for a dry run, which erases nothing."""
    incomplete_reason: str | None = None


@dataclass
class ErasureReceipt:
    request_id: str
    requester: str
    dry_run: bool
    erasures: list[NumberErasure] = field(default_factory=list)
    parked_copies_gone_by: datetime | None = None
    """A request about these numbers parked in the spill-over queue before the erasure
    is refused when replayed; its copy leaves the queues by then at the latest
    (SPILLOVER_MAX_AGE_DAYS). None for a dry run."""

    @property
    def complete(self) -> bool:
        return not self.dry_run and all(erasure.complete for erasure in self.erasures)

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"complete": self.complete}


def erase(
    retention: Retention,
    phone_numbers: list[str],
    *,
    requester: str,
    request_id: str,
    dry_run: bool = False,
    progress: Progress = no_progress,
) -> ErasureReceipt:
    """Erase these E.164 numbers (distinct), or with dry_run count what would go."""
    receipt = ErasureReceipt(request_id=request_id, requester=requester, dry_run=dry_run)
    with retention.sessions() as sessions:
        if dry_run:
            receipt.erasures = [_forecast(retention, sessions, n) for n in phone_numbers]
            return receipt
        sessions.check_can_vacuum()
        max_age = timedelta(days=retention.settings.spillover_max_age_days)
        receipt.parked_copies_gone_by = datetime.now(UTC) + max_age
        hashes = [retention.phone_hash(number) for number in phone_numbers]
        _open_audit(sessions, request_id, requester, hashes)
        for done, (number, phone_hash) in enumerate(zip(phone_numbers, hashes, strict=True)):
            receipt.erasures.append(_erase_one(retention, sessions, request_id, number, phone_hash))
            progress(done + 1, len(phone_numbers))
        _vacuum_then_complete(sessions, request_id, receipt.erasures)
    return receipt


def _open_audit(sessions: Sessions, request_id: str, requester: str, hashes: list[bytes]) -> None:
    """Record the erasure before anything is erased: a failure from here on leaves a
    record that says incomplete. The same request id, from the same requester,
    continues it."""
    sessions.control.execute(
        "SELECT private.open_erasure(%s, %s, %s::bytea[])", (request_id, requester, hashes)
    )


def _erase_one(
    retention: Retention, sessions: Sessions, request_id: str, number: str, phone_hash: bytes
) -> NumberErasure:
    result = NumberErasure(phone_hash=phone_hash.hex())
    audit = _Audit(sessions, request_id, phone_hash, result)
    _erase_hot(sessions, audit, number)
    try:
        # A batch a crash cut short may hold rows just deleted above.
        sessions.remove_unfinished_objects(retention.bucket, ARCHIVE_LOCK_WAIT_SECONDS)
        keys = sessions.control.execute(
            "SELECT object_key FROM private.sms_archive_phone_index WHERE phone_hash = %s"
            " ORDER BY object_key",
            (phone_hash,),
        ).fetchall()
        for (key,) in keys:
            _erase_from_object(retention, sessions, audit, key, number)
        # Once more, now that every archived SMS of the number is known as erased: a late
        # status report for one of them that came meanwhile was kept pending, with the number.
        _erase_hot(sessions, audit, number)
    except UnavailableError as exc:
        _incomplete(sessions, request_id, result, exc)
    return result


def _vacuum_then_complete(
    sessions: Sessions, request_id: str, erasures: list[NumberErasure]
) -> None:
    """The deleted rows stay on disk as old row versions, index entries included, until
    a VACUUM: one, for the whole request, before any number is complete."""
    erased = [erasure for erasure in erasures if erasure.complete is None]
    if not erased:
        return
    try:
        sessions.vacuum_erased_tables()
    except UnavailableError as exc:
        for erasure in erased:
            _incomplete(sessions, request_id, erasure, exc)
        return
    for erasure in erased:
        sessions.control.execute(
            "SELECT private.complete_erasure(%s, %s)",
            (request_id, bytes.fromhex(erasure.phone_hash)),
        )
        erasure.complete = True


def _incomplete(
    sessions: Sessions, request_id: str, result: NumberErasure, exc: UnavailableError
) -> None:
    result.complete = False
    result.incomplete_reason = f"{exc.message} Send the same request again to finish it."
    sessions.control.execute(
        "SELECT private.mark_erasure_incomplete(%s, %s, %s)",
        (request_id, bytes.fromhex(result.phone_hash), result.incomplete_reason),
    )


def _erase_hot(sessions: Sessions, audit: _Audit, number: str) -> None:
    """The number's rows in the database: SMS, their status events, pending reports."""
    with sessions.work.transaction():
        row = sessions.work.execute(
            "SELECT hot_rows, status_events, pending_events FROM private.erase_hot_sms(%s)",
            (number,),
        ).fetchone()
        hot_rows, status_events, pending_events = row or (0, 0, 0)
        audit.add(hot_rows=hot_rows, status_events=status_events, pending_events=pending_events)


def _erase_from_object(
    retention: Retention,
    sessions: Sessions,
    audit: _Audit,
    key: str,
    number: str,
) -> None:
    """Rewrite one archived object without the number's rows; delete its older versions."""
    bucket, work = retention.bucket, sessions.work
    with sessions.archive_write_lock(ARCHIVE_LOCK_WAIT_SECONDS):
        data = bucket.read(key)
        table = archive_format.decode(data) if data is not None else None
        kept = archive_format.without_number(table, number) if table is not None else None
        if table is not None:
            # So that n8n posting one of them again cannot bring it back (ingest: 410).
            # Committed before the rewrite: after it, a rerun would no longer find them.
            erased_sids = archive_format.sids_with_number(table, number)
            sessions.control.execute("SELECT private.remember_erased_sids(%s)", (erased_sids,))
        if data is None or table is None or kept is None or kept.num_rows == 0:
            # Gone (expired meanwhile), or only this number's rows: the whole object goes.
            removed = table.num_rows if table is not None else 0
            versions = bucket.delete_versions(key, keep_current=False)
            work.execute("SELECT private.forget_archive_object(%s)", (key,))
            deleted = 1 if table is not None else 0
            audit.add(
                archived_rows=removed, objects_deleted=deleted, object_versions_deleted=versions
            )
        else:
            removed = table.num_rows - kept.num_rows
            if removed:
                encoded = archive_format.encode(kept)
                bucket.put_verified(key, encoded.data, encoded.sha256)
                data = encoded.data
            # Every older version still holds the rows; only the one just verified stays.
            versions = bucket.delete_versions(key, keep_current=True)
            first, last = archive_format.sent_at_range(kept)
            # From the object as it now is, even when an earlier erasure that a crash
            # cut short already rewrote it.
            work.execute(
                "SELECT private.record_rewritten_object(%s, %s, %s, %s, %s, %s, %s)",
                (key, audit.phone_hash, kept.num_rows, hashlib.sha256(data).hexdigest(),
                 len(data), first, last),
            )  # fmt: skip
            audit.add(
                archived_rows=removed,
                objects_rewritten=1 if removed else 0,
                object_versions_deleted=versions,
            )


@dataclass
class _Audit:
    sessions: Sessions
    request_id: str
    phone_hash: bytes
    result: NumberErasure
    """The receipt's entry, which counts what the audit record counts."""

    def add(self, **counts: int) -> None:
        """Add to this erasure's counts: in the audit record, in the work session's open
        transaction, and in the receipt's entry."""
        named = "".join(f", p_{name} => %s" for name in counts)  # the receipt's field names
        self.sessions.work.execute(
            f"SELECT private.add_to_erasure(%s, %s{named})",
            (self.request_id, self.phone_hash, *counts.values()),
        )
        for name, count in counts.items():
            setattr(self.result, name, getattr(self.result, name) + count)


def _forecast(retention: Retention, sessions: Sessions, number: str) -> NumberErasure:
    phone_hash = retention.phone_hash(number)
    row = sessions.control.execute(
        """
        SELECT (SELECT count(*) FROM public.agent_sms WHERE phone_number = %(n)s),
               (SELECT count(*) FROM public.agent_sms_events AS e
                JOIN public.agent_sms AS s ON s.provider_message_sid = e.provider_message_sid
                WHERE s.phone_number = %(n)s),
               (SELECT count(*) FROM public.agent_sms_events
                WHERE applied_at IS NULL AND pending_phone_number = %(n)s),
               (SELECT coalesce(sum(row_count), 0) FROM private.sms_archive_phone_index
                WHERE phone_hash = %(h)s),
               (SELECT count(*) FROM private.sms_archive_phone_index WHERE phone_hash = %(h)s)
        """,
        {"n": number, "h": phone_hash},
    ).fetchone()
    hot, events, pending, archived, objects = row or (0, 0, 0, 0, 0)
    return NumberErasure(
        phone_hash=phone_hash.hex(),
        hot_rows=hot,
        status_events=events,
        pending_events=pending,
        archived_rows=archived,
        objects_rewritten=objects,
    )

"""What retention works with: its settings, the archive bucket, the keyed hash of a
phone number, and two database sessions.

Retention needs a direct (or session-pooled) Postgres connection, not PostgREST: it
holds advisory locks for a whole run, and a transaction open across an upload so that
rows leave the database only in the transaction that records their verified copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from functions.retention.bucket import ArchiveBucket, archive_bucket
from shared import phones
from shared.db import classify, connection_options, credentials_refused, failure_of, refusal_in
from shared.errors import ConfigurationError, ConflictError, UnavailableError

if TYPE_CHECKING:
    import psycopg

    from shared.runtime import Services
    from shared.settings import Settings

# The tables an erasure deletes a number's rows from, in the database.
ERASED_TABLES = ("public.agent_sms", "public.agent_sms_events", "private.sms_recipients")

# Called with (done, total) as work advances: a progress bar, or a log line.
Progress = Callable[[int, int], None]


def no_progress(done: int, total: int) -> None:
    """Report nothing."""


@dataclass(frozen=True)
class Retention:
    settings: Settings
    bucket: ArchiveBucket
    database_url: str = field(repr=False)
    index_secret: bytes = field(repr=False)
    renew_credentials: Callable[[], bool] = lambda: False
    """After the database refused the credentials: whether newer ones are now in hand."""

    def phone_hash(self, phone_number: str) -> bytes:
        """What the index and the audit keep of a number (shared.phones.phone_hash)."""
        return phones.phone_hash(self.index_secret, phone_number)

    @contextmanager
    def sessions(self) -> Iterator[Sessions]:
        """Two connections, closed after; a database failure becomes the service's error."""
        import psycopg

        options = connection_options(self.settings.database_timeout_seconds)
        retry_after = self.settings.retry_after_seconds
        with ExitStack() as connections:
            try:
                control = connections.enter_context(
                    psycopg.connect(self.database_url, autocommit=True, **options)
                )
                work = connections.enter_context(psycopg.connect(self.database_url, **options))
            except psycopg.Error as exc:
                if (refusal := refusal_in(exc)) is not None:
                    raise credentials_refused(
                        refusal, self.renew_credentials, "DATABASE_SESSION_URL", retry_after
                    ) from None
                raise classify(failure_of(exc), retry_after=retry_after) from None
            try:
                # A batch's statements move thousands of rows, not one API call's worth.
                timeout = f"{int(self.settings.database_timeout_seconds * 6000)}ms"
                for conn in (control, work):
                    conn.execute("SELECT set_config('statement_timeout', %s, false)", (timeout,))
                work.commit()
                yield Sessions(control, work)
            except psycopg.Error as exc:
                raise classify(failure_of(exc), retry_after=retry_after) from None


def retention_context(services: Services) -> Retention:
    """Retention as the settings describe it (the composition root's factory): the bucket
    is built once, the database sessions opened per run."""
    settings = services.settings
    database_url, secret = settings.database_session_url, settings.archive_index_secret
    if database_url is None or secret is None or settings.archive_bucket is None:
        raise settings.missing(
            "database_session_url", "archive_bucket", "archive_index_secret", purpose="retention"
        )
    return Retention(
        settings=settings,
        bucket=services.get(archive_bucket),
        database_url=database_url.get_secret_value(),
        index_secret=secret.get_secret_value().encode(),
        renew_credentials=lambda: services.renew() is not None,
    )


@dataclass(frozen=True)
class Sessions:
    control: psycopg.Connection[Any]
    """Autocommit: holds the run lock, and records an object before its upload."""
    work: psycopg.Connection[Any]
    """Transactions: each change to the archive holds the archive write lock, and rows
    leave agent_sms only in the one that records their verified copy."""

    def hold_run_lock(self) -> None:
        """Take the retention run lock for this session, or refuse: runs never overlap."""
        row = self.control.execute(
            "SELECT pg_try_advisory_lock(private.retention_run_lock_key())"
        ).fetchone()
        if not row or not row[0]:
            raise ConflictError(
                "Another retention run is in progress; this one did nothing."
                " The next scheduled run resumes the work."
            )

    @contextmanager
    def archive_write_lock(self, wait_seconds: float | None = None) -> Iterator[None]:
        """A transaction on the work session that holds the archive write lock until it
        ends: no one else changes archived objects meanwhile. Should the session die,
        its transaction and the lock end together, so nothing commits unprotected.

        With wait_seconds, give up after that long with a 503 rather than wait on.
        """
        import psycopg

        timeout = f"{int(wait_seconds * 1000)}ms" if wait_seconds is not None else "0"
        with self.work.transaction():
            self.work.execute("SELECT set_config('lock_timeout', %s, true)", (timeout,))
            try:
                self.work.execute("SELECT pg_advisory_xact_lock(private.archive_write_lock_key())")
            except psycopg.errors.LockNotAvailable:
                raise UnavailableError(
                    "The archive is being written by a retention run; retry in a minute."
                ) from None
            self.work.execute("SELECT set_config('lock_timeout', '0', true)")
            yield

    def check_can_vacuum(self) -> None:
        """Refuse to start an erasure that could not finish: on PostgreSQL 15 only the
        owner of a table (or of the database) may VACUUM it, and anyone else's VACUUM
        skips it with a mere warning."""
        # Looked up by name in the catalogs: a cast to regclass would need USAGE on
        # the schema, which a stranger lacks.
        row = self.control.execute(
            "SELECT bool_and(pg_has_role(current_user, c.relowner, 'USAGE')"
            "                OR pg_has_role(current_user, d.datdba, 'USAGE'))"
            " FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace,"
            "      pg_database AS d"
            " WHERE d.datname = current_database()"
            "   AND format('%%I.%%I', n.nspname, c.relname) = ANY (%s::text[])",
            (list(ERASED_TABLES),),
        ).fetchone()
        if not row or not row[0]:
            raise ConfigurationError(
                "erasure connects as a role that does not own "
                + " and ".join(ERASED_TABLES)
                + ", so it could not VACUUM the erased rows away: connect as their owner"
            )

    def vacuum_erased_tables(self) -> None:
        """VACUUM the tables erasure deletes from, index entries included (a VACUUM that
        finds few dead rows may leave the indexes for later), so that no old row version
        keeps an erased number, name or text. Old versions that a transaction begun
        before the erasure can still see stay until the next vacuum (autovacuum)."""
        import psycopg

        try:
            # The work session's deletes reach the table's statistics when it next goes
            # idle, up to seconds later; counted after the VACUUM, they would show as dead
            # rows that are gone.
            self.work.execute("SELECT pg_stat_force_next_flush()")
            self.work.commit()
            self.control.execute("VACUUM (INDEX_CLEANUP ON) " + ", ".join(ERASED_TABLES))
        except psycopg.Error as exc:
            error = classify(failure_of(exc))
            if isinstance(error, UnavailableError):
                error.message = "The erased rows' old versions could not be vacuumed yet."
            raise error from None

    def remove_unfinished_objects(
        self, bucket: ArchiveBucket, wait_seconds: float | None = None
    ) -> int:
        """Delete every object a crash left between upload and commit, with all its
        versions; its rows are still in agent_sms. Under the lock, no batch is in
        progress, so every object still being written is such a leftover."""
        with self.archive_write_lock(wait_seconds):
            keys = self.work.execute("SELECT private.unfinished_archive_objects()").fetchall()
            for (key,) in keys:
                bucket.delete_versions(key, keep_current=False)
                self.work.execute("SELECT private.forget_archive_object(%s)", (key,))
        return len(keys)

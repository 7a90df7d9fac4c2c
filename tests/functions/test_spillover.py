"""The spill-over queue (issue 18): while the database is unavailable, ingest_sms and
twilio_status park what they verified in SQS (moto's server) and answer success; the
replay consumer records it all once the database is back. The outage is real: the
functions' database is a port nobody listens on, then the session's database."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import boto3
import psycopg
import pytest

from functions.replay.polling import poll
from functions.replay.replay import MAX_RECEIVES as MAX_RECEIVES_IN_AWS
from functions.replay.replay import retry_delay
from functions.retention.erasure import erase
from shared import runtime
from shared.db import PostgresDatabase, database
from shared.errors import UnavailableError
from shared.settings import Settings
from shared.spillover import OUTAGE_HOLD_SECONDS, ParkedCall, Spillover, spillover
from tests.support import ingest
from tests.support import status_callbacks as twilio
from tests.support.builders import Tenants
from tests.support.retention import INDEX_SECRET, retention_for, retention_settings
from tests.support.served import serve
from tools.embedded import create_spillover_queues, create_versioned_bucket

MAX_RECEIVES = 3
NUMBER = "+33612345678"


@pytest.fixture(scope="module")
def ingest_url() -> Iterator[str]:
    for function in serve("ingest_sms"):
        yield function.url


@pytest.fixture(scope="module")
def status_url() -> Iterator[str]:
    for function in serve("twilio_status"):
        yield function.url


@pytest.fixture
def queue_url(moto_endpoint: str) -> str:
    queue, _ = create_spillover_queues(
        moto_endpoint,
        f"spillover-{uuid.uuid4().hex[:8]}",
        max_receives=MAX_RECEIVES,
        visibility_timeout=0,
    )
    return queue


def settings(database_url: str, queue_url: str | None, moto_endpoint: str) -> Settings:
    return twilio.settings_for(
        database_url,
        ingest_api_keys=ingest.KEY,
        spillover_queue_url=queue_url,
        sqs_endpoint_url=moto_endpoint,
        archive_index_secret=INDEX_SECRET,
    )


@pytest.fixture
def unreachable_db() -> Iterator[PostgresDatabase]:
    """A database that is not there: nothing listens on the port, as in an outage."""
    db = PostgresDatabase("postgresql://sms_api@127.0.0.1:9/postgres", pool_size=1, timeout=1)
    yield db
    db.close()


@pytest.fixture
def outage(
    database_url: str, queue_url: str, moto_endpoint: str, unreachable_db: PostgresDatabase
) -> Iterator[runtime.Services]:
    """The functions during an outage: their database is unreachable, their queue is up."""
    services = runtime.Services(
        settings(database_url, queue_url, moto_endpoint), provided={database: unreachable_db}
    )
    runtime.use(services)
    yield services
    runtime.use(None)


def recovered(
    database_url: str, queue_url: str, moto_endpoint: str, db: PostgresDatabase
) -> runtime.Services:
    return runtime.Services(
        settings(database_url, queue_url, moto_endpoint), provided={database: db}
    )


def queued(queue_url: str, moto_endpoint: str) -> list[ParkedCall]:
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint)
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    count = int(attributes["Attributes"]["ApproximateNumberOfMessages"])
    calls: dict[str, ParkedCall] = {}
    while len(calls) < count:
        answer = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0
        )
        calls |= {
            m["MessageId"]: ParkedCall.from_body(m["Body"]) for m in answer.get("Messages", [])
        }
    return list(calls.values())


def drain(services: runtime.Services, queue_url: str):  # type: ignore[no-untyped-def]
    return poll(lambda: services, queue_url, max_receives=MAX_RECEIVES, until_empty=True)


def test_an_sms_posted_during_an_outage_is_queued_then_recorded(
    outage: runtime.Services, ingest_url: str, tenants: Tenants, admin_conn: psycopg.Connection,
    database_url: str, queue_url: str, moto_endpoint: str, shared_db: PostgresDatabase,
) -> None:  # fmt: skip
    sms = ingest.sms(tenants, phone_number="06 12 34 56 78")
    answer = ingest.post(ingest_url, sms)

    assert answer.status_code == 202
    assert answer.json()["queued"] is True
    assert "Do not send it again" in answer.json()["message"]
    assert ingest.stored(admin_conn, sms["provider_message_sid"]) is None
    (parked,) = queued(queue_url, moto_endpoint)
    assert parked.rpc == "ingest_sms"
    assert parked.phone_number == NUMBER  # validated and normalised before it was parked

    report = drain(recovered(database_url, queue_url, moto_endpoint, shared_db), queue_url)

    assert (report.replayed, report.refused, report.retry) == (1, 0, [])
    row = ingest.stored(admin_conn, sms["provider_message_sid"])
    assert row is not None
    assert row["phone_number"] == NUMBER
    assert row["message_content"] == sms["message_content"]
    assert str(row["provider_cost"]) == "0.0750"
    assert row["sent_at"] == datetime(2026, 11, 24, 10, tzinfo=UTC)
    assert ingest.post(ingest_url, sms).status_code == 202  # still down for the functions


def test_a_batch_is_parked_one_sms_per_message_and_what_fails_validation_is_refused(
    outage: runtime.Services, ingest_url: str, tenants: Tenants, queue_url: str, moto_endpoint: str,
) -> None:  # fmt: skip
    good = [ingest.sms(tenants) for _ in range(12)]
    answer = ingest.post(ingest_url, {"messages": [*good, ingest.sms(tenants, phone_number="x")]})

    assert answer.status_code == 207
    body = answer.json()
    assert (body["queued"], body["refused"], body["created"]) == (12, 1, 0)
    assert body["results"][-1]["error"]["field"] == "phone_number"
    parked = queued(queue_url, moto_endpoint)
    assert sorted(c.args["p_messages"][0]["provider_message_sid"] for c in parked) == sorted(
        s["provider_message_sid"] for s in good
    )
    assert ingest.post(ingest_url, {"messages": good}).status_code == 202


def test_a_status_callback_during_an_outage_is_parked_then_applied_with_its_time(
    outage: runtime.Services, status_url: str, ingest_url: str, tenants: Tenants,
    admin_conn: psycopg.Connection, database_url: str, queue_url: str, moto_endpoint: str,
    shared_db: PostgresDatabase,
) -> None:  # fmt: skip
    sms = ingest.sms(tenants)
    sid = sms["provider_message_sid"]
    delivered = twilio.callback(sid, "delivered", RawDlrDoneDate="2611241002", To=NUMBER)

    # The callback first, then the SMS: replay takes them in any order.
    assert twilio.post(status_url, delivered).status_code == 200
    assert ingest.post(ingest_url, sms).status_code == 202
    assert twilio.post(status_url, delivered).status_code == 200  # Twilio's retry: parked twice
    assert len(queued(queue_url, moto_endpoint)) == 3

    report = drain(recovered(database_url, queue_url, moto_endpoint, shared_db), queue_url)

    assert (report.replayed, report.refused) == (3, 0)
    row = twilio.row(admin_conn, sid)
    assert row["status"] == "delivered"
    assert row["delivered_at"] == datetime(2026, 11, 24, 10, 2, tzinfo=UTC)
    assert twilio.events(admin_conn, sid) == [("delivered", None, True, None, "callback")]


def test_what_is_not_verified_is_never_parked(
    outage: runtime.Services, status_url: str, ingest_url: str, tenants: Tenants,
    queue_url: str, moto_endpoint: str,
) -> None:  # fmt: skip
    assert ingest.post(ingest_url, ingest.sms(tenants), key="wrong" * 8).status_code == 401
    assert ingest.post(ingest_url, ingest.sms(tenants, deployment_id="nope")).status_code == 422
    unsigned = twilio.post(status_url, twilio.callback(ingest.sid(), "sent"), token="forged")
    assert unsigned.status_code == 403

    assert queued(queue_url, moto_endpoint) == []


def test_a_refused_login_is_not_an_outage(queue_url: str, moto_endpoint: str) -> None:
    """New credentials fix it, not waiting: the caller gets its 503, nothing is parked."""

    class RefusingDatabase:
        def rpc(self, name, args=None, *, as_user=None):  # type: ignore[no-untyped-def]
            from shared.db import credentials_refused

            error = credentials_refused("password authentication failed", lambda: True, "X", 5)
            assert isinstance(error, UnavailableError)
            raise error

    sqs = boto3.client("sqs", endpoint_url=moto_endpoint)
    lot = Spillover(queue_url, lambda: sqs)
    with pytest.raises(UnavailableError):
        lot.rpc_or_park(RefusingDatabase(), "record_sms_status", {"p_sid": "SM1"})  # type: ignore[arg-type]
    assert queued(queue_url, moto_endpoint) == []


def test_with_the_queue_unreachable_too_the_caller_is_told_to_retry(
    database_url: str, moto_endpoint: str, unreachable_db: PostgresDatabase, ingest_url: str,
    status_url: str, tenants: Tenants,
) -> None:  # fmt: skip
    missing = moto_endpoint + "/123456789012/no-such-queue"
    runtime.use(
        runtime.Services(
            settings(database_url, missing, moto_endpoint), provided={database: unreachable_db}
        )
    )
    try:
        answer = ingest.post(ingest_url, ingest.sms(tenants))
        callback = twilio.post(status_url, twilio.callback(ingest.sid(), "sent"))
    finally:
        runtime.use(None)

    for response in (answer, callback):
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) >= 1
        assert response.json()["error"]["code"] == "unavailable"


def test_after_one_outage_the_process_parks_at_once_for_a_while(
    outage: runtime.Services, ingest_url: str, tenants: Tenants,
) -> None:  # fmt: skip
    lot = outage.get(spillover)
    assert ingest.post(ingest_url, ingest.sms(tenants)).status_code == 202
    tried: list[str] = []
    unreachable = outage.db

    class Counting:
        def rpc(self, name, args=None, *, as_user=None):  # type: ignore[no-untyped-def]
            tried.append(name)
            return unreachable.rpc(name, args, as_user=as_user)

        def close(self) -> None: ...

    outage.provided[database] = Counting()
    assert ingest.post(ingest_url, ingest.sms(tenants)).status_code == 202
    assert tried == []  # within the hold, the database is not tried at all
    assert lot.hold_seconds == OUTAGE_HOLD_SECONDS


def test_a_number_erased_while_its_sms_is_parked_is_never_recorded(
    outage: runtime.Services, ingest_url: str, status_url: str, tenants: Tenants,
    admin_conn: psycopg.Connection, database_url: str, retention_database_url: str,
    queue_url: str, moto_endpoint: str, shared_db: PostgresDatabase,
) -> None:  # fmt: skip
    sms = ingest.sms(tenants, phone_number=NUMBER)
    assert ingest.post(ingest_url, sms).status_code == 202
    sent = twilio.callback(sms["provider_message_sid"], "sent", To=NUMBER)
    assert twilio.post(status_url, sent).status_code == 200
    other = ingest.sms(tenants, phone_number="+33698765432")
    assert ingest.post(ingest_url, other).status_code == 202

    bucket = f"archive-{uuid.uuid4().hex[:12]}"
    create_versioned_bucket(moto_endpoint, bucket)
    retention = retention_for(retention_settings(retention_database_url, moto_endpoint, bucket))
    receipt = erase(retention, [NUMBER], requester="privacy@voipia.fr", request_id=uuid.uuid4().hex)
    assert receipt.complete
    gone_by = receipt.parked_copies_gone_by
    assert gone_by is not None
    assert timedelta(days=6.99) < gone_by - datetime.now(UTC) <= timedelta(days=7)

    report = drain(recovered(database_url, queue_url, moto_endpoint, shared_db), queue_url)

    assert (report.erased, report.replayed) == (2, 1)
    assert ingest.stored(admin_conn, sms["provider_message_sid"]) is None
    assert ingest.stored(admin_conn, other["provider_message_sid"]) is not None
    assert twilio.events(admin_conn, sms["provider_message_sid"]) == []
    leftovers = admin_conn.execute(
        "SELECT count(*) FROM agent_sms_events WHERE pending_phone_number = %s", (NUMBER,)
    ).fetchone()
    assert leftovers == (0,)
    # An SMS sent to the number well after the erasure is a new one: it is recorded.
    admin_conn.execute(
        "UPDATE private.sms_erasures SET requested_at = requested_at - interval '10 minutes',"
        " completed_at = completed_at - interval '10 minutes'"
    )
    later = ingest.sms(tenants, phone_number=NUMBER)
    assert ingest.post(ingest_url, later).status_code == 202
    drain(recovered(database_url, queue_url, moto_endpoint, shared_db), queue_url)
    assert ingest.stored(admin_conn, later["provider_message_sid"]) is not None


def test_a_parked_sms_that_sql_refuses_for_good_is_logged_for_an_operator_and_not_retried(
    outage: runtime.Services, ingest_url: str, tenants: Tenants, database_url: str,
    queue_url: str, moto_endpoint: str, shared_db: PostgresDatabase,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    unknown = ingest.sms(tenants, deployment_id=str(uuid.uuid4()))
    assert ingest.post(ingest_url, unknown).status_code == 202

    with caplog.at_level(logging.INFO, logger="sms.replay"):
        report = drain(recovered(database_url, queue_url, moto_endpoint, shared_db), queue_url)

    assert (report.refused, report.replayed, report.retry) == (1, 0, [])
    (line,) = [r for r in caplog.records if getattr(r, "code", None) == "replay_refused"]
    assert line.levelno == logging.ERROR
    assert line.sid == unknown["provider_message_sid"]  # type: ignore[attr-defined]
    assert line.deployment_id == unknown["deployment_id"]  # type: ignore[attr-defined]
    assert NUMBER not in line.getMessage()
    assert queued(queue_url, moto_endpoint) == []


def test_while_the_database_is_still_down_replay_leaves_every_message_for_later(
    outage: runtime.Services, ingest_url: str, tenants: Tenants, queue_url: str,
    moto_endpoint: str,
) -> None:  # fmt: skip
    for _ in range(3):
        assert ingest.post(ingest_url, ingest.sms(tenants)).status_code == 202

    from functions.replay.polling import poll_once

    report = poll_once(outage, queue_url, max_receives=MAX_RECEIVES)

    assert report.replayed == 0
    assert len(report.retry) == 3
    # Each hidden for its first retry's delay, not the queue's visibility timeout (0 here).
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint)
    counts = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert (
        counts["ApproximateNumberOfMessages"],
        counts["ApproximateNumberOfMessagesNotVisible"],
    ) == ("0", "3")
    assert [retry_delay(n) for n in (1, 2, 3, 5, 6, 19)] == [60, 120, 240, 960, 1800, 1800]
    # The deliveries before the last span an outage of hours, not minutes.
    assert sum(retry_delay(n) for n in range(1, MAX_RECEIVES_IN_AWS)) > 7 * 3600


def test_replaying_a_message_twice_records_it_once(
    outage: runtime.Services, ingest_url: str, status_url: str, tenants: Tenants,
    admin_conn: psycopg.Connection, database_url: str, queue_url: str, moto_endpoint: str,
    shared_db: PostgresDatabase,
) -> None:  # fmt: skip
    sms = ingest.sms(tenants)
    assert ingest.post(ingest_url, sms).status_code == 202
    callback = twilio.callback(sms["provider_message_sid"], "delivered", To=NUMBER)
    assert twilio.post(status_url, callback).status_code == 200
    bodies = [c.body() for c in queued(queue_url, moto_endpoint)]
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint)
    for body in bodies:  # SQS delivers at least once: the same messages again
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)

    report = drain(recovered(database_url, queue_url, moto_endpoint, shared_db), queue_url)

    assert (report.replayed, report.refused) == (4, 0)
    count = admin_conn.execute(
        "SELECT count(*) FROM agent_sms WHERE provider_message_sid = %s",
        (sms["provider_message_sid"],),
    ).fetchone()
    assert count == (1,)
    assert len(twilio.events(admin_conn, sms["provider_message_sid"])) == 1


def test_a_message_that_keeps_failing_is_counted_when_the_dead_letter_queue_takes_it(
    outage: runtime.Services, caplog: pytest.LogCaptureFixture
) -> None:
    from functions.replay.replay import MAX_RECEIVES as LIMIT
    from functions.replay.replay import Message, replay

    poison = [Message("m1", "not a parked call", LIMIT - 1), Message("m2", "{}", LIMIT)]
    with caplog.at_level(logging.ERROR, logger="sms.replay"):
        report = replay(outage, poison, max_receives=LIMIT)

    assert (report.retry, report.unreadable, report.dead_lettered) == (
        ["m1", "m2"],
        ["m1", "m2"],
        1,
    )
    assert [r.code for r in caplog.records if getattr(r, "code", None)] == [  # type: ignore[attr-defined]
        "replay_unreadable",
        "replay_unreadable",
        "replay_dead_lettered",
    ]


def test_a_parked_call_older_than_the_erasure_receipts_promise_is_not_replayed(
    outage: runtime.Services, tenants: Tenants, admin_conn: psycopg.Connection,
) -> None:  # fmt: skip
    from functions.replay.replay import Message, replay

    sms = ingest.sms(tenants, phone_number=NUMBER)
    old = ParkedCall("ingest_sms", {"p_messages": [sms]}, datetime.now(UTC) - timedelta(days=8))

    report = replay(outage, [Message("m1", old.body())], max_receives=3)

    assert (report.refused, report.replayed, report.retry) == (1, 0, [])
    assert ingest.stored(admin_conn, sms["provider_message_sid"]) is None


def test_any_text_survives_the_queue(
    outage: runtime.Services, ingest_url: str, tenants: Tenants, admin_conn: psycopg.Connection,
    database_url: str, queue_url: str, moto_endpoint: str, shared_db: PostgresDatabase,
) -> None:  # fmt: skip
    text = 'Rendez-vous "demain"\nà 14h \U0001f600 \ufffe\uffff fin'
    sms = ingest.sms(tenants, message_content=text)
    assert ingest.post(ingest_url, sms).status_code == 202

    drain(recovered(database_url, queue_url, moto_endpoint, shared_db), queue_url)

    row = ingest.stored(admin_conn, sms["provider_message_sid"])
    assert row is not None
    assert row["message_content"] == text


def test_a_parked_report_without_the_carriers_time_keeps_the_time_it_came(
    outage: runtime.Services, status_url: str, tenants: Tenants, admin_conn: psycopg.Connection,
    database_url: str, queue_url: str, moto_endpoint: str, shared_db: PostgresDatabase,
) -> None:  # fmt: skip
    sid = twilio.old_sms(admin_conn, tenants)
    came = datetime.now(UTC)
    assert twilio.post(status_url, twilio.callback(sid, "delivered", To=NUMBER)).status_code == 200
    admin_conn.execute("SELECT pg_sleep(2)")  # the replay comes later

    drain(recovered(database_url, queue_url, moto_endpoint, shared_db), queue_url)

    row = twilio.row(admin_conn, sid)
    assert row["status"] == "delivered"
    assert came - timedelta(seconds=1) < row["delivered_at"] < came + timedelta(seconds=1)

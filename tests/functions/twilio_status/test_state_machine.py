"""Status reports through the state machine: any order, repeats, reports before their SMS,
races, and the history kept."""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from shared import runtime
from tests.support.builders import Tenants, insert_sms
from tests.support.status_callbacks import (
    callback,
    events,
    new_sid,
    post,
    row,
)


@pytest.mark.parametrize("order", list(itertools.permutations(["queued", "sent", "delivered"])))
def test_every_order_of_queued_sent_delivered_ends_delivered(
    status_url: str, sms_sid: str, clean: psycopg.Connection, order: tuple[str, ...]
) -> None:
    for status in order:
        assert post(status_url, callback(sms_sid, status)).status_code == 200
    final = row(clean, sms_sid)
    assert (final["provider_status"], final["status"]) == ("delivered", "delivered")
    assert final["delivered_at"] is not None
    assert [e[0] for e in events(clean, sms_sid)] == list(order)


def test_undelivered_after_sent_fails_with_a_readable_reason(
    status_url: str, sms_sid: str, clean: psycopg.Connection
) -> None:
    post(status_url, callback(sms_sid, "sent"))
    post(status_url, callback(sms_sid, "undelivered", ErrorCode="30003"))
    post(status_url, callback(sms_sid, "sent"))  # late, and never undoes a final status
    final = row(clean, sms_sid)
    assert (final["provider_status"], final["status"]) == ("undelivered", "failed")
    assert final["failure_reason"] == "Unreachable destination handset"
    assert final["failed_at"] is not None


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("21610", "Recipient opted out (replied STOP)"),
        ("30005", "Unknown destination handset"),
        ("30006", "Landline or unreachable carrier"),
        ("30007", "Filtered by the carrier"),
        ("30001", "Queue overflow"),
        ("30500", "Carrier violation"),
        ("12345", "Twilio error 12345"),
    ],
)
def test_error_codes_become_readable_reasons(
    status_url: str, sms_sid: str, clean: psycopg.Connection, code: str, reason: str
) -> None:
    post(status_url, callback(sms_sid, "failed", ErrorCode=code))
    assert row(clean, sms_sid)["failure_reason"] == reason


def test_a_repeated_callback_changes_nothing_but_is_kept_in_the_history(
    status_url: str, sms_sid: str, clean: psycopg.Connection
) -> None:
    post(status_url, callback(sms_sid, "delivered", RawDlrDoneDate="2611241032"))
    first = row(clean, sms_sid)
    post(status_url, callback(sms_sid, "delivered", RawDlrDoneDate="2611241059"))
    again = row(clean, sms_sid)
    assert (
        again["delivered_at"] == first["delivered_at"] == datetime(2026, 11, 24, 10, 32, tzinfo=UTC)
    )
    assert again["updated_at"] == first["updated_at"]
    assert [e[0] for e in events(clean, sms_sid)] == ["delivered", "delivered"]


def test_a_replayed_callback_adds_no_event_row(
    status_url: str, sms_sid: str, clean: psycopg.Connection
) -> None:
    """Twilio retrying, or anyone replaying a callback it captured: the same signed
    request again is the same report, kept once."""
    params = callback(sms_sid, "delivered", RawDlrDoneDate="2611241032", ErrorCode="")
    for _ in range(3):
        assert post(status_url, params).status_code == 200
    post(status_url, callback(sms_sid, "sent"))
    post(status_url, callback(sms_sid, "sent"))
    assert [e[0] for e in events(clean, sms_sid)] == ["delivered", "sent"]


def test_a_replayed_callback_for_an_sms_not_recorded_yet_is_kept_once(
    status_url: str, clean: psycopg.Connection
) -> None:
    sid = new_sid()
    for _ in range(2):
        assert post(status_url, callback(sid, "failed", ErrorCode="30003")).status_code == 200
    assert len(events(clean, sid)) == 1


def test_without_a_carrier_date_delivered_at_is_the_time_received(
    status_url: str, sms_sid: str, clean: psycopg.Connection
) -> None:
    before = datetime.now(UTC)
    post(status_url, callback(sms_sid, "delivered", RawDlrDoneDate="garbage"))
    delivered_at = row(clean, sms_sid)["delivered_at"]
    assert before - timedelta(seconds=1) <= delivered_at <= datetime.now(UTC)


def test_a_callback_before_ingest_is_kept_and_applied_when_the_sms_arrives(
    status_url: str, tenants: Tenants, clean: psycopg.Connection, services: runtime.Services
) -> None:
    sid = new_sid()
    post(status_url, callback(sid, "sent"))
    assert (
        post(status_url, callback(sid, "delivered", RawDlrDoneDate="2611241032")).status_code == 200
    )
    assert events(clean, sid) == [
        ("sent", None, False, "+33612345678", "callback"),
        ("delivered", None, False, "+33612345678", "callback"),
    ]
    message = {
        "deployment_id": str(tenants.deployment_b),
        "phone_number": "+33612345678",
        "message_content": "Bonjour",
        "provider_message_sid": sid,
        "provider_status": "queued",
        "sent_at": "2026-11-24T10:30:00Z",
    }
    services.db.rpc("ingest_sms", {"p_messages": [message]})
    born = row(clean, sid)
    assert (born["provider_status"], born["status"]) == ("delivered", "delivered")
    assert born["delivered_at"] == datetime(2026, 11, 24, 10, 32, tzinfo=UTC)
    assert events(clean, sid) == [
        ("sent", None, True, None, "callback"),
        ("delivered", None, True, None, "callback"),
    ]


def test_an_ingest_applies_every_pending_report_however_many(
    status_url: str, tenants: Tenants, clean: psycopg.Connection, services: runtime.Services
) -> None:
    # Found by benchmarks/soak: past ten pending reports in one ingest (PL/pgSQL reads
    # a loop's rows ten at a time), the later ones stayed pending and the SMS stale.
    sids = [new_sid() for _ in range(4)]
    for sid in sids:
        for status in ("queued", "sent", "delivered"):
            post(status_url, callback(sid, status, RawDlrDoneDate="2611241032"))
    services.db.rpc("ingest_sms", {"p_messages": [
        {"deployment_id": str(tenants.deployment_b), "phone_number": "+33612345678",
         "message_content": "Bonjour", "provider_message_sid": sid,
         "sent_at": "2026-11-24T10:30:00Z"}
        for sid in sids
    ]})  # fmt: skip
    for sid in sids:
        assert row(clean, sid)["status"] == "delivered"
        assert [applied for _, _, applied, _, _ in events(clean, sid)] == [True, True, True]


def test_delivered_and_sent_racing_always_end_delivered(
    status_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    sids = [new_sid() for _ in range(50)]
    for sid in sids:
        insert_sms(clean, tenants.deployment_b, provider_message_sid=sid, provider_status="queued")
    jobs = [(sid, status) for sid in sids for status in ("sent", "delivered")]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(lambda job: post(status_url, callback(*job)).status_code, jobs))
    assert set(codes) == {200}
    finals = clean.execute(
        "SELECT status, count(*) FROM agent_sms WHERE provider_message_sid = ANY(%s) GROUP BY 1",
        (sids,),
    ).fetchall()
    assert finals == [("delivered", 50)]
    histories = clean.execute(
        "SELECT count(*) FROM agent_sms_events WHERE provider_message_sid = ANY(%s)", (sids,)
    ).fetchone()
    assert histories == (100,)


def test_a_callback_during_an_uncommitted_ingest_is_never_lost(
    status_url: str, tenants: Tenants, clean: psycopg.Connection, database_url: str
) -> None:
    """The race that loses statuses elsewhere: ingest has inserted the SMS (and found
    no pending event) but not committed when the callback arrives. The callback must
    wait for that ingest rather than park an event nobody will pick up."""
    sid = new_sid()
    message = {
        "deployment_id": str(tenants.deployment_b),
        "phone_number": "+33612345678",
        "message_content": "Bonjour",
        "provider_message_sid": sid,
        "sent_at": "2026-11-24T10:30:00Z",
    }
    with psycopg.connect(database_url) as ingest, concurrent.futures.ThreadPoolExecutor(1) as pool:
        ingest.execute("SELECT public.ingest_sms(%s::jsonb)", (json.dumps([message]),))
        delivered = pool.submit(post, status_url, callback(sid, "delivered"))
        while not delivered.done() and not waiting_on_advisory_lock(clean):
            time.sleep(0.01)
        ingest.commit()
        assert delivered.result().status_code == 200
    assert row(clean, sid)["status"] == "delivered"
    assert [e[2] for e in events(clean, sid)] == [True]


def waiting_on_advisory_lock(conn: psycopg.Connection) -> bool:
    found = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    ).fetchone()
    return found is not None and found[0] > 0


def test_api_users_cannot_read_status_events(
    status_url: str, sms_sid: str, database_url: str, tenants: Tenants
) -> None:
    from tests.support.builders import acting_as

    post(status_url, callback(sms_sid, "delivered"))
    with (
        acting_as(database_url, "authenticated", tenants.admin_b) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("SELECT * FROM agent_sms_events")


def test_a_delivery_receipt_after_a_failure_wins_and_clears_it(
    status_url: str, sms_sid: str, clean: psycopg.Connection
) -> None:
    post(status_url, callback(sms_sid, "undelivered", ErrorCode="30003"))
    post(status_url, callback(sms_sid, "delivered"))
    final = row(clean, sms_sid)
    assert (final["status"], final["failed_at"], final["failure_reason"]) == (
        "delivered",
        None,
        None,
    )


def test_pending_reports_apply_to_an_sms_recorded_any_way(
    status_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    sid = new_sid()
    post(status_url, callback(sid, "delivered"))
    insert_sms(clean, tenants.deployment_b, provider_message_sid=sid)  # not through ingest
    assert row(clean, sid)["status"] == "delivered"
    assert [e[2] for e in events(clean, sid)] == [True]

"""What ingest_sms records: rows as sent, idempotent retries, batches, concurrency,
erased SMS, outages, and logs without the number or the text."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from shared import runtime
from shared.settings import Settings
from tests.support.builders import Tenants
from tests.support.ingest import (
    KEY,
    count,
    nested,
    post,
    refused,
    sms,
    stored,
)


def test_a_first_write_is_201_and_stores_the_row(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    body = sms(tenants, first_name="Camille", workflow_id="wf-1", workflow_execution_id="9")
    response = post(ingest_url, body)
    assert response.status_code == 201
    assert response.json() == {"id": response.json()["id"], "created": True}
    row = stored(clean, body["provider_message_sid"])
    assert row is not None
    assert str(row["id"]) == response.json()["id"]
    assert row["phone_number"] == "+33612345678"
    assert row["first_name"] == "Camille"
    assert row["message_content"] == body["message_content"]
    assert row["message_type"] == "transactional"
    assert row["provider"] == "twilio"
    assert row["status"] == "sent"
    assert row["provider_cost"] == Decimal("0.0750")
    assert row["billed_cost"] == Decimal("0.1050")
    assert row["currency"] == "EUR"
    assert row["sent_at"] == datetime(2026, 11, 24, 10, tzinfo=UTC)
    assert (row["workflow_id"], row["workflow_execution_id"]) == ("wf-1", "9")
    assert row["metadata"] == {}


def test_a_retry_returns_the_existing_id_with_200(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    body = sms(tenants)
    first = post(ingest_url, body)
    again = post(ingest_url, body | {"message_content": "changed on retry"})
    assert again.status_code == 200
    assert again.json() == {"id": first.json()["id"], "created": False}
    row = stored(clean, body["provider_message_sid"])
    assert row is not None
    assert row["message_content"] == body["message_content"]


def test_accepted_values_are_stored_as_given(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    body = sms(
        tenants,
        message_type="appointment_reminder",
        currency="usd",
        provider_cost=0.0079,
        voipia_margin=0,
        last_name="Dupont",
        metadata={"campaign_id": "rappels_2026", "custom_variables": {"slot": "14h00"}},
        message_content="x" * 1600,
    )
    assert post(ingest_url, body).status_code == 201
    row = stored(clean, body["provider_message_sid"])
    assert row is not None
    assert row["message_type"] == "appointment_reminder"
    # The provider's amount as given; in the billing currency once a USD rate exists.
    assert (row["provider_amount"], row["provider_currency"]) == (Decimal("0.0079"), "USD")
    assert (row["currency"], row["provider_cost"]) == ("EUR", None)
    assert row["voipia_margin"] == Decimal("0")
    assert row["metadata"] == body["metadata"]
    assert row["character_count"] == 1600


def test_sent_at_accepts_twilios_own_date_format(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    body = sms(tenants, sent_at="Tue, 24 Nov 2026 10:00:00 +0000")
    assert post(ingest_url, body).status_code == 201
    row = stored(clean, body["provider_message_sid"])
    assert row is not None
    assert row["sent_at"] == datetime(2026, 11, 24, 10, tzinfo=UTC)


def test_sent_at_defaults_to_the_time_of_receipt(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    body = sms(tenants)
    del body["sent_at"]
    before = datetime.now(UTC)
    assert post(ingest_url, body).status_code == 201
    row = stored(clean, body["provider_message_sid"])
    assert row is not None
    assert before - timedelta(seconds=1) <= row["sent_at"] <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("twilio_status", "provider_status", "status"),
    [
        ("queued", "queued", "sent"),
        ("accepted", "queued", "sent"),
        ("scheduled", "queued", "sent"),
        ("sending", "sending", "sent"),
        ("sent", "sent", "sent"),
        ("delivered", "delivered", "delivered"),
        ("undelivered", "undelivered", "failed"),
        ("failed", "failed", "failed"),
    ],
)
def test_an_initial_twilio_status_is_stored_in_the_seeds_terms(
    ingest_url: str,
    tenants: Tenants,
    clean: psycopg.Connection,
    twilio_status: str,
    provider_status: str,
    status: str,
) -> None:
    body = sms(tenants, provider_status=twilio_status)
    assert post(ingest_url, body).status_code == 201
    row = stored(clean, body["provider_message_sid"])
    assert row is not None
    assert (row["provider_status"], row["status"]) == (provider_status, status)


def test_metadata_nested_32_deep_is_recorded(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    body = sms(tenants, metadata=nested(32))
    assert post(ingest_url, body).status_code == 201
    row = stored(clean, body["provider_message_sid"])
    assert row is not None
    assert row["metadata"] == nested(32)


def test_an_unreachable_database_is_503_with_retry_after(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = f"postgresql://postgres@127.0.0.1:{port}/x"
    settings = Settings(
        database_url=down,  # type: ignore[arg-type]
        ingest_api_keys=KEY,  # type: ignore[arg-type]
        database_timeout_seconds=1,
        retry_after_seconds=11,
    )
    unreachable = runtime.Services(settings)
    runtime.use(unreachable)
    body = sms(tenants)
    response = post(ingest_url, body)
    unreachable.db.close()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "11"
    assert str(port) not in response.text
    assert stored(clean, body["provider_message_sid"]) is None


def test_logs_carry_ids_but_never_the_number_or_the_text(
    ingest_url: str, tenants: Tenants, caplog: pytest.LogCaptureFixture
) -> None:
    body = sms(tenants, phone_number="06 12 34 56 78")
    with caplog.at_level(logging.INFO, logger="sms"):
        response = post(ingest_url, body, headers={"X-Request-Id": "n8n-run-7"})
    assert response.headers["X-Request-Id"] == "n8n-run-7"
    records = [r for r in caplog.records if r.name.startswith("sms")]
    assert records
    text = json.dumps([r.__dict__ for r in records], default=str)
    assert body["provider_message_sid"] in text
    assert str(tenants.deployment_b) in text
    assert "n8n-run-7" in text
    for secret in ("612345678", "06 12 34 56 78", "rendez-vous"):
        assert secret not in text


def test_concurrent_identical_posts_leave_exactly_one_row(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    body = sms(tenants)
    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda _: post(ingest_url, body), range(20)))
    assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    rows = clean.execute(
        "SELECT count(*) FROM agent_sms WHERE provider_message_sid = %s",
        (body["provider_message_sid"],),
    ).fetchone()
    assert rows == (1,)


def test_a_batch_reports_each_item_in_order_and_stores_the_valid_ones(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    duplicate = sms(tenants)
    items = [
        duplicate,
        sms(tenants, phone_number="nope"),
        duplicate,
        sms(tenants, deployment_id=str(uuid.uuid4())),
        sms(tenants, message_type="marketing"),
    ]
    response = post(ingest_url, {"messages": items})
    assert response.status_code == 207
    body = response.json()
    results = body["results"]
    assert results[0]["created"] is True
    assert results[1]["error"]["field"] == "phone_number"
    assert results[2] == {"id": results[0]["id"], "created": False}
    assert results[3]["error"]["field"] == "deployment_id"
    assert results[4]["created"] is True
    assert (body["created"], body["existing"], body["refused"]) == (2, 1, 2)
    rows = clean.execute(
        "SELECT count(*) FROM agent_sms WHERE provider_message_sid = %s",
        (duplicate["provider_message_sid"],),
    ).fetchone()
    assert rows == (1,)
    assert stored(clean, items[4]["provider_message_sid"]) is not None


def test_batch_statuses(ingest_url: str, tenants: Tenants, clean: psycopg.Connection) -> None:
    items = [sms(tenants) for _ in range(3)]
    assert post(ingest_url, {"messages": items}).status_code == 201
    assert post(ingest_url, {"messages": items}).status_code == 200
    assert post(ingest_url, {"messages": [*items, sms(tenants)]}).status_code == 200
    bad = post(ingest_url, {"messages": [sms(tenants, phone_number="x")]})
    assert bad.status_code == 422
    assert bad.json()["refused"] == 1


def test_a_full_batch_of_500_is_recorded(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    items = [sms(tenants) for _ in range(500)]
    response = post(ingest_url, {"messages": items})
    assert response.status_code == 201
    assert response.json()["created"] == 500
    assert count(clean) == len(tenants.sms_a) + len(tenants.sms_b) + 500


def test_concurrent_overlapping_batches_never_duplicate(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    items = [sms(tenants) for _ in range(50)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        batches = [items[i : i + 30] for i in (0, 10, 20)] * 2
        responses = list(pool.map(lambda b: post(ingest_url, {"messages": b}), batches))
    assert all(r.status_code in (200, 201) for r in responses)
    sids = [i["provider_message_sid"] for i in items]
    rows = clean.execute(
        "SELECT count(*), count(DISTINCT provider_message_sid) FROM agent_sms"
        " WHERE provider_message_sid = ANY(%s)",
        (sids,),
    ).fetchone()
    assert rows == (50, 50)


def test_an_erased_sms_posted_again_is_gone_and_not_recorded(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    erased, other = sms(tenants), sms(tenants, phone_number="+33698765432")
    assert post(ingest_url, erased).status_code == 201
    clean.execute("SELECT private.erase_hot_sms('+33612345678')")

    again = post(ingest_url, erased)
    assert again.status_code == 410
    assert again.json()["error"]["code"] == "gone"
    assert again.json()["error"]["field"] == "provider_message_sid"
    batch = post(ingest_url, {"messages": [erased, other]})
    assert batch.status_code == 207
    assert batch.json()["results"][0]["error"]["code"] == "gone"
    assert batch.json()["results"][1]["created"] is True
    assert stored(clean, erased["provider_message_sid"]) is None


def test_an_erasure_committing_while_an_ingest_waits_does_not_let_the_sms_back(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection, database_url: str
) -> None:
    body = sms(tenants)
    assert post(ingest_url, body).status_code == 201
    with (
        psycopg.connect(database_url) as erasing,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        erasing.execute("SELECT private.erase_hot_sms('+33612345678')")  # not committed yet
        # The retry's insert waits on the row the erasure is deleting, then goes ahead.
        retry = pool.submit(post, ingest_url, body)
        time.sleep(0.5)
        assert not retry.done()
        erasing.commit()
        assert retry.result().status_code == 503
    assert stored(clean, body["provider_message_sid"]) is None
    assert post(ingest_url, body).status_code == 410


def test_the_text_is_stored_exactly_as_sent(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    text = "  Bonjour 👋🏽,\nà demain !\n"
    body = sms(tenants, message_content=text, phone_number=612345678, provider_cost=0.0075)
    assert post(ingest_url, body).status_code == 201
    stored_row = stored(clean, body["provider_message_sid"])
    assert stored_row is not None
    assert stored_row["message_content"] == text
    assert stored_row["character_count"] == len(text)
    assert stored_row["phone_number"] == "+33612345678"
    assert stored_row["provider_cost"] == Decimal("0.0075")


def test_the_same_sid_for_another_deployment_is_409(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    body = sms(tenants)
    assert post(ingest_url, body).status_code == 201
    moved = body | {"deployment_id": str(tenants.deployments_a[0])}
    refused(post(ingest_url, moved), 409, "provider_message_sid")
    stored_row = stored(clean, body["provider_message_sid"])
    assert stored_row is not None
    assert stored_row["deployment_id"] == tenants.deployment_b


def test_batches_sharing_sids_in_opposite_orders_never_deadlock(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    for _ in range(10):
        items = [sms(tenants) for _ in range(200)]
        batches = [items, list(reversed(items))] * 2
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            responses = list(pool.map(lambda b: post(ingest_url, {"messages": b}), batches))
        assert all(r.status_code in (200, 201) for r in responses), [
            r.status_code for r in responses
        ]
    assert count(clean) == len(tenants.sms_a) + len(tenants.sms_b) + 2000


def test_a_deployment_deleted_during_a_batch_fails_only_its_items(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection, database_url: str
) -> None:
    doomed = tenants.deployments_a[1]
    items = [sms(tenants), sms(tenants, deployment_id=str(doomed)), sms(tenants)]
    with (
        psycopg.connect(database_url) as deleting,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        deleting.execute("DELETE FROM agent_deployments WHERE id = %s", (doomed,))
        pending = pool.submit(post, ingest_url, {"messages": items})
        while not pending.done() and not waiting_on_a_lock(clean):
            time.sleep(0.01)
        deleting.commit()
        response = pending.result()
    assert response.status_code == 207
    results = response.json()["results"]
    assert [r.get("created") for r in results] == [True, None, True]
    assert results[1]["error"]["field"] == "deployment_id"


def waiting_on_a_lock(conn: psycopg.Connection) -> bool:
    found = conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()
    return found is not None and found[0] > 0

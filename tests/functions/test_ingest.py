"""ingest_sms end to end: real HTTP in, real Postgres out."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest

from shared import runtime
from shared.db import PostgresDatabase, database
from shared.settings import Settings
from tests.support.builders import Tenants
from tests.support.served import serve

KEY = "k" * 40
ROTATED_KEY = "r" * 40


@pytest.fixture(scope="module")
def ingest_url() -> Iterator[str]:
    for function in serve("ingest_sms"):
        yield function.url


@pytest.fixture(autouse=True)
def services(database_url: str, shared_db: PostgresDatabase) -> Iterator[runtime.Services]:
    settings = Settings(database_url=database_url, ingest_api_keys=f"{KEY},{ROTATED_KEY}")  # type: ignore[arg-type]
    current = runtime.Services(settings, provided={database: shared_db})
    runtime.use(current)
    yield current
    runtime.use(None)


def nested(depth: int) -> dict[str, Any]:
    """A JSON object nested this many objects deep."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def sid() -> str:
    return "SM" + uuid.uuid4().hex


def sms(tenants: Tenants, **overrides: Any) -> dict[str, Any]:
    return {
        "deployment_id": str(tenants.deployment_b),
        "phone_number": "+33612345678",
        "message_content": "Bonjour, votre rendez-vous est confirmé demain à 14h00.",
        "provider_message_sid": sid(),
        "sent_at": "2026-11-24T10:00:00Z",
        "provider_cost": "0.0750",
        "voipia_margin": "0.0300",
    } | overrides


def post(
    url: str, body: Any, key: str | None = KEY, headers: dict[str, str] | None = None
) -> httpx.Response:
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(url, json=body, headers=auth | (headers or {}), timeout=30)


def stored(conn: psycopg.Connection, sms_sid: str) -> dict[str, Any] | None:
    cur = conn.execute("SELECT * FROM agent_sms WHERE provider_message_sid = %s", (sms_sid,))
    row = cur.fetchone()
    assert cur.description is not None
    return dict(zip([c.name for c in cur.description], row, strict=True)) if row else None


def count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM agent_sms").fetchone()
    assert row is not None
    return int(row[0])


def refused(response: httpx.Response, status: int, field: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error.get("field") == field
    return error


# --- auth ---------------------------------------------------------------------------


def test_a_missing_or_wrong_key_is_401_and_writes_nothing(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    before = count(clean)
    for key in (None, "wrong" * 10, KEY[:-1]):
        response = post(ingest_url, sms(tenants), key=key)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
    assert count(clean) == before


def test_every_configured_key_works_so_keys_can_rotate(ingest_url: str, tenants: Tenants) -> None:
    assert post(ingest_url, sms(tenants), key=KEY).status_code == 201
    assert post(ingest_url, sms(tenants), key=ROTATED_KEY).status_code == 201


def test_with_no_keys_configured_nobody_gets_in(
    ingest_url: str, tenants: Tenants, database_url: str, services: runtime.Services
) -> None:
    settings = Settings(database_url=database_url)  # type: ignore[arg-type]
    runtime.use(runtime.Services(settings, provided={database: services.db}))
    response = post(ingest_url, sms(tenants), key="")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "not_configured"
    assert "INGEST_API_KEYS" not in response.text


# --- one SMS ------------------------------------------------------------------------


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


def test_a_national_number_is_normalised_with_the_default_region(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    body = sms(tenants, phone_number="06 12 34 56 78")
    assert post(ingest_url, body).status_code == 201
    row = stored(clean, body["provider_message_sid"])
    assert row is not None
    assert row["phone_number"] == "+33612345678"


@pytest.mark.parametrize("number", ["12345", "not a number", "+33 1", "+999 612345678"])
def test_a_number_that_is_not_valid_is_422_without_echoing_it(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection, number: str
) -> None:
    body = sms(tenants, phone_number=number)
    error = refused(post(ingest_url, body), 422, "phone_number")
    assert number not in error["message"]
    assert stored(clean, body["provider_message_sid"]) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("message_content", ""),
        ("message_content", "   "),
        ("message_content", "a\x00b"),
        ("first_name", "Cam\x00ille"),
        ("metadata", {"note": "a\x00b"}),
        ("provider_cost", 0.1 + 0.2),
        ("currency", "XXX"),
        ("phone_number", True),
        ("message_content", "x" * 1601),
        ("message_type", "spam"),
        ("provider_message_sid", "SM123"),
        ("provider_message_sid", "AC" + "a" * 32),
        ("sent_at", "2026-11-24T10:00:00"),
        ("sent_at", "yesterday"),
        # Numbers would otherwise be read as Unix time (found by Schemathesis).
        ("sent_at", 0),
        ("sent_at", 1764000000.5),
        ("sent_at", "1764000000"),
        # Out of range: year 1 at +01:00 is a time BC in UTC, which Postgres stores but
        # Python cannot read back, so the retention run that archives it would fail.
        ("sent_at", "0001-01-01T00:30:00+01:00"),
        ("sent_at", "1999-12-31T23:59:59Z"),
        ("sent_at", "9999-12-31T23:00:00-05:00"),
        ("provider_cost", "-0.0075"),
        ("provider_cost", "NaN"),
        ("provider_cost", "Infinity"),
        ("provider_cost", "abc"),
        ("provider_cost", "0.00001"),
        ("provider_cost", True),
        ("voipia_margin", -1),
        ("voipia_margin", "1e400"),
        ("currency", "XYZ"),
        ("currency", "EURO"),
        ("deployment_id", "not-a-uuid"),
        ("call_id", "123"),
        ("prospect_id", 5),
        ("sequence_id", "x"),
        ("workflow_id", "x" * 201),
        ("first_name", "x" * 201),
        ("metadata", [1, 2]),
        ("metadata", "text"),
        ("metadata", {"blob": "x" * 20_000}),
        # Deeper than the JSON encoder goes: a 500 with a traceback, before (found by an
        # outside attack).
        ("metadata", nested(300)),
        ("metadata", nested(33)),
        ("surname", "Dupont"),
    ],
)
def test_each_field_rule_is_422_naming_the_field(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection, field: str, value: Any
) -> None:
    body = sms(tenants, **{field: value})
    before = count(clean)
    error = refused(post(ingest_url, body), 422, field)
    assert error["code"] == "invalid_input"
    assert error["message"].startswith(field)
    assert count(clean) == before


def test_every_provider_needs_a_message_id_for_idempotency(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    body = sms(tenants)
    del body["provider_message_sid"]
    refused(post(ingest_url, body), 422, "provider_message_sid")
    other = body | {"provider": "vonage", "provider_message_sid": "vonage-0a1b2c"}
    before = count(clean)
    assert post(ingest_url, other).status_code == 201
    assert post(ingest_url, other).status_code == 200
    assert count(clean) == before + 1
    stored_row = stored(clean, "vonage-0a1b2c")
    assert stored_row is not None
    assert stored_row["provider"] == "vonage"
    refused(
        post(ingest_url, other | {"provider_message_sid": "not an id"}), 422, "provider_message_sid"
    )


def test_missing_required_fields_are_named(ingest_url: str, tenants: Tenants) -> None:
    for field in ("deployment_id", "phone_number", "message_content"):
        body = sms(tenants)
        del body[field]
        error = refused(post(ingest_url, body), 422, field)
        assert "required" in error["message"].lower()


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
    assert row["currency"] == "USD"
    assert row["provider_cost"] == Decimal("0.0079")
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


def test_a_status_twilio_does_not_have_is_422(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    body = sms(tenants, provider_status="lost_in_space")
    refused(post(ingest_url, body), 422, "provider_status")
    assert stored(clean, body["provider_message_sid"]) is None


def test_references_that_do_not_exist_are_422_naming_them(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    for field in ("deployment_id", "call_id", "prospect_id", "sequence_id"):
        body = sms(tenants, **{field: str(uuid.uuid4())})
        error = refused(post(ingest_url, body), 422, field)
        assert "does not exist" in error["message"]
        assert stored(clean, body["provider_message_sid"]) is None


def test_a_call_of_another_client_is_refused(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    row = clean.execute(
        "INSERT INTO agent_calls (deployment_id) VALUES (%s) RETURNING id",
        (tenants.deployments_a[0],),
    ).fetchone()
    assert row is not None
    refused(post(ingest_url, sms(tenants, call_id=str(row[0]))), 422, "call_id")
    same_client = sms(tenants, call_id=str(row[0]), deployment_id=str(tenants.deployments_a[1]))
    assert post(ingest_url, same_client).status_code == 201


# --- the request itself ---------------------------------------------------------------


def test_request_level_errors(ingest_url: str, clean: psycopg.Connection) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    get = httpx.get(ingest_url, headers=auth)
    assert get.status_code == 405
    assert get.headers["Allow"] == "POST"
    text = httpx.post(ingest_url, content=b"{}", headers=auth | {"Content-Type": "text/plain"})
    assert text.status_code == 415
    broken = httpx.post(
        ingest_url,
        content=b'{"deployment_id": ',
        headers=auth | {"Content-Type": "application/json"},
    )
    assert broken.status_code == 400
    assert "not valid JSON" in broken.json()["error"]["message"]
    huge = httpx.post(
        ingest_url,
        content=b'{"x": "' + b"a" * 1_000_001 + b'"}',
        headers=auth | {"Content-Type": "application/json"},
    )
    assert huge.status_code == 413
    listing = post(ingest_url, [1, 2])
    assert listing.status_code == 422
    assert count(clean) == 0


def test_metadata_nested_32_deep_is_recorded(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    body = sms(tenants, metadata=nested(32))
    assert post(ingest_url, body).status_code == 201
    row = stored(clean, body["provider_message_sid"])
    assert row is not None
    assert row["metadata"] == nested(32)


@pytest.mark.parametrize("metadata", [{"note": "a\ud800b"}, {"\udc00": 1}])
def test_metadata_with_a_lone_surrogate_is_422_not_500(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection, metadata: dict[str, Any]
) -> None:
    # JSON may escape half a surrogate pair ("\ud800"), which is no character: it cannot
    # be stored as UTF-8 (found by Schemathesis, as a 500).
    body = sms(tenants, metadata=metadata)
    response = httpx.post(
        ingest_url,
        content=json.dumps(body),  # ASCII-escaped, as a client may send it
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        timeout=30,
    )
    refused(response, 422, "metadata")
    assert stored(clean, body["provider_message_sid"]) is None


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


# --- idempotency under concurrency and in batches ---------------------------------------


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


@pytest.mark.parametrize("messages", [[], "x", [{}] * 501])
def test_a_batch_out_of_bounds_is_422(ingest_url: str, messages: Any) -> None:
    refused(post(ingest_url, {"messages": messages}), 422, "messages")


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


# Found by benchmarks/soak: n8n posting an erased SMS again brought the number back.


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


def test_blank_optional_fields_count_as_absent(
    ingest_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    # What n8n expressions produce when the value they look for is missing.
    blanks = dict.fromkeys(
        ("first_name", "last_name", "message_type", "provider_status", "sent_at", "currency",
         "call_id", "workflow_id", "provider_cost", "metadata"),
        "",
    )  # fmt: skip
    body = sms(tenants, **blanks) | {"provider": None}
    assert post(ingest_url, body).status_code == 201
    stored_row = stored(clean, body["provider_message_sid"])
    assert stored_row is not None
    assert stored_row["first_name"] is None
    assert stored_row["message_type"] == "transactional"
    assert stored_row["currency"] == "EUR"
    assert stored_row["provider"] == "twilio"


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


def test_nan_or_infinity_anywhere_in_the_body_is_400(
    ingest_url: str, clean: psycopg.Connection
) -> None:
    before = count(clean)
    response = httpx.post(
        ingest_url,
        content=b'{"metadata": {"x": NaN}}',
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert count(clean) == before


def test_a_chunked_body_over_the_limit_is_413(ingest_url: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"x": "'
        for _ in range(1100):
            yield b"a" * 1000
        yield b'"}'

    response = httpx.post(
        ingest_url,
        content=chunks(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert response.status_code == 413


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

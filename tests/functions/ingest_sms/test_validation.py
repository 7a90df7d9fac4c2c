"""What ingest_sms refuses, and how it says so: keys, every field's rule, the request
itself; nothing refused is written."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from shared import runtime
from shared.db import database
from shared.settings import Settings
from tests.support.builders import Tenants
from tests.support.ingest import (
    KEY,
    ROTATED_KEY,
    count,
    nested,
    post,
    refused,
    sms,
    stored,
)


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


@pytest.mark.parametrize("messages", [[], "x", [{}] * 501])
def test_a_batch_out_of_bounds_is_422(ingest_url: str, messages: Any) -> None:
    refused(post(ingest_url, {"messages": messages}), 422, "messages")

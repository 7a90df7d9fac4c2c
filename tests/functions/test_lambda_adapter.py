"""Each function on AWS Lambda: a real function-URL event (payload format 2.0) through
the adapter, into real Postgres, and the response Lambda would send back."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from urllib.parse import urlencode

import psycopg
import pytest
from twilio.request_validator import RequestValidator

from functions.ingest_sms import aws_lambda as ingest_lambda
from functions.metrics import aws_lambda as metrics_lambda
from functions.twilio_status import aws_lambda as status_lambda
from shared import runtime
from shared.db import PostgresDatabase, database
from shared.settings import Settings
from tests.support.builders import JWT_SECRET, Tenants, insert_sms, make_jwt
from tools.fake_twilio import status_callback
from tools.lambda_events import DOMAIN, body_of, function_url_event, headers_of

pytestmark = pytest.mark.db

INGEST_KEY = "i" * 40
ACCOUNT, TOKEN = "AC" + "1" * 32, "twilio-auth-token-for-lambda-tests"


@pytest.fixture(autouse=True)
def services(database_url: str, shared_db: PostgresDatabase) -> Iterator[Settings]:
    settings = Settings(
        database_url=database_url,  # type: ignore[arg-type]
        ingest_api_keys=INGEST_KEY,  # type: ignore[arg-type]
        twilio_account_sid=ACCOUNT,
        twilio_auth_token=TOKEN,  # type: ignore[arg-type]
        supabase_jwt_secret=JWT_SECRET,  # type: ignore[arg-type]
    )
    runtime.use(runtime.Services(settings, provided={database: shared_db}))
    yield settings
    runtime.use(None)


def test_ingest_sms_records_through_the_function_url(
    tenants: Tenants, clean: psycopg.Connection
) -> None:
    sid = "SM" + uuid.uuid4().hex
    sms = {"deployment_id": str(tenants.deployment_b), "phone_number": "06 12 34 56 78",
           "message_content": "Bonjour", "provider_message_sid": sid}  # fmt: skip
    event = function_url_event(
        "POST",
        headers={"Authorization": f"Bearer {INGEST_KEY}", "Content-Type": "application/json"},
        body=json.dumps(sms).encode(),
    )
    response = ingest_lambda.handler(event, None)
    assert response["statusCode"] == 201, response
    assert body_of(response)["created"] is True
    assert headers_of(response)["x-request-id"]
    stored = clean.execute(
        "SELECT phone_number FROM agent_sms WHERE provider_message_sid = %s", (sid,)
    ).fetchone()
    assert stored == ("+33612345678",)


def test_a_wrong_method_gets_the_functions_own_405(tenants: Tenants) -> None:
    response = ingest_lambda.handler(function_url_event("GET"), None)
    assert (response["statusCode"], headers_of(response)["allow"]) == (405, "POST")
    assert body_of(response)["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("path", "base64_body"), [("/", True), ("/", False), ("/twilio/st%C3%A4tus", True)]
)
def test_twilio_status_verifies_the_signature_over_the_public_url(
    tenants: Tenants, clean: psycopg.Connection, path: str, base64_body: bool
) -> None:
    """No PUBLIC_BASE_URL: the URL Twilio called is the function URL's, by which AWS
    routed the event, with the path exactly as sent, percent-escapes included."""
    sid = "SM" + uuid.uuid4().hex
    insert_sms(clean, tenants.deployment_b, provider_message_sid=sid)
    params = status_callback(ACCOUNT, sid, "delivered")
    url = f"https://{DOMAIN}{path}"
    signature = RequestValidator(TOKEN).compute_signature(url, params)
    event = function_url_event(
        "POST",
        path=path,
        headers={"Content-Type": "application/x-www-form-urlencoded",
                 "X-Twilio-Signature": signature},
        body=urlencode(params).encode(),
        base64_body=base64_body,
    )  # fmt: skip
    response = status_lambda.handler(event, None)
    assert response["statusCode"] == 200, response
    assert clean.execute(
        "SELECT status FROM agent_sms WHERE provider_message_sid = %s", (sid,)
    ).fetchone() == ("delivered",)

    # Signed for another URL of the account, with a Host header to match: refused.
    elsewhere = RequestValidator(TOKEN).compute_signature(f"https://attacker.example{path}", params)
    forged = dict(
        event,
        headers=event["headers"] | {"host": "attacker.example", "x-twilio-signature": elsewhere},
    )
    assert status_lambda.handler(forged, None)["statusCode"] == 403


def test_metrics_answers_the_signed_in_user(tenants: Tenants) -> None:
    token = make_jwt({"sub": str(tenants.viewer_a), "role": "authenticated",
                      "aud": "authenticated"})  # fmt: skip
    event = function_url_event(
        "GET",
        query="start=2026-10-01T00:00:00Z&end=2026-12-01T00:00:00Z",
        headers={"Authorization": f"Bearer {token}"},
    )
    response = metrics_lambda.handler(event, None)
    assert response["statusCode"] == 200, response
    assert body_of(response)["current_period"]["total_sms"] == len(tenants.sms_a)
    assert headers_of(response)["cache-control"] == "private, no-store"

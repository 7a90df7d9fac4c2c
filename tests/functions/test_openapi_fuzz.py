"""Schemathesis fuzzes ingest_sms, twilio_status, reconcile and metrics against
openapi.yaml, over real HTTP into the session's real Postgres (see tests/openapi_fuzz)."""

from __future__ import annotations

import itertools
import re
import uuid
import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import requests
from twilio.request_validator import RequestValidator
from werkzeug.test import EnvironBuilder

from shared import runtime
from shared.db import PostgresDatabase, database
from shared.settings import Settings
from tests.support.builders import JWT_SECRET, Tenants, make_jwt
from tests.support.openapi_fuzz import SCHEMA, Case, bounded, call_and_check, origin, send_prepared
from tests.support.served import LocalFunction
from tools.fake_twilio import FakeTwilio

pytestmark = pytest.mark.db

INGEST_KEY = "i" * 40
METRICS_KEY = "m" * 40
ACCOUNT = "AC" + "f" * 32
TWILIO_TOKEN = "fuzz-twilio-auth-token"
SID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


@pytest.fixture(scope="module")
def urls() -> Iterator[dict[str, str]]:
    served = [
        ("ingest_sms", "ingest_sms"),
        ("twilio_status", "twilio_status"),
        ("twilio_status", "reconcile"),
        ("metrics", "metrics"),
    ]
    with ExitStack() as stack:
        yield {
            target: stack.enter_context(LocalFunction(name, target)).url for name, target in served
        }


@pytest.fixture(scope="module")
def twilio_api() -> Iterator[FakeTwilio]:
    with FakeTwilio({ACCOUNT: TWILIO_TOKEN}) as api:
        yield api


@pytest.fixture
def services(
    database_url: str,
    shared_db: PostgresDatabase,
    twilio_api: FakeTwilio,
    tenants: Tenants,
    urls: dict[str, str],
) -> Iterator[Tenants]:
    settings = Settings(
        database_url=database_url,  # type: ignore[arg-type]
        ingest_api_keys=INGEST_KEY,  # type: ignore[arg-type]
        metrics_service_keys=METRICS_KEY,  # type: ignore[arg-type]
        supabase_jwt_secret=JWT_SECRET,  # type: ignore[arg-type]
        twilio_account_sid=ACCOUNT,
        twilio_auth_token=TWILIO_TOKEN,  # type: ignore[arg-type]
        twilio_api_base_url=twilio_api.url,  # type: ignore[arg-type]
        public_base_url=origin(urls["twilio_status"]),  # type: ignore[arg-type]
    )
    runtime.use(runtime.Services(settings, provided={database: shared_db}))
    yield tenants
    runtime.use(None)


def _coin(case: Case) -> bool:
    """A stable per-example choice (the same example always makes the same choice)."""
    return zlib.crc32(repr((case.body, case.query)).encode()) % 2 == 0


@SCHEMA.include(operation_id="ingest_sms").parametrize()
@bounded
def test_ingest_sms(case: Case, urls: dict[str, str], services: Tenants) -> None:
    # In half the examples, each SMS names a deployment that exists, a valid number and
    # a new SID, so that the other generated fields reach the database. Only values
    # that are well formed are swapped: a malformed one is what a negative case tests.
    if _coin(case):
        for item in _sms_items(case.body):
            if _is_uuid(item.get("deployment_id")):
                item["deployment_id"] = str(services.deployment_b)
            if isinstance(item.get("phone_number"), str):
                item["phone_number"] = "+33612345678"
            if isinstance(sid := item.get("provider_message_sid"), str) and SID.fullmatch(sid):
                item["provider_message_sid"] = "SM" + uuid.uuid4().hex
    call_and_check(case, urls["ingest_sms"], Authorization=f"Bearer {INGEST_KEY}")


def _is_uuid(value: object) -> bool:
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _sms_items(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, dict) and isinstance(body.get("messages"), list):
        return [item for item in body["messages"] if isinstance(item, dict)]
    return [body] if isinstance(body, dict) else []


_tokens = itertools.cycle(["service", "user"])


@SCHEMA.include(operation_id="metrics").parametrize()
@bounded
def test_metrics(case: Case, urls: dict[str, str], services: Tenants) -> None:
    # Both kinds of caller: a service key, and a signed-in viewer under row-level security.
    if next(_tokens) == "service":
        token = METRICS_KEY
    else:
        token = make_jwt(
            {"sub": str(services.viewer_a), "role": "authenticated", "aud": "authenticated"}
        )
    call_and_check(case, urls["metrics"], Authorization=f"Bearer {token}")


@SCHEMA.include(operation_id="twilio_status").parametrize()
@bounded
def test_twilio_status(case: Case, urls: dict[str, str], services: Tenants) -> None:
    # Signed as Twilio signs: over the URL called and every parameter of the body sent,
    # with the configured account's token. A case without the header (a negative case)
    # stays unsigned, and one whose AccountSid is not text keeps it.
    if isinstance(case.body, dict) and isinstance(case.body.get("AccountSid"), str):
        case.body["AccountSid"] = ACCOUNT
    kwargs = case.as_transport_kwargs(base_url=origin(urls["twilio_status"]))
    prepared = requests.Request(**kwargs).prepare()
    if "X-Twilio-Signature" in prepared.headers and (signature := _signature(prepared)):
        prepared.headers["X-Twilio-Signature"] = signature
    send_prepared(case, prepared, kwargs)


def _signature(prepared: requests.PreparedRequest) -> str | None:
    """Twilio's signature of the request, over the form the function will read; None
    when there is no signing it (a nameless multipart part: the generated value goes)."""
    body = prepared.body
    data = body.encode() if isinstance(body, str) else body if isinstance(body, bytes) else b""
    content_type = str(prepared.headers.get("Content-Type", ""))
    form = (
        EnvironBuilder(method="POST", data=data, headers=[("Content-Type", content_type)])
        .get_request()
        .form
    )
    if None in form or prepared.url is None:
        return None
    signature: str = RequestValidator(TWILIO_TOKEN).compute_signature(prepared.url, form)
    return signature


@SCHEMA.include(operation_id="reconcile").parametrize()
@bounded
def test_reconcile(case: Case, urls: dict[str, str], services: Tenants) -> None:
    call_and_check(case, urls["reconcile"])

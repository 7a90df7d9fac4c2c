"""Each function on AWS Lambda: a real function-URL event (payload format 2.0) through
the adapter, into real Postgres, and the response Lambda would send back; and the
scheduled jobs' handler, which fails the invocation of a run that did not complete."""

from __future__ import annotations

import json
import logging
import socket
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from twilio.request_validator import RequestValidator

from functions.ingest_sms import aws_lambda as ingest_lambda
from functions.metrics import aws_lambda as metrics_lambda
from functions.twilio_status import aws_lambda as status_lambda
from shared import emf, runtime
from shared.db import PostgresDatabase, database
from shared.errors import UnavailableError
from shared.lambda_adapter import ScheduledRunError, scheduled_handler
from shared.settings import Settings
from tests.support import emf as emf_lines
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


def test_a_503_behind_the_function_url_is_counted_under_the_lambda_functions_name(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database refusing connections: ingest_sms answers 503 (Lambda's Errors stays
    at 0) and writes the metric the unavailable alarm watches."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"postgresql://postgres@127.0.0.1:{probe.getsockname()[1]}/postgres"
    unreachable = PostgresDatabase(closed, pool_size=1, timeout=1)
    settings = Settings(database_url=closed, ingest_api_keys=INGEST_KEY)  # type: ignore[arg-type]
    runtime.use(runtime.Services(settings, provided={database: unreachable}))
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "voipia-sms-tracking-prod-ingest_sms")
    sid = "SM" + uuid.uuid4().hex
    sms = {"deployment_id": str(uuid.uuid4()), "phone_number": "+33612345678",
           "message_content": "Bonjour", "provider_message_sid": sid}  # fmt: skip
    event = function_url_event(
        "POST",
        headers={"Authorization": f"Bearer {INGEST_KEY}", "Content-Type": "application/json"},
        body=json.dumps(sms).encode(),
    )
    try:
        response = ingest_lambda.handler(event, None)
    finally:
        unreachable.close()
    assert response["statusCode"] == 503, response
    assert emf_lines.values(capsys.readouterr().out) == [
        {"Function": "voipia-sms-tracking-prod-ingest_sms", "Http5xx": 1, "Http503": 1}
    ]


@dataclass
class Report:
    done: int
    complete: bool

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def run_with(report: Report | Exception) -> Any:
    def _job(services: runtime.Services) -> Report:
        if isinstance(report, Exception):
            raise report
        return report

    return scheduled_handler(_job, lambda r: {emf.RECONCILE_CHANGED: r.done})


class Context:
    aws_request_id = "3f1c0c7e-0000-4000-8000-000000000000"


def test_a_complete_scheduled_run_returns_its_report_and_writes_its_metrics(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    handler = run_with(Report(done=3, complete=True))
    assert handler({"source": "aws.events"}, Context()) == {"done": 3, "complete": True}
    assert emf_lines.values(capsys.readouterr().out) == [{"Function": "job", "ReconcileChanged": 3}]


def test_an_incomplete_scheduled_run_fails_the_invocation_after_its_report_and_metrics(
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "voipia-sms-tracking-prod-reconcile")
    handler = run_with(Report(done=2, complete=False))
    with caplog.at_level(logging.ERROR, "sms.lambda"), pytest.raises(ScheduledRunError) as failed:
        handler({"source": "aws.events"}, Context())
    # What Lambda records (and the on-failure destination receives): the code, no data.
    assert str(failed.value) == "incomplete"
    assert emf_lines.values(capsys.readouterr().out) == [
        {"Function": "voipia-sms-tracking-prod-reconcile", "ReconcileChanged": 2}
    ]
    (line,) = [r.__dict__ for r in caplog.records if r.name == "sms.lambda"]
    assert (line["msg"], line["code"], line["done"]) == (
        "scheduled run incomplete",
        "incomplete",
        2,
    )
    assert line["request_id"] == Context.aws_request_id


def test_a_scheduled_run_that_raises_writes_no_metrics_and_fails_with_its_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    handler = run_with(UnavailableError("Twilio's API cannot be reached."))
    with pytest.raises(ScheduledRunError, match=r"^unavailable$"):
        handler({"source": "aws.events"}, Context())
    assert emf_lines.documents(capsys.readouterr().out) == []

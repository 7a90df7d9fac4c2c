"""retention and erase over real HTTP, as functions-framework serves them, and the
command line, as an operator runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from functions.retention import archive
from functions.retention.context import Retention
from shared import runtime
from shared.settings import Settings
from tests.support.builders import Tenants
from tests.support.retention import (
    ALICE,
    PRIVACY_KEY,
    SCHEDULER_KEY,
    days_ago,
    insert_contact_sms,
    object_versions,
    retention_for,
    retention_settings,
    traces,
)
from tests.support.served import ROOT, serve
from tools.lambda_events import body_of, function_url_event

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def retention_url() -> Iterator[str]:
    for function in serve("retention"):
        yield function.url


@pytest.fixture(scope="module")
def erase_url() -> Iterator[str]:
    for function in serve("retention", "erase"):
        yield function.url


@pytest.fixture
def settings(served_settings: Settings) -> Settings:
    return served_settings


def post(
    url: str, key: str | None, body: Any = None, request_id: str | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    if body is None:
        return httpx.post(url, headers=headers, timeout=30)
    return httpx.post(url, json=body, headers=headers, timeout=30)


def test_the_schedule_runs_retention_with_an_empty_post(
    retention_url: str, settings: Settings, old_sms: list[uuid.UUID], retention: Retention
) -> None:
    response = post(retention_url, SCHEDULER_KEY)
    assert response.status_code == 200, response.text
    assert response.json()["archived_rows"] == 9
    assert len(object_versions(retention)) == 4


def test_retention_dry_run_over_http(
    retention_url: str, settings: Settings, old_sms: list[uuid.UUID], retention: Retention
) -> None:
    response = post(retention_url, SCHEDULER_KEY, {"dry_run": True})
    assert (response.json()["dry_run"], response.json()["archived_rows"]) == (True, 9)
    assert object_versions(retention) == []


def test_a_chunked_dry_run_is_still_a_dry_run(
    retention_url: str, settings: Settings, old_sms: list[uuid.UUID], retention: Retention
) -> None:
    # A chunked body has no Content-Length; it was taken for no body, and the run
    # went ahead for real.
    def chunks() -> Iterator[bytes]:
        yield b'{"dry_run": true}'

    headers = {"Authorization": f"Bearer {SCHEDULER_KEY}", "Content-Type": "application/json"}
    response = httpx.post(retention_url, content=chunks(), headers=headers, timeout=30)
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert (response.status_code, response.json()["dry_run"]) == (200, True), response.text
    assert object_versions(retention) == []


@pytest.mark.parametrize("dry_run", [0, "false", "yes", None])
def test_retention_takes_only_true_or_false_for_dry_run(
    retention_url: str,
    settings: Settings,
    old_sms: list[uuid.UUID],
    retention: Retention,
    dry_run: Any,
) -> None:
    # A flag read loosely would run for real when a dry run was meant (found by Schemathesis).
    response = post(retention_url, SCHEDULER_KEY, {"dry_run": dry_run})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "dry_run"
    assert object_versions(retention) == []


@pytest.mark.parametrize("key", [None, "wrong" * 10, PRIVACY_KEY])
def test_retention_refuses_any_other_key(
    retention_url: str, settings: Settings, old_sms: list[uuid.UUID], key: str | None
) -> None:
    response = post(retention_url, key)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_retention_says_so_when_another_run_holds_the_lock(
    retention_url: str, settings: Settings, old_sms: list[uuid.UUID], database_url: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as other_run:
        other_run.execute("SELECT pg_advisory_lock(private.retention_run_lock_key())")
        response = post(retention_url, SCHEDULER_KEY)
    assert response.status_code == 409
    assert "Another retention run is in progress" in response.json()["error"]["message"]


def test_erase_answers_with_the_receipt(
    erase_url: str,
    settings: Settings,
    old_sms: list[uuid.UUID],
    retention: Retention,
    clean: psycopg.Connection,
) -> None:
    response = post(
        erase_url,
        PRIVACY_KEY,
        {"phone_number": "06 12 34 50 01", "requester": "DPO ticket 42"},
    )
    assert response.status_code == 200, response.text
    receipt = response.json()
    assert receipt["complete"] is True
    assert receipt["request_id"] == response.headers["X-Request-Id"]
    assert receipt["erasures"][0]["hot_rows"] == 5  # four due for archiving, one not yet
    assert ALICE[1:] not in response.text
    assert traces(clean, retention, [ALICE]) == []


def test_erase_continues_an_incomplete_request_under_the_same_request_id(
    erase_url: str,
    settings: Settings,
    old_sms: list[uuid.UUID],
    retention: Retention,
    clean: psycopg.Connection,
) -> None:
    body = {"phone_numbers": [ALICE], "requester": "dpo"}
    first = post(erase_url, PRIVACY_KEY, body, request_id="dpo-7")
    again = post(erase_url, PRIVACY_KEY, body, request_id="dpo-7")
    assert (first.json()["erasures"][0]["hot_rows"], again.json()["erasures"][0]["hot_rows"]) == (
        5,
        0,
    )
    assert clean.execute("SELECT request_id, hot_rows FROM private.sms_erasures").fetchall() == [
        ("dpo-7", 5)
    ]


def test_erase_reports_an_incomplete_erasure_as_503_with_its_receipt(
    erase_url: str,
    settings: Settings,
    old_sms: list[uuid.UUID],
    retention_database_url: str,
    bucket_name: str,
) -> None:
    archive.run(retention_for(settings))
    broken = retention_settings(
        retention_database_url, "http://127.0.0.1:9", bucket_name, privacy_api_keys=PRIVACY_KEY
    )
    runtime.use(runtime.Services(broken))
    response = post(erase_url, PRIVACY_KEY, {"phone_numbers": [ALICE], "requester": "dpo"})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(broken.retry_after_seconds)
    result = response.json()["erasures"][0]
    assert (response.json()["complete"], result["complete"], result["hot_rows"]) == (
        False,
        False,
        1,
    )
    assert "Send the same request again" in result["incomplete_reason"]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"phone_numbers": ["not a number"], "requester": "dpo"}, "phone_numbers",
         "phone_numbers: item 0 is not a phone number"),
        ({"phone_numbers": [ALICE, "06 12 34 50 01"], "requester": "dpo"}, "phone_numbers",
         "phone_numbers: item 1 is the same number as item 0"),
        ({"phone_numbers": [ALICE]}, "requester", "requester: Field required"),
        ({"phone_numbers": [], "requester": "dpo"}, "phone_numbers", None),
        ({"phone_numbers": [ALICE], "requester": "dpo", "extra": 1}, "extra",
         "extra: unknown field"),
        # Only true or false: a flag read loosely ("no", 0) would erase for real
        # (found by Schemathesis).
        ({"phone_numbers": [ALICE], "requester": "dpo", "dry_run": 0}, "dry_run", None),
        ({"phone_numbers": [ALICE], "requester": "dpo", "dry_run": "no"}, "dry_run", None),
        # Postgres text cannot hold NUL: refused here rather than failing as a 500
        # (found by Schemathesis).
        ({"phone_numbers": [ALICE], "requester": "dpo\x00"}, "requester", None),
        # The audit record is read by people: no forged lines, no terminal escapes.
        ({"phone_numbers": [ALICE], "requester": "dpo\ncompleted: yes"}, "requester",
         "requester: must not contain control characters"),
        ({"phone_numbers": [ALICE], "requester": "dpo \x1b[2K"}, "requester", None),
    ],
)  # fmt: skip
def test_erase_rejects_bad_requests_naming_the_field(
    erase_url: str,
    settings: Settings,
    old_sms: list[uuid.UUID],
    clean: psycopg.Connection,
    body: dict[str, Any],
    field: str,
    message: str | None,
) -> None:
    response = post(erase_url, PRIVACY_KEY, body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == field
    if message:
        assert error["message"] == message
    assert "12 34 50 01" not in response.text
    assert clean.execute("SELECT count(*) FROM private.sms_erasures").fetchone() == (0,)


def test_erase_refuses_a_request_id_another_requester_used(
    erase_url: str, settings: Settings, old_sms: list[uuid.UUID], clean: psycopg.Connection
) -> None:
    body = {"phone_numbers": [ALICE], "requester": "DPO ticket 1"}
    first = post(erase_url, PRIVACY_KEY, body, request_id="DPO-1")
    assert first.status_code == 200, first.text
    other = post(erase_url, PRIVACY_KEY, body | {"requester": "someone else"}, request_id="DPO-1")
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "conflict"
    requesters = clean.execute(
        "SELECT DISTINCT requester FROM private.sms_erasures WHERE request_id = 'DPO-1'"
    ).fetchall()
    assert requesters == [("DPO ticket 1",)]


def test_retention_with_the_archive_unreachable_is_503_and_deletes_nothing(
    retention_url: str,
    settings: Settings,
    old_sms: list[uuid.UUID],
    retention_database_url: str,
    bucket_name: str,
    clean: psycopg.Connection,
) -> None:
    broken = retention_settings(
        retention_database_url, "http://127.0.0.1:9", bucket_name, retention_api_keys=SCHEDULER_KEY
    )
    runtime.use(runtime.Services(broken))
    response = post(retention_url, SCHEDULER_KEY)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(broken.retry_after_seconds)
    assert clean.execute("SELECT count(*) FROM agent_sms").fetchone() == (len(old_sms) + 8,)


@pytest.mark.parametrize("target", ["retention", "erase"])
def test_a_body_over_64_kib_is_413(
    retention_url: str, erase_url: str, settings: Settings, target: str
) -> None:
    url, key = (retention_url, SCHEDULER_KEY) if target == "retention" else (erase_url, PRIVACY_KEY)
    body = {"requester": "x" * 70_000}
    response = post(url, key, body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("key", [None, "wrong" * 10, SCHEDULER_KEY])
def test_erase_refuses_any_other_key_and_erases_nothing(
    erase_url: str,
    settings: Settings,
    old_sms: list[uuid.UUID],
    clean: psycopg.Connection,
    key: str | None,
) -> None:
    response = post(erase_url, key, {"phone_numbers": [ALICE], "requester": "dpo"})
    assert response.status_code == 401
    assert clean.execute(
        "SELECT count(*) FROM agent_sms WHERE phone_number = %s", (ALICE,)
    ).fetchone() == (5,)


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [("text/plain", b'{"dry_run": true}', 415), ("application/json", b'{"dry_run": tru', 400)],
)
def test_both_refuse_a_body_that_is_not_json(
    retention_url: str,
    erase_url: str,
    settings: Settings,
    clean: psycopg.Connection,
    content_type: str,
    body: bytes,
    status: int,
) -> None:
    for url, key in ((retention_url, SCHEDULER_KEY), (erase_url, PRIVACY_KEY)):
        headers = {"Authorization": f"Bearer {key}", "Content-Type": content_type}
        response = httpx.post(url, content=body, headers=headers, timeout=30)
        assert response.status_code == status, response.text
    assert clean.execute("SELECT count(*) FROM private.sms_erasures").fetchone() == (0,)


def test_both_accept_only_post(retention_url: str, erase_url: str, settings: Settings) -> None:
    for url in (retention_url, erase_url):
        response = httpx.get(url)
        assert (response.status_code, response.headers["Allow"]) == (405, "POST")


# --- the command line ---------------------------------------------------------------


def run_cli(settings: Settings, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    environment = {
        key.upper(): value
        for key, value in {
            "database_session_url": settings.database_session_url.get_secret_value()
            if settings.database_session_url
            else "",
            "archive_bucket": settings.archive_bucket or "",
            "s3_endpoint_url": str(settings.s3_endpoint_url),
            "archive_index_secret": settings.archive_index_secret.get_secret_value()
            if settings.archive_index_secret
            else "",
            "archive_batch_size": str(settings.archive_batch_size),
        }.items()
    }
    return subprocess.run(
        [sys.executable, "-m", "functions.retention", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ | environment | {"PYTHONPATH": str(ROOT)},
        timeout=120,
        check=False,
    )


def test_the_command_line_archives_with_a_progress_bar(
    settings: Settings, old_sms: list[uuid.UUID], retention: Retention
) -> None:
    forecast = run_cli(settings, "archive", "--dry-run")
    assert forecast.returncode == 0, forecast.stderr
    assert json.loads(forecast.stdout)["archived_rows"] == 9

    done = run_cli(settings, "archive")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["archived_objects"] == 4
    assert "9/9" in done.stderr  # the progress bar's last state


def test_the_command_line_erases_numbers_read_from_stdin(
    settings: Settings, old_sms: list[uuid.UUID], retention: Retention, clean: psycopg.Connection
) -> None:
    done = run_cli(settings, "erase", "--file", "-", "--requester", "dpo", stdin=f"{ALICE}\n")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["erasures"][0]["hot_rows"] == 5
    assert traces(clean, retention, [ALICE]) == []

    bad = run_cli(settings, "erase", "--requester", "dpo", "abc")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: phone_numbers: item 0 is not a phone number"


def test_erase_takes_numbers_ingest_would_refuse_today(
    erase_url: str, settings: Settings, tenants: Tenants, clean: psycopg.Connection
) -> None:
    """The demo data's fiction range (+33 6 39 98) is not 'valid' for phonenumbers, yet
    a number stored before its range changed must still be erasable."""
    insert_contact_sms(clean, tenants.deployment_b, days_ago(1), "+33639980001", {})
    response = post(erase_url, PRIVACY_KEY, {"phone_number": "06 39 98 00 01", "requester": "dpo"})
    assert response.status_code == 200, response.text
    assert response.json()["erasures"][0]["hot_rows"] == 1


def test_on_lambda_the_schedule_runs_retention_and_erase_answers_its_url(
    settings: Settings, old_sms: list[uuid.UUID], retention: Retention, clean: psycopg.Connection
) -> None:
    from functions.retention import aws_lambda

    scheduled = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
    assert aws_lambda.retention(scheduled, None)["archived_rows"] == 9

    event = function_url_event(
        "POST",
        headers={"Authorization": f"Bearer {PRIVACY_KEY}", "Content-Type": "application/json"},
        body=json.dumps({"phone_numbers": [ALICE], "requester": "dpo"}).encode(),
    )
    response = aws_lambda.erase(event, None)
    assert response["statusCode"] == 200, response
    assert body_of(response)["erasures"][0]["archived_rows"] == 4
    assert traces(clean, retention, [ALICE]) == []


def test_a_failed_scheduled_run_fails_the_invocation_with_its_code_only(
    settings: Settings, old_sms: list[uuid.UUID], database_url: str
) -> None:
    from functions.retention import aws_lambda
    from shared.lambda_adapter import ScheduledRunError

    with psycopg.connect(database_url, autocommit=True) as other_run:
        other_run.execute("SELECT pg_advisory_lock(private.retention_run_lock_key())")
        with pytest.raises(ScheduledRunError) as failed:
            aws_lambda.retention({"source": "aws.events"}, None)
    assert str(failed.value) == "conflict"
    assert failed.value.__cause__ is None
    assert failed.value.__suppress_context__

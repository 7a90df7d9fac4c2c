"""Reconcile as its schedule invokes it on Lambda, against the stand-in for Twilio: a run
that could not deal with an SMS it took fails the invocation once its report and
metrics are out; a run that paced itself (429) does not."""

from __future__ import annotations

import logging
import socket

import psycopg
import pytest

from functions.twilio_status import aws_lambda
from functions.twilio_status.reconcile import ReconcileRun
from shared import runtime
from shared.lambda_adapter import ScheduledRunError
from tests.support import emf
from tests.support.builders import Tenants
from tests.support.status_callbacks import MAIN_ACCOUNT, old_sms, row, use_settings
from tools.fake_twilio import FakeTwilio

SCHEDULED = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
FUNCTION = "voipia-sms-tracking-prod-reconcile"


@pytest.fixture(autouse=True)
def on_lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", FUNCTION)


def test_a_complete_run_returns_its_report_and_writes_its_counts(
    twilio_api: FakeTwilio,
    tenants: Tenants,
    clean: psycopg.Connection,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lost = old_sms(clean, tenants)
    twilio_api.add(MAIN_ACCOUNT, lost, status="delivered", price="-0.075")
    old_sms(clean, tenants)  # Twilio does not know it
    report = aws_lambda.reconcile(SCHEDULED, None)
    assert (report["changed"], report["not_found"], report["errors"]) == (1, 1, 0)
    assert emf.values(capsys.readouterr().out) == [
        {"Function": FUNCTION, "ReconcileChanged": 1, "ReconcileNotFound": 1,
         "ReconcileErrors": 0}
    ]  # fmt: skip


def test_a_run_with_a_bad_answer_fails_after_its_report_and_metrics(
    twilio_api: FakeTwilio,
    tenants: Tenants,
    clean: psycopg.Connection,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = old_sms(clean, tenants)
    twilio_api.add(MAIN_ACCOUNT, broken, status="teleported")
    fine = old_sms(clean, tenants)
    twilio_api.add(MAIN_ACCOUNT, fine, status="delivered", price="-0.07")
    with caplog.at_level(logging.INFO), pytest.raises(ScheduledRunError) as failed:
        aws_lambda.reconcile(SCHEDULED, None)
    assert str(failed.value) == "incomplete"
    assert emf.values(capsys.readouterr().out) == [
        {"Function": FUNCTION, "ReconcileChanged": 1, "ReconcileNotFound": 0,
         "ReconcileErrors": 1}
    ]  # fmt: skip
    (logged,) = [r.__dict__ for r in caplog.records if r.getMessage() == "scheduled run incomplete"]
    assert (logged["errors"], logged["changed"]) == (1, 1)
    # What the run did stays done.
    assert row(clean, fine)["status"] == "delivered"


def test_a_rate_limited_run_is_complete(
    twilio_api: FakeTwilio, tenants: Tenants, clean: psycopg.Connection
) -> None:
    sids = [old_sms(clean, tenants) for _ in range(3)]
    for sid in sids:
        twilio_api.add(MAIN_ACCOUNT, sid, status="delivered", price="-0.075")
    twilio_api.rate_limit_after = 1
    report = aws_lambda.reconcile(SCHEDULED, None)
    assert (report["asked"], report["rate_limited"]) == (1, True)


def test_twilio_unreachable_fails_the_run_with_its_code_and_no_metrics(
    services: runtime.Services,
    tenants: Tenants,
    clean: psycopg.Connection,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old_sms(clean, tenants)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    use_settings(services, twilio_api_base_url=closed)
    with pytest.raises(ScheduledRunError, match=r"^unavailable$"):
        aws_lambda.reconcile(SCHEDULED, None)
    assert emf.documents(capsys.readouterr().out) == []


def test_refused_credentials_fail_the_run_as_not_configured(
    twilio_api: FakeTwilio,
    tenants: Tenants,
    clean: psycopg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    old_sms(clean, tenants)
    twilio_api.tokens[MAIN_ACCOUNT] = "rotated"
    with caplog.at_level(logging.ERROR), pytest.raises(ScheduledRunError) as failed:
        aws_lambda.reconcile(SCHEDULED, None)
    assert str(failed.value) == "not_configured"
    assert any(MAIN_ACCOUNT in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("run", "complete"),
    [
        (ReconcileRun(candidates=5, asked=5, changed=2), True),
        (ReconcileRun(candidates=5, asked=2, rate_limited=True), True),
        (ReconcileRun(candidates=5, asked=5, errors=1), False),
        (ReconcileRun(candidates=5, asked=2, twilio_unreachable=True), False),
    ],
)
def test_what_a_complete_run_is(run: ReconcileRun, complete: bool) -> None:
    assert run.complete is complete
    assert "complete" not in run.as_json()  # the answer's schema is unchanged

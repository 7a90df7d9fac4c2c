"""The retention run as the daily schedule invokes it on Lambda: a run its time budget
cut short fails the invocation, after its report and metrics, so Lambda's Errors, the
alarms and the on-failure destination see it; the next run resumes."""

from __future__ import annotations

import logging
import uuid

import pytest

from functions.retention import archive
from functions.retention.context import Retention
from shared.lambda_adapter import ScheduledRunError
from shared.settings import Settings
from tests.support import emf
from tests.support.retention import object_versions

pytestmark = pytest.mark.db

SCHEDULED = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
FUNCTION = "voipia-sms-tracking-prod-retention"


@pytest.fixture(autouse=True)
def on_lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", FUNCTION)


def test_a_complete_run_returns_its_report_and_says_so_in_its_metrics(
    served_settings: Settings,
    old_sms: list[uuid.UUID],
    retention: Retention,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from functions.retention import aws_lambda

    report = aws_lambda.retention(SCHEDULED, None)
    assert (report["complete"], report["archived_rows"]) == (True, 9)
    assert emf.values(capsys.readouterr().out) == [
        {"Function": FUNCTION, "RetentionComplete": 1, "RetentionArchivedRows": 9,
         "RetentionExpiredRows": 0}
    ]  # fmt: skip


def test_a_run_out_of_time_fails_after_its_report_and_metrics_and_the_next_resumes(
    served_settings: Settings,
    old_sms: list[uuid.UUID],
    retention: Retention,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from functions.retention import aws_lambda

    clock = iter(range(0, 10_000, 400))  # each look at the clock: 400 s later
    monkeypatch.setattr(archive, "clock", lambda: next(clock))
    with caplog.at_level(logging.INFO), pytest.raises(ScheduledRunError) as failed:
        aws_lambda.retention(SCHEDULED, None)
    assert str(failed.value) == "incomplete"
    assert failed.value.__cause__ is None
    # The report, as logged, and the metrics: the one object archived before the budget ran out.
    finished = [r.__dict__ for r in caplog.records if r.getMessage() == "retention run finished"]
    assert [(r["complete"], r["archived_objects"]) for r in finished] == [(False, 1)]
    assert [
        r.levelname for r in caplog.records if r.getMessage() == "scheduled run incomplete"
    ] == ["ERROR"]
    (counted,) = emf.values(capsys.readouterr().out)
    assert (counted["RetentionComplete"], counted["RetentionArchivedRows"]) == (0, 4)
    assert len(object_versions(retention)) == 1

    monkeypatch.undo()
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", FUNCTION)
    again = aws_lambda.retention(SCHEDULED, None)
    assert (again["complete"], again["archived_rows"]) == (True, 5)
    assert emf.values(capsys.readouterr().out)[0]["RetentionComplete"] == 1

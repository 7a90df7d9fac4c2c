"""The exchange-rate job as its schedule invokes it on Lambda: its report, its metrics
(PricesWaitingForRate has an alarm), and a source it cannot use failing the run with the
code the other scheduled jobs use: `unavailable` when a later run may succeed,
`not_configured` when ECB_RATES_URL is to fix."""

from __future__ import annotations

import logging
import socket
from datetime import timedelta

import psycopg
import pytest

from functions.billing import aws_lambda
from shared import runtime
from shared.db import PostgresDatabase
from shared.lambda_adapter import ScheduledRunError
from tests.functions.billing.conftest import today, usd_sms, use_source, weekday_before
from tests.support import emf
from tests.support.builders import Tenants
from tools.fake_ecb import DAILY, HISTORY, FakeEcb

pytestmark = pytest.mark.db

SCHEDULED = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
FUNCTION = "voipia-sms-tracking-prod-exchange_rates"


@pytest.fixture(autouse=True)
def on_lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", FUNCTION)


def test_a_run_returns_its_report_and_writes_its_counts(
    ecb: FakeEcb,
    tenants: Tenants,
    clean: psycopg.Connection,
    capsys: pytest.CaptureFixture[str],
) -> None:
    usd_sms(clean, tenants, weekday_before(today(), 1))
    report = aws_lambda.exchange_rates(SCHEDULED, None)
    assert (report["history"], report["priced"], report["waiting"]) == (True, 1, 0)
    assert report["oldest_waiting"] is None
    assert set(report) == {"rate_date", "history", "fetched", "stored", "priced", "waiting",
                           "oldest_waiting"}  # fmt: skip
    assert emf.values(capsys.readouterr().out) == [
        {"Function": FUNCTION, "ExchangeRatesStored": report["stored"], "PricesConverted": 1,
         "PricesWaitingForRate": 0}
    ]  # fmt: skip


def test_sms_no_rate_can_price_are_counted_for_the_alarm_and_the_run_succeeds(
    ecb: FakeEcb,
    tenants: Tenants,
    clean: psycopg.Connection,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The only USD rate before its send date is more than 7 days older: it waits, and
    the run says so in PricesWaitingForRate (alarm prices-waiting) and a WARNING line."""
    last_usd = weekday_before(today() - timedelta(days=20), 4)
    ecb.withdraw("USD", after=last_usd)
    usd_sms(clean, tenants, last_usd + timedelta(days=10))
    with caplog.at_level(logging.WARNING):
        report = aws_lambda.exchange_rates(SCHEDULED, None)
    assert (report["priced"], report["waiting"]) == (0, 1)
    (document,) = emf.values(capsys.readouterr().out)
    assert document["PricesWaitingForRate"] == 1
    (warning,) = [
        r for r in caplog.records if getattr(r, "code", None) == "prices_waiting_for_rate"
    ]
    assert "1 SMS still wait for a rate" in warning.getMessage()


def test_the_ecb_unreachable_fails_the_run_as_unavailable_with_no_metrics(
    database_url: str,
    shared_db: PostgresDatabase,
    clean: psycopg.Connection,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/stats/eurofxref/"
    use_source(database_url, shared_db, closed)
    with caplog.at_level(logging.ERROR), pytest.raises(ScheduledRunError) as failed:
        aws_lambda.exchange_rates(SCHEDULED, None)
    assert str(failed.value) == "unavailable"
    assert emf.documents(capsys.readouterr().out) == []
    (logged,) = [r for r in caplog.records if r.getMessage().startswith("scheduled run failed")]
    assert "eurofxref-daily.xml cannot be reached" in logged.getMessage()


@pytest.mark.parametrize(
    ("status", "code"),
    [(503, "unavailable"), (500, "unavailable"), (429, "unavailable"), (403, "unavailable"),
     (404, "not_configured"), (410, "not_configured")],
)  # fmt: skip
def test_an_error_from_the_ecb_fails_the_run_with_its_code(
    ecb: FakeEcb, clean: psycopg.Connection, status: int, code: str
) -> None:
    ecb.status = status
    with pytest.raises(ScheduledRunError) as failed:
        aws_lambda.exchange_rates(SCHEDULED, None)
    assert str(failed.value) == code
    assert ecb.requests == {DAILY: 1}


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>Bad gateway</body></html>",
        b'<?xml version="1.0"?><gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01">',
        b"",
    ],
)
def test_a_file_that_is_not_the_ecbs_fails_the_run_as_unavailable(
    ecb: FakeEcb,
    clean: psycopg.Connection,
    body: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ecb.body = body
    with caplog.at_level(logging.ERROR), pytest.raises(ScheduledRunError, match=r"^unavailable$"):
        aws_lambda.exchange_rates(SCHEDULED, None)
    (logged,) = [r for r in caplog.records if r.getMessage().startswith("scheduled run failed")]
    assert "eurofxref-daily.xml could not be read" in logged.getMessage()
    assert ecb.requests[HISTORY] == 0


def test_a_database_it_cannot_reach_fails_the_run_as_unavailable(
    database_url: str, ecb: FakeEcb, clean: psycopg.Connection
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nowhere = f"postgresql://sms_api@127.0.0.1:{probe.getsockname()[1]}/postgres"
    db = PostgresDatabase(nowhere, pool_size=1, timeout=1)
    try:
        use_source(nowhere, db, ecb.rates_url)
        with pytest.raises(ScheduledRunError, match=r"^unavailable$"):
            aws_lambda.exchange_rates(SCHEDULED, None)
    finally:
        db.close()
        runtime.use(None)

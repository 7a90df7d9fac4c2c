"""exchange_rates over real HTTP, as make dev serves it (and any HTTP scheduler could):
POST runs the job and answers its report; the source unreachable is a 503 with
Retry-After; a source that names no such file, a 500 not_configured."""

from __future__ import annotations

import socket

import httpx
import psycopg
import pytest

from shared.db import PostgresDatabase
from tests.functions.billing.conftest import today, usd_sms, use_source, weekday_before
from tests.support.builders import Tenants
from tools.fake_ecb import FakeEcb

pytestmark = pytest.mark.db


def test_post_runs_the_job_and_answers_its_report(
    rates_url: str, ecb: FakeEcb, tenants: Tenants, clean: psycopg.Connection
) -> None:
    usd_sms(clean, tenants, weekday_before(today(), 3))
    answer = httpx.post(rates_url, headers={"X-Request-Id": "rates-run-1"}, timeout=60)
    assert answer.status_code == 200
    assert answer.headers["X-Request-Id"] == "rates-run-1"
    report = answer.json()
    assert (report["history"], report["priced"], report["waiting"]) == (True, 1, 0)
    assert report["stored"] == report["fetched"] - 2  # the daily file's two, read twice
    again = httpx.post(rates_url, timeout=60).json()
    assert (again["history"], again["stored"], again["priced"]) == (False, 0, 0)


def test_other_methods_are_refused(rates_url: str) -> None:
    answer = httpx.get(rates_url, timeout=30)
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "POST"


def test_the_source_unreachable_is_a_503_to_retry(
    rates_url: str, database_url: str, shared_db: PostgresDatabase
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/"
    use_source(database_url, shared_db, closed)
    answer = httpx.post(rates_url, timeout=60)
    assert answer.status_code == 503
    assert answer.headers["Retry-After"]
    error = answer.json()["error"]
    assert error["code"] == "unavailable"
    assert "eurofxref-daily.xml cannot be reached" in error["message"]


def test_a_source_without_the_files_is_a_500_not_configured(rates_url: str, ecb: FakeEcb) -> None:
    ecb.status = 404
    answer = httpx.post(rates_url, timeout=60)
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "not_configured"

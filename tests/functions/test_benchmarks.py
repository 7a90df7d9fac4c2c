"""The benchmarks still run end to end (tiny sizes; the figures are not checked)."""

from __future__ import annotations

import pytest

from benchmarks import (
    coldstart,
    erasure_vacuum,
    ingest,
    kpis,
    metrics,
    pricing,
    retention,
    spillover,
    status,
)


def test_the_ingest_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    ingest.main(["--existing", "1000", "--batches", "2", "--singles", "3"])
    out = capsys.readouterr().out
    assert "bulk" in out
    assert "single" in out
    assert "2 concurrent clients" in out
    assert "with / without" in out


def test_the_status_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    status.main(["--existing", "1000", "--callbacks", "20"])
    out = capsys.readouterr().out
    assert "Python side" in out
    assert "4 instances at once" in out
    assert "endpoint / bare SQL" in out
    assert "client processes" in out


def test_the_metrics_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    metrics.main(["--rows", "20000", "--repeat", "1"])
    assert "every shared figure agrees with the baseline" in capsys.readouterr().out


def test_the_kpis_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    kpis.main(["--rows", "20000", "--repeat", "1", "--windows", "30", "366"])
    out = capsys.readouterr().out
    assert "every answer equals the row-by-row reference" in out
    assert "slowest median" in out


def test_the_retention_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    retention.main(["--sizes", "3000", "--batch", "500"])
    out = capsys.readouterr().out
    assert "peak memory above start" in out
    assert "full scan / index" in out


def test_the_erasure_vacuum_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    erasure_vacuum.main(["--rows", "5000", "--repeat", "1"])
    out = capsys.readouterr().out
    assert "erasure's database step" in out
    assert "as erasure runs it" in out


def test_the_coldstart_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    coldstart.main(["--repeat", "1", "--bytecode", "compiled"])
    out = capsys.readouterr().out
    assert "import / yardstick" in out
    assert "first request, ms" in out
    for function in ("ingest_sms", "twilio_status", "metrics", "erase"):
        assert f"| {function} |" in out


def test_the_pricing_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    pricing.main(["--sms", "300", "--history-days", "1"])
    out = capsys.readouterr().out
    assert "| one fetch per SMS (before) | 300 |" in out
    assert "| Messages list (now) | 1 |" in out
    assert "every SMS priced alike by both paths (300)" in out


def test_the_spillover_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    spillover.main(["--sms", "20", "--seconds", "5", "--existing", "1000"])
    out = capsys.readouterr().out
    assert "every one parked" in out
    assert "drain / direct" in out
    assert "every report applied once" in out

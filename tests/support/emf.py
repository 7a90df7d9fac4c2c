"""Reading the metrics a function wrote (CloudWatch Embedded Metric Format) back from
its stdout, and holding each document to the format's specification, as CloudWatch
Logs would before extracting anything from it."""

from __future__ import annotations

import json
import time
from numbers import Real
from typing import Any

# The units CloudWatch accepts (the MetricDatum's StandardUnit).
UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes",
    "Gigabytes", "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits",
    "Percent", "Count", "Bytes/Second", "Kilobytes/Second", "Megabytes/Second",
    "Gigabytes/Second", "Terabytes/Second", "Bits/Second", "Kilobits/Second",
    "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
}  # fmt: skip


def documents(stdout: str) -> list[dict[str, Any]]:
    """Every EMF document among these lines, each checked against the specification."""
    found = []
    for line in stdout.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "_aws" in entry:
            assert_valid(entry)
            found.append(entry)
    return found


def values(stdout: str) -> list[dict[str, Any]]:
    """Each document's dimension and metric values, without the metadata."""
    return [{k: v for k, v in doc.items() if k != "_aws"} for doc in documents(stdout)]


def assert_valid(document: dict[str, Any]) -> None:
    """The rules CloudWatch Logs applies to an EMF document, or it extracts nothing."""
    metadata = document["_aws"]
    assert isinstance(metadata, dict)
    stamp = metadata["Timestamp"]
    # Milliseconds since the epoch, as an integer, and now (a timestamp more than two
    # weeks past or two hours ahead is dropped).
    assert isinstance(stamp, int)
    assert not isinstance(stamp, bool)
    assert abs(stamp - time.time() * 1000) < 3_600_000
    directives = metadata["CloudWatchMetrics"]
    assert isinstance(directives, list)
    assert directives
    for directive in directives:
        assert set(directive) <= {"Namespace", "Dimensions", "Metrics"}
        assert isinstance(directive["Namespace"], str)
        assert 0 < len(directive["Namespace"]) <= 255
        for dimension_set in directive["Dimensions"]:
            assert isinstance(dimension_set, list)
            assert len(dimension_set) <= 30
            for key in dimension_set:
                assert isinstance(document[key], str)
                assert 0 < len(document[key]) <= 1024
        metrics = directive["Metrics"]
        assert isinstance(metrics, list)
        assert 0 < len(metrics) <= 100
        for metric in metrics:
            assert set(metric) <= {"Name", "Unit", "StorageResolution"}
            assert isinstance(metric["Name"], str)
            assert 0 < len(metric["Name"]) <= 1024
            assert metric.get("Unit", "None") in UNITS
            value = document[metric["Name"]]
            numbers = value if isinstance(value, list) else [value]
            assert numbers
            assert len(numbers) <= 100
            assert all(isinstance(n, Real) and not isinstance(n, bool) for n in numbers), value

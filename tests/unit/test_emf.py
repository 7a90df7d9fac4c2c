"""Business metrics as EMF lines: the document, the line on stdout, and the HTTP
boundary counting its 5xx answers."""

from __future__ import annotations

import io
import json

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from shared import emf
from shared.db import PostgresFailure, classify
from shared.http import endpoint, json_response
from tests.support import emf as emf_lines


def test_a_document_is_valid_emf_with_its_values_at_the_root() -> None:
    document = emf.document(
        "ingest_sms", {emf.HTTP_5XX: 1, emf.HTTP_503: True}, now=1_767_225_600.5
    )
    assert document["_aws"] == {
        "Timestamp": 1_767_225_600_500,
        "CloudWatchMetrics": [
            {
                "Namespace": emf.NAMESPACE,
                "Dimensions": [[emf.DIMENSION]],
                "Metrics": [
                    {"Name": emf.HTTP_5XX, "Unit": "Count"},
                    {"Name": emf.HTTP_503, "Unit": "Count"},
                ],
            }
        ],
    }
    assert {k: v for k, v in document.items() if k != "_aws"} == {
        "Function": "ingest_sms",
        "Http5xx": 1,
        "Http503": 1,  # a bool becomes a number: EMF takes no JSON true
    }


def test_emit_writes_one_valid_line_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    emf.emit("retention", {emf.RETENTION_COMPLETE: 0, emf.RETENTION_ARCHIVED_ROWS: 12})
    out = capsys.readouterr().out
    assert out.endswith("\n")
    assert out.count("\n") == 1
    (document,) = emf_lines.documents(out)
    assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "VoipiaSms"
    assert (document["RetentionComplete"], document["RetentionArchivedRows"]) == (0, 12)


def test_only_catalogued_metrics_can_be_written() -> None:
    """The alarms are checked against the catalogue, so nothing outside it is written."""
    with pytest.raises(ValueError, match="Http502"):
        emf.document("ingest_sms", {"Http502": 1})


def test_a_broken_stdout_never_fails_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr("sys.stdout", closed)
    emf.emit("reconcile", {emf.RECONCILE_ERRORS: 1})


def test_the_dimension_is_the_lambda_functions_name_when_there_is_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    assert emf.function_name("erase") == "erase"
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "voipia-sms-tracking-prod-erase")
    assert emf.function_name("erase") == "voipia-sms-tracking-prod-erase"


@endpoint("POST")
def database_down(request: Request) -> Response:
    raise classify(PostgresFailure("08006", "connection to 10.0.0.5 lost"), retry_after=9)


@endpoint("POST")
def broken(request: Request) -> Response:
    raise RuntimeError("a bug")


@endpoint("POST")
def fine(request: Request) -> Response:
    return json_response({"ok": True})


@endpoint("POST")
def incomplete(request: Request) -> Response:
    return json_response({"complete": False}, 503, {"Retry-After": "5"})


def call(handler: object, method: str = "POST") -> Response:
    request = Request(EnvironBuilder(method=method).get_environ())
    response = handler(request)  # type: ignore[operator]
    assert isinstance(response, Response)
    return response


@pytest.mark.parametrize(
    ("handler", "status", "counted"),
    [
        (database_down, 503, {"Http5xx": 1, "Http503": 1}),
        (incomplete, 503, {"Http5xx": 1, "Http503": 1}),
        (broken, 500, {"Http5xx": 1, "Http503": 0}),
    ],
)
def test_the_boundary_counts_each_5xx_it_answers(
    handler: object,
    status: int,
    counted: dict[str, int],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    assert call(handler).status_code == status
    name = getattr(handler, "__name__", "")
    assert emf_lines.values(capsys.readouterr().out) == [{"Function": name, **counted}]


def test_the_boundary_counts_nothing_below_500(capsys: pytest.CaptureFixture[str]) -> None:
    assert call(fine).status_code == 200
    assert call(fine, "GET").status_code == 405
    assert emf_lines.documents(capsys.readouterr().out) == []


def test_a_503_names_the_lambda_function_that_answered_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "voipia-sms-tracking-prod-ingest_sms")
    response = call(database_down)
    assert (response.status_code, response.headers["Retry-After"]) == (503, "9")
    (document,) = emf_lines.documents(capsys.readouterr().out)
    assert document["Function"] == "voipia-sms-tracking-prod-ingest_sms"
    # Nothing of the request or the failure's text is in the metric.
    assert "10.0.0.5" not in json.dumps(document)

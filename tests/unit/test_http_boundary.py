"""The error boundary: every failure becomes {"error": {...}} and nothing leaks."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from shared.db import PostgresFailure, classify
from shared.errors import NotFoundError
from shared.http import endpoint, json_response
from shared.logs import JsonFormatter


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int


def call(handler: object, method: str = "POST", **kwargs: object) -> Response:
    request = Request(EnvironBuilder(method=method, **kwargs).get_environ())  # type: ignore[arg-type]
    response = handler(request)  # type: ignore[operator]
    assert isinstance(response, Response)
    return response


@endpoint("POST")
def echo(request: Request) -> Response:
    payload = Payload.model_validate(request.get_json())
    return json_response({"count": payload.count}, 201)


@endpoint("GET", "POST")
def broken(request: Request) -> Response:
    raise RuntimeError("SELECT secret FROM agent_sms WHERE phone_number = '+33639980000'")


@endpoint("POST")
def database_down(request: Request) -> Response:
    raise classify(PostgresFailure("08006", "connection to 10.0.0.5 lost"), retry_after=9)


@endpoint("POST")
def missing(request: Request) -> Response:
    raise NotFoundError("No SMS with that SID.", field="provider_message_sid")


def body(response: Response) -> object:
    return json.loads(response.get_data())


def test_success_passes_through_with_a_request_id() -> None:
    response = call(echo, json={"count": 3})
    assert response.status_code == 201
    assert body(response) == {"count": 3}
    assert len(response.headers["X-Request-Id"]) == 32


def test_a_safe_request_id_is_kept_and_an_unsafe_one_replaced() -> None:
    kept = call(echo, json={"count": 1}, headers={"X-Request-Id": "n8n-exec-42"})
    assert kept.headers["X-Request-Id"] == "n8n-exec-42"
    replaced = call(echo, json={"count": 1}, headers={"X-Request-Id": "<script>"})
    assert replaced.headers["X-Request-Id"] != "<script>"


def test_a_wrong_method_is_405_with_allow() -> None:
    response = call(echo, method="GET")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert body(response) == {"error": {"code": "method_not_allowed", "message": "Use POST."}}


def test_validation_errors_name_the_field_not_the_value() -> None:
    response = call(echo, json={"count": "+33639980000x"})
    assert response.status_code == 422
    error = body(response)["error"]  # type: ignore[index]
    assert error["field"] == "count"
    assert "+33639980000" not in json.dumps(error)
    unknown = body(call(echo, json={"count": 1, "extra": 2}))
    assert unknown == {
        "error": {"code": "invalid_input", "message": "extra: unknown field", "field": "extra"}
    }


def test_an_unexpected_error_is_a_bare_500(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        response = call(broken)
    assert response.status_code == 500
    text = response.get_data(as_text=True)
    for leak in ("SELECT", "Traceback", "+33639980000"):
        assert leak not in text
    assert body(response)["error"]["code"] == "internal_error"  # type: ignore[index]
    formatted = JsonFormatter().format(caplog.records[-1])
    assert "+33639980000" not in formatted
    assert json.loads(formatted)["request_id"] == response.headers["X-Request-Id"]


def test_unavailable_is_503_with_retry_after_and_no_internals() -> None:
    response = call(database_down)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "9"
    assert "10.0.0.5" not in response.get_data(as_text=True)


def test_service_errors_keep_their_status_message_and_field() -> None:
    response = call(missing)
    assert response.status_code == 404
    assert body(response) == {
        "error": {
            "code": "not_found",
            "message": "No SMS with that SID.",
            "field": "provider_message_sid",
        }
    }


def test_validation_error_is_the_pydantic_one() -> None:
    with pytest.raises(ValidationError):
        Payload.model_validate({"count": "x"})


class Ids(BaseModel):
    client_id: uuid.UUID


@endpoint("POST")
def ids(request: Request) -> Response:
    Ids.model_validate(request.get_json())
    return json_response({})


def test_parse_errors_do_not_quote_the_input() -> None:
    response = call(ids, json={"client_id": "zzz-secret"})
    assert response.status_code == 422
    assert body(response) == {
        "error": {
            "code": "invalid_input",
            "message": "client_id: Input should be a valid UUID",
            "field": "client_id",
        }
    }

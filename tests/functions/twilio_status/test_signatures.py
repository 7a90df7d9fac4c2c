"""Callbacks signed exactly as Twilio signs them: what verifies, what is refused."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import psycopg
import pytest
from twilio.request_validator import RequestValidator

from shared import runtime
from tests.support.status_callbacks import (
    PUBLIC,
    SUB_TOKEN,
    SUBACCOUNT,
    TOKEN,
    callback,
    event_count,
    events,
    post,
    row,
    settings_for,
    use_settings,
)

DOCUMENTED_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}


def test_twilios_documented_example_validates_through_the_endpoint(
    status_url: str, clean: psycopg.Connection
) -> None:
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    signature = RequestValidator("12345").compute_signature(url, DOCUMENTED_PARAMS)
    assert signature == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    response = httpx.post(
        status_url + "/myapp.php?foo=1&bar=2",
        data=DOCUMENTED_PARAMS,
        headers={"X-Twilio-Signature": signature},
    )
    # The signature is accepted; the payload is a voice call, not a message status.
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "MessageSid"
    tampered = httpx.post(
        status_url + "/myapp.php?foo=1&bar=2",
        data=DOCUMENTED_PARAMS | {"Digits": "1235"},
        headers={"X-Twilio-Signature": signature},
    )
    assert tampered.status_code == 403


def test_a_valid_callback_is_200_with_an_empty_body(
    status_url: str, sms_sid: str, clean: psycopg.Connection
) -> None:
    response = post(status_url, callback(sms_sid, "delivered"))
    assert response.status_code == 200
    assert response.content == b""
    assert row(clean, sms_sid)["status"] == "delivered"


def test_both_take_only_post(status_url: str, reconcile_url: str) -> None:
    for url in (status_url + "/", reconcile_url):
        response = httpx.get(url, timeout=30)
        assert (response.status_code, response.headers["Allow"]) == (405, "POST")


def test_a_form_part_without_a_name_is_403_not_500(status_url: str, sms_sid: str) -> None:
    # Twilio never sends one, and the signature check cannot sort a nameless parameter
    # (found by Schemathesis, as a 500).
    body = (
        b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n"
        b'--b\r\nContent-Disposition: form-data; name="MessageSid"\r\n\r\n'
        + sms_sid.encode()
        + b"\r\n--b--\r\n"
    )
    response = httpx.post(
        status_url + "/",
        content=body,
        headers={
            "Content-Type": "multipart/form-data; boundary=b",
            "X-Twilio-Signature": "c2lnbmF0dXJl",
        },
        timeout=30,
    )
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "forbidden"


def test_an_unreachable_database_is_503_with_retry_after(
    status_url: str, services: runtime.Services, sms_sid: str
) -> None:
    # Twilio retries on a 5xx (with the connection overrides the README gives).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        down = f"postgresql://postgres@127.0.0.1:{probe.getsockname()[1]}/x"
    unreachable = runtime.Services(
        settings_for(down, database_timeout_seconds=1, retry_after_seconds=13)
    )
    runtime.use(unreachable)
    response = post(status_url, callback(sms_sid, "delivered"))
    unreachable.db.close()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "13"
    assert response.json()["error"]["code"] == "unavailable"


@pytest.mark.parametrize(
    "forgery",
    ["tampered", "wrong_token", "wrong_url", "missing_header", "unknown_account", "json"],
)
def test_forged_callbacks_are_403_and_touch_nothing(
    status_url: str, sms_sid: str, clean: psycopg.Connection, forgery: str
) -> None:
    params = callback(sms_sid, "failed", ErrorCode="30003")
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + "/", params)
    headers = {"X-Twilio-Signature": signature}
    body: dict[str, Any] = {"data": params}
    if forgery == "tampered":
        body = {"data": params | {"MessageStatus": "delivered"}}
    elif forgery == "wrong_token":
        headers["X-Twilio-Signature"] = RequestValidator("other").compute_signature(
            PUBLIC + "/", params
        )
    elif forgery == "wrong_url":
        headers["X-Twilio-Signature"] = RequestValidator(TOKEN).compute_signature(
            "https://attacker.example/", params
        )
    elif forgery == "missing_header":
        headers = {}
    elif forgery == "unknown_account":
        unknown = params | {"AccountSid": "AC" + "c" * 32}
        headers["X-Twilio-Signature"] = RequestValidator(TOKEN).compute_signature(
            PUBLIC + "/", unknown
        )
        body = {"data": unknown}
    elif forgery == "json":
        body = {"json": params}
    before = event_count(clean)
    response = httpx.post(status_url + "/", headers=headers, **body)
    assert response.status_code == 403
    assert event_count(clean) == before
    assert row(clean, sms_sid)["status"] == "sent"


def test_a_subaccount_signs_with_its_own_token(
    status_url: str, sms_sid: str, clean: psycopg.Connection
) -> None:
    params = callback(sms_sid, "delivered", AccountSid=SUBACCOUNT)
    assert post(status_url, params, token=TOKEN).status_code == 403
    assert post(status_url, params, token=SUB_TOKEN).status_code == 200


@pytest.mark.parametrize(
    "signed_url",
    ["https://mycompany.com:443/status?x=1", "https://mycompany.com/status?x=1"],
)
def test_a_url_with_or_without_its_port_validates(
    status_url: str, sms_sid: str, signed_url: str
) -> None:
    response = post(
        status_url, callback(sms_sid, "sent"), path="/status?x=1", signed_url=signed_url
    )
    assert response.status_code == 200


def test_a_callback_url_on_the_bare_host_validates(status_url: str, sms_sid: str) -> None:
    response = post(status_url, callback(sms_sid, "sent"), signed_url="https://mycompany.com")
    assert response.status_code == 200


def test_a_percent_encoded_path_validates_as_twilio_signed_it(
    status_url: str, sms_sid: str
) -> None:
    path = "/status%20cb/?tenant=a%26b"
    response = post(status_url, callback(sms_sid, "sent"), path=path)
    assert response.status_code == 200


@pytest.mark.parametrize(("public_base_url", "status"), [(PUBLIC, 403), (None, 500)])
def test_headers_a_client_writes_never_choose_the_signed_url(
    status_url: str,
    sms_sid: str,
    services: runtime.Services,
    clean: psycopg.Connection,
    public_base_url: str | None,
    status: int,
) -> None:
    """A signature Twilio made for another URL of the same account (an attacker's own
    endpoint) does not verify here, whatever Host or X-Forwarded-* the request carries:
    refused (403), or with no public URL configured, nothing is verified at all (500)."""
    use_settings(services, public_base_url=public_base_url)
    params = callback(sms_sid, "delivered")
    for elsewhere in ("http://hooks.attacker.example/cb", "https://hooks.attacker.example/cb"):
        forged = {"Host": "hooks.attacker.example", "X-Forwarded-Proto": "https",
                  "X-Forwarded-Host": "hooks.attacker.example"}  # fmt: skip
        response = post(status_url, params, path="/cb", signed_url=elsewhere, headers=forged)
        assert response.status_code == status
    assert row(clean, sms_sid)["status"] == "sent"


def test_without_a_public_url_every_callback_is_refused_as_not_configured(
    status_url: str, sms_sid: str, services: runtime.Services, clean: psycopg.Connection
) -> None:
    """Outside a Lambda function URL nothing says which URL Twilio signed: fail closed."""
    use_settings(services, public_base_url=None)
    params = callback(sms_sid, "delivered")
    response = post(status_url, params, path="/cb", signed_url=status_url + "/cb")
    assert response.status_code == 500
    assert row(clean, sms_sid)["status"] == "sent"


def test_malformed_reports_are_400_once_signed(
    status_url: str, sms_sid: str, clean: psycopg.Connection
) -> None:
    unknown = post(status_url, callback(sms_sid, "teleported"))
    assert unknown.status_code == 400
    assert unknown.json()["error"]["field"] == "MessageStatus"
    params = callback(sms_sid, "sent")
    del params["MessageSid"], params["SmsSid"]
    missing = post(status_url, params)
    assert missing.status_code == 400
    assert missing.json()["error"]["field"] == "MessageSid"
    assert events(clean, sms_sid) == []

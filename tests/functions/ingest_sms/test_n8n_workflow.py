"""docs/n8n/send-and-record-sms.json, the workflow the README tells a workflow builder to
import, as n8n runs it: its expressions evaluated by n8n's own engine (npm n8n-workflow,
the 1.x line of n8n 1.123), the body it builds posted to ingest_sms, its branches taken
on the answers ingest_sms gives."""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg
import pytest

from functions.ingest_sms.models import SmsIn
from tests.support import ingest, n8n
from tests.support.builders import Tenants

HOSTILE_TEXTS = [
    'Votre RDV "demain" à 14h00 — confirmé ✅',
    "Ligne 1\nLigne 2\r\nLigne 3\ttabulée",
    "Emoji 😀👍🏽 et accents éèàçÉ œ ß",
    'Backslash \\ , \\n littéral, \\" et \\u0041',
    "Braces {{ $json.x }} ${x} `code` </script><b>",
    "Séparateurs\u2028de\u2029lignes",
    "'; DROP TABLE agent_sms; --",
]
ROUTES = {0: "done", 1: "Refused", 2: "Wait before retrying", 3: "Gave up"}


def body_for(tenants: Tenants, text: str, sid: str, execution_id: str = "1234") -> str:
    trigger = {"deployment_id": str(tenants.deployment_b), "phone_number": "06 12 34 56 78",
               "message_content": text, "message_type": "appointment_reminder"}  # fmt: skip
    sent = n8n.twilio_output(sid=sid, body=text)
    value = n8n.evaluate(
        "Record the SMS", "jsonBody", previous="Twilio", items=[sent],
        run_data=n8n.sent_through_twilio(trigger, sent), execution_id=execution_id,
    )  # fmt: skip
    assert isinstance(value, str)
    return value


@pytest.mark.parametrize("text", HOSTILE_TEXTS)
def test_the_body_n8n_builds_is_json_ingest_sms_records_whatever_the_text(
    text: str, tenants: Tenants, ingest_url: str, admin_conn: psycopg.Connection
) -> None:
    sid = ingest.sid()
    body = json.loads(body_for(tenants, text, sid))

    answer = ingest.post(ingest_url, body)

    assert answer.status_code == 201, answer.text
    row = ingest.stored(admin_conn, sid)
    assert row is not None
    assert row["message_content"] == text
    assert row["message_type"] == "appointment_reminder"
    assert row["workflow_execution_id"] == "1234"


def test_every_field_the_body_sends_is_one_ingest_sms_accepts(tenants: Tenants) -> None:
    body = json.loads(body_for(tenants, "Bonjour", ingest.sid()))
    assert set(body) <= set(SmsIn.model_fields)
    assert {"deployment_id", "phone_number", "message_content", "provider_message_sid"} <= set(body)


@pytest.mark.parametrize("execution_id", ["1234", "98765432109876543210", "ex é/ü 42", "a" * 80])
def test_the_request_id_ties_every_try_of_an_item_together_within_what_we_accept(
    execution_id: str, tenants: Tenants, ingest_url: str
) -> None:
    sid = ingest.sid()
    sent = n8n.twilio_output(sid=sid)
    request_id = n8n.evaluate(
        "Record the SMS", "headerParameters.parameters.0.value", previous="Twilio",
        items=[sent], run_data=n8n.sent_through_twilio({}, sent), execution_id=execution_id,
    )  # fmt: skip
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", request_id), request_id
    body = json.loads(body_for(tenants, "Bonjour", sid, execution_id))

    answer = ingest.post(ingest_url, body, headers={"X-Request-Id": request_id})

    assert answer.headers["X-Request-Id"] == request_id  # ours, not replaced by a fresh one


def test_the_workflow_is_the_one_the_readme_describes() -> None:
    flow = n8n.workflow()
    nodes = n8n.nodes()
    connections = {
        (source, output, target["node"])
        for source, by_type in flow["connections"].items()
        for output, targets in enumerate(by_type["main"])
        for target in targets
    }
    assert connections == {
        (n8n.TRIGGER, 0, "Twilio"),
        ("Twilio", 0, "Record the SMS"),
        ("Record the SMS", 0, "Recorded?"),
        ("Record the SMS", 1, "Unreachable"),  # a network error, once the node's tries are over
        ("Recorded?", 1, "Refused"),
        ("Recorded?", 2, "Wait before retrying"),
        ("Recorded?", 3, "Gave up"),
        ("Wait before retrying", 0, "Record the SMS"),
    }
    twilio, record, route = nodes["Twilio"], nodes["Record the SMS"], nodes["Recorded?"]
    assert twilio["parameters"]["options"]["statusCallback"].endswith("/#rc=5&rp=all")
    assert twilio["parameters"]["from"] == "REPLACE-WITH-YOUR-TWILIO-SENDER"
    assert record["parameters"]["genericAuthType"] == "httpHeaderAuth"
    # HTTP statuses never make the node fail, so its own retry is for network errors only:
    # what to retry is decided by "Recorded?", on the status.
    assert record["parameters"]["options"]["response"]["response"] == {
        "fullResponse": True, "neverError": True,
    }  # fmt: skip
    assert (record["retryOnFail"], record["maxTries"], record["waitBetweenTries"]) == (
        True, 5, 2000,
    )  # fmt: skip
    assert record["onError"] == "continueErrorOutput"
    assert (route["parameters"]["mode"], route["parameters"]["numberOutputs"]) == ("expression", 4)
    assert nodes["Wait before retrying"]["parameters"] == {"amount": 2, "unit": "seconds"}
    assert {nodes[name]["type"] for name in ("Refused", "Gave up", "Unreachable")} == {
        "n8n-nodes-base.stopAndError"
    }
    # The body names the Twilio node's item, not $json: on a retry the input is the answer.
    assert "$json" not in record["parameters"]["jsonBody"]


def route(response: dict[str, Any], run_index: int = 0) -> str:
    index = n8n.evaluate(
        "Recorded?", "output", previous="Record the SMS", items=[response], run_index=run_index
    )
    return ROUTES[int(index)]


def answered(status: int, body: Any) -> dict[str, Any]:
    """The item n8n's HTTP Request node outputs with Full Response and Never Error."""
    return {"statusCode": status, "statusMessage": "", "headers": {}, "body": body}


def test_recorded_already_recorded_and_queued_end_the_workflow(
    tenants: Tenants, ingest_url: str
) -> None:
    sms = ingest.sms(tenants)
    created, again = ingest.post(ingest_url, sms), ingest.post(ingest_url, sms)
    assert (created.status_code, again.status_code) == (201, 200)
    queued = {"queued": True, "message": "The database is unavailable: ..."}  # openapi.yaml's 202

    for response in (created, again):
        assert route(answered(response.status_code, response.json())) == "done"
    assert route(answered(202, queued)) == "done"


def test_refused_items_stop_the_execution_with_their_reasons_and_are_not_retried(
    tenants: Tenants, ingest_url: str
) -> None:
    batch = {"messages": [ingest.sms(tenants), ingest.sms(tenants, phone_number="not a number")]}
    partly = ingest.post(ingest_url, batch)
    invalid = ingest.post(ingest_url, ingest.sms(tenants, deployment_id="nope"))
    unauthorized = ingest.post(ingest_url, ingest.sms(tenants), key="wrong" * 8)
    assert (partly.status_code, invalid.status_code, unauthorized.status_code) == (207, 422, 401)

    for response in (partly, invalid, unauthorized):
        item = answered(response.status_code, response.json())
        assert route(item) == "Refused"
        message = n8n.evaluate("Refused", "errorMessage", previous="Recorded?", items=[item])
        assert f"HTTP {response.status_code}" in message
    item = answered(207, partly.json())
    message = n8n.evaluate("Refused", "errorMessage", previous="Recorded?", items=[item])
    assert "phone_number" in message  # the refused item's reason, as ingest_sms wrote it


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_a_server_error_is_retried_four_times_then_the_execution_stops(status: int) -> None:
    unavailable = answered(status, {"error": {"code": "unavailable", "message": "Retry."}})

    assert [route(unavailable, run) for run in range(5)] == ["Wait before retrying"] * 4 + [
        "Gave up"
    ]
    message = n8n.evaluate("Gave up", "errorMessage", previous="Recorded?", items=[unavailable])
    assert f"HTTP {status}" in message


def test_a_network_error_is_retried_by_the_node_then_stops_the_execution() -> None:
    failed = {"error": {"message": "connect ECONNREFUSED 10.0.0.1:443"}}
    message = n8n.evaluate("Unreachable", "errorMessage", previous="Record the SMS", items=[failed])
    assert "ECONNREFUSED" in message
    record = n8n.nodes()["Record the SMS"]
    assert (record["retryOnFail"], record["maxTries"]) == (True, 5)

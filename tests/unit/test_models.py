"""The wire models' rules that need no I/O: what each function's callers may send."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from functions.ingest_sms.models import MAX_METADATA_DEPTH, SmsIn
from functions.metrics.models import MetricsQuery
from functions.retention.models import ErasureRequest
from functions.twilio_status.models import StatusReport
from shared.errors import invalid_input

SMS = {
    "deployment_id": "d0000000-0000-4000-8000-000000000001",
    "phone_number": "06 12 34 56 78",
    "message_content": "Bonjour",
    "provider_message_sid": "SM" + "0" * 32,
}


def sms(**changes: Any) -> SmsIn:
    return SmsIn.model_validate(SMS | changes, context={"region": "FR"})


def test_the_sid_rule_is_the_same_for_ingest_and_status_reports() -> None:
    for sid in ("SM" + "a" * 32, "MM" + "0" * 32):
        assert sms(provider_message_sid=sid).provider_message_sid == sid
        assert StatusReport.model_validate({"MessageSid": sid, "MessageStatus": "sent"}).sid == sid
    for sid in ("SM" + "A" * 32, "SM" + "0" * 31, "XX" + "0" * 32):
        with pytest.raises(ValidationError):
            sms(provider_message_sid=sid)
        with pytest.raises(ValidationError):
            StatusReport.model_validate({"MessageSid": sid, "MessageStatus": "sent"})


def test_metadata_depth_is_bounded_and_told_by_field() -> None:
    deep: dict[str, Any] = {}
    for _ in range(MAX_METADATA_DEPTH):
        deep = {"a": deep}
    with pytest.raises(ValidationError) as refused:
        sms(metadata=deep)
    error = invalid_input(refused.value)
    assert error.field == "metadata"
    assert "nested at most 32" in error.message


def test_a_refusal_never_repeats_the_value() -> None:
    with pytest.raises(ValidationError) as refused:
        sms(sent_at="Tuesday 06 12 34 56 78")
    error = invalid_input(refused.value)
    assert error.field == "sent_at"
    assert "06 12 34 56 78" not in error.message


def test_the_metrics_period_defaults_to_the_last_30_days() -> None:
    query = MetricsQuery.model_validate({})
    assert query.start is not None
    assert query.end is not None
    assert query.end - query.start == timedelta(days=30)
    assert datetime.now(UTC) - query.end < timedelta(minutes=1)
    assert set(query.rpc_args()) == {
        "p_start_date", "p_end_date", "p_client_id", "p_deployment_id", "p_agent_type_name",
    }  # fmt: skip


@pytest.mark.parametrize("requester", ["dpo\ncompleted", "dpo\x1b[2K", "dpo\x00", "\x7fdpo"])
def test_an_erasure_requester_has_no_control_character(requester: str) -> None:
    with pytest.raises(ValidationError):
        ErasureRequest.model_validate(
            {"phone_numbers": ["+33612345678"], "requester": requester},
            context={"region": "FR"},
        )

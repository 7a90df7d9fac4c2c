"""What n8n posts to ingest_sms: one SMS, or a batch of them."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from shared.models import TWILIO_MESSAGE_SID, text_datetime
from shared.phones import to_e164

# Built on first use (defer_build): a function builds only the models it validates.

MAX_MESSAGE_LENGTH = 1600  # Twilio's limit for one message body
MAX_METADATA_BYTES = 16_384
MAX_METADATA_DEPTH = 32
MAX_BATCH = 500
SENT_AT_RANGE = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))

MessageType = Literal["transactional", "marketing", "notification", "appointment_reminder"]
Money = Annotated[Decimal, Field(ge=0, max_digits=10, decimal_places=4)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
TWILIO_SID = re.compile(TWILIO_MESSAGE_SID)
OTHER_PROVIDER_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# ISO 4217 codes that name no money: "no currency", the test code, precious metals.
NOT_MONEY = frozenset({"XXX", "XTS", "XAU", "XAG", "XPD", "XPT"})
OPTIONAL_FIELDS = (
    "first_name", "last_name", "message_type", "provider_status", "sent_at", "provider_cost",
    "voipia_margin", "currency", "call_id", "prospect_id", "sequence_id", "workflow_id",
    "workflow_execution_id", "metadata",
)  # fmt: skip


class SmsIn(BaseModel):
    """One SMS as n8n reports it. Field names are agent_sms's columns.

    Validation needs the default phone region in the context:
    ``SmsIn.model_validate(data, context={"region": "FR", "received_at": now})``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    deployment_id: UUID
    phone_number: str
    first_name: Text | None = None
    last_name: Text | None = None
    message_content: Annotated[str, Field(min_length=1, max_length=MAX_MESSAGE_LENGTH)]
    message_type: MessageType | None = None
    provider: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")] = "twilio"
    provider_message_sid: str
    provider_status: Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")] | None = None
    sent_at: Annotated[AwareDatetime | None, Field(validate_default=True)] = None
    provider_cost: Money | None = None
    voipia_margin: Money | None = None
    currency: Annotated[str, Field(pattern=r"^[A-Za-z]{3}$")] | None = None
    call_id: UUID | None = None
    prospect_id: UUID | None = None
    sequence_id: UUID | None = None
    workflow_id: Text | None = None
    workflow_execution_id: Text | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("provider", mode="before")
    @classmethod
    def _default_provider(cls, value: object) -> object:
        return "twilio" if value is None else value

    @field_validator("phone_number", mode="before")
    @classmethod
    def _digits_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("phone_number")
    @classmethod
    def _e164(cls, value: str, info: ValidationInfo) -> str:
        return to_e164(value, (info.context or {}).get("region", "FR"))

    @field_validator("message_content")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        # Stored exactly as sent: trailing spaces and newlines are part of the SMS.
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("provider_message_sid")
    @classmethod
    def _provider_id(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("provider", "twilio") == "twilio":
            if not TWILIO_SID.fullmatch(value):
                raise ValueError("must be a Twilio Message SID: SM or MM and 32 hex digits")
        elif not OTHER_PROVIDER_ID.fullmatch(value):
            raise ValueError("must be the provider's message id (letters, digits, ._:-)")
        return value

    @field_validator("sent_at", mode="before")
    @classmethod
    def _rfc2822_too(cls, value: object) -> object:
        # Twilio (and so n8n's Twilio node) writes dates as "Tue, 24 Nov 2026 10:00:00 +0000".
        if isinstance(value, str) and "," in value:
            try:
                return parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return value
        return text_datetime(value)

    @field_validator("sent_at")
    @classmethod
    def _default_to_receipt(cls, value: datetime | None, info: ValidationInfo) -> datetime:
        if value is not None and not SENT_AT_RANGE[0] <= value < SENT_AT_RANGE[1]:
            # Nearly always a mapping mistake; and a time before year 1 in UTC, which
            # Postgres stores but Python cannot read back, would stop every retention run.
            raise ValueError("must be from 2000 to 2099")
        return value or (info.context or {}).get("received_at") or datetime.now(UTC)

    @field_validator("provider_cost", "voipia_margin", mode="before")
    @classmethod
    def _amount(cls, value: object) -> object:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
            raise ValueError("must be a number")
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError("must be a number") from None
        if not amount.is_finite():
            raise ValueError("must be a finite number")
        if amount < 0:
            raise ValueError(
                "must be 0 or more (Twilio reports prices as negative numbers:"
                " send the absolute value)"
            )
        if amount.as_tuple().exponent < -4:  # type: ignore[operator]
            raise ValueError("must have at most 4 decimal places")
        return amount

    @field_validator("currency")
    @classmethod
    def _iso4217(cls, value: str | None) -> str | None:
        if value is None:
            return None
        import pycountry

        code = value.upper()
        if code in NOT_MONEY or pycountry.currencies.get(alpha_3=code) is None:
            raise ValueError("is not an ISO 4217 currency code")
        return code

    @field_validator("metadata")
    @classmethod
    def _plain_json(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        if _depth(value) > MAX_METADATA_DEPTH:
            # Deeper than anything a workflow means to send, and deeper than the JSON
            # encoder that passes it on will go (about 250 levels).
            raise ValueError(f"must be nested at most {MAX_METADATA_DEPTH} levels deep")
        try:
            text = json.dumps(value, allow_nan=False)
        except ValueError:
            raise ValueError("must be plain JSON (no NaN or Infinity)") from None
        if len(text) > MAX_METADATA_BYTES:
            raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes of JSON")
        if "\\u0000" in text:
            raise ValueError("must not contain NUL characters")
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            # JSON can escape half a surrogate pair ("\ud800"), which is no character
            # and cannot be stored; pydantic checks this for str fields, not inside Any.
            raise ValueError("must be valid Unicode text (no lone surrogates)") from None
        return value

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        # Postgres text cannot hold NUL; refusing it here names the field, where the
        # database would refuse the whole batch.
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    @field_validator(*OPTIONAL_FIELDS, mode="before")
    @classmethod
    def _blank_is_absent(cls, value: object) -> object:
        # n8n expressions that find nothing produce "": that means "not given".
        # Defined last: pydantic runs "before" validators last-defined first.
        return None if isinstance(value, str) and not value.strip() else value


def _depth(value: object) -> int:
    """How many objects and arrays deep a JSON value goes, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        )
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


class IngestBatch(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    messages: Annotated[list[Any], Field(min_length=1, max_length=MAX_BATCH)]

"""What the scheduler and the privacy team send to retention and erase."""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from shared.phones import to_e164

# Built on first use (defer_build): a function builds only the models it validates.

MAX_ERASURE_NUMBERS = 100
# JSON true or false only: read loosely, 0, "no" or "off" would mean "do it for real".
StrictFlag = Annotated[bool, Field(strict=True)]


class ErasureRequest(BaseModel):
    """The privacy team's request: one number or a list, who asks, and whether to only
    count. Numbers are normalised exactly as ingest normalises them; validation needs
    the default region in the context, as SmsIn does."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    phone_numbers: Annotated[
        list[str],
        Field(
            min_length=1,
            max_length=MAX_ERASURE_NUMBERS,
            validation_alias=AliasChoices("phone_numbers", "phone_number"),
        ),
    ]
    requester: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)
    ]
    """Who asked, for the audit record: a ticket number, a team, never the data subject."""
    dry_run: StrictFlag = False

    @field_validator("requester")
    @classmethod
    def _printable(cls, value: str) -> str:
        # The audit record is read by people and tools: no line breaks, escapes or NUL
        # (which Postgres text cannot hold) may forge or hide what it says.
        if any(unicodedata.category(char) == "Cc" for char in value):
            raise ValueError("must not contain control characters")
        return value

    @field_validator("phone_numbers", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("phone_numbers")
    @classmethod
    def _distinct_e164(cls, values: list[str], info: ValidationInfo) -> list[str]:
        region = (info.context or {}).get("region", "FR")
        numbers: list[str] = []
        for position, value in enumerate(values):
            try:
                number = to_e164(value, region, valid_only=False)
            except ValueError as exc:
                raise PydanticCustomError(
                    "phone_number",
                    "item {position} {reason}",
                    {"position": position, "reason": exc},
                ) from None
            if number in numbers:
                raise PydanticCustomError(
                    "phone_number",
                    "item {position} is the same number as item {first}",
                    {"position": position, "first": numbers.index(number)},
                )
            numbers.append(number)
        return numbers


class RetentionRequest(BaseModel):
    """The scheduled run's body: empty, or {"dry_run": true} to see what it would do."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    dry_run: StrictFlag = False

"""What a Twilio status callback tells us."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from shared.models import TWILIO_MESSAGE_SID

# Built on first use (defer_build): a function builds only the models it validates.


class StatusReport(BaseModel):
    """The part of a Twilio status callback we use; Twilio sends more, and may add fields."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    sid: Annotated[
        str,
        Field(
            validation_alias=AliasChoices("MessageSid", "SmsSid"),
            pattern=f"^{TWILIO_MESSAGE_SID}$",
        ),
    ]
    status: Annotated[
        str,
        Field(
            validation_alias=AliasChoices("MessageStatus", "SmsStatus"), pattern=r"^[a-z_]{1,32}$"
        ),
    ]
    error_code: Annotated[int | None, Field(validation_alias="ErrorCode", ge=0)] = None
    reported_at: Annotated[datetime | None, Field(validation_alias="RawDlrDoneDate")] = None
    to: Annotated[str | None, Field(validation_alias="To")] = None

    @field_validator("error_code", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("reported_at", mode="before")
    @classmethod
    def _dlr_done_date(cls, value: object) -> object:
        # RawDlrDoneDate is the carrier's YYMMDDhhmm, in UTC. A carrier that writes it
        # otherwise costs us only precision: the time of receipt stands in.
        if not isinstance(value, str):
            return None
        try:
            return datetime.strptime(value, "%y%m%d%H%M").replace(tzinfo=UTC)
        except ValueError:
            return None

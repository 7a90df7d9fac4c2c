"""The dashboard's query: a period and filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shared.models import text_datetime

# Built on first use (defer_build): a function builds only the models it validates.

DEFAULT_METRICS_DAYS = 30
AgentType = Literal["louis", "arthur", "alexandra"]
# Each query parameter and the RPC argument it becomes.
RPC_ARGUMENTS = {
    "start": "p_start_date",
    "end": "p_end_date",
    "client_id": "p_client_id",
    "deployment_id": "p_deployment_id",
    "agent_type": "p_agent_type_name",
    "series": "p_bucket",
}


class MetricsQuery(BaseModel):
    """The dashboard's query string. Without dates: the last 30 days. What a period may
    be (finite, ending after it starts, at most 366 days) is the SQL functions' rule
    (private.check_period): they refuse it however they are called."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    client_id: UUID | None = None
    deployment_id: UUID | None = None
    agent_type: AgentType | None = None
    series: Literal["day", "week"] | None = None
    include: Literal["filters"] | None = None
    """filters: also what the caller may filter by (a dashboard's first request)."""

    @field_validator("start", "end", mode="before")
    @classmethod
    def _text_only(cls, value: object) -> object:
        return text_datetime(value)

    @model_validator(mode="after")
    def _default_period(self) -> MetricsQuery:
        # Periods are whole hours (the database widens any other): the default ends
        # with the current hour, so that it is 30 days exactly.
        this_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        end = self.end or this_hour + timedelta(hours=1)
        try:
            start = self.start or end - timedelta(days=DEFAULT_METRICS_DAYS)
        except OverflowError:  # 30 days before an end in January of year 1
            raise PydanticCustomError("period", "end is too early to count back from") from None
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        return self

    def rpc_args(self) -> dict[str, Any]:
        """The period and filters, as every analytics RPC takes them."""
        names = ("start", "end", "client_id", "deployment_id", "agent_type")
        return {RPC_ARGUMENTS[name]: getattr(self, name) for name in names}


class StatementQuery(BaseModel):
    """A client's monthly statement: which client, which month of the billing time zone,
    and as JSON or CSV (for accounting)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    client_id: UUID
    month: Annotated[str, StringConstraints(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")]
    format: Literal["json", "csv"] = "json"

    def rpc_args(self, time_zone: str) -> dict[str, Any]:
        return {
            "p_client_id": self.client_id,
            "p_month": f"{self.month}-01",
            "p_time_zone": time_zone,
        }

"""A client's monthly statement (public.get_sms_statement), as JSON or as CSV for
accounting. The SQL decides the month's instants in the billing time zone, the lines
and the rounding (each line to cents, the totals adding the rounded lines)."""

from __future__ import annotations

import csv
import io
from typing import Any

from functions.metrics.models import StatementQuery
from shared.db import Caller, Database
from shared.errors import ConfigurationError, InvalidInputError

COLUMNS = (
    "month", "client_id", "deployment_id", "deployment_name", "message_type", "sms",
    "delivered", "failed", "unpriced", "provider_cost", "margin", "billed", "currency",
)  # fmt: skip
_AMOUNTS = ("provider_cost", "margin", "billed")
# A cell a spreadsheet would run as a formula (OWASP's CSV injection).
# Their full-width forms too, which some spreadsheets read as the same.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def read(db: Database, query: StatementQuery, caller: Caller, time_zone: str) -> dict[str, Any]:
    try:
        statement: dict[str, Any] = db.rpc(
            "get_sms_statement", query.rpc_args(time_zone), as_user=caller
        )
    except InvalidInputError as exc:
        if exc.field == "time_zone":  # ours, not the caller's: the server's setting
            message = f"BILLING_TIME_ZONE cannot serve statements: {exc.message}"
            raise ConfigurationError(message) from None
        raise
    return statement


def as_csv(statement: dict[str, Any]) -> str:
    """One row per line, then a total row; amounts with two decimals, a dot, no
    thousands separator."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    common = {"month": statement["month"], "client_id": statement["client_id"],
              "currency": statement["currency"]}  # fmt: skip
    total = statement["totals"] | {"deployment_id": "", "deployment_name": "TOTAL",
                                   "message_type": ""}  # fmt: skip
    for line in [*statement["lines"], total]:
        row = common | line
        writer.writerow([_cell(name, row[name]) for name in COLUMNS])
    return out.getvalue()


def _cell(name: str, value: Any) -> str:
    if name in _AMOUNTS:
        return f"{value:.2f}"
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text

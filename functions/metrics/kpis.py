"""The figures a dashboard asks for: the seed's KPIs, the top failure reasons and, on
request, a series, read under the caller's row-level security.

The SQL functions decide what a period may be; their refusals name the RPC argument,
which is told to the caller as the query parameter it came from.
"""

from __future__ import annotations

from typing import Any

from functions.metrics.models import RPC_ARGUMENTS, MetricsQuery
from shared.db import Caller, Database
from shared.errors import InvalidInputError

_PARAMETERS = {argument: parameter for parameter, argument in RPC_ARGUMENTS.items()}


def read(db: Database, query: MetricsQuery, caller: Caller) -> dict[str, Any]:
    args = query.rpc_args()
    try:
        figures: dict[str, Any] = db.rpc("get_sms_metrics", args, as_user=caller)
        # Beyond the seed's keys, beside them and never inside them.
        figures["top_failure_reasons"] = db.rpc("get_sms_failure_reasons", args, as_user=caller)
        if query.series is not None:
            series_args = args | {RPC_ARGUMENTS["series"]: query.series}
            figures["series"] = db.rpc("get_sms_timeseries", series_args, as_user=caller)
        if query.include == "filters":
            figures["filters"] = db.rpc("get_sms_filters", as_user=caller)
    except InvalidInputError as exc:
        field = _PARAMETERS.get(exc.field or "", exc.field)
        raise InvalidInputError(exc.message, field=field) from None
    return figures

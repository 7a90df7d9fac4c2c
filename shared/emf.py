"""Business metrics as CloudWatch Embedded Metric Format (EMF) log lines.

On Lambda, each line a function writes to stdout is a log event, and CloudWatch Logs
turns an event that is an EMF document into metric data points: no client, no API call,
nothing added to a cold start or a response. Elsewhere (make dev, the tests) it is one
more JSON line.

This module is also the catalogue of those metrics: serverless.yml's alarms in the
namespace below name them, and tests/deploy/test_alarms.py checks that each one does.
Values are counts only and the one dimension is the function's name, so a metric never
carries a phone number or a text, and there are a handful of series per stage.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

NAMESPACE = "VoipiaSms"
DIMENSION = "Function"

# Answers with a 5xx status from the HTTP boundary (shared/http.py), and those of them
# that were 503: a dependency (the database, S3, Twilio) could not be reached.
HTTP_5XX = "Http5xx"
HTTP_503 = "Http503"
# Each reconcile run's report (functions/twilio_status/reconcile.py).
RECONCILE_CHANGED = "ReconcileChanged"
RECONCILE_NOT_FOUND = "ReconcileNotFound"
RECONCILE_ERRORS = "ReconcileErrors"
# Each retention run's report (functions/retention/archive.py): 1 when it was complete.
RETENTION_COMPLETE = "RetentionComplete"
RETENTION_ARCHIVED_ROWS = "RetentionArchivedRows"
RETENTION_EXPIRED_ROWS = "RetentionExpiredRows"

# The spill-over queue (shared/spillover.py, functions/replay): calls parked while the
# database was unavailable; replayed; refused for good on replay (n8n had its 202: an
# operator looks at them); refused because their number was erased meanwhile; and
# failed for the last time before the dead-letter queue takes them.
PARKED = "Parked"
REPLAYED = "Replayed"
REPLAY_REFUSED = "ReplayRefused"
REPLAY_ERASED = "ReplayErased"
REPLAY_DEAD_LETTERED = "ReplayDeadLettered"

# Each exchange-rate run's report (functions/billing/rates.py): the ECB's rates it
# stored (new to the table), the SMS it priced with them, and the SMS still waiting for
# a rate once it is done, which no run can price (their currency, or their send date,
# has no usable rate): an operator looks at them.
EXCHANGE_RATES_STORED = "ExchangeRatesStored"
PRICES_CONVERTED = "PricesConverted"
PRICES_WAITING_FOR_RATE = "PricesWaitingForRate"

NAMES = frozenset({
    HTTP_5XX, HTTP_503, RECONCILE_CHANGED, RECONCILE_NOT_FOUND, RECONCILE_ERRORS,
    RETENTION_COMPLETE, RETENTION_ARCHIVED_ROWS, RETENTION_EXPIRED_ROWS,
    PARKED, REPLAYED, REPLAY_REFUSED, REPLAY_ERASED, REPLAY_DEAD_LETTERED,
    EXCHANGE_RATES_STORED, PRICES_CONVERTED, PRICES_WAITING_FOR_RATE,
})  # fmt: skip


def function_name(fallback: str) -> str:
    """The Lambda function's name, as the alarms name it (stage included, so stages
    sharing an account never add up); the entry point's name anywhere else."""
    return os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or fallback


def document(
    function: str, values: Mapping[str, int | float], *, now: float | None = None
) -> dict[str, Any]:
    unknown = set(values) - NAMES
    if unknown:
        raise ValueError(f"not in the catalogue of metrics: {sorted(unknown)}")
    stamp = time.time() if now is None else now
    return {
        "_aws": {
            "Timestamp": int(stamp * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [[DIMENSION]],
                    "Metrics": [{"Name": name, "Unit": "Count"} for name in values],
                }
            ],
        },
        DIMENSION: function,
        # A bool is a JSON true, which EMF does not take as a value.
        **{
            name: int(value) if isinstance(value, bool) else value for name, value in values.items()
        },
    }


def emit(function: str, values: Mapping[str, int | float]) -> None:
    """Write the values as one EMF line on stdout."""
    line = json.dumps(document(function, values), separators=(",", ":")) + "\n"
    # A closed or broken stdout must not fail the request or the run being counted.
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.write(line)
        sys.stdout.flush()

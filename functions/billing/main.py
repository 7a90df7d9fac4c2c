"""HTTP entry point: the exchange-rate job, for a scheduler (make dev, or any HTTP
scheduler; on AWS the schedule invokes aws_lambda.exchange_rates, without a URL)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions.billing import rates
from shared import runtime
from shared.http import endpoint, json_response

if TYPE_CHECKING:
    from werkzeug.wrappers import Request, Response


@endpoint("POST")
def exchange_rates(request: Request) -> Response:
    return json_response(rates.run(runtime.services()).as_json())

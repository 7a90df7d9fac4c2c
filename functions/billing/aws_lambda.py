"""The AWS Lambda handler (serverless.yml): the exchange-rate job on a schedule (no URL:
only the schedule runs it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions.billing import rates
from shared import emf
from shared.lambda_adapter import scheduled_handler

if TYPE_CHECKING:
    from functions.billing.rates import RatesRun
    from shared.runtime import Services


def _exchange_rates(services: Services) -> RatesRun:
    return rates.run(services)


def exchange_rates_metrics(run: RatesRun) -> dict[str, int]:
    return {
        emf.EXCHANGE_RATES_STORED: run.stored,
        emf.PRICES_CONVERTED: run.priced,
        emf.PRICES_WAITING_FOR_RATE: run.waiting,
    }


exchange_rates = scheduled_handler(_exchange_rates, exchange_rates_metrics)

"""benchmarks/pricing: pricing a day of SMS from Twilio's Messages list, against one
request per SMS.

    python -m benchmarks.pricing [--sms 33000] [--history-days 6] [--batch 200]

A 100x day: `--sms` final SMS without a price, sent yesterday (UTC) from one Twilio
account, which prices them in USD; the ECB's USD rate is stored, so each gets its
price in euros. Before them, `--history-days` days of as many SMS each, already priced
(the reconcile window the database looks through). Twilio is tools/fake_twilio.py on
a loopback port, answering every message with its price. Measured, on the same data:

  * the baseline, today's per-SMS path: the SMS a run would claim (final, unpriced,
    `--batch` a run, oldest first, as claim_sms_to_reconcile did) fetched one by one
    with reconcile's single fetch, each answer recorded by record_sms_status;
  * reconcile as it runs now: `reconcile.run()` again and again until a run finds
    nothing to price.

and prints, for each, the Twilio requests, the reconcile runs needed (96 a day at one
every 15 minutes) and the wall time, with the ratios. Both must leave every SMS with
the same price.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg

from benchmarks.common import DEMO_DEPLOYMENT, benchmark_database
from functions.twilio_status import reconcile
from shared import runtime
from shared.settings import Settings
from tools.fake_twilio import FakeTwilio, rfc2822

ACCOUNT = "AC" + "5" * 32
TOKEN = "benchmark-token"  # noqa: S105 (the stand-in's)
RUNS_A_DAY = 96  # one every 15 minutes
USD_PER_EUR = "1.0800"


@dataclass
class Measured:
    requests: int
    runs: int
    seconds: float


def load(url: str, sms: int, history_days: int) -> list[tuple[str, datetime]]:
    """The day to price, and the priced days before it; the seed's SMS out of the way."""
    day = datetime.combine(datetime.now(UTC).date() - timedelta(days=1), datetime.min.time(), UTC)
    step = 86_400 / sms  # spread over the day
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM agent_sms")
        conn.execute(
            """
            INSERT INTO agent_sms (deployment_id, phone_number, message_content,
                                   provider_message_sid, sent_at, status, provider_status,
                                   delivered_at, provider_cost)
            SELECT %(deployment)s, '+336' || lpad((n %% 100000000)::text, 8, '0'),
                   'Bonjour, votre rendez-vous est confirmé demain à 14h00.',
                   'SM' || md5('priced-' || n),
                   %(day)s - make_interval(secs => n * %(step)s),
                   'delivered', 'delivered',
                   %(day)s - make_interval(secs => n * %(step)s) + interval '5 seconds', 0.0073
            FROM generate_series(1, %(history)s) AS n
            """,
            {"deployment": DEMO_DEPLOYMENT, "day": day, "step": step,
             "history": sms * history_days},
        )  # fmt: skip
        rows = conn.execute(
            """
            INSERT INTO agent_sms (deployment_id, phone_number, message_content,
                                   provider_message_sid, sent_at, status, provider_status,
                                   delivered_at, provider_cost)
            SELECT %(deployment)s, '+337' || lpad((n %% 100000000)::text, 8, '0'),
                   'Bonjour, votre rendez-vous est confirmé demain à 14h00.',
                   'SM' || md5('to-price-' || n),
                   %(day)s + make_interval(secs => n * %(step)s),
                   'delivered', 'delivered',
                   %(day)s + make_interval(secs => n * %(step)s) + interval '5 seconds', NULL
            FROM generate_series(0, %(sms)s - 1) AS n
            RETURNING provider_message_sid, sent_at
            """,
            {"deployment": DEMO_DEPLOYMENT, "day": day, "step": step, "sms": sms},
        ).fetchall()
        rate_day = day.date() - timedelta(days=1)
        while rate_day.isoweekday() > 5:  # the ECB publishes on working days
            rate_day -= timedelta(days=1)
        conn.execute(
            "SELECT public.store_exchange_rates(jsonb_build_array(jsonb_build_object("
            "'currency', 'USD', 'date', %s::date, 'rate', %s::numeric)))",
            (rate_day, USD_PER_EUR),
        )
        conn.execute("ANALYZE agent_sms")
    return [(sid, sent) for sid, sent in rows]


def unprice(url: str, sids: list[str]) -> None:
    """The day to price as it was: no price, never asked."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE agent_sms SET provider_cost = NULL, provider_amount = NULL,"
            " provider_currency = NULL, exchange_rate = NULL, exchange_rate_date = NULL"
            " WHERE provider_message_sid = ANY(%s)",
            (sids,),
        )
        conn.execute("DELETE FROM private.sms_reconcile_checks")
        conn.execute("DELETE FROM agent_sms_events")
        conn.execute("VACUUM ANALYZE agent_sms")


def prices(url: str, sids: list[str]) -> dict[str, tuple[Decimal | None, Decimal | None]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT provider_message_sid, provider_cost, exchange_rate FROM agent_sms"
            " WHERE provider_message_sid = ANY(%s)",
            (sids,),
        ).fetchall()
    return {sid: (cost, rate) for sid, cost, rate in rows}


def per_sms(services: runtime.Services, twilio: FakeTwilio, url: str, batch: int) -> Measured:
    """The baseline: what reconcile did before, one fetch per SMS, `batch` a run."""
    clients = services.get(reconcile.twilio_clients)
    settings = services.settings
    twilio.reset_counts()
    runs = 0
    asked: set[str] = set()
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            # claim_sms_to_reconcile's old branch for them: final, no price, oldest first.
            sids = [
                sid
                for (sid,) in conn.execute(
                    "SELECT provider_message_sid FROM agent_sms WHERE provider = 'twilio'"
                    " AND status <> 'sent' AND provider_cost IS NULL"
                    " AND sent_at > now() - make_interval(days => %s)"
                    " ORDER BY sent_at LIMIT %s",
                    (settings.reconcile_within_days, batch),
                )
            ]
            if not sids:
                break
            assert asked.isdisjoint(sids), "an SMS its fetch did not price"
            runs += 1
            outcome = reconcile.ReconcileRun(candidates=len(sids))
            for sid in sids:
                reconcile._reconcile_one(services.db, clients, sid, settings, outcome)
            asked.update(sids)
    return Measured(twilio.requests, runs, time.perf_counter() - started)


def by_list(services: runtime.Services, twilio: FakeTwilio) -> Measured:
    """Reconcile as it is now, run after run until nothing is left to price."""
    twilio.reset_counts()
    runs = 0
    started = time.perf_counter()
    while True:
        report = reconcile.run(services)
        assert report.complete, report
        assert not report.rate_limited, report
        if report.to_price == 0:
            break
        runs += 1
    return Measured(twilio.requests, runs, time.perf_counter() - started)


def run(sms: int, history_days: int, batch: int) -> None:
    with (
        benchmark_database(0) as url,
        FakeTwilio({ACCOUNT: TOKEN}) as twilio,
    ):
        day = load(url, sms, history_days)
        for sid, sent in day:
            done = rfc2822(sent + timedelta(seconds=5))
            twilio.add(ACCOUNT, sid, status="delivered", price="-0.00790", price_unit="USD",
                       date_sent=rfc2822(sent), date_updated=done)  # fmt: skip
        sids = [sid for sid, _ in day]
        settings = Settings(
            database_url=url,  # type: ignore[arg-type]
            twilio_account_sid=ACCOUNT,
            twilio_auth_token=TOKEN,  # type: ignore[arg-type]
            twilio_subaccounts="",  # type: ignore[arg-type]
            twilio_api_base_url=twilio.url,  # type: ignore[arg-type]
            reconcile_batch_size=batch,
            reconcile_time_budget_seconds=900,
        )
        services = runtime.Services(settings)
        try:
            baseline = per_sms(services, twilio, url, batch)
            expected = prices(url, sids)
            unprice(url, sids)
            now = by_list(services, twilio)
            assert prices(url, sids) == expected, "the two paths priced differently"
        finally:
            services.close()
        with psycopg.connect(url) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            rows = conn.execute("SELECT count(*) FROM agent_sms").fetchone()
    assert version is not None
    assert rows is not None
    priced = sum(1 for cost, _ in expected.values() if cost is not None)
    assert priced == sms, f"{priced} of {sms} priced"
    target = max(1, math.floor(sms / 500))
    print(f"PostgreSQL {version[0]}; {sms:,} final SMS to price, sent on one day from one"
          f" account, priced by Twilio in USD; agent_sms: {rows[0]:,} rows")  # fmt: skip
    print("| path | Twilio requests | SMS per request | reconcile runs | days at 96 runs a day"
          " | wall time |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, measured in (("one fetch per SMS (before)", baseline), ("Messages list (now)", now)):
        print(f"| {name} | {measured.requests:,} | {sms / max(measured.requests, 1):,.1f}"
              f" | {measured.runs:,} | {measured.runs / RUNS_A_DAY:.2f}"
              f" | {measured.seconds:.1f} s |")  # fmt: skip
    print(f"requests before / now: {baseline.requests / max(now.requests, 1):,.0f}x;"
          f" runs before / now: {baseline.runs / max(now.runs, 1):,.0f}x;"
          f" wall time before / now: {baseline.seconds / now.seconds:.1f}x")  # fmt: skip
    verdict = "met" if now.requests <= target else "NOT met"
    print(f"target, at most one request per 500 SMS (<= {target:,}): {verdict};"
          f" every SMS priced alike by both paths ({priced:,})")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sms", type=int, default=33_000)
    parser.add_argument("--history-days", type=int, default=6)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args(argv)
    # The stand-in's request log (werkzeug's), one line per request, is not the output.
    quiet = logging.getLogger("werkzeug")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        run(args.sms, args.history_days, args.batch)
    finally:
        quiet.setLevel(level)


if __name__ == "__main__":
    main()

"""benchmarks/burst: a burst of Lambda environments through a transaction pooler with a
few server connections, against as many direct connections.

    python -m benchmarks.burst [--environments 60] [--callbacks 40] [--server-connections 5]

Lambda meets a burst of Twilio callbacks with an environment per callback in flight,
each with one connection (DATABASE_POOL_SIZE=1). Here each environment is a process
running twilio_status's Lambda handler as deployed (the function-URL adapter, the
signature, the RPC), logged in as sms_api; all start at once and post their callbacks
one after another. Same run, same database, same callbacks (SMS of their own a side):
  * direct: every environment holds a server connection of its own (60);
  * pooled: every environment connects to PgBouncer in transaction mode, which shares
    `--server-connections` server connections among them, as Supabase's transaction
    pooler shares its pool size.
Printed: failures (any answer but 200), p50 and p99 per side, the p99 ratio, and the
most server connections the side held.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import statistics
import threading
import time
from typing import Any

import psycopg

from benchmarks.common import benchmark_database
from benchmarks.status import ACCOUNT, TOKEN, callbacks_for, create_sms, function_url_events
from tools.embedded import as_user
from tools.migrate import API_LOGIN
from tools.pooler import transaction_pooler

Event = dict[str, Any]


def environment_process(
    settings: dict[str, str], events: list[Event], start: Any, results: Any
) -> None:
    """One Lambda environment: import, build, connect, then (once every environment is
    ready) handle its callbacks one at a time, timing each."""
    os.environ.update(settings)
    logging.getLogger().handlers = [logging.StreamHandler(open(os.devnull, "w"))]  # noqa: SIM115
    from functions.twilio_status.aws_lambda import handler

    latencies, failures = [], 0
    try:
        handler(events[0], None)  # the environment's cold start and first connection
        start.wait()
        for event in events[1:]:
            began = time.perf_counter()
            try:
                status = handler(event, None)["statusCode"]
            except Exception:  # counted: a crash is a failure too
                status = 0
            latencies.append(time.perf_counter() - began)
            failures += status != 200
    except threading.BrokenBarrierError:
        failures += len(events) - 1
    results.put((latencies, failures))


def burst(
    url: str, events: list[Event], environments: int, server_url: str
) -> tuple[list[float], int, int]:
    """Latencies and failures of a burst through this URL, and the most server
    connections held meanwhile (as the server at server_url counts them)."""
    settings = {"DATABASE_URL": url, "DATABASE_POOL_SIZE": "1", "TWILIO_ACCOUNT_SID": ACCOUNT,
                "TWILIO_AUTH_TOKEN": TOKEN, "LOG_LEVEL": "INFO"}  # fmt: skip
    share = len(events) // environments
    # A fresh interpreter each, as a Lambda environment starts.
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(environments + 1)
    results: Any = spawn.Queue()
    workers = [
        spawn.Process(
            target=environment_process,
            args=(settings, events[i * share : (i + 1) * share], start, results),
        )
        for i in range(environments)
    ]
    for worker in workers:
        worker.start()
    start.wait(timeout=300)
    peak = _peak_server_connections(server_url, lambda: any(w.is_alive() for w in workers))
    latencies: list[float] = []
    failures = 0
    for _ in workers:
        done, failed = results.get(timeout=600)
        latencies += done
        failures += failed
    for worker in workers:
        worker.join()
    return latencies, failures, peak


def _peak_server_connections(server_url: str, running: Any) -> int:
    """The most backends sms_api held on the database while the burst ran."""
    database = server_url.rsplit("/", 1)[1]
    peak = 0
    with psycopg.connect(server_url, autocommit=True) as conn:
        while running():
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND usename = %s",
                (database, API_LOGIN),
            ).fetchone()
            peak = max(peak, row[0] if row else 0)
            time.sleep(0.05)
    return peak


def percentile(samples: list[float], fraction: float) -> float:
    return statistics.quantiles(samples, n=1000, method="inclusive")[int(fraction * 1000) - 1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--environments", type=int, default=60)
    parser.add_argument("--callbacks", type=int, default=40, help="per environment")
    parser.add_argument("--server-connections", type=int, default=5)
    parser.add_argument("--existing", type=int, default=100_000, help="rows already in agent_sms")
    args = parser.parse_args(argv)
    per_side = args.environments * args.callbacks

    with benchmark_database(args.existing) as url:
        api = as_user(url, API_LOGIN)
        with psycopg.connect(url, autocommit=True) as conn:
            # Each SMS gets "sent" and "delivered": two callbacks.
            direct_events = function_url_events(callbacks_for(create_sms(conn, per_side // 2)))
            pooled_events = function_url_events(callbacks_for(create_sms(conn, per_side // 2)))
        direct = burst(api, direct_events, args.environments, url)
        with transaction_pooler(
            api, users=(API_LOGIN,), server_connections=args.server_connections
        ) as pooled_url:
            pooled = burst(pooled_url, pooled_events, args.environments, url)

    def line(name: str, result: tuple[list[float], int, int]) -> str:
        latencies, failures, peak = result
        return (
            f"{name}: {len(latencies):,} callbacks, {failures} failed;"
            f" p50 {percentile(latencies, 0.5) * 1000:.1f} ms,"
            f" p99 {percentile(latencies, 0.99) * 1000:.1f} ms;"
            f" at most {peak} server connections"
        )

    load = os.getloadavg()[0]
    print(f"{args.environments} environments at once, {args.callbacks} callbacks each,"
          f" agent_sms holding {args.existing:,} rows; load average {load:.2f}")  # fmt: skip
    print(line("direct, a connection each", direct))
    print(line(f"pooled, {args.server_connections} server connections", pooled))
    ratio = percentile(pooled[0], 0.99) / percentile(direct[0], 0.99)
    print(f"p99 pooled / direct: {ratio:.2f}x")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()

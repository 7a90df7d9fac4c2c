"""benchmarks/erasure_vacuum: what the VACUUM that ends an erasure costs, at scale.

    python -m benchmarks.erasure_vacuum [--rows 360000] [--repeat 3]

Loads `--rows` SMS over 3 years (benchmarks/metrics' loader: the seed's volume is
360,000, 100x is 36,000,000 of which a year, 12,000,000, is hot), then, on the same
database, erases one number at a time (30 SMS of it, each with status events) and
times, per erasure:
  * the baseline: the erasure's database step, private.erase_hot_sms() and its commit;
  * the VACUUM erasure runs after it, VACUUM (INDEX_CLEANUP ON) of agent_sms and
    agent_sms_events;
  * for comparison, a plain VACUUM after another erasure (Postgres may then leave the
    indexes, which still hold the number, for a later vacuum).
and prints each as a median, with the ratio VACUUM / erasure step.
"""

from __future__ import annotations

import argparse
import time
import uuid

import psycopg

from benchmarks.common import median
from benchmarks.metrics import loaded_database

SMS_PER_NUMBER = 30


def plant(conn: psycopg.Connection, number: str) -> None:
    """SMS of one person, with a name, a text and their status reports."""
    deployment = conn.execute("SELECT min(id::text) FROM agent_deployments").fetchone()
    assert deployment is not None
    for _ in range(SMS_PER_NUMBER):
        sid = "SM" + uuid.uuid4().hex
        conn.execute(
            "INSERT INTO agent_sms (deployment_id, phone_number, first_name, last_name,"
            " message_content, provider_message_sid, sent_at)"
            " VALUES (%s, %s, 'Camille', 'Durand', 'Votre rendez-vous est confirmé.', %s,"
            " now() - interval '3 days')",
            (deployment[0], number, sid),
        )
        conn.execute(
            "INSERT INTO agent_sms_events (provider_message_sid, twilio_status, applied_at)"
            " VALUES (%s, 'sent', now()), (%s, 'delivered', now())",
            (sid, sid),
        )


def erase(conn: psycopg.Connection, number: str) -> float:
    started = time.perf_counter()
    with conn.transaction():
        conn.execute("SELECT * FROM private.erase_hot_sms(%s)", (number,)).fetchone()
    return time.perf_counter() - started


def vacuum(conn: psycopg.Connection, options: str) -> float:
    started = time.perf_counter()
    conn.execute(f"VACUUM {options} public.agent_sms, public.agent_sms_events")
    return time.perf_counter() - started


def run(url: str, repeat: int) -> None:
    steps: list[float] = []
    forced: list[float] = []
    plain: list[float] = []
    with psycopg.connect(url, autocommit=True) as conn:
        for n in range(repeat):
            for options, times in (("(INDEX_CLEANUP ON)", forced), ("", plain)):
                number = f"+3361{n:02d}{len(times):02d}{len(options):04d}"
                plant(conn, number)
                conn.execute("VACUUM public.agent_sms, public.agent_sms_events")
                erased = erase(conn, number)
                if options:
                    steps.append(erased)
                times.append(vacuum(conn, options))
        hot = conn.execute("SELECT count(*) FROM agent_sms").fetchone()
        size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('agent_sms'))").fetchone()
        version = conn.execute("SHOW server_version").fetchone()
    assert hot is not None
    assert size is not None
    assert version is not None
    step = median(steps)
    print(f"PostgreSQL {version[0]}; agent_sms: {hot[0]:,} rows, {size[0]} with its indexes;"
          f" {SMS_PER_NUMBER} SMS erased per run; medians of {repeat}")  # fmt: skip
    print(f"erasure's database step (baseline):  {step * 1000:10.1f} ms")
    print(f"VACUUM (INDEX_CLEANUP ON), as erasure runs it: {median(forced) * 1000:10.1f} ms"
          f"   = {median(forced) / step:.1f}x the step")  # fmt: skip
    print(f"plain VACUUM, for comparison:        {median(plain) * 1000:10.1f} ms"
          f"   = {median(plain) / step:.1f}x the step")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=360_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with loaded_database(args.rows) as url:
        run(url, args.repeat)


if __name__ == "__main__":
    main()

"""benchmarks/metrics: get_sms_metrics at scale, against the one-pass baseline.

    python -m benchmarks.metrics [--rows 360000] [--repeat 7]

Loads `--rows` SMS spread over 3 years (the seed's volume is 360,000; 100x is
36,000,000), then times, on the same database in the same run:
  * get_sms_metrics for the last 30 days and the 30 before, as service_role;
  * the baseline: the straightforward one-pass query (one scan, FILTER aggregates over
    both periods) computing the same figures;
  * get_sms_metrics as a user who may see every deployment, against service_role
    (the cost of row-level security), unfiltered, then for one client and one agent type.
Both must agree on every figure they share, and the user's JSON must equal
service_role's; the run stops if they do not.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.common import database_server, median, timed
from tools.embedded import throwaway_database
from tools.migrate import apply

CHUNK = 1_000_000
CLIENTS, DEPLOYMENTS_PER_CLIENT = 30, 4
ALL_ACCESS_USER = "e0000000-0000-4000-8000-00000000a11a"

BASELINE = """
WITH scope AS (
    SELECT d.id FROM agent_deployments d
), rows AS (
    SELECT s.*, s.sent_at >= %(start)s AS cur
    FROM agent_sms s
    WHERE s.deployment_id IN (SELECT id FROM scope)
      AND s.sent_at >= %(prev)s AND s.sent_at < %(end)s
)
SELECT
    count(*) FILTER (WHERE cur),
    count(*) FILTER (WHERE cur AND status = 'delivered'),
    count(*) FILTER (WHERE cur AND status = 'failed'),
    round(coalesce(sum(billed_cost) FILTER (WHERE cur), 0), 2),
    round(coalesce(sum(voipia_margin) FILTER (WHERE cur), 0), 2),
    count(DISTINCT phone_number) FILTER (WHERE cur),
    count(DISTINCT deployment_id) FILTER (WHERE cur),
    count(call_id) FILTER (WHERE cur),
    round(avg(character_count) FILTER (WHERE cur)),
    round(avg(EXTRACT(EPOCH FROM delivered_at - sent_at))
          FILTER (WHERE cur AND status = 'delivered'), 2),
    count(*) FILTER (WHERE NOT cur),
    count(DISTINCT phone_number) FILTER (WHERE NOT cur),
    round(coalesce(sum(billed_cost) FILTER (WHERE NOT cur), 0), 2)
FROM rows
"""
SHARED = [
    ("current_period", "total_sms"), ("current_period", "delivered_sms"),
    ("current_period", "failed_sms"), ("current_period", "total_cost"),
    ("current_period", "total_margin"), ("current_period", "unique_recipients"),
    ("current_period", "active_deployments"), ("current_period", "sms_linked_to_calls"),
    ("current_period", "avg_characters"), ("current_period", "avg_delivery_time_seconds"),
    ("previous_period", "total_sms"), ("previous_period", "unique_recipients"),
    ("previous_period", "total_cost"),
]  # fmt: skip

GENERATE = """
WITH d AS (SELECT array_agg(id ORDER BY id) AS ids FROM agent_deployments),
     c AS (SELECT array_agg(id ORDER BY deployment_id) AS ids FROM agent_calls)
INSERT INTO agent_sms (deployment_id, call_id, phone_number, message_content,
    message_type, provider_message_sid, provider_status, status, sent_at,
    delivered_at, failed_at, provider_cost, voipia_margin, workflow_id)
SELECT d.ids[1 + n %% array_length(d.ids, 1)],
       CASE WHEN n %% 10 < 3 THEN c.ids[1 + n %% array_length(c.ids, 1)] END,
       '+336' || lpad((n * 7919 %% 2000000)::text, 8, '0'),
       repeat('x', (40 + n %% 120)::int),
       (ARRAY['transactional', 'marketing', 'notification',
              'appointment_reminder'])[1 + n %% 4],
       'SM' || md5(n::text),
       (ARRAY['delivered', 'delivered', 'delivered', 'undelivered', 'sent'])
           [1 + (n / 7) %% 5],
       (ARRAY['delivered', 'delivered', 'delivered', 'failed', 'sent'])
           [1 + (n / 7) %% 5],
       t, CASE WHEN (n / 7) %% 5 < 3 THEN t + make_interval(secs => (n %% 9)::int) END,
       CASE WHEN (n / 7) %% 5 = 3 THEN t + interval '30 seconds' END,
       0.0750, 0.0300, 'wf-' || n %% 7
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS n, d, c,
     LATERAL (SELECT now() - (n::float8 / %(rows)s) * interval '3 years' AS t) AS x
"""


def load(conn: psycopg.Connection, url: str, rows: int) -> None:
    setup = {"clients": CLIENTS, "per": DEPLOYMENTS_PER_CLIENT, "user": ALL_ACCESS_USER}
    for statement in (
        "INSERT INTO agent_types (name, display_name) VALUES"
        " ('louis', 'Louis'), ('arthur', 'Arthur'), ('alexandra', 'Alexandra')",
        "INSERT INTO clients (name) SELECT 'Client ' || n FROM generate_series(1, %(clients)s) n",
        "INSERT INTO agent_deployments (name, slug, client_id, agent_type_id)"
        " SELECT c.name || ' #' || n, 'd-' || c.id || '-' || n, c.id,"
        " (SELECT id FROM agent_types ORDER BY name OFFSET n %% 3 LIMIT 1)"
        " FROM clients c, generate_series(1, %(per)s) n",
        "INSERT INTO agent_calls (deployment_id, started_at)"
        " SELECT id, now() FROM agent_deployments",
        "INSERT INTO auth.users (id) VALUES (%(user)s)",
        "INSERT INTO user_client_permissions (user_id, client_id) SELECT %(user)s, id FROM clients",
    ):
        conn.execute(statement, setup)
    conn.commit()
    # The generated rows reference only the deployments and calls above, and no status
    # report waits for them: skip the per-row foreign-key checks and the pending-events
    # trigger, and build every index once at the end instead of row by row. This is
    # what makes tens of millions of rows load in minutes rather than an hour.
    constraints = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = 'public.agent_sms'::regclass AND contype IN ('p', 'u')"
    ).fetchall()
    indexes = conn.execute(
        "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index"
        " WHERE indrelid = 'public.agent_sms'::regclass"
        " AND indexrelid NOT IN (SELECT conindid FROM pg_constraint WHERE conrelid = indrelid)"
    ).fetchall()
    for name, _ in constraints:
        conn.execute(f"ALTER TABLE public.agent_sms DROP CONSTRAINT {name}")
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    conn.commit()
    started = time.perf_counter()
    chunks = [(first, min(CHUNK, rows - first)) for first in range(0, rows, CHUNK)]
    done = [0]
    lock = threading.Lock()

    def insert(chunk: tuple[int, int]) -> None:
        first, count = chunk
        with psycopg.connect(url, autocommit=True) as writer:
            writer.execute("SET session_replication_role = replica")
            writer.execute(GENERATE, {"first": first + 1, "last": first + count, "rows": rows})
        with lock:
            done[0] += count
            rate = done[0] / (time.perf_counter() - started)
            print(f"  loaded {done[0]:,} / {rows:,} SMS ({rate:,.0f}/s)", flush=True)

    # One writer per core: generating rows is CPU-bound in the server.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(insert, chunks))
    indexed = time.perf_counter()
    conn.autocommit = True
    conn.execute("SET maintenance_work_mem = '1GB'")
    for name, definition in constraints:
        conn.execute(f"ALTER TABLE public.agent_sms ADD CONSTRAINT {name} {definition}")
    for _, definition in indexes:
        conn.execute(definition)
    conn.execute("VACUUM ANALYZE agent_sms")
    print(f"  rows {indexed - started:,.0f} s; indexes and VACUUM ANALYZE"
          f" {time.perf_counter() - indexed:,.0f} s", flush=True)  # fmt: skip


ARCHIVE_AFTER = "365 days"
SEAL_BEFORE = "8 days"  # the reconcile window (7 days) and a day for late callbacks


# The sets of hours ingest's trigger (private.note_sms_hours) keeps, built here in bulk
# for rows loaded without it: the same sets, in minutes rather than the trigger's hour
# and a half for 36M rows. kpis' row-by-row reference checks what they answer.
NOTE_HOURS = (
    "INSERT INTO private.sms_recipients (phone_number) SELECT DISTINCT phone_number FROM agent_sms",
    "INSERT INTO private.sms_recipient_hours (deployment_id, recipient_id, hours)"
    " SELECT s.deployment_id, r.id, range_agg(int4range(h.hour, h.hour + 1))"
    " FROM agent_sms AS s JOIN private.sms_recipients AS r USING (phone_number),"
    " LATERAL (SELECT private.epoch_hour(s.sent_at) AS hour) AS h GROUP BY 1, 2",
    "INSERT INTO private.sms_workflow_hours (deployment_id, month, workflow_id, hours)"
    " SELECT s.deployment_id, date_trunc('month', s.sent_at, 'UTC'), s.workflow_id,"
    " range_agg(int4range(h.hour, h.hour + 1)) FROM agent_sms AS s,"
    " LATERAL (SELECT private.epoch_hour(s.sent_at) AS hour) AS h"
    " WHERE s.workflow_id IS NOT NULL GROUP BY 1, 2, 3",
)


def shape_as_production(conn: psycopg.Connection) -> None:
    """What a year of production leaves behind: the sets of hours of every SMS, every
    day past the reconcile window sealed by the retention run's own function, and the
    SMS older than a year moved out of agent_sms as the archive does, into
    bench_archived_sms, where only the benchmarks' row-by-row reference reads them."""
    conn.autocommit = True
    started = time.perf_counter()
    conn.execute(
        "TRUNCATE private.sms_recipients, private.sms_recipient_hours,"
        " private.sms_workflow_hours, private.sms_totals,"
        " private.sms_kpi_seal"
    )
    conn.execute("SET maintenance_work_mem = '1GB'")
    conn.execute("SET work_mem = '1GB'")
    for statement in NOTE_HOURS:
        conn.execute(statement)
    print(f"  sets of hours built in {time.perf_counter() - started:,.0f} s", flush=True)
    sealed = 0
    while conn.execute(
        "SELECT private.seal_next_sms_day(now() - %s::interval)", (SEAL_BEFORE,)
    ).fetchone() != (None,):
        sealed += 1
        if sealed % 90 == 0:
            print(f"  {sealed:,} days sealed ({time.perf_counter() - started:,.0f} s)", flush=True)
    conn.execute("DROP TABLE IF EXISTS bench_archived_sms")
    conn.execute(
        "CREATE TABLE bench_archived_sms AS SELECT * FROM agent_sms"
        " WHERE sent_at < now() - %s::interval",
        (ARCHIVE_AFTER,),
    )
    with conn.transaction():
        # Sealed rows: the delete trigger would fold nothing.
        conn.execute("SET LOCAL session_replication_role = replica")
        last = conn.execute(
            "DELETE FROM agent_sms WHERE sent_at < now() - %s::interval RETURNING sent_at",
            (ARCHIVE_AFTER,),
        ).fetchall()
        if last:
            conn.execute("SELECT private.note_archived_through(%s)", (max(r[0] for r in last),))
    for table in (("agent_sms",), ("bench_archived_sms",), ("private", "sms_totals"),
                  ("private", "sms_recipient_hours"), ("private", "sms_workflow_hours"),
                  ("private", "sms_recipients")):  # fmt: skip
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(*table)))
    print(f"  shaped as production (one year hot, {sealed:,} days sealed) in"
          f" {time.perf_counter() - started:,.0f} s", flush=True)  # fmt: skip


def call_rpc(conn: psycopg.Connection, role: str, function: str, args: dict[str, Any]) -> Any:
    """A public function called by name, as `role` (the all-access user when
    authenticated) exactly as PostgREST calls it: the role and claims for the
    transaction, the arguments bound by name."""
    claims = {"role": role, "sub": ALL_ACCESS_USER} if role == "authenticated" else {"role": role}
    call = sql.SQL("SELECT public.{}({})").format(
        sql.Identifier(function),
        sql.SQL(", ").join(
            sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder(name)) for name in args
        ),
    )
    with conn.transaction():
        conn.execute(
            "SELECT set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
            (role, json.dumps(claims)),
        )
        row = conn.execute(call, args).fetchone()
    assert row is not None
    return row[0]


def call_metrics(conn: psycopg.Connection, role: str, args: dict[str, Any]) -> Any:
    """get_sms_metrics for the period and filters of `args` (start, end, client, agent)."""
    return call_rpc(conn, role, "get_sms_metrics", {
        "p_start_date": args["start"], "p_end_date": args["end"],
        "p_client_id": args.get("client"), "p_agent_type_name": args.get("agent"),
    })  # fmt: skip


def rls_cost(conn: psycopg.Connection, args: dict[str, Any], n: int) -> tuple[float, float]:
    """Medians as service_role and as the all-access user, who must see the same JSON."""
    assert call_metrics(conn, "authenticated", args) == call_metrics(conn, "service_role", args)
    as_service = median(timed(lambda _: call_metrics(conn, "service_role", args), [0] * n))
    as_user = median(timed(lambda _: call_metrics(conn, "authenticated", args), [0] * n))
    return as_service, as_user


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=360_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--database-url", help="use this (already loaded) database as is")
    parser.add_argument("--load", action="store_true",
                        help="with --database-url: migrate and load that empty database first,"
                             " and keep it for later runs")  # fmt: skip
    args = parser.parse_args(argv)
    run_on_database(args, run)


def run_on_database(
    args: argparse.Namespace, run: Callable[[str, argparse.Namespace], None]
) -> None:
    """`run` on `--database-url` as it is (loaded first with `--load`), or on a
    throwaway database loaded with `--rows` SMS."""
    if args.database_url:
        if args.load:
            migrate_and_load(args.database_url, args.rows)
        run(args.database_url, args)
        return
    with loaded_database(args.rows) as url:
        run(url, args)


@contextmanager
def loaded_database(rows: int) -> Iterator[str]:
    """A throwaway database (on DATABASE_URL's server, or an embedded one) holding
    `rows` SMS over three years."""
    with database_server() as server, throwaway_database(server, prefix="sms_bench") as url:
        migrate_and_load(url, rows)
        yield url


def migrate_and_load(url: str, rows: int) -> None:
    apply(url, include_local=True, report=lambda _: None)
    with psycopg.connect(url) as conn:
        print(f"loading {rows:,} SMS over 3 years")
        load(conn, url, rows)
        shape_as_production(conn)


def run(url: str, args: argparse.Namespace) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        # Whole hours, the only periods the KPIs count (they widen any other).
        end = conn.execute(
            "SELECT date_trunc('hour', now(), 'UTC') + interval '1 hour'"
        ).fetchone()[0]  # type: ignore[index]
        period = {"start": end - timedelta(days=30), "end": end, "prev": end - timedelta(days=60)}
        optimized = call_metrics(conn, "service_role", period)
        baseline = conn.execute(BASELINE, period).fetchone()
        assert baseline is not None
        for (part, key), value in zip(SHARED, baseline, strict=True):
            got = optimized[part][key]
            assert got == (float(value) if value is not None and not isinstance(value, int)
                           else value), (part, key, got, value)  # fmt: skip
        n = args.repeat
        as_service, as_user = rls_cost(conn, period, n)
        one_pass = median(timed(lambda _: conn.execute(BASELINE, period).fetchone(), [0] * n))
        client = conn.execute("SELECT min(id::text) FROM clients").fetchone()[0]  # type: ignore[index]
        filtered = {
            "one client": rls_cost(conn, period | {"client": client}, n),
            "agent type louis": rls_cost(conn, period | {"agent": "louis"}, n),
        }
        window = optimized["current_period"]["total_sms"]
        version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    print(f"PostgreSQL {version}; agent_sms: {args.rows:,} rows; 30-day window: {window:,} SMS;"
          f" medians of {n} runs")  # fmt: skip
    print(f"get_sms_metrics, service_role:   {as_service * 1000:9.1f} ms")
    print(f"one-pass baseline (same data):   {one_pass * 1000:9.1f} ms"
          f"   baseline / get_sms_metrics = {one_pass / as_service:.2f}x")  # fmt: skip
    print(f"get_sms_metrics, all-access user: {as_user * 1000:8.1f} ms"
          f"   RLS cost = {as_user / as_service:.2f}x")  # fmt: skip
    for name, (service, user) in filtered.items():
        print(f"  filtered to {name + ':':18} service_role {service * 1000:8.1f} ms,"
              f" user {user * 1000:8.1f} ms   RLS cost = {user / service:.2f}x")  # fmt: skip
    print("every shared figure agrees with the baseline; the user's JSON equals service_role's")


if __name__ == "__main__":
    main()

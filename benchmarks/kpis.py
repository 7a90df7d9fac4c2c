"""benchmarks/kpis: every KPI function over long windows, against a row-by-row reference.

    python -m benchmarks.kpis [--rows 360000] [--repeat 3] [--database-url URL [--load]]

On `--rows` SMS over 3 years shaped as production is (benchmarks.metrics: one year hot,
its days past the reconcile window sealed, the two years before archived into the
aggregates), times get_sms_metrics, get_sms_timeseries (by day) and
get_sms_failure_reasons for the last 30, 90 and 366 days, unfiltered, for one client and
for one agent type, as service_role and as a user who may see every deployment. Each
answer must equal, key for key, the same JSON computed row by row (the hot rows and the
archived ones together) in the same run; the run stops if one does not.
"""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from typing import Any

import psycopg

from benchmarks.common import median, timed
from benchmarks.metrics import call_rpc, run_on_database

# Every SMS ever recorded: what the reference reads.
EVERY_SMS = (
    "CREATE OR REPLACE VIEW bench_every_sms AS"
    " SELECT * FROM agent_sms UNION ALL SELECT * FROM bench_archived_sms"
)

# The figures of one period, row by row: what private.sms_period_figures must return.
REFERENCE_FIGURES = """
WITH s AS (
    SELECT * FROM bench_every_sms AS e
    WHERE e.deployment_id = ANY (%(deployments)s::uuid[]) AND e.sent_at >= %(start)s
      AND e.sent_at < %(end)s
), t AS (
    SELECT count(*) AS total, count(*) FILTER (WHERE status = 'delivered') AS delivered,
        count(*) FILTER (WHERE status = 'failed') AS failed,
        count(*) FILTER (WHERE status = 'sent') AS sent, sum(billed_cost) AS cost,
        sum(provider_cost) AS provider_cost, sum(voipia_margin) AS margin,
        avg(character_count) AS characters, min(character_count) AS min_characters,
        max(character_count) AS max_characters, count(DISTINCT phone_number) AS recipients,
        count(DISTINCT deployment_id) AS deployments,
        count(DISTINCT workflow_id) AS workflows, count(call_id) AS linked,
        avg(EXTRACT(EPOCH FROM delivered_at - sent_at))
            FILTER (WHERE status = 'delivered') AS delivery_time
    FROM s
)
SELECT jsonb_build_object(
    'total_sms', t.total, 'delivered_sms', t.delivered, 'failed_sms', t.failed,
    'sent_sms', t.sent, 'delivery_rate', private.percentage(t.delivered, t.total),
    'failure_rate', private.percentage(t.failed, t.total),
    'total_cost', round(coalesce(t.cost, 0), 2),
    'total_provider_cost', round(coalesce(t.provider_cost, 0), 2),
    'total_margin', round(coalesce(t.margin, 0), 2),
    'margin_percentage', private.percentage(t.margin, t.cost),
    'avg_cost_per_sms', round(t.cost / nullif(t.total, 0), 2),
    'avg_characters', round(t.characters), 'min_characters', t.min_characters,
    'max_characters', t.max_characters, 'unique_recipients', t.recipients,
    'active_deployments', t.deployments, 'active_workflows', t.workflows,
    'sms_linked_to_calls', t.linked, 'call_linkage_rate', private.percentage(t.linked, t.total),
    'avg_delivery_time_seconds', round(t.delivery_time, 2),
    'by_message_type', (
        SELECT coalesce(jsonb_agg(jsonb_build_object(
            'message_type', b.message_type, 'count', b.total, 'delivered', b.delivered,
            'delivery_rate', private.percentage(b.delivered, b.total),
            'cost', round(coalesce(b.cost, 0), 2)) ORDER BY b.total DESC, b.message_type), '[]')
        FROM (SELECT message_type, count(*) AS total,
                     count(*) FILTER (WHERE status = 'delivered') AS delivered,
                     sum(billed_cost) AS cost
              FROM s GROUP BY message_type) AS b))
FROM t
"""

REFERENCE_SERIES = """
SELECT coalesce(jsonb_agg(jsonb_build_object(
    'bucket_start', b.day, 'total_sms', coalesce(d.total, 0),
    'delivered_sms', coalesce(d.delivered, 0), 'failed_sms', coalesce(d.failed, 0),
    'sent_sms', coalesce(d.sent, 0), 'delivery_rate', private.percentage(d.delivered, d.total),
    'cost', round(coalesce(d.cost, 0), 2)) ORDER BY b.day), '[]')
FROM generate_series(date_trunc('day', %(start)s::timestamptz, 'UTC'),
                     %(end)s::timestamptz - interval '1 microsecond', interval '1 day') AS b(day)
LEFT JOIN (
    SELECT date_trunc('day', s.sent_at, 'UTC') AS day, count(*) AS total,
        count(*) FILTER (WHERE s.status = 'delivered') AS delivered,
        count(*) FILTER (WHERE s.status = 'failed') AS failed,
        count(*) FILTER (WHERE s.status = 'sent') AS sent, sum(s.billed_cost) AS cost
    FROM bench_every_sms AS s
    WHERE s.deployment_id = ANY (%(deployments)s::uuid[])
      AND s.sent_at >= %(start)s AND s.sent_at < %(end)s
    GROUP BY 1
) AS d USING (day)
"""

REFERENCE_REASONS = """
SELECT coalesce(jsonb_agg(jsonb_build_object('failure_reason', r.reason, 'count', r.count)
                          ORDER BY r.count DESC, r.reason), '[]')
FROM (SELECT coalesce(failure_reason, 'Unknown') AS reason, count(*) AS count
      FROM bench_every_sms AS s
      WHERE s.deployment_id = ANY (%(deployments)s::uuid[]) AND s.status = 'failed'
        AND s.sent_at >= %(start)s AND s.sent_at < %(end)s
      GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 100) AS r
"""

PREVIOUS_KEYS = ("total_sms", "delivered_sms", "failed_sms", "delivery_rate", "failure_rate",
                 "total_cost", "total_margin", "avg_cost_per_sms", "avg_characters",
                 "unique_recipients")  # fmt: skip


def median_call(conn: psycopg.Connection, role: str, function: str, args: dict[str, Any],
                repeat: int) -> float:  # fmt: skip
    return median(timed(lambda _: call_rpc(conn, role, function, args), [0] * repeat))


def reference(conn: psycopg.Connection, query: str, **args: Any) -> Any:
    row = conn.execute(query, args).fetchone()
    assert row is not None
    return json.loads(json.dumps(row[0]))


def check(conn: psycopg.Connection, function: str, args: dict[str, Any], scope: list[str],
          start: Any, end: Any) -> None:  # fmt: skip
    """The function's answer as service_role equals the row-by-row one, and the all-access
    user's equals service_role's."""
    got = call_rpc(conn, "service_role", function, args)
    assert got == call_rpc(conn, "authenticated", function, args), (function, args)
    if function == "get_sms_metrics":
        previous = start - (end - start)
        expected = reference(conn, REFERENCE_FIGURES, deployments=scope, start=start, end=end)
        before = reference(conn, REFERENCE_FIGURES, deployments=scope, start=previous, end=start)
        assert got["current_period"] == expected, (args, got["current_period"], expected)
        assert got["previous_period"] == {k: before[k] for k in PREVIOUS_KEYS}, args
    elif function == "get_sms_timeseries":
        expected = reference(conn, REFERENCE_SERIES, deployments=scope, start=start, end=end)
        assert got == expected, args
    else:
        expected = reference(conn, REFERENCE_REASONS, deployments=scope, start=start, end=end)
        assert got == expected, args


def run(url: str, args: argparse.Namespace) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(EVERY_SMS)
        # Whole hours: every KPI widens its period to them.
        end = conn.execute(
            "SELECT date_trunc('hour', now(), 'UTC') + interval '1 hour'"
        ).fetchone()[0]  # type: ignore[index]
        client = conn.execute("SELECT min(id::text) FROM clients").fetchone()[0]  # type: ignore[index]
        scopes = {
            "all": ({}, "SELECT array_agg(id::text) FROM agent_deployments"),
            "one client": ({"p_client_id": client},
                           "SELECT array_agg(id::text) FROM agent_deployments"
                           " WHERE client_id = %(client)s"),
            "agent type louis": ({"p_agent_type_name": "louis"},
                                 "SELECT array_agg(d.id::text) FROM agent_deployments d"
                                 " JOIN agent_types t ON t.id = d.agent_type_id"
                                 " WHERE t.name = 'louis'"),
        }  # fmt: skip
        hot = conn.execute("SELECT count(*) FROM agent_sms").fetchone()[0]  # type: ignore[index]
        archived = conn.execute("SELECT count(*) FROM bench_archived_sms").fetchone()[0]  # type: ignore[index]
        version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        print(f"PostgreSQL {version}; {hot:,} SMS hot, {archived:,} archived into the"
              f" aggregates; medians of {args.repeat} calls; every answer equals the"
              f" row-by-row reference")  # fmt: skip
        print(f"{'window':>8} {'filter':18} {'function':24} {'service_role':>13}"
              f" {'user':>10} {'RLS':>6}")  # fmt: skip
        worst = 0.0
        for days in args.windows:
            start = end - timedelta(days=days)
            for name, (filters, scope_sql) in scopes.items():
                scope = conn.execute(scope_sql, {"client": client}).fetchone()[0]  # type: ignore[index]
                for function, extra in (("get_sms_metrics", {}),
                                        ("get_sms_timeseries", {"p_bucket": "day"}),
                                        ("get_sms_failure_reasons", {"p_limit": 100})):  # fmt: skip
                    call_args = {"p_start_date": start, "p_end_date": end} | filters | extra
                    check(conn, function, call_args, scope, start, end)
                    as_service = median_call(conn, "service_role", function, call_args, args.repeat)
                    as_user = median_call(conn, "authenticated", function, call_args, args.repeat)
                    worst = max(worst, as_service, as_user)
                    print(f"{days:>5} d  {name:18} {function:24} {as_service * 1000:10.1f} ms"
                          f" {as_user * 1000:7.1f} ms {as_user / as_service:5.2f}x",
                          flush=True)  # fmt: skip
        print(f"slowest median: {worst * 1000:,.1f} ms")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=360_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--windows", type=int, nargs="+", default=[30, 90, 366])
    parser.add_argument("--database-url", help="use this (already loaded) database as is")
    parser.add_argument("--load", action="store_true",
                        help="with --database-url: migrate and load it first")  # fmt: skip
    run_on_database(parser.parse_args(argv), run)


if __name__ == "__main__":
    main()

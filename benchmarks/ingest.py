"""benchmarks/ingest: SMS recorded per second through ingest_sms, against the bare SQL.

    python -m benchmarks.ingest [--existing 360000] [--batches 20]

Both sides run in the same run on the same database, with the same payloads:
  * endpoint: real HTTP POSTs to the function served as `make dev` serves it
    (functions-framework on gunicorn, its own process): auth, JSON parsing, pydantic
    validation with phone normalisation, the RPC, the response;
  * bare SQL: `SELECT public.ingest_sms(...)` over one psycopg connection, with the
    already-validated JSON the endpoint would send.
Every SMS is new (a fresh SID), so both sides really insert. Then the cost of the KPIs'
insert trigger (the sets of hours of workflows and recipients): bulk bare SQL with it
and without it, alternately, every recipient a new one (the dearest case).
"""

from __future__ import annotations

import argparse
import json
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from benchmarks.common import (
    DEMO_DEPLOYMENT,
    benchmark_database,
    function_process,
    median,
    thread_clients,
    timed,
)
from functions.ingest_sms.models import SmsIn

KEY = "benchmark-ingest-key-0123456789abcdef"


def raw_sms() -> dict[str, Any]:
    return {
        "deployment_id": DEMO_DEPLOYMENT,
        "phone_number": f"06 12 {random.randrange(10**6):06d}",  # a different contact each time
        "first_name": "Camille",
        "message_content": "Bonjour, votre rendez-vous est confirmé demain à 14h00.",
        "message_type": "appointment_reminder",
        "provider_message_sid": "SM" + uuid.uuid4().hex,
        "provider_status": "queued",
        "sent_at": "2026-11-24T10:00:00Z",
        "provider_cost": "0.0750",
        "voipia_margin": "0.0300",
        "workflow_id": "wf-rappels",
        "metadata": {"campaign_id": "rappels_2026", "template_id": "rdv_v2"},
    }


def validated(items: list[dict[str, Any]]) -> str:
    context = {"region": "FR"}
    return json.dumps(
        [
            SmsIn.model_validate(i, context=context).model_dump(mode="json", exclude_none=True)
            for i in items
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--existing", type=int, default=360_000, help="rows already in agent_sms")
    parser.add_argument("--batches", type=int, default=20, help="bulk requests of 500 per side")
    parser.add_argument("--singles", type=int, default=300, help="single requests per side")
    args = parser.parse_args(argv)

    with benchmark_database(args.existing) as url:
        environment = {"DATABASE_URL": url, "INGEST_API_KEYS": KEY}
        with (
            function_process("ingest_sms", environment) as (function_url, _),
            psycopg.connect(url, autocommit=True) as conn,
        ):
            client = thread_clients(headers={"Authorization": f"Bearer {KEY}"})

            def endpoint(items: list[dict[str, Any]]) -> None:
                body = {"messages": items} if len(items) > 1 else items[0]
                response = client().post(function_url, json=body)
                assert response.status_code == 201, response.text

            def bare(payload: str) -> None:
                conn.execute("SELECT public.ingest_sms(%s::jsonb)", (payload,)).fetchone()

            endpoint([raw_sms() for _ in range(500)])  # warm both paths
            bare(validated([raw_sms() for _ in range(500)]))

            results = {}
            for label, size, repeat in (("bulk", 500, args.batches), ("single", 1, args.singles)):
                endpoint_batches = [[raw_sms() for _ in range(size)] for _ in range(repeat)]
                bare_batches = [validated([raw_sms() for _ in range(size)]) for _ in range(repeat)]
                via_http = median(timed(endpoint, endpoint_batches))
                via_sql = median(timed(bare, bare_batches))
                results[label] = (size, via_http, via_sql)

            trigger: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.batches):
                for enabled in (True, False):
                    conn.execute("ALTER TABLE agent_sms " + ("ENABLE" if enabled else "DISABLE")
                                 + " TRIGGER agent_sms_add_to_kpis")  # fmt: skip
                    payload = validated([raw_sms() for _ in range(500)])
                    trigger[enabled] += timed(bare, [payload])
            conn.execute("ALTER TABLE agent_sms ENABLE TRIGGER agent_sms_add_to_kpis")
            with_trigger, without_trigger = median(trigger[True]), median(trigger[False])

            # n8n runs workflows in parallel: two clients keep both cores busy, one
            # batch being validated while the database inserts another.
            batches = [[raw_sms() for _ in range(500)] for _ in range(args.batches)]
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=2) as pool:
                list(pool.map(endpoint, batches))
            concurrent = len(batches) * 500 / (time.perf_counter() - started)

    print(f"agent_sms held {args.existing:,} rows before the run; medians over the requests.")
    columns = ("endpoint SMS/s", "bare SQL SMS/s", "total/SQL", "overhead/SQL")
    print(f"{'':8} {columns[0]:>15} {columns[1]:>15} {columns[2]:>10} {columns[3]:>13}")
    for label, (size, via_http, via_sql) in results.items():
        print(
            f"{label:8} {size / via_http:15,.0f} {size / via_sql:15,.0f}"
            f" {via_http / via_sql:10.2f}x {(via_http - via_sql) / via_sql:12.2f}x"
        )
    print(f"bulk, 2 concurrent clients: {concurrent:,.0f} SMS/s through the endpoint")
    print(f"bulk bare SQL with the KPIs' insert trigger {500 / with_trigger:,.0f} SMS/s,"
          f" without {500 / without_trigger:,.0f} SMS/s:"
          f" with / without = {with_trigger / without_trigger:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()

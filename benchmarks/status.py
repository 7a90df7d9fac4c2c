"""benchmarks/status: Twilio status callbacks handled per second, against the bare SQL.

    python -m benchmarks.status [--existing 360000] [--callbacks 2000]

Both sides run in the same run on the same database, each on SMS of its own:
  * endpoint: signed form POSTs, exactly as Twilio sends them, to twilio_status served
    as `make dev` serves it (functions-framework on gunicorn, its own process):
    signature check, parsing, the RPC, the empty 200; one client, then a few threads;
  * capacity: the same function with two workers (WORKERS=2, one per core), posted to
    by several lean client processes at once, as Twilio calls back;
  * bare SQL: `SELECT public.record_sms_status(...)` over one psycopg connection.
Each SMS gets "sent" then "delivered", so every callback writes an event and moves a row.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode, urlsplit

import psycopg
from twilio.request_validator import RequestValidator

from benchmarks.common import (
    DEMO_DEPLOYMENT,
    EMPTY_FUNCTION,
    benchmark_database,
    function_process,
    median,
    thread_clients,
    timed,
)
from tests.fake_twilio import status_callback

ACCOUNT = "AC" + "f" * 32
TOKEN = "benchmark-auth-token"  # noqa: S105 (a local test server's)


def create_sms(conn: psycopg.Connection, count: int) -> list[str]:
    sids = ["SM" + uuid.uuid4().hex for _ in range(count)]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO agent_sms (deployment_id, phone_number, message_content,"
            " provider_message_sid, provider_status, sent_at)"
            " VALUES (%s, '+33612345678', 'Bonjour', %s, 'queued', now())",
            [(DEMO_DEPLOYMENT, sid) for sid in sids],
        )
    return sids


def callbacks_for(sids: list[str]) -> list[dict[str, str]]:
    return [
        status_callback(ACCOUNT, sid, status) for status in ("sent", "delivered") for sid in sids
    ]


def post_all(url: str, requests: list[tuple[str, str]]) -> None:
    """One client process: keep-alive POSTs of pre-signed bodies, as lean as a client
    gets, so that the service, not the client, is what fills the two cores."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
    for body, signature in requests:
        connection.request("POST", parts.path or "/", body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        })  # fmt: skip
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status


def capacity(url: str, requests: list[tuple[str, str]], processes: int) -> float:
    """Callbacks per second with `processes` clients posting at once."""
    chunks = [requests[i::processes] for i in range(processes)]
    clients = [multiprocessing.Process(target=post_all, args=(url, chunk)) for chunk in chunks]
    started = time.perf_counter()
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    assert all(client.exitcode == 0 for client in clients), "a client process failed"
    return len(requests) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--existing", type=int, default=360_000, help="rows already in agent_sms")
    parser.add_argument("--callbacks", type=int, default=2000, help="callbacks per side")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients at the end")
    parser.add_argument("--processes", type=int, default=4,
                        help="client processes in the capacity run (2 workers)")  # fmt: skip
    args = parser.parse_args(argv)
    per_side = max(1, args.callbacks // 2)

    with benchmark_database(args.existing) as url:
        environment = {
            "DATABASE_URL": url,
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_AUTH_TOKEN": TOKEN,
        }
        with (
            function_process("empty_function", {}, EMPTY_FUNCTION) as empty_url,
            function_process("twilio_status", environment) as function_url,
            psycopg.connect(url, autocommit=True) as conn,
        ):
            client = thread_clients()
            validator = RequestValidator(TOKEN)

            def signed(params: dict[str, str]) -> tuple[dict[str, str], str]:
                return params, validator.compute_signature(function_url, params)

            def endpoint(request: tuple[dict[str, str], str]) -> None:
                params, signature = request
                response = client().post(
                    function_url, data=params, headers={"X-Twilio-Signature": signature}
                )
                assert response.status_code == 200, response.text

            def bare(params: dict[str, str]) -> None:
                conn.execute(
                    "SELECT public.record_sms_status(%s, %s, NULL, NULL, %s)",
                    (params["MessageSid"], params["MessageStatus"], params["To"]),
                ).fetchone()

            endpoint(signed(callbacks_for(create_sms(conn, 1))[0]))  # warm both paths
            bare(callbacks_for(create_sms(conn, 1))[0])

            http_requests = [signed(p) for p in callbacks_for(create_sms(conn, per_side))]
            sql_calls = callbacks_for(create_sms(conn, per_side))
            via_http = median(timed(endpoint, http_requests))
            via_sql = median(timed(bare, sql_calls))
            floor = median(
                timed(lambda r: client().post(empty_url, data=r[0]), http_requests[:per_side])
            )

            concurrent_requests = [signed(p) for p in callbacks_for(create_sms(conn, per_side))]
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.clients) as pool:
                list(pool.map(endpoint, concurrent_requests))
            concurrent = len(concurrent_requests) / (time.perf_counter() - started)

            # Capacity, as Twilio calls back: many callbacks at once, here from client
            # processes, served by two workers (one per core), as WORKERS=2 serves them.
            with function_process("twilio_status", environment | {"WORKERS": "2"}) as pair_url:
                sids = create_sms(conn, 2 * per_side)
                bodies = [(urlencode(p), validator.compute_signature(pair_url, p))
                          for p in callbacks_for(sids)]  # fmt: skip
                post_all(pair_url, bodies[:200])  # warm both workers' connections
                served = capacity(pair_url, bodies[200:], args.processes)

    print(f"agent_sms held {args.existing:,} rows; medians over {len(sql_calls)} callbacks a side.")
    print(f"endpoint, one client:     {1 / via_http:8,.0f} callbacks/s ({via_http * 1000:.2f} ms)")
    print(f"bare SQL, one connection: {1 / via_sql:8,.0f} callbacks/s ({via_sql * 1000:.2f} ms)")
    print(f"empty function (the HTTP stack alone): {floor * 1000:.2f} ms")
    print(f"endpoint / bare SQL:      {via_http / via_sql:8.2f}x")
    print(f"(endpoint - HTTP stack) / bare SQL: {(via_http - floor) / via_sql:.2f}x")
    print(f"our Python alone, (endpoint - HTTP stack - bare SQL) / bare SQL:"
          f" {(via_http - floor - via_sql) / via_sql:.2f}x")  # fmt: skip
    print(f"endpoint, {args.clients} concurrent clients: {concurrent:,.0f} callbacks/s")
    print(f"capacity, 2 workers, {args.processes} client processes: {served:,.0f} callbacks/s")


if __name__ == "__main__":
    main()

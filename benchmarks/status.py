"""benchmarks/status: Twilio status callbacks handled per second, against the bare SQL.

    python -m benchmarks.status [--existing 360000] [--callbacks 2000]

Every side runs in the same run on the same database, each on SMS of its own; every
SMS gets "sent" then "delivered", so each callback writes an event and moves a row.
  * bare SQL: `SELECT public.record_sms_status(...)` over one psycopg connection;
  * the deployed entry point: the Lambda handler that serverless.yml deploys behind the
    function URL, called here with function-URL events as AWS hands them over, signed
    as Twilio signs: all of our Python for a callback (the adapter, the signature,
    parsing, the RPC, the log line, the empty 200) and nothing else, since on Lambda
    AWS's front end speaks HTTP;
  * over HTTP: the function served as `make dev` serves it (functions-framework on
    gunicorn, its own process), one keep-alive client posting Twilio's form bodies,
    then an empty function served the same way (the HTTP stack alone);
  * capacity: that function with two workers (WORKERS=2, one per core), posted to by
    several client processes at once, as Twilio calls back, and the CPU its
    processes used per callback.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import logging
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import psycopg
from twilio.request_validator import RequestValidator

from benchmarks.common import (
    DEMO_DEPLOYMENT,
    EMPTY_FUNCTION,
    benchmark_database,
    function_process,
    median,
    timed,
)
from tools.fake_twilio import status_callback
from tools.lambda_events import DOMAIN, function_url_event

ACCOUNT = "AC" + "f" * 32
TOKEN = "benchmark-auth-token"  # noqa: S105 (a local test server's)

Signed = tuple[str, str]  # a form body, and its X-Twilio-Signature
Event = dict[str, Any]  # a function-URL event
T = TypeVar("T")


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


def signed_for(url: str, callbacks: list[dict[str, str]]) -> list[Signed]:
    validator = RequestValidator(TOKEN)
    return [(urlencode(p), validator.compute_signature(url, p)) for p in callbacks]


class Poster:
    """One keep-alive connection posting signed form bodies, as lean as a client gets,
    so that the service, not the client, is what is measured."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._path = parts.path or "/"
        self._connection = http.client.HTTPConnection(parts.hostname or "", parts.port)

    def __call__(self, request: Signed) -> None:
        body, signature = request
        self._connection.request("POST", self._path, body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        })  # fmt: skip
        response = self._connection.getresponse()
        response.read()
        assert response.status == 200, response.status


def post_all(url: str, requests: list[Signed]) -> None:
    post = Poster(url)
    for request in requests:
        post(request)


def at_once(
    caller: Callable[[], AbstractContextManager[Callable[[T], None]]],
    items: list[T],
    processes: int,
) -> float:
    """Items per second, with `processes` processes working through their share at once.
    Each makes its own caller and warms it on its first item; only the rest is timed."""
    chunks = [items[i::processes] for i in range(processes)]
    start, done = multiprocessing.Barrier(processes + 1), multiprocessing.Barrier(processes + 1)
    workers = [
        multiprocessing.Process(target=_work_through, args=(caller, chunk, start, done))
        for chunk in chunks
    ]
    for worker in workers:
        worker.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a worker failed: see below
        start.wait()
        started = time.perf_counter()
        done.wait()
        elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join()
    assert all(worker.exitcode == 0 for worker in workers), "a worker process failed"
    return sum(len(chunk) - 1 for chunk in chunks) / elapsed


def _work_through(
    caller: Callable[[], AbstractContextManager[Callable[[T], None]]],
    items: list[T],
    start: Any,
    done: Any,
) -> None:
    try:
        with caller() as call:
            call(items[0])
            start.wait()
            for item in items[1:]:
                call(item)
            done.wait()
    except BaseException:
        start.abort()  # so that nobody waits for a worker that has failed
        done.abort()
        raise


def cpu_seconds(pid: int) -> float:
    """CPU (user and system) used so far by a process and its children still running."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            _, fields = stat.read_text().rsplit(")", 1)
            parts = fields.split()  # parts[1] is the parent's pid; [11], [12]: utime, stime
            if stat.parent.name == str(pid) or parts[1] == str(pid):
                total += int(parts[11]) + int(parts[12])
    return total / tick


@contextlib.contextmanager
def lambda_entry_point(environment: dict[str, str]) -> Iterator[Callable[[Event], None]]:
    """Invoke twilio_status's Lambda handler in this process, configured as deployed
    (INFO logs, formatted and written, here to /dev/null); every answer must be 200."""
    from shared import logs, runtime
    from shared.settings import Settings

    root = logging.getLogger()
    sink = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 (closed below)
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = [sink]
    settings = Settings.load(environment | {"LOG_LEVEL": "INFO"})
    logs.configure(settings.log_level)
    runtime.use(runtime.Services(settings))
    try:
        from functions.twilio_status.aws_lambda import handler

        def invoke(event: Event) -> None:
            assert handler(event, None)["statusCode"] == 200

        yield invoke
    finally:
        runtime.services().db.close()
        runtime.use(None)
        root.handlers, root.level = saved_handlers, saved_level
        sink.close()


def function_url_events(callbacks: list[dict[str, str]]) -> list[Event]:
    """The events Lambda hands the handler for these callbacks, signed as Twilio signs."""
    return [
        function_url_event(
            "POST",
            body=body.encode(),
            base64_body=True,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": signature,
            },
        )
        for body, signature in signed_for(f"https://{DOMAIN}/", callbacks)
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--existing", type=int, default=360_000, help="rows already in agent_sms")
    parser.add_argument("--callbacks", type=int, default=2000, help="callbacks per side")
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
        with psycopg.connect(url, autocommit=True) as conn:

            def bare(params: dict[str, str]) -> None:
                conn.execute(
                    "SELECT public.record_sms_status(%s, %s, NULL, NULL, %s)",
                    (params["MessageSid"], params["MessageStatus"], params["To"]),
                ).fetchone()

            bare(callbacks_for(create_sms(conn, 1))[0])  # warm
            via_sql = median(timed(bare, callbacks_for(create_sms(conn, per_side))))

            with lambda_entry_point(environment) as invoke:
                events = function_url_events(callbacks_for(create_sms(conn, per_side + 1)))
                invoke(events.pop())  # warm: the pool's first connection
                cpu_before, wall_before = time.thread_time(), time.perf_counter()
                via_lambda = median(timed(invoke, events))
                lambda_cpu = (time.thread_time() - cpu_before) / len(events)
                lambda_wall = (time.perf_counter() - wall_before) / len(events)

            # Capacity as deployed: Lambda gives each callback in flight an instance of
            # its own (a process here, with its own connection), one callback at a time;
            # as many instances as client processes below.
            instances = at_once(
                lambda: lambda_entry_point(environment),
                function_url_events(callbacks_for(create_sms(conn, per_side))),
                args.processes,
            )

            with (
                function_process("empty_function", {}, EMPTY_FUNCTION) as empty,
                function_process("twilio_status", environment) as function,
            ):
                requests = signed_for(function.url, callbacks_for(create_sms(conn, per_side + 1)))
                # A connection each, opened and warmed just before its run: gunicorn
                # closes one left idle for two seconds.
                post = Poster(function.url)
                post(requests.pop())
                via_http = median(timed(post, requests))
                post_empty = Poster(empty.url)
                post_empty(requests[0])
                floor = median(timed(post_empty, requests))

            # Capacity, as Twilio calls back: many callbacks at once, here from client
            # processes, served by two workers (one per core), as WORKERS=2 serves them.
            with function_process("twilio_status", environment | {"WORKERS": "2"}) as pair:
                requests = signed_for(pair.url, callbacks_for(create_sms(conn, 2 * per_side)))
                warm = min(200, len(requests) // 10)
                post_all(pair.url, requests[:warm])  # both workers' connections
                cpu_before = cpu_seconds(pair.pid)
                served = at_once(
                    lambda: contextlib.nullcontext(Poster(pair.url)),
                    requests[warm:],
                    args.processes,
                )
                pair_cpu = (cpu_seconds(pair.pid) - cpu_before) / len(requests[warm:])

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.2f} ms ({1 / seconds:,.0f}/s)"

    lines = [
        f"agent_sms held {args.existing:,} rows; medians over {per_side * 2:,} callbacks a side.",
        f"bare SQL, one connection: {ms(via_sql)}",
        f"deployed entry point (Lambda handler, in process): {ms(via_lambda)};"
        f" Python CPU {lambda_cpu * 1000:.2f} ms a callback (mean {lambda_wall * 1000:.2f} ms)",
        f"  Python side, (entry point - bare SQL) / bare SQL: {via_lambda / via_sql - 1:.2f}x;"
        f" its CPU / bare SQL: {lambda_cpu / via_sql:.2f}x",
        f"  capacity, {args.processes} instances at once: {instances:,.0f} callbacks/s",
        f"over HTTP (functions-framework on gunicorn), one client: {ms(via_http)}",
        f"  empty function, same server and client (the HTTP stack alone): {ms(floor)}",
        f"  endpoint / bare SQL: {via_http / via_sql:.2f}x;"
        f" (endpoint - HTTP stack - bare SQL) / bare SQL: {(via_http - floor) / via_sql - 1:.2f}x",
        f"capacity, 2 workers, {args.processes} client processes: {served:,.0f} callbacks/s;"
        f" the function's CPU {pair_cpu * 1000:.2f} ms a callback"
        f" ({pair_cpu / via_sql:.2f}x bare SQL)",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""benchmarks/spillover: draining the spill-over queue after an outage, against the direct path.

    python -m benchmarks.spillover [--sms 2000] [--seconds 120] [--pollers 2]

ingest_sms and twilio_status are served as `make dev` serves them (functions-framework on
gunicorn, two workers each, serverless.yml's DATABASE_TIMEOUT_SECONDS), through PgBouncer
in transaction mode as sms_api; PgBouncer reaches Postgres through a relay
(tools/relay.py) the benchmark cuts; the spill-over queue is on moto's server. Each SMS
is one ingest (posted alone, as n8n posts it) and three signed status callbacks: sent,
delivered or undelivered with the carrier's RawDlrDoneDate, and `queued` (every other
SMS) or the final one again (Twilio's duplicate), a few of them before their ingest.

  * direct: the database up, the calls of `--sms` SMS posted by 2 clients at once, as
    fast as they are answered: the calls per second the direct path takes in;
  * outage: the database link cut, the calls of as many other SMS posted over
    `--seconds` (paced, 32 clients): each parked (202 for ingest_sms, 200 for
    twilio_status), one message per SMS or callback;
  * drain: the database back, `--pollers` replay consumers (`python -m functions.replay
    --until-empty`, each in its own process, as serverless.yml deploys replay: a pool of
    one connection, a 10 s deadline) receive batches of 10, as Lambda's SQS event source
    with maximumConcurrency 2 does, until the queue is empty. Its calls per second,
    against the direct path's, on the same database in the same run.

Target: the drain completes within 120 s. Both sides are then checked: every SMS once
with its final status, every report in its history once.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from twilio.request_validator import RequestValidator

from benchmarks.common import DEMO_DEPLOYMENT, benchmark_database, thread_clients
from benchmarks.soak.stack import (
    S3_CREDENTIALS,
    create_spillover_queues,
    deployed_environment,
    deployed_timeouts,
    queue_depth,
    serve_function,
    sqs_server,
)
from tools.dev import FUNCTIONS_DIR, LocalFunction
from tools.embedded import as_user, free_port, wait_for_port
from tools.fake_twilio import status_callback
from tools.migrate import API_LOGIN, ROOT
from tools.pooler import transaction_pooler
from tools.relay import Relay, relay_to_database

KEYS = {
    "INGEST_API_KEYS": "benchmark-ingest-key-0123456789abcdef",
    "TWILIO_ACCOUNT_SID": "AC" + "7" * 32,
    "TWILIO_AUTH_TOKEN": "benchmark-twilio-auth-token",
    "ARCHIVE_INDEX_SECRET": "benchmark-archive-index-secret-012345",
}
DIRECT_CLIENTS = 2
OUTAGE_CLIENTS = 32
TARGET_SECONDS = 120.0
DRAIN_GUARD_SECONDS = 900.0


@dataclass(frozen=True)
class Sms:
    sid: str
    item: dict[str, Any]
    final: str  # delivered | undelivered
    done_at: datetime
    extra: str  # "queued", or "again": Twilio sends the final report twice

    def reports(self) -> list[dict[str, str]]:
        to = {"To": self.item["phone_number"]}
        final = {"RawDlrDoneDate": self.done_at.strftime("%y%m%d%H%M")}
        if self.final == "undelivered":
            final["ErrorCode"] = "30003"
        account = KEYS["TWILIO_ACCOUNT_SID"]
        forms = [
            status_callback(account, self.sid, "sent", **to),
            status_callback(account, self.sid, self.final, **to, **final),
        ]
        extra = forms[1] if self.extra == "again" else status_callback(
            account, self.sid, "queued", **to
        )  # fmt: skip
        return [*forms, extra]

    @property
    def history(self) -> Counter[str]:
        """Its events once every report was made: the repeated final one is kept once."""
        return Counter(["sent", self.final] + (["queued"] if self.extra == "queued" else []))


@dataclass(frozen=True)
class Call:
    function: str  # ingest_sms | twilio_status
    body: dict[str, Any]


def campaign(count: int, rng: random.Random) -> tuple[list[Sms], list[Call]]:
    """SMS and their calls in the order they are posted: each SMS's ingest then its
    reports, shuffled within a window, so that some reports come before their SMS."""
    now = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    sms = []
    for n in range(count):
        sid = "SM" + uuid.UUID(int=rng.getrandbits(128)).hex
        sent_at = now - timedelta(minutes=rng.randrange(600))
        item = {
            "deployment_id": DEMO_DEPLOYMENT,
            "phone_number": f"+33612{rng.randrange(10**6):06d}",
            "first_name": "Camille",
            "message_content": "Bonjour, votre rendez-vous est confirmé demain à 14h00.",
            "message_type": "appointment_reminder",
            "provider_message_sid": sid,
            "provider_status": "queued",
            "sent_at": sent_at.isoformat(),
            "provider_cost": "0.0750",
            "voipia_margin": "0.0300",
            "workflow_id": "wf-rappels",
        }
        final = "undelivered" if rng.random() < 0.1 else "delivered"
        done_at = (sent_at + timedelta(minutes=2)).replace(second=0)
        sms.append(Sms(sid, item, final, done_at, "queued" if n % 2 else "again"))
    ordered: list[tuple[float, Call]] = []
    for n, one in enumerate(sms):
        ordered.append((4 * n + rng.uniform(0, 12), Call("ingest_sms", one.item)))
        for k, form in enumerate(one.reports(), start=1):
            ordered.append((4 * n + k + rng.uniform(0, 12), Call("twilio_status", form)))
    ordered.sort(key=lambda pair: pair[0])
    return sms, [call for _, call in ordered]


@dataclass
class Stack:
    database_url: str  # direct, for the checks
    pooled_url: str  # the functions' and replay's: PgBouncer, in transaction mode
    database_link: Relay  # PgBouncer's way to Postgres
    sqs_endpoint: str
    queue_url: str
    urls: dict[str, str]
    environment: dict[str, str]


@contextmanager
def running_stack(existing: int) -> Iterator[Stack]:
    with ExitStack() as stack:
        url = stack.enter_context(benchmark_database(existing))
        link, via_link = relay_to_database(url)
        stack.callback(link.close)
        pooled = stack.enter_context(
            transaction_pooler(as_user(via_link, API_LOGIN), users=(API_LOGIN,))
        )
        sqs = stack.enter_context(sqs_server())
        queue_url, _ = create_spillover_queues(sqs)
        environment = (
            {name: value for name, value in os.environ.items() if name != "SECRET_IDS"}
            | KEYS
            | S3_CREDENTIALS
            | {
                "PYTHONPATH": str(ROOT),
                "DATABASE_URL": pooled,
                "SQS_ENDPOINT_URL": sqs,
                "SPILLOVER_QUEUE_URL": queue_url,
                "LOG_LEVEL": "WARNING",
                "WORKERS": "2",
            }
        )
        deployed = deployed_timeouts()
        urls, processes = {}, []
        for name in ("ingest_sms", "twilio_status"):
            function = LocalFunction(name, FUNCTIONS_DIR / name / "main.py", free_port())
            process = serve_function(
                function, environment | deployed.get(name, {}), output=subprocess.DEVNULL
            )
            processes.append(process)
            stack.callback(_stop, process)
            wait_for_port(function.port, name, process)
            urls[name] = function.url
        yield Stack(url, pooled, link, sqs, queue_url, urls, environment)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


class Poster:
    """Posts calls as n8n and Twilio do: ingest_sms with the API key, callbacks signed
    over the function's URL."""

    def __init__(self, stack: Stack) -> None:
        self._urls = stack.urls
        self._client = thread_clients()
        self._validator = RequestValidator(KEYS["TWILIO_AUTH_TOKEN"])
        self._signatures: dict[int, str] = {}

    def __call__(self, call: Call) -> tuple[float, int]:
        url = self._urls[call.function]
        started = time.perf_counter()
        if call.function == "ingest_sms":
            headers = {"Authorization": f"Bearer {KEYS['INGEST_API_KEYS']}"}
            response = self._client().post(url, json=call.body, headers=headers)
        else:
            signature = self._validator.compute_signature(url, call.body)
            response = self._client().post(
                url, data=call.body, headers={"X-Twilio-Signature": signature}
            )
        return time.perf_counter() - started, response.status_code


def post_direct(stack: Stack, calls: list[Call]) -> float:
    """Seconds for DIRECT_CLIENTS clients to post the calls, each as soon as the last
    was answered."""
    poster = Poster(stack)
    share = [calls[n::DIRECT_CLIENTS] for n in range(DIRECT_CLIENTS)]

    def client(mine: list[Call]) -> None:
        for call in mine:
            _, status = poster(call)
            assert status in (200, 201), f"{call.function}: {status} with the database up"

    started = time.perf_counter()
    with ThreadPoolExecutor(DIRECT_CLIENTS) as pool:
        list(pool.map(client, share))
    return time.perf_counter() - started


def post_during_outage(stack: Stack, calls: list[Call], seconds: float) -> list[float]:
    """The calls posted over `seconds`, paced, while the database link is cut; the
    link is back once the last is answered. Each answer's seconds."""
    poster = Poster(stack)
    done = threading.Event()

    def outage() -> None:
        stack.database_link.cut(seconds + 5)
        while not done.is_set():  # posting took longer: the outage lasts until it is done
            stack.database_link.cut(1.0)

    cut = threading.Thread(target=outage)
    cut.start()
    time.sleep(0.5)
    began = time.perf_counter()
    answers: list[float] = []

    def post(pair: tuple[int, Call]) -> None:
        n, call = pair
        time.sleep(max(0.0, began + n * seconds / len(calls) - time.perf_counter()))
        took, status = poster(call)
        expected = 202 if call.function == "ingest_sms" else 200
        assert status == expected, f"{call.function}: {status} during the outage"
        answers.append(took)

    try:
        with ThreadPoolExecutor(OUTAGE_CLIENTS) as pool:
            list(pool.map(post, enumerate(calls)))
    finally:
        done.set()
        cut.join()
    return answers


def wait_for_the_database(url: str) -> None:
    """Until PgBouncer reaches Postgres again (it tries again every second)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2, prepare_threshold=None) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def drain(stack: Stack, pollers: int) -> tuple[float, list[dict[str, int]]]:
    """The replay consumers run until the queue is empty: seconds, and their reports."""
    environment = stack.environment | deployed_environment("replay")
    started = time.perf_counter()
    consumers = [
        subprocess.Popen(
            [sys.executable, "-m", "functions.replay", "--until-empty"],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(pollers)
    ]
    reports = []
    for consumer in consumers:
        out, _ = consumer.communicate(timeout=DRAIN_GUARD_SECONDS)
        reports.append(json.loads(out.decode().strip().splitlines()[-1]))
    # A consumer stops at its first empty receive: what the others still hold, or what
    # replay postponed, is waited for.
    while queue_depth(stack.sqs_endpoint, stack.queue_url)[1]:
        if time.perf_counter() - started > DRAIN_GUARD_SECONDS:
            raise RuntimeError("the spill-over queue did not drain")
        time.sleep(0.2)
    return time.perf_counter() - started, reports


def check(database_url: str, sms: list[Sms]) -> None:
    """Every SMS once, with its final status; every report in its history once."""
    sids = [one.sid for one in sms]
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT provider_message_sid, provider_status, count(*) OVER (PARTITION BY"
            " provider_message_sid) FROM agent_sms WHERE provider_message_sid = ANY(%s)",
            (sids,),
        ).fetchall()
        events = conn.execute(
            "SELECT provider_message_sid, twilio_status FROM agent_sms_events"
            " WHERE provider_message_sid = ANY(%s) AND applied_at IS NOT NULL",
            (sids,),
        ).fetchall()
    stored = {sid: (status, copies) for sid, status, copies in rows}
    history: dict[str, Counter[str]] = {}
    for sid, status in events:
        history.setdefault(sid, Counter())[status] += 1
    for one in sms:
        assert stored.get(one.sid) == (one.final, 1), f"{one.sid}: {stored.get(one.sid)}"
        assert history.get(one.sid) == one.history, f"{one.sid}: {history.get(one.sid)}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sms", type=int, default=2000, help="SMS per side (and 3x callbacks)")
    parser.add_argument("--seconds", type=float, default=120, help="the outage's posting time")
    parser.add_argument("--pollers", type=int, default=2, help="replay consumers at once")
    parser.add_argument("--existing", type=int, default=100_000, help="rows in agent_sms")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    direct_sms, direct_calls = campaign(args.sms, rng)
    parked_sms, parked_calls = campaign(args.sms, rng)

    with running_stack(args.existing) as stack:
        warm_sms, warm_calls = campaign(20, rng)  # both functions and both paths warm
        post_direct(stack, warm_calls)
        direct_seconds = post_direct(stack, direct_calls)
        answers = post_during_outage(stack, parked_calls, args.seconds)
        parked = queue_depth(stack.sqs_endpoint, stack.queue_url)[1]
        wait_for_the_database(stack.pooled_url)
        drain_seconds, reports = drain(stack, args.pollers)
        check(stack.database_url, warm_sms + direct_sms + parked_sms)

    calls = len(direct_calls)
    direct_rate = calls / direct_seconds
    drain_rate = parked / drain_seconds
    cuts = (
        statistics.quantiles(answers, n=100, method="inclusive")
        if len(answers) > 1
        else answers * 99
    )
    replayed = sum(r["replayed"] for r in reports)
    retried = sum(r["retry"] for r in reports)
    print(
        f"agent_sms held {args.existing:,} rows; {args.sms:,} SMS and {3 * args.sms:,} callbacks"
        f" a side ({calls:,} calls)"
    )
    print(
        f"outage: {len(answers):,} calls posted over {args.seconds:.0f} s, every one parked;"
        f" answered in p50 {cuts[49] * 1000:.0f} ms, p99 {cuts[98] * 1000:.0f} ms,"
        f" max {max(answers):.2f} s ({sum(a > 1.0 for a in answers)} over 1 s)"
    )
    print(f"parked: {parked:,} messages (one per SMS, one per callback)")
    print(f"{'':34}{'calls':>8}{'seconds':>10}{'calls/s':>10}")
    direct = "direct, 2 clients, database up"
    print(f"{direct:34}{calls:>8,}{direct_seconds:>10.1f}{direct_rate:>10.0f}")
    print(
        f"{f'drain, {args.pollers} replay consumers':34}{parked:>8,}{drain_seconds:>10.1f}"
        f"{drain_rate:>10.0f}"
    )
    print(f"drain / direct: {drain_rate / direct_rate:.2f}x the calls/s")
    print(
        f"replay: {replayed:,} replayed, {retried} deliveries to retry;"
        f" target: drained within {TARGET_SECONDS:.0f} s:"
        f" {'met' if drain_seconds < TARGET_SECONDS else 'NOT met'} ({drain_seconds:.1f} s)"
    )
    checked = len(direct_sms) + len(parked_sms)
    print(f"checked: {checked:,} SMS once each, every report applied once")


if __name__ == "__main__":
    main()

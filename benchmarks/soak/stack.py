"""The system under test, as on Lambda but on localhost: every function served by
functions-framework on gunicorn with several workers, Postgres and moto's S3 behind
links the gauntlet can cut, the spill-over queue on an SQS of its own (sqs.py), the
replay consumers polling it, and a stand-in for Twilio's API.

The database is reached as in production: the functions and the replay consumer through
a link (which can go mute, or drop its packets) to PgBouncer in transaction mode as
sms_api, with serverless.yml's DATABASE_TIMEOUT_SECONDS; retention and erase in sessions
of their own as sms_retention; PgBouncer and retention through the database's own link
(which can be cut: an outage). ingest_sms and twilio_status park what they verified in
the spill-over queue while the database is unavailable (shared/spillover.py); SQS is
reached directly, not through S3's link, so that an S3 outage is not an SQS one."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import boto3
import psycopg

from benchmarks.common import database_server
from benchmarks.soak.plan import ACCOUNT_SID, AGENTS, Plan
from functions.replay.replay import MAX_RECEIVES
from tools import embedded
from tools.dev import LocalFunction, discover_functions
from tools.embedded import (
    as_user,
    create_versioned_bucket,
    free_port,
    moto_s3_server,
    throwaway_database,
    wait_for_port,
)
from tools.fake_twilio import FakeTwilio
from tools.migrate import API_LOGIN, RETENTION_LOGIN, ROOT, apply
from tools.package import serverless_config
from tools.pooler import transaction_pooler
from tools.relay import Relay, relay_to_database, tcp_connector
from tools.tokens import access_token

KEYS = {
    "INGEST_API_KEYS": "soak-ingest-key-0123456789abcdef0123",
    "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
    "TWILIO_AUTH_TOKEN": "soak-twilio-auth-token",
    "SUPABASE_JWT_SECRET": "soak-jwt-secret-0123456789abcdef0123",
    "RETENTION_API_KEYS": "soak-retention-key-0123456789abcdef01",
    "PRIVACY_API_KEYS": "soak-privacy-key-0123456789abcdef0123",
    "ARCHIVE_INDEX_SECRET": "soak-archive-index-secret-0123456789",
}
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "soak",
    "AWS_SECRET_ACCESS_KEY": "soak",
    "AWS_DEFAULT_REGION": "eu-west-3",
}
# Functions that take traffic get several workers, as a Lambda has many instances.
BUSY = frozenset({"ingest_sms", "twilio_status", "metrics"})
# The replay consumers: Lambda's SQS event source runs at most two batches at a time
# (serverless.yml, maximumConcurrency).
REPLAY_CONSUMERS = 2
# The spill-over queue's visibility timeout: 30 s, as make dev has it (720 s deployed).
# Replay hides a message it could not make for longer itself (1 minute, doubling).
QUEUE_VISIBILITY_SECONDS = 30


@dataclass
class Stack:
    database_url: str  # direct, for setup and the final checks
    s3_endpoint: str  # direct
    bucket: str
    urls: dict[str, str]  # entry point -> URL
    masters: dict[str, int]  # entry point -> gunicorn master pid
    database_link: Relay  # the database's network: PgBouncer's and retention's way in
    pooler_link: Relay  # the functions' network to PgBouncer
    s3_link: Relay
    log_path: Path
    sqs_endpoint: str
    queue_url: str  # the spill-over queue
    dead_letter_url: str  # its dead-letter queue

    def token(self, user_id: str) -> str:
        """A dashboard user's Supabase access token."""
        claims = {"sub": user_id, "role": "authenticated", "aud": "authenticated"}
        return access_token(claims, KEYS["SUPABASE_JWT_SECRET"])


@contextmanager
def running_stack(plan: Plan, workdir: Path, workers: int = 2) -> Iterator[Stack]:
    with ExitStack() as stack:
        server = stack.enter_context(database_server())
        url = stack.enter_context(throwaway_database(server, prefix="sms_soak"))
        apply(url, include_local=True, report=lambda _: None)
        create_tenants(url, plan)
        database_link, url_via_link = relay_to_database(url)
        stack.callback(database_link.close)
        pooled = stack.enter_context(
            transaction_pooler(as_user(url_via_link, API_LOGIN), users=(API_LOGIN,))
        )
        pooler_link, pooled_via_link = relay_to_database(pooled)
        stack.callback(pooler_link.close)

        s3_endpoint = stack.enter_context(moto_s3_server())
        # moto keeps its buckets for the whole process: each day gets a bucket of its own.
        bucket = f"sms-archive-soak-{secrets.token_hex(4)}"
        create_versioned_bucket(
            s3_endpoint,
            bucket,
            S3_CREDENTIALS["AWS_DEFAULT_REGION"],
            access_key=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        s3_port = int(s3_endpoint.rsplit(":", 1)[1])
        s3_link = Relay(tcp_connector("127.0.0.1", s3_port))
        stack.callback(s3_link.close)

        sqs_endpoint = stack.enter_context(sqs_server())
        queue_url, dead_letter_url = create_spillover_queues(sqs_endpoint)

        twilio = stack.enter_context(FakeTwilio({ACCOUNT_SID: KEYS["TWILIO_AUTH_TOKEN"]}))
        for sms in plan.sms:
            if not sms.old:
                twilio.add(ACCOUNT_SID, sms.sid, **sms.api_message())

        environment = (
            dict(os.environ)
            | KEYS
            | S3_CREDENTIALS
            | {
                "PYTHONPATH": str(ROOT),
                "DATABASE_URL": pooled_via_link,
                "DATABASE_SESSION_URL": as_user(url_via_link, RETENTION_LOGIN),
                "S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_link.port}",
                "SQS_ENDPOINT_URL": sqs_endpoint,
                "SPILLOVER_QUEUE_URL": queue_url,
                "ARCHIVE_BUCKET": bucket,
                "TWILIO_API_BASE_URL": twilio.url,
                "RECONCILE_AFTER_MINUTES": "1",
                "RECONCILE_BATCH_SIZE": "500",
                "ARCHIVE_BATCH_SIZE": "100",
                "LOG_LEVEL": "INFO",
            }
        )
        environment.pop("SECRET_IDS", None)
        log_path = workdir / "functions.log"
        log = stack.enter_context(log_path.open("wb"))
        functions = [LocalFunction(f.name, f.source, free_port()) for f in discover_functions()]
        processes = {}
        deployed = deployed_timeouts()
        for function in functions:
            count = str(workers if function.name in BUSY else 1)
            processes[function.name] = serve_function(
                function,
                environment | deployed.get(function.name, {}) | {"WORKERS": count},
                output=log,
            )
        consumers = [
            subprocess.Popen(
                [sys.executable, "-m", "functions.replay"],
                env=environment | deployed_environment("replay"),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            for _ in range(REPLAY_CONSUMERS)
        ]
        stack.callback(_stop, [*processes.values(), *consumers])
        for function in functions:
            wait_for_port(function.port, function.name, processes[function.name])
        yield Stack(
            database_url=url,
            s3_endpoint=s3_endpoint,
            bucket=bucket,
            urls={f.name: f.url for f in functions},
            masters={name: p.pid for name, p in processes.items()},
            database_link=database_link,
            pooler_link=pooler_link,
            s3_link=s3_link,
            log_path=log_path,
            sqs_endpoint=sqs_endpoint,
            queue_url=queue_url,
            dead_letter_url=dead_letter_url,
        )


@contextmanager
def sqs_server() -> Iterator[str]:
    """The spill-over queue's SQS (benchmarks/soak/sqs.py: moto's slows down with the
    queue's depth), in a process of its own as AWS's is; its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.soak.sqs"],
        env=dict(os.environ) | {"PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().decode().strip()
        if not url.startswith("http://"):
            raise RuntimeError("the SQS stand-in did not start")
        yield url
    finally:
        _stop([process])


def serve_function(
    function: LocalFunction, environment: dict[str, str], output: IO[bytes] | int | None = None
) -> subprocess.Popen[bytes]:
    """One function as `make dev` serves it (tools/dev.py): functions-framework on
    gunicorn, its public URL its own. (tools.dev.serve starts a replay consumer beside the
    functions it is given: the gauntlet runs its own.)"""
    command = [
        sys.executable, "-m", "functions_framework",
        "--source", str(function.source), "--target", function.name,
        "--host", "127.0.0.1", "--port", str(function.port),
    ]  # fmt: skip
    return subprocess.Popen(
        command,
        env={"PUBLIC_BASE_URL": function.url.rstrip("/")} | environment,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
    )


def create_spillover_queues(endpoint: str) -> tuple[str, str]:
    """The spill-over queue and its dead-letter queue, as serverless.yml has them (the
    redrive after MAX_RECEIVES deliveries), but for the visibility timeout
    (QUEUE_VISIBILITY_SECONDS). Returns both URLs."""
    return embedded.create_spillover_queues(
        endpoint,
        f"sms-spillover-soak-{secrets.token_hex(4)}",
        max_receives=MAX_RECEIVES,
        visibility_timeout=QUEUE_VISIBILITY_SECONDS,
        region=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
        access_key=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def sqs_client(endpoint: str) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
        aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def queue_depth(endpoint: str, queue_url: str) -> tuple[int, int]:
    """(visible, all): the messages a receive could get now, and every message in the
    queue, in flight and hidden for a later delivery included."""
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    answer = sqs_client(endpoint).get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)
    counts = [int(answer["Attributes"][name]) for name in names]
    return counts[0], sum(counts)


def deployed_timeouts() -> dict[str, dict[str, str]]:
    """Each function's DATABASE_TIMEOUT_SECONDS as serverless.yml deploys it: the
    gauntlet measures the decisions production would make."""
    return {
        name: {"DATABASE_TIMEOUT_SECONDS": timeout}
        for name, function in serverless_config()["functions"].items()
        if (timeout := (function.get("environment") or {}).get("DATABASE_TIMEOUT_SECONDS"))
    }


def deployed_environment(name: str) -> dict[str, str]:
    """A function's database settings as serverless.yml deploys it (its deadline, its
    pool of one connection)."""
    deployed = serverless_config()["functions"][name].get("environment") or {}
    keys = ("DATABASE_TIMEOUT_SECONDS", "DATABASE_POOL_SIZE")
    return {key: str(deployed[key]) for key in keys if deployed.get(key) is not None}


def create_tenants(url: str, plan: Plan) -> None:
    with psycopg.connect(url) as conn:
        agents = {}
        for agent in AGENTS:
            row = conn.execute(
                "INSERT INTO agent_types (name, display_name) VALUES (%s, %s) RETURNING id",
                (agent, agent.title()),
            ).fetchone()
            assert row is not None
            agents[agent] = row[0]
        for tenant in plan.tenants:
            conn.execute(
                "INSERT INTO clients (id, name) VALUES (%s, %s)", (tenant.client_id, tenant.name)
            )
            for deployment_id, agent in tenant.deployments:
                conn.execute(
                    "INSERT INTO agent_deployments (id, name, slug, client_id, agent_type_id)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (deployment_id, deployment_id, deployment_id, tenant.client_id, agents[agent]),
                )
        for user in plan.users:
            conn.execute(
                "INSERT INTO auth.users (id, email) VALUES (%s, %s)",
                (user.user_id, f"{user.user_id}@soak.example"),
            )
            for client_id in user.clients:
                conn.execute(
                    "INSERT INTO user_client_permissions (user_id, client_id, role)"
                    " VALUES (%s, %s, 'viewer')",
                    (user.user_id, client_id),
                )


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()

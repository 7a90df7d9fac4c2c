"""The system under test, as on Lambda but on localhost: every function served by
functions-framework on gunicorn with several workers, Postgres and moto's S3 behind
links the gauntlet can cut, and a stand-in for Twilio's API.

The database is reached as in production: the functions through a link (which can go
mute, or drop its packets) to PgBouncer in transaction mode as sms_api, with
serverless.yml's DATABASE_TIMEOUT_SECONDS; retention and erase in sessions of their own
as sms_retention; PgBouncer and retention through the database's own link (which can
be cut: an outage)."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from benchmarks.common import database_server
from benchmarks.soak.plan import ACCOUNT_SID, AGENTS, Plan
from tools.dev import LocalFunction, discover_functions, serve
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
                "ARCHIVE_BUCKET": bucket,
                "TWILIO_API_BASE_URL": twilio.url,
                "RECONCILE_AFTER_MINUTES": "1",
                "RECONCILE_BATCH_SIZE": "500",
                "ARCHIVE_BATCH_SIZE": "100",
                "LOG_LEVEL": "INFO",
            }
        )
        log_path = workdir / "functions.log"
        log = stack.enter_context(log_path.open("wb"))
        functions = [LocalFunction(f.name, f.source, free_port()) for f in discover_functions()]
        processes = {}
        deployed = deployed_timeouts()
        for function in functions:
            count = str(workers if function.name in BUSY else 1)
            (processes[function.name],) = serve(
                [function],
                environment | deployed.get(function.name, {}) | {"WORKERS": count},
                output=log,
            )
        stack.callback(_stop, list(processes.values()))
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
        )


def deployed_timeouts() -> dict[str, dict[str, str]]:
    """Each function's DATABASE_TIMEOUT_SECONDS as serverless.yml deploys it: the
    gauntlet measures the decisions production would make."""
    return {
        name: {"DATABASE_TIMEOUT_SECONDS": timeout}
        for name, function in serverless_config()["functions"].items()
        if (timeout := (function.get("environment") or {}).get("DATABASE_TIMEOUT_SECONDS"))
    }


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

"""The embedded local stack: a throwaway Postgres and an S3-compatible store.

Used by `make dev` and by the test suite when no DATABASE_URL is given. Postgres
comes from the pgserver wheel (it runs the server as an unprivileged user when we
are root, which Postgres requires); S3 is moto's server.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class EmbeddedServer:
    url: str
    log: Path
    """Where the server writes its log (stderr; no logging collector)."""


@contextmanager
def embedded_server() -> Iterator[EmbeddedServer]:
    """Start a private Postgres in a temporary directory; delete it after."""
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    logging.getLogger("pgserver").setLevel(logging.WARNING)
    server = pgserver.get_server(tempfile.mkdtemp(prefix="sms-pg-"), cleanup_mode="delete")
    try:
        yield EmbeddedServer(str(server.get_uri()), Path(server.log))
    finally:
        server.cleanup()


@contextmanager
def embedded_postgres() -> Iterator[str]:
    """Start a private Postgres in a temporary directory; yield its URL; delete it after."""
    with embedded_server() as server:
        yield server.url


@contextmanager
def throwaway_database(server_url: str, prefix: str = "sms_test") -> Iterator[str]:
    """Create a fresh database on an existing server; yield its URL; drop it after."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def as_user(url: str, user: str) -> str:
    """The same connection URL, logging in as another user (without a password)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


@contextmanager
def moto_s3_server(port: int = 0) -> Iterator[str]:
    """Run moto's S3-compatible server on localhost; yield its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per S3 request

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        host, bound_port = server.get_host_and_port()
        yield f"http://{host}:{bound_port}"
    finally:
        server.stop()


def create_versioned_bucket(
    endpoint: str,
    name: str,
    region: str = "eu-west-3",
    access_key: str | None = None,
    secret_key: str | None = None,
) -> None:
    """A bucket with versioning on, as the deployed archive bucket is."""
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
    )
    s3.create_bucket(
        Bucket=name,
        CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
    )
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})


def create_spillover_queues(
    endpoint: str,
    name: str,
    *,
    max_receives: int,
    visibility_timeout: int = 30,
    region: str = "eu-west-3",
    access_key: str | None = None,
    secret_key: str | None = None,
) -> tuple[str, str]:
    """The spill-over queue and its dead-letter queue, as serverless.yml has them (the
    redrive after max_receives deliveries), with a visibility timeout of the caller's;
    returns both URLs, the queue's first."""
    import json

    import boto3

    sqs = boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
    )
    dead = sqs.create_queue(QueueName=f"{name}-dead-letters")["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])
    redrive = {
        "deadLetterTargetArn": dead_arn["Attributes"]["QueueArn"],
        "maxReceiveCount": max_receives,
    }
    queue = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(visibility_timeout),
            "RedrivePolicy": json.dumps(redrive),
        },
    )
    return str(queue["QueueUrl"]), str(dead)


def free_port() -> int:
    """A local TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, what: str, process: subprocess.Popen[bytes] | None = None) -> None:
    """Return once something listens on this local port; RuntimeError after 30 s, or
    as soon as the process meant to listen there has exited."""
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or (process is not None and process.poll() is not None):
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.1)

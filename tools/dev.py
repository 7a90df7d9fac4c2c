"""`make dev`: run every function locally, as on Lambda, against a real database and S3.

Without DATABASE_URL it starts an embedded Postgres, gives it the Supabase
stand-ins (supabase/local), the migrations and the demo data (supabase/seed.sql).
With DATABASE_URL it uses that database: a bare Postgres gets the same treatment;
one that already has Supabase's auth schema gets the migrations only.
moto's server stands in for AWS: S3 for the archive bucket, SQS for the spill-over
queue; tools/fake_ecb.py for the European Central Bank's reference rates (unless
ECB_RATES_URL is set). Each function with a main.py is served by functions-framework on
its own port, and the replay consumer polls the queue as Lambda's event source would.
Once they are up, the exchange-rate job runs once, so that an SMS priced in another
currency (USD, GBP) is converted offline.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psycopg

from functions.replay.replay import MAX_RECEIVES
from tools import kpi_page, migrate
from tools.embedded import (
    create_spillover_queues,
    create_versioned_bucket,
    embedded_postgres,
    moto_s3_server,
    wait_for_port,
)
from tools.fake_ecb import FakeEcb
from tools.tokens import access_token

FUNCTIONS_DIR = migrate.ROOT / "functions"
FIRST_PORT = 8081
# Each entry point's port, as README.md and openapi.yaml give them: a new entry point
# takes the next port after these, and moves no other.
PORTS = {
    "ingest_sms": 8081, "metrics": 8082, "retention": 8083, "erase": 8084,
    "twilio_status": 8085, "reconcile": 8086, "exchange_rates": 8087, "statement": 8088,
}  # fmt: skip
# Local-only credentials, printed at start; deployments read theirs from Secrets Manager.
DEV_KEYS = {
    "INGEST_API_KEYS": "local-dev-ingest-key-0123456789abcdef",
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "TWILIO_AUTH_TOKEN": "local-dev-twilio-auth-token",
    "SUPABASE_JWT_SECRET": "local-dev-jwt-secret-0123456789abcdef",
    "RETENTION_API_KEYS": "local-dev-retention-key-0123456789abcdef",
    "PRIVACY_API_KEYS": "local-dev-privacy-key-0123456789abcdef",
    "ARCHIVE_INDEX_SECRET": "local-dev-archive-index-secret-0123456789",
    "ARCHIVE_BUCKET": "sms-archive-local",
}
SHARED_ENVIRONMENT = (
    "DATABASE_URL", "DATABASE_SESSION_URL", "S3_ENDPOINT_URL", "SQS_ENDPOINT_URL",
    "SPILLOVER_QUEUE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
    "ECB_RATES_URL",
)  # fmt: skip
SPILLOVER_QUEUE = "sms-spillover-local"
DEMO_VIEWER = "e0000000-0000-4000-8000-000000000001"  # supabase/seed.sql: viewer of one client
# A dashboard under development (its own dev server, port 3000) may call metrics from the
# browser; CORS_ALLOWED_ORIGINS, when set, says otherwise.
KPI_PAGE_PORT = 8090
DEV_CORS_ALLOWED_ORIGINS = (
    f"http://localhost:3000,http://127.0.0.1:3000,http://127.0.0.1:{KPI_PAGE_PORT}"
)


@dataclass(frozen=True)
class LocalFunction:
    name: str
    source: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


# An HTTP entry point: a function wrapped in the error boundary.
_ENTRY_POINT = re.compile(r"^@endpoint\(.*\)\ndef (\w+)\(", re.MULTILINE)


def discover_functions() -> list[LocalFunction]:
    """Every @endpoint function of every functions/<name>/main.py, one port each (its
    own in PORTS, or the next one after them), by port."""
    found: list[LocalFunction] = []
    spare = max(PORTS.values(), default=FIRST_PORT - 1) + 1
    for source in sorted(FUNCTIONS_DIR.glob("*/main.py")):
        for target in _ENTRY_POINT.findall(source.read_text(encoding="utf-8")):
            port = PORTS.get(target)
            if port is None:
                port, spare = spare, spare + 1
            found.append(LocalFunction(target, source, port))
    return sorted(found, key=lambda function: function.port)


@contextmanager
def ecb_rates() -> Iterator[str]:
    """ECB_RATES_URL: yours when set, else the stand-in's (USD and GBP, 90 days)."""
    if url := os.environ.get("ECB_RATES_URL"):
        yield url
        return
    with FakeEcb() as ecb:
        yield ecb.rates_url


def run_exchange_rates(functions: list[LocalFunction]) -> None:
    """Run the exchange-rate job once, as its schedule would, and say what it did."""
    import urllib.error
    import urllib.request

    job = next((f for f in functions if f.name == "exchange_rates"), None)
    if job is None:
        return
    request = urllib.request.Request(job.url, data=b"", method="POST")  # noqa: S310 (a loopback URL)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
            report = json.loads(answer.read())
        print(f"exchange rates: {report['stored']} stored, {report['priced']} SMS priced")
    except (OSError, ValueError, KeyError) as exc:
        print(f"exchange rates: the first run failed ({exc}); POST {job.url} to run it again")


@contextmanager
def database() -> Iterator[str]:
    if url := os.environ.get("DATABASE_URL"):
        prepare(url)
        yield url
        return
    with embedded_postgres() as url:
        prepare(url)
        yield url


def prepare(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        supabase_shaped = conn.execute("SELECT to_regclass('auth.users')").fetchone() != (None,)
        already_local = conn.execute(
            "SELECT to_regclass('supabase_migrations.local_setup')"
        ).fetchone() != (None,)
    bare = not supabase_shaped or already_local
    migrate.apply(url, include_local=bare)
    if bare:
        migrate.load_seed(url)
        print("loaded the demo data (supabase/seed.sql)")


def serve(
    functions: list[LocalFunction], environment: dict[str, str], output: IO[bytes] | None = None
) -> list[subprocess.Popen[bytes]]:
    """Start each function, then the replay consumer when there is a spill-over queue
    to poll (SPILLOVER_QUEUE_URL); their logs go to `output` when given, else to ours."""
    processes = []
    for function in functions:
        # Locally each function's public URL is its own: Twilio's signatures are checked
        # over it, unless PUBLIC_BASE_URL says otherwise (a tunnel to a real Twilio).
        env = {"PUBLIC_BASE_URL": function.url.rstrip("/")} | environment
        command = [
            sys.executable, "-m", "functions_framework",
            "--source", str(function.source), "--target", function.name,
            "--host", "127.0.0.1", "--port", str(function.port),
        ]  # fmt: skip
        processes.append(
            subprocess.Popen(
                command,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
            )
        )
    if environment.get("SPILLOVER_QUEUE_URL"):
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "functions.replay"],
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
            )
        )
    return processes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run every function locally.")
    parser.add_argument(
        "--check", action="store_true", help="start everything, report, and stop (a smoke test)"
    )
    parser.add_argument("--s3-port", type=int, default=int(os.environ.get("DEV_S3_PORT", "9000")))
    args = parser.parse_args(argv)
    # Stop as cleanly on SIGTERM as on Ctrl-C: the functions, S3 and Postgres all go.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    with ExitStack() as stack:
        database_url = stack.enter_context(database())
        aws_endpoint = stack.enter_context(moto_s3_server(args.s3_port))
        rates_url = stack.enter_context(ecb_rates())
        environment = (
            os.environ
            | {
                "DATABASE_URL": database_url,
                "DATABASE_SESSION_URL": database_url,
                "S3_ENDPOINT_URL": aws_endpoint,
                "SQS_ENDPOINT_URL": aws_endpoint,
                "ECB_RATES_URL": rates_url,
                "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local"),
                "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
                "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "eu-west-3"),
                "CORS_ALLOWED_ORIGINS": os.environ.get(
                    "CORS_ALLOWED_ORIGINS", DEV_CORS_ALLOWED_ORIGINS
                ),
                "PYTHONPATH": str(migrate.ROOT),
            }
            | {name: os.environ.get(name, value) for name, value in DEV_KEYS.items()}
        )
        credentials = {
            "region": environment["AWS_DEFAULT_REGION"],
            "access_key": environment["AWS_ACCESS_KEY_ID"],
            "secret_key": environment["AWS_SECRET_ACCESS_KEY"],
        }
        create_versioned_bucket(aws_endpoint, environment["ARCHIVE_BUCKET"], **credentials)
        environment["SPILLOVER_QUEUE_URL"], _ = create_spillover_queues(
            aws_endpoint,
            SPILLOVER_QUEUE,
            max_receives=MAX_RECEIVES,
            region=credentials["region"],
            access_key=credentials["access_key"],
            secret_key=credentials["secret_key"],
        )
        functions = discover_functions()
        print(f"database   {database_url}")
        print(f"s3, sqs    {aws_endpoint}")
        print(f"ecb rates  {rates_url}")
        for function in functions:
            print(f"{function.name:<15} {function.url}")
        print(f"{'replay':<15} polls {environment['SPILLOVER_QUEUE_URL']}")
        # As shell exports, so that a second terminal can run the command-line tools
        # (python -m functions.retention ...) against this same stack.
        for name in (*SHARED_ENVIRONMENT, *DEV_KEYS):
            print(f"export {name}={shlex.quote(environment[name])}")
        print(f"a demo viewer's access token (24 h): {demo_token(environment)}")
        if not functions:
            print("no function has an entry point yet; the database and S3 are up")
        if args.check:
            return 0
        processes = serve(functions, environment)
        stack.callback(_stop, processes)
        for function, process in zip(functions, processes, strict=False):
            wait_for_port(function.port, function.name, process)
        run_exchange_rates(functions)
        page = stack.enter_context(kpi_page_server(functions))
        print(f"KPI page: {page}#access_token={demo_token(environment)}")
        print("ready; Ctrl-C stops everything")
        try:
            while all(p.poll() is None for p in processes):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


@contextmanager
def kpi_page_server(functions: list[LocalFunction]) -> Iterator[str]:
    """web/ on KPI_PAGE_PORT, calling this stack's metrics function (CORS allows it)."""
    from werkzeug.serving import make_server

    metrics = next(f for f in functions if f.name == "metrics")
    server = make_server("127.0.0.1", KPI_PAGE_PORT, kpi_page.app(metrics.url), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{KPI_PAGE_PORT}/"
    finally:
        server.shutdown()


def demo_token(environment: dict[str, str]) -> str:
    """What Supabase Auth would hand the seed's viewer, to try the metrics function."""
    claims = {"sub": DEMO_VIEWER, "role": "authenticated", "aud": "authenticated"}
    return access_token(claims, environment["SUPABASE_JWT_SECRET"], ttl=86_400)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())

"""What every benchmark shares: a real database at realistic scale, and timing."""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import httpx
import psycopg

from tools.dev import FUNCTIONS_DIR, LocalFunction, serve
from tools.embedded import embedded_postgres, free_port, throwaway_database, wait_for_port
from tools.migrate import ROOT, apply, load_seed

T = TypeVar("T")
EMPTY_FUNCTION = Path(__file__).parent / "empty_function" / "main.py"
DEMO_DEPLOYMENT = "d0000000-0000-4000-8000-000000000001"


@contextmanager
def benchmark_database(existing_rows: int) -> Iterator[str]:
    """A fresh database with the schema, the demo tenants and `existing_rows` SMS."""
    with database_server() as server, throwaway_database(server, prefix="sms_bench") as url:
        apply(url, include_local=True, report=lambda _: None)
        load_seed(url)
        with psycopg.connect(url) as conn:
            conn.execute(
                """
                INSERT INTO agent_sms (deployment_id, phone_number, message_content,
                                       provider_message_sid, sent_at, provider_cost)
                SELECT (ARRAY['d0000000-0000-4000-8000-000000000001',
                              'd0000000-0000-4000-8000-000000000002',
                              'd0000000-0000-4000-8000-000000000003'])[1 + n %% 3]::uuid,
                       '+336' || lpad((n %% 100000000)::text, 8, '0'),
                       'Bonjour, votre rendez-vous est confirmé demain à 14h00.',
                       'SM' || md5('existing-' || n),
                       now() - make_interval(mins => n),
                       0.0750
                FROM generate_series(1, %s) AS n
                """,
                (existing_rows,),
            )
            conn.execute("ANALYZE agent_sms")
        yield url


@contextmanager
def database_server() -> Iterator[str]:
    """DATABASE_URL's server when set, else an embedded one for the run."""
    if url := os.environ.get("DATABASE_URL"):
        yield url
    else:
        with embedded_postgres() as url:
            yield url


def thread_clients(**options: Any) -> Callable[[], httpx.Client]:
    """An HTTP client per calling thread: one thread posts sequentially, several at once."""
    local = threading.local()

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60, **options)
        current: httpx.Client = local.client
        return current

    return client


def timed(action: Callable[[T], object], inputs: list[T]) -> list[float]:
    """Seconds per call of action, once per input."""
    samples = []
    for value in inputs:
        started = time.perf_counter()
        action(value)
        samples.append(time.perf_counter() - started)
    return samples


def median(samples: list[float]) -> float:
    return statistics.median(samples)


class ServedFunction(NamedTuple):
    url: str
    pid: int  # functions-framework's, whose gunicorn workers are its children


@contextmanager
def function_process(
    name: str, environment: dict[str, str], source: Path | None = None
) -> Iterator[ServedFunction]:
    """Run one function as `make dev` does (functions-framework, gunicorn) in its own
    process, so the benchmark's client never competes with it for the GIL."""
    function = LocalFunction(name, source or FUNCTIONS_DIR / name / "main.py", free_port())
    env = os.environ | {"PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"} | environment
    (process,) = serve([function], env)
    try:
        wait_for_port(function.port, name, process)
        yield ServedFunction(function.url, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=10)

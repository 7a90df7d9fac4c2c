"""benchmarks/retention: archive throughput and memory, and erasure through the index.

    python -m benchmarks.retention [--sizes 100000,1000000] [--batch 10000]

For each size, loads that many SMS due for archiving, one a minute (about 43,000 a
month, four times the seed's volume; 1,000,000 cover two years) to 200,000
recipients, then, in a fresh process so that its peak memory is its own:
  * the baseline: reading the same rows out of Postgres, batch by batch, in the form
    the archive writes them (the floor for any archiver);
  * the archive run itself (Parquet, upload to moto's S3 server in its own process,
    read-back verification, delete, manifest and index);
and prints rows/s for both, their ratio, and the process's peak memory above its
start, side by side for every size. Flat memory means bounded by the batch, not by
the number of rows.

Then, on the largest archive, erasure of one number that sits in a handful of objects
spread over the two years: the objects erasure read (through the keyed-hash index)
against all objects, and its time against a naive full scan that reads every object
looking for the number. Both must find the same objects; the run stops if not.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from benchmarks.common import benchmark_database
from functions.retention import archive, archive_format, erasure
from functions.retention.context import Retention, retention_context
from shared.runtime import Services
from shared.settings import Settings
from tools.embedded import create_versioned_bucket, wait_for_port

RECIPIENTS = 200_000
SECONDS_BETWEEN_SMS = 60
ERASED = "+33612345678"
INDEX_SECRET = "benchmark-archive-index-secret-0123456789"  # noqa: S105 (a throwaway archive)

LOAD = """
INSERT INTO agent_sms (deployment_id, phone_number, first_name, message_content,
                       message_type, provider_message_sid, provider_status, status,
                       sent_at, delivered_at, provider_cost, voipia_margin, workflow_id,
                       workflow_execution_id, metadata)
SELECT (ARRAY['d0000000-0000-4000-8000-000000000001',
              'd0000000-0000-4000-8000-000000000002',
              'd0000000-0000-4000-8000-000000000003'])[1 + n %% 3]::uuid,
       '+336' || lpad(((n::bigint * 7919) %% %(recipients)s)::text, 8, '0'),
       (ARRAY['Camille', 'Louis', 'Inès', 'Hugo'])[1 + n %% 4],
       'Bonjour, votre rendez-vous du ' || (n %% 28 + 1) || ' est confirmé. Répondez STOP.',
       (ARRAY['appointment_reminder', 'notification', 'marketing'])[1 + n %% 3],
       'SM' || md5('archived-' || n),
       'delivered', 'delivered',
       now() - interval '400 days' - make_interval(secs => n * %(spread)s),
       now() - interval '400 days' - make_interval(secs => n * %(spread)s) + interval '4 s',
       0.0750, 0.0300, 'wf-' || n %% 20, 'ex-' || n, jsonb_build_object('batch', n %% 100)
FROM generate_series(1, %(rows)s) AS n
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_archive_in_this_process()))
        return
    sizes = [int(size) for size in args.sizes.split(",")]
    with benchmark_database(0) as url, _moto_server() as endpoint:
        results = []
        for size in sizes:
            bucket = _fresh_bucket(endpoint)
            _load(url, size)
            settings = _settings(url, endpoint, bucket, args.batch)
            results.append((size, _run_child(settings)))
        _report_archive(results)
        _report_erasure(Services(settings).get(retention_context))


def _settings(url: str, endpoint: str, bucket: str, batch: int) -> Settings:
    return Settings(
        database_session_url=url,  # type: ignore[arg-type]
        archive_bucket=bucket,
        s3_endpoint_url=endpoint,  # type: ignore[arg-type]
        archive_index_secret=INDEX_SECRET,  # type: ignore[arg-type]
        archive_batch_size=batch,
        retention_time_budget_seconds=900,
    )


def _load(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE agent_sms, agent_sms_events, private.sms_archive_objects CASCADE")
        started = time.perf_counter()
        conn.execute(LOAD, {"rows": rows, "recipients": RECIPIENTS, "spread": SECONDS_BETWEEN_SMS})
        # The number erasure looks for: five SMS, months apart.
        conn.execute(
            "INSERT INTO agent_sms (deployment_id, phone_number, message_content,"
            " provider_message_sid, sent_at) SELECT 'd0000000-0000-4000-8000-000000000002',"
            " %s, 'Texte à effacer', 'SM' || md5('erased-' || k),"
            " now() - make_interval(days => 420 + k * 130) FROM generate_series(0, 4) AS k",
            (ERASED,),
        )
        conn.execute("VACUUM ANALYZE agent_sms")
        print(f"loaded {rows:,} SMS due for archiving in {time.perf_counter() - started:.1f} s")


def _archive_in_this_process() -> dict[str, Any]:
    """The child: baseline read, then the archive run, with this process's peak memory."""
    retention = Services(Settings.load()).get(retention_context)
    before = _peak_rss_mb()
    cutoff = datetime.now(UTC) - timedelta(days=retention.settings.archive_after_days)
    sent_at = archive_format.COLUMN_NAMES.index("sent_at")
    started = time.perf_counter()
    read = 0
    with psycopg.connect(retention.database_url) as conn:
        position: tuple[Any, ...] = (datetime.min.replace(tzinfo=UTC), str(uuid.UUID(int=0)))
        while rows := conn.execute(
            f"SELECT {archive_format.SELECT_COLUMNS} FROM public.agent_sms AS s"  # noqa: S608
            " WHERE s.sent_at < %s AND (s.sent_at, s.id) > (%s, %s::uuid)"
            " ORDER BY s.sent_at, s.id LIMIT %s",
            (cutoff, *position, retention.settings.archive_batch_size),
        ).fetchall():
            read += len(rows)
            events = conn.execute(
                archive_format.SELECT_STATUS_EVENTS, (archive_format.sids_of(rows),)
            ).fetchall()
            archive_format.batch_from_rows(rows, events)  # what the archive holds in memory
            position = (rows[-1][sent_at], rows[-1][0])
    baseline_seconds = time.perf_counter() - started
    after_each_object: list[float] = []
    started = time.perf_counter()
    report = archive.run(retention, progress=lambda *_: after_each_object.append(_rss_mb()))
    archive_seconds = time.perf_counter() - started
    if not report.complete or report.archived_rows != read:
        sys.exit(f"the archive run did not archive what the baseline read: {report}, {read}")
    return {
        "rows": read,
        "objects": report.archived_objects,
        "baseline_seconds": baseline_seconds,
        "archive_seconds": archive_seconds,
        "memory_start_mb": before,
        "memory_peak_mb": _peak_rss_mb(),
        "memory_per_object_mb": [min(after_each_object[1:]), max(after_each_object[1:])],
    }


def _report_archive(results: list[tuple[int, dict[str, Any]]]) -> None:
    print()
    print("| rows | objects | archive rows/s | baseline read rows/s | archive / read time |"
          " peak memory above start | memory after each object |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for _, r in results:
        print(
            f"| {r['rows']:,} | {r['objects']} | {r['rows'] / r['archive_seconds']:,.0f}"
            f" | {r['rows'] / r['baseline_seconds']:,.0f}"
            f" | {r['archive_seconds'] / r['baseline_seconds']:.2f}x"
            f" | {r['memory_peak_mb'] - r['memory_start_mb']:.0f} MB"
            f" | {r['memory_per_object_mb'][0]:.0f}-{r['memory_per_object_mb'][1]:.0f} MB |"
        )


def _report_erasure(retention: Retention) -> None:
    phone_hash = retention.phone_hash(ERASED)
    with psycopg.connect(retention.database_url) as conn:
        objects = conn.execute("SELECT object_key FROM private.sms_archive_objects ORDER BY 1")
        keys = [key for (key,) in objects.fetchall()]
        holders = conn.execute(
            "SELECT object_key FROM private.sms_archive_phone_index WHERE phone_hash = %s",
            (phone_hash,),
        )
        indexed = {key for (key,) in holders.fetchall()}

    started = time.perf_counter()
    holding = set()
    for key in keys:
        data = retention.bucket.read(key)
        assert data is not None
        table = archive_format.decode(data)
        if archive_format.without_number(table, ERASED).num_rows < table.num_rows:
            holding.add(key)
    naive_seconds = time.perf_counter() - started

    started = time.perf_counter()
    receipt = erasure.erase(retention, [ERASED], requester="benchmark", request_id="bench")
    erase_seconds = time.perf_counter() - started
    result = receipt.erasures[0]
    touched = result.objects_rewritten + result.objects_deleted
    if holding != indexed or touched != len(holding) or not receipt.complete:
        sys.exit(f"erasure and the full scan disagree: {holding ^ indexed}, {result}")
    print()
    print(f"erasure of one number: {touched} of {len(keys)} objects read and rewritten,")
    print(f"  {result.archived_rows} archived rows and {result.hot_rows} hot rows erased")
    print(f"  through the index: {erase_seconds * 1000:,.0f} ms (rewrites included)")
    print(
        f"  naive full scan:   {naive_seconds * 1000:,.0f} ms (reading only, {len(keys)} objects)"
    )
    print(f"  full scan / index: {naive_seconds / erase_seconds:.1f}x")


def _run_child(settings: Settings) -> dict[str, Any]:
    assert settings.database_session_url is not None
    assert settings.archive_index_secret is not None
    environment = os.environ | {
        "DATABASE_SESSION_URL": settings.database_session_url.get_secret_value(),
        "ARCHIVE_BUCKET": settings.archive_bucket or "",
        "S3_ENDPOINT_URL": str(settings.s3_endpoint_url),
        "ARCHIVE_INDEX_SECRET": settings.archive_index_secret.get_secret_value(),
        "ARCHIVE_BATCH_SIZE": str(settings.archive_batch_size),
        "RETENTION_TIME_BUDGET_SECONDS": "900",
        "LOG_LEVEL": "WARNING",
    }
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.retention", "--child"],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"the archiving process failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _rss_mb() -> float:
    """This process's resident memory now (Linux)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def _moto_server() -> Iterator[str]:
    """moto's S3 server in its own process, so that it does not share the archiver's GIL."""
    for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                        "AWS_DEFAULT_REGION": "eu-west-3"}.items():  # fmt: skip
        os.environ.setdefault(name, value)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, "moto's S3 server", server)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def _fresh_bucket(endpoint: str) -> str:
    name = f"bench-{uuid.uuid4().hex[:12]}"
    create_versioned_bucket(endpoint, name)
    return name


if __name__ == "__main__":
    main()

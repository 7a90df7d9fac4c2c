"""Run the gauntlet and report: throughput, latency, retries, faults, and what was lost."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.soak import verify
from benchmarks.soak.clients import Scoreboard
from benchmarks.soak.driver import OUTAGE_SECONDS, Driver, FaultLog
from benchmarks.soak.plan import make_plan
from benchmarks.soak.stack import running_stack


@dataclass
class Report:
    sms: int
    seconds: float
    scoreboard: Scoreboard
    faults: FaultLog
    findings: verify.Findings
    reconcile_runs: int
    spillover: verify.SpilloverCounts
    replay_wait: float  # after the day and reconcile: until the spill-over queue was empty

    @property
    def unrecovered(self) -> int:
        return sum(stats.unrecovered for stats in self.scoreboard.endpoints.values())

    @property
    def clean(self) -> bool:
        return not (self.findings.problems or self.unrecovered or self.scoreboard.unexpected)

    def lines(self) -> list[str]:
        out = [f"{self.sms} SMS in {self.seconds:.1f} s ({self.sms / self.seconds:.0f} SMS/s)", ""]
        out.append(
            f"{'endpoint':<14}{'requests':>9}{'req/s':>8}{'p50 ms':>8}{'p95 ms':>8}"
            f"{'p99 ms':>8}{'retries':>8}{'5xx':>6}{'reset':>6}{'gave up':>8}"
        )
        for name, stats in sorted(self.scoreboard.endpoints.items()):
            p50, p95, p99 = _percentiles(stats.latencies)
            out.append(
                f"{name:<14}{stats.attempts:>9}{stats.attempts / self.seconds:>8.1f}"
                f"{p50:>8.1f}{p95:>8.1f}{p99:>8.1f}{stats.retries:>8}"
                f"{stats.server_errors:>6}{stats.transport_errors:>6}{stats.unrecovered:>8}"
            )
        f = self.faults
        out += [
            "",
            f"faults: {f.sessions_terminated} sessions terminated, {f.database_outages} database"
            f" outages, {f.s3_outages} S3 outages, {f.workers_killed} workers killed",
            *[f"  {event}" for event in f.events],
            f"reconcile runs to drain: {self.reconcile_runs}",
            f"spill-over queue: {self.spillover.parked} calls parked over the day,"
            f" {self.spillover.replayed} replayed ({self.spillover.retried} deliveries failed"
            f" and came back), {self.spillover.refused} refused, {self.spillover.erased} dropped"
            f" as erased; empty {self.replay_wait:.1f} s after the day's traffic",
            f"checked: {self.findings.checked_hot} SMS in Postgres,"
            f" {self.findings.checked_archived} in the archive",
            "",
            " · ".join(
                [f"{kind} {len(found)}" for kind, found in self.findings.by_kind()]
                + [
                    f"unexpected answers {len(self.scoreboard.unexpected)}",
                    f"requests given up after every retry {self.unrecovered}",
                ]
            ),
        ]
        for kind, found in [
            *self.findings.by_kind(),
            ("unexpected answers", self.scoreboard.unexpected),
        ]:
            out += [f"  {kind}: {example}" for example in found[:5]]
        out.append("CLEAN: nothing lost or wrong" if self.clean else "NOT CLEAN")
        return out


def run(
    sms: int,
    *,
    faults: bool = True,
    workers: int = 2,
    seed: int = 1,
    outage_seconds: float = OUTAGE_SECONDS,
    workdir: Path | None = None,
    progress: Callable[[str], None] = print,
) -> Report:
    """One campaign day on a fresh stack, then every check against the ground truth.
    The functions' log is left in ``workdir`` when one is given."""
    plan = make_plan(sms, seed=seed)
    with (
        tempfile.TemporaryDirectory(prefix="sms-soak-") as temporary,
        running_stack(plan, workdir or Path(temporary), workers=workers) as stack,
    ):
        driver = Driver(plan, stack, inject_faults=faults, seed=seed, outage_seconds=outage_seconds)
        driver.record_old_sms()
        progress(f"stack up; {len(plan.old)} SMS from last year recorded")
        started = time.perf_counter()
        try:
            driver.campaign(progress)
            # What was parked is recorded first, as reconcile's next schedules would
            # find it then (its prices, for one).
            replay_wait = driver.wait_for_the_replay(progress)
            reconcile_runs = driver.drain(progress)
        finally:
            driver.close()
        seconds = time.perf_counter() - started
        findings = verify.check(plan, stack, datetime.now(UTC))
        counts = verify.spillover_counts(stack)
    return Report(
        sms, seconds, driver.scoreboard, driver.faults, findings, reconcile_runs, counts,
        replay_wait,
    )  # fmt: skip


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    if len(samples) < 2:
        value = samples[0] * 1000 if samples else 0.0
        return value, value, value
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49] * 1000, cuts[94] * 1000, cuts[98] * 1000


def ratios(faulted: Report, baseline: Report) -> list[str]:
    """What the faults cost: the faulted day against the same day without them."""
    out = [
        f"with faults / without: {baseline.seconds / faulted.seconds:.2f}x the SMS/s",
        f"{'endpoint':<14}{'req/s':>8}{'p50':>8}{'p95':>8}{'p99':>8}",
    ]
    for name, stats in sorted(faulted.scoreboard.endpoints.items()):
        base = baseline.scoreboard.endpoints.get(name)
        if base is None or not base.latencies:
            continue
        rate = (stats.attempts / faulted.seconds) / (base.attempts / baseline.seconds)
        cuts = zip(_percentiles(stats.latencies), _percentiles(base.latencies), strict=True)
        out.append(f"{name:<14}{rate:>7.2f}x" + "".join(f"{f / b:>7.2f}x" for f, b in cuts))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The reliability gauntlet (benchmarks/soak).")
    parser.add_argument("--sms", type=int, default=20_000, help="SMS in the campaign day")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per function")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--outage", type=float, default=OUTAGE_SECONDS,
        help="seconds the database stays unreachable in the long outage",
    )  # fmt: skip
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the same day without faults"
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep the functions' log here (a folder per day)"
    )
    args = parser.parse_args(argv)
    reports = []
    for faults in (True, False)[: 1 if args.no_baseline else 2]:
        print(f"--- the campaign day {'with' if faults else 'without'} faults")
        workdir = None
        if args.workdir:
            workdir = args.workdir / ("faults" if faults else "baseline")
            workdir.mkdir(parents=True, exist_ok=True)
        report = run(
            args.sms, faults=faults, workers=args.workers, seed=args.seed,
            outage_seconds=args.outage, workdir=workdir,
        )  # fmt: skip
        print("\n".join(report.lines()))
        reports.append(report)
    if len(reports) == 2:
        print("\n".join(["---", *ratios(*reports)]))
    return 0 if all(r.clean for r in reports) else 1

"""benchmarks/coldstart: what each Lambda handler module costs to import, cold.

    python -m benchmarks.coldstart [--repeat 7]

A cold start imports the handler module in a fresh interpreter before the first
request. For each function's module (functions/<name>/aws_lambda.py) this starts a
fresh Python `--repeat` times, times `import <module>` inside it, and prints the
median, against the naive baseline: one module importing everything the functions
use, eagerly (the supabase client, twilio's REST client, pyarrow, boto3 and all the
handler modules), timed the same way. Bytecode is compiled once first, as it is in a
deployed package.
"""

from __future__ import annotations

import argparse
import compileall
import statistics
import subprocess
import sys

from tools.migrate import ROOT

HANDLERS = {
    "ingest_sms": "functions.ingest_sms.aws_lambda",
    "twilio_status": "functions.twilio_status.aws_lambda",
    "metrics": "functions.metrics.aws_lambda",
    "retention (erase)": "functions.retention.aws_lambda",
}
EVERYTHING = [
    "supabase", "twilio.rest", "pyarrow.parquet", "boto3", "jwt", "psycopg_pool",
    "functions_framework", *HANDLERS.values(),
]  # fmt: skip
TARGET_MS = 300
_TIMED_IMPORT = (
    "import time; started = time.perf_counter(); {imports}; "
    "print((time.perf_counter() - started) * 1000)"
)


def import_ms(modules: list[str], repeat: int) -> float:
    """Median milliseconds to import these modules in a fresh interpreter."""
    code = _TIMED_IMPORT.format(imports="; ".join(f"import {m}" for m in modules))
    samples = []
    for _ in range(repeat):
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
        )
        samples.append(float(done.stdout.strip().splitlines()[-1]))
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    compileall.compile_dir(ROOT / "functions", quiet=1)
    compileall.compile_dir(ROOT / "shared", quiet=1)
    baseline = import_ms(EVERYTHING, args.repeat)
    print(f"median of {args.repeat} fresh interpreters; target {TARGET_MS} ms per handler\n")
    print("| handler module | import, ms | everything, ms | everything / handler |")
    print("|---|---|---|---|")
    for name, module in HANDLERS.items():
        ms = import_ms([module], args.repeat)
        print(f"| {name} (`{module}`) | {ms:.0f} | {baseline:.0f} | {baseline / ms:.1f}x |")


if __name__ == "__main__":
    main()

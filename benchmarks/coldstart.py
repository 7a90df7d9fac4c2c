"""benchmarks/coldstart: what a cold start costs each function behind its URL.

    python -m benchmarks.coldstart [--repeat 7] [--bytecode compiled|source|both]

A cold start imports the Lambda handler module (functions/<name>/aws_lambda.py) in a
fresh interpreter, then serves its first request. For each URL function this starts a
fresh Python `--repeat` times, and in each one times the import of the handler module,
then the handler's first call and a second one (what the first pays once, the second
shows). The yardstick is a fresh interpreter importing what every handler needs anyway,
`from pydantic import BaseModel` and `from werkzeug.wrappers import Request, Response`,
timed the same way in the same run, in a fresh interpreter started just before each
handler's, so that the machine's load weighs on both alike. Medians (the yardstick's over
all its interpreters). Target: each import ≤ 1.3x the yardstick.

The requests go as deployed: function-URL events (payload format 2.0) into the Lambda
handler; settings read through the Parameters and Secrets extension (its stand-in,
tools/secrets_extension.py, backed by moto's Secrets Manager in this process, at a TTL
of 0, so that each read reaches Secrets Manager as a cold extension's does); the
database through PgBouncer in transaction mode as the functions' login role, erase
directly as retention's. ingest_sms records one new SMS, twilio_status a signed
"delivered" callback for an SMS on record, metrics a signed-in user's 30 days (HS256
access token), erase a dry run for one number.

Bytecode (`--bytecode`): `compiled` loads every module from bytecode, as a package
shipped with its .pyc files would; `source` compiles the dependencies and this project
from source in every interpreter, the standard library alone from bytecode, as the
package `make package` builds today does on Lambda (no .pyc in the layers or the
functions' zips, and a read-only file system that keeps none). Each has its own
bytecode cache (PYTHONPYCACHEPREFIX), filled by an untimed first round.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from benchmarks.common import database_server
from tools.embedded import as_user, throwaway_database
from tools.fake_twilio import status_callback
from tools.lambda_events import DOMAIN, function_url_event
from tools.migrate import API_LOGIN, RETENTION_LOGIN, ROOT, apply, load_seed
from tools.pooler import transaction_pooler
from tools.tokens import access_token

if TYPE_CHECKING:
    from tools.secrets_extension import StandIn

TARGET_RATIO = 1.3
SETTLE_SECONDS = 0.2
YARDSTICK = "from pydantic import BaseModel; from werkzeug.wrappers import Request, Response"

# Each child: the import timed, then each event through the handler, timed.
_CHILD = """\
import time
started = time.perf_counter()
{imports}
imported = time.perf_counter()
import json, sys
calls = []
for event in json.loads(sys.stdin.read()):
    began = time.perf_counter()
    answer = handler(event, None)
    calls.append([(time.perf_counter() - began) * 1000, answer["statusCode"], answer["body"]])
print("coldstart " + json.dumps({{"import_ms": (imported - started) * 1000, "calls": calls}}))
"""

STAGE_SECRETS = "voipia-sms-tracking/bench"
SESSION_TOKEN = "lambda-session-token-for-the-benchmark"  # noqa: S105 (a stand-in's)
API_KEY = "k" * 40
ACCOUNT, TWILIO_TOKEN = "AC" + "5" * 32, "twilio-auth-token-for-the-benchmark"
JWT_SECRET = "jwt-secret-for-the-benchmark-0123456789abcdef"  # noqa: S105
VIEWER = "e0000000-0000-4000-8000-000000000001"  # the seed's viewer of its first client
DEPLOYMENT = "d0000000-0000-4000-8000-000000000001"
# The settings of a Lambda environment that no Settings field reads, as Lambda sets them.
LAMBDA_ENVIRONMENT = {
    "AWS_REGION": "eu-west-3",
    "AWS_DEFAULT_REGION": "eu-west-3",
    "AWS_ACCESS_KEY_ID": "ASIABENCHMARKONLY000",
    "AWS_SECRET_ACCESS_KEY": "benchmark-only",
    "AWS_SESSION_TOKEN": SESSION_TOKEN,
}


@dataclass
class Function:
    name: str
    handler: str
    """module:attribute, as serverless.yml names it."""
    secrets: dict[str, dict[str, str]]
    """The secrets its SECRET_IDS name (by their last part), and what each holds."""
    environment: dict[str, str]
    """Its serverless.yml environment, secrets aside."""
    status: int
    """What each of its two requests must answer."""

    @property
    def import_line(self) -> str:
        module, attribute = self.handler.split(":")
        return f"from {module} import {attribute} as handler"


@dataclass
class Samples:
    import_ms: list[float] = field(default_factory=list)
    first_ms: list[float] = field(default_factory=list)
    second_ms: list[float] = field(default_factory=list)


def functions(database_url: str, pooled_url: str) -> list[Function]:
    return [
        Function(
            "ingest_sms",
            "functions.ingest_sms.aws_lambda:handler",
            {"database-api": {"DATABASE_URL": pooled_url}, "ingest": {"INGEST_API_KEYS": API_KEY}},
            {"DATABASE_POOL_SIZE": "1", "DATABASE_TIMEOUT_SECONDS": "10"},
            201,
        ),
        Function(
            "twilio_status",
            "functions.twilio_status.aws_lambda:handler",
            {
                "database-api": {"DATABASE_URL": pooled_url},
                "twilio": {"TWILIO_AUTH_TOKEN": TWILIO_TOKEN},
            },
            {
                "DATABASE_POOL_SIZE": "1",
                "TWILIO_ACCOUNT_SID": ACCOUNT,
                "DATABASE_TIMEOUT_SECONDS": "4",
            },
            200,
        ),
        Function(
            "metrics",
            "functions.metrics.aws_lambda:handler",
            {
                "database-api": {"DATABASE_URL": pooled_url},
                "metrics": {"SUPABASE_JWT_SECRET": JWT_SECRET, "METRICS_SERVICE_KEYS": API_KEY},
            },
            {
                "DATABASE_POOL_SIZE": "1",
                "SUPABASE_URL": "https://benchmark.supabase.co",
                "CORS_ALLOWED_ORIGINS": "https://dashboard.example.com",
            },
            200,
        ),
        Function(
            "erase",
            "functions.retention.aws_lambda:erase",
            {
                "database-retention": {
                    "DATABASE_SESSION_URL": as_user(database_url, RETENTION_LOGIN)
                },
                "archive": {"ARCHIVE_INDEX_SECRET": "i" * 40},
                "privacy": {"PRIVACY_API_KEYS": API_KEY},
            },
            {"ARCHIVE_BUCKET": "voipia-sms-archive-bench"},
            200,
        ),
    ]


def ingest_event() -> dict[str, Any]:
    sms = {"deployment_id": DEPLOYMENT, "phone_number": "06 12 34 56 78",
           "message_content": "Bonjour, votre rendez-vous est confirmé demain à 14h00.",
           "provider_message_sid": "SM" + uuid.uuid4().hex, "provider_cost": "0.0750",
           "currency": "EUR", "sent_at": "2026-12-01T10:00:00+01:00"}  # fmt: skip
    return function_url_event(
        "POST",
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        body=json.dumps(sms).encode(),
    )


def callback_event(sid: str) -> dict[str, Any]:
    from twilio.request_validator import RequestValidator

    params = status_callback(ACCOUNT, sid, "delivered", RawDlrDoneDate="2612011001")
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(f"https://{DOMAIN}/", params)
    return function_url_event(
        "POST",
        headers={"Content-Type": "application/x-www-form-urlencoded",
                 "X-Twilio-Signature": signature},
        body=urlencode(params).encode(),
    )  # fmt: skip


def metrics_event() -> dict[str, Any]:
    token = access_token({"sub": VIEWER, "role": "authenticated", "aud": "authenticated"},
                         JWT_SECRET)  # fmt: skip
    return function_url_event("GET", headers={"Authorization": f"Bearer {token}"})


def erase_event(number: str) -> dict[str, Any]:
    ask = {"phone_numbers": [number], "requester": "coldstart benchmark", "dry_run": True}
    return function_url_event(
        "POST",
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        body=json.dumps(ask).encode(),
    )


def request_pair(function: Function, database_url: str, child: int) -> list[dict[str, Any]]:
    """A child's two requests, both valid: new SMS to ingest, SMS on record to report on."""
    import psycopg

    if function.name == "ingest_sms":
        return [ingest_event(), ingest_event()]
    if function.name == "twilio_status":
        sids = ["SM" + uuid.uuid4().hex for _ in range(2)]
        with psycopg.connect(database_url) as conn:
            for sid in sids:
                conn.execute(
                    "INSERT INTO agent_sms (deployment_id, phone_number, message_content,"
                    " provider_message_sid, sent_at) VALUES (%s, '+33639981234', 'Bonjour',"
                    " %s, now() - interval '1 minute')",
                    (DEPLOYMENT, sid),
                )
        return [callback_event(sid) for sid in sids]
    if function.name == "metrics":
        return [metrics_event(), metrics_event()]
    # The seed's numbers, +33 6 39 98 00 00 to 06.
    return [erase_event(f"+3363998{child % 6:04d}"), erase_event("+33639980006")]


@contextmanager
def deployed_stack() -> Iterator[tuple[str, str, StandIn]]:
    """A migrated database with the seed, PgBouncer in front of it for the API login, and
    the secrets extension's stand-in over moto's Secrets Manager: (database URL, pooled
    URL, stand-in)."""
    import boto3
    from moto import mock_aws

    from tools.secrets_extension import secrets_extension

    with ExitStack() as stack:
        server = stack.enter_context(database_server())
        url = stack.enter_context(throwaway_database(server, prefix="sms_coldstart"))
        apply(url, include_local=True, report=lambda _: None)
        load_seed(url)
        pooled = stack.enter_context(
            transaction_pooler(as_user(url, API_LOGIN), users=(API_LOGIN,))
        )
        stack.enter_context(mock_aws())
        client = boto3.client("secretsmanager", region_name="eu-west-3")
        extension = stack.enter_context(secrets_extension(client, SESSION_TOKEN, ttl_seconds=0))
        yield url, pooled, extension


def child_environment(function: Function | None, extension: StandIn) -> dict[str, str]:
    from shared.settings import Settings

    ours = {name.upper() for name in Settings.model_fields}
    ours |= {"SECRET_IDS", "PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE", "PYTHONPATH"}
    environment = {
        k: v for k, v in os.environ.items() if k not in ours and not k.startswith("AWS_")
    }
    if function is None:
        return environment
    ids = ",".join(f"{STAGE_SECRETS}/{name}" for name in function.secrets)
    return environment | LAMBDA_ENVIRONMENT | extension.environment | function.environment | {
        "AWS_LAMBDA_FUNCTION_NAME": f"voipia-sms-tracking-bench-{function.name}",
        "SECRET_IDS": ids,
    }  # fmt: skip


def run_child(
    imports: str, events: list[dict[str, Any]], environment: dict[str, str]
) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD.format(imports=imports)],
        cwd=ROOT,
        env=environment,
        input=json.dumps(events),
        capture_output=True,
        text=True,
        check=False,
    )
    # What the last child left behind (its sessions closing in PgBouncer and Postgres)
    # settles before the next one starts.
    time.sleep(SETTLE_SECONDS)
    lines = [line for line in done.stdout.splitlines() if line.startswith("coldstart ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the child failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("coldstart "))
    return result


def bytecode_settings(mode: str, cache: Path) -> dict[str, str]:
    if mode == "compiled":
        return {"PYTHONPYCACHEPREFIX": str(cache / "compiled")}
    return {"PYTHONPYCACHEPREFIX": str(cache / "source"), "PYTHONDONTWRITEBYTECODE": "1"}


def keep_standard_library_only(cache: Path) -> None:
    """The source mode's cache: the compiled one without this project's bytecode and
    its dependencies' (site-packages)."""
    shutil.rmtree(cache / "source", ignore_errors=True)
    shutil.copytree(cache / "compiled", cache / "source")
    for folder in {ROOT, Path(sysconfig.get_path("purelib")), Path(sysconfig.get_path("platlib"))}:
        shutil.rmtree(cache / "source" / folder.resolve().relative_to("/"), ignore_errors=True)


def measure(
    mode: str,
    repeat: int,
    cache: Path,
    targets: list[Function],
    url: str,
    extension: StandIn,
    extra: dict[str, str],
) -> tuple[list[float], dict[str, Samples]]:
    """One round untimed (it fills the bytecode cache, and the file system's), then
    `repeat` rounds of, for each function, a yardstick then the function's child: each
    yardstick just before a handler, on the machine as it is then."""
    settings = bytecode_settings(mode, cache) | extra
    events = {f.name: [request_pair(f, url, n) for n in range(repeat + 1)] for f in targets}
    yardstick: list[float] = []
    samples = {function.name: Samples() for function in targets}
    for round_ in range(repeat + 1):
        for function in targets:
            result = run_child(YARDSTICK, [], child_environment(None, extension) | settings)
            if round_:
                yardstick.append(result["import_ms"])
            environment = child_environment(function, extension) | settings
            result = run_child(function.import_line, events[function.name][round_], environment)
            answers = [(status, body) for _, status, body in result["calls"]]
            if [status for status, _ in answers] != [function.status] * 2:
                raise RuntimeError(f"{function.name} answered {answers}, not {function.status}")
            if round_:
                samples[function.name].import_ms.append(result["import_ms"])
                samples[function.name].first_ms.append(result["calls"][0][0])
                samples[function.name].second_ms.append(result["calls"][1][0])
    return yardstick, samples


def report(mode: str, repeat: int, yardstick: list[float], samples: dict[str, Samples]) -> bool:
    base = statistics.median(yardstick)
    print(f"\nbytecode: {mode}; medians of {repeat} fresh interpreters per function"
          f" ({len(yardstick)} for the yardstick); target: import ≤ {TARGET_RATIO}x the"
          " yardstick\n")  # fmt: skip
    print("| | import, ms | import / yardstick | first request, ms | second request, ms |"
          " import + first request, ms |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    print(f"| yardstick (pydantic's BaseModel, werkzeug's Request and Response) | {base:.0f} |"
          " 1.00x | | | |")  # fmt: skip
    met = True
    for name, taken in samples.items():
        imported = statistics.median(taken.import_ms)
        first, second = statistics.median(taken.first_ms), statistics.median(taken.second_ms)
        cold = statistics.median(
            i + f for i, f in zip(taken.import_ms, taken.first_ms, strict=True)
        )
        ratio = round(imported / base, 2)  # as printed: the runs vary far more than 0.005
        met &= ratio <= TARGET_RATIO
        mark = "" if ratio <= TARGET_RATIO else " (over)"
        print(f"| {name} | {imported:.0f} | {ratio:.2f}x{mark} | {first:.0f} | {second:.1f} |"
              f" {cold:.0f} |")  # fmt: skip
    return met


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--bytecode", choices=("compiled", "source", "both"), default="both")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a variable for every child, the yardstick's too: to try a"
                             " setting before deploying it")  # fmt: skip
    args = parser.parse_args(argv)
    extra = dict(setting.split("=", 1) for setting in args.env)
    modes = ["compiled", "source"] if args.bytecode == "both" else [args.bytecode]
    if extra:
        print(f"every child with {' '.join(args.env)}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with deployed_stack() as (url, pooled, extension), tempfile.TemporaryDirectory() as folder:
        cache = Path(folder)
        targets = functions(url, pooled)
        secrets = {name: values for f in targets for name, values in f.secrets.items()}
        for name, values in secrets.items():
            extension.client.create_secret(
                Name=f"{STAGE_SECRETS}/{name}", SecretString=json.dumps(values)
            )
        results = {}
        if "source" in modes and "compiled" not in modes:
            measure("compiled", 0, cache, targets, url, extension, extra)  # the standard library's
        for mode in modes:
            if mode == "source":
                keep_standard_library_only(cache)
            results[mode] = measure(mode, args.repeat, cache, targets, url, extension, extra)
    met = [report(mode, args.repeat, *results[mode]) for mode in modes]
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("target met" if all(met) else "target NOT met (see 'over')")


if __name__ == "__main__":
    main()

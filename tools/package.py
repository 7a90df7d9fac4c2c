"""`make package`: package the AWS Lambda deployment offline, and lint it.

1. osls (Serverless Framework v3's open-source successor), pinned in package-lock.json,
   is installed with `npm ci`.
2. The two dependency layers are built from uv.lock for the Lambda platform (arm64,
   manylinux_2_28, CPython 3.12) from wheels alone, without Docker: `common` holds
   every function's dependencies, `archive` pyarrow and tqdm for erase and retention
   (the Lambda runtime brings boto3).
   pyarrow's parts that the archive never loads (Flight, its own S3 filesystem, its
   tests and C++ headers) are left out: with them, erase and retention would pass Lambda's
   250 MB limit for a function and its layers.
3. `osls package` writes .serverless/ with dummy credentials. It asks CloudFormation
   whether each layer is already deployed; a local stand-in answers that the stack
   does not exist, so nothing leaves the machine.
4. cfn-lint checks the CloudFormation template; tests/deploy/test_deployment.py checks its
   structure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tools.migrate import ROOT

UV = ROOT / ".tools" / "bin" / "uv"
LAYERS = ROOT / "build" / "layers"
TEMPLATE = ROOT / ".serverless" / "cloudformation-template-update-stack.json"
LAMBDA_PLATFORM = ["--python-platform", "aarch64-manylinux_2_28", "--python-version", "3.12"]
LAMBDA_LIMIT_BYTES = 250 * 1024 * 1024  # a function and its layers, unzipped
ARCHIVE_PACKAGES = ("pyarrow", "tqdm")
# pyarrow's parts the archive does not use (its Python modules, and their libraries).
PYARROW_UNUSED = ("_flight", "libarrow_flight", "libarrow_python_flight", "flight",
                  "_s3fs", "libarrow_s3", "tests", "include")  # fmt: skip
# The functions of serverless.yml and the layers each one uses.
FUNCTION_LAYERS = {
    "ingest_sms": ("common",), "twilio_status": ("common",), "reconcile": ("common",),
    "metrics": ("common",), "erase": ("common", "archive"), "retention": ("common", "archive"),
    "replay": ("common",), "statement": ("common",), "exchange_rates": ("common",),
}  # fmt: skip


def serverless_config() -> dict[str, Any]:
    """serverless.yml as YAML reads it, CloudFormation's tags (!Ref, !GetAtt...) as None:
    for what it says outright (params, each function's environment)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    text = (ROOT / "serverless.yml").read_text("utf-8")
    config: dict[str, Any] = yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader)
    return config


def main() -> int:
    run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"])
    build_layer("common", export("--no-default-groups"))
    archive = [
        line for line in export("--only-group", "retention")
        if line.split("==")[0] in ARCHIVE_PACKAGES
    ]  # fmt: skip
    build_layer("archive", archive)
    prune_pyarrow(LAYERS / "archive" / "python" / "pyarrow")
    shutil.rmtree(ROOT / ".serverless", ignore_errors=True)
    with cloudformation_without_stacks() as endpoint:
        environment = os.environ | {
            "SLS_TELEMETRY_DISABLED": "1",
            "SLS_NOTIFICATIONS_MODE": "off",
            "AWS_ACCESS_KEY_ID": "AKIAPACKAGINGOFFLINE",
            "AWS_SECRET_ACCESS_KEY": "packaging-offline",
            "AWS_REGION": "eu-west-3",
            "AWS_ENDPOINT_URL_CLOUDFORMATION": endpoint,
        }
        run(["npx", "--no-install", "osls", "package", "--stage", "ci"], env=environment)
    check_sizes()
    # W3005: osls adds a DependsOn on each function's role, which its GetAtt implies.
    run([str(ROOT / ".venv" / "bin" / "cfn-lint"), "--ignore-checks", "W3005", "--", str(TEMPLATE)])
    print(f"packaged and linted: {TEMPLATE.relative_to(ROOT)}")
    return 0


def run(command: list[str], env: dict[str, str] | None = None) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT, env=env, check=True)


def export(*selection: str) -> list[str]:
    """Pinned requirements from uv.lock, one `name==version` per line."""
    done = subprocess.run(
        [str(UV), "export", "--frozen", "--no-hashes", "--no-emit-project",
         "--no-annotate", "--no-header", *selection],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [line.split(" ;")[0] for line in done.stdout.splitlines() if "==" in line]


def build_layer(name: str, requirements: list[str]) -> None:
    """Install these pinned wheels for the Lambda platform under build/layers/<name>/python."""
    target = LAYERS / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    pinned = target.parent / f"{name}-requirements.txt"
    pinned.write_text("\n".join(requirements) + "\n", encoding="utf-8")
    run([str(UV), "pip", "install", "--quiet", "--target", str(target / "python"),
         *LAMBDA_PLATFORM, "--only-binary", ":all:", "--no-deps", "-r", str(pinned)])  # fmt: skip


def prune_pyarrow(package: Path) -> None:
    for path in list(package.iterdir()):
        if path.name.startswith(PYARROW_UNUSED):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def check_sizes() -> None:
    """Refuse a function that Lambda would refuse: over 250 MB with its layers, unzipped."""
    import zipfile

    def unzipped(archive: Path) -> int:
        with zipfile.ZipFile(archive) as zipped:
            return sum(entry.file_size for entry in zipped.infolist())

    layer_bytes = {
        name: unzipped(ROOT / ".serverless" / f"{name}.zip") for name in ("common", "archive")
    }
    for function, layers in FUNCTION_LAYERS.items():
        total = unzipped(ROOT / ".serverless" / f"{function}.zip")
        total += sum(layer_bytes[layer] for layer in layers)
        print(f"{function:<14} {total / 2**20:6.1f} MB unzipped with its layers")
        if total > LAMBDA_LIMIT_BYTES:
            sys.exit(f"{function} is {total / 2**20:.0f} MB unzipped: over Lambda's 250 MB")


_NO_STACK = (
    '<ErrorResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/">'
    "<Error><Type>Sender</Type><Code>ValidationError</Code>"
    "<Message>Stack with id voipia-sms-tracking-ci does not exist</Message></Error>"
    "<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
)


@contextmanager
def cloudformation_without_stacks() -> Iterator[str]:
    """A local CloudFormation that knows no stack: all osls asks it while packaging."""

    class NoStacks(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = _NO_STACK.encode()
            self.send_response(400)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), NoStacks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main())

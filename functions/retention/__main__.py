"""Run retention by hand: ``python -m functions.retention archive|erase ...``.

Reads the same environment as the functions (see README.md, "Configuration"), shows
a progress bar on stderr, and prints the report or receipt as JSON on stdout. Exits 0
when the work is complete, 1 when it is not (the output says why), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import ValidationError

from functions.retention import archive, erasure
from functions.retention.context import Progress, retention_context
from functions.retention.models import ErasureRequest
from shared import logs
from shared.errors import ConfigurationError, ServiceError, invalid_input
from shared.runtime import Services
from shared.settings import Settings


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.load()
        logs.configure(settings.log_level)
        services = Services(settings)
        if args.command == "archive":
            with _progress_bar("rows archived", enabled=not args.dry_run) as progress:
                report = archive.run(
                    services.get(retention_context), dry_run=args.dry_run, progress=progress
                )
            return _print(report.as_json(), report.complete)
        ask = ErasureRequest.model_validate(
            {
                "phone_numbers": _numbers(args),
                "requester": args.requester,
                "dry_run": args.dry_run,
            },
            context={"region": settings.default_phone_region},
        )
        with _progress_bar("numbers erased", enabled=not args.dry_run) as progress:
            receipt = erasure.erase(
                services.get(retention_context),
                ask.phone_numbers,
                requester=ask.requester,
                request_id=args.request_id or uuid.uuid4().hex,
                dry_run=ask.dry_run,
                progress=progress,
            )
        return _print(receipt.as_json(), receipt.complete or receipt.dry_run)
    except ValidationError as exc:
        print(f"error: {invalid_input(exc).message}", file=sys.stderr)
        return 2
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ServiceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m functions.retention", description="Archive old SMS, or erase numbers."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("archive", help="archive, expire and purge, as the schedule does")
    run.add_argument("--dry-run", action="store_true", help="report what would be done")
    wipe = commands.add_parser("erase", help="erase phone numbers everywhere (GDPR)")
    wipe.add_argument("numbers", nargs="*", metavar="NUMBER", help="phone numbers to erase")
    wipe.add_argument(
        "--file",
        type=argparse.FileType("r", encoding="utf-8"),
        help="read the numbers from this file, one per line ('-': stdin); keeps them out of"
        " the shell's history",
    )
    wipe.add_argument("--requester", required=True, help="who asks: a ticket or team label")
    wipe.add_argument("--request-id", help="an earlier, incomplete erasure's id, to finish it")
    wipe.add_argument("--dry-run", action="store_true", help="count what would be erased")
    return parser


def _numbers(args: argparse.Namespace) -> list[str]:
    numbers = list(args.numbers)
    if args.file is not None:
        numbers += [line.strip() for line in args.file if line.strip()]
    return numbers


@contextmanager
def _progress_bar(unit: str, *, enabled: bool) -> Iterator[Progress]:
    from tqdm import tqdm

    with tqdm(unit=f" {unit}", disable=not enabled, file=sys.stderr) as bar:

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        yield advance


def _print(result: dict[str, object], complete: bool) -> int:
    print(json.dumps(result, indent=2, default=str))
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())

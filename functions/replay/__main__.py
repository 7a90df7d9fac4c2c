"""`python -m functions.replay`: replay the spill-over queue from outside Lambda
(`make dev` runs it; an operator may too, with SPILLOVER_QUEUE_URL and the database's
settings): polls until stopped, or with --until-empty until the queue is empty."""

from __future__ import annotations

import argparse
import json
import sys

from functions.replay.polling import poll
from functions.replay.replay import MAX_RECEIVES
from shared import runtime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m functions.replay", description=__doc__)
    parser.add_argument("--until-empty", action="store_true", help="stop when the queue is empty")
    args = parser.parse_args(argv)
    queue_url = runtime.services().settings.spillover_queue_url
    if queue_url is None:
        print("SPILLOVER_QUEUE_URL is not set: there is no queue to replay", file=sys.stderr)
        return 2
    try:
        report = poll(
            runtime.services, queue_url, max_receives=MAX_RECEIVES, until_empty=args.until_empty
        )
    except KeyboardInterrupt:
        return 0
    print(json.dumps(report.as_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Functions under test are served over real HTTP, as functions-framework serves them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import functions_framework
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parents[2]


class LocalFunction:
    """One function's functions-framework app on a loopback port."""

    def __init__(self, name: str, target: str | None = None) -> None:
        source = ROOT / "functions" / name / "main.py"
        app = functions_framework.create_app(target=target or name, source=str(source))
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/"

    def __enter__(self) -> LocalFunction:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join()


def serve(name: str, target: str | None = None) -> Iterator[LocalFunction]:
    with LocalFunction(name, target) as function:
        yield function

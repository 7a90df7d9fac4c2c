"""A WSGI app served on a loopback port in a background thread, for the test doubles
(PostgREST, Twilio's API, a JWKS) and the functions under test."""

from __future__ import annotations

import threading
from typing import Any, Self

from werkzeug.serving import make_server


class LoopbackServer:
    def __init__(self, app: Any) -> None:
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join()

"""A stand-in for the AWS Parameters and Secrets Lambda Extension, for tests and
benchmarks: the same HTTP API on localhost, backed by a Secrets Manager client (moto's).

    GET /secretsmanager/get?secretId=<id>[&refreshNow=true]
    X-Aws-Parameters-Secrets-Token: <the Lambda environment's AWS_SESSION_TOKEN>

It answers as the extension does: GetSecretValue's JSON, from a cache kept for
``ttl_seconds`` (the extension's SECRETS_MANAGER_TTL, 300 s unless set), which
refreshNow bypasses; 401 without the token; 400 when Secrets Manager refuses.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from shared.secrets import TOKEN_HEADER


@dataclass
class StandIn:
    client: Any
    """A boto3 Secrets Manager client."""
    token: str
    ttl_seconds: float = 300.0
    port: int = 0
    reads: int = 0
    """How many times it asked Secrets Manager: what a rate limit is measured by."""
    _cache: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, secret_id: str, refresh_now: bool) -> dict[str, Any]:
        with self._lock:
            cached = self._cache.get(secret_id)
            if cached is None or refresh_now or time.monotonic() - cached[0] > self.ttl_seconds:
                self.reads += 1
                value = self.client.get_secret_value(SecretId=secret_id)
                value.pop("ResponseMetadata", None)
                cached = self._cache[secret_id] = (time.monotonic(), value)
            return cached[1]

    @property
    def environment(self) -> dict[str, str]:
        """What a Lambda environment tells the function: the port and its token."""
        return {
            "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(self.port),
            "AWS_SESSION_TOKEN": self.token,
        }


@contextmanager
def secrets_extension(client: Any, token: str, ttl_seconds: float = 300.0) -> Iterator[StandIn]:
    """Serve the stand-in on a free localhost port while the block runs."""
    stand_in = StandIn(client, token, ttl_seconds)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            if self.headers.get(TOKEN_HEADER) != stand_in.token:
                self._send(401, {"message": "missing or wrong " + TOKEN_HEADER})
            elif parts.path != "/secretsmanager/get" or "secretId" not in query:
                self._send(400, {"message": "GET /secretsmanager/get?secretId=..."})
            else:
                refresh = query.get("refreshNow", ["false"])[0].lower() in ("true", "1")
                try:
                    self._send(200, stand_in.answer(query["secretId"][0], refresh))
                except Exception as exc:
                    self._send(400, {"message": type(exc).__name__})

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            """Silent: a test's output is its own."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stand_in.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stand_in
    finally:
        server.shutdown()
        server.server_close()

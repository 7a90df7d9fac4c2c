"""Lambda function-URL events (payload format 2.0), as AWS sends them, and reading
the responses the adapter gives back."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

DOMAIN = "abcdefghijklmnopqrstuvwxyz012345.lambda-url.eu-west-3.on.aws"


def function_url_event(
    method: str,
    *,
    path: str = "/",
    query: str = "",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    base64_body: bool = False,
) -> dict[str, Any]:
    """What Lambda hands a function behind a function URL (payload format 2.0)."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {
            "host": DOMAIN,
            "x-forwarded-proto": "https",
            "x-forwarded-port": "443",
            "x-forwarded-for": "203.0.113.7",
            "x-amzn-trace-id": "Root=1-5e6722a7-cc56xmpl46db7ae02d4da47e",
            "user-agent": "test",
        }
        | {name.lower(): value for name, value in (headers or {}).items()},
        "requestContext": {
            "accountId": "anonymous",
            "apiId": DOMAIN.split(".")[0],
            "domainName": DOMAIN,
            "domainPrefix": DOMAIN.split(".")[0],
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "test",
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
            "timeEpoch": int(time.time() * 1000),
        },
        "body": base64.b64encode(body).decode() if base64_body else body.decode(),
        "isBase64Encoded": base64_body,
    }


def headers_of(response: dict[str, Any]) -> dict[str, str]:
    return {name.lower(): value for name, value in response["headers"].items()}


def body_of(response: dict[str, Any]) -> Any:
    raw = response["body"]
    return json.loads(base64.b64decode(raw) if response.get("isBase64Encoded") else raw)

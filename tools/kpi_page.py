"""The KPI page (web/) as a static site: its files, uPlot from node_modules (pinned in
package-lock.json) under vendor/, and a config.js naming the metrics URL. `make dev`
serves it, and the browser tests; a deployment copies the same three parts to its
static host (web/README.md)."""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web"
VENDOR = ROOT / "node_modules" / "uplot" / "dist"
VENDOR_FILES = ("uPlot.iife.min.js", "uPlot.min.css")


def config_js(metrics_url: str, *, sign_in_url: str | None = None) -> str:
    config: dict[str, Any] = {
        "metricsUrl": metrics_url,
        "signInUrl": sign_in_url,
        "allowedParentOrigins": [],
    }
    return f"window.KPI_CONFIG = {json.dumps(config)};\n"


def files(metrics_url: str) -> dict[str, tuple[bytes, str]]:
    """Every path the page needs, with its bytes and content type."""
    missing = [name for name in VENDOR_FILES if not (VENDOR / name).is_file()]
    if missing:
        raise RuntimeError("uPlot is missing from node_modules: run `npm ci` (make package does)")
    served: dict[str, tuple[bytes, str]] = {}
    for path in WEB.iterdir():
        if path.is_file() and path.suffix in {".html", ".js", ".css"}:
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            served["/" + path.name] = (path.read_bytes(), kind)
    for name in VENDOR_FILES:
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        served["/vendor/" + name] = ((VENDOR / name).read_bytes(), kind)
    served["/config.js"] = (config_js(metrics_url).encode(), "text/javascript")
    served["/"] = served["/index.html"]
    return served


def app(metrics_url: str) -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
    """A WSGI app serving the page, read once."""
    served = files(metrics_url)

    def serve(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        found = served.get(environ.get("PATH_INFO", "/"))
        if found is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]
        body, kind = found
        headers = [("Content-Type", f"{kind}; charset=utf-8"), ("Cache-Control", "no-store"),
                   ("X-Content-Type-Options", "nosniff")]  # fmt: skip
        start_response("200 OK", headers)
        return [body]

    return serve

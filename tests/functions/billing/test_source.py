"""Reading the ECB's files over HTTP, within bounds: a file larger than the bound,
sent without a Content-Length, is refused while it is read; a source that drips or says
nothing is given up on; a redirect away from https is not followed."""

from __future__ import annotations

import io
import socket
import time
import urllib.request
from collections.abc import Iterator
from http.client import HTTPMessage
from typing import Any

import pytest

from functions.billing import ecb
from shared.errors import UnavailableError
from tools.fake_ecb import FakeEcb
from tools.loopback import LoopbackServer


def serving(body: Iterator[bytes]) -> LoopbackServer:
    """A server answering 200 with these chunks, without Content-Length (chunked)."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/xml")])
        return body

    return LoopbackServer(app)


def test_a_file_over_the_bound_without_a_length_is_cut_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ecb, "MAX_FILE_BYTES", 100_000)
    chunks = (b"x" * 10_000 for _ in range(1_000))  # 10 MB, were it all read
    with serving(chunks) as server, pytest.raises(UnavailableError, match="larger than 100000"):
        ecb.read(server.url, ecb.DAILY)


def test_a_source_that_drips_is_given_up_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ecb, "DEADLINE_SECONDS", 0.5)
    sent = []

    def drip() -> Iterator[bytes]:
        for _ in range(400):  # 20 s of it
            time.sleep(0.05)
            sent.append(1)
            yield b" "

    with serving(drip()) as server:
        with pytest.raises(UnavailableError, match=r"cannot be reached \(TimeoutError\)"):
            ecb.read(server.url, ecb.DAILY)
        assert len(sent) < 400  # given up before the end


def test_a_source_that_says_nothing_is_given_up_after_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ecb, "TIMEOUT_SECONDS", 0.5)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # connections are taken by the kernel, never answered
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        with pytest.raises(UnavailableError, match=r"cannot be reached \((TimeoutError|timeout)\)"):
            ecb.read(url, ecb.DAILY)


def test_a_redirect_away_from_https_is_not_followed() -> None:
    handler = ecb.KeepHttps()
    secure = urllib.request.Request("https://www.ecb.europa.eu/stats/eurofxref/x.xml")

    def redirect(to: str) -> urllib.request.Request | None:
        return handler.redirect_request(secure, io.BytesIO(), 302, "Found", HTTPMessage(), to)

    assert redirect("http://elsewhere.example/x.xml") is None
    followed = redirect("https://ecb.example/x.xml")
    assert followed is not None
    assert followed.full_url == "https://ecb.example/x.xml"


def test_the_stand_in_serves_the_files_the_parser_reads() -> None:
    with FakeEcb() as fake:
        daily = ecb.read(fake.rates_url, ecb.DAILY)
        history = ecb.read(fake.rates_url, ecb.HISTORY)
    assert {rate.currency for rate in daily} == {"USD", "GBP"}
    assert len({rate.day for rate in daily}) == 1
    assert set(daily) <= set(history)
    assert len({rate.day for rate in history}) >= 60  # every weekday of 90 days

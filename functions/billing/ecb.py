"""The European Central Bank's euro foreign exchange reference rates: its files, read
safely.

The ECB publishes, each TARGET business day at about 16:00 CET, how many units of some
thirty currencies one euro buys, in two files this job reads (and a full history it
does not): ``eurofxref-daily.xml`` (the last day published) and
``eurofxref-hist-90d.xml`` (the last 90 days, newest first). Both are the same XML::

    <gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01"
                     xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref">
      <gesmes:subject>Reference rates</gesmes:subject>
      <gesmes:Sender><gesmes:name>European Central Bank</gesmes:name></gesmes:Sender>
      <Cube>
        <Cube time='2026-12-04'>
          <Cube currency='USD' rate='1.0512'/>
          ...

A file is read whole into memory, at most MAX_FILE_BYTES of it (a 90-day file is about
70 KB), and parsed with the standard library's expat, which fetches nothing and here
refuses any document type declaration: without one no entity can be declared, so none
can expand. Anything else unexpected refuses the whole file, with a message that says
what and where, never what the file held.
"""

from __future__ import annotations

import http.client
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import IO, Any
from xml.parsers import expat

from shared.errors import ConfigurationError, UnavailableError

DAILY = "eurofxref-daily.xml"
HISTORY = "eurofxref-hist-90d.xml"
# A 90-day file is about 70 KB; the ECB's whole history since 1999, which this job never
# reads, about 6 MB.
MAX_FILE_BYTES = 1_048_576
# store_exchange_rates takes at most this many at once.
MAX_RATES = 20_000
# Each connection attempt and each read may wait this long, and a whole file this long.
TIMEOUT_SECONDS = 10.0
DEADLINE_SECONDS = 30.0
# The first day the ECB published reference rates.
FIRST_DAY = date(1999, 1, 4)
USER_AGENT = "voipia-sms-tracking exchange-rates (+https://www.ecb.europa.eu/stats/eurofxref/)"

_GESMES = "http://www.gesmes.org/xml/2002-08-01"
_EUROFXREF = "http://www.ecb.int/vocabulary/2002-08-01/eurofxref"
# expat's names with namespace_separator=" ": "<namespace> <local name>".
_ENVELOPE = f"{_GESMES} Envelope"
_CUBE = f"{_EUROFXREF} Cube"
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_CURRENCY = re.compile(r"[A-Z]{3}")
# private.exchange_rates: numeric(18,8), above 0 and under 100,000,000.
_RATE = re.compile(r"[0-9]{1,8}(\.[0-9]{1,8})?")


@dataclass(frozen=True, order=True)
class Rate:
    """How many units of `currency` one euro bought on `day`."""

    day: date
    currency: str
    rate: Decimal

    def as_json(self) -> dict[str, str]:
        """What public.store_exchange_rates takes."""
        return {"currency": self.currency, "date": self.day.isoformat(), "rate": str(self.rate)}


class RatesFileError(ValueError):
    """A file that is not the ECB's reference rates as they are published."""


def parse(data: bytes, *, today: date | None = None) -> list[Rate]:
    """Every rate in the file, by day then currency; RatesFileError if the file is too
    large, not well-formed, has a document type declaration, or holds anything but
    reference rates of days from 1999-01-04 to tomorrow (UTC: a day ahead of the ECB's
    own calendar at most)."""
    if len(data) > MAX_FILE_BYTES:
        raise RatesFileError(f"larger than {MAX_FILE_BYTES} bytes")
    parser = expat.ParserCreate(namespace_separator=" ")
    reader = _Reader(parser, latest=(today or datetime.now(UTC).date()) + timedelta(days=1))
    parser.StartDoctypeDeclHandler = reader.refuse_doctype
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        reason = expat.ErrorString(exc.code)
        raise RatesFileError(f"not well-formed XML: {reason} (line {exc.lineno})") from None
    return reader.rates()


class _Reader:
    """expat's handlers: the path of open elements, and the rates found under it."""

    def __init__(self, parser: Any, *, latest: date) -> None:
        self._parser = parser
        self._latest = latest
        self._path: list[str] = []
        self._day: date | None = None
        self._found: dict[tuple[date, str], Decimal] = {}

    def _refuse(self, problem: str) -> RatesFileError:
        return RatesFileError(f"{problem} (line {self._parser.CurrentLineNumber})")

    def refuse_doctype(self, *_: object) -> None:
        raise self._refuse("a document type declaration, which the ECB's files never have")

    def start(self, name: str, attributes: dict[str, str]) -> None:
        self._path.append(name)
        if len(self._path) == 1:
            if name != _ENVELOPE:
                raise self._refuse("not the ECB's reference rates: no gesmes:Envelope")
            return
        if name != _CUBE:
            return  # gesmes:subject, gesmes:Sender: nothing to read
        level = self._path.count(_CUBE)
        if level != len(self._path) - 1:
            raise self._refuse("a Cube outside gesmes:Envelope/Cube/Cube/Cube")
        if level == 2:
            self._day = self._day_of(attributes.get("time"))
        elif level == 3:
            self._rate_of(attributes.get("currency"), attributes.get("rate"))
        elif level > 3:
            raise self._refuse("a Cube nested deeper than gesmes:Envelope/Cube/Cube/Cube")

    def end(self, name: str) -> None:
        self._path.pop()
        if name == _CUBE and self._path.count(_CUBE) == 1:
            self._day = None

    def _day_of(self, value: str | None) -> date:
        if value is None or not _DAY.fullmatch(value):
            raise self._refuse("a day's Cube without a time='YYYY-MM-DD'")
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise self._refuse("a day's Cube whose time is no date") from None
        if not FIRST_DAY <= day <= self._latest:
            raise self._refuse(f"rates dated outside {FIRST_DAY} to {self._latest}")
        return day

    def _rate_of(self, currency: str | None, value: str | None) -> None:
        assert self._day is not None  # a third-level Cube is inside a day's
        if currency is None or not _CURRENCY.fullmatch(currency) or currency == "EUR":
            raise self._refuse("a rate whose currency is not a three-letter code other than EUR")
        if value is None or not _RATE.fullmatch(value) or not Decimal(value) > 0:
            raise self._refuse(f"a rate of {currency} that is not a number above 0 and under 1e8")
        rate = Decimal(value)
        known = self._found.setdefault((self._day, currency), rate)
        if known != rate:
            raise self._refuse(f"two different rates of {currency} for {self._day}")
        if len(self._found) > MAX_RATES:
            raise self._refuse(f"more than {MAX_RATES} rates")

    def rates(self) -> list[Rate]:
        if not self._found:
            raise RatesFileError("no rate in the file")
        return sorted(Rate(day, currency, rate) for (day, currency), rate in self._found.items())


def read(base_url: str, name: str, *, today: date | None = None) -> list[Rate]:
    """The rates of one of the ECB's files under this base URL (ECB_RATES_URL).

    The source failing in a way a later run may not see again (unreachable, slow, a 5xx
    or 429, a file cut short or unreadable) raises UnavailableError; a URL that names no
    such file (404, 410) raises ConfigurationError, ECB_RATES_URL being to fix."""
    url = base_url.rstrip("/") + "/" + name
    try:
        data = fetch(url)
        return parse(data, today=today)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code in {404, 410}:
            raise ConfigurationError(
                f"ECB_RATES_URL: {url} answered HTTP {exc.code}: set the folder that holds"
                f" {DAILY} and {HISTORY}"
            ) from None
        raise UnavailableError(
            f"The ECB's {name} answered HTTP {exc.code}; the next run tries again."
        ) from None
    except RatesFileError as exc:
        raise UnavailableError(f"The ECB's {name} could not be read: {exc}.") from None
    except (OSError, http.client.HTTPException) as exc:
        # URLError (refused, no route, a name that does not resolve, TLS), a timeout, a
        # connection cut or an answer cut short: what another run may not meet.
        cause = getattr(exc, "reason", None) or exc
        raise UnavailableError(
            f"The ECB's {name} cannot be reached ({type(cause).__name__}); the next run"
            " tries again."
        ) from None


def fetch(url: str) -> bytes:
    """The file at this URL (200 only), read within DEADLINE_SECONDS and at most
    MAX_FILE_BYTES (RatesFileError beyond). A redirect away from https is refused."""
    request = _request(url)
    deadline = time.monotonic() + DEADLINE_SECONDS
    with _opener().open(request, timeout=TIMEOUT_SECONDS) as response:
        if response.status != 200:
            raise RatesFileError(f"answered HTTP {response.status}, not 200")
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_FILE_BYTES:
            raise RatesFileError(f"larger than {MAX_FILE_BYTES} bytes")
        data = bytearray()
        # read1: what has come, without waiting for the whole amount, so that a source
        # sending a byte now and then meets the deadline.
        while chunk := response.read1(65_536):
            data += chunk
            if len(data) > MAX_FILE_BYTES:
                raise RatesFileError(f"larger than {MAX_FILE_BYTES} bytes")
            if time.monotonic() > deadline:
                raise TimeoutError(f"not read within {DEADLINE_SECONDS:.0f} s")
    return bytes(data)


def _request(url: str) -> urllib.request.Request:
    return urllib.request.Request(  # noqa: S310 (ECB_RATES_URL: https, or http to a loopback)
        url, headers={"Accept": "application/xml, text/xml", "User-Agent": USER_AGENT}
    )


class KeepHttps(urllib.request.HTTPRedirectHandler):
    """Follows a redirect unless it leaves https: the rates price money."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        was = urllib.parse.urlsplit(req.full_url).scheme
        if was == "https" and urllib.parse.urlsplit(newurl).scheme != "https":
            return None  # the 3xx is then an HTTPError: the source unavailable
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(KeepHttps)

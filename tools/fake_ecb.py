"""A local stand-in for the European Central Bank's reference rates, for `make dev` and
the tests: eurofxref-daily.xml and eurofxref-hist-90d.xml in the ECB's own XML, under
any path (ECB_RATES_URL is `rates_url`).

By default it knows USD and GBP on every weekday of the last 90 days; a test tells it
other rates (`rates`, `publish`), its own today, an HTTP status or a body to answer
instead (`status`, `statuses`, `body`), and reads how many times each file was asked
for (`requests`).

    python -m tools.fake_ecb   # serves on a free port until Ctrl-C, printing ECB_RATES_URL
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from werkzeug.wrappers import Request, Response

from tools.loopback import LoopbackServer

DAILY = "eurofxref-daily.xml"
HISTORY = "eurofxref-hist-90d.xml"
HISTORY_DAYS = 90
# Rates near the ECB's of late 2026, moving a little from day to day.
SAMPLE = {"USD": Decimal("1.0500"), "GBP": Decimal("0.8500")}

Rates = dict[date, dict[str, Decimal]]


def sample_rates(today: date | None = None, days: int = HISTORY_DAYS) -> Rates:
    """USD and GBP on every weekday of the `days` days up to today, as the ECB publishes
    them (four decimals), each a little different from the day before."""
    last = today or datetime.now(UTC).date()
    rates: Rates = {}
    for back in range(days):
        day = last - timedelta(days=back)
        if day.weekday() < 5:
            wiggle = Decimal(day.toordinal() % 50) / 10_000
            rates[day] = {currency: base + wiggle for currency, base in SAMPLE.items()}
    return rates


def envelope(days: Rates) -> bytes:
    """The ECB's XML for these days, newest first, attributes in single quotes as it
    writes them."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01"'
        ' xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref">',
        "\t<gesmes:subject>Reference rates</gesmes:subject>",
        "\t<gesmes:Sender>",
        "\t\t<gesmes:name>European Central Bank</gesmes:name>",
        "\t</gesmes:Sender>",
        "\t<Cube>",
    ]
    for day in sorted(days, reverse=True):
        lines.append(f"\t\t<Cube time='{day.isoformat()}'>")
        lines += [
            f"\t\t\t<Cube currency='{currency}' rate='{rate}'/>"
            for currency, rate in sorted(days[day].items())
        ]
        lines.append("\t\t</Cube>")
    lines += ["\t</Cube>", "</gesmes:Envelope>", ""]
    return "\n".join(lines).encode()


class FakeEcb(LoopbackServer):
    def __init__(self, rates: Rates | None = None, *, today: date | None = None) -> None:
        self.today = today
        """The day it is for the files (None: today in UTC, at each request)."""
        self.rates: Rates = sample_rates(today) if rates is None else rates
        self.requests: Counter[str] = Counter()
        """How many times each file was asked for, by its name."""
        self.status: int | None = None
        """Answer every request with this status (and an HTML page), when set."""
        self.statuses: dict[str, int] = {}
        """The same for one file, by its name."""
        self.body: bytes | None = None
        """Answer every file with these bytes (status 200), when set."""
        self._lock = threading.Lock()
        super().__init__(self._wsgi)

    @property
    def rates_url(self) -> str:
        """What ECB_RATES_URL is set to, as the ECB's own folder is named."""
        return self.url + "/stats/eurofxref/"

    def publish(self, day: date, **rates: str | Decimal) -> None:
        """Add or change a day's rates: publish(date(2026, 12, 4), USD="1.0512")."""
        with self._lock:
            self.rates.setdefault(day, {}).update({c: Decimal(r) for c, r in rates.items()})

    def withdraw(
        self, *currencies: str, before: date | None = None, after: date | None = None
    ) -> None:
        """Forget these currencies' rates on the days before or after the one given."""
        with self._lock:
            for day in list(self.rates):
                if (before and day < before) or (after and day > after):
                    for currency in currencies:
                        self.rates[day].pop(currency, None)
                    if not self.rates[day]:
                        del self.rates[day]

    def daily(self) -> bytes:
        """The last day with rates, up to today."""
        with self._lock:
            published = [day for day in self.rates if day <= self._today()]
            last = max(published, default=None)
            return envelope({} if last is None else {last: dict(self.rates[last])})

    def history(self) -> bytes:
        """Every day with rates in the 90 days up to today."""
        with self._lock:
            today = self._today()
            start = today - timedelta(days=HISTORY_DAYS - 1)
            return envelope({d: dict(r) for d, r in self.rates.items() if start <= d <= today})

    def _today(self) -> date:
        return self.today or datetime.now(UTC).date()

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self._handle(Request(environ))(environ, start_response)

    def _handle(self, request: Request) -> Response:
        name = request.path.rsplit("/", 1)[-1]
        if name in (DAILY, HISTORY):
            with self._lock:
                self.requests[name] += 1
        status = self.statuses.get(name, self.status)
        if status is not None:
            return Response(
                f"<html><body>HTTP {status}</body></html>", status, mimetype="text/html"
            )
        if request.method not in ("GET", "HEAD"):
            return Response(status=405, headers={"Allow": "GET, HEAD"})
        if name not in (DAILY, HISTORY):
            return Response("<html><body>Not Found</body></html>", 404, mimetype="text/html")
        if self.body is not None:
            return Response(self.body, 200, mimetype="text/xml")
        return Response(self.daily() if name == DAILY else self.history(), 200, mimetype="text/xml")


def main() -> int:
    with FakeEcb() as ecb:
        print(f"ECB_RATES_URL={ecb.rates_url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

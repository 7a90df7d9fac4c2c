"""The ECB's rate files, parsed safely: the real format (either quote, newest first, a
day with no rate at all), and every kind of file that is not it refused with a message
that says what and where, never what the file held."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from functions.billing.ecb import MAX_FILE_BYTES, MAX_RATES, Rate, RatesFileError, parse
from tools.fake_ecb import envelope

TODAY = date(2026, 12, 4)
HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01"'
    ' xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref">\n'
    "\t<gesmes:subject>Reference rates</gesmes:subject>\n"
    "\t<gesmes:Sender>\n\t\t<gesmes:name>European Central Bank</gesmes:name>\n"
    "\t</gesmes:Sender>\n"
)


def ecb_file(cubes: str, head: str = HEAD) -> bytes:
    return (head + "\t<Cube>\n" + cubes + "\t</Cube>\n</gesmes:Envelope>\n").encode()


def test_the_ecbs_own_format_is_read() -> None:
    data = ecb_file(
        "\t\t<Cube time='2026-12-04'>\n"
        "\t\t\t<Cube currency='USD' rate='1.0512'/>\n"
        "\t\t\t<Cube currency='JPY' rate='162.35'/>\n"
        "\t\t\t<Cube currency='GBP' rate='0.84210'/>\n"
        "\t\t\t<Cube currency='IDR' rate='17543.21'/>\n"
        "\t\t</Cube>\n"
        '\t\t<Cube time="2026-12-03">\n'
        '\t\t\t<Cube currency="USD" rate="1.0498"/>\n'
        "\t\t</Cube>\n"
    )
    assert parse(data, today=TODAY) == [
        Rate(date(2026, 12, 3), "USD", Decimal("1.0498")),
        Rate(date(2026, 12, 4), "GBP", Decimal("0.84210")),
        Rate(date(2026, 12, 4), "IDR", Decimal("17543.21")),
        Rate(date(2026, 12, 4), "JPY", Decimal("162.35")),
        Rate(date(2026, 12, 4), "USD", Decimal("1.0512")),
    ]
    assert parse(data, today=TODAY)[0].as_json() == {
        "currency": "USD", "date": "2026-12-03", "rate": "1.0498"
    }  # fmt: skip


def test_what_the_stand_in_writes_is_what_the_parser_reads() -> None:
    days = {date(2026, 12, 4): {"USD": Decimal("1.0512"), "GBP": Decimal("0.8421")},
            date(2026, 12, 3): {"USD": Decimal("1.0498")}}  # fmt: skip
    assert parse(envelope(days), today=TODAY) == sorted(
        Rate(day, currency, rate) for day, rates in days.items() for currency, rate in rates.items()
    )


def test_the_same_rate_twice_is_one_rate() -> None:
    cube = "<Cube time='2026-12-04'><Cube currency='USD' rate='1.05'/></Cube>"
    assert len(parse(ecb_file(cube + cube), today=TODAY)) == 1


def test_a_file_over_the_bound_is_refused_before_it_is_parsed() -> None:
    data = ecb_file("<!--" + " " * MAX_FILE_BYTES + "-->")
    with pytest.raises(RatesFileError, match=rf"^larger than {MAX_FILE_BYTES} bytes$"):
        parse(data, today=TODAY)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "not well-formed XML: no element found"),
        (ecb_file("<Cube time='2026-12-04'><Cube currency='USD' rate='1.05'/>")[:-30],
         "not well-formed XML"),
        (b"<html><body>Bad gateway</body></html>", "no gesmes:Envelope"),
        (b'{"rates": {"USD": 1.05}}', "not well-formed XML"),
        (ecb_file(""), "no rate in the file"),
        (ecb_file("<Cube time='2026-12-04'></Cube>"), "no rate in the file"),
    ],
)  # fmt: skip
def test_what_is_not_a_rates_file_is_refused(data: bytes, problem: str) -> None:
    with pytest.raises(RatesFileError, match=problem):
        parse(data, today=TODAY)


def test_a_document_type_declaration_is_refused_before_any_entity_expands() -> None:
    """A billion laughs, and an external entity: neither gets as far as a declaration."""
    laughs = (
        '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">'
                  for i in range(1, 10))
        + "]>\n<lolz>&lol9;</lolz>"
    )  # fmt: skip
    external = (
        '<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY file SYSTEM "file:///etc/passwd">]>\n'
        "<x>&file;</x>"
    )
    for data in (laughs, external):
        with pytest.raises(RatesFileError, match=r"a document type declaration.*\(line 2\)"):
            parse(data.encode(), today=TODAY)


def test_an_entity_never_declared_is_not_well_formed() -> None:
    with pytest.raises(RatesFileError, match="undefined entity"):
        parse(ecb_file("<Cube time='2026-12-04'>&rates;</Cube>"), today=TODAY)


@pytest.mark.parametrize(
    ("cubes", "problem"),
    [
        ("<Cube><Cube currency='USD' rate='1.05'/></Cube>", "without a time='YYYY-MM-DD'"),
        ("<Cube time='4 Dec 2026'><Cube currency='USD' rate='1.05'/></Cube>", "without a time"),
        ("<Cube time='2026-02-30'><Cube currency='USD' rate='1.05'/></Cube>", "is no date"),
        ("<Cube time='1998-12-31'><Cube currency='USD' rate='1.05'/></Cube>", "dated outside"),
        ("<Cube time='2026-12-06'><Cube currency='USD' rate='1.05'/></Cube>", "dated outside"),
        ("<Cube time='2026-12-04'><Cube currency='usd' rate='1.05'/></Cube>", "three-letter"),
        ("<Cube time='2026-12-04'><Cube currency='EUR' rate='1'/></Cube>", "other than EUR"),
        ("<Cube time='2026-12-04'><Cube rate='1.05'/></Cube>", "three-letter"),
        ("<Cube time='2026-12-04'><Cube currency='USD'/></Cube>", "not a number above 0"),
        ("<Cube time='2026-12-04'><Cube currency='USD' rate='0'/></Cube>", "above 0"),
        ("<Cube time='2026-12-04'><Cube currency='USD' rate='-1.05'/></Cube>", "above 0"),
        ("<Cube time='2026-12-04'><Cube currency='USD' rate='NaN'/></Cube>", "above 0"),
        ("<Cube time='2026-12-04'><Cube currency='USD' rate='1e3'/></Cube>", "above 0"),
        ("<Cube time='2026-12-04'><Cube currency='USD' rate='100000000'/></Cube>", "under 1e8"),
        ("<Cube time='2026-12-04'><Cube currency='USD' rate='1.123456789'/></Cube>", "under 1e8"),
        ("<Cube time='2026-12-04'><Cube currency='USD' rate='1.05'/>"
         "<Cube currency='USD' rate='1.06'/></Cube>", "two different rates of USD for 2026-12-04"),
        ("<Cube time='2026-12-04'><Cube currency='USD' rate='1.05'><Cube/></Cube></Cube>",
         "nested deeper"),
        ("<Rates><Cube time='2026-12-04'/></Rates>", "a Cube outside"),
    ],
)  # fmt: skip
def test_a_rate_the_ecb_would_never_publish_refuses_the_file(cubes: str, problem: str) -> None:
    with pytest.raises(RatesFileError, match=problem) as refused:
        parse(ecb_file(cubes), today=TODAY)
    assert "(line " in str(refused.value)
    assert "1.06" not in str(refused.value)  # what the file held is never quoted


def test_a_cube_outside_the_envelopes_own_is_refused() -> None:
    head = HEAD.replace("\t</gesmes:Sender>\n", "\t<Cube time='2026-12-04'/></gesmes:Sender>\n")
    with pytest.raises(RatesFileError, match="a Cube outside"):
        parse(ecb_file("", head=head), today=TODAY)


def test_more_rates_than_one_call_stores_are_refused() -> None:
    currencies = [f"{a}{b}{c}" for a in "ABCDEFGHIJ" for b in "ABCDEFGHIJ" for c in "ABCDEFGHIJ"]
    days = [f"2026-{month:02d}-{day:02d}" for month in range(1, 12) for day in range(1, 29)]
    cubes = "".join(
        f"<Cube time='{day}'>"
        + "".join(f"<Cube currency='{c}' rate='1'/>" for c in currencies[:100])
        + "</Cube>"
        for day in days[: MAX_RATES // 100 + 1]
    )
    with pytest.raises(RatesFileError, match=f"more than {MAX_RATES} rates"):
        parse(ecb_file(cubes), today=TODAY)

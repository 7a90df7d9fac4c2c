"""The billing settings: where the ECB's rates are read, and the statement's time zone."""

from __future__ import annotations

import pytest

from shared.errors import ConfigurationError
from shared.settings import ECB_RATES_URL, Settings

DATABASE = {"DATABASE_URL": "postgresql://u@db.example:6543/postgres"}


def test_the_defaults_are_the_ecbs_own_folder_and_paris() -> None:
    settings = Settings.load(DATABASE)
    assert str(settings.ecb_rates_url) == ECB_RATES_URL
    assert ECB_RATES_URL == "https://www.ecb.europa.eu/stats/eurofxref/"
    assert settings.billing_time_zone == "Europe/Paris"


@pytest.mark.parametrize(
    "url",
    ["https://mirror.example/eurofxref/", "http://127.0.0.1:8099/stats/eurofxref/",
     "http://localhost:8099/"],
)  # fmt: skip
def test_a_rates_url_over_https_or_to_a_loopback_stand_in(url: str) -> None:
    assert str(Settings.load(DATABASE | {"ECB_RATES_URL": url}).ecb_rates_url) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://www.ecb.europa.eu/stats/eurofxref/", "must use https"),
        ("ftp://ecb.example/", "ECB_RATES_URL"),
        ("not a url", "ECB_RATES_URL"),
        ("https://ecb.example/eurofxref/?x=1", "without \\? or #"),
    ],
)
def test_any_other_rates_url_stops_start_up_naming_it(url: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=f"ECB_RATES_URL.*{reason}|{reason}"):
        Settings.load(DATABASE | {"ECB_RATES_URL": url})


@pytest.mark.parametrize("zone", ["Europe/Paris", "UTC", "America/New_York", "Asia/Kolkata"])
def test_an_iana_time_zone_is_taken(zone: str) -> None:
    assert Settings.load(DATABASE | {"BILLING_TIME_ZONE": zone}).billing_time_zone == zone


@pytest.mark.parametrize(
    "zone",
    ["Europe/Atlantis", "Paris", "", "../../etc/passwd", "/usr/share/zoneinfo/UTC",
     "localtime", "CET-1CEST", "Europe/Paris "],
)  # fmt: skip
def test_anything_else_stops_start_up_naming_billing_time_zone(zone: str) -> None:
    with pytest.raises(ConfigurationError, match="BILLING_TIME_ZONE"):
        Settings.load(DATABASE | {"BILLING_TIME_ZONE": zone})

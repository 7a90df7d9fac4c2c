"""CORS_ALLOWED_ORIGINS: exact origins, as browsers write Origin, or a start-up error
that says what is wrong and how to write it."""

from __future__ import annotations

import pytest

from shared.errors import ConfigurationError
from shared.settings import Settings

DATABASE = {"DATABASE_URL": "postgresql://u@db.example:6543/postgres"}


def origins(value: str) -> tuple[str, ...]:
    return Settings.load(DATABASE | {"CORS_ALLOWED_ORIGINS": value}).cors_allowed_origins


def test_none_by_default() -> None:
    assert Settings.load(DATABASE).cors_allowed_origins == ()
    assert origins("") == ()
    assert origins(" , ") == ()


def test_comma_separated_and_written_as_browsers_send_origin() -> None:
    # Browsers send the scheme and host in lowercase and leave the default port out.
    written = " https://Dashboard.Example.com ,http://localhost:3000,https://x.example:443,"
    assert origins(written) == (
        "https://dashboard.example.com",
        "http://localhost:3000",
        "https://x.example",
    )
    assert origins("http://127.0.0.1:3000,http://[::1]:8080,http://a.example:80") == (
        "http://127.0.0.1:3000",
        "http://[::1]:8080",
        "http://a.example",
    )


def test_the_same_origin_twice_is_kept_once() -> None:
    assert origins("https://a.example,https://A.example:443") == ("https://a.example",)


def test_a_star_is_refused_and_told_why() -> None:
    with pytest.raises(ConfigurationError) as refused:
        origins("https://dashboard.example.com,*")
    message = str(refused.value)
    assert "CORS_ALLOWED_ORIGINS" in message
    assert "'*' is refused" in message
    assert "access tokens" in message


@pytest.mark.parametrize(
    "written",
    [
        "https://dashboard.example.com/",  # a trailing slash is a path
        "https://dashboard.example.com/app",
        "https://dashboard.example.com?x=1",
        "https://dashboard.example.com#top",
        "https://user@dashboard.example.com",
        "dashboard.example.com",
        "ftp://dashboard.example.com",
        "https://*.example.com",
        "null",
        "https://dashboard.example.com:0",
        "https://dashboard.example.com:65536",
        "https://",
    ],
)
def test_anything_but_an_origin_is_refused_naming_the_variable(written: str) -> None:
    with pytest.raises(ConfigurationError, match=r"CORS_ALLOWED_ORIGINS: .* is not an origin"):
        origins(written)


def test_origins_given_as_a_list_are_held_to_the_same_rule() -> None:
    settings = Settings(
        database_url=DATABASE["DATABASE_URL"],  # type: ignore[arg-type]
        cors_allowed_origins=("https://A.example",),
    )
    assert settings.cors_allowed_origins == ("https://a.example",)
    with pytest.raises(ValueError, match="refused"):
        Settings(
            database_url=DATABASE["DATABASE_URL"],  # type: ignore[arg-type]
            cors_allowed_origins=("*",),
        )

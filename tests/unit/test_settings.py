"""Settings: one object from the environment; bad configuration names the variable."""

from __future__ import annotations

import pytest

from shared.errors import ConfigurationError
from shared.settings import Settings
from tests.support.builders import make_jwt

DB_VARS = ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_SECRET_KEY")
ANON_JWT = make_jwt({"role": "anon"})


@pytest.fixture(autouse=True)
def empty_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*DB_VARS, "DATABASE_POOL_SIZE", "LOG_LEVEL", "RETRY_AFTER_SECONDS"):
        monkeypatch.delenv(name, raising=False)


def test_database_url_selects_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db.example:6543/postgres")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    settings = Settings.load()
    assert settings.database_backend == "postgres"
    assert settings.log_level == "DEBUG"
    assert "u@db.example" not in repr(settings)  # secrets stay masked


@pytest.mark.parametrize("key", ["sb_secret_x", make_jwt({"role": "service_role"})])
def test_supabase_url_and_key_select_supabase(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv("SUPABASE_URL", "https://abc.supabase.co")
    monkeypatch.setenv("SUPABASE_SECRET_KEY", key)
    assert Settings.load().database_backend == "supabase"


@pytest.mark.parametrize(
    ("environment", "named"),
    [
        ({}, "DATABASE_URL"),
        ({"SUPABASE_URL": "https://abc.supabase.co"}, "SUPABASE_SECRET_KEY"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"SUPABASE_URL": "not a url", "SUPABASE_SECRET_KEY": "sb_secret_k"}, "SUPABASE_URL"),
        ({"SUPABASE_URL": "http://abc.supabase.co", "SUPABASE_SECRET_KEY": "sb_secret_k"}, "https"),
        (
            {"SUPABASE_URL": "https://abc.supabase.co", "SUPABASE_SECRET_KEY": "sb_publishable_k"},
            "SUPABASE_SECRET_KEY",
        ),
        (
            {"SUPABASE_URL": "https://abc.supabase.co", "SUPABASE_SECRET_KEY": ANON_JWT},
            "SUPABASE_SECRET_KEY",
        ),
        ({"DATABASE_URL": "postgresql://x", "DATABASE_POOL_SIZE": "zero"}, "DATABASE_POOL_SIZE"),
        ({"DATABASE_URL": "postgresql://x", "DATABASE_POOL_SIZE": "0"}, "DATABASE_POOL_SIZE"),
        ({"DATABASE_URL": "postgresql://x", "LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
    ],
)
def test_a_missing_or_malformed_setting_is_named(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], named: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=named):
        Settings.load()


def test_a_malformed_secret_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://user:hunter2@db")
    with pytest.raises(ConfigurationError) as caught:
        Settings.load()
    assert "hunter2" not in str(caught.value)

"""Reading secrets at run time: the extension's answers, what is wrong with a secret,
and how old the settings a process works with may grow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from shared import runtime
from shared.errors import ConfigurationError
from shared.secrets import SecretsExtension, settings_in
from tools.embedded import free_port
from tools.secrets_extension import StandIn, secrets_extension

SECRET = "voipia-sms-tracking/test/database-api"
URL = "postgresql://sms_api:first@127.0.0.1:6543/postgres"


@pytest.fixture
def secrets_manager() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="eu-west-3")
        client.create_secret(Name=SECRET, SecretString=json.dumps({"DATABASE_URL": URL}))
        yield client


@pytest.fixture
def extension(secrets_manager: Any) -> Iterator[StandIn]:
    with secrets_extension(secrets_manager, token="session-token") as stand_in:
        yield stand_in


def reader(extension: StandIn, **overrides: str) -> SecretsExtension:
    environment = extension.environment | {"SECRET_IDS": SECRET} | overrides
    found = SecretsExtension.from_environment(environment)
    assert found is not None
    return found


def test_without_secret_ids_the_environment_is_the_only_source() -> None:
    assert SecretsExtension.from_environment({"DATABASE_URL": URL}) is None
    assert SecretsExtension.from_environment({"SECRET_IDS": " , "}) is None


def test_secrets_are_read_through_the_extension_with_the_session_token(
    extension: StandIn,
) -> None:
    assert reader(extension).read() == {"DATABASE_URL": URL}
    with pytest.raises(ConfigurationError, match=r"answered 401"):
        reader(extension, AWS_SESSION_TOKEN="another-token").read()


def test_secret_ids_outside_lambda_say_where_they_work() -> None:
    with pytest.raises(ConfigurationError, match="inside AWS Lambda"):
        SecretsExtension.from_environment({"SECRET_IDS": SECRET})


def test_an_extension_that_is_not_there_is_named_with_what_to_check() -> None:
    absent = SecretsExtension((SECRET,), free_port(), "session-token")
    with pytest.raises(ConfigurationError, match="is its layer attached"):
        absent.read()


def test_an_unknown_secret_is_refused_by_name(extension: StandIn) -> None:
    with pytest.raises(ConfigurationError, match="no-such-secret could not be read"):
        reader(extension, SECRET_IDS="no-such-secret").read()


@pytest.mark.parametrize(
    "secret_string",
    ["not json", '"a string"', '{"database_url": "x"}', '{"DATABASE_POOL_SIZE": 1}', "[]"],
)
def test_a_secret_that_holds_no_settings_object_says_how_to_write_it(secret_string: str) -> None:
    answer = json.dumps({"Name": SECRET, "SecretString": secret_string}).encode()
    with pytest.raises(ConfigurationError, match="JSON object of settings") as raised:
        settings_in(SECRET, answer)
    assert "database_url" not in str(raised.value)  # never a value or a key of it


def test_a_process_reads_its_secrets_again_once_they_are_old(
    secrets_manager: Any, extension: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    for name, value in (extension.environment | {"SECRET_IDS": SECRET}).items():
        monkeypatch.setenv(name, value)
    extension.ttl_seconds = 0.0  # the extension's cache is not what this test is about
    runtime.use(None)
    try:
        first = runtime.services()
        rotated = URL.replace("first", "second")
        secrets_manager.put_secret_value(
            SecretId=SECRET, SecretString=json.dumps({"DATABASE_URL": rotated})
        )
        assert runtime.services() is first  # young enough: not read again
        monkeypatch.setattr(runtime, "SECRETS_MAX_AGE_SECONDS", 0.0)
        second = runtime.services()
        assert second is not first
        assert second.settings.database_url is not None
        assert second.settings.database_url.get_secret_value() == rotated
        assert runtime.services() is second  # read again, unchanged: the same services
    finally:
        runtime.use(None)

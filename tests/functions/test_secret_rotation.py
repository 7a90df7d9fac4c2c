"""Secrets read at run time, as deployed: the Lambda handlers, their settings from
Secrets Manager (moto) through the Parameters and Secrets extension (its stand-in),
the database through PgBouncer checking passwords by SCRAM, as Supabase's pooler does.
A rotated secret reaches the running functions without a redeploy."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import urlencode, urlsplit

import boto3
import psycopg
import pytest
from moto import mock_aws
from twilio.request_validator import RequestValidator

from functions.ingest_sms import aws_lambda as ingest_lambda
from functions.retention.bucket import ArchiveBucket
from functions.retention.context import Retention
from functions.twilio_status import aws_lambda as status_lambda
from shared import runtime
from shared.errors import ConfigurationError, UnavailableError
from shared.settings import Settings
from tests.support.builders import Tenants
from tools.embedded import as_user, free_port
from tools.fake_twilio import status_callback
from tools.lambda_events import DOMAIN, body_of, function_url_event, headers_of
from tools.migrate import API_LOGIN, RETENTION_LOGIN
from tools.pooler import transaction_pooler
from tools.secrets_extension import StandIn, secrets_extension

pytestmark = pytest.mark.db

DATABASE_SECRET = "voipia-sms-tracking/test/database-api"
INGEST_SECRET = "voipia-sms-tracking/test/ingest"
TWILIO_SECRET = "voipia-sms-tracking/test/twilio"
INGEST_KEY = "k" * 40
ACCOUNT = "AC" + "2" * 32
OLD_TOKEN, NEW_TOKEN = "old-twilio-auth-token-0123456789", "new-twilio-auth-token-9876543210"


@pytest.fixture
def secrets_manager() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="eu-west-3")


@pytest.fixture
def extension(secrets_manager: Any) -> Iterator[StandIn]:
    with secrets_extension(secrets_manager, token="lambda-session-token") as stand_in:
        yield stand_in


@pytest.fixture
def lambda_environment(monkeypatch: pytest.MonkeyPatch, extension: StandIn) -> Iterator[None]:
    """A Lambda environment's variables as serverless.yml sets them: the secrets' names,
    no value; the process builds its services from them on its first request."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    for name, value in extension.environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SECRET_IDS", f"{DATABASE_SECRET},{INGEST_SECRET},{TWILIO_SECRET}")
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT)
    monkeypatch.setenv("DATABASE_POOL_SIZE", "1")
    monkeypatch.setenv("DATABASE_TIMEOUT_SECONDS", "2")
    runtime.use(None)
    yield
    runtime.services().close()
    runtime.use(None)


def put(secrets_manager: Any, name: str, values: dict[str, str]) -> None:
    """Create the secret, or give it a new version, as an operator does."""
    text = json.dumps(values)
    try:
        secrets_manager.put_secret_value(SecretId=name, SecretString=text)
    except secrets_manager.exceptions.ResourceNotFoundException:
        secrets_manager.create_secret(Name=name, SecretString=text)


def ingest(tenants: Tenants) -> dict[str, Any]:
    sms = {"deployment_id": str(tenants.deployment_b), "phone_number": "06 12 34 56 78",
           "message_content": "Bonjour",
           "provider_message_sid": "SM" + uuid.uuid4().hex}  # fmt: skip
    event = function_url_event(
        "POST",
        headers={"Authorization": f"Bearer {INGEST_KEY}", "Content-Type": "application/json"},
        body=json.dumps(sms).encode(),
    )
    response: dict[str, Any] = ingest_lambda.handler(event, None)
    return response


def callback(token: str) -> dict[str, Any]:
    params = status_callback(ACCOUNT, "SM" + uuid.uuid4().hex, "delivered")
    signature = RequestValidator(token).compute_signature(f"https://{DOMAIN}/", params)
    event = function_url_event(
        "POST",
        headers={"Content-Type": "application/x-www-form-urlencoded",
                 "X-Twilio-Signature": signature},
        body=urlencode(params).encode(),
    )  # fmt: skip
    response: dict[str, Any] = status_lambda.handler(event, None)
    return response


def test_a_rotated_database_password_is_read_after_the_pooler_refuses_the_old_one(
    database_url: str,
    tenants: Tenants,
    clean: psycopg.Connection,
    secrets_manager: Any,
    extension: StandIn,
    lambda_environment: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "RENEW_INTERVAL_SECONDS", 0.0)  # this test renews twice
    api, port = as_user(database_url, API_LOGIN), free_port()
    database = urlsplit(database_url).path

    def url(password: str) -> str:
        return f"postgresql://{API_LOGIN}:{password}@127.0.0.1:{port}{database}"

    put(secrets_manager, INGEST_SECRET, {"INGEST_API_KEYS": INGEST_KEY})
    put(secrets_manager, TWILIO_SECRET, {"TWILIO_AUTH_TOKEN": OLD_TOKEN})
    put(secrets_manager, DATABASE_SECRET, {"DATABASE_URL": url("first-password")})
    with transaction_pooler(api, passwords={API_LOGIN: "first-password"}, listen_port=port):
        assert ingest(tenants)["statusCode"] == 201

    # The password changes where the pooler checks it (ALTER ROLE, on Supabase), and the
    # pooler drops its clients: the function's next connection is refused.
    with transaction_pooler(api, passwords={API_LOGIN: "second-password"}, listen_port=port):
        # Secrets Manager still holds the old one: nothing newer to try. Not an outage
        # to retry forever: a 500 the alarm on 5xx reports, the cause in the log.
        refused = ingest(tenants)
        assert refused["statusCode"] == 500, refused
        assert body_of(refused)["error"]["code"] == "not_configured"

        put(secrets_manager, DATABASE_SECRET, {"DATABASE_URL": url("second-password")})
        # Refused again, and this time the secret read past the extension's cache holds
        # a new password: the caller is told to retry...
        renewed = ingest(tenants)
        assert renewed["statusCode"] == 503, renewed
        assert headers_of(renewed)["retry-after"]
        # ...and the next call uses it. No redeploy.
        assert ingest(tenants)["statusCode"] == 201
    assert clean.execute("SELECT count(*) FROM agent_sms WHERE message_content = 'Bonjour'"
                         ).fetchone() == (2,)  # fmt: skip


def test_a_rotated_twilio_token_is_read_when_a_signature_fails(
    pooled_database_url: str,
    tenants: Tenants,
    secrets_manager: Any,
    extension: StandIn,
    lambda_environment: None,
) -> None:
    put(secrets_manager, DATABASE_SECRET, {"DATABASE_URL": pooled_database_url})
    put(secrets_manager, INGEST_SECRET, {"INGEST_API_KEYS": INGEST_KEY})
    put(secrets_manager, TWILIO_SECRET, {"TWILIO_AUTH_TOKEN": OLD_TOKEN})
    assert callback(OLD_TOKEN)["statusCode"] == 200

    # Twilio's secondary token goes into the secret, the old one beside it as previous,
    # then is promoted: Twilio signs with it before this process has read the secret.
    put(secrets_manager, TWILIO_SECRET,
        {"TWILIO_AUTH_TOKEN": NEW_TOKEN, "TWILIO_PREVIOUS_AUTH_TOKEN": OLD_TOKEN})  # fmt: skip
    assert callback(NEW_TOKEN)["statusCode"] == 200  # read again within the same call
    assert callback(OLD_TOKEN)["statusCode"] == 200  # still accepted while it rotates

    # A bad signature makes the process read its secrets again at most every 30 s
    # (it last did for the new token, just now): anyone can send one, and each read
    # goes to Secrets Manager.
    reads = extension.reads
    for _ in range(5):
        assert callback("not-a-token-of-this-account")["statusCode"] == 403
    assert extension.reads == reads


@pytest.mark.parametrize(("renewed", "refused_as"), [(True, UnavailableError),
                                                      (False, ConfigurationError)])  # fmt: skip
def test_retention_refused_by_the_database_reads_its_secrets_again(
    database_url: str, renewed: bool, refused_as: type[Exception]
) -> None:
    """erase and retention connect in sessions of their own (DATABASE_SESSION_URL): a
    refusal there also reads the secrets again, and answers as the other functions do."""
    session, port = as_user(database_url, RETENTION_LOGIN), free_port()
    wrong = f"postgresql://{RETENTION_LOGIN}:old-password@127.0.0.1:{port}"
    wrong += urlsplit(database_url).path
    settings = Settings(
        database_session_url=wrong,  # type: ignore[arg-type]
        archive_bucket="unused",
        archive_index_secret="i" * 40,  # type: ignore[arg-type]
    )
    asked: list[bool] = []

    def renew() -> bool:
        asked.append(True)
        return renewed

    with transaction_pooler(session, passwords={RETENTION_LOGIN: "new-password"},
                            listen_port=port):  # fmt: skip
        retention = Retention(settings, cast("ArchiveBucket", None), wrong, b"i" * 40, renew)
        with pytest.raises(refused_as), retention.sessions():
            pass
    assert asked == [True]

"""No phone number, name or message text in the database server's log.

Postgres logs a failed statement with its error and its text. The functions run on a
server of this test's own, whose log it reads, through PgBouncer in transaction mode as
in production; failures are provoked through the functions: statement timeouts (a row
another session holds), a period the SQL refuses, and through the functions' database
adapter what the HTTP layer never lets through (a CHECK violation, a bad input). A
positive control first finds each failure's own line by the connections'
application_name, so a log in the wrong place cannot pass.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from twilio.request_validator import RequestValidator

from shared import runtime
from shared.db import PostgresDatabase, database
from shared.errors import ServiceError
from shared.settings import Settings
from tests.support.builders import JWT_SECRET, Tenants, create_tenants, make_jwt
from tests.support.served import LocalFunction
from tools.embedded import embedded_server
from tools.fake_twilio import status_callback
from tools.migrate import apply
from tools.pooler import transaction_pooler

MARKER = "logcheck" + uuid.uuid4().hex[:12]
INGEST_KEY = "i" * 40
ACCOUNT = "AC" + "c" * 32
TOKEN = "log-test-twilio-token"
# What must never reach the log, in every form it is sent or stored in.
FIRST_NAME = "Zéphyrine"
LAST_NAME = "Quillebeuf"
TEXT = "Votre code d'accès est 48213-KX, à bientôt"
PHONE = "+33671234598"
NATIONAL = "0671234598"
EMAIL = "zephyrine.q@example.org"
CONTROL_SID = "SMcontrol" + uuid.uuid4().hex[:23]
SECRETS = (FIRST_NAME, LAST_NAME, TEXT, "48213-KX", PHONE, NATIONAL, "671234598", EMAIL)


@dataclass
class Stack:
    log: Path
    direct_url: str
    db: PostgresDatabase
    urls: dict[str, str]
    tenants: Tenants


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with embedded_server() as server:
        with psycopg.connect(server.url, autocommit=True) as conn:
            # Only the prefix changes, so that a line names its connection; what a
            # failure writes is the stock configuration's (Supabase's too: log_statement
            # none, log_min_error_statement error).
            conn.execute("ALTER SYSTEM SET log_line_prefix = '%m [%p] %a '")
            conn.execute("SELECT pg_reload_conf()")
        apply(server.url, include_local=True, report=lambda _: None)
        with psycopg.connect(server.url, autocommit=True) as conn:
            tenants = create_tenants(conn)
        with (
            transaction_pooler(server.url) as pooled,
            LocalFunction("ingest_sms") as ingest,
            LocalFunction("twilio_status") as status,
            LocalFunction("metrics") as metrics,
        ):
            db = PostgresDatabase(f"{pooled}?application_name={MARKER}", pool_size=2, timeout=1)
            settings = Settings(
                database_url=pooled,  # type: ignore[arg-type]
                database_timeout_seconds=1,
                ingest_api_keys=INGEST_KEY,  # type: ignore[arg-type]
                twilio_account_sid=ACCOUNT,
                twilio_auth_token=TOKEN,  # type: ignore[arg-type]
                public_base_url=status.url.rstrip("/"),  # type: ignore[arg-type]
                supabase_jwt_secret=JWT_SECRET,  # type: ignore[arg-type]
            )
            runtime.use(runtime.Services(settings, provided={database: db}))
            try:
                yield Stack(
                    server.log,
                    server.url,
                    db,
                    {"ingest": ingest.url, "status": status.url, "metrics": metrics.url},
                    tenants,
                )
            finally:
                runtime.use(None)
                db.close()


@pytest.fixture(scope="module")
def failures(stack: Stack) -> str:
    """Provoke every failure once, then return the whole server log."""
    deployment = stack.tenants.deployment_b
    sid = "SM" + uuid.uuid4().hex
    sms = {
        "deployment_id": str(deployment),
        "phone_number": "06 71 23 45 98",
        "first_name": FIRST_NAME,
        "last_name": LAST_NAME,
        "message_content": TEXT,
        "provider_message_sid": sid,
    }
    auth = {"Authorization": f"Bearer {INGEST_KEY}"}
    assert httpx.post(stack.urls["ingest"], json=sms, headers=auth, timeout=30).status_code == 201

    # 1. Statement timeouts: another session holds what the call needs.
    with holding(stack.direct_url, "SELECT FROM agent_deployments WHERE id = %s FOR UPDATE",
                 deployment):  # fmt: skip
        again = sms | {"provider_message_sid": "SM" + uuid.uuid4().hex}
        response = httpx.post(stack.urls["ingest"], json=again, headers=auth, timeout=30)
        assert response.status_code == 503, response.text
    with holding(stack.direct_url, "SELECT FROM agent_sms WHERE provider_message_sid = %s"
                 " FOR UPDATE", sid):  # fmt: skip
        params = status_callback(ACCOUNT, sid, "delivered") | {"To": PHONE}
        url = stack.urls["status"].rstrip("/")
        signature = RequestValidator(TOKEN).compute_signature(url, params)
        response = httpx.post(
            url, data=params, headers={"X-Twilio-Signature": signature}, timeout=30
        )
        assert response.status_code == 503, response.text

    # 2. A call the SQL refuses, by a user whose token carries their email and number.
    user = make_jwt({"sub": str(stack.tenants.viewer_a), "role": "authenticated",
                     "aud": "authenticated", "email": EMAIL, "phone": PHONE[1:]})  # fmt: skip
    response = httpx.get(
        stack.urls["metrics"],
        params={"start": "2024-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
        headers={"Authorization": f"Bearer {user}"},
        timeout=30,
    )
    assert response.status_code == 422, response.text

    # 3. Through the functions' adapter, what validation stops at the edge: a number not
    # in E.164 (the CHECK), and a number where a date belongs (a bad input).
    valid = sms | {"phone_number": PHONE, "sent_at": "2026-11-01T10:00:00Z"}
    for item in (valid | {"phone_number": NATIONAL}, valid | {"sent_at": PHONE}):
        item["provider_message_sid"] = "SM" + uuid.uuid4().hex
        with pytest.raises(ServiceError):
            stack.db.rpc("ingest_sms", {"p_messages": [item]})
    # 4. The control for the DETAIL lines, where Postgres quotes a failing row: a row of
    # harmless values, refused by a CHECK, on a connection of our own.
    with (
        psycopg.connect(stack.direct_url, application_name=MARKER) as conn,
        pytest.raises(psycopg.errors.CheckViolation),
    ):
        conn.execute(
            "INSERT INTO agent_sms_events (provider_message_sid, twilio_status, source)"
            " VALUES (%s, 'sent', 'not-a-source')",
            (CONTROL_SID,),
        )
    time.sleep(0.2)  # the server writes its log as it goes; let the last lines land
    return stack.log.read_text(errors="replace")


class holding:  # noqa: N801 (reads as a sentence: with holding(...))
    """A transaction of another session that holds a row lock until the block ends."""

    def __init__(self, url: str, query: str, *params: Any) -> None:
        self.conn = psycopg.connect(url)
        self.conn.execute(query, params)

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self.conn.rollback()
        self.conn.close()


def lines_of(log: str, *words: str) -> list[str]:
    return [line for line in log.splitlines() if all(word in line for word in words)]


def test_the_log_holds_each_failure(failures: str) -> None:
    """The positive control: this is the server's log, and each failure is in it."""
    timeouts = lines_of(failures, MARKER, "ERROR", "canceling statement due to statement timeout")
    assert len(timeouts) >= 2, failures[-3000:]
    assert lines_of(failures, MARKER, "ERROR", "at most 366 days")
    assert lines_of(failures, MARKER, "ERROR", "agent_sms_phone_number_e164_check")
    assert lines_of(failures, MARKER, "ERROR", "invalid format")
    assert lines_of(failures, MARKER, "STATEMENT")
    # DETAIL lines are written, and would show a failing row's values.
    assert lines_of(failures, MARKER, "DETAIL", "Failing row contains", CONTROL_SID)


@pytest.mark.parametrize("secret", SECRETS)
def test_no_name_text_or_number_is_in_the_log(failures: str, secret: str) -> None:
    assert secret not in failures

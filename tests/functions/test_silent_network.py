"""Every call ends when the network goes silent, and calls succeed again after.

The functions reach the database as in production, through a network link and a
transaction pooler (PgBouncer). The link then goes silent two ways: mute (a hung
pooler, a relay whose kernel still acknowledges: the bytes are taken and nothing comes
back, no FIN, no reset) and, where the machine allows it, packets dropped at the IP
level (a peer gone). Each call must end with a 503 and Retry-After, which n8n and Twilio
retry, not hang. The guard here (60 s) is far above what the functions allow themselves
(DATABASE_TIMEOUT_SECONDS, 2 s in this test): it catches a hang, it does not time the
functions; benchmarks/soak measures how fast they decide.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from twilio.request_validator import RequestValidator

from shared import runtime
from shared.db import PostgresDatabase, database
from shared.settings import Settings
from tests.support.builders import Tenants, insert_sms
from tests.support.served import LocalFunction
from tools.fake_twilio import status_callback
from tools.relay import Relay, can_drop_packets, packets_dropped, relay_to_database

HANG_GUARD_SECONDS = 60
KEY = "n" * 40
ACCOUNT = "AC" + "d" * 32
TOKEN = "silent-network-token"


@dataclass
class Served:
    relay: Relay
    ingest: str
    status: str


@pytest.fixture(scope="module")
def served(pooled_database_url: str) -> Iterator[Served]:
    relay, through_relay = relay_to_database(pooled_database_url)
    db = PostgresDatabase(through_relay, pool_size=1, timeout=2)
    with LocalFunction("ingest_sms") as ingest, LocalFunction("twilio_status") as status:
        settings = Settings(
            database_url=through_relay,  # type: ignore[arg-type]
            database_timeout_seconds=2,
            ingest_api_keys=KEY,  # type: ignore[arg-type]
            twilio_account_sid=ACCOUNT,
            twilio_auth_token=TOKEN,  # type: ignore[arg-type]
            public_base_url=status.url.rstrip("/"),  # type: ignore[arg-type]
        )
        runtime.use(runtime.Services(settings, provided={database: db}))
        try:
            yield Served(relay, ingest.url, status.url.rstrip("/"))
        finally:
            runtime.use(None)
            db.close()
            relay.close()


def ingest(served: Served, tenants: Tenants) -> httpx.Response:
    sms = {
        "deployment_id": str(tenants.deployment_b),
        "phone_number": "+33612345678",
        "message_content": "Bonjour",
        "provider_message_sid": "SM" + uuid.uuid4().hex,
    }
    return httpx.post(
        served.ingest,
        json=sms,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=HANG_GUARD_SECONDS,
    )


def report(served: Served, sid: str) -> httpx.Response:
    params = status_callback(ACCOUNT, sid, "delivered")
    signature = RequestValidator(TOKEN).compute_signature(served.status, params)
    return httpx.post(
        served.status,
        data=params,
        headers={"X-Twilio-Signature": signature},
        timeout=HANG_GUARD_SECONDS,
    )


def silent_for(silence: Callable[[], object], served: Served, tenants: Tenants, sid: str) -> None:
    """While the silence lasts, both functions answer 503 with Retry-After."""
    assert ingest(served, tenants).status_code == 201  # the pool holds a live connection
    done = threading.Event()

    def keep_silent() -> None:
        silence()
        done.set()

    threading.Thread(target=keep_silent, daemon=True).start()
    time.sleep(0.3)
    for answer in (ingest(served, tenants), report(served, sid)):
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"].isdigit()
    assert done.wait(HANG_GUARD_SECONDS)


def succeeds_again(served: Served, tenants: Tenants) -> None:
    give_up = time.monotonic() + HANG_GUARD_SECONDS
    while ingest(served, tenants).status_code != 201:
        assert time.monotonic() < give_up, "calls did not succeed again after the silence"
        time.sleep(0.5)


def test_a_mute_link_ends_every_call_and_calls_succeed_after(
    served: Served, tenants: Tenants, clean: object
) -> None:
    sid = "SM" + uuid.uuid4().hex
    insert_sms(clean, tenants.deployment_b, provider_message_sid=sid)  # type: ignore[arg-type]
    silent_for(lambda: served.relay.mute(12), served, tenants, sid)
    succeeds_again(served, tenants)
    assert report(served, sid).status_code == 200


def test_packets_dropped_end_every_call_and_calls_succeed_after(
    served: Served, tenants: Tenants, clean: object
) -> None:
    if reason := can_drop_packets():
        pytest.skip(reason)
    sid = "SM" + uuid.uuid4().hex
    insert_sms(clean, tenants.deployment_b, provider_message_sid=sid)  # type: ignore[arg-type]

    def drop() -> None:
        with packets_dropped(served.relay.port):
            time.sleep(12)

    silent_for(drop, served, tenants, sid)
    succeeds_again(served, tenants)
    assert report(served, sid).status_code == 200

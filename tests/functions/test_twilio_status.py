"""twilio_status end to end: callbacks signed exactly as Twilio signs them, real HTTP in,
real Postgres out; reconcile against a local stand-in for Twilio's API."""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
from twilio.request_validator import RequestValidator

from shared import runtime
from shared.db import PostgresDatabase, database
from shared.settings import Settings
from tests.support.builders import Tenants, insert_sms
from tests.support.served import serve
from tools.fake_twilio import FakeTwilio, status_callback

MAIN_ACCOUNT = "AC" + "a" * 32
SUBACCOUNT = "AC" + "b" * 32
TOKEN = "12345"  # Twilio's documented example token
SUB_TOKEN = "subaccount-token"
PUBLIC = "https://mycompany.com"


@pytest.fixture(scope="module")
def status_url() -> Iterator[str]:
    for function in serve("twilio_status"):
        yield function.url.rstrip("/")


@pytest.fixture(scope="module")
def reconcile_url() -> Iterator[str]:
    for function in serve("twilio_status", target="reconcile"):
        yield function.url


def settings_for(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "twilio_account_sid": MAIN_ACCOUNT,
        "twilio_auth_token": TOKEN,
        "twilio_subaccounts": f"{SUBACCOUNT}:{SUB_TOKEN}",
        "public_base_url": PUBLIC,
    } | overrides
    return Settings(**values)


@pytest.fixture(autouse=True)
def services(database_url: str, shared_db: PostgresDatabase) -> Iterator[runtime.Services]:
    current = runtime.Services(settings_for(database_url), provided={database: shared_db})
    runtime.use(current)
    yield current
    runtime.use(None)


def use_settings(services: runtime.Services, **overrides: Any) -> None:
    database_url = services.settings.database_url
    assert database_url is not None
    runtime.use(
        runtime.Services(
            settings_for(database_url.get_secret_value(), **overrides),
            provided={database: services.db},
        )
    )


def new_sid() -> str:
    return "SM" + uuid.uuid4().hex


def callback(sid: str, status: str, **extra: str) -> dict[str, str]:
    return status_callback(MAIN_ACCOUNT, sid, status, **extra)


def post(
    status_url: str,
    params: dict[str, str],
    *,
    path: str = "/",
    token: str = TOKEN,
    signed_url: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST as Twilio does: form-encoded, signed over the public URL and every param."""
    signature = RequestValidator(token).compute_signature(signed_url or PUBLIC + path, params)
    return httpx.post(
        status_url + path,
        data=params,
        headers={"X-Twilio-Signature": signature} | (headers or {}),
        timeout=30,
    )


def row(conn: psycopg.Connection, sid: str) -> dict[str, Any]:
    cur = conn.execute("SELECT * FROM agent_sms WHERE provider_message_sid = %s", (sid,))
    found = cur.fetchone()
    assert found is not None
    assert cur.description is not None
    return dict(zip([c.name for c in cur.description], found, strict=True))


def events(conn: psycopg.Connection, sid: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT twilio_status, error_code, applied_at IS NOT NULL, pending_phone_number, source"
        " FROM agent_sms_events WHERE provider_message_sid = %s ORDER BY id",
        (sid,),
    ).fetchall()


def event_count(conn: psycopg.Connection) -> int:
    result = conn.execute("SELECT count(*) FROM agent_sms_events").fetchone()
    assert result is not None
    return int(result[0])


@pytest.fixture
def sms_sid(tenants: Tenants, clean: psycopg.Connection) -> str:
    sid = new_sid()
    insert_sms(clean, tenants.deployment_b, provider_message_sid=sid, provider_status="queued")
    return sid


# --- signatures -------------------------------------------------------------------------


DOCUMENTED_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}


def test_twilios_documented_example_validates_through_the_endpoint(
    status_url: str, clean: psycopg.Connection
) -> None:
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    signature = RequestValidator("12345").compute_signature(url, DOCUMENTED_PARAMS)
    assert signature == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    response = httpx.post(
        status_url + "/myapp.php?foo=1&bar=2",
        data=DOCUMENTED_PARAMS,
        headers={"X-Twilio-Signature": signature},
    )
    # The signature is accepted; the payload is a voice call, not a message status.
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "MessageSid"
    tampered = httpx.post(
        status_url + "/myapp.php?foo=1&bar=2",
        data=DOCUMENTED_PARAMS | {"Digits": "1235"},
        headers={"X-Twilio-Signature": signature},
    )
    assert tampered.status_code == 403


def test_a_valid_callback_is_200_with_an_empty_body(
    status_url: str, sms_sid: str, clean: psycopg.Connection
) -> None:
    response = post(status_url, callback(sms_sid, "delivered"))
    assert response.status_code == 200
    assert response.content == b""
    assert row(clean, sms_sid)["status"] == "delivered"


def test_both_take_only_post(status_url: str, reconcile_url: str) -> None:
    for url in (status_url + "/", reconcile_url):
        response = httpx.get(url, timeout=30)
        assert (response.status_code, response.headers["Allow"]) == (405, "POST")


def test_a_form_part_without_a_name_is_403_not_500(status_url: str, sms_sid: str) -> None:
    # Twilio never sends one, and the signature check cannot sort a nameless parameter
    # (found by Schemathesis, as a 500).
    body = (
        b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n"
        b'--b\r\nContent-Disposition: form-data; name="MessageSid"\r\n\r\n'
        + sms_sid.encode()
        + b"\r\n--b--\r\n"
    )
    response = httpx.post(
        status_url + "/",
        content=body,
        headers={
            "Content-Type": "multipart/form-data; boundary=b",
            "X-Twilio-Signature": "c2lnbmF0dXJl",
        },
        timeout=30,
    )
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "forbidden"


def test_an_unreachable_database_is_503_with_retry_after(
    status_url: str, services: runtime.Services, sms_sid: str
) -> None:
    # Twilio retries on a 5xx (with the connection overrides the README gives).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        down = f"postgresql://postgres@127.0.0.1:{probe.getsockname()[1]}/x"
    unreachable = runtime.Services(
        settings_for(down, database_timeout_seconds=1, retry_after_seconds=13)
    )
    runtime.use(unreachable)
    response = post(status_url, callback(sms_sid, "delivered"))
    unreachable.db.close()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "13"
    assert response.json()["error"]["code"] == "unavailable"


@pytest.mark.parametrize(
    "forgery",
    ["tampered", "wrong_token", "wrong_url", "missing_header", "unknown_account", "json"],
)
def test_forged_callbacks_are_403_and_touch_nothing(
    status_url: str, sms_sid: str, clean: psycopg.Connection, forgery: str
) -> None:
    params = callback(sms_sid, "failed", ErrorCode="30003")
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + "/", params)
    headers = {"X-Twilio-Signature": signature}
    body: dict[str, Any] = {"data": params}
    if forgery == "tampered":
        body = {"data": params | {"MessageStatus": "delivered"}}
    elif forgery == "wrong_token":
        headers["X-Twilio-Signature"] = RequestValidator("other").compute_signature(
            PUBLIC + "/", params
        )
    elif forgery == "wrong_url":
        headers["X-Twilio-Signature"] = RequestValidator(TOKEN).compute_signature(
            "https://attacker.example/", params
        )
    elif forgery == "missing_header":
        headers = {}
    elif forgery == "unknown_account":
        unknown = params | {"AccountSid": "AC" + "c" * 32}
        headers["X-Twilio-Signature"] = RequestValidator(TOKEN).compute_signature(
            PUBLIC + "/", unknown
        )
        body = {"data": unknown}
    elif forgery == "json":
        body = {"json": params}
    before = event_count(clean)
    response = httpx.post(status_url + "/", headers=headers, **body)
    assert response.status_code == 403
    assert event_count(clean) == before
    assert row(clean, sms_sid)["status"] == "sent"


def test_a_subaccount_signs_with_its_own_token(
    status_url: str, sms_sid: str, clean: psycopg.Connection
) -> None:
    params = callback(sms_sid, "delivered", AccountSid=SUBACCOUNT)
    assert post(status_url, params, token=TOKEN).status_code == 403
    assert post(status_url, params, token=SUB_TOKEN).status_code == 200


@pytest.mark.parametrize(
    "signed_url",
    ["https://mycompany.com:443/status?x=1", "https://mycompany.com/status?x=1"],
)
def test_a_url_with_or_without_its_port_validates(
    status_url: str, sms_sid: str, signed_url: str
) -> None:
    response = post(
        status_url, callback(sms_sid, "sent"), path="/status?x=1", signed_url=signed_url
    )
    assert response.status_code == 200


def test_a_callback_url_on_the_bare_host_validates(status_url: str, sms_sid: str) -> None:
    response = post(status_url, callback(sms_sid, "sent"), signed_url="https://mycompany.com")
    assert response.status_code == 200


@pytest.mark.parametrize(("public_base_url", "status"), [(PUBLIC, 403), (None, 500)])
def test_headers_a_client_writes_never_choose_the_signed_url(
    status_url: str,
    sms_sid: str,
    services: runtime.Services,
    clean: psycopg.Connection,
    public_base_url: str | None,
    status: int,
) -> None:
    """A signature Twilio made for another URL of the same account (an attacker's own
    endpoint) does not verify here, whatever Host or X-Forwarded-* the request carries:
    refused (403), or with no public URL configured, nothing is verified at all (500)."""
    use_settings(services, public_base_url=public_base_url)
    params = callback(sms_sid, "delivered")
    for elsewhere in ("http://hooks.attacker.example/cb", "https://hooks.attacker.example/cb"):
        forged = {"Host": "hooks.attacker.example", "X-Forwarded-Proto": "https",
                  "X-Forwarded-Host": "hooks.attacker.example"}  # fmt: skip
        response = post(status_url, params, path="/cb", signed_url=elsewhere, headers=forged)
        assert response.status_code == status
    assert row(clean, sms_sid)["status"] == "sent"


def test_without_a_public_url_every_callback_is_refused_as_not_configured(
    status_url: str, sms_sid: str, services: runtime.Services, clean: psycopg.Connection
) -> None:
    """Outside a Lambda function URL nothing says which URL Twilio signed: fail closed."""
    use_settings(services, public_base_url=None)
    params = callback(sms_sid, "delivered")
    response = post(status_url, params, path="/cb", signed_url=status_url + "/cb")
    assert response.status_code == 500
    assert row(clean, sms_sid)["status"] == "sent"


def test_malformed_reports_are_400_once_signed(
    status_url: str, sms_sid: str, clean: psycopg.Connection
) -> None:
    unknown = post(status_url, callback(sms_sid, "teleported"))
    assert unknown.status_code == 400
    assert unknown.json()["error"]["field"] == "MessageStatus"
    params = callback(sms_sid, "sent")
    del params["MessageSid"], params["SmsSid"]
    missing = post(status_url, params)
    assert missing.status_code == 400
    assert missing.json()["error"]["field"] == "MessageSid"
    assert events(clean, sms_sid) == []


# --- the state machine ------------------------------------------------------------------


@pytest.mark.parametrize("order", list(itertools.permutations(["queued", "sent", "delivered"])))
def test_every_order_of_queued_sent_delivered_ends_delivered(
    status_url: str, sms_sid: str, clean: psycopg.Connection, order: tuple[str, ...]
) -> None:
    for status in order:
        assert post(status_url, callback(sms_sid, status)).status_code == 200
    final = row(clean, sms_sid)
    assert (final["provider_status"], final["status"]) == ("delivered", "delivered")
    assert final["delivered_at"] is not None
    assert [e[0] for e in events(clean, sms_sid)] == list(order)


def test_undelivered_after_sent_fails_with_a_readable_reason(
    status_url: str, sms_sid: str, clean: psycopg.Connection
) -> None:
    post(status_url, callback(sms_sid, "sent"))
    post(status_url, callback(sms_sid, "undelivered", ErrorCode="30003"))
    post(status_url, callback(sms_sid, "sent"))  # late, and never undoes a final status
    final = row(clean, sms_sid)
    assert (final["provider_status"], final["status"]) == ("undelivered", "failed")
    assert final["failure_reason"] == "Unreachable destination handset"
    assert final["failed_at"] is not None


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("21610", "Recipient opted out (replied STOP)"),
        ("30005", "Unknown destination handset"),
        ("30006", "Landline or unreachable carrier"),
        ("30007", "Filtered by the carrier"),
        ("30001", "Queue overflow"),
        ("30500", "Carrier violation"),
        ("12345", "Twilio error 12345"),
    ],
)
def test_error_codes_become_readable_reasons(
    status_url: str, sms_sid: str, clean: psycopg.Connection, code: str, reason: str
) -> None:
    post(status_url, callback(sms_sid, "failed", ErrorCode=code))
    assert row(clean, sms_sid)["failure_reason"] == reason


def test_a_repeated_callback_changes_nothing_but_is_kept_in_the_history(
    status_url: str, sms_sid: str, clean: psycopg.Connection
) -> None:
    post(status_url, callback(sms_sid, "delivered", RawDlrDoneDate="2611241032"))
    first = row(clean, sms_sid)
    post(status_url, callback(sms_sid, "delivered", RawDlrDoneDate="2611241059"))
    again = row(clean, sms_sid)
    assert (
        again["delivered_at"] == first["delivered_at"] == datetime(2026, 11, 24, 10, 32, tzinfo=UTC)
    )
    assert again["updated_at"] == first["updated_at"]
    assert [e[0] for e in events(clean, sms_sid)] == ["delivered", "delivered"]


def test_a_replayed_callback_adds_no_event_row(
    status_url: str, sms_sid: str, clean: psycopg.Connection
) -> None:
    """Twilio retrying, or anyone replaying a callback it captured: the same signed
    request again is the same report, kept once."""
    params = callback(sms_sid, "delivered", RawDlrDoneDate="2611241032", ErrorCode="")
    for _ in range(3):
        assert post(status_url, params).status_code == 200
    post(status_url, callback(sms_sid, "sent"))
    post(status_url, callback(sms_sid, "sent"))
    assert [e[0] for e in events(clean, sms_sid)] == ["delivered", "sent"]


def test_a_replayed_callback_for_an_sms_not_recorded_yet_is_kept_once(
    status_url: str, clean: psycopg.Connection
) -> None:
    sid = new_sid()
    for _ in range(2):
        assert post(status_url, callback(sid, "failed", ErrorCode="30003")).status_code == 200
    assert len(events(clean, sid)) == 1


def test_without_a_carrier_date_delivered_at_is_the_time_received(
    status_url: str, sms_sid: str, clean: psycopg.Connection
) -> None:
    before = datetime.now(UTC)
    post(status_url, callback(sms_sid, "delivered", RawDlrDoneDate="garbage"))
    delivered_at = row(clean, sms_sid)["delivered_at"]
    assert before - timedelta(seconds=1) <= delivered_at <= datetime.now(UTC)


def test_a_callback_before_ingest_is_kept_and_applied_when_the_sms_arrives(
    status_url: str, tenants: Tenants, clean: psycopg.Connection, services: runtime.Services
) -> None:
    sid = new_sid()
    post(status_url, callback(sid, "sent"))
    assert (
        post(status_url, callback(sid, "delivered", RawDlrDoneDate="2611241032")).status_code == 200
    )
    assert events(clean, sid) == [
        ("sent", None, False, "+33612345678", "callback"),
        ("delivered", None, False, "+33612345678", "callback"),
    ]
    message = {
        "deployment_id": str(tenants.deployment_b),
        "phone_number": "+33612345678",
        "message_content": "Bonjour",
        "provider_message_sid": sid,
        "provider_status": "queued",
        "sent_at": "2026-11-24T10:30:00Z",
    }
    services.db.rpc("ingest_sms", {"p_messages": [message]})
    born = row(clean, sid)
    assert (born["provider_status"], born["status"]) == ("delivered", "delivered")
    assert born["delivered_at"] == datetime(2026, 11, 24, 10, 32, tzinfo=UTC)
    assert events(clean, sid) == [
        ("sent", None, True, None, "callback"),
        ("delivered", None, True, None, "callback"),
    ]


def test_an_ingest_applies_every_pending_report_however_many(
    status_url: str, tenants: Tenants, clean: psycopg.Connection, services: runtime.Services
) -> None:
    # Found by benchmarks/soak: past ten pending reports in one ingest (PL/pgSQL reads
    # a loop's rows ten at a time), the later ones stayed pending and the SMS stale.
    sids = [new_sid() for _ in range(4)]
    for sid in sids:
        for status in ("queued", "sent", "delivered"):
            post(status_url, callback(sid, status, RawDlrDoneDate="2611241032"))
    services.db.rpc("ingest_sms", {"p_messages": [
        {"deployment_id": str(tenants.deployment_b), "phone_number": "+33612345678",
         "message_content": "Bonjour", "provider_message_sid": sid,
         "sent_at": "2026-11-24T10:30:00Z"}
        for sid in sids
    ]})  # fmt: skip
    for sid in sids:
        assert row(clean, sid)["status"] == "delivered"
        assert [applied for _, _, applied, _, _ in events(clean, sid)] == [True, True, True]


def test_delivered_and_sent_racing_always_end_delivered(
    status_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    sids = [new_sid() for _ in range(50)]
    for sid in sids:
        insert_sms(clean, tenants.deployment_b, provider_message_sid=sid, provider_status="queued")
    jobs = [(sid, status) for sid in sids for status in ("sent", "delivered")]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(lambda job: post(status_url, callback(*job)).status_code, jobs))
    assert set(codes) == {200}
    finals = clean.execute(
        "SELECT status, count(*) FROM agent_sms WHERE provider_message_sid = ANY(%s) GROUP BY 1",
        (sids,),
    ).fetchall()
    assert finals == [("delivered", 50)]
    histories = clean.execute(
        "SELECT count(*) FROM agent_sms_events WHERE provider_message_sid = ANY(%s)", (sids,)
    ).fetchone()
    assert histories == (100,)


def test_a_callback_during_an_uncommitted_ingest_is_never_lost(
    status_url: str, tenants: Tenants, clean: psycopg.Connection, database_url: str
) -> None:
    """The race that loses statuses elsewhere: ingest has inserted the SMS (and found
    no pending event) but not committed when the callback arrives. The callback must
    wait for that ingest rather than park an event nobody will pick up."""
    sid = new_sid()
    message = {
        "deployment_id": str(tenants.deployment_b),
        "phone_number": "+33612345678",
        "message_content": "Bonjour",
        "provider_message_sid": sid,
        "sent_at": "2026-11-24T10:30:00Z",
    }
    with psycopg.connect(database_url) as ingest, concurrent.futures.ThreadPoolExecutor(1) as pool:
        ingest.execute("SELECT public.ingest_sms(%s::jsonb)", (json.dumps([message]),))
        delivered = pool.submit(post, status_url, callback(sid, "delivered"))
        while not delivered.done() and not waiting_on_advisory_lock(clean):
            time.sleep(0.01)
        ingest.commit()
        assert delivered.result().status_code == 200
    assert row(clean, sid)["status"] == "delivered"
    assert [e[2] for e in events(clean, sid)] == [True]


def waiting_on_advisory_lock(conn: psycopg.Connection) -> bool:
    found = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    ).fetchone()
    return found is not None and found[0] > 0


def test_api_users_cannot_read_status_events(
    status_url: str, sms_sid: str, database_url: str, tenants: Tenants
) -> None:
    from tests.support.builders import acting_as

    post(status_url, callback(sms_sid, "delivered"))
    with (
        acting_as(database_url, "authenticated", tenants.admin_b) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("SELECT * FROM agent_sms_events")


# --- reconcile --------------------------------------------------------------------------


@pytest.fixture
def twilio_api(services: runtime.Services) -> Iterator[FakeTwilio]:
    with FakeTwilio({MAIN_ACCOUNT: TOKEN, SUBACCOUNT: SUB_TOKEN}) as api:
        use_settings(services, twilio_api_base_url=api.url)
        yield api


def old_sms(conn: psycopg.Connection, tenants: Tenants, **values: Any) -> str:
    sid = new_sid()
    sent = datetime.now(UTC) - timedelta(hours=3)
    insert_sms(
        conn,
        tenants.deployment_b,
        provider_message_sid=sid,
        sent_at=sent,
        provider_cost=None,
        **({"provider_status": "sent"} | values),
    )
    return sid


def test_reconcile_recovers_a_lost_callback_and_fills_in_the_price(
    reconcile_url: str, twilio_api: FakeTwilio, tenants: Tenants, clean: psycopg.Connection
) -> None:
    lost = old_sms(clean, tenants)
    twilio_api.add(MAIN_ACCOUNT, lost, status="delivered", price="-0.07500", price_unit="eur")
    in_sub = old_sms(clean, tenants)
    twilio_api.add(SUBACCOUNT, in_sub, status="undelivered", error_code=30005, price="-0.0750")
    vanished = old_sms(clean, tenants)
    recent = new_sid()
    insert_sms(clean, tenants.deployment_b, provider_message_sid=recent, provider_status="sent")

    response = httpx.post(reconcile_url, timeout=30)
    assert response.status_code == 200
    assert response.json() == {
        "candidates": 3,
        "asked": 2,
        "changed": 2,
        "not_found": 1,
        "errors": 0,
        "rate_limited": False,
        "twilio_unreachable": False,
    }
    delivered = row(clean, lost)
    assert (delivered["status"], delivered["provider_cost"], delivered["currency"]) == (
        "delivered",
        Decimal("0.0750"),
        "EUR",
    )
    assert delivered["delivered_at"] == datetime(2026, 11, 24, 10, 0, 5, tzinfo=UTC)
    failed = row(clean, in_sub)
    assert (failed["status"], failed["failure_reason"]) == ("failed", "Unknown destination handset")
    assert row(clean, vanished)["status"] == "sent"
    assert events(clean, lost)[-1][-1] == "reconcile"


def test_reconcile_prices_final_sms_that_have_no_price(
    reconcile_url: str, twilio_api: FakeTwilio, tenants: Tenants, clean: psycopg.Connection
) -> None:
    sid = old_sms(clean, tenants, status="delivered", provider_status="delivered")
    twilio_api.add(MAIN_ACCOUNT, sid, status="delivered", price="-0.0079", price_unit="USD")
    assert httpx.post(reconcile_url, timeout=30).json()["changed"] == 1
    priced = row(clean, sid)
    assert (priced["provider_cost"], priced["currency"], priced["status"]) == (
        Decimal("0.0079"),
        "USD",
        "delivered",
    )


def test_reconcile_stops_on_429_and_resumes_next_run(
    reconcile_url: str, twilio_api: FakeTwilio, tenants: Tenants, clean: psycopg.Connection
) -> None:
    sids = [old_sms(clean, tenants) for _ in range(5)]
    for sid in sids:
        twilio_api.add(MAIN_ACCOUNT, sid, status="delivered", price="-0.075")
    twilio_api.rate_limit_after = 2
    first = httpx.post(reconcile_url, timeout=30).json()
    assert (first["asked"], first["rate_limited"]) == (2, True)
    twilio_api.rate_limit_after = None
    second = httpx.post(reconcile_url, timeout=30).json()
    assert (second["candidates"], second["asked"], second["rate_limited"]) == (3, 3, False)
    finals = clean.execute(
        "SELECT count(*) FROM agent_sms WHERE provider_message_sid = ANY(%s)"
        " AND status = 'delivered'",
        (sids,),
    ).fetchone()
    assert finals == (5,)


def test_reconcile_without_twilio_credentials_fails_closed(
    reconcile_url: str, services: runtime.Services
) -> None:
    use_settings(services, twilio_account_sid=None, twilio_auth_token=None, twilio_subaccounts="")
    response = httpx.post(reconcile_url, timeout=30)
    assert response.status_code == 500


def test_a_delivery_receipt_after_a_failure_wins_and_clears_it(
    status_url: str, sms_sid: str, clean: psycopg.Connection
) -> None:
    post(status_url, callback(sms_sid, "undelivered", ErrorCode="30003"))
    post(status_url, callback(sms_sid, "delivered"))
    final = row(clean, sms_sid)
    assert (final["status"], final["failed_at"], final["failure_reason"]) == (
        "delivered",
        None,
        None,
    )


def test_pending_reports_apply_to_an_sms_recorded_any_way(
    status_url: str, tenants: Tenants, clean: psycopg.Connection
) -> None:
    sid = new_sid()
    post(status_url, callback(sid, "delivered"))
    insert_sms(clean, tenants.deployment_b, provider_message_sid=sid)  # not through ingest
    assert row(clean, sid)["status"] == "delivered"
    assert [e[2] for e in events(clean, sid)] == [True]


def test_a_percent_encoded_path_validates_as_twilio_signed_it(
    status_url: str, sms_sid: str
) -> None:
    path = "/status%20cb/?tenant=a%26b"
    response = post(status_url, callback(sms_sid, "sent"), path=path)
    assert response.status_code == 200


def test_reconcile_survives_a_bad_answer_and_goes_on(
    reconcile_url: str, twilio_api: FakeTwilio, tenants: Tenants, clean: psycopg.Connection
) -> None:
    broken = old_sms(clean, tenants)
    twilio_api.add(MAIN_ACCOUNT, broken, status="teleported")
    fine = old_sms(clean, tenants)
    twilio_api.add(MAIN_ACCOUNT, fine, status="delivered", price="-0.07")
    result = httpx.post(reconcile_url, timeout=30).json()
    assert (result["errors"], result["changed"]) == (1, 1)
    assert row(clean, fine)["status"] == "delivered"


def test_reconcile_with_refused_credentials_stops_and_says_so(
    reconcile_url: str, twilio_api: FakeTwilio, tenants: Tenants, clean: psycopg.Connection
) -> None:
    old_sms(clean, tenants)
    twilio_api.tokens[MAIN_ACCOUNT] = "rotated"
    assert httpx.post(reconcile_url, timeout=30).status_code == 500
    # Nothing was asked, so nothing stays claimed: the next run starts with it again.
    claimed = clean.execute("SELECT count(*) FROM private.sms_reconcile_checks").fetchone()
    assert claimed == (0,)


def test_a_price_in_another_currency_is_not_mixed_with_the_margin(
    reconcile_url: str, twilio_api: FakeTwilio, tenants: Tenants, clean: psycopg.Connection
) -> None:
    with_margin = old_sms(clean, tenants, status="delivered", provider_status="delivered",
                          voipia_margin="0.0300")  # fmt: skip
    twilio_api.add(MAIN_ACCOUNT, with_margin, status="delivered", price="-0.0079", price_unit="USD")
    no_margin = old_sms(clean, tenants, status="delivered", provider_status="delivered",
                        voipia_margin="0")  # fmt: skip
    twilio_api.add(MAIN_ACCOUNT, no_margin, status="delivered", price="-0.0079", price_unit="USD")
    httpx.post(reconcile_url, timeout=30)
    kept = row(clean, with_margin)
    assert (kept["provider_cost"], kept["currency"]) == (None, "EUR")
    priced = row(clean, no_margin)
    assert (priced["provider_cost"], priced["currency"]) == (Decimal("0.0079"), "USD")


def test_reconcile_when_twilio_cannot_be_reached_is_503_and_loses_nothing(
    reconcile_url: str, services: runtime.Services, tenants: Tenants, clean: psycopg.Connection
) -> None:
    sids = [old_sms(clean, tenants) for _ in range(3)]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    use_settings(services, twilio_api_base_url=closed)
    response = httpx.post(reconcile_url, timeout=30)
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    claimed = clean.execute(
        "SELECT count(*) FROM private.sms_reconcile_checks WHERE provider_message_sid = ANY(%s)",
        (sids,),
    ).fetchone()
    assert claimed == (0,)

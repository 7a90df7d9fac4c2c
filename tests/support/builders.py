"""Shared test helpers: a two-tenant dataset and acting as an API role."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from shared.db import SERVICE, Caller, PostgresDatabase
from tools.tokens import access_token

JWT_SECRET = "test-jwt-secret-with-at-least-32-characters!"


@dataclass
class Tenants:
    client_a: uuid.UUID
    client_b: uuid.UUID
    deployments_a: list[uuid.UUID]
    deployment_b: uuid.UUID
    viewer_a: uuid.UUID
    admin_a: uuid.UUID
    admin_b: uuid.UUID
    nobody: uuid.UUID
    sms_a: list[uuid.UUID] = field(default_factory=list)
    sms_b: list[uuid.UUID] = field(default_factory=list)


def insert_sms(conn: psycopg.Connection, deployment_id: uuid.UUID, **values: Any) -> uuid.UUID:
    row = {
        "deployment_id": deployment_id,
        "phone_number": "+33639980000",
        "message_content": "Bonjour, votre rendez-vous est confirmé.",
        "provider_message_sid": "SM" + uuid.uuid4().hex,
        "sent_at": "2026-11-01T10:00:00Z",
        "provider_cost": "0.0750",
    } | values
    columns = ", ".join(row)
    placeholders = ", ".join(f"%({name})s" for name in row)
    result = conn.execute(
        f"INSERT INTO public.agent_sms ({columns}) VALUES ({placeholders}) RETURNING id",
        {k: json.dumps(v) if isinstance(v, dict) else v for k, v in row.items()},
    ).fetchone()
    assert result is not None
    return uuid.UUID(str(result[0]))


# Every table an SMS leaves a trace in. Deleting an SMS keeps its figures in the KPIs'
# aggregates (an archived or erased SMS still counts): a test that starts over empties
# them all.
SMS_TABLES = (
    "public.agent_sms",
    "private.sms_totals",
    "private.sms_kpi_seal",
    "private.sms_workflow_hours",
    "private.sms_recipient_hours",
    "private.sms_recipients",
)


def forget_every_sms(conn: psycopg.Connection) -> None:
    """As if no SMS had ever been recorded (a superuser's connection)."""
    conn.execute(f"TRUNCATE {', '.join(SMS_TABLES)}")


def create_tenants(conn: psycopg.Connection) -> Tenants:
    def one(query: str, *params: Any) -> uuid.UUID:
        row = conn.execute(query, params).fetchone()
        assert row is not None
        return uuid.UUID(str(row[0]))

    agent = one(
        "INSERT INTO agent_types (name, display_name) VALUES ('louis', 'Louis') RETURNING id"
    )
    client_a = one("INSERT INTO clients (name) VALUES ('Client A') RETURNING id")
    client_b = one("INSERT INTO clients (name) VALUES ('Client B') RETURNING id")

    def deployment(client: uuid.UUID, slug: str) -> uuid.UUID:
        return one(
            "INSERT INTO agent_deployments (name, slug, client_id, agent_type_id)"
            " VALUES (%s, %s, %s, %s) RETURNING id",
            slug,
            slug,
            client,
            agent,
        )

    def user(email: str) -> uuid.UUID:
        return one("INSERT INTO auth.users (email) VALUES (%s) RETURNING id", email)

    tenants = Tenants(
        client_a=client_a,
        client_b=client_b,
        deployments_a=[deployment(client_a, "a-one"), deployment(client_a, "a-two")],
        deployment_b=deployment(client_b, "b-one"),
        viewer_a=user("viewer@a.example"),
        admin_a=user("admin@a.example"),
        admin_b=user("admin@b.example"),
        nobody=user("nobody@example.com"),
    )
    for user_id, client_id, role in [
        (tenants.viewer_a, client_a, "viewer"),
        (tenants.admin_a, client_a, "admin"),
        (tenants.admin_b, client_b, "admin"),
    ]:
        conn.execute(
            "INSERT INTO user_client_permissions (user_id, client_id, role) VALUES (%s, %s, %s)",
            (user_id, client_id, role),
        )
    tenants.sms_a = [insert_sms(conn, d) for d in tenants.deployments_a for _ in range(2)]
    tenants.sms_b = [insert_sms(conn, tenants.deployment_b) for _ in range(3)]
    return tenants


@contextmanager
def acting_as(
    database_url: str, role: str, user_id: uuid.UUID | None = None
) -> Iterator[psycopg.Connection]:
    """A connection switched to an API role with JWT claims, exactly as PostgREST does.

    Everything it does is rolled back at the end.
    """
    claims: dict[str, Any] = {"role": role}
    if user_id is not None:
        claims["sub"] = str(user_id)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "SELECT set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
            (role, json.dumps(claims)),
        )
        try:
            yield conn
        finally:
            conn.rollback()


def make_jwt(claims: dict[str, Any], *, secret: str = JWT_SECRET, ttl: int = 3600) -> str:
    return access_token(claims, secret, ttl=ttl)


# --- a shop whose SMS figures are known by construction (metrics tests) ------------------

NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
WEEK = timedelta(days=7)


@dataclass
class Shop:
    client_a: uuid.UUID
    client_b: uuid.UUID
    a_louis: uuid.UUID
    a_arthur: uuid.UUID
    b_louis: uuid.UUID
    viewer_a: uuid.UUID


def one(conn: psycopg.Connection, query: str, *params: Any) -> uuid.UUID:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def build_shop(conn: psycopg.Connection) -> Shop:
    louis = one(
        conn, "INSERT INTO agent_types (name, display_name) VALUES ('louis', 'Louis') RETURNING id"
    )
    arthur = one(
        conn,
        "INSERT INTO agent_types (name, display_name) VALUES ('arthur', 'Arthur') RETURNING id",
    )
    client_a = one(conn, "INSERT INTO clients (name) VALUES ('A') RETURNING id")
    client_b = one(conn, "INSERT INTO clients (name) VALUES ('B') RETURNING id")

    def deployment(client: uuid.UUID, agent: uuid.UUID, slug: str) -> uuid.UUID:
        return one(
            conn,
            "INSERT INTO agent_deployments (name, slug, client_id, agent_type_id)"
            " VALUES (%s, %s, %s, %s) RETURNING id",
            slug, slug, client, agent,
        )  # fmt: skip

    viewer = one(conn, "INSERT INTO auth.users (email) VALUES ('v@a.example') RETURNING id")
    conn.execute(
        "INSERT INTO user_client_permissions (user_id, client_id, role) VALUES (%s, %s, 'viewer')",
        (viewer, client_a),
    )
    return Shop(
        client_a, client_b,
        deployment(client_a, louis, "a-louis"), deployment(client_a, arthur, "a-arthur"),
        deployment(client_b, louis, "b-louis"), viewer,
    )  # fmt: skip


def create_shop(clean: psycopg.Connection) -> Shop:
    """Eight SMS whose figures are known by construction (see the expected JSON)."""
    s = build_shop(clean)
    call_a = one(
        clean, "INSERT INTO agent_calls (deployment_id) VALUES (%s) RETURNING id", s.a_louis
    )
    call_b = one(
        clean, "INSERT INTO agent_calls (deployment_id) VALUES (%s) RETURNING id", s.b_louis
    )

    def sms(
        deployment: uuid.UUID,
        at: datetime,
        status: str,
        kind: str,
        cost: str | None,
        margin: str,
        chars: int,
        phone: str,
        delay: int | None = None,
        **extra: Any,
    ) -> None:
        insert_sms(
            clean, deployment, sent_at=at, status=status, message_type=kind,
            provider_cost=cost, voipia_margin=margin, message_content="x" * chars,
            phone_number=phone,
            delivered_at=at + timedelta(seconds=delay) if delay is not None else None,
            **extra,
        )  # fmt: skip

    day = timedelta(days=1)
    # deployment, sent, status, type, provider cost, margin, characters, phone,
    # delivered after (s), extra columns
    # fmt: off
    rows: list[tuple[Any, ...]] = [
        (s.a_louis, NOV_1 + day, "delivered", "appointment_reminder", "0.0500", "0.0200", 10,
         "+33611111111", 2, {"workflow_id": "wf1", "call_id": call_a}),
        (s.a_louis, NOV_1 + 2 * day, "delivered", "appointment_reminder", "0.0500", "0.0200", 20,
         "+33611111111", 4, {"workflow_id": "wf1"}),
        (s.a_arthur, NOV_1 + 3 * day, "failed", "marketing", "0.0400", "0.0100", 30,
         "+33622222222", None, {"workflow_id": "wf2"}),
        (s.a_arthur, NOV_1 + 4 * day, "sent", "notification", None, "0", 40,
         "+33633333333", None, {}),
        (s.b_louis, NOV_1 + 5 * day, "delivered", "notification", "0.1000", "0.0500", 50,
         "+33644444444", 6, {"workflow_id": "wf3", "call_id": call_b}),
        # The previous week; and one on the end of the current week's [start, end).
        (s.a_louis, NOV_1 - 3 * day, "delivered", "appointment_reminder", "0.0500", "0.0200", 10,
         "+33611111111", 2, {}),
        (s.b_louis, NOV_1 - WEEK, "failed", "marketing", "0.0800", "0.0200", 60,
         "+33655555555", None, {}),
        (s.b_louis, NOV_1 + WEEK, "delivered", "marketing", "9", "9", 99,
         "+33699999999", 1, {}),
    ]
    # fmt: on
    for *fields, extra in rows:
        sms(*fields, **extra)
    return s


def metrics(
    db: PostgresDatabase,
    start: datetime = NOV_1,
    end: datetime = NOV_1 + WEEK,
    caller: Caller = SERVICE,
    **filters: Any,
) -> Any:
    return db.rpc(
        "get_sms_metrics",
        {"p_start_date": start, "p_end_date": end} | {f"p_{k}": v for k, v in filters.items()},
        as_user=caller,
    )  # fmt: skip

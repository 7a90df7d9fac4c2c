"""Shared test helpers: a two-tenant dataset and acting as an API role."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
import psycopg

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
    now = int(time.time())
    return jwt.encode({"iat": now, "exp": now + ttl, **claims}, secret, algorithm="HS256")

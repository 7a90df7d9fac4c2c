"""ingest_sms under test: its keys, SMS as n8n sends them, posting, reading back."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg

from tests.support.builders import Tenants

KEY = "k" * 40


ROTATED_KEY = "r" * 40


def nested(depth: int) -> dict[str, Any]:
    """A JSON object nested this many objects deep."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def sid() -> str:
    return "SM" + uuid.uuid4().hex


def sms(tenants: Tenants, **overrides: Any) -> dict[str, Any]:
    return {
        "deployment_id": str(tenants.deployment_b),
        "phone_number": "+33612345678",
        "message_content": "Bonjour, votre rendez-vous est confirmé demain à 14h00.",
        "provider_message_sid": sid(),
        "sent_at": "2026-11-24T10:00:00Z",
        "provider_cost": "0.0750",
        "voipia_margin": "0.0300",
    } | overrides


def post(
    url: str, body: Any, key: str | None = KEY, headers: dict[str, str] | None = None
) -> httpx.Response:
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(url, json=body, headers=auth | (headers or {}), timeout=30)


def stored(conn: psycopg.Connection, sms_sid: str) -> dict[str, Any] | None:
    cur = conn.execute("SELECT * FROM agent_sms WHERE provider_message_sid = %s", (sms_sid,))
    row = cur.fetchone()
    assert cur.description is not None
    return dict(zip([c.name for c in cur.description], row, strict=True)) if row else None


def count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM agent_sms").fetchone()
    assert row is not None
    return int(row[0])


def refused(response: httpx.Response, status: int, field: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error.get("field") == field
    return error

"""Column behaviour: generated columns, CHECKs, uniqueness, FK actions, updated_at."""

from __future__ import annotations

import uuid
from decimal import Decimal

import psycopg
import pytest

from tests.support.builders import Tenants, insert_sms


def test_generated_columns_compute(tenants: Tenants, clean: psycopg.Connection) -> None:
    sms = insert_sms(
        clean,
        tenants.deployment_b,
        message_content="Héllo ✓",
        provider_cost="0.0750",
        voipia_margin="0.0300",
    )
    row = clean.execute(
        "SELECT character_count, billed_cost FROM agent_sms WHERE id = %s", (sms,)
    ).fetchone()
    assert row == (7, Decimal("0.1050"))


def test_billed_cost_is_null_until_the_provider_cost_is_known(
    tenants: Tenants, clean: psycopg.Connection
) -> None:
    sms = insert_sms(clean, tenants.deployment_b, provider_cost=None)
    row = clean.execute(
        "SELECT billed_cost, voipia_margin, message_type, provider, status, currency, metadata"
        " FROM agent_sms WHERE id = %s",
        (sms,),
    ).fetchone()
    assert row == (None, Decimal("0.0000"), "transactional", "twilio", "sent", "EUR", {})


@pytest.mark.parametrize(
    ("column", "bad_value", "constraint"),
    [
        ("message_type", "spam", "agent_sms_message_type_check"),
        ("provider_status", "delivering", "agent_sms_provider_status_check"),
        ("status", "undelivered", "agent_sms_status_check"),
        ("provider_cost", "-0.0001", "agent_sms_provider_cost_check"),
        ("voipia_margin", "-1", "agent_sms_voipia_margin_check"),
    ],
)
def test_each_check_rejects_its_bad_value(
    tenants: Tenants, clean: psycopg.Connection, column: str, bad_value: str, constraint: str
) -> None:
    with pytest.raises(psycopg.errors.CheckViolation) as caught:
        insert_sms(clean, tenants.deployment_b, **{column: bad_value})
    assert caught.value.diag.constraint_name == constraint


def test_a_duplicate_sid_is_rejected(tenants: Tenants, clean: psycopg.Connection) -> None:
    insert_sms(clean, tenants.deployment_b, provider_message_sid="SM" + "a" * 32)
    with pytest.raises(psycopg.errors.UniqueViolation):
        insert_sms(clean, tenants.deployment_b, provider_message_sid="SM" + "a" * 32)


def test_required_columns_are_required(tenants: Tenants, clean: psycopg.Connection) -> None:
    for column in ("phone_number", "message_content", "sent_at"):
        with pytest.raises(psycopg.errors.NotNullViolation):
            insert_sms(clean, tenants.deployment_b, **{column: None})


def test_deleting_a_deployment_deletes_its_sms(tenants: Tenants, clean: psycopg.Connection) -> None:
    clean.execute("DELETE FROM agent_deployments WHERE id = %s", (tenants.deployment_b,))
    left = clean.execute(
        "SELECT count(*) FROM agent_sms WHERE id = ANY(%s)", (tenants.sms_b,)
    ).fetchone()
    assert left == (0,)
    kept = clean.execute("SELECT count(*) FROM agent_sms").fetchone()
    assert kept == (len(tenants.sms_a),)


def test_deleting_a_call_prospect_or_sequence_unlinks_the_sms(
    tenants: Tenants, clean: psycopg.Connection
) -> None:
    def new_id(query: str, *params: object) -> uuid.UUID:
        row = clean.execute(query, params).fetchone()
        assert row is not None
        return uuid.UUID(str(row[0]))

    call = new_id(
        "INSERT INTO agent_calls (deployment_id) VALUES (%s) RETURNING id", tenants.deployment_b
    )
    prospect = new_id(
        "INSERT INTO agent_arthur_prospects (deployment_id) VALUES (%s) RETURNING id",
        tenants.deployment_b,
    )
    sequence = new_id(
        "INSERT INTO agent_arthur_prospect_sequences (prospect_id) VALUES (%s) RETURNING id",
        prospect,
    )
    sms = insert_sms(
        clean, tenants.deployment_b, call_id=call, prospect_id=prospect, sequence_id=sequence
    )
    clean.execute("DELETE FROM agent_calls WHERE id = %s", (call,))
    clean.execute("DELETE FROM agent_arthur_prospect_sequences WHERE id = %s", (sequence,))
    assert clean.execute(
        "SELECT call_id, prospect_id, sequence_id FROM agent_sms WHERE id = %s", (sms,)
    ).fetchone() == (None, prospect, None)
    clean.execute("DELETE FROM agent_arthur_prospects WHERE id = %s", (prospect,))
    assert clean.execute(
        "SELECT call_id, prospect_id, sequence_id FROM agent_sms WHERE id = %s", (sms,)
    ).fetchone() == (None, None, None)


def test_updated_at_moves_on_update(tenants: Tenants, clean: psycopg.Connection) -> None:
    sms = tenants.sms_b[0]

    def updated_at() -> object:
        row = clean.execute("SELECT updated_at FROM agent_sms WHERE id = %s", (sms,)).fetchone()
        assert row is not None
        return row[0]

    before = updated_at()
    clean.execute("UPDATE agent_sms SET status = 'delivered' WHERE id = %s", (sms,))
    moved = updated_at()
    assert moved > before  # type: ignore[operator]
    # A writer cannot pin it to another time either.
    clean.execute("UPDATE agent_sms SET updated_at = '2000-01-01' WHERE id = %s", (sms,))
    assert updated_at() > moved  # type: ignore[operator]

"""The agent_sms schema, read back from the catalogs, is the reference schema's."""

from __future__ import annotations

import psycopg
from psycopg import sql

# (column, type, NOT NULL, default or generated expression, generated?)
SEED_COLUMNS = [
    ("id", "uuid", True, "gen_random_uuid()", False),
    ("deployment_id", "uuid", True, None, False),
    ("call_id", "uuid", False, None, False),
    ("prospect_id", "uuid", False, None, False),
    ("sequence_id", "uuid", False, None, False),
    ("phone_number", "text", True, None, False),
    ("first_name", "text", False, None, False),
    ("last_name", "text", False, None, False),
    ("message_content", "text", True, None, False),
    ("message_type", "text", False, "'transactional'::text", False),
    ("character_count", "integer", False, "length(message_content)", True),
    ("provider", "text", False, "'twilio'::text", False),
    ("provider_message_sid", "text", False, None, False),
    ("provider_status", "text", False, None, False),
    ("status", "text", False, "'sent'::text", False),
    ("sent_at", "timestamp with time zone", True, None, False),
    ("delivered_at", "timestamp with time zone", False, None, False),
    ("failed_at", "timestamp with time zone", False, None, False),
    ("failure_reason", "text", False, None, False),
    ("provider_cost", "numeric(10,4)", False, None, False),
    ("voipia_margin", "numeric(10,4)", False, "0", False),
    ("billed_cost", "numeric(10,4)", False, "(provider_cost + voipia_margin)", True),
    # Beyond the seed: the billing currency (EUR by default), not always EUR.
    ("currency", "text", False, "private.billing_currency()", False),
    ("workflow_id", "text", False, None, False),
    ("workflow_execution_id", "text", False, None, False),
    ("metadata", "jsonb", False, "'{}'::jsonb", False),
    ("created_at", "timestamp with time zone", False, "now()", False),
    ("updated_at", "timestamp with time zone", False, "now()", False),
    # Beyond the seed: the provider's price as given, and its conversion into the
    # billing currency (migration 20261206000060_billing_currency.sql).
    ("provider_amount", "numeric(10,4)", False, None, False),
    ("provider_currency", "text", False, None, False),
    ("exchange_rate", "numeric(18,8)", False, None, False),
    ("exchange_rate_date", "date", False, None, False),
]

SEED_CONSTRAINTS = {
    "agent_sms_pkey": "PRIMARY KEY (id)",
    # Beyond the seed: erasure finds a number by equality, so there is one form.
    "agent_sms_phone_number_e164_check": "CHECK ((phone_number ~ '^\\+[1-9][0-9]{6,14}$'::text))",
    "agent_sms_deployment_id_fkey": "FOREIGN KEY (deployment_id) REFERENCES agent_deployments(id) ON DELETE CASCADE",
    "agent_sms_call_id_fkey": "FOREIGN KEY (call_id) REFERENCES agent_calls(id) ON DELETE SET NULL",
    "agent_sms_prospect_id_fkey": "FOREIGN KEY (prospect_id) REFERENCES agent_arthur_prospects(id) ON DELETE SET NULL",
    "agent_sms_sequence_id_fkey": "FOREIGN KEY (sequence_id) REFERENCES agent_arthur_prospect_sequences(id) ON DELETE SET NULL",
    "agent_sms_provider_message_sid_key": "UNIQUE (provider_message_sid)",
    "agent_sms_message_type_check": "CHECK ((message_type = ANY (ARRAY['transactional'::text, 'marketing'::text, 'notification'::text, 'appointment_reminder'::text])))",
    "agent_sms_provider_status_check": "CHECK ((provider_status = ANY (ARRAY['queued'::text, 'sending'::text, 'sent'::text, 'delivered'::text, 'undelivered'::text, 'failed'::text, 'unknown'::text])))",
    "agent_sms_status_check": "CHECK ((status = ANY (ARRAY['sent'::text, 'delivered'::text, 'failed'::text])))",
    "agent_sms_provider_cost_check": "CHECK ((provider_cost >= (0)::numeric))",
    "agent_sms_voipia_margin_check": "CHECK ((voipia_margin >= (0)::numeric))",
    # Beyond the seed: NaN is a numeric, and greater than every number (">= 0" lets it by).
    "agent_sms_amounts_finite_check": "CHECK (((provider_cost <> 'NaN'::numeric) AND (voipia_margin <> 'NaN'::numeric)))",
    "agent_sms_provider_amount_check": "CHECK (((provider_amount >= (0)::numeric) AND (provider_amount < (1000000)::numeric)))",
    "agent_sms_provider_currency_check": "CHECK ((provider_currency ~ '^[A-Z]{3}$'::text))",
    "agent_sms_exchange_rate_check": "CHECK (((exchange_rate > (0)::numeric) AND (exchange_rate < (100000000)::numeric)))",
}

SEED_INDEXES = {
    "idx_agent_sms_deployment_sent_at": "(deployment_id, sent_at DESC)",
    "idx_agent_sms_status": "(status) WHERE (status = ANY (ARRAY['delivered'::text, 'failed'::text]))",
    "idx_agent_sms_call_id": "(call_id) WHERE (call_id IS NOT NULL)",
    "idx_agent_sms_provider_sid": "(provider_message_sid) WHERE (provider_message_sid IS NOT NULL)",
    "idx_agent_sms_deployment_cost": "(deployment_id, billed_cost DESC)",
    "idx_agent_sms_prospect": "(prospect_id) WHERE (prospect_id IS NOT NULL)",
    "idx_agent_sms_sequence": "(sequence_id) WHERE (sequence_id IS NOT NULL)",
    # Beyond the seed: erasure and the contact timeline look up by phone.
    # A hash index: a B-tree would keep erased numbers in its inner pages.
    "idx_agent_sms_phone_number": "hash (phone_number)",
    "idx_agent_sms_sent_at": "(sent_at, id)",  # retention walks the table oldest first
    # Beyond the seed: the SMS whose price waits for an exchange rate.
    "idx_agent_sms_waiting_for_rate": "(sent_at) WHERE ((provider_cost IS NULL)"
    " AND (provider_amount IS NOT NULL))",
    # Beyond the seed: the KPIs read the unsealed days, and the recipients of periods
    # not archived, from this index alone.
    "idx_agent_sms_metrics": "(deployment_id, sent_at) INCLUDE (status, message_type,"
    " failure_reason, character_count, billed_cost, provider_cost, voipia_margin,"
    " delivered_at, call_id, phone_number)",
    # Backing the PRIMARY KEY and UNIQUE constraints.
    "agent_sms_pkey": "(id)",
    "agent_sms_provider_message_sid_key": "(provider_message_sid)",
}


def test_every_column_has_the_seed_type_nullability_and_default(
    admin_conn: psycopg.Connection,
) -> None:
    rows = admin_conn.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attgenerated = 's'
        FROM pg_attribute AS a
        LEFT JOIN pg_attrdef AS d ON (d.adrelid, d.adnum) = (a.attrelid, a.attnum)
        WHERE a.attrelid = 'public.agent_sms'::regclass AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """
    ).fetchall()
    assert rows == SEED_COLUMNS


def test_constraints_are_the_seed_constraints(admin_conn: psycopg.Connection) -> None:
    rows = admin_conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = 'public.agent_sms'::regclass"
    ).fetchall()
    assert dict(rows) == SEED_CONSTRAINTS


def test_indexes_are_the_seed_indexes(admin_conn: psycopg.Connection) -> None:
    rows = admin_conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes"
        " WHERE schemaname = 'public' AND tablename = 'agent_sms'"
    ).fetchall()
    found = {
        name: definition.split(" USING ", 1)[1].removeprefix("btree ") for name, definition in rows
    }
    assert found == SEED_INDEXES


def test_updated_at_trigger_fires_before_each_row_update(admin_conn: psycopg.Connection) -> None:
    row = admin_conn.execute(
        "SELECT pg_get_triggerdef(oid) FROM pg_trigger"
        " WHERE tgrelid = 'public.agent_sms'::regclass AND tgname = 'agent_sms_updated_at'"
    ).fetchone()
    assert row is not None
    assert "BEFORE UPDATE ON public.agent_sms FOR EACH ROW" in row[0]


def test_the_seed_policies_exist_with_their_roles(admin_conn: psycopg.Connection) -> None:
    # The seed's admins_manage_sms is narrowed to nothing: only the service writes SMS
    # (20261206000100_sql_defends_itself.sql).
    rows = admin_conn.execute(
        "SELECT polname, polcmd, polroles::regrole[]::text FROM pg_policy"
        " WHERE polrelid = 'public.agent_sms'::regclass"
    ).fetchall()
    assert sorted(rows) == [
        ("service_insert_sms", "a", "{service_role}"),
        ("service_update_sms", "w", "{service_role}"),
        ("users_view_accessible_sms", "r", "{authenticated}"),
    ]
    enabled = admin_conn.execute(
        "SELECT relrowsecurity FROM pg_class WHERE oid = 'public.agent_sms'::regclass"
    ).fetchone()
    assert enabled == (True,)


def test_every_advisory_lock_has_a_key_of_its_own(admin_conn: psycopg.Connection) -> None:
    """Two locks sharing a key would make unrelated work wait on, or skip, each other."""
    keys = admin_conn.execute(
        "SELECT p.proname FROM pg_proc AS p WHERE p.pronamespace = 'private'::regnamespace"
        " AND p.proname LIKE '%lock_key' ORDER BY 1"
    ).fetchall()
    call = sql.SQL("SELECT private.{}()")
    values = {
        name: admin_conn.execute(call.format(sql.Identifier(name))).fetchone() for (name,) in keys
    }
    assert len(values) >= 4
    assert len(set(values.values())) == len(values), values

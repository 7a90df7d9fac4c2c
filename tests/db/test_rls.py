"""Row-level security, tried from the outside as each API role.

Each case connects, switches to the role with JWT claims exactly as PostgREST
does, and tries to read and change SMS of both clients.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.support.builders import Tenants, acting_as


def visible_ids(conn: psycopg.Connection) -> set[uuid.UUID]:
    return {row[0] for row in conn.execute("SELECT id FROM agent_sms")}


def new_sms(conn: psycopg.Connection, deployment: uuid.UUID) -> None:
    conn.execute(
        "INSERT INTO agent_sms (deployment_id, phone_number, message_content, sent_at)"
        " VALUES (%s, '+33639980001', 'x', now())",
        (deployment,),
    )


def test_anon_sees_nothing_and_changes_nothing(tenants: Tenants, database_url: str) -> None:
    for statement in (
        "SELECT id FROM agent_sms",
        "UPDATE agent_sms SET status = 'failed'",
        "DELETE FROM agent_sms",
    ):
        with (
            acting_as(database_url, "anon") as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute(statement)
    with (
        acting_as(database_url, "anon") as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        new_sms(conn, tenants.deployment_b)


WRITES = (
    "UPDATE agent_sms SET status = 'delivered'",
    "UPDATE agent_sms SET metadata = '{}'",
    "DELETE FROM agent_sms",
)


def refuses_every_write(database_url: str, user: uuid.UUID, deployments: list[uuid.UUID]) -> None:
    """Whatever the statement and whoever's SMS it names, the write is refused outright,
    not merely matched to no row."""
    for statement in WRITES:
        with (
            acting_as(database_url, "authenticated", user) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute(statement)
    for deployment in deployments:
        with (
            acting_as(database_url, "authenticated", user) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            new_sms(conn, deployment)


def test_a_user_without_permissions_sees_nothing(tenants: Tenants, database_url: str) -> None:
    with acting_as(database_url, "authenticated", tenants.nobody) as conn:
        assert visible_ids(conn) == set()
    refuses_every_write(database_url, tenants.nobody, [tenants.deployment_b])


def test_authenticated_without_a_user_id_sees_nothing(tenants: Tenants, database_url: str) -> None:
    with acting_as(database_url, "authenticated") as conn:
        assert visible_ids(conn) == set()


def test_a_viewer_sees_only_their_clients_sms_and_changes_nothing(
    tenants: Tenants, database_url: str
) -> None:
    with acting_as(database_url, "authenticated", tenants.viewer_a) as conn:
        assert visible_ids(conn) == set(tenants.sms_a)
    refuses_every_write(database_url, tenants.viewer_a, tenants.deployments_a)


def test_an_admin_reads_their_clients_sms_and_writes_none(
    tenants: Tenants, database_url: str, admin_conn: psycopg.Connection
) -> None:
    """The seed's admins_manage_sms, narrowed: an admin reads like a viewer, and the
    ledger's facts (recipient, text, status, times, money, links) are written only by
    the service (tests/db/test_attacks.py tries each column through the API)."""
    with acting_as(database_url, "authenticated", tenants.admin_a) as conn:
        assert visible_ids(conn) == set(tenants.sms_a)
    refuses_every_write(
        database_url, tenants.admin_a, [*tenants.deployments_a, tenants.deployment_b]
    )
    untouched = admin_conn.execute(
        "SELECT count(*) FROM agent_sms WHERE status = 'sent'"
    ).fetchone()
    assert untouched == (len(tenants.sms_a) + len(tenants.sms_b),)


def test_an_admin_of_one_client_and_viewer_of_another_reads_both_and_writes_neither(
    tenants: Tenants, database_url: str, admin_conn: psycopg.Connection
) -> None:
    both = admin_conn.execute(
        "INSERT INTO auth.users (email) VALUES ('both@example') RETURNING id"
    ).fetchone()
    assert both is not None
    admin_conn.execute(
        "INSERT INTO user_client_permissions (user_id, client_id, role)"
        " VALUES (%s, %s, 'admin'), (%s, %s, 'viewer')",
        (both[0], tenants.client_a, both[0], tenants.client_b),
    )
    with acting_as(database_url, "authenticated", both[0]) as conn:
        assert visible_ids(conn) == set(tenants.sms_a) | set(tenants.sms_b)
    refuses_every_write(database_url, both[0], [tenants.deployments_a[0], tenants.deployment_b])


def test_truncate_is_not_granted_to_api_users(tenants: Tenants, database_url: str) -> None:
    # TRUNCATE ignores row-level security, so a grant would let anyone wipe every tenant.
    for role, user in (("authenticated", tenants.admin_a), ("anon", None), ("service_role", None)):
        with (
            acting_as(database_url, role, user) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute("TRUNCATE agent_sms")


def test_service_role_reads_every_client_and_writes_only_through_the_rpcs(
    tenants: Tenants, database_url: str
) -> None:
    """The seed's service_insert_sms and service_update_sms, narrowed: the service key
    records and updates SMS by calling ingest_sms and record_sms_status, which run as
    the tables' owner, never by writing the table itself; deleting is retention's."""
    with acting_as(database_url, "service_role") as conn:
        assert visible_ids(conn) == set(tenants.sms_a) | set(tenants.sms_b)
    for statement in ("UPDATE agent_sms SET status = 'delivered'", "DELETE FROM agent_sms"):
        with (
            acting_as(database_url, "service_role") as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute(statement)
    with (
        acting_as(database_url, "service_role") as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        new_sms(conn, tenants.deployment_b)


def test_the_access_helper_is_not_reachable_by_anon(tenants: Tenants, database_url: str) -> None:
    with (
        acting_as(database_url, "anon") as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("SELECT private.accessible_deployment_ids()")


def test_the_access_helper_answers_only_for_the_caller(tenants: Tenants, database_url: str) -> None:
    with acting_as(database_url, "authenticated", tenants.admin_b) as conn:
        row = conn.execute(
            "SELECT private.accessible_deployment_ids(), private.accessible_deployment_ids(true)"
        ).fetchone()
    assert row == ([tenants.deployment_b], [tenants.deployment_b])
    with acting_as(database_url, "authenticated", tenants.viewer_a) as conn:
        row = conn.execute(
            "SELECT private.accessible_deployment_ids(), private.accessible_deployment_ids(true)"
        ).fetchone()
    assert row is not None
    assert set(row[0]) == set(tenants.deployments_a)
    assert row[1] == []


def test_related_tables_follow_the_same_tenant_boundary(
    tenants: Tenants, database_url: str
) -> None:
    with acting_as(database_url, "authenticated", tenants.viewer_a) as conn:
        clients = {row[0] for row in conn.execute("SELECT id FROM clients")}
        deployments = {row[0] for row in conn.execute("SELECT id FROM agent_deployments")}
        permissions = {
            row[0] for row in conn.execute("SELECT user_id FROM user_client_permissions")
        }
    assert clients == {tenants.client_a}
    assert deployments == set(tenants.deployments_a)
    assert permissions == {tenants.viewer_a}

"""Row-level security, tried from the outside as each API role.

Each case connects, switches to the role with JWT claims exactly as PostgREST
does, and tries to read and change SMS of both clients.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.support import Tenants, acting_as


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


def test_a_user_without_permissions_sees_nothing(tenants: Tenants, database_url: str) -> None:
    with acting_as(database_url, "authenticated", tenants.nobody) as conn:
        assert visible_ids(conn) == set()
        assert conn.execute("UPDATE agent_sms SET status = 'failed'").rowcount == 0
        assert conn.execute("DELETE FROM agent_sms").rowcount == 0


def test_authenticated_without_a_user_id_sees_nothing(tenants: Tenants, database_url: str) -> None:
    with acting_as(database_url, "authenticated") as conn:
        assert visible_ids(conn) == set()


def test_a_viewer_sees_only_their_clients_sms_and_changes_nothing(
    tenants: Tenants, database_url: str
) -> None:
    with acting_as(database_url, "authenticated", tenants.viewer_a) as conn:
        assert visible_ids(conn) == set(tenants.sms_a)
        assert conn.execute("UPDATE agent_sms SET status = 'failed'").rowcount == 0
        assert conn.execute("DELETE FROM agent_sms").rowcount == 0
    with (
        acting_as(database_url, "authenticated", tenants.viewer_a) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
    ):
        new_sms(conn, tenants.deployments_a[0])


def test_an_admin_manages_their_clients_sms(tenants: Tenants, database_url: str) -> None:
    with acting_as(database_url, "authenticated", tenants.admin_a) as conn:
        assert visible_ids(conn) == set(tenants.sms_a)
        new_sms(conn, tenants.deployments_a[1])
        assert len(visible_ids(conn)) == len(tenants.sms_a) + 1
        updated = conn.execute("UPDATE agent_sms SET status = 'delivered'").rowcount
        assert updated == len(tenants.sms_a) + 1
        assert (
            conn.execute("DELETE FROM agent_sms WHERE id = %s", (tenants.sms_a[0],)).rowcount == 1
        )


def test_an_admin_cannot_touch_another_clients_sms(
    tenants: Tenants, database_url: str, admin_conn: psycopg.Connection
) -> None:
    with acting_as(database_url, "authenticated", tenants.admin_a) as conn:
        assert (
            conn.execute(
                "UPDATE agent_sms SET status = 'failed' WHERE id = ANY(%s)", (tenants.sms_b,)
            ).rowcount
            == 0
        )
        assert (
            conn.execute("DELETE FROM agent_sms WHERE id = ANY(%s)", (tenants.sms_b,)).rowcount == 0
        )
    with (
        acting_as(database_url, "authenticated", tenants.admin_a) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
    ):
        new_sms(conn, tenants.deployment_b)
    # Nor move one of their own SMS over to the other client.
    with (
        acting_as(database_url, "authenticated", tenants.admin_a) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
    ):
        conn.execute(
            "UPDATE agent_sms SET deployment_id = %s WHERE id = %s",
            (tenants.deployment_b, tenants.sms_a[0]),
        )
    untouched = admin_conn.execute(
        "SELECT count(*) FROM agent_sms WHERE id = ANY(%s) AND status = 'sent'", (tenants.sms_b,)
    ).fetchone()
    assert untouched == (len(tenants.sms_b),)


def test_an_admin_of_one_client_and_viewer_of_another_manages_only_the_first(
    tenants: Tenants, database_url: str, admin_conn: psycopg.Connection
) -> None:
    # Reads have one policy, users_view_accessible_sms; writes the admin policies alone.
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
        changed = conn.execute("UPDATE agent_sms SET status = 'delivered' RETURNING id")
        assert {row[0] for row in changed} == set(tenants.sms_a)
        assert (
            conn.execute("DELETE FROM agent_sms WHERE id = ANY(%s)", (tenants.sms_b,)).rowcount == 0
        )
    with (
        acting_as(database_url, "authenticated", both[0]) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
    ):
        new_sms(conn, tenants.deployment_b)


def test_truncate_is_not_granted_to_api_users(tenants: Tenants, database_url: str) -> None:
    # TRUNCATE ignores row-level security, so a grant would let any admin wipe every tenant.
    for role, user in (("authenticated", tenants.admin_a), ("anon", None)):
        with (
            acting_as(database_url, role, user) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute("TRUNCATE agent_sms")


def test_service_role_has_full_access(tenants: Tenants, database_url: str) -> None:
    with acting_as(database_url, "service_role") as conn:
        assert visible_ids(conn) == set(tenants.sms_a) | set(tenants.sms_b)
        new_sms(conn, tenants.deployment_b)
        assert conn.execute("UPDATE agent_sms SET status = 'delivered'").rowcount == 8
        assert conn.execute("DELETE FROM agent_sms").rowcount == 8


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

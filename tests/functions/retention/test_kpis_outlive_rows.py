"""KPIs outlive the hot table: 26 months of SMS, read before and after sealing, a
retention run that archives them, a second run that finds nothing new, a late callback
for a sealed day, and an erasure. Every key of every answer stays the same, but
unique_recipients after the erasure; and a tenant reads only its own aggregates."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from functions.retention import archive, erasure
from functions.retention.context import Retention
from tests.support.builders import Tenants, acting_as
from tests.support.retention import ALICE, BOB, CAROL, insert_contact_sms
from tools.metrics_reference import as_json_numbers, reference_period

pytestmark = pytest.mark.db

NOW = datetime.now(UTC)
NUMBERS = [ALICE, BOB, CAROL] + [f"+3361234{n:04d}" for n in range(9)]
REASONS = ["Unknown destination handset", "Filtered by the carrier", None]
KINDS = ["transactional", "marketing", "notification", "appointment_reminder"]

# The windows a dashboard asks about, never on whole hours: wholly archived, across the
# archive's age, and the last 366 days (whose previous period is archived too).
WINDOWS = {
    "archived": (NOW - timedelta(days=430, minutes=17), NOW - timedelta(days=400, minutes=17)),
    "across": (NOW - timedelta(days=380, minutes=5), NOW - timedelta(days=350, minutes=5)),
    "last 366 days": (NOW - timedelta(days=366), NOW),
}


def planned_history() -> list[tuple[int, datetime, str, dict[str, Any]]]:
    """An SMS every 3 days and 7 hours over 26 months, of every status: (n, sent at,
    number, columns)."""
    planned = []
    for n in range(int(790 * 24 / 79)):
        sent_at = NOW - timedelta(hours=79 * n, minutes=n % 60, seconds=n % 7)
        status = ("delivered", "delivered", "failed", "sent")[n % 4]
        extra: dict[str, Any] = {
            "status": status,
            "provider_status": {"delivered": "delivered", "failed": "undelivered",
                                "sent": "sent"}[status],
            "message_type": KINDS[n % 4 if n % 5 else 0],
            "workflow_id": f"wf-{n % 3}" if n % 6 else None,
            "provider_cost": None if n % 9 == 0 else f"0.0{70 + n % 9}",
            "voipia_margin": f"0.0{n % 4}00",
        }  # fmt: skip
        if status == "delivered":
            extra["delivered_at"] = sent_at + timedelta(seconds=3 + n % 11)
        if status == "failed":
            extra["failed_at"] = sent_at + timedelta(seconds=30)
            extra["failure_reason"] = REASONS[n % 3]
        planned.append((n, sent_at, NUMBERS[n % 11], extra))
    return planned


@pytest.fixture
def history(tenants: Tenants, clean: psycopg.Connection) -> list[uuid.UUID]:
    """planned_history, by both clients' deployments in turn."""
    deployments = [*tenants.deployments_a, tenants.deployment_b]
    return [
        insert_contact_sms(clean, deployments[n % len(deployments)], sent_at, number, extra)
        for n, sent_at, number, extra in planned_history()
    ]


def whole_hours(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The hours a KPI counts for [start, end), neither of which is a whole hour here."""
    return (start.replace(minute=0, second=0, microsecond=0),
            end.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1))  # fmt: skip


def sent_to_within(number: str, start: datetime, end: datetime) -> bool:
    """Whether history sent to this number in the whole hours [start, end) touches."""
    first, last = whole_hours(start, end)
    return any(to == number and first <= sent_at < last for _, sent_at, to, _ in planned_history())


def hot_rows(conn: psycopg.Connection, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """agent_sms's rows in the whole hours [start, end) touches."""
    cur = conn.execute(
        "SELECT * FROM agent_sms WHERE sent_at >= %s AND sent_at < %s", whole_hours(start, end)
    )
    names = [c.name for c in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def row_by_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The period's figures recomputed from these rows, as JSON reads them."""
    figures: dict[str, Any] = json.loads(json.dumps(as_json_numbers(reference_period(rows))))
    return figures


def rpc(conn: psycopg.Connection, function: str, args: dict[str, Any]) -> Any:
    named = sql.SQL(", ").join(
        sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder(name)) for name in args
    )
    row = conn.execute(
        sql.SQL("SELECT public.{}({})").format(sql.Identifier(function), named), args
    ).fetchone()
    assert row is not None
    return row[0]


def answers(database_url: str, client: uuid.UUID, role: str = "service_role",
            user: uuid.UUID | None = None) -> dict[str, Any]:  # fmt: skip
    """Every answer of every KPI function over the windows, and a statement of an
    archived month, as this caller sees them."""
    found: dict[str, Any] = {}
    with acting_as(database_url, role, user) as conn:
        for name, (start, end) in WINDOWS.items():
            for scope in ({}, {"p_client_id": client}):
                period = {"p_start_date": start, "p_end_date": end} | scope
                key = f"{name} {'client' if scope else 'all'}"
                found[f"metrics {key}"] = rpc(conn, "get_sms_metrics", period)
                found[f"series {key}"] = rpc(conn, "get_sms_timeseries", period)
                found[f"weeks {key}"] = rpc(
                    conn, "get_sms_timeseries", period | {"p_bucket": "week"}
                )
                found[f"reasons {key}"] = rpc(conn, "get_sms_failure_reasons",
                                              period | {"p_limit": 100})  # fmt: skip
        month = (NOW - timedelta(days=420)).date().replace(day=1)
        found["statement"] = rpc(
            conn, "get_sms_statement", {"p_client_id": client, "p_month": month}
        )
    return found


def seal_all(clean: psycopg.Connection, before: datetime) -> int:
    days = 0
    while clean.execute("SELECT private.seal_next_sms_day(%s)", (before,)).fetchone() != (None,):
        days += 1
    return days


def only_recipients_differ(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The keys that changed, as paths, when every unique_recipients is set aside."""
    changed: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
            for key in a:
                if key != "unique_recipients":
                    walk(a[key], b[key], f"{path}.{key}")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{path}[{i}]")
        elif a != b:
            changed.append(path)

    walk(before, after, "")
    return changed


def test_archiving_sealing_and_erasing_change_no_kpi_but_the_erased_recipient(
    retention: Retention, history: list[uuid.UUID], tenants: Tenants,
    clean: psycopg.Connection, retention_database_url: str, database_url: str,
) -> None:  # fmt: skip
    client = tenants.client_a
    # Statistics, as autovacuum keeps them: recipients of a short hot period are then
    # counted from its rows, and after archiving from the sets of hours.
    clean.execute("ANALYZE private.sms_recipient_hours")
    as_read = answers(database_url, client)
    archived = as_read["metrics archived all"]["current_period"]
    assert archived["total_sms"] > 0
    assert archived["unique_recipients"] > 0
    assert as_read["metrics last 366 days all"]["previous_period"]["total_sms"] > 0
    assert as_read["statement"]["totals"]["sms"] > 0

    assert seal_all(clean, NOW - timedelta(days=300)) > 0
    assert answers(database_url, client) == as_read, "sealing changed a KPI"

    first = archive.run(retention)
    assert first.archived_rows > 0
    assert first.sealed_days > 0
    assert answers(database_url, client) == as_read, "archiving changed a KPI"
    second = archive.run(retention)
    assert (second.archived_rows, second.sealed_days) == (0, 0)
    assert answers(database_url, client) == as_read, "a second run changed a KPI"

    receipt = erasure.erase(retention, [ALICE], requester="dpo", request_id="kpis")
    assert receipt.complete
    assert receipt.erasures[0].archived_rows > 0
    after = answers(database_url, client)
    assert only_recipients_differ(as_read, after) == []
    for name, (start, end) in WINDOWS.items():
        was = as_read[f"metrics {name} all"]["current_period"]["unique_recipients"]
        now = after[f"metrics {name} all"]["current_period"]["unique_recipients"]
        assert now == was - sent_to_within(ALICE, start, end), name
    assert any(sent_to_within(ALICE, start, end) for start, end in WINDOWS.values())


def test_a_late_report_for_a_sealed_day_moves_its_figures(
    history: list[uuid.UUID], clean: psycopg.Connection, database_url: str
) -> None:
    start, end = NOW - timedelta(days=200), NOW - timedelta(days=100)
    seal_all(clean, NOW - timedelta(days=30))
    late = clean.execute(
        "SELECT provider_message_sid, id FROM agent_sms WHERE status = 'sent'"
        " AND sent_at >= %s AND sent_at < %s ORDER BY sent_at LIMIT 2",
        (start + timedelta(hours=1), end - timedelta(hours=1)),
    ).fetchall()
    clean.execute("SELECT record_sms_status(%s, 'delivered')", (late[0][0],))
    clean.execute("SELECT record_sms_status(%s, 'undelivered', 30007)", (late[1][0],))
    clean.execute("UPDATE agent_sms SET provider_cost = 0.5 WHERE id = %s", (late[1][1],))

    with acting_as(database_url, "service_role") as conn:
        found = rpc(conn, "get_sms_metrics", {"p_start_date": start, "p_end_date": end})
        reasons = rpc(conn, "get_sms_failure_reasons",
                      {"p_start_date": start, "p_end_date": end, "p_limit": 100})  # fmt: skip
    rows = hot_rows(clean, start, end)
    expected = row_by_row(rows)
    assert {k: found["current_period"][k] for k in expected} == expected
    assert {
        "failure_reason": "Filtered by the carrier",
        "count": sum(r["failure_reason"] == "Filtered by the carrier" for r in rows),
    } in reasons


def test_an_sms_recorded_late_for_a_sealed_day_with_a_waiting_report_counts_once(
    history: list[uuid.UUID], tenants: Tenants, clean: psycopg.Connection, database_url: str
) -> None:
    """The report that waited for it moves it out of its first status only once it is in
    the aggregates: the day's other SMS keep their figures."""
    seal_all(clean, NOW - timedelta(days=30))
    day = NOW - timedelta(days=100)
    sid = f"SM{uuid.uuid4().hex}"
    clean.execute("SELECT record_sms_status(%s, 'delivered', NULL, %s, %s)",
                  (sid, day + timedelta(seconds=5), ALICE))  # fmt: skip
    insert_contact_sms(clean, tenants.deployments_a[0], day, ALICE,
                       {"provider_message_sid": sid, "provider_cost": "0.0100"})  # fmt: skip
    assert clean.execute("SELECT status FROM agent_sms WHERE provider_message_sid = %s",
                         (sid,)).fetchone() == ("delivered",)  # fmt: skip

    start, end = day - timedelta(days=3), day + timedelta(days=3)
    with acting_as(database_url, "service_role") as conn:
        found = rpc(conn, "get_sms_metrics", {"p_start_date": start, "p_end_date": end})
    expected = row_by_row(hot_rows(clean, start, end))
    assert {k: found["current_period"][k] for k in expected} == expected


def test_a_tenant_reads_only_its_own_aggregates(
    retention: Retention, history: list[uuid.UUID], tenants: Tenants, database_url: str
) -> None:
    archive.run(retention)
    as_service = answers(database_url, tenants.client_a)
    as_viewer = answers(database_url, tenants.client_a, "authenticated", tenants.viewer_a)
    for key, value in as_service.items():
        if "client" in key or key == "statement":
            assert as_viewer[key] == value, key
    # Client B's own figures stay out of client A's unfiltered view.
    assert as_viewer["metrics archived all"] == as_viewer["metrics archived client"]
    assert as_viewer["metrics archived all"] != as_service["metrics archived all"]
    as_other = answers(database_url, tenants.client_a, "authenticated", tenants.admin_b)
    assert as_other["statement"]["lines"] == []
    assert as_other["metrics archived client"]["current_period"]["total_sms"] == 0

    with acting_as(database_url, "authenticated", tenants.admin_b) as conn:
        for table in ("sms_totals", "sms_workflow_hours"):
            seen = conn.execute(
                sql.SQL("SELECT DISTINCT deployment_id FROM {}").format(
                    sql.Identifier("private", table)
                )
            ).fetchall()
            assert seen == [(tenants.deployment_b,)], table
    for forbidden in ("SELECT * FROM private.sms_recipients",
                      "SELECT * FROM private.sms_recipient_hours",
                      "SELECT private.seal_next_sms_day(now())",
                      "DELETE FROM private.sms_totals",
                      "UPDATE private.sms_kpi_seal SET sealed_before = '-infinity'"):  # fmt: skip
        with (
            acting_as(database_url, "authenticated", tenants.admin_b) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute(forbidden)

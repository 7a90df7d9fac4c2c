"""get_sms_metrics and the analytics views: the seed's contract, exact, tenant-safe."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from shared.db import Caller, PostgresDatabase
from shared.errors import ForbiddenError, InvalidInputError
from tests.support.builders import (
    NOV_1,
    WEEK,
    Shop,
    acting_as,
    build_shop,
    insert_sms,
    metrics,
    one,
)
from tools.metrics_reference import (
    as_json_numbers,
    reference_by_message_type,
    reference_period,
)


@pytest.fixture(scope="module")
def db(database_url: str) -> Iterator[PostgresDatabase]:
    database = PostgresDatabase(database_url, pool_size=2)
    yield database
    database.close()


def test_all_clients(db: PostgresDatabase, shop: Shop) -> None:
    assert metrics(db) == {
        "current_period": {
            "total_sms": 5, "delivered_sms": 3, "failed_sms": 1, "sent_sms": 1,
            "delivery_rate": 60.00, "failure_rate": 20.00,
            "total_cost": 0.34, "total_provider_cost": 0.24, "total_margin": 0.10,
            "margin_percentage": 29.41, "avg_cost_per_sms": 0.07,
            "avg_characters": 30, "min_characters": 10, "max_characters": 50,
            "unique_recipients": 4, "active_deployments": 3, "active_workflows": 3,
            "sms_linked_to_calls": 2, "call_linkage_rate": 40.00,
            "avg_delivery_time_seconds": 4.00,
            "by_message_type": [
                {"message_type": "appointment_reminder", "count": 2, "delivered": 2,
                 "delivery_rate": 100.00, "cost": 0.14},
                {"message_type": "notification", "count": 2, "delivered": 1,
                 "delivery_rate": 50.00, "cost": 0.15},
                {"message_type": "marketing", "count": 1, "delivered": 0,
                 "delivery_rate": 0.00, "cost": 0.05},
            ],
        },
        "previous_period": {
            "total_sms": 2, "delivered_sms": 1, "failed_sms": 1, "delivery_rate": 50.00,
            "failure_rate": 50.00, "total_cost": 0.17, "total_margin": 0.04,
            "avg_cost_per_sms": 0.09, "avg_characters": 35, "unique_recipients": 2,
        },
        "comparison": {
            "total_sms_change": 3, "total_sms_change_pct": 150.00, "delivered_sms_change": 2,
            "cost_change": 0.17, "cost_change_pct": 100.00,
        },
        # Beyond the seed's keys, beside them.
        "currency": "EUR",
        "period": {
            "start": "2026-11-01T00:00:00+00:00", "end": "2026-11-08T00:00:00+00:00",
            "previous_start": "2026-10-25T00:00:00+00:00",
        },
        "previous_period_more": {
            "total_provider_cost": 0.13, "avg_delivery_time_seconds": 2.00,
            "margin_percentage": 23.53,
        },
    }  # fmt: skip


def test_one_client(db: PostgresDatabase, shop: Shop) -> None:
    result = metrics(db, client_id=shop.client_a)
    assert result["current_period"] == {
        "total_sms": 4, "delivered_sms": 2, "failed_sms": 1, "sent_sms": 1,
        "delivery_rate": 50.00, "failure_rate": 25.00,
        "total_cost": 0.19, "total_provider_cost": 0.14, "total_margin": 0.05,
        "margin_percentage": 26.32, "avg_cost_per_sms": 0.05,
        "avg_characters": 25, "min_characters": 10, "max_characters": 40,
        "unique_recipients": 3, "active_deployments": 2, "active_workflows": 2,
        "sms_linked_to_calls": 1, "call_linkage_rate": 25.00, "avg_delivery_time_seconds": 3.00,
        "by_message_type": [
            {"message_type": "appointment_reminder", "count": 2, "delivered": 2,
             "delivery_rate": 100.00, "cost": 0.14},
            {"message_type": "marketing", "count": 1, "delivered": 0,
             "delivery_rate": 0.00, "cost": 0.05},
            {"message_type": "notification", "count": 1, "delivered": 0,
             "delivery_rate": 0.00, "cost": 0.00},
        ],
    }  # fmt: skip
    assert result["previous_period"] == {
        "total_sms": 1, "delivered_sms": 1, "failed_sms": 0, "delivery_rate": 100.00,
        "failure_rate": 0.00, "total_cost": 0.07, "total_margin": 0.02,
        "avg_cost_per_sms": 0.07, "avg_characters": 10, "unique_recipients": 1,
    }  # fmt: skip
    assert result["comparison"] == {
        "total_sms_change": 3, "total_sms_change_pct": 300.00, "delivered_sms_change": 1,
        "cost_change": 0.12, "cost_change_pct": 171.43,
    }  # fmt: skip


def test_one_deployment(db: PostgresDatabase, shop: Shop) -> None:
    result = metrics(db, deployment_id=shop.b_louis)
    current = result["current_period"]
    assert (current["total_sms"], current["delivery_rate"], current["margin_percentage"]) == (
        1, 100.00, 33.33,
    )  # fmt: skip
    assert current["by_message_type"] == [
        {"message_type": "notification", "count": 1, "delivered": 1, "delivery_rate": 100.00,
         "cost": 0.15},
    ]  # fmt: skip
    assert result["previous_period"]["failure_rate"] == 100.00
    assert result["comparison"] == {
        "total_sms_change": 0, "total_sms_change_pct": 0.00, "delivered_sms_change": 1,
        "cost_change": 0.05, "cost_change_pct": 50.00,
    }  # fmt: skip


def test_one_agent_type_with_an_empty_previous_period(db: PostgresDatabase, shop: Shop) -> None:
    result = metrics(db, agent_type_name="arthur")
    current = result["current_period"]
    assert (current["total_sms"], current["avg_cost_per_sms"], current["avg_characters"]) == (
        2, 0.03, 35,
    )  # fmt: skip
    assert current["avg_delivery_time_seconds"] is None
    assert current["call_linkage_rate"] == 0.00
    assert result["previous_period"] == {
        "total_sms": 0, "delivered_sms": 0, "failed_sms": 0, "delivery_rate": None,
        "failure_rate": None, "total_cost": 0, "total_margin": 0, "avg_cost_per_sms": None,
        "avg_characters": None, "unique_recipients": 0,
    }  # fmt: skip
    assert result["comparison"] == {
        "total_sms_change": 2, "total_sms_change_pct": None, "delivered_sms_change": 0,
        "cost_change": 0.05, "cost_change_pct": None,
    }  # fmt: skip


def test_an_empty_period_gives_zeros_not_nulls_for_counts_and_sums(
    db: PostgresDatabase, shop: Shop
) -> None:
    current = metrics(db, start=NOV_1 + 4 * WEEK, end=NOV_1 + 5 * WEEK)["current_period"]
    assert current == {
        "total_sms": 0, "delivered_sms": 0, "failed_sms": 0, "sent_sms": 0,
        "delivery_rate": None, "failure_rate": None, "total_cost": 0, "total_provider_cost": 0,
        "total_margin": 0, "margin_percentage": None, "avg_cost_per_sms": None,
        "avg_characters": None, "min_characters": None, "max_characters": None,
        "unique_recipients": 0, "active_deployments": 0, "active_workflows": 0,
        "sms_linked_to_calls": 0, "call_linkage_rate": None,
        "avg_delivery_time_seconds": None, "by_message_type": [],
    }  # fmt: skip


def test_a_period_that_does_not_end_after_it_starts_is_refused(db: PostgresDatabase) -> None:
    with pytest.raises(InvalidInputError):
        metrics(db, start=NOV_1, end=NOV_1)


# --- the tenant boundary, from the outside ----------------------------------------------


def test_a_viewer_never_sees_another_clients_numbers(db: PostgresDatabase, shop: Shop) -> None:
    viewer = Caller({"role": "authenticated", "sub": str(shop.viewer_a)})
    own = metrics(db, caller=viewer)
    assert own["current_period"]["total_sms"] == 4
    assert own["current_period"] == metrics(db, client_id=shop.client_a)["current_period"]
    filters: list[dict[str, Any]] = [{"client_id": shop.client_b}, {"deployment_id": shop.b_louis}]
    for other_client in filters:
        other = metrics(db, caller=viewer, **other_client)
        assert other["current_period"]["total_sms"] == 0
        assert other["previous_period"]["total_sms"] == 0
    louis = metrics(db, caller=viewer, agent_type_name="louis")["current_period"]
    assert louis["total_sms"] == 2


def test_anon_gets_nothing(db: PostgresDatabase, shop: Shop, database_url: str) -> None:
    with pytest.raises(ForbiddenError):
        metrics(db, caller=Caller({"role": "anon"}))
    for view in ("v_agent_sms_enriched", "v_agent_communications"):
        with (
            acting_as(database_url, "anon") as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute(f"SELECT * FROM {view}")


def test_the_views_show_a_viewer_only_their_clients_rows(shop: Shop, database_url: str) -> None:
    with acting_as(database_url, "authenticated", shop.viewer_a) as conn:
        enriched = conn.execute(
            "SELECT DISTINCT client_name, agent_display_name"
            " FROM v_agent_sms_enriched ORDER BY 1, 2"
        ).fetchall()
        touchpoints = conn.execute(
            "SELECT communication_type, count(*) FROM v_agent_communications GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert enriched == [("A", "Arthur"), ("A", "Louis")]
    assert touchpoints == [("call", 1), ("sms", 5)]


def test_the_enriched_view_computes_its_columns(shop: Shop, clean: psycopg.Connection) -> None:
    rows = clean.execute(
        "SELECT deployment_slug, is_delivered, is_failed, delivery_time_seconds"
        " FROM v_agent_sms_enriched WHERE sent_at >= %s AND sent_at < %s ORDER BY sent_at",
        (NOV_1, NOV_1 + WEEK),
    ).fetchall()
    assert rows == [
        ("a-louis", True, False, Decimal("2.000000")),
        ("a-louis", True, False, Decimal("4.000000")),
        ("a-arthur", False, True, None),
        ("a-arthur", False, False, None),
        ("b-louis", True, False, Decimal("6.000000")),
    ]


# --- against an independent reference, on random data ------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_matches_a_reference_computed_in_python(
    db: PostgresDatabase, clean: psycopg.Connection, seed: int
) -> None:
    rng = random.Random(seed)
    s = build_shop(clean)
    deployments = [s.a_louis, s.a_arthur, s.b_louis]
    # Each deployment's own call: an SMS is linked only within its client.
    calls = {d: one(clean, "INSERT INTO agent_calls (deployment_id) VALUES (%s) RETURNING id", d)
             for d in deployments}  # fmt: skip
    rows: list[dict[str, Any]] = []
    for _ in range(150):
        deployment = rng.choice(deployments)
        at = NOV_1 - WEEK + timedelta(seconds=rng.randrange(int(2 * WEEK.total_seconds())))
        status = rng.choice(["sent", "delivered", "delivered", "delivered", "failed"])
        delay = timedelta(milliseconds=rng.randrange(1, 20000))
        row: dict[str, Any] = {
            "deployment_id": deployment,
            "sent_at": at,
            "status": status,
            "message_type": rng.choice(["transactional", "marketing", "notification"]),
            "provider_cost": rng.choice([None, Decimal(rng.randrange(0, 1500)) / 10000]),
            "voipia_margin": Decimal(rng.randrange(0, 600)) / 10000,
            "message_content": "x" * rng.randrange(1, 160),
            "phone_number": f"+336{rng.randrange(40):08d}",  # recipients repeat
            "workflow_id": rng.choice([None, "wf1", "wf2", "wf3"]),
            "call_id": rng.choice([None, None, calls[deployment]]),
            "delivered_at": at + delay if status == "delivered" else None,
        }
        insert_sms(clean, **row)
        rows.append(row)
    current = [r for r in rows if NOV_1 <= r["sent_at"] < NOV_1 + WEEK]
    previous = [r for r in rows if NOV_1 - WEEK <= r["sent_at"] < NOV_1]
    result = metrics(db)
    expected = reference_period(current)
    assert {
        k: v for k, v in result["current_period"].items() if k != "by_message_type"
    } == as_json_numbers(expected)
    expected_types = reference_by_message_type(current)
    assert result["current_period"]["by_message_type"] == as_json_numbers(expected_types)
    before = reference_period(previous)
    assert result["previous_period"] == as_json_numbers(
        {k: before[k] for k in result["previous_period"]}
    )
    # A user of both clients reads through the SELECT policy alone (no scope list): the
    # same figures, as admin of one client and viewer of the other.
    both = one(clean, "INSERT INTO auth.users (email) VALUES ('both@example') RETURNING id")
    clean.execute(
        "INSERT INTO user_client_permissions (user_id, client_id, role)"
        " VALUES (%s, %s, 'admin'), (%s, %s, 'viewer')",
        (both, s.client_a, both, s.client_b),
    )
    assert metrics(db, caller=Caller({"role": "authenticated", "sub": str(both)})) == result


# --- beyond the seed: time series and failure reasons --------------------------------------


def test_daily_series_covers_every_day_of_the_period(db: PostgresDatabase, shop: Shop) -> None:
    series = db.rpc(
        "get_sms_timeseries",
        {"p_start_date": NOV_1, "p_end_date": NOV_1 + WEEK, "p_bucket": "day"},
    )
    assert [(b["bucket_start"][:10], b["total_sms"], b["delivered_sms"], b["failed_sms"],
             b["sent_sms"], b["delivery_rate"], b["cost"]) for b in series] == [
        ("2026-11-01", 0, 0, 0, 0, None, 0),
        ("2026-11-02", 1, 1, 0, 0, 100.00, 0.07),
        ("2026-11-03", 1, 1, 0, 0, 100.00, 0.07),
        ("2026-11-04", 1, 0, 1, 0, 0.00, 0.05),
        ("2026-11-05", 1, 0, 0, 1, 0.00, 0),
        ("2026-11-06", 1, 1, 0, 0, 100.00, 0.15),
        ("2026-11-07", 0, 0, 0, 0, None, 0),
    ]  # fmt: skip


def test_weekly_series_starts_on_mondays_and_respects_rls(db: PostgresDatabase, shop: Shop) -> None:
    viewer = Caller({"role": "authenticated", "sub": str(shop.viewer_a)})
    args = {"p_start_date": NOV_1, "p_end_date": NOV_1 + WEEK, "p_bucket": "week"}
    series = db.rpc("get_sms_timeseries", args, as_user=viewer)
    assert [(b["bucket_start"][:10], b["total_sms"]) for b in series] == [
        ("2026-10-26", 0),
        ("2026-11-02", 4),
    ]
    with pytest.raises(InvalidInputError):
        db.rpc("get_sms_timeseries", args | {"p_bucket": "hour"})


def test_the_charts_never_show_another_clients_sms_whatever_the_filters(
    db: PostgresDatabase, shop: Shop, clean: psycopg.Connection
) -> None:
    insert_sms(clean, shop.b_louis, sent_at=NOV_1, status="failed", failure_reason="B's reason")
    viewer = Caller({"role": "authenticated", "sub": str(shop.viewer_a)})
    args = {"p_start_date": NOV_1, "p_end_date": NOV_1 + WEEK}
    for filters in ({"p_client_id": shop.client_b}, {"p_deployment_id": shop.b_louis}):
        series = db.rpc("get_sms_timeseries", args | filters, as_user=viewer)
        assert [b["total_sms"] for b in series] == [0] * 7
        assert db.rpc("get_sms_failure_reasons", args | filters, as_user=viewer) == []
    louis = db.rpc("get_sms_timeseries", args | {"p_agent_type_name": "louis"}, as_user=viewer)
    assert sum(b["total_sms"] for b in louis) == 2
    reasons = db.rpc("get_sms_failure_reasons", args | {"p_agent_type_name": "louis"},
                     as_user=viewer)  # fmt: skip
    assert reasons == []


def test_the_scope_is_left_to_row_level_security_only_when_nothing_narrows_it(
    shop: Shop, database_url: str
) -> None:
    # A list of the caller's deployments beside the SELECT policy's own would make btree
    # walk every pair of the two arrays; service_role bypasses RLS and needs the list.
    scope = "SELECT private.sms_scope(%s, NULL, NULL)"
    with acting_as(database_url, "authenticated", shop.viewer_a) as conn:
        assert conn.execute(scope, (None,)).fetchone() == (None,)
        row = conn.execute(scope, (shop.client_a,)).fetchone()
        assert row is not None
        assert set(row[0]) == {shop.a_louis, shop.a_arthur}
        assert conn.execute(scope, (shop.client_b,)).fetchone() == ([],)
    with acting_as(database_url, "service_role") as conn:
        row = conn.execute(scope, (None,)).fetchone()
    assert row is not None
    assert set(row[0]) == {shop.a_louis, shop.a_arthur, shop.b_louis}


def test_an_unnarrowed_scope_is_refused_outside_row_level_security(
    shop: Shop, database_url: str, admin_conn: psycopg.Connection
) -> None:
    # NULL means "what the caller may see": read by a role that bypasses RLS (or in a
    # SECURITY DEFINER wrapper owned by one) it would mean every client's SMS.
    figures = "SELECT private.sms_period_figures(NULL, %s, %s, %s) #>> '{current,total_sms}'"
    period = (NOV_1 - WEEK, NOV_1, NOV_1 + WEEK)
    with acting_as(database_url, "authenticated", shop.viewer_a) as conn:
        assert conn.execute(figures, period).fetchone() == ("4",)
    with (
        acting_as(database_url, "service_role") as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="scope"),
    ):
        conn.execute(figures, period)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="scope"):
        admin_conn.execute(figures, period)  # a superuser, as a definer wrapper's owner


def test_top_failure_reasons(db: PostgresDatabase, shop: Shop, clean: psycopg.Connection) -> None:
    for reason in ("Unreachable destination handset", "Unreachable destination handset",
                   "Recipient opted out (replied STOP)"):  # fmt: skip
        insert_sms(clean, shop.b_louis, sent_at=NOV_1, status="failed", failure_reason=reason)
    args = {"p_start_date": NOV_1, "p_end_date": NOV_1 + WEEK}
    assert db.rpc("get_sms_failure_reasons", args) == [
        {"failure_reason": "Unreachable destination handset", "count": 2},
        {"failure_reason": "Recipient opted out (replied STOP)", "count": 1},
        {"failure_reason": "Unknown", "count": 1},
    ]
    viewer = Caller({"role": "authenticated", "sub": str(shop.viewer_a)})
    assert db.rpc("get_sms_failure_reasons", args, as_user=viewer) == [
        {"failure_reason": "Unknown", "count": 1},
    ]


def test_the_filters_a_user_may_offer_are_their_own_clients(
    db: PostgresDatabase, shop: Shop
) -> None:
    from shared.db import Caller

    viewer = Caller(claims={"role": "authenticated", "sub": str(shop.viewer_a)})
    mine = db.rpc("get_sms_filters", as_user=viewer)
    everyone = db.rpc("get_sms_filters")

    assert {c["id"] for c in mine["clients"]} == {str(shop.client_a)}
    assert {d["client_id"] for d in mine["deployments"]} == {str(shop.client_a)}
    assert {c["id"] for c in everyone["clients"]} >= {str(shop.client_a), str(shop.client_b)}
    assert set(mine["agent_types"]) <= set(everyone["agent_types"])

"""Erasure by phone number against real Postgres and a versioned moto bucket: an
independent scan finds no trace afterwards, and everyone else's data is untouched."""

from __future__ import annotations

import logging
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg.types.json import Jsonb

from functions.retention import archive, erasure
from functions.retention.context import Retention
from shared.errors import ConfigurationError, ConflictError
from tests.support.builders import Tenants, acting_as, create_tenants, insert_sms
from tests.support.retention import (
    ALICE,
    BOB,
    archived_rows,
    at,
    copies,
    crash_on_call,
    days_ago,
    insert_contact_sms,
    object_versions,
    phone_hash,
    retention_for,
    retention_settings,
    sms_rows,
    traces,
)
from tools.embedded import as_user
from tools.migrate import RETENTION_LOGIN

pytestmark = pytest.mark.db


@pytest.fixture
def alice_everywhere(
    retention: Retention, old_sms: list[uuid.UUID], tenants: Tenants, clean: psycopg.Connection
) -> list[str]:
    """Alice in archived objects (one shared with Bob, one of her own), in hot rows with
    status events and reconcile bookkeeping, and in a pending status event; returns
    every string that would betray her."""
    archive.run(retention)
    hot = insert_contact_sms(
        clean,
        tenants.deployment_b,
        days_ago(2),
        ALICE,
        {"first_name": "Alicia", "last_name": "Zorn"},
    )
    sid = clean.execute(
        "SELECT provider_message_sid FROM agent_sms WHERE id = %s", (hot,)
    ).fetchone()
    assert sid is not None
    clean.execute(
        "INSERT INTO agent_sms_events (provider_message_sid, twilio_status, applied_at)"
        " VALUES (%(sid)s, 'sent', now()), (%(sid)s, 'delivered', now())",
        {"sid": sid[0]},
    )
    clean.execute("INSERT INTO private.sms_reconcile_checks VALUES (%s, now())", sid)
    clean.execute(
        "INSERT INTO agent_sms_events (provider_message_sid, twilio_status, pending_phone_number)"
        " VALUES ('SM' || repeat('d', 32), 'delivered', %s)",
        (ALICE,),
    )
    texts = [
        str(row[0])
        for row in clean.execute(
            "SELECT message_content FROM agent_sms WHERE phone_number = %s", (ALICE,)
        ).fetchall()
    ]
    texts += [row["message_content"] for row in archived_rows(retention).values()
              if row["phone_number"] == ALICE]  # fmt: skip
    return [ALICE, ALICE.removeprefix("+"), sid[0], "Alicia", "Zorn", *texts]


def test_erasure_reaches_every_copy_and_spares_everyone_else(
    retention: Retention,
    alice_everywhere: list[str],
    clean: psycopg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    others_hot = {k: v for k, v in sms_rows(clean).items() if v["phone_number"] != ALICE}
    others_archived = {
        k: v for k, v in archived_rows(retention).items() if v["phone_number"] != ALICE
    }
    assert traces(clean, retention, alice_everywhere)

    with caplog.at_level(logging.DEBUG):
        receipt = erasure.erase(retention, [ALICE], requester="DPO ticket 42", request_id="req-1")

    assert receipt.parked_copies_gone_by is not None
    assert receipt.as_json() == {
        "request_id": "req-1",
        "requester": "DPO ticket 42",
        "dry_run": False,
        "complete": True,
        "parked_copies_gone_by": receipt.parked_copies_gone_by,
        "erasures": [
            {
                "phone_hash": phone_hash(ALICE).hex(),
                "hot_rows": 2,  # the one not yet due for archiving, and the recent one
                "status_events": 2,
                "pending_events": 1,
                "archived_rows": 4,  # three in January's first object, one alone in November
                "objects_rewritten": 1,
                "objects_deleted": 1,
                "object_versions_deleted": 2,  # January's old version; November's only one
                "complete": True,
                "incomplete_reason": None,
            }
        ],
    }
    assert traces(clean, retention, alice_everywhere) == []
    assert not [r for r in caplog.records if any(n in r.getMessage() for n in alice_everywhere)]
    assert sms_rows(clean) == others_hot
    assert archived_rows(retention) == others_archived
    audit = clean.execute(
        "SELECT phone_hash, requester, hot_rows, status_events, pending_events, archived_rows,"
        " objects_rewritten, objects_deleted, object_versions_deleted, completed_at IS NOT NULL"
        " FROM private.sms_erasures"
    ).fetchall()
    assert audit == [(phone_hash(ALICE), "DPO ticket 42", 2, 2, 1, 4, 1, 1, 2, True)]
    # The manifest describes the objects as they now are.
    for version in object_versions(retention):
        assert version.table is not None
        entry = clean.execute(
            "SELECT row_count FROM private.sms_archive_objects WHERE object_key = %s",
            (version.key,),
        ).fetchone()
        assert entry == (version.table.num_rows,)
    assert clean.execute(
        "SELECT count(*) FROM private.sms_archive_phone_index WHERE phone_hash = %s",
        (phone_hash(ALICE),),
    ).fetchone() == (0,)


def test_erasing_twice_erases_nothing_the_second_time(
    retention: Retention, alice_everywhere: list[str], clean: psycopg.Connection
) -> None:
    erasure.erase(retention, [ALICE], requester="dpo", request_id="first")
    again = erasure.erase(retention, [ALICE], requester="dpo", request_id="second")
    counts = again.as_json()["erasures"][0]
    assert {k: v for k, v in counts.items() if isinstance(v, int) and k != "complete"} == {
        "hot_rows": 0, "status_events": 0, "pending_events": 0, "archived_rows": 0,
        "objects_rewritten": 0, "objects_deleted": 0, "object_versions_deleted": 0,
    }  # fmt: skip
    assert again.complete
    assert clean.execute(
        "SELECT request_id FROM private.sms_erasures WHERE completed_at IS NOT NULL ORDER BY 1"
    ).fetchall() == [("first",), ("second",)]


def test_a_dry_run_counts_what_would_go_and_changes_nothing(
    retention: Retention, alice_everywhere: list[str], clean: psycopg.Connection
) -> None:
    before_rows, before_versions = sms_rows(clean), object_versions(retention)
    forecast = erasure.erase(retention, [ALICE, BOB], requester="dpo", request_id="r", dry_run=True)
    assert sms_rows(clean) == before_rows
    assert object_versions(retention) == before_versions
    assert clean.execute("SELECT count(*) FROM private.sms_erasures").fetchone() == (0,)
    alice = forecast.erasures[0]
    assert (alice.hot_rows, alice.status_events, alice.pending_events) == (2, 2, 1)
    assert (alice.archived_rows, alice.objects_rewritten, alice.complete) == (4, 2, None)
    assert forecast.as_json()["complete"] is False


def test_an_archive_failure_leaves_it_incomplete_until_a_rerun_finishes_it(
    retention: Retention,
    alice_everywhere: list[str],
    clean: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    crash_on_call(monkeypatch, retention.bucket, 1, after_upload=False)
    receipt = erasure.erase(retention, [ALICE], requester="dpo", request_id="cut-short")
    result = receipt.erasures[0]
    assert not receipt.complete
    assert result.hot_rows == 2
    assert result.incomplete_reason == "S3 is down Send the same request again to finish it."
    assert clean.execute(
        "SELECT completed_at IS NULL, incomplete_reason IS NOT NULL, hot_rows"
        " FROM private.sms_erasures"
    ).fetchall() == [(True, True, 2)]
    assert traces(clean, retention, alice_everywhere), "the archive still holds her"

    monkeypatch.undo()
    finished = erasure.erase(retention, [ALICE], requester="dpo", request_id="rerun")
    assert finished.complete
    assert traces(clean, retention, alice_everywhere) == []
    assert clean.execute(
        "SELECT request_id, completed_at IS NOT NULL FROM private.sms_erasures ORDER BY 1"
    ).fetchall() == [("cut-short", True), ("rerun", True)]


def test_an_erasure_waits_for_an_archive_batch_then_says_it_is_incomplete(
    retention: Retention,
    alice_everywhere: list[str],
    database_url: str,
    clean: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(erasure, "ARCHIVE_LOCK_WAIT_SECONDS", 0.2)
    with psycopg.connect(database_url) as batch:
        batch.execute("SELECT pg_advisory_xact_lock(private.archive_write_lock_key())")
        receipt = erasure.erase(retention, [ALICE], requester="dpo", request_id="r")
    result = receipt.erasures[0]
    assert (receipt.complete, result.hot_rows, result.archived_rows) == (False, 2, 0)
    assert result.incomplete_reason is not None
    assert "retry in a minute" in result.incomplete_reason
    finished = erasure.erase(retention, [ALICE], requester="dpo", request_id="r")
    assert (finished.complete, finished.erasures[0].archived_rows) == (True, 4)
    assert clean.execute(
        "SELECT hot_rows, archived_rows, completed_at IS NOT NULL FROM private.sms_erasures"
    ).fetchall() == [(2, 4, True)]


def test_a_late_status_report_for_an_erased_sms_does_not_bring_the_number_back(
    retention: Retention, alice_everywhere: list[str], clean: psycopg.Connection
) -> None:
    sid = alice_everywhere[2]
    erasure.erase(retention, [ALICE], requester="dpo", request_id="r")
    outcome = clean.execute(
        "SELECT public.record_sms_status(%s, 'delivered', p_to => %s)", (sid, ALICE)
    ).fetchone()
    assert outcome == ({"pending": False, "changed": False},)
    assert traces(clean, retention, alice_everywhere) == []


def test_a_status_report_landing_while_the_archive_is_erased_leaves_no_number_behind(
    retention: Retention,
    alice_everywhere: list[str],
    clean: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Found by review: the database is swept first and the archive after, so a late report
    # for an archived SMS landing in between was kept pending, with the number.
    archived_sid = next(
        row["provider_message_sid"]
        for row in archived_rows(retention).values()
        if row["phone_number"] == ALICE
    )
    erase_object = erasure._erase_from_object

    def a_late_report_first(*args: Any) -> None:
        monkeypatch.setattr(erasure, "_erase_from_object", erase_object)
        clean.execute(
            "SELECT public.record_sms_status(%s, 'delivered', p_to => %s)", (archived_sid, ALICE)
        )
        erase_object(*args)

    monkeypatch.setattr(erasure, "_erase_from_object", a_late_report_first)
    receipt = erasure.erase(retention, [ALICE], requester="dpo", request_id="r")
    assert receipt.complete
    assert receipt.erasures[0].pending_events == 2  # the fixture's, and the late one
    assert traces(clean, retention, alice_everywhere) == []


def test_no_erased_sms_comes_back_hot_or_archived(
    retention: Retention, alice_everywhere: list[str], clean: psycopg.Connection
) -> None:
    # Found by benchmarks/soak: n8n re-posting an erased SMS recorded it again, and
    # erasing an archived SMS did not remember its SID at all.
    archived = [r for r in archived_rows(retention).values() if r["phone_number"] == ALICE]
    replay = [
        {"deployment_id": str(r["deployment_id"]), "phone_number": ALICE,
         "message_content": r["message_content"], "provider_message_sid": sid,
         "sent_at": r["sent_at"].isoformat()}
        for sid, r in [(alice_everywhere[2], archived[0])]
        + [(r["provider_message_sid"], r) for r in archived]
    ]  # fmt: skip
    erasure.erase(retention, [ALICE], requester="dpo", request_id="r")
    answer = clean.execute("SELECT public.ingest_sms(%s::jsonb)", (Jsonb(replay),)).fetchone()
    assert answer == ([{"gone": "provider_message_sid"}] * len(replay),)
    with pytest.raises(psycopg.errors.SerializationFailure):  # any writer, not only ingest
        insert_sms(clean, uuid.UUID(replay[0]["deployment_id"]),
                   provider_message_sid=replay[0]["provider_message_sid"])  # fmt: skip
    # The daily run's purge of stale pending reports keeps erased SIDs, however old.
    clean.execute("UPDATE private.sms_erased_sids SET erased_at = now() - interval '3 years'")
    archive.run(retention)
    again = clean.execute("SELECT public.ingest_sms(%s::jsonb)", (Jsonb(replay[:1]),))
    assert again.fetchone() == ([{"gone": "provider_message_sid"}],)
    assert traces(clean, retention, alice_everywhere) == []


def test_a_crash_after_a_rewrite_still_leaves_its_sms_refused(
    retention: Retention,
    alice_everywhere: list[str],
    clean: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    archived = [r for r in archived_rows(retention).values() if r["phone_number"] == ALICE]
    crash_on_call(monkeypatch, retention.bucket, 1, after_upload=True)
    with pytest.raises(RuntimeError):
        erasure.erase(retention, [ALICE], requester="dpo", request_id="r")
    monkeypatch.undo()
    erasure.erase(retention, [ALICE], requester="dpo", request_id="r")
    # The rewritten object no longer held her rows when the rerun read it: their SIDs
    # had to be remembered before the rewrite.
    sids = [r["provider_message_sid"] for r in archived]
    erased = clean.execute(
        "SELECT count(*) FROM private.erased_sids(%s::text[])",
        (sids,),
    ).fetchone()
    assert erased == (len(sids),)


def test_erasure_refuses_to_continue_another_requesters_request(
    retention: Retention, alice_everywhere: list[str]
) -> None:
    erasure.erase(retention, [ALICE], requester="dpo", request_id="shared-id")
    with pytest.raises(ConflictError, match="another requester"):
        erasure.erase(retention, [BOB], requester="someone else", request_id="shared-id")


def test_every_writer_stores_numbers_in_e164(tenants: Tenants, clean: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        insert_contact_sms(clean, tenants.deployment_b, days_ago(1), "06 12 34 50 01", {})


def test_an_object_a_crash_left_behind_is_erased_too(
    retention: Retention,
    tenants: Tenants,
    clean: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = [
        insert_contact_sms(clean, tenants.deployment_b, at(2025, 2, day), phone, {})
        for day, phone in [(1, ALICE), (2, BOB), (3, BOB)]
    ]
    texts = [str(sms_rows(clean, ids[:1])[str(ids[0])]["message_content"])]
    crash_on_call(monkeypatch, retention.bucket, 1, after_upload=True)
    with pytest.raises(RuntimeError):
        archive.run(retention)
    monkeypatch.undo()
    assert traces(clean, retention, [ALICE, *texts])

    assert erasure.erase(retention, [ALICE], requester="dpo", request_id="r").complete
    assert traces(clean, retention, [ALICE, *texts]) == []
    archive.run(retention)
    counted = copies(clean, retention)
    assert [counted[str(i)] for i in ids] == [0, 1, 1]


@pytest.mark.parametrize("role", ["anon", "authenticated", "service_role"])
@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM private.sms_archive_objects",
        "SELECT * FROM private.sms_archive_phone_index",
        "SELECT * FROM private.sms_erasures",
        "SELECT * FROM private.erase_hot_sms('+33612345001')",
        "SELECT private.complete_erasure('r', '\\x00')",
        "SELECT * FROM private.sms_due_for_archive(now(), 1)",
    ],
)
def test_no_api_role_reaches_the_archive_index_or_the_audit(
    tenants: Tenants, database_url: str, role: str, statement: str
) -> None:
    with (
        acting_as(database_url, role, tenants.admin_a) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(statement)


def test_no_statistic_or_old_row_version_keeps_an_erased_number(
    owner_database_url: str, server_url: str, s3_endpoint: str, bucket_name: str
) -> None:
    """As the role erasure runs as in production: a member of the tables' owner, no
    superuser (only an owner's VACUUM does anything; anyone else's skips the table with
    a warning), in a database owned by another role that is no superuser either."""
    number, name, text = "+33655501234", "Théodebert", "Votre colis 77-QX arrive demain"
    with psycopg.connect(owner_database_url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE clients, agent_types, auth.users, agent_sms, agent_sms_events CASCADE"
        )
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                            ).fetchone() == (False,)  # fmt: skip
        tenants = create_tenants(conn)
        # Often enough that ANALYZE would keep it among a column's most common values.
        for _ in range(40):
            insert_sms(conn, tenants.deployment_b, phone_number=number, first_name=name,
                       last_name=name, message_content=text)  # fmt: skip
        conn.execute(
            "INSERT INTO agent_sms_events (provider_message_sid, twilio_status,"
            " pending_phone_number) VALUES ('SM' || repeat('e', 32), 'sent', %s)",
            (number,),
        )
        conn.execute("ANALYZE agent_sms, agent_sms_events")
        sampled = statistics(conn)
        # The positive control: ANALYZE ran and sampled the table's other columns...
        assert ("agent_sms", "status") in sampled
        assert ("agent_sms", "sent_at") in sampled
        # ...and never these, so no statistic ever holds the number, names or text.
        for column in ("phone_number", "first_name", "last_name", "message_content",
                       "metadata"):  # fmt: skip
            assert ("agent_sms", column) not in sampled
        assert ("agent_sms_events", "pending_phone_number") not in sampled
    # Files on disk, read as the server's superuser: the number is in the table's, so the
    # search finds what is there.
    assert on_disk(server_url, owner_database_url, "agent_sms", number)

    as_retention = as_user(owner_database_url, RETENTION_LOGIN)
    retention = retention_for(retention_settings(as_retention, s3_endpoint, bucket_name))
    receipt = erasure.erase(retention, [number], requester="DPO test", request_id="stats-1")
    assert receipt.complete
    assert receipt.erasures[0].hot_rows == 40

    with psycopg.connect(owner_database_url, autocommit=True) as conn:
        conn.execute("ANALYZE agent_sms, agent_sms_events")
        everything = repr(statistics(conn))
        for trace in (number, number[1:], name, text):
            assert trace not in everything
        dead = conn.execute(
            "SELECT relname, n_dead_tup FROM pg_stat_user_tables"
            " WHERE relid IN ('agent_sms'::regclass, 'agent_sms_events'::regclass,"
            "                 'private.sms_recipients'::regclass)"
            " ORDER BY 1"
        ).fetchall()
    assert dead == [("agent_sms", 0), ("agent_sms_events", 0), ("sms_recipients", 0)]
    # The indexes that find a number hold none: a B-tree's inner pages and page bounds
    # kept an erased one, which no VACUUM removes.
    for index in ("idx_agent_sms_phone_number", "idx_agent_sms_events_pending_phone",
                  "private.sms_recipients_phone_number_excl"):  # fmt: skip
        assert not on_disk(server_url, owner_database_url, index, number), index


def on_disk(server_url: str, database_url: str, relation: str, value: str) -> bool:
    """Whether the relation's file holds these bytes, once the server has written every
    page out (a superuser's CHECKPOINT and file read)."""
    path = urlsplit(database_url).path
    with psycopg.connect(urlunsplit(urlsplit(server_url)._replace(path=path)),
                         autocommit=True) as conn:  # fmt: skip
        conn.execute("CHECKPOINT")
        row = conn.execute(
            "SELECT position(convert_to(%s, 'UTF8')"
            " IN pg_read_binary_file(pg_relation_filepath(%s::regclass))) > 0",
            (value, relation if "." in relation else f"public.{relation}"),
        ).fetchone()
    assert row is not None
    return bool(row[0])


def statistics(conn: psycopg.Connection) -> dict[tuple[str, str], tuple[Any, ...]]:
    """Every column statistic of the two tables, as pg_stats shows it."""
    return {
        (row[0], row[1]): row
        for row in conn.execute(
            "SELECT tablename, attname, most_common_vals::text, histogram_bounds::text"
            " FROM pg_stats WHERE schemaname = 'public'"
            "   AND tablename IN ('agent_sms', 'agent_sms_events')"
        )
    }


def test_an_erasure_that_could_not_vacuum_refuses_to_start(
    owner_database_url: str, s3_endpoint: str, bucket_name: str
) -> None:
    """Connected as a role that does not own the tables, VACUUM would skip them with a
    mere warning and the erased rows' old versions would stay: refused, nothing done."""
    stranger = "sms_erasure_stranger"
    with psycopg.connect(owner_database_url, autocommit=True) as conn:
        if conn.execute("SELECT FROM pg_roles WHERE rolname = %s", (stranger,)).fetchone() is None:
            conn.execute(f"CREATE ROLE {stranger} LOGIN")
    settings = retention_settings(as_user(owner_database_url, stranger), s3_endpoint, bucket_name)
    with pytest.raises(ConfigurationError, match="VACUUM"):
        erasure.erase(retention_for(settings), [ALICE], requester="DPO test", request_id="x")

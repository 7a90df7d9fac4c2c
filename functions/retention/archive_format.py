"""What an archived SMS is: one Parquet schema, and the object keys, written once.

An object holds every agent_sms column, in table order and under the same names,
plus ``status_events``: the SMS's status history from agent_sms_events, as JSON
text, so that archiving moves the whole record and loses nothing. uuids are text,
timestamps are UTC microseconds, money is decimal(10,4), ``metadata`` is JSON text.
Objects sit under Hive-style ``year=YYYY/month=MM/`` folders of ``sent_at`` (UTC),
so DuckDB, Athena or Spark read the archive without this code.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

# pyarrow is imported where it is used: erase needs it only when the number is in the
# archive, and it is a tenth of a second of every cold start otherwise.
_TEXT, _TIME, _MONEY, _RATE, _DATE, _INT = "text", "time", "money", "rate", "date", "int32"

# (column, how Postgres hands it over in its archived type, Parquet type, required)
_COLUMNS: tuple[tuple[str, str, str, bool], ...] = (
    ("id", "s.id::text", _TEXT, True),
    ("deployment_id", "s.deployment_id::text", _TEXT, True),
    ("call_id", "s.call_id::text", _TEXT, False),
    ("prospect_id", "s.prospect_id::text", _TEXT, False),
    ("sequence_id", "s.sequence_id::text", _TEXT, False),
    ("phone_number", "s.phone_number", _TEXT, True),
    ("first_name", "s.first_name", _TEXT, False),
    ("last_name", "s.last_name", _TEXT, False),
    ("message_content", "s.message_content", _TEXT, True),
    ("message_type", "s.message_type", _TEXT, False),
    ("character_count", "s.character_count", _INT, False),
    ("provider", "s.provider", _TEXT, False),
    ("provider_message_sid", "s.provider_message_sid", _TEXT, False),
    ("provider_status", "s.provider_status", _TEXT, False),
    ("status", "s.status", _TEXT, False),
    ("sent_at", "s.sent_at", _TIME, True),
    ("delivered_at", "s.delivered_at", _TIME, False),
    ("failed_at", "s.failed_at", _TIME, False),
    ("failure_reason", "s.failure_reason", _TEXT, False),
    ("provider_cost", "s.provider_cost", _MONEY, False),
    ("voipia_margin", "s.voipia_margin", _MONEY, False),
    ("billed_cost", "s.billed_cost", _MONEY, False),
    ("currency", "s.currency", _TEXT, False),
    ("workflow_id", "s.workflow_id", _TEXT, False),
    ("workflow_execution_id", "s.workflow_execution_id", _TEXT, False),
    ("metadata", "s.metadata::text", _TEXT, False),
    ("created_at", "s.created_at", _TIME, False),
    ("updated_at", "s.updated_at", _TIME, False),
    ("provider_amount", "s.provider_amount", _MONEY, False),
    ("provider_currency", "s.provider_currency", _TEXT, False),
    ("exchange_rate", "s.exchange_rate", _RATE, False),
    ("exchange_rate_date", "s.exchange_rate_date", _DATE, False),
)

COLUMN_NAMES = (*(name for name, *_ in _COLUMNS), "status_events")


@functools.cache
def schema() -> pa.Schema:
    import pyarrow as pa

    kinds = {_TEXT: pa.string(), _TIME: pa.timestamp("us", tz="UTC"),
             _MONEY: pa.decimal128(10, 4), _RATE: pa.decimal128(18, 8), _DATE: pa.date32(),
             _INT: pa.int32()}  # fmt: skip
    return pa.schema(
        [pa.field(name, kinds[kind], nullable=not required) for name, _, kind, required in _COLUMNS]
        + [pa.field("status_events", pa.string(), nullable=False)]
    )


# A row of agent_sms `s` in its archived form, column by column.
SELECT_COLUMNS = ", ".join(expression for _, expression, _, _ in _COLUMNS)
# The next batch due. Built from the constant column list above.
SELECT_DUE = (
    f"SELECT {SELECT_COLUMNS}"  # noqa: S608
    " FROM private.sms_due_for_archive(%s, %s) AS s ORDER BY s.sent_at, s.id"
)
# The status history of these SMS (by SID): read in its own statement, after the batch
# is locked, so that it includes every report applied to the rows as they are archived.
SELECT_STATUS_EVENTS = """
    SELECT e.provider_message_sid,
           jsonb_agg(jsonb_build_object(
               'twilio_status', e.twilio_status, 'error_code', e.error_code,
               'reported_at', e.reported_at, 'received_at', e.received_at,
               'source', e.source) ORDER BY e.id)::text,
           array_agg(e.id)
    FROM public.agent_sms_events AS e
    WHERE e.provider_message_sid = ANY (%s)
    GROUP BY e.provider_message_sid
"""
_SID = COLUMN_NAMES.index("provider_message_sid")


def sids_of(rows: Sequence[Sequence[Any]]) -> list[str | None]:
    """The provider SIDs of rows as SELECT_DUE gives them."""
    return [row[_SID] for row in rows]


@dataclass(frozen=True)
class Batch:
    table: pa.Table
    event_ids: list[int]
    """The status events the table holds, to delete with the rows."""


def batch_from_rows(rows: Sequence[Sequence[Any]], events: Sequence[Sequence[Any]]) -> Batch:
    """Rows as SELECT_DUE gives them, and their SMS's events as SELECT_STATUS_EVENTS does."""
    history = {sid: text for sid, text, _ in events}
    status_events = [history.get(row[_SID], "[]") for row in rows]
    return Batch(
        _table_from_rows(
            [(*row, events_json) for row, events_json in zip(rows, status_events, strict=True)]
        ),
        [event_id for _, _, ids in events for event_id in ids],
    )


def _table_from_rows(rows: Sequence[Sequence[Any]]) -> pa.Table:
    import pyarrow as pa

    fields = schema()
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in fields]
    return pa.Table.from_arrays(
        [pa.array(values, type=field.type) for values, field in zip(columns, fields, strict=True)],
        schema=fields,
    )


@dataclass(frozen=True)
class Encoded:
    data: bytes
    sha256: str


def encode(table: pa.Table) -> Encoded:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    return Encoded(data, hashlib.sha256(data).hexdigest())


def decode(data: bytes) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(data))
    if table.schema != schema():
        raise ValueError("the object's columns are not the archive's")
    return table


def object_key(prefix: str, table: pa.Table) -> str:
    """Named after the batch's first SMS and a digest of all its ids: a rerun of a
    batch a crash cut short writes the same key again, and no other batch can name an
    object already archived (even if an archived SMS is put back and archived again)."""
    first_sent_at: datetime = table["sent_at"][0].as_py().astimezone(UTC)
    digest = hashlib.sha256("\n".join(map(str, table["id"].to_pylist())).encode()).hexdigest()
    return (
        f"{prefix}year={first_sent_at:%Y}/month={first_sent_at:%m}/"
        f"{first_sent_at:%Y%m%dT%H%M%S%fZ}-{digest[:20]}.parquet"
    )


def numbers_in(table: pa.Table) -> Counter[str]:
    """How many rows each phone number has in the table."""
    return Counter(str(number) for number in table["phone_number"].to_pylist())


def sids_with_number(table: pa.Table, phone_number: str) -> list[str]:
    """The SIDs of the number's rows: erasure remembers them as erased."""
    import pyarrow as pa
    import pyarrow.compute as pc

    mine = table.filter(pc.equal(table["phone_number"], pa.scalar(phone_number)))
    return [str(sid) for sid in mine["provider_message_sid"].to_pylist() if sid is not None]


def without_number(table: pa.Table, phone_number: str) -> pa.Table:
    import pyarrow as pa
    import pyarrow.compute as pc

    return table.filter(pc.not_equal(table["phone_number"], pa.scalar(phone_number)))


def sent_at_range(table: pa.Table) -> tuple[datetime, datetime]:
    import pyarrow.compute as pc

    bounds = pc.min_max(table["sent_at"])
    return bounds["min"].as_py(), bounds["max"].as_py()

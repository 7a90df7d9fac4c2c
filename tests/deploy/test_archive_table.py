"""The archive as a dataset (serverless.yml's ArchiveTable): the Glue table Athena reads
has the columns retention writes, in their order and of their Parquet types, and its
partition projection finds every object at the key retention gives it. Both are
derived here from functions/retention/archive_format.py, so a column added to the
writer and not to the table fails."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest

from functions.retention import archive_format
from shared.settings import Settings
from tools.package import TEMPLATE

# What CloudFormation puts for ${ArchiveBucket} in the table's locations.
BUCKET = "the-archive-bucket"
# Retention's settings as deployed: no ARCHIVE_PREFIX in its environment (checked below)
# nor in the secrets it reads (test_deployment.py's SECRETS), so the default.
DEPLOYED = Settings.model_validate({"database_session_url": "postgresql://deployed"})


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    if not TEMPLATE.exists():
        pytest.fail("No packaged template: run `make package` (make test runs it first).")
    found: dict[str, Any] = json.loads(TEMPLATE.read_text(encoding="utf-8"))["Resources"]
    return found


@pytest.fixture(scope="module")
def table(resources: dict[str, Any]) -> dict[str, Any]:
    (found,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Glue::Table"]
    table_input: dict[str, Any] = found["TableInput"]
    return table_input


def hive_type(kind: pa.DataType) -> str:
    """The Hive DDL type under which Athena reads a Parquet column of this Arrow type."""
    if isinstance(kind, pa.Decimal128Type):
        return f"decimal({kind.precision},{kind.scale})"
    if isinstance(kind, pa.TimestampType):
        return "timestamp"
    names = {pa.string(): "string", pa.int32(): "int", pa.int64(): "bigint",
             pa.bool_(): "boolean", pa.date32(): "date", pa.float64(): "double"}  # fmt: skip
    if kind not in names:
        pytest.fail(f"the archive has a column of type {kind}: say here what Athena reads it as")
    return names[kind]


def test_the_table_has_the_archives_columns_in_order_and_of_its_types(
    table: dict[str, Any],
) -> None:
    written = [(field.name, hive_type(field.type)) for field in archive_format.schema()]
    columns = table["StorageDescriptor"]["Columns"]
    assert [(column["Name"], column["Type"]) for column in columns] == written
    assert [name for name, _ in written] == list(archive_format.COLUMN_NAMES)


def test_the_table_reads_parquet_in_the_archive_bucket_with_no_crawler(
    resources: dict[str, Any], table: dict[str, Any]
) -> None:
    storage, parameters = table["StorageDescriptor"], table["Parameters"]
    assert storage["SerdeInfo"]["SerializationLibrary"] == (
        "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    )
    assert "Parquet" in storage["InputFormat"]
    assert (parameters["classification"], parameters["projection.enabled"]) == ("parquet", "true")
    assert table["TableType"] == "EXTERNAL_TABLE"
    (database,) = [name for name, r in resources.items() if r["Type"] == "AWS::Glue::Database"]
    tables = [r for r in resources.values() if r["Type"] == "AWS::Glue::Table"]
    assert [t["Properties"]["DatabaseName"] for t in tables] == [{"Ref": database}]
    name = resources[database]["Properties"]["DatabaseInput"]["Name"]
    assert re.fullmatch("[a-z0-9_]+", name), "Athena's names: lower case, digits, underscores"
    assert re.fullmatch("[a-z0-9_]+", table["Name"])


def resolved(value: dict[str, str]) -> str:
    """A Fn::Sub of the table as CloudFormation resolves it: the bucket's name for
    ${ArchiveBucket}, and ${!name} written as ${name} for Athena."""
    text = value["Fn::Sub"].replace("${ArchiveBucket}", BUCKET)
    assert "${" not in text.replace("${!", ""), f"{text}: only the bucket is substituted"
    return text.replace("${!", "${")


def projected(template: str, parameters: dict[str, str], **values: int) -> str:
    """The location Athena projects for these partition values: each value written with
    the projection's digits, as Athena writes it."""
    for column, value in values.items():
        assert parameters[f"projection.{column}.type"] == "integer"
        low, high = map(int, parameters[f"projection.{column}.range"].split(","))
        assert low <= value <= high, f"{column}={value} is outside the projection's range"
        digits = int(parameters.get(f"projection.{column}.digits", "1"))
        template = template.replace(f"${{{column}}}", f"{value:0{digits}d}")
    assert "${" not in template, f"{template}: a partition column without a value"
    return template


def one_sms_batch(sent_at: datetime) -> pa.Table:
    """A batch of one SMS, as the writer builds it from the database's row."""
    row = dict.fromkeys(archive_format.COLUMN_NAMES[:-1]) | {
        "id": str(uuid.uuid4()), "deployment_id": str(uuid.uuid4()),
        "phone_number": "+33612345678", "message_content": "Bonjour", "sent_at": sent_at,
    }  # fmt: skip
    return archive_format.batch_from_rows([tuple(row.values())], []).table


@pytest.mark.parametrize(
    "sent_at",
    [
        datetime(2025, 1, 1, 0, 0, tzinfo=UTC),
        datetime(2025, 9, 30, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime.now(UTC),
    ],
)
def test_athena_projects_the_folder_the_writer_puts_each_object_in(
    resources: dict[str, Any], table: dict[str, Any], sent_at: datetime
) -> None:
    """The writer's own key, under the prefix the deployed functions use, lies in the
    folder partition projection computes from its year and month, directly."""
    parameters = table["Parameters"]
    assert [(key["Name"], key["Type"]) for key in table["PartitionKeys"]] == [
        ("year", "int"),
        ("month", "int"),
    ]
    functions = [
        r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::Function"
    ]
    writers = [p["Environment"]["Variables"] for p in functions
               if "ARCHIVE_BUCKET" in p["Environment"]["Variables"]]  # fmt: skip
    assert len(writers) == 2  # retention and erase
    for variables in writers:
        assert variables["ARCHIVE_BUCKET"] == {"Ref": "ArchiveBucket"}
        assert "ARCHIVE_PREFIX" not in variables
    key = archive_format.object_key(DEPLOYED.archive_prefix, one_sms_batch(sent_at))
    url = f"s3://{BUCKET}/{key}"

    folder = projected(
        resolved(parameters["storage.location.template"]),
        parameters,
        year=sent_at.year,
        month=sent_at.month,
    )
    assert url.startswith(folder), (url, folder)
    assert "/" not in url.removeprefix(folder)
    assert folder.startswith(resolved(table["StorageDescriptor"]["Location"]))


def test_the_projected_years_cover_the_archive_now_and_for_decades(table: dict[str, Any]) -> None:
    """Every year an object can be in today (its SMS sent within the retention horizon),
    and every year to come for a long while."""
    low, high = map(int, table["Parameters"]["projection.year.range"].split(","))
    now = datetime.now(UTC)
    horizon_years = DEPLOYED.archive_expire_after_days // 365 + 1
    assert low <= now.year - horizon_years
    assert now.year + 50 <= high

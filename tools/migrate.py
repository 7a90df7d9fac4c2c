"""Apply supabase/local (optional) and supabase/migrations to a database, each file once.

    python -m tools.migrate [--local] [DATABASE_URL]

Files apply in name order, each in its own transaction together with the record
that it was applied, so a failing file stops the run, names itself and leaves no
trace. Migrations are recorded in supabase_migrations.schema_migrations, the table
the Supabase CLI keeps, so `supabase db push` and this tool agree on what is applied.
The local files (what production Supabase already has) are recorded beside it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psycopg

ROOT = Path(__file__).resolve().parent.parent
LOCAL_DIR = ROOT / "supabase" / "local"
MIGRATIONS_DIR = ROOT / "supabase" / "migrations"
SEED_FILE = ROOT / "supabase" / "seed.sql"

# The roles the migrations create (see 20261206000100_roles_and_privileges.sql): the
# transaction-pooled functions' login, retention's, and the owner of the tables.
API_LOGIN = "sms_api"
RETENTION_LOGIN = "sms_retention"
DATA_OWNER = "sms_data_owner"

_MIGRATION_NAME = re.compile(r"^(\d{14})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x5_3_4D_53  # advisory lock: one migrator at a time per database

_TRACKING_SQL = """
CREATE SCHEMA IF NOT EXISTS supabase_migrations;
CREATE TABLE IF NOT EXISTS supabase_migrations.schema_migrations (
    version text PRIMARY KEY,
    statements text[],
    name text
);
CREATE TABLE IF NOT EXISTS supabase_migrations.local_setup (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


class MigrationError(Exception):
    """A file failed; nothing of it was applied."""


_RECORD_SQL = {
    "local": "INSERT INTO supabase_migrations.local_setup (name) VALUES (%(key)s)",
    "migration": "INSERT INTO supabase_migrations.schema_migrations (version, name)"
    " VALUES (%(key)s, %(name)s)",
}


@dataclass(frozen=True)
class SqlFile:
    path: Path
    key: str  # what the tracking table records: the file name, or a migration's version
    kind: Literal["local", "migration"]


def pending_files(conn: psycopg.Connection, *, include_local: bool) -> list[SqlFile]:
    files: list[SqlFile] = []
    if include_local:
        files += [SqlFile(p, p.name, "local") for p in sorted(LOCAL_DIR.glob("*.sql"))]
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise MigrationError(
                f"{path.name}: migration files must be named <14-digit timestamp>_<name>.sql"
            )
        files.append(SqlFile(path, match.group(1), "migration"))
    applied = {
        row[0]
        for row in conn.execute(
            "SELECT version FROM supabase_migrations.schema_migrations"
            " UNION ALL SELECT name FROM supabase_migrations.local_setup"
        )
    }
    return [f for f in files if f.key not in applied]


def apply(
    conninfo: str, *, include_local: bool, report: Callable[[str], None] = print
) -> list[str]:
    """Apply what is pending; return the names applied."""
    applied: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(_TRACKING_SQL)
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            for sql_file in pending_files(conn, include_local=include_local):
                _apply_one(conn, sql_file)
                report(f"applied {sql_file.path.relative_to(ROOT)}")
                applied.append(sql_file.path.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied


def _apply_one(conn: psycopg.Connection, sql_file: SqlFile) -> None:
    name = sql_file.path.stem.partition("_")[2]
    try:
        with conn.transaction():
            conn.execute(sql_file.path.read_bytes())
            conn.execute(_RECORD_SQL[sql_file.kind], {"key": sql_file.key, "name": name})
    except psycopg.Error as exc:
        where = sql_file.path.relative_to(ROOT)
        raise MigrationError(f"{where} failed and was not applied: {exc}".strip()) from exc


def load_seed(conninfo: str) -> None:
    """Load the demo dataset (idempotent: fixed ids, ON CONFLICT DO NOTHING)."""
    with psycopg.connect(conninfo) as conn:
        conn.execute(SEED_FILE.read_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database_url", nargs="?", default=os.environ.get("DATABASE_URL"))
    parser.add_argument(
        "--local", action="store_true", help="also apply supabase/local (never on production)"
    )
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("give a database URL or set DATABASE_URL")
    try:
        applied = apply(args.database_url, include_local=args.local)
    except (MigrationError, psycopg.OperationalError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(applied)} file(s) applied; the database is up to date.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Test session: one real Postgres database with local + migrations applied.

Without DATABASE_URL the session starts its own embedded Postgres; with it, the
session creates a database of its own on that server and drops it at the end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from tests.support import openapi_contract
from tests.support.builders import SMS_TABLES, Shop, Tenants, create_shop, create_tenants
from tools.embedded import as_user, embedded_postgres, throwaway_database
from tools.migrate import API_LOGIN, RETENTION_LOGIN, apply
from tools.pooler import transaction_pooler


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A Postgres server on which the session may create and drop databases."""
    if url := os.environ.get("DATABASE_URL"):
        yield url
    else:
        with embedded_postgres() as url:
            yield url


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    with throwaway_database(server_url) as url:
        apply(url, include_local=True, report=lambda _: None)
        yield url


# The database's owner as on Supabase, where `postgres` owns what the migrations create
# but is no superuser: what it may not do (VACUUM a table it does not own, write a
# catalog) fails there, not in a suite run by a superuser.
OWNER_ROLE = "sms_owner"


@pytest.fixture(scope="session")
def owner_database_url(server_url: str, database_url: str) -> Iterator[str]:
    """A fresh database owned by OWNER_ROLE, which applies supabase/local and the
    migrations itself. (database_url has made the API roles, cluster-wide.)"""
    with psycopg.connect(server_url, autocommit=True) as conn:
        if (
            conn.execute("SELECT FROM pg_roles WHERE rolname = %s", (OWNER_ROLE,)).fetchone()
            is None
        ):
            conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(OWNER_ROLE)))
        # As Supabase's postgres, which created these roles: since PostgreSQL 16, only a
        # role's creator (or a holder of its ADMIN option) may grant or alter it, and only
        # a CREATEDB role may set NOCREATEDB.
        conn.execute(
            sql.SQL("ALTER ROLE {} LOGIN CREATEROLE CREATEDB").format(sql.Identifier(OWNER_ROLE))
        )
        conn.execute(
            sql.SQL(
                "GRANT anon, authenticated, service_role, authenticator, sms_data_owner,"
                " sms_api, sms_retention TO {} WITH ADMIN OPTION"
            ).format(sql.Identifier(OWNER_ROLE))
        )
    with throwaway_database(server_url, prefix="sms_owned") as url:
        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(name), sql.Identifier(OWNER_ROLE)
                )
            )
        owner_url = as_user(url, OWNER_ROLE)
        apply(owner_url, include_local=True, report=lambda _: None)
        yield owner_url


@pytest.fixture(scope="session")
def pooled_database_url(database_url: str) -> Iterator[str]:
    """The session's database through PgBouncer in transaction mode, as the functions'
    login role: the path they take in production, through Supabase's transaction pooler."""
    with transaction_pooler(as_user(database_url, API_LOGIN), users=(API_LOGIN,)) as url:
        yield url


@pytest.fixture(scope="session")
def retention_database_url(database_url: str) -> str:
    """The session's database as retention's login role: the functions' tests run as
    production's roles, with no more rights."""
    return as_user(database_url, RETENTION_LOGIN)


@pytest.fixture(scope="session")
def admin_conn(database_url: str) -> Iterator[psycopg.Connection]:
    """A superuser connection (autocommit): sets up data, reads back the truth."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def clean(admin_conn: psycopg.Connection) -> psycopg.Connection:
    """Empty every data table before the test."""
    admin_conn.execute(
        "TRUNCATE public.clients, public.agent_types, auth.users, public.agent_sms_events,"
        " private.sms_reconcile_checks, private.sms_archive_objects, private.sms_erasures,"
        f" private.exchange_rates, {', '.join(SMS_TABLES)} CASCADE"
    )
    admin_conn.execute("UPDATE private.billing_settings SET currency = 'EUR'")
    return admin_conn


@pytest.fixture
def tenants(clean: psycopg.Connection) -> Tenants:
    """Two clients with deployments, users of every kind and a few SMS each."""
    return create_tenants(clean)


@pytest.fixture
def shop(clean: psycopg.Connection) -> Shop:
    """Two clients' SMS whose metrics are known by construction."""
    return create_shop(clean)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked after_all go last: they read what every other test observed."""
    items.sort(key=lambda item: item.get_closest_marker("after_all") is not None)


def pytest_deselected(items: list[pytest.Item]) -> None:
    openapi_contract.DESELECTED.extend(item.nodeid for item in items)

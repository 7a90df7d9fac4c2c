"""classify: one mapping from Postgres/PostgREST failures to the service's errors."""

from __future__ import annotations

import uuid

import pytest

from shared.db import Caller, PostgresFailure, classify
from shared.errors import (
    ConflictError,
    DatabaseUnavailableError,
    ForbiddenError,
    InternalError,
    InvalidInputError,
    ServiceError,
    UnauthorizedError,
    UnavailableError,
)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("23505", ConflictError),
        ("23503", InvalidInputError),
        ("23514", InvalidInputError),
        ("23502", InvalidInputError),
        ("22P02", InvalidInputError),
        ("22003", InvalidInputError),
        ("42501", ForbiddenError),
        ("08006", DatabaseUnavailableError),
        ("57P01", DatabaseUnavailableError),
        ("53300", DatabaseUnavailableError),
        ("PGRST000", DatabaseUnavailableError),
        ("PGRST003", DatabaseUnavailableError),
        ("503", DatabaseUnavailableError),
        ("40001", UnavailableError),
        ("40P01", UnavailableError),
        ("57014", UnavailableError),
        ("502", DatabaseUnavailableError),
        ("PGRST301", UnauthorizedError),
        ("PGRST303", UnauthorizedError),
        ("VP500", InternalError),
        ("42883", InternalError),
        ("PGRST202", InternalError),
        ("XX000", InternalError),
        (None, InternalError),
    ],
)
def test_each_failure_class_maps_to_one_error(
    code: str | None, expected: type[ServiceError]
) -> None:
    error = classify(PostgresFailure(code, "whatever"))
    assert type(error) is expected
    assert error.diagnostic == PostgresFailure(code, "whatever")


def test_fields_are_read_from_postgres_wording() -> None:
    fk = PostgresFailure(
        "23503",
        'insert or update on table "agent_sms" violates foreign key constraint'
        ' "agent_sms_call_id_fkey"',
        'Key (call_id)=(0b0c...) is not present in table "agent_calls".',
    )
    check = PostgresFailure(
        "23514",
        'new row for relation "agent_sms" violates check constraint'
        ' "agent_sms_provider_cost_check"',
        "Failing row contains (+33639980000, ...).",
    )
    not_null = PostgresFailure(
        "23502", 'null value in column "phone_number" of relation "agent_sms" violates not-null'
    )
    assert classify(fk).field == "call_id"
    assert classify(check).field == "provider_cost"
    assert classify(not_null).field == "phone_number"
    assert "+33639980000" not in classify(check).message


def test_postgres_messages_never_become_caller_messages() -> None:
    error = classify(PostgresFailure("22P02", 'invalid input syntax for type uuid: "+33639980000"'))
    assert "+33639980000" not in error.message
    assert "uuid" not in error.message


def test_only_mapped_sql_raised_codes_pass_their_message_through() -> None:
    error = classify(PostgresFailure("VP500", "internal detail from SQL"))
    assert "internal detail" not in error.message


def test_a_subject_that_is_not_a_user_id_is_unauthorized() -> None:
    with pytest.raises(UnauthorizedError):
        _ = Caller({"role": "authenticated", "sub": "admin"}).role
    assert Caller({"role": "authenticated", "sub": str(uuid.uuid4())}).role == "authenticated"


def test_a_refused_login_is_not_the_database_being_unavailable() -> None:
    """New credentials fix it, not waiting: the spill-over queue must not park for it."""
    from shared.db import credentials_refused

    error = credentials_refused("password authentication failed", lambda: True, "DATABASE_URL", 5)
    assert type(error) is UnavailableError

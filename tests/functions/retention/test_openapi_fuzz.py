"""Schemathesis fuzzes retention and erase against openapi.yaml, over real HTTP into
the session's real Postgres and moto's S3 (see tests/openapi_fuzz)."""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from functions.retention import archive
from shared.settings import Settings
from tests.support.openapi_fuzz import SCHEMA, Case, bounded, call_and_check
from tests.support.retention import ALICE, PRIVACY_KEY, SCHEDULER_KEY, retention_for
from tests.support.served import LocalFunction

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def urls() -> Iterator[dict[str, str]]:
    with ExitStack() as stack:
        yield {
            target: stack.enter_context(LocalFunction("retention", target)).url
            for target in ("retention", "erase")
        }


@pytest.fixture
def services(old_sms: list[uuid.UUID], served_settings: Settings) -> Settings:
    """SMS due for archiving, a fresh bucket, and both kinds of key."""
    return served_settings


@SCHEMA.include(operation_id="retention").parametrize()
@bounded
def test_retention(case: Case, urls: dict[str, str], services: Settings) -> None:
    call_and_check(case, urls["retention"], Authorization=f"Bearer {SCHEDULER_KEY}")


@pytest.fixture
def archived(services: Settings) -> None:
    """The SMS due for archiving are in the archive; the others are still in agent_sms."""
    archive.run(retention_for(services))


@SCHEMA.include(operation_id="erase").parametrize()
@bounded
def test_erase(case: Case, urls: dict[str, str], archived: None) -> None:
    # In half the examples a number that is stored, both in agent_sms and in the
    # archive, takes the place of a well-formed string, so erasure has work to do.
    body = case.body
    if isinstance(body, dict) and zlib.crc32(repr(body).encode()) % 2 == 0:
        for name in ("phone_numbers", "phone_number"):
            numbers = body.get(name)
            if isinstance(numbers, str):
                body[name] = ALICE
            elif isinstance(numbers, list) and numbers and isinstance(numbers[0], str):
                numbers[0] = ALICE
    call_and_check(case, urls["erase"], Authorization=f"Bearer {PRIVACY_KEY}")

"""Schemathesis fuzzes exchange_rates against openapi.yaml, over real HTTP into the
session's real Postgres, the ECB played by tools/fake_ecb.py (see tests/openapi_fuzz).
It takes no body, no parameter and no credentials: what is generated is mostly the
request id and other methods."""

from __future__ import annotations

import pytest

from tests.support.openapi_fuzz import SCHEMA, Case, bounded, call_and_check
from tools.fake_ecb import FakeEcb

pytestmark = pytest.mark.db


@SCHEMA.include(operation_id="exchange_rates").parametrize()
@bounded
def test_exchange_rates(case: Case, rates_url: str, ecb: FakeEcb) -> None:
    call_and_check(case, rates_url)

"""Schemathesis against the functions as the tests serve them: what
tests/functions/test_openapi_fuzz.py and tests/retention/test_openapi_fuzz.py share.

Each operation is fuzzed on its own function's server, with credentials that pass the
auth layer, so that what is generated reaches validation, the database and S3. The
example count is bounded so the whole run stays within a minute or two in CI, and the
generation is derandomized so a run that finds something finds it again.
"""

from __future__ import annotations

import os
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.support.openapi_contract import SPEC_PATH

SCHEMA = schemathesis.openapi.from_path(SPEC_PATH)
Case = schemathesis.Case[Any]

# No 5xx; every status, header, content type and body as documented; whatever breaks
# the request schema is refused; other methods are 405 with Allow; and credentials are
# really checked. (Not positive_data_acceptance: a request the schema allows may still
# name a deployment that does not exist, which is a 422.)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    missing_required_header,
    unsupported_method,
    allow_header_conformance,
    ignored_auth,
]

# Examples per operation, besides Schemathesis' own coverage cases: about 40 s for all
# six here. OPENAPI_FUZZ_EXAMPLES=2000 digs deeper, by hand.
MAX_EXAMPLES = int(os.environ.get("OPENAPI_FUZZ_EXAMPLES", "300"))

bounded = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    # One database, one server and one bucket serve every example of an operation.
    suppress_health_check=list(HealthCheck),
)


def origin(function_url: str) -> str:
    """A LocalFunction's URL without its trailing "/": the spec's paths follow it."""
    return function_url.rstrip("/")


def call_and_check(case: Case, function_url: str, **headers: str) -> Any:
    response = case.call(base_url=origin(function_url), headers=headers, timeout=30)
    case.validate_response(response, checks=CHECKS, headers=headers)
    return response


def send_prepared(
    case: Case, prepared: requests.PreparedRequest, kwargs: dict[str, Any]
) -> requests.Response:
    with requests.Session() as session:
        response = session.send(prepared, timeout=30)
    # The headers set here (a signature) count as credentials given, not generated.
    headers = dict(prepared.headers)
    case.validate_response(response, checks=CHECKS, headers=headers, transport_kwargs=kwargs)
    return response

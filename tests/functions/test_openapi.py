"""openapi.yaml is valid OpenAPI 3.1, and it and the code agree on every entry point,
method and status, in both directions.

Where the code side comes from, so that it cannot drift from the code silently:

- **Entry points and methods** are read from the code itself: every function in
  functions/*/main.py decorated with ``@endpoint(...)`` (parsed with ``ast``), with the
  methods the decorator is given. They must be exactly the spec's operationIds and
  methods.
- **Statuses** are the ones the functions really answered during this test session.
  Every function the tests serve goes through tests/support/served.py's
  ``LocalFunction``, which notes each response's (entry point, method, status)
  (tests/support/openapi_contract.py). That covers every endpoint test and the Schemathesis
  runs, so a status that any test provokes is seen here, whether or not anyone
  remembered to add it to a list. This module runs after every other test (see
  ``pytest_collection_modifyitems`` in tests/conftest.py) and checks:

  - code → spec: every answer given is documented for that operation (any other
    method must have been answered 405, which the operation documents);
  - spec → code: every documented status was answered by some test. This half needs
    the whole suite, so it is skipped, saying so, when only part of it ran. 500 is
    the one exception: the boundary (``shared.http.endpoint``, every entry point's
    wrapper, as checked above) turns any unexpected fault into it, which
    tests/unit/test_http_boundary.py shows; so it is required on every operation
    rather than provoked in each.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV31SpecValidator

from tests.support import openapi_contract
from tests.support.openapi_contract import ROOT, documented, operations, spec

pytestmark = pytest.mark.after_all

# Answered by the boundary for any fault, on every entry point (see the docstring).
BOUNDARY_ONLY = 500


def entry_points_in_code() -> dict[str, frozenset[str]]:
    """Every @endpoint function of functions/*/main.py, with the methods it takes."""
    found: dict[str, frozenset[str]] = {}
    for source in sorted((ROOT / "functions").glob("*/main.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                if (
                    isinstance(decorator, ast.Call)
                    and isinstance(decorator.func, ast.Name)
                    and decorator.func.id == "endpoint"
                ):
                    methods = [ast.literal_eval(arg) for arg in decorator.args]
                    found[node.name] = frozenset(methods)
    return found


def test_the_spec_is_valid_openapi_3_1() -> None:
    assert spec()["openapi"].startswith("3.1.")
    validate(spec(), cls=OpenAPIV31SpecValidator)


def test_every_entry_point_is_in_the_spec_with_its_method_and_nothing_else() -> None:
    in_code = entry_points_in_code()
    assert in_code, "no @endpoint function found: has the entry point layout changed?"
    in_spec = {name: frozenset({method}) for name, (_, method, _) in operations().items()}
    assert in_spec == in_code


def test_what_the_boundary_adds_is_documented_on_every_operation() -> None:
    for name, (_, _, operation) in operations().items():
        responses = operation["responses"]
        assert {"405", "500"} <= set(responses), name
        assert "Allow" in _headers(responses["405"]), name
        assert "X-Request-Id" in _headers(responses["200"]), name
        if "503" in responses:
            assert "Retry-After" in _headers(responses["503"]), name


def _headers(response: dict[str, object]) -> dict[str, object]:
    ref = response.get("$ref")
    if isinstance(ref, str):
        response = spec()["components"]["responses"][ref.rsplit("/", 1)[1]]
    headers = response.get("headers", {})
    assert isinstance(headers, dict)
    return headers


def answered() -> set[tuple[str, str, int]]:
    """What the functions answered this session, each under its operation's method
    (another method's 405 counts as the operation's 405)."""
    methods = {name: method for name, (_, method, _) in operations().items()}
    seen = set()
    for name, method, status in openapi_contract.ANSWERED:
        if name in methods and method != methods[name] and status == 405:
            method = methods[name]
        seen.add((name, method, status))
    return seen


def test_every_answer_the_functions_gave_is_in_the_spec() -> None:
    undocumented = answered() - documented()
    assert not undocumented, f"answered but not in openapi.yaml: {sorted(undocumented)}"


def test_every_status_in_the_spec_is_one_the_functions_gave(request: pytest.FixtureRequest) -> None:
    if not _whole_suite(request.config):
        pytest.skip("needs the whole suite: only a full run provokes every status")
    expected = {key for key in documented() if key[2] != BOUNDARY_ONLY}
    never = expected - answered()
    assert not never, f"in openapi.yaml but no test provoked it: {sorted(never)}"


def _whole_suite(config: pytest.Config) -> bool:
    tests_dir = Path(str(config.rootpath)) / "tests"
    targets = [Path(arg.split("::", 1)[0]).resolve() for arg in config.args]
    whole_tree = all(target == tests_dir.resolve() for target in targets)
    return whole_tree and not openapi_contract.DESELECTED

"""openapi.yaml is valid OpenAPI 3.1, and it and the code agree on every entry point,
method and status, in both directions.

Where the code side comes from, so that it cannot drift from the code silently:

- **Entry points and methods** are read from the code itself: every function in
  functions/*/main.py decorated with ``@endpoint(...)`` (parsed with ``ast``), with the
  methods the decorator is given, and OPTIONS when it is also decorated with
  ``@cross_origin`` (shared/cors.py), which answers browsers' preflights. They must be
  exactly the spec's paths (``/<entry point>``) and methods; an operation's id is its
  entry point's name, a preflight's ``<entry point>_preflight``.
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

from shared import cors
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
            preflight = {"OPTIONS"} if "cross_origin" in _plain_decorators(node) else set()
            for decorator in node.decorator_list:
                if (
                    isinstance(decorator, ast.Call)
                    and isinstance(decorator.func, ast.Name)
                    and decorator.func.id == "endpoint"
                ):
                    methods = {ast.literal_eval(arg) for arg in decorator.args}
                    found[node.name] = frozenset(methods | preflight)
    return found


def _plain_decorators(node: ast.FunctionDef) -> set[str]:
    return {d.id for d in node.decorator_list if isinstance(d, ast.Name)}


def entry_point_of(path: str) -> str:
    return path.removeprefix("/")


def test_the_spec_is_valid_openapi_3_1() -> None:
    assert spec()["openapi"].startswith("3.1.")
    validate(spec(), cls=OpenAPIV31SpecValidator)


def test_every_entry_point_is_in_the_spec_with_its_methods_and_nothing_else() -> None:
    in_code = entry_points_in_code()
    assert in_code, "no @endpoint function found: has the entry point layout changed?"
    in_spec: dict[str, frozenset[str]] = {}
    for name, (path, method, _) in operations().items():
        entry_point = entry_point_of(path)
        assert name == (f"{entry_point}_preflight" if method == "OPTIONS" else entry_point)
        in_spec[entry_point] = in_spec.get(entry_point, frozenset()) | {method}
    assert in_spec == in_code


def test_the_preflights_in_the_spec_allow_what_the_code_allows() -> None:
    headers = spec()["components"]["headers"]
    assert headers["Access-Control-Expose-Headers"]["schema"]["const"] == ", ".join(
        cors.EXPOSE_HEADERS
    )
    preflights = [op for _, method, op in operations().values() if method == "OPTIONS"]
    assert preflights
    for operation in preflights:
        allowed = operation["responses"]["204"]["headers"]
        assert allowed["Access-Control-Allow-Methods"]["schema"]["const"] == ", ".join(
            cors.ALLOW_METHODS
        )
        assert allowed["Access-Control-Allow-Headers"]["schema"]["const"] == ", ".join(
            cors.ALLOW_HEADERS
        )
        assert "Access-Control-Allow-Credentials" not in allowed
        assert operation["security"] == []


def test_what_the_boundary_adds_is_documented_on_every_operation() -> None:
    for name, (_, _, operation) in operations().items():
        responses = operation["responses"]
        assert {"405", "500"} <= set(responses), name
        assert "Allow" in _headers(responses["405"]), name
        successes = [status for status in responses if status.startswith("2")]
        assert successes, name
        assert all("X-Request-Id" in _headers(responses[status]) for status in successes), name
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
    """What the functions answered this session, each under the operation of its entry
    point and method (a method without one: its 405 counts as the entry point's own
    operation's)."""
    operation_of = {
        (entry_point_of(path), method): name for name, (path, method, _) in operations().items()
    }
    own_method = {entry: method for (entry, method) in operation_of if method != "OPTIONS"}
    seen = set()
    for entry_point, method, status in openapi_contract.ANSWERED:
        if (entry_point, method) not in operation_of and status == 405:
            method = own_method.get(entry_point, method)
        seen.add((operation_of.get((entry_point, method), entry_point), method, status))
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

"""The shipped n8n workflow, evaluated with n8n's own expression engine (npm n8n-workflow,
run with Node.js by tests/support/n8n_expression.cjs), as n8n resolves a node's
parameters while it runs."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "docs" / "n8n" / "send-and-record-sms.json"
TRIGGER = "When called by another workflow"
_EVALUATOR = Path(__file__).with_name("n8n_expression.cjs")


def workflow() -> dict[str, Any]:
    return dict(json.loads(WORKFLOW.read_text("utf-8")))


def nodes() -> dict[str, dict[str, Any]]:
    return {node["name"]: node for node in workflow()["nodes"]}


def evaluate(
    node: str,
    parameter: str,
    *,
    previous: str,
    items: list[dict[str, Any]],
    run_data: dict[str, list[dict[str, Any]]] | None = None,
    run_index: int = 0,
    execution_id: str = "1234",
) -> Any:
    """The value of ``parameter`` (a dotted path into the node's parameters) for the
    first of ``items``, which came from the node ``previous``."""
    node_js = shutil.which("node")
    assert node_js, "Node.js is needed (make package installs the npm dependencies with it)"
    assert (ROOT / "node_modules" / "n8n-workflow").is_dir(), (
        "npm's n8n-workflow is missing: run `make package` (npm ci)"
    )
    request = {
        "workflow": workflow(), "node": node, "parameter": parameter, "runIndex": run_index,
        "itemIndex": 0, "input": {"previousNode": previous, "items": items},
        "runData": run_data or {}, "executionId": execution_id,
    }  # fmt: skip
    done = subprocess.run(
        [node_js, str(_EVALUATOR)], input=json.dumps(request), capture_output=True, text=True,
        cwd=ROOT, check=True, timeout=60,
    )  # fmt: skip
    answer = json.loads(done.stdout)
    assert "error" not in answer, answer["error"]
    return answer.get("value")


def twilio_output(**overrides: Any) -> dict[str, Any]:
    """What n8n's Twilio node outputs for a message it sent: the Messages API's JSON."""
    return {
        "sid": "SM0123456789abcdef0123456789abcdef",
        "to": "+33612345678",
        "from": "+33700000000",
        "body": "Bonjour",
        "status": "queued",
        "date_created": "Tue, 24 Nov 2026 10:00:00 +0000",
        "price": None,
    } | overrides


def sent_through_twilio(trigger: dict[str, Any], sent: dict[str, Any]) -> dict[str, Any]:
    """The runs of the trigger and of the Twilio node before "Record the SMS"."""
    return {
        TRIGGER: [{"source": None, "items": [[trigger]]}],
        "Twilio": [{"source": TRIGGER, "items": [[sent]]}],
    }

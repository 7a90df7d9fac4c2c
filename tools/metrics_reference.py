"""get_sms_metrics recomputed in Python from the rows themselves: an independent
reference for the SQL (tests/db/test_metrics.py) and for the gauntlet (benchmarks/soak)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any


def money(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def pct(part: Decimal | int, base: Decimal | int) -> Decimal | None:
    return money(Decimal(100) * Decimal(part) / Decimal(base)) if base else None


def reference_period(rows: list[dict[str, Any]]) -> dict[str, Any]:
    total = len(rows)
    by = {s: sum(r["status"] == s for r in rows) for s in ("delivered", "failed", "sent")}
    billed = [
        r["provider_cost"] + r["voipia_margin"] for r in rows if r["provider_cost"] is not None
    ]
    cost = sum(billed, Decimal(0))
    margin = sum((r["voipia_margin"] for r in rows), Decimal(0))
    chars = [len(r["message_content"]) for r in rows]
    delays = [(r["delivered_at"] - r["sent_at"]).total_seconds() for r in rows
              if r["status"] == "delivered" and r["delivered_at"] is not None]  # fmt: skip
    linked = sum(r["call_id"] is not None for r in rows)
    return {
        "total_sms": total, "delivered_sms": by["delivered"], "failed_sms": by["failed"],
        "sent_sms": by["sent"], "delivery_rate": pct(by["delivered"], total),
        "failure_rate": pct(by["failed"], total), "total_cost": money(cost),
        "total_provider_cost": money(sum((r["provider_cost"] for r in rows
                                          if r["provider_cost"] is not None), Decimal(0))),
        "total_margin": money(margin),
        # As the seed's figures imply: total_margin / total_cost.
        "margin_percentage": pct(margin, cost) if billed else None,
        "avg_cost_per_sms": money(cost / total) if total and billed else None,
        "avg_characters": int((Decimal(sum(chars)) / total).quantize(Decimal(1), ROUND_HALF_UP))
        if total else None,
        "min_characters": min(chars, default=None), "max_characters": max(chars, default=None),
        "unique_recipients": len({r["phone_number"] for r in rows}),
        "active_deployments": len({r["deployment_id"] for r in rows}),
        "active_workflows": len({r["workflow_id"] for r in rows if r["workflow_id"]}),
        "sms_linked_to_calls": linked, "call_linkage_rate": pct(linked, total),
        "avg_delivery_time_seconds": money(Decimal(sum(delays)) / len(delays)) if delays else None,
    }  # fmt: skip


def as_json_numbers(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: as_json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_json_numbers(v) for v in value]
    return float(value) if isinstance(value, Decimal) else value


def reference_by_message_type(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kinds = sorted(
        {r["message_type"] for r in rows},
        key=lambda kind: (-sum(r["message_type"] == kind for r in rows), kind),
    )
    result = []
    for kind in kinds:
        of = [r for r in rows if r["message_type"] == kind]
        delivered = sum(r["status"] == "delivered" for r in of)
        billed = [
            r["provider_cost"] + r["voipia_margin"] for r in of if r["provider_cost"] is not None
        ]
        result.append(
            {
                "message_type": kind,
                "count": len(of),
                "delivered": delivered,
                "delivery_rate": pct(delivered, len(of)),
                "cost": money(sum(billed, Decimal(0))),
            }
        )
    return result

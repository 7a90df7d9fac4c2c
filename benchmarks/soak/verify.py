"""After the day: the whole state against the driver's ground truth.

The state is read directly (Postgres, every version of every archive object, the
spill-over queue and its dead-letter queue, the functions' logs); only each user's
metrics go through the endpoint, since what they may see is the point.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import boto3
import httpx
import psycopg
from psycopg.rows import dict_row

from benchmarks.soak.plan import CONTENT_MARK, MARGIN, Plan, Sms
from benchmarks.soak.stack import KEYS, S3_CREDENTIALS, Stack, queue_depth
from functions.retention.archive_format import decode
from tools.metrics_reference import as_json_numbers, reference_by_message_type, reference_period

_E164 = re.compile(rb"\+\d{8,15}")


@dataclass
class Findings:
    lost: list[str] = field(default_factory=list)  # an SMS that is nowhere
    duplicated: list[str] = field(default_factory=list)
    # A wrong value, a row where it must not be, or a status history that does not add up.
    wrong: list[str] = field(default_factory=list)
    erased_leaks: list[str] = field(default_factory=list)
    metrics_mismatches: list[str] = field(default_factory=list)
    log_leaks: list[str] = field(default_factory=list)
    checked_hot: int = 0
    checked_archived: int = 0

    def by_kind(self) -> list[tuple[str, list[str]]]:
        return [
            ("lost", self.lost), ("duplicated", self.duplicated), ("wrong", self.wrong),
            ("erased but still present", self.erased_leaks),
            ("metrics mismatches", self.metrics_mismatches), ("log leaks", self.log_leaks),
        ]  # fmt: skip

    @property
    def problems(self) -> int:
        return sum(len(found) for _, found in self.by_kind())


def check(plan: Plan, stack: Stack, finished: datetime) -> Findings:
    findings = Findings()
    with psycopg.connect(stack.database_url, row_factory=dict_row) as conn:
        hot = conn.execute("SELECT * FROM agent_sms").fetchall()
        events = conn.execute("SELECT * FROM agent_sms_events").fetchall()
        index = {r["phone_hash"] for r in conn.execute(
            "SELECT phone_hash FROM private.sms_archive_phone_index")}  # fmt: skip
        erasures = conn.execute(
            "SELECT phone_hash, completed_at FROM private.sms_erasures"
        ).fetchall()
        # The SIDs of SMS that were recorded, then erased (those refused as erased were
        # never recorded, and are not here).
        erased_sids = {bytes(r["sid_sha256"]) for r in conn.execute(
            "SELECT sid_sha256 FROM private.sms_erased_sids")}  # fmt: skip
        codes = sorted({s.error_code for s in plan.sms if s.error_code is not None})
        reasons = {
            r["code"]: r["reason"]
            for r in conn.execute(
                "SELECT code, private.twilio_failure_reason(code) AS reason"
                " FROM unnest(%s::integer[]) AS code",
                (codes,),
            )
        }
    archived = _archived_rows(stack)
    _check_hot(plan, hot, finished, reasons, findings)
    _check_events(plan, hot, events, findings)
    _check_reports(plan, events, findings)
    _check_spillover(stack, findings)
    _check_archive(plan, archived, findings)
    _check_erased(plan, hot, events, archived, index, erasures, findings)
    _check_metrics(plan, stack, reasons, erased_sids, findings)
    _check_logs(plan, stack, findings)
    return findings


def _check_hot(
    plan: Plan,
    hot: list[dict[str, Any]],
    finished: datetime,
    reasons: dict[int, str],
    findings: Findings,
) -> None:
    rows = Counter(r["provider_message_sid"] for r in hot)
    by_sid = {r["provider_message_sid"]: r for r in hot}
    for sid in rows.keys() - plan.by_sid.keys():
        findings.wrong.append(f"{sid}: a row no one sent")
    for sms in plan.sms:
        if sms.old or sms.erased:
            if rows[sms.sid] and not sms.erased:  # erased ones are counted as leaks
                findings.wrong.append(f"{sms.sid}: still in agent_sms after the archive run")
            continue
        if rows[sms.sid] == 0:
            findings.lost.append(sms.sid)
            continue
        if rows[sms.sid] > 1:
            findings.duplicated.append(sms.sid)
        findings.checked_hot += 1
        row = by_sid[sms.sid]
        _compare(sms.sid, row, _expected_row(sms, reasons), findings)
        # A failure without a carrier timestamp is stamped when Twilio's report came.
        failed_at = row["failed_at"]
        if sms.final == "failed" and not (
            failed_at is not None
            and (failed_at == sms.done_at or plan.started <= failed_at <= finished)
        ):
            findings.wrong.append(f"{sms.sid}: failed_at is {failed_at}")


def _expected_row(sms: Sms, reasons: dict[int, str]) -> dict[str, Any]:
    """Every column the day determines, as the database must hold it at the end."""
    delivered = sms.final == "delivered"
    expected: dict[str, Any] = {
        "deployment_id": uuid.UUID(sms.deployment_id),
        "phone_number": sms.phone,
        "message_content": sms.content,
        "message_type": sms.message_type,
        "provider": "twilio",
        "status": sms.status,
        "provider_status": sms.final,
        "sent_at": sms.sent_at,
        "delivered_at": sms.done_at if delivered else None,
        "failure_reason": None if sms.error_code is None else reasons[sms.error_code],
        "provider_cost": sms.provider_cost,
        "voipia_margin": MARGIN,
        "currency": "EUR",
        "workflow_id": sms.workflow_id,
    }
    if sms.final != "failed":  # a failed one may carry the time its report came instead
        expected["failed_at"] = sms.done_at if sms.final == "undelivered" else None
    return expected


def _expected_archived_row(sms: Sms) -> dict[str, Any]:
    return {
        "deployment_id": sms.deployment_id,
        "phone_number": sms.phone,
        "message_content": sms.content,
        "message_type": sms.message_type,
        "status": "delivered",
        "provider_status": "delivered",
        "sent_at": sms.sent_at,
        "provider_cost": sms.provider_cost,
        "voipia_margin": MARGIN,
        "currency": "EUR",
    }


# The values of these columns are personal data: a finding names the column only.
_PERSONAL = frozenset({"phone_number", "message_content"})


def _compare(sid: str, row: dict[str, Any], expected: dict[str, Any], findings: Findings) -> None:
    for column, value in expected.items():
        actual = row[column]
        if isinstance(value, str) and not isinstance(actual, str) and actual is not None:
            actual = str(actual)  # the archive keeps uuids as text
        if actual == value:
            continue
        if column in _PERSONAL:
            findings.wrong.append(f"{sid}: {column} is not what was sent")
        else:
            findings.wrong.append(f"{sid}: {column} is {actual!r}, not {value!r}")


def _check_events(
    plan: Plan, hot: list[dict[str, Any]], events: list[dict[str, Any]], findings: Findings
) -> None:
    recorded = {r["provider_message_sid"] for r in hot}
    statuses: dict[str, set[str]] = {}
    for event in events:
        sid = event["provider_message_sid"]
        statuses.setdefault(sid, set()).add(event["twilio_status"])
        if event["applied_at"] is None and sid in recorded:
            findings.wrong.append(f"{sid}: a status event left pending though the SMS exists")
    for sms in plan.sms:
        if not sms.old and not sms.erased and sms.final not in statuses.get(sms.sid, set()):
            findings.wrong.append(f"{sms.sid}: no {sms.final} event in its history")


def _check_reports(plan: Plan, events: list[dict[str, Any]], findings: Findings) -> None:
    """Every status report Twilio sent is in its SMS's history: none was lost on the way,
    parked or not."""
    reported = {(e["provider_message_sid"], e["twilio_status"]) for e in events}
    for sms in plan.sms:
        if sms.old or sms.erased:
            continue
        for form in sms.callbacks():
            if (sms.sid, form["MessageStatus"]) not in reported:
                findings.lost.append(f"{sms.sid}: its {form['MessageStatus']} report")


def _check_spillover(stack: Stack, findings: Findings) -> None:
    """Nothing left in the spill-over queue or its dead-letter queue, and nothing replay
    refused for good or gave up on (each a line an operator would have to look at)."""
    for name, url in (("spill-over queue", stack.queue_url),
                      ("dead-letter queue", stack.dead_letter_url)):  # fmt: skip
        _, left = queue_depth(stack.sqs_endpoint, url)
        if left:
            findings.lost.append(f"{left} parked calls still in the {name}")
    counts = spillover_counts(stack)
    for code in ("replay_refused", "replay_dead_lettered", "replay_unreadable"):
        if counts.codes.get(code):
            findings.wrong.append(f"{counts.codes[code]} replay log lines {code}")


@dataclass
class SpilloverCounts:
    """What the functions' logs say of the spill-over queue over the day."""

    parked: int = 0  # calls parked (their EMF lines' Parked)
    replayed: int = 0  # made by the replay consumers
    refused: int = 0
    erased: int = 0
    retried: int = 0  # deliveries that failed (the database down again) and came back
    codes: Counter[str] = field(default_factory=Counter)


def spillover_counts(stack: Stack) -> SpilloverCounts:
    counts = SpilloverCounts()
    with stack.log_path.open("rb") as log:
        for raw in log:
            if not raw.startswith(b"{"):
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            counts.parked += int(line.get("Parked", 0))
            if code := line.get("code"):
                counts.codes[code] += 1
            message = str(line.get("message", ""))
            if line.get("logger") == "sms.replay" and message.startswith("replay: {"):
                report = ast.literal_eval(message.removeprefix("replay: "))
                counts.replayed += report["replayed"]
                counts.refused += report["refused"]
                counts.erased += report["erased"]
                counts.retried += report["retry"]
    return counts


def _check_archive(plan: Plan, archived: list[dict[str, Any]], findings: Findings) -> None:
    current = [r for r in archived if r["is_latest"]]
    copies = Counter(r["provider_message_sid"] for r in current)
    by_sid = {r["provider_message_sid"]: r for r in current}
    for sms in plan.old:
        if sms.erased:
            continue
        if copies[sms.sid] == 0:
            findings.lost.append(f"{sms.sid} (archived)")
            continue
        if copies[sms.sid] > 1:
            findings.duplicated.append(f"{sms.sid} (archived)")
        findings.checked_archived += 1
        _compare(sms.sid, by_sid[sms.sid], _expected_archived_row(sms), findings)
    never_archived = {s.sid for s in plan.sms if not s.old or s.erased}
    for sid in copies.keys() & never_archived:
        findings.wrong.append(f"{sid}: in the archive, though it should not be")


def _check_erased(
    plan: Plan,
    hot: list[dict[str, Any]],
    events: list[dict[str, Any]],
    archived: list[dict[str, Any]],
    index: set[bytes],
    erasures: list[dict[str, Any]],
    findings: Findings,
) -> None:
    numbers = set(plan.erased_numbers)
    erased_sids = {s.sid for s in plan.sms if s.erased}
    leaks = findings.erased_leaks
    leaks += [f"agent_sms {r['provider_message_sid']}" for r in hot if r["phone_number"] in numbers]
    leaks += [
        f"agent_sms_events {e['provider_message_sid']}"
        for e in events
        if e["pending_phone_number"] in numbers or e["provider_message_sid"] in erased_sids
    ]
    leaks += [
        f"archive object {r['key']} (version {r['version']})"
        for r in archived
        if r["phone_number"] in numbers
    ]
    secret = KEYS["ARCHIVE_INDEX_SECRET"].encode()
    completed = {e["phone_hash"] for e in erasures if e["completed_at"] is not None}
    for number in numbers:
        digest = hmac.new(secret, number.encode(), hashlib.sha256).digest()
        if digest in index:
            leaks.append("the archive's phone index")
        if digest not in completed:
            leaks.append("an erasure without a completed audit record")


# What an erased SMS counts under in the KPIs is its status when it was erased, which
# the plan cannot know when a report for it was still on its way (the erasure comes
# mid-day): those figures are held between "still sent" and its final status.
STATUS_KEYS = ("delivered_sms", "failed_sms", "sent_sms", "delivery_rate", "failure_rate",
               "avg_delivery_time_seconds")  # fmt: skip


def _check_metrics(
    plan: Plan, stack: Stack, reasons: dict[int, str], erased_sids: set[bytes],
    findings: Findings,
) -> None:  # fmt: skip
    """Each user's figures for the day, against a recomputation from the truth alone. An
    SMS recorded and then erased still counts in every figure but unique_recipients,
    which no longer counts its number; one refused as erased never counted."""
    start = plan.started - timedelta(days=1)
    end = plan.started + timedelta(hours=1)
    truth = [
        _expected_row(s, reasons) | {"client_id": s.client_id, "call_id": None, "erased": s.erased}
        for s in plan.sms
        if not s.old and (not s.erased or hashlib.sha256(s.sid.encode()).digest() in erased_sids)
    ]
    with httpx.Client(timeout=60) as http:
        for user in plan.users:
            response = http.get(
                stack.urls["metrics"],
                params={"start": start.isoformat(), "end": end.isoformat()},
                headers={"Authorization": f"Bearer {stack.token(user.user_id)}"},
            )
            if response.status_code != 200:
                findings.metrics_mismatches.append(f"{user.user_id}: {response.status_code}")
                continue
            got = response.json()["current_period"]
            mine = [r for r in truth if r["client_id"] in user.clients]
            kept = [r for r in mine if not r["erased"]]
            still_sent = kept + [r | {"status": "sent", "delivered_at": None}
                                 for r in mine if r["erased"]]  # fmt: skip
            expected = as_json_numbers(reference_period(mine) | {
                "by_message_type": reference_by_message_type(mine),
                "unique_recipients": reference_period(kept)["unique_recipients"],
            })  # fmt: skip
            lowest = as_json_numbers(reference_period(still_sent))
            settled = all(got.get(k) == expected[k] for k in ("delivered_sms", "failed_sms"))
            for key, value in expected.items():
                if not settled and key == "by_message_type":
                    value = [(t["message_type"], t["count"]) for t in value]
                    mismatch = [(t["message_type"], t["count"]) for t in got[key]] != value
                elif not settled and key in STATUS_KEYS:
                    low, high = sorted((lowest[key] or 0, value or 0))
                    mismatch = key.endswith("_sms") and not low <= got.get(key) <= high
                else:
                    mismatch = got.get(key) != value
                if mismatch:
                    findings.metrics_mismatches.append(
                        f"user {user.user_id[:8]}: {key} is {got.get(key)!r}, not {value!r}"
                    )
            if response.json()["previous_period"]["total_sms"] != 0:
                findings.metrics_mismatches.append(f"user {user.user_id[:8]}: previous period")


def _check_logs(plan: Plan, stack: Stack, findings: Findings) -> None:
    """No phone number and no message text in anything the functions logged."""
    text = stack.log_path.read_bytes()
    numbers = {s.phone.encode() for s in plan.sms} | {s.posted_phone.encode() for s in plan.sms}
    leaked = {m for m in _E164.findall(text) if m in numbers}
    leaked |= {n for n in numbers if not n.startswith(b"+") and n in text}
    if leaked:
        findings.log_leaks.append(f"{len(leaked)} phone numbers in the functions' logs")
    if CONTENT_MARK.encode() in text:
        findings.log_leaks.append("message text in the functions' logs")


def _archived_rows(stack: Stack) -> list[dict[str, Any]]:
    """Every row of every version of every archive object, deleted markers aside."""
    s3 = boto3.client(
        "s3",
        endpoint_url=stack.s3_endpoint,
        region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
        aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    rows = []
    pages = s3.get_paginator("list_object_versions").paginate(Bucket=stack.bucket)
    for page in pages:
        for version in page.get("Versions", []):
            body = s3.get_object(
                Bucket=stack.bucket, Key=version["Key"], VersionId=version["VersionId"]
            )["Body"].read()
            for row in decode(body).to_pylist():
                rows.append(row | {
                    "key": version["Key"], "version": version["VersionId"],
                    "is_latest": version["IsLatest"],
                })  # fmt: skip
    return rows

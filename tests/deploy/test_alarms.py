"""The packaged deployment's alarms (README, "Alarms"): every one tells the alert topic
when it fires and clears, the topic mails the AlertEmail parameter, each function has
the alarms its kind needs, the scheduled jobs have an on-failure destination they may
send to, every alarm on a business metric names one the code writes, and every metric
the code writes is alarmed or said not to need it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import pytest

from functions.billing.aws_lambda import exchange_rates_metrics
from functions.billing.rates import RatesRun
from functions.replay import aws_lambda as replay_lambda
from functions.replay.replay import ReplayReport
from functions.retention.archive import RetentionReport
from functions.retention.aws_lambda import retention_metrics
from functions.twilio_status.aws_lambda import reconcile_metrics
from functions.twilio_status.reconcile import ReconcileRun
from shared import emf, runtime
from shared.spillover import ParkedCall, Spillover
from tools.package import TEMPLATE

PREFIX = "voipia-sms-tracking-ci-"
# serverless.yml's functions behind a URL, on a schedule, and on the spill-over queue
# (test_deployment.py checks the template has exactly these).
URL_FUNCTIONS = {"ingest_sms", "twilio_status", "metrics", "erase", "statement"}
SCHEDULES = {"reconcile", "retention", "exchange_rates"}
REPLAY = "replay"
FUNCTIONS = URL_FUNCTIONS | SCHEDULES | {REPLAY}
# The spill-over queue and its dead-letter queue, by logical id.
QUEUE, DEAD_LETTERS = "SpilloverQueue", "SpilloverDeadLetterQueue"
# The named alarms: name (after the stack's prefix) -> what each reads, as (namespace,
# metric, function) triples; for an SQS metric, the queue's logical id.
NAMED = {
    "ingest_sms-url-5xx": {("AWS/Lambda", "Url5xxCount", "ingest_sms")},
    "twilio_status-url-5xx": {("AWS/Lambda", "Url5xxCount", "twilio_status")},
    **{f"{f}-throttles": {("AWS/Lambda", "Throttles", f)} for f in URL_FUNCTIONS | {REPLAY}},
    **{f"{f}-errors": {("AWS/Lambda", "Errors", f)} for f in SCHEDULES | {REPLAY}},
    **{f"{f}-duration": {("AWS/Lambda", "Duration", f)} for f in FUNCTIONS},
    "unavailable": {(emf.NAMESPACE, emf.HTTP_503, f) for f in URL_FUNCTIONS},
    "reconcile-bad-answers": {(emf.NAMESPACE, emf.RECONCILE_ERRORS, "reconcile")},
    "retention-behind": {(emf.NAMESPACE, emf.RETENTION_COMPLETE, "retention")},
    "parked": {(emf.NAMESPACE, emf.PARKED, f) for f in ("ingest_sms", "twilio_status")},
    "replay-refused": {(emf.NAMESPACE, emf.REPLAY_REFUSED, REPLAY)},
    "replay-dead-lettered": {(emf.NAMESPACE, emf.REPLAY_DEAD_LETTERED, REPLAY)},
    "prices-waiting": {(emf.NAMESPACE, emf.PRICES_WAITING_FOR_RATE, "exchange_rates")},
    "spillover-dead-letters": {("AWS/SQS", "ApproximateNumberOfMessagesVisible", DEAD_LETTERS)},
    "spillover-oldest": {("AWS/SQS", "ApproximateAgeOfOldestMessage", QUEUE)},
}
# What the code writes and no alarm reads, and why none should.
UNALARMED = {
    emf.HTTP_5XX: "the public two's 5xx are alarmed by Url5xxCount, every 503 by Http503",
    emf.RECONCILE_CHANGED: "good news: statuses reconcile brought up to date",
    emf.RECONCILE_NOT_FOUND: "SMS Twilio no longer knows: counted, not an operator's to act on",
    emf.RETENTION_ARCHIVED_ROWS: "a count; retention-behind watches that runs complete",
    emf.RETENTION_EXPIRED_ROWS: "a count; retention-behind watches that runs complete",
    emf.REPLAYED: "good news: parked calls made once the database is back",
    emf.REPLAY_ERASED: "expected: a parked call whose number was erased meanwhile, dropped",
    emf.EXCHANGE_RATES_STORED: "a count (0 on a day the ECB publishes nothing); a run that"
    " cannot read the ECB's files fails, which exchange_rates-errors watches",
    emf.PRICES_CONVERTED: "good news: SMS priced once the rate of their day came",
}


class AcceptingQueue:
    """An SQS client that takes every message: enough for Spillover.park to count."""

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:  # noqa: N803 (boto3's names)
        return {"Successful": [{"Id": entry["Id"]} for entry in Entries]}


def emitted() -> set[str]:
    """What the code writes: the boundary's counts, each scheduled run's report, and what
    parking and a replay batch write (run here, with emf.emit caught)."""
    written: set[str] = set()

    def catch(function: str, values: dict[str, int | float]) -> None:
        written.update(values)

    call = ParkedCall("record_sms_status", {"p_sid": "SM" + "0" * 32}, datetime.now(UTC))
    with mock.patch.object(emf, "emit", catch):
        Spillover("https://sqs.example/q", AcceptingQueue).park([call])
        with (
            mock.patch.object(replay_lambda, "replay", return_value=ReplayReport()),
            mock.patch.object(runtime, "services", return_value=None),
        ):
            replay_lambda.handler({"Records": []}, None)
    return (
        {emf.HTTP_5XX, emf.HTTP_503}
        | set(reconcile_metrics(ReconcileRun()))
        | set(retention_metrics(RetentionReport(dry_run=False)))
        | set(exchange_rates_metrics(RatesRun()))
        | written
    )


def of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def functions(resources: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """serverless.yml's function name -> (logical id, properties)."""
    found = {}
    for logical_id, resource in of_type(resources, "AWS::Lambda::Function").items():
        name = resource["Properties"]["FunctionName"].removeprefix(PREFIX)
        found[name] = (logical_id, resource["Properties"])
    return found


def target(reference: Any) -> str:
    """The logical id a Ref or GetAtt points at."""
    return str(reference["Ref"] if "Ref" in reference else reference["Fn::GetAtt"][0])


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    if not TEMPLATE.exists():
        pytest.fail("No packaged template: run `make package` (make test runs it first).")
    loaded: dict[str, Any] = json.loads(TEMPLATE.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = template["Resources"]
    return found


@pytest.fixture(scope="module")
def alarms(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each alarm's properties by its name, without the stack's prefix."""
    found = {}
    for alarm in of_type(resources, "AWS::CloudWatch::Alarm").values():
        name = alarm["Properties"]["AlarmName"]
        assert name.startswith(PREFIX), name
        found[name.removeprefix(PREFIX)] = alarm["Properties"]
    return found


def watched(alarm: dict[str, Any], names: dict[str, str]) -> set[tuple[str, str, str]]:
    """(namespace, metric, function) of every metric the alarm reads, plain or in its
    metric math; every one is dimensioned by one function of this stack, by Ref, or (SQS)
    by one queue of this stack, by its QueueName, which stands in for the function."""
    metrics = [m["MetricStat"]["Metric"] for m in alarm.get("Metrics", []) if "MetricStat" in m]
    if "MetricName" in alarm:
        metrics.append(alarm)
    found = set()
    for metric in metrics:
        (dimension,) = metric["Dimensions"]
        if metric["Namespace"] == "AWS/SQS":
            assert dimension["Name"] == "QueueName", metric
            queue, attribute = dimension["Value"]["Fn::GetAtt"]
            assert attribute == "QueueName", metric
            found.add((metric["Namespace"], metric["MetricName"], queue))
            continue
        expected = "Function" if metric["Namespace"] == emf.NAMESPACE else "FunctionName"
        assert dimension["Name"] == expected, metric
        found.add((metric["Namespace"], metric["MetricName"], names[target(dimension["Value"])]))
    return found


def function_names(resources: dict[str, Any]) -> dict[str, str]:
    return {logical_id: name for name, (logical_id, _) in functions(resources).items()}


def test_the_alert_topic_mails_the_alert_email_parameter_when_there_is_one(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    (topic_id,) = of_type(resources, "AWS::SNS::Topic")
    assert topic_id == "AlertTopic"
    (subscription,) = of_type(resources, "AWS::SNS::Subscription").values()
    properties = subscription["Properties"]
    assert (properties["Protocol"], properties["TopicArn"]) == ("email", {"Ref": "AlertTopic"})
    assert properties["Endpoint"] == {"Ref": "AlertEmail"}
    parameter = template["Parameters"]["AlertEmail"]
    assert parameter["Type"] == "String"
    assert parameter["Default"] == ""  # `make package` passes no --param alertEmail
    # No address, no subscription: a subscription to "" would fail the deploy.
    condition = subscription["Condition"]
    assert template["Conditions"][condition] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlertEmail"}, ""]}]
    }
    pattern = re.compile(parameter["AllowedPattern"])
    assert pattern.fullmatch("")
    assert pattern.fullmatch("ops@voipia.example")
    assert not pattern.fullmatch("ops")


def test_every_named_alarm_exists_and_watches_what_its_name_says(
    resources: dict[str, Any], alarms: dict[str, dict[str, Any]]
) -> None:
    assert set(alarms) == set(NAMED)
    names = function_names(resources)
    for name, alarm in alarms.items():
        assert watched(alarm, names) == NAMED[name], name


def test_every_alarm_tells_the_topic_and_chooses_how_to_treat_missing_data(
    alarms: dict[str, dict[str, Any]],
) -> None:
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == [{"Ref": "AlertTopic"}], name
        assert alarm["OKActions"] == [{"Ref": "AlertTopic"}], name
        assert alarm["TreatMissingData"] in {"breaching", "notBreaching", "ignore"}, name
        assert alarm.get("ActionsEnabled", True), name


def test_every_url_function_and_replay_have_a_throttles_alarm_the_public_two_a_5xx_one(
    resources: dict[str, Any], alarms: dict[str, dict[str, Any]]
) -> None:
    names = function_names(resources)
    with_url = {names[target(url["Properties"]["TargetFunctionArn"])]
                for url in of_type(resources, "AWS::Lambda::Url").values()}  # fmt: skip
    assert with_url == URL_FUNCTIONS

    def alarmed(metric: str) -> set[str]:
        return {function for alarm in alarms.values()
                for namespace, name, function in watched(alarm, names)
                if (namespace, name) == ("AWS/Lambda", metric)}  # fmt: skip

    # replay's too: a throttled batch goes back to the queue, one delivery nearer the
    # dead-letter queue.
    assert alarmed("Throttles") == with_url | {REPLAY}
    assert alarmed("Url5xxCount") == {"ingest_sms", "twilio_status"}
    # The function URL's metrics aggregate over $LATEST with the FunctionName
    # dimension alone (Resource would name one qualifier).
    for name in ("ingest_sms-url-5xx", "twilio_status-url-5xx"):
        alarm = alarms[name]
        assert (alarm["Statistic"], alarm["Period"], alarm["Threshold"]) == ("Sum", 300, 5)


def test_every_function_has_a_duration_alarm_at_80_percent_of_its_own_timeout(
    resources: dict[str, Any], alarms: dict[str, dict[str, Any]]
) -> None:
    for name, (_, properties) in functions(resources).items():
        alarm = alarms[f"{name}-duration"]
        (duration,) = [m for m in alarm["Metrics"] if "MetricStat" in m]
        (share,) = [m for m in alarm["Metrics"] if m.get("ReturnData")]
        assert duration["MetricStat"]["Stat"] == "Maximum"
        assert share["Expression"] == (
            f"100 * {duration['Id']} / (1000 * {properties['Timeout']})"
        ), name
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (
            80,
            "GreaterThanOrEqualToThreshold",
        )


def test_scheduled_jobs_fail_to_a_queue_their_role_may_send_to(
    resources: dict[str, Any], alarms: dict[str, dict[str, Any]]
) -> None:
    found = functions(resources)
    names = function_names(resources)
    configs = {names[target(c["Properties"]["FunctionName"])]: c
               for c in of_type(resources, "AWS::Lambda::EventInvokeConfig").values()}  # fmt: skip
    assert set(configs) == set(SCHEDULES)
    senders: dict[str, set[str]] = {}
    for policy_id, policy in of_type(resources, "AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Action"] == "sqs:SendMessage":
                queue = target(statement["Resource"])
                for role in policy["Properties"]["Roles"]:
                    senders.setdefault(target(role), set()).add(f"{policy_id}:{queue}")
    for name, config in configs.items():
        destination = config["Properties"]["DestinationConfig"]["OnFailure"]["Destination"]
        queue = target(destination)
        assert resources[queue]["Type"] == "AWS::SQS::Queue", name
        role = target(found[name][1]["Role"])
        (grant,) = [g for g in senders.get(role, set()) if g.endswith(f":{queue}")]
        # Lambda checks the permission when the destination is set.
        assert grant.split(":")[0] in config["DependsOn"], name
        assert f"{name}-errors" in alarms


def test_every_business_alarm_names_a_metric_the_code_writes(
    resources: dict[str, Any], alarms: dict[str, dict[str, Any]]
) -> None:
    written = emitted()
    assert written == emf.NAMES  # the catalogue holds nothing the code never writes
    names = function_names(resources)
    business = {
        metric
        for alarm in alarms.values()
        for namespace, metric, _ in watched(alarm, names)
        if namespace == emf.NAMESPACE
    }
    assert business
    assert business <= written
    # Every metric written is alarmed, or listed in UNALARMED with its reason.
    assert written - business == set(UNALARMED)


def test_the_spillover_alarms_fire_on_the_first_parked_refused_or_dead_lettered_call(
    alarms: dict[str, dict[str, Any]],
) -> None:
    """(statistic, period, comparison, threshold) of each spill-over alarm: one parked
    call (the database was unavailable), one refused for good or dead-lettered on replay,
    one message in the dead-letter queue, a parked call 15 minutes old."""
    expected = {
        "replay-refused": ("Sum", 300, ">=", 1),
        "replay-dead-lettered": ("Sum", 300, ">=", 1),
        "spillover-dead-letters": ("Maximum", 300, ">=", 1),
        "spillover-oldest": ("Maximum", 300, ">=", 900),
        "replay-errors": ("Sum", 300, ">=", 1),
        "replay-throttles": ("Sum", 300, ">=", 1),
    }
    operator = {"GreaterThanOrEqualToThreshold": ">="}
    for name, (statistic, period, comparison, threshold) in expected.items():
        alarm = alarms[name]
        assert (alarm["Statistic"], alarm["Period"], operator[alarm["ComparisonOperator"]],
                alarm["Threshold"]) == (statistic, period, comparison, threshold), name  # fmt: skip
        assert alarm["TreatMissingData"] == "notBreaching", name
    # parked: the two functions' counts summed, missing ones as 0.
    parked = alarms["parked"]
    stats = [m for m in parked["Metrics"] if "MetricStat" in m]
    assert {(m["MetricStat"]["Stat"], m["MetricStat"]["Period"]) for m in stats} == {("Sum", 300)}
    (total,) = [m for m in parked["Metrics"] if m.get("ReturnData")]
    assert total["Expression"] == "SUM(FILL(METRICS(), 0))"
    assert (parked["ComparisonOperator"], parked["Threshold"]) == (
        "GreaterThanOrEqualToThreshold",
        1,
    )
    assert parked["TreatMissingData"] == "notBreaching"


def test_the_daily_jobs_alarms_hold_until_their_next_run_reports(
    alarms: dict[str, dict[str, Any]],
) -> None:
    """retention and exchange_rates run once a day: a failed run, or SMS still waiting for
    a rate after one, alarms at once, and the alarm holds (missing data ignored) until
    the next run says otherwise, rather than clearing an hour later as if fixed."""
    expected = {
        "retention-errors": ("Sum", 3600, 1),
        "exchange_rates-errors": ("Sum", 3600, 1),
        # The run writes the count still waiting once it has priced what it could.
        "prices-waiting": ("Maximum", 3600, 1),
    }
    for name, (statistic, period, threshold) in expected.items():
        alarm = alarms[name]
        assert (alarm["Statistic"], alarm["Period"], alarm["Threshold"]) == (
            statistic,
            period,
            threshold,
        ), name
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold", name
        assert alarm["TreatMissingData"] == "ignore", name

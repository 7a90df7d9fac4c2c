"""The packaged deployment's alarms (README, "Alarms"): every one tells the alert topic
when it fires and clears, the topic mails the AlertEmail parameter, each function has
the alarms its kind needs, the scheduled jobs have an on-failure destination they may
send to, and every alarm on a business metric names one the code writes."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from functions.retention.archive import RetentionReport
from functions.retention.aws_lambda import retention_metrics
from functions.twilio_status.aws_lambda import reconcile_metrics
from functions.twilio_status.reconcile import ReconcileRun
from shared import emf
from tools.package import FUNCTION_LAYERS, TEMPLATE

PREFIX = "voipia-sms-tracking-ci-"
# serverless.yml's functions behind a URL, and on a schedule (test_deployment.py checks
# the template has exactly these).
URL_FUNCTIONS = {"ingest_sms", "twilio_status", "metrics", "erase"}
SCHEDULES = {"reconcile", "retention"}
# What the code writes: the boundary's counts and each scheduled run's report.
EMITTED = (
    {emf.HTTP_5XX, emf.HTTP_503}
    | set(reconcile_metrics(ReconcileRun()))
    | set(retention_metrics(RetentionReport(dry_run=False)))
)
# The named alarms: name (after the stack's prefix) -> what each reads, as (namespace,
# metric, function) triples.
NAMED = {
    "ingest_sms-url-5xx": {("AWS/Lambda", "Url5xxCount", "ingest_sms")},
    "twilio_status-url-5xx": {("AWS/Lambda", "Url5xxCount", "twilio_status")},
    **{f"{f}-throttles": {("AWS/Lambda", "Throttles", f)} for f in URL_FUNCTIONS},
    **{f"{f}-errors": {("AWS/Lambda", "Errors", f)} for f in SCHEDULES},
    **{f"{f}-duration": {("AWS/Lambda", "Duration", f)} for f in FUNCTION_LAYERS},
    "unavailable": {(emf.NAMESPACE, emf.HTTP_503, f) for f in URL_FUNCTIONS},
    "reconcile-bad-answers": {(emf.NAMESPACE, emf.RECONCILE_ERRORS, "reconcile")},
    "retention-behind": {(emf.NAMESPACE, emf.RETENTION_COMPLETE, "retention")},
}


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
    metric math; every one is dimensioned by one function of this stack, by Ref."""
    metrics = [m["MetricStat"]["Metric"] for m in alarm.get("Metrics", []) if "MetricStat" in m]
    if "MetricName" in alarm:
        metrics.append(alarm)
    found = set()
    for metric in metrics:
        (dimension,) = metric["Dimensions"]
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


def test_every_url_function_has_a_throttles_alarm_and_the_public_two_a_5xx_one(
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

    assert alarmed("Throttles") == with_url
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
    assert emf.NAMES == EMITTED  # the catalogue holds nothing the code never writes
    names = function_names(resources)
    business = {
        metric
        for alarm in alarms.values()
        for namespace, metric, _ in watched(alarm, names)
        if namespace == emf.NAMESPACE
    }
    assert business
    assert business <= EMITTED

"""The packaged AWS deployment (`make package`, run by `make test` before pytest):
the CloudFormation template osls wrote from serverless.yml, and its zips."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tools.migrate import ROOT
from tools.package import FUNCTION_LAYERS, TEMPLATE, prune_pyarrow, serverless_config

URL_FUNCTIONS = {"ingest_sms", "twilio_status", "metrics", "erase", "statement"}
# exchange_rates: daily at 16:30 UTC, after the ECB publishes (about 16:00 CET).
SCHEDULES = {"reconcile": "rate(15 minutes)", "retention": "rate(1 day)",
             "exchange_rates": "cron(30 16 * * ? *)"}  # fmt: skip
SOURCES = {"ingest_sms": "ingest_sms", "twilio_status": "twilio_status",
           "reconcile": "twilio_status", "metrics": "metrics", "erase": "retention",
           "retention": "retention", "replay": "replay", "statement": "metrics",
           "exchange_rates": "billing"}  # fmt: skip
# The secrets (README, "Secrets") and the settings each holds: read at run time, never
# in an environment.
SECRETS = {
    "database-api": {"DATABASE_URL"},
    "database-retention": {"DATABASE_SESSION_URL"},
    "ingest": {"INGEST_API_KEYS"},
    "twilio": {"TWILIO_AUTH_TOKEN", "TWILIO_PREVIOUS_AUTH_TOKEN", "TWILIO_SUBACCOUNTS"},
    "metrics": {"SUPABASE_JWT_SECRET", "METRICS_SERVICE_KEYS"},
    "archive": {"ARCHIVE_INDEX_SECRET"},
    "privacy": {"PRIVACY_API_KEYS"},
}
SECRET_PREFIX = "voipia-sms-tracking/ci/"
# Through the transaction pooler (DATABASE_URL), or in sessions (DATABASE_SESSION_URL).
TRANSACTION_POOLED = {"ingest_sms", "twilio_status", "reconcile", "metrics", "replay",
                      "statement", "exchange_rates"}  # fmt: skip
IN_SESSIONS = {"erase", "retention"}
# The spill-over queue (README, "The spill-over queue"): who parks in it, who replays it.
PARKING = {"ingest_sms", "twilio_status"}
REPLAY = "replay"
QUEUE, DEAD_LETTERS = "SpilloverQueue", "SpilloverDeadLetterQueue"
DAY = 86400


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    if not TEMPLATE.exists():
        pytest.fail("No packaged template: run `make package` (make test runs it first).")
    template = json.loads(TEMPLATE.read_text(encoding="utf-8"))
    found: dict[str, Any] = template["Resources"]
    return found


def of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def functions(resources: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """serverless.yml's function name -> (logical id, properties)."""
    found = {}
    for logical_id, resource in of_type(resources, "AWS::Lambda::Function").items():
        name = resource["Properties"]["FunctionName"].removeprefix("voipia-sms-tracking-ci-")
        found[name] = (logical_id, resource["Properties"])
    return found


def target(reference: Any) -> str:
    """The logical id a Ref or GetAtt points at."""
    return str(reference["Ref"] if "Ref" in reference else reference["Fn::GetAtt"][0])


def test_every_function_runs_its_own_handler_on_python_312_arm64(
    resources: dict[str, Any],
) -> None:
    found = functions(resources)
    assert set(found) == set(SOURCES)
    for name, (_, properties) in found.items():
        assert properties["Handler"].startswith(f"functions/{SOURCES[name]}/aws_lambda.")
        assert (properties["Runtime"], properties["Architectures"]) == ("python3.12", ["arm64"])


def test_http_functions_have_public_urls_with_both_permissions(
    resources: dict[str, Any],
) -> None:
    ids = {logical_id: name for name, (logical_id, _) in functions(resources).items()}
    urls = {ids[target(r["Properties"]["TargetFunctionArn"])]: r["Properties"]
            for r in of_type(resources, "AWS::Lambda::Url").values()}  # fmt: skip
    assert set(urls) == URL_FUNCTIONS
    assert all(url["AuthType"] == "NONE" for url in urls.values())
    granted: dict[str, set[str]] = {}
    for permission in of_type(resources, "AWS::Lambda::Permission").values():
        properties = permission["Properties"]
        if properties["Principal"] != "*":
            continue
        via_url = properties.get("FunctionUrlAuthType") == "NONE" or properties.get(
            "InvokedViaFunctionUrl"
        )
        assert via_url, properties
        granted.setdefault(ids[target(properties["FunctionName"])], set()).add(properties["Action"])
    both = {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    assert set(granted) == URL_FUNCTIONS
    assert all(actions == both for actions in granted.values())


def test_jobs_run_on_their_schedule_one_at_a_time_without_retries(
    resources: dict[str, Any],
) -> None:
    found = functions(resources)
    ids = {logical_id: name for name, (logical_id, _) in found.items()}
    retries = {
        ids[target(config["Properties"]["FunctionName"])]: config["Properties"][
            "MaximumRetryAttempts"
        ]
        for config in of_type(resources, "AWS::Lambda::EventInvokeConfig").values()
    }
    assert retries == dict.fromkeys(SCHEDULES, 0)
    assert {name: found[name][1].get("ReservedConcurrentExecutions") for name in SCHEDULES} == (
        dict.fromkeys(SCHEDULES, 1)
    )
    schedules = {
        ids[target(rule["Properties"]["Targets"][0]["Arn"])]: rule["Properties"][
            "ScheduleExpression"
        ]
        for rule in of_type(resources, "AWS::Events::Rule").values()
    }
    assert schedules == SCHEDULES


def test_the_archive_bucket_is_encrypted_private_versioned_and_expires(
    resources: dict[str, Any],
) -> None:
    bucket = resources["ArchiveBucket"]
    properties = bucket["Properties"]
    assert bucket["DeletionPolicy"] == "Retain"
    assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert set(properties["PublicAccessBlockConfiguration"].values()) == {True}
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = {rule["Id"]: rule for rule in properties["LifecycleConfiguration"]["Rules"]}
    assert rules["cold-storage"]["Transitions"][0]["StorageClass"] == "GLACIER_IR"
    assert rules["retention-horizon"]["ExpirationInDays"] == 1095 - 365
    assert rules["retention-horizon"]["NoncurrentVersionExpiration"]["NoncurrentDays"] > 0
    (statement,) = resources["ArchiveBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_only_erase_and_retention_may_touch_the_bucket(resources: dict[str, Any]) -> None:
    s3_roles = set()
    for logical_id, role in of_type(resources, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                actions = statement["Action"]
                if any(
                    a.startswith("s3:")
                    for a in ([actions] if isinstance(actions, str) else actions)
                ):
                    s3_roles.add(logical_id)
    assert s3_roles == {"EraseRole", "RetentionRole"}
    users = {name for name, (_, p) in functions(resources).items() if target(p["Role"]) in s3_roles}
    assert users == {"erase", "retention"}


def secret_ids(properties: dict[str, Any]) -> set[str]:
    value = properties["Environment"]["Variables"].get("SECRET_IDS", "")
    return {name.removeprefix(SECRET_PREFIX) for name in value.split(",") if name}


def test_no_secret_value_is_in_any_environment_or_in_the_template(
    resources: dict[str, Any],
) -> None:
    """Secrets are read at run time: not resolved into an environment at deploy, where
    GetFunctionConfiguration would show them and a rotation would need a redeploy."""
    assert "resolve:secretsmanager" not in TEMPLATE.read_text(encoding="utf-8")
    in_secrets = set().union(*SECRETS.values())
    for name, (_, properties) in functions(resources).items():
        variables = properties["Environment"]["Variables"]
        assert not in_secrets & set(variables), name
        for variable, value in variables.items():
            literal = isinstance(value, str) and not value.startswith("{{resolve:ssm:")
            assert not literal or variable in NOT_SECRET, (name, variable)
        assert secret_ids(properties) <= set(SECRETS), name


# What a function's environment may say outright: names, sizes and durations.
NOT_SECRET = {"SECRET_IDS", "SECRETS_MANAGER_TTL", "DATABASE_POOL_SIZE",
              "DATABASE_TIMEOUT_SECONDS", "SPILLOVER_MAX_AGE_DAYS"}  # fmt: skip


def test_each_role_may_read_exactly_its_functions_secrets(resources: dict[str, Any]) -> None:
    readable: dict[str, set[str]] = {}
    for logical_id, role in of_type(resources, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                if "secretsmanager" not in json.dumps(statement["Action"]):
                    continue
                assert statement["Action"] == "secretsmanager:GetSecretValue", logical_id
                for resource in statement["Resource"]:
                    arn = resource["Fn::Sub"]
                    assert arn.endswith("-??????"), arn  # one secret, whatever its suffix
                    name = arn.rpartition(":secret:")[2].removesuffix("-??????")
                    readable.setdefault(logical_id, set()).add(name.removeprefix(SECRET_PREFIX))
    for name, (_, properties) in functions(resources).items():
        assert readable.get(target(properties["Role"]), set()) == secret_ids(properties), name
    # Each function reads what its settings need, and the extension that serves them.
    for name, (_, properties) in functions(resources).items():
        assert any("AWS-Parameters-and-Secrets-Lambda-Extension-Arm64" in str(layer)
                   for layer in properties["Layers"]), name  # fmt: skip


def test_the_connection_budget_pool_size_one_and_reserved_concurrency(
    resources: dict[str, Any],
) -> None:
    """Functions through the transaction pooler keep one connection per environment,
    erase and retention get the session URL, and every URL function has reserved
    concurrency: its share of the pooler's clients (README, "Connection budget")."""
    found = functions(resources)
    pooled = {name for name, (_, p) in found.items() if "database-api" in secret_ids(p)}
    sessions = {name for name, (_, p) in found.items() if "database-retention" in secret_ids(p)}
    assert (pooled, sessions) == (TRANSACTION_POOLED, IN_SESSIONS)
    for name in TRANSACTION_POOLED:
        assert found[name][1]["Environment"]["Variables"]["DATABASE_POOL_SIZE"] == "1", name
    for name in URL_FUNCTIONS | set(SCHEDULES) | {REPLAY}:
        assert found[name][1].get("ReservedConcurrentExecutions", 0) >= 1, name
    # replay adds at most two pooler clients (README, "Connection budget").
    assert found[REPLAY][1]["ReservedConcurrentExecutions"] <= 2
    timeouts = {name: float(found[name][1]["Environment"]["Variables"].get(
        "DATABASE_TIMEOUT_SECONDS", "10")) for name in TRANSACTION_POOLED}  # fmt: skip
    assert timeouts["twilio_status"] + 1 <= 5  # decides within about 5 s (Twilio's window)
    assert timeouts["ingest_sms"] + 1 <= 20


def test_metrics_answers_cors_itself_from_its_stages_origins(resources: dict[str, Any]) -> None:
    """shared/cors.py is the only CORS there is: no function URL has Lambda's, which would
    answer preflights on its own terms and add its headers on top of the function's. The
    stage's origins (serverless.yml's params) reach metrics as CORS_ALLOWED_ORIGINS, and
    every stage's are ones the function accepts as they are written."""
    from shared.settings import Settings

    with_cors = [name for name, url in of_type(resources, "AWS::Lambda::Url").items()
                 if "Cors" in url["Properties"]]  # fmt: skip
    assert not with_cors
    params = serverless_params()
    packaged = params.get("ci", params["default"])["corsAllowedOrigins"]
    assert packaged, "the packaged stage names example origins, to see them arrive"
    found = functions(resources)
    told = {name for name, (_, p) in found.items() if "CORS_ALLOWED_ORIGINS" in
            p["Environment"]["Variables"]}  # fmt: skip
    assert told == {"metrics", "statement"}
    for name in told:
        variables = found[name][1]["Environment"]["Variables"]
        assert variables["CORS_ALLOWED_ORIGINS"] == {"Fn::Join": [",", packaged]}, name
    for stage, values in params.items():
        origins = values.get("corsAllowedOrigins", [])
        accepted = Settings(database_url="postgresql://x", cors_allowed_origins=origins)  # type: ignore[arg-type]
        assert list(accepted.cors_allowed_origins) == origins, stage


def serverless_params() -> dict[str, Any]:
    """serverless.yml's params, by stage."""
    params: dict[str, Any] = serverless_config()["params"]
    return params


def test_each_function_ships_only_its_own_code_and_pyarrow_only_retention(
    resources: dict[str, Any],
) -> None:
    for name, source in SOURCES.items():
        with zipfile.ZipFile(ROOT / ".serverless" / f"{name}.zip") as zipped:
            entries = zipped.namelist()
        assert not any("__pycache__" in e for e in entries), name
        code = {e.split("/")[1] for e in entries if e.startswith("functions/") and e.count("/") > 1}
        assert code == {source}, name
        assert any(e.startswith("shared/") for e in entries)
        assert not any(
            e.startswith(("tests/", "tools/", "benchmarks/", "supabase/")) for e in entries
        )
    with_archive = {name for name, layers in FUNCTION_LAYERS.items() if "archive" in layers}
    assert with_archive == {"erase", "retention"}
    with zipfile.ZipFile(ROOT / ".serverless" / "common.zip") as common:
        assert not any(e.startswith("python/pyarrow/") for e in common.namelist())
    with zipfile.ZipFile(ROOT / ".serverless" / "archive.zip") as archive:
        assert any(e.startswith("python/pyarrow/") for e in archive.namelist())


def test_pyarrow_without_the_parts_left_out_still_writes_and_reads_the_archive(
    tmp_path: Path,
) -> None:
    """The same pruning, on this machine's pyarrow: it must still import, and write and
    read a zstd Parquet object (the tests of retention itself ran on it too)."""
    import pyarrow

    shutil.copytree(Path(pyarrow.__file__).parent, tmp_path / "pyarrow")
    prune_pyarrow(tmp_path / "pyarrow")
    script = (
        "import sys, pyarrow as pa, pyarrow.parquet as pq, pyarrow.compute as pc;"
        "assert pa.__file__.startswith(sys.argv[1]);"
        "sink = pa.BufferOutputStream();"
        "pq.write_table(pa.table({'n': ['+33612345678']}), sink, compression='zstd');"
        "t = pq.read_table(pa.BufferReader(sink.getvalue()));"
        "print(t.filter(pc.not_equal(t['n'], pa.scalar('x'))).num_rows)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], env={"PYTHONPATH": str(tmp_path)},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


def statements(resources: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every IAM statement, with the role it is granted to: each role's inline policies,
    and each AWS::IAM::Policy once per role it names."""
    found = []
    for logical_id, role in of_type(resources, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            found += [(logical_id, s) for s in policy["PolicyDocument"]["Statement"]]
    for policy in of_type(resources, "AWS::IAM::Policy").values():
        document = policy["Properties"]["PolicyDocument"]
        for role in policy["Properties"]["Roles"]:
            found += [(target(role), s) for s in document["Statement"]]
    return found


def actions(statement: dict[str, Any]) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def test_the_spillover_queues_are_encrypted_and_keep_parked_calls_as_long_as_stated(
    resources: dict[str, Any],
) -> None:
    """Both queues are encrypted by SQS; a parked call waits 4 days at most for replay,
    and the dead-letter queue, which keeps a standard queue's enqueue time, ends it 7 days
    after it was parked: SPILLOVER_MAX_AGE_DAYS, the erasure receipt's promise."""
    from shared.settings import Settings

    queue, dead_letters = (resources[q]["Properties"] for q in (QUEUE, DEAD_LETTERS))
    for properties in (queue, dead_letters):
        assert properties["SqsManagedSseEnabled"] is True
        assert "FifoQueue" not in properties  # standard: the enqueue time is kept
    assert queue["MessageRetentionPeriod"] == 4 * DAY
    max_age_days = Settings.model_fields["spillover_max_age_days"].default
    assert max_age_days == 7
    assert dead_letters["MessageRetentionPeriod"] == max_age_days * DAY
    # What erase tells the privacy team is what the queue does.
    erase = functions(resources)["erase"][1]["Environment"]["Variables"]
    assert int(erase["SPILLOVER_MAX_AGE_DAYS"]) * DAY == dead_letters["MessageRetentionPeriod"]
    assert dead_letters["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]


def test_a_call_replay_keeps_failing_moves_to_the_dead_letter_queue_and_only_there(
    resources: dict[str, Any],
) -> None:
    from functions.replay.aws_lambda import MAX_RECEIVES

    queue, dead_letters = (resources[q]["Properties"] for q in (QUEUE, DEAD_LETTERS))
    policy = queue["RedrivePolicy"]
    assert policy["maxReceiveCount"] == MAX_RECEIVES
    assert policy["deadLetterTargetArn"] == {"Fn::GetAtt": [DEAD_LETTERS, "Arn"]}
    # Only the spill-over queue may dead-letter there (its ARN from its name: a GetAtt
    # would make the two queues depend on each other).
    allow = dead_letters["RedriveAllowPolicy"]
    assert allow["redrivePermission"] == "byQueue"
    (source,) = allow["sourceQueueArns"]
    assert source == {
        "Fn::Sub": "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:"
        + queue["QueueName"]
    }
    # Six times replay's timeout, as AWS advises for an SQS event source (and at least
    # the timeout, which Lambda checks when it creates the mapping).
    replay = functions(resources)[REPLAY][1]
    assert queue["VisibilityTimeout"] == 6 * replay["Timeout"]


def test_replay_consumes_the_queue_two_batches_at_most_reporting_each_failure(
    resources: dict[str, Any],
) -> None:
    found = functions(resources)
    ids = {logical_id: name for name, (logical_id, _) in found.items()}
    mappings = of_type(resources, "AWS::Lambda::EventSourceMapping")
    (mapping,) = mappings.values()
    properties = mapping["Properties"]
    assert ids[target(properties["FunctionName"])] == REPLAY
    assert properties["EventSourceArn"] == {"Fn::GetAtt": [QUEUE, "Arn"]}
    assert properties["Enabled"] is True
    assert properties["BatchSize"] == 10
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert properties["ScalingConfig"] == {"MaximumConcurrency": 2}
    assert "MaximumBatchingWindowInSeconds" not in properties  # replay at once
    # Its reservation covers what the event source may ask (no throttled batch, which
    # would count a delivery), and no more: two pooler clients.
    replay = found[REPLAY][1]
    assert replay["ReservedConcurrentExecutions"] == 2
    assert replay["Handler"] == "functions/replay/aws_lambda.handler"
    # No URL, no schedule: the queue is its only caller.
    assert not [u for u in of_type(resources, "AWS::Lambda::Url").values()
                if ids[target(u["Properties"]["TargetFunctionArn"])] == REPLAY]  # fmt: skip
    variables = replay["Environment"]["Variables"]
    assert (variables["DATABASE_POOL_SIZE"], variables["DATABASE_TIMEOUT_SECONDS"]) == ("1", "10")


def test_only_ingest_sms_and_twilio_status_may_park_and_only_replay_consume(
    resources: dict[str, Any],
) -> None:
    """SendMessage on the spill-over queue for the two functions that park, and for no
    other (reconcile, which shares twilio_status's code and secrets, has a role of its
    own); what the event source needs for replay; every SQS grant names one queue."""
    found = functions(resources)
    roles: dict[str, set[str]] = {}
    for name, (_, properties) in found.items():
        roles.setdefault(target(properties["Role"]), set()).add(name)
    # (function, queue) -> the SQS actions its role may take on that queue.
    granted: dict[tuple[str, str], set[str]] = {}
    for role, statement in statements(resources):
        sqs = {a for a in actions(statement) if a.startswith("sqs:")}
        if not sqs:
            continue
        assert statement["Effect"] == "Allow"
        assert sqs == actions(statement), statement  # SQS alone in its statement
        assert "Fn::GetAtt" in statement["Resource"], statement  # one queue, no wildcard
        for name in roles.get(role, set()):
            granted.setdefault((name, target(statement["Resource"])), set()).update(sqs)
    on_queue = {name: grants for (name, queue), grants in granted.items() if queue == QUEUE}
    consume = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
               "sqs:ChangeMessageVisibility"}  # fmt: skip
    assert on_queue == {**{name: {"sqs:SendMessage"} for name in PARKING}, REPLAY: consume}
    # Nobody is granted anything on the dead-letter queue: SQS moves messages there
    # itself, and an operator redrives them with their own credentials.
    assert not [key for key in granted if key[1] == DEAD_LETTERS]
    # The parking functions and replay are told the queue; reconcile is not (it never
    # parks: what it cannot record, its next run asks again).
    told = {name: p["Environment"]["Variables"]["SPILLOVER_QUEUE_URL"]
            for name, (_, p) in found.items()
            if "SPILLOVER_QUEUE_URL" in p["Environment"]["Variables"]}  # fmt: skip
    assert told == {name: {"Ref": QUEUE} for name in PARKING | {REPLAY}}


def test_replay_reads_the_database_and_the_archive_index_key_and_nothing_else(
    resources: dict[str, Any],
) -> None:
    """The erasure check hashes the number with ARCHIVE_INDEX_SECRET, the `archive`
    secret's only setting: replay reads no retention setting it does not need."""
    from shared.settings import Settings

    replay = functions(resources)[REPLAY][1]
    assert secret_ids(replay) == {"database-api", "archive"}
    assert SECRETS["archive"] == {"ARCHIVE_INDEX_SECRET"}
    assert "archive_index_secret" in Settings.model_fields
    # The role reads exactly those (test_each_role_may_read_exactly_its_functions_secrets
    # checks every role so); and touches no bucket (test_only_erase_and_retention_...).
    assert target(replay["Role"]) == "ReplayRole"
    assert not [n for n, (_, p) in functions(resources).items()
                if n != REPLAY and target(p["Role"]) == "ReplayRole"]  # fmt: skip


def test_packaging_checks_the_size_of_every_function() -> None:
    assert set(FUNCTION_LAYERS) == set(SOURCES)


def test_every_handler_is_a_callable_of_its_module(resources: dict[str, Any]) -> None:
    """What Lambda will load: each Handler names a module of the package and a callable
    in it (statement's is tested apart, below)."""
    for name, (_, properties) in functions(resources).items():
        if name != "statement":
            assert callable(_handler(properties)), name


def test_statement_has_its_handler(resources: dict[str, Any]) -> None:
    assert callable(_handler(functions(resources)["statement"][1]))


def _handler(properties: dict[str, Any]) -> Any:
    import importlib

    module, _, attribute = properties["Handler"].rpartition(".")
    return getattr(importlib.import_module(module.replace("/", ".")), attribute, None)


def test_statement_is_metrics_twin_with_its_own_role_and_five_environments(
    resources: dict[str, Any],
) -> None:
    """The monthly statement is metrics' code, secrets and settings (tokens, service
    keys, CORS from the stage's origins) under a role of its own that reads exactly
    those secrets, with 5 pooler clients of its own (README, "Connection budget")."""
    found = functions(resources)
    metrics, statement = found["metrics"][1], found["statement"][1]
    assert statement["Handler"] == "functions/metrics/aws_lambda.statement"
    assert statement["ReservedConcurrentExecutions"] == 5
    assert secret_ids(statement) == secret_ids(metrics) == {"database-api", "metrics"}
    assert target(statement["Role"]) == "StatementRole"
    assert target(metrics["Role"]) == "MetricsRole"
    variables = statement["Environment"]["Variables"]
    assert variables["DATABASE_TIMEOUT_SECONDS"] == "10"
    assert variables["DATABASE_POOL_SIZE"] == "1"
    for shared in ("SUPABASE_URL", "CORS_ALLOWED_ORIGINS"):
        assert variables[shared] == metrics["Environment"]["Variables"][shared], shared


def test_exchange_rates_reads_the_database_alone_after_the_ecb_publishes(
    resources: dict[str, Any],
) -> None:
    """The rates job: no URL, its own role reading the database-api secret and nothing
    else (the ECB's files are public), one pooler client, a timeout that covers its two
    files and three database calls at their longest, the ECB's own source by default."""
    from functions.billing import ecb
    from shared.settings import ECB_RATES_URL, Settings

    found = functions(resources)
    ids = {logical_id: name for name, (logical_id, _) in found.items()}
    job = found["exchange_rates"][1]
    assert job["Handler"] == "functions/billing/aws_lambda.exchange_rates"
    assert secret_ids(job) == {"database-api"}
    assert target(job["Role"]) == "ExchangeRatesRole"
    assert [n for n, (_, p) in found.items() if target(p["Role"]) == "ExchangeRatesRole"] == [
        "exchange_rates"
    ]
    with_url = {ids[target(u["Properties"]["TargetFunctionArn"])]
                for u in of_type(resources, "AWS::Lambda::Url").values()}  # fmt: skip
    assert "exchange_rates" not in with_url
    variables = job["Environment"]["Variables"]
    assert (variables["DATABASE_POOL_SIZE"], variables["DATABASE_TIMEOUT_SECONDS"]) == ("1", "10")
    assert "ECB_RATES_URL" not in variables
    assert str(Settings.model_fields["ecb_rates_url"].default) == ECB_RATES_URL
    assert ECB_RATES_URL == "https://www.ecb.europa.eu/stats/eurofxref/"
    per_file = ecb.TIMEOUT_SECONDS + ecb.DEADLINE_SECONDS
    per_call = float(variables["DATABASE_TIMEOUT_SECONDS"]) + 1
    assert 2 * per_file + 3 * per_call <= 0.8 * job["Timeout"]  # under its duration alarm
    # 16:30 UTC: after 16:00 CET, 15:00 UTC in winter (14:00 in summer).
    minute, hour = SCHEDULES["exchange_rates"].removeprefix("cron(").split()[:2]
    assert (int(hour), int(minute)) >= (15, 30)

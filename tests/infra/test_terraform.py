"""Terraform: formatting, the properties the deployment depends on (parsed with python-hcl2), checkov.

No provider can be downloaded here, so no `terraform validate`/`plan`: these checks read the configuration.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from bridge.config import load_settings
from tests.infra.support import EXAMPLE, MODULE, REPO, TERRAFORM, as_list, load_hcl, load_module, one, tf_files

pytest.importorskip("hcl2", reason="python-hcl2 is a dev dependency (pip install python-hcl2)")

TASK_ACTIONS = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
    "sqs:SendMessage",
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
    "kms:Decrypt",
    "kms:GenerateDataKey",
    "kms:DescribeKey",
    # newsml S3 hot folders (channel_s3_targets), on their bucket and prefix only
    "s3:PutObject",
    "s3:GetObject",
    "s3:ListBucket",
}
# The one wildcard the task role may hold: the objects under a configured hot-folder prefix.
HOT_FOLDER_OBJECTS = "${statement.value.bucket_arn}/${statement.value.prefix}*"


def module() -> Any:
    return load_module(MODULE)


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    found = as_list(document.get("statement"))
    for dynamic in as_list(document.get("dynamic")):
        for body in dynamic.values():
            found.extend(as_list(body.get("content")))
    return found


def default(name: str) -> Any:
    return module().variables[name]["default"]


# --- formatting and parsing -------------------------------------------------------------------------------------


def test_terraform_fmt() -> None:
    binary = shutil.which("terraform")
    if binary is None:
        pytest.skip("terraform is not on PATH: `terraform fmt -check` not run (install Terraform >= 1.5 to run it)")
    result = subprocess.run(
        [binary, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"terraform fmt would change:\n{result.stdout}"


def test_every_tf_file_parses() -> None:
    files = [*tf_files(MODULE), *tf_files(EXAMPLE)]
    assert len(files) >= 10
    for path in files:
        load_hcl(path)


# --- the queues -------------------------------------------------------------------------------------------------


def test_queue_has_a_dead_letter_queue_with_redrive() -> None:
    main = module().resource("aws_sqs_queue", "main")
    policy = main["redrive_policy"]
    assert "deadLetterTargetArn = aws_sqs_queue.dlq.arn" in policy
    assert "maxReceiveCount = var.max_receive_count" in policy
    assert default("max_receive_count") == 5
    allow = module().resource("aws_sqs_queue_redrive_allow_policy", "dlq")
    assert "byQueue" in allow["redrive_allow_policy"] and "aws_sqs_queue.main.arn" in allow["redrive_allow_policy"]


def test_dead_letter_queue_keeps_messages_14_days() -> None:
    dlq = module().resource("aws_sqs_queue", "dlq")
    assert dlq["message_retention_seconds"] == "${local.dlq_retention_seconds}"
    assert module().locals["dlq_retention_seconds"] == 14 * 24 * 3600


def test_queues_are_encrypted_with_the_customer_managed_key() -> None:
    for name in ("main", "dlq"):
        queue = module().resource("aws_sqs_queue", name)
        assert queue["kms_master_key_id"] == "${local.kms_key_arn}"
    key = module().resource("aws_kms_key", "this")
    assert key["enable_key_rotation"] is True


def test_fifo_is_a_variable_without_content_based_deduplication() -> None:
    for name in ("main", "dlq"):
        queue = module().resource("aws_sqs_queue", name)
        assert queue["fifo_queue"] == "${var.fifo_queue}"
        assert "false" in queue["content_based_deduplication"]
        assert "true" not in queue["content_based_deduplication"]
    assert default("fifo_queue") is False
    assert "MessageGroupId" in module().variables["fifo_queue"]["description"]
    assert ".fifo" in module().locals["fifo_suffix"]


def test_visibility_timeout_derives_from_the_processing_budget() -> None:
    locals_ = module().locals
    assert "var.processing_budget_seconds" in locals_["visibility_timeout_seconds"]
    # The worker's SDK read timeout is the long-poll wait + 10 s; visibility must outlast it.
    assert "var.receive_wait_time_seconds + 15" in locals_["visibility_timeout_seconds"]
    for name in ("main", "dlq"):
        queue = module().resource("aws_sqs_queue", name)
        assert queue["visibility_timeout_seconds"] == "${local.visibility_timeout_seconds}"
    environment = locals_["module_environment"]
    assert environment["BRIDGE_QUEUE__VISIBILITY_TIMEOUT"] == "${tostring(local.visibility_timeout_seconds)}"


def test_only_kordiam_may_send_to_the_queue() -> None:
    policy = module().resource("aws_sqs_queue_policy", "main")["policy"]
    assert re.search(r'Effect = "Allow", Principal = \{AWS = var.kordiam_sender_principal_arns\}', policy)
    assert re.search(r'Sid = "NobodyElseSends", Effect = "Deny", Principal = \{AWS = "\*"\}', policy)
    assert "aws:PrincipalArn" in policy and "local.kordiam_sender_patterns" in policy
    assert '"aws:SecureTransport" = "false"' in policy
    # No statement allows anything to everyone.
    for allow in re.findall(r"Effect = \"Allow\", Principal = \{AWS = ([^}]*)\}", policy):
        assert allow.strip() != '"*"'
    dlq = module().resource("aws_sqs_queue_policy", "dlq")["policy"]
    assert "aws_iam_role.task.arn" in dlq and '"aws:SecureTransport" = "false"' in dlq
    kordiam = module().variables["kordiam_sender_principal_arns"]
    assert "default" not in kordiam, "the sender must be chosen, never defaulted"


# --- state ------------------------------------------------------------------------------------------------------


def test_state_table_matches_the_dynamodb_store() -> None:
    table = module().resource("aws_dynamodb_table", "state")
    assert table["billing_mode"] == "PAY_PER_REQUEST"
    assert (table["hash_key"], table["range_key"]) == ("pk", "sk")
    assert {(a["name"], a["type"]) for a in as_list(table["attribute"])} == {("pk", "S"), ("sk", "S")}
    ttl = one(table["ttl"])
    assert (ttl["attribute_name"], ttl["enabled"]) == ("expires_at", True)
    assert one(table["point_in_time_recovery"])["enabled"] is True
    encryption = one(table["server_side_encryption"])
    assert encryption["enabled"] is True and encryption["kms_key_arn"] == "${local.kms_key_arn}"
    assert table["deletion_protection_enabled"] == "${var.table_deletion_protection}"

    from bridge.state import dynamodb

    assert (dynamodb.HASH_KEY, dynamodb.RANGE_KEY, dynamodb.TTL_ATTRIBUTE) == ("pk", "sk", "expires_at")


# --- secrets and IAM --------------------------------------------------------------------------------------------


def test_secrets_are_encrypted_and_their_values_stay_out_of_terraform() -> None:
    secrets = module().of_type("aws_secretsmanager_secret")
    assert set(secrets) == {"kordiam_client_secret", "channels"}
    for secret in secrets.values():
        assert secret["kms_key_id"] == "${local.kms_key_arn}"
    for path in [*tf_files(MODULE), *tf_files(EXAMPLE)]:
        assert "aws_secretsmanager_secret_version" not in path.read_text(), path


def test_task_role_is_least_privilege() -> None:
    config = module()
    document = config.data[("aws_iam_policy_document", "task")]
    found: set[str] = set()
    for statement in statements(document):
        assert statement.get("effect", "Allow") == "Allow"
        actions = as_list(statement["actions"])
        resources = as_list(statement["resources"])
        for action in actions:
            assert "*" not in action, f"wildcard action {action} in the task role"
        for resource in resources:
            if resource == HOT_FOLDER_OBJECTS:
                assert set(actions) == {"s3:PutObject", "s3:GetObject"}
                continue
            assert "*" not in resource, f"wildcard resource {resource} in the task role"
            assert resource.startswith("${") and resource.endswith("}"), resource
        found.update(actions)
    assert found == TASK_ACTIONS
    assert not any(action.startswith("secretsmanager:") for action in found), "ECS injects secrets, not the worker"

    # The statements' resources are exactly the bridge's queue, DLQ, table and key.
    by_sid = {s["sid"]: as_list(s["resources"]) for s in statements(document)}
    assert by_sid["HotFolderList${statement.key}"] == ["${statement.value.bucket_arn}"]
    assert by_sid["ConsumeTheQueue"] == ["${aws_sqs_queue.main.arn}"]
    assert by_sid["DeadLetter"] == ["${aws_sqs_queue.dlq.arn}"]
    assert by_sid["State"] == ["${aws_dynamodb_table.state.arn}"]
    assert by_sid["KeyThroughSqsAndDynamoDb"] == ["${local.kms_key_arn}"]

    # The task role gets this one inline policy and nothing else.
    attached = [
        body
        for kind in ("aws_iam_role_policy", "aws_iam_role_policy_attachment", "aws_iam_policy_attachment")
        for body in config.of_type(kind).values()
        if "aws_iam_role.task" in str(body.get("role", "")) or "aws_iam_role.task" in str(body.get("roles", ""))
    ]
    assert len(attached) == 1 and attached[0]["policy"] == "${data.aws_iam_policy_document.task.json}"


def test_execution_role_reads_exactly_the_two_secrets() -> None:
    document = module().data[("aws_iam_policy_document", "execution")]
    by_sid = {s["sid"]: s for s in statements(document)}
    inject = by_sid["InjectTheSecrets"]
    assert as_list(inject["actions"]) == ["secretsmanager:GetSecretValue"]
    assert set(as_list(inject["resources"])) == {
        "${aws_secretsmanager_secret.kordiam_client_secret.arn}",
        "${aws_secretsmanager_secret.channels.arn}",
    }
    for statement in statements(document):
        assert all("*" not in action for action in as_list(statement["actions"]))
    # The one "*" AWS forces: ecr:GetAuthorizationToken has no resource-level permission.
    token = module().data[("aws_iam_policy_document", "ecr_token")]
    assert [as_list(s["actions"]) for s in statements(token)] == [["ecr:GetAuthorizationToken"]]


def test_operator_policy_covers_the_parked_commands() -> None:
    # `parked list` and `status` read the state table; `parked requeue` sends, then unparks each element with a
    # DeleteItem conditional on the generation it read. Without it every requeue by an operator reports "sent, but
    # still parked" and exit 1, and the elements stay parked (and alerted on) for the channel that was fixed.
    document = module().data[("aws_iam_policy_document", "operator")]
    on_table = {
        action
        for s in statements(document)
        if as_list(s["resources"]) == ["${aws_dynamodb_table.state.arn}"]
        for action in as_list(s["actions"])
    }
    assert {"dynamodb:DescribeTable", "dynamodb:Scan", "dynamodb:GetItem", "dynamodb:Query"} <= on_table
    assert "dynamodb:DeleteItem" in on_table
    # Nothing else a requeue does writes to the table: no PutItem or UpdateItem for an operator.
    assert not on_table & {"dynamodb:PutItem", "dynamodb:UpdateItem"}


def test_operator_policy_covers_redrive_and_replay() -> None:
    document = module().data[("aws_iam_policy_document", "operator")]
    by_sid = {s["sid"]: s for s in statements(document)}
    redrive = by_sid["RedriveTheDeadLetterQueue"]
    assert {
        "sqs:StartMessageMoveTask",
        "sqs:ListMessageMoveTasks",
        "sqs:CancelMessageMoveTask",
        "sqs:ReceiveMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
    } <= set(as_list(redrive["actions"]))
    assert as_list(redrive["resources"]) == ["${aws_sqs_queue.dlq.arn}"]
    assert as_list(by_sid["ReplayOntoTheQueue"]["resources"]) == ["${aws_sqs_queue.main.arn}"]
    assert module().resource("aws_iam_policy", "operator")["policy"] == "${data.aws_iam_policy_document.operator.json}"


def test_roles_are_assumable_by_ecs_tasks_of_this_account_only() -> None:
    document = module().data[("aws_iam_policy_document", "ecs_tasks_assume")]
    statement = one(document["statement"])
    assert one(statement["principals"])["identifiers"] == ["ecs-tasks.amazonaws.com"]
    assert {c["variable"] for c in as_list(statement["condition"])} == {"aws:SourceAccount", "aws:SourceArn"}


def test_key_policy_never_trusts_everyone() -> None:
    document = module().data[("aws_iam_policy_document", "kms")]
    for statement in statements(document):
        for principal in as_list(statement["principals"]):
            assert "*" not in as_list(principal["identifiers"])


# --- the ECS service --------------------------------------------------------------------------------------------


def container() -> dict[str, Any]:
    task = module().resource("aws_ecs_task_definition", "worker")
    assert task["container_definitions"] == "${jsonencode([local.container_definition])}"
    definition: dict[str, Any] = module().locals["container_definition"]
    return definition


def test_task_definition_is_fargate_with_both_roles() -> None:
    task = module().resource("aws_ecs_task_definition", "worker")
    assert task["requires_compatibilities"] == ["FARGATE"]
    assert task["network_mode"] == "awsvpc"
    assert task["task_role_arn"] == "${aws_iam_role.task.arn}"
    assert task["execution_role_arn"] == "${aws_iam_role.execution.arn}"


def test_stop_timeout_outlasts_the_drain_deadline() -> None:
    definition = container()
    assert definition["stopTimeout"] == "${var.stop_timeout_seconds}"
    stop, drain = default("stop_timeout_seconds"), default("shutdown_timeout_seconds")
    assert stop >= 30 and stop >= drain + 5 and stop <= 120
    validation = one(module().variables["stop_timeout_seconds"]["validation"])["condition"]
    assert "var.stop_timeout_seconds >= 30" in validation and "<= 120" in validation
    task = module().resource("aws_ecs_task_definition", "worker")
    conditions = [p["condition"] for p in as_list(one(task["lifecycle"])["precondition"])]
    assert "${var.stop_timeout_seconds >= var.shutdown_timeout_seconds + 5}" in conditions
    environment = module().locals["module_environment"]
    assert environment["BRIDGE_QUEUE__SHUTDOWN_TIMEOUT"] == "${tostring(var.shutdown_timeout_seconds)}"


def test_container_health_check_logs_and_hardening() -> None:
    definition = container()
    health = definition["healthCheck"]
    assert health["command"] == ["CMD", "kordiam-bridge-healthcheck"]
    assert health["startPeriod"] >= 30 and health["retries"] >= 2
    logging = definition["logConfiguration"]
    assert logging["logDriver"] == "awslogs"
    assert logging["options"]["awslogs-group"] == "${aws_cloudwatch_log_group.worker.name}"
    assert definition["readonlyRootFilesystem"] is True
    assert definition["user"] == "10001:10001"
    assert definition["command"] == ["run"]
    group = module().resource("aws_cloudwatch_log_group", "worker")
    assert group["kms_key_id"] == "${local.kms_key_arn}"
    assert group["retention_in_days"] == "${var.log_retention_days}"


def test_secrets_reach_the_container_through_ecs_secrets() -> None:
    definition = container()
    assert "valueFrom = local.secrets[key]" in definition["secrets"]
    assert module().locals["secrets"] == {
        "BRIDGE_KORDIAM__CLIENT_SECRET": "${aws_secretsmanager_secret.kordiam_client_secret.arn}",
        "BRIDGE_CHANNELS": "${aws_secretsmanager_secret.channels.arn}",
    }
    environment = module().locals["module_environment"]
    assert not any(re.search("SECRET|PASSWORD|TOKEN", key) for key in environment)


# Stand-ins for the values Terraform computes, to check the worker accepts the configuration the module builds.
PLAUSIBLE = {
    "BRIDGE_QUEUE__URL": "https://sqs.eu-central-1.amazonaws.com/123456789012/kordiam-bridge-notifications",
    "BRIDGE_QUEUE__DLQ_URL": "https://sqs.eu-central-1.amazonaws.com/123456789012/kordiam-bridge-notifications-dlq",
    "BRIDGE_QUEUE__REGION": "eu-central-1",
    "BRIDGE_QUEUE__CONCURRENCY": "32",
    "BRIDGE_QUEUE__WAIT_TIME_SECONDS": "20",
    "BRIDGE_QUEUE__VISIBILITY_TIMEOUT": "60",
    "BRIDGE_QUEUE__SHUTDOWN_TIMEOUT": "25",
    "BRIDGE_KORDIAM__BASE_URL": "https://api.kordiam.app",
    "BRIDGE_KORDIAM__CLIENT_ID": "client",
    "BRIDGE_STATE__URL": "dynamodb://kordiam-bridge-state",
    "BRIDGE_STATE__REGION": "eu-central-1",
    "BRIDGE_OPS__HOST": "0.0.0.0",
    "BRIDGE_OPS__PORT": "9090",
    "BRIDGE_OPS__LOG_LEVEL": "info",
    # the two secrets
    "BRIDGE_KORDIAM__CLIENT_SECRET": "s3cret-value",
    "BRIDGE_CHANNELS": (EXAMPLE / "channels.json.example").read_text(),
}


def test_the_worker_accepts_the_environment_the_module_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = set(module().locals["module_environment"]) | set(module().locals["secrets"])
    assert keys == set(PLAUSIBLE), "update PLAUSIBLE with the module's new variables"
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)
    for name, value in PLAUSIBLE.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(None)  # every key must be a real config key (extra="forbid")
    assert settings.state.backend == "dynamodb"
    assert settings.queue.dlq_url and settings.queue.dlq_url.endswith("-dlq")
    assert settings.channels[0].type == "wordpress"


def test_service_deploys_safely_and_leaves_the_count_to_autoscaling() -> None:
    service = module().resource("aws_ecs_service", "worker")
    assert service["launch_type"] == "FARGATE"
    breaker = one(service["deployment_circuit_breaker"])
    assert breaker["enable"] is True and breaker["rollback"] is True
    assert one(service["network_configuration"])["assign_public_ip"] == "${var.assign_public_ip}"
    assert default("assign_public_ip") is False
    assert one(service["lifecycle"])["ignore_changes"] == ["desired_count"]


def test_autoscaling_tracks_backlog_per_task_with_metric_math() -> None:
    policy = module().resource("aws_appautoscaling_policy", "backlog_per_task")
    assert policy["policy_type"] == "TargetTrackingScaling"
    configuration = one(policy["target_tracking_scaling_policy_configuration"])
    assert configuration["target_value"] == "${var.target_backlog_per_task}"
    metrics = {m["id"]: m for m in as_list(one(configuration["customized_metric_specification"])["metrics"])}
    assert metrics["backlog_per_task"]["expression"] == "visible / tasks"
    assert metrics["backlog_per_task"]["return_data"] is True
    visible = one(one(metrics["visible"]["metric_stat"])["metric"])
    tasks = one(one(metrics["tasks"]["metric_stat"])["metric"])
    assert (visible["namespace"], visible["metric_name"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert (tasks["namespace"], tasks["metric_name"]) == ("ECS/ContainerInsights", "RunningTaskCount")
    assert metrics["visible"]["return_data"] is False and metrics["tasks"]["return_data"] is False
    # RunningTaskCount exists only with Container Insights; the divisor must never be zero.
    cluster = module().resource("aws_ecs_cluster", "this")
    assert {"name": "containerInsights", "value": "enabled"} in as_list(cluster["setting"])
    assert "var.min_capacity >= 1" in one(module().variables["min_capacity"]["validation"])["condition"]


def test_alarms_on_dead_letters_and_message_age() -> None:
    alarms = module().of_type("aws_cloudwatch_metric_alarm")
    dlq = alarms["dlq_not_empty"]
    assert (dlq["metric_name"], dlq["dimensions"]["QueueName"]) == (
        "ApproximateNumberOfMessagesVisible",
        "${aws_sqs_queue.dlq.name}",
    )
    assert (dlq["comparison_operator"], dlq["threshold"]) == ("GreaterThanThreshold", 0)
    age = alarms["oldest_message_age"]
    assert (age["metric_name"], age["dimensions"]["QueueName"]) == (
        "ApproximateAgeOfOldestMessage",
        "${aws_sqs_queue.main.name}",
    )
    for alarm in alarms.values():
        assert alarm["alarm_actions"] == "${var.alarm_actions}"


def test_an_alarm_fires_before_sqs_deletes_a_dead_letter() -> None:
    """The dead-letters alarm notifies once, when the DLQ stops being empty; SQS then deletes each dead letter 14
    days after it was sent, unseen. A second alarm on the DLQ's oldest message warns while there is time to act."""
    expiring = module().of_type("aws_cloudwatch_metric_alarm")["dead_letters_expiring"]
    assert (expiring["namespace"], expiring["metric_name"], expiring["dimensions"]["QueueName"]) == (
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        "${aws_sqs_queue.dlq.name}",
    )
    assert expiring["comparison_operator"] == "GreaterThanThreshold"
    assert expiring["threshold"] == "${var.dead_letter_age_threshold_seconds}"
    threshold = default("dead_letter_age_threshold_seconds")
    retention = module().locals["dlq_retention_seconds"]
    # A standard queue's dead letter that SQS moved (max_receive_count) keeps its first enqueue time: SQS deletes it
    # 14 days after it was sent, yet its ApproximateAgeOfOldestMessage counts from its arrival on the DLQ. It may
    # have waited on the queue up to message_retention_seconds, so that much of the 14 days can be gone already.
    # With the defaults, room for a weekend remains after the alarm.
    assert 0 < threshold <= retention - default("message_retention_seconds") - 3 * 24 * 3600
    preconditions = str(module().resource("aws_cloudwatch_metric_alarm", "dead_letters_expiring")["lifecycle"])
    assert "var.dead_letter_age_threshold_seconds + local.time_on_the_queue_before_dead_letter_seconds" in preconditions
    assert "< local.dlq_retention_seconds" in preconditions
    # FIFO queues reset the enqueue time on the move: only standard queues count the time on the queue.
    assert module().locals["time_on_the_queue_before_dead_letter_seconds"] == (
        "${var.fifo_queue ? 0 : var.message_retention_seconds}"
    )
    assert "dead_letters_expiring" in str(module().outputs["alarm_arns"]["value"])


# --- documentation ----------------------------------------------------------------------------------------------


def test_variables_and_outputs_are_documented() -> None:
    for directory in (MODULE, EXAMPLE):
        config = load_module(directory)
        for name, variable in config.variables.items():
            assert variable.get("description"), f"{directory.name}: variable {name} has no description"
            assert variable.get("type"), f"{directory.name}: variable {name} has no type"
        for name, output in config.outputs.items():
            assert output.get("description"), f"{directory.name}: output {name} has no description"
    assert {"queue_url", "dlq_arn", "kms_key_arn", "task_role_arn", "operator_policy_arn"} <= set(module().outputs)


def test_example_uses_the_module_with_a_pinned_provider() -> None:
    example = load_module(EXAMPLE)
    bridge = example.modules["kordiam_bridge"]
    assert (EXAMPLE / bridge["source"]).resolve() == MODULE
    required = one(one(example.terraform)["required_providers"])["aws"]
    assert required["source"] == "hashicorp/aws" and required["version"].startswith("~> 5.")
    assert "s3" in one(one(example.terraform)["backend"])
    readme = (TERRAFORM / "README.md").read_text()
    for step in ("terraform init", "terraform apply", "put-secret-value", "describe-scaling-activities"):
        assert step in readme


# Arguments the module sets that the AWS provider did not always have: (resource, argument) -> the first 5.x release
# with it (the provider's CHANGELOG). Below that release `terraform plan` stops with "An argument named ... is not
# expected here", so the module's lower bound must be at least the newest of them.
PROVIDER_ARGUMENTS_SINCE = {
    ("aws_kms_key", "rotation_period_in_days"): (5, 49, 0),  # hashicorp/terraform-provider-aws#37140
}


def _lower_bound(constraint: str) -> tuple[int, ...]:
    bounds = re.findall(r">=\s*(\d+)\.(\d+)\.(\d+)", constraint)
    assert len(bounds) == 1, f"expected one lower bound in {constraint!r}"
    return tuple(int(part) for part in bounds[0])


def test_the_module_s_provider_lower_bound_has_every_argument_it_sets() -> None:
    required = one(one(module().terraform)["required_providers"])["aws"]
    lower = _lower_bound(required["version"])
    for (kind, argument), since in PROVIDER_ARGUMENTS_SINCE.items():
        for name, body in module().of_type(kind).items():
            if argument in body:
                assert lower >= since, f"{kind}.{name} sets {argument}, which needs hashicorp/aws >= {since}"
    example = one(one(load_module(EXAMPLE).terraform)["required_providers"])["aws"]["version"]
    assert tuple(int(part) for part in re.findall(r"~>\s*(\d+)\.(\d+)", example)[0]) >= lower[:2]


def test_checkov_skips_carry_a_reason() -> None:
    for path in TERRAFORM.rglob("*.tf"):
        for line in path.read_text().splitlines():
            if "checkov:skip" in line:
                assert re.search(r"#checkov:skip=CKV2?_AWS_\d+:\S.{15,}", line), f"{path}: {line.strip()}"


# --- checkov ----------------------------------------------------------------------------------------------------


def run_checkov(directory: Path, *args: str) -> tuple[str, float]:
    if os.environ.get("BRIDGE_SKIP_CHECKOV") == "1":
        pytest.skip("BRIDGE_SKIP_CHECKOV=1: checkov scan not run")
    started = time.monotonic()
    result = subprocess.run(
        [str(REPO / "scripts" / "checkov.sh"), "run", str(directory), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"checkov failed:\n{output[-6000:]}"
    counts = re.findall(r"Passed checks: (\d+), Failed checks: (\d+), Skipped checks: (\d+)", output)
    assert counts, f"no checkov summary in:\n{output[-3000:]}"
    for passed, failed, _ in counts:
        assert int(failed) == 0 and int(passed) > 0
    return output, time.monotonic() - started


@pytest.mark.timeout(300)  # the first run installs checkov into .cache/checkov (about 30 s)
def test_checkov_terraform_has_no_failed_checks() -> None:
    output, _ = run_checkov(TERRAFORM)
    assert "Failed checks: 0" in output


@pytest.mark.timeout(300)
def test_checkov_dockerfiles_have_no_failed_checks() -> None:
    output, _ = run_checkov(REPO / "infra" / "docker", "--framework", "dockerfile")
    assert "Failed checks: 0" in output


# --- the webhook ingress (enable_ingress) ---------------------------------------------------------------------------

INGRESS_RESOURCES = {
    ("aws_security_group", "ingress_alb"),
    ("aws_security_group", "ingress_tasks"),
    ("aws_vpc_security_group_egress_rule", "ingress_alb_to_tasks"),
    ("aws_vpc_security_group_ingress_rule", "ingress_tasks_from_alb"),
    ("aws_lb", "ingress"),
    ("aws_lb_target_group", "ingress"),
    ("aws_lb_listener", "ingress_https"),
    ("aws_lb_listener", "ingress_http_redirect"),
    ("aws_ecs_task_definition", "ingress"),
    ("aws_iam_role", "ingress_task"),
    ("aws_iam_role", "ingress_execution"),
    ("aws_iam_role_policy", "ingress_task"),
    ("aws_iam_role_policy", "ingress_execution"),
}


def test_an_alarm_fires_when_the_ingress_cannot_take_webhooks() -> None:
    """Kordiam retries a webhook the ingress does not take, then drops it; the worker's alarms do not see the ingress.
    With it: one alarm when no ingress task is healthy behind the load balancer, one on 5xx answers to Kordiam."""
    alarms = module().of_type("aws_cloudwatch_metric_alarm")
    dimensions = {
        "LoadBalancer": "${aws_lb.ingress[0].arn_suffix}",
        "TargetGroup": "${aws_lb_target_group.ingress[0].arn_suffix}",
    }
    unhealthy = alarms["ingress_no_healthy_task"]
    assert unhealthy["count"] == "${var.enable_ingress && var.enable_service ? 1 : 0}"
    assert (unhealthy["namespace"], unhealthy["metric_name"], unhealthy["statistic"]) == (
        "AWS/ApplicationELB",
        "HealthyHostCount",
        "Minimum",
    )
    assert unhealthy["dimensions"] == dimensions
    assert (unhealthy["comparison_operator"], unhealthy["threshold"]) == ("LessThanThreshold", 1)
    assert unhealthy["treat_missing_data"] == "breaching"

    errors = alarms["ingress_errors"]
    assert errors["count"] == "${var.enable_ingress && var.enable_service ? 1 : 0}"
    queries = {query["id"]: query for query in as_list(errors["metric_query"])}
    metrics = {
        one(query["metric"])["metric_name"]: one(query["metric"]) for query in queries.values() if "metric" in query
    }
    assert set(metrics) == {"HTTPCode_ELB_5XX_Count", "HTTPCode_Target_5XX_Count"}
    assert metrics["HTTPCode_Target_5XX_Count"]["dimensions"] == dimensions
    assert metrics["HTTPCode_ELB_5XX_Count"]["dimensions"] == {"LoadBalancer": "${aws_lb.ingress[0].arn_suffix}"}
    returned = [query for query in queries.values() if query.get("return_data") is True]
    assert len(returned) == 1 and "FILL(" in returned[0]["expression"]
    assert (errors["comparison_operator"], errors["threshold"]) == ("GreaterThanThreshold", 0)
    for alarm in (unhealthy, errors):
        assert alarm["alarm_actions"] == "${var.alarm_actions}"
    assert "ingress_no_healthy_task" in str(module().outputs["alarm_arns"]["value"])


def test_ingress_is_optional_and_off_by_default() -> None:
    assert default("enable_ingress") is False
    assert module().locals["ingress_count"] == "${var.enable_ingress ? 1 : 0}"
    for kind, name in INGRESS_RESOURCES:
        assert module().resource(kind, name)["count"] == "${local.ingress_count}", f"{kind}.{name} is not optional"
    for kind, name in (("aws_ecs_service", "ingress"), ("aws_appautoscaling_target", "ingress")):
        assert module().resource(kind, name)["count"] == "${var.enable_ingress && var.enable_service ? 1 : 0}"
    # for_each resources collapse to nothing without the ingress.
    for kind, name in (
        ("aws_vpc_security_group_ingress_rule", "ingress_alb"),
        ("aws_vpc_security_group_egress_rule", "ingress_tasks"),
        ("aws_lb_listener_rule", "ingress_receivers"),
    ):
        assert str(module().resource(kind, name)["for_each"]).startswith("${var.enable_ingress ?"), f"{kind}.{name}"


def test_ingress_task_role_sends_to_the_queue_and_only_reads_state() -> None:
    document = module().data[("aws_iam_policy_document", "ingress_task")]
    by_sid = {s["sid"]: s for s in statements(document)}
    assert set(by_sid) == {"SendToTheQueue", "ReadState", "LookUpIds", "KeyThroughSqsAndDynamoDb"}
    assert as_list(by_sid["SendToTheQueue"]["actions"]) == ["sqs:SendMessage", "sqs:GetQueueAttributes"]
    assert as_list(by_sid["SendToTheQueue"]["resources"]) == ["${aws_sqs_queue.main.arn}"]
    # bridge/ingress/lookup.py: an element's deliveries (Query on the table), a CMS or publication id back to its
    # element (Query on the two indexes); the store's start-up DescribeTable. No Scan, no write.
    assert set(as_list(by_sid["ReadState"]["actions"])) == {"dynamodb:DescribeTable", "dynamodb:Query"}
    assert as_list(by_sid["ReadState"]["resources"]) == ["${aws_dynamodb_table.state.arn}"]
    assert as_list(by_sid["LookUpIds"]["actions"]) == ["dynamodb:Query"]
    assert by_sid["LookUpIds"]["resources"] == "${local.ingress_index_arns}"
    index_arns = module().locals["ingress_index_arns"]
    assert (
        index_arns == '${[for name in keys(local.ingress_indexes) : "${aws_dynamodb_table.state.arn}/index/${name}"]}'
    )
    key = by_sid["KeyThroughSqsAndDynamoDb"]
    assert set(as_list(key["actions"])) == {"kms:GenerateDataKey", "kms:Decrypt"}
    assert as_list(key["resources"]) == ["${local.kms_key_arn}"]
    assert one(key["condition"])["variable"] == "kms:ViaService"
    for statement in statements(document):
        assert statement.get("effect", "Allow") == "Allow"
        for resource in as_list(statement["resources"]):
            assert "*" not in resource
    # One inline policy on the role, nothing attached.
    attached = [
        body
        for kind in ("aws_iam_role_policy", "aws_iam_role_policy_attachment", "aws_iam_policy_attachment")
        for body in module().of_type(kind).values()
        if "aws_iam_role.ingress_task" in str(body.get("role", "")) + str(body.get("roles", ""))
    ]
    assert [body["policy"] for body in attached] == ["${data.aws_iam_policy_document.ingress_task[0].json}"]


def test_the_queue_policy_admits_the_ingress_role_as_a_sender() -> None:
    policy = module().resource("aws_sqs_queue_policy", "main")["policy"]
    deny = re.search(r'Sid = "NobodyElseSends".*?ArnNotLike = \{"aws:PrincipalArn" = ([^}]*)\}', policy, re.DOTALL)
    assert deny and "aws_iam_role.ingress_task[*].arn" in deny.group(1)


def test_ingress_execution_role_reads_exactly_its_secrets() -> None:
    assert module().locals["ingress_secrets"] == (
        "${merge(var.ingress_secret_arns, {BRIDGE_CHANNELS = aws_secretsmanager_secret.channels.arn})}"
    )
    document = module().data[("aws_iam_policy_document", "ingress_execution")]
    by_sid = {s["sid"]: s for s in statements(document)}
    assert as_list(by_sid["InjectTheSecrets"]["actions"]) == ["secretsmanager:GetSecretValue"]
    assert as_list(by_sid["InjectTheSecrets"]["resources"]) == ["${sort(distinct(values(local.ingress_secrets)))}"]
    assert as_list(by_sid["WriteTheLogs"]["resources"]) == ["${aws_cloudwatch_log_group.worker.arn}:*"]
    for statement in statements(document):
        assert all("*" not in action for action in as_list(statement["actions"]))
    # The secret ARNs are checked: no wildcard can widen the role.
    validations = as_list(module().variables["ingress_secret_arns"]["validation"])
    assert any("secretsmanager" in str(v["condition"]) for v in validations)


def test_ingress_https_listener_redirects_http_and_forwards_only_the_receivers() -> None:
    https = module().resource("aws_lb_listener", "ingress_https")
    assert (https["port"], https["protocol"]) == (443, "HTTPS")
    assert https["certificate_arn"] == "${var.ingress_certificate_arn}"
    assert https["ssl_policy"] == "${var.ingress_ssl_policy}"
    assert default("ingress_ssl_policy").startswith("ELBSecurityPolicy-TLS13-1-2")
    # /healthz, /readyz, /metrics and anything else end in a 404 at the load balancer.
    assert one(https["default_action"])["type"] == "fixed-response"
    rule = module().resource("aws_lb_listener_rule", "ingress_receivers")
    assert one(rule["action"])["type"] == "forward"
    assert one(one(rule["condition"])["path_pattern"])["values"] == ["${each.value}", "${each.value}/*"]
    redirect = module().resource("aws_lb_listener", "ingress_http_redirect")
    assert (redirect["port"], redirect["protocol"]) == (80, "HTTP")
    action = one(redirect["default_action"])
    assert action["type"] == "redirect"
    assert one(action["redirect"]) == {"protocol": "HTTPS", "port": "443", "status_code": "HTTP_301"}
    lb = module().resource("aws_lb", "ingress")
    assert lb["load_balancer_type"] == "application" and lb["drop_invalid_header_fields"] is True
    assert lb["enable_deletion_protection"] == "${var.ingress_deletion_protection}"
    assert default("ingress_deletion_protection") is True


def test_ingress_security_groups_admit_the_alb_from_the_allowed_networks_and_tasks_from_the_alb_only() -> None:
    alb_in = module().resource("aws_vpc_security_group_ingress_rule", "ingress_alb")
    assert "var.ingress_allowed_cidr_blocks, [443, 80]" in alb_in["for_each"]
    assert alb_in["cidr_ipv4"] == "${each.value[0]}"
    assert default("ingress_allowed_cidr_blocks") == []  # never open to the world by default
    tasks_in = module().resource("aws_vpc_security_group_ingress_rule", "ingress_tasks_from_alb")
    assert tasks_in["security_group_id"] == "${aws_security_group.ingress_tasks[0].id}"
    assert tasks_in["referenced_security_group_id"] == "${aws_security_group.ingress_alb[0].id}"
    assert "cidr_ipv4" not in tasks_in
    assert tasks_in["from_port"] == tasks_in["to_port"] == "${local.ingress_port}"
    ingress_rules = [
        body
        for body in module().of_type("aws_vpc_security_group_ingress_rule").values()
        if "ingress_tasks" in str(body["security_group_id"])
    ]
    assert ingress_rules == [tasks_in], "the ingress tasks admit nothing but the load balancer"
    alb_out = module().resource("aws_vpc_security_group_egress_rule", "ingress_alb_to_tasks")
    assert alb_out["referenced_security_group_id"] == "${aws_security_group.ingress_tasks[0].id}"
    service = module().resource("aws_ecs_service", "ingress")
    network = one(service["network_configuration"])
    assert network["security_groups"] == ["${aws_security_group.ingress_tasks[0].id}"]


def test_ingress_target_group_checks_healthz_and_the_service_sits_behind_it() -> None:
    group = module().resource("aws_lb_target_group", "ingress")
    assert group["target_type"] == "ip" and group["port"] == "${local.ingress_port}"
    assert one(group["health_check"])["path"] == "/healthz"
    balancer = one(module().resource("aws_ecs_service", "ingress")["load_balancer"])
    assert balancer["target_group_arn"] == "${aws_lb_target_group.ingress[0].arn}"
    assert balancer["container_port"] == "${local.ingress_port}"
    definition = module().locals["ingress_container_definition"]
    assert definition["command"] == ["ingress"] and definition["image"] == "${var.image}"
    assert definition["readonlyRootFilesystem"] is True


def test_the_ingress_outlasts_the_load_balancer_s_connections_and_its_own_shutdown() -> None:
    """A keep-alive connection the task closes while the balancer still reuses it is a 502 to Kordiam: the task keeps
    it open longer than the balancer's idle timeout. On SIGTERM it finishes the calls in flight before SIGKILL."""
    from bridge.ingress.app import IngressServer

    assert module().resource("aws_lb", "ingress")["idle_timeout"] < IngressServer.keepalive_timeout
    definition = module().locals["ingress_container_definition"]
    assert definition["stopTimeout"] >= IngressServer.shutdown_timeout + 5


# Stand-ins for what Terraform computes, to check `kordiam-bridge ingress` accepts the environment the module builds.
INGRESS_PLAUSIBLE = {
    "BRIDGE_QUEUE__URL": PLAUSIBLE["BRIDGE_QUEUE__URL"],
    "BRIDGE_QUEUE__REGION": "eu-central-1",
    "BRIDGE_STATE__URL": "dynamodb://kordiam-bridge-state",
    "BRIDGE_STATE__REGION": "eu-central-1",
    "BRIDGE_INGRESS__HOST": "0.0.0.0",
    "BRIDGE_INGRESS__TRUSTED_PROXIES": '["10.0.0.0/24", "10.0.1.0/24"]',
    "BRIDGE_INGRESS__PORT": "8780",
    "BRIDGE_INGRESS__LOG_LEVEL": "info",
    "BRIDGE_HEALTHCHECK_URL": "http://127.0.0.1:8780/healthz",
    "BRIDGE_HEALTHCHECK_TIMEOUT": "4",
    # from ingress_receiver_paths (the example's Global Export receiver)
    "BRIDGE_INGRESS__GLOBAL_EXPORT__PATH": "/kordiam",
    # the example's ingress_environment and ingress_secret_arns, and the channels secret
    "BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__TYPE": "bearer",
    "BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__TOKEN": "ingress-token",
    "BRIDGE_CHANNELS": (EXAMPLE / "channels.json.example").read_text(),
}


def test_the_ingress_accepts_the_environment_the_module_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.config import IngressCommandSettings

    built = one(as_list(module().locals["ingress_module_environment"]))
    assert "BRIDGE_INGRESS__${upper(name)}__PATH" in str(built)
    example = load_module(EXAMPLE).modules["kordiam_bridge"]
    example_keys = set(example["ingress_environment"]) | {"BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__TOKEN"}
    assert "BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__TOKEN" in str(example["ingress_secret_arns"])
    keys = set(re.findall(r"\b(BRIDGE_[A-Z_]+)\s*=", str(built))) | example_keys | {"BRIDGE_CHANNELS"}
    keys |= {"BRIDGE_INGRESS__GLOBAL_EXPORT__PATH"}
    assert keys == set(INGRESS_PLAUSIBLE), "update INGRESS_PLAUSIBLE with the module's new variables"
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)
    for name, value in INGRESS_PLAUSIBLE.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(None, model=IngressCommandSettings)
    assert settings.ingress.host == "0.0.0.0" and settings.ingress.port == 8780
    assert settings.ingress.global_export is not None and settings.ingress.global_export.path == "/kordiam"
    assert settings.state.backend == "dynamodb"
    # Behind the load balancer each caller keeps its own rate-limit bucket: the balancer's subnets are trusted.
    assert [str(network) for network in settings.ingress.trusted_proxies] == ["10.0.0.0/24", "10.0.1.0/24"]
    assert re.search(
        r"BRIDGE_INGRESS__TRUSTED_PROXIES = jsonencode\(sort\(\[for subnet in data.aws_subnet.ingress", str(built)
    )
    subnets = module().data[("aws_subnet", "ingress")]
    assert subnets["for_each"] == "${var.enable_ingress ? toset(var.ingress_subnet_ids) : toset([])}"


def test_ingress_outputs_give_kordiam_its_urls() -> None:
    outputs = module().outputs
    assert {"ingress_global_export_url", "ingress_platform_url", "ingress_alb_dns_name"} <= set(outputs)
    assert "https://${local.ingress_host}" in outputs["ingress_global_export_url"]["value"]
    assert "https://${local.ingress_host}" in outputs["ingress_platform_url"]["value"]


def test_state_table_gains_the_ingress_indexes_with_the_ingress() -> None:
    from bridge.state import dynamodb

    assert (
        module().locals["ingress_indexes"] == '${var.enable_ingress ? {external_id = "S", publication_id = "N"} : {}}'
    )
    # The store's own index table: name => (hash key, type); each index is keyed on the attribute of its name.
    assert {name: kind for name, (key, kind) in dynamodb.INDEXES.items() if key == name} == {
        "external_id": "S",
        "publication_id": "N",
    }
    table = module().resource("aws_dynamodb_table", "state")
    dynamics = {kind: body for block in as_list(table["dynamic"]) for kind, body in block.items()}
    assert dynamics["attribute"]["for_each"] == "${local.ingress_indexes}"
    assert one(dynamics["attribute"]["content"]) == {"name": "${attribute.key}", "type": "${attribute.value}"}
    index = dynamics["global_secondary_index"]
    assert index["for_each"] == "${local.ingress_indexes}"
    content = one(index["content"])
    assert content["name"] == content["hash_key"] == "${global_secondary_index.key}"
    assert content["projection_type"] == "ALL"

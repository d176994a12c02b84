"""The module's IAM grants against the AWS calls the code makes: every call has a permission for the identity that
makes it, on the resource it makes it on, and nothing is granted that no call uses.

``CALLS`` says who makes which call on what (with the code path that makes it); a scan of the modules that talk to
AWS must find exactly the operations it accounts for, so a call added to the code fails here until it is placed, and
then until the module grants it. KMS is left to test_terraform.py (it follows from the SQS and DynamoDB calls).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from bridge.config import QueueSettings
from bridge.queue.sqs import SMALLEST_MESSAGE_LIMIT, SqsTransport
from tests.infra.support import MODULE, REPO, as_list, load_module

pytest.importorskip("hcl2", reason="python-hcl2 is a dev dependency (pip install python-hcl2)")

# The modules that call AWS, by the botocore service they call.
SOURCES: dict[str, tuple[Path, ...]] = {
    "sqs": (REPO / "bridge" / "queue" / "sqs.py", REPO / "bridge" / "queue" / "sqs_admin.py"),
    "dynamodb": (REPO / "bridge" / "state" / "dynamodb.py",),
    "s3": (REPO / "bridge" / "channels" / "newsml" / "targets.py",),
}
# bridge.state.dynamodb.create_table: local set-up (the demo, the tests); in AWS the module creates the table.
SET_UP_ONLY = {"dynamodb:CreateTable", "dynamodb:UpdateTimeToLive"}
# Operations IAM authorises as another action.
AUTHORISED_AS = {
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "s3:ListObjectsV2": "s3:ListBucket",
}

QUEUE, DLQ, TABLE, INDEXES = "queue", "dlq", "table", "indexes"
HOT_FOLDER_OBJECTS, HOT_FOLDER_BUCKET = "hot folder objects", "hot folder bucket"
RESOURCES = {
    "${aws_sqs_queue.main.arn}": QUEUE,
    "${aws_sqs_queue.dlq.arn}": DLQ,
    "${aws_dynamodb_table.state.arn}": TABLE,
    "${local.ingress_index_arns}": INDEXES,
    "${statement.value.bucket_arn}/${statement.value.prefix}*": HOT_FOLDER_OBJECTS,
    "${statement.value.bucket_arn}": HOT_FOLDER_BUCKET,
}

# identity -> (action, resource) -> the code that makes the call.
CALLS: dict[str, dict[tuple[str, str], str]] = {
    "worker": {
        ("sqs:GetQueueAttributes", QUEUE): "SqsTransport.describe (redrive policy, ARN, MaximumMessageSize)",
        ("sqs:ReceiveMessage", QUEUE): "SqsTransport.receive",
        ("sqs:DeleteMessage", QUEUE): "SqsTransport.delete_batch (DeleteMessageBatch)",
        ("sqs:ChangeMessageVisibility", QUEUE): "SqsTransport.change_visibility (heartbeat, retry, release)",
        ("sqs:SendMessage", QUEUE): "SqsTransport.send: ParkedRequeue._send, Reconciler.sweep (SendMessageBatch)",
        ("sqs:GetQueueAttributes", DLQ): "SqsTransport.describe (ARN, MaximumMessageSize)",
        ("sqs:SendMessage", DLQ): "SqsTransport.send_dead_letter",
        # No GetQueueUrl: the module sets BRIDGE_QUEUE__DLQ_URL (test_the_worker_is_given_its_dead_letter_queue).
        ("dynamodb:DescribeTable", TABLE): "DynamoDbStateStore._check_table",
        ("dynamodb:GetItem", TABLE): "element_mark, lease, parked_channels, sweep_cursor",
        ("dynamodb:PutItem", TABLE): "record, lease, take_sweep_lease",
        ("dynamodb:UpdateItem", TABLE): "mark_element, park, lease extension, advance_sweep_cursor",
        ("dynamodb:DeleteItem", TABLE): "forget, unpark, lease release, release_sweep_lease",
        ("dynamodb:Query", TABLE): "deliveries, parked, parked_count",
        ("s3:GetObject", HOT_FOLDER_OBJECTS): "S3Target.read",
        ("s3:PutObject", HOT_FOLDER_OBJECTS): "S3Target.write",
        ("s3:ListBucket", HOT_FOLDER_BUCKET): "S3Target.names (ListObjectsV2)",
    },
    "ingress": {
        ("sqs:SendMessage", QUEUE): "Enqueuer.enqueue -> SqsTransport.send (SendMessageBatch)",
        ("sqs:GetQueueAttributes", QUEUE): "SqsTransport.send -> _max_message_size, for a body over 1 KiB",
        ("dynamodb:DescribeTable", TABLE): "DynamoDbStateStore._check_table",
        ("dynamodb:Query", TABLE): "deliveries (Platform receiver)",
        ("dynamodb:Query", INDEXES): "deliveries_with_external_id, deliveries_of_publication",
    },
    "operator": {
        ("sqs:GetQueueAttributes", QUEUE): "check_usable, describe, depth (status)",
        ("sqs:SendMessage", QUEUE): "replay, parked requeue, manual redrive (SendMessageBatch)",
        ("sqs:GetQueueAttributes", DLQ): "describe, depth, the move task's source ARN",
        ("sqs:GetQueueUrl", DLQ): "describe, when the operator's configuration has no queue.dlq_url",
        ("sqs:ReceiveMessage", DLQ): "dlq list/show/delete, manual redrive; StartMessageMoveTask needs it",
        ("sqs:ChangeMessageVisibility", DLQ): "releases after a peek or redrive (batch)",
        ("sqs:DeleteMessage", DLQ): "dlq delete, manual redrive (batch); StartMessageMoveTask needs it",
        ("sqs:StartMessageMoveTask", DLQ): "dlq redrive (move task)",
        ("sqs:ListMessageMoveTasks", DLQ): "dlq redrive (following the task)",
        ("sqs:CancelMessageMoveTask", DLQ): "dlq redrive interrupted",
        ("dynamodb:DescribeTable", TABLE): "DynamoDbStateStore._check_table",
        ("dynamodb:Scan", TABLE): "status (delivery_counts)",
        ("dynamodb:GetItem", TABLE): "status (parked_channels, sweep_cursor)",
        ("dynamodb:Query", TABLE): "parked list, element, status (parked_count)",
        ("dynamodb:DeleteItem", TABLE): "parked requeue (unpark)",
    },
}
POLICIES = {"worker": "task", "ingress": "ingress_task", "operator": "operator"}
# How the queue policy's "NobodyElseSends" deny names each identity that sends to the queue.
SENDER_EXEMPTIONS = {
    "worker": "aws_iam_role.task.arn",
    "ingress": "aws_iam_role.ingress_task[*].arn",
    "operator": "var.operator_principal_arns",
}


def operations_in_code() -> set[str]:
    """``service:Operation`` for every botocore operation the AWS modules name (as a call or a quoted name)."""
    import botocore.session
    from botocore import xform_name

    session = botocore.session.get_session()
    found: set[str] = set()
    for service, paths in SOURCES.items():
        model = session.get_service_model(service)
        by_snake = {xform_name(name): name for name in model.operation_names}
        text = "\n".join(path.read_text() for path in paths)
        names = set(re.findall(r"\.([a-z][a-z0-9_]*)\(", text)) | set(re.findall(r"\"([a-z][a-z0-9_]*)\"", text))
        found |= {f"{service}:{by_snake[name]}" for name in names if name in by_snake}
    return found


def granted(identity: str) -> set[tuple[str, str]]:
    """(action, resource) pairs of the identity's policy document, KMS aside."""
    document = load_module(MODULE).data[("aws_iam_policy_document", POLICIES[identity])]
    bodies = as_list(document.get("statement"))
    for dynamic in as_list(document.get("dynamic")):
        for body in dynamic.values():
            bodies.extend(as_list(body.get("content")))
    pairs: set[tuple[str, str]] = set()
    for statement in bodies:
        assert statement.get("effect", "Allow") == "Allow"
        for action in as_list(statement["actions"]):
            if action.startswith("kms:"):
                continue
            for resource in as_list(statement["resources"]):
                assert resource in RESOURCES, f"{identity}: {action} on an unexpected resource {resource}"
                pairs.add((action, RESOURCES[resource]))
    return pairs


def test_every_aws_call_in_the_code_is_placed_with_an_identity() -> None:
    placed = {action for calls in CALLS.values() for action, _ in calls}
    scanned = {AUTHORISED_AS.get(operation, operation) for operation in operations_in_code() - SET_UP_ONLY}
    assert scanned == placed


@pytest.mark.parametrize("identity", sorted(CALLS))
def test_each_identity_is_granted_exactly_the_calls_it_makes(identity: str) -> None:
    needed = set(CALLS[identity])
    have = granted(identity)
    assert sorted(needed - have) == [], f"{identity}: calls without a permission"
    assert sorted(have - needed) == [], f"{identity}: permissions no call uses"


def test_every_identity_that_sends_to_the_queue_is_exempt_from_its_send_deny() -> None:
    policy = load_module(MODULE).resource("aws_sqs_queue_policy", "main")["policy"]
    deny = re.search(r'Sid = "NobodyElseSends".*?ArnNotLike = \{"aws:PrincipalArn" = ([^}]*)\}', policy, re.DOTALL)
    assert deny
    for identity, calls in CALLS.items():
        if ("sqs:SendMessage", QUEUE) in calls:
            assert SENDER_EXEMPTIONS[identity] in deny.group(1), f"the queue policy denies the {identity}'s sends"


def test_the_worker_is_given_its_dead_letter_queue() -> None:
    """Why the worker needs no GetQueueUrl: it is told the DLQ's URL, and extra_environment cannot take it away."""
    config = load_module(MODULE)
    assert config.locals["module_environment"]["BRIDGE_QUEUE__DLQ_URL"] == "${aws_sqs_queue.dlq.url}"
    assert "BRIDGE_QUEUE__DLQ_URL" in str(config.variables["extra_environment"]["validation"])


class _RecordingSqs:
    """An SQS client that answers what a send needs and records the operations called."""

    def __init__(self) -> None:
        self.operations: list[str] = []

    async def get_queue_attributes(self, **request: Any) -> dict[str, Any]:
        self.operations.append("GetQueueAttributes")
        return {"Attributes": {"MaximumMessageSize": "262144"}}

    async def send_message_batch(self, **request: Any) -> dict[str, Any]:
        self.operations.append("SendMessageBatch")
        return {"Successful": [{"Id": entry["Id"], "MessageId": "m"} for entry in request["Entries"]]}


def test_a_send_of_more_than_a_kibibyte_reads_the_queue_s_attributes() -> None:
    """What the ingress's GetQueueAttributes is for: without it, every webhook body over 1 KiB would be a 503."""
    client = _RecordingSqs()
    settings = QueueSettings(url="https://sqs.eu-central-1.amazonaws.com/123456789012/q")
    transport = SqsTransport(client, settings)

    async def send() -> None:
        await transport.send("x" * (SMALLEST_MESSAGE_LIMIT + 1))

    asyncio.run(send())
    assert client.operations == ["GetQueueAttributes", "SendMessageBatch"]

"""Why ``StartMessageMoveTask`` failed, as ``dlq redrive`` acts on it: run again (``transient``), grant the IAM
action (``denied``), or copy by hand (``unavailable``). The errors are botocore's, as it raises them for each answer
(tests/integration/test_operator_commands.py has moto's own, and a denial and a 503 through a proxy)."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from bridge.queue.sqs import SqsCallTimeout
from bridge.queue.sqs_admin import move_task_failure


def answered(status: int, code: str | None = None) -> ClientError:
    """botocore's error for an answer of ``status``; without an SQS error in it, its code is the bare status."""
    response = {"Error": {"Code": code or str(status), "Message": ""}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "StartMessageMoveTask")


@pytest.mark.parametrize(
    "error",
    [
        answered(400, "RequestThrottled"),
        answered(400, "ThrottlingException"),
        answered(500, "InternalError"),
        answered(500, "InternalFailure"),
        answered(503, "ServiceUnavailable"),
        answered(429),
        answered(502),  # a gateway's page
        answered(503),
        answered(504),
        EndpointConnectionError(endpoint_url="https://sqs.eu-west-1.amazonaws.com/"),
        ConnectTimeoutError(endpoint_url="https://sqs.eu-west-1.amazonaws.com/"),
        ReadTimeoutError(endpoint_url="https://sqs.eu-west-1.amazonaws.com/"),
        SqsCallTimeout(action="StartMessageMoveTask", seconds=10, endpoint_url="https://sqs.eu-west-1.amazonaws.com/"),
    ],
    ids=repr,
)
def test_trouble_that_may_pass_is_transient(error: Exception) -> None:
    assert move_task_failure(error) == "transient"


@pytest.mark.parametrize("error", [answered(403, "AccessDenied"), answered(400, "AccessDeniedException")], ids=repr)
def test_a_refusal_to_the_credentials_is_denied(error: Exception) -> None:
    assert move_task_failure(error) == "denied"


@pytest.mark.parametrize(
    "error",
    [
        answered(500),  # moto: an error page for a call it does not implement
        answered(501, "InternalFailure"),  # LocalStack before it had the call: "not yet implemented"
        answered(400, "InvalidAction"),
        answered(400, "UnknownOperationException"),
        answered(400, "InvalidParameterValue"),  # the queue is no other queue's dead-letter queue
        answered(400, "AWS.SimpleQueueService.UnsupportedOperation"),  # a task already running on it
        AttributeError("'SQS' object has no attribute 'start_message_move_task'"),  # a botocore without the call
        ParamValidationError(report="unknown parameter"),
        NoCredentialsError(),
    ],
    ids=repr,
)
def test_an_endpoint_that_cannot_start_it_is_unavailable(error: Exception) -> None:
    assert move_task_failure(error) == "unavailable"

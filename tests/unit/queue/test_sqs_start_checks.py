"""What the worker's start learns about its SQS queues: a fault of the setup names the setting, an outage says so."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from bridge.config import QueueSettings
from bridge.errors import ConfigError, QueueUnreachable, TransientError
from bridge.queue.sqs import SqsTransport

URL = "https://sqs.eu-central-1.amazonaws.com/000000000000/q"
DLQ_ARN = "arn:aws:sqs:eu-central-1:000000000000:q-dlq"


def client_error(code: str, status: int, operation: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "…"}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


class StartClient:
    """The queue has a redrive policy to ``DLQ_ARN``; ``attributes`` and ``queue_url`` raise what they are given."""

    def __init__(self, *, attributes: ClientError | None = None, queue_url: ClientError | None = None) -> None:
        self._attributes = attributes
        self._queue_url = queue_url

    async def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict[str, Any]:
        if self._attributes is not None:
            raise self._attributes
        policy = {"deadLetterTargetArn": DLQ_ARN, "maxReceiveCount": "5"}
        return {"Attributes": {"RedrivePolicy": json.dumps(policy), "QueueArn": QueueUrl}}

    async def get_queue_url(self, QueueName: str, QueueOwnerAWSAccountId: str) -> dict[str, Any]:
        if self._queue_url is not None:
            raise self._queue_url
        return {"QueueUrl": f"https://sqs.eu-central-1.amazonaws.com/{QueueOwnerAWSAccountId}/{QueueName}"}


async def test_a_dead_letter_queue_the_redrive_policy_names_but_that_is_gone_is_one_line_naming_the_setting() -> None:
    # Before: botocore's QueueDoesNotExist from GetQueueUrl went up as a traceback (SQS lets the dead-letter queue
    # be deleted and keeps its ARN in the policy).
    client = StartClient(queue_url=client_error("AWS.SimpleQueueService.NonExistentQueue", 400, "GetQueueUrl"))
    with pytest.raises(ConfigError) as raised:
        await SqsTransport(client, QueueSettings(url=URL)).describe()
    assert raised.value.key == "queue.dlq_url"
    assert raised.value.problem == (
        f"the dead-letter queue {DLQ_ARN} (queue {URL}'s redrive policy names it) is not usable: "
        "AWS.SimpleQueueService.NonExistentQueue; re-create it, or set queue.dlq_url"
    )


@pytest.mark.parametrize(
    ("code", "status"), [("InternalError", 500), ("ServiceUnavailable", 503), ("RequestThrottled", 403)]
)
async def test_sqs_failing_on_its_side_at_start_is_an_outage_not_the_configuration(code: str, status: int) -> None:
    # Before: "configuration error: queue.url: queue … is not usable: InternalError", exit 2, for SQS's own trouble.
    for client in (
        StartClient(attributes=client_error(code, status, "GetQueueAttributes")),
        StartClient(queue_url=client_error(code, status, "GetQueueUrl")),
    ):
        with pytest.raises(TransientError) as raised:
            await SqsTransport(client, QueueSettings(url=URL)).describe()
        assert not isinstance(raised.value, ConfigError)
        assert "could not be checked now (an outage, not the configuration)" in str(raised.value)
        assert code in str(raised.value)


async def test_a_queue_that_does_not_exist_is_still_the_setting_to_fix() -> None:
    client = StartClient(attributes=client_error("AWS.SimpleQueueService.NonExistentQueue", 400, "GetQueueAttributes"))
    with pytest.raises(ConfigError) as raised:
        await SqsTransport(client, QueueSettings(url=URL)).describe()
    assert str(raised.value) == f"queue.url: queue {URL} is not usable: AWS.SimpleQueueService.NonExistentQueue"


class UnreachableClient:
    async def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict[str, Any]:
        raise EndpointConnectionError(endpoint_url="https://sqs.eu-central-1.amazonaws.com/")


@pytest.mark.parametrize(
    ("endpoint_url", "key"), [(None, "queue.region"), ("http://127.0.0.1:9", "queue.endpoint_url")]
)
async def test_sqs_that_does_not_answer_at_start_names_the_setting_that_chose_where_to_call(
    endpoint_url: str | None, key: str
) -> None:
    # Before: always "queue.endpoint_url: cannot reach SQS: …", on AWS too, where no endpoint_url is set and the
    # region (with the network to it) decides the address.
    settings = QueueSettings(url=URL, endpoint_url=endpoint_url)
    with pytest.raises(QueueUnreachable) as raised:
        await SqsTransport(UnreachableClient(), settings).describe()
    assert raised.value.key == key
    assert raised.value.problem.startswith("cannot reach SQS: Could not connect to the endpoint URL")

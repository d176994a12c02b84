"""Create the bridge's SQS queue and its dead-letter queue (with redrive) on an emulator. Idempotent.

docker-compose.yml's one-shot ``sqs-init`` service runs it in the bridge image (boto3 is there) against whichever
emulator the profile started, LocalStack or moto: it waits for the endpoint, creates the queues and exits 0, and
the worker and the simulator start only then. A failure raises (exit 1), so they never start on missing queues.

Settings come from the environment (every one has a default that matches infra/compose/bridge.toml):

    BRIDGE_INIT_ENDPOINT_URL        SQS endpoint               default http://localhost:4566
    BRIDGE_INIT_REGION              region                     default eu-central-1
    BRIDGE_INIT_QUEUE_NAME          queue name                 default kordiam-notifications (".fifo" = FIFO)
    BRIDGE_INIT_DLQ_NAME            dead-letter queue name     default <queue>-dlq
    BRIDGE_INIT_MAX_RECEIVE_COUNT   redrive maxReceiveCount    default 5
    BRIDGE_INIT_VISIBILITY_TIMEOUT  queue visibility (s)       default 60
    BRIDGE_INIT_WAIT_SECONDS        wait for the endpoint (s)  default 60

Credentials: the standard AWS variables, else the emulators' dummy ``test``/``test``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

DLQ_RETENTION_SECONDS = 14 * 24 * 3600  # the SQS maximum: time to look at and redrive dead letters


def _setting(name: str, default: str) -> str:
    return os.environ.get(f"BRIDGE_INIT_{name}") or default


def _client() -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=_setting("ENDPOINT_URL", "http://localhost:4566"),
        region_name=_setting("REGION", "eu-central-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID") or "test",
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or "test",
        # _wait_for_endpoint does the waiting; SDK retries would only stretch each attempt.
        config=Config(connect_timeout=2, read_timeout=10, retries={"mode": "standard", "max_attempts": 2}),
    )


def _wait_for_endpoint(client: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.list_queues()
            return
        except (BotoCoreError, ClientError) as error:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"SQS endpoint not reachable after {timeout:.0f} s: {error}") from error
            time.sleep(1)


def _ensure_queue(client: Any, name: str, attributes: dict[str, str]) -> str:
    """Create the queue, or bring an existing one to these attributes (CreateQueue refuses different ones)."""
    creation = dict(attributes)
    if name.endswith(".fifo"):
        creation["FifoQueue"] = "true"
    try:
        return str(client.create_queue(QueueName=name, Attributes=creation)["QueueUrl"])
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("QueueAlreadyExists", "QueueNameExists"):
            raise
    url = str(client.get_queue_url(QueueName=name)["QueueUrl"])
    client.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def create_queues() -> dict[str, str]:
    client = _client()
    _wait_for_endpoint(client, float(_setting("WAIT_SECONDS", "60")))
    queue_name = _setting("QUEUE_NAME", "kordiam-notifications")
    fifo = queue_name.endswith(".fifo")
    default_dlq = queue_name.removesuffix(".fifo") + "-dlq" + (".fifo" if fifo else "")
    dlq_name = _setting("DLQ_NAME", default_dlq)
    if dlq_name.endswith(".fifo") != fifo:
        raise RuntimeError(f"queue {queue_name!r} and dead-letter queue {dlq_name!r} must both be FIFO or standard")
    max_receive = int(_setting("MAX_RECEIVE_COUNT", "5"))
    visibility = int(_setting("VISIBILITY_TIMEOUT", "60"))

    fifo_attributes = {"ContentBasedDeduplication": "false"} if fifo else {}
    dlq_url = _ensure_queue(client, dlq_name, {"MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS), **fifo_attributes})
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive})
    queue_url = _ensure_queue(
        client, queue_name, {"RedrivePolicy": redrive, "VisibilityTimeout": str(visibility), **fifo_attributes}
    )
    queue_arn = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    # Only this queue may dead-letter into the DLQ (and `StartMessageMoveTask` redrives back to it).
    client.set_queue_attributes(
        QueueUrl=dlq_url,
        Attributes={"RedriveAllowPolicy": json.dumps({"redrivePermission": "byQueue", "sourceQueueArns": [queue_arn]})},
    )
    print(f"create_queues: queue {queue_url} -> dead-letter queue {dlq_url} after {max_receive} receives", flush=True)
    return {"queue_url": queue_url, "dlq_url": dlq_url}


if __name__ == "__main__":
    create_queues()

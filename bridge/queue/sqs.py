"""SQS transport on one long-lived aiobotocore client: receive, delete, change visibility, dead-letter."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from bridge.config import QueueSettings
from bridge.errors import ConfigError

log = structlog.get_logger("bridge.queue")

MAX_BATCH = 10
# SQS allows 10 message attributes; the failure context takes these, the original attributes get the rest.
MAX_ATTRIBUTES = 10
MAX_ATTRIBUTE_VALUE = 1024
# Without a redrive policy the worker dead-letters a message itself after this many receives.
DEFAULT_MAX_RECEIVE_COUNT = 10
# What a redriven copy carries back to the main queue, so that its next dead letter (if it fails again) names the
# same source message and first failure as the first one did: the DLQ message it was copied from, the message id
# the first failure was reported under, and when that was.
REDRIVEN_FROM = "redriven_from"
FIRST_FAILURE_SOURCE = "first_failure.source_message_id"
FIRST_FAILURE_AT = "first_failure.at"


@dataclass(slots=True)
class QueueMessage:
    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, str]
    receive_count: int
    sent_at: float | None
    group_id: str | None
    trace_header: str | None = None
    received_at: float = field(default_factory=time.monotonic)
    visible_until: float = 0.0

    @property
    def age(self) -> float | None:
        """Seconds since the producer sent it (SQS ``SentTimestamp``)."""
        return None if self.sent_at is None else max(0.0, time.time() - self.sent_at)


@dataclass(frozen=True, slots=True)
class DeadLetterContext:
    stage: str
    reason: str
    error_class: str
    element_id: int | None = None


@dataclass(frozen=True, slots=True)
class QueueInfo:
    dlq_url: str
    max_receive_count: int
    has_redrive: bool


class SqsTransport:
    """Thin, typed wrapper over the aiobotocore SQS client, one per process."""

    def __init__(self, client: Any, settings: QueueSettings) -> None:
        self._client = client
        self.settings = settings
        self.url = settings.url
        self.dlq_url: str | None = settings.dlq_url

    @property
    def client(self) -> Any:
        """The underlying aiobotocore SQS client, for operator commands that need calls not wrapped here."""
        return self._client

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, settings: QueueSettings, *, pollers: int = 1) -> AsyncIterator[SqsTransport]:
        config = AioConfig(
            # Long polls, deletes, heartbeats and dead-letter sends must never wait for each other's connections.
            max_pool_connections=max(10, settings.concurrency + pollers + 8),
            # The read timeout must outlast the long poll, or every empty poll would end in a timeout error.
            read_timeout=settings.wait_time_seconds + 10,
            connect_timeout=5,
            retries={"max_attempts": 3, "mode": "standard"},
            # Every call's parameters are built here from typed values, and SQS checks them anyway; botocore's
            # client-side validation was a tenth of the CPU of each receive.
            parameter_validation=False,
        )
        session = get_session()
        async with session.create_client(
            "sqs", region_name=settings.region, endpoint_url=settings.endpoint_url, config=config
        ) as client:
            yield cls(client, settings)

    async def describe(self) -> QueueInfo:
        """Resolve the dead-letter queue (``queue.dlq_url``, else the redrive target); refuse to run without one."""
        try:
            response = await self._client.get_queue_attributes(QueueUrl=self.url, AttributeNames=["RedrivePolicy"])
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            raise ConfigError("queue.url", f"queue {self.url} is not usable: {code or error}") from None
        except BotoCoreError as error:
            raise ConfigError("queue.endpoint_url", f"cannot reach SQS: {error}") from None
        policy_text = response.get("Attributes", {}).get("RedrivePolicy")
        policy: dict[str, Any] = json.loads(policy_text) if policy_text else {}
        max_receive = int(policy.get("maxReceiveCount", 0)) or DEFAULT_MAX_RECEIVE_COUNT
        if self.dlq_url is None:
            target = policy.get("deadLetterTargetArn")
            if not target:
                raise ConfigError(
                    "queue.dlq_url",
                    f"queue {self.url} has no redrive policy; set queue.dlq_url or give the queue a dead-letter queue "
                    "(the bridge never drops a message it cannot process)",
                )
            *_, account, name = target.split(":")
            found = await self._client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)
            self.dlq_url = str(found["QueueUrl"])
        return QueueInfo(self.dlq_url, max_receive, has_redrive=bool(policy))

    async def receive(self, max_messages: int, wait_time: int) -> list[QueueMessage]:
        response = await self._client.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=max(1, min(MAX_BATCH, max_messages)),
            WaitTimeSeconds=wait_time,
            VisibilityTimeout=self.settings.visibility_timeout,
            MessageSystemAttributeNames=[
                "ApproximateReceiveCount",
                "SentTimestamp",
                "MessageGroupId",
                "AWSTraceHeader",
            ],
            MessageAttributeNames=["All"],
        )
        now = time.monotonic()
        messages = []
        for raw in response.get("Messages", []):
            system = raw.get("Attributes", {})
            sent = system.get("SentTimestamp")
            messages.append(
                QueueMessage(
                    message_id=raw["MessageId"],
                    receipt_handle=raw["ReceiptHandle"],
                    body=raw.get("Body", ""),
                    attributes={
                        name: value["StringValue"]
                        for name, value in raw.get("MessageAttributes", {}).items()
                        if "StringValue" in value
                    },
                    receive_count=int(system.get("ApproximateReceiveCount", "1")),
                    sent_at=int(sent) / 1000 if sent else None,
                    group_id=system.get("MessageGroupId"),
                    trace_header=system.get("AWSTraceHeader"),
                    received_at=now,
                    visible_until=now + self.settings.visibility_timeout,
                )
            )
        return messages

    async def delete_batch(self, messages: Sequence[QueueMessage]) -> list[str]:
        """Delete up to 10 messages; returns the ids SQS did not delete."""
        entries = [{"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(messages)]
        response = await self._client.delete_message_batch(QueueUrl=self.url, Entries=entries)
        failed = response.get("Failed", [])
        for failure in failed:
            message = messages[int(failure["Id"])]
            log.warning(
                "delete_failed",
                message_id=message.message_id,
                code=failure.get("Code"),
                detail=failure.get("Message"),
                hint="the message will be received again; processing is idempotent",
            )
        return [messages[int(f["Id"])].message_id for f in failed]

    async def change_visibility(self, messages: Sequence[QueueMessage], seconds: int) -> list[str]:
        """Set the visibility of up to 10 messages; returns the ids that failed (e.g. already deleted)."""
        if not messages:
            return []
        entries = [
            {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": seconds}
            for i, m in enumerate(messages)
        ]
        response = await self._client.change_message_visibility_batch(QueueUrl=self.url, Entries=entries)
        return [messages[int(f["Id"])].message_id for f in response.get("Failed", [])]

    async def send_dead_letter(self, message: QueueMessage, context: DeadLetterContext) -> None:
        """Copy the message to the dead-letter queue with its failure context as message attributes."""
        if self.dlq_url is None:
            raise RuntimeError("describe() must resolve the dead-letter queue first")
        # A message that failed before (redriven by copy, or moved back verbatim by an SQS move task) keeps the
        # source message id and time of its first failure.
        carried = message.attributes
        failure = {
            "failure.stage": context.stage,
            "failure.reason": context.reason,
            "failure.error_class": context.error_class,
            "failure.attempts": str(message.receive_count),
            "failure.element_id": "" if context.element_id is None else str(context.element_id),
            "failure.source_message_id": carried.get(FIRST_FAILURE_SOURCE)
            or carried.get("failure.source_message_id")
            or message.message_id,
            "failure.first_failed_at": carried.get(FIRST_FAILURE_AT)
            or carried.get("failure.first_failed_at")
            or datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        attributes = {
            name: {"DataType": "String", "StringValue": value[:MAX_ATTRIBUTE_VALUE]}
            for name, value in failure.items()
            if value
        }
        # Then the message's own attributes, `redriven_from` first (redrive uses it to tell its own copies apart).
        for name, value in sorted(carried.items(), key=lambda item: item[0] != REDRIVEN_FROM):
            if len(attributes) >= MAX_ATTRIBUTES:
                break
            if name not in attributes and value and name not in (FIRST_FAILURE_SOURCE, FIRST_FAILURE_AT):
                attributes[name] = {"DataType": "String", "StringValue": value}
        request: dict[str, Any] = {
            "QueueUrl": self.dlq_url,
            "MessageBody": message.body or "(empty body)",
            "MessageAttributes": attributes,
        }
        if self.dlq_url.endswith(".fifo"):
            request["MessageGroupId"] = message.group_id or "dead-letters"
            request["MessageDeduplicationId"] = message.message_id
        await self._client.send_message(**request)

    async def send(self, body: str, attributes: dict[str, str] | None = None, *, group_id: str | None = None) -> str:
        """Send one message to the main queue (used by the reconciliation sweep)."""
        request: dict[str, Any] = {
            "QueueUrl": self.url,
            "MessageBody": body,
            "MessageAttributes": {
                name: {"DataType": "String", "StringValue": value} for name, value in (attributes or {}).items()
            },
        }
        if self.url.endswith(".fifo"):
            request["MessageGroupId"] = group_id or "default"
            request["MessageDeduplicationId"] = f"{group_id}-{time.time_ns()}"
        response = await self._client.send_message(**request)
        return str(response["MessageId"])

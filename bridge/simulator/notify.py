"""Change notifications to AWS SQS or to ActiveMQ (STOMP), shaped the way the bridge expects Kordiam to send them.

One client lives for the whole app (created in the lifespan) because creating a client per message costs a
connection (and TLS) setup and would dominate request latency. On ActiveMQ a notification is a persistent SEND
with the ``event`` header, confirmed by the broker's RECEIPT.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, cast

import stompman
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from bridge.config import is_fifo_url, parse_stomp_url
from bridge.simulator.settings import SimulatorSettings

if TYPE_CHECKING:
    from types_aiobotocore_sqs.client import SQSClient
    from types_aiobotocore_sqs.type_defs import SendMessageRequestTypeDef

logger = logging.getLogger(__name__)

NotificationEvent = Literal["created", "updated", "deleted"]
NOTIFICATION_EVENTS: Final[tuple[NotificationEvent, ...]] = ("created", "updated", "deleted")

# Short timeouts and few retries: a broken queue must not stall simulator requests for long,
# since every admin write awaits its notification.
_CLIENT_CONFIG: Final = AioConfig(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})


@dataclass(frozen=True)
class NotificationRecord:
    element_id: int
    event: NotificationEvent
    body: dict[str, Any]
    sent: bool
    message_id: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "element_id": self.element_id,
            "event": self.event,
            "body": self.body,
            "sent": self.sent,
            "message_id": self.message_id,
            "error": self.error,
        }


def build_message(queue_url: str, element_id: int, event: NotificationEvent) -> SendMessageRequestTypeDef:
    """The SendMessage request for one notification (FIFO queues need group and dedup ids)."""
    message: dict[str, Any] = {
        "QueueUrl": queue_url,
        "MessageBody": json.dumps({"id": element_id, "event": event}),
        "MessageAttributes": {"event": {"DataType": "String", "StringValue": event}},
    }
    if is_fifo_url(queue_url):
        # One group per element keeps its notifications ordered; a fresh dedup id per send so that a
        # deliberate re-send (duplicate-delivery simulation) is not swallowed by SQS deduplication.
        message["MessageGroupId"] = str(element_id)
        message["MessageDeduplicationId"] = str(uuid.uuid4())
    return cast("SendMessageRequestTypeDef", message)


class Notifier:
    """Sends and records notifications; sending failures are logged and recorded, never raised."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self._settings = settings
        self._stack: AsyncExitStack | None = None
        self._client: SQSClient | None = None
        self._stomp: stompman.Client | None = None
        self._start_lock = asyncio.Lock()
        self._records: list[NotificationRecord] = []

    @property
    def records(self) -> list[NotificationRecord]:
        return list(self._records)

    def clear(self) -> None:
        self._records.clear()

    async def start(self) -> None:
        """Create the SQS or STOMP client; a no-op without a queue URL or when already started."""
        if self._settings.stomp_url is not None:
            await self._ensure_stomp()
        elif self._settings.queue_url is not None:
            await self._ensure_client()

    async def _ensure_stomp(self) -> stompman.Client:
        async with self._start_lock:
            if self._stomp is not None:
                return self._stomp
            assert self._settings.stomp_url is not None
            address = parse_stomp_url(self._settings.stomp_url)
            client = stompman.Client(
                servers=[stompman.ConnectionParameters(address.host, address.port, login="", passcode="")],
                ssl=True if address.tls else None,
                keep_alive_on_connection_failure=True,
                no_message_restart_interval=None,
            )
            stack = AsyncExitStack()
            await stack.enter_async_context(client)
            self._stomp, self._stack = client, stack
            return client

    async def _ensure_client(self) -> SQSClient:
        async with self._start_lock:
            if self._client is not None:
                return self._client
            stack = AsyncExitStack()
            creator = get_session().create_client(
                "sqs",
                region_name=self._settings.region,
                endpoint_url=self._settings.sqs_endpoint_url,
                aws_access_key_id=self._settings.aws_access_key_id,
                aws_secret_access_key=self._settings.aws_secret_access_key,
                config=_CLIENT_CONFIG,
            )
            client = cast("SQSClient", await stack.enter_async_context(creator))
            self._client, self._stack = client, stack
            return client

    async def close(self) -> None:
        async with self._start_lock:
            stack, self._stack, self._client, self._stomp = self._stack, None, None, None
            if stack is not None:
                await stack.aclose()

    async def send(self, element_id: int, event: NotificationEvent) -> NotificationRecord:
        body: dict[str, Any] = {"id": element_id, "event": event}
        queue_url = self._settings.queue_url
        if self._settings.stomp_url is not None:
            record = await self._send_to_broker(self._settings.stomp_url, element_id, event, body)
        elif queue_url is None:
            record = NotificationRecord(element_id, event, body, sent=False, error="no queue configured")
        else:
            record = await self._send_to_queue(queue_url, element_id, event, body)
        self._records.append(record)
        return record

    async def _send_to_queue(
        self, queue_url: str, element_id: int, event: NotificationEvent, body: dict[str, Any]
    ) -> NotificationRecord:
        try:
            # Lazy creation covers apps served without a lifespan (e.g. httpx.ASGITransport in tests).
            client = self._client or await self._ensure_client()
            response = await client.send_message(**build_message(queue_url, element_id, event))
        except Exception as exc:  # any failure must be recorded, never break the simulated request
            logger.warning("Sending %s notification for element %s failed: %s", event, element_id, exc)
            return NotificationRecord(element_id, event, body, sent=False, error=f"{type(exc).__name__}: {exc}")
        return NotificationRecord(element_id, event, body, sent=True, message_id=response.get("MessageId"))

    async def _send_to_broker(
        self, stomp_url: str, element_id: int, event: NotificationEvent, body: dict[str, Any]
    ) -> NotificationRecord:
        try:
            client = self._stomp or await self._ensure_stomp()
            await client.send(
                json.dumps(body).encode(),
                parse_stomp_url(stomp_url).destination,
                headers={"event": event, "persistent": "true"},
                receipt_timeout=10,
            )
        except Exception as exc:  # any failure must be recorded, never break the simulated request
            logger.warning("Sending %s notification for element %s failed: %s", event, element_id, exc)
            return NotificationRecord(element_id, event, body, sent=False, error=f"{type(exc).__name__}: {exc}")
        return NotificationRecord(element_id, event, body, sent=True)

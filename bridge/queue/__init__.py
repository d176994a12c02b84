"""The queue: one transport contract (``transport``), its SQS and ActiveMQ backends, and the consumer loop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from bridge.config import QueueSettings
from bridge.queue.dead_letter import DeadLetterContext
from bridge.queue.sqs import SqsTransport
from bridge.queue.stomp import StompTransport
from bridge.queue.transport import QueueInfo, QueueMessage, Transport

__all__ = [
    "DeadLetterContext",
    "QueueInfo",
    "QueueMessage",
    "SqsTransport",
    "StompTransport",
    "Transport",
    "open_transport",
]


@contextlib.asynccontextmanager
async def open_transport(
    settings: QueueSettings, *, pollers: int = 1, consume: bool = True
) -> AsyncIterator[Transport]:
    """Connect to the queue ``queue.url`` names (validated by the config): ``https://`` SQS, ``stomp://`` ActiveMQ.

    ``pollers``: SQS long polls running at once (sizes its connection pool). ``consume``: False for a transport
    that only sends (``replay``, tests), so a STOMP transport does not subscribe.
    """
    transport: Transport
    if settings.backend == "stomp":
        async with StompTransport.connect(settings, consume=consume) as transport:
            yield transport
    else:
        async with SqsTransport.connect(settings, pollers=pollers) as transport:
            yield transport

"""The queue: the transport and operator contracts (``transport``), their SQS and ActiveMQ backends, and the
consumer loop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from bridge.config import QueueSettings
from bridge.queue.dead_letter import DeadLetterContext
from bridge.queue.sqs import SqsTransport, pool_connections
from bridge.queue.sqs_admin import RECEIVE_WAIT_SECONDS, SqsQueueAdmin
from bridge.queue.stomp import StompTransport
from bridge.queue.stomp_admin import StompQueueAdmin
from bridge.queue.transport import MessageTooLarge, QueueAdmin, QueueInfo, QueueMessage, RedriveRequest, Transport

__all__ = [
    "DeadLetterContext",
    "MessageTooLarge",
    "QueueAdmin",
    "QueueInfo",
    "QueueMessage",
    "RedriveRequest",
    "SqsTransport",
    "StompTransport",
    "Transport",
    "check_redrive",
    "open_queue_admin",
    "open_transport",
    "pooled_connections",
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


def pooled_connections(settings: QueueSettings, *, pollers: int = 1) -> int:
    """The most connections the transport ``open_transport`` opens may hold (its file descriptors)."""
    return 1 if settings.backend == "stomp" else pool_connections(settings, pollers)


@contextlib.asynccontextmanager
async def open_queue_admin(settings: QueueSettings) -> AsyncIterator[QueueAdmin]:
    """The operator side of the queue ``queue.url`` names, on one connection for the length of a command
    (``ConfigError`` naming the key when it cannot be reached)."""
    if settings.backend == "stomp":
        async with StompTransport.connect(settings, consume=False) as transport:
            yield StompQueueAdmin(transport)
    else:
        # The operator's receives wait 1 s (sqs_admin.RECEIVE_WAIT_SECONDS), and the read timeout follows the wait:
        # an endpoint that accepts and never answers is reported after about half a minute, not two.
        quick = settings.model_copy(update={"wait_time_seconds": RECEIVE_WAIT_SECONDS})
        async with SqsTransport.connect(quick) as transport:
            yield SqsQueueAdmin(transport)


def check_redrive(settings: QueueSettings, request: RedriveRequest) -> None:
    """``ValueError`` for a redrive the backend of ``queue.url`` cannot honour, before connecting to it."""
    admin = StompQueueAdmin if settings.backend == "stomp" else SqsQueueAdmin
    admin.check_redrive(request)

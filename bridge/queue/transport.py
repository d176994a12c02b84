"""The transport contract: what the consumer, the sweep and the operator commands may ask of a queue.

Two backends implement it: ``bridge.queue.sqs`` (Amazon SQS) and ``bridge.queue.stomp`` (ActiveMQ over STOMP 1.2).
``bridge.queue.open_transport`` picks one by the scheme of ``queue.url``, as ``open_state_store`` picks a state
store by ``state.url``. Everything above this module (consumer, pipeline, worker) sees only ``Transport`` and
``QueueMessage``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bridge.queue.dead_letter import DeadLetterContext

# The most messages one receive returns, and one settling call takes.
MAX_BATCH = 10
# Without a redrive policy (SQS) or on a broker that has none the worker honours (ActiveMQ), the worker dead-letters
# a message itself on this many attempts.
DEFAULT_MAX_RECEIVE_COUNT = 10


def prefetch_for(concurrency: int) -> int:
    """Messages a consumer holds beyond the running ones: a batch, two for wide concurrency. A transport that
    pushes messages (ActiveMQ) asks the broker for at most ``concurrency + prefetch_for(concurrency)``."""
    return min(2 * MAX_BATCH, max(MAX_BATCH, concurrency))


@dataclass(slots=True)
class QueueMessage:
    """One delivery of one message, as the transport received it.

    ``receipt_handle`` is the transport's handle for settling this delivery (an SQS receipt handle, a STOMP ack id);
    ``receive_count`` counts attempts, including the ones before a worker restart; ``attributes`` are the producer's
    string attributes (SQS message attributes, STOMP headers). ``group_id`` orders messages where the transport keeps
    an order (``Transport.ordered_groups``); ``trace_header`` is an AWS X-Ray header where the transport has one.
    """

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
        """Seconds since the producer sent it (the broker's timestamp)."""
        return None if self.sent_at is None else max(0.0, time.time() - self.sent_at)


@dataclass(frozen=True, slots=True)
class QueueInfo:
    dlq_url: str
    max_receive_count: int
    has_redrive: bool


class Transport(Protocol):
    """A queue the worker consumes from, settles on, and sends to.

    Lifecycle: ``bridge.queue.open_transport`` (an async context manager) opens the connection;
    ``describe`` resolves the dead-letter queue and the attempt budget and raises ``ConfigError`` when the queue is
    unusable; then any number of concurrent ``receive`` and settling calls; leaving the context closes the
    connection. Closing hands every unsettled message back to the queue (SQS: when its visibility runs out; STOMP:
    the broker redelivers what was not acknowledged), so a crash or a kill never loses a message.

    Settling: every received message ends in exactly one of ``complete`` (done: gone from the queue),
    ``retry_later`` (back after at least the delay, with ``receive_count`` one higher) or ``send_dead_letter``
    followed by ``complete`` (copied to the dead-letter queue with its ``failure.*`` context, then gone). ``release``
    hands a message back unprocessed (shutdown, FIFO order); ``extend`` keeps a message reserved while it runs.
    Settling calls take at most ``MAX_BATCH`` messages and return the ids they could not settle: those come back
    later and are processed again, which the state store makes harmless. A message must never be settled twice.

    Backpressure: the transport never holds more than the consumer asked for. ``receive(n, wait)`` returns at most
    ``n`` messages (at most ``MAX_BATCH``), waiting up to ``wait`` seconds for the first; the consumer asks only for
    what its free slots can take, so an idle consumer is a full one.

    Errors: ``receive`` and the settling calls raise on transport failures (network, broker, throttling); the
    consumer logs them and backs off; a message whose settling failed is redelivered. ``send`` and
    ``send_dead_letter`` return only when the queue holds the copy (SQS's answer, a STOMP receipt), so the caller
    may then complete the original.

    Health: ``connected`` is False while the transport knows its connection is down (a broker restart); it
    reconnects by itself, with back-off.
    """

    url: str
    dlq_url: str | None

    @property
    def ordered_groups(self) -> bool:
        """True when messages of one ``group_id`` must run one after another, in the order received (SQS FIFO)."""
        ...

    @property
    def lease_seconds(self) -> int | None:
        """How long a received message stays reserved unless ``extend``-ed; None: until settled or disconnected."""
        ...

    def connected(self) -> bool:
        """False while the transport knows its connection is down; cheap, called by every health check."""
        ...

    async def describe(self) -> QueueInfo:
        """The dead-letter queue and the attempt budget; ``ConfigError`` (naming the key) when the queue is unusable.
        Called once, before the first receive."""
        ...

    async def receive(self, max_messages: int, wait_time: int) -> list[QueueMessage]:
        """At most ``max_messages`` (and ``MAX_BATCH``), waiting up to ``wait_time`` s for the first; ``[]`` when
        none came. Every message returned is the caller's to settle. Cancelling it loses nothing."""
        ...

    async def complete(self, messages: Sequence[QueueMessage]) -> list[str]:
        """Done: remove them from the queue. Returns the ids it could not (they come back and are deduplicated)."""
        ...

    async def retry_later(self, messages: Sequence[QueueMessage], seconds: int) -> list[str]:
        """Back after at least ``seconds``, counted as one more attempt. Returns the ids it could not settle."""
        ...

    async def release(self, messages: Sequence[QueueMessage]) -> list[str]:
        """Hand back unprocessed for another consumer, at once or at the latest when the transport closes."""
        ...

    async def extend(self, messages: Sequence[QueueMessage], seconds: int) -> list[str]:
        """Keep them reserved ``seconds`` longer (a no-op where ``lease_seconds`` is None)."""
        ...

    async def send_dead_letter(self, message: QueueMessage, context: DeadLetterContext) -> None:
        """Copy to the dead-letter queue with ``failure_attributes``; returns once the copy is held, raises
        otherwise. The caller completes the original afterwards, never before."""
        ...

    async def send(self, body: str, attributes: dict[str, str] | None = None, *, group_id: str | None = None) -> str:
        """Send one message to the main queue (the sweep, ``replay``); returns an id for the logs."""
        ...

"""The queue contracts: ``Transport`` (what the consumer and the sweep may ask of a queue) and ``QueueAdmin`` (what
the operator commands may ask of it and of its dead-letter queue).

Two backends implement both: Amazon SQS (``bridge.queue.sqs``, ``bridge.queue.sqs_admin``) and ActiveMQ over
STOMP 1.2 (``bridge.queue.stomp``, ``bridge.queue.stomp_admin``). ``bridge.queue.open_transport`` and
``open_queue_admin`` pick one by the scheme of ``queue.url``, as ``open_state_store`` picks a state store by
``state.url``. Everything above this module (consumer, pipeline, worker, ``bridge.admin``) sees only these
Protocols and the plain types beside them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bridge.errors import ConfigError
from bridge.queue.dead_letter import DeadLetterContext

# The most messages one receive returns, and one settling call takes.
MAX_BATCH = 10
# A receive returns or fails within its wait and this: SQS's deadline for the call, botocore's retries included
# (``bridge.queue.sqs``); ActiveMQ's takes its wait at most.
RECEIVE_MARGIN_SECONDS = 10
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
    ``raw_body`` holds the body's bytes where they are not UTF-8 (ActiveMQ carries bytes; SQS only text): ``body``
    then shows each bad byte as U+FFFD, and every copy the transport makes (a dead letter, a retry, a redrive) sends
    ``raw_body``, so the message is never altered.
    """

    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, str]
    receive_count: int
    sent_at: float | None
    group_id: str | None
    trace_header: str | None = None
    raw_body: bytes | None = None
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

    def check_attempts(self, configured: int | None) -> None:
        """``ConfigError`` naming ``queue.max_receive_count`` when it is beyond the queue's own redrive count: the
        queue moves a failing message to the dead-letter queue itself first, so the worker's count is never reached
        and no dead letter carries its reason. A start-up check of the worker (operator commands only read)."""
        if self.has_redrive and configured is not None and configured > self.max_receive_count:
            raise ConfigError(
                "queue.max_receive_count",
                f"{configured} is more than the queue's redrive policy maxReceiveCount ({self.max_receive_count}): "
                "SQS would move a failing message to the dead-letter queue first, without its reason; set at most "
                f"{self.max_receive_count}",
            )


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

    @property
    def aborted_receive_hides(self) -> bool:
        """True when cancelling ``receive`` can hide messages from every reader for their lease: the queue may have
        handed them out already, its answer on its way (SQS). False when a cancelled receive leaves every message
        where it was (ActiveMQ's local inbox): the consumer's shutdown then aborts one at once."""
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
        none came; an answer or an error within ``wait_time + RECEIVE_MARGIN_SECONDS``. Every message returned is the
        caller's to settle. Cancelling it costs nothing that is released after it (SQS finishes an abandoned long poll
        on the server, so its ``release`` makes messages visible only once that poll has ended), but on SQS an answer
        already on its way is lost to every reader until the visibility timeout ends (``aborted_receive_hides``): a
        receive that may be answering is let finish (the consumer's shutdown does)."""
        ...

    async def complete(self, messages: Sequence[QueueMessage]) -> list[str]:
        """Done: remove them from the queue. Returns the ids it could not (they come back and are deduplicated)."""
        ...

    async def retry_later(self, messages: Sequence[QueueMessage], seconds: int) -> list[str]:
        """Back after at least ``seconds``, counted as one more attempt. Returns the ids it could not settle."""
        ...

    async def release(self, messages: Sequence[QueueMessage]) -> list[str]:
        """Hand back unprocessed for another consumer, at once or at the latest when the transport closes. SQS counts
        its next receive as one more; ActiveMQ copies it back with the attempt it had (a clean shutdown costs none)."""
        ...

    async def extend(self, messages: Sequence[QueueMessage], seconds: int) -> list[str]:
        """Keep them reserved ``seconds`` longer (a no-op where ``lease_seconds`` is None)."""
        ...

    async def send_dead_letter(self, message: QueueMessage, context: DeadLetterContext) -> None:
        """Copy to the dead-letter queue with ``failure_attributes``; returns once the copy is held, raises
        otherwise. The caller completes the original afterwards, never before."""
        ...

    async def send(self, body: str, attributes: dict[str, str] | None = None, *, group_id: str | None = None) -> str:
        """Send one message to the main queue (the sweep, ``replay``, the ingress); returns an id for the logs.
        Raises ``MessageTooLarge``, having sent nothing, when the body and attributes are more than the queue
        takes."""
        ...


class MessageTooLarge(Exception):
    """The message is larger than the queue takes (SQS: the queue's ``MaximumMessageSize``, 1 KiB to 1 MiB, body
    and attributes counted; ActiveMQ: a header line over 10240 bytes, or more than 1000 headers);
    ``Transport.send`` refused it before sending. Sending it again will not help. ``what`` names the part that is
    too large where it is not the whole message; ``size`` and ``limit`` count ``unit``."""

    def __init__(self, size: int, limit: int, *, what: str | None = None, unit: str = "bytes") -> None:
        prefix = f"{what}: " if what else ""
        super().__init__(f"{prefix}{size} {unit}, more than the {limit} the queue takes")
        self.size = size
        self.limit = limit


# ------------------------------------------------------------------------------------------ the operator side


class ProgressSink(Protocol):
    """Where a long operator operation reports progress (``bridge.admin.progress.RichProgress`` draws a bar)."""

    def start(self, description: str, total: int | None) -> None: ...

    def advance(self, amount: int = 1) -> None: ...

    def update(self, completed: int, total: int | None = None) -> None: ...


class NoProgress:
    """A ``ProgressSink`` that reports nothing."""

    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass

    def update(self, completed: int, total: int | None = None) -> None:
        pass


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """A queue's approximate depth; the counts are None where the broker answers no depth query (``note`` says
    so, e.g. ActiveMQ without its statistics plugin). ``redrive_policy``: the queue's own redrive policy (SQS), if it
    has one. ``browsed``: a look at the queue is a queue browser (ActiveMQ), which consumes nothing and counts no
    receive, and is shown only what the broker has paged into memory (``PagedIn``)."""

    visible: int | None
    in_flight: int | None
    delayed: int | None
    redrive_policy: str | None = None
    note: str | None = None
    browsed: bool = False

    @property
    def total(self) -> int | None:
        if self.visible is None:
            return None
        return self.visible + (self.in_flight or 0) + (self.delayed or 0)


@dataclass(frozen=True, slots=True)
class PagedIn:
    """A browse that ended by itself having seen fewer than the broker counts on the queue: ActiveMQ shows a browser
    only what it has paged into memory, so on a queue deeper than its memory limit the browse sees ``seen`` of the
    ``size`` (the oldest), and the rest only once those are gone."""

    seen: int
    size: int

    @staticmethod
    def of(seen: int, more: bool, size: int | None) -> PagedIn | None:
        """For a browse that saw ``seen`` (``more``: it stopped at its limit) of a queue whose broker counts
        ``size`` not held by a consumer (None: unknown); None unless it ended short of that."""
        if more or size is None or seen >= size:
            return None
        return PagedIn(seen, size)


@dataclass(frozen=True, slots=True)
class PeekedMessage:
    """A message seen without being consumed: the message, and the broker's own attributes of it (SQS system
    attributes such as ``SentTimestamp``; ActiveMQ's headers such as ``timestamp`` and ``redelivered``; empty where
    the broker shows none beside the message), and what the broker calls them (``dlq show`` heads them so)."""

    message: QueueMessage
    broker_attributes: dict[str, str]
    broker_attributes_title: str


@dataclass(frozen=True, slots=True)
class DeadLetterDeletion:
    """What ``QueueAdmin.delete_dead_letters`` did: the dead letters it looked at, whether the dead-letter queue holds
    more than those, the ids of the chosen ones it deleted, and why each other chosen one was not (it stays)."""

    seen: list[PeekedMessage]
    more: bool
    deleted: list[str]
    failed: dict[str, str]


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message to send to the main queue; ``group_id`` is used where the queue keeps an order (SQS FIFO)."""

    body: str
    attributes: dict[str, str]
    group_id: str | None = None


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What became of one ``OutgoingMessage``: the id the queue gave it, or why it was not sent."""

    message_id: str | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RedriveRequest:
    """What a redrive is to move: at most ``limit`` dead letters, only those ``wanted`` (None: every one);
    ``native``: True insists on the broker's own move, False never uses it, None uses it where it can.
    ``element_of`` names a dead letter's element in the result."""

    element_of: Callable[[QueueMessage], int | None]
    limit: int | None = None
    wanted: Callable[[QueueMessage], bool] | None = None
    native: bool | None = None


@dataclass(frozen=True, slots=True)
class MovedMessage:
    dlq_message_id: str
    new_message_id: str
    element_id: int | None


@dataclass(frozen=True, slots=True)
class RedriveFailure:
    dlq_message_id: str
    reason: str


@dataclass(slots=True)
class RedriveResult:
    """What one redrive run did (``QueueAdmin.redrive``); ``bridge.admin.rendering`` prints it."""

    method: Literal["move-task", "manual"]
    source_url: str
    destination_url: str
    moved: list[MovedMessage] = field(default_factory=list)
    # Copies the queue refused: the message stays in the dead-letter queue.
    failed: list[RedriveFailure] = field(default_factory=list)
    # Messages the element filter (or the limit) left in the dead-letter queue.
    skipped: int = 0
    # Dead letters that arrived after the run started (e.g. a redriven message that failed again): left for a
    # later run, so that a run ends even while a worker keeps dead-lettering what it moves.
    arrived: int = 0
    # Ctrl-C stopped the run: the summary is partial.
    interrupted: bool = False
    # Copied, but the delete from the dead-letter queue failed: the message exists twice (never zero times).
    duplicated: list[str] = field(default_factory=list)
    # Approximate dead-letter depth (visible + in flight) after the run.
    remaining: int | None = None
    # The run's browse of the dead-letter queue saw only part of it (ActiveMQ): run again for the rest.
    paged_in: PagedIn | None = None
    # Why the native move task was not used, when it was not.
    fallback_reason: str | None = None
    # Why the run stopped before the queue was empty (a failed batch), if it did.
    stopped_reason: str | None = None
    # Move task: SQS's own count (approximate) and final status.
    moved_count: int | None = None
    task_status: str | None = None

    @property
    def moved_total(self) -> int:
        return self.moved_count if self.moved_count is not None else len(self.moved)

    @property
    def ok(self) -> bool:
        return (
            not self.failed
            and self.stopped_reason is None
            and not self.interrupted
            and self.task_status in (None, "COMPLETED")
        )


class QueueAdmin(Protocol):
    """What the operator commands (``replay``, ``dlq list/show/redrive/delete``, ``status``) may ask of a queue and its
    dead-letter queue. ``bridge.admin`` reaches a queue only through this.

    Lifecycle: ``bridge.queue.open_queue_admin`` (an async context manager) opens one connection for the length of
    a command (SQS: one aiobotocore client; ActiveMQ: one STOMP connection that does not subscribe); leaving it
    closes the connection, which hands back whatever the command still held.

    Never losing a message: ``peek`` consumes nothing and counts no attempt where the broker can avoid it (an
    ActiveMQ browser); on SQS it holds what it saw briefly and releases it all before it returns, also on errors
    and cancellation. ``redrive`` removes a dead letter only after the queue confirmed its copy on the main queue;
    the worst case (a crash between copy and removal) is a duplicate, never a loss. ``delete_dead_letters`` removes
    only the dead letters its caller chose, one by one, from the dead-letter queue and nowhere else.

    Batching: ``send`` takes at most ``MAX_BATCH`` messages and answers one ``SendOutcome`` for each, in order.
    ``peek`` and ``redrive`` batch by themselves.

    Errors: an operation that cannot do its job at all (queue missing, endpoint unreachable, access denied) raises
    ``bridge.errors.AdminError`` with a one-line reason, or ``ConfigError`` naming the key when the queue is not
    usable; a wrong argument raises ``ValueError``. Failures of single messages are reported in the result
    (``SendOutcome.error``, ``RedriveResult.failed`` / ``duplicated``), not raised.
    """

    @property
    def url(self) -> str:
        """The main queue's URL (``queue.url``)."""
        ...

    async def dead_letter_url(self) -> str:
        """``queue.dlq_url``, else the main queue's redrive target (``ConfigError`` when there is neither)."""
        ...

    async def ensure_usable(self) -> None:
        """``ConfigError`` naming ``queue.url`` when the main queue cannot take messages (it does not exist, the
        credentials may not use it). Commands that only send (``replay``, ``parked requeue``) ask first, so that a
        wrong queue is one line, as for every other command, not one failure per element."""
        ...

    async def depth(self, url: str) -> QueueDepth:
        """The approximate depth of the queue or the dead-letter queue at ``url``."""
        ...

    async def peek(
        self,
        url: str,
        *,
        limit: int,
        until: Callable[[PeekedMessage], bool] | None = None,
        progress: ProgressSink | None = None,
    ) -> tuple[list[PeekedMessage], bool]:
        """Up to ``limit`` distinct messages on ``url`` without consuming them, stopping at the first ``until``
        matches; and whether the queue holds more than was returned (limit reached, or stopped at a match)."""
        ...

    async def delete_dead_letters(
        self,
        *,
        limit: int,
        chosen: Callable[[PeekedMessage], bool],
        until: Callable[[PeekedMessage], bool] | None = None,
        progress: ProgressSink | None = None,
        on_deleted: Callable[[PeekedMessage], None] | None = None,
    ) -> DeadLetterDeletion:
        """Look at up to ``limit`` dead letters as ``peek`` does (stopping after the first ``until`` matches) and
        delete those ``chosen`` (asked of each one seen once the look has ended, in the order seen, so that what
        the look found later can decide); nothing else is consumed. SQS: each chosen
        one is deleted by the receipt handle of this look, before everything else it saw is released; ActiveMQ: chosen
        from a browse, each then received alone (a selector naming its id) and acknowledged. A chosen one that could
        not be deleted stays, its reason in ``failed``. ``on_deleted`` is told of each one as soon as the queue
        confirmed its deletion: a run cut short (Ctrl-C) returns nothing, and what it deleted is known all the same."""
        ...

    async def send(self, messages: Sequence[OutgoingMessage]) -> list[SendOutcome]:
        """Send up to ``MAX_BATCH`` messages to the main queue; one outcome each, in order; returns once the queue
        holds every copy it reports sent."""
        ...

    @staticmethod
    def check_redrive(request: RedriveRequest) -> None:
        """``ValueError`` for a request this backend cannot honour (``redrive`` checks it too). Offline:
        ``bridge.queue.check_redrive`` calls it before a command connects."""
        ...

    async def redrive(self, request: RedriveRequest, *, progress: ProgressSink, stop: asyncio.Event) -> RedriveResult:
        """Move the dead letters ``request`` names back to the main queue.

        A copy drops the ``failure.*`` attributes and carries ``redriven_from`` and the first failure
        (``bridge.queue.dead_letter.redriven_attributes``). Only what the dead-letter queue held when the run
        started is moved: a dead letter arriving meanwhile (this run's copy failing again) is left, so a run ends,
        and counted in ``arrived`` where the run sees it (SQS receives it; ActiveMQ chooses from a browse and never
        receives it). A dead letter the run leaves keeps its receive count where the broker allows (ActiveMQ: it is
        never delivered to the run; SQS counts every receive, so one received and left there does gain one). The
        broker's own move (SQS's move task) moves everything verbatim, ``failure.*`` included; it takes no limit and
        no filter. ``stop`` set ends the run at its next step with a partial result.
        """
        ...

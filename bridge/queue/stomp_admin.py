"""The ActiveMQ backend of ``QueueAdmin``, on a ``StompTransport`` that does not subscribe.

A queue's depth comes from ActiveMQ Classic's statistics plugin, where the broker runs it
(``StompTransport.queue_statistics``; unknown otherwise, and the queue is counted by browsing it). A look at a queue is
a queue browser (``peek``), which delivers nothing and counts no attempt, and is shown only what the broker has paged
into memory: a look that saw fewer than the statistics count says so (``PagedIn``).

Redrive chooses from a browse and moves each chosen dead letter on its own: receive it, then SEND its copy and ACK it
in one transaction (``StompTransport.move_dead_letter``), so a run never leaves a dead letter twice; there is no move
task. Deleting dead letters chooses from a browse the same way, and receives and ACKs each chosen one alone
(``StompTransport.delete_dead_letter``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import stompman
import structlog

from bridge.errors import AdminError
from bridge.queue.stomp import (
    RECEIPT_TIMEOUT_SECONDS,
    REDRIVE_BROWSE_LIMIT,
    BrokerNotAnswering,
    QueueStatistics,
    StompTransport,
    broker_stalled,
    stomp_error_text,
)
from bridge.queue.transport import (
    MAX_BATCH,
    DeadLetterDeletion,
    MovedMessage,
    OutgoingMessage,
    PagedIn,
    PeekedMessage,
    ProgressSink,
    QueueDepth,
    RedriveFailure,
    RedriveRequest,
    RedriveResult,
    SendOutcome,
)

log = structlog.get_logger("bridge.admin")

NO_DEPTH = (
    "no queue depth: the broker did not answer a statistics query (statisticsBrokerPlugin off, or XStream missing)"
)
STALLED = (
    f"the broker did not answer within {RECEIPT_TIMEOUT_SECONDS:g} s (overloaded, or blocking producers because its "
    "memory or store is full: see its log)"
)


class StompQueueAdmin:
    """``QueueAdmin`` over one STOMP connection (``StompTransport.connect(settings, consume=False)``)."""

    def __init__(self, transport: StompTransport) -> None:
        if transport.dlq_url is None:  # a stomp:// queue requires it (config); the check keeps the type narrow
            raise AdminError("queue.dlq_url is required for a stomp:// queue")
        self.transport = transport
        self._dlq_url: str = transport.dlq_url
        # A send the broker did not confirm in time (``broker_stalled``): every later one would wait as long.
        self._stalled = False
        # A statistics query went unanswered (no plugin; or one without XStream, which drops the connection on
        # answering): later ones would do the same.
        self._no_statistics = False

    @property
    def url(self) -> str:
        return self.transport.url

    async def dead_letter_url(self) -> str:
        return self._dlq_url

    async def ensure_usable(self) -> None:
        return None  # the broker answered the connection, and ActiveMQ makes a queue at its first message

    async def _statistics(self, url: str) -> QueueStatistics | None:
        """``StompTransport.queue_statistics``, asked at most until the broker once did not answer."""
        if self._no_statistics:
            return None
        statistics = await self.transport.queue_statistics(url)
        self._no_statistics = statistics is None
        return statistics

    async def depth(self, url: str) -> QueueDepth:
        statistics = await self._statistics(url)
        if statistics is None:
            return QueueDepth(visible=None, in_flight=None, delayed=None, note=NO_DEPTH, browsed=True)
        # Scheduled messages (a retry's delay) wait in the broker's scheduler, on no queue: no count of them.
        return QueueDepth(visible=statistics.waiting, in_flight=statistics.in_flight, delayed=None, browsed=True)

    async def peek(
        self,
        url: str,
        *,
        limit: int,
        until: Callable[[PeekedMessage], bool] | None = None,
        progress: ProgressSink | None = None,
    ) -> tuple[list[PeekedMessage], bool]:
        browsed, more = await self._browse(url, limit)
        seen: list[PeekedMessage] = []
        for peeked in browsed:
            seen.append(peeked)
            if progress is not None:
                progress.advance()
            if until is not None and until(peeked):
                return seen, True
        return seen, more

    async def delete_dead_letters(
        self,
        *,
        limit: int,
        chosen: Callable[[PeekedMessage], bool],
        until: Callable[[PeekedMessage], bool] | None = None,
        progress: ProgressSink | None = None,
        on_deleted: Callable[[PeekedMessage], None] | None = None,
    ) -> DeadLetterDeletion:
        """Chosen from a browse (which delivers nothing), so a dead letter not chosen is never delivered and keeps
        its receive count; each chosen one is then received alone and ACKed."""
        seen, more = await self.peek(self._dlq_url, limit=limit, until=until, progress=progress)
        to_delete = [peeked for peeked in seen if chosen(peeked)]
        deleted: list[str] = []
        failed: dict[str, str] = {}
        for index, peeked in enumerate(to_delete):
            message_id = peeked.message.message_id
            try:
                came = await self.transport.delete_dead_letter(message_id)
            except Exception as error:  # the ACK not confirmed (refused, no receipt, connection lost): it stays
                failed[message_id] = str(error) if isinstance(error, BrokerNotAnswering) else stomp_error_text(error)
                if isinstance(error, BrokerNotAnswering) or broker_stalled(error):  # the rest would wait as long
                    for left in to_delete[index + 1 :]:
                        failed[left.message.message_id] = "not tried: the broker stopped answering before its turn"
                    break
                continue
            if came:
                deleted.append(message_id)
                if on_deleted is not None:
                    on_deleted(peeked)
            else:
                failed[message_id] = "it did not come: no longer on the dead-letter queue (another consumer took it?)"
        return DeadLetterDeletion(seen, more, deleted, failed)

    async def _left_after_redrive(self) -> int | None:
        """How many dead letters are left once a run is over: the broker's statistics, else as many as a browse sees
        (up to ``REDRIVE_BROWSE_LIMIT``); None when the browse fails. The run's own browse may have ended early:
        ActiveMQ shows a browser only what it has paged into memory, so on a dead-letter queue larger than its memory
        limit the first browse sees the head alone, and the rest is only seen once the moved ones are gone."""
        statistics = await self._statistics(self._dlq_url)
        if statistics is not None:
            return statistics.size
        try:
            left, _ = await self._browse(self._dlq_url, REDRIVE_BROWSE_LIMIT)
        except AdminError as error:
            log.warning("redrive_remaining_unknown", queue=self._dlq_url, error=str(error))
            return None
        return len(left)

    async def _browse(self, url: str, limit: int) -> tuple[list[PeekedMessage], bool]:
        """``StompTransport.browse``; ``AdminError`` when the broker refuses the browser or does not answer."""
        try:
            return await self.transport.browse(url, limit=limit)
        except (stompman.Error, TimeoutError) as error:
            raise AdminError(f"cannot browse {url}: {stomp_error_text(error)}") from None

    async def send(self, messages: Sequence[OutgoingMessage]) -> list[SendOutcome]:
        """One confirmed SEND each; ``group_id`` is left out (``StompTransport.ordered_groups`` is False). Once the
        broker has not confirmed one in time, the rest (of this call and later ones) are not tried."""
        if len(messages) > MAX_BATCH:
            raise ValueError(f"send takes at most {MAX_BATCH} messages at once")
        outcomes: list[SendOutcome] = []
        for message in messages:
            if self._stalled:
                outcomes.append(SendOutcome(None, f"not sent: {STALLED} on an earlier send"))
                continue
            try:
                outcomes.append(SendOutcome(await self.transport.send(message.body, message.attributes)))
            except Exception as error:  # stompman's errors: refused, no receipt in time, connection lost
                outcomes.append(SendOutcome(None, stomp_error_text(error)))
                self._stalled = broker_stalled(error)
        return outcomes

    @staticmethod
    def check_redrive(request: RedriveRequest) -> None:
        if request.native:
            raise ValueError("--native: ActiveMQ has no move task over STOMP; leave it out to copy and acknowledge")
        if request.limit is not None and request.limit < 1:
            raise ValueError("limit must be at least 1")

    async def redrive(self, request: RedriveRequest, *, progress: ProgressSink, stop: asyncio.Event) -> RedriveResult:
        """Never loses one, never duplicates one: a dead letter's copy and ACK are one transaction. Never touches one it
        leaves: ``wanted`` and ``limit`` choose from a browse of the dead-letter queue (which delivers nothing), and
        only a chosen one is then received, on its own; ``stop`` set ends the run after the one in progress.

        Bounded by what the dead-letter queue held at the start (up to ``REDRIVE_BROWSE_LIMIT``): a dead letter that
        arrives during the run (a moved message failing again) is not in the browse, so the run ends. A chosen one
        that no longer comes (another consumer took it) ends the run with ``stopped_reason``. A run that went through
        its browse says what is left (``remaining``: the statistics, else a browse again): the first browse may have
        ended early, having seen fewer than the statistics count (``paged_in``).
        """
        self.check_redrive(request)
        wanted = request.wanted or (lambda _: True)
        counted = await self._statistics(self._dlq_url)
        at_start, more = await self._browse(self._dlq_url, REDRIVE_BROWSE_LIMIT)
        result = RedriveResult("manual", self._dlq_url, self.url)
        result.paged_in = PagedIn.of(len(at_start), more, counted.waiting if counted is not None else None)
        tried = 0
        for index, message in enumerate(peeked.message for peeked in at_start):
            if stop.is_set() or (request.limit is not None and tried >= request.limit):
                result.skipped += len(at_start) - index
                break
            if not wanted(message):
                result.skipped += 1
                continue
            tried += 1
            try:
                copied = await self.transport.move_dead_letter(message.message_id)
            except BrokerNotAnswering as error:  # not "another consumer took it"; each of the rest would wait too
                result.skipped += len(at_start) - index
                result.stopped_reason = f"{error}; the rest are left for a later run"
                break
            except Exception as error:  # the copy not confirmed (refused, no receipt, connection lost): it stays
                result.failed.append(RedriveFailure(message.message_id, stomp_error_text(error)))
                if broker_stalled(error):  # each of the rest would wait as long
                    result.skipped += len(at_start) - index - 1
                    result.stopped_reason = f"{STALLED}; the rest are left for a later run"
                    break
                continue
            if copied is None:
                result.skipped += len(at_start) - index - 1
                result.stopped_reason = (
                    f"dead letter {message.message_id} did not come (no longer on the dead-letter queue: another "
                    "consumer took it?); the rest are left for a later run"
                )
                break
            result.moved.append(MovedMessage(message.message_id, copied.send_id, request.element_of(message)))
        result.interrupted = stop.is_set()
        if not result.interrupted and result.stopped_reason is None:
            result.remaining = await self._left_after_redrive()
        log.info(
            "redriven", queue=self._dlq_url, moved=len(result.moved), failed=len(result.failed), left=result.skipped
        )
        return result

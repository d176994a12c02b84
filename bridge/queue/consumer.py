"""The consumer loop: pollers feeding a bounded in-flight set, and an explicit outcome per message.

It works on any ``bridge.queue.transport.Transport`` (SQS, ActiveMQ); what differs between queues (how a message is
deleted, delayed, dead-lettered or handed back) lives in the backend. What follows is written in SQS's words; on
ActiveMQ "visibility" is the broker holding an unacknowledged message for this connection, and "delete" an ACK.

- Concurrency is independent of the batch size: each message runs as soon as one of ``concurrency`` slots is free,
  so a slow message never holds back nine others. Pollers receive whole batches into a small prefetch (at most
  one or two batches beyond the slots), so the workers never wait on a receive and a receive carries 10 messages,
  not one per freed slot. When slots sit idle, a poller takes what it can at once.
- Read-ahead: given a handler that takes its slot itself (``WorkSlots``), the consumer runs ``read_ahead`` more
  handlers than there are slots. A message that needs no work (a notification an earlier fetch covered) is then
  settled as soon as it is received, instead of waiting behind messages that do: a backlog drains at the queue's
  speed for those, while the slots work through the rest.
- A heartbeat extends the visibility of every message the worker holds, in batches (on a transport with a lease):
  running, waiting for a slot, and done but not yet deleted. A message to be retried or released leaves the held
  set, and waits for an extension of it already on its way, before its visibility is changed, so the heartbeat
  never overrides a back-off.
- Deletes are batched (10, or after a short linger), and batches go out concurrently. A message keeps its room in
  the worker until the queue confirmed its delete: when deletes are slow the pollers receive less, instead of
  piling up done messages whose visibility runs out (they would be received again, and a burst of short messages
  would walk them to the dead-letter queue by the native redrive).
- Shutdown stops receiving, lets in-flight work finish within a deadline, releases what is left with visibility 0,
  and flushes pending deletes. A receive under way is let answer (its messages are released unrun), not aborted:
  SQS hands out messages as soon as any are visible, and the answer to an aborted receive is still on its way, so
  its messages would stay hidden from every worker for the visibility timeout and each spend a receive. A receive
  still waiting ``RECEIVE_SETTLE_SECONDS`` after it began waits on a queue with nothing visible: that one is
  aborted, as is one still waiting at the shutdown's deadline. Where an aborted receive loses nothing
  (``Transport.aborted_receive_hides`` False: ActiveMQ's local inbox) every receive is aborted at once.
- FIFO queues: messages of one group run one after another in the order SQS gave them, groups in parallel; when
  one fails and will be retried, the rest of its group is released (visibility 0) rather than run out of order.
- While the ``ReceiveGate`` is closed (a fault of the whole worker, such as refused Kordiam credentials) the
  pollers receive nothing: messages wait in the queue without spending a receive.
- Every message ends in ``Done``, ``Retry`` (``Transport.retry_later`` with an exponential back-off) or
  ``DeadLetter`` (copied to the DLQ with context, then deleted). The handler decides which from what failed
  (``bridge.pipeline.fate``); the consumer decides only what the handler cannot know: a ``Retry`` on the last
  allowed receive becomes a ``DeadLetter`` (the budget is spent), a handler that raised instead of answering is
  retried, and a dead letter the DLQ did not take is retried rather than deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from prometheus_client import Counter

from bridge.ops import metrics
from bridge.queue.gate import ReceiveGate
from bridge.queue.outcome import DeadLetter, Done, Outcome, Retry
from bridge.queue.slots import WorkSlots
from bridge.queue.transport import MAX_BATCH, RECEIVE_MARGIN_SECONDS, QueueMessage, Transport, prefetch_for
from bridge.retry import queue_backoff

log = structlog.get_logger("bridge.consumer")

Handler = Callable[[QueueMessage], Awaitable[Outcome]]

# Deletes wait this long for company (SQS deletes up to 10 per call); a processed message is not re-received
# meanwhile, because it is still invisible.
DELETE_LINGER_SECONDS = 0.2
# Stop extending a message's visibility after this long: a handler stuck for hours is a bug to surface, and SQS
# caps a message's total visibility at 12 h anyway. Time spent paused (the gate closed for a fault of the whole
# worker, the message waiting in hand on purpose) does not count: the hold counts from the gate's last opening, and
# a paused worker keeps its messages hidden up to MAX_PAUSED_HOLD_SECONDS, so that a long outage spends no receive.
MAX_HOLD_SECONDS = 3600.0
MAX_PAUSED_HOLD_SECONDS = 43_200.0
POLL_ERROR_BACKOFF_MAX = 30.0
# /healthz calls the poll loop stalled once no receive completed for this long past a receive's deadline (its wait and
# RECEIVE_MARGIN_SECONDS): a receive that meets its deadline fails, and the pollers back off (an outage /readyz
# reports; a restart would not cure it), so a stall must outlast it; the margin covers the loop's steps between two
# receives.
STALL_MARGIN_SECONDS = 10


def stall_limit(wait_time_seconds: int) -> float:
    """How long the poll loop may go without completing a receive before /healthz calls it stalled: past a
    receive's deadline by ``STALL_MARGIN_SECONDS``, and never less than twice the wait plus 10 s, the limit before
    receives had a deadline (40 s would otherwise replace 50 s at the default wait: a liveness probe's tolerance is
    not shortened by a fix meant to lengthen it at wait 0)."""
    return max(wait_time_seconds + RECEIVE_MARGIN_SECONDS + STALL_MARGIN_SECONDS, 2 * wait_time_seconds + 10)


# What releasing and flushing at shutdown get even when the drain used its whole deadline: a queue that answers
# needs far less, one that does not would otherwise hold the worker for botocore's read timeout and its retries.
SETTLE_GRACE_SECONDS = 1.0
# A receive under way at the shutdown is aborted only once it has waited this long: SQS answers within tens of ms
# when messages are visible, so by then it is a long poll on a queue with nothing to hand out.
RECEIVE_SETTLE_SECONDS = 1.0
# Extension calls of one heartbeat on their way at once: a full worker (hundreds held, all due at the same tick)
# must be extended within half a lease even when each call is slow, without taking every pooled connection.
HEARTBEAT_CALLS = 8


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    # Messages doing their work at once (the slots).
    concurrency: int
    wait_time_seconds: int
    # None: the transport holds a message until it is settled (ActiveMQ), so there is nothing to extend.
    visibility_timeout: int | None
    shutdown_timeout: float
    max_receive_count: int
    retry_base_seconds: float = 5.0
    retry_max_seconds: float = 900.0
    # Handlers run beyond the slots, up to where they need one; only for a handler that takes its slot itself
    # (``Consumer(slots=...)``). Those messages are held, and heartbeated, like the running ones.
    read_ahead: int = 0
    # The queue has a redrive policy of its own (``QueueInfo.has_redrive``): it ends a message's crash loop itself.
    queue_redrives: bool = False

    @property
    def handlers(self) -> int:
        """Handlers running at once: one per slot, plus the read-ahead."""
        return self.concurrency + self.read_ahead

    @property
    def poller_count(self) -> int:
        return poller_count(self.handlers)

    @property
    def prefetch(self) -> int:
        """Messages held beyond the running handlers: a batch, two for wide concurrency (heartbeated too)."""
        return prefetch_for(self.handlers)


def poller_count(concurrency: int) -> int:
    """One long poll per 10 slots (a receive returns at most 10), at most 8."""
    return max(1, min(8, -(-concurrency // MAX_BATCH)))


class Consumer:
    """Runs ``handler`` over every message ``transport`` delivers, until ``run``'s ``stop`` is set.

    Lifecycle: ``run`` starts the pollers, the heartbeat and the deleter, and returns only after the drain: no
    receive after ``stop``; in-flight messages get ``shutdown_timeout`` to finish, then whatever is left (running,
    prefetched, or queued behind its FIFO group) is released for another worker; pending deletes are flushed. A
    queue that does not answer is given up on at the deadline (``SETTLE_GRACE_SECONDS`` after the drain at least).
    ``ready`` and ``healthy`` answer the probes meanwhile.

    Backpressure: at most ``concurrency`` messages do their work (``WorkSlots``), ``read_ahead`` more run their
    handler up to where it needs a slot, and ``prefetch`` more wait to start or for their delete; a poller receives
    only when there is room for a whole batch, or a handler sits idle. A closed ``gate`` stops receiving altogether.
    ``slots``: given, the handler takes a slot itself around its work (and the worker shares them with it); not
    given, the consumer runs each handler inside one, and ``read_ahead`` must be 0.

    Errors: ``handler`` returns an ``Outcome``; the consumer settles it (delete, back-off, or DLQ then delete) and
    never lets a message go unsettled. A handler that raises is a bug: logged and retried. A transport call that
    fails is logged and the message is received again later (processing is idempotent); it never ends the loop.
    """

    def __init__(
        self,
        transport: Transport,
        handler: Handler,
        settings: ConsumerSettings,
        *,
        gate: ReceiveGate | None = None,
        slots: WorkSlots | None = None,
    ) -> None:
        if slots is None and settings.read_ahead:
            raise ValueError("read_ahead needs a handler that takes its slot itself (slots=...)")
        if slots is not None and slots.size != settings.concurrency:
            raise ValueError("the shared slots must number settings.concurrency")
        self._transport = transport
        self._handler = handler
        self._settings = settings
        self._gate = gate or ReceiveGate()
        # Messages this worker may hold (running their handler or waiting to), and the slots their work takes.
        self._free = settings.handlers + settings.prefetch
        self._slots = slots or WorkSlots(settings.concurrency)
        self._handler_takes_slot = slots is not None
        # Pollers waiting for room; woken (all of them, to re-check) whenever room may have appeared.
        self._room_waiters: list[asyncio.Future[None]] = []
        # Pollers in ``_reserve``'s wait for room: while all are, the worker is full, not stalled (``healthy``), as
        # long as its handlers finish something: ``_progress``, when one last did or the wait began.
        self._awaiting_room = 0
        self._progress = time.monotonic()
        # Every message this worker holds, by receipt handle: the heartbeat keeps these invisible to others.
        self._in_flight: dict[str, QueueMessage] = {}
        # Held messages that are done (or dead-lettered) and wait for the queue to confirm their delete.
        self._deleting: dict[str, QueueMessage] = {}
        # Receipt handles in a heartbeat's extension on its way, and that call's future (resolved once it landed).
        self._extending: dict[str, asyncio.Future[None]] = {}
        # Receipt handles of messages whose handler has not answered yet.
        self._handling: set[str] = set()
        self._tasks: dict[asyncio.Task[None], QueueMessage] = {}
        self._deletes: asyncio.Queue[tuple[QueueMessage, asyncio.Future[None]]] = asyncio.Queue()
        self._delete_calls: set[asyncio.Task[None]] = set()
        # FIFO: the messages of a group waiting behind the one that runs.
        self._fifo = transport.ordered_groups
        self._groups: dict[str, list[QueueMessage]] = {}
        self._receiving = True
        # Pollers in a receive (by number), and when it began (``time.monotonic``).
        self._receives: dict[int, float] = {}
        # What they answered after the shutdown began: released unrun.
        self._received_late: list[QueueMessage] = []
        # Every outcome's series from the start, at 0: Prometheus' increase() reads a series that first appears at 1
        # as no increase, so the first dead letter would never fire the README's KordiamBridgeDeadLetters alert.
        self._outcome_counters: dict[str, Counter] = {
            kind: metrics.MESSAGE_OUTCOMES.labels(kind) for kind in (Done.kind, Retry.kind, DeadLetter.kind)
        }
        self.last_poll = time.monotonic()
        self.started = False
        # Pollers waiting out the back-off after a failed receive: retrying on purpose, no stall (``healthy``).
        self._backing_off = 0
        # While receives fail: the last one's error class, and since when (``time.time``, for an operator).
        self._receive_failure: str | None = None
        self._receive_failing_since: float | None = None

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def healthy(self) -> bool:
        """False once the poll loop has not completed a receive for ``stall_limit``, past a receive's deadline: a
        stall, which a restart may cure. Waiting on purpose is no stall: paused for a fault of the whole
        worker, full (every poller waits for room while the handlers work), a transport reconnecting by itself, a
        poller waiting out its back-off after a failed receive; a restart would not cure those, and
        ``not_ready_reason`` names them."""
        if not self._receiving:
            return True
        if self._gate.reason is not None or self._backing_off:
            return True
        if self._awaiting_room == self._settings.poller_count:
            # Not polling on purpose either: every poller waits for room while the handlers work. Handlers that finish
            # nothing for as long as the heartbeat holds a message are stuck, though (a bug): that is a stall.
            return time.monotonic() - self._progress < MAX_HOLD_SECONDS
        return time.monotonic() - self.last_poll < stall_limit(self._settings.wait_time_seconds)

    def ready(self) -> bool:
        """Started, and taking messages now (``not_ready_reason`` is None)."""
        return self.started and self.not_ready_reason() is None

    def not_ready_reason(self) -> str | None:
        """Why the consumer takes no messages now; None while it does (or before it started: ``ready`` says that)."""
        if self._gate.reason is not None:
            return self._gate.reason
        if not self._transport.connected():
            return "queue connection lost; reconnecting"
        if self._receive_failure is not None:
            return f"queue receives failing ({self._receive_failure}); retrying"
        if not self.healthy():
            return "poll loop stalled"
        return None

    def not_ready_since(self) -> float | None:
        """Since when (``time.time``) the pause or the failing receives ``not_ready_reason`` names have lasted;
        None when not known."""
        if self._gate.reason is not None:
            return self._gate.closed_since
        return self._receive_failing_since if self._transport.connected() else None

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain within ``shutdown_timeout``."""
        pollers = [asyncio.create_task(self._poll(n), name=f"poller-{n}") for n in range(self._settings.poller_count)]
        heartbeat = asyncio.create_task(self._heartbeat(), name="heartbeat")
        deleter = asyncio.create_task(self._delete_loop(), name="deleter")
        self.started = True
        log.info("consumer_started", queue=self._transport.url, **_public(self._settings))
        try:
            await stop.wait()
        finally:
            await self._shutdown(pollers, heartbeat, deleter)

    async def _shutdown(
        self, pollers: list[asyncio.Task[None]], heartbeat: asyncio.Task[None], deleter: asyncio.Task[None]
    ) -> None:
        started = time.monotonic()
        # Releasing and flushing end by then too (or SETTLE_GRACE_SECONDS after the drain): what the queue has not
        # taken by then is given up, as a SIGKILL at the orchestrator's stop timeout would (a message comes back when
        # its visibility timeout ends; one whose delete was not confirmed is received again).
        deadline = started + self._settings.shutdown_timeout
        self._receiving = False
        # Only where aborting it could hide what it brings is a receive under way let answer.
        hides = self._transport.aborted_receive_hides
        receiving = [poller for number, poller in enumerate(pollers) if hides and number in self._receives]
        idle = [poller for poller in pollers if poller not in receiving]
        for poller in idle:
            poller.cancel()  # waiting for room or the gate, after a failed receive, or in a receive that loses nothing
        await asyncio.gather(*idle, return_exceptions=True)
        # Before anything is released: a receive still under way could take it (one more receive for nothing).
        await self._finish_receives(pollers, receiving, deadline)
        log.info(
            "consumer_draining",
            in_flight=len(self._tasks),
            received_late=len(self._received_late),
            deadline=self._settings.shutdown_timeout,
        )
        # A handler that has not taken a slot has done nothing yet: release its message rather than run it, with
        # what the receives answered meanwhile.
        not_started = [
            task
            for task, message in self._tasks.items()
            if message.receipt_handle in self._handling and not self._slots.entered(task)
        ]
        released = [self._tasks[task] for task in not_started] + self._received_late
        for task in not_started:
            task.cancel()
        await asyncio.gather(*not_started, return_exceptions=True)
        if released:
            await self._by_deadline(self._release(released), deadline, "release")
        # Keep a little of the deadline for releasing and flushing. While paused for a fault of the whole worker
        # the messages in hand cannot finish: release them at once.
        budget = max(0.5, deadline - 2.0 - time.monotonic()) if self._gate.reason is None else 0.0
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=budget)
            # A task still waiting for its delete is done with its message: the deleter finishes it below.
            unfinished = [
                self._tasks[task] for task in pending if self._tasks[task].receipt_handle not in self._deleting
            ]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if unfinished:
                await self._by_deadline(self._release(unfinished), deadline, "release")
        waiting = [message for group in self._groups.values() for message in group]
        self._groups.clear()
        if waiting:
            await self._by_deadline(self._release(waiting), deadline, "release")
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        await self._by_deadline(self._deletes.join(), deadline, "delete")
        deleter.cancel()
        calls = [deleter, *self._delete_calls]
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        log.info("consumer_stopped", seconds=round(time.monotonic() - started, 3))

    async def _finish_receives(
        self, pollers: list[asyncio.Task[None]], receiving: list[asyncio.Task[None]], deadline: float
    ) -> None:
        """The receives under way when the shutdown began: each answers (its messages are kept in
        ``_received_late``, to be released), or, still waiting ``RECEIVE_SETTLE_SECONDS`` after it began or at the
        shutdown's ``deadline``, is aborted. Handlers go on meanwhile."""
        if not receiving:
            return
        # The deadline is the operator's: a queue that has not answered by it is given up on, a receive too.
        settle_by = min(max(self._receives.values(), default=0.0) + RECEIVE_SETTLE_SECONDS, deadline)
        await asyncio.wait(receiving, timeout=max(0.0, settle_by - time.monotonic()))
        for number, poller in enumerate(pollers):
            if number in self._receives:
                poller.cancel()  # a long poll on a queue with nothing visible (SqsTransport records it abandoned)
        await asyncio.gather(*receiving, return_exceptions=True)

    async def _by_deadline(self, settling: Awaitable[None], deadline: float, step: str) -> None:
        """``settling`` (a release, the flush of deletes), cancelled if still waiting for the queue at
        ``deadline`` (or ``SETTLE_GRACE_SECONDS`` from now, if later)."""
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), SETTLE_GRACE_SECONDS)):
                await settling
        except TimeoutError:
            log.error(
                "shutdown_deadline_passed",
                step=step,
                hint="the queue did not answer in time: released messages come back when their visibility timeout "
                "ends, messages whose delete was not confirmed are received again",
            )

    # ---- receiving -----------------------------------------------------------------------------------------

    async def _poll(self, number: int) -> None:
        failures = 0
        while self._receiving:
            if self._gate.reason is not None:
                await self._gate.wait_open()
                self.last_poll = time.monotonic()  # a pause is not a stalled poll loop
            wanted = await self._reserve()
            try:
                messages = await self._receive(number, wanted)
            except asyncio.CancelledError:
                self._give_back(wanted)
                raise
            except Exception as error:
                self._give_back(wanted)
                if not self._receiving:
                    return  # the shutdown let it answer; it took nothing, and nothing is received any more
                failures += 1
                delay = min(POLL_ERROR_BACKOFF_MAX, 0.5 * 2**failures)
                log.error("receive_failed", poller=number, error=f"{type(error).__name__}: {error}", retry_in=delay)
                self._receive_failure = type(error).__name__
                if self._receive_failing_since is None:
                    self._receive_failing_since = time.time()
                self._backing_off += 1
                try:
                    await asyncio.sleep(delay)
                finally:
                    self._backing_off -= 1
                    self.last_poll = time.monotonic()  # a back-off is not a stalled poll loop
                continue
            if not self._receiving:  # answered during the shutdown: handed back unrun, for another worker
                metrics.MESSAGES_RECEIVED.inc(len(messages))  # the queue counted the receive
                self._received_late += messages
                self._give_back(wanted)
                return
            if failures:  # the errors above said it stopped; this says it works again
                log.info("receive_recovered", poller=number, failures=failures)
            failures = 0
            self._receive_failure = self._receive_failing_since = None
            self.last_poll = time.monotonic()
            self._give_back(wanted - len(messages))
            for message in messages:
                self._start(message)

    async def _receive(self, number: int, wanted: int) -> list[QueueMessage]:
        self._receives[number] = time.monotonic()  # the shutdown lets a receive under way answer
        try:
            return await self._transport.receive(wanted, self._settings.wait_time_seconds)
        finally:
            del self._receives[number]

    async def _reserve(self) -> int:
        """Wait until a whole batch fits, or until slots sit idle; then take as much as one receive can use.

        Under load slots free up one at a time; receiving for each would cost one SQS call per message (CPU in the
        worker and in SQS, and money). While every slot is busy and messages wait for one, there is no hurry, so a
        poller waits for room for a full batch; an idle slot ends the wait at once.
        """

        if not self._has_room():
            if not self._awaiting_room:
                self._progress = time.monotonic()
            self._awaiting_room += 1
            try:
                while not self._has_room():
                    waiter = asyncio.get_running_loop().create_future()
                    self._room_waiters.append(waiter)
                    try:
                        await waiter
                    finally:
                        with contextlib.suppress(ValueError):
                            self._room_waiters.remove(waiter)
            finally:
                self._awaiting_room -= 1
                self.last_poll = time.monotonic()  # a wait for room is not a stalled poll loop
        # No await between the check and the take: no other poller can take the same room.
        taken = min(MAX_BATCH, self._free)
        self._free -= taken
        return taken

    def _has_room(self) -> bool:
        unsettled = len(self._tasks) - len(self._deleting)
        return self._free >= MAX_BATCH or (self._free > 0 and unsettled < self._settings.handlers)

    def _wake_pollers(self) -> None:
        if self._room_waiters and self._has_room():
            waiters, self._room_waiters = self._room_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _give_back(self, slots: int) -> None:
        if slots > 0:
            self._free += slots
            self._wake_pollers()

    def _start(self, message: QueueMessage) -> None:
        metrics.MESSAGES_RECEIVED.inc()
        if message.age is not None:
            metrics.MESSAGE_AGE.observe(message.age)
        self._in_flight[message.receipt_handle] = message
        if self._fifo and message.group_id is not None:
            waiting = self._groups.get(message.group_id)
            if waiting is not None:
                waiting.append(message)  # runs when the one ahead of it is settled
                return
            self._groups[message.group_id] = []
        self._spawn(message)

    def _spawn(self, message: QueueMessage) -> None:
        task = asyncio.create_task(self._process(message), name=f"message-{message.message_id}")
        self._tasks[task] = message
        metrics.IN_FLIGHT.set(len(self._tasks))
        task.add_done_callback(self._finished)

    async def _continue_group(self, group: str, *, failed: bool) -> None:
        waiting = self._groups.get(group)
        if waiting is None:
            return
        if not waiting:
            del self._groups[group]
        elif not self._receiving:
            pass  # draining: the rest has done nothing yet, and the shutdown releases it with the other groups
        elif failed:
            # Running the rest now would overtake the failed message: give them back to SQS, which keeps order.
            del self._groups[group]
            await self._release(waiting)
            self._give_back(len(waiting))
        else:
            self._spawn(waiting.pop(0))

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._progress = time.monotonic()
        self._tasks.pop(task, None)
        metrics.IN_FLIGHT.set(len(self._tasks))
        self._free += 1
        self._wake_pollers()

    # ---- settling ------------------------------------------------------------------------------------------

    async def _process(self, message: QueueMessage) -> None:
        # Each message runs in its own task, so these bindings reach every log line of its processing only.
        structlog.contextvars.bind_contextvars(message_id=message.message_id, receive_count=message.receive_count)
        budget = self._settings.max_receive_count
        if message.receive_count > budget and not self._fifo and not self._settings.queue_redrives:
            # Its earlier receives ended with no outcome (a retry on the last one would have dead-lettered it): the
            # worker was killed or crashed on it, or lost it while holding it. Handled again, it may do the same for
            # ever where the queue has no redrive policy of its own to end the loop. Not on a FIFO queue: there the
            # rest of a group is released each time its head is retried, receives that say nothing of a crash. Not
            # where the queue redrives: a receive without an outcome may be a release (a shutdown, a kill over
            # another message), and the queue's own maxReceiveCount, which ends a crash loop, may be the higher.
            outcome: Outcome = DeadLetter(
                stage="receive",
                reason=f"received {message.receive_count} times, more than queue.max_receive_count ({budget}), "
                "without an outcome: a worker was killed or crashed while holding it, released it at a shutdown, or "
                "lost it (its visibility ran out), or the dead-letter queue refused it on its last allowed receive",
                error_class="ReceivedWithoutOutcome",
            )
        else:
            outcome = await self._handle(message)
        if isinstance(outcome, Retry) and message.receive_count >= budget:
            outcome = outcome.exhausted(message.receive_count)
        deleted = await self._settle(message, outcome)
        if self._fifo and message.group_id is not None:
            # Not deleted means it comes back (a retry, or a dead letter the DLQ did not take): still first in line.
            await self._continue_group(message.group_id, failed=deleted is None)
        if deleted is not None:
            await deleted  # the message keeps its room until the queue confirmed the delete

    async def _handle(self, message: QueueMessage) -> Outcome:
        """The handler's outcome; a crash of the handler is a retry (a bug must not lose the message)."""
        self._handling.add(message.receipt_handle)
        try:
            if self._handler_takes_slot:
                outcome = await self._handler(message)
            else:
                async with self._slots.hold():
                    outcome = await self._handler(message)
        except asyncio.CancelledError as error:
            task = asyncio.current_task()
            if task is None or task.cancelling():  # the shutdown cancelled it: it releases the message
                self._in_flight.pop(message.receipt_handle, None)
                raise
            # Nobody cancelled this task: the handler let out a cancellation of something it awaited, a bug like
            # any other. Left to propagate it would leave the message unsettled and its FIFO group blocked.
            log.exception("handler_crashed")
            outcome = Retry(delay=None, stage="handler", reason="CancelledError", error_class=type(error).__name__)
        except Exception as error:  # a bug in a handler must not lose the message or kill the loop
            log.exception("handler_crashed")
            outcome = Retry(
                delay=None, stage="handler", reason=f"{type(error).__name__}: {error}", error_class=type(error).__name__
            )
        finally:
            self._handling.discard(message.receipt_handle)
        return outcome

    async def _settle(self, message: QueueMessage, outcome: Outcome) -> asyncio.Future[None] | None:
        """Settle ``outcome``; for a delete, return the future its confirmation resolves."""
        if isinstance(outcome, Done):
            self._count(outcome.kind)
            return self._queue_delete(message)
        if isinstance(outcome, Retry):
            self._count(outcome.kind)
            delay = self._backoff(message, floor=outcome.delay or 0.0)
            log.warning("retry_later", outcome="retry", stage=outcome.stage, reason=outcome.reason, visibility=delay)
            await self._retry_later([message], delay)
            return None
        assert isinstance(outcome, DeadLetter)  # a DeadLetter is the context the dead-letter queue keeps
        try:
            await self._transport.send_dead_letter(message, outcome)
        except Exception as error:
            # Never delete what did not reach the DLQ: leave it for a later receive (or native redrive).
            log.error(
                "dead_letter_failed", outcome="retry", error=f"{type(error).__name__}: {error}", reason=outcome.reason
            )
            self._count(Retry.kind)  # what happened to it: the metric and the log line agree
            await self._retry_later([message], self._backoff(message))
            return None
        self._count(outcome.kind)
        log.error(
            "dead_lettered",
            outcome="dead_letter",
            stage=outcome.stage,
            reason=outcome.reason,
            error_class=outcome.error_class,
            element_id=outcome.element_id,
        )
        return self._queue_delete(message)

    def _backoff(self, message: QueueMessage, *, floor: float = 0.0) -> int:
        """The visibility of a message's retry: ``queue.retry_base_seconds`` and ``queue.retry_max_seconds``."""
        return queue_backoff(
            message.receive_count,
            base=self._settings.retry_base_seconds,
            cap=self._settings.retry_max_seconds,
            floor=floor,
        )

    def _count(self, kind: str) -> None:
        counter = self._outcome_counters.get(kind)
        if counter is None:  # labelled once per kind: looking labels up takes a lock and builds a key
            counter = self._outcome_counters[kind] = metrics.MESSAGE_OUTCOMES.labels(kind)
        counter.inc()

    def _queue_delete(self, message: QueueMessage) -> asyncio.Future[None]:
        # Still held (and heartbeated) until the delete is confirmed; its slot is free for the next message.
        self._deleting[message.receipt_handle] = message
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._deletes.put_nowait((message, confirmed))
        self._wake_pollers()
        return confirmed

    async def _retry_later(self, messages: list[QueueMessage], seconds: int) -> None:
        # Leave the held set first: the heartbeat must not undo the back-off.
        for message in messages:
            self._in_flight.pop(message.receipt_handle, None)
        await self._after_extension(messages)

        async def retry(chunk: list[QueueMessage]) -> list[str]:
            return await self._transport.retry_later(chunk, seconds)

        await self._in_batches(retry, messages)

    async def _release(self, messages: list[QueueMessage]) -> None:
        """Make unfinished messages visible again at once, so another worker can take them."""
        log.warning("releasing_unfinished", count=len(messages))
        for message in messages:
            self._in_flight.pop(message.receipt_handle, None)
        await self._after_extension(messages)
        await self._in_batches(self._transport.release, messages)

    async def _after_extension(self, messages: list[QueueMessage]) -> None:
        """Wait for the heartbeat's extension of any of ``messages`` already on its way: a visibility set meanwhile
        could reach the queue first (a slow call, one botocore retries) and be overridden by it."""
        calls = {self._extending[m.receipt_handle] for m in messages if m.receipt_handle in self._extending}
        if calls:
            await asyncio.wait(calls)  # not cancelling the shared futures when this task is cancelled

    async def _in_batches(
        self, settle: Callable[[list[QueueMessage]], Awaitable[list[str]]], messages: list[QueueMessage]
    ) -> None:
        for start in range(0, len(messages), MAX_BATCH):
            chunk = messages[start : start + MAX_BATCH]
            try:
                failed = await settle(chunk)
            except Exception as error:
                log.error("visibility_change_failed", count=len(chunk), error=f"{type(error).__name__}: {error}")
                continue
            if failed:
                log.warning("visibility_change_rejected", message_ids=failed)

    async def _delete_loop(self) -> None:
        """Gather deletes into batches and send each batch without waiting for the one before: one call at a time
        would cap the worker at 10 messages per round trip. The room each pending delete holds bounds the calls."""
        while True:
            batch = [await self._deletes.get()]
            # One timeout for the whole linger (asyncio.wait_for would make a task per message).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DELETE_LINGER_SECONDS):
                    while len(batch) < MAX_BATCH:
                        batch.append(await self._deletes.get())
            call = asyncio.create_task(self._delete(batch), name="delete-batch")
            self._delete_calls.add(call)
            call.add_done_callback(self._delete_calls.discard)

    async def _delete(self, batch: list[tuple[QueueMessage, asyncio.Future[None]]]) -> None:
        try:
            await self._transport.complete([message for message, _ in batch])
        except Exception as error:
            log.error(
                "delete_batch_failed",
                count=len(batch),
                error=f"{type(error).__name__}: {error}",
                hint="the messages will be received again; processing is idempotent",
            )
        finally:
            for message, confirmed in batch:
                self._deleting.pop(message.receipt_handle, None)
                self._in_flight.pop(message.receipt_handle, None)
                if not confirmed.done():  # its task may have been cancelled at the shutdown deadline
                    confirmed.set_result(None)
                self._deletes.task_done()

    # ---- heartbeat -----------------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        timeout = self._settings.visibility_timeout
        if timeout is None:
            return
        interval = max(1.0, timeout / 6)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            paused = self._gate.reason is not None
            opened_at = self._gate.opened_at
            due = [
                m
                for m in list(self._in_flight.values())
                if m.visible_until - now < timeout / 2
                and now - m.received_at < MAX_PAUSED_HOLD_SECONDS
                and (paused or now - max(m.received_at, opened_at) < MAX_HOLD_SECONDS)
            ]
            chunks = [due[start : start + MAX_BATCH] for start in range(0, len(due), MAX_BATCH)]
            for wave in range(0, len(chunks), HEARTBEAT_CALLS):
                await asyncio.gather(
                    *(self._extend(c, lease=timeout, now=now) for c in chunks[wave : wave + HEARTBEAT_CALLS])
                )

    async def _extend(self, due: list[QueueMessage], *, lease: int, now: float) -> None:
        chunk = [m for m in due if m.receipt_handle in self._in_flight]  # settled meanwhile: not extended
        if not chunk:
            return
        landed = asyncio.get_running_loop().create_future()
        for message in chunk:
            self._extending[message.receipt_handle] = landed
        try:
            failed = set(await self._transport.extend(chunk, lease))
        except Exception as error:
            log.error("heartbeat_failed", count=len(chunk), error=f"{type(error).__name__}: {error}")
            return
        finally:
            for message in chunk:
                if self._extending.get(message.receipt_handle) is landed:
                    del self._extending[message.receipt_handle]
            landed.set_result(None)
        for message in chunk:
            if message.message_id not in failed:
                message.visible_until = now + lease
                metrics.VISIBILITY_EXTENSIONS.inc()


def _public(settings: ConsumerSettings) -> dict[str, object]:
    return {
        "concurrency": settings.concurrency,
        "read_ahead": settings.read_ahead,
        "pollers": settings.poller_count,
        "wait_time_seconds": settings.wait_time_seconds,
        "visibility_timeout": settings.visibility_timeout,
        "max_receive_count": settings.max_receive_count,
    }

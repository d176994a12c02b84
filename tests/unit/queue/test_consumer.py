"""The consumer loop against an in-process fake of the transport contract (the integration tests use real queues)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import Sequence
from typing import Any

import pytest
from structlog.testing import capture_logs

from bridge.ops import metrics
from bridge.queue.consumer import MAX_HOLD_SECONDS, STALL_MARGIN_SECONDS, Consumer, ConsumerSettings
from bridge.queue.gate import ReceiveGate
from bridge.queue.outcome import DeadLetter, Done, Outcome, Retry
from bridge.queue.slots import WorkSlots
from bridge.queue.transport import MAX_BATCH, RECEIVE_MARGIN_SECONDS, QueueMessage, prefetch_for
from tests.unit.fakes import FakeTransport

ids = itertools.count(1)


def message(body: str = "{}", *, group: str | None = None, receive_count: int = 1) -> QueueMessage:
    n = next(ids)
    return QueueMessage(
        message_id=f"m{n}",
        receipt_handle=f"r{n}",
        body=body,
        attributes={},
        receive_count=receive_count,
        sent_at=None,
        group_id=group,
    )


def settings(**overrides: Any) -> ConsumerSettings:
    values: dict[str, Any] = {
        "concurrency": 4,
        "wait_time_seconds": 1,
        "visibility_timeout": 30,
        "shutdown_timeout": 3,
        "max_receive_count": 3,
        "retry_base_seconds": 1,
        "retry_max_seconds": 2,
    }
    return ConsumerSettings(**(values | overrides))


async def run_until(consumer: Consumer, done: Any, timeout: float = 5) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done() and loop.time() < deadline:
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_each_outcome_settles_explicitly() -> None:
    ok, flaky, poison, exhausted = message(), message(), message(), message(receive_count=3)
    transport = FakeTransport([[ok, flaky, poison, exhausted]])
    outcomes: dict[str, Outcome] = {
        ok.message_id: Done(),
        flaky.message_id: Retry(delay=7, stage="fetch", reason="503", error_class="KordiamUnavailable"),
        poison.message_id: DeadLetter(stage="decode", reason="not JSON", error_class="PoisonMessage"),
        exhausted.message_id: Retry(
            delay=None, stage="web", reason="down", error_class="ChannelUnavailable", element_id=7
        ),
    }

    async def handler(m: QueueMessage) -> Outcome:
        return outcomes[m.message_id]

    consumer = Consumer(transport, handler, settings())
    await run_until(consumer, lambda: len(transport.deleted) == 3 and transport.visibility)
    assert sorted(transport.deleted) == sorted([ok.message_id, poison.message_id, exhausted.message_id])
    # The retry honours the server's delay as a floor.
    assert transport.visibility == [(flaky.message_id, 7)]
    # A retry on the last allowed receive becomes a dead letter with its reason.
    dead = dict(transport.dead)
    assert dead[poison.message_id].stage == "decode"
    assert dead[exhausted.message_id].stage == "web"
    assert dead[exhausted.message_id].reason == "gave up after 3 attempts: down"
    # Still naming its element: `element ID --dlq` and `dlq redrive --element ID` find it by that.
    assert dead[exhausted.message_id].element_id == 7


async def test_a_message_received_past_its_budget_without_an_outcome_is_dead_lettered_unhandled() -> None:
    # Its earlier receives ended with no outcome (the worker was killed on it, or lost it): on a queue without a
    # redrive policy of its own nothing else would ever end the loop. The handler is not run on it again.
    crashed, fresh = message(receive_count=4), message(receive_count=3)
    transport = FakeTransport([[crashed, fresh]])
    handled: list[str] = []

    async def handler(m: QueueMessage) -> Outcome:
        handled.append(m.message_id)
        return Done()

    consumer = Consumer(transport, handler, settings(max_receive_count=3))
    await run_until(consumer, lambda: len(transport.deleted) == 2)
    assert handled == [fresh.message_id]
    dead = dict(transport.dead)
    assert list(dead) == [crashed.message_id]
    assert dead[crashed.message_id].stage == "receive"
    assert dead[crashed.message_id].error_class == "ReceivedWithoutOutcome"
    assert "received 4 times" in dead[crashed.message_id].reason
    # Every way a receive ends without an outcome is named: not only a crash.
    assert "released it at a shutdown" in dead[crashed.message_id].reason
    assert "dead-letter queue refused" in dead[crashed.message_id].reason


async def test_a_fifo_message_received_past_its_budget_is_still_handled() -> None:
    # On a FIFO queue the rest of a group is released each time its head is retried: its receive count grows
    # without any crash, so it says nothing about the message itself.
    follower = message(receive_count=4, group="g")
    transport = FakeTransport([[follower]], fifo=True)

    async def handler(m: QueueMessage) -> Outcome:
        return Done()

    consumer = Consumer(transport, handler, settings(max_receive_count=3))
    await run_until(consumer, lambda: transport.deleted)
    assert transport.deleted == [follower.message_id] and not transport.dead


async def test_a_message_received_past_its_budget_on_a_queue_with_a_redrive_policy_is_still_handled() -> None:
    # The queue's own redrive policy ends a crash loop (SQS moves the message after its maxReceiveCount-th receive).
    # A queue.max_receive_count set below that count must not dead-letter, unhandled, a message whose extra receives
    # were releases (a shutdown, a kill of the worker over another message), which SQS would still hand out.
    released = message(receive_count=4)
    transport = FakeTransport([[released]])

    async def handler(m: QueueMessage) -> Outcome:
        return Done()

    consumer = Consumer(transport, handler, settings(max_receive_count=3, queue_redrives=True))
    await run_until(consumer, lambda: transport.deleted)
    assert transport.deleted == [released.message_id] and not transport.dead


def outcome_count(kind: str) -> float:
    return float(metrics.MESSAGE_OUTCOMES.labels(kind)._value.get())


async def test_a_dead_letter_the_dlq_did_not_take_is_retried_and_counted_as_a_retry() -> None:
    poison = message()
    transport = FakeTransport([[poison]])

    async def refuse(msg: QueueMessage, context: Any) -> None:
        raise ConnectionError("DLQ unreachable")

    transport.send_dead_letter = refuse  # type: ignore[method-assign]

    async def handler(m: QueueMessage) -> Outcome:
        return DeadLetter(stage="decode", reason="not JSON", error_class="PoisonMessage")

    dead_before, retries_before = outcome_count("dead_letter"), outcome_count("retry")
    consumer = Consumer(transport, handler, settings())
    await run_until(consumer, lambda: transport.visibility)
    assert transport.deleted == [] and transport.visibility[0][0] == poison.message_id
    # An alert on dead letters must not fire for a message that is still on the main queue.
    assert outcome_count("dead_letter") == dead_before
    assert outcome_count("retry") == retries_before + 1


async def test_a_crashing_handler_retries_instead_of_losing_the_message() -> None:
    crash = message()
    transport = FakeTransport([[crash]])

    async def handler(m: QueueMessage) -> Outcome:
        raise RuntimeError("bug")

    consumer = Consumer(transport, handler, settings())
    await run_until(consumer, lambda: transport.visibility)
    assert transport.deleted == [] and transport.visibility[0][0] == crash.message_id


async def test_concurrency_is_bounded_and_independent_of_the_batch() -> None:
    transport = FakeTransport([[message() for _ in range(4)] for _ in range(5)])
    running = peak = 0

    async def handler(m: QueueMessage) -> Outcome:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return Done()

    consumer = Consumer(transport, handler, settings(concurrency=4))
    await run_until(consumer, lambda: len(transport.deleted) == 20)
    assert peak <= 4 and len(transport.deleted) == 20


class SteadyTransport(FakeTransport):
    """Answers each receive like SQS: up to the asked number of messages while any are left."""

    def __init__(self, total: int) -> None:
        super().__init__([])
        self.left = total
        self.asked: list[int] = []
        self.answered: list[int] = []  # the asked number, for each receive that returned messages

    async def receive(self, max_messages: int, wait_time: int) -> list[QueueMessage]:
        self.asked.append(max_messages)
        await asyncio.sleep(0.001)
        count = min(self.left, max(1, max_messages))  # SQS never answers with 0 when messages are waiting
        self.left -= count
        if not count:
            await asyncio.sleep(0.05)  # an empty long poll
        else:
            self.answered.append(max_messages)
        return [message() for _ in range(count)]


async def test_several_pollers_never_overcommit_the_slots() -> None:
    # Four pollers compete for 32 slots that free up one at a time: a poller must never ask for 0 messages (and
    # get one anyway), which would run more than `concurrency` at once.
    transport = SteadyTransport(600)
    running = peak = 0

    async def handler(m: QueueMessage) -> Outcome:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01 + 0.01 * (int(m.message_id[1:]) % 5))
        running -= 1
        return Done()

    consumer = Consumer(transport, handler, settings(concurrency=32))
    await run_until(consumer, lambda: len(transport.deleted) == 600, timeout=20)
    assert len(transport.deleted) == 600
    assert min(transport.asked) >= 1 and max(transport.asked) <= 10
    assert peak <= 32


async def test_fifo_runs_a_group_in_order_and_releases_it_after_a_failure() -> None:
    a1, a2, a3 = (message(group="A") for _ in range(3))
    b1, b2 = (message(group="B") for _ in range(2))
    transport = FakeTransport([[a1, b1, a2, b2, a3]], fifo=True)
    order: list[str] = []

    async def handler(m: QueueMessage) -> Outcome:
        order.append(m.message_id)
        await asyncio.sleep(0.02)
        if m is a1:
            return Retry(delay=None, stage="web", reason="down", error_class="ChannelUnavailable")
        return Done()

    consumer = Consumer(transport, handler, settings(concurrency=10))
    await run_until(consumer, lambda: len(transport.deleted) == 2 and len(transport.visibility) == 3)
    # Group B ran in order; group A stopped at its failure and gave the rest back, in order, unprocessed.
    assert [m for m in order if m in (b1.message_id, b2.message_id)] == [b1.message_id, b2.message_id]
    assert a2.message_id not in order and a3.message_id not in order
    assert transport.deleted == [b1.message_id, b2.message_id]
    released = [(mid, seconds) for mid, seconds in transport.visibility if seconds == 0]
    assert released == [(a2.message_id, 0), (a3.message_id, 0)]


async def test_shutdown_releases_unfinished_work_at_once() -> None:
    slow = message()
    transport = FakeTransport([[slow]])
    started = asyncio.Event()

    async def handler(m: QueueMessage) -> Outcome:
        started.set()
        await asyncio.sleep(60)
        return Done()

    consumer = Consumer(transport, handler, settings(shutdown_timeout=2.5))
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(started.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert transport.visibility == [(slow.message_id, 0)]
    assert transport.deleted == []


@pytest.mark.parametrize("handler_takes_slot", [False, True], ids=["prefetch", "read-ahead"])
async def test_shutdown_releases_messages_that_never_took_a_slot(handler_takes_slot: bool) -> None:
    # One slot, a batch of five: one runs, four wait (in the prefetch, or in their handlers for the slot with
    # read-ahead). Stopping runs none of the four.
    batch = [message() for _ in range(5)]
    transport = FakeTransport([batch])
    slots = WorkSlots(1)
    started: list[str] = []
    running = asyncio.Event()

    async def work(m: QueueMessage) -> Outcome:
        started.append(m.message_id)
        running.set()
        await asyncio.sleep(0.3)
        return Done()

    async def taking_slot(m: QueueMessage) -> Outcome:
        async with slots.hold():
            return await work(m)

    if handler_takes_slot:
        consumer = Consumer(
            transport, taking_slot, settings(concurrency=1, read_ahead=10, shutdown_timeout=5), slots=slots
        )
    else:
        consumer = Consumer(transport, work, settings(concurrency=1, shutdown_timeout=5))
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(running.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert started == [batch[0].message_id]
    assert transport.deleted == [batch[0].message_id]
    assert sorted(transport.visibility) == sorted((m.message_id, 0) for m in batch[1:])


async def test_under_load_receives_ask_for_whole_batches() -> None:
    transport = SteadyTransport(400)

    async def handler(m: QueueMessage) -> Outcome:
        await asyncio.sleep(0.005)
        return Done()

    consumer = Consumer(transport, handler, settings(concurrency=8))
    await run_until(consumer, lambda: len(transport.deleted) == 400, timeout=20)
    # Slots free up one at a time; still (nearly) every receive that finds messages asks for a whole batch.
    assert transport.answered.count(10) >= 0.9 * len(transport.answered)
    assert len(transport.answered) <= 400 / 10 + 5


async def test_heartbeat_extends_messages_still_in_progress() -> None:
    slow = message()
    transport = FakeTransport([[slow]])
    release = asyncio.Event()

    async def handler(m: QueueMessage) -> Outcome:
        await release.wait()
        return Done()

    # visibility 6 s: the heartbeat ticks every second and extends once less than half is left.
    consumer = Consumer(transport, handler, settings(visibility_timeout=6))
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    for _ in range(100):
        if transport.visibility:
            break
        await asyncio.sleep(0.1)
    release.set()
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert (slow.message_id, 6) in transport.visibility
    assert transport.deleted == [slow.message_id]


@pytest.mark.parametrize("count", [1, 2, 5, 10])
async def test_receive_count_drives_the_backoff(count: int) -> None:
    from bridge.retry import queue_backoff

    delays = [queue_backoff(count, base=5, cap=900) for _ in range(50)]
    ceiling = min(900, 5 * 2 ** (count - 1))
    assert all(max(1, ceiling / 2) - 1 <= d <= ceiling + 1 for d in delays)


@pytest.mark.parametrize("count", [1025, 10**6])
def test_the_backoff_of_a_message_received_very_often_is_the_cap(count: int) -> None:
    # A message whose dead letter the DLQ never takes (a body larger than the DLQ's MaximumMessageSize, no redrive
    # policy) is retried for ever: its receive count outgrows a float's exponent.
    from bridge.retry import queue_backoff

    assert 450 <= queue_backoff(count, base=5.0, cap=900.0) <= 900


async def test_a_dead_letter_refused_on_the_thousandth_receive_is_still_retried() -> None:
    old = message(receive_count=2000)
    transport = FakeTransport([[old]])

    async def refuse(msg: QueueMessage, context: Any) -> None:
        raise ConnectionError("DLQ refuses it")

    transport.send_dead_letter = refuse  # type: ignore[method-assign]

    async def handler(m: QueueMessage) -> Outcome:
        return DeadLetter(stage="decode", reason="not JSON", error_class="PoisonMessage")

    consumer = Consumer(transport, handler, settings(shutdown_timeout=1))
    await run_until(consumer, lambda: transport.visibility, timeout=2)
    assert transport.visibility and transport.visibility[0][0] == old.message_id


async def test_a_closed_gate_stops_receiving_until_it_opens() -> None:
    class CountingTransport(FakeTransport):
        receives = 0

        async def receive(self, max_messages: int, wait_time: int) -> list[QueueMessage]:
            self.receives += 1
            return await super().receive(max_messages, wait_time)

    waiting = message()
    transport = CountingTransport([[waiting]])
    gate = ReceiveGate()
    gate.close("kordiam-credentials", "Kordiam refuses the client credentials")

    async def handler(m: QueueMessage) -> Outcome:
        return Done()

    consumer = Consumer(transport, handler, settings(), gate=gate)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.sleep(0.3)
    assert transport.receives == 0 and consumer.healthy()  # paused on purpose is not a stalled poll loop
    gate.open("kordiam-credentials")
    async with asyncio.timeout(5):
        while not transport.deleted:
            await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert transport.deleted == [waiting.message_id]


async def test_shutdown_while_paused_releases_the_messages_in_hand_at_once() -> None:
    held = message()
    transport = FakeTransport([[held]])
    gate = ReceiveGate()
    started = asyncio.Event()

    async def handler(m: QueueMessage) -> Outcome:
        gate.close(
            "kordiam-credentials", "Kordiam refuses the client credentials"
        )  # as the handler does when it meets the refusal
        started.set()
        await gate.wait_open()
        return Done()

    # A drain deadline far beyond the bound below: waiting for it would fail the test.
    consumer = Consumer(transport, handler, settings(shutdown_timeout=120), gate=gate)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(started.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert transport.visibility == [(held.message_id, 0)] and transport.deleted == []


async def test_a_message_in_hand_through_a_pause_stays_hidden_however_long_the_pause_lasts() -> None:
    # A pause (Kordiam or the state store down for everyone) keeps the messages in hand so that the worker's fault
    # spends none of their receives. Left to lapse after MAX_HOLD_SECONDS, one would be received again (a receive
    # without an outcome: past queue.max_receive_count, dead-lettered unhandled) while this worker still runs it.
    class RecordingExtensions(FakeTransport):
        def __init__(self, batches: list[list[QueueMessage]]) -> None:
            super().__init__(batches)
            self.extensions: asyncio.Queue[set[str]] = asyncio.Queue()

        async def extend(self, messages: Sequence[QueueMessage], seconds: int) -> list[str]:
            self.extensions.put_nowait({m.message_id for m in messages})
            return await super().extend(messages, seconds)

    async def extended_together() -> set[str]:
        ids = await asyncio.wait_for(transport.extensions.get(), 10)
        while not transport.extensions.empty():
            ids |= transport.extensions.get_nowait()
        return ids

    # Received just before a pause that has lasted longer than MAX_HOLD_SECONDS since.
    long_held = dataclasses.replace(message(), received_at=time.monotonic() - MAX_HOLD_SECONDS - 60)
    fresh = message()
    transport = RecordingExtensions([[long_held, fresh]])
    gate = ReceiveGate()
    finish = asyncio.Event()

    async def handler(m: QueueMessage) -> Outcome:
        gate.close("kordiam-outage", "Kordiam answers 503 to every call")  # as the handler does meeting it
        await gate.wait_open()
        await finish.wait()  # the message's work, once the pause is over
        return Done()

    consumer = Consumer(transport, handler, settings(visibility_timeout=6), gate=gate)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        assert await extended_together() == {long_held.message_id, fresh.message_id}
        gate.open("kordiam-outage")  # healed: the message runs again, and its work gets its time too
        assert long_held.message_id in await extended_together()
        finish.set()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert sorted(transport.deleted) == sorted([long_held.message_id, fresh.message_id])


class SlowDeletes(SteadyTransport):
    """Deletes wait until ``deletes_open`` is set (a loaded queue); counts what was received and deleted."""

    def __init__(self, total: int) -> None:
        super().__init__(total)
        self.deletes_open = asyncio.Event()
        self.received = 0
        self.most_held = 0
        self.calls = 0
        self.most_calls = 0

    async def receive(self, max_messages: int, wait_time: int) -> list[QueueMessage]:
        messages = await super().receive(max_messages, wait_time)
        self.received += len(messages)
        self.most_held = max(self.most_held, self.received - len(self.deleted))
        return messages

    async def complete(self, messages: Sequence[QueueMessage]) -> list[str]:
        self.calls += 1
        self.most_calls = max(self.most_calls, self.calls)
        try:
            await self.deletes_open.wait()
            await asyncio.sleep(0.05)
            return await super().complete(messages)
        finally:
            self.calls -= 1


async def test_a_done_message_stays_heartbeated_until_its_delete_is_confirmed() -> None:
    # A done message whose delete is slow must not become visible again: another receive would run it twice, and
    # a burst of them would walk messages to the dead-letter queue through the native redrive.
    transport = SlowDeletes(1)

    async def handler(m: QueueMessage) -> Outcome:
        return Done()

    consumer = Consumer(transport, handler, settings(visibility_timeout=6))
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    async with asyncio.timeout(10):
        while not transport.visibility:
            await asyncio.sleep(0.1)
    transport.deletes_open.set()
    async with asyncio.timeout(5):
        while not transport.deleted:
            await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert transport.visibility == [(transport.deleted[0], 6)]


async def test_slow_deletes_hold_back_receiving() -> None:
    # While the queue does not confirm deletes, the worker holds at most concurrency + prefetch messages.
    transport = SlowDeletes(200)

    async def handler(m: QueueMessage) -> Outcome:
        return Done()

    consumer = Consumer(transport, handler, settings(concurrency=4))
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.sleep(0.5)
    held_while_blocked = transport.received
    transport.deletes_open.set()
    async with asyncio.timeout(20):
        while len(transport.deleted) < 200:
            await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 10)
    limit = 4 + prefetch_for(4)
    assert held_while_blocked == limit
    assert transport.most_held <= limit


async def test_delete_batches_go_out_without_waiting_for_each_other() -> None:
    transport = SlowDeletes(100)
    transport.deletes_open.set()

    async def handler(m: QueueMessage) -> Outcome:
        return Done()

    consumer = Consumer(transport, handler, settings(concurrency=32))
    await run_until(consumer, lambda: len(transport.deleted) == 100, timeout=20)
    assert len(transport.deleted) == 100
    assert transport.most_calls > 1


# ---- read-ahead: a handler that takes its slot itself --------------------------------------------------------


def needs_work(m: QueueMessage) -> bool:
    return m.body == "work"


async def test_read_ahead_settles_messages_without_work_while_every_slot_is_busy() -> None:
    # Two slots, both taken by slow work, and more work waiting for them than slots and prefetch hold; the
    # messages behind it that need no work are settled at once.
    slow = [message("work") for _ in range(20)]
    cheap = [message() for _ in range(30)]
    transport = FakeTransport([slow[:10], slow[10:], cheap[:10], cheap[10:20], cheap[20:]])
    slots = WorkSlots(2)
    working = peak = 0
    release = asyncio.Event()

    async def handler(m: QueueMessage) -> Outcome:
        nonlocal working, peak
        if needs_work(m):
            async with slots.hold():
                working += 1
                peak = max(peak, working)
                await release.wait()
                working -= 1
        return Done()

    consumer = Consumer(transport, handler, settings(concurrency=2, read_ahead=40), slots=slots)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    cheap_ids = {m.message_id for m in cheap}
    for _ in range(250):
        if cheap_ids <= set(transport.deleted):
            break
        await asyncio.sleep(0.02)
    assert cheap_ids <= set(transport.deleted), "the cheap messages waited behind the slow ones"
    assert not {m.message_id for m in slow} & set(transport.deleted)
    release.set()
    for _ in range(100):
        if len(transport.deleted) == 50:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert len(transport.deleted) == 50 and peak == 2


async def test_read_ahead_never_holds_more_than_the_slots_the_read_ahead_and_the_prefetch() -> None:
    transport = SteadyTransport(300)
    slots = WorkSlots(4)
    handling = peak = 0

    async def handler(m: QueueMessage) -> Outcome:
        nonlocal handling, peak
        handling += 1
        peak = max(peak, handling)
        async with slots.hold():
            await asyncio.sleep(0.005)
        handling -= 1
        return Done()

    wide = settings(concurrency=4, read_ahead=16)
    consumer = Consumer(transport, handler, wide, slots=slots)
    await run_until(consumer, lambda: len(transport.deleted) == 300, timeout=20)
    assert len(transport.deleted) == 300
    assert peak <= wide.handlers + wide.prefetch
    assert wide.handlers == 20 and wide.prefetch == prefetch_for(20)


async def test_shutdown_lets_a_message_settled_without_a_slot_finish_its_delete() -> None:
    done = message()
    transport = FakeTransport([[done]])
    slots = WorkSlots(1)

    async def handler(m: QueueMessage) -> Outcome:
        return Done()  # no work: never takes a slot

    consumer = Consumer(transport, handler, settings(concurrency=1, read_ahead=4), slots=slots)
    await run_until(consumer, lambda: transport.deleted == [done.message_id])
    assert transport.deleted == [done.message_id] and transport.visibility == []


def test_read_ahead_needs_a_handler_that_takes_its_slot() -> None:
    async def handler(m: QueueMessage) -> Outcome:
        return Done()

    with pytest.raises(ValueError, match="read_ahead"):
        Consumer(FakeTransport([]), handler, settings(read_ahead=8))
    with pytest.raises(ValueError, match="slots"):
        Consumer(FakeTransport([]), handler, settings(concurrency=4), slots=WorkSlots(3))


async def test_one_message_handed_out_twice_at_once_is_handled_and_deleted_under_both_receipts() -> None:
    # SQS delivers at least once: now and then one message comes in two receives at once, each with its own receipt
    # handle, and only the newest handle surely deletes it. Both copies are handled (the pipeline makes the second
    # a no-op: its element's fetch covers it) and both settled; neither is retried nor dead-lettered.
    first = message()
    again = dataclasses.replace(first, receipt_handle=f"{first.receipt_handle}-again", receive_count=2)
    deleted: list[str] = []

    class RecordingReceipts(FakeTransport):
        async def complete(self, messages: Sequence[QueueMessage]) -> list[str]:
            deleted.extend(m.receipt_handle for m in messages)
            return await super().complete(messages)

    transport = RecordingReceipts([[first], [again]])
    both_running = asyncio.Event()
    handled: list[str] = []

    async def handler(m: QueueMessage) -> Outcome:
        handled.append(m.receipt_handle)
        if len(handled) == 2:
            both_running.set()
        await asyncio.wait_for(both_running.wait(), timeout=5)
        return Done()

    consumer = Consumer(transport, handler, settings())
    await run_until(consumer, lambda: len(deleted) == 2)
    assert sorted(handled) == sorted(deleted) == sorted([first.receipt_handle, again.receipt_handle])
    assert transport.dead == [] and transport.visibility == []


async def test_a_worker_full_of_slow_work_is_healthy_and_a_hung_receive_is_not() -> None:
    # Every slot busy with slow work (a CMS behind rate_limit or max_in_flight, a slow write): the pollers wait for
    # room for a whole batch and complete no receive, on purpose. /healthz must not call that a stalled poll loop:
    # the health check would have ECS or Docker kill a working worker again and again, each kill costing every
    # message it holds a receive, until SQS's redrive dead-letters them with no reason.
    release = asyncio.Event()
    backlog = [message() for _ in range(40)]
    transport = FakeTransport([backlog])

    async def slow(m: QueueMessage) -> Outcome:
        await release.wait()
        return Done()

    consumer = Consumer(transport, slow, settings(concurrency=1))
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.sleep(0.3)
    # Full: one message works, the rest of a batch waits for its slot, and the poller waits for room for a batch.
    assert consumer.in_flight == MAX_BATCH and transport.batches
    consumer.last_poll -= 600  # as if the slow work had lasted ten minutes
    assert consumer.healthy()
    # Handlers that finish nothing for as long as the heartbeat holds a message are stuck, not slow.
    consumer._progress -= MAX_HOLD_SECONDS
    assert not consumer.healthy()
    consumer._progress += MAX_HOLD_SECONDS
    release.set()
    async with asyncio.timeout(5):
        while len(transport.deleted) < len(backlog):
            await asyncio.sleep(0.02)
    assert consumer.healthy()
    stop.set()
    await asyncio.wait_for(task, 10)

    class HungTransport(FakeTransport):
        async def receive(self, max_messages: int, wait_time: int) -> list[QueueMessage]:
            await asyncio.Event().wait()  # a receive that never returns
            return []

    hung = Consumer(HungTransport([]), slow, settings(concurrency=1))
    stop = asyncio.Event()
    task = asyncio.create_task(hung.run(stop))
    await asyncio.sleep(0.1)
    hung.last_poll -= 3600
    assert not hung.healthy()
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_fifo_a_dead_letter_the_dlq_did_not_take_releases_the_rest_of_its_group() -> None:
    # The DLQ refuses the copy, so the message is retried: it stays first in its group, and the messages behind it
    # must not run before it (as after any retry), but be given back to SQS, which keeps the order.
    a1, a2 = message(group="A"), message(group="A")
    transport = FakeTransport([[a1, a2]], fifo=True)

    async def refuse(msg: QueueMessage, context: Any) -> None:
        raise ConnectionError("DLQ unreachable")

    transport.send_dead_letter = refuse  # type: ignore[method-assign]
    order: list[str] = []

    async def handler(m: QueueMessage) -> Outcome:
        order.append(m.message_id)
        if m is a1:
            return DeadLetter(stage="decode", reason="not JSON", error_class="PoisonMessage")
        return Done()

    consumer = Consumer(transport, handler, settings())
    await run_until(consumer, lambda: len(transport.visibility) == 2 or transport.deleted)
    assert order == [a1.message_id]
    assert transport.deleted == []
    assert transport.visibility[0][0] == a1.message_id and transport.visibility[1] == (a2.message_id, 0)


async def test_fifo_shutdown_releases_the_rest_of_a_group_instead_of_starting_it() -> None:
    # The first of a group finishes during the drain; the one behind it has done nothing yet, so it is released
    # with the rest, not started (it would run on past the drain, neither finished nor released).
    a1, a2 = message(group="A"), message(group="A")
    transport = FakeTransport([[a1, a2]], fifo=True)
    started: list[str] = []
    running = asyncio.Event()

    async def handler(m: QueueMessage) -> Outcome:
        started.append(m.message_id)
        running.set()
        await asyncio.sleep(0.3 if m is a1 else 60)
        return Done()

    consumer = Consumer(transport, handler, settings(shutdown_timeout=3))
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(running.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert started == [a1.message_id]
    assert transport.deleted == [a1.message_id]
    assert transport.visibility == [(a2.message_id, 0)]
    assert consumer.in_flight == 0


async def test_a_handler_raising_cancelled_error_of_its_own_is_retried_and_its_group_goes_on() -> None:
    # A CancelledError the worker did not ask for (a handler awaiting something cancelled under it) is a handler
    # bug like any other: the message is retried, not left unsettled, and its FIFO group is not blocked for good.
    a1, a2 = message(group="A"), message(group="A")

    class Later(FakeTransport):
        sent_next = False

        async def receive(self, max_messages: int, wait_time: int) -> list[QueueMessage]:
            if self.visibility and not self.sent_next:  # a1 settled: SQS hands out the group's next
                self.sent_next = True
                self.batches.append([a2])
            return await super().receive(max_messages, wait_time)

    transport = Later([[a1]], fifo=True)

    async def handler(m: QueueMessage) -> Outcome:
        if m is a1:
            inner = asyncio.get_running_loop().create_future()
            inner.cancel()
            await inner  # raises CancelledError in a task nobody cancelled
        return Done()

    consumer = Consumer(transport, handler, settings())
    await run_until(consumer, lambda: transport.deleted)
    assert transport.visibility[0][0] == a1.message_id and transport.visibility[0][1] >= 1
    assert transport.deleted == [a2.message_id]


async def test_a_dead_letter_the_dlq_did_not_take_backs_off_as_configured() -> None:
    poison = message(receive_count=5)
    transport = FakeTransport([[poison]])

    async def refuse(msg: QueueMessage, context: Any) -> None:
        raise ConnectionError("DLQ unreachable")

    transport.send_dead_letter = refuse  # type: ignore[method-assign]

    async def handler(m: QueueMessage) -> Outcome:
        return DeadLetter(stage="decode", reason="not JSON", error_class="PoisonMessage")

    # retry_max_seconds=2 caps every back-off (the default 900 s cap would give 40 to 80 s here).
    consumer = Consumer(transport, handler, settings(max_receive_count=10))
    await run_until(consumer, lambda: transport.visibility)
    assert transport.visibility[0][0] == poison.message_id and transport.visibility[0][1] <= 2


async def test_a_retry_during_a_heartbeat_of_its_message_is_applied_after_the_extension() -> None:
    # The heartbeat's extension of a message is on its way (a slow call, or one botocore retries) when the
    # message's handler answers Retry: the back-off must reach SQS last, or the extension undoes it.
    flaky = message()
    extending = asyncio.Event()

    class SlowExtends(FakeTransport):
        async def extend(self, messages: Sequence[QueueMessage], seconds: int) -> list[str]:
            extending.set()
            await asyncio.sleep(0.3)
            return await super().extend(messages, seconds)  # recorded as SQS applies it: last

    transport = SlowExtends([[flaky]])

    async def handler(m: QueueMessage) -> Outcome:
        await extending.wait()
        return Retry(delay=120, stage="fetch", reason="503", error_class="KordiamUnavailable")

    consumer = Consumer(transport, handler, settings(visibility_timeout=6, retry_max_seconds=200))
    await run_until(consumer, lambda: len(transport.visibility) == 2, timeout=10)
    assert transport.visibility[-1] == (flaky.message_id, 120)


async def test_a_retried_message_is_not_heartbeated_after_its_back_off() -> None:
    # A retry hands the message back to the queue with its back-off. Still held, the heartbeat would extend it at
    # its next tick (and every tick after, for up to MAX_HOLD_SECONDS): the retry would come back only then.
    flaky, slow = message(), message()
    transport = FakeTransport([[flaky, slow]])
    release = asyncio.Event()

    async def handler(m: QueueMessage) -> Outcome:
        if m is flaky:
            return Retry(delay=120, stage="fetch", reason="503", error_class="KordiamUnavailable")
        await release.wait()
        return Done()

    def slow_extended_after_the_retry() -> bool:
        if (flaky.message_id, 120) not in transport.visibility:
            return False
        after = transport.visibility[transport.visibility.index((flaky.message_id, 120)) + 1 :]
        return (slow.message_id, 6) in after

    consumer = Consumer(transport, handler, settings(visibility_timeout=6, retry_max_seconds=200))
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    async with asyncio.timeout(10):
        while not slow_extended_after_the_retry():
            await asyncio.sleep(0.05)
    release.set()
    stop.set()
    await asyncio.wait_for(task, 10)
    assert [seconds for m, seconds in transport.visibility if m == flaky.message_id] == [120]


async def test_a_message_retried_while_an_earlier_wave_of_its_heartbeat_is_on_its_way_is_not_extended() -> None:
    # One tick's extensions go out in waves of HEARTBEAT_CALLS batches. A message settled while an earlier wave is
    # on its way must drop out of its own batch, which is not on its way yet (``_after_extension`` cannot wait for
    # it), or that batch's extension lands after the back-off and undoes it.
    first_extension = asyncio.Event()

    class SlowExtends(FakeTransport):
        async def extend(self, messages: Sequence[QueueMessage], seconds: int) -> list[str]:
            first_extension.set()
            await asyncio.sleep(0.4)
            return await super().extend(messages, seconds)

    batches = [[message() for _ in range(10)] for _ in range(10)]
    flaky = batches[-1][-1]  # received last: in the last batch of the tick, past the first wave
    transport = SlowExtends(batches)
    slots = WorkSlots(1)
    release = asyncio.Event()

    async def handler(m: QueueMessage) -> Outcome:
        if m is flaky:
            await first_extension.wait()
            return Retry(delay=120, stage="fetch", reason="503", error_class="KordiamUnavailable")
        async with slots.hold():
            await release.wait()
        return Done()

    wide = settings(concurrency=1, read_ahead=99, visibility_timeout=6, retry_max_seconds=200)
    consumer = Consumer(transport, handler, wide, slots=slots)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    async with asyncio.timeout(15):
        while sum(1 for m, seconds in transport.visibility if seconds == 6 and m != flaky.message_id) < 99:
            await asyncio.sleep(0.05)
    release.set()
    stop.set()
    await asyncio.wait_for(task, 10)
    assert [seconds for m, seconds in transport.visibility if m == flaky.message_id][-1] == 120


async def test_the_heartbeat_extends_a_full_worker_before_any_visibility_runs_out_when_sqs_is_slow() -> None:
    # A worker full of held messages (here 100: the read-ahead makes 564 by default), all received at once, all due
    # at the same tick; each ChangeMessageVisibilityBatch takes 0.4 s (a slow or throttling SQS). One call after
    # the other, the last batches land after those messages were visible again (and received by another worker).
    late: list[float] = []

    class SlowExtends(FakeTransport):
        async def receive(self, max_messages: int, wait_time: int) -> list[QueueMessage]:
            messages = await super().receive(max_messages, wait_time)
            for m in messages:  # as SqsTransport.receive: invisible for the lease from now
                m.visible_until = time.monotonic() + 6
            return messages

        async def extend(self, messages: Sequence[QueueMessage], seconds: int) -> list[str]:
            await asyncio.sleep(0.4)
            now = time.monotonic()
            late.extend(now - m.visible_until for m in messages if now > m.visible_until)
            return await super().extend(messages, seconds)

    batches = [[message() for _ in range(10)] for _ in range(10)]
    transport = SlowExtends(batches)
    slots = WorkSlots(1)
    release = asyncio.Event()

    async def handler(m: QueueMessage) -> Outcome:
        async with slots.hold():
            await release.wait()
        return Done()

    wide = settings(concurrency=1, read_ahead=99, visibility_timeout=6)
    consumer = Consumer(transport, handler, wide, slots=slots)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    async with asyncio.timeout(15):
        while sum(1 for _, seconds in transport.visibility if seconds == 6) < 100:
            await asyncio.sleep(0.05)
    release.set()
    stop.set()
    await asyncio.wait_for(task, 10)
    assert late == []


class QueueDownOnce(FakeTransport):
    """The queue's endpoint does not answer the first receive, then serves as usual."""

    def __init__(self, batches: list[list[QueueMessage]]) -> None:
        super().__init__(batches)
        self.failed = False

    async def receive(self, max_messages: int, wait_time: int) -> list[QueueMessage]:
        if not self.failed:
            self.failed = True
            raise ConnectionError("Could not connect to the endpoint URL")
        return await super().receive(max_messages, wait_time)


async def test_a_receive_that_works_again_after_failures_says_so_in_the_log() -> None:
    # Seen by hand: moto stopped under a running worker gave receive_failed errors, and when it came back the log
    # said nothing; an operator watching the log could not tell the worker was consuming again.
    one = message()
    transport = QueueDownOnce([[one]])

    async def handler(m: QueueMessage) -> Outcome:
        return Done()

    consumer = Consumer(transport, handler, settings())
    with capture_logs() as lines:
        await run_until(consumer, lambda: transport.deleted == [one.message_id])
    events = [line["event"] for line in lines]
    assert "receive_failed" in events
    recovered = [line for line in lines if line["event"] == "receive_recovered"]
    assert len(recovered) == 1 and recovered[0]["failures"] == 1
    assert events.index("receive_failed") < events.index("receive_recovered")


class AnswersWhenTold(FakeTransport):
    """Its first receive waits until ``answer_now`` is set, then answers ``first``; a receive cancelled meanwhile
    is counted (on SQS its answer, already on its way, would hide ``first`` for the visibility timeout)."""

    def __init__(self, first: list[QueueMessage]) -> None:
        super().__init__([])
        self.first = first
        self.waiting = asyncio.Event()
        self.answer_now = asyncio.Event()
        self.cancelled = 0

    async def receive(self, max_messages: int, wait_time: int) -> list[QueueMessage]:
        if not self.first:
            return await super().receive(max_messages, wait_time)
        self.waiting.set()
        try:
            await self.answer_now.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        answer, self.first = self.first, []
        return answer


async def test_a_receive_under_way_at_the_shutdown_answers_and_its_messages_are_released_unrun() -> None:
    # Seen in the image test: a SIGTERM while a receive's answer was on its way aborted the receive; SQS had already
    # handed its messages out, so they stayed hidden for the visibility timeout (60 s) and each spent a receive.
    late = [message(), message()]
    transport = AnswersWhenTold(late)
    ran: list[str] = []

    async def handler(m: QueueMessage) -> Outcome:
        ran.append(m.message_id)
        return Done()

    consumer = Consumer(transport, handler, settings(shutdown_timeout=5))
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(transport.waiting.wait(), 5)
    stop.set()
    await asyncio.sleep(0.05)  # the shutdown has begun; then the receive's answer arrives
    transport.answer_now.set()
    await asyncio.wait_for(task, 10)
    assert transport.cancelled == 0
    assert ran == [] and transport.deleted == []
    assert sorted(transport.visibility) == sorted((m.message_id, 0) for m in late)


async def test_a_receive_still_waiting_a_second_into_the_shutdown_is_aborted() -> None:
    # A long poll that has found nothing for that long waits on a queue with nothing visible: the shutdown does not
    # wait out the rest of it (up to wait_time_seconds).
    transport = AnswersWhenTold([message()])

    async def handler(m: QueueMessage) -> Outcome:
        return Done()

    consumer = Consumer(transport, handler, settings(shutdown_timeout=30, wait_time_seconds=20))
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(transport.waiting.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert transport.cancelled == 1
    assert transport.visibility == [] and transport.deleted == []


class LogsReceivesAndReleases(FakeTransport):
    """Answers ``first`` at once; every receive after it waits until cancelled. Logs when each receive ends and
    each visibility change, in order."""

    def __init__(self, first: list[QueueMessage]) -> None:
        super().__init__([first])
        self.events: list[str] = []
        self.waiting = asyncio.Event()

    async def receive(self, max_messages: int, wait_time: int) -> list[QueueMessage]:
        if self.batches:
            return await super().receive(max_messages, wait_time)
        self.waiting.set()
        try:
            await asyncio.sleep(3600)
        finally:
            self.events.append("receive ended")
        return []

    async def retry_later(self, messages: Sequence[QueueMessage], seconds: int) -> list[str]:
        self.events.append(f"visibility {seconds}")
        return await super().retry_later(messages, seconds)


async def test_nothing_is_released_while_a_receive_of_the_worker_is_still_under_way() -> None:
    # Found by the fault suite on LocalStack: releasing while the worker's own long poll still ran let that poll take
    # the released message, which then came to the next worker on its third receive instead of its second.
    running = message()
    transport = LogsReceivesAndReleases([running])
    started = asyncio.Event()

    async def handler(m: QueueMessage) -> Outcome:
        started.set()
        await asyncio.sleep(3600)
        return Done()

    consumer = Consumer(transport, handler, settings(shutdown_timeout=2.5))
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(transport.waiting.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert transport.events == ["receive ended", "visibility 0"]


async def test_a_receive_under_way_is_not_awaited_past_the_shutdown_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    # The deadline is the operator's (queue.shutdown_timeout, which may be shorter than the settle): a receive that
    # has not answered by it is aborted, as a queue that does not answer is given up on.
    monkeypatch.setattr("bridge.queue.consumer.RECEIVE_SETTLE_SECONDS", 3600.0)
    transport = AnswersWhenTold([message()])

    async def handler(m: QueueMessage) -> Outcome:
        return Done()

    consumer = Consumer(transport, handler, settings(shutdown_timeout=0.2, wait_time_seconds=20))
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(transport.waiting.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert transport.cancelled == 1
    assert transport.visibility == [] and transport.deleted == []


class FromLocalInbox(FakeTransport):
    """Receives from a local inbox, as the ActiveMQ transport does: a receive cancelled while it waits leaves every
    message in the inbox (the transport releases what is left there when it closes)."""

    def __init__(self) -> None:
        super().__init__([])
        self.inbox: asyncio.Queue[QueueMessage] = asyncio.Queue()
        self.waiting = asyncio.Event()
        self.cancelled = 0

    @property
    def aborted_receive_hides(self) -> bool:
        return False

    async def receive(self, max_messages: int, wait_time: int) -> list[QueueMessage]:
        self.waiting.set()
        try:
            return [await self.inbox.get()]
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def test_a_receive_that_loses_nothing_when_aborted_is_aborted_at_once_at_the_shutdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On ActiveMQ a receive waits on the worker's own inbox: letting it answer gains nothing (what it would take is
    # released at the close all the same) and cost every shutdown that came as a receive began up to a second.
    monkeypatch.setattr("bridge.queue.consumer.RECEIVE_SETTLE_SECONDS", 3600.0)
    transport = FromLocalInbox()

    async def handler(m: QueueMessage) -> Outcome:
        return Done()

    consumer = Consumer(transport, handler, settings(shutdown_timeout=30, wait_time_seconds=5))
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(transport.waiting.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert transport.cancelled == 1
    assert transport.visibility == [] and transport.deleted == []


async def test_messages_a_receive_answers_during_the_shutdown_are_counted_received_and_logged_as_such() -> None:
    # The queue counted their receive (SQS's ApproximateReceiveCount and NumberOfMessagesReceived): the worker's
    # count agrees, and the drain's log line says what the release that follows holds besides the in-flight ones.
    late = [message(), message()]
    transport = AnswersWhenTold(late)

    async def handler(m: QueueMessage) -> Outcome:
        return Done()

    received_before = metrics.MESSAGES_RECEIVED._value.get()
    consumer = Consumer(transport, handler, settings(shutdown_timeout=5))
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(transport.waiting.wait(), 5)
    with capture_logs() as lines:
        stop.set()
        await asyncio.sleep(0)  # the consumer runs its shutdown up to its first wait; then the answer arrives
        transport.answer_now.set()
        await asyncio.wait_for(task, 10)
    assert metrics.MESSAGES_RECEIVED._value.get() - received_before == len(late)
    (draining,) = [line for line in lines if line["event"] == "consumer_draining"]
    (releasing,) = [line for line in lines if line["event"] == "releasing_unfinished"]
    assert (draining["in_flight"], draining["received_late"], releasing["count"]) == (0, 2, 2)


async def until(condition: Any) -> None:
    """Waits for ``condition`` (a hang guard, never a speed check)."""
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_lost_broker_connection_is_not_ready_and_still_alive() -> None:
    # The transport reconnects by itself, for ever: a restart would not bring the broker back, and an orchestrator
    # acting on a failing /healthz would restart the worker again and again for as long as the broker is down.
    class Disconnected(FakeTransport):
        up = True

        def connected(self) -> bool:
            return self.up

    transport = Disconnected([])

    async def handler(m: QueueMessage) -> Outcome:
        return Done()

    consumer = Consumer(transport, handler, settings())
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await until(lambda: consumer.started)
    assert consumer.ready() and consumer.not_ready_reason() is None
    transport.up = False
    assert consumer.healthy()
    assert not consumer.ready()
    assert consumer.not_ready_reason() == "queue connection lost; reconnecting"
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_failing_receives_are_not_ready_with_a_reason_and_since_and_still_alive() -> None:
    # An SQS that cannot be reached (a network cut, an endpoint down, a role that lost sqs:ReceiveMessage): the poll
    # loop retries with back-off, correctly waiting. Before: /readyz said ready throughout, and /healthz turned 503
    # once no receive had completed for 2 × wait + 10 s, so ECS or Kubernetes restarted the worker in a loop.
    class Unreachable(FakeTransport):
        receives = 0
        failing = True

        async def receive(self, max_messages: int, wait_time: int) -> list[QueueMessage]:
            self.receives += 1
            if self.failing:
                raise ConnectionError("endpoint unreachable")
            return await super().receive(max_messages, wait_time)

    transport = Unreachable([])

    async def handler(m: QueueMessage) -> Outcome:
        return Done()

    consumer = Consumer(transport, handler, settings())
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    failed_after = time.time()
    await until(lambda: transport.receives >= 1)
    consumer.last_poll -= 3600  # as if the outage had lasted an hour: the pollers wait out a back-off, no stall
    assert consumer.healthy()
    assert not consumer.ready()
    assert consumer.not_ready_reason() == "queue receives failing (ConnectionError); retrying"
    since = consumer.not_ready_since()
    assert since is not None and failed_after - 1 <= since <= time.time()
    transport.failing = False
    await until(consumer.ready)
    assert consumer.not_ready_reason() is None and consumer.not_ready_since() is None
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_a_stalled_poll_loop_is_not_ready_either() -> None:
    class HungTransport(FakeTransport):
        async def receive(self, max_messages: int, wait_time: int) -> list[QueueMessage]:
            await asyncio.Event().wait()  # a receive that never returns
            return []

    async def handler(m: QueueMessage) -> Outcome:
        return Done()

    hung = Consumer(HungTransport([]), handler, settings())
    stop = asyncio.Event()
    task = asyncio.create_task(hung.run(stop))
    await until(lambda: hung.started)
    hung.last_poll -= 3600
    assert not hung.healthy()
    assert not hung.ready()
    assert hung.not_ready_reason() == "poll loop stalled"
    stop.set()
    await asyncio.wait_for(task, 10)


@pytest.mark.parametrize("wait_time_seconds", [0, 1, 20])
async def test_a_receive_within_its_deadline_is_no_stall(wait_time_seconds: int) -> None:
    # A receive may take its wait and RECEIVE_MARGIN_SECONDS (SQS's deadline for it) before it fails, and a failed
    # receive is an outage /readyz reports, not a stall. At queue.wait_time_seconds = 0 the stall limit was 10 s,
    # the deadline itself: a receive meeting its deadline made /healthz 503, and a restart, for an SQS outage.
    class HungTransport(FakeTransport):
        async def receive(self, max_messages: int, wait_time: int) -> list[QueueMessage]:
            await asyncio.Event().wait()  # a receive still under way
            return []

    async def handler(m: QueueMessage) -> Outcome:
        return Done()

    hung = Consumer(HungTransport([]), handler, settings(wait_time_seconds=wait_time_seconds))
    stop = asyncio.Event()
    task = asyncio.create_task(hung.run(stop))
    await until(lambda: hung.started)
    deadline = wait_time_seconds + RECEIVE_MARGIN_SECONDS
    hung.last_poll = time.monotonic() - deadline
    assert hung.healthy()
    # Past its deadline by the margin, and never sooner than the limit before receives had deadlines (50 s at 20).
    limit = max(deadline + STALL_MARGIN_SECONDS, 2 * wait_time_seconds + 10)
    hung.last_poll = time.monotonic() - limit + 1
    assert hung.healthy()
    hung.last_poll = time.monotonic() - limit
    assert not hung.healthy()
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_a_paused_worker_is_not_ready_since_its_pause() -> None:
    gate = ReceiveGate()
    gate.close("kordiam-credentials", "Kordiam refuses the client credentials")

    async def handler(m: QueueMessage) -> Outcome:
        return Done()

    consumer = Consumer(FakeTransport([]), handler, settings(), gate=gate)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await until(lambda: consumer.started)
    assert consumer.healthy() and not consumer.ready()
    assert consumer.not_ready_reason() == "Kordiam refuses the client credentials"
    assert consumer.not_ready_since() == gate.closed_since
    stop.set()
    await asyncio.wait_for(task, 10)

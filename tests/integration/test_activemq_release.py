"""A clean shutdown on a real ActiveMQ broker costs the messages the worker held no attempt: they go back to the
queue with the attempt they had (copy and ACK in one transaction, committed once the subscription is gone), none
lost, none twice. A worker killed while holding them still costs each one attempt, and never leaves two copies."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from bridge.queue import open_transport
from bridge.queue.consumer import Consumer, ConsumerSettings
from bridge.queue.outcome import Outcome
from bridge.queue.stomp import StompTransport
from bridge.queue.transport import QueueMessage
from tests.support import eventually, stomp_drain, stomp_settings

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]


async def send_numbered(url: str, count: int, *, attempt_of_first: int | None = None) -> None:
    async with open_transport(stomp_settings(url), consume=False) as producer:
        for number in range(count):
            attributes = {"event": "updated"}
            if number == 0 and attempt_of_first is not None:
                attributes["bridge-attempt"] = str(attempt_of_first)
            await producer.send(f'{{"id": {number}}}', attributes)


def by_body(messages: list[QueueMessage]) -> dict[str, QueueMessage]:
    bodies = [m.body for m in messages]
    assert len(bodies) == len(set(bodies)), f"a message came back twice: {sorted(bodies)}"
    return {m.body: m for m in messages}


async def test_a_clean_shutdown_of_the_consumer_costs_no_attempt(stomp_queues: tuple[str, str]) -> None:
    url, dlq = stomp_queues
    count = 10  # within the broker's prefetch of the worker (2 running + 10): nothing else for it to push
    await send_numbered(url, count, attempt_of_first=3)
    settings = stomp_settings(url, dlq_url=dlq, concurrency=2, read_ahead=0)
    consumer_settings = ConsumerSettings(
        concurrency=2, wait_time_seconds=1, visibility_timeout=None, shutdown_timeout=1, max_receive_count=10
    )
    started: list[str] = []

    async def stuck(message: QueueMessage) -> Outcome:  # never finishes: the shutdown releases every message
        started.append(message.body)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async with open_transport(settings) as transport:
        consumer = Consumer(transport, stuck, consumer_settings)
        stop = asyncio.Event()
        run = asyncio.create_task(consumer.run(stop))
        await eventually(lambda: consumer.in_flight == count, what="the consumer holding every message")
        stop.set()
        await run
    assert len(started) == 2

    back = by_body(await stomp_drain(url))
    assert sorted(back) == sorted(f'{{"id": {number}}}' for number in range(count))
    assert {body: m.receive_count for body, m in back.items()} == {
        body: 3 if body == '{"id": 0}' else 1 for body in back
    }
    assert await stomp_drain(dlq, quiet=0.5) == []


async def test_messages_left_in_the_prefetch_cost_no_attempt_at_a_clean_close(stomp_queues: tuple[str, str]) -> None:
    url, dlq = stomp_queues
    await send_numbered(url, 5)
    async with open_transport(stomp_settings(url, dlq_url=dlq)) as transport:
        assert isinstance(transport, StompTransport)  # its prefetch inbox is what this test watches
        await eventually(lambda: transport._inbox.qsize() == 5, what="the broker pushing every message")
        (received,) = await transport.receive(1, wait_time=1)
        await transport.release([received])
    back = by_body(await stomp_drain(url))
    assert len(back) == 5
    assert {m.receive_count for m in back.values()} == {1}


# A worker that receives every message, releases them as a clean shutdown does, and is killed before it closes.
KILLED_AFTER_RELEASE = """
import asyncio, sys
from bridge.queue import open_transport
from tests.support import stomp_settings

async def main() -> None:
    async with open_transport(stomp_settings(sys.argv[1], dlq_url=sys.argv[2])) as transport:
        held = []
        while len(held) < int(sys.argv[3]):
            held.extend(await transport.receive(10, wait_time=1))
        await transport.release(held)
        print("released", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_worker_killed_after_releasing_costs_one_attempt_and_leaves_one_copy(
    stomp_queues: tuple[str, str],
) -> None:
    url, dlq = stomp_queues
    count = 6
    await send_numbered(url, count)
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_AFTER_RELEASE, url, dlq, str(count), cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert worker.stdout is not None
        async with asyncio.timeout(30):
            while not (line := await worker.stdout.readline()).startswith(b"released"):
                assert line, "the worker ended before releasing"
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        await worker.wait()
    back = by_body(await stomp_drain(url))
    assert len(back) == count
    assert {m.receive_count for m in back.values()} == {2}

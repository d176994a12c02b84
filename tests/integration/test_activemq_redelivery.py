"""A message the broker redelivers (its worker died, or lost its connection, while holding it) on a real ActiveMQ
broker: every redelivery costs the message one attempt written on the message itself, so a message that kills the
worker every time ends in the dead-letter queue with its reason, after ``max_receive_count`` deliveries."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from bridge.queue import open_transport
from bridge.queue.transport import QueueMessage, Transport
from tests.support import stomp_drain, stomp_settings

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]

# A worker that takes one message, says its receive count, and then "processes" it until it is killed.
DYING_WORKER = """
import asyncio, sys
from bridge.queue import open_transport
from tests.support import stomp_settings

async def main() -> None:
    settings = stomp_settings(sys.argv[1], dlq_url=sys.argv[2], max_receive_count=int(sys.argv[3]))
    async with open_transport(settings) as transport:
        while not (messages := await transport.receive(1, wait_time=1)):
            pass
        print("holding", messages[0].receive_count, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


async def receive_one(transport: Transport, *, timeout: float = 15) -> QueueMessage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if messages := await transport.receive(1, wait_time=1):
            (message,) = messages
            return message
    raise AssertionError(f"no message within {timeout} s")


async def killed_while_holding(url: str, dlq: str, budget: int) -> int:
    """Run a worker process until it holds the message, SIGKILL it; the receive count it saw."""
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DYING_WORKER, url, dlq, str(budget), cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert worker.stdout is not None
        async with asyncio.timeout(30):
            while not (line := await worker.stdout.readline()).startswith(b"holding "):  # past its log lines
                assert line, "the worker ended without a message"
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        await worker.wait()
    return int(line.split()[1])


async def test_a_message_that_kills_the_worker_every_time_ends_in_the_dead_letter_queue(
    stomp_queues: tuple[str, str],
) -> None:
    url, dlq = stomp_queues
    budget = 3
    async with open_transport(stomp_settings(url, dlq_url=dlq), consume=False) as producer:
        await producer.send('{"id": 11, "event": "updated"}', {"event": "updated"})
    # Each worker dies holding it: the broker redelivers it, and each redelivery is one attempt more.
    assert [await killed_while_holding(url, dlq, budget) for _ in range(budget)] == [1, 2, 3]

    # The third attempt died too: the next worker does not get it (it would die on it), the dead-letter queue does.
    async with open_transport(stomp_settings(url, dlq_url=dlq, max_receive_count=budget)) as transport:
        assert await transport.receive(10, wait_time=3) == []
    (dead,) = await stomp_drain(dlq)
    assert dead.body == '{"id": 11, "event": "updated"}' and dead.attributes["event"] == "updated"
    assert dead.attributes["failure.stage"] == "receive"
    assert dead.attributes["failure.attempts"] == "3"
    assert "redelivered" in dead.attributes["failure.reason"]
    assert "crashed or lost its connection" in dead.attributes["failure.reason"]
    assert await stomp_drain(url) == []


async def test_a_message_redelivered_once_is_processed_as_its_next_attempt(stomp_queues: tuple[str, str]) -> None:
    url, dlq = stomp_queues
    settings = stomp_settings(url, dlq_url=dlq, max_receive_count=3)
    async with open_transport(settings) as transport:
        await transport.send('{"id": 12, "event": "updated"}', {"event": "updated"})
        first = await receive_one(transport)
        assert first.receive_count == 1
    # Closed without settling it: the broker has it back, marked redelivered.
    async with open_transport(settings) as transport:
        again = await receive_one(transport)
        assert again.receive_count == 2 and again.body == first.body and again.attributes["event"] == "updated"
        assert await transport.complete([again]) == []
        assert await transport.receive(10, wait_time=2) == []
    assert await stomp_drain(url) == []
    assert await stomp_drain(dlq) == []

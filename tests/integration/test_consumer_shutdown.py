"""The consumer's shutdown over a real SQS (moto server; LocalStack in its own pass, whose server goes on with a
long poll the client aborted, as SQS does)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from bridge.config import QueueSettings
from bridge.queue import open_transport
from bridge.queue.consumer import Consumer, ConsumerSettings
from bridge.queue.outcome import Done, Outcome
from bridge.queue.transport import QueueMessage
from tests.support import REGION, SqsEndpoint, make_queues

pytestmark = [pytest.mark.integration]


@pytest.mark.localstack
async def test_a_message_arriving_as_the_shutdown_begins_is_visible_again_at_once(sqs_endpoint: SqsEndpoint) -> None:
    # A story saved as a worker stops: the worker's long poll under way hands it out. Aborting that poll would leave
    # the message with a reader that is gone, hidden for the visibility timeout (30 s here); the shutdown lets the
    # receive answer and releases the message, so the next worker has it at once.
    url, dlq = make_queues(sqs_endpoint.url, f"s-{uuid.uuid4().hex[:12]}", max_receive_count=5)
    settings = QueueSettings(
        url=url, dlq_url=dlq, endpoint_url=sqs_endpoint.url, region=REGION, wait_time_seconds=5, visibility_timeout=30
    )
    consumer_settings = ConsumerSettings(
        concurrency=1, wait_time_seconds=5, visibility_timeout=30, shutdown_timeout=3, max_receive_count=5
    )
    handled: list[str] = []

    async def handler(message: QueueMessage) -> Outcome:
        handled.append(message.body)
        await asyncio.sleep(60)  # never finishes: the shutdown releases whatever it holds
        return Done()

    async with open_transport(settings) as transport:
        await transport.describe()
        polling = asyncio.Event()
        receive = transport.receive

        async def watched_receive(max_messages: int, wait_time: int) -> list[QueueMessage]:
            polling.set()
            return await receive(max_messages, wait_time)

        transport.receive = watched_receive  # type: ignore[method-assign]
        consumer = Consumer(transport, handler, consumer_settings)
        stop = asyncio.Event()
        running = asyncio.create_task(consumer.run(stop))
        await asyncio.wait_for(polling.wait(), 10)
        await asyncio.sleep(0.2)  # the long poll is on the server, waiting on an empty queue
        stop.set()
        await transport.send('{"id": 7}')
        await asyncio.wait_for(running, 20)

    async with open_transport(settings) as transport:
        back: list[QueueMessage] = []
        for _ in range(5):  # 5 s: far less than the 30 s it would hide
            back += await transport.receive(10, wait_time=1)
            if back:
                break
        assert [m.body for m in back] == ['{"id": 7}'], f"hidden after the shutdown (handled: {handled})"
        await transport.complete(back)

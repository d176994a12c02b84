"""Settling on a real ActiveMQ broker when a settling step fails: a retry's copy refused, and a delivery whose
connection was lost before it was settled. Each message still ends in exactly one outcome: never stuck, never
twice."""

from __future__ import annotations

import time
from typing import Any

import pytest
import stompman
from stompman.connection import Connection
from stompman.frames import SendFrame

from bridge.queue import open_transport
from bridge.queue.dead_letter import DeadLetterContext
from bridge.queue.stomp import StompTransport
from bridge.queue.transport import QueueMessage
from tests.support import eventually, stomp_drain, stomp_settings

pytestmark = [pytest.mark.integration]


async def receive_one(transport: StompTransport, *, timeout: float = 15) -> QueueMessage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if messages := await transport.receive(1, wait_time=1):
            (message,) = messages
            return message
    raise AssertionError(f"no message within {timeout} s")


async def drop_connection(transport: StompTransport) -> None:
    """What a network cut does: stompman discards the connection and makes a new one in the background."""
    manager = transport._client._connection_manager
    state = manager._active_connection_state
    assert state is not None
    await manager._discard_failed_connection_state(state, stompman.ConnectionLostError(reason="test"))
    await eventually(transport.connected, what="the reconnection and the new subscription")


async def test_a_retry_whose_copy_the_broker_refused_comes_back_without_a_reconnect(
    stomp_queues: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broker refuses the retry's SEND (an ERROR: a consumer account without write access to the queue, a
    # receipt that did not come in time). The delivery is not ACKed, so the broker holds it for this connection:
    # unless the transport hands it back, it waits there until the connection ends, and meanwhile takes a place
    # in the broker's prefetch that the consumer believes free.
    url, dlq = stomp_queues
    async with open_transport(stomp_settings(url, dlq_url=dlq)) as opened:
        assert isinstance(opened, StompTransport)
        transport = opened
        await transport.send('{"id": 5, "event": "updated"}')
        message = await receive_one(transport)
        assert message.receive_count == 1

        write_frame = Connection.write_frame
        refused: list[str] = []

        async def refuse_once(connection: Connection, frame: Any) -> None:
            if isinstance(frame, SendFrame) and not refused:
                # A transaction the broker does not know: it refuses the SEND with an ERROR for its receipt.
                refused.append(frame.headers["destination"])
                frame.headers["transaction"] = "unknown"
            await write_frame(connection, frame)

        monkeypatch.setattr(Connection, "write_frame", refuse_once)
        assert await transport.retry_later([message], 1) == [message.message_id]
        assert refused
        reconnections = transport._client._connection_manager._reconnection_count

        back = await receive_one(transport, timeout=10)
        assert back.body == message.body and back.receive_count == 2  # one more attempt, so the budget still ends
        assert transport._client._connection_manager._reconnection_count == reconnections
        assert await transport.retry_later([back], 0) == []  # settled now: copied, then ACKed
        again = await receive_one(transport)
        assert again.receive_count == 3
        assert await transport.complete([again]) == []
    assert await stomp_drain(url) == []


async def test_a_delivery_of_a_lost_connection_is_received_once_not_twice(stomp_queues: tuple[str, str]) -> None:
    # The broker pushed the message before the connection dropped; it waits in the transport's inbox. The broker
    # redelivers it on the new connection: the old delivery must not be handed out as well.
    url, dlq = stomp_queues
    async with open_transport(stomp_settings(url, dlq_url=dlq)) as opened:
        assert isinstance(opened, StompTransport)
        transport = opened
        await transport.send('{"id": 6, "event": "updated"}')
        await eventually(lambda: not transport._inbox.empty(), what="the message in the inbox")
        await drop_connection(transport)
        first = await receive_one(transport)
        assert first.receive_count == 2  # the redelivery (marked redelivered), not the stale one
        assert await transport.complete([first]) == []
        assert await transport.receive(10, wait_time=2) == []
    assert await stomp_drain(url) == []


async def test_a_retry_of_a_delivery_whose_connection_was_lost_makes_no_second_copy(
    stomp_queues: tuple[str, str],
) -> None:
    # The broker redelivers what the lost connection held. A retry's copy sent for it now would be a second
    # message beside that redelivery (the ACK of the old delivery cannot be sent any more).
    url, dlq = stomp_queues
    async with open_transport(stomp_settings(url, dlq_url=dlq)) as opened:
        assert isinstance(opened, StompTransport)
        transport = opened
        await transport.send('{"id": 7, "event": "updated"}')
        stale = await receive_one(transport)
        await drop_connection(transport)
        assert await transport.retry_later([stale], 0) == [stale.message_id]  # not settled: it comes back
        back = await receive_one(transport)
        assert back.body == stale.body and back.receive_count == 2
        assert await transport.complete([back]) == []
        assert await transport.receive(10, wait_time=2) == []
    assert await stomp_drain(url) == []


async def test_a_dead_letter_or_a_completion_of_a_lost_delivery_is_not_reported_done(
    stomp_queues: tuple[str, str],
) -> None:
    # The dead letter's copy would stay while the broker redelivers the original (a second dead letter next); the
    # ACK is dropped by the client: neither is done, and the transport must say so, as the contract asks.
    url, dlq = stomp_queues
    async with open_transport(stomp_settings(url, dlq_url=dlq)) as opened:
        assert isinstance(opened, StompTransport)
        transport = opened
        await transport.send('{"id": 8, "event": "updated"}')
        stale = await receive_one(transport)
        await drop_connection(transport)
        with pytest.raises(Exception, match="connection"):
            await transport.send_dead_letter(stale, DeadLetterContext("decode", "test", "PoisonMessage"))
        assert await transport.complete([stale]) == [stale.message_id]
        back = await receive_one(transport)
        assert back.receive_count == 2
        assert await transport.complete([back]) == []
    assert await stomp_drain(url) == []
    assert await stomp_drain(dlq) == []

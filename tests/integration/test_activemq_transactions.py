"""A copy (a retry, a dead letter) and the original's ACK are one STOMP transaction on a real ActiveMQ broker: a
connection lost between them, or an ACK that fails on a connection that stays up, leaves the original
unacknowledged and no copy on any queue."""

from __future__ import annotations

import time
from typing import Any

import pytest
import stompman
from stompman.connection import Connection
from stompman.frames import AckFrame, CommitFrame

from bridge.queue import open_transport, stomp
from bridge.queue.dead_letter import DeadLetterContext
from bridge.queue.stomp import CommitUnconfirmed, DeliveryLost, StompTransport
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


def fail_the_ack(monkeypatch: pytest.MonkeyPatch, error: Exception) -> list[AckFrame]:
    """Every ACK written from now on fails with ``error`` (``ConnectionLostError``: the connection drops right after
    the copy went out)."""
    failed: list[AckFrame] = []
    write_frame = Connection.write_frame

    async def failing(connection: Connection, frame: Any) -> None:
        if isinstance(frame, AckFrame):
            failed.append(frame)
            raise error
        await write_frame(connection, frame)

    monkeypatch.setattr(Connection, "write_frame", failing)
    return failed


async def test_a_retry_whose_ack_is_lost_with_the_connection_leaves_no_copy(
    stomp_queues: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, dlq = stomp_queues
    async with open_transport(stomp_settings(url, dlq_url=dlq)) as opened:
        assert isinstance(opened, StompTransport)
        transport = opened
        await transport.send('{"id": 13, "event": "updated"}')
        message = await receive_one(transport)
        failed = fail_the_ack(monkeypatch, stompman.ConnectionLostError(reason="test"))
        assert await transport.retry_later([message], 0) == [message.message_id]
        assert failed
        monkeypatch.undo()
        await eventually(transport.connected, what="the reconnection")
        back = await receive_one(transport)  # the broker's redelivery: the message's only copy
        assert back.body == message.body and back.receive_count == 2
        assert await transport.complete([back]) == []
    assert await stomp_drain(url) == []
    assert await stomp_drain(dlq) == []


async def test_a_dead_letter_whose_ack_is_lost_with_the_connection_is_not_sent(
    stomp_queues: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, dlq = stomp_queues
    async with open_transport(stomp_settings(url, dlq_url=dlq)) as opened:
        assert isinstance(opened, StompTransport)
        transport = opened
        await transport.send('{"id": 14, "event": "updated"}')
        message = await receive_one(transport)
        fail_the_ack(monkeypatch, stompman.ConnectionLostError(reason="test"))
        with pytest.raises(Exception):  # noqa: B017 - whichever: not done, and the consumer retries it
            await transport.send_dead_letter(message, DeadLetterContext("decode", "test", "PoisonMessage"))
            assert await transport.complete([message]) == []
        monkeypatch.undo()
        await eventually(transport.connected, what="the reconnection")
        back = await receive_one(transport)
        assert back.body == message.body
        assert await transport.complete([back]) == []
    assert await stomp_drain(dlq) == []  # no dead letter beside the message that was redelivered
    assert await stomp_drain(url) == []


async def test_an_aborted_retry_leaves_the_original_unacknowledged_and_no_copy(
    stomp_queues: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ACK fails on a connection that stays up: the transaction is aborted, so the copy is never queued and the
    # original is still this connection's to settle (the transport hands it back after the delay).
    url, dlq = stomp_queues
    async with open_transport(stomp_settings(url, dlq_url=dlq)) as opened:
        assert isinstance(opened, StompTransport)
        transport = opened
        await transport.send('{"id": 15, "event": "updated"}')
        message = await receive_one(transport)
        reconnections = transport._client._connection_manager._reconnection_count
        failed = fail_the_ack(monkeypatch, RuntimeError("refused"))
        assert await transport.retry_later([message], 1) == [message.message_id]
        assert failed
        monkeypatch.undo()
        back = await receive_one(transport)
        assert back.body == message.body and back.receive_count == 2
        assert transport._client._connection_manager._reconnection_count == reconnections  # the same delivery
        assert await transport.complete([back]) == []  # still unacknowledged: the ACK is taken
        assert await transport.receive(10, wait_time=3) == []  # and no copy came
    assert await stomp_drain(url) == []
    assert await stomp_drain(dlq) == []


async def test_a_retry_whose_ack_the_broker_refuses_leaves_no_copy(
    stomp_queues: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broker answers an ACK it cannot take with an ERROR and keeps the transaction open: committed then, the
    # copy would be queued without the ACK, and the original would come back beside it.
    url, dlq = stomp_queues
    async with open_transport(stomp_settings(url, dlq_url=dlq)) as opened:
        assert isinstance(opened, StompTransport)
        transport = opened
        await transport.send('{"id": 16, "event": "updated"}')
        message = await receive_one(transport)
        write_frame = Connection.write_frame
        refused: list[str] = []

        async def refuse_the_ack(connection: Connection, frame: Any) -> None:
            if isinstance(frame, AckFrame) and not refused:
                refused.append(frame.headers["id"])
                frame.headers["id"] = "ID:unknown-to-the-broker"
            await write_frame(connection, frame)

        monkeypatch.setattr(Connection, "write_frame", refuse_the_ack)
        assert await transport.retry_later([message], 1) == [message.message_id]
        assert refused
        back = await receive_one(transport)  # handed back: still unacknowledged
        assert back.body == message.body and back.receive_count == 2
        assert await transport.complete([back]) == []
        assert await transport.receive(10, wait_time=3) == []  # and no copy came
    assert await stomp_drain(url) == []


async def test_a_dead_letter_whose_commit_is_unconfirmed_gets_no_retry_copy(
    stomp_queues: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broker commits the dead letter and the ACK, but its RECEIPT for the COMMIT never comes: CommitUnconfirmed.
    # The consumer then retries the message (consumer._settle: a dead letter that failed is retried); a retry's copy
    # sent now would be a second message beside the dead letter (or beside the original, had neither happened).
    url, dlq = stomp_queues
    async with open_transport(stomp_settings(url, dlq_url=dlq)) as opened:
        assert isinstance(opened, StompTransport)
        transport = opened
        await transport.send('{"id": 17, "event": "updated"}')
        message = await receive_one(transport)
        write_frame = Connection.write_frame

        async def commit_without_receipt(connection: Connection, frame: Any) -> None:
            if isinstance(frame, CommitFrame):
                frame.headers.pop("receipt", None)  # type: ignore[typeddict-item]  # stompman's type names none; the bridge adds one
            await write_frame(connection, frame)

        monkeypatch.setattr(Connection, "write_frame", commit_without_receipt)
        monkeypatch.setattr(stomp, "RECEIPT_TIMEOUT_SECONDS", 1.0)  # how long the missing receipt is waited for
        with pytest.raises(CommitUnconfirmed):
            await transport.send_dead_letter(message, DeadLetterContext("decode", "test", "PoisonMessage"))
        monkeypatch.undo()
        assert await transport.retry_later([message], 0) == [message.message_id]
        assert await transport.receive(10, wait_time=3) == []  # no retry copy came
    assert await stomp_drain(url) == []
    assert [letter.body for letter in await stomp_drain(dlq)] == [message.body]  # the dead letter, once


async def test_a_dead_letter_refused_for_a_lost_connection_gets_no_retry_copy(stomp_queues: tuple[str, str]) -> None:
    # The connection the message came on is lost before its dead letter is sent: send_dead_letter sends nothing
    # (DeliveryLost), and the consumer then retries the message (consumer._settle). The broker redelivers the
    # original, so a retry copy sent now would be a second message.
    url, dlq = stomp_queues
    async with open_transport(stomp_settings(url, dlq_url=dlq)) as opened:
        assert isinstance(opened, StompTransport)
        transport = opened
        await transport.send('{"id": 18, "event": "updated"}')
        message = await receive_one(transport)
        manager = transport._client._connection_manager
        state = manager._active_connection_state
        assert state is not None
        await manager._discard_failed_connection_state(state, stompman.ConnectionLostError(reason="test"))
        with pytest.raises(DeliveryLost):
            await transport.send_dead_letter(message, DeadLetterContext("decode", "test", "PoisonMessage"))
        assert await transport.retry_later([message], 0) == [message.message_id]
        await eventually(transport.connected, what="the reconnection")
        back = await receive_one(transport)  # the broker's redelivery (counted): the message's only copy
        assert back.body == message.body
        assert await transport.complete([back]) == []
        assert await transport.receive(10, wait_time=3) == []  # and no retry copy came
    assert await stomp_drain(url) == []
    assert await stomp_drain(dlq) == []

"""Fixtures for the queue backends' unit tests."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.queue.stomp import RECEIPT_TIMEOUT_SECONDS, StompTransport


@pytest.fixture
def stomp_copy_then_ack(monkeypatch: pytest.MonkeyPatch) -> None:
    """``StompTransport._copy_and_ack`` on a fake stompman client: the confirmed SEND of the copy, then the ACK (the
    real STOMP transaction around them is in the integration tests, on a real broker). A refused copy is not
    ACKed."""

    async def copy_then_ack(
        transport: StompTransport, frame: Any, destination: str, body: bytes, headers: dict[str, str]
    ) -> None:
        framed = headers | {"persistent": "true"}
        await transport._client.send(body, destination, headers=framed, receipt_timeout=RECEIPT_TIMEOUT_SECONDS)
        await frame.ack()

    monkeypatch.setattr(StompTransport, "_copy_and_ack", copy_then_ack)


@pytest.fixture
def stomp_plain_ack(monkeypatch: pytest.MonkeyPatch) -> None:
    """``StompTransport._ack_confirmed`` on a fake stompman client: the frame's ACK (the receipt the real one waits
    for is in the integration tests, on a real broker)."""

    async def ack(transport: StompTransport, frame: Any) -> None:
        await frame.ack()

    monkeypatch.setattr(StompTransport, "_ack_confirmed", ack)

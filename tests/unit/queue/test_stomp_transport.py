"""How the ActiveMQ transport reads a STOMP MESSAGE frame (the broker itself is in the integration tests)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from bridge.queue.stomp import StompTransport
from tests.support import stomp_settings


@dataclass
class Frame:
    """The two fields of stompman's AckableMessageFrame the transport reads."""

    headers: dict[str, str]
    body: bytes


def transport() -> StompTransport:
    client: Any = object()  # never used: no call here talks to the broker
    return StompTransport(stomp_settings("stomp://127.0.0.1:61613/queue/kordiam"), client)


def frame(body: bytes = b'{"id": 7}', **headers: str) -> Frame:
    base = {
        "message-id": "ID:broker-1:1:1:1",
        "ack": "ID:conn-1:5",
        "subscription": "sub-1",
        "destination": "/queue/kordiam",
        "timestamp": "1700000000000",
        "expires": "0",
        "priority": "4",
        "persistent": "true",
    }
    return Frame(base | headers, body)


async def received(transport: StompTransport, incoming: Frame) -> Any:
    await transport._on_message(incoming)  # type: ignore[arg-type]
    (message,) = await asyncio.wait_for(transport.receive(10, wait_time=1), 5)
    return message


async def test_the_producers_headers_are_the_attributes_and_the_brokers_are_not() -> None:
    message = await received(transport(), frame(event="updated", JMSXGroupID="7", traceparent="00-abc-def-01"))
    assert message.message_id == "ID:broker-1:1:1:1" and message.body == '{"id": 7}'
    assert message.attributes == {"event": "updated", "JMSXGroupID": "7", "traceparent": "00-abc-def-01"}
    assert message.group_id == "7" and message.sent_at == 1_700_000_000.0
    assert message.receive_count == 1


async def test_the_attempt_header_and_a_broker_redelivery_both_count() -> None:
    assert (await received(transport(), frame(**{"bridge-attempt": "3"}))).receive_count == 3
    # Redelivered after a lost connection (a killed worker): one attempt more than the header knows of.
    redelivered = frame(**{"bridge-attempt": "3", "redelivered": "true", "ack": "ID:conn-1:6"})
    assert (await received(transport(), redelivered)).receive_count == 4
    assert (await received(transport(), frame(**{"bridge-attempt": "junk"}))).receive_count == 1


async def test_a_body_that_is_not_utf8_still_arrives_for_the_decoder_to_reject() -> None:
    message = await received(transport(), frame(body=b"\xff\xfe not text"))
    assert message.body.endswith(" not text") and "\ufffd" in message.body

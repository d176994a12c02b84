"""How the ActiveMQ transport reads a STOMP MESSAGE frame (the broker itself is in the integration tests)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any

import pytest
import stompman
from structlog.testing import capture_logs

from bridge.errors import QueueUnreachable
from bridge.queue import stomp
from bridge.queue.dead_letter import DeadLetterContext
from bridge.queue.stomp import (
    MAX_DEAD_LETTER_HEADER_BYTES,
    MAX_DEAD_LETTER_HEADERS,
    MAX_HEADER_VALUE,
    StompTransport,
    dead_letter_headers,
)
from bridge.queue.transport import MessageTooLarge, QueueMessage
from tests.support import eventually, stomp_settings

pytestmark = pytest.mark.usefixtures("stomp_copy_then_ack")


@dataclass(frozen=True)
class FrameSubscription:
    id: str = "sub-1"


@dataclass
class Frame:
    """The fields of stompman's AckableMessageFrame the transport reads (the connection and the subscription it
    came on among them), and its ACK."""

    headers: dict[str, str]
    body: bytes
    acked: bool = False
    _subscription: FrameSubscription = FrameSubscription()
    _received_at_reconnection_count: int = 0

    async def ack(self) -> None:
        self.acked = True


@dataclass
class ConnectionManager:
    _reconnection_count: int = 0


class Subscribed:
    def contains_by_id(self, subscription_id: str) -> bool:
        return subscription_id == "sub-1"


class ConnectedClient:
    """What the transport asks of stompman's Client about a delivery: still on the connection that is up?"""

    def __init__(self) -> None:
        self._connection_manager = ConnectionManager()
        self._active_subscriptions = Subscribed()


class SendingClient(ConnectedClient):
    """What the transport asks of stompman's Client to SEND: each frame's body, destination and headers."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[bytes, str, dict[str, str]]] = []

    async def send(self, body: bytes, destination: str, *, headers: dict[str, str], receipt_timeout: float) -> None:
        self.sent.append((body, destination, headers))


def transport() -> StompTransport:
    client: Any = ConnectedClient()  # no call here talks to the broker
    return StompTransport(stomp_settings("stomp://127.0.0.1:61613/queue/kordiam"), client)


def frame(body: bytes = b'{"id": 7}', /, **headers: str) -> Frame:
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


async def test_the_attempt_header_counts() -> None:
    assert (await received(transport(), frame(**{"bridge-attempt": "3"}))).receive_count == 3
    assert (await received(transport(), frame(**{"bridge-attempt": "junk"}))).receive_count == 1


def copying_transport(max_receive_count: int = 5) -> tuple[StompTransport, SendingClient]:
    client = SendingClient()
    settings = stomp_settings("stomp://127.0.0.1:61613/queue/kordiam", max_receive_count=max_receive_count)
    return StompTransport(settings, client), client  # type: ignore[arg-type]


async def test_a_redelivery_is_replaced_by_its_copy_one_attempt_higher() -> None:
    # Redelivered after a lost connection (a killed worker): the attempt that ended without an outcome is written
    # on the message, so a message that kills the worker every time still runs out of attempts.
    copying, client = copying_transport()
    redelivered = frame(
        b"\xff bytes", event="updated", JMSXGroupID="7", **{"bridge-attempt": "3", "redelivered": "true"}
    )
    await copying._on_message(redelivered)  # type: ignore[arg-type]
    assert redelivered.acked and copying._inbox.empty()  # not handed out: its copy comes instead
    [(body, destination, headers)] = client.sent
    assert (body, destination) == (b"\xff bytes", "/queue/kordiam")
    assert headers["bridge-attempt"] == "4" and headers["event"] == "updated" and headers["JMSXGroupID"] == "7"
    assert "redelivered" not in headers


async def test_a_redelivery_after_the_last_attempt_is_dead_lettered_with_the_reason() -> None:
    copying, client = copying_transport(max_receive_count=3)
    redelivered = frame(event="updated", **{"bridge-attempt": "3", "redelivered": "true"})
    await copying._on_message(redelivered)  # type: ignore[arg-type]
    assert redelivered.acked and copying._inbox.empty()
    [(body, destination, headers)] = client.sent
    assert (body, destination) == (b'{"id": 7}', "/queue/kordiam-dlq")
    assert headers["failure.stage"] == "receive" and headers["failure.attempts"] == "3"
    assert "without an outcome: the worker crashed or lost its connection" in headers["failure.reason"]
    assert headers["event"] == "updated"


async def test_a_redelivery_the_broker_takes_no_copy_of_is_handed_out_as_it_is() -> None:
    # Never stuck on the transport: counted one higher, as the redelivery it is.
    class RefusingClient(SendingClient):
        async def send(self, body: bytes, destination: str, *, headers: dict[str, str], receipt_timeout: float) -> None:
            raise stompman.SendReceiptError(receipt_id="r-1", reason="rejected")

    refusing = StompTransport(stomp_settings("stomp://127.0.0.1:61613/queue/kordiam"), RefusingClient())  # type: ignore[arg-type]
    redelivered = frame(**{"bridge-attempt": "3", "redelivered": "true"})
    message = await received(refusing, redelivered)
    assert message.receive_count == 4 and not redelivered.acked


async def test_a_body_that_is_not_utf8_arrives_with_its_bytes_kept() -> None:
    # The text is for reading (the decoder rejects it, dlq show prints it); the bytes are the message.
    message = await received(transport(), frame(b"\xff\xfe not text"))
    assert message.body == "\ufffd\ufffd not text" and message.raw_body == b"\xff\xfe not text"
    assert (await received(transport(), frame(b'{"id": 7}'))).raw_body is None  # UTF-8: the text is the body


async def test_a_dead_letter_and_a_retry_carry_the_bytes_as_received() -> None:
    # Nothing lost or altered: a copy is the message's own bytes, not their U+FFFD reading, nor a stand-in text.
    client = SendingClient()
    copying = StompTransport(stomp_settings("stomp://127.0.0.1:61613/queue/kordiam"), client)  # type: ignore[arg-type]
    latin1 = b'{"id": 7, "title": "caf\xe9"}'
    context = DeadLetterContext("decode", "body is not UTF-8", "PoisonMessage")
    await copying.send_dead_letter(await received(copying, frame(latin1)), context)
    await copying.send_dead_letter(await received(copying, frame(b"", ack="ID:conn-1:6")), context)
    assert await copying.retry_later([await received(copying, frame(latin1, ack="ID:conn-1:7"))], 5) == []
    assert [(body, destination) for body, destination, _ in client.sent] == [
        (latin1, "/queue/kordiam-dlq"),
        (b"", "/queue/kordiam-dlq"),
        (latin1, "/queue/kordiam"),
    ]


# ---- dead-letter headers -------------------------------------------------------------------------------------


def test_dead_letter_headers_are_bounded_however_long_the_reason() -> None:
    # ActiveMQ Classic drops the connection on a header line over 10240 bytes: the dead letter would never be sent.
    own = {"event": "updated", "note": "n" * 9_000, "long-" + "x" * 500: "v"} | {
        f"h{n}": "é:" * 500 for n in range(200)
    }
    message = QueueMessage("m-1", "sub/1", '{"k": 1}', own, 1, sent_at=None, group_id=None)
    context = DeadLetterContext("decode", "no element id (keys: " + "k" * 30_000 + ")", "Poison" * 5_000, element_id=3)
    headers = dead_letter_headers(message, context)
    assert headers["failure.reason"] == context.reason[:MAX_HEADER_VALUE]
    assert len(headers["failure.error_class"]) == MAX_HEADER_VALUE
    assert headers["failure.stage"] == "decode" and headers["failure.element_id"] == "3"
    assert headers["event"] == "updated" and headers["note"] == "n" * MAX_HEADER_VALUE  # the message's own, cut
    assert not any(name.startswith("long-") for name in headers)  # a name too long to carry is left off
    assert len(headers) <= MAX_DEAD_LETTER_HEADERS
    assert all(len(name) + len(value) < 2 * MAX_HEADER_VALUE for name, value in headers.items())
    encoded = sum(len(stompman.serde.dump_header(name, value)) for name, value in headers.items())
    assert encoded <= MAX_DEAD_LETTER_HEADER_BYTES
    assert all(len(stompman.serde.dump_header(n, v)) < 10_240 // 2 for n, v in headers.items())


# ---- what a SEND may carry -------------------------------------------------------------------------------------


def sender() -> tuple[StompTransport, SendingClient]:
    client = SendingClient()
    return StompTransport(stomp_settings("stomp://127.0.0.1:61613/queue/kordiam"), client), client  # type: ignore[arg-type]


async def test_a_send_with_a_header_line_the_broker_refuses_is_refused_before_sending() -> None:
    # ActiveMQ answers a header line over 10240 bytes with an ERROR and drops the connection, failing every send in
    # flight on it. The line is "name:value" in UTF-8 with ':' and '\\' escaped to two bytes: "note:" and ":" take
    # 7 bytes, each "é" two.
    transport, client = sender()
    largest = ":" + "é" * 5_116 + "x"  # "note:" + 10235 bytes: a line of 10240, the most the transport sends
    await transport.send('{"id": 1}', {"note": largest})
    with pytest.raises(MessageTooLarge) as refused:
        await transport.send('{"id": 2}', {"event": "updated", "note": largest + "y"})
    assert (refused.value.size, refused.value.limit) == (10_241, 10_240)
    assert str(refused.value) == "header line 'note': 10241 bytes, more than the 10240 the queue takes"
    assert [body for body, _, _ in client.sent] == [b'{"id": 1}']  # the refused one was not sent


async def test_a_send_with_more_headers_than_the_broker_takes_is_refused_before_sending() -> None:
    # With the transport's own (bridge-send-id, persistent) and stompman's (destination, content-length, receipt),
    # a frame of 995 caller headers has 1000: ActiveMQ's limit. One more and it would drop the connection.
    transport, client = sender()
    await transport.send('{"id": 1}', {f"h{n}": "v" for n in range(995)})
    with pytest.raises(MessageTooLarge) as refused:
        await transport.send('{"id": 2}', {f"h{n}": "v" for n in range(996)})
    assert str(refused.value) == "1001 headers, more than the 1000 the queue takes"
    with pytest.raises(MessageTooLarge):  # the group header counts too
        await transport.send('{"id": 3}', {f"h{n}": "v" for n in range(995)}, group_id="3")
    assert [body for body, _, _ in client.sent] == [b'{"id": 1}']


# ---- the subscription ------------------------------------------------------------------------------------------


@dataclass
class Subscription:
    id: str


class ActiveSubscriptions:
    def __init__(self) -> None:
        self.ids: set[str] = set()

    def contains_by_id(self, subscription_id: str) -> bool:
        return subscription_id in self.ids


class Client:
    """What the transport asks of stompman's Client about its subscription."""

    def __init__(self) -> None:
        self._active_subscriptions = ActiveSubscriptions()
        self.alive = True
        self.subscribed: list[str] = []
        self.refuse = 0

    def is_alive(self) -> bool:
        return self.alive

    async def subscribe_with_manual_ack(self, destination: str, handler: Any, **options: Any) -> Subscription:
        if self.refuse:
            self.refuse -= 1
            raise stompman.SubscriptionError(subscription_id="x", reason="connection_lost")
        subscription = Subscription(f"sub-{len(self.subscribed) + 1}")
        self.subscribed.append(destination)
        self._active_subscriptions.ids.add(subscription.id)
        return subscription


async def test_a_subscription_the_client_forgot_is_made_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stomp, "CONNECTION_CHECK_SECONDS", 0.01)
    client = Client()
    transport = StompTransport(stomp_settings("stomp://127.0.0.1:61613/queue/kordiam"), client)  # type: ignore[arg-type]
    await transport._subscribe()
    assert transport.connected()
    # stompman, when a re-SUBSCRIBE after a reconnect is not confirmed: the subscription is forgotten, for good.
    client._active_subscriptions.ids.clear()
    assert not transport.connected()  # the health checks say so: the worker receives nothing
    client.alive, client.refuse = False, 1
    with capture_logs() as logs:
        watcher = asyncio.create_task(transport._watch_connection())
        try:
            await asyncio.sleep(0.1)
            assert client.subscribed == ["/queue/kordiam"]  # not while the connection is down
            client.alive = True
            await eventually(transport.connected, timeout=5, what="a new subscription")
        finally:
            watcher.cancel()
    assert client.subscribed == ["/queue/kordiam", "/queue/kordiam"]
    events = [e["event"] for e in logs]
    assert events.index("resubscribe_failed") < events.index("resubscribed")


def test_a_transport_that_does_not_consume_needs_no_subscription() -> None:
    client = Client()
    transport = StompTransport(stomp_settings("stomp://127.0.0.1:61613/queue/kordiam"), client)  # type: ignore[arg-type]
    assert transport.connected()
    client.alive = False
    assert not transport.connected()


# ---- a transaction's receipts ----------------------------------------------------------------------------------


async def test_an_error_for_another_frame_does_not_fail_a_transactions_receipt() -> None:
    # Every frame of the transport's transactions carries a receipt, so an ERROR without a receipt id is another
    # frame's (a plain ACK the broker refused). Taken as a refused COMMIT, the original would be handed back beside a
    # copy the broker did commit.
    loop = asyncio.get_running_loop()
    receipts = stompman.receipts.PendingReceipts()
    pending = stompman.receipts.PendingReceipt(
        waiter=stomp._Confirmation(receipts),
        connection=None,  # type: ignore[arg-type]
        receipt_id="commit-1",
        epoch=0,
        deadline=loop.time() + 10,
        result=loop.create_future(),
    )
    receipts.add(pending)
    receipts.handle_error(stompman.ErrorFrame(headers={"message": "Unexpected ACK received"}), epoch=0)
    assert not pending.result.done()
    receipts.handle_receipt(stompman.ReceiptFrame(headers={"receipt-id": "commit-1"}), epoch=0)
    assert pending.result.result() is None

    refused = stompman.receipts.PendingReceipt(
        waiter=stomp._Confirmation(receipts),
        connection=None,  # type: ignore[arg-type]
        receipt_id="commit-2",
        epoch=0,
        deadline=loop.time() + 10,
        result=loop.create_future(),
    )
    receipts.add(refused)
    receipts.handle_error(stompman.ErrorFrame(headers={"message": "no", "receipt-id": "commit-2"}), epoch=0)
    error = refused.result.result()
    assert isinstance(error, stompman.SendReceiptError) and error.reason == "rejected"


async def test_a_retry_of_a_redriven_message_keeps_its_first_failure() -> None:
    # A redriven copy carries its first failure back; its retry is the same message, so a later dead letter still
    # names the first failure, as on SQS (where a retry only changes the visibility).
    copying, client = copying_transport()
    redriven = frame(
        event="updated",
        redriven_from="ID:dlq-1",
        **{"first_failure.source_message_id": "ID:first", "first_failure.at": "2026-12-01T10:00:00.000+00:00"},
    )
    assert await copying.retry_later([await received(copying, redriven)], 5) == []
    [(_, _, headers)] = client.sent
    assert headers["first_failure.source_message_id"] == "ID:first"
    assert headers["first_failure.at"] == "2026-12-01T10:00:00.000+00:00"
    assert headers["redriven_from"] == "ID:dlq-1" and headers["event"] == "updated"


class BrowsingClient(ConnectedClient):
    """A queue browser on a deep queue: the broker sends ``count`` messages, then ``browser:end``, and reading each
    one takes ``per_frame`` seconds of the loop's clock (stompman parses a frame byte by byte: about 3 MB/s,
    measured)."""

    def __init__(self, count: int, per_frame: float) -> None:
        super().__init__()
        self.count, self.per_frame = count, per_frame
        self.clock_ahead = 0.0
        self.unsubscribed = False
        self._delivering: asyncio.Task[None] | None = None

    async def subscribe_with_manual_ack(self, destination: str, handler: Any, **options: Any) -> Any:
        assert options["headers"] == {"browser": "true"}

        async def deliver() -> None:
            for number in range(self.count):
                await asyncio.sleep(0)
                self.clock_ahead += self.per_frame
                await handler(frame(**{"message-id": f"ID:broker-1:1:1:{number}", "subscription": "browse-1"}))
            await handler(Frame({"subscription": "browse-1", "browser": "end"}, b""))

        self._delivering = asyncio.create_task(deliver())
        return self

    async def unsubscribe(self) -> None:
        self.unsubscribed = True


async def test_a_browse_of_a_deep_queue_goes_on_while_the_broker_keeps_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each message comes well within the receipt timeout of the one before, the whole browse takes five of them.
    client = BrowsingClient(count=10, per_frame=stomp.RECEIPT_TIMEOUT_SECONDS / 2)
    loop = asyncio.get_running_loop()
    real_time = loop.time
    monkeypatch.setattr(loop, "time", lambda: real_time() + client.clock_ahead)
    browsing = StompTransport(stomp_settings("stomp://127.0.0.1:61613/queue/kordiam"), client)  # type: ignore[arg-type]
    seen, more = await browsing.browse("stomp://127.0.0.1:61613/queue/kordiam-dlq", limit=100)
    assert [p.message.message_id for p in seen] == [f"ID:broker-1:1:1:{n}" for n in range(10)] and not more
    assert client.unsubscribed


async def test_a_browse_the_broker_stops_answering_ends_in_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stomp, "RECEIPT_TIMEOUT_SECONDS", 0.05)

    class SilentBrowsingClient(BrowsingClient):
        async def subscribe_with_manual_ack(self, destination: str, handler: Any, **options: Any) -> Any:
            await handler(frame(subscription="browse-1"))  # one message, then nothing: no browser:end
            return self

    client = SilentBrowsingClient(count=1, per_frame=0)
    browsing = StompTransport(stomp_settings("stomp://127.0.0.1:61613/queue/kordiam"), client)  # type: ignore[arg-type]
    with pytest.raises(TimeoutError):
        await browsing.browse("stomp://127.0.0.1:61613/queue/kordiam-dlq", limit=100)
    assert client.unsubscribed


async def test_a_broker_that_cannot_be_reached_at_start_up_is_one_line_naming_queue_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The README's line. Before: "… at HOST:PORT (TimeoutError); …" for a port where nothing listens, which reads
    # as a network that drops the packets: the start had tried again and again until its deadline.
    monkeypatch.setattr(stomp, "FIRST_CONNECT_TIMEOUT_SECONDS", 2.0)
    with socket.socket() as closed:  # bound, never listening: every connection is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with pytest.raises(QueueUnreachable) as raised:
            async with StompTransport.connect(stomp_settings(f"stomp://127.0.0.1:{port}/queue/q")):
                pass
    assert (raised.value.key, raised.value.problem) == (
        "queue.url",
        f"cannot connect to the ActiveMQ broker at 127.0.0.1:{port}: no STOMP connection within 2 s of trying; is "
        "it running, and are host, port, username and password right?",
    )

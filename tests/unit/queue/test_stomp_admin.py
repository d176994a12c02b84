"""The ActiveMQ redrive against an in-process broker that delivers as ActiveMQ does (the real one is in the
integration tests): what a run leaves on the dead-letter queue must never be delivered to it, or the broker hands it
back marked redelivered, one more receive counted on a message nobody asked to touch."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import stompman
from rich.console import Console

from bridge.admin.dlq import dead_letters_of, find_dead_letter, list_dead_letters
from bridge.admin.redrive import redrive_request
from bridge.admin.rendering import render_dlq_list
from bridge.errors import AdminError
from bridge.queue import stomp
from bridge.queue.stomp import StompTransport
from bridge.queue.stomp_admin import NO_DEPTH, StompQueueAdmin
from bridge.queue.transport import NoProgress, OutgoingMessage, PagedIn, PeekedMessage, QueueDepth, RedriveResult
from tests.support import stomp_settings

pytestmark = pytest.mark.usefixtures("stomp_copy_then_ack", "stomp_plain_ack")

MAIN, DLQ = "/queue/kordiam", "/queue/kordiam-dlq"
DLQ_URL = f"stomp://127.0.0.1:61613{DLQ}"
Handler = Callable[[Any], Coroutine[Any, Any, Any]]


@dataclass
class Stored:
    message_id: str
    body: bytes
    headers: dict[str, str]
    redelivered: bool = False


@dataclass
class Delivery:
    """A MESSAGE frame as the transport reads it (the subscription and the connection it came on among it), and its
    ACK."""

    headers: dict[str, str]
    body: bytes
    broker: Broker
    destination: str
    _subscription: Subscription | None = None
    _received_at_reconnection_count: int = 0

    async def ack(self) -> None:
        if self.broker.blocks_producers:  # ActiveMQ stops reading the connection: no ACK confirmed either
            raise stompman.SendReceiptError(receipt_id="r-2", reason="timeout")
        self.broker.acked(self.destination, self.headers["message-id"])


@dataclass
class Subscription:
    id: str
    destination: str
    broker: Broker
    delivered: list[str] = field(default_factory=list)

    async def unsubscribe(self) -> None:
        self.broker.ended(self)


class Broker:
    """ActiveMQ as a redrive sees it: a browser (``browser:true``) is shown every message and then ``browser:end``;
    a ``client-individual`` subscription is delivered, up to its prefetch, the messages its ``selector`` names (all
    of them without one); a message delivered and not ACKed when its subscription ends stays, marked redelivered."""

    def __init__(self) -> None:
        self.queues: dict[str, list[Stored]] = {MAIN: [], DLQ: []}
        self._ids = itertools.count(1)
        self.on_send: Callable[[str], None] = lambda destination: None
        self.refuse_copies_of: set[str] = set()
        # A broker that does not honour a subscription's selector delivers whatever is first on the queue.
        self.ignores_selectors = False
        # A broker paused or cut off: it delivers nothing, and the client sees its heart-beats missed.
        self.answering = True
        # How many messages of a queue a browser is shown: ActiveMQ shows what it has paged into memory, so on a queue
        # larger than its memory limit a browse ends early, saying nothing of the rest.
        self.browse_page: int | None = None
        # A broker that blocks its producers (memory or store full: producer flow control) confirms no SEND.
        self.blocks_producers = False
        # What the statistics plugin answers a request about a queue (``statistics_answer``); None: a broker without
        # the plugin, which answers nothing.
        self.statistics: Callable[[Broker, str], list[bytes]] | None = statistics_answer
        self._reply_handlers: dict[str, Handler] = {}
        self.statistics_requests = 0
        # What the transport reads of stompman's client about a delivery: on the connection that is up, to a
        # subscription still active?
        self._connection_manager = SimpleNamespace(_reconnection_count=0)
        self._active_subscriptions = SimpleNamespace(contains_by_id=self.subscribed)
        self._subscriptions: set[str] = set()

    def subscribed(self, subscription_id: str) -> bool:
        return subscription_id in self._subscriptions

    def is_alive(self) -> bool:
        return self.answering

    def put(self, destination: str, body: bytes, headers: dict[str, str]) -> str:
        message_id = f"ID:broker-{next(self._ids)}"
        self.queues[destination].append(Stored(message_id, body, headers))
        return message_id

    async def send(
        self, body: bytes, destination: str, *, headers: dict[str, str], receipt_timeout: float | None = None
    ) -> None:
        if destination.startswith(stomp.STATISTICS_DESTINATION):
            self.statistics_requests += 1
            queue = "/queue/" + destination.removeprefix(stomp.STATISTICS_DESTINATION)
            if self.statistics is not None and self.answering and not self.blocks_producers:
                for answer in self.statistics(self, queue) if queue in self.queues else [EMPTY_MAP]:
                    await self._reply_handlers[headers["reply-to"]](Delivery({}, answer, self, headers["reply-to"]))
            return
        if headers.get("redriven_from") in self.refuse_copies_of:
            raise RuntimeError("refused")
        if self.blocks_producers:
            raise stompman.SendReceiptError(receipt_id="r-1", reason="timeout")
        self.put(destination, body, dict(headers))
        self.on_send(destination)

    async def subscribe_with_manual_ack(
        self, destination: str, handler: Handler, *, ack: str, headers: dict[str, str], receipt_timeout: float | None
    ) -> Subscription:
        subscription = Subscription(f"sub-{next(self._ids)}", destination, self)
        self._subscriptions.add(subscription.id)
        if destination.startswith("/temp-queue/"):
            self._reply_handlers[destination] = handler
            return subscription
        frame = {"subscription": subscription.id, "destination": destination}
        if headers.get("browser") == "true":
            for stored in list(self.queues[destination])[: self.browse_page]:
                await handler(
                    Delivery(frame | stored.headers | {"message-id": stored.message_id}, stored.body, self, destination)
                )
            await handler(Delivery(frame | {"browser": "end"}, b"", self, destination))
            return subscription
        if not self.answering:
            return subscription
        selector = re.fullmatch(r"JMSMessageID = '(.*)'", headers.get("selector", ""))
        prefetch = int(headers.get("activemq.prefetchSize", "1000"))
        for stored in list(self.queues[destination]):
            if len(subscription.delivered) == prefetch:
                break
            named = selector is None or stored.message_id == selector.group(1).replace("''", "'")
            if not named and not self.ignores_selectors:
                continue
            subscription.delivered.append(stored.message_id)
            extra = {"ack": f"ack-{stored.message_id}", "message-id": stored.message_id}
            if stored.redelivered:
                extra["redelivered"] = "true"
            await handler(Delivery(frame | stored.headers | extra, stored.body, self, destination, subscription))
        return subscription

    def acked(self, destination: str, message_id: str) -> None:
        self.queues[destination] = [m for m in self.queues[destination] if m.message_id != message_id]

    def ended(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription.id)
        for stored in self.queues.get(subscription.destination, []):
            if stored.message_id in subscription.delivered:
                stored.redelivered = True

    def bodies(self, destination: str) -> list[str]:
        return [m.body.decode() for m in self.queues[destination]]

    def redelivered(self) -> list[str]:
        return [m.body.decode() for m in self.queues[DLQ] if m.redelivered]


EMPTY_MAP = b'{"map":""}'  # what ends the statistics plugin's answer


def statistics_answer(broker: Broker, queue: str) -> list[bytes]:
    """The statistics plugin's answer about ``queue`` as ActiveMQ 5.17 writes it (``jms-map-json``), then its end."""
    entries = [
        {"string": "size", "long": len(broker.queues[queue])},
        {"string": "inflightCount", "long": 0},
        {"string": ["destinationName", "queue://" + queue.removeprefix("/queue/")]},
        {"string": ["brokerName", "fake"]},
    ]
    return [json.dumps({"map": {"entry": entries}}).encode(), EMPTY_MAP]


def dead_letters(broker: Broker, *elements: int) -> list[str]:
    return [
        broker.put(DLQ, json.dumps({"id": e}).encode(), {"failure.stage": "sync", "failure.element_id": str(e)})
        for e in elements
    ]


async def redrive(
    broker: Broker, *, limit: int | None = None, elements: list[int] | None = None, stop: asyncio.Event | None = None
) -> RedriveResult:
    transport = StompTransport(stomp_settings(f"stomp://127.0.0.1:61613{MAIN}"), broker)  # type: ignore[arg-type]
    request = redrive_request(limit=limit, element_ids=elements, native=None)
    return await StompQueueAdmin(transport).redrive(request, progress=NoProgress(), stop=stop or asyncio.Event())


async def test_a_limit_moves_that_many_and_leaves_the_rest_undelivered() -> None:
    broker = Broker()
    dead_letters(broker, 1, 2, 3)
    result = await redrive(broker, limit=1)
    assert [m.element_id for m in result.moved] == [1] and (result.skipped, result.ok) == (2, True)
    assert broker.bodies(MAIN) == ['{"id": 1}'] and broker.bodies(DLQ) == ['{"id": 2}', '{"id": 3}']
    assert broker.redelivered() == []


async def test_a_filter_leaves_the_others_undelivered() -> None:
    broker = Broker()
    dead_letters(broker, 1, 2, 3)
    result = await redrive(broker, elements=[3])
    assert [m.element_id for m in result.moved] == [3] and result.skipped == 2
    assert broker.bodies(DLQ) == ['{"id": 1}', '{"id": 2}'] and broker.redelivered() == []


async def test_a_stop_leaves_the_rest_undelivered() -> None:
    broker, stop = Broker(), asyncio.Event()
    dead_letters(broker, 1, 2, 3)
    broker.on_send = lambda destination: stop.set()  # Ctrl-C while the first copy is being sent
    result = await redrive(broker, stop=stop)
    assert [m.element_id for m in result.moved] == [1] and (result.skipped, result.interrupted) == (2, True)
    assert broker.redelivered() == []


async def test_a_copy_the_broker_refused_leaves_its_dead_letter_and_the_run_goes_on() -> None:
    broker = Broker()
    first, _ = dead_letters(broker, 1, 2)
    broker.refuse_copies_of = {first}
    result = await redrive(broker)
    assert [f.dlq_message_id for f in result.failed] == [first] and "refused" in result.failed[0].reason
    assert [m.element_id for m in result.moved] == [2]
    # The one tried was delivered and not ACKed: back on the queue, redelivered; nothing else was touched.
    assert broker.bodies(DLQ) == ['{"id": 1}'] and broker.redelivered() == ['{"id": 1}']


async def test_a_dead_letter_another_consumer_took_meanwhile_ends_the_run_saying_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = Broker()
    first, second, _ = dead_letters(broker, 1, 2, 3)
    browse = StompTransport.browse

    async def browse_then_lose_one(self: StompTransport, url: str, *, limit: int) -> Any:
        seen = await browse(self, url, limit=limit)
        broker.acked(DLQ, second)  # taken by someone else between the browse and its move
        return seen

    monkeypatch.setattr(StompTransport, "browse", browse_then_lose_one)
    monkeypatch.setattr(stomp, "RECEIPT_TIMEOUT_SECONDS", 0.01)  # the fake delivers at once or never
    result = await redrive(broker)
    assert [m.dlq_message_id for m in result.moved] == [first] and result.skipped == 1
    assert result.stopped_reason is not None and second in result.stopped_reason and not result.ok
    assert broker.bodies(DLQ) == ['{"id": 3}'] and broker.redelivered() == []


async def test_a_browsed_dead_letter_comes_with_the_brokers_headers_not_the_browsers() -> None:
    broker = Broker()
    (first,) = dead_letters(broker, 1)
    transport = StompTransport(stomp_settings(f"stomp://127.0.0.1:61613{MAIN}"), broker)  # type: ignore[arg-type]
    (peeked,), more = await StompQueueAdmin(transport).peek(f"stomp://127.0.0.1:61613{DLQ}", limit=10)
    assert not more and peeked.message.attributes == {"failure.stage": "sync", "failure.element_id": "1"}
    assert peeked.broker_attributes == {"message-id": first, "destination": DLQ}  # no subscription id
    assert peeked.broker_attributes_title == "Broker headers"


async def test_delete_takes_only_the_chosen_dead_letters_and_delivers_no_other() -> None:
    broker = Broker()
    first, second, third = dead_letters(broker, 1, 2, 3)
    transport = StompTransport(stomp_settings(f"stomp://127.0.0.1:61613{MAIN}"), broker)  # type: ignore[arg-type]
    deletion = await StompQueueAdmin(transport).delete_dead_letters(
        limit=10, chosen=lambda p: p.message.message_id in (first, third)
    )
    assert (deletion.deleted, deletion.failed, deletion.more) == ([first, third], {}, False)
    assert [p.message.message_id for p in deletion.seen] == [first, second, third]
    assert broker.bodies(DLQ) == ['{"id": 2}'] and broker.redelivered() == [] and broker.bodies(MAIN) == []


async def test_delete_stops_looking_at_until_and_reports_one_another_consumer_took(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = Broker()
    first, second, _ = dead_letters(broker, 1, 2, 3)
    browse = StompTransport.browse

    async def browse_then_lose_one(self: StompTransport, url: str, *, limit: int) -> Any:
        seen = await browse(self, url, limit=limit)
        broker.acked(DLQ, first)  # taken by someone else between the browse and its deletion
        return seen

    monkeypatch.setattr(StompTransport, "browse", browse_then_lose_one)
    monkeypatch.setattr(stomp, "RECEIPT_TIMEOUT_SECONDS", 0.01)  # the fake delivers at once or never
    transport = StompTransport(stomp_settings(f"stomp://127.0.0.1:61613{MAIN}"), broker)  # type: ignore[arg-type]
    chosen = {first, second}
    deletion = await StompQueueAdmin(transport).delete_dead_letters(
        limit=10, chosen=lambda p: p.message.message_id in chosen, until=lambda p: p.message.message_id == second
    )
    assert deletion.deleted == [second] and deletion.more and len(deletion.seen) == 2
    assert "no longer on the dead-letter queue" in deletion.failed[first]
    assert broker.bodies(DLQ) == ['{"id": 3}'] and broker.redelivered() == []


async def test_delete_acks_no_dead_letter_but_the_one_its_selector_names() -> None:
    broker = Broker()
    broker.ignores_selectors = True  # delivers the first dead letter whatever the selector names
    first, second = dead_letters(broker, 1, 2)
    transport = StompTransport(stomp_settings(f"stomp://127.0.0.1:61613{MAIN}"), broker)  # type: ignore[arg-type]
    deletion = await StompQueueAdmin(transport).delete_dead_letters(
        limit=10, chosen=lambda p: p.message.message_id == second
    )
    assert deletion.deleted == [] and f"delivered {first}" in deletion.failed[second]
    assert broker.bodies(DLQ) == ['{"id": 1}', '{"id": 2}']  # neither deleted: the one delivered is handed back


async def test_redrive_moves_no_dead_letter_but_the_one_its_selector_names() -> None:
    broker = Broker()
    broker.ignores_selectors = True
    first, _ = dead_letters(broker, 1, 2)
    result = await redrive(broker, elements=[2])
    assert result.moved == [] and f"delivered {first}" in result.failed[0].reason
    assert broker.bodies(DLQ) == ['{"id": 1}', '{"id": 2}'] and broker.bodies(MAIN) == []


async def test_delete_tells_of_each_deletion_at_once_so_an_interrupted_run_still_knows_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = Broker()
    first, second = dead_letters(broker, 1, 2)
    delete = StompTransport.delete_dead_letter

    async def interrupted_at_the_second(self: StompTransport, message_id: str) -> bool:
        if message_id == second:
            raise asyncio.CancelledError  # Ctrl-C while it waits for the broker
        return await delete(self, message_id)

    monkeypatch.setattr(StompTransport, "delete_dead_letter", interrupted_at_the_second)
    transport = StompTransport(stomp_settings(f"stomp://127.0.0.1:61613{MAIN}"), broker)  # type: ignore[arg-type]
    told: list[str] = []
    with pytest.raises(asyncio.CancelledError):
        await StompQueueAdmin(transport).delete_dead_letters(
            limit=10, chosen=lambda p: True, on_deleted=lambda p: told.append(p.message.message_id)
        )
    assert told == [first] and broker.bodies(DLQ) == ['{"id": 2}']


async def test_delete_chooses_once_the_browse_has_ended_so_a_later_dead_letter_can_decide_it() -> None:
    broker = Broker()
    first, _, third = dead_letters(broker, 1, 2, 3)
    transport = StompTransport(stomp_settings(f"stomp://127.0.0.1:61613{MAIN}"), broker)  # type: ignore[arg-type]
    looked: list[str] = []

    def look(peeked: PeekedMessage) -> bool:
        looked.append(peeked.message.message_id)
        return False  # browses every one

    deletion = await StompQueueAdmin(transport).delete_dead_letters(
        limit=10, chosen=lambda p: p.message.message_id == first and third in looked, until=look
    )
    assert deletion.deleted == [first] and broker.bodies(DLQ) == ['{"id": 2}', '{"id": 3}']


async def test_a_redrive_whose_broker_stops_answering_stops_saying_so(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = Broker()
    first, second, _ = dead_letters(broker, 1, 2, 3)
    monkeypatch.setattr(stomp, "RECEIPT_TIMEOUT_SECONDS", 0.01)  # the fake delivers at once or never

    def pause_after_the_first_copy(destination: str) -> None:
        broker.answering = False

    broker.on_send = pause_after_the_first_copy
    result = await redrive(broker)
    assert [m.dlq_message_id for m in result.moved] == [first] and result.skipped == 2 and not result.ok
    # Not "another consumer took it": the dead letter did not come because the broker stopped answering.
    assert result.stopped_reason is not None and second in result.stopped_reason
    assert "stopped answering" in result.stopped_reason and "another consumer" not in result.stopped_reason
    assert broker.bodies(DLQ) == ['{"id": 2}', '{"id": 3}'] and broker.redelivered() == []


async def test_a_delete_whose_broker_stops_answering_says_so_and_tries_no_more(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = Broker()
    first, second, third = dead_letters(broker, 1, 2, 3)
    monkeypatch.setattr(stomp, "RECEIPT_TIMEOUT_SECONDS", 0.01)
    transport = StompTransport(stomp_settings(f"stomp://127.0.0.1:61613{MAIN}"), broker)  # type: ignore[arg-type]
    delete = StompTransport.delete_dead_letter
    tried: list[str] = []

    async def pause_after_the_first(self: StompTransport, message_id: str) -> bool:
        tried.append(message_id)
        deleted = await delete(self, message_id)
        broker.answering = False
        return deleted

    monkeypatch.setattr(StompTransport, "delete_dead_letter", pause_after_the_first)
    deletion = await StompQueueAdmin(transport).delete_dead_letters(limit=10, chosen=lambda p: True)
    assert deletion.deleted == [first] and tried == [first, second]  # the third is not waited for as well
    assert "stopped answering" in deletion.failed[second] and "another consumer" not in deletion.failed[second]
    assert "not tried" in deletion.failed[third]
    assert broker.bodies(DLQ) == ['{"id": 2}', '{"id": 3}']


@pytest.mark.parametrize("statistics", [True, False], ids=["statistics", "no statistics plugin"])
async def test_a_redrive_says_what_the_dead_letter_queue_still_holds_after_it(
    statistics: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = Broker()
    broker.browse_page = 2  # a dead-letter queue deeper than the broker pages into memory
    if not statistics:
        broker.statistics = None
        monkeypatch.setattr(stomp, "STATISTICS_TIMEOUT_SECONDS", 0.01)  # the fake answers at once or never
    first, second, _ = dead_letters(broker, 1, 2, 3)
    result = await redrive(broker)
    assert [m.dlq_message_id for m in result.moved] == [first, second]
    # The browse at the start ended after two; the third was there all along, and the summary says so.
    assert result.remaining == 1 and broker.bodies(DLQ) == ['{"id": 3}'] and broker.redelivered() == []
    # Where the broker counts its dead letters, the run says at once that it saw only part of them.
    assert result.paged_in == (PagedIn(2, 3) if statistics else None)


async def test_the_depth_is_the_brokers_statistics_and_unknown_when_nothing_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = Broker()
    dead_letters(broker, 1, 2, 3)

    def admin() -> StompQueueAdmin:
        return StompQueueAdmin(StompTransport(stomp_settings(f"stomp://127.0.0.1:61613{MAIN}"), broker))  # type: ignore[arg-type]

    assert await admin().depth(DLQ_URL) == QueueDepth(visible=3, in_flight=0, delayed=None, browsed=True)
    # The plugin answers nothing of its own about a queue the broker does not hold, only the end: nothing on it.
    assert await admin().depth("stomp://127.0.0.1:61613/queue/never-used") == QueueDepth(0, 0, None, browsed=True)

    monkeypatch.setattr(stomp, "STATISTICS_TIMEOUT_SECONDS", 0.01)  # the fake answers at once or never
    broker.statistics = None  # a broker without the statistics plugin: nothing answers
    unanswered = admin()
    unknown = await unanswered.depth(DLQ_URL)
    assert (unknown.visible, unknown.in_flight, unknown.browsed) == (None, None, True) and unknown.note == NO_DEPTH
    asked = broker.statistics_requests
    assert (await unanswered.depth(DLQ_URL)).visible is None and broker.statistics_requests == asked  # once only

    broker.statistics = lambda broker, queue: [b"<map>not asked for</map>"]  # an answer not understood
    assert (await admin().depth(DLQ_URL)).visible is None


@pytest.mark.parametrize("statistics", [True, False], ids=["statistics", "no statistics plugin"])
async def test_dlq_list_says_when_it_shows_only_what_the_broker_paged_in(
    statistics: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = Broker()
    broker.browse_page = 2
    if not statistics:
        broker.statistics = None
        monkeypatch.setattr(stomp, "STATISTICS_TIMEOUT_SECONDS", 0.01)
    dead_letters(broker, 1, 2, 3)
    admin = StompQueueAdmin(StompTransport(stomp_settings(f"stomp://127.0.0.1:61613{MAIN}"), broker))  # type: ignore[arg-type]
    listing = await list_dead_letters(admin, limit=50)
    assert [m.element_id for m in listing.messages] == [1, 2] and not listing.truncated
    console = Console(record=True, width=300)
    render_dlq_list(listing, console)
    summary = console.export_text().splitlines()[-1]
    if statistics:
        assert (listing.approximate_visible, listing.paged_in) == (3, PagedIn(2, 3))
        assert summary == (
            "2 shown; about 3 visible; showing 2 of 3 (the broker pages in only part of a deep queue: run again once "
            "these are handled)"
        )
    else:  # as before: what the browse saw is all that is known
        assert (listing.approximate_visible, listing.paged_in, summary) == (2, None, "2 shown; about 2 visible")
    # A limit that stopped the listing is the usual "raise --limit", not a paged-in one.
    limited = await list_dead_letters(admin, limit=1)
    assert limited.truncated and limited.paged_in is None


def test_a_statistics_answer_in_each_shape_jettison_writes() -> None:
    one_entry = b'{"map":{"entry":{"string":"size","long":7}}}'  # a single entry comes as an object
    assert stomp._statistics_map(one_entry) == {"size": 7}
    pairs = b'{"map":{"entry":[{"string":["destinationName","queue:\\/\\/q"]},{"string":"inflightCount","int":1}]}}'
    assert stomp._statistics_map(pairs) == {"destinationName": "queue://q", "inflightCount": 1}
    assert stomp._statistics_map(EMPTY_MAP) is None
    for odd in (b"", b"[]", b'{"map":{"entry":[{"long":1}]}}', b'{"map":{"entry":[{"string":"a"}]}}'):
        with pytest.raises(ValueError, match="not a statistics answer"):
            stomp._statistics_map(odd)


async def test_an_interrupted_redrive_does_not_browse_again() -> None:
    broker, stop = Broker(), asyncio.Event()
    dead_letters(broker, 1, 2)
    broker.on_send = lambda destination: stop.set()
    result = await redrive(broker, stop=stop)
    assert result.interrupted and result.remaining is None


async def test_a_redrive_whose_copies_the_broker_does_not_confirm_stops_at_the_first() -> None:
    broker = Broker()
    first, _, _ = dead_letters(broker, 1, 2, 3)
    broker.blocks_producers = True  # each move would wait its full receipt timeout for nothing
    result = await redrive(broker)
    assert [(f.dlq_message_id, f.reason) for f in result.failed] == [(first, "timeout: no answer within 10 s")]
    assert result.moved == [] and result.skipped == 2 and not result.ok
    assert result.stopped_reason is not None and "did not answer" in result.stopped_reason
    assert broker.bodies(DLQ) == ['{"id": 1}', '{"id": 2}', '{"id": 3}'] and broker.bodies(MAIN) == []


async def test_a_delete_whose_acks_the_broker_does_not_confirm_stops_at_the_first() -> None:
    broker = Broker()
    first, second, third = dead_letters(broker, 1, 2, 3)
    broker.blocks_producers = True
    transport = StompTransport(stomp_settings(f"stomp://127.0.0.1:61613{MAIN}"), broker)  # type: ignore[arg-type]
    deletion = await StompQueueAdmin(transport).delete_dead_letters(limit=10, chosen=lambda p: True)
    assert deletion.deleted == [] and deletion.failed[first] == "timeout: no answer within 10 s"
    assert "not tried" in deletion.failed[second] and "not tried" in deletion.failed[third]
    assert broker.bodies(DLQ) == ['{"id": 1}', '{"id": 2}', '{"id": 3}']


async def test_sends_after_one_the_broker_did_not_confirm_are_not_tried() -> None:
    broker = Broker()
    broker.blocks_producers = True  # replay and parked requeue would wait the receipt timeout for each element
    sends: list[str] = []
    broker.on_send = sends.append
    transport = StompTransport(stomp_settings(f"stomp://127.0.0.1:61613{MAIN}"), broker)  # type: ignore[arg-type]
    admin = StompQueueAdmin(transport)
    tried: list[int] = []
    original = transport.send

    async def counted(body: str, attributes: dict[str, str] | None = None, *, group_id: str | None = None) -> str:
        tried.append(len(tried))
        return await original(body, attributes, group_id=group_id)

    transport.send = counted  # type: ignore[method-assign]
    first = await admin.send([OutgoingMessage('{"id": 1}', {}), OutgoingMessage('{"id": 2}', {})])
    later = await admin.send([OutgoingMessage('{"id": 3}', {})])
    assert len(tried) == 1 and broker.bodies(MAIN) == []
    assert first[0].error == "timeout: no answer within 10 s"
    assert all(o.error is not None and o.error.startswith("not sent:") for o in first[1:] + later)


async def test_dlq_show_of_one_beyond_what_the_broker_paged_in_is_not_called_gone() -> None:
    broker = Broker()
    broker.browse_page = 2
    _, _, third = dead_letters(broker, 1, 2, 3)
    admin = StompQueueAdmin(StompTransport(stomp_settings(f"stomp://127.0.0.1:61613{MAIN}"), broker))  # type: ignore[arg-type]
    with pytest.raises(AdminError) as raised:
        await find_dead_letter(admin, third, scan_limit=1000)
    assert str(raised.value) == (
        f"dead letter {third} is not among the 2 looked at: showing 2 of 3 (the broker pages in only part of a deep "
        "queue: run again once these are handled)"
    )
    broker.browse_page = None  # once the broker shows them all, one not there is not found
    assert await find_dead_letter(admin, "ID:no-such", scan_limit=1000) is None


async def test_element_dlq_says_when_its_look_saw_only_what_the_broker_paged_in() -> None:
    broker = Broker()
    broker.browse_page = 2
    dead_letters(broker, 7, 8, 7)
    admin = StompQueueAdmin(StompTransport(stomp_settings(f"stomp://127.0.0.1:61613{MAIN}"), broker))  # type: ignore[arg-type]
    found = await dead_letters_of(admin, 7, scan_limit=1000)
    # The third dead letter, element 7's too, is beyond what the broker showed: the look says it saw part only.
    assert [m.element_id for m in found.messages] == [7] and found.looked_at == 2 and not found.more
    assert found.paged_in == PagedIn(2, 3) and found.partial
    # A scan limit that stopped the look is the usual "raise --scan-limit", not a paged-in one.
    limited = await dead_letters_of(admin, 7, scan_limit=1)
    assert limited.more and limited.paged_in is None
    broker.browse_page = None  # once the broker shows them all, the look is whole
    whole = await dead_letters_of(admin, 7, scan_limit=1000)
    assert len(whole.messages) == 2 and whole.paged_in is None and not whole.partial

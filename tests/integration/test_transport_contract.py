"""One contract suite for every queue backend, each against the real thing: SQS (moto server, or LocalStack) and
ActiveMQ (``BRIDGE_TEST_ACTIVEMQ``). What ``bridge.queue.transport.Transport`` (the worker's side) and
``QueueAdmin`` (the operator commands' side) promise, checked on both."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from bridge.config import DEFAULT_MAX_BODY_BYTES, QueueSettings
from bridge.errors import ConfigError
from bridge.queue import RedriveRequest, check_redrive, open_queue_admin, open_transport
from bridge.queue.dead_letter import DeadLetterContext
from bridge.queue.send_batcher import entry_size
from bridge.queue.sqs import string_attributes
from bridge.queue.sqs_admin import SqsQueueAdmin
from bridge.queue.transport import MAX_BATCH, MessageTooLarge, NoProgress, OutgoingMessage, QueueMessage, Transport
from tests.support import REGION, SqsEndpoint, make_queues, sqs_client, stomp_settings

pytestmark = [pytest.mark.integration]


@dataclass
class Queue:
    """One backend's queue and dead-letter queue, and how to open a transport on either."""

    kind: str
    settings: QueueSettings
    dlq: QueueSettings

    @contextlib.asynccontextmanager
    async def open(self, *, dlq: bool = False) -> AsyncIterator[Transport]:
        async with open_transport(self.dlq if dlq else self.settings) as transport:
            await transport.describe()
            yield transport


@pytest.fixture(params=["sqs", "activemq"])
def queue(request: pytest.FixtureRequest) -> Queue:
    name = f"c-{uuid.uuid4().hex[:12]}"
    if request.param == "sqs":
        endpoint: SqsEndpoint = request.getfixturevalue("sqs_endpoint")
        url, dlq = make_queues(endpoint.url, name, max_receive_count=5)
        common: dict[str, Any] = {
            "endpoint_url": endpoint.url,
            "region": REGION,
            "wait_time_seconds": 1,
            "visibility_timeout": 5,
        }
        return Queue(
            "sqs",
            QueueSettings(url=url, dlq_url=dlq, **common),
            QueueSettings(url=dlq, dlq_url=url, **common),
        )
    broker: str = request.getfixturevalue("activemq")
    url = f"{broker}/queue/{name}"
    return Queue("activemq", stomp_settings(url), stomp_settings(f"{url}-dlq", dlq_url=f"{url}-unused"))


async def receive_all(
    transport: Transport, count: int, *, timeout: float = 30, complete: bool = False
) -> list[QueueMessage]:
    """Receive until ``count`` messages arrived (a bound for a broken transport, not a speed test); ``complete``
    each at once, so that none comes back while the rest are awaited."""
    found: list[QueueMessage] = []
    deadline = time.monotonic() + timeout
    while len(found) < count:
        assert time.monotonic() < deadline, f"received {len(found)} of {count} messages"
        messages = await transport.receive(count - len(found), wait_time=1)
        if complete and messages:
            assert await transport.complete(messages) == []
        found.extend(messages)
    return found


async def nothing_left(open_queue: Callable[[], contextlib.AbstractAsyncContextManager[Transport]]) -> bool:
    async with open_queue() as transport:
        return await transport.receive(10, wait_time=1) == []


async def test_a_sent_message_arrives_with_its_attributes_and_is_gone_once_completed(queue: Queue) -> None:
    async with queue.open() as transport:
        await transport.send('{"id": 7, "event": "updated"}', {"event": "updated", "source": "contract"})
        (message,) = await receive_all(transport, 1)
        assert message.body == '{"id": 7, "event": "updated"}'
        assert message.attributes["event"] == "updated" and message.attributes["source"] == "contract"
        assert message.receive_count == 1 and message.message_id
        assert message.sent_at is not None and message.age is not None
        assert await transport.complete([message]) == []
    assert await nothing_left(queue.open)


async def test_a_message_larger_than_the_queue_takes_is_refused_before_sending_or_arrives_whole(
    queue: Queue,
) -> None:
    # As large as the ingress takes by default: SQS refuses it (1 MiB at most), ActiveMQ carries it.
    body = json.dumps({"id": 9, "note": "x" * (DEFAULT_MAX_BODY_BYTES - 100)})
    async with queue.open() as transport:
        if queue.kind == "sqs":
            with pytest.raises(MessageTooLarge) as refused:
                await transport.send(body, {"event": "updated"})
            assert refused.value.limit == 1_048_576 and refused.value.size > refused.value.limit
            # The queue's own limit, not a constant: a queue kept at the old default refuses less.
            sqs_client(str(queue.settings.endpoint_url)).set_queue_attributes(
                QueueUrl=transport.url, Attributes={"MaximumMessageSize": "262144"}
            )
            async with queue.open() as fresh:
                with pytest.raises(MessageTooLarge) as refused:
                    await fresh.send(body[:300_000], {"event": "updated"})
                assert refused.value.limit == 262_144
                await fresh.send(body[:200_000] + '"}', {"event": "updated"})
                (message,) = await receive_all(fresh, 1, complete=True)
                assert len(message.body) == 200_002
        else:
            await transport.send(body, {"event": "updated"})
            (message,) = await receive_all(transport, 1, complete=True)
            assert message.body == body
    assert await nothing_left(queue.open)


async def test_retry_later_brings_the_message_back_counted_even_after_a_restart(queue: Queue) -> None:
    async with queue.open() as transport:
        await transport.send('{"id": 8}', {"event": "created"})
        (first,) = await receive_all(transport, 1)
        assert await transport.retry_later([first], 1) == []
    # A new transport (a restarted worker) sees the second attempt as the second.
    async with queue.open() as transport:
        (again,) = await receive_all(transport, 1)
        assert again.body == '{"id": 8}' and again.attributes["event"] == "created"
        assert again.receive_count == 2
        await transport.complete([again])
    assert await nothing_left(queue.open)


async def test_a_retry_as_long_as_sqs_allows_is_accepted_and_hides_the_message(sqs_endpoint: SqsEndpoint) -> None:
    # SQS (and moto) refuse a visibility that ends more than 12 h after the receive: a retry of retry_max_seconds
    # = 43200 asked after any time in hand was refused, and the message came back when its lease ran out.
    url, dlq = make_queues(sqs_endpoint.url, f"c-{uuid.uuid4().hex[:12]}", max_receive_count=5)
    settings = QueueSettings(
        url=url, dlq_url=dlq, endpoint_url=sqs_endpoint.url, region=REGION, wait_time_seconds=1, visibility_timeout=5
    )
    async with open_transport(settings) as transport:
        await transport.send('{"id": 8}')
        (message,) = await receive_all(transport, 1)
        assert await transport.retry_later([message], 43_200) == []
    attributes = sqs_client(sqs_endpoint.url).get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"


async def test_a_dead_letter_carries_body_attributes_and_failure_context(queue: Queue) -> None:
    async with queue.open() as transport:
        await transport.send("not json", {"event": "updated"})
        (message,) = await receive_all(transport, 1)
        context = DeadLetterContext("decode", "body is not JSON", "PoisonMessage", element_id=42)
        await transport.send_dead_letter(message, context)
        assert await transport.complete([message]) == []
    async with queue.open(dlq=True) as dead_letters:
        (dead,) = await receive_all(dead_letters, 1)
        await dead_letters.complete([dead])
    assert dead.body == "not json"
    assert dead.attributes["event"] == "updated"
    failure = {name: value for name, value in dead.attributes.items() if name.startswith("failure.")}
    first_failed_at = datetime.fromisoformat(failure.pop("failure.first_failed_at"))
    assert failure == {
        "failure.stage": "decode",
        "failure.reason": "body is not JSON",
        "failure.error_class": "PoisonMessage",
        "failure.attempts": "1",
        "failure.element_id": "42",
        "failure.source_message_id": message.message_id,
    }
    assert first_failed_at.tzinfo is not None
    assert await nothing_left(queue.open)


async def test_a_redriven_copy_that_fails_again_keeps_its_first_failure(queue: Queue) -> None:
    first = {"first_failure.source_message_id": "m-0", "first_failure.at": "2026-12-01T10:00:00.000+00:00"}
    async with queue.open() as transport:
        await transport.send("not json", {"event": "updated", "redriven_from": "dead-1", **first})
        (message,) = await receive_all(transport, 1)
        await transport.send_dead_letter(message, DeadLetterContext("decode", "body is not JSON", "PoisonMessage"))
        assert await transport.complete([message]) == []
    async with queue.open(dlq=True) as dead_letters:
        (dead,) = await receive_all(dead_letters, 1)
        await dead_letters.complete([dead])
    assert dead.attributes["failure.source_message_id"] == "m-0"
    assert dead.attributes["failure.first_failed_at"] == "2026-12-01T10:00:00.000+00:00"
    assert dead.attributes["redriven_from"] == "dead-1" and dead.attributes["event"] == "updated"
    assert not set(first) & set(dead.attributes)  # carried into failure.*, not twice
    assert await nothing_left(queue.open)


async def test_released_and_unsettled_messages_come_back_after_the_transport_closes(queue: Queue) -> None:
    async with queue.open() as transport:
        for n in range(3):
            await transport.send(f'{{"id": {n}}}')
        received = await receive_all(transport, 3)
        # One handed back on purpose (shutdown), one completed, one left unsettled (a crash).
        assert await transport.release([received[0]]) == []
        await transport.complete([received[1]])
    async with queue.open() as transport:
        back = await receive_all(transport, 2, complete=True)
    assert sorted(m.body for m in back) == sorted([received[0].body, received[2].body])
    assert await nothing_left(queue.open)


@pytest.mark.localstack
async def test_a_message_released_after_a_cancelled_receive_comes_back_counted_once_more_at_most(
    queue: Queue,
) -> None:
    # A shutdown aborts its long polls, then releases what it holds. An aborted poll that took the released
    # message (SQS goes on polling on the server) would cost it a receive and hide it for the visibility timeout.
    # LocalStack's server does take it (moto's, here, does not): the LocalStack pass checks this. SQS counts the
    # next receive as one more; ActiveMQ's release copies the message back with the attempt it had.
    async with queue.open() as transport:
        await transport.send('{"id": 10}')
        (held,) = await receive_all(transport, 1)
        # Long enough that moto's poll looks again (once a second) after the release below.
        polling = asyncio.create_task(transport.receive(10, wait_time=3))
        await asyncio.sleep(0.3)
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        assert await transport.release([held]) == []
    async with queue.open() as transport:
        (back,) = await receive_all(transport, 1)
        costs = 1 if queue.kind == "sqs" else 0
        assert back.body == '{"id": 10}' and back.receive_count == held.receive_count + costs
        await transport.complete([back])
    assert await nothing_left(queue.open)


class SeenSignal(NoProgress):
    """A progress sink that says when the peek has seen its first message."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def advance(self, amount: int = 1) -> None:
        self.event.set()


@pytest.mark.localstack
async def test_a_peek_cancelled_mid_receive_costs_what_it_saw_one_receive_only(queue: Queue) -> None:
    # The operator's side of the test above: Ctrl-C during a peek cancels its receive, and the peek releases what
    # it saw. The aborted poll must not take those messages again on the server (LocalStack's does).
    if queue.kind != "sqs":
        pytest.skip("a peek on ActiveMQ browses the queue: it receives nothing")
    async with queue.open() as transport:
        await transport.send('{"id": 11}')
    seen = SeenSignal()
    async with open_queue_admin(queue.settings) as admin:
        peeking = asyncio.create_task(admin.peek(queue.settings.url, limit=10, progress=seen))
        # Not a fixed wait for the first receive: on a slow start it had not answered yet, and the test saw nothing.
        await asyncio.wait_for(seen.event.wait(), timeout=30)
        await asyncio.sleep(0.3)  # the first receive brought the message; the second one is polling
        peeking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await peeking
    async with queue.open() as transport:
        (back,) = await receive_all(transport, 1)
        assert back.body == '{"id": 11}' and back.receive_count == 2
        await transport.complete([back])
    assert await nothing_left(queue.open)


async def test_extend_keeps_a_message_reserved(queue: Queue) -> None:
    async with queue.open() as transport, queue.open() as other:
        await transport.send('{"id": 9}')
        (message,) = await receive_all(transport, 1)
        assert await transport.extend([message], 30) == []
        # Another consumer does not get it while it is reserved (longer than SQS's 5 s lease in this suite).
        for _ in range(7):
            assert await other.receive(10, wait_time=1) == []
        await transport.complete([message])


# ------------------------------------------------------------------------------------------ QueueAdmin


async def dead_letters(queue: Queue, element_ids: list[int]) -> list[str]:
    """Dead-letter one message per element the way the worker does; returns their main-queue message ids."""
    sources = []
    async with queue.open() as transport:
        for element_id in element_ids:
            source = f"source-{uuid.uuid4().hex[:8]}"
            message = QueueMessage(
                source, "unused", json.dumps({"id": element_id}), {"event": "updated"}, 2, None, None
            )
            context = DeadLetterContext("sync", "refused", "ChannelRejected", element_id)
            await transport.send_dead_letter(message, context)
            sources.append(source)
    return sources


def element_of(message: QueueMessage) -> int | None:
    return int(message.attributes["failure.element_id"]) if "failure.element_id" in message.attributes else None


async def test_peek_sees_the_dead_letters_without_consuming_them(queue: Queue) -> None:
    sources = await dead_letters(queue, [1, 2, 3])
    async with open_queue_admin(queue.settings) as admin:
        dlq = await admin.dead_letter_url()
        assert dlq == queue.dlq.url and admin.url == queue.settings.url
        seen, more = await admin.peek(dlq, limit=10)
        assert sorted(p.message.attributes["failure.source_message_id"] for p in seen) == sorted(sources)
        assert not more and len({p.message.message_id for p in seen}) == 3
        assert all(p.message.sent_at is not None for p in seen)
        # A limit below the depth says there is more; `until` stops at the first match.
        first_two, more = await admin.peek(dlq, limit=2)
        assert len(first_two) == 2 and more
        target = seen[1].message.message_id
        found, stopped = await admin.peek(dlq, limit=10, until=lambda p: p.message.message_id == target)
        assert found[-1].message.message_id == target and stopped
        # The depth is either counted or, where the broker gives none, said to be unknown.
        depth = await admin.depth(dlq)
        assert depth.visible == 3 if depth.visible is not None else bool(depth.note)
    async with queue.open(dlq=True) as dead:
        assert len(await receive_all(dead, 3, complete=True)) == 3  # all still there
    assert await nothing_left(lambda: queue.open(dlq=True))


async def test_send_answers_one_outcome_per_message_in_order(queue: Queue) -> None:
    messages = [OutgoingMessage(f'{{"id": {n}}}', {"event": "updated", "n": str(n)}, group_id=str(n)) for n in (1, 2)]
    async with open_queue_admin(queue.settings) as admin:
        outcomes = await admin.send(messages)
        assert [o.error for o in outcomes] == [None, None] and all(o.message_id for o in outcomes)
        with pytest.raises(ValueError, match="at most"):
            await admin.send([messages[0]] * (MAX_BATCH + 1))
    async with queue.open() as transport:
        arrived = await receive_all(transport, 2, complete=True)
    assert sorted((m.body, m.attributes["n"]) for m in arrived) == [('{"id": 1}', "1"), ('{"id": 2}', "2")]
    assert await nothing_left(queue.open)


async def test_redrive_moves_every_dead_letter_back_with_its_first_failure(queue: Queue) -> None:
    sources = await dead_letters(queue, [1, 2, 3])
    async with open_queue_admin(queue.settings) as admin:
        result = await admin.redrive(
            RedriveRequest(element_of, native=False), progress=NoProgress(), stop=asyncio.Event()
        )
    assert result.ok and result.method == "manual" and result.failed == [] and result.duplicated == []
    assert Counter(m.element_id for m in result.moved) == Counter([1, 2, 3])
    async with queue.open() as transport:
        copies = await receive_all(transport, 3, complete=True)
    assert sorted(c.attributes["first_failure.source_message_id"] for c in copies) == sorted(sources)
    assert {c.attributes["redriven_from"] for c in copies} == {m.dlq_message_id for m in result.moved}
    assert all(c.attributes["event"] == "updated" for c in copies)
    assert not any(name.startswith("failure.") for c in copies for name in c.attributes)
    assert await nothing_left(lambda: queue.open(dlq=True))


async def test_redrive_takes_only_the_wanted_and_leaves_the_rest(queue: Queue) -> None:
    await dead_letters(queue, [1, 2, 3, 2])
    async with open_queue_admin(queue.settings) as admin:
        # A limit or a filter: never the broker's own move, even where it would be used (native None).
        request = RedriveRequest(element_of, limit=1, wanted=lambda message: element_of(message) == 2)
        result = await admin.redrive(request, progress=NoProgress(), stop=asyncio.Event())
    assert [m.element_id for m in result.moved] == [2] and result.method == "manual" and result.ok
    async with queue.open() as transport:
        (copy,) = await receive_all(transport, 1, complete=True)
    assert json.loads(copy.body) == {"id": 2}
    async with queue.open(dlq=True) as dead:
        left = await receive_all(dead, 3, complete=True)
    assert Counter(element_of(m) for m in left) == Counter([1, 2, 3])
    assert await nothing_left(queue.open)


async def test_a_redrive_stopped_before_it_starts_moves_nothing(queue: Queue) -> None:
    await dead_letters(queue, [1])
    stop = asyncio.Event()
    stop.set()  # Ctrl-C came first
    async with open_queue_admin(queue.settings) as admin:
        result = await admin.redrive(RedriveRequest(element_of, native=False), progress=NoProgress(), stop=stop)
    assert result.interrupted and not result.ok and result.moved == []
    async with queue.open(dlq=True) as dead:
        assert len(await receive_all(dead, 1, complete=True)) == 1
    assert await nothing_left(queue.open)


def test_redrive_arguments_a_backend_cannot_honour_are_refused_before_connecting(queue: Queue) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        check_redrive(queue.settings, RedriveRequest(element_of, limit=0))
    # Either backend refuses a native move with a filter: SQS's takes none, ActiveMQ has none.
    with pytest.raises(ValueError, match="move task"):
        check_redrive(queue.settings, RedriveRequest(element_of, wanted=lambda _: True, native=True))
    check_redrive(queue.settings, RedriveRequest(element_of, limit=5, wanted=lambda _: True, native=False))


async def test_an_sqs_dead_letter_queue_that_does_not_exist_stops_the_start(sqs_endpoint: SqsEndpoint) -> None:
    # Found only at the first poison message otherwise: its copy failed on every receive.
    url, dlq = make_queues(sqs_endpoint.url, f"c-{uuid.uuid4().hex[:12]}", max_receive_count=5)
    common: dict[str, Any] = {"endpoint_url": sqs_endpoint.url, "region": REGION, "wait_time_seconds": 1}
    missing = dlq.rsplit("/", 1)[0] + "/no-such-dlq"
    async with open_transport(QueueSettings(url=url, dlq_url=missing, **common)) as transport:
        with pytest.raises(ConfigError) as raised:
            await transport.describe()
    assert raised.value.key == "queue.dlq_url" and "is not usable" in raised.value.problem
    async with open_transport(QueueSettings(url=url, dlq_url=dlq, **common)) as transport:
        assert (await transport.describe()).dlq_url == dlq


async def test_a_max_receive_count_beyond_the_redrive_policys_stops_the_start(sqs_endpoint: SqsEndpoint) -> None:
    # SQS moves a failing message to the DLQ itself after its redrive maxReceiveCount: a larger
    # queue.max_receive_count was never reached, and every dead letter lost the reason the worker writes.
    url, _ = make_queues(sqs_endpoint.url, f"c-{uuid.uuid4().hex[:12]}", max_receive_count=5)
    common: dict[str, Any] = {"endpoint_url": sqs_endpoint.url, "region": REGION, "wait_time_seconds": 1}
    async with open_transport(QueueSettings(url=url, max_receive_count=6, **common)) as transport:
        info = await transport.describe()  # the operator commands read the queue all the same
        with pytest.raises(ConfigError) as raised:
            info.check_attempts(6)  # the worker's start-up check
    assert (raised.value.key, raised.value.problem) == (
        "queue.max_receive_count",
        "6 is more than the queue's redrive policy maxReceiveCount (5): SQS would move a failing message to the "
        "dead-letter queue first, without its reason; set at most 5",
    )
    async with open_transport(QueueSettings(url=url, max_receive_count=5, **common)) as transport:
        (await transport.describe()).check_attempts(5)


class StallingProgress:
    """A scan that stalls halfway for longer than the peek's hold (thousands of dead letters, a slow endpoint):
    every message seen before the stall is visible again after it."""

    def __init__(self) -> None:
        self.seen = 0

    def start(self, description: str, total: int | None) -> None: ...

    def advance(self, amount: int = 1) -> None:
        self.seen += amount
        if self.seen == 40:
            time.sleep(2.5)

    def update(self, completed: int, total: int | None = None) -> None: ...


async def test_an_sqs_peek_longer_than_its_hold_still_sees_every_message(sqs_endpoint: SqsEndpoint) -> None:
    # Before, the first messages came back once their hold ran out; three receives of nothing new ended the scan
    # as if the queue were done (`dlq show` said "not found" for dead letters that were there).
    url, dlq = make_queues(sqs_endpoint.url, f"c-{uuid.uuid4().hex[:12]}", max_receive_count=5)
    settings = QueueSettings(url=url, dlq_url=dlq, endpoint_url=sqs_endpoint.url, region=REGION, wait_time_seconds=1)
    client = sqs_client(sqs_endpoint.url)
    for start in range(0, 80, 10):
        client.send_message_batch(
            QueueUrl=dlq,
            Entries=[{"Id": str(n), "MessageBody": f'{{"id": {n + 1}}}'} for n in range(start, start + 10)],
        )
    async with open_queue_admin(settings) as admin:
        assert isinstance(admin, SqsQueueAdmin)
        seen, more = await admin.peek(dlq, limit=200, progress=StallingProgress(), hold=1)
    assert len({p.message.message_id for p in seen}) == 80 and not more


async def test_no_aws_credentials_are_named_as_such(
    sqs_endpoint: SqsEndpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    # Before, "queue.endpoint_url: cannot reach SQS: Unable to locate credentials" sent the operator to the URL.
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    url = f"{sqs_endpoint.url}/123456789012/anything"
    settings = QueueSettings(url=url, endpoint_url=sqs_endpoint.url, region=REGION, wait_time_seconds=1)
    async with open_transport(settings) as transport:
        with pytest.raises(ConfigError) as raised:
            await transport.describe()
    assert raised.value.key == "AWS credentials" and "AWS_ACCESS_KEY_ID" in raised.value.problem


@pytest.mark.localstack
async def test_an_sqs_dead_letter_near_the_size_limit_keeps_its_body_and_failure_context(
    sqs_endpoint: SqsEndpoint,
) -> None:
    # Before, the failure attributes pushed the copy over the DLQ's MaximumMessageSize: SQS refused it on every
    # receive, and native redrive moved the message without any context.
    url, dlq = make_queues(sqs_endpoint.url, f"c-{uuid.uuid4().hex[:12]}", max_receive_count=5)
    client = sqs_client(sqs_endpoint.url)
    for queue_url in (url, dlq):
        client.set_queue_attributes(QueueUrl=queue_url, Attributes={"MaximumMessageSize": "262144"})
    common: dict[str, Any] = {"endpoint_url": sqs_endpoint.url, "region": REGION, "wait_time_seconds": 1}
    body = json.dumps({"id": 5, "note": "x" * (262_144 - 3_000)})
    carried = {"event": "updated", "source": "s" * 1_000, "trace": "t" * 1_000}
    async with open_transport(QueueSettings(url=url, dlq_url=dlq, **common)) as transport:
        await transport.describe()
        await transport.send(body, carried)
        (message,) = await receive_all(transport, 1)
        context = DeadLetterContext("channels", "r" * 5_000, "PermanentError", element_id=5)
        await transport.send_dead_letter(message, context)
        assert await transport.complete([message]) == []
    async with open_transport(QueueSettings(url=dlq, dlq_url=url, **common)) as dead_letters:
        (dead,) = await receive_all(dead_letters, 1, complete=True)
    assert dead.body == body
    # What SQS counts against MaximumMessageSize (moto counts only the body; SQS and LocalStack refuse more).
    assert entry_size({"MessageBody": dead.body, "MessageAttributes": string_attributes(dead.attributes)}) <= 262_144
    assert dead.attributes["failure.stage"] == "channels" and dead.attributes["failure.element_id"] == "5"
    assert dead.attributes["failure.error_class"] == "PermanentError"
    assert dead.attributes["failure.source_message_id"] == message.message_id
    assert dead.attributes["failure.reason"].startswith("rrr")  # cut to fit, never dropped while it could fit
    assert dead.attributes.get("event") == "updated"  # the short ones of its own kept, the long dropped first


async def test_a_dead_letter_queue_smaller_than_a_queue_without_redrive_is_refused_at_start(
    sqs_endpoint: SqsEndpoint,
) -> None:
    # A message larger than the DLQ takes cannot be copied there, and without a redrive policy of its own the
    # queue would hand it back for ever: refused at start, naming what to change.
    client = sqs_client(sqs_endpoint.url)
    name = f"c-{uuid.uuid4().hex[:12]}"
    url = client.create_queue(QueueName=name)["QueueUrl"]
    dlq = client.create_queue(QueueName=f"{name}-dlq", Attributes={"MaximumMessageSize": "1024"})["QueueUrl"]
    common: dict[str, Any] = {"endpoint_url": sqs_endpoint.url, "region": REGION, "wait_time_seconds": 1}
    async with open_transport(QueueSettings(url=url, dlq_url=dlq, **common)) as transport:
        with pytest.raises(ConfigError, match=r"at most 1024 bytes.*no redrive policy.*MaximumMessageSize") as raised:
            await transport.describe()
    assert raised.value.key == "queue.dlq_url"


async def test_an_sqs_dead_letter_queue_smaller_than_the_message_refuses_the_copy_before_sending(
    sqs_endpoint: SqsEndpoint,
) -> None:
    # The message stays on the main queue (its delete depends on the copy), and the error says why.
    url, dlq = make_queues(sqs_endpoint.url, f"c-{uuid.uuid4().hex[:12]}", max_receive_count=5)
    sqs_client(sqs_endpoint.url).set_queue_attributes(QueueUrl=dlq, Attributes={"MaximumMessageSize": "1024"})
    common: dict[str, Any] = {"endpoint_url": sqs_endpoint.url, "region": REGION, "wait_time_seconds": 1}
    async with open_transport(QueueSettings(url=url, dlq_url=dlq, **common)) as transport:
        with capture_logs() as logs:
            await transport.describe()
        (warning,) = [line for line in logs if line["event"] == "dlq_smaller_than_queue"]
        assert warning["dlq_maximum_message_size"] == 1024 and warning["queue_maximum_message_size"] > 1024
        await transport.send(json.dumps({"id": 6, "note": "x" * 2_000}))
        (message,) = await receive_all(transport, 1)
        with pytest.raises(MessageTooLarge) as refused:
            await transport.send_dead_letter(message, DeadLetterContext("decode", "too long", "PoisonMessage"))
        assert refused.value.limit == 1024
        assert await transport.release([message]) == []

"""``kordiam-bridge run`` on Kordiam's message queue: a real ActiveMQ broker (STOMP), the simulator publishing to
it, and the worker as a real process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import stompman

from bridge.admin.replay import replay
from bridge.errors import ChannelRejected
from bridge.queue import open_transport
from bridge.queue.dead_letter import DeadLetterContext
from bridge.queue.stomp import StompTransport
from bridge.queue.transport import MessageTooLarge, QueueMessage
from bridge.simulator import RunningSimulator
from tests.support import (
    ChannelLog,
    SimulatorAdmin,
    WorkerProcess,
    deliveries,
    eventually,
    running_worker,
    stomp_browse_raw,
    stomp_drain,
    stomp_send,
    stomp_send_raw,
    stomp_settings,
    story,
    worker_settings,
)

pytestmark = [pytest.mark.integration]


async def test_run_on_activemq_creates_updates_and_deletes_in_two_channels(
    stomp_config: tuple[Path, int], stomp_admin: SimulatorAdmin, stomp_queues: tuple[str, str], tmp_path: Path
) -> None:
    path, ops_port = stomp_config
    worker = WorkerProcess(path, tmp_path / "worker.log")
    try:
        await eventually(lambda: worker.ready(ops_port), what="/readyz")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops_port}") as ops:
            assert (await ops.get("/healthz")).json() == {"status": "ok"}

        created = await stomp_admin.create(story("Election night"))
        element_id = created["id"]
        web_pub, print_pub = (p["id"] for p in created["publications"])
        web_json = tmp_path / "web" / f"{element_id}-{web_pub}.json"
        await eventually(web_json.exists, what="created in the web channel")
        await eventually((tmp_path / "print" / f"{element_id}-{print_pub}.json").exists, what="print")

        # Feedback is written after the channel writes: wait for it rather than race it.
        async def linked() -> bool:
            element = await stomp_admin.get(element_id)
            return all(p.get("externalId") for p in element["publications"])

        await eventually(linked, what="every publication linked in Kordiam")
        element = await stomp_admin.get(element_id)

        await stomp_admin.replace(element_id, {**element, "title": "Election night: results"})
        await eventually(
            lambda: json.loads(web_json.read_text())["element"]["title"] == "Election night: results", what="update"
        )
        await stomp_admin.delete(element_id)
        await eventually(lambda: not web_json.exists(), what="delete")
        await eventually(lambda: deliveries(tmp_path) == [], what="deliveries retracted")
    finally:
        code, _ = worker.terminate()
    assert code == 0
    done = [e for e in worker.events() if e.get("event") == "done"]
    assert done and all(e.get("element_id") == element_id for e in done)
    assert await stomp_drain(stomp_queues[1]) == []


async def test_poison_messages_are_dead_lettered_with_their_reason(
    stomp_config: tuple[Path, int], stomp_queues: tuple[str, str], tmp_path: Path
) -> None:
    path, ops_port = stomp_config
    await stomp_send(stomp_queues[0], "not json", {"event": "updated"})
    await stomp_send(stomp_queues[0], '{"hello": 1}')
    worker = WorkerProcess(path, tmp_path / "worker.log")
    try:
        await eventually(lambda: worker.ready(ops_port), what="/readyz")
        await eventually(
            lambda: sum(e.get("event") == "dead_lettered" for e in worker.events()) == 2, what="two dead letters"
        )
    finally:
        code, _ = worker.terminate()
    assert code == 0
    dead = sorted(await stomp_drain(stomp_queues[1]), key=lambda m: m.body)
    assert [m.body for m in dead] == ["not json", '{"hello": 1}']
    assert all(m.attributes["failure.stage"] == "decode" for m in dead)
    assert "body is not JSON" in dead[0].attributes["failure.reason"]
    assert "no element id" in dead[1].attributes["failure.reason"]
    assert dead[0].attributes["event"] == "updated"  # the original headers travel with the dead letter
    assert await stomp_drain(stomp_queues[0]) == []


async def test_a_body_that_is_not_utf8_is_dead_lettered_byte_for_byte_saying_so(
    stomp_queues: tuple[str, str], stomp_simulator: RunningSimulator, tmp_path: Path
) -> None:
    # ActiveMQ carries bytes. The dead letter is the message as it came, not its reading with U+FFFD; the Latin-1
    # one would otherwise have passed for element 7. An empty body stays empty (no stand-in text).
    bodies = [b"\xff\xfe not text \x00\x80", b'{"id": 7, "title": "caf\xe9"}', b""]
    for body in bodies:
        await stomp_send_raw(stomp_queues[0], body, {"event": "updated"})
    settings = worker_settings(
        queue=stomp_queues[0], endpoint=stomp_queues[1], kordiam=stomp_simulator.base_url, workdir=tmp_path
    )
    async with running_worker(settings):
        await eventually(lambda: _count(stomp_queues[1], 3), what="the three dead letters")
    dead = await stomp_browse_raw(stomp_queues[1])
    assert sorted(body for _, body in dead) == sorted(bodies)
    reasons = sorted(headers["failure.reason"] for headers, _ in dead)
    assert reasons == [
        "body is not JSON: Expecting value: line 1 column 1 (char 0)",
        "body is not UTF-8: byte 0xe9 at offset 23 (invalid continuation byte)",
        "body is not UTF-8: byte 0xff at offset 0 (invalid start byte)",
    ]
    assert all(headers["failure.stage"] == "decode" and headers["event"] == "updated" for headers, _ in dead)
    assert await stomp_drain(stomp_queues[0]) == []


async def _count(url: str, wanted: int) -> bool:
    return len(await stomp_browse_raw(url)) >= wanted


async def test_a_poison_message_with_a_huge_failure_reason_is_dead_lettered_once(
    stomp_queues: tuple[str, str], stomp_simulator: RunningSimulator, tmp_path: Path
) -> None:
    # Decoding names the body's keys in its reason. ActiveMQ refuses a header line over 10 KiB and drops the
    # connection: an unbounded failure.reason made every dead-letter attempt fail, and each retry added a copy.
    body = '{"' + "k" * 30_000 + '": 1}'
    await stomp_send(stomp_queues[0], body)
    settings = worker_settings(
        queue=stomp_queues[0], endpoint=stomp_queues[1], kordiam=stomp_simulator.base_url, workdir=tmp_path
    )
    dead: list[QueueMessage] = []
    async with running_worker(settings):

        async def dead_lettered() -> bool:
            dead.extend(await stomp_drain(stomp_queues[1]))
            return bool(dead)

        await eventually(dead_lettered, timeout=30, what="the dead letter")
        await asyncio.sleep(2)  # time for copies to show, were the original not acknowledged
    dead.extend(await stomp_drain(stomp_queues[1]))
    assert [m.body for m in dead] == [body]
    reason = dead[0].attributes["failure.reason"]
    assert reason.startswith("no element id") and "kkkk" in reason and len(reason) <= 1024
    assert dead[0].attributes["failure.stage"] == "decode"
    assert await stomp_drain(stomp_queues[0]) == []


async def test_the_dead_letter_headers_stay_within_what_the_broker_takes(stomp_queues: tuple[str, str]) -> None:
    # Whatever the reason and the message's own headers, the DLQ SEND is one the broker accepts (10 KiB a line).
    await stomp_send(stomp_queues[0], '{"id": 5}', {"event": "updated", "note": "n" * 9_000})
    async with open_transport(stomp_settings(stomp_queues[0], dlq_url=stomp_queues[1])) as transport:
        (message,) = await transport.receive(1, wait_time=5)
        context = DeadLetterContext("decode", "r" * 50_000, "PoisonMessage" * 2_000, element_id=5)
        await transport.send_dead_letter(message, context)
        assert await transport.complete([message]) == []
        assert transport.connected()
    (dead,) = await stomp_drain(stomp_queues[1])
    assert dead.body == '{"id": 5}' and dead.attributes["event"] == "updated"
    assert dead.attributes["failure.reason"].startswith("rrrr") and len(dead.attributes["failure.reason"]) <= 1024
    assert len(dead.attributes["failure.error_class"]) <= 1024
    assert await stomp_drain(stomp_queues[0]) == []


async def test_a_send_the_broker_would_refuse_is_refused_before_sending_and_the_connection_stays(
    stomp_queues: tuple[str, str],
) -> None:
    # ActiveMQ answers a header line over its limit, or too many headers, with an ERROR and drops the connection:
    # the ingress's and the replay's other sends on it would fail with the bad one (5.17 takes a "name:value" line
    # of 10241 bytes and 1001 headers a frame, and refuses 10242 and 1002: measured). The transport's bounds, 10240
    # and 1000, let through lines and frames that arrive whole, escapes and UTF-8 counted.
    largest = ":" + "é" * 5_116 + "x"  # "note:" + 10235 bytes in UTF-8, ':' escaped to two: a line of 10240
    many = {f"h{n}": "v" for n in range(995)}  # with bridge-send-id, persistent, and stompman's three: 1000
    async with open_transport(stomp_settings(stomp_queues[0], dlq_url=stomp_queues[1]), consume=False) as transport:
        with pytest.raises(MessageTooLarge, match="header line 'note': 10242 bytes"):
            await transport.send('{"id": 1}', {"event": "updated", "note": largest + "yz"})
        with pytest.raises(MessageTooLarge, match="1004 headers"):
            await transport.send('{"id": 2}', many | {f"more{n}": "v" for n in range(4)})
        await transport.send('{"id": 3}', {"note": largest})
        await transport.send('{"id": 4}', many)
        assert transport.connected()
    received = await stomp_browse_raw(stomp_queues[0])
    assert [body for _, body in received] == [b'{"id": 3}', b'{"id": 4}']
    assert received[0][0]["note"] == largest and all(received[1][0][f"h{n}"] == "v" for n in range(995))


async def test_a_subscription_the_client_dropped_is_made_again_and_health_shows_the_gap(
    stomp_queues: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """stompman re-subscribes after a reconnect; when the connection drops again before the broker confirmed that
    SUBSCRIBE, it fails the confirmation (connection_lost), forgets the subscription and never subscribes again."""
    swallow = {"receipts": False}
    handle_receipt = stompman.Client._handle_receipt_frame

    def lose_subscription_receipts(client: stompman.Client, frame: Any, *, epoch: int) -> None:
        pending = [s._pending_confirmation for s in client._active_subscriptions.get_all()]
        if swallow["receipts"] and frame.headers.get("receipt-id") in {p.receipt_id for p in pending if p}:
            return
        handle_receipt(client, frame, epoch=epoch)

    monkeypatch.setattr(stompman.Client, "_handle_receipt_frame", lose_subscription_receipts)
    # Hold the transport's own repair until the gap has been seen, so that the test sees it.
    repair = asyncio.Event()
    resubscribe = getattr(StompTransport, "_resubscribe", None)

    async def held_resubscribe(self: StompTransport) -> None:
        await repair.wait()
        assert resubscribe is not None
        await resubscribe(self)

    monkeypatch.setattr(StompTransport, "_resubscribe", held_resubscribe, raising=False)

    async with open_transport(stomp_settings(stomp_queues[0], dlq_url=stomp_queues[1])) as transport:
        assert isinstance(transport, StompTransport)
        client = transport._client
        manager = client._connection_manager
        (subscription,) = client._active_subscriptions.get_all()

        async def drop_connection() -> None:
            state = manager._active_connection_state
            assert state is not None
            await manager._discard_failed_connection_state(state, stompman.ConnectionLostError(reason="test"))

        swallow["receipts"] = True
        await drop_connection()  # stompman reconnects and re-subscribes; its receipt never comes ...
        await eventually(lambda: subscription._pending_confirmation is not None, what="the re-SUBSCRIBE")
        await drop_connection()  # ... and the connection is lost again while it waits for it
        swallow["receipts"] = False
        assert client._active_subscriptions.get_all() == []  # what stompman does: the subscription is forgotten
        await eventually(client.is_alive, what="the reconnection")
        assert not transport.connected()  # connected, but receiving nothing: the health checks must say so

        repair.set()
        await transport.send('{"id": 9}')
        messages = await transport.receive(1, wait_time=15)
        assert [m.body for m in messages] == ['{"id": 9}']
        assert transport.connected()
        assert await transport.complete(messages) == []
    assert await stomp_drain(stomp_queues[0]) == []


async def test_kordiam_503_and_429_are_retried_through_the_broker_and_delivered(
    stomp_config: tuple[Path, int], stomp_admin: SimulatorAdmin, stomp_queues: tuple[str, str], tmp_path: Path
) -> None:
    path, ops_port = stomp_config
    stories = [await stomp_admin.create(story(f"Story {n}")) for n in range(4)]
    # More failures than the in-process retries absorb: some messages go back to the broker with a delay.
    await stomp_admin.fault(method="GET", path=r"^/api/v2/elements/\d+$", status=503, count=12)
    await stomp_admin.fault(method="GET", path=r"^/api/v2/elements/\d+$", status=429, count=4, retry_after=1)
    worker = WorkerProcess(path, tmp_path / "worker.log")
    expected = sorted(
        (s["id"], ch, p["id"]) for s in stories for ch, p in zip(("web", "print"), s["publications"], strict=True)
    )
    try:
        await eventually(lambda: worker.ready(ops_port), what="/readyz")
        await eventually(lambda: deliveries(tmp_path) == expected, timeout=90, what="every story delivered")
    finally:
        code, _ = worker.terminate()
    assert code == 0
    retried = [e for e in worker.events() if e.get("event") == "retry_later"]
    assert retried, "the faults should have sent at least one message back to the broker"
    assert await stomp_drain(stomp_queues[1]) == []


async def test_a_channel_rejecting_permanently_is_dead_lettered_naming_the_channel(
    stomp_queues: tuple[str, str],
    stomp_simulator: RunningSimulator,
    stomp_admin: SimulatorAdmin,
    channel_log: ChannelLog,
    tmp_path: Path,
) -> None:
    channel_log.fail_next["print"] = [ChannelRejected("print: 401 rest_forbidden: wrong credentials")] * 1000
    settings = worker_settings(
        queue=stomp_queues[0], endpoint=stomp_queues[1], kordiam=stomp_simulator.base_url, workdir=tmp_path
    )
    async with running_worker(settings) as worker:
        stories = [await stomp_admin.create(story(f"Rejected {n}")) for n in range(4)]
        await eventually(lambda: len(channel_log.creates) == 4, what="web deliveries")
        assert not worker.done()
    dead = await stomp_drain(stomp_queues[1])
    assert {json.loads(m.body)["id"] for m in dead} == {s["id"] for s in stories}
    for message in dead:
        assert message.attributes["failure.stage"] == "print"
        assert message.attributes["failure.error_class"] == "ChannelRejected"
        assert "wrong credentials" in message.attributes["failure.reason"]
    assert {k[0] for k in channel_log.creates} == {"web"} and channel_log.duplicates() == 0


async def test_the_attempt_count_travels_with_the_message_until_the_dead_letter(
    stomp_queues: tuple[str, str],
    stomp_simulator: RunningSimulator,
    stomp_admin: SimulatorAdmin,
    channel_log: ChannelLog,
    tmp_path: Path,
) -> None:
    # The print channel stays down: each attempt is re-sent with a delay and one more on its attempt header, and
    # the third attempt (max_receive_count) is dead-lettered with the last failure as its reason.
    channel_log.down_until["print"] = float("inf")
    settings = worker_settings(
        queue=stomp_queues[0],
        endpoint=stomp_queues[1],
        kordiam=stomp_simulator.base_url,
        workdir=tmp_path,
        max_receive_count=3,
    )
    # A channel failing each message, never long enough to open its breaker (which would park the element instead).
    settings = settings.model_copy(
        update={"channels": [c.model_copy(update={"breaker_threshold": 1000}) for c in settings.channels]}
    )
    async with running_worker(settings):
        created = await stomp_admin.create(story("Down in print"))
        dead: list[QueueMessage] = []

        async def dead_lettered() -> bool:
            dead.extend(await stomp_drain(stomp_queues[1]))
            return any(m.attributes.get("event") == "created" for m in dead)

        await eventually(dead_lettered, timeout=60, what="the dead letter of the created notification")
    # The simulator also notifies the bridge's own write-back (updated): every notification ends the same way.
    assert {json.loads(m.body)["id"] for m in dead} == {created["id"]}
    for message in dead:
        assert message.attributes["failure.attempts"] == "3"
        assert message.attributes["failure.reason"].startswith("gave up after 3 attempts")
        assert message.attributes["failure.stage"] == "print"
    assert {k[0] for k in channel_log.creates} == {"web"} and channel_log.duplicates() == 0


async def test_replay_sends_fresh_notifications_to_the_broker(stomp_queues: tuple[str, str]) -> None:
    settings = stomp_settings(stomp_queues[0], dlq_url=stomp_queues[1])
    result = await replay(settings, [101, 102, 101])
    assert [e.element_id for e in result.elements] == [101, 102] and result.failed == 0
    messages = sorted(await stomp_drain(stomp_queues[0]), key=lambda m: m.body)
    assert [json.loads(m.body)["id"] for m in messages] == [101, 102]
    for message, element in zip(messages, result.elements, strict=True):
        assert message.attributes["event"] == "updated" and message.attributes["source"] == "replay"
        assert message.attributes["bridge-send-id"] == element.message_id  # what replay printed finds the message

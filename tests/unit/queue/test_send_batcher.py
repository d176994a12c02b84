"""Concurrent sends share SendMessageBatch calls; each sender learns its own message's fate (an in-process SQS)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bridge.queue.send_batcher import MAX_BATCH_BYTES, SendBatcher, SendRejected


class FakeSqs:
    """``send_message_batch`` for one queue: records each call's entries; refuses bodies in ``refuse``; holds its
    answers until ``release`` is set."""

    def __init__(self, refuse: frozenset[str] = frozenset(), fail: Exception | None = None) -> None:
        self.calls: list[list[dict[str, Any]]] = []
        self.refuse = refuse
        self.fail = fail
        self.release = asyncio.Event()
        self.release.set()

    async def send_message_batch(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append(entries)
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        answer: dict[str, Any] = {"Successful": [], "Failed": []}
        for entry in entries:
            if entry["MessageBody"] in self.refuse:
                answer["Failed"].append({"Id": entry["Id"], "Code": "InvalidMessageContents", "SenderFault": True})
            else:
                answer["Successful"].append({"Id": entry["Id"], "MessageId": f"m-{entry['MessageBody']}"})
        return answer


def entry(body: str) -> dict[str, Any]:
    return {"MessageBody": body, "MessageAttributes": {"event": {"DataType": "String", "StringValue": "created"}}}


async def test_concurrent_sends_share_batches_of_ten_and_each_gets_its_own_message_id() -> None:
    sqs = FakeSqs()
    batcher = SendBatcher(sqs.send_message_batch)
    ids = await asyncio.gather(*(batcher.send(entry(str(n))) for n in range(25)))
    assert ids == [f"m-{n}" for n in range(25)]
    assert [len(call) for call in sqs.calls] == [10, 10, 5]
    assert all(len({e["Id"] for e in call}) == len(call) for call in sqs.calls)


async def test_a_lone_send_goes_out_at_once() -> None:
    sqs = FakeSqs()
    batcher = SendBatcher(sqs.send_message_batch)
    assert await batcher.send(entry("alone")) == "m-alone"
    assert [len(call) for call in sqs.calls] == [1]


async def one_batch_on_its_way(sqs: FakeSqs) -> tuple[SendBatcher, asyncio.Future[str]]:
    """A batcher that lets one batch travel at a time, with the batch of the send ``first`` held by ``sqs``."""
    sqs.release.clear()
    batcher = SendBatcher(sqs.send_message_batch, max_in_flight=1)
    first = asyncio.ensure_future(batcher.send(entry("first")))
    while not sqs.calls:
        await asyncio.sleep(0)
    return batcher, first


async def test_sends_wait_while_max_in_flight_batches_travel_then_fill_the_next_batch() -> None:
    sqs = FakeSqs()
    batcher, first = await one_batch_on_its_way(sqs)
    later = [asyncio.ensure_future(batcher.send(entry(f"later-{n}"))) for n in range(4)]
    await asyncio.sleep(0)
    assert len(sqs.calls) == 1  # the later ones wait for the first batch
    sqs.release.set()
    await asyncio.gather(first, *later)
    assert [len(call) for call in sqs.calls] == [1, 4]


async def test_an_entry_sqs_refuses_fails_alone() -> None:
    sqs = FakeSqs(refuse=frozenset({"bad"}))
    batcher = SendBatcher(sqs.send_message_batch)
    answers = await asyncio.gather(*(batcher.send(entry(b)) for b in ("a", "bad", "c")), return_exceptions=True)
    assert answers[0] == "m-a" and answers[2] == "m-c"
    assert isinstance(answers[1], SendRejected) and answers[1].code == "InvalidMessageContents"


async def test_a_failed_call_fails_every_sender_in_its_batch() -> None:
    sqs = FakeSqs(fail=ConnectionError("queue unreachable"))
    batcher = SendBatcher(sqs.send_message_batch)
    answers = await asyncio.gather(*(batcher.send(entry(str(n))) for n in range(3)), return_exceptions=True)
    assert all(isinstance(answer, ConnectionError) for answer in answers)


async def test_batches_stay_under_the_size_limit() -> None:
    sqs = FakeSqs()
    batcher = SendBatcher(sqs.send_message_batch)
    big = MAX_BATCH_BYTES // 3
    await asyncio.gather(*(batcher.send(entry(str(n) * big)) for n in range(1, 6)))
    assert [len(call) for call in sqs.calls] == [2, 2, 1]


async def test_a_sender_that_stopped_waiting_is_not_sent() -> None:
    sqs = FakeSqs()
    batcher, first = await one_batch_on_its_way(sqs)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await batcher.send(entry("gave-up"))
    sqs.release.set()
    await first
    await batcher.aclose()
    assert [[e["MessageBody"] for e in call] for call in sqs.calls] == [["first"]]


async def test_a_batch_whose_senders_all_stopped_waiting_is_cancelled() -> None:
    sqs = FakeSqs()
    sqs.release.clear()
    cancelled: list[str] = []

    async def send_message_batch(entries: list[dict[str, Any]]) -> dict[str, Any]:
        try:
            return await sqs.send_message_batch(entries)
        except asyncio.CancelledError:
            cancelled.extend(e["MessageBody"] for e in entries)
            raise

    batcher = SendBatcher(send_message_batch)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await asyncio.gather(batcher.send(entry("a")), batcher.send(entry("b")))
    await batcher.aclose()
    assert cancelled == ["a", "b"]  # a lone SendMessage would have been cancelled the same way

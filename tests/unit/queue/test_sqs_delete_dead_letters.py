"""``SqsQueueAdmin.delete_dead_letters`` against an in-process SQS that holds, deletes and releases as SQS does (the
real one is in the integration tests): a run cut short still tells of every dead letter SQS confirmed deleted, and
releases the rest."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

from bridge.queue.sqs import AbandonedPolls
from bridge.queue.sqs_admin import SqsQueueAdmin
from bridge.queue.transport import PeekedMessage, QueueInfo

DLQ = "https://sqs.example/1/kordiam-dlq"


@dataclass
class Held:
    message_id: str
    receipt: str | None = None  # None: visible


class Sqs:
    """The dead-letter queue's receive, visibility and delete calls; ``cancel_deletes_from``: the delete batch of that
    number (1-based) is cut short by Ctrl-C, before SQS answers."""

    def __init__(self, count: int, *, cancel_deletes_from: int | None = None) -> None:
        self.messages = [Held(f"m-{n}") for n in range(count)]
        self._receipts = itertools.count()
        self._delete_calls = 0
        self.cancel_deletes_from = cancel_deletes_from

    async def receive_message(self, *, QueueUrl: str, MaxNumberOfMessages: int, **_: Any) -> dict[str, Any]:
        batch = [m for m in self.messages if m.receipt is None][:MaxNumberOfMessages]
        for message in batch:
            message.receipt = f"r-{next(self._receipts)}"
        return {"Messages": [{"MessageId": m.message_id, "ReceiptHandle": m.receipt, "Body": "{}"} for m in batch]}

    async def change_message_visibility_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        handles = {entry["ReceiptHandle"] for entry in Entries}
        for message in self.messages:
            if message.receipt in handles:
                message.receipt = None
        return {"Failed": []}

    async def delete_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self._delete_calls += 1
        if self.cancel_deletes_from is not None and self._delete_calls >= self.cancel_deletes_from:
            raise asyncio.CancelledError
        handles = {entry["ReceiptHandle"] for entry in Entries}
        self.messages = [m for m in self.messages if m.receipt not in handles]
        return {"Failed": []}

    def visible(self) -> list[str]:
        return [m.message_id for m in self.messages if m.receipt is None]


def admin(sqs: Sqs) -> SqsQueueAdmin:
    async def describe() -> QueueInfo:
        return QueueInfo(DLQ, 3, has_redrive=True)

    transport = SimpleNamespace(client=sqs, abandoned_polls=AbandonedPolls(), describe=describe)
    return SqsQueueAdmin(transport)  # type: ignore[arg-type]


async def test_a_delete_cut_short_tells_of_each_batch_sqs_deleted_and_releases_the_rest() -> None:
    sqs = Sqs(12, cancel_deletes_from=2)  # eleven chosen: two delete batches, the second cut short
    told: list[str] = []
    with pytest.raises(asyncio.CancelledError):
        await admin(sqs).delete_dead_letters(
            limit=20,
            chosen=lambda p: p.message.message_id != "m-11",
            on_deleted=lambda p: told.append(p.message.message_id),
        )
    assert told == [f"m-{n}" for n in range(10)]
    assert sqs.visible() == ["m-10", "m-11"]  # the one whose delete was cut short, and the one not chosen


async def test_a_delete_deletes_only_the_chosen_and_releases_the_rest() -> None:
    sqs = Sqs(3)
    told: list[str] = []
    deletion = await admin(sqs).delete_dead_letters(
        limit=20, chosen=lambda p: p.message.message_id == "m-1", on_deleted=lambda p: told.append(p.message.message_id)
    )
    assert (deletion.deleted, deletion.failed, told) == (["m-1"], {}, ["m-1"])
    assert sqs.visible() == ["m-0", "m-2"]


async def test_the_choice_is_made_once_the_look_has_ended_so_a_later_dead_letter_can_decide_it() -> None:
    sqs = Sqs(3)
    looked: list[str] = []

    def look(peeked: PeekedMessage) -> bool:
        looked.append(peeked.message.message_id)
        return False  # looks at every one

    deletion = await admin(sqs).delete_dead_letters(
        limit=20, chosen=lambda p: p.message.message_id == "m-0" and "m-2" in looked, until=look
    )
    assert deletion.deleted == ["m-0"] and sqs.visible() == ["m-1", "m-2"]

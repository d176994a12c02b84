"""SQS caps a message's visibility at 12 h from its receive: a retry (or an extension) asks no more than is left."""

from __future__ import annotations

import time
from typing import Any

from structlog.testing import capture_logs

from bridge.config import QueueSettings
from bridge.queue.sqs import MAX_VISIBILITY_SECONDS, VISIBILITY_LIMIT_MARGIN_SECONDS, SqsTransport, visibility_left
from bridge.queue.transport import QueueMessage

URL = "https://sqs.eu-central-1.amazonaws.com/000000000000/q"


class VisibilityClient:
    """Records what ``change_message_visibility_batch`` was asked; refuses, as SQS does, a total beyond 12 h."""

    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []

    async def change_message_visibility_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.asked.extend(Entries)
        return {"Successful": [{"Id": e["Id"]} for e in Entries]}


def held_for(seconds: float, message_id: str = "m1") -> QueueMessage:
    return QueueMessage(message_id, f"r-{message_id}", "{}", {}, 3, None, None, received_at=time.monotonic() - seconds)


def transport() -> tuple[SqsTransport, VisibilityClient]:
    client = VisibilityClient()
    return SqsTransport(client, QueueSettings(url=URL)), client


def test_what_is_left_counts_from_the_receive_rounded_against_the_bridge() -> None:
    message = QueueMessage("m1", "r1", "{}", {}, 1, None, None, received_at=1000.0)
    assert visibility_left(message, 1000.0) == MAX_VISIBILITY_SECONDS - VISIBILITY_LIMIT_MARGIN_SECONDS
    assert visibility_left(message, 1600.2) == MAX_VISIBILITY_SECONDS - 601 - VISIBILITY_LIMIT_MARGIN_SECONDS
    assert visibility_left(message, 1000.0 + MAX_VISIBILITY_SECONDS) <= 0


async def test_a_retry_of_twelve_hours_is_cut_to_what_is_left_since_the_receive() -> None:
    sqs, client = transport()
    with capture_logs() as logs:
        assert await sqs.retry_later([held_for(600)], MAX_VISIBILITY_SECONDS) == []
    (entry,) = client.asked
    left = MAX_VISIBILITY_SECONDS - 600 - VISIBILITY_LIMIT_MARGIN_SECONDS
    assert left - 2 <= entry["VisibilityTimeout"] <= left  # the test's own run may take a second or two
    (capped,) = [e for e in logs if e["event"] == "visibility_capped"]
    assert capped["message_ids"] == ["m1"] and capped["asked"] == MAX_VISIBILITY_SECONDS


async def test_each_message_of_a_batch_gets_what_is_left_of_its_own_twelve_hours() -> None:
    sqs, client = transport()
    await sqs.retry_later([held_for(60, "young"), held_for(7200, "old")], 40_000)
    young, old = (entry["VisibilityTimeout"] for entry in client.asked)
    assert young == 40_000
    assert old <= MAX_VISIBILITY_SECONDS - 7200 - VISIBILITY_LIMIT_MARGIN_SECONDS


async def test_a_retry_within_the_limit_is_asked_as_it_is_and_logs_nothing() -> None:
    sqs, client = transport()
    with capture_logs() as logs:
        await sqs.retry_later([held_for(600)], 900)
    assert [e["VisibilityTimeout"] for e in client.asked] == [900]
    assert [e for e in logs if e["event"] == "visibility_capped"] == []


async def test_a_message_held_twelve_hours_asks_nothing_and_says_why() -> None:
    sqs, client = transport()
    with capture_logs() as logs:
        failed = await sqs.retry_later([held_for(MAX_VISIBILITY_SECONDS)], 60)
    assert failed == ["m1"] and client.asked == []
    (line,) = [e for e in logs if e["event"] == "visibility_limit_reached"]
    assert line["message_ids"] == ["m1"] and "12 h" in line["hint"]


async def test_a_release_of_a_message_held_twelve_hours_still_asks_for_zero() -> None:
    sqs, client = transport()
    assert await sqs.release([held_for(MAX_VISIBILITY_SECONDS)]) == []
    assert [e["VisibilityTimeout"] for e in client.asked] == [0]

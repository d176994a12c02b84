"""Every SQS call of the worker ends by its deadline, botocore's retries included: an endpoint that takes a request
and never answers (or answers a byte at a time, which botocore's per-read timeout never catches) fails the call
with ``SqsCallTimeout``, a ``BotoCoreError`` naming the action, the deadline and the endpoint."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError

from bridge.config import QueueSettings
from bridge.queue import sqs
from bridge.queue.sqs import SqsCallTimeout, SqsTransport
from bridge.queue.transport import QueueMessage

URL = "https://sqs.eu-central-1.amazonaws.com/000000000000/q"


class SilentClient:
    """Takes every call and never answers."""

    meta = SimpleNamespace(endpoint_url="http://sqs.local")

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, action: str) -> Any:
        async def call(**_: Any) -> dict[str, Any]:
            self.calls.append(action)
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        return call


@pytest.fixture(autouse=True)
def _short_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqs, "CALL_SECONDS", 0.05)
    monkeypatch.setattr(sqs, "RECEIVE_MARGIN_SECONDS", 0.05)


def held() -> QueueMessage:
    return QueueMessage("m1", "r1", "{}", {}, 1, None, None, received_at=time.monotonic())


async def test_a_heartbeat_that_meets_no_answer_fails_by_its_deadline_naming_the_call() -> None:
    transport = SqsTransport(SilentClient(), QueueSettings(url=URL))
    with pytest.raises(SqsCallTimeout) as raised:
        await transport.extend([held()], 60)
    assert isinstance(raised.value, BotoCoreError)  # what the operator commands' callers handle as SQS failing
    assert (
        str(raised.value) == "SQS ChangeMessageVisibilityBatch did not answer within 0.05 s (endpoint http://sqs.local)"
    )


async def test_a_delete_that_meets_no_answer_fails_by_its_deadline() -> None:
    transport = SqsTransport(SilentClient(), QueueSettings(url=URL))
    with pytest.raises(SqsCallTimeout, match="DeleteMessageBatch"):
        await transport.complete([held()])


async def test_a_receive_that_meets_no_answer_fails_by_its_wait_and_margin_and_counts_as_an_abandoned_poll() -> None:
    transport = SqsTransport(SilentClient(), QueueSettings(url=URL))
    with pytest.raises(SqsCallTimeout, match=r"ReceiveMessage did not answer within 0\.05 s"):
        await transport.receive(10, 0)
    # It may still run on the server for its wait: a release waits for it, as for a cancelled poll.
    assert transport.abandoned_polls.seconds_left(URL) > 0

"""Concurrent SQS sends gathered into ``SendMessageBatch`` calls, each sender still told about its own message.

Measured with ``make bench`` (the ingress at 32 concurrent webhook calls, LocalStack): one ``SendMessage`` per
call gave about 200 calls/s at a p99 of 400 ms, the sends queueing in the emulator; the same calls gathered into
batches of up to 10 reach the queue several times faster, and a real SQS charges per call too.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

# At most 10 entries (SQS's limit) and 256 KiB of bodies and attributes (SQS's older batch limit, still the safe
# size for every endpoint and emulator) in one SendMessageBatch; a larger entry goes alone.
MAX_ENTRIES = 10
MAX_BATCH_BYTES = 256 * 1024


class SendRejected(Exception):
    """SQS refused one entry of a batch (``code``: its error code); the other entries may have been sent."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


@dataclass(slots=True)
class _Pending:
    entry: dict[str, Any]
    size: int
    answer: asyncio.Future[str]


@dataclass(slots=True)
class SendBatcher:
    """Gathers the entries of concurrent ``send`` calls into ``SendMessageBatch`` calls.

    A send waits for no timer: it joins the batch being gathered and goes out on the next turn of the event loop,
    or as soon as fewer than ``max_in_flight`` batches are on their way, so a lone send goes out at once and a
    burst fills batches while the earlier ones travel. ``send`` returns the message id once SQS answered that it
    holds the entry, and raises what the call raised, or ``SendRejected`` for an entry SQS refused alone. A sender
    that stops waiting (cancelled) leaves its entry out of the batch if it was not sent yet, and cancels the call if
    no other sender of its batch is still waiting; otherwise its entry may still reach the queue (a duplicate of
    the retry the caller's failure asks for, which the worker's state store makes harmless). ``aclose`` waits for
    the batches on their way.

    ``send_batch`` is the client's ``send_message_batch`` for the queue: it takes the entries (each with its
    ``Id``) and returns SQS's answer.
    """

    send_batch: Callable[[list[dict[str, Any]]], Awaitable[dict[str, Any]]]
    max_in_flight: int = 4
    _waiting: list[_Pending] = field(default_factory=list)
    _in_flight: set[asyncio.Task[None]] = field(default_factory=set)
    _flush_scheduled: bool = False

    async def send(self, entry: dict[str, Any]) -> str:
        """Send one entry (``MessageBody``, ``MessageAttributes``, FIFO ids; no ``Id``); its message id."""
        loop = asyncio.get_running_loop()
        pending = _Pending(entry, entry_size(entry), loop.create_future())
        self._waiting.append(pending)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await pending.answer

    async def aclose(self) -> None:
        while self._in_flight or self._waiting:
            if self._in_flight:
                await asyncio.wait(set(self._in_flight))
            else:
                self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        while self._waiting and len(self._in_flight) < self.max_in_flight:
            batch = self._take_batch()
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._sent)
            abandon = functools.partial(_abandon, task, batch)
            for pending in batch:
                pending.answer.add_done_callback(abandon)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if self._waiting and not self._flush_scheduled:
            self._flush()

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        size = 0
        # Entries whose callers stopped waiting (a timeout answered 503) are not sent at all.
        self._waiting = [p for p in self._waiting if not p.answer.done()]
        while self._waiting and len(batch) < MAX_ENTRIES:
            if batch and size + self._waiting[0].size > MAX_BATCH_BYTES:
                break
            pending = self._waiting.pop(0)
            batch.append(pending)
            size += pending.size
        return batch

    async def _send(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        entries = [{"Id": str(index), **pending.entry} for index, pending in enumerate(batch)]
        try:
            response = await self.send_batch(entries)
        except asyncio.CancelledError:
            for pending in batch:
                pending.answer.cancel()
            raise
        except Exception as error:
            for pending in batch:
                if not pending.answer.done():
                    pending.answer.set_exception(error)
            return
        for answered in response.get("Successful", []):
            pending = batch[int(answered["Id"])]
            if not pending.answer.done():
                pending.answer.set_result(str(answered["MessageId"]))
        for failed in response.get("Failed", []):
            pending = batch[int(failed["Id"])]
            if not pending.answer.done():
                pending.answer.set_exception(SendRejected(failed.get("Code", "?"), failed.get("Message", "")))
        for pending in batch:  # an entry SQS answered neither way was not confirmed
            if not pending.answer.done():
                pending.answer.set_exception(SendRejected("Unanswered", "not in the batch's answer"))


def _abandon(task: asyncio.Task[None], batch: list[_Pending], _: asyncio.Future[str]) -> None:
    """Every sender of the batch stopped waiting (their timeouts answered 503): the call is cancelled, as a lone
    ``SendMessage`` would be, so it is not retried into SQS after the callers were told to retry themselves."""
    if not task.done() and all(pending.answer.done() for pending in batch):
        task.cancel()


def entry_size(entry: dict[str, Any]) -> int:
    """What SQS counts against its limits (the message's and the batch's): the body and the attributes' names,
    types and values."""
    attributes = entry.get("MessageAttributes", {})
    size = len(entry["MessageBody"].encode())
    for name, value in attributes.items():
        size += len(name.encode()) + len(value["DataType"]) + len(value.get("StringValue", "").encode())
    return size

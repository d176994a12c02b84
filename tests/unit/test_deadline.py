"""``by_deadline``: a call's answer by its deadline, ``DeadlineMissed`` past it, and nothing else taken for that: a
``TimeoutError`` from inside the call and a cancellation from outside come through as they are."""

from __future__ import annotations

import asyncio

import pytest

from bridge.deadline import DeadlineMissed, by_deadline


class Call:
    """A call that waits until it is told to answer (or for ever); counts its starts and cancellations."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.answer = asyncio.Event()
        self.cancelled = 0

    async def __call__(self) -> str:
        self.started.set()
        try:
            await self.answer.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return "answer"


async def test_a_call_that_answers_by_its_deadline_gives_its_answer() -> None:
    call = Call()
    call.answer.set()
    assert await by_deadline(3600, call()) == "answer"
    assert call.cancelled == 0


async def test_a_call_past_its_deadline_is_cancelled_and_raises_deadline_missed() -> None:
    call = Call()
    with pytest.raises(DeadlineMissed, match=r"^not ended within 0\.01 s$") as raised:
        await by_deadline(0.01, call())
    assert call.cancelled == 1
    # Not a TimeoutError (an OSError): the callers' handlers of botocore's timeouts and connection errors skip it.
    assert not isinstance(raised.value, OSError)


async def test_a_timeout_error_from_inside_the_call_is_not_the_deadlines() -> None:
    inner = TimeoutError("the library's own timeout")

    async def timing_out() -> str:
        raise inner

    with pytest.raises(TimeoutError) as raised:
        await by_deadline(3600, timing_out())
    assert raised.value is inner


async def test_a_shorter_timeout_inside_the_call_passing_is_not_the_deadlines() -> None:
    async def with_a_shorter_timeout() -> str:
        async with asyncio.timeout(0.01):
            return await Call()()

    with pytest.raises(TimeoutError):
        await by_deadline(3600, with_a_shorter_timeout())


async def test_any_other_error_from_the_call_comes_through_as_it_is() -> None:
    async def failing() -> str:
        raise ConnectionResetError("peer reset")

    with pytest.raises(ConnectionResetError, match="peer reset"):
        await by_deadline(3600, failing())


async def test_a_cancellation_from_outside_comes_through_as_a_cancellation() -> None:
    call = Call()
    task = asyncio.create_task(by_deadline(3600, call()))
    await call.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert call.cancelled == 1


async def test_a_cancellation_from_outside_as_the_deadline_passes_is_still_a_cancellation() -> None:
    # A deadline of zero passes at the call's first wait; the cancellation from outside is asked for before it.
    async def cancelled_from_outside() -> str:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        return await Call()()

    task = asyncio.create_task(by_deadline(0, cancelled_from_outside()))
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("seconds", [0, -1])
async def test_a_deadline_of_zero_or_less_cancels_the_call_at_its_first_wait(seconds: float) -> None:
    call = Call()
    with pytest.raises(DeadlineMissed):
        await by_deadline(seconds, call())
    assert call.started.is_set()
    assert call.cancelled == 1


@pytest.mark.parametrize("seconds", [0, -1])
async def test_a_call_that_never_waits_answers_by_a_deadline_of_zero_or_less(seconds: float) -> None:
    call = Call()
    call.answer.set()
    assert await by_deadline(seconds, call()) == "answer"
    await asyncio.sleep(0)  # the deadline's expiry, had it been left scheduled, would cancel this test here
    assert call.cancelled == 0

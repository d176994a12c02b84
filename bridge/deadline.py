"""A call run by a deadline that counts all of it, shared by the clients whose library's own timeouts count less
(botocore's read timeout counts per read, and its retries on top): SQS, the DynamoDB state store, a newsml
channel's S3. Each maps ``DeadlineMissed`` to its own error and message."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class DeadlineMissed(Exception):
    """``by_deadline``'s call had not ended by its deadline, and was cancelled.

    Not a ``TimeoutError`` (an ``OSError``): a caller's handler for the library's own timeouts and connection errors
    never takes it for one of them."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"not ended within {seconds:g} s")


async def by_deadline(seconds: float, call: Awaitable[T]) -> T:
    """``call``'s answer, or ``DeadlineMissed`` once it has taken ``seconds`` (``call`` is cancelled then).

    Only this deadline passing is ``DeadlineMissed``: whatever else ``call`` raises comes through as it is, a
    ``TimeoutError`` of its own included (a shorter timeout inside it). A cancellation from outside comes through as
    ``CancelledError``, even when the deadline passes at the same time. A deadline of zero or less still starts
    ``call``: it is cancelled at its first wait, and one that never waits answers."""
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            return await call
    except TimeoutError as error:
        if not deadline.expired():
            raise
        raise DeadlineMissed(seconds) from error

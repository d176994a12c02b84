"""Whether the consumer takes messages now."""

from __future__ import annotations

import asyncio

from bridge.ops import metrics


class ReceiveGate:
    """Open while the worker can process messages; closed, with a reason, while a fault of the whole worker lasts.

    A closed gate stops the consumer's receives: the messages wait in the queue, spending no receive, instead of
    each failing on the same fault. Messages already in hand wait for it too (heartbeated). Whoever closes the gate
    (``bridge.pipeline.credentials``) opens it again once the fault has healed. ``/readyz`` reports the reason.
    """

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._reason: str | None = None
        metrics.CONSUMER_PAUSED.set(0)

    @property
    def reason(self) -> str | None:
        """Why the gate is closed; None while it is open."""
        return self._reason

    def close(self, reason: str) -> bool:
        """Close the gate (or update the reason); True if it was open."""
        was_open = self._reason is None
        self._reason = reason
        self._open.clear()
        metrics.CONSUMER_PAUSED.set(1)
        return was_open

    def open(self) -> None:
        self._reason = None
        self._open.set()
        metrics.CONSUMER_PAUSED.set(0)

    async def wait_open(self) -> None:
        await self._open.wait()

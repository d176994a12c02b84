"""Whether the consumer takes messages now."""

from __future__ import annotations

import asyncio
import time

from bridge import redaction
from bridge.ops import metrics


class ReceiveGate:
    """Open while the worker can process messages; closed, with a reason, while any fault of the whole worker lasts.

    A closed gate stops the consumer's receives: the messages wait in the queue, spending no receive, instead of
    each failing on the same fault. Messages already in hand wait for it too (heartbeated). Each fault closes and
    opens the gate under its own name (``bridge.pipeline.pause``: refused Kordiam credentials, a state store that
    cannot serve the worker), so one healing never opens the gate while another still holds it. ``/readyz`` reports
    the reasons. ``opened_at`` is when (``time.monotonic``) it last opened after being closed (0.0: never closed);
    ``closed_since`` when (``time.time``, for an operator) it closed, while it is closed (None while it is open).
    """

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._reasons: dict[str, str] = {}
        self.opened_at = 0.0
        self.closed_since: float | None = None
        metrics.CONSUMER_PAUSED.set(0)

    @property
    def reason(self) -> str | None:
        """Why the gate is closed (every fault's reason, in the order they closed it); None while it is open."""
        return "; ".join(self._reasons.values()) or None

    def closed_by(self, fault: str) -> bool:
        return fault in self._reasons

    def close(self, fault: str, reason: str) -> bool:
        """Close the gate for ``fault`` (or update its reason); True if that fault had not closed it yet. The reason,
        which may quote an exception's text and which ``/readyz``, ``status`` and ``element`` show, is kept without
        the process's secrets (``bridge.redaction``)."""
        was_open = fault not in self._reasons
        if not self._reasons:
            self.closed_since = time.time()
        self._reasons[fault] = redaction.SECRETS.redact(reason)
        self._open.clear()
        metrics.CONSUMER_PAUSED.set(1)
        return was_open

    def open(self, fault: str) -> None:
        """``fault`` has healed: the gate opens unless another fault still holds it."""
        self._reasons.pop(fault, None)
        if not self._reasons and not self._open.is_set():
            self.opened_at = time.monotonic()
        if not self._reasons:
            self.closed_since = None
            self._open.set()
            metrics.CONSUMER_PAUSED.set(0)

    async def wait_open(self) -> None:
        await self._open.wait()

"""A fault of the whole worker: the consumer pauses until a probe finds it healed."""

from __future__ import annotations

import asyncio
import contextvars
import time

import structlog

from bridge.queue.gate import ReceiveGate

log = structlog.get_logger("bridge.pause")

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 60.0


class WorkerPause:
    """One fault of the whole worker, not of any message (``bridge.pipeline.credentials``, ``.state_outage``).

    Lifecycle: one per fault per worker; ``aclose`` stops its probe.

    ``pause(reason)`` closes the consumer's gate under the fault's ``name`` and starts probing: ``_probe`` runs after
    ``FIRST_RETRY_SECONDS``, then at doubling intervals up to ``MAX_RETRY_SECONDS``, until it finds the fault
    healed. Then the gate opens (unless another fault still holds it) and ``consumer_resumed`` is logged with the
    pause's length. A pause soon after the last one healed keeps backing off rather than starting again at one
    second, so a flapping fault costs a probe a minute, not one a second.

    Messages: the handler keeps a message that met the fault in hand and runs it again once the gate opens
    (``wait_usable``), so the worker's fault spends none of its receives and dead-letters none of them.

    Subclasses give ``name``, ``healed`` (the reason ``consumer_resumed`` names) and ``_probe``, which returns None
    once the fault has healed, or the reason the gate stays closed (it logs what it met).
    """

    name: str
    healed: str

    def __init__(self, gate: ReceiveGate) -> None:
        self._gate = gate
        self._probing: asyncio.Task[None] | None = None
        self._delay = FIRST_RETRY_SECONDS
        self._opened_at = 0.0
        self._reason = ""

    @property
    def paused(self) -> bool:
        return self._gate.closed_by(self.name)

    @property
    def retry_in(self) -> float:
        """Seconds to the next probe."""
        return round(self._delay, 1)

    async def wait_usable(self) -> None:
        """Return at once while no fault of the worker holds the gate; otherwise once none does."""
        await self._gate.wait_open()

    def pause(self, reason: str) -> bool:
        """Close the gate for this fault (or update its reason) and probe until it heals; True if newly paused."""
        newly = not self.paused
        # A fault back soon after the last one healed: keep backing off rather than start again at one second.
        if newly and time.monotonic() - self._opened_at > MAX_RETRY_SECONDS:
            self._delay = FIRST_RETRY_SECONDS
        self._reason = reason
        self._gate.close(self.name, reason)
        if self._probing is None or self._probing.done():
            # In a context of its own: the probe's log lines are the worker's, not the message's that met the fault.
            self._probing = asyncio.get_running_loop().create_task(
                self._until_healed(), name=f"{self.name}-probe", context=contextvars.Context()
            )
        return newly

    async def aclose(self) -> None:
        probing, self._probing = self._probing, None
        if probing is not None:
            probing.cancel()
            await asyncio.gather(probing, return_exceptions=True)

    async def _probe(self) -> str | None:
        raise NotImplementedError

    async def _until_healed(self) -> None:
        paused_at = time.monotonic()
        while True:
            await asyncio.sleep(self._delay)
            self._delay = min(MAX_RETRY_SECONDS, self._delay * 2)
            reason = await self._probe()
            if reason is None:
                break
            self._reason = reason
            self._gate.close(self.name, reason)
        self._opened_at = time.monotonic()
        self._gate.open(self.name)
        log.warning("consumer_resumed", reason=self.healed, paused_seconds=round(self._opened_at - paused_at, 1))

"""A fault of the whole worker: the consumer pauses until a probe finds it healed."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog
from prometheus_client import Counter

from bridge.errors import TransientError
from bridge.queue.gate import ReceiveGate

log = structlog.get_logger("bridge.pause")

T = TypeVar("T")

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 60.0
# The longest a probe waits for the service's Retry-After: a longer one (hours, a clock gone wrong) would leave the
# worker blind to an earlier recovery.
MAX_RETRY_AFTER_SECONDS = 600.0


class WorkerPause:
    """One fault of the whole worker, not of any message (``bridge.pipeline.credentials``, ``.state_outage``,
    ``.kordiam_outage``).

    Lifecycle: one per fault per worker; ``aclose`` stops its probes.

    ``pause(reason)`` closes the consumer's gate under the fault's ``name`` and starts probing: ``_probe`` runs after
    ``FIRST_RETRY_SECONDS``, then at doubling intervals up to ``MAX_RETRY_SECONDS``, until it finds the fault
    healed. Then the gate opens (unless another fault still holds it) and ``consumer_resumed`` is logged with the
    pause's length. A pause soon after the last one healed keeps backing off rather than starting again at one
    second, so a flapping fault costs a probe a minute, not one a second. A probe that met a ``Retry-After``
    (``_hold_off``) pushes the next one out to at least that, bounded by ``MAX_RETRY_AFTER_SECONDS``.

    ``confirm(error)`` is for a failure that may be the worker's or only the message's: ``_probe`` runs once, shared
    by every message that asks meanwhile. If it fails too, the worker pauses (``_paused_by`` logs it) and confirm
    answers True; if it passes, the failure was that message's alone, and confirm answers False.

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
        self._checking: asyncio.Task[str | None] | None = None
        self._delay = FIRST_RETRY_SECONDS
        self._held_off = 0.0  # the last probe's Retry-After, if longer than the back-off: the next probe's wait
        self._opened_at = 0.0
        self._reason = ""

    @property
    def paused(self) -> bool:
        return self._gate.closed_by(self.name)

    @property
    def retry_in(self) -> float:
        """Seconds to the next probe."""
        return round(self._next_wait(), 1)

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
            self._probing = self._task(self._until_healed(), "probe")
        return newly

    async def confirm(self, error: BaseException) -> bool:
        """True, with the worker paused, if the probe fails now as well: ``error`` is the worker's fault."""
        if self.paused:
            return True
        checking = self._checking
        if checking is None or checking.done():
            checking = self._checking = self._task(self._probe(), "check")
        reason = await asyncio.shield(checking)
        if reason is None:
            return False
        if self.pause(reason):
            self._paused_by(error, reason)
        return True

    async def aclose(self) -> None:
        tasks = [task for task in (self._probing, self._checking) if task is not None]
        self._probing = self._checking = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _probe(self) -> str | None:
        raise NotImplementedError

    def _hold_off(self, retry_after: float | None) -> None:
        """The probe met a ``Retry-After`` (or none): the next probe waits at least that, within bounds."""
        self._held_off = min(MAX_RETRY_AFTER_SECONDS, retry_after or 0.0)

    def _next_wait(self) -> float:
        return max(self._delay, self._held_off)

    def _paused_by(self, error: BaseException, reason: str) -> None:
        """``confirm`` paused the worker for the failure ``error`` a message met: say so."""

    def _task(self, work: Coroutine[Any, Any, T], role: str) -> asyncio.Task[T]:
        # In a context of its own: the probe's log lines are the worker's, not the message's that met the fault.
        return asyncio.get_running_loop().create_task(work, name=f"{self.name}-{role}", context=contextvars.Context())

    async def _until_healed(self) -> None:
        paused_at = time.monotonic()
        while True:
            await asyncio.sleep(self._next_wait())
            self._delay = min(MAX_RETRY_SECONDS, self._delay * 2)
            reason = await self._probe()
            if reason is None:
                break
            self._reason = reason
            self._gate.close(self.name, reason)
        self._opened_at = time.monotonic()
        self._gate.open(self.name)
        log.warning("consumer_resumed", reason=self.healed, paused_seconds=round(self._opened_at - paused_at, 1))


class DependencyOutage(WorkerPause):
    """A service every message needs (Kordiam, the state store), failing for all of them: ``confirm`` pauses the
    worker when the service's own check (``_check``) fails too.

    Subclasses give, besides ``name`` and ``healed``: ``down``, the errors of ``_check`` that mean the service is
    still down; ``_describe``, the gate's reason for one of them; the log events (``paused_event`` at error level
    when ``confirm`` pauses, ``still_event`` at warning level for each failed probe of the pause), the ``hint`` the
    first names, and ``outages``, the counter of pauses. Any other error of ``_check`` is a fault of the check
    itself, no verdict on the service: logged (``crashed_event``), and the service counts as answering.
    """

    down: tuple[type[Exception], ...]
    paused_event: str
    still_event: str
    crashed_event: str
    hint: str
    outages: Counter

    async def _check(self) -> None:
        raise NotImplementedError

    def _describe(self, error: Exception) -> str:
        raise NotImplementedError

    def _paused_by(self, error: BaseException, reason: str) -> None:
        self.outages.inc()
        log.error(
            self.paused_event,
            error=reason,
            met_by=f"{type(error).__name__}: {error}",
            hint=self.hint,
            retry_in=self.retry_in,
        )

    async def _probe(self) -> str | None:
        try:
            await self._check()
        except self.down as error:
            self._hold_off(error.retry_after if isinstance(error, TransientError) else None)
            reason = self._describe(error)
            if self.paused:
                log.warning(self.still_event, error=reason, retry_in=self.retry_in)
            return reason
        except Exception as error:
            log.error(self.crashed_event, error=f"{type(error).__name__}: {error}", exc_info=True)
        self._hold_off(None)
        return None

"""The state store failing for every message: a fault of the whole worker, not of the messages that meet it."""

from __future__ import annotations

import asyncio
import contextvars

import structlog

from bridge.errors import BridgeError
from bridge.ops import metrics
from bridge.pipeline.pause import WorkerPause
from bridge.queue.gate import ReceiveGate
from bridge.state.base import StateStore

log = structlog.get_logger("bridge.state_outage")


class StateOutage(WorkerPause):
    """Keeps the consumer's gate closed while the state store cannot serve the worker.

    Every message needs the store (its lease, its deliveries, its mark). When the store fails for everyone (DynamoDB
    down or throttling every call, the worker's role stripped of a permission under it, a SQLite file held locked
    by another program, its disk full or read-only), each message would fail the same way and, on its last allowed
    receive, be dead-lettered for the bridge's own fault.

    A message whose sync failed at the store asks ``confirm``: the store's ``probe`` (the write and read a message
    makes, on a key no element has) runs once, shared by every message that asks meanwhile.

    - The probe fails too: the fault is the worker's. The gate closes, ``state_store_unavailable`` is logged at
      error level and ``bridge_state_outages_total`` counted; the message waits in hand and runs again once a
      probe passes (``bridge.pipeline.pause.WorkerPause``: 1 s, doubling to 60 s). No receive is spent.
    - The probe passes: the failure was that message's alone (a throttled moment, an item the store refused), and
      the message takes its usual outcome (``bridge.pipeline.fate``).
    """

    name = "state-store"
    healed = "the state store answers again"

    def __init__(self, state: StateStore, gate: ReceiveGate) -> None:
        super().__init__(gate)
        self._state = state
        self._checking: asyncio.Task[str | None] | None = None

    async def confirm(self, error: BridgeError) -> bool:
        """True, with the worker paused, if the store fails the probe now as well: ``error`` is the worker's."""
        if self.paused:
            return True
        checking = self._checking
        if checking is None or checking.done():
            checking = self._checking = asyncio.get_running_loop().create_task(
                self._check(), name="state-check", context=contextvars.Context()
            )
        reason = await asyncio.shield(checking)
        if reason is None:
            return False
        if self.pause(reason):
            metrics.STATE_OUTAGES.inc()
            log.error(
                "state_store_unavailable",
                error=reason,
                met_by=f"{type(error).__name__}: {error}",
                hint="the worker takes no messages until the state store answers again (state.url); messages wait "
                "in the queue",
                retry_in=self.retry_in,
            )
        return True

    async def aclose(self) -> None:
        checking, self._checking = self._checking, None
        if checking is not None:
            checking.cancel()
            await asyncio.gather(checking, return_exceptions=True)
        await super().aclose()

    async def _check(self) -> str | None:
        try:
            await self._state.probe()
        except BridgeError as error:
            return f"the state store cannot serve the worker: {type(error).__name__}: {error}"
        except Exception as error:  # a fault of the probe itself is no verdict on the store: not the worker's fault
            log.error("state_probe_crashed", error=f"{type(error).__name__}: {error}", exc_info=True)
        return None

    async def _probe(self) -> str | None:
        reason = await self._check()
        if reason is not None:
            log.warning("state_store_still_unavailable", error=reason, retry_in=self.retry_in)
        return reason

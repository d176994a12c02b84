"""The state store failing for every message: a fault of the whole worker, not of the messages that meet it."""

from __future__ import annotations

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

    A message whose sync failed at the store asks ``confirm``; the probe is the store's ``probe`` (the writes and
    reads a message makes, on a key no element has).

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

    def _paused_by(self, error: BaseException, reason: str) -> None:
        metrics.STATE_OUTAGES.inc()
        log.error(
            "state_store_unavailable",
            error=reason,
            met_by=f"{type(error).__name__}: {error}",
            hint="the worker takes no messages until the state store answers again (state.url); messages wait "
            "in the queue",
            retry_in=self.retry_in,
        )

    async def _probe(self) -> str | None:
        try:
            await self._state.probe()
        except BridgeError as error:
            reason = f"the state store cannot serve the worker: {type(error).__name__}: {error}"
            if self.paused:
                log.warning("state_store_still_unavailable", error=reason, retry_in=self.retry_in)
            return reason
        except Exception as error:  # a fault of the probe itself is no verdict on the store: not the worker's fault
            log.error("state_probe_crashed", error=f"{type(error).__name__}: {error}", exc_info=True)
        return None

"""The state store failing for every message: a fault of the whole worker, not of the messages that meet it."""

from __future__ import annotations

from bridge.errors import BridgeError
from bridge.ops import metrics
from bridge.pipeline.pause import DependencyOutage
from bridge.queue.gate import ReceiveGate
from bridge.state.base import StateStore


class StateOutage(DependencyOutage):
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
    down = (BridgeError,)
    paused_event = "state_store_unavailable"
    still_event = "state_store_still_unavailable"
    crashed_event = "state_probe_crashed"
    hint = "the worker takes no messages until the state store answers again (state.url); messages wait in the queue"
    outages = metrics.STATE_OUTAGES

    def __init__(self, state: StateStore, gate: ReceiveGate) -> None:
        super().__init__(gate)
        self._state = state

    async def _check(self) -> None:
        await self._state.probe()

    def _describe(self, error: Exception) -> str:
        return f"the state store cannot serve the worker: {type(error).__name__}: {error}"

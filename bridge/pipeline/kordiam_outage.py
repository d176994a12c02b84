"""Kordiam failing for every message: a fault of the whole worker's source, not of the messages that meet it."""

from __future__ import annotations

from bridge.errors import KordiamUnavailable
from bridge.kordiam.client import KordiamClient
from bridge.ops import metrics
from bridge.pipeline.pause import DependencyOutage
from bridge.queue.gate import ReceiveGate


class KordiamOutage(DependencyOutage):
    """Keeps the consumer's gate closed while Kordiam's API cannot be reached or answers every call with 5xx or 429
    (or a redirect, or a success that is not JSON: a proxy's page in Kordiam's place).

    Every message needs Kordiam (the element's fetch, the feedback). When Kordiam is down, each message would be
    retried until its receives are spent and then dead-lettered, every one of them, and an operator would have to
    redrive the lot once Kordiam is back; with the defaults that happens 18 to 36 minutes into the outage.

    A message whose fetch or feedback failed with ``KordiamUnavailable`` (the client's own retries spent) asks
    ``confirm``; the probe is ``KordiamClient.probe`` (one authenticated ``GET /platforms``, one attempt).

    - The probe fails too: Kordiam is down for everyone. The gate closes, ``kordiam_unavailable`` is logged at
      error level and ``bridge_kordiam_outages_total`` counted; the message waits in hand and runs again once a
      probe passes (``bridge.pipeline.pause.WorkerPause``: 1 s, doubling to 60 s, or a probe's longer
      ``Retry-After``, at most ``MAX_RETRY_AFTER_SECONDS``). The rest wait in the queue,
      where they spend no receive and keep for the queue's retention period.
    - The probe passes: the failure was that message's alone (one element Kordiam cannot serve, a blip), and the
      message takes its usual outcome (``bridge.pipeline.fate``): retried, and dead-lettered with its reason once
      its receives are spent. The probe is a read, and Kordiam's API has no write without an effect: its writes
      failing alone are the feedback breaker's to find (``SyncEngine._feed_back`` parks the elements).

    Any answer that is not unavailability ends the pause, a refusal included: the message then meets the refusal
    itself, and ``bridge.pipeline.credentials`` takes over if it is of the worker's credentials.
    """

    name = "kordiam"
    healed = "Kordiam answers again"
    down = (KordiamUnavailable,)
    paused_event = "kordiam_unavailable"
    still_event = "kordiam_still_unavailable"
    crashed_event = "kordiam_probe_crashed"
    hint = "the worker takes no messages until Kordiam answers again; messages wait in the queue"
    outages = metrics.KORDIAM_OUTAGES

    def __init__(self, kordiam: KordiamClient, gate: ReceiveGate) -> None:
        super().__init__(gate)
        self._kordiam = kordiam

    async def _check(self) -> None:
        await self._kordiam.probe()

    def _describe(self, error: Exception) -> str:
        return f"Kordiam does not answer: {error}"

"""Isolation around each channel: a circuit breaker, a concurrency limit and a rate limit.

A broken or slow CMS must hold back only its own work. After ``breaker_threshold`` transient failures in a row
the breaker opens and calls fail fast (``ChannelCircuitOpen`` with the remaining cool-down as ``retry_after``),
so the sync engine parks their elements for that channel at once (``bridge.pipeline.parking``) instead of each
waiting for a timeout, and the slots they would have held serve the other channels. After the cool-down one
probe call is let through (half-open); its success closes the breaker, its failure opens it again for twice as
long (up to ``MAX_COOLDOWN``). Permanent errors (a rejected story) say nothing about the channel's health and do
not count.
"""

from __future__ import annotations

import asyncio
import time
from enum import IntEnum
from types import TracebackType

import structlog

from bridge.channels.base import Channel, ChannelResult, FindsItems, FoundItem
from bridge.errors import ChannelCircuitOpen, ChannelUnavailable, PermanentError
from bridge.kordiam.models import Element, Publication
from bridge.ops import metrics

log = structlog.get_logger("bridge.channels")

MAX_COOLDOWN = 600.0
# A call waiting this long for a concurrency slot or a rate token is handed back to the queue instead.
MAX_QUEUE_WAIT = 5.0
# The open circuit's message carries the failure that opened it, cut to this many characters: it becomes the
# parked elements' reason, which `parked list` and `element` show.
MAX_FAILURE_TEXT = 300


class BreakerState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(self, channel: str, *, threshold: int, cooldown: float) -> None:
        self.channel = channel
        self.threshold = threshold
        self.base_cooldown = cooldown
        self.cooldown = cooldown
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.last_failure = ""
        self._probing = False
        metrics.BREAKER_STATE.labels(channel).set(self.state)

    def before_call(self) -> None:
        """Raise ``ChannelCircuitOpen`` if the call must not reach the channel now."""
        if self.state == BreakerState.CLOSED:
            return
        remaining = self._remaining()
        if self.state == BreakerState.OPEN and remaining <= 0:
            self._set(BreakerState.HALF_OPEN)
        if self.state == BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return
        raise self._circuit_open(remaining)

    def open_error(self) -> ChannelCircuitOpen | None:
        """While open, what a call meets now (None: not open). Asked after a call that failed: the failure may have
        opened it (a failed probe, the ``threshold``-th failure), and its caller treats the call as one that met the
        open circuit."""
        if self.state != BreakerState.OPEN:
            return None
        return self._circuit_open(self._remaining())

    def _circuit_open(self, remaining: float) -> ChannelCircuitOpen:
        last = f"; the last: {self.last_failure}" if self.last_failure else ""
        return ChannelCircuitOpen(
            f"channel {self.channel}: circuit open after {self.failures} failure{'' if self.failures == 1 else 's'}"
            f"{last}",
            retry_after=max(1.0, remaining),
            probing=self.state == BreakerState.HALF_OPEN,
        )

    def retry_after(self) -> float | None:
        """While open, the seconds until it lets a probe through, as an open circuit's ``retry_after`` names them
        (None: not open). Asked after a call that failed: the failure may have opened it (a failed probe, the
        ``threshold``-th failure), and the call met no open circuit to say so."""
        if self.state != BreakerState.OPEN:
            return None
        return max(1.0, self._remaining())

    def _remaining(self) -> float:
        return self.opened_at + self.cooldown - time.monotonic()

    def probe_now(self) -> bool:
        """An operator says the channel was fixed (``parked requeue``): an open breaker lets its probe through now
        instead of after the cool-down, which a long outage has doubled up to ``MAX_COOLDOWN``. A failed probe opens
        it again as any probe's does. False when the breaker was not open."""
        if self.state != BreakerState.OPEN:
            return False
        self._set(BreakerState.HALF_OPEN)
        return True

    def release_probe(self) -> None:
        """The probe call ended without telling anything about the channel's health."""
        self._probing = False

    def succeeded(self) -> None:
        self._probing = False
        self.failures = 0
        self.cooldown = self.base_cooldown
        if self.state != BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def failed(self, error: BaseException | None = None) -> None:
        self.failures += 1
        if error is not None:
            text = str(error) or type(error).__name__
            self.last_failure = text if len(text) <= MAX_FAILURE_TEXT else text[: MAX_FAILURE_TEXT - 1] + "…"
        if self.state == BreakerState.HALF_OPEN:
            self._probing = False
            self.cooldown = min(MAX_COOLDOWN, self.cooldown * 2)
            self._open()
        elif self.state == BreakerState.CLOSED and self.failures >= self.threshold:
            self._open()

    def _open(self) -> None:
        self.opened_at = time.monotonic()
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        previous, self.state = self.state, state
        metrics.BREAKER_STATE.labels(self.channel).set(state)
        log.warning(
            "breaker_" + state.name.lower(),
            channel=self.channel,
            previous=previous.name.lower(),
            failures=self.failures,
            cooldown=self.cooldown,
        )


class RateLimiter:
    """A token bucket: at most ``rate`` calls per second on average, bursts up to ``rate`` calls."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


class GuardedChannel:
    """A channel behind its breaker and limits; implements the same Protocol and raises what the inner one does.

    Plus ``ChannelCircuitOpen`` when its breaker is open, and ``ChannelUnavailable`` when a slot or rate token does
    not come within ``MAX_QUEUE_WAIT``. A ``PermanentError`` says nothing about the channel's health: it leaves
    the breaker alone. Build it with ``guarded``, which keeps the adapter's optional ``FindsItems``.
    """

    def __init__(
        self,
        channel: Channel,
        *,
        breaker_threshold: int = 5,
        breaker_cooldown: float = 30.0,
        max_in_flight: int | None = None,
        rate_limit: float | None = None,
    ) -> None:
        self.inner = channel
        self.name = channel.name
        self.element_scoped = channel.element_scoped
        self.breaker = CircuitBreaker(channel.name, threshold=breaker_threshold, cooldown=breaker_cooldown)
        self._slots = asyncio.Semaphore(max_in_flight) if max_in_flight else None
        self._rate = RateLimiter(rate_limit) if rate_limit else None

    async def upsert(self, element: Element, publication: Publication, external_id: str | None) -> ChannelResult:
        async with _Guarded(self):
            return await self.inner.upsert(element, publication, external_id)

    async def delete(self, element_id: int, publication_id: int, external_id: str) -> None:
        async with _Guarded(self):
            await self.inner.delete(element_id, publication_id, external_id)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def _enter(self) -> bool:
        """Let a call through, or raise; returns whether it holds one of ``max_in_flight`` (``_leave`` frees it)."""
        self.breaker.before_call()
        holds_slot = False
        try:
            if self._slots is not None:
                await asyncio.wait_for(self._slots.acquire(), MAX_QUEUE_WAIT)
                holds_slot = True
            if self._rate is not None:
                await asyncio.wait_for(self._rate.acquire(), MAX_QUEUE_WAIT)
        except TimeoutError:
            if holds_slot and self._slots is not None:
                self._slots.release()
            # The channel is busy, not failing: leave the breaker's count alone and let the queue retry.
            self.breaker.release_probe()
            raise ChannelUnavailable(
                f"channel {self.name}: busy (concurrency or rate limit)", retry_after=1.0
            ) from None
        return holds_slot

    def _leave(self, error: BaseException | None, *, holds_slot: bool) -> None:
        """Tell the breaker how the call ended, and free its slot."""
        if error is None:
            self.breaker.succeeded()
        elif isinstance(error, PermanentError):
            self.breaker.release_probe()  # a rejected story says nothing about the channel's health
        elif isinstance(error, Exception):
            self.breaker.failed(error)
        else:
            self.breaker.release_probe()  # cancelled
        if holds_slot and self._slots is not None:
            self._slots.release()


class GuardedFinder(GuardedChannel):
    """A ``GuardedChannel`` over an adapter that implements ``FindsItems`` (``guarded`` builds it only over one):
    the search goes through the same breaker and limits as the writes."""

    async def find_items(self, element_id: int) -> list[FoundItem]:
        finder = self.inner
        assert isinstance(finder, FindsItems)
        async with _Guarded(self):
            return await finder.find_items(element_id)


def guarded(
    channel: Channel,
    *,
    breaker_threshold: int = 5,
    breaker_cooldown: float = 30.0,
    max_in_flight: int | None = None,
    rate_limit: float | None = None,
) -> GuardedChannel:
    """The channel behind its breaker and limits, keeping ``FindsItems`` exactly when the adapter implements it
    (the engine asks ``isinstance`` whether a channel can search)."""
    kind = GuardedFinder if isinstance(channel, FindsItems) else GuardedChannel
    return kind(
        channel,
        breaker_threshold=breaker_threshold,
        breaker_cooldown=breaker_cooldown,
        max_in_flight=max_in_flight,
        rate_limit=rate_limit,
    )


class _Guarded:
    """One call through a ``GuardedChannel``'s breaker and limits (a class, not an @asynccontextmanager: every
    channel write enters one, at a third of the cost)."""

    __slots__ = ("_channel", "_holds_slot")

    def __init__(self, channel: GuardedChannel) -> None:
        self._channel = channel
        self._holds_slot = False

    async def __aenter__(self) -> None:
        self._holds_slot = await self._channel._enter()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._channel._leave(error, holds_slot=self._holds_slot)

"""A channel that refuses the bridge's own credentials, or whose circuit breaker is open: its work is parked, not
failed, and requeued once the channel takes calls again.

Why: a 401 from WordPress, Mailchimp, S3 or a CMS is the bridge's fault (a wrong or revoked secret in its
configuration), not the message's, and it is the same for every message. Failing the messages would dead-letter
every story that reaches the channel until an operator fixed the secret and redrove them all; worse, each one
would try the wrong secret again, and a CMS that locks an account after failed logins would lock it. A channel
whose breaker is open (``ChannelCircuitOpen``: it failed ``breaker_threshold`` calls in a row) is down for every
message alike too: retrying each message through the queue would refetch its element from Kordiam on every
receive, and an outage longer than the retry budget (about 36 minutes with the defaults) would dead-letter every
story that met it. So the sync engine parks the element for that channel in the state store (``StateStore.park``,
shared by every worker), the message's other channels and its feedback go on, and the message is done.

Each channel is, in this process, ``accepting``, ``refused`` or ``owed``:

- **accepting**: every call goes to the channel. A ``ChannelCredentialsRefused`` makes it ``refused``: one error
  line (``channel_credentials_refused``, with the setting to fix), ``bridge_channel_credentials_refused`` 1. A
  ``ChannelCircuitOpen`` makes it ``owed``: one warning line (``channel_down_parking``).
- **refused**: calls do not go to the channel; the engine parks the element at once (``Admission.PARK``). Once
  the back-off has passed (1 s, doubling to ``max_trial_seconds``), one call is let through as a trial
  (``Admission.TRIAL``): the next message's, or, when none comes, the one a requeued parked element brings (a
  *carrier*, ``ParkedRequeue``). Accepted: the channel is ``accepting`` again (``channel_credentials_accepted``)
  and every element it has parked is requeued. Refused: the back-off doubles. Anything else (the CMS down, the
  content refused) says nothing about the credentials: the next message's trial may go at once, the next
  carrier waits for the doubled back-off.
- **owed**: parked elements wait for the channel's next accepted call, and calls go on as for an accepting
  channel; while the channel is down its breaker lets one probe through per cool-down and fails the rest fast,
  and each element that meets the open breaker is parked. The first call that succeeds makes the channel
  ``accepting`` (``channel_recovered``) and requeues every element it has parked. When no message comes, a
  carrier goes once the cool-down the breaker last named has passed (an open circuit's, or, after a call that
  failed, such as a failed probe, the one the breaker is open for now); one that brings no news back (parked
  again, or accepted, here) holds the next back for a back-off doubling from 1 s to ``max_trial_seconds``.

At start-up a channel with parked elements starts ``refused``, only suspected, with its first trial due at once:
the secret may have been fixed by the restart that brought this process up, and one call finds out without every
message in hand trying a wrong secret at once. A trial that says nothing about the credentials (the channel is
down) makes it ``owed``.

Several workers: each keeps its own state (one refusal each, at most one trial each per back-off); the parked
elements are shared, so a requeue by any of them serves all, and a duplicate requeue costs a fetch that changes
nothing (the fingerprints match). A carrier is marked (``CARRIER_SOURCE``): whichever worker gets the channel to
accept its call requeues the channel's parked elements, since the worker that sent it may never hear. Once a
minute each worker counts the parked elements, and a channel with parked elements that it holds nothing about
becomes ``owed`` there (``ParkedRequeue``): elements parked by a worker that stopped since (scaled in once its
queue was empty, say) do not wait for it to come back.

A ``parked requeue`` notification that names channels to try at once (``try_now``) and makes no call to one of
them (covered by a fetch that started after it was sent, which parked the element again, or the channel's item
current) hands its trial or probe to a carrier sent at once (``carry_now``).

Kordiam's feedback is parked the same way, under ``KORDIAM_FEEDBACK``, while its writes fail for every element (the
sync engine's feedback breaker is open): ``owed`` like a channel that is down, requeued by the first feedback write
Kordiam takes (``SyncEngine._feed_back``).

A requeued element is a fresh notification (``resync_notification``, source ``parked``, or ``parked-trial`` for
a carrier) on the worker's own queue, and is unparked once the queue has it: from then on the queue's guarantees
hold (retries, the dead-letter queue with a reason for a failure that is the message's own), and a refusal or an
open circuit parks it again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

import structlog

from bridge import redaction
from bridge.errors import ChannelCircuitOpen, ChannelCredentialsRefused
from bridge.ops import metrics
from bridge.pipeline.notification import CARRIER_SOURCE, resync_notification
from bridge.queue.transport import MAX_BATCH, Transport
from bridge.state.base import Parked, StateStore, iter_parked, parked_elsewhere

log = structlog.get_logger("bridge.parking")

FIRST_TRIAL_SECONDS = 1.0
MAX_TRIAL_SECONDS = 300.0
# A trial not reported within this long (a call cancelled at shutdown, a bug) no longer holds the next one back.
TRIAL_TIMEOUT_SECONDS = 600.0
# How often each worker counts the parked elements, and takes up those no worker holds (parked by one now gone).
SWEEP_SECONDS = 60.0


class Admission(Enum):
    """What the engine may do with one call to a channel."""

    GO = "go"  # accepting: call it
    TRIAL = "trial"  # refused, and this call is the one trial the back-off allows: call it, then report how it went
    PARK = "park"  # refused: do not call it; park the element for the channel


@dataclass(slots=True)
class _Refusal:
    reason: str
    backoff: float
    next_trial: float
    trial_started: float | None = None  # while a trial call runs
    # False while only suspected (elements found parked at start-up): the first refusal confirms it, and says so.
    confirmed: bool = True
    # A requeued element is on its way to carry the trial (``ParkedRequeue``); not sent again before it is due.
    carrier_sent_at: float | None = None


@dataclass(slots=True)
class _Owed:
    """Elements are parked for a channel that takes calls (as far as this process knows): the first call it accepts
    requeues them. Entered when a call meets the channel's open breaker, when a suspected refusal's trial says
    nothing about the credentials, and when the sweep finds elements another worker parked."""

    reason: str
    # Not before this (the breaker's cool-down, as the last open circuit or failed call named it) does a carrier go.
    next_carrier: float
    # A carrier that brings no news (another worker took it and the breaker there let it through, or it was
    # retried by the queue) holds the next one back this long, doubling each time.
    backoff: float
    carrier_sent_at: float | None = None


class ChannelParking:
    """Which channels refuse the bridge's credentials, or owe parked elements a sync, in this process, and the
    admission of each call.

    Lifecycle: one per worker, shared by the sync engine (``admit``, then ``accepted``/``refused``/``inconclusive``
    for each call it made, ``circuit_open`` when the call met an open breaker, ``carried`` after a carrier's sync,
    ``carry_now`` after a ``try_now`` notification that made no call, and ``park``) and the ``ParkedRequeue``
    task (``owe`` from its sweep). ``load`` reads, at start-up, which channels have parked elements. Nothing to close.

    Contract with the engine: every ``admit`` that answered ``GO`` or ``TRIAL`` is followed by exactly one of
    ``accepted``, ``refused`` or ``inconclusive`` for that call, with the admission it got, once the call ended.
    """

    def __init__(
        self,
        state: StateStore,
        channels: Iterable[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        first_trial_seconds: float = FIRST_TRIAL_SECONDS,
        max_trial_seconds: float = MAX_TRIAL_SECONDS,
    ) -> None:
        self._state = state
        self._channels = tuple(channels)
        self._clock = clock
        self._first = first_trial_seconds
        self._max = max_trial_seconds
        self._refused: dict[str, _Refusal] = {}
        self._owed: dict[str, _Owed] = {}
        # Channels that accepted a call since the requeue task last looked: it requeues their parked elements.
        self.requeue_due: set[str] = set()
        self.changed = asyncio.Event()
        self._gauges = {name: metrics.CHANNEL_CREDENTIALS_REFUSED.labels(name) for name in self._channels}
        self._parked = {name: metrics.CHANNEL_PARKED.labels(name) for name in self._channels}
        self._parked_now = {name: metrics.CHANNEL_PARKED_ELEMENTS.labels(name) for name in self._channels}
        # Channels not configured that have (or had, in this process) parked elements: they have a gauge.
        self._unconfigured: set[str] = set()
        self._unconfigured_told: set[str] = set()

    async def count_parked(self) -> dict[str, int]:
        """Each configured channel's parked elements in the state store, by every worker
        (``bridge_channel_parked_elements``). Elements parked under a channel name the configuration no longer has
        are counted in the gauge too (``_count_unconfigured``), not returned: nothing here calls that channel."""
        counts = {}
        for name in self._channels:
            counts[name] = count = await self._state.parked_count(name)
            self._parked_now[name].set(count)
        try:
            await self._count_unconfigured()
        except Exception as error:  # not this worker's channels: their count must not stop the sweep or the start
            log.warning("parked_channels_unreadable", error=f"{type(error).__name__}: {error}")
        return counts

    async def _count_unconfigured(self) -> None:
        """A channel renamed or removed from the configuration while it had parked elements: no worker calls it,
        so no call of it ever succeeds and requeues them, and they would wait unseen. They are counted in the
        gauge (so its alert fires) and named in one warning per channel per process, which says what to do."""
        found = await parked_elsewhere(self._state, self._parked_now)
        # Those gauged before and emptied since (a store may stop naming them): 0, so the alert clears. A name
        # parked under once, long ago, and empty ever since gets no gauge.
        for name in sorted(self._unconfigured - found.keys()):
            metrics.CHANNEL_PARKED_ELEMENTS.labels(name).set(0)
        for name, count in found.items():
            self._unconfigured.add(name)
            metrics.CHANNEL_PARKED_ELEMENTS.labels(name).set(count)
            if name not in self._unconfigured_told:
                self._unconfigured_told.add(name)
                log.warning(
                    "parked_for_unconfigured_channel",
                    channel=name,
                    parked=count,
                    hint=f"no channel {name!r} is configured (renamed or removed?), so no worker requeues them; "
                    f"`kordiam-bridge parked requeue --channel {name}` puts them back on the queue, for the channels "
                    "configured now",
                )

    async def load(self) -> None:
        """At start-up: a channel with parked elements starts refused (suspected), its first trial due at once: a
        restart that did not fix a wrong secret must not try it with every message in hand at once."""
        for name, count in (await self.count_parked()).items():
            if count:
                self._refused[name] = _Refusal(
                    "held until one trial call decides (elements were parked before this start)",
                    self._first,
                    self._clock(),
                    confirmed=False,
                )
                log.warning(
                    "parked_found_at_start",
                    channel=name,
                    parked=count,
                    hint="parked while the channel refused the bridge's credentials or was down; one trial call "
                    "decides, and its success requeues them",
                )
                self.changed.set()

    def holds(self, name: str) -> bool:
        """Whether this process has the channel refused or owing, or its parked elements to requeue."""
        return name in self._refused or name in self._owed or name in self.requeue_due

    def owe(self, name: str, reason: str) -> bool:
        """Parked elements wait for the channel's next accepted call; False if this process held it already."""
        if self.holds(name):
            return False
        self._owe(name, reason, self._clock())
        return True

    def _owe(self, name: str, reason: str, next_carrier: float) -> None:
        self._owed[name] = _Owed(reason, next_carrier, self._first)
        self.changed.set()  # the requeue task's next wake-up is now this channel's first carrier

    def refusing(self, name: str) -> bool:
        return name in self._refused

    def owes(self, name: str) -> bool:
        return name in self._owed

    def reason(self, name: str) -> str:
        """Why an element is parked without a call of its own: the refusal it quotes was another element's call."""
        refusal = self._refused.get(name)
        if refusal is None or not refusal.confirmed:
            return refusal.reason if refusal is not None else "the channel refused the bridge's credentials"
        return f"channel {name} refuses the bridge's credentials; the last refusal: {refusal.reason}"

    def admit(self, name: str) -> Admission:
        refusal = self._refused.get(name)
        if refusal is None:
            return Admission.GO
        now = self._clock()
        if now < refusal.next_trial or self._trial_running(refusal, now):
            return Admission.PARK
        refusal.trial_started = now
        return Admission.TRIAL

    def try_now(self, names: Iterable[str]) -> None:
        """An operator requeued parked elements (``parked requeue``), perhaps after fixing a channel's secret: each
        of ``names`` this process holds back for refused credentials gets its trial at once, its back-off reset,
        unless a trial runs already. Asked once per channel per requeue, so a channel still refusing meets one
        failed login more, not one per element."""
        now = self._clock()
        for name in names:
            refusal = self._refused.get(name)
            if refusal is None or self._trial_running(refusal, now):
                continue
            refusal.next_trial, refusal.backoff = now, self._first
            log.info("parked_trial_asked", channel=name)

    def carry_now(self, names: Iterable[str]) -> None:
        """The notification that asked ``try_now`` for ``names`` made no call to them: it was covered
        (``bridge.pipeline.covering``: the sync that covered it parked the element again), or the channel's item
        was current. The call asked for at once, the trial or the breaker's probe, is made by a carrier sent at
        once, and the requeue task is woken for it: otherwise a channel that was down would wait out the cool-down
        its breaker named (up to 10 minutes), and a refused one the requeue task's next round."""
        now = self._clock()
        for name in names:
            refusal = self._refused.get(name)
            if refusal is not None and not self._trial_running(refusal, now):
                refusal.carrier_sent_at = None  # due when ``try_now`` made it (a refusal since keeps its back-off)
            elif (owed := self._owed.get(name)) is not None:
                owed.next_carrier, owed.backoff, owed.carrier_sent_at = now, self._first, None
            else:
                continue
            self.changed.set()

    def accepted(self, name: str, admission: Admission) -> None:
        """The call was made and the channel authenticated the bridge."""
        if self._owed and name in self._owed:  # a call went through: the channel takes calls again
            owed = self._owed.pop(name)
            log.info("channel_recovered", channel=name, parked_for=owed.reason)
            self._requeue(name)
        if admission is not Admission.TRIAL or name not in self._refused:
            return  # a call admitted before a refusal: the refusal is newer news
        refusal = self._refused.pop(name)
        self._gauges[name].set(0)
        if refusal.confirmed:
            log.info("channel_credentials_accepted", channel=name, refused_for=refusal.reason)
        else:
            log.info("parked_trial_accepted", channel=name)
        self._requeue(name)

    def carried(self, names: Iterable[str]) -> None:
        """A carrier (``CARRIER_SOURCE``) got these channels to accept a call. The worker that sent it may be
        another, which waits for news its own carrier cannot bring: this one requeues the channels' parked elements
        (a channel this process refuses keeps its own trials)."""
        for name in names:
            if name not in self._refused and name not in self.requeue_due:
                log.info("parked_carrier_accepted", channel=name)
                self._requeue(name)

    def _requeue(self, name: str) -> None:
        self.requeue_due.add(name)
        self.changed.set()

    def refused(self, name: str, admission: Admission, error: ChannelCredentialsRefused) -> None:
        """The call was made and the channel refused the bridge's credentials."""
        self._owed.pop(name, None)  # it answered, refusing: the refusal's trials govern from now on
        now = self._clock()
        refusal = self._refused.get(name)
        if refusal is None:
            refusal = self._refused[name] = _Refusal(_quoted(error), self._first, now + self._first, confirmed=False)
        if not refusal.confirmed:  # news: said once, at error level, and shown on the gauge the alert watches
            refusal.confirmed = True
            self._gauges[name].set(1)
            self.requeue_due.discard(name)
            self.changed.set()  # the requeue task's next wake-up is now this channel's next trial
            log.error(
                "channel_credentials_refused",
                channel=name,
                error=str(error),
                hint="the channel's own secret is wrong or revoked: its elements are parked, not dead-lettered, "
                "and requeued once it is accepted (fix the setting the error names, and restart)",
            )
        refusal.reason = _quoted(error)
        if admission is Admission.TRIAL:
            refusal.trial_started = None
            refusal.backoff = min(refusal.backoff * 2, self._max)
            refusal.next_trial = now + refusal.backoff
            refusal.carrier_sent_at = None
            log.info("channel_credentials_still_refused", channel=name, next_trial_in=round(refusal.backoff, 1))

    def inconclusive(self, name: str, admission: Admission, *, breaker_open_for: float | None = None) -> None:
        """The call ended without saying whether the credentials work (the target down, the content refused).

        ``breaker_open_for``: the call failed and the channel's breaker is open for this long now (the call was its
        probe, or the failure that reached its threshold). No open circuit told the parking so, and a channel that
        owes parked elements gets its next carrier no sooner: one sent before would only be parked again."""
        refusal = self._refused.get(name)
        if admission is Admission.TRIAL and refusal is not None:
            self._trial_inconclusive(name, refusal)
        owed = self._owed.get(name)
        if owed is not None and breaker_open_for is not None:
            self._breaker_named(owed, breaker_open_for)

    def _trial_inconclusive(self, name: str, refusal: _Refusal) -> None:
        refusal.trial_started = None
        if not refusal.confirmed:
            # Only suspected (at start-up), and the channel answered something else, or is down: no longer held
            # back. Its parked elements wait for the first call it accepts, as a down channel's do.
            del self._refused[name]
            self._owe(name, "the channel did not take the start-up trial call", self._clock())
            return
        # A message may try at once; a carrier waits longer each time, or a channel that is down would have one
        # parked element after another requeued to meet it.
        refusal.backoff = min(refusal.backoff * 2, self._max)

    def circuit_open(self, name: str, error: ChannelCircuitOpen) -> None:
        """The call met the channel's open breaker: the channel is down, and its elements are parked."""
        if name in self._refused:
            return  # the refusal's trials govern
        now = self._clock()
        owed = self._owed.get(name)
        if owed is None:
            self.requeue_due.discard(name)
            self._owe(name, _quoted(error), now + (error.retry_after or self._first))
            log.warning(
                "channel_down_parking",
                channel=name,
                error=str(error),
                hint="the channel failed every recent call: its elements are parked instead of retried, and "
                "requeued once a call to it succeeds",
            )
            return
        owed.reason = _quoted(error)
        if error.probing:
            # The breaker's probe is in flight: its outcome is the news; a carrier now would only be parked again.
            owed.next_carrier = max(owed.next_carrier, now + self._first)
            return
        self._breaker_named(owed, error.retry_after or self._first)

    def _breaker_named(self, owed: _Owed, open_for: float) -> None:
        """The breaker is open for ``open_for`` seconds from now: no carrier goes before."""
        owed.next_carrier = self._clock() + open_for
        if owed.carrier_sent_at is not None:
            # A call met the breaker, or failed and opened it, since the carrier went (likely the carrier itself):
            # the breaker's time is the news, and the requeue task, which planned the next carrier after the
            # back-off, plans again.
            owed.carrier_sent_at = None
            self.changed.set()

    async def park(self, element_id: int, name: str, reason: str, *, since: datetime | None = None) -> None:
        """Set the element aside for the channel (the state store's errors are the caller's, as any store error);
        ``since``: when it was first parked, for a requeued element parked again."""
        await self._state.park(element_id, name, reason, since=since)
        self._parked[name].inc()
        if name not in self._refused and name not in self._owed:
            # The channel accepted a call while this was written, and the requeue may have read past it.
            self._requeue(name)

    # --- for ParkedRequeue ---

    def carrier_due(self, name: str) -> bool:
        """A refused channel whose trial is due, or an owing one whose breaker may let a probe through, with no
        message on its way to carry it."""
        at = self._carrier_at(name)
        return at is not None and self._clock() >= at

    def _carrier_at(self, name: str) -> float | None:
        """When a carrier may go for the channel (None: it neither refuses nor owes)."""
        refusal = self._refused.get(name)
        if refusal is not None:
            at = refusal.next_trial
            if refusal.trial_started is not None:
                at = max(at, refusal.trial_started + TRIAL_TIMEOUT_SECONDS)
            if refusal.carrier_sent_at is not None:
                at = max(at, refusal.carrier_sent_at + max(refusal.backoff, self._first))
            return at
        owed = self._owed.get(name)
        if owed is None:
            return None
        if owed.carrier_sent_at is not None:
            return max(owed.next_carrier, owed.carrier_sent_at + owed.backoff)
        return owed.next_carrier

    @staticmethod
    def _trial_running(refusal: _Refusal, now: float) -> bool:
        return refusal.trial_started is not None and now - refusal.trial_started < TRIAL_TIMEOUT_SECONDS

    def carrier_sent(self, name: str) -> None:
        held = self._refused.get(name) or self._owed.get(name)
        if held is None:
            return
        # The last one brought no news (another worker took it, and parked it, tried it itself, or the breaker there
        # let it through): wait longer for this one, or each worker would send one carrier per second to the others
        # for as long as it lasts.
        if held.carrier_sent_at is not None:
            held.backoff = min(held.backoff * 2, self._max)
        held.carrier_sent_at = self._clock()

    def nothing_parked(self, name: str) -> None:
        """The channel has no parked element left (another worker requeued them): nothing is owed."""
        if self._owed.pop(name, None) is not None:
            log.info("parked_none_left", channel=name)
        refusal = self._refused.get(name)
        if refusal is not None and not refusal.confirmed and refusal.trial_started is None:
            del self._refused[name]  # a suspicion with nothing left to hold back
        elif refusal is not None:
            # Still refused, with nothing to carry a trial: look again a back-off later, not on every round.
            refusal.carrier_sent_at = self._clock()

    def next_due(self) -> float | None:
        """Seconds until the earliest carrier may go (None: no channel refuses or owes)."""
        times = [at for name in self._channels if (at := self._carrier_at(name)) is not None]
        if not times:
            return None
        return max(0.0, min(times) - self._clock())


class ParkedRequeue:
    """Puts parked elements back on the queue: all of a channel's once it accepts the bridge's credentials again (or
    a call to it succeeds after it was down), and, while it refuses or is down, one per back-off to carry the trial
    or the breaker's probe when no message comes to carry it.

    Every ``sweep_seconds`` it also counts each channel's parked elements (``bridge_channel_parked_elements``),
    and a channel with parked elements this process holds nothing about (parked by another worker, which may have
    stopped since) is owed here too: the next call this process gets the channel to accept (a story's, or a
    carrier's) requeues them. So no parked element waits for the worker that parked it.

    Lifecycle: one task per worker (``run`` until ``stop``), started once the queue is open. Errors: a failed
    send or state store call is logged (``parked_requeue_failed``) and tried again on the next round (at most
    ``retry_seconds`` later); what was not sent stays parked, so nothing is lost.
    """

    def __init__(
        self,
        parking: ChannelParking,
        *,
        state: StateStore,
        transport: Transport,
        channels: Iterable[str],
        retry_seconds: float = 30.0,
        sweep_seconds: float = SWEEP_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._parking = parking
        self._state = state
        self._transport = transport
        self._channels = tuple(channels)
        self._retry = retry_seconds
        self._sweep_every = sweep_seconds
        self._clock = clock
        # ``ChannelParking.load`` counted them at start-up: the first sweep is one interval later.
        self._next_sweep = clock() + sweep_seconds
        self._requeued = {name: metrics.CHANNEL_REQUEUED.labels(name) for name in self._channels}

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._parking.changed.clear()
            wait: float | None = None
            try:
                await self.round()
            except Exception as error:
                log.error("parked_requeue_failed", error=f"{type(error).__name__}: {error}", retry_in=self._retry)
                wait = self._retry
            if wait is None:
                due = self._parking.next_due()
                wait = self._retry if due is None else min(max(due, 0.05), self._retry)
                wait = min(wait, max(self._next_sweep - self._clock(), 0.05))
            stopping = asyncio.ensure_future(stop.wait())
            changed = asyncio.ensure_future(self._parking.changed.wait())
            try:
                await asyncio.wait({stopping, changed}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                changed.cancel()

    async def round(self) -> None:
        """One pass: requeue every channel accepted again, and send a trial's carrier where one is due."""
        for name in self._channels:
            if name in self._parking.requeue_due:
                # Taken off first: a call accepted (or a park written) while the requeue runs asks for another.
                self._parking.requeue_due.discard(name)
                try:
                    count = await self._requeue_all(name)
                except BaseException:
                    self._parking.requeue_due.add(name)  # what was not sent stays parked, for the next round
                    raise
                if count:
                    log.info("parked_requeued", channel=name, requeued=count)
            elif self._parking.carrier_due(name):
                page = await self._state.parked(name, limit=1)
                if not page:  # another worker requeued them all
                    self._parking.nothing_parked(name)
                    continue
                await self._send(page[0], source=CARRIER_SOURCE)
                self._parking.carrier_sent(name)
                log.info("parked_trial_requeued", channel=name, element_id=page[0].element_id)
        if self._clock() >= self._next_sweep:
            await self._sweep()
            self._next_sweep = self._clock() + self._sweep_every

    async def _sweep(self) -> None:
        for name, count in (await self._parking.count_parked()).items():
            if count and self._parking.owe(name, "elements were parked by another worker"):
                log.info("parked_found", channel=name, parked=count)

    async def _requeue_all(self, name: str) -> int:
        count = 0
        chunk: list[Parked] = []
        async for parked in iter_parked(self._state, name):
            chunk.append(parked)
            if len(chunk) == MAX_BATCH:
                if self._held_back(name):
                    return count
                count += await self._send_together(chunk)
                chunk = []
        if chunk and not self._held_back(name):
            count += await self._send_together(chunk)
        return count

    def _held_back(self, name: str) -> bool:
        """Refused again or down again meanwhile: the rest waits for the next acceptance."""
        return self._parking.refusing(name) or self._parking.owes(name)

    async def _send_together(self, chunk: list[Parked]) -> int:
        """Sent at once, so that the transport puts them in one call where it batches (SQS: one SendMessageBatch for
        ten, not ten round trips); each is unparked once the queue holds it. The first failure is raised once every
        send has ended: exactly the elements not sent stay parked."""
        outcomes = await asyncio.gather(*(self._send(parked) for parked in chunk), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return len(chunk)

    async def _send(self, parked: Parked, *, source: str = "parked") -> None:
        body, attributes = resync_notification(
            parked.element_id, source=source, parked_since={parked.channel: parked.since}
        )
        await self._transport.send(body, attributes, group_id=str(parked.element_id))
        # Only once the queue has it: a send that failed leaves the element parked for the next round. And only
        # if not parked again since it was read: a worker may have met a refusal of this very notification.
        await self._state.unpark(parked.element_id, parked.channel, generation=parked.generation)
        self._requeued[parked.channel].inc()


def _quoted(error: Exception) -> str:
    """A refusal's or an open circuit's text as kept: quoted by info lines (``channel_recovered``), which are not
    searched for secrets, and as the reason of elements parked later without a call, so without the process's
    secrets (``bridge.redaction``)."""
    return redaction.SECRETS.redact(str(error))

"""The sync engine: notification → element → channels → state → feedback to Kordiam.

Kordiam is the source of truth: the engine always fetches the current element and makes every channel match
it. What it delivered is recorded per (element, channel, publication) with a fingerprint of the content, so a
duplicate or re-ordered notification, or our own feedback write coming back as a notification, changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

import structlog

from bridge import redaction
from bridge.channels.base import Channel, ChannelResult, FindsItems
from bridge.channels.guard import BreakerState, CircuitBreaker, GuardedChannel
from bridge.config import KORDIAM_FEEDBACK, FeedbackSettings
from bridge.errors import (
    BridgeError,
    ChannelCircuitOpen,
    ChannelCredentialsRefused,
    KordiamCredentialsRefused,
    KordiamRejected,
    KordiamUnavailable,
    TransientError,
)
from bridge.kordiam.client import GONE_STATUSES, KordiamClient
from bridge.kordiam.models import CmsLinks, Element, Publication
from bridge.locks import KeyedLock
from bridge.ops import metrics
from bridge.pipeline.covering import Fetched, FetchLedger, answers, at_least_as_new
from bridge.pipeline.fate import describe, is_transient
from bridge.pipeline.fingerprint import fingerprint, matches
from bridge.pipeline.notification import Event, Notification
from bridge.pipeline.parking import Admission, ChannelParking
from bridge.pipeline.routing import Route
from bridge.queue.slots import WorkSlots
from bridge.state.base import Delivery, ElementBusy, ElementMark, HeldLease, StateStore, is_older
from bridge.valueclass import value_class

log = structlog.get_logger("bridge.sync")


class Action(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    PARKED = "parked"  # the channel refuses the credentials or is down: set aside for it (bridge.pipeline.parking)


# What a call the channel accepted leads to (a channel that was not called, or parked, says nothing of its health).
_CALLED = frozenset({Action.CREATED, Action.UPDATED, Action.DELETED})


@value_class
class ChannelAction:
    channel: str
    publication_id: int
    action: Action
    external_id: str | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """Where a sync failed (``fetch``, ``feedback``, ``lease``, ``state`` or a channel's name) and why; what that
    means for the message is ``bridge.pipeline.fate``'s to say."""

    stage: str
    error: BaseException


@dataclass(slots=True)
class SyncReport:
    element_id: int
    skipped: str | None = None
    covered: bool = False
    deleted_element: bool = False
    actions: list[ChannelAction] = field(default_factory=list)
    feedback: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    # The fetch of a sync without failures (when it started, what it found): what the covering ledger records.
    fetched: Fetched | None = None


COVERED = "covered by a fetch that started after it was sent"
_NO_LINKS: tuple[None, None, None, None] = (None, None, None, None)
# The CMS links' field names (``CmsLinks``, ``Delivery``), in the order ``_links_of`` gives them.
_CMS_NAMES = ("edit_link", "open_link", "edit_link_title", "open_link_title")
# A CMS link or title longer than this (UTF-8) is no link: a channel's answer gone wrong. Kept, it could make the
# delivery too large for the state store (DynamoDB keeps no item over 400 KB), refused after the channel made the
# item. Dropped instead, from the delivery and so from the feedback alike; four of them stay far below the limit.
MAX_LINK_BYTES = 8 * 1024
# Kordiam's feedback writes failing for every element while its reads answer (the outage probe, a read, finds it
# healthy): once the feedback of this many elements failed with ``KordiamUnavailable`` (each after the client's own
# retries) and none went through since, the elements are parked for ``KORDIAM_FEEDBACK`` instead of spending their
# receives, as a channel's are once its breaker opens; the same figures as a channel's defaults.
FEEDBACK_BREAKER_THRESHOLD = 5
FEEDBACK_BREAKER_COOLDOWN = 30.0


class StaleWrite(TransientError):
    """Another worker recorded a newer version of this publication while this one was writing."""


class KordiamBehind(TransientError):
    """Kordiam answered an older version than one the bridge knows of: the version the notification announced, or
    one already synced. Its API may answer from a copy that has not caught up yet; the retry fetches again, and
    the older answer reaches no channel (the channels would keep it: a delivery's fingerprint is recorded only for
    a version at least as new as the recorded one)."""


class ElementChanged(TransientError):
    """Kordiam answered a feedback write 404: the publication (or the element) it names was removed after the fetch.

    Not the message's fault, and not for good: its retry fetches the element again and retracts the item (the
    notification of the removal may never come, or come first and be covered by nothing newer)."""


class SyncFailed(BridgeError):
    """Some stage failed; the successful ones are recorded, so a retry redoes only what failed."""

    def __init__(self, report: SyncReport) -> None:
        self.report = report
        self.failures = report.failures
        super().__init__("; ".join(describe(f) for f in report.failures))


class SyncEngine:
    """Makes every channel hold what Kordiam holds for one element, and tells Kordiam where it landed.

    Lifecycle: one engine per worker, shared by every message; ``sync`` may run concurrently for different
    elements. It owns nothing it must close: the Kordiam client, channels and state store belong to the worker.

    Backpressure: syncs of one element run one after another in this process (a keyed lock) and across workers
    (the state store's lease, which may wait for a live holder); different elements never wait for each other.
    With ``slots`` (the consumer's), a sync takes one only once it knows it has work: a covered notification is
    settled without one, so it never waits behind other elements' syncs. Within a sync the routes run
    concurrently; one route's publications run in order, stopping at its first failure.

    A channel that refuses the bridge's own credentials (``ChannelCredentialsRefused``) or whose circuit is open
    (``ChannelCircuitOpen``) is not a failure of the message: the element is parked for that channel
    (``bridge.pipeline.parking``, reported as ``parked``). While the channel keeps refusing, the engine parks
    without calling it, but for one trial call per back-off; while it is down, its breaker decides which call may
    probe it. Kordiam's feedback writes have a breaker of their own (``_feed_back``): while they fail for every
    element, the element is parked for ``KORDIAM_FEEDBACK`` the same way, its channels written and recorded.

    A sync whose lease was lost before its release (``HeldLease.lost``: it stalled, and another worker may have
    written a newer version before this one's older write landed) is run again at once, under a new lease; the
    store marked the element for a re-sync (``ElementMark.resync``), and a sync that reads that mark skips nothing
    (neither as covered, nor as older, nor by fingerprint) and clears it with its own mark (``_sync_leased``).

    A deleted element (Kordiam answers 404) has every recorded delivery retracted; then each channel that can find
    its items by the element's mark (``FindsItems``) is searched once, and what it finds without a delivery (a
    create whose answer was lost) is retracted too. Nothing else searches a channel.

    Errors: ``sync`` returns a ``SyncReport`` when every stage succeeded and raises ``SyncFailed`` otherwise, with
    one ``Failure`` (stage, error) per failed stage; every other stage's work is recorded first, so a retry redoes
    only what failed. A failure of Kordiam or a channel, and a ``BridgeError`` of the state store, never escape
    otherwise (anything else escaping is a bug); what a failure means for the message is
    ``bridge.pipeline.fate``'s decision, not the engine's.
    """

    def __init__(
        self,
        *,
        kordiam: KordiamClient,
        routes: Sequence[Route],
        state: StateStore,
        feedback: FeedbackSettings,
        main_channel: str,
        fetched: FetchLedger | None = None,
        slots: WorkSlots | None = None,
        parking: ChannelParking | None = None,
    ) -> None:
        # The main channel first: when one publication reaches several channels, its id is the one Kordiam keeps.
        self._routes = sorted(routes, key=lambda route: route.name != main_channel)
        self._kordiam = kordiam
        self._state = state
        self._feedback = feedback
        self._main = main_channel
        self._channels: dict[str, Channel] = {route.name: route.channel for route in self._routes}
        self._finders: dict[str, FindsItems] = {
            route.name: route.channel for route in self._routes if isinstance(route.channel, FindsItems)
        }
        self._locks = KeyedLock()
        self._fetched = fetched or FetchLedger()
        # Elements whose lease this worker lost mid-sync and has not re-synced since: their next sync here is forced,
        # whether or not the store holds the re-sync token (its write may have failed with the store unreachable).
        self._resync_due: set[int] = set()
        # The first parking time per channel a requeued element's notification carried, while it is synced (the
        # element's lock makes that one sync at a time here).
        self._parked_since: dict[int, Mapping[str, datetime]] = {}
        self._slots = slots
        self.parking = parking or ChannelParking(state, [*(route.name for route in self._routes), KORDIAM_FEEDBACK])
        self._feedback_breaker = CircuitBreaker(
            KORDIAM_FEEDBACK, threshold=FEEDBACK_BREAKER_THRESHOLD, cooldown=FEEDBACK_BREAKER_COOLDOWN
        )
        # The elements whose feedback failed since a feedback write last went through: the breaker counts each once,
        # so one element whose writes Kordiam cannot take never opens it (its retries are its own, and dead-letter it).
        self._feedback_failing: set[int] = set()
        # Labelled once: looking a metric's labels up takes a lock and builds a key, on every message otherwise.
        self._upsert_seconds = {r.name: metrics.CHANNEL_LATENCY.labels(r.name, "upsert") for r in self._routes}
        self._feedback_writes = {
            kind: metrics.FEEDBACK_WRITES.labels(kind) for kind in ("publication", "publish", "link", "clear", "unlink")
        }

    def _probe_now(self, names: frozenset[str]) -> None:
        """A channel that is down (its breaker open) and was fixed: the requeued element that names it carries the
        breaker's probe at once, and its success requeues the rest, rather than each meeting the open breaker and
        being parked again until the cool-down ends."""
        for name in sorted(names):
            channel = self._channels.get(name)
            breaker = self._feedback_breaker if name == KORDIAM_FEEDBACK else None
            if isinstance(channel, GuardedChannel):
                breaker = channel.breaker
            if breaker is not None and breaker.probe_now():
                log.info("parked_trial_asked", channel=name)

    async def sync(
        self, notification: Notification, *, sent_at: float | None = None, received_at: float | None = None
    ) -> SyncReport:
        """Bring every channel in line with the element; raise ``SyncFailed`` if any stage failed.

        ``sent_at`` is when the queue took the notification (the broker's clock), ``received_at`` when this
        worker received it (``time.monotonic``); a notification covered by a fetch that started later (see
        ``FetchLedger``) is reported as skipped without a fetch. Notifications of one element wait for its lock
        in arrival order; the first to get it fetches, and that fetch started after every other waiter was
        received, so they all share it: N notifications waiting together cost one fetch. A work slot is taken only
        after the lock and the covering check, so waiting for the element's sync holds none.
        """
        if notification.try_now:  # `parked requeue`: the channel's secret, or the channel itself, may be fixed
            self.parking.try_now(notification.try_now)
            self._probe_now(notification.try_now)
        async with self._locks.hold(notification.element_id):
            if notification.element_id in self._resync_due and not notification.force:
                # This worker owes the element a re-sync (``_sync_leased``): forced, token or not.
                notification = replace(notification, force=True)
            # A forced replay asks for every channel to be written again: no earlier fetch covers it.
            if not notification.force and self._fetched.covers(
                notification.element_id,
                sent_at,
                received_at,
                announced=notification.modification_date,
                deletion=notification.event is Event.DELETED,
            ):
                metrics.NOTIFICATIONS_COALESCED.inc()
                self.parking.carry_now(notification.try_now)
                return SyncReport(notification.element_id, skipped=COVERED, covered=True)
            if notification.parked_since:  # a requeued element: parked again, it keeps its first parking time
                self._parked_since[notification.element_id] = notification.parked_since
            try:
                report = await self._sync_leased(notification, sent_at=sent_at)
                # Before the message is acknowledged: a delivery the store forgot after a crash of the host would
                # be published again at the element's next change.
                await self._state.flush()
            except ElementBusy as busy:
                report = SyncReport(notification.element_id, failures=[Failure("lease", busy)])
            except BridgeError as error:  # the state store itself failed (transient or permanent, as it says)
                report = SyncReport(notification.element_id, failures=[Failure("state", error)])
            finally:
                self._parked_since.pop(notification.element_id, None)
        if notification.carrier:  # another worker may be waiting for this news of its channel
            called = {action.channel for action in report.actions if action.action in _CALLED}
            if report.feedback and KORDIAM_FEEDBACK in notification.parked_since:  # it carried Kordiam's writes' probe
                called.add(KORDIAM_FEEDBACK)
            self.parking.carried(called)
        if report.failures:
            raise SyncFailed(report)
        if report.covered:
            metrics.NOTIFICATIONS_COALESCED.inc()
        if notification.try_now:
            # Covered, or the channel's item current: the call asked for at once was not made; a carrier makes it.
            reached = {action.channel for action in report.actions if action.action is not Action.UNCHANGED}
            self.parking.carry_now(notification.try_now - reached)
        return report

    async def _sync_leased(self, notification: Notification, *, sent_at: float | None) -> SyncReport:
        """``_sync`` under the element's lease; once more at once if the lease was lost before its release.

        A sync that lost its lease (stalled past ``state.lease_seconds``) may have written its version to a
        channel after the newer one of the worker that took the element over; the conditional records keep the
        newer delivery, whose fingerprint would make every later sync skip the channel. The release marks the
        element for a re-sync instead (``ElementMark.resync``), and the sync runs again under a new lease, forced
        (should the store have failed to set the token, the loss is known all the same): it fetches the newest
        version and rewrites every channel to the items its deliveries name (nothing published twice). Should that
        lose its lease too, or find the element busy, the message is retried; the token stays, so whichever sync of
        the element comes next rewrites the channels, and this worker remembers the re-sync it owes: its own next
        sync of the element is forced, token or not, until one rewrote every channel.
        """
        element_id = notification.element_id
        for attempt in (1, 2):
            held: HeldLease | None = None
            try:
                async with self._slot(), self._state.lease(element_id) as held:
                    report = await self._sync(notification, held, sent_at=sent_at)
            finally:
                if held is not None and held.lost:  # also when the sync raised: the release has told
                    self._resync_due.add(element_id)
            if not held.lost:
                # Only now is the mark recorded (with the release): a fetch whose mark failed covers nothing.
                if (fetched := report.fetched) is not None:
                    self._fetched.record(element_id, fetched)
                    if notification.force and not _parked_a_channel(report):
                        self._resync_due.discard(element_id)  # every channel rewritten: the owed re-sync made good
                return report
            log.warning(
                "element_resync",
                element_id=element_id,
                attempt=attempt,
                hint="this sync lost the element's lease before its release; another worker may have written a "
                "newer version before this one's older write landed: the element is marked for a re-sync, "
                + ("run now" if attempt == 1 else "left to the message's retry"),
            )
            # Forced whatever the token says: the store may have failed to set it (DynamoDB's write of its own).
            notification = replace(notification, force=True)
        lost = StaleWrite(f"lost the lease of element {element_id} twice; retry later (a re-sync is due)")
        report.failures.append(Failure("lease", lost))
        return report

    def _slot(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._slots.hold() if self._slots is not None else contextlib.nullcontext()

    async def _sync(self, notification: Notification, lease: HeldLease, *, sent_at: float | None = None) -> SyncReport:
        element_id = notification.element_id
        report = SyncReport(element_id)
        # One read of the element's mark answers both skips: a fetch another worker (or this one, before its
        # ledger forgot) started after the notification was sent, and a notification older than what was synced;
        # and whether a re-sync is due (``ElementMark.resync``), which neither skips nor trusts the fingerprints.
        # Read for every message, a forced one too (its mark clears the token), and what the fetch's answer must not be
        # older than (``_behind``): free where the lease's take returns it (SQLite), a read of its own on DynamoDB.
        mark = lease.mark_at_take if lease.mark_at_take_known else await self._state.element_mark(element_id)
        resync = mark.resync if mark is not None else None
        force = notification.force or resync is not None
        if not force:
            if (
                sent_at is not None
                and mark is not None
                and self._fetched.covered_by(mark.fetched_at, sent_at)
                and answers(
                    mark.modification_date,
                    mark.deleted,
                    announced=notification.modification_date,
                    deletion=notification.event is Event.DELETED,
                )
            ):
                assert mark.fetched_at is not None
                self._fetched.record(
                    element_id, Fetched(mark.fetched_at, synced=mark.modification_date, gone=mark.deleted)
                )
                report.skipped, report.covered = COVERED, True
                return report
            if _older(notification, mark):
                report.skipped = "older than the version already synced"
                return report

        # What the channels hold is read while the element is fetched (both only need the lease), unless the
        # store answers in process: then a task to overlap them would cost more than the read.
        reading = None if self._state.reads_in_process else asyncio.ensure_future(self._state.deliveries(element_id))
        deliveries = await self._state.deliveries(element_id) if reading is None else []
        fetch_started, local_start = time.time(), time.monotonic()
        try:
            element = await self._kordiam.get_element(element_id)
        except Exception as error:
            report.failures.append(Failure("fetch", error))
            return report
        finally:
            if reading is not None:  # waited for even when the fetch failed, so a read never outlives the lease
                deliveries = await reading
        # What the channels hold, kept current through this sync (retractions, deliveries) for the feedback.
        held = {(d.channel, d.publication_id): d for d in deliveries}
        if element is None:
            report.deleted_element = True
            await self._retract(deliveries, keep=set(), report=report, held=held, element=None)
            await self._retract_unrecorded(element_id, deliveries, report)
            if not report.failures:
                lease.mark_on_release(
                    ElementMark(element_id, None, None, deleted=True, fetched_at=fetch_started, resync=resync)
                )
                report.fetched = Fetched(fetch_started, local_start, gone=True)
            return report
        if behind := _behind(element, notification, mark):
            report.failures.append(Failure("fetch", KordiamBehind(f"Kordiam answered element {element_id} {behind}")))
            return report

        carried = {(r.name, p.id) for r in self._routes for p in element.publications if r.carries(p)}
        # The element as Kordiam holds it once the retractions cleared their feedback (the same object otherwise).
        # Retractions from an element-scoped channel whose remote item still stands for a sibling: the sibling's
        # upsert sends the element without them (``_deliver``), instead of a delete of the shared item.
        shared: dict[str, list[Delivery]] = {}
        cleared, clear_failed = await self._retract(
            deliveries, keep=carried, report=report, held=held, element=element, shared=shared
        )
        element = cleared or element  # None only for a deleted element
        await _concurrently(
            [
                self._deliver(route, element, held, report, force=force, retracted=shared.get(route.name))
                for route in self._routes
            ]
        )

        # After a failed clear Kordiam's answers are in doubt and a retracted delivery may still be held: the retry
        # (or redrive) writes every publication's feedback, after its clear.
        if self._feedback.enabled and not clear_failed:
            await self._feed_back(element, held, report)
        if not report.failures:
            # A channel parked meanwhile was not rewritten: the re-sync token stays for the sync its requeue brings
            # (not forced, and that channel's delivery fingerprint may match an older item's).
            if resync is not None and _parked_a_channel(report):
                resync = None
            # Recorded with the lease's release, in one transaction where the store can: one write fewer.
            lease.mark_on_release(
                ElementMark(
                    element_id,
                    element.modification_date,
                    element.version,
                    deleted=False,
                    fetched_at=fetch_started,
                    resync=resync,
                )
            )
            report.fetched = Fetched(fetch_started, local_start, synced=element.modification_date)
        return report

    async def _deliver(
        self,
        route: Route,
        element: Element,
        held: dict[tuple[str, int], Delivery],
        report: SyncReport,
        *,
        force: bool = False,
        retracted: list[Delivery] | None = None,
    ) -> None:
        """Upsert this route's publications one after another; stop at the first failure of this channel.

        A publication whose fingerprint matches what the channel was last given is left alone, unless ``force``.
        ``retracted``: publications that left this element-scoped channel while its remote item stays for others
        (``_retract``); the first publication the route exports is upserted whatever its fingerprint, which sends
        the element without them, and only then are their deliveries forgotten. Until then they stay recorded, so
        a retry (or the next sync that exports a sibling) does it again. When the route exports none (the siblings
        still on the remote item are in statuses its filter does not let through), a sibling on that item is
        upserted anyway: the filter decides when an export starts, not whether a withdrawal is sent, and the
        story is not deleted, so the remote item is sent without them rather than deleted.
        """
        pending = list(retracted or ())
        # For an element-scoped channel every publication shares one remote item: the state store (shared by
        # all workers) says which, so a new publication updates it instead of creating a second one.
        sibling = next((d.external_id for (channel, _), d in held.items() if channel == route.name), None)
        exported = [p for p in element.publications if route.exports(p)]
        if pending and not exported:
            exported = _stand_in(route, element, held, pending)
        for publication in exported:
            previous = held.get((route.name, publication.id))
            digest = fingerprint(element, publication)
            if (
                previous is not None
                and not force
                and not pending
                and matches(previous.fingerprint, digest, element, publication)
            ):
                report.actions.append(ChannelAction(route.name, publication.id, Action.UNCHANGED, previous.external_id))
                continue
            external_id = previous.external_id if previous else (sibling if route.element_scoped else None)
            admission = self.parking.admit(route.name)
            if admission is Admission.PARK:
                await self._park(element.id, route.name, publication.id, None, report)
                return
            started = time.perf_counter()
            try:
                result = await route.channel.upsert(element, publication, external_id)
            except Exception as error:
                if await self._set_aside(route.name, admission, error, element.id, publication.id, None, report):
                    return
                self._call_failed(route.name, admission)
                metrics.CHANNEL_ERRORS.labels(route.name, _kind(error)).inc()
                report.failures.append(Failure(route.name, error))
                return
            finally:
                self._upsert_seconds[route.name].observe(time.perf_counter() - started)
            self.parking.accepted(route.name, admission)
            delivery = _delivery(element, publication, route.name, result, digest)
            if not await self._state.record(delivery):
                # Only possible if a sync outlived its lease: its release marks the element for a re-sync.
                report.failures.append(Failure(route.name, StaleWrite(f"a newer version of {element.id} was synced")))
                return
            held[(route.name, publication.id)] = delivery
            sibling = result.external_id
            action = Action.CREATED if external_id is None or external_id != result.external_id else Action.UPDATED
            report.actions.append(ChannelAction(route.name, publication.id, action, result.external_id))
            for gone in pending:  # the remote item no longer carries them
                await self._state.forget(gone.element_id, gone.channel, gone.publication_id)
                report.actions.append(
                    ChannelAction(gone.channel, gone.publication_id, Action.DELETED, gone.external_id)
                )
            pending = []

    async def _retract(
        self,
        deliveries: list[Delivery],
        *,
        keep: set[tuple[str, int]],
        report: SyncReport,
        held: dict[tuple[str, int], Delivery],
        element: Element | None,
        shared: dict[str, list[Delivery]] | None = None,
    ) -> tuple[Element | None, bool]:
        """Delete what channels hold for publications the element no longer has on their platforms.

        With feedback on and the element still in Kordiam, each retraction first clears what the bridge wrote
        there for the item (``_clear_feedback``), then deletes the item, then forgets the delivery: the delivery
        is the bridge's only proof that a value in Kordiam is its own, so it is forgotten last, and every step
        is safe to redo. With ``shared``, the retraction of a publication from an element-scoped channel whose
        remote item a kept sibling still stands on is not a delete (which would take the sibling's item too, and
        its unchanged delivery would never make it again): after its clear it goes into ``shared`` for
        ``_deliver``. A clear that fails and may heal (or that met refused credentials) leaves that retraction
        whole for the retry (item and delivery in place, so a publication moved back meanwhile is still
        consistent) and stops the other clears; one Kordiam refuses for good does not hold the item hostage: it
        is deleted and forgotten anyway, the refusal reported (stage ``feedback``). Returns the element as
        Kordiam now holds it and whether a clear failed.
        """
        failed: set[str] = set()
        clear_failed = kordiam_failing = False
        for delivery in deliveries:
            key = (delivery.channel, delivery.publication_id)
            if key in keep or delivery.channel in failed:
                continue
            channel = self._channels.get(delivery.channel)
            if channel is None:
                log.warning(
                    "delivery_for_unknown_channel",
                    element_id=delivery.element_id,
                    channel=delivery.channel,
                    external_id=delivery.external_id,
                    hint="the channel was removed from the config; its item was left in place",
                )
                continue
            admission = self.parking.admit(delivery.channel)
            if admission is Admission.PARK:
                await self._park(delivery.element_id, delivery.channel, delivery.publication_id, delivery, report)
                failed.add(delivery.channel)
                continue
            # (A channel that refuses the bridge's credentials keeps its item for now: nothing to clear yet.)
            if element is not None and self._feedback.enabled:
                if kordiam_failing and _holds_ours(element, delivery, self._main, self._feedback.link_element):
                    self.parking.inconclusive(delivery.channel, admission)  # the channel was not called
                    continue  # Kordiam just failed a clear: this one waits for the retry too, item and all
                try:
                    element = await self._clear_feedback(element, delivery, keep, report)
                except Exception as error:
                    report.failures.append(Failure("feedback", error))
                    clear_failed = True
                    if is_transient(error) or isinstance(error, KordiamCredentialsRefused):
                        kordiam_failing = True
                        self.parking.inconclusive(delivery.channel, admission)
                        continue
                    log.warning(
                        "feedback_clear_refused",
                        element_id=delivery.element_id,
                        publication_id=delivery.publication_id,
                        channel=delivery.channel,
                        external_id=delivery.external_id,
                        error=str(error)[:300],
                        hint="Kordiam refused to clear the retracted item's externalId and links; the item is "
                        "retracted anyway, and Kordiam keeps pointing at it until an editor clears them",
                    )
            if shared is not None and channel.element_scoped and _stands_for_sibling(delivery, held, keep):
                self.parking.inconclusive(delivery.channel, admission)  # the channel was not called
                held.pop(key, None)  # no longer the publication's feedback
                shared.setdefault(delivery.channel, []).append(delivery)
                continue
            started = time.perf_counter()
            try:
                await channel.delete(delivery.element_id, delivery.publication_id, delivery.external_id)
            except Exception as error:
                if await self._set_aside(
                    delivery.channel, admission, error, delivery.element_id, delivery.publication_id, delivery, report
                ):
                    failed.add(delivery.channel)
                    continue
                self._call_failed(delivery.channel, admission)
                metrics.CHANNEL_ERRORS.labels(delivery.channel, _kind(error)).inc()
                report.failures.append(Failure(delivery.channel, error))
                failed.add(delivery.channel)
                continue
            finally:
                metrics.CHANNEL_LATENCY.labels(delivery.channel, "delete").observe(time.perf_counter() - started)
            self.parking.accepted(delivery.channel, admission)
            await self._state.forget(delivery.element_id, delivery.channel, delivery.publication_id)
            held.pop(key, None)
            report.actions.append(
                ChannelAction(delivery.channel, delivery.publication_id, Action.DELETED, delivery.external_id)
            )
        return element, clear_failed

    async def _clear_feedback(
        self, element: Element, delivery: Delivery, keep: set[tuple[str, int]], report: SyncReport
    ) -> Element:
        """Clear in Kordiam what points at the item ``delivery`` names, before the item is retracted.

        Only values still equal to what the bridge delivered are cleared (an editor's or another integration's are
        left): the publication's ``externalId`` and each of its CMS links, if the element still has it (moved to a
        platform no channel takes, or its platform dropped from a channel's ``platforms``); and the element's link,
        if it names this main-channel item and no other publication of the element stays on the main channel (when
        one does, the feedback links the element to that one). Returns the element as Kordiam then holds it, so the
        feedback that follows compares with what is there now.
        """
        publication = element.publication(delivery.publication_id)
        if publication is not None:
            clear_id, links = _ours_in(publication, delivery)
            held = publication.cms
            if clear_id or links:
                await self._kordiam.clear_publication(element.id, publication.id, external_id=clear_id, cms=links)
                self._feedback_writes["clear"].inc()
                report.feedback.append(
                    f"publication {publication.id}: cleared {delivery.channel} {delivery.external_id}"
                )
                cms = held.model_copy(update=dict.fromkeys(links)) if held is not None and links else held
                cleared = publication.model_copy(
                    update={"external_id": None if clear_id else publication.external_id, "cms": cms}
                )
                element = element.model_copy(
                    update={"publications": tuple(cleared if p is publication else p for p in element.publications)}
                )
        if _links_element_to(element, delivery, self._main, self._feedback.link_element) and not any(
            channel == self._main and publication_id != delivery.publication_id for channel, publication_id in keep
        ):
            await self._kordiam.unlink_external_element(element.id)
            self._feedback_writes["unlink"].inc()
            report.feedback.append(f"element {element.id}: unlinked from {delivery.channel} {delivery.external_id}")
            element = element.model_copy(update={"external_element": None})
        return element

    async def _retract_unrecorded(self, element_id: int, deliveries: list[Delivery], report: SyncReport) -> None:
        """Search each channel that can (``FindsItems``) for the deleted element's items, and retract those the
        state store has no delivery for. A channel whose recorded retraction failed is left for the retry."""
        failed = {failure.stage for failure in report.failures}
        failed.update(action.channel for action in report.actions if action.action is Action.PARKED)
        steps = [
            self._retract_found(
                name, finder, element_id, {d.external_id for d in deliveries if d.channel == name}, report
            )
            for name, finder in self._finders.items()
            if name not in failed
        ]
        if steps:
            await _concurrently(steps)

    async def _retract_found(
        self, name: str, finder: FindsItems, element_id: int, recorded: set[str], report: SyncReport
    ) -> None:
        channel = self._channels[name]
        admission = self.parking.admit(name)
        if admission is Admission.PARK:
            await self._park(element_id, name, None, None, report)
            return
        try:
            for item in await finder.find_items(element_id):
                if item.external_id in recorded:
                    continue  # retracted (or kept, as its channel's delete mode says) as a recorded delivery
                started = time.perf_counter()
                try:
                    await channel.delete(element_id, item.publication_id, item.external_id)
                finally:
                    metrics.CHANNEL_LATENCY.labels(name, "delete").observe(time.perf_counter() - started)
                log.warning(
                    "unrecorded_item_retracted",
                    channel=name,
                    element_id=element_id,
                    publication_id=item.publication_id,
                    external_id=item.external_id,
                    hint="the element was deleted; this item carried its mark but no delivery was recorded for it "
                    "(a create whose answer was lost)",
                )
                report.actions.append(ChannelAction(name, item.publication_id, Action.DELETED, item.external_id))
        except Exception as error:
            if await self._set_aside(name, admission, error, element_id, None, None, report):
                return
            self._call_failed(name, admission)
            metrics.CHANNEL_ERRORS.labels(name, _kind(error)).inc()
            report.failures.append(Failure(name, error))
            return
        self.parking.accepted(name, admission)

    def _call_failed(self, name: str, admission: Admission) -> None:
        """Tell the parking a call to the channel failed, for a reason of the message's or the channel's: with how
        long the channel's breaker is open now, as another call may have opened it meanwhile (a failure that opens
        it is set aside, ``_set_aside``)."""
        channel = self._channels[name]
        open_for = channel.breaker.retry_after() if isinstance(channel, GuardedChannel) else None
        self.parking.inconclusive(name, admission, breaker_open_for=open_for)

    async def _set_aside(
        self,
        channel: str,
        admission: Admission,
        error: Exception,
        element_id: int,
        publication_id: int | None,
        delivery: Delivery | None,
        report: SyncReport,
    ) -> bool:
        """Park the element if the call failed because the channel refused the bridge's credentials or its circuit
        is open, or if its failure opened the channel's breaker (the ``threshold``-th, or a failed probe), and tell
        the parking so; False for any other error (the message's failure)."""
        if isinstance(error, ChannelCredentialsRefused):
            # A call the channel answered, refusing: a failed write (an open circuit's fail-fast reached nothing).
            metrics.CHANNEL_ERRORS.labels(channel, "credentials_refused").inc()
            self.parking.refused(channel, admission, error)
        elif isinstance(error, ChannelCircuitOpen):
            self.parking.inconclusive(channel, admission)  # the call never reached the channel
            self.parking.circuit_open(channel, error)
        elif is_transient(error) and (circuit := self._opened_by(channel)) is not None:
            # Parked like the calls that meet the breaker next, not retried: the probe's message would spend a
            # receive on every failed probe, and be dead-lettered so.
            metrics.CHANNEL_ERRORS.labels(channel, _kind(error)).inc()  # this call reached the channel and failed
            self.parking.inconclusive(channel, admission)
            self.parking.circuit_open(channel, circuit)
            error = circuit  # its text names the failure
        else:
            return False
        # The refusal may quote anything (an exception's text, a proxy's page): `parked` and `element` show it.
        reason = redaction.SECRETS.redact(str(error))
        await self._park(element_id, channel, publication_id, delivery, report, reason=reason)
        return True

    def _opened_by(self, name: str) -> ChannelCircuitOpen | None:
        """What the channel's breaker says now that a call failed (None: not open, or a channel without one)."""
        channel = self._channels.get(name)
        return channel.breaker.open_error() if isinstance(channel, GuardedChannel) else None

    async def _park(
        self,
        element_id: int,
        channel: str,
        publication_id: int | None,
        delivery: Delivery | None,
        report: SyncReport,
        *,
        reason: str | None = None,
    ) -> None:
        """Set the element aside for a channel that refuses the bridge's credentials or is down
        (``bridge.pipeline.parking``); the rest of the sync goes on. ``publication_id`` None: the search for a
        deleted element's items. ``reason``: the error that parks it (default: the channel's refusal)."""
        since = self._parked_since.get(element_id, {}).get(channel)
        await self.parking.park(element_id, channel, reason or self.parking.reason(channel), since=since)
        external_id = delivery.external_id if delivery is not None else None
        report.actions.append(ChannelAction(channel, publication_id or 0, Action.PARKED, external_id))

    async def _feed_back(self, element: Element, held: dict[tuple[str, int], Delivery], report: SyncReport) -> None:
        """The feedback step behind its breaker: while Kordiam's writes fail for every element, the element is parked
        for ``KORDIAM_FEEDBACK`` (its channels are written and recorded: the requeue's sync writes only the
        feedback), and requeued once a feedback write succeeds again (``bridge.pipeline.parking``). The breaker is
        asked only before the step's first write: a step with nothing to write is never parked, and says nothing of
        Kordiam's writes."""
        admission = self.parking.admit(KORDIAM_FEEDBACK)
        if admission is Admission.PARK:
            await self._park(element.id, KORDIAM_FEEDBACK, None, None, report)
            return
        breaker = self._feedback_breaker
        asked = False

        def before_write() -> None:
            nonlocal asked
            if not asked:
                breaker.before_call()  # half-open, it lets one call through: asked once per step
                asked = True

        try:
            await self._write_feedback(element, held, report, before_write)
        except ChannelCircuitOpen as error:
            await self._set_aside(KORDIAM_FEEDBACK, admission, error, element.id, None, None, report)
        except Exception as error:
            if asked and isinstance(error, KordiamUnavailable):
                if breaker.state is not BreakerState.CLOSED:
                    breaker.failed(error)
                elif element.id not in self._feedback_failing:
                    self._feedback_failing.add(element.id)
                    breaker.failed(error)
                if (circuit := breaker.open_error()) is not None:
                    # This failure opened the breaker, or was its probe: parked like the elements that meet it
                    # next, not retried (the probe's message would spend a receive on every failed probe).
                    await self._set_aside(KORDIAM_FEEDBACK, admission, circuit, element.id, None, None, report)
                    return
            elif asked:  # Kordiam answered (a refusal, a removed publication): nothing of its writes' health
                breaker.release_probe()
            self.parking.inconclusive(KORDIAM_FEEDBACK, admission, breaker_open_for=breaker.retry_after())
            report.failures.append(Failure("feedback", _changed_since_fetch(error)))
        except BaseException:
            if asked:  # cancelled: a probe left marked in flight would hold every later one back
                breaker.release_probe()
            raise
        else:
            if asked:
                self._feedback_failing.clear()
                breaker.succeeded()
                self.parking.accepted(KORDIAM_FEEDBACK, admission)
            else:
                self.parking.inconclusive(KORDIAM_FEEDBACK, admission)

    async def _write_feedback(
        self,
        element: Element,
        deliveries: dict[tuple[str, int], Delivery],
        report: SyncReport,
        before_write: Callable[[], None],
    ) -> None:
        """Tell Kordiam where each publication landed, skipping every value Kordiam already holds; ``before_write``
        is called before each write (it raises ``ChannelCircuitOpen`` while Kordiam's writes are held back)."""
        linked = False
        for publication in element.publications:
            # The first route (main channel first) that holds this publication and still carries it speaks for it:
            # a delivery whose retraction waits (parked for a channel that is down, or failed) names an item the
            # publication has left, which the feedback would write back over the one it is on now, just cleared.
            delivery = next(
                (
                    deliveries[(r.name, publication.id)]
                    for r in self._routes
                    if (r.name, publication.id) in deliveries and r.carries(publication)
                ),
                None,
            )
            if delivery is None:
                continue
            await self._publication_feedback(element, publication, delivery, report, before_write)
            if self._feedback.link_element and not linked and delivery.channel == self._main:
                linked = True
                await self._link_element(element, delivery, report, before_write)

    async def _publication_feedback(
        self,
        element: Element,
        publication: Publication,
        delivery: Delivery,
        report: SyncReport,
        before_write: Callable[[], None],
    ) -> None:
        ours = _links_of(delivery)
        held = publication.cms
        theirs = _links_of(held) if held else _NO_LINKS
        cms_stale = any(mine is not None and mine != kordiams for mine, kordiams in zip(ours, theirs, strict=True))
        id_stale = publication.external_id != delivery.external_id
        if id_stale or cms_stale:
            cms = None
            if cms_stale:
                cms = CmsLinks(
                    edit_link=delivery.edit_link,
                    open_link=delivery.open_link,
                    edit_link_title=delivery.edit_link_title,
                    open_link_title=delivery.open_link_title,
                )
            before_write()
            await self._kordiam.update_publication(
                element.id, publication.id, external_id=delivery.external_id if id_stale else None, cms=cms
            )
            self._feedback_writes["publication"].inc()
            report.feedback.append(f"publication {publication.id}: externalId={delivery.external_id}")
        wants_publish = delivery.live and not publication.is_published and self._feedback.publish_when_live
        if wants_publish:
            before_write()
        if wants_publish and await self._kordiam.publish_publication(element.id, publication.id):
            self._feedback_writes["publish"].inc()
            report.feedback.append(f"publication {publication.id}: published")

    async def _link_element(
        self, element: Element, delivery: Delivery, report: SyncReport, before_write: Callable[[], None]
    ) -> None:
        link = delivery.edit_link or delivery.open_link
        held = element.external_element
        if held is not None and held.external_id == delivery.external_id and (link is None or held.link == link):
            return
        before_write()
        await self._kordiam.link_external_element(element.id, external_id=delivery.external_id, link=link)
        self._feedback_writes["link"].inc()
        report.feedback.append(f"element {element.id}: linked to {delivery.channel} {delivery.external_id}")


async def _concurrently(steps: list[Coroutine[Any, Any, None]]) -> None:
    """Run the steps concurrently; a lone step runs in the caller's task (a task per message costs CPU)."""
    if len(steps) == 1:
        await steps[0]
    else:
        # Every step ends before the sync does: one that failed must not leave another's channel call running past
        # the element's lease, where the message's retry would make the same create again.
        results = await asyncio.gather(*steps, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result


def _parked_a_channel(report: SyncReport) -> bool:
    """Whether the sync left a channel unwritten, parked for it (the feedback parked leaves every channel written)."""
    return any(a.action is Action.PARKED and a.channel != KORDIAM_FEEDBACK for a in report.actions)


def _changed_since_fetch(error: Exception) -> Exception:
    """A feedback write's error as the message's fate should see it: a 404 (or 410) is ``ElementChanged``
    (retried), where a ``KordiamRejected`` would dead-letter a message for an editor's removal that raced its sync."""
    if isinstance(error, KordiamRejected) and error.status in GONE_STATUSES:
        changed = ElementChanged(f"{error} (removed in Kordiam after the fetch; the retry fetches it again)")
        changed.__cause__ = error
        return changed
    return error


def _behind(element: Element, notification: Notification, mark: ElementMark | None) -> str | None:
    """What the fetched element is older than, if anything (``KordiamBehind``): the version the notification
    announced (compared to the second, as ``covering.answers``), the deletion of the version a deletion's body
    names (an element modified since was restored: it stands), or the version already synced."""
    found, announced = element.modification_date, notification.modification_date
    if notification.event is Event.DELETED:
        if found is not None and announced is not None and at_least_as_new(announced, found):
            return f"as modified {found.isoformat()}, not since the {announced.isoformat()} its deletion named"
    elif found is not None and announced is not None and not at_least_as_new(found, announced):
        return f"as modified {found.isoformat()}, older than the {announced.isoformat()} its notification announced"
    if mark is not None and not mark.deleted:
        synced = (mark.modification_date, mark.version)
        if is_older((found, element.version), synced):
            return f"at version {_version(found, element.version)}, older than {_version(*synced)} already synced"
    return None


def _version(modified: datetime | None, version: int | None) -> str:
    return f"{modified.isoformat() if modified else '-'}/{version if version is not None else '-'}"


def _older(notification: Notification, mark: ElementMark | None) -> bool:
    """A notification that carries a modification date older than the one already synced needs no work, compared
    to the second (``covering.at_least_as_new``): a body may give the date to the second where the API gave the
    synced one in milliseconds, and a newer save within the same second would read older. Never a deletion: it
    announces the element gone, which no synced version is newer than."""
    if notification.event is Event.DELETED:
        return False
    if notification.modification_date is None or mark is None or mark.modification_date is None:
        return False
    return not at_least_as_new(notification.modification_date, mark.modification_date)


def _stands_for_sibling(
    delivery: Delivery, held: Mapping[tuple[str, int], Delivery], keep: set[tuple[str, int]]
) -> bool:
    """Whether a publication the channel keeps has its delivery on the same remote item as ``delivery``."""
    return any(
        key in keep and other.external_id == delivery.external_id
        for key, other in held.items()
        if key[0] == delivery.channel and key[1] != delivery.publication_id
    )


def _stand_in(
    route: Route, element: Element, held: Mapping[tuple[str, int], Delivery], retracted: list[Delivery]
) -> list[Publication]:
    """The first publication the route carries whose delivery is on the remote item of a retracted one."""
    items = {gone.external_id for gone in retracted}
    for publication in element.publications:
        delivery = held.get((route.name, publication.id))
        if route.carries(publication) and delivery is not None and delivery.external_id in items:
            return [publication]
    return []


def _links_of(links: Delivery | CmsLinks | ChannelResult) -> tuple[str | None, str | None, str | None, str | None]:
    """The four CMS links, in ``_CMS_NAMES``' order: what a channel answered, a delivery carries, or Kordiam holds."""
    return (links.edit_link, links.open_link, links.edit_link_title, links.open_link_title)


def _links_element_to(element: Element, delivery: Delivery, main: str, link_element: bool) -> bool:
    """Whether the element's link is the one the feedback made to this main-channel delivery's item."""
    held = element.external_element
    return link_element and delivery.channel == main and held is not None and held.external_id == delivery.external_id


def _holds_ours(element: Element, delivery: Delivery, main: str, link_element: bool) -> bool:
    """Whether Kordiam still holds a value the feedback wrote for this delivery (what ``_clear_feedback`` clears)."""
    publication = element.publication(delivery.publication_id)
    if publication is not None:
        clear_id, links = _ours_in(publication, delivery)
        if clear_id or links:
            return True
    return _links_element_to(element, delivery, main, link_element)


def _ours_in(publication: Publication, delivery: Delivery) -> tuple[bool, list[str]]:
    """What of the delivery's feedback the publication still holds: its ``externalId`` (whether it does) and the
    names of the CMS links still equal to the delivery's. A value that differs was set by someone else."""
    same_id = publication.external_id is not None and publication.external_id == delivery.external_id
    theirs = _links_of(publication.cms) if publication.cms else _NO_LINKS
    links = [
        name
        for name, mine, kordiams in zip(_CMS_NAMES, _links_of(delivery), theirs, strict=True)
        if mine is not None and mine == kordiams
    ]
    return same_id, links


def _delivery(element: Element, publication: Publication, channel: str, result: ChannelResult, digest: str) -> Delivery:
    edit_link, open_link, edit_link_title, open_link_title = (
        _bounded_link(element.id, channel, name, value)
        for name, value in zip(_CMS_NAMES, _links_of(result), strict=True)
    )
    return Delivery(
        element_id=element.id,
        channel=channel,
        publication_id=publication.id,
        external_id=result.external_id,
        fingerprint=digest,
        edit_link=edit_link,
        open_link=open_link,
        live=result.live,
        edit_link_title=edit_link_title,
        open_link_title=open_link_title,
        modification_date=element.modification_date,
        version=element.version,
    )


def _bounded_link(element_id: int, channel: str, name: str, value: str | None) -> str | None:
    """The channel's link or title, unless it is longer than ``MAX_LINK_BYTES``."""
    if value is None or len(value) * 4 <= MAX_LINK_BYTES:  # no UTF-8 character takes more than 4 bytes
        return value
    size = len(value.encode())
    if size <= MAX_LINK_BYTES:
        return value
    log.warning(
        "channel_link_dropped",
        element_id=element_id,
        channel=channel,
        field=name,
        bytes=size,
        hint=f"the channel answered a {name} longer than {MAX_LINK_BYTES} bytes: it is neither recorded nor written "
        "back to Kordiam",
    )
    return None


def _kind(error: BaseException) -> str:
    return "transient" if is_transient(error) else "permanent"

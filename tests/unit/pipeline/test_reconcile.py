"""The reconciliation sweep: it enqueues a resync for every element Kordiam changed that the state store has not
synced at that version, and for nothing else."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from bridge.errors import KordiamUnavailable
from bridge.kordiam.models import Element
from bridge.ops import metrics
from bridge.pipeline.reconcile import Reconciler
from bridge.retry import RetryPolicy
from bridge.state import SqliteStateStore
from bridge.state.base import RECONCILE_SWEEP, ElementMark, StateStore
from tests.support import opened_stores
from tests.unit.fakes import API, FakeKordiam, FakeTransport, MemoryStateStore, element_body


def reconciler(
    kordiam: FakeKordiam,
    state: StateStore,
    transport: FakeTransport,
    *,
    lookback: float = 3600,
    retry: RetryPolicy | None = None,
) -> Reconciler:
    return Reconciler(
        kordiam=kordiam.client(retry),
        state=state,
        transport=transport,
        interval=60,
        lookback=lookback,
        lease_seconds=120,
    )


def mark(body: dict[str, object], *, deleted: bool = False) -> ElementMark:
    element = Element.model_validate(body)
    return ElementMark(element.id, element.modification_date, element.version, deleted=deleted)


async def test_only_elements_newer_than_what_was_synced_are_enqueued() -> None:
    kordiam, state, transport = FakeKordiam(), MemoryStateStore(), FakeTransport([])
    synced = element_body(1, modificationDate="2026-11-23T10:00:00Z", version=3)
    changed = element_body(2, modificationDate="2026-11-23T10:05:00Z", version=4)
    never_seen = element_body(3, modificationDate="2026-11-23T10:06:00Z", version=1)
    state.marks[1] = mark(synced)
    state.marks[2] = mark(element_body(2, modificationDate="2026-11-23T09:00:00Z", version=3))
    kordiam.elements = {1: synced, 2: changed, 3: never_seen}

    enqueued = await reconciler(kordiam, state, transport).sweep()

    assert enqueued == 2
    assert [json.loads(body)["id"] for body in transport.sent] == [2, 3]


async def test_an_element_marked_deleted_that_kordiam_lists_again_is_enqueued() -> None:
    kordiam, state, transport = FakeKordiam(), MemoryStateStore(), FakeTransport([])
    body = element_body(1, modificationDate="2026-11-23T10:00:00Z", version=3)
    state.marks[1] = mark(body, deleted=True)
    kordiam.elements = {1: body}
    assert await reconciler(kordiam, state, transport).sweep() == 1


async def test_an_element_due_a_resync_that_kordiam_lists_is_enqueued_at_its_synced_version() -> None:
    """A worker lost the element's lease mid-sync (``ElementMark.resync``): a channel may hold an older version."""
    kordiam, state, transport = FakeKordiam(), MemoryStateStore(), FakeTransport([])
    body = element_body(1, modificationDate="2026-11-23T10:00:00Z", version=3)
    state.marks[1] = replace(mark(body), resync="token-1")
    kordiam.elements = {1: body}
    assert await reconciler(kordiam, state, transport).sweep() == 1


async def test_a_sweep_with_nothing_changed_enqueues_nothing() -> None:
    kordiam, state, transport = FakeKordiam(), MemoryStateStore(), FakeTransport([])
    body = element_body(1, modificationDate="2026-11-23T10:00:00Z", version=3)
    state.marks[1] = mark(body)
    kordiam.elements = {1: body}
    assert await reconciler(kordiam, state, transport).sweep() == 0
    assert transport.sent == []


async def test_a_listed_item_that_is_not_an_object_is_skipped_and_the_sweep_goes_on() -> None:
    kordiam, state, transport = FakeKordiam(), MemoryStateStore(), FakeTransport([])
    body = element_body(1, modificationDate="2026-11-23T10:00:00Z", version=3)
    kordiam.elements = {0: "not an element", 2: None, 1: body}  # type: ignore[dict-item]  # what a broken Kordiam lists
    assert await reconciler(kordiam, state, transport).sweep() == 1
    assert [json.loads(sent)["id"] for sent in transport.sent] == [1]


async def test_a_failed_sweep_is_counted_in_the_metrics() -> None:
    stop = asyncio.Event()

    class Unreachable(MemoryStateStore):
        async def element_mark(self, element_id: int) -> ElementMark | None:
            stop.set()  # one sweep is enough
            raise OSError("state store unreachable")

    kordiam, state, transport = FakeKordiam(), Unreachable(), FakeTransport([])
    kordiam.elements = {1: element_body(1, modificationDate="2026-11-23T10:00:00Z", version=3)}
    before = metrics.RECONCILE_FAILURES._value.get()

    await reconciler(kordiam, state, transport).run(stop)

    assert metrics.RECONCILE_FAILURES._value.get() == before + 1
    assert transport.sent == []


class KordiamListingFrom(FakeKordiam):
    """Lists only what ``modificationDateFrom`` asks for (inclusive, to the second), and dates its answers by its
    own clock, ``now``, as Kordiam does."""

    def __init__(self, now: datetime) -> None:
        super().__init__()
        self.now = now
        self.asked_from: list[datetime] = []

    def answer(self, request: httpx.Request) -> httpx.Response:
        if request.method != "GET" or request.url.path.removeprefix(API) != "/elements":
            return super().answer(request)
        since = datetime.fromisoformat(request.url.params["modificationDateFrom"])
        self.asked_from.append(since)
        listed = [body for body in self.elements.values() if datetime.fromisoformat(body["modificationDate"]) >= since]
        date = format_datetime(self.now, usegmt=True)
        return httpx.Response(200, json={"content": listed, "hasMore": False}, headers={"Date": date})


def kordiam_date(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_an_element_changed_after_a_sweep_is_listed_by_the_next_even_when_the_worker_clock_runs_ahead() -> None:
    """The worker's clock is ten minutes ahead of Kordiam's: a cursor taken from the worker's clock alone would ask
    the next sweep for changes from a moment Kordiam has not reached yet, and the change between is never listed."""
    kordiam_now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    kordiam, state, transport = KordiamListingFrom(kordiam_now), MemoryStateStore(), FakeTransport([])
    first = element_body(1, modificationDate=kordiam_date(kordiam_now - timedelta(minutes=1)), version=1)
    kordiam.elements = {1: first}
    sweeper = reconciler(kordiam, state, transport)
    assert await sweeper.sweep() == 1
    state.marks[1] = mark(first)

    kordiam.now = kordiam_now + timedelta(minutes=2)
    kordiam.elements[2] = element_body(2, modificationDate=kordiam_date(kordiam_now + timedelta(minutes=1)), version=1)

    assert await sweeper.sweep() == 1
    assert [json.loads(body)["id"] for body in transport.sent] == [1, 2]


async def test_a_stale_date_from_kordiam_never_moves_the_sweep_back() -> None:
    """A proxy's cached answer can carry an old ``Date``: the next sweep still starts where this one did, or later."""
    now = datetime.now(UTC)
    kordiam, state, transport = KordiamListingFrom(now - timedelta(days=2)), MemoryStateStore(), FakeTransport([])
    sweeper = reconciler(kordiam, state, transport)
    await sweeper.sweep()
    await sweeper.sweep()
    assert kordiam.asked_from[1] >= kordiam.asked_from[0]


async def test_a_sweep_that_fails_part_way_moves_nothing_on_and_the_next_lists_the_same_span() -> None:
    """Kordiam fails the second page (a 503 past the client's retries) of a span shorter than a day, so one list:
    the element on it is listed by the next sweep, which starts where the failed one did."""
    kordiam_now = datetime.now(UTC).replace(microsecond=0)
    kordiam = KordiamListingFrom(kordiam_now)
    state, transport = MemoryStateStore(), FakeTransport([])
    first = element_body(1, modificationDate=kordiam_date(kordiam_now - timedelta(minutes=2)), version=1)
    second = element_body(2, modificationDate=kordiam_date(kordiam_now - timedelta(minutes=1)), version=1)
    failing = [True]  # the first sweep's second page only

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.removeprefix(API) != "/elements":
            return FakeKordiam.answer(kordiam, request)
        kordiam.asked_from.append(datetime.fromisoformat(request.url.params["modificationDateFrom"]))
        if "cursor" not in request.url.params:
            return httpx.Response(200, json={"content": [first], "hasMore": True, "nextCursor": "v1.page2"})
        if failing:
            failing.pop()
            return httpx.Response(503, json={"title": "Service Unavailable", "status": 503})
        return httpx.Response(200, json={"content": [second], "hasMore": False})

    kordiam.answer = answer  # type: ignore[method-assign]
    sweeper = reconciler(kordiam, state, transport, retry=RetryPolicy(attempts=1))

    with pytest.raises(KordiamUnavailable):
        await sweeper.sweep()
    state.marks[1] = mark(first)
    assert await sweeper.sweep() == 1

    assert [json.loads(body)["id"] for body in transport.sent] == [1, 2]
    assert kordiam.asked_from[2] == kordiam.asked_from[0]


async def test_a_restart_resumes_from_the_stored_place_however_long_the_worker_was_stopped() -> None:
    """The last sweep ran three hours ago (Kordiam's clock says so as it answers); the worker was stopped since,
    longer than its lookback. An element changed while it was stopped is listed by the first sweep after the
    restart, which asks from the stored place, less the overlap."""
    now = datetime.now(UTC).replace(microsecond=0)
    kordiam, state, transport = KordiamListingFrom(now - timedelta(hours=3)), MemoryStateStore(), FakeTransport([])
    before_the_stop = reconciler(kordiam, state, transport, lookback=4 * 3600)
    assert await before_the_stop.sweep() == 0

    kordiam.now = now
    kordiam.elements[1] = element_body(1, modificationDate=kordiam_date(now - timedelta(hours=2)), version=1)
    restarted = reconciler(kordiam, state, transport)  # lookback: one hour

    assert await restarted.sweep() == 1
    assert kordiam.asked_from[1] == now - timedelta(hours=3, minutes=2)


def shared_store_reconciler(kordiam: FakeKordiam, state: StateStore, transport: FakeTransport) -> Reconciler:
    return Reconciler(
        kordiam=kordiam.client(), state=state, transport=transport, interval=900, lookback=3600, lease_seconds=120
    )


class PausingStore(SqliteStateStore):
    """A worker's store whose sweep stops at its first element until ``go`` is set (``sweeping`` says it got there)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.sweeping, self.go = asyncio.Event(), asyncio.Event()

    async def element_mark(self, element_id: int) -> ElementMark | None:
        self.sweeping.set()
        await self.go.wait()
        return await super().element_mark(element_id)


async def test_of_two_workers_sharing_a_store_one_sweeps_and_the_other_skips_the_round(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    kordiam, transport = KordiamListingFrom(now), FakeTransport([])
    kordiam.elements[1] = element_body(1, modificationDate=kordiam_date(now - timedelta(minutes=5)), version=1)
    async with opened_stores(PausingStore) as stores:
        first, second = await stores(tmp_path / "state.db"), await stores(tmp_path / "state.db")
        second.go.set()
        sweeping = asyncio.create_task(shared_store_reconciler(kordiam, first, transport).sweep_if_due())
        await first.sweeping.wait()
        other = shared_store_reconciler(kordiam, second, transport)

        assert await other.sweep_if_due() == 900  # the lease is taken: skipped, the next round an interval later
        first.go.set()
        assert await sweeping == 900
        next_in = await other.sweep_if_due()  # the lease is free, but the fleet swept just now

        assert 0 < next_in <= 900
        assert len(kordiam.asked_from) == 1 and len(transport.sent) == 1
        assert await second.sweep_cursor(RECONCILE_SWEEP) == now  # Kordiam's clock, a fraction behind the worker's


async def test_a_round_whose_lease_another_worker_holds_lists_nothing_and_is_no_failure() -> None:
    kordiam, state, transport = KordiamListingFrom(datetime.now(UTC)), MemoryStateStore(), FakeTransport([])
    state.sweeps_held_elsewhere.add(RECONCILE_SWEEP)
    before = metrics.RECONCILE_FAILURES._value.get()
    stop = asyncio.Event()

    class StopAfterOneRound(Reconciler):
        async def sweep_if_due(self) -> float:
            stop.set()
            return await super().sweep_if_due()

    await StopAfterOneRound(
        kordiam=kordiam.client(), state=state, transport=transport, interval=60, lookback=3600, lease_seconds=120
    ).run(stop)

    assert kordiam.asked_from == [] and state.sweep_cursors == {}
    assert metrics.RECONCILE_FAILURES._value.get() == before


async def test_a_round_sweeps_once_the_stored_cursor_is_an_interval_old() -> None:
    now = datetime.now(UTC)
    kordiam, state, transport = KordiamListingFrom(now), MemoryStateStore(), FakeTransport([])
    sweeper = shared_store_reconciler(kordiam, state, transport)
    state.sweep_cursors[RECONCILE_SWEEP] = now - timedelta(seconds=600)
    assert 0 < await sweeper.sweep_if_due() <= 300  # swept 10 minutes ago, every 15: not yet
    assert kordiam.asked_from == []
    state.sweep_cursors[RECONCILE_SWEEP] = now - timedelta(seconds=900)
    assert await sweeper.sweep_if_due() == 900
    assert kordiam.asked_from == [(now - timedelta(seconds=900 + 120)).replace(microsecond=0)]
    assert state.sweeps_held == set()  # given back


async def test_every_worker_exports_where_the_sweep_stands_for_an_alert_on_its_age() -> None:
    # A sweep that neither fails nor advances (one held up, a Date that never moves) shows in no counter: the
    # cursor's gauge, read by a worker that skips the round as well as written by one that sweeps, does.
    now = datetime.now(UTC)
    kordiam, state, transport = KordiamListingFrom(now), MemoryStateStore(), FakeTransport([])
    sweeper = shared_store_reconciler(kordiam, state, transport)
    recent = now - timedelta(seconds=600)
    state.sweep_cursors[RECONCILE_SWEEP] = recent
    await sweeper.sweep_if_due()  # swept recently: skipped, and the cursor it read exported
    assert metrics.RECONCILE_CURSOR._value.get() == recent.timestamp()
    state.sweep_cursors[RECONCILE_SWEEP] = now - timedelta(seconds=900)
    await sweeper.sweep_if_due()  # swept: the cursor it stored exported
    assert (
        metrics.RECONCILE_CURSOR._value.get() == state.sweep_cursors[RECONCILE_SWEEP].timestamp() > recent.timestamp()
    )


async def test_a_failed_sweep_leaves_the_stored_cursor_and_gives_the_lease_back() -> None:
    kordiam = KordiamListingFrom(datetime.now(UTC))
    kordiam.answer = lambda request: httpx.Response(503, json={"title": "Service Unavailable"})  # type: ignore[method-assign]
    state, transport = MemoryStateStore(), FakeTransport([])
    stored = datetime.now(UTC) - timedelta(days=1)
    state.sweep_cursors[RECONCILE_SWEEP] = stored
    sweeper = reconciler(kordiam, state, transport, retry=RetryPolicy(attempts=1))
    with pytest.raises(KordiamUnavailable):
        await sweeper.sweep_if_due()
    assert state.sweep_cursors[RECONCILE_SWEEP] == stored
    assert state.sweeps_held == set()


async def test_a_sweep_never_moves_the_cursor_back_behind_another_workers() -> None:
    """Another worker finished a sweep while this one ran, and stored a later place: it stays."""
    now = datetime.now(UTC)
    later = now + timedelta(minutes=5)

    class AdvancedMeanwhile(MemoryStateStore):
        async def element_mark(self, element_id: int) -> ElementMark | None:
            await self.advance_sweep_cursor(RECONCILE_SWEEP, later)
            return await super().element_mark(element_id)

    kordiam, state, transport = KordiamListingFrom(now), AdvancedMeanwhile(), FakeTransport([])
    kordiam.elements[1] = element_body(1, modificationDate=kordiam_date(now - timedelta(minutes=1)), version=1)
    assert await reconciler(kordiam, state, transport).sweep() == 1
    assert state.sweep_cursors[RECONCILE_SWEEP] == later


async def test_a_long_sweep_keeps_its_lease() -> None:
    """The sweep outlasts its lease (a cursor weeks old): it takes the lease again as it goes, so that no other
    worker starts the same sweep meanwhile."""

    class SlowStore(MemoryStateStore):
        def __init__(self) -> None:
            super().__init__()
            self.takes = 0
            self.extended = asyncio.Event()

        async def take_sweep_lease(self, sweep: str, *, seconds: float) -> bool:
            self.takes += 1
            if self.takes == 3:
                self.extended.set()
            return await super().take_sweep_lease(sweep, seconds=seconds)

        async def element_mark(self, element_id: int) -> ElementMark | None:
            await self.extended.wait()  # the sweep stays here until its lease was extended twice
            return await super().element_mark(element_id)

    now = datetime.now(UTC)
    kordiam, state, transport = KordiamListingFrom(now), SlowStore(), FakeTransport([])
    kordiam.elements[1] = element_body(1, modificationDate=kordiam_date(now - timedelta(minutes=1)), version=1)
    sweeper = Reconciler(
        kordiam=kordiam.client(), state=state, transport=transport, interval=60, lookback=3600, lease_seconds=0.03
    )
    assert await asyncio.wait_for(sweeper.sweep_if_due(), 30) == 60
    assert state.takes >= 3 and state.sweeps_held == set()


class KordiamListingWindows(FakeKordiam):
    """Lists what ``modificationDateFrom`` and ``modificationDateTo`` ask for (to the second; both inclusive, as
    Kordiam documents, unless ``to_exclusive``: a Kordiam comparing sub-second stamps with a whole-second bound
    leaves out a change made within that second), one element a page, and dates its answers ``now``. The list
    call whose page would hold the element ``fail_at`` answers 503, once."""

    def __init__(self, now: datetime, *, to_exclusive: bool = False, fail_at: int | None = None) -> None:
        super().__init__()
        self.now, self.to_exclusive, self.fail_at = now, to_exclusive, fail_at
        self.asked: list[tuple[datetime, datetime | None]] = []  # each list's span, as its first page asked

    def answer(self, request: httpx.Request) -> httpx.Response:
        if request.method != "GET" or request.url.path.removeprefix(API) != "/elements":
            return super().answer(request)
        params = request.url.params
        since = datetime.fromisoformat(params["modificationDateFrom"])
        until = datetime.fromisoformat(params["modificationDateTo"]) if "modificationDateTo" in params else None
        if "cursor" not in params:
            self.asked.append((since, until))

        def listed(modified: datetime) -> bool:
            return since <= modified and (until is None or modified < until or modified == until != self.to_exclusive)

        span = sorted(
            (body for body in self.elements.values() if listed(datetime.fromisoformat(body["modificationDate"]))),
            key=lambda body: (body["modificationDate"], body["id"]),
        )
        at = int(params.get("cursor", "0"))
        page = span[at : at + 1]
        if page and page[0]["id"] == self.fail_at:
            self.fail_at = None
            return httpx.Response(503, json={"title": "Service Unavailable", "status": 503})
        more = at + 1 < len(span)
        body = {"content": page, "hasMore": more, **({"nextCursor": str(at + 1)} if more else {})}
        return httpx.Response(200, json=body, headers={"Date": format_datetime(self.now, usegmt=True)})


async def test_a_sweep_over_days_that_fails_part_way_keeps_the_days_it_listed_and_the_next_resumes_there() -> None:
    """The stored cursor is three days old: the sweep lists it a day at a time and stores its place after each
    day. Kordiam fails on the third day's page (a 503 past the client's retries): the next sweep starts at the
    third day (less the overlap), not at the first again."""
    now = datetime.now(UTC).replace(microsecond=0)
    kordiam, state, transport = KordiamListingWindows(now, fail_at=3), MemoryStateStore(), FakeTransport([])
    state.sweep_cursors[RECONCILE_SWEEP] = stored = now - timedelta(days=3)
    since = stored - timedelta(seconds=120)
    day = timedelta(days=1)
    for element_id, modified in enumerate([since + day / 2, since + 1.5 * day, since + 2.5 * day, now], start=1):
        kordiam.elements[element_id] = element_body(element_id, modificationDate=kordiam_date(modified), version=1)
    sweeper = reconciler(kordiam, state, transport, retry=RetryPolicy(attempts=1))

    with pytest.raises(KordiamUnavailable):
        await sweeper.sweep()

    assert kordiam.asked == [(since, since + day), (since + day, since + 2 * day), (since + 2 * day, since + 3 * day)]
    assert state.sweep_cursors[RECONCILE_SWEEP] == since + 2 * day
    assert [json.loads(body)["id"] for body in transport.sent] == [1, 2]

    kordiam.asked.clear()
    assert await sweeper.sweep() == 2
    resumed = since + 2 * day - timedelta(seconds=120)
    assert kordiam.asked == [(resumed, resumed + day), (resumed + day, None)]
    assert [json.loads(body)["id"] for body in transport.sent] == [1, 2, 3, 4]
    assert state.sweep_cursors[RECONCILE_SWEEP] == now


@pytest.mark.parametrize("to_exclusive", [False, True], ids=["documented", "sub-second-stamps"])
async def test_an_element_changed_at_the_second_one_window_ends_and_the_next_begins_is_listed(
    to_exclusive: bool,
) -> None:
    """Windows share their edge second, both bounds inclusive: a change at that second is listed (by both windows
    where Kordiam compares as documented), whether or not Kordiam's ``modificationDateTo`` takes it in."""
    now = datetime.now(UTC).replace(microsecond=0)
    kordiam = KordiamListingWindows(now, to_exclusive=to_exclusive)
    state, transport = MemoryStateStore(), FakeTransport([])
    state.sweep_cursors[RECONCILE_SWEEP] = stored = now - timedelta(days=1, hours=12)
    edge = stored - timedelta(seconds=120) + timedelta(days=1)
    kordiam.elements[1] = element_body(1, modificationDate=kordiam_date(edge), version=1)

    assert await reconciler(kordiam, state, transport, retry=RetryPolicy(attempts=1)).sweep() >= 1

    assert {json.loads(body)["id"] for body in transport.sent} == {1}
    assert [until for _, until in kordiam.asked] == [edge, None]
    assert [since for since, _ in kordiam.asked][1] == edge


async def test_a_stale_date_in_a_sweep_over_days_ends_it_instead_of_going_back_or_round() -> None:
    """A proxy's cached answer dates the first day's list before the sweep's span: no day is past Kordiam's clock,
    so the sweep lists the rest in one, and stores no place before the one it started from."""
    now = datetime.now(UTC).replace(microsecond=0)
    kordiam, state, transport = KordiamListingWindows(now - timedelta(days=10)), MemoryStateStore(), FakeTransport([])
    state.sweep_cursors[RECONCILE_SWEEP] = stored = now - timedelta(days=3)
    since = stored - timedelta(seconds=120)

    await reconciler(kordiam, state, transport, retry=RetryPolicy(attempts=1)).sweep()

    assert kordiam.asked == [(since, since + timedelta(days=1)), (since, None)]
    assert state.sweep_cursors[RECONCILE_SWEEP] == stored

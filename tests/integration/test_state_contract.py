"""What every state store promises (``bridge.state.base.StateStore``), checked on SQLite and on DynamoDB (moto
server): leases across store instances (as across worker processes), conditional records, deliveries, marks,
parked elements, sweeps' cursors and leases.

Each store backend's own behaviour (SQLite's migrations and locking, DynamoDB's table check and errors) is tested
beside it: tests/unit/state/test_sqlite.py and tests/integration/test_dynamodb_state.py.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from bridge.state import DynamoDbStateStore, SqliteStateStore
from bridge.state.base import (
    RECONCILE_SWEEP,
    ChannelCounts,
    ElementBusy,
    ElementMark,
    StateStore,
    StateUnavailable,
    is_older,
)
from bridge.state.dynamodb import create_table
from bridge.state.leases import LeaseOwner
from tests.support import REGION, T0, delivery, opened_stores, writes_failing

pytestmark = pytest.mark.integration

StoreFactory = Callable[..., Awaitable[StateStore]]


@dataclass(frozen=True)
class Timing:
    """Lease timings a backend can keep: DynamoDB stores expiry in whole seconds (its TTL format)."""

    short_lease: float  # lease_seconds for the expiry tests
    past_expiry: float  # how long after taking a short lease it has surely expired
    hold_step: float  # the keep-alive test checks the lease this often, eight times


TIMINGS = {"sqlite": Timing(0.3, 0.4, 0.25), "dynamodb": Timing(1.0, 2.1, 0.5)}


@pytest.fixture(params=sorted(TIMINGS))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def timing(backend: str) -> Timing:
    return TIMINGS[backend]


@pytest.fixture
async def stores(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """Open stores on one database, each with its own owner, like separate worker processes."""
    make: Callable[..., StateStore]
    if backend == "dynamodb":
        moto_url: str = request.getfixturevalue("moto_url")
        table = f"bridge-state-{uuid.uuid4().hex[:12]}"
        await create_table(moto_url, table, region=REGION)
        make = functools.partial(DynamoDbStateStore, table, region=REGION, endpoint_url=moto_url)
    else:
        make = functools.partial(SqliteStateStore, tmp_path / "state.db")
    async with opened_stores(make) as factory:
        yield factory


# ---- leases ----------------------------------------------------------------------------------------------------


async def test_lease_is_exclusive_across_stores(stores: StoreFactory) -> None:
    first = await stores()
    second = await stores(lease_wait_seconds=0.3)
    async with first.lease(1):
        with pytest.raises(ElementBusy):
            async with second.lease(1):
                pytest.fail("two stores held one element")
        async with second.lease(2):  # other elements are free
            pass
    async with second.lease(1):  # released
        pass


async def test_waiting_store_gets_the_lease_once_it_is_released(stores: StoreFactory) -> None:
    first = await stores()
    second = await stores(lease_wait_seconds=5)
    order: list[str] = []

    async def hold() -> None:
        async with first.lease(1):
            order.append("first in")
            await asyncio.sleep(0.5)
            order.append("first out")

    async def wait() -> None:
        await asyncio.sleep(0.1)
        async with second.lease(1):
            order.append("second in")

    await asyncio.gather(hold(), wait())
    assert order == ["first in", "first out", "second in"]


async def test_expired_lease_is_taken_over(stores: StoreFactory, timing: Timing) -> None:
    first = await stores(lease_seconds=timing.short_lease, keep_leases=False)  # a worker that hangs, or died
    second = await stores(lease_seconds=60, lease_wait_seconds=0)
    third = await stores(lease_wait_seconds=0)
    lease = first.lease(1)
    await lease.__aenter__()
    with pytest.raises(ElementBusy):
        async with second.lease(1):
            pass
    await asyncio.sleep(timing.past_expiry)
    async with second.lease(1):
        # The stale holder's release must not free the element the new holder has.
        await lease.__aexit__(None, None, None)
        with pytest.raises(ElementBusy):
            async with third.lease(1):
                pass


async def test_a_lease_whose_owner_process_is_gone_is_taken_over_at_once(stores: StoreFactory) -> None:
    """A worker killed (kill -9) on this host leaves its leases behind: its successor need not wait them out."""
    process = await asyncio.create_subprocess_exec("sleep", "600")
    killed = await stores(lease_seconds=600, keep_leases=False, owner=LeaseOwner.of_process(process.pid))
    successor = await stores(lease_wait_seconds=0)
    other = await stores(lease_wait_seconds=0)
    lease = killed.lease(1)
    await lease.__aenter__()
    try:
        with pytest.raises(ElementBusy):  # its process still runs: a live holder is waited for
            async with successor.lease(1):
                pass
    finally:
        process.kill()
        await process.wait()
    async with successor.lease(1):
        # The dead holder's late release (were it to come) must not free what the successor holds now.
        await lease.__aexit__(None, None, None)
        with pytest.raises(ElementBusy):
            async with other.lease(1):
                pass


async def test_a_reused_pid_does_not_keep_a_dead_owners_lease(stores: StoreFactory) -> None:
    """The owner records its process's start time: another process under the same pid is not the owner."""
    me = LeaseOwner.of_process(os.getpid())
    assert me.started is not None
    earlier = await stores(lease_seconds=600, keep_leases=False, owner=replace(me, started=me.started - 1))
    successor = await stores(lease_wait_seconds=0)
    async with earlier.lease(1), successor.lease(1):
        pass


async def test_a_holder_on_another_host_keeps_its_lease_until_it_expires(stores: StoreFactory, timing: Timing) -> None:
    """Whether a process on another host runs cannot be known here: only its lease's expiry frees the element."""
    me = LeaseOwner.of_process(os.getpid())
    elsewhere = replace(me, host="another-boot-id.4026531836", pid=2**22 + 1)  # no such pid on this host
    remote = await stores(lease_seconds=timing.short_lease, keep_leases=False, owner=elsewhere)
    waiting = await stores(lease_wait_seconds=0)
    async with remote.lease(1):
        with pytest.raises(ElementBusy):
            async with waiting.lease(1):
                pass
        await asyncio.sleep(timing.past_expiry)
        async with waiting.lease(1):
            pass


async def test_a_working_holder_keeps_its_lease_past_lease_seconds(stores: StoreFactory, timing: Timing) -> None:
    holder = await stores(lease_seconds=timing.short_lease * 2)
    other = await stores(lease_wait_seconds=0)
    async with holder.lease(1):
        for _ in range(8):  # several lease lifetimes
            with pytest.raises(ElementBusy):
                async with other.lease(1):
                    pass
            await asyncio.sleep(timing.hold_step)
    async with other.lease(1):
        pass


async def test_lease_is_reentrant_for_its_owner(stores: StoreFactory) -> None:
    store = await stores(lease_wait_seconds=0)
    other = await stores(lease_wait_seconds=0)
    async with store.lease(1) as outer:
        async with store.lease(1) as inner:
            with pytest.raises(ElementBusy):
                async with other.lease(1):
                    pass
            inner.mark_on_release(ElementMark(1, T0, 1, deleted=False, fetched_at=1_764_800_000.0))
        # The inner block's end gives nothing back: the outer one still holds the element.
        with pytest.raises(ElementBusy):
            async with other.lease(1):
                pass
    assert not outer.lost and not inner.lost
    # The mark given at either depth is recorded as the lease is given back.
    assert await other.element_mark(1) == ElementMark(1, T0, 1, deleted=False, fetched_at=1_764_800_000.0)
    async with other.lease(1):
        pass


async def test_a_mark_given_to_the_lease_is_recorded_as_it_is_released(stores: StoreFactory) -> None:
    store = await stores(lease_wait_seconds=0)
    other = await stores(lease_wait_seconds=0)
    mark = ElementMark(8, T0, 3, deleted=False, fetched_at=1_764_800_000.25)
    async with store.lease(8) as lease:
        lease.mark_on_release(mark)
    assert await other.element_mark(8) == mark
    async with other.lease(8):  # released with it
        pass
    async with store.lease(8):  # a lease given no mark records none
        pass
    assert await other.element_mark(8) == mark


async def test_a_mark_read_with_the_lease_is_the_elements_mark(stores: StoreFactory) -> None:
    store = await stores(lease_wait_seconds=0)
    other = await stores(lease_wait_seconds=0)
    async with store.lease(11) as lease:  # an element never marked (and a row of its own now, on SQLite)
        assert not lease.mark_at_take_known or lease.mark_at_take is None
    assert await other.element_mark(11) is None
    mark = ElementMark(11, T0, 4, deleted=False, fetched_at=1_764_800_000.75)
    await store.mark_element(mark)
    async with other.lease(11) as lease:
        assert not lease.mark_at_take_known or lease.mark_at_take == mark
        lease.mark_on_release(ElementMark(11, None, None, deleted=True, fetched_at=1_764_800_001.0))
    async with store.lease(11) as lease:
        assert not lease.mark_at_take_known or lease.mark_at_take == await store.element_mark(11)
        assert await store.element_mark(11) == ElementMark(11, None, None, deleted=True, fetched_at=1_764_800_001.0)


async def test_a_mark_given_to_the_lease_follows_mark_elements_rules(stores: StoreFactory) -> None:
    store = await stores()
    newest = ElementMark(9, T0 + timedelta(minutes=1), 2, deleted=False, fetched_at=1_764_800_000.5)
    await store.mark_element(newest)
    async with store.lease(9) as lease:  # a sync whose fetch started earlier: ignored
        lease.mark_on_release(ElementMark(9, T0, 1, deleted=False, fetched_at=1_764_800_000.0))
    assert await store.element_mark(9) == newest
    async with store.lease(9) as lease:  # without a fetch time: the recorded one is kept
        lease.mark_on_release(ElementMark(9, None, None, deleted=True))
    assert await store.element_mark(9) == ElementMark(9, None, None, deleted=True, fetched_at=1_764_800_000.5)


async def test_a_mark_given_to_the_lease_is_recorded_when_the_block_raises(stores: StoreFactory) -> None:
    store = await stores(lease_wait_seconds=0)
    other = await stores(lease_wait_seconds=0)
    mark = ElementMark(10, T0, 1, deleted=False)
    with pytest.raises(RuntimeError):
        async with store.lease(10) as lease:
            lease.mark_on_release(mark)
            raise RuntimeError("after the mark")
    assert await other.element_mark(10) == mark
    async with other.lease(10):
        pass


async def test_a_release_that_lost_its_lease_marks_the_element_for_a_resync(
    stores: StoreFactory, timing: Timing
) -> None:
    """A holder that stalled past its lease may have written an older version after the new holder's newer one:
    its release (with a mark or without) tells it (``lost``) and leaves a re-sync token no mark of the new holder
    clears; only a mark given the token it read does."""
    for element_id, with_mark in ((20, True), (21, False)):
        stalled = await stores(lease_seconds=timing.short_lease, keep_leases=False)
        other = await stores(lease_wait_seconds=10)
        mark = ElementMark(element_id, T0, 1, deleted=False, fetched_at=1_764_800_000.0)
        lease = stalled.lease(element_id)
        held = await lease.__aenter__()
        async with other.lease(element_id) as taken:  # waits out the stalled holder's lease
            assert not taken.mark_at_take_known or taken.mark_at_take is None
            if with_mark:
                held.mark_on_release(mark)
            await lease.__aexit__(None, None, None)
            assert held.lost and not taken.lost
            taken.mark_on_release(ElementMark(element_id, T0, 2, deleted=False, fetched_at=1_764_800_001.0))
        assert not taken.lost
        token = (await other.element_mark(element_id) or mark).resync
        assert token is not None  # the newer holder's mark, given no token, kept it
        async with other.lease(element_id) as again:
            assert not again.mark_at_take_known or (again.mark_at_take and again.mark_at_take.resync == token)
            again.mark_on_release(ElementMark(element_id, T0, 2, deleted=False, fetched_at=1_764_800_002.0))
        assert (await other.element_mark(element_id) or mark).resync == token  # no token given: still due
        async with other.lease(element_id) as resynced:
            resynced.mark_on_release(
                ElementMark(element_id, T0, 2, deleted=False, fetched_at=1_764_800_003.0, resync=token)
            )
        assert not resynced.lost
        assert await other.element_mark(element_id) == ElementMark(
            element_id, T0, 2, deleted=False, fetched_at=1_764_800_003.0
        )


async def test_a_resync_token_without_a_mark_is_read_and_a_stale_one_does_not_clear_a_newer(
    stores: StoreFactory, timing: Timing
) -> None:
    stalled = await stores(lease_seconds=timing.short_lease, keep_leases=False)
    other = await stores(lease_wait_seconds=10)

    async def stall() -> str:
        lease = stalled.lease(22)
        held = await lease.__aenter__()
        async with other.lease(22):
            await lease.__aexit__(None, None, None)
        assert held.lost
        marked = await other.element_mark(22)
        assert marked is not None and marked.resync is not None
        return marked.resync

    older = await stall()
    # Marked before any mark was recorded: a mark of the token alone.
    assert await other.element_mark(22) == ElementMark(22, None, None, deleted=False, resync=older)
    newer = await stall()
    assert newer != older
    await other.mark_element(ElementMark(22, T0, 1, deleted=False, fetched_at=1.0, resync=older))
    assert await other.element_mark(22) == ElementMark(22, T0, 1, deleted=False, fetched_at=1.0, resync=newer)
    await other.mark_element(ElementMark(22, T0, 1, deleted=False, fetched_at=2.0, resync=newer))
    assert await other.element_mark(22) == ElementMark(22, T0, 1, deleted=False, fetched_at=2.0)


async def test_a_release_the_store_failed_says_the_lease_may_be_lost(stores: StoreFactory, timing: Timing) -> None:
    """A release whose write failed cannot tell whether the lease was still its own: taken over by another worker
    (its holder stalled, or the store unreachable, past the lease), the holder's older write may have landed after
    the newer one. It raises the store's error and sets ``lost`` (the worker then owes the element a re-sync),
    whether the lease was lost (element 24) or still held (25): the store cannot say which."""
    for element_id, taken_over in ((24, True), (25, False)):
        stalled = await stores(lease_seconds=timing.short_lease, keep_leases=False)
        other = await stores(lease_wait_seconds=10)
        lease = stalled.lease(element_id)
        held = await lease.__aenter__()
        if taken_over:
            async with other.lease(element_id):  # waits out the stalled holder's lease
                with writes_failing(stalled), pytest.raises(StateUnavailable):
                    await lease.__aexit__(None, None, None)
        else:
            with writes_failing(stalled), pytest.raises(StateUnavailable):
                await lease.__aexit__(None, None, None)
        assert held.lost, f"element {element_id}: a failed release said the lease was never lost"


async def test_a_release_whose_mark_failed_still_tells_a_lost_lease(stores: StoreFactory, timing: Timing) -> None:
    """The mark given to a lease failed to be written: the release raises the store's error, and it still gives the
    lease back and tells whether it was lost (then marking the element for a re-sync), as a release without a mark
    would."""
    stalled = await stores(lease_seconds=timing.short_lease, keep_leases=False)
    other = await stores(lease_wait_seconds=10)
    lease = stalled.lease(26)
    held = await lease.__aenter__()
    async with other.lease(26):  # waits out the stalled holder's lease
        held.mark_on_release(ElementMark(26, T0, 1, deleted=False, fetched_at=1_764_800_000.0))
        with writes_failing(stalled, mark_only=True), pytest.raises(StateUnavailable):
            await lease.__aexit__(None, None, None)
        assert held.lost
    marked = await other.element_mark(26)
    assert marked is not None and marked.resync is not None  # the re-sync is due for whoever syncs it next

    # A lease still held: the mark's failure is raised, the lease given back all the same, and it was not lost.
    store = await stores()
    waiting = await stores(lease_wait_seconds=0)
    lease = store.lease(27)
    kept = await lease.__aenter__()
    kept.mark_on_release(ElementMark(27, T0, 1, deleted=False, fetched_at=1_764_800_000.0))
    with writes_failing(store, mark_only=True), pytest.raises(StateUnavailable):
        await lease.__aexit__(None, None, None)
    assert not kept.lost
    async with waiting.lease(27):
        pass


async def test_a_release_of_a_lease_still_held_is_not_lost(stores: StoreFactory) -> None:
    store = await stores()
    async with store.lease(23) as held:
        pass
    async with store.lease(23) as marked:
        marked.mark_on_release(ElementMark(23, T0, 1, deleted=False))
    assert not held.lost and not marked.lost
    assert await store.element_mark(23) == ElementMark(23, T0, 1, deleted=False)


# ---- conditional records ---------------------------------------------------------------------------------------


async def test_older_version_is_refused_equal_and_newer_accepted(stores: StoreFactory) -> None:
    store = await stores()
    other = await stores()
    assert await store.record(delivery(version=1, external_id="a"))
    assert await other.record(delivery(version=2, external_id="b"))
    assert not await store.record(delivery(version=1, external_id="c"))
    assert await store.record(delivery(version=2, external_id="d"))  # a retry of the same version
    # The date decides before the version; the version breaks a tie of dates.
    assert not await store.record(delivery(modification_date=T0 - timedelta(seconds=1), version=9))
    assert await store.record(delivery(modification_date=T0 + timedelta(seconds=1), version=1, external_id="e"))
    [stored] = await other.deliveries(1)
    assert (stored.external_id, stored.version, stored.modification_date) == ("e", 1, T0 + timedelta(seconds=1))


async def test_record_ordering_matches_is_older_exhaustively(stores: StoreFactory) -> None:
    """Every (stored, new) pair of dates {None, t, t+1µs, same instant in another zone} × versions {None, 1, 2}."""
    store = await stores()
    dates = [None, T0, T0 + timedelta(microseconds=1), T0.astimezone(timezone(timedelta(hours=1)))]
    values = list(itertools.product(dates, [None, 1, 2]))
    for element, (stored, new) in enumerate(itertools.product(values, values), start=1000):
        assert await store.record(delivery(element, modification_date=stored[0], version=stored[1]))
        expected = not is_older(new, stored)
        accepted = await store.record(delivery(element, modification_date=new[0], version=new[1], external_id="new"))
        assert accepted == expected, f"stored {stored}, new {new}"
        [kept] = await store.deliveries(element)
        assert kept.external_id == ("new" if expected else "ext-1")


async def test_concurrent_records_from_two_stores_keep_the_newest(stores: StoreFactory) -> None:
    """v1 and v2 written at once by two workers, in both orders and with jitter: v2 always wins."""
    first = await stores()
    second = await stores()

    async def write(store: StateStore, element: int, version: int) -> bool:
        await asyncio.sleep(random.uniform(0, 0.01))
        stamp = T0 + timedelta(seconds=version)
        return await store.record(
            delivery(element, version=version, modification_date=stamp, external_id=f"v{version}")
        )

    rounds = 40
    results = await asyncio.gather(
        *(
            asyncio.gather(write(first, n, 1), write(second, n, 2))
            if n % 2
            else asyncio.gather(write(first, n, 2), write(second, n, 1))
            for n in range(1, rounds + 1)
        )
    )
    for n, outcome in enumerate(results, start=1):
        [kept] = await first.deliveries(n)
        assert (kept.version, kept.external_id) == (2, "v2"), f"element {n}: {outcome}"
        assert (outcome[1] if n % 2 else outcome[0]) is True  # v2's write was accepted
    assert len(await second.all_deliveries()) == rounds


async def test_record_keeps_every_field(stores: StoreFactory) -> None:
    store = await stores()
    full = delivery(
        7,
        "print",
        70,
        edit_link="https://cms.example/edit/7",
        open_link="https://example.org/7",
        live=True,
        edit_link_title="Edit",
        open_link_title="Open",
    )
    bare = delivery(7, "web", 71, modification_date=None, version=None)
    assert await store.record(full)
    assert await store.record(bare)
    assert await store.deliveries(7) == [full, bare]
    assert await store.deliveries(8) == []


# ---- deliveries, forget, marks ---------------------------------------------------------------------------------


async def test_forget_and_all_deliveries(stores: StoreFactory) -> None:
    store = await stores()
    other = await stores()
    for element, channel, publication in [(2, "web", 20), (2, "print", 21), (1, "web", 10), (3, "web", 30)]:
        assert await store.record(delivery(element, channel, publication))
    await store.mark_element(ElementMark(2, T0, 1, deleted=False))
    async with store.lease(2):  # marks and leases live beside deliveries and must not show up as deliveries
        assert [(d.element_id, d.channel, d.publication_id) for d in await other.all_deliveries()] == [
            (1, "web", 10),
            (2, "print", 21),
            (2, "web", 20),
            (3, "web", 30),
        ]
        assert [d.publication_id for d in await other.deliveries(2)] == [21, 20]
    await store.forget(2, "web", 20)
    await store.forget(2, "web", 99)  # nothing there: no error
    assert [d.publication_id for d in await other.deliveries(2)] == [21]
    assert len(await other.all_deliveries()) == 3


async def test_delivery_counts_per_channel(stores: StoreFactory) -> None:
    store = await stores()
    other = await stores()
    later = T0 + timedelta(hours=1)
    for element, channel, publication, live, modified in [
        (1, "web", 10, True, T0),
        (1, "web", 11, False, later),  # a second publication of the same element: one element, two deliveries
        (2, "web", 20, True, T0),
        (2, "print", 21, False, None),
    ]:
        assert await store.record(delivery(element, channel, publication, live=live, modification_date=modified))
    await store.mark_element(ElementMark(2, T0, 1, deleted=False))
    await store.park(3, "newsletter", "401")
    async with store.lease(2):  # marks, leases and parked elements are no deliveries
        counts = await other.delivery_counts(limit=1000)
    assert counts.complete and counts.deliveries == 4
    assert counts.channels == {
        "web": ChannelCounts(deliveries=3, live=2, elements=2, latest=later),
        "print": ChannelCounts(deliveries=1, live=0, elements=1, latest=None),
    }
    assert (await (await stores()).delivery_counts(limit=1000)).channels == counts.channels  # the lease given back


async def test_delivery_counts_that_stop_early_say_so_and_are_lower_bounds(stores: StoreFactory) -> None:
    store = await stores()
    for element in range(1, 21):
        await store.record(delivery(element, "web", element * 10, live=True))
        await store.mark_element(ElementMark(element, T0, 1, deleted=False))
    counts = await store.delivery_counts(limit=5)
    web = counts.channels.get("web", ChannelCounts())
    if counts.complete:  # a store that counts on its own disk counts them all (SQLite)
        assert (web.deliveries, web.live, web.elements) == (20, 20, 20)
    else:  # one whose reads cost shared capacity stopped after the limit (DynamoDB)
        assert counts.read <= 5 and web.deliveries <= counts.read
        assert web.live == web.deliveries == web.elements and web.deliveries < 20
    with pytest.raises(ValueError, match="limit"):
        await store.delivery_counts(limit=0)


async def test_deliveries_are_found_by_their_external_id(stores: StoreFactory) -> None:
    store = await stores()
    other = await stores()
    web = delivery(2, "web", 20, external_id="post-55")
    print_ = delivery(1, "print", 10, external_id="post-55")  # another channel's item may carry the same id
    assert await store.record(web)
    assert await store.record(print_)
    assert await store.record(delivery(3, "web", 30, external_id="post-56"))
    await store.mark_element(ElementMark(2, T0, 1, deleted=False))
    assert await other.deliveries_with_external_id("post-55") == [print_, web]
    assert await other.deliveries_with_external_id("post-5") == []
    assert await other.deliveries_with_external_id("") == []
    # The channel re-created the item under a new id: the old id finds nothing any more.
    assert await store.record(replace(web, external_id="post-57", version=2))
    assert [d.element_id for d in await other.deliveries_with_external_id("post-55")] == [1]
    assert [d.external_id for d in await other.deliveries_with_external_id("post-57")] == ["post-57"]
    await store.forget(1, "print", 10)
    assert await other.deliveries_with_external_id("post-55") == []


async def test_deliveries_are_found_by_their_kordiam_publication(stores: StoreFactory) -> None:
    store = await stores()
    other = await stores()
    web, print_ = delivery(2, "web", 20), delivery(2, "print", 20)  # one publication in two channels
    for written in (web, print_, delivery(3, "web", 30)):
        assert await store.record(written)
    await store.mark_element(ElementMark(2, T0, 1, deleted=False))
    async with store.lease(2):  # marks and leases are no deliveries
        assert await other.deliveries_of_publication(20) == [print_, web]
    assert await other.deliveries_of_publication(21) == []
    await store.forget(2, "web", 20)
    assert await other.deliveries_of_publication(20) == [print_]


async def test_marks_round_trip(stores: StoreFactory) -> None:
    store = await stores()
    other = await stores()
    assert await store.element_mark(4) is None
    await store.mark_element(ElementMark(4, T0, 3, deleted=False))
    assert await other.element_mark(4) == ElementMark(4, T0, 3, deleted=False)
    await store.mark_element(ElementMark(4, None, None, deleted=True))
    assert await other.element_mark(4) == ElementMark(4, None, None, deleted=True)


async def test_an_element_record_holds_its_mark_deliveries_with_their_time_and_its_lease(stores: StoreFactory) -> None:
    """What ``kordiam-bridge element`` reads: the element's mark, its deliveries (by channel and publication, each
    with when it was recorded) and who holds its lease until when; another element's are not among them."""
    me = LeaseOwner.of_process(os.getpid())
    worker = await stores(lease_seconds=60, owner=me)
    operator = await stores()
    unseen = await operator.element_record(9)
    assert (unseen.element_id, unseen.mark, unseen.deliveries, unseen.lease, unseen.seen) == (9, None, [], None, False)

    before = datetime.now(UTC) - timedelta(seconds=1)
    web, print_ = delivery(9, "web", 90, external_id="post-9"), delivery(9, "print", 91, live=True)
    for written in (web, print_, delivery(8, "web", 80)):
        assert await worker.record(written)
    mark = ElementMark(9, T0, 1, deleted=False, fetched_at=1_764_800_000.5)
    await worker.mark_element(mark)
    async with worker.lease(9):
        taken_at = time.time()
        record = await operator.element_record(9)
    after = datetime.now(UTC) + timedelta(seconds=1)
    assert record.mark == mark and record.seen
    assert [r.delivery for r in record.deliveries] == [print_, web]  # by channel, then publication
    for recorded in record.deliveries:
        assert recorded.recorded_at is not None and before <= recorded.recorded_at <= after
    assert record.lease is not None and record.lease.owner == me.encode()
    assert taken_at + 58 <= record.lease.expires_at <= taken_at + 62  # lease_seconds from the take (DynamoDB: whole s)
    # Released: no lease left to show (a store may keep an expired one, never a released one).
    assert (await operator.element_record(9)).lease is None
    assert [r.delivery for r in (await operator.element_record(8)).deliveries] == [delivery(8, "web", 80)]


async def test_a_lease_alone_is_no_sight_of_the_element(stores: StoreFactory) -> None:
    """A first sync under way holds the element's lease before any mark or delivery: the store has not seen it yet."""
    worker = await stores()
    operator = await stores()
    async with worker.lease(5):
        record = await operator.element_record(5)
    assert record.lease is not None and not record.seen and record.mark is None


async def test_mark_records_when_its_fetch_started(stores: StoreFactory) -> None:
    store = await stores()
    other = await stores()
    started = 1_764_800_000.123456
    await store.mark_element(ElementMark(5, T0, 1, deleted=False, fetched_at=started))
    assert await other.element_mark(5) == ElementMark(5, T0, 1, deleted=False, fetched_at=started)
    later = started + 2.5
    await other.mark_element(ElementMark(5, T0 + timedelta(minutes=1), 2, deleted=False, fetched_at=later))
    assert await store.element_mark(5) == ElementMark(5, T0 + timedelta(minutes=1), 2, deleted=False, fetched_at=later)


async def test_mark_fetch_time_never_moves_backwards(stores: StoreFactory) -> None:
    store = await stores()
    other = await stores()
    started = 1_764_800_000.5
    newest = ElementMark(6, T0 + timedelta(minutes=1), 2, deleted=False, fetched_at=started)
    await store.mark_element(newest)
    # A sync whose fetch started earlier finishing later: its mark is ignored, the later fetch's mark stands.
    await other.mark_element(ElementMark(6, T0, 1, deleted=False, fetched_at=started - 1))
    assert await store.element_mark(6) == newest
    # A mark without a fetch time keeps the recorded one.
    await other.mark_element(ElementMark(6, None, None, deleted=True))
    assert await store.element_mark(6) == ElementMark(6, None, None, deleted=True, fetched_at=started)
    # The same start time again is accepted (an idempotent retry of the same write).
    await store.mark_element(newest)
    assert await other.element_mark(6) == newest


async def test_a_probe_of_a_healthy_store_passes_beside_held_leases_and_changes_no_element(
    stores: StoreFactory,
) -> None:
    # The worker probes when a message failed at the store: on a healthy store the probe passes (so that message's
    # failure is its own), while other workers hold leases, and leaves every element's data as it was.
    store, other = await stores(), await stores()
    await store.record(delivery(5, "web", 51))
    before = (await store.deliveries(5), await store.element_mark(5))
    async with other.lease(5):
        await store.probe()
        await store.probe()  # again: the first left nothing in the way
    assert (await store.deliveries(5), await store.element_mark(5)) == before
    assert [d.element_id for d in await store.all_deliveries()] == [5]


# ---- parked elements -------------------------------------------------------------------------------------------


async def test_a_parked_element_is_listed_and_counted_for_its_channel_alone(stores: StoreFactory) -> None:
    store = await stores()
    other = await stores()
    before = datetime.now(UTC)
    await store.park(5, "web", "401 Unauthorized: wrong application password")
    await store.park(3, "web", "403 Forbidden")
    await store.park(4, "newsletter", "401 API key revoked")
    after = datetime.now(UTC)
    listed = await other.parked("web")
    assert [(p.element_id, p.channel, p.reason) for p in listed] == [
        (3, "web", "403 Forbidden"),
        (5, "web", "401 Unauthorized: wrong application password"),
    ]
    assert all(before <= p.since <= after and p.since.utcoffset() == timedelta(0) for p in listed)
    assert [p.element_id for p in await other.parked("newsletter")] == [4]
    assert (await other.parked_count("web"), await other.parked_count("newsletter")) == (2, 1)
    assert await other.parked("print") == [] and await other.parked_count("print") == 0


async def test_the_channels_with_parked_elements_are_named_whatever_the_configuration_says(
    stores: StoreFactory,
) -> None:
    # Elements parked under a channel name the configuration no longer has (renamed, removed) are found by it.
    store = await stores()
    other = await stores()
    assert await other.parked_channels() == []
    await store.park(5, "web", "401")
    await other.park(6, "print-old", "circuit open")
    await store.park(7, "web", "401")
    await store.park(8, "web-2", "401")
    assert await store.parked_channels() == ["print-old", "web", "web-2"]
    await other.unpark(6, "print-old")
    # A channel with nothing left parked may still be named: who asks counts.
    named = await other.parked_channels()
    assert {"web", "web-2"} <= set(named) <= {"print-old", "web", "web-2"}
    assert named == sorted(named)


async def test_parking_again_keeps_since_takes_the_new_reason_and_a_new_generation(stores: StoreFactory) -> None:
    store = await stores()
    other = await stores()
    await store.park(7, "web", "401 Unauthorized")
    [first] = await store.parked("web")
    await asyncio.sleep(0.01)  # a later clock, so that a since taken again would differ
    await other.park(7, "web", "403 Forbidden")
    [again] = await store.parked("web")
    assert again == replace(first, reason="403 Forbidden", generation=again.generation)
    assert again.generation != first.generation
    assert await store.parked_count("web") == 1


async def test_a_requeued_element_parked_again_keeps_the_time_it_was_first_parked(stores: StoreFactory) -> None:
    store = await stores()
    first = datetime(2026, 12, 6, 9, 30, 15, 123456, tzinfo=UTC)
    await store.park(7, "web", "401", since=first)  # a new item takes the time its requeue carried
    await store.park(7, "web", "401 again", since=datetime(2026, 12, 6, 11, 0, tzinfo=UTC))  # an item keeps its own
    await store.park(8, "web", "401", since=first.astimezone(timezone(timedelta(hours=2))))  # any offset: UTC
    assert [(p.element_id, p.since, p.reason) for p in await store.parked("web")] == [
        (7, first, "401 again"),
        (8, first, "401"),
    ]


async def test_unpark_forgets_the_item_and_an_unknown_one_is_no_error(stores: StoreFactory) -> None:
    store = await stores()
    other = await stores()
    await store.park(7, "web", "401")
    await store.park(8, "web", "401")
    await store.park(7, "print", "401")
    await other.unpark(7, "web")
    assert [p.element_id for p in await store.parked("web")] == [8]
    assert [p.element_id for p in await store.parked("print")] == [7]  # the other channel's item stays
    await other.unpark(7, "web")  # again: nothing there
    await other.unpark(99, "mail")  # never parked, in a channel with nothing parked
    assert (await store.parked_count("web"), await store.parked_count("print")) == (1, 1)
    await store.park(7, "web", "401 again")  # parked anew after an unpark: a new item
    assert [(p.element_id, p.reason) for p in await store.parked("web")] == [(7, "401 again"), (8, "401")]


async def test_an_unpark_by_generation_leaves_an_element_parked_again_since_it_was_read(stores: StoreFactory) -> None:
    # A requeue reads the element, sends its notification, and unparks it naming the generation it read; a worker
    # that met a refusal of that notification meanwhile parked it again, and that parking must stand.
    store = await stores()
    other = await stores()
    await store.park(7, "web", "401")
    (read,) = await store.parked("web")
    await other.park(7, "web", "401 again")  # the worker, between the send and the unpark
    await store.unpark(7, "web", generation=read.generation)
    (still,) = await store.parked("web")
    assert (still.reason, still.since) == ("401 again", read.since) and still.generation != read.generation
    await store.unpark(7, "web", generation=still.generation)  # nothing parked since: gone
    assert await store.parked_count("web") == 0
    await store.unpark(7, "web", generation=3)  # not parked at all: no error either


async def test_an_unpark_by_a_generation_read_before_the_item_was_unparked_leaves_a_new_one(
    stores: StoreFactory,
) -> None:
    # Two requeues read element 7 (one worker's and `parked requeue`, say). B sends and unparks it; A's notification
    # meets the channel refusing again and is parked anew; A's unpark, naming the generation it read, must not
    # remove that new item: the channel owes the element the sync just parked.
    store = await stores()
    other = await stores()
    await store.park(7, "web", "401")
    (read,) = await store.parked("web")
    await other.unpark(7, "web", generation=read.generation)  # B
    await other.park(7, "web", "401 again")  # A's notification, refused again
    await store.unpark(7, "web", generation=read.generation)  # A
    assert [(p.element_id, p.reason) for p in await store.parked("web")] == [(7, "401 again")]


async def test_paging_lists_every_parked_element_once_in_ascending_order(stores: StoreFactory) -> None:
    store = await stores()
    # Ids of different lengths (9 < 10 < 100), parked in no order, to catch an order by text.
    elements = [9, 10, 100, 1_000, 99_999, 10**12, *random.Random(3).sample(range(11, 50_000), 244)]
    assert len(set(elements)) == 250
    for element in random.Random(4).sample(elements, len(elements)):
        await store.park(element, "web", f"401 for {element}")
    for element in (8, 11, 5_000_000):  # another channel's, beside and between the web's
        await store.park(element, "print", "401")
    pages: list[list[int]] = []
    after: int | None = None
    while page := await store.parked("web", after=after, limit=100):
        pages.append([p.element_id for p in page])
        assert all(p.reason == f"401 for {p.element_id}" and p.channel == "web" for p in page)
        after = page[-1].element_id
    assert [len(page) for page in pages] == [100, 100, 50]
    assert [element for page in pages for element in page] == sorted(elements)
    assert await store.parked_count("web") == 250
    assert [p.element_id for p in await store.parked("web", after=10, limit=3)] == sorted(elements)[2:5]
    assert await store.parked("web", after=10**12) == []
    with pytest.raises(ValueError, match="limit"):
        await store.parked("web", limit=0)


async def test_parked_elements_are_independent_of_deliveries_marks_and_leases(stores: StoreFactory) -> None:
    store = await stores(lease_wait_seconds=0)
    other = await stores(lease_wait_seconds=0)
    mark = ElementMark(7, T0, 3, deleted=False, fetched_at=1_764_800_000.5)
    assert await store.record(delivery(7, "web", 70))
    await store.mark_element(mark)
    await store.park(7, "web", "401")
    [parked] = await store.parked("web")
    # Parking leaves the element's deliveries, mark and lease alone...
    assert [d.publication_id for d in await other.deliveries(7)] == [70]
    assert [d.element_id for d in await other.all_deliveries()] == [7]
    assert await other.element_mark(7) == mark
    async with store.lease(7) as lease:
        with pytest.raises(ElementBusy):
            async with other.lease(7):
                pass
        lease.mark_on_release(replace(mark, version=4, fetched_at=1_764_800_001.0))
    # ...and they leave it alone: a forgotten delivery, a new mark, a lease taken and given back.
    await store.forget(7, "web", 70)
    await store.mark_element(ElementMark(7, None, None, deleted=True))
    assert await other.parked("web") == [parked] and await other.parked_count("web") == 1
    await other.unpark(7, "web")
    assert await store.element_mark(7) == ElementMark(7, None, None, deleted=True, fetched_at=1_764_800_001.0)
    assert await store.parked("web") == []


# ---- sweeps ----------------------------------------------------------------------------------------------------


async def test_a_sweeps_cursor_is_shared_moves_on_and_never_back(stores: StoreFactory) -> None:
    store, other = await stores(), await stores()
    assert await store.sweep_cursor(RECONCILE_SWEEP) is None
    await store.advance_sweep_cursor(RECONCILE_SWEEP, T0)
    assert await other.sweep_cursor(RECONCILE_SWEEP) == T0
    await other.advance_sweep_cursor(RECONCILE_SWEEP, T0 - timedelta(microseconds=1))  # back: ignored
    await other.advance_sweep_cursor(RECONCILE_SWEEP, T0.astimezone(timezone(timedelta(hours=2))))  # the same
    assert await store.sweep_cursor(RECONCILE_SWEEP) == T0
    await store.advance_sweep_cursor(RECONCILE_SWEEP, T0 + timedelta(days=40, microseconds=7))
    assert await other.sweep_cursor(RECONCILE_SWEEP) == T0 + timedelta(days=40, microseconds=7)
    assert await other.sweep_cursor("another sweep") is None


async def test_concurrent_advances_from_two_stores_keep_the_latest_cursor(stores: StoreFactory) -> None:
    first, second = await stores(), await stores()
    places = [T0 + timedelta(seconds=n) for n in range(20)]
    random.Random(7).shuffle(places)
    await asyncio.gather(
        *((first if n % 2 else second).advance_sweep_cursor(RECONCILE_SWEEP, place) for n, place in enumerate(places))
    )
    assert await first.sweep_cursor(RECONCILE_SWEEP) == max(places)


async def test_a_sweeps_lease_is_held_by_one_store_at_a_time_and_given_back(stores: StoreFactory) -> None:
    store, other = await stores(), await stores()
    assert await store.take_sweep_lease(RECONCILE_SWEEP, seconds=60)
    assert not await other.take_sweep_lease(RECONCILE_SWEEP, seconds=60)
    assert await store.take_sweep_lease(RECONCILE_SWEEP, seconds=60)  # its own: extended
    assert await other.take_sweep_lease("another sweep", seconds=60)  # another sweep's lease is its own
    await other.release_sweep_lease(RECONCILE_SWEEP)  # not its lease: left to its holder
    assert not await other.take_sweep_lease(RECONCILE_SWEEP, seconds=60)
    await store.release_sweep_lease(RECONCILE_SWEEP)
    assert await other.take_sweep_lease(RECONCILE_SWEEP, seconds=60)
    await store.release_sweep_lease(RECONCILE_SWEEP)  # no longer its own: the new holder keeps it
    assert not await store.take_sweep_lease(RECONCILE_SWEEP, seconds=60)


async def test_of_stores_taking_a_sweeps_lease_at_once_one_gets_it(stores: StoreFactory) -> None:
    opened = [await stores() for _ in range(4)]
    for round_ in range(3):
        sweep = f"sweep {round_}"
        taken = await asyncio.gather(*(store.take_sweep_lease(sweep, seconds=60) for store in opened))
        assert taken.count(True) == 1


async def test_a_sweeps_lease_and_cursor_leave_each_other_and_the_elements_alone(stores: StoreFactory) -> None:
    store, other = await stores(lease_wait_seconds=0), await stores(lease_wait_seconds=0)
    assert await store.take_sweep_lease(RECONCILE_SWEEP, seconds=60)
    await store.advance_sweep_cursor(RECONCILE_SWEEP, T0)
    async with other.lease(1):  # an element's lease is no sweep's
        assert not await other.take_sweep_lease(RECONCILE_SWEEP, seconds=60)
    await store.release_sweep_lease(RECONCILE_SWEEP)
    assert await other.sweep_cursor(RECONCILE_SWEEP) == T0
    assert await other.take_sweep_lease(RECONCILE_SWEEP, seconds=60)
    assert await store.sweep_cursor(RECONCILE_SWEEP) == T0
    async with store.lease(1):
        pass
    assert await store.element_mark(1) is None and await store.all_deliveries() == []


async def test_a_sweeps_lease_whose_holder_stopped_extending_it_is_free_once_it_expires(
    stores: StoreFactory, timing: Timing
) -> None:
    """A worker that died mid-sweep on another host: the sweep is blocked for no longer than the lease's expiry."""
    me = LeaseOwner.of_process(os.getpid())
    elsewhere = replace(me, host="another-boot-id.4026531836", pid=2**22 + 1)
    dead = await stores(owner=elsewhere)
    successor = await stores()
    assert await dead.take_sweep_lease(RECONCILE_SWEEP, seconds=timing.short_lease)
    assert not await successor.take_sweep_lease(RECONCILE_SWEEP, seconds=60)
    await asyncio.sleep(timing.past_expiry)
    assert await successor.take_sweep_lease(RECONCILE_SWEEP, seconds=60)
    assert not await dead.take_sweep_lease(RECONCILE_SWEEP, seconds=60)  # were it to come back


async def test_a_sweeps_lease_whose_owner_process_is_gone_is_taken_over_at_once(stores: StoreFactory) -> None:
    process = await asyncio.create_subprocess_exec("sleep", "600")
    killed = await stores(owner=LeaseOwner.of_process(process.pid))
    successor = await stores()
    try:
        assert await killed.take_sweep_lease(RECONCILE_SWEEP, seconds=600)
        assert not await successor.take_sweep_lease(RECONCILE_SWEEP, seconds=60)  # its process still runs
    finally:
        process.kill()
        await process.wait()
    assert await successor.take_sweep_lease(RECONCILE_SWEEP, seconds=60)
    assert not await killed.take_sweep_lease(RECONCILE_SWEEP, seconds=60)

"""The lease keeper: which leases it extends, and what it does when one is lost or the store is down."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from bridge.state import leases
from bridge.state.base import ElementBusy, ElementMark, HeldLease, StateUnavailable
from bridge.state.leases import LeaseKeeper
from tests.unit.fakes import ManualClock


class Store:
    """Extends what it is asked to, except the ids in ``lost``; ``down`` makes every call fail."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.lost: set[int] = set()
        self.down = False
        self.during: Callable[[], object] | None = None  # runs while the extension is in flight

    async def extend(self, element_ids: list[int]) -> set[int]:
        self.calls.append(sorted(element_ids))
        if self.during is not None:
            self.during()
        if self.down:
            raise ConnectionError("state store unreachable")
        return self.lost & set(element_ids)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    clock = ManualClock()
    monkeypatch.setattr(leases, "monotonic", clock)
    return clock


async def test_only_leases_held_a_third_of_their_life_are_extended(clock: ManualClock) -> None:
    store = Store()
    keeper = LeaseKeeper(30.0, store.extend)
    keeper.taken(1, HeldLease(1))
    clock.now += 6
    keeper.taken(2, HeldLease(2))
    clock.now += 4  # lease 1 held 10 s (a third of 30), lease 2 held 4 s
    await keeper.extend_due()
    assert store.calls == [[1]]
    clock.now += 6  # lease 1 was extended 6 s ago, lease 2 is 10 s old
    await keeper.extend_due()
    assert store.calls == [[1], [2]]


async def test_a_released_lease_is_not_extended_but_a_re_entered_one_is(clock: ManualClock) -> None:
    store = Store()
    keeper = LeaseKeeper(3.0, store.extend)
    keeper.taken(1, HeldLease(1))
    keeper.taken(1, HeldLease(1))
    keeper.taken(2, HeldLease(2))
    keeper.released(1)  # still held once
    keeper.released(2)
    clock.now += 1
    await keeper.extend_due()
    assert store.calls == [[1]]


async def test_a_lost_lease_is_reported_and_no_longer_extended(clock: ManualClock) -> None:
    store = Store()
    store.lost = {2}
    keeper = LeaseKeeper(3.0, store.extend)
    keeper.taken(1, HeldLease(1))
    keeper.taken(2, HeldLease(2))
    clock.now += 1
    with capture_logs() as logs:
        await keeper.extend_due()
    assert [(entry["event"], entry["element_id"]) for entry in logs] == [("lease_lost", 2)]
    assert logs[0]["log_level"] == "error"
    clock.now += 1
    await keeper.extend_due()
    assert store.calls == [[1, 2], [1]]
    keeper.released(2)  # the sync ends later: nothing left to release in the keeper


async def test_an_unreachable_store_is_tried_again_on_the_next_tick(clock: ManualClock) -> None:
    store = Store()
    store.down = True
    keeper = LeaseKeeper(3.0, store.extend)
    keeper.taken(1, HeldLease(1))
    clock.now += 1
    with capture_logs() as logs:
        await keeper.extend_due()
    assert [entry["event"] for entry in logs] == ["lease_extension_failed"]
    store.down = False
    await keeper.extend_due()
    assert store.calls == [[1], [1]]


async def test_a_lease_taken_anew_while_an_extension_ran_is_kept(clock: ManualClock) -> None:
    store = Store()
    keeper = LeaseKeeper(3.0, store.extend)
    keeper.taken(1, HeldLease(1))
    clock.now += 1
    store.lost = {1}  # the old lease was lost...

    def taken_anew() -> None:  # ...and the element taken anew meanwhile
        keeper.released(1)
        keeper.taken(1, HeldLease(1))

    store.during = taken_anew
    await keeper.extend_due()
    store.lost, store.during = set(), None
    clock.now += 1
    await keeper.extend_due()
    assert store.calls == [[1], [1]]


async def test_a_held_lease_is_kept_while_held_and_given_back_even_when_the_block_fails(clock: ManualClock) -> None:
    store = Store()
    keeper = LeaseKeeper(3.0, store.extend)
    events: list[str] = []

    before = ElementMark(7, None, 0, deleted=False)

    async def take(element_id: int, replacing: str | None) -> HeldLease | str:
        events.append(f"take {element_id}")
        return HeldLease(element_id, mark_at_take=before, mark_at_take_known=True)

    async def release(held: HeldLease) -> None:
        events.append(f"release {held.element_id} with {held.mark}")

    mark = ElementMark(7, None, 1, deleted=False)
    with pytest.raises(RuntimeError, match="channel failed"):
        async with leases.held_lease(7, take, release, keeper, wait_seconds=0) as held:
            clock.now += 1
            await keeper.extend_due()  # held: extended
            assert held.mark_at_take_known and held.mark_at_take == before
            held.mark_on_release(mark)
            raise RuntimeError("channel failed")
    assert events == ["take 7", f"release 7 with {mark}"] and store.calls == [[7]]
    clock.now += 1
    await keeper.extend_due()  # given back: no longer extended
    assert store.calls == [[7]]


async def test_a_lease_not_taken_is_neither_kept_nor_given_back(clock: ManualClock) -> None:
    store = Store()
    keeper = LeaseKeeper(3.0, store.extend)
    released: list[int] = []

    async def held_by_another(element_id: int, replacing: str | None) -> HeldLease | str:
        return "another-worker"

    async def release(held: HeldLease) -> None:
        released.append(held.element_id)

    with pytest.raises(ElementBusy):
        async with leases.held_lease(7, held_by_another, release, keeper, wait_seconds=0):
            pytest.fail("the block must not run without the lease")
    clock.now += 1
    await keeper.extend_due()
    assert released == [] and store.calls == []


async def test_the_release_is_given_the_lease_the_block_held_and_a_failed_one_is_raised(clock: ManualClock) -> None:
    """What the store's release tells (``lost``) reaches the holder, also when it raised: the holder's own lease."""
    store = Store()
    keeper = LeaseKeeper(3.0, store.extend)
    given: list[HeldLease] = []

    async def take(element_id: int, replacing: str | None) -> HeldLease | str:
        return HeldLease(element_id)

    async def release_failing(held: HeldLease) -> None:
        given.append(held)
        held.lost = True  # the store's write failed: whether another worker took the element over is unknown
        raise StateUnavailable("DynamoDB delete_item: ThrottlingException")

    with pytest.raises(StateUnavailable):
        async with leases.held_lease(7, take, release_failing, keeper, wait_seconds=0) as held:
            assert not held.lost
    assert given == [held] and given[0] is held and held.lost
    clock.now += 1
    await keeper.extend_due()  # given back as far as the keeper goes: no longer extended
    assert store.calls == []


def test_a_held_lease_refuses_another_elements_mark() -> None:
    with pytest.raises(ValueError, match="element 2"):
        HeldLease(1).mark_on_release(ElementMark(2, None, 1, deleted=False))

"""The keyed lock: one holder per key, waiters in arrival order, other keys never held back, no key kept."""

from __future__ import annotations

import asyncio

import pytest

from bridge.locks import KeyedLock


async def test_holders_of_one_key_run_one_after_another_in_arrival_order() -> None:
    locks = KeyedLock()
    order: list[str] = []
    release = asyncio.Event()

    async def hold(name: str) -> None:
        async with locks.hold(7):
            order.append(f"{name} in")
            if name == "first":
                await release.wait()
            order.append(f"{name} out")

    tasks = [asyncio.create_task(hold(name)) for name in ("first", "second", "third")]
    await asyncio.sleep(0)  # every task has asked for the lock; only the first holds it
    assert order == ["first in"]
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["first in", "first out", "second in", "second out", "third in", "third out"]
    assert len(locks) == 0


async def test_another_key_is_not_held_back() -> None:
    locks = KeyedLock()
    async with locks.hold(1), locks.hold(2):  # would never enter if key 2 waited for key 1
        assert len(locks) == 2
    assert len(locks) == 0


async def test_a_failing_holder_releases_the_key() -> None:
    locks = KeyedLock()
    with pytest.raises(RuntimeError):
        async with locks.hold(1):
            raise RuntimeError("boom")
    assert len(locks) == 0
    async with locks.hold(1):
        pass


async def test_a_cancelled_waiter_leaves_no_key_behind() -> None:
    locks = KeyedLock()
    async with locks.hold(1):
        waiter = asyncio.create_task(_enter(locks, 1))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert len(locks) == 1  # only the holder
    assert len(locks) == 0


async def _enter(locks: KeyedLock, key: int) -> None:
    async with locks.hold(key):
        pass

"""The in-process stores that stand in for the real ones (tests' ``MemoryStateStore``, the bench's ``memory-state``
variant) park as the real stores do (tests/integration/test_state_contract.py), so that a test or a measurement
on them means what it would on SQLite or DynamoDB."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from bench.diagnostics.patches import MemoryStateStore as BenchMemoryStateStore
from bridge.state.base import StateStore
from tests.unit.fakes import MemoryStateStore


@pytest.fixture(params=[MemoryStateStore, BenchMemoryStateStore], ids=["tests", "bench"])
def store(request: pytest.FixtureRequest) -> StateStore:
    made: StateStore = request.param()
    return made


async def test_an_in_process_store_parks_as_the_real_stores_do(store: StateStore) -> None:
    for element in (100, 9, 10):
        await store.park(element, "web", "401")
    await store.park(9, "print", "401")
    [first, *_] = await store.parked("web")
    await asyncio.sleep(0.01)
    await store.park(9, "web", "403")  # again: the first since stays, the reason is the new one, a new generation
    [again] = await store.parked("web", limit=1)
    assert again == replace(first, reason="403", generation=again.generation) and again.generation != first.generation
    await store.unpark(9, "web", generation=first.generation)  # read before the second parking: left parked
    assert [p.element_id for p in await store.parked("web")] == [9, 10, 100]
    assert [p.element_id for p in await store.parked("web", after=9)] == [10, 100]
    assert (await store.parked_count("web"), await store.parked_count("print")) == (3, 1)
    await store.unpark(9, "web")
    await store.unpark(9, "web")  # nothing there: no error
    assert [p.element_id for p in await store.parked("web")] == [10, 100]
    assert [p.element_id for p in await store.parked("print")] == [9]
    with pytest.raises(ValueError, match="limit"):
        await store.parked("web", limit=0)

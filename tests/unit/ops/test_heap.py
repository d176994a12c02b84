"""The garbage-collector set-up for a worker process (bridge.ops.heap)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from bridge.ops.heap import YOUNG_GENERATION_THRESHOLD, settle_after_startup


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.mark.usefixtures("restored_collector")
def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    survivor = Node()
    settle_after_startup()
    assert gc.get_freeze_count() > 0
    # A frozen object is in no generation any more: no collection walks it.
    assert not any(tracked is survivor for tracked in gc.get_objects())
    assert gc.get_threshold()[0] == YOUNG_GENERATION_THRESHOLD
    assert gc.isenabled()


@pytest.mark.usefixtures("restored_collector")
def test_cycles_made_after_start_up_are_still_collected() -> None:
    settle_after_startup()
    first, second = Node(), Node()
    first.other, second.other = second, first
    gone = weakref.ref(first)
    del first, second
    gc.collect()
    assert gone() is None

"""The reconciliation sweep: it enqueues a resync for every element Kordiam changed that the state store has not
synced at that version, and for nothing else."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

from bridge.kordiam.models import Element
from bridge.ops import metrics
from bridge.pipeline.reconcile import Reconciler
from bridge.state.base import ElementMark
from tests.unit.fakes import FakeKordiam, FakeTransport, MemoryStateStore, element_body


def reconciler(kordiam: FakeKordiam, state: MemoryStateStore, transport: FakeTransport) -> Reconciler:
    return Reconciler(kordiam=kordiam.client(), state=state, transport=transport, interval=60, lookback=3600)


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

"""A worker runs for weeks over hundreds of thousands of elements: what the sync engine keeps per element must not
outlive the element's sync, or stay beyond its bound. Counts after many distinct elements, not timings."""

from __future__ import annotations

from datetime import UTC, datetime

from bridge.config import FeedbackSettings
from bridge.errors import ChannelUnavailable
from bridge.pipeline.covering import FetchLedger
from bridge.pipeline.notification import Event, Notification
from bridge.pipeline.routing import Route
from bridge.pipeline.sync import SyncEngine, SyncFailed
from bridge.state import SqliteStateStore
from tests.unit.fakes import FakeKordiam, ScriptedChannel, element_body, publication

ELEMENTS = 600
LEDGER_CAPACITY = 50


async def test_many_distinct_elements_leave_no_per_element_state_behind(
    kordiam: FakeKordiam, store: SqliteStateStore
) -> None:
    channel = ScriptedChannel("web")
    engine = SyncEngine(
        kordiam=kordiam.client(),
        routes=[Route(channel, frozenset({99003}))],
        state=store,
        feedback=FeedbackSettings(enabled=False),
        main_channel="web",
        fetched=FetchLedger(capacity=LEDGER_CAPACITY),
    )
    parked_since = {"web": datetime(2026, 12, 1, tzinfo=UTC)}
    failed = 0
    for element_id in range(1, ELEMENTS + 1):
        # Every fate an element's sync can have: written, deleted in Kordiam (its item retracted), a channel that
        # fails, a requeued parked element.
        kordiam.elements[element_id] = element_body(element_id, publication(10 * element_id, 99003))
        channel.fail = ChannelUnavailable("web is down") if element_id % 7 == 0 else None
        notification = Notification(element_id, parked_since=parked_since if element_id % 3 == 0 else {})
        try:
            await engine.sync(notification)
        except SyncFailed:
            failed += 1
        if element_id % 5 == 0 and channel.fail is None:
            del kordiam.elements[element_id]
            await engine.sync(Notification(element_id, Event.DELETED))
    assert failed > 0 and len(channel.deletes) > 0 and len(channel.items) > 0  # every path above was taken
    assert len(engine._locks) == 0
    assert engine._parked_since == {}
    assert engine._resync_due == set()
    assert len(engine._fetched._started) == LEDGER_CAPACITY
    assert store._keeper.holding(ELEMENTS) is None and len(store._keeper._held) == 0

"""A preloaded backlog drained by one ``kordiam-bridge run`` while editors change a tenth of its elements (#14).

On moto by default, on LocalStack with ``BRIDGE_TEST_SQS=localstack`` (``make test-localstack``). The worker runs
with the default clock-skew allowance (5 s): the backlog is older than that when it starts, as a real one is, so
the first successful fetch of an element covers its whole backlog; the changes made mid-drain and the worker's
own feedback writes notify within the allowance, so only a fetch that started after the worker received them
covers them. Asserted in counts, not timings: every element in its newest version in both channels and in the
state store, nothing dead-lettered, and per element at most one GET for its backlog, one per mid-drain change
and one per feedback write (each write makes Kordiam notify once, within the allowance; notifications received
together share a fetch, so often fewer).
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import pytest

from bridge.simulator import RunningSimulator
from bridge.state import SqliteStateStore
from tests.integration.test_backlog_two_workers import (
    CHANNELS,
    ELEMENT_PATH,
    ELEMENTS,
    folder_document,
    notifications_settled,
    preload_backlog,
)
from tests.support import (
    SimulatorAdmin,
    SqsEndpoint,
    WorkerProcess,
    drain,
    eventually,
    free_port,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.timeout(300)]

CHANGED = 10  # one element in ten changes mid-drain
SKEW_SECONDS = 5  # the default queue.clock_skew_seconds


async def element_calls(admin: SimulatorAdmin, element_ids: set[int]) -> dict[int, list[str]]:
    """Per element, its successful API calls in order: "get" (the element) or "write" (feedback)."""
    calls: dict[int, list[str]] = {e: [] for e in element_ids}
    for request in await admin.requests():
        match = ELEMENT_PATH.match(request["path"])
        if match and int(match.group(1)) in calls and request["status"] < 400:
            calls[int(match.group(1))].append("get" if request["method"] == "GET" and not match.group(2) else "write")
    return calls


async def test_a_backlog_with_changes_mid_drain_ends_current_with_one_fetch_per_change(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    tmp_path: Path,
) -> None:
    created, final_title, _ = await preload_backlog(admin)
    await asyncio.sleep(SKEW_SECONDS + 1)  # the worker was down a while: the backlog is older than the allowance

    port = free_port()
    config = write_config(
        tmp_path / "worker.toml",
        queue=queues[0],
        endpoint=sqs_endpoint.url,
        kordiam=simulator.base_url,
        workdir=tmp_path,
        ops_port=port,
        wait_time_seconds=1,
        retry_max_seconds=3,
        clock_skew_seconds=SKEW_SECONDS,
    )
    worker = WorkerProcess(config, tmp_path / "worker.log")
    element_ids = set(final_title)
    changed = [element["id"] for element in created[::CHANGED]]

    def all_current() -> bool:
        for element in created:
            for channel, publication in zip(CHANNELS, element["publications"], strict=True):
                document = folder_document(tmp_path, channel, element["id"], publication["id"])
                if document is None or document["element"]["title"] != final_title[element["id"]]:
                    return False
        return True

    async def half_fetched() -> bool:
        calls = await element_calls(admin, element_ids)
        return sum(1 for c in calls.values() if "get" in c) >= ELEMENTS // 2

    try:
        await eventually(functools.partial(worker.ready, port), timeout=30, what="worker ready")
        await eventually(half_fetched, timeout=60, what="half of the elements fetched")
        for element_id in changed:  # an editor saves again mid-drain: Kordiam notifies after the save
            final_title[element_id] = f"{final_title[element_id]} (edited mid-drain)"
            await admin.patch(element_id, {"title": final_title[element_id]})
        await eventually(all_current, timeout=120, what="every story in every channel in its newest version")
        await notifications_settled(admin, sqs_endpoint.url, queues[0])
    finally:
        code, _ = worker.terminate()
    assert code == 0

    store = SqliteStateStore(tmp_path / "state.db")
    await store.open()
    try:
        marks = {element_id: await store.element_mark(element_id) for element_id in element_ids}
    finally:
        await store.close()
    for element_id, mark in marks.items():
        final = await admin.get(element_id)
        assert mark is not None and not mark.deleted
        assert mark.version == final["version"], f"element {element_id} not synced to its last version"
    assert drain(sqs_endpoint.url, queues[1]) == []  # nothing dead-lettered

    calls = await element_calls(admin, element_ids)
    gets = {e: c.count("get") for e, c in calls.items()}
    allowed = {e: 1 + (e in changed) + c.count("write") for e, c in calls.items()}
    over = {e: (gets[e], allowed[e]) for e in element_ids if gets[e] > allowed[e]}
    assert over == {}, f"element GETs above the rule (got, allowed): {over}"
    events = worker.events()
    assert [e for e in events if e.get("event") == "handler_crashed"] == []
    covered = sum(1 for e in events if e.get("event") == "done" and e.get("covered"))
    print(  # the figures, for the record (pytest -s)
        f"\n{len(await admin.notifications())} notifications over {ELEMENTS} elements ({len(changed)} changed "
        f"mid-drain), {sum(gets.values())} element GETs, {covered} covered"
    )

"""A preloaded backlog drained by two ``kordiam-bridge run`` processes sharing one SQLite state store (moto server;
LocalStack with ``BRIDGE_TEST_SQS=localstack``, ``make test-localstack``).

Every notification is sent before either worker starts, so the first successful fetch of an element (by either
worker) covers all of that element's backlog: the other worker finds the fetch's start time with the element's
mark in the shared store and acknowledges its copies without a fetch. The only notifications sent after a fetch
started are the ones the workers' own feedback writes cause; each of those may cost one more fetch. The test
counts element GETs in the simulator's request log against that rule (counts, not timings).
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bridge.simulator import RunningSimulator
from bridge.state import SqliteStateStore
from tests.support import (
    SimulatorAdmin,
    SqsEndpoint,
    WorkerProcess,
    drain,
    eventually,
    free_port,
    queue_settled,
    story,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.timeout(300)]

ELEMENTS = 20
NOTIFICATIONS = 10  # per element: the creation, then nine changes, interleaved across elements
CHANNELS = ("web", "print")  # platforms 99003 and 99004, in the order of story()'s publications
ELEMENT_PATH = re.compile(r"^/api/v2/elements/(\d+)(/.*)?$")


async def preload_backlog(
    admin: SimulatorAdmin,
) -> tuple[list[dict[str, Any]], dict[int, str], list[dict[str, Any]]]:
    """The backlog, interleaved as it arrives in reality: every element created, then changed round by round.
    Returns the elements as created, each one's final title, and the notifications the simulator sent."""
    created = [await admin.create(story(f"Story {n}")) for n in range(ELEMENTS)]
    final_title = {element["id"]: element["title"] for element in created}
    for revision in range(1, NOTIFICATIONS):
        for element in created:
            title = f"{element['title']} (rev {revision})"
            await admin.patch(element["id"], {"title": title})
            final_title[element["id"]] = title
    backlog = [n for n in await admin.notifications() if n["sent"]]
    assert Counter(n["element_id"] for n in backlog) == dict.fromkeys(final_title, NOTIFICATIONS)
    return created, final_title, backlog


async def notifications_settled(admin: SimulatorAdmin, endpoint: str, queue: str) -> None:
    """Wait for the feedback notifications of the last syncs: until the simulator has sent no new ones and the
    queue is empty again, so the counts taken afterwards are final."""
    settled: list[int] = []

    async def quiet() -> bool:
        settled.append(len(await admin.notifications()))
        return len(settled) >= 3 and len(set(settled[-3:])) == 1 and await queue_settled(endpoint, queue)

    await eventually(quiet, timeout=60, what="no new notifications and the queue settled")


def folder_document(workdir: Path, channel: str, element_id: int, publication_id: int) -> dict[str, Any] | None:
    try:
        document: dict[str, Any] = json.loads((workdir / channel / f"{element_id}-{publication_id}.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return document


async def test_two_workers_drain_a_backlog_with_one_fetch_per_change(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    tmp_path: Path,
) -> None:
    created, final_title, backlog = await preload_backlog(admin)
    assert [r for r in await admin.requests() if ELEMENT_PATH.match(r["path"])] == []

    workers = []
    for name in ("worker-a", "worker-b"):
        port = free_port()
        config = write_config(
            tmp_path / f"{name}.toml",
            queue=queues[0],
            endpoint=sqs_endpoint.url,
            kordiam=simulator.base_url,
            workdir=tmp_path,  # one SQLite state store (tmp_path/state.db) and one set of folders for both
            ops_port=port,
            wait_time_seconds=1,
            retry_max_seconds=3,
            clock_skew_seconds=0,  # the backlog was sent before either worker started: no allowance to wait out
        )
        workers.append((WorkerProcess(config, tmp_path / f"{name}.log", name=name), port))
    expected = sorted(
        (element["id"], channel, publication["id"])
        for element in created
        for channel, publication in zip(CHANNELS, element["publications"], strict=True)
    )

    def all_current() -> bool:
        for element_id, channel, publication_id in expected:
            document = folder_document(tmp_path, channel, element_id, publication_id)
            if document is None or document["element"]["title"] != final_title[element_id]:
                return False
        return True

    codes: list[int] = []
    try:
        for worker, port in workers:
            await eventually(functools.partial(worker.ready, port), timeout=30, what=f"{worker.name} ready")
        await eventually(all_current, timeout=120, what="every story in every channel in its newest version")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=60, what="queue empty")
        await notifications_settled(admin, sqs_endpoint.url, queues[0])
    finally:
        codes = [worker.terminate()[0] for worker, _ in workers]
    assert codes == [0, 0]

    # Newest version everywhere: in the channels (checked above), and in the shared store's marks.
    store = SqliteStateStore(tmp_path / "state.db")
    await store.open()
    try:
        marks = {element_id: await store.element_mark(element_id) for element_id in final_title}
        deliveries = await store.all_deliveries()
    finally:
        await store.close()
    finals = {element_id: await admin.get(element_id) for element_id in final_title}
    for element_id, mark in marks.items():
        assert mark is not None and not mark.deleted and mark.fetched_at is not None
        assert mark.version == finals[element_id]["version"], f"element {element_id} not synced to its last version"
    assert sorted((d.element_id, d.channel, d.publication_id) for d in deliveries) == expected
    assert drain(sqs_endpoint.url, queues[1]) == []  # nothing dead-lettered

    # The rule, in counts: an element's backlog (all sent before any fetch) costs one fetch. After that, only
    # the workers' own feedback writes notify; a sync writes them under the element's lease, so all of one
    # sync's writes were sent before the next fetch of the element started, and that one fetch covers them.
    # So an element is fetched at most once more than the number of fetches followed by writes. Without the
    # fetch time shared through the store, both workers fetch most elements for their backlog copies.
    log: dict[int, list[str]] = {e: [] for e in final_title}
    for request in await admin.requests():
        if (match := ELEMENT_PATH.match(request["path"])) and int(match.group(1)) in log and request["status"] < 400:
            log[int(match.group(1))].append("get" if request["method"] == "GET" and not match.group(2) else "write")
    gets = {e: calls.count("get") for e, calls in log.items()}
    written_after = {
        e: sum(1 for a, b in itertools.pairwise(calls) if (a, b) == ("get", "write")) for e, calls in log.items()
    }
    over = {e: (gets[e], 1 + written_after[e]) for e in final_title if gets[e] > 1 + written_after[e]}
    assert over == {}, f"element GETs above the rule (got, allowed): {over}"
    assert all(gets[e] >= 1 for e in final_title)
    sent_later = len(await admin.notifications()) - len(backlog)

    per_worker = {worker.name: worker.events() for worker, _ in workers}
    events = [e for log in per_worker.values() for e in log]
    covered = [e for e in events if e.get("event") == "done" and e.get("covered")]
    done = {name: sum(1 for e in log if e.get("event") == "done") for name, log in per_worker.items()}
    assert [e for e in events if e.get("event") == "handler_crashed"] == []
    print(  # the figures, for the record (pytest -s)
        f"\nbacklog: {len(backlog)} notifications over {ELEMENTS} elements, {sum(gets.values())} element GETs, "
        f"{sent_later} notifications sent during the drain, {len(covered)} covered, done per worker: {done}"
    )

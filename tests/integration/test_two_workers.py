"""Two ``kordiam-bridge run`` processes on one queue and one DynamoDB table (moto server).

Stories are created and then updated several times in quick succession, so both workers receive notifications
for the same elements at the same time. However the messages are shared out, every story must end up in every
channel exactly once and in its newest version, with nothing dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from bridge.simulator import RunningSimulator
from bridge.state.dynamodb import DynamoDbStateStore, create_table
from tests.support import (
    REGION,
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

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

STORIES = 20
UPDATED = 8  # stories updated after creation
ROUNDS = 4  # updates per updated story, sent back to back
EXTRA_NOTIFICATIONS = 2  # sent right after each "created" notification
KORDIAM_DELAY = 0.15  # seconds added to every request a worker sends to the simulator
CHANNELS = ("web", "print")  # platforms 99003 and 99004, in the order of story()'s publications


class SlowProxy:
    """A TCP proxy, on its own thread and loop, that holds every request chunk for ``delay`` seconds.

    Put between the workers and the simulator, it stretches each sync to a few hundred milliseconds, so the two
    workers really do hold messages for one element at the same time (without it a sync takes milliseconds and
    the leases would hardly ever be contended).
    """

    def __init__(self, target: str, delay: float) -> None:
        parsed = urlsplit(target)
        self._target = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self._delay = delay
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="slow-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self.url = ""

    def __enter__(self) -> SlowProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        ).result(timeout=10)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, upstream_writer, self._delay),
            self._pipe(upstream_reader, writer, 0.0),
            return_exceptions=True,
        )

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, delay: float) -> None:
        try:
            while data := await source.read(65536):
                if delay:
                    await asyncio.sleep(delay)
                sink.write(data)
                await sink.drain()
        finally:
            sink.close()


def folder_document(workdir: Path, channel: str, element_id: int, publication_id: int) -> dict[str, Any] | None:
    try:
        document: dict[str, Any] = json.loads((workdir / channel / f"{element_id}-{publication_id}.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return document


@pytest.fixture
def stack() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


async def test_two_workers_deliver_every_story_once_in_its_newest_version(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    tmp_path: Path,
    stack: contextlib.ExitStack,
) -> None:
    table = f"bridge-state-{uuid.uuid4().hex[:12]}"
    await create_table(sqs_endpoint.url, table, region=REGION)
    kordiam = stack.enter_context(SlowProxy(simulator.base_url, KORDIAM_DELAY))
    workers = []
    for name in ("worker-a", "worker-b"):
        port = free_port()
        config = write_config(
            tmp_path / f"{name}.toml",
            queue=queues[0],
            endpoint=sqs_endpoint.url,
            kordiam=kordiam.url,
            workdir=tmp_path,
            ops_port=port,
            state_url=f"dynamodb://{table}",
            state_extra="\n".join(
                (
                    f'endpoint_url = "{sqs_endpoint.url}"',
                    f'region = "{REGION}"',
                    "lease_seconds = 60",
                    "lease_wait_seconds = 10",
                )
            ),
            wait_time_seconds=1,
            retry_max_seconds=3,
        )
        workers.append((WorkerProcess(config, tmp_path / f"{name}.log", name=name), port))
    codes: list[int] = []
    try:
        for worker, port in workers:
            await eventually(functools.partial(worker.ready, port), timeout=30, what=f"{worker.name} ready")

        # Bursts while both workers poll: each new story is notified twice more at once, each updated story
        # changes several times back to back, so both workers hold messages for one element at the same time.
        created = []
        for n in range(STORIES):
            element = await admin.create(story(f"Story {n}"))
            for _ in range(EXTRA_NOTIFICATIONS):
                await admin.notify(element["id"])
            created.append(element)
        # The Kordiam version that carries each story's final content (later versions only hold our feedback).
        content_version = {element["id"]: element["version"] for element in created}
        final_title = {element["id"]: element["title"] for element in created}
        for element in created[:UPDATED]:
            for revision in range(1, ROUNDS + 1):
                title = f"{element['title']} (rev {revision})"
                changed = await admin.patch(element["id"], {"title": title})
                content_version[element["id"]] = changed["version"]
                final_title[element["id"]] = title

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

        await eventually(all_current, timeout=120, what="every story in every channel in its newest version")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=60, what="queue empty")
        await asyncio.sleep(3)  # feedback notifications from the last syncs must not start anything new
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=60, what="queue settled")
    finally:
        codes = [worker.terminate()[0] for worker, _ in workers]
    assert codes == [0, 0]

    # The state table: exactly one delivery per element, channel and publication, each of the newest content.
    store = DynamoDbStateStore(table, region=REGION, endpoint_url=sqs_endpoint.url)
    await store.open()
    try:
        deliveries = await store.all_deliveries()
        marks = {element_id: await store.element_mark(element_id) for element_id in final_title}
    finally:
        await store.close()
    keys = [(d.element_id, d.channel, d.publication_id) for d in deliveries]
    assert keys == expected, "missing or duplicate deliveries"
    finals = {element_id: await admin.get(element_id) for element_id in final_title}
    for delivery in deliveries:
        assert delivery.external_id == f"{delivery.element_id}-{delivery.publication_id}"
        document = folder_document(tmp_path, delivery.channel, delivery.element_id, delivery.publication_id)
        assert document is not None
        # Feedback writes move the Kordiam version on without changing the content (the fingerprint ignores
        # them), so the channel holds the first version that carried the final content, or a later one.
        assert document["element"]["title"] == final_title[delivery.element_id]
        assert document["element"]["version"] == delivery.version
        assert content_version[delivery.element_id] <= delivery.version <= finals[delivery.element_id]["version"]
    for element_id, mark in marks.items():
        assert mark is not None and not mark.deleted
        assert mark.version == finals[element_id]["version"], f"element {element_id} not synced to its last version"
        assert all(p.get("externalId") for p in finals[element_id]["publications"])

    # The folders: one file pair per delivery, nothing else.
    for channel in CHANNELS:
        names = sorted(path.name for path in (tmp_path / channel).iterdir())
        wanted = sorted(f"{e}-{p}.{suffix}" for e, c, p in expected if c == channel for suffix in ("json", "html"))
        assert names == wanted

    # Exactly once across both processes: each publication was *created* in its channel by one sync only.
    events = {worker.name: worker.events() for worker, _ in workers}
    done = {name: [e for e in log if e.get("event") == "done"] for name, log in events.items()}
    actions: Counter[tuple[str, str]] = Counter()
    creates: Counter[str] = Counter()
    for log in done.values():
        for event in log:
            for key, action in (event.get("channels") or {}).items():
                actions[(key, action)] += 1
                if action == "created":
                    creates[f"{event['element_id']}/{key}"] += 1
    duplicates = {key: count for key, count in creates.items() if count > 1}
    assert duplicates == {}
    assert len(creates) == len(expected)
    handled = {name: {e["element_id"] for e in log} for name, log in done.items()}
    assert all(handled.values()), f"a worker did no work: { {n: len(h) for n, h in handled.items()} }"
    shared = set.intersection(*handled.values())
    retries = [e for log in events.values() for e in log if e.get("event") == "retry_later"]
    crashes = [e for log in events.values() for e in log if e.get("event") == "handler_crashed"]
    assert crashes == []
    assert drain(sqs_endpoint.url, queues[1]) == []

    print(  # the figures, for the record (pytest -s)
        f"\ntwo workers: {STORIES} stories, {UPDATED * ROUNDS} updates, "
        f"{sum(len(log) for log in done.values())} messages done "
        f"({', '.join(f'{n}: {len(log)}' for n, log in done.items())}), "
        f"{len(shared)} elements handled by both, {len(deliveries)} deliveries, "
        f"{sum(c for (_, a), c in actions.items() if a == 'updated')} channel updates, "
        f"{sum(1 for e in retries if e.get('stage') == 'lease')} lease retries, "
        f"{len(retries)} retries in all, duplicates 0"
    )

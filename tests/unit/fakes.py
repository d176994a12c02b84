"""In-process fakes of what the pipeline talks to: Kordiam's API, the state store, channels and the queue.

Each implements the real interface (``StateStore``, ``Channel``, ``Transport``; Kordiam through the real
``KordiamClient`` over an in-process HTTP handler), so the code under test runs its own paths end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr

from bridge.channels.base import Channel, ChannelResult, FoundItem
from bridge.config import FeedbackSettings
from bridge.errors import BridgeError
from bridge.kordiam.client import KordiamClient
from bridge.kordiam.models import Element, Publication
from bridge.pipeline.routing import Route
from bridge.pipeline.sync import SyncEngine
from bridge.queue.dead_letter import DeadLetterContext
from bridge.queue.transport import QueueInfo, QueueMessage
from bridge.retry import RetryPolicy
from bridge.state.base import (
    Delivery,
    DeliveryCounts,
    ElementBusy,
    ElementMark,
    ElementRecord,
    HeldLease,
    LeaseRecord,
    Parked,
    RecordedDelivery,
    StateUnavailable,
    count_deliveries,
    is_older,
    new_generation,
)
from tests.support import http_answering

API = "/api/v2"


def element_body(element_id: int, *publications: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """An element as Kordiam's API returns it; each publication is ``{"id": …, "platform": {"id": …}, …}``."""
    return {"id": element_id, "title": f"Story {element_id}", "publications": list(publications), **fields}


def publication(publication_id: int, platform: int, **fields: Any) -> dict[str, Any]:
    return {"id": publication_id, "platform": {"id": platform}, **fields}


class ManualClock:
    """A monotonic clock that moves only when a test moves ``now``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeKordiam:
    """Kordiam's API in process: the elements it holds, and every write the bridge sends it (method, path, body),
    applied to the element it names.

    ``fail_get`` answers every element read with that status (a 4xx other than 404 is a permanent refusal);
    ``refuse_tokens`` refuses that many token requests first, as Kordiam does a rotated secret; ``down`` answers
    that many API requests (element reads, ``/platforms``) with 503 first, as Kordiam down for everyone;
    ``failing_writes`` answers the next writes with its statuses, one each, first (a write that fails is not
    applied nor listed in ``writes``). ``access_token`` is the token it hands out.
    """

    def __init__(self) -> None:
        self.elements: dict[int, dict[str, Any]] = {}
        self.writes: list[tuple[str, str, dict[str, Any] | None]] = []
        self.fail_get: int | None = None
        self.refuse_tokens = 0
        self.down = 0
        self.tokens_asked = 0
        self.reads: list[str] = []
        self.failing_writes: list[int] = []
        self.access_token = "t"

    def client(self, retry: RetryPolicy | None = None) -> KordiamClient:
        return KordiamClient(
            http_answering(self.answer),
            base_url="https://kordiam.test",
            client_id="c",
            client_secret=SecretStr("s3cret-value"),
            retry=retry,
        )

    def answer(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix(API)
        if path == "/auth/token":
            self.tokens_asked += 1
            if self.tokens_asked <= self.refuse_tokens:  # the worker's secret was rotated under it
                return httpx.Response(401, json={"title": "invalid_client", "status": 401})
            return httpx.Response(200, json={"access_token": self.access_token, "expires_in": 3600})
        if request.method == "GET":
            self.reads.append(path)
        if self.down:
            self.down -= 1
            return httpx.Response(503, json={"title": "Service Unavailable", "status": 503})
        if request.method == "GET" and path == "/platforms":
            return httpx.Response(200, json={"content": [{"id": 99003, "name": "Web"}]})
        if request.method == "GET" and path == "/elements":  # the sweep's list: one page of every element
            return httpx.Response(200, json={"content": list(self.elements.values()), "hasMore": False})
        if request.method == "GET" and path.startswith("/elements/"):
            if self.fail_get is not None:
                return httpx.Response(self.fail_get, json={"title": "refused", "status": self.fail_get})
            body = self.elements.get(int(path.rsplit("/", 1)[1]))
            return httpx.Response(200, json=body) if body else httpx.Response(404, json={"status": 404})
        if self.failing_writes:
            status = self.failing_writes.pop(0)
            return httpx.Response(status, json={"title": "refused", "status": status})
        body = json.loads(request.content) if request.content else None
        if not self._holds(path):  # as Kordiam (and the simulator) answer a write to what it no longer has
            return httpx.Response(404, json={"title": "Not Found", "status": 404})
        self.writes.append((request.method, path, body))
        self._apply(path, body or {})
        return httpx.Response(200, json={})

    def _holds(self, path: str) -> bool:
        """Whether Kordiam still has the element (and the publication) a write names."""
        parts = path.strip("/").split("/")
        element = self.elements.get(int(parts[1]))
        if element is None:
            return False
        return parts[2] != "publications" or any(p["id"] == int(parts[3]) for p in element["publications"])

    def _apply(self, path: str, body: dict[str, Any]) -> None:
        """Keep what a feedback write set, as Kordiam does, so the next read shows it: a PATCH is presence-aware
        (an omitted field is left, ``null`` clears one, and so inside ``cms``)."""
        parts = path.strip("/").split(
            "/"
        )  # elements/{id}/publications/{id}[/publish] or elements/{id}/external-element/link|unlink
        element = self.elements.get(int(parts[1]))
        if element is None:
            return
        if parts[2] == "external-element":
            if parts[-1] == "unlink":
                element.pop("externalElement", None)
            else:
                element["externalElement"] = body
            return
        held = next(p for p in element["publications"] if p["id"] == int(parts[3]))
        if parts[-1] == "publish":
            held["published"] = {"date": "2026-11-23"}
            return
        for key, value in body.items():
            merged = value
            if key == "cms" and isinstance(value, dict):
                links = {**(held.get("cms") or {}), **value}
                merged = {name: link for name, link in links.items() if link is not None} or None
            if merged is None:
                held.pop(key, None)
            else:
                held[key] = merged


class MemoryStateStore:
    """The ``StateStore`` contract in a dict. ``busy`` makes every lease refused; ``stale`` makes every record lose
    to a newer version, as when another worker synced the element meanwhile; ``down`` (a count) makes that many
    lease takes and probes fail with ``StateUnavailable``, as a store that is down for everyone; ``probes`` counts
    the probes; ``unflushable`` (a count) makes that many flushes fail so, ``flushes`` counts those that passed;
    ``parks`` holds the parked elements by (channel, element id); ``leases`` the leases other workers
    hold; ``sweep_cursors`` the sweeps' cursors; ``sweeps_held_elsewhere`` the sweeps whose lease another worker
    holds, ``sweeps_held`` those this store holds."""

    reads_in_process = True

    def __init__(self) -> None:
        self.rows: dict[tuple[int, str, int], Delivery] = {}
        self.marks: dict[int, ElementMark] = {}
        self.parks: dict[tuple[str, int], Parked] = {}
        # What ``element_record`` says of a lease held by another worker (this store keeps none of its own).
        self.leases: dict[int, LeaseRecord] = {}
        self.sweep_cursors: dict[str, datetime] = {}
        self.sweeps_held_elsewhere: set[str] = set()
        self.sweeps_held: set[str] = set()
        self.busy = False
        self.stale = False
        self.down = 0
        self.probes = 0
        self.unflushable = 0
        self.flushes = 0

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def probe(self) -> None:
        self.probes += 1
        self._fail_if_down()

    async def flush(self) -> None:
        if self.unflushable:
            self.unflushable -= 1
            raise StateUnavailable("SQLite state.db: cannot sync the WAL to disk: Input/output error")
        self.flushes += 1

    def _fail_if_down(self) -> None:
        if self.down:
            self.down -= 1
            raise StateUnavailable("SQLite state.db: disk I/O error")

    @asynccontextmanager
    async def _lease(self, element_id: int) -> AsyncIterator[HeldLease]:
        self._fail_if_down()
        if self.busy:
            raise ElementBusy(f"element {element_id} is leased by another worker")
        held = HeldLease(element_id)
        try:
            yield held
        finally:
            if held.mark is not None:
                await self.mark_element(held.mark)

    def lease(self, element_id: int) -> AbstractAsyncContextManager[HeldLease]:
        return self._lease(element_id)

    async def deliveries(self, element_id: int) -> list[Delivery]:
        return [d for (e, _, _), d in self.rows.items() if e == element_id]

    async def record(self, delivery: Delivery) -> bool:
        key = (delivery.element_id, delivery.channel, delivery.publication_id)
        held = self.rows.get(key)
        newer = (delivery.modification_date, delivery.version)
        if self.stale or (held is not None and is_older(newer, (held.modification_date, held.version))):
            return False
        self.rows[key] = delivery
        return True

    async def forget(self, element_id: int, channel: str, publication_id: int) -> None:
        self.rows.pop((element_id, channel, publication_id), None)

    async def element_mark(self, element_id: int) -> ElementMark | None:
        return self.marks.get(element_id)

    async def mark_element(self, mark: ElementMark) -> None:
        held = self.marks.get(mark.element_id)
        if held is not None and held.fetched_at is not None:
            if mark.fetched_at is None:
                mark = replace(mark, fetched_at=held.fetched_at)
            elif mark.fetched_at < held.fetched_at:
                return
        # A mark clears the re-sync token its sync read (``ElementMark.resync``), never sets one.
        kept = held.resync if held is not None and held.resync != mark.resync else None
        mark = replace(mark, resync=kept)
        self.marks[mark.element_id] = mark

    async def element_record(self, element_id: int) -> ElementRecord:
        held = [RecordedDelivery(self.rows[key], None) for key in sorted(self.rows) if key[0] == element_id]
        return ElementRecord(element_id, self.marks.get(element_id), held, self.leases.get(element_id))

    async def deliveries_with_external_id(self, external_id: str) -> list[Delivery]:
        return [self.rows[key] for key in sorted(self.rows) if self.rows[key].external_id == external_id]

    async def deliveries_of_publication(self, publication_id: int) -> list[Delivery]:
        return [self.rows[key] for key in sorted(self.rows) if key[2] == publication_id]

    async def all_deliveries(self) -> list[Delivery]:
        return list(self.rows.values())

    async def delivery_counts(self, limit: int) -> DeliveryCounts:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")  # as the real stores refuse it
        held = list(self.rows.values())  # in process, as SQLite's: counted whole
        counts = count_deliveries((d.channel, d.element_id, d.live, d.modification_date) for d in held)
        return DeliveryCounts(counts, complete=True, read=len(held))

    async def park(self, element_id: int, channel: str, reason: str, *, since: datetime | None = None) -> None:
        held = self.parks.get((channel, element_id))
        since = held.since if held is not None else (since or datetime.now(UTC))  # the first parking's time stays
        generation = new_generation()
        self.parks[(channel, element_id)] = Parked(element_id, channel, reason, since, generation)

    async def unpark(self, element_id: int, channel: str, *, generation: int | None = None) -> None:
        held = self.parks.get((channel, element_id))
        if held is not None and (generation is None or held.generation == generation):
            del self.parks[(channel, element_id)]

    async def parked(self, channel: str, *, after: int | None = None, limit: int = 100) -> list[Parked]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")  # as the real stores refuse it
        found = sorted(e for c, e in self.parks if c == channel and (after is None or e > after))
        return [self.parks[(channel, e)] for e in found[:limit]]

    async def parked_count(self, channel: str) -> int:
        return sum(1 for c, _ in self.parks if c == channel)

    async def parked_channels(self) -> list[str]:
        return sorted({c for c, _ in self.parks})

    async def sweep_cursor(self, sweep: str) -> datetime | None:
        return self.sweep_cursors.get(sweep)

    async def advance_sweep_cursor(self, sweep: str, to: datetime) -> None:
        held = self.sweep_cursors.get(sweep)
        self.sweep_cursors[sweep] = to if held is None else max(held, to)

    async def take_sweep_lease(self, sweep: str, *, seconds: float) -> bool:
        if sweep in self.sweeps_held_elsewhere:
            return False
        self.sweeps_held.add(sweep)
        return True

    async def release_sweep_lease(self, sweep: str) -> None:
        self.sweeps_held.discard(sweep)


class ScriptedChannel:
    """A channel that keeps its items in a dict (external id → publication id) and fails on demand.

    ``fail`` is raised by every upsert and delete while set. ``element_scoped`` channels hold one item for the
    whole element, as the Global Export protocol does.
    """

    def __init__(self, name: str, *, element_scoped: bool = False, live: bool = False) -> None:
        self.name = name
        self.element_scoped = element_scoped
        self.live = live
        self.items: dict[str, list[int]] = {}
        self.upserts: list[tuple[int, str | None]] = []
        self.deletes: list[str] = []
        self.fail: BridgeError | None = None

    async def upsert(self, element: Element, publication: Publication, external_id: str | None) -> ChannelResult:
        if self.fail is not None:
            raise self.fail
        self.upserts.append((publication.id, external_id))
        item = external_id or f"{self.name}-{element.id}-{publication.id}"
        self.items.setdefault(item, []).append(publication.id)
        return ChannelResult(item, edit_link=f"https://{self.name}.test/{item}", live=self.live)

    async def delete(self, element_id: int, publication_id: int, external_id: str) -> None:
        if self.fail is not None:
            raise self.fail
        self.deletes.append(external_id)
        self.items.pop(external_id, None)

    async def aclose(self) -> None:
        return None


class FindingChannel(ScriptedChannel):
    """A ``ScriptedChannel`` that also implements ``FindsItems``: its item ids (``{name}-{element}-{publication}``)
    are the mark, so a create whose answer was lost is an entry in ``items`` the state store has no row for.
    ``fail_find`` is raised by every search while set; ``finds`` records the elements searched."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.finds: list[int] = []
        self.fail_find: BridgeError | None = None

    async def find_items(self, element_id: int) -> list[FoundItem]:
        self.finds.append(element_id)
        if self.fail_find is not None:
            raise self.fail_find
        prefix = f"{self.name}-{element_id}-"
        return [FoundItem(int(item.removeprefix(prefix)), item) for item in self.items if item.startswith(prefix)]


def sync_engine(
    kordiam: FakeKordiam,
    state: MemoryStateStore,
    routes: Sequence[tuple[Channel, int]],
    *,
    feedback: FeedbackSettings | None = None,
    retry: RetryPolicy | None = None,
) -> SyncEngine:
    """An engine over the fakes; each route is (channel, the one platform it takes); the first is the main one.
    ``retry`` is the Kordiam client's policy (``ONE_ATTEMPT`` to fail a sync on the first 5xx, without sleeping)."""
    return SyncEngine(
        kordiam=kordiam.client(retry),
        routes=[Route(channel, frozenset({platform})) for channel, platform in routes],
        state=state,
        feedback=feedback or FeedbackSettings(),
        main_channel=routes[0][0].name,
    )


class FakeTransport:
    """Hands out scripted batches and records every settling call; ``visibility`` records, as SQS would see it,
    retries (their delay), releases (0) and extensions (the lease)."""

    def __init__(self, batches: list[list[QueueMessage]], *, fifo: bool = False) -> None:
        self.url = "https://sqs.test/q" + (".fifo" if fifo else "")
        self.dlq_url: str | None = "https://sqs.test/dlq"
        self.batches = batches
        self.deleted: list[str] = []
        self.visibility: list[tuple[str, int]] = []
        self.dead: list[tuple[str, DeadLetterContext]] = []
        self.sent: list[str] = []
        self.attributes: list[dict[str, str]] = []  # of each sent message, in order
        self.fifo = fifo

    @property
    def ordered_groups(self) -> bool:
        return self.fifo

    @property
    def lease_seconds(self) -> int:
        return 30

    @property
    def aborted_receive_hides(self) -> bool:
        return True

    def connected(self) -> bool:
        return True

    async def describe(self) -> QueueInfo:
        return QueueInfo("https://sqs.test/dlq", 3, has_redrive=False)

    async def receive(self, max_messages: int, wait_time: int) -> list[QueueMessage]:
        if self.batches:
            # Like SQS: never more than asked for; the rest of a scripted batch comes with the next receive.
            batch = self.batches.pop(0)
            if len(batch) > max_messages:
                self.batches.insert(0, batch[max_messages:])
            return batch[:max_messages]
        await asyncio.sleep(0.05)
        return []

    async def complete(self, messages: Sequence[QueueMessage]) -> list[str]:
        self.deleted.extend(m.message_id for m in messages)
        return []

    async def retry_later(self, messages: Sequence[QueueMessage], seconds: int) -> list[str]:
        self.visibility.extend((m.message_id, seconds) for m in messages)
        return []

    async def release(self, messages: Sequence[QueueMessage]) -> list[str]:
        return await self.retry_later(messages, 0)

    async def extend(self, messages: Sequence[QueueMessage], seconds: int) -> list[str]:
        return await self.retry_later(messages, seconds)

    async def send_dead_letter(self, msg: QueueMessage, context: DeadLetterContext) -> None:
        self.dead.append((msg.message_id, context))

    async def send(self, body: str, attributes: dict[str, str] | None = None, *, group_id: str | None = None) -> str:
        self.sent.append(body)
        self.attributes.append(dict(attributes or {}))
        return f"s{len(self.sent)}"


async def _drip_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads a request, then answers its head and a body one byte every 50 ms, never finishing."""
    head = await reader.readuntil(b"\r\n\r\n")
    lengths = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    await reader.readexactly(int(lengths[0]) if lengths else 0)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n")
    with contextlib.suppress(ConnectionError):
        while True:
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.05)


@asynccontextmanager
async def dripping_endpoint() -> AsyncIterator[str]:
    """An HTTP endpoint (its URL) that answers every request a byte at a time, for ever: what botocore's per-read
    timeout never catches (a sick proxy, a congested link)."""
    server = await asyncio.start_server(_drip_forever, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

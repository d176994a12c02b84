"""``kordiam-bridge element ELEMENT_ID``: what the bridge did with one element, for "story 4711 is not on the site".

Read-only, like ``status`` and ``parked list``: it changes nothing in the state store (a SQLite file is opened
read-only, one that does not exist is not made) nor in Kordiam. It shows what the store keeps on the element
(``StateStore.element_record``: its mark, each channel's delivery with when it was recorded, its lease) and the
channels it is parked for (a key lookup per channel, as ``parked requeue --element`` makes). It asks the worker's
ops endpoint, as ``status`` does, whether it takes messages now (a paused worker delivers nothing of any element)
and which configured channels fail now (what they would be given is parked); one not reached leaves that unknown,
and the report says so. A failing channel is a problem of the element only where the element goes to it
(``ElementReport.failing_channels``): by the routing of the element Kordiam holds now with ``kordiam``, else where
the store holds a delivery of it or work parked for it; another is said as context. With ``dead_letters``
it looks through the first ``scan_limit`` dead letters for the element's (``dlq.dead_letters_of``: on SQS each look
counts as a receive, as for ``dlq show``); with ``kordiam`` it fetches the element (one GET, through the bridge's
``KordiamClient``) and says, per configured channel route and publication, whether what the channel was last given
is the element's content now: the pipeline's own fingerprint and routing, so "in line" is what the worker would
leave alone and "would be sent again" what it would write.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bridge.admin.dlq import dead_letters_of
from bridge.admin.parked import open_store, stored_reason
from bridge.admin.progress import ProgressSink
from bridge.admin.results import (
    DELETED_IN_KORDIAM,
    IN_LINE,
    NOT_CONFIGURED,
    NOT_EXPORTED,
    SENT_AGAIN,
    WITHDRAWN,
    ElementCheck,
    ElementDeadLetters,
    ElementDelivery,
    ElementInKordiam,
    ElementLease,
    ElementParked,
    ElementReport,
    ElementWorker,
)
from bridge.admin.status import OPS_TIMEOUT_SECONDS, ask_worker
from bridge.channels import channel_types
from bridge.config import ChannelSettings, KordiamCommandSettings, StatusSettings
from bridge.errors import AdminError, BridgeError, QueueUnreachable
from bridge.http import HttpClient
from bridge.kordiam.client import KordiamClient
from bridge.kordiam.models import Element, Publication, Ref
from bridge.pipeline.fingerprint import fingerprint, matches
from bridge.pipeline.routing import platform_carries, status_exports
from bridge.queue import open_queue_admin
from bridge.retry import RetryPolicy
from bridge.state import StateStore
from bridge.state.base import Delivery, ElementRecord, LeaseRecord, parked_elsewhere
from bridge.state.leases import LeaseOwner, owner_is_gone

# Dead letters looked at by --dlq unless --scan-limit says otherwise: as `dlq show`'s.
DEFAULT_SCAN_LIMIT = 1000
# An operator waits at a terminal: a blip is retried, an outage is said at once rather than waited out.
KORDIAM_RETRY = RetryPolicy(attempts=2, total_seconds=10.0)


async def element_report(
    settings: StatusSettings,
    element_id: int,
    *,
    dead_letters: bool = False,
    scan_limit: int = DEFAULT_SCAN_LIMIT,
    kordiam: bool = False,
    config: Path | None = None,
    progress: ProgressSink | None = None,
) -> ElementReport:
    """Everything the bridge knows of ``element_id``; ``kordiam`` needs ``KordiamCommandSettings``."""
    store = await open_store(settings, read_only=True)
    try:
        record = await _read(store, element_id)
        parked = await parked_for(store, settings, element_id)
    finally:
        await store.close()
    worker = await worker_view(settings)
    found: ElementDeadLetters | None = None
    if dead_letters:
        try:
            async with open_queue_admin(settings.queue) as queue:
                found = await dead_letters_of(queue, element_id, scan_limit=scan_limit, progress=progress)
        except QueueUnreachable as error:  # what the store and the worker say of the element still stands
            found = ElementDeadLetters(settings.queue.dlq_url or "-", [], 0, more=False, error=str(error))
    in_kordiam: ElementInKordiam | None = None
    if kordiam:
        if not isinstance(settings, KordiamCommandSettings):
            raise TypeError("element --kordiam needs KordiamCommandSettings")
        replay = replay_command(element_id, config)
        try:
            element = await fetch_element(settings, element_id)
        except AdminError as error:  # what the store and the worker say of the element still stands
            in_kordiam = ElementInKordiam(False, None, None, [], replay, error=str(error))
        else:
            in_kordiam = compare(element, element_id, record, settings.channels, replay)
    return build_report(record, settings, parked, found, in_kordiam, worker)


async def worker_view(settings: StatusSettings) -> ElementWorker:
    """Whether the worker at ``[ops]`` takes messages now, and which configured channels fail (as ``status``)."""
    answer = await ask_worker(settings, OPS_TIMEOUT_SECONDS)
    health = answer.health
    configured = {c.name for c in settings.channels}
    return ElementWorker(
        endpoint=health.endpoint,
        reachable=health.reachable,
        detail=None if health.reachable else health.detail,
        paused=health.not_ready_reason,
        paused_since=health.not_ready_since,
        failing={name: why for name, why in answer.failing_channels.items() if name in configured},
    )


async def _read(store: StateStore, element_id: int) -> ElementRecord:
    try:
        return await store.element_record(element_id)
    except BridgeError:
        raise
    except Exception as error:  # one line, never a traceback
        raise AdminError(
            f"cannot read element {element_id} from the state store: {type(error).__name__}: {error}"
        ) from None


async def parked_for(store: StateStore, settings: StatusSettings, element_id: int) -> list[ElementParked]:
    """The channels the element is parked for: the configured ones in configuration order, then those the
    configuration no longer has; a key lookup each."""
    names = settings.parked_under
    configured = set(names)
    now = datetime.now(UTC)
    found: list[ElementParked] = []
    for name in names + list(await parked_elsewhere(store, names)):
        page = await store.parked(name, after=element_id - 1, limit=1)
        if page and page[0].element_id == element_id:
            item = page[0]
            age = max(0.0, (now - item.since).total_seconds())
            found.append(ElementParked(name, item.since, age, stored_reason(item), name in configured))
    return found


async def fetch_element(settings: KordiamCommandSettings, element_id: int) -> Element | None:
    """The element as Kordiam holds it now (None: 404), in one GET; any failure is one line (``AdminError``)."""
    kordiam = settings.kordiam
    async with HttpClient(max_connections=2, timeout=kordiam.timeout) as http:
        client = KordiamClient(
            http,
            base_url=kordiam.base_url,
            client_id=kordiam.client_id,
            client_secret=kordiam.client_secret,
            timeout=kordiam.timeout,
            retry=KORDIAM_RETRY,
        )
        try:
            return await client.get_element(element_id)
        except Exception as error:
            raise AdminError(
                f"Kordiam {kordiam.base_url}: cannot fetch element {element_id}: {type(error).__name__}: {error}"
            ) from None


def compare(
    element: Element | None,
    element_id: int,
    record: ElementRecord,
    channels: Sequence[ChannelSettings],
    replay: str,
) -> ElementInKordiam:
    """Each configured channel route and publication against ``element`` (None: deleted in Kordiam), as the sync
    engine would judge it: a publication the route exports is left alone when its delivery's fingerprint matches
    (``IN_LINE``), else written (``SENT_AGAIN``); a delivery for a publication the route no longer carries (gone
    from the element, moved off the channel's platforms) is withdrawn; one the route carries but whose status the
    filter does not let through stays as it was (``NOT_EXPORTED``). On an element-scoped channel a withdrawal
    whose remote element a sibling still stands on is sent as that sibling's upsert (``_channel_checks``). An
    element marked for a re-sync (``ElementMark.resync``) has every publication the route exports written again.
    An element deleted in Kordiam has each channel holding it delete its items (``DELETED_IN_KORDIAM``), and every
    channel that finds items searched for those no delivery records (``ElementInKordiam.searched``)."""
    held = {(r.delivery.channel, r.delivery.publication_id): r.delivery for r in record.deliveries}
    configured = {c.name for c in channels}
    scoped = channel_types()
    checks: list[ElementCheck] = []
    searched: list[str] = []
    if element is None:
        for name, publication_id in held:
            if name in configured:
                checks.append(ElementCheck(name, publication_id, DELETED_IN_KORDIAM, "the channel still holds it"))
        # The engine's ``_retract_unrecorded``: every channel that finds items, whatever it holds.
        searched = [c.name for c in channels if (kind := scoped.get(c.type)) is not None and kind.finds_items]
    else:
        # A sync that lost its lease left the token: the next one is forced, whatever the fingerprints say.
        resync = record.mark is not None and record.mark.resync is not None
        for channel in channels:
            kind = scoped.get(channel.type)
            mine = {publication_id: d for (name, publication_id), d in held.items() if name == channel.name}
            element_scoped = kind is not None and kind.element_scoped
            checks += _channel_checks(channel, element, mine, element_scoped=element_scoped, resync=resync)
    for name, publication_id in held:
        if name not in configured:
            checks.append(ElementCheck(name, publication_id, NOT_CONFIGURED, "its item was left in place"))
    return ElementInKordiam(
        element is not None,
        element.modification_date if element else None,
        element.version if element else None,
        checks,
        replay,
        searched=searched,
    )


def _channel_checks(
    channel: ChannelSettings, element: Element, held: dict[int, Delivery], *, element_scoped: bool, resync: bool
) -> list[ElementCheck]:
    """One channel's verdicts, publication by publication (``held``: its deliveries by publication id).

    As the engine does (``SyncEngine._retract``, ``_deliver``): on an element-scoped channel (one remote element for
    the story, the Global Export) a publication that left the channel while a kept sibling's delivery is on the
    same remote element is not deleted; the first publication the channel exports (or, when its status filter lets
    none through, that sibling) is upserted whatever its fingerprint, which sends the element without it."""
    carried = [p for p in element.publications if platform_carries(channel.platforms, p)]
    kept = {p.id for p in carried}
    withdrawn = [d for publication_id, d in held.items() if publication_id not in kept]
    shared = [
        gone
        for gone in withdrawn
        if element_scoped and any(p in kept and d.external_id == gone.external_id for p, d in held.items())
    ]
    carrier = _carrier(channel, carried, held, shared)
    checks: list[ElementCheck] = []
    for publication in element.publications:
        previous = held.get(publication.id)
        if publication.id not in kept and previous is not None:
            continue  # moved off the channel's platforms: said once, below, as the withdrawal it is
        if publication is carrier:
            without = ", ".join(str(gone.publication_id) for gone in shared)
            plural = "s" if len(shared) > 1 else ""
            detail = f"the channel's element is sent again without publication{plural} {without}, which left it"
            checks.append(ElementCheck(channel.name, publication.id, SENT_AGAIN, detail))
            continue
        checks.append(_check(channel, element, publication, previous, resync=resync))
    for gone in withdrawn:
        if gone in shared:
            detail = "left the channel; its element stays for the other publications and is sent without it"
        else:
            detail = "the publication is gone from the element or off the channel's platforms"
        checks.append(ElementCheck(channel.name, gone.publication_id, WITHDRAWN, detail))
    return checks


def _carrier(
    channel: ChannelSettings, carried: list[Publication], held: dict[int, Delivery], shared: list[Delivery]
) -> Publication | None:
    """The publication whose upsert sends the channel's element without the ``shared`` withdrawals: the first the
    channel exports, else the first it carries on their remote element (the engine's ``_stand_in``)."""
    if not shared:
        return None
    exported = [p for p in carried if status_exports(channel.statuses, p)]
    if exported:
        return exported[0]
    items = {gone.external_id for gone in shared}
    return next((p for p in carried if p.id in held and held[p.id].external_id in items), None)


def _check(
    channel: ChannelSettings, element: Element, publication: Publication, previous: Delivery | None, *, resync: bool
) -> ElementCheck:
    if not platform_carries(channel.platforms, publication):
        platforms = ", ".join(map(str, channel.platforms))
        return ElementCheck(
            channel.name, publication.id, NOT_EXPORTED, f"platform {_ref(publication.platform)} (channel: {platforms})"
        )
    if not status_exports(channel.statuses, publication):
        status = _ref(publication.status) if publication.status else "none"
        wanted = ", ".join(map(str, channel.statuses or ()))
        kept = "; the channel keeps what it was last given" if previous is not None else ""
        return ElementCheck(channel.name, publication.id, NOT_EXPORTED, f"status {status} (channel: {wanted}){kept}")
    if previous is None:
        return ElementCheck(channel.name, publication.id, SENT_AGAIN, "never sent to this channel")
    if not matches(previous.fingerprint, fingerprint(element, publication), element, publication):
        return ElementCheck(channel.name, publication.id, SENT_AGAIN, "its content changed since it was sent")
    if resync:
        detail = "a re-sync is due (a sync lost its lease; the channel may hold an older version than recorded)"
        return ElementCheck(channel.name, publication.id, SENT_AGAIN, detail)
    return ElementCheck(channel.name, publication.id, IN_LINE)


def _ref(ref: Ref) -> str:
    return f"{ref.id} ({ref.name})" if ref.name else str(ref.id)


def replay_command(element_id: int, config: Path | None) -> str:
    words = ["kordiam-bridge", "replay"]
    if config is not None:
        words += ["--config", str(config)]
    return shlex.join([*words, str(element_id)])


def build_report(
    record: ElementRecord,
    settings: StatusSettings,
    parked: list[ElementParked],
    dead_letters: ElementDeadLetters | None,
    kordiam: ElementInKordiam | None,
    worker: ElementWorker | None = None,
) -> ElementReport:
    configured = {c.name for c in settings.channels}
    mark = record.mark
    deliveries = [
        ElementDelivery(
            channel=d.channel,
            publication_id=d.publication_id,
            external_id=d.external_id,
            fingerprint=d.fingerprint,
            edit_link=d.edit_link,
            open_link=d.open_link,
            live=d.live,
            modification_date=d.modification_date,
            version=d.version,
            recorded_at=r.recorded_at,
            configured=d.channel in configured,
        )
        for r in record.deliveries
        for d in (r.delivery,)
    ]
    return ElementReport(
        element_id=record.element_id,
        state_url=settings.state.url,
        seen=record.seen,
        synced_modification_date=mark.modification_date if mark else None,
        synced_version=mark.version if mark else None,
        deleted=mark.deleted if mark else False,
        fetch_started_at=datetime.fromtimestamp(mark.fetched_at, UTC) if mark and mark.fetched_at else None,
        deliveries=deliveries,
        parked=parked,
        lease=lease_view(record.lease),
        dead_letters=dead_letters,
        kordiam=kordiam,
        worker=worker,
    )


def lease_view(lease: LeaseRecord | None, now: float | None = None) -> ElementLease | None:
    if lease is None:
        return None
    owner = LeaseOwner.decode(lease.owner)
    return ElementLease(
        owner=lease.owner,
        expires_at=datetime.fromtimestamp(lease.expires_at, UTC),
        held=lease.expires_at > (time.time() if now is None else now),
        pid=owner.pid if owner else None,
        host=owner.host if owner else None,
        owner_gone=owner_is_gone(lease.owner),
    )

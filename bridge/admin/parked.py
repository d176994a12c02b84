"""``kordiam-bridge parked list`` and ``parked requeue``: the elements parked for a channel that refused the
bridge's credentials or was down (``bridge.pipeline.parking``), and putting them back on the queue by hand.

``list`` reads the state store read-only, as ``status`` does: it changes nothing in a file the workers share (a
SQLite file that does not exist is not made). It shows the configured channels in their configuration order, then
any channel the configuration no longer has that still holds parked elements (``parked_channels``), each
channel's elements by element id ascending: the order the store keeps them in (a key range, never a scan), and
the order a requeue sends them in.

``requeue`` is what the worker's ``ParkedRequeue`` does once a channel accepts a call again, asked for now
(after a secret was fixed at the channel's side, without waiting for the next trial or a restart): a fresh
notification per element (``resync_notification``, source ``parked-requeue``) on the worker's queue, and the
element unparked only once the queue holds it; a send that failed leaves it parked. The first element sent for
each channel names that channel in its ``try-channels`` attribute: a worker that holds the channel back for
refused credentials tries it at once, not at its next trial. The command writes to the store, so it opens it as
the worker does, but it never makes a SQLite file nor migrates one (it checks the file read-only first). If the
channel still refuses or is still down, the worker parks the element again: nothing is lost either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import structlog

from bridge import redaction
from bridge.admin.progress import NoProgress, ProgressSink
from bridge.admin.results import (
    INTERRUPTED,
    NOT_PARKED,
    ParkedElement,
    ParkedListing,
    ParkedRequeueResult,
    RequeuedElement,
)
from bridge.config import StatusSettings
from bridge.errors import AdminError, BridgeError, ConfigError
from bridge.pipeline.notification import resync_notification
from bridge.queue import QueueAdmin, open_queue_admin
from bridge.queue.transport import MAX_BATCH, OutgoingMessage
from bridge.state import StateStore, open_state_store
from bridge.state.base import Parked, iter_parked, parked_elsewhere

log = structlog.get_logger("bridge.admin")

SOURCE = "parked-requeue"


async def parked_channels(store: StateStore, settings: StatusSettings, channel: str | None) -> list[str]:
    """The channels a command is about: ``channel`` alone, else the configured ones in configuration order, then
    those the configuration no longer has (renamed or removed) that still have parked elements, by name: no worker
    calls those, so only a command requeues what they hold. ``ConfigError`` naming ``--channel`` for a channel
    neither configured nor holding parked elements."""
    names = settings.parked_under
    if channel is not None and channel in names:
        return [channel]
    unconfigured = list(await parked_elsewhere(store, names))
    if channel is None:
        return names + unconfigured
    if channel in unconfigured:
        return [channel]
    raise ConfigError(
        "--channel",
        f"no channel {channel!r} is configured, nor has one of that name parked elements "
        f"(channels: {', '.join(names + unconfigured)})",
    )


def requeue_selection(channel: str | None, element_ids: Sequence[int] | None, everything: bool) -> None:
    """``ValueError`` unless the request says what to requeue: every parked element of every channel by accident
    is not what an operator wants, so ``--all`` is asked for by name, and alone."""
    if everything and (channel is not None or element_ids):
        raise ValueError("--all requeues every parked element of every channel: give it alone")
    if not everything and channel is None and not element_ids:
        raise ValueError("say what to requeue: --channel NAME, --element ID (repeat) or --all")


async def parked_list(settings: StatusSettings, *, channel: str | None = None, limit: int = 50) -> ParkedListing:
    store = await open_store(settings, read_only=True)
    try:
        names = await parked_channels(store, settings, channel)
        configured = set(settings.parked_under)
        unconfigured = [name for name in names if name not in configured]
        return await list_parked(store, names, limit=limit, state_url=settings.state.url, unconfigured=unconfigured)
    finally:
        await store.close()


async def parked_requeue(
    settings: StatusSettings,
    *,
    channel: str | None = None,
    element_ids: Sequence[int] | None = None,
    progress: ProgressSink | None = None,
    stop: asyncio.Event | None = None,
) -> ParkedRequeueResult:
    """Requeue the parked elements of ``channel`` (None: of every configured channel), only ``element_ids`` when
    given. The caller has checked the selection (``requeue_selection``)."""
    # Checked read-only first: a missing file is not made, an older one not migrated under the workers using it.
    await (await open_store(settings, read_only=True)).close()
    store = await open_store(settings, read_only=False)
    try:
        names = await parked_channels(store, settings, channel)
        async with open_queue_admin(settings.queue) as queue:
            await queue.ensure_usable()
            return await requeue_parked(queue, store, names, element_ids=element_ids, progress=progress, stop=stop)
    finally:
        await store.close()


async def list_parked(
    store: StateStore,
    channels: Sequence[str],
    *,
    limit: int,
    state_url: str,
    unconfigured: Sequence[str] = (),
) -> ParkedListing:
    """At most ``limit`` parked elements of ``channels``, channel by channel in the order given, each channel's by
    element id ascending; ``parked`` counts them all, shown or not."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    now = datetime.now(UTC)
    shown: list[ParkedElement] = []
    counts: dict[str, int] = {}
    for name in channels:
        count = await store.parked_count(name)
        room = limit - len(shown)
        page = await store.parked(name, limit=room) if room > 0 else []
        for parked in page:
            age = max(0.0, (now - parked.since).total_seconds())
            shown.append(ParkedElement(parked.element_id, name, parked.since, age, stored_reason(parked)))
        # An element parked between the count and the page is counted as shown.
        if count := max(count, len(page)):
            counts[name] = count
    return ParkedListing(state_url, list(channels), shown, sum(counts.values()), list(unconfigured), counts)


def stored_reason(parked: Parked) -> str:
    """A parked element's reason as the store holds it, without the process's secrets (``bridge.redaction``): it
    was redacted when written, but perhaps by an older bridge, or before the secret it quotes was configured."""
    return redaction.SECRETS.redact(parked.reason)


async def requeue_parked(
    queue: QueueAdmin,
    store: StateStore,
    channels: Sequence[str],
    *,
    element_ids: Sequence[int] | None = None,
    progress: ProgressSink | None = None,
    stop: asyncio.Event | None = None,
) -> ParkedRequeueResult:
    """Send one notification per parked element of ``channels`` (only ``element_ids``, when given) and unpark it
    for each of those channels once the queue holds it; by element id ascending, ``MAX_BATCH`` at a time.

    One notification serves every channel an element is parked for: the worker syncs each channel of the element.
    A send that failed leaves the element parked (and reported); an element of ``element_ids`` parked for none of
    ``channels`` is reported ``NOT_PARKED``, nothing sent. Once ``stop`` is set (Ctrl-C) no further batch is sent:
    the rest stays parked, reported ``INTERRUPTED``.
    """
    chosen = await _chosen(store, channels, element_ids)
    results = [RequeuedElement(e, [], None, NOT_PARKED) for e, parked_for in chosen.items() if not parked_for]
    # Each element's channels, and the item read of each: the unpark (by its generation) leaves one parked again
    # meanwhile, and the notification carries its since, which a parking again keeps.
    ids = sorted(e for e, parked_for in chosen.items() if parked_for)
    # The first element sent for each channel asks a worker holding the channel back for refused credentials to
    # try it at once, rather than at its next trial (up to 5 minutes away); once per channel, not per element.
    untried = {name for e in ids for name in chosen[e]}
    progress = progress or NoProgress()
    progress.start(f"requeueing {len(ids)} parked element(s)", len(ids))
    for start in range(0, len(ids), MAX_BATCH):
        if stop is not None and stop.is_set():
            results.extend(RequeuedElement(e, list(chosen[e]), None, INTERRUPTED) for e in ids[start:])
            break
        chunk = ids[start : start + MAX_BATCH]
        messages = []
        asks: list[set[str]] = []
        for element_id in chunk:
            asks.append(untried & set(chosen[element_id]))
            untried -= asks[-1]
            since = {name: parked.since for name, parked in chosen[element_id].items()}
            body, attributes = resync_notification(element_id, source=SOURCE, try_now=asks[-1], parked_since=since)
            messages.append(OutgoingMessage(body, attributes, group_id=str(element_id)))
        outcomes = await queue.send(messages)
        for ask, outcome in zip(asks, outcomes, strict=True):
            if outcome.error is not None:
                untried |= ask  # not sent: the next element for the channel asks instead
        for element_id, outcome in zip(chunk, outcomes, strict=True):
            results.append(await _settle(store, element_id, chosen[element_id], outcome.message_id, outcome.error))
        progress.advance(len(chunk))
    results.sort(key=lambda r: r.element_id)
    result = ParkedRequeueResult(queue.url, results)
    (log.info if not result.failed else log.warning)(
        "parked_requeued_by_hand", queue=queue.url, channels=list(channels), sent=result.sent, total=len(results)
    )
    return result


async def _chosen(
    store: StateStore, channels: Sequence[str], element_ids: Sequence[int] | None
) -> dict[int, dict[str, Parked]]:
    """Each element to requeue with the channels (of ``channels``) it is parked for, each with the item read; an
    element of ``element_ids`` parked for none of them maps to an empty dict."""
    chosen: dict[int, dict[str, Parked]] = {}
    if element_ids:
        for element_id in dict.fromkeys(element_ids):
            chosen[element_id] = {}
            for name in channels:
                # A key lookup: the first parked element of the channel at or above this id.
                page = await store.parked(name, after=element_id - 1, limit=1)
                if page and page[0].element_id == element_id:
                    chosen[element_id][name] = page[0]
        return chosen
    for name in channels:
        async for parked in iter_parked(store, name):
            chosen.setdefault(parked.element_id, {})[name] = parked
    return chosen


async def _settle(
    store: StateStore, element_id: int, parked_for: dict[str, Parked], message_id: str | None, error: str | None
) -> RequeuedElement:
    """Unpark a sent element for each of its channels, unless parked again since it was read; one not sent stays
    parked (as ``ParkedRequeue._send``)."""
    channels = list(parked_for)
    if error is not None:
        return RequeuedElement(element_id, channels, None, f"not sent, still parked: {error}")
    unparked: list[str] = []
    try:
        for name, parked in parked_for.items():
            await store.unpark(element_id, name, generation=parked.generation)
            unparked.append(name)
    except Exception as failure:  # the notification is on the queue; a parked leftover is only requeued again
        left = ", ".join(c for c in channels if c not in unparked)
        return RequeuedElement(
            element_id,
            channels,
            message_id,
            f"sent, but still parked for {left}: {type(failure).__name__}: {failure} (a later requeue repeats it, "
            "harmlessly)",
        )
    return RequeuedElement(element_id, channels, message_id)


async def open_store(settings: StatusSettings, *, read_only: bool) -> StateStore:
    """The state store, or one line saying why not (``ConfigError``: ``state.url`` names no usable store); the
    commands that read or change the store (``parked``, ``element``) open it so."""
    state = settings.state
    if state.backend == "sqlite" and not state.sqlite_path.exists():
        # Opening would make an empty database: no worker ever used it, and state.url may be a typo.
        raise ConfigError("state.url", f"{state.sqlite_path} does not exist (no worker has used it)")
    try:
        return await open_state_store(state, default_region=settings.queue.region, read_only=read_only)
    except BridgeError:
        raise
    except Exception as error:  # one line, as `status` words it, never a traceback
        raise AdminError(f"state store {state.url}: cannot open: {type(error).__name__}: {error}") from None

"""``kordiam-bridge status``: queue depths, the age of the oldest message, dead letters, per-channel health.

Sources, each optional and reported as unavailable rather than failing the command:

- The queue's depth for both queues (``QueueAdmin.depth``; SQS ``GetQueueAttributes``: visible, in flight,
  delayed). Where the broker gives none (ActiveMQ over STOMP), the connection, and the dead letters counted by a
  queue browser.
- The age of the oldest message: SQS exposes it only as a CloudWatch metric, so it is *estimated* from a sample of
  messages peeked and released again (their oldest ``SentTimestamp``). Every receive counts towards the queue's
  ``maxReceiveCount``, so the main queue is sampled only on request (``sample_main``); the dead-letter queue is
  sampled unless it has a redrive policy of its own.
- The state store: what was delivered to each channel, the newest Kordiam version synced there, and the elements
  parked for a channel that refuses the bridge's credentials or is down (``bridge.pipeline.parking``). On
  DynamoDB the deliveries are counted in the first ``DELIVERY_COUNT_LIMIT`` items of the table only, and said so
  ("at least"): a Scan of a whole table reads every item, for minutes, with the workers' read capacity, and
  status may run every minute. The parked counts are a Query of each channel's own partition, always whole.
- The worker's ops endpoint (``/healthz``, ``/readyz``, ``/metrics``): liveness, readiness, per-channel error
  counters. It shows one worker process; with several, ask each.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bridge.admin.rendering import format_age
from bridge.admin.results import paged_in_note
from bridge.config import KORDIAM_FEEDBACK, QueueSettings, StatusSettings
from bridge.errors import AdminError, BridgeError, QueueUnreachable
from bridge.queue import QueueAdmin, open_queue_admin
from bridge.queue.transport import PagedIn, PeekedMessage, QueueDepth
from bridge.state import open_state_store
from bridge.state.base import RECONCILE_SWEEP, ChannelCounts, DeliveryCounts, parked_elsewhere
from bridge.terminal import visible

DEFAULT_SAMPLE = 10
# Where the broker gives no depth (ActiveMQ over STOMP): the dead letters a status browses to count them.
BROKER_COUNT_LIMIT = 1000
OPS_TIMEOUT_SECONDS = 2.0
# A dead letter older than this, or a backlog whose oldest sampled message is, counts as a problem.
STALE_SECONDS = 15 * 60
# The items status reads of a DynamoDB state table to count deliveries: about 50 read capacity units (eventually
# consistent, deliveries of ~400 bytes), one or two Scan pages. A table this small is counted exactly.
DELIVERY_COUNT_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class QueueStatus:
    role: str  # "queue" or "dead-letter queue"
    url: str
    visible: int | None = None
    in_flight: int | None = None
    delayed: int | None = None
    # An estimate: the oldest SentTimestamp among `sampled` messages peeked (and released) just now.
    oldest_sent_at: datetime | None = None
    oldest_age_seconds: float | None = None
    sampled: int = 0
    age_note: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ChannelHealth:
    name: str
    type: str | None
    configured: bool
    deliveries: int = 0
    elements: int = 0
    live: int = 0
    # The newest Kordiam modification date synced to this channel (the store keeps no write time).
    latest_synced: datetime | None = None
    # Elements set aside while the channel refused the bridge's credentials or was down; requeued once a call to it
    # succeeds.
    parked: int = 0
    # From the worker's /metrics (bridge_channel_errors_total by kind); None when the endpoint was not reachable.
    errors: dict[str, int] | None = None
    # From the worker's /metrics: why the channel fails now (its circuit breaker open or half-open, or refusing the
    # bridge's credentials); None when it does not, or the endpoint was not reachable.
    failing: str | None = None


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    endpoint: str | None
    reachable: bool
    healthy: bool | None = None
    ready: bool | None = None
    detail: str | None = None
    # /readyz's `reason` when the worker takes no messages (paused on refused credentials, still starting), and its
    # `since` when it gives one (a pause: when the worker stopped taking messages).
    not_ready_reason: str | None = None
    not_ready_since: datetime | None = None
    in_flight: int | None = None
    received: int | None = None
    outcomes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StateStatus:
    url: str
    available: bool
    detail: str | None = None
    # False: the store stopped counting after `items_read` items (DynamoDB, DELIVERY_COUNT_LIMIT); each channel's
    # deliveries, elements, live and newest version synced are then lower bounds.
    deliveries_complete: bool = True
    items_read: int | None = None
    # All the items in the table (deliveries, marks, leases, parked): DynamoDB's ItemCount, updated about every
    # six hours; None where the store gives none.
    table_items_estimate: int | None = None
    # Where the reconciliation sweep resumes (about when the last sweep that finished began, or the end of the last
    # day a longer one listed whole); None if none has.
    reconcile_cursor: datetime | None = None


@dataclass(frozen=True, slots=True)
class StatusReport:
    generated_at: datetime
    queue: QueueStatus
    dead_letter: QueueStatus
    state: StateStatus
    channels: list[ChannelHealth]
    worker: WorkerHealth

    @property
    def problems(self) -> list[str]:
        found: list[str] = []
        for status in (self.queue, self.dead_letter):
            if status.error:
                found.append(f"{status.role}: {status.error}")
        if self.dead_letter.visible or self.dead_letter.in_flight:
            count = (self.dead_letter.visible or 0) + (self.dead_letter.in_flight or 0)
            found.append(f"{count} message(s) in the dead-letter queue")
        age = self.queue.oldest_age_seconds
        if age is not None and age > STALE_SECONDS:
            found.append(f"oldest sampled message on the queue is {format_age(age)} old")
        if self.worker.endpoint and not self.worker.reachable:
            found.append(f"worker ops endpoint {self.worker.endpoint} not reachable")
        if self.worker.healthy is False:
            found.append(f"worker unhealthy: {self.worker.detail or 'healthz failed'}")
        elif self.worker.ready is False:  # alive but taking no messages: the queue grows behind it
            since = self.worker.not_ready_since
            when = f" since {since.isoformat(timespec='seconds')}" if since else ""
            found.append(f"worker not ready{when}: {self.worker.not_ready_reason or 'readyz failed'}")
        if not self.state.available:
            found.append(f"state store: {self.state.detail}")
        for channel in self.channels:
            if channel.parked and not channel.configured:
                found.append(
                    f"channel {channel.name} (not configured): {channel.parked} element(s) parked, which no worker "
                    f"requeues (`kordiam-bridge parked requeue --channel {channel.name}`)"
                )
            elif channel.parked:
                found.append(
                    f"channel {channel.name}: {channel.parked} element(s) parked: it refused the bridge's credentials "
                    "or was down (`kordiam-bridge parked list` says which)"
                )
            # Now, not since start: a write that failed once and healed (the errors column still counts it) would
            # keep a cron job's exit code at 1 until the worker restarted.
            if channel.failing:
                found.append(f"channel {channel.name}: {channel.failing}")
        return found


async def collect_status(
    settings: StatusSettings,
    *,
    sample_main: bool = False,
    sample_size: int = DEFAULT_SAMPLE,
    ops_timeout: float = OPS_TIMEOUT_SECONDS,
) -> StatusReport:
    """Gather everything; only a missing or unusable queue configuration raises (``ConfigError``). A queue that
    does not answer at all is reported, as the state store and the worker still are (``QueueUnreachable``)."""
    async with contextlib.AsyncExitStack() as stack:
        try:
            queue = await stack.enter_async_context(open_queue_admin(settings.queue))
        except QueueUnreachable as error:  # the broker's connection, made on opening
            return await _report(settings, _unreachable(settings.queue, error), ops_timeout)
        queues = _queue_statuses(queue, settings.queue, sample_size if sample_main else 0, sample_size)
        return await _report(settings, queues, ops_timeout)


async def _unreachable(settings: QueueSettings, error: QueueUnreachable) -> tuple[QueueStatus, QueueStatus]:
    """Both queues' rows when the endpoint or the broker does not answer: the error is the main queue's."""
    not_read = "not read: the queue does not answer"
    return QueueStatus("queue", settings.url, error=str(error)), QueueStatus(
        "dead-letter queue", settings.dlq_url or "-", age_note=not_read
    )


async def _queue_statuses(
    queue: QueueAdmin, settings: QueueSettings, main_sample: int, dlq_sample: int
) -> tuple[QueueStatus, QueueStatus]:
    try:
        dlq_url = await queue.dead_letter_url()
    except QueueUnreachable as error:  # SQS, asked first here
        return await _unreachable(settings, error)
    return await asyncio.gather(
        _queue_status(queue, "queue", queue.url, main_sample, main=True),
        _queue_status(queue, "dead-letter queue", dlq_url, dlq_sample, main=False),
    )


async def _report(
    settings: StatusSettings, queues: Awaitable[tuple[QueueStatus, QueueStatus]], ops_timeout: float
) -> StatusReport:
    (queue, dead_letter), (state, store_channels), worker = await asyncio.gather(
        queues, _state_status(settings), ask_worker(settings, ops_timeout)
    )
    errors, failing = worker.channel_errors, worker.failing_channels
    channels: list[ChannelHealth] = []
    configured = {c.name: c.type for c in settings.channels}
    known = set(settings.parked_under)  # Kordiam's feedback too, parked while its writes fail for every element
    names = list(configured) + sorted(set(store_channels) - set(configured))
    for name in names:
        stats = store_channels.get(name, _ChannelStats())
        channels.append(
            ChannelHealth(
                name=name,
                type=configured.get(name),
                configured=name in known,
                deliveries=stats.counts.deliveries,
                elements=stats.counts.elements,
                live=stats.counts.live,
                latest_synced=stats.counts.latest,
                parked=stats.parked,
                errors=None if errors is None else dict(errors.get(name, {})),
                failing=failing.get(name),
            )
        )
    return StatusReport(datetime.now(UTC), queue, dead_letter, state, channels, worker.health)


async def _queue_status(queue: QueueAdmin, role: str, url: str, sample_size: int, *, main: bool) -> QueueStatus:
    try:
        depth = await queue.depth(url)
    except AdminError as error:
        return QueueStatus(role, url, error=str(error))
    if depth.browsed:
        if not main:
            return await _browsed_status(queue, role, url, depth)
        if depth.visible is None:
            return QueueStatus(role, url, age_note=f"broker connected; {depth.note}")
        return QueueStatus(
            role, url, visible=depth.visible, in_flight=depth.in_flight, age_note="from the broker's statistics"
        )
    if depth.visible is None:  # no broker does this: one that gives no depth is read with a browser (above)
        return QueueStatus(role, url, age_note=depth.note)
    note: str | None
    oldest: datetime | None = None
    sampled = 0
    if depth.visible == 0:
        note = "empty" if depth.in_flight == 0 else "no visible message to sample (all in flight)"
    elif sample_size <= 0:
        note = "not sampled: a peek counts as a receive towards maxReceiveCount (use --sample)" if main else None
    elif not main and depth.redrive_policy:
        note = "not sampled: this queue has its own redrive policy, a peek would count as a receive"
    else:
        try:
            peeked, _ = await queue.peek(url, limit=sample_size)
        except AdminError as error:
            peeked, note = [], f"sampling failed: {error}"
        else:
            sampled = len(peeked)
            oldest = _oldest(peeked)
            note = f"estimate from {sampled} of ~{depth.visible} visible message(s)"
            if sampled >= depth.visible:
                note = f"from all {sampled} visible message(s)"
    return QueueStatus(
        role,
        url,
        visible=depth.visible,
        in_flight=depth.in_flight,
        delayed=depth.delayed,
        oldest_sent_at=oldest,
        oldest_age_seconds=_age(oldest),
        sampled=sampled,
        age_note=note,
    )


async def _browsed_status(queue: QueueAdmin, role: str, url: str, depth: QueueDepth) -> QueueStatus:
    """A queue read with a browser (ActiveMQ): browsed up to ``BROKER_COUNT_LIMIT`` (consuming nothing, no attempt
    counted), its oldest message the oldest browsed. Its depth is the broker's statistics, where it answers them;
    else what the browse saw. A browse that saw fewer than the statistics count says so (``PagedIn``)."""
    try:
        seen, more = await queue.peek(url, limit=BROKER_COUNT_LIMIT)
    except Exception as error:  # a browse that timed out or was refused: reported, not fatal
        return QueueStatus(role, url, error=f"browsing failed: {error!r}")
    note = f"browsed all {len(seen)}" if seen else "empty"
    if more:
        note = f"browsed the first {len(seen)}"
        if depth.visible is None:
            note = f"at least {len(seen)}: {note}"
    if paged_in := PagedIn.of(len(seen), more, depth.visible):
        note = paged_in_note(paged_in)
    oldest = _oldest(seen)
    return QueueStatus(
        role,
        url,
        visible=len(seen) if depth.visible is None else depth.visible,
        in_flight=depth.in_flight,
        oldest_sent_at=oldest,
        oldest_age_seconds=_age(oldest),
        sampled=len(seen),
        age_note=note,
    )


def _oldest(peeked: list[PeekedMessage]) -> datetime | None:
    stamps = [p.message.sent_at for p in peeked if p.message.sent_at is not None]
    return datetime.fromtimestamp(min(stamps), UTC) if stamps else None


def _age(sent_at: datetime | None) -> float | None:
    return None if sent_at is None else max(0.0, (datetime.now(UTC) - sent_at).total_seconds())


@dataclass
class _ChannelStats:
    counts: ChannelCounts = field(default_factory=ChannelCounts)
    parked: int = 0


async def _state_status(settings: StatusSettings) -> tuple[StateStatus, dict[str, _ChannelStats]]:
    state = settings.state
    if state.backend == "sqlite" and not state.sqlite_path.exists():
        # Opening would create an empty database: status must not write anything.
        return StateStatus(state.url, False, f"{state.sqlite_path} does not exist yet (nothing synced)"), {}
    try:
        store = await open_state_store(state, default_region=settings.queue.region, read_only=True)
    except BridgeError as error:
        return StateStatus(state.url, False, str(error)), {}
    except Exception as error:  # status reports an unreadable store, it does not fail on it
        return StateStatus(state.url, False, f"cannot open: {type(error).__name__}: {error}"), {}
    channels: dict[str, _ChannelStats] = {}
    try:
        counts = await store.delivery_counts(DELIVERY_COUNT_LIMIT)
        configured = settings.parked_under
        for name in configured:
            parked = await store.parked_count(name)
            # Kordiam's feedback is a row only while elements are parked for it: it is no channel of the operator's.
            if parked or name != KORDIAM_FEEDBACK:
                channels.setdefault(name, _ChannelStats()).parked = parked
        # And a channel renamed or removed from the configuration that still holds parked elements.
        for name, parked in (await parked_elsewhere(store, configured)).items():
            channels.setdefault(name, _ChannelStats()).parked = parked
        reconcile_cursor = await store.sweep_cursor(RECONCILE_SWEEP)
    except Exception as error:
        return StateStatus(state.url, False, f"cannot read deliveries: {type(error).__name__}: {error}"), {}
    finally:
        await store.close()
    for name, channel_counts in counts.channels.items():
        channels.setdefault(name, _ChannelStats()).counts = channel_counts
    status = StateStatus(
        state.url,
        True,
        _counted(counts),
        deliveries_complete=counts.complete,
        items_read=counts.read,
        table_items_estimate=counts.table_items,
        reconcile_cursor=reconcile_cursor,
    )
    return status, channels


def _counted(counts: DeliveryCounts) -> str:
    if counts.complete:
        return f"{counts.deliveries} deliveries"
    of = f" of ~{counts.table_items} (DynamoDB's ItemCount, updated about every 6 hours)" if counts.table_items else ""
    return (
        f"at least {counts.deliveries} deliveries, counted in the first {counts.read}{of} items of the table: the "
        "deliveries, elements, live and newest version columns are lower bounds (a full count would read every item)"
    )


# bridge_channel_breaker_state's values, as a problem says them (0, closed, is none).
BREAKER_PROBLEMS = {
    1: "failing now (circuit breaker half-open, trying it again)",
    2: "failing now (circuit breaker open)",
}


@dataclass(frozen=True, slots=True)
class WorkerAnswer:
    """What the worker's ops endpoints told of it."""

    health: WorkerHealth
    channel_errors: dict[str, Counter[str]] | None  # per channel, its errors since start by kind; None: not reached
    failing_channels: dict[str, str]  # channel -> why it fails now


async def ask_worker(settings: StatusSettings, http_timeout: float) -> WorkerAnswer:
    """What the worker at ``[ops]`` says of itself (``status``, ``element``); one not reached is said, not raised."""
    host, port = settings.ops.host, settings.ops.port
    if port == 0:
        unset = WorkerHealth(None, False, detail="ops.port is 0 (a random port): set a fixed port to query it")
        return WorkerAnswer(unset, None, {})
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=http_timeout) as http:
            health, ready, metrics = await asyncio.gather(
                http.get("/healthz"), http.get("/readyz"), http.get("/metrics")
            )
    except httpx.HTTPError as error:
        unreached = WorkerHealth(base, False, detail=f"{type(error).__name__}: {error}".rstrip(": "))
        return WorkerAnswer(unreached, None, {})
    health_body, ready_body = _worker_answer(health), _worker_answer(ready)
    if health_body is None or ready_body is None:
        # Another server on ops.port (9090 is also Prometheus's default): its 404 is no paused worker.
        stranger = WorkerHealth(
            base,
            False,
            detail=f"something other than the bridge's worker answers there (/healthz: HTTP {health.status_code}, "
            f"/readyz: HTTP {ready.status_code}): check ops.host and ops.port",
        )
        return WorkerAnswer(stranger, None, {})
    detail = _answer_field(health, health_body, "status")
    errors: dict[str, Counter[str]] = {}
    failing: dict[str, str] = {}
    in_flight: int | None = None
    received: int | None = None
    outcomes: dict[str, int] = {}
    if metrics.status_code == 200:
        try:
            for family in text_string_to_metric_families(metrics.text):
                for sample in family.samples:
                    if sample.name == "bridge_channel_errors_total":
                        channel = sample.labels.get("channel", "?")
                        errors.setdefault(channel, Counter())[sample.labels.get("kind", "error")] += int(sample.value)
                    elif sample.name == "bridge_channel_breaker_state" and int(sample.value) in BREAKER_PROBLEMS:
                        failing.setdefault(sample.labels.get("channel", "?"), BREAKER_PROBLEMS[int(sample.value)])
                    elif sample.name == "bridge_channel_credentials_refused" and sample.value:
                        failing[sample.labels.get("channel", "?")] = "refuses the bridge's credentials"
                    elif sample.name == "bridge_messages_in_flight":
                        in_flight = int(sample.value)
                    elif sample.name == "bridge_messages_received_total":
                        received = int(sample.value)
                    elif sample.name == "bridge_message_outcomes_total":
                        outcomes[sample.labels.get("outcome", "?")] = int(sample.value)
        except ValueError as error:
            detail = f"{detail}; unreadable metrics: {error}"
    worker = WorkerHealth(
        base,
        True,
        healthy=health.status_code == 200,
        ready=ready.status_code == 200,
        detail=detail,
        not_ready_reason=None if ready.status_code == 200 else _answer_field(ready, ready_body, "reason"),
        not_ready_since=None if ready.status_code == 200 else _answer_time(ready_body, "since"),
        in_flight=in_flight,
        received=received,
        outcomes=outcomes,
    )
    return WorkerAnswer(worker, errors, failing)


def _worker_answer(response: httpx.Response) -> dict[str, Any] | None:
    """A health endpoint's answer as the worker gives it (200 or 503, a JSON object with ``status``), read once;
    None for any other answer: another server on the port."""
    if response.status_code not in (200, 503):
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) and "status" in body else None


def _answer_field(response: httpx.Response, body: dict[str, Any], field: str) -> str:
    """``field`` of a health endpoint's answer (``status`` of /healthz, ``reason`` of /readyz), else the HTTP
    status."""
    value = body.get(field)
    return str(value) if value else f"HTTP {response.status_code}"


def _answer_time(body: dict[str, Any], field: str) -> datetime | None:
    """``field`` of a health endpoint's answer as a time (ISO 8601), None when it has none or another."""
    try:
        return datetime.fromisoformat(body[field]) if field in body else None
    except (ValueError, TypeError):
        return None


# --------------------------------------------------------------------------------------------------- rendering


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)  # None: the broker gives no such figure (ActiveMQ over STOMP)


def render_status(report: StatusReport, console: Console) -> None:
    queues = Table(title="Queues", title_justify="left")
    for column in ("queue", "visible", "in flight", "delayed", "oldest message", "note"):
        queues.add_column(column, overflow="fold" if column in ("queue", "note") else "ellipsis")
    for status in (report.queue, report.dead_letter):
        if status.error:
            queues.add_row(
                f"{status.role}\n{status.url}", "-", "-", "-", "-", f"[red]{escape(visible(status.error))}[/red]"
            )
            continue
        queues.add_row(
            f"{status.role}\n{status.url}",
            _count(status.visible),
            _count(status.in_flight),
            _count(status.delayed),
            f"~{format_age(status.oldest_age_seconds)}" if status.oldest_age_seconds is not None else "-",
            escape(visible(status.age_note or "")),
        )
    console.print(queues)

    worker = report.worker
    if worker.reachable:
        state = (
            "[green]healthy[/green]"
            if worker.healthy
            else f"[red]unhealthy[/red] ({escape(visible(worker.detail or ''))})"
        )
        since = f" since {worker.not_ready_since.isoformat(timespec='seconds')}" if worker.not_ready_since else ""
        reason = escape(visible(worker.not_ready_reason or ""))
        ready = "ready" if worker.ready else f"[red]not ready[/red]{since} ({reason})"
        extra = f", {worker.in_flight} in flight" if worker.in_flight is not None else ""
        console.print(f"Worker at {worker.endpoint}: {state}, {ready}{extra}")
    else:
        where = f"at {worker.endpoint} " if worker.endpoint else ""
        console.print(f"Worker {where}[yellow]not reachable[/yellow]: {escape(visible(worker.detail or ''))}")

    channels = Table(title=f"Channels (state: {report.state.url})", title_justify="left")
    for column in ("channel", "type", "deliveries", "elements", "live", "newest version synced", "parked", "errors"):
        channels.add_column(column)
    # A count that stopped early (DynamoDB): each figure is at least what it says.
    bound = "" if report.state.deliveries_complete else ">="
    for channel in report.channels:
        if channel.errors is None:
            errors = "?"
        elif not channel.errors:
            errors = "0"
        else:
            errors = ", ".join(f"{kind} {count}" for kind, count in sorted(channel.errors.items()))
        channels.add_row(
            channel.name if channel.configured else f"{channel.name} (not configured)",
            channel.type or "-",
            f"{bound}{channel.deliveries}",
            f"{bound}{channel.elements}",
            f"{bound}{channel.live}",
            f"{bound}{channel.latest_synced.isoformat(timespec='seconds')}" if channel.latest_synced else "-",
            f"[red]{channel.parked}[/red]" if channel.parked else "0",
            errors,
        )
    console.print(channels)
    if report.state.available and not report.state.deliveries_complete:
        console.print(f"[yellow]state store:[/yellow] {escape(visible(report.state.detail or ''))}")
    if not report.state.available:
        console.print(f"[yellow]state store:[/yellow] {escape(visible(report.state.detail or ''))}")
    if (cursor := report.state.reconcile_cursor) is not None:
        age = format_age((report.generated_at - cursor).total_seconds())
        console.print(f"Reconciliation sweep: resumes from {cursor.isoformat(timespec='seconds')} ({age} ago)")

    problems = report.problems
    if problems:
        console.print("[bold red]Problems[/bold red]")
        for problem in problems:
            console.print(f"  - {escape(visible(problem))}")
    else:
        console.print("[green]No problems found.[/green]")

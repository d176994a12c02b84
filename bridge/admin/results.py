"""What the operator commands return: plain dataclasses, printed by ``bridge.admin.rendering`` or as JSON.

A redrive's result is the queue layer's own (``bridge.queue.transport.RedriveResult``), named here with the rest."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bridge.errors import AdminError
from bridge.queue.dead_letter import FailureContext
from bridge.queue.transport import MovedMessage, PagedIn, RedriveFailure, RedriveResult

__all__ = [
    "AdminError",
    "DlqListing",
    "DlqMessage",
    "ElementCheck",
    "ElementDeadLetters",
    "ElementDelivery",
    "ElementFailingChannel",
    "ElementInKordiam",
    "ElementLease",
    "ElementParked",
    "ElementReport",
    "ElementWorker",
    "MovedMessage",
    "ParkedElement",
    "ParkedListing",
    "ParkedRequeueResult",
    "RedriveFailure",
    "RedriveResult",
    "ReplayResult",
    "ReplayedElement",
    "RequeuedElement",
    "to_json",
    "to_jsonable",
]


@dataclass(frozen=True, slots=True)
class DlqMessage:
    message_id: str
    body: str
    # Message attributes as sent (binary values shown as ``<binary, N bytes>``), without the process's secrets.
    attributes: dict[str, str]
    # The broker's own attributes (SQS: SentTimestamp, ApproximateReceiveCount, MessageGroupId, …; ActiveMQ:
    # timestamp, redelivered, …), and what the broker calls them ("SQS attributes", "Broker headers").
    system_attributes: dict[str, str]
    system_attributes_title: str
    sent_at: datetime | None
    receive_count: int
    group_id: str | None
    element_id: int | None
    # None when SQS moved the message itself (maxReceiveCount) rather than the worker with its context.
    failure: FailureContext | None
    # False when the body's bytes are not UTF-8 (ActiveMQ): ``body`` shows each bad byte as U+FFFD; the dead letter
    # itself, and a redriven copy, keep the bytes.
    body_is_utf8: bool = True

    def age_seconds(self, now: datetime | None = None) -> float | None:
        if self.sent_at is None:
            return None
        return max(0.0, ((now or datetime.now(UTC)) - self.sent_at).total_seconds())

    @property
    def body_json(self) -> Any | None:
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            return None


def paged_in_note(paged_in: PagedIn) -> str:
    """What a look that saw only what the broker had paged into memory (``PagedIn``) says of it."""
    return (
        f"showing {paged_in.seen} of {paged_in.size} (the broker pages in only part of a deep queue: run again once "
        "these are handled)"
    )


# Why a look at a FIFO dead-letter queue may miss some (``DlqListing.held_back``), and how to see them.
FIFO_HELD_BACK = (
    "wait behind them in their FIFO message group (SQS hands out a group's next messages only once the ones "
    "before them have left the queue, and a look holds what it saw): redrive those (`kordiam-bridge dlq redrive`, "
    "`--element N` for one element's) and look again"
)


@dataclass(frozen=True, slots=True)
class DlqListing:
    queue_url: str
    messages: list[DlqMessage]
    # ApproximateNumberOfMessages (visible) and …NotVisible when the listing started.
    approximate_visible: int
    approximate_in_flight: int
    truncated: bool
    # About how many a FIFO dead-letter queue held back behind those listed in their message group (``dlq``).
    held_back: int = 0
    # The listing ended short of what the broker counts: it showed only what the broker had paged in (ActiveMQ).
    paged_in: PagedIn | None = None


@dataclass(frozen=True, slots=True)
class DlqDeletion:
    """One id ``dlq delete`` was given: the dead letter it names, and whether it was deleted (never on a dry run);
    ``error`` says why not when it was not found, or the queue did not delete it (it stays)."""

    requested_id: str
    message: DlqMessage | None
    deleted: bool
    error: str | None = None


@dataclass(frozen=True, slots=True)
class DlqDeleteResult:
    """What ``dlq delete`` found and did, one ``DlqDeletion`` per id given, in order; ``dry_run``: without
    ``--yes``, it deleted nothing."""

    queue_url: str
    dry_run: bool
    deletions: list[DlqDeletion]

    @property
    def failed(self) -> int:
        return sum(d.error is not None for d in self.deletions)


# The error of an element a replay stopped by Ctrl-C did not send.
INTERRUPTED = "interrupted (Ctrl-C) before it was sent"


@dataclass(frozen=True, slots=True)
class ReplayedElement:
    element_id: int
    message_id: str | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ReplayResult:
    queue_url: str
    elements: list[ReplayedElement]

    @property
    def sent(self) -> int:
        return sum(e.error is None for e in self.elements)

    @property
    def failed(self) -> int:
        return sum(e.error is not None for e in self.elements)


@dataclass(frozen=True, slots=True)
class ParkedElement:
    """One element parked for one channel (``bridge.state.base.Parked``), with its age when listed."""

    element_id: int
    channel: str
    since: datetime
    age_seconds: float
    reason: str


@dataclass(frozen=True, slots=True)
class ParkedListing:
    state_url: str
    # The channels looked at, whether or not they hold parked elements.
    channels: list[str]
    elements: list[ParkedElement]
    # How many elements the listed channels have parked, shown or not.
    parked: int
    # Those of ``channels`` the configuration no longer has (renamed or removed): only a requeue by hand serves them.
    unconfigured: list[str] = field(default_factory=list)
    # How many each channel holding parked elements holds, shown or not, in the order of ``channels``.
    parked_by_channel: dict[str, int] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        return len(self.elements) < self.parked


# The error of an element ``parked requeue --element`` named that is parked for none of the chosen channels.
NOT_PARKED = "not parked for the chosen channel(s): nothing sent"


@dataclass(frozen=True, slots=True)
class RequeuedElement:
    element_id: int
    # The channels it was parked for: unparked for each once its notification was sent (unless ``error`` says).
    channels: list[str]
    message_id: str | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ParkedRequeueResult:
    queue_url: str
    elements: list[RequeuedElement]

    @property
    def sent(self) -> int:
        return sum(e.message_id is not None for e in self.elements)

    @property
    def failed(self) -> int:
        return sum(e.error is not None for e in self.elements)


@dataclass(frozen=True, slots=True)
class ElementDeadLetters:
    """The dead letters about one element among the first ``looked_at`` of the dead-letter queue (``dlq``)."""

    queue_url: str
    messages: list[DlqMessage]
    looked_at: int
    # The scan limit stopped the look while the queue held more.
    more: bool
    # About how many a FIFO dead-letter queue held back behind those looked at in their message group.
    held_back: int = 0
    # Not looked at: the queue's endpoint or broker did not answer (the rest of the report stands).
    error: str | None = None
    # The look ended short of what the broker counts: it saw only what the broker had paged in (ActiveMQ).
    paged_in: PagedIn | None = None

    @property
    def partial(self) -> bool:
        return self.more or self.held_back > 0 or self.paged_in is not None


@dataclass(frozen=True, slots=True)
class ElementDelivery:
    """One publication as the state store says it was last given to one channel."""

    channel: str
    publication_id: int
    external_id: str
    fingerprint: str
    edit_link: str | None
    open_link: str | None
    live: bool
    # The Kordiam version it carried.
    modification_date: datetime | None
    version: int | None
    # When the store recorded it (None: the store keeps no time).
    recorded_at: datetime | None
    # False: the configuration no longer has the channel (renamed or removed); its item was left in place.
    configured: bool = True


@dataclass(frozen=True, slots=True)
class ElementParked:
    channel: str
    since: datetime
    age_seconds: float
    reason: str
    configured: bool = True


@dataclass(frozen=True, slots=True)
class ElementLease:
    """The element's lease as the store holds it: ``held`` while it has not expired (a worker syncs it now)."""

    owner: str
    expires_at: datetime
    held: bool
    pid: int | None = None
    host: str | None = None
    # Its process ran on this host and no longer does: the next worker takes it over at once.
    owner_gone: bool = False


# What a channel was last given, against the element Kordiam holds now (``ElementCheck.verdict``).
IN_LINE = "in line"
SENT_AGAIN = "would be sent again"
WITHDRAWN = "would be withdrawn"
NOT_EXPORTED = "not exported to this channel (status filter, platform)"
DELETED_IN_KORDIAM = "deleted in Kordiam"
NOT_CONFIGURED = "channel not configured"
# The verdicts the next sync would act on: the channel is out of line with Kordiam.
OUT_OF_LINE = frozenset({SENT_AGAIN, WITHDRAWN, DELETED_IN_KORDIAM})
# The verdicts of a publication the channel's route exports, or of a withdrawal its next sync sends: the element
# goes to the channel (a status the filter holds back, another platform: it does not).
ROUTED = OUT_OF_LINE | {IN_LINE}


@dataclass(frozen=True, slots=True)
class ElementCheck:
    """One channel route and publication: whether what the channel was last given is the element's content now."""

    channel: str
    publication_id: int
    verdict: str
    detail: str | None = None

    @property
    def out_of_line(self) -> bool:
        return self.verdict in OUT_OF_LINE


@dataclass(frozen=True, slots=True)
class ElementInKordiam:
    """The element as Kordiam answered it just now (``found`` False: 404, deleted or not visible to the bridge)."""

    found: bool
    modification_date: datetime | None
    version: int | None
    checks: list[ElementCheck]
    # The command line that re-syncs the element.
    replay: str
    # Not compared: Kordiam could not be asked (down, or refusing the credentials); the rest of the report stands.
    error: str | None = None
    # Deleted in Kordiam: the channels its next sync searches for its items no delivery records (``FindsItems``: a
    # create whose answer was lost), whatever they hold.
    searched: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ElementWorker:
    """What the worker at ``[ops]`` says of itself (``/readyz``, ``/metrics``), as far as it bears on an element:
    while it takes no messages, nothing of any element is delivered; while a channel fails, what the element would
    give it is parked. One worker process: with several, each has its own endpoint."""

    endpoint: str | None  # None: ops.port is 0, no endpoint to ask
    reachable: bool
    detail: str | None = None  # why it was not reached
    # /readyz's reason while the worker takes no messages, and since when (a pause says; None: not known).
    paused: str | None = None
    paused_since: datetime | None = None
    # Configured channels failing now (their breaker open or half-open, or refusing the bridge's credentials): why.
    # All of them, as the worker says; whether the element goes to each: ``ElementReport.failing_channels``.
    failing: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ElementFailingChannel:
    """A channel the worker says fails now, and whether the element goes to it: a problem for the element only
    then. ``goes`` is None when the command cannot know: without ``--kordiam`` it knows only what the state store
    holds, and the element may still have a publication routed to the channel that was never delivered."""

    channel: str
    why: str
    goes: bool | None
    # What says so: "kordiam" (the configured routing of the element Kordiam holds now), "deliveries" (the store
    # holds a delivery of it to the channel), "parked" (work of it is parked for the channel); None: not known.
    known_from: str | None


@dataclass(frozen=True, slots=True)
class ElementReport:
    """What the bridge's state store knows of one element (``kordiam-bridge element``), with its dead letters
    (``--dlq``) and a comparison with the element in Kordiam now (``--kordiam``) when asked for."""

    element_id: int
    state_url: str
    # Whether the store knows the element at all (a mark or a delivery): False is no error, it never synced it.
    seen: bool
    # The mark: the newest version fully synced (or seen deleted), and when the fetch behind it started.
    synced_modification_date: datetime | None
    synced_version: int | None
    deleted: bool
    fetch_started_at: datetime | None
    deliveries: list[ElementDelivery]
    parked: list[ElementParked]
    lease: ElementLease | None
    dead_letters: ElementDeadLetters | None = None
    kordiam: ElementInKordiam | None = None
    worker: ElementWorker | None = None

    @property
    def failing_channels(self) -> list[ElementFailingChannel]:
        """Each channel the worker says fails now, with whether the element goes to it: by the routing of the
        element Kordiam holds now (``--kordiam``, Kordiam answering), else by what the store holds (a delivery,
        parked work)."""
        if self.worker is None:
            return []
        delivered = {d.channel for d in self.deliveries}
        parked = {p.channel for p in self.parked}
        # Kordiam answered (found or not): its routing decides. Asked but not answering: what the store holds.
        compared = self.kordiam is not None and self.kordiam.error is None
        routed = set()
        if self.kordiam is not None and compared:
            routed = {c.channel for c in self.kordiam.checks if c.verdict in ROUTED} | set(self.kordiam.searched)
        found: list[ElementFailingChannel] = []
        for channel, why in self.worker.failing.items():
            if compared:
                found.append(ElementFailingChannel(channel, why, channel in routed, "kordiam"))
            elif channel in delivered:
                found.append(ElementFailingChannel(channel, why, True, "deliveries"))
            elif channel in parked:
                found.append(ElementFailingChannel(channel, why, True, "parked"))
            else:
                found.append(ElementFailingChannel(channel, why, None, None))
        return found

    @property
    def problems(self) -> list[str]:
        found: list[str] = []
        worker = self.worker
        if worker is not None and worker.paused is not None:
            since = f" since {worker.paused_since.isoformat(timespec='seconds')}" if worker.paused_since else ""
            state = f"is paused{since}" if worker.paused_since else "takes no messages"
            found.append(
                f"the worker at {worker.endpoint} {state} ({worker.paused}): nothing of element {self.element_id} "
                "is delivered until it takes messages again. No command resumes it: it resumes by itself once its "
                "probe finds the fault healed (Kordiam or the state store answering again); refused Kordiam "
                "credentials: fix kordiam.client_secret and restart the worker"
            )
        for failing in self.failing_channels:
            if failing.goes:
                found.append(
                    f"channel {failing.channel}: {failing.why}: what it would be given of element {self.element_id} "
                    "is parked, not delivered, until it accepts calls again "
                    f"(`kordiam-bridge parked requeue --channel {failing.channel}` once it is fixed)"
                )
        for parked in self.parked:
            found.append(
                f"parked for {parked.channel} since {parked.since.isoformat(timespec='seconds')}: {parked.reason}"
            )
        if self.dead_letters is not None and self.dead_letters.error is not None:
            found.append(f"dead letters not looked at: {self.dead_letters.error}")
        if self.dead_letters is not None and self.dead_letters.messages:
            found.append(f"{len(self.dead_letters.messages)} dead letter(s) in {self.dead_letters.queue_url}")
        if self.kordiam is not None and self.kordiam.error is not None:
            found.append(f"not compared with Kordiam: {self.kordiam.error}")
        if self.kordiam is not None:
            for check in self.kordiam.checks:
                if check.out_of_line:
                    found.append(f"{check.channel}, publication {check.publication_id}: {check.verdict}")
        return found


def to_jsonable(value: Any) -> Any:
    """A result dataclass as plain JSON types (datetimes as ISO 8601)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for name in (
            "sent",
            "failed",
            "moved_total",
            "ok",
            "failing_channels",
            "problems",
            "truncated",
            "partial",
            "out_of_line",
        ):
            if name not in data and isinstance(getattr(type(value), name, None), property):
                data[name] = to_jsonable(getattr(value, name))
        return data
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    return value


def to_json(value: Any) -> str:
    return json.dumps(to_jsonable(value), indent=2, sort_keys=False)

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
from bridge.queue.transport import MovedMessage, RedriveFailure, RedriveResult

__all__ = [
    "AdminError",
    "DlqListing",
    "DlqMessage",
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
    # Message attributes as sent (binary values shown as ``<binary, N bytes>``).
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
    channels: list[str]
    elements: list[ParkedElement]
    # How many elements the listed channels have parked, shown or not.
    parked: int
    # Those of ``channels`` the configuration no longer has (renamed or removed): only a requeue by hand serves them.
    unconfigured: list[str] = field(default_factory=list)

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


def to_jsonable(value: Any) -> Any:
    """A result dataclass as plain JSON types (datetimes as ISO 8601)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for name in ("sent", "failed", "moved_total", "ok", "problems", "truncated"):
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

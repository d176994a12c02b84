"""What the operator commands return: plain dataclasses, printed by ``bridge.admin.rendering`` or as JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from bridge.errors import BridgeError
from bridge.queue.dead_letter import FailureContext


class AdminError(BridgeError):
    """An operator command could not do its job (queue missing, endpoint unreachable, access denied)."""


@dataclass(frozen=True, slots=True)
class DlqMessage:
    message_id: str
    body: str
    # Message attributes as sent (binary values shown as ``<binary, N bytes>``).
    attributes: dict[str, str]
    # SQS system attributes (SentTimestamp, ApproximateReceiveCount, MessageGroupId, …).
    system_attributes: dict[str, str]
    sent_at: datetime | None
    receive_count: int
    group_id: str | None
    element_id: int | None
    # None when SQS moved the message itself (maxReceiveCount) rather than the worker with its context.
    failure: FailureContext | None

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


@dataclass(frozen=True, slots=True)
class DlqListing:
    queue_url: str
    messages: list[DlqMessage]
    # ApproximateNumberOfMessages (visible) and …NotVisible when the listing started.
    approximate_visible: int
    approximate_in_flight: int
    truncated: bool


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
class MovedMessage:
    dlq_message_id: str
    new_message_id: str
    element_id: int | None


@dataclass(frozen=True, slots=True)
class RedriveFailure:
    dlq_message_id: str
    reason: str


@dataclass(slots=True)
class RedriveResult:
    method: Literal["move-task", "manual"]
    source_url: str
    destination_url: str
    moved: list[MovedMessage] = field(default_factory=list)
    # Copies SQS refused: the message stays in the dead-letter queue.
    failed: list[RedriveFailure] = field(default_factory=list)
    # Messages the element filter (or the limit) left in the dead-letter queue.
    skipped: int = 0
    # Dead letters that arrived after the run started (e.g. a redriven message that failed again): left for a
    # later run, so that a run ends even while a worker keeps dead-lettering what it moves.
    arrived: int = 0
    # Ctrl-C stopped the run: the summary is partial.
    interrupted: bool = False
    # Copied, but the delete from the dead-letter queue failed: the message exists twice (never zero times).
    duplicated: list[str] = field(default_factory=list)
    # Approximate dead-letter depth (visible + in flight) after the run.
    remaining: int | None = None
    # Why the native move task was not used, when it was not.
    fallback_reason: str | None = None
    # Why the run stopped before the queue was empty (a failed batch), if it did.
    stopped_reason: str | None = None
    # Move task: SQS's own count (approximate) and final status.
    moved_count: int | None = None
    task_status: str | None = None

    @property
    def moved_total(self) -> int:
        return self.moved_count if self.moved_count is not None else len(self.moved)

    @property
    def ok(self) -> bool:
        return (
            not self.failed
            and self.stopped_reason is None
            and not self.interrupted
            and self.task_status in (None, "COMPLETED")
        )


def to_jsonable(value: Any) -> Any:
    """A result dataclass as plain JSON types (datetimes as ISO 8601)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for name in ("sent", "failed", "moved_total", "ok", "problems"):
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

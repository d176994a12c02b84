"""The dead-letter context, written and read in one place (as arroyo keeps its DLQ contract in ``dlq.py``).

A dead letter carries ``failure.*`` attributes saying why it was given up, beside its own
(``dead_letter_attributes``, written by every backend's ``send_dead_letter``); ``FailureContext.parse`` reads them
back for ``dlq list`` / ``dlq show``. A redriven copy carries ``redriven_from`` and ``first_failure.*`` back to the
main queue, so that its next dead letter names the same source message and first failure as the first one did.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar

from bridge import redaction

if TYPE_CHECKING:  # QueueMessage's module imports this one for DeadLetterContext
    from bridge.queue.transport import QueueMessage

FAILURE_PREFIX = "failure."
# What a redriven copy carries back to the main queue, so that its next dead letter (if it fails again) names the
# same source message and first failure as the first one did: the dead letter it was copied from, the message id
# the first failure was reported under, and when that was.
REDRIVEN_FROM = "redriven_from"
FIRST_FAILURE_SOURCE = "first_failure.source_message_id"
FIRST_FAILURE_AT = "first_failure.at"


@dataclass(frozen=True, slots=True)
class DeadLetterContext:
    """Why a message was given up: the outcome that dead-letters it (``bridge.queue.outcome.DeadLetter`` is this
    type) and what is written on the dead letter as ``failure.*`` attributes."""

    stage: str
    reason: str
    error_class: str
    element_id: int | None = None
    kind: ClassVar[str] = "dead_letter"


@dataclass(frozen=True, slots=True)
class FailureContext:
    """The ``failure.*`` attributes read back from a dead letter; a field the dead letter lacks is None. The
    reason is without the process's secrets (``bridge.redaction``)."""

    stage: str | None
    reason: str | None
    error_class: str | None
    attempts: int | None
    element_id: int | None
    # The main-queue message id and time of the first failure; kept when a redriven copy fails again.
    source_message_id: str | None
    first_failed_at: str | None = None

    @classmethod
    def parse(cls, attributes: Mapping[str, str]) -> FailureContext | None:
        """The context on a dead letter's attributes; None when it has no ``failure.*`` attribute at all."""
        if not any(name.startswith(FAILURE_PREFIX) for name in attributes):
            return None
        return cls(
            stage=attributes.get("failure.stage"),
            reason=_redacted(attributes.get("failure.reason")),
            error_class=attributes.get("failure.error_class"),
            attempts=_int_or_none(attributes.get("failure.attempts")),
            element_id=_int_or_none(attributes.get("failure.element_id")),
            source_message_id=attributes.get("failure.source_message_id"),
            first_failed_at=attributes.get("failure.first_failed_at"),
        )


def failure_attributes(message: QueueMessage, context: DeadLetterContext) -> dict[str, str]:
    """The ``failure.*`` attributes every backend puts on a dead letter (empty values left out); the reason
    without the process's secrets (``bridge.redaction``: it may quote any server or exception).

    A message that failed before (a redriven copy, or one moved back verbatim by an SQS move task) keeps the source
    message id and the time of its first failure.
    """
    carried = message.attributes
    failure = {
        "failure.stage": context.stage,
        "failure.reason": redaction.SECRETS.redact(context.reason),
        "failure.error_class": context.error_class,
        "failure.attempts": str(message.receive_count),
        "failure.element_id": "" if context.element_id is None else str(context.element_id),
        "failure.source_message_id": carried.get(FIRST_FAILURE_SOURCE)
        or carried.get("failure.source_message_id")
        or message.message_id,
        "failure.first_failed_at": carried.get(FIRST_FAILURE_AT)
        or carried.get("failure.first_failed_at")
        or datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    return {name: value for name, value in failure.items() if value}


def dead_letter_attributes(
    message: QueueMessage,
    context: DeadLetterContext,
    *,
    at_most: int | None = None,
    failure_value_limit: int | None = None,
) -> dict[str, str]:
    """Every attribute a dead letter carries, in every backend: ``failure_attributes`` first (each value cut to
    ``failure_value_limit``), then the message's own (``carried_attributes``) that they do not override, up to
    ``at_most`` in all (SQS allows ten)."""
    attributes = {name: value[:failure_value_limit] for name, value in failure_attributes(message, context).items()}
    for name, value in carried_attributes(message):
        if at_most is not None and len(attributes) >= at_most:
            break
        attributes.setdefault(name, value)
    return attributes


def carried_attributes(message: QueueMessage) -> Iterator[tuple[str, str]]:
    """The message's own attributes a dead letter keeps beside ``failure_attributes``: ``redriven_from`` first
    (redrive tells its own copies apart by it), without the ``first_failure.*`` ones (they became ``failure.*``)."""
    for name, value in sorted(message.attributes.items(), key=lambda item: item[0] != REDRIVEN_FROM):
        if value and name not in (FIRST_FAILURE_SOURCE, FIRST_FAILURE_AT):
            yield name, value


def _redacted(reason: str | None) -> str | None:
    # A dead letter written before its secrets were redacted, or by an older bridge.
    return None if reason is None else redaction.SECRETS.redact(reason)


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def redriven_attributes(message: QueueMessage) -> dict[str, str]:
    """What a dead letter's copy back on the main queue carries: its attributes without ``failure.*``, plus
    ``redrive_markers``, so that failing again names the same first failure."""
    kept = {n: v for n, v in message.attributes.items() if not is_failure_attribute(n)}
    return kept | redrive_markers(message)


def is_failure_attribute(name: str) -> bool:
    """An attribute a redriven copy leaves behind: the dead letter's ``failure.*`` context and its own
    ``redriven_from`` (the copy gets a new one)."""
    return name.startswith(FAILURE_PREFIX) or name == REDRIVEN_FROM


def redrive_markers(message: QueueMessage) -> dict[str, str]:
    """``redriven_from`` (this dead letter) and the first failure's source message id and time
    (``first_failure.*``: from the ``failure.*`` context, else this message and the time it was sent)."""
    failure = FailureContext.parse(message.attributes)
    first_at = failure.first_failed_at if failure else None
    if first_at is None and message.sent_at is not None:
        first_at = datetime.fromtimestamp(message.sent_at, UTC).isoformat(timespec="milliseconds")
    carried = {
        REDRIVEN_FROM: message.message_id,
        FIRST_FAILURE_SOURCE: (failure.source_message_id if failure else None) or message.message_id,
        FIRST_FAILURE_AT: first_at,
    }
    return {name: value for name, value in carried.items() if value}

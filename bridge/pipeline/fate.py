"""A message's fate from what went wrong: the one place that turns a failure into "retry later" or a dead letter.

- A ``PermanentError`` cannot succeed on the same input: dead letter.
- Anything else is retried: a ``TransientError`` by design, and an error nobody classified (a bug, an unexpected
  library exception) so that it is never dropped; once the retry budget is spent it still reaches the dead-letter
  queue, with its context.
- A sync that failed in several stages is retried if any of them may heal; it waits at least as long as the
  longest ``retry_after`` hint any of them gave.
- A body that cannot be decoded is poison: dead letter on its first receive.

Some faults are not the message's and so are not decided here: a lease another worker holds (the state store
waits for it, ``bridge.state.leases``), a channel that refuses the bridge's credentials or whose circuit breaker is
open (the sync engine parks the element for it: ``bridge.pipeline.parking``; so too for Kordiam's feedback writes
once they fail for every element), refused Kordiam credentials, and
Kordiam or the state store failing for every message (the handler pauses the worker and keeps the message in
hand: ``bridge.pipeline.credentials``, ``bridge.pipeline.kordiam_outage``, ``bridge.pipeline.state_outage``). The
queue layer (``bridge.queue.consumer.Consumer``) carries the outcome out; of its own it only spends the retry
budget (a ``Retry`` on the last allowed receive becomes a ``DeadLetter``) and retries a handler that raised
instead of returning an outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from bridge.errors import PermanentError, TransientError
from bridge.pipeline.notification import PoisonMessage
from bridge.queue.outcome import DeadLetter, Retry

# The dead-letter context carries the reason as a message attribute, whose size is limited.
MAX_REASON_CHARS = 900


class StageFailure(Protocol):
    """Where a sync failed (``fetch``, ``feedback``, ``lease``, ``state`` or a channel's name) and why."""

    @property
    def stage(self) -> str: ...

    @property
    def error(self) -> BaseException: ...


def is_transient(error: BaseException) -> bool:
    """Worth retrying: everything but a ``PermanentError``."""
    return not isinstance(error, PermanentError)


def describe(failure: StageFailure) -> str:
    """One line: the reason goes into a dead letter, ``dlq list`` and the log, whatever the error's text says."""
    return " ".join(f"{failure.stage}: {type(failure.error).__name__}: {failure.error}".split())


def outcome_for(failures: Sequence[StageFailure], *, element_id: int) -> Retry | DeadLetter:
    """The outcome of a sync that failed in these stages (at least one); the first failure names the error class."""
    first = failures[0].error
    stage = ",".join(f.stage for f in failures)
    reason = "; ".join(describe(f) for f in failures)[:MAX_REASON_CHARS]
    if any(is_transient(f.error) for f in failures):
        hints = [
            f.error.retry_after
            for f in failures
            if isinstance(f.error, TransientError) and f.error.retry_after is not None
        ]
        return Retry(
            delay=max(hints) if hints else None,
            stage=stage,
            reason=reason,
            error_class=type(first).__name__,
            element_id=element_id,
        )
    return DeadLetter(stage=stage, reason=reason, error_class=type(first).__name__, element_id=element_id)


def poisoned(poison: PoisonMessage) -> DeadLetter:
    """A body no decoder accepts can never succeed."""
    return DeadLetter(stage="decode", reason=poison.reason, error_class="PoisonMessage", element_id=poison.element_id)

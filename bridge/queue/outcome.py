"""The three ways a message can end one attempt. Nothing is deleted implicitly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bridge.queue.dead_letter import DeadLetterContext


@dataclass(frozen=True, slots=True)
class Done:
    """Processed (or provably nothing to do): delete the message."""

    kind: ClassVar[str] = "done"


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again later: the message becomes visible after a back-off, at least ``delay`` seconds if given."""

    delay: float | None
    stage: str
    reason: str
    error_class: str
    element_id: int | None = None
    kind: ClassVar[str] = "retry"

    def exhausted(self, attempts: int) -> DeadLetter:
        """The retry budget is spent: dead-letter with the last failure as the reason."""
        return DeadLetter(
            stage=self.stage,
            reason=f"gave up after {attempts} attempts: {self.reason}",
            error_class=self.error_class,
            element_id=self.element_id,
        )


# Can never succeed as it is: copy to the dead-letter queue with its context, then delete. The outcome and the
# context written on the dead letter are one type (``bridge.queue.dead_letter``, where the context is written and
# read), so that what the pipeline decided is what the dead letter says.
DeadLetter = DeadLetterContext


Outcome = Done | Retry | DeadLetter

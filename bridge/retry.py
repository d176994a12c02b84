"""Bounded exponential back-off with jitter (each delay drawn between half and all of its ceiling), shared by every
outbound client."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long an in-process retry may go on before the message is retried via the queue.

    In-process retries are for blips (a 503, a dropped connection); anything longer is handed back to SQS as a
    visibility back-off, so a worker never holds a message while sleeping for minutes.
    """

    attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 5.0
    total_seconds: float = 20.0

    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based): between half and all of an exponential ceiling."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)


def queue_backoff(receive_count: int, *, base: float = 5.0, cap: float = 900.0, floor: float = 0.0) -> int:
    """Visibility timeout for the next attempt of a message received ``receive_count`` times.

    Exponential in the receive count (SQS keeps it across retries because we never re-send), with jitter, and
    never shorter than ``floor`` (a ``Retry-After`` the server asked for). SQS caps visibility at 12 h from the receive
    (``bridge.queue.sqs`` cuts a retry to what is left of them).
    """
    # The exponent bounded: past 2**64 every ceiling is the cap, and a count beyond 1024 (a dead letter the DLQ never
    # takes is retried for ever) would overflow the float.
    ceiling = min(cap, base * 2.0 ** min(64, max(0, receive_count - 1)))
    delay = random.uniform(ceiling / 2, ceiling)
    return int(min(43_200, max(delay, floor, 1)))

"""Timestamps as Kordiam writes and reads them."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from typing import Final

from bridge.simulator.errors import SimulatorProblem

_TIMESTAMP_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"
_QUERY_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_QUERY_DATE_TIME: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2})"
)


def format_timestamp(moment: datetime) -> str:
    """Kordiam's wire format: UTC, seconds resolution, literal ``Z``."""
    return moment.astimezone(UTC).strftime(_TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> datetime:
    return datetime.strptime(text, _TIMESTAMP_FORMAT).replace(tzinfo=UTC)


def parse_query_instant(name: str, text: str, *, end_of_day: bool) -> datetime:
    """Parse a date filter the way Kordiam documents them: an ISO 8601 instant or date-time with offset
    (``2025-01-15T10:30:00+01:00``, ``…Z``), or ``yyyy-MM-dd``; anything else is 400 ``date-format-error``.

    Ranges are inclusive, so a bare date used as an upper bound means the end of that day. No leniency beyond the
    documented forms (a date-time without offset, an unencoded ``+`` that decoded to a space, ISO basic format),
    which Python's ``fromisoformat`` would read: a client sending one would pass here and fail against Kordiam.
    """
    try:
        if _QUERY_DATE.fullmatch(text):
            return datetime.combine(date.fromisoformat(text), time.max if end_of_day else time.min, tzinfo=UTC)
        if _QUERY_DATE_TIME.fullmatch(text):
            return datetime.fromisoformat(text)
    except ValueError:
        pass  # the right shape, but no such day or time (2026-13-01)
    raise SimulatorProblem(
        400,
        "date-format-error",
        f"Query parameter '{name}' must be an ISO 8601 date-time with offset or yyyy-MM-dd, got '{text}'.",
    )

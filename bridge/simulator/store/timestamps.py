"""Timestamps as Kordiam writes and reads them."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Final

from bridge.simulator.errors import SimulatorProblem

_TIMESTAMP_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"


def format_timestamp(moment: datetime) -> str:
    """Kordiam's wire format: UTC, seconds resolution, literal ``Z``."""
    return moment.astimezone(UTC).strftime(_TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> datetime:
    return datetime.strptime(text, _TIMESTAMP_FORMAT).replace(tzinfo=UTC)


def parse_query_instant(name: str, text: str, *, end_of_day: bool) -> datetime:
    """Parse a date filter the way Kordiam documents them: ISO 8601 date-time or ``yyyy-MM-dd``.

    Ranges are inclusive, so a bare date used as an upper bound means the end of that day.
    Naive date-times are taken as UTC.
    """
    # An unencoded "+01:00" offset arrives as " 01:00" after query decoding; accept it anyway
    # because that client bug is common and the intent is unambiguous.
    candidate = text.strip().replace(" ", "+")
    try:
        if len(candidate) == len("yyyy-MM-dd"):
            day = date.fromisoformat(candidate)
            return datetime.combine(day, time.max if end_of_day else time.min, tzinfo=UTC)
        moment = datetime.fromisoformat(candidate)
    except ValueError:
        raise SimulatorProblem(
            400,
            "date-format-error",
            f"Query parameter '{name}' must be an ISO 8601 date-time or yyyy-MM-dd, got '{text}'.",
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment

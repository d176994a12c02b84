"""Times as ISO 8601 text in UTC, at a fraction of ``datetime.isoformat``'s cost: every message writes several.

``utc_now_iso``: the current UTC time, as ``datetime.now(UTC).isoformat()`` writes it, at a fifth of its cost.

Every message writes it three times (its log line's ``timestamp``, the ``updated_at`` of its delivery and of its
element's row), and ``datetime.isoformat`` formats through ``PyUnicode_FromFormat``: about 15 k instructions a
call with ``datetime.now`` (cachegrind). Here the text of the current second is kept, and only the microseconds
are formatted. The same clock (``time.time_ns``, which ``datetime.now`` reads) and the same rounding (down to the
microsecond), so the same text: microseconds left out when they are zero, as ``isoformat`` does.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

_DATE_TIME = "%04d-%02d-%02dT%02d:%02d:%02d"

# The last second formatted and its text (``2026-01-02T03:04:05``): the pair is replaced whole, so threads (stdlib
# logging's) may share it.
_second: list[tuple[int, str]] = [(-1, "")]


def utc_now_iso(zone: str) -> str:
    """``datetime.now(UTC).isoformat()`` with ``zone`` in place of its ``+00:00`` (e.g. ``Z``)."""
    seconds, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
    cached, text = _second[0]
    if seconds != cached:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second[0] = (seconds, text)
    microseconds = nanoseconds // 1000
    if microseconds:
        return f"{text}.{microseconds:06d}{zone}"
    return text + zone


def utc_text(value: datetime, *, microseconds: bool) -> str:
    """``value`` in UTC (a naive one is taken as UTC), as ``isoformat(timespec=...)`` writes it with ``Z`` for the
    zone: to the second (the Global Export body's dates), or fixed-width to the microsecond (the SQLite store's
    rows, whose text orders as the times do). A third of the cost of ``isoformat`` with the ``replace`` it needs."""
    moment = value.astimezone(UTC) if value.tzinfo else value
    text = _DATE_TIME % (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)
    return f"{text}.{moment.microsecond:06d}Z" if microseconds else text + "Z"

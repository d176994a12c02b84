"""The current UTC time as ISO 8601 text, as ``datetime.now(UTC).isoformat()`` writes it, at a fifth of its cost.

Every message writes it three times (its log line's ``timestamp``, the ``updated_at`` of its delivery and of its
element's row), and ``datetime.isoformat`` formats through ``PyUnicode_FromFormat``: about 15 k instructions a
call with ``datetime.now`` (cachegrind). Here the text of the current second is kept, and only the microseconds
are formatted. The same clock (``time.time_ns``, which ``datetime.now`` reads) and the same rounding (down to the
microsecond), so the same text: microseconds left out when they are zero, as ``isoformat`` does.
"""

from __future__ import annotations

import time

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

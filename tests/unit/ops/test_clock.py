"""The current UTC time's text: ``datetime.now(UTC).isoformat()``'s, for the same instant of the same clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from bridge.ops.clock import utc_now_iso

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "nanoseconds",
    [
        1_796_600_000_000_000_000,  # a whole second: isoformat leaves the microseconds out
        1_796_600_000_000_000_999,  # less than a microsecond past it: rounded down, as datetime.now does
        1_796_600_000_000_001_000,
        1_796_600_000_999_999_999,
        1_796_600_001_000_000_000,  # the next second, after the previous one's text was kept
        1_796_600_001_123_456_789,
        951_782_400_500_000_000,  # 2000-02-29, back to an earlier second
    ],
)
def test_the_text_is_isoformats_for_the_same_clock_reading(nanoseconds: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time_ns", lambda: nanoseconds)  # the clock the module reads
    moment = EPOCH + timedelta(microseconds=nanoseconds // 1000)
    assert utc_now_iso("+00:00") == moment.isoformat()
    assert utc_now_iso("Z") == moment.isoformat().replace("+00:00", "Z")


def test_the_text_is_of_now() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    now = datetime.fromisoformat(utc_now_iso("+00:00"))
    assert before <= now <= datetime.now(UTC)

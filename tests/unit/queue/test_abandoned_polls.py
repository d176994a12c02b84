"""``AbandonedPolls``: how long, per queue, a release must wait for a long poll this process cancelled."""

from __future__ import annotations

import time

from bridge.queue.sqs import ABANDONED_POLL_MARGIN_SECONDS, AbandonedPolls

Q1 = "http://sqs.local/000000000000/q1"
Q2 = "http://sqs.local/000000000000/q2"


def test_nothing_abandoned_means_visible_at_once() -> None:
    assert AbandonedPolls().seconds_left(Q1) == 0


def test_a_poll_abandoned_just_now_holds_releases_for_its_wait_and_the_margin_rounded_up() -> None:
    polls = AbandonedPolls()
    polls.abandoned(Q1, time.monotonic(), 20)
    assert polls.seconds_left(Q1) == 20 + int(ABANDONED_POLL_MARGIN_SECONDS)


def test_only_the_queue_it_polled_waits() -> None:
    polls = AbandonedPolls()
    polls.abandoned(Q1, time.monotonic(), 20)
    assert polls.seconds_left(Q2) == 0


def test_a_poll_that_has_ended_holds_nothing() -> None:
    polls = AbandonedPolls()
    polls.abandoned(Q1, time.monotonic() - 30, 20)
    assert polls.seconds_left(Q1) == 0


def test_the_latest_ending_poll_counts_not_the_latest_cancelled() -> None:
    polls = AbandonedPolls()
    now = time.monotonic()
    polls.abandoned(Q1, now, 20)
    polls.abandoned(Q1, now, 1)  # a shorter poll cancelled after it does not shorten the wait
    assert polls.seconds_left(Q1) == 20 + int(ABANDONED_POLL_MARGIN_SECONDS)

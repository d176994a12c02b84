"""The dead-letter context: what ``failure_attributes`` writes, ``FailureContext.parse`` reads back."""

from __future__ import annotations

from bridge.config import QueueSettings, is_fifo_url
from bridge.queue.dead_letter import (
    FIRST_FAILURE_AT,
    FIRST_FAILURE_SOURCE,
    REDRIVEN_FROM,
    DeadLetterContext,
    FailureContext,
    carried_attributes,
    dead_letter_attributes,
    failure_attributes,
    redriven_attributes,
)
from bridge.queue.transport import QueueMessage


def _message(attributes: dict[str, str], *, receive_count: int = 3) -> QueueMessage:
    return QueueMessage("m-1", "r-1", "{}", attributes, receive_count, sent_at=None, group_id=None)


def test_what_is_written_is_read_back() -> None:
    written = failure_attributes(_message({}), DeadLetterContext("sync", "boom", "ChannelRejected", element_id=42))
    parsed = FailureContext.parse(written)
    assert parsed is not None
    assert (parsed.stage, parsed.reason, parsed.error_class) == ("sync", "boom", "ChannelRejected")
    assert (parsed.attempts, parsed.element_id, parsed.source_message_id) == (3, 42, "m-1")
    assert parsed.first_failed_at == written["failure.first_failed_at"]


def test_a_redriven_copy_keeps_its_first_failure_and_drops_the_carriers() -> None:
    carried = {REDRIVEN_FROM: "d-9", FIRST_FAILURE_SOURCE: "m-0", FIRST_FAILURE_AT: "2026-12-01T10:00:00.000+00:00"}
    message = _message({**carried, "event": "updated"})
    written = failure_attributes(message, DeadLetterContext("decode", "bad", "PoisonMessage"))
    assert written["failure.source_message_id"] == "m-0"
    assert written["failure.first_failed_at"] == "2026-12-01T10:00:00.000+00:00"
    assert "failure.element_id" not in written  # empty values are left out
    assert list(carried_attributes(message)) == [(REDRIVEN_FROM, "d-9"), ("event", "updated")]


def test_a_message_without_failure_attributes_has_no_context() -> None:
    assert FailureContext.parse({"event": "updated"}) is None


def test_unreadable_numbers_parse_as_none() -> None:
    parsed = FailureContext.parse({"failure.attempts": "many", "failure.element_id": ""})
    assert parsed is not None and parsed.attempts is None and parsed.element_id is None and parsed.stage is None


def test_the_fifo_rule_is_the_queue_name_suffix() -> None:
    assert is_fifo_url("https://sqs.eu-west-1.amazonaws.com/1/kordiam.fifo")
    assert not is_fifo_url("https://sqs.eu-west-1.amazonaws.com/1/kordiam")
    assert QueueSettings(url="http://localhost:4566/000000000000/q.fifo").is_fifo


def test_a_redriven_copy_drops_the_failure_and_carries_the_first_one() -> None:
    dead = failure_attributes(_message({"event": "updated"}), DeadLetterContext("sync", "boom", "X", element_id=7))
    letter = QueueMessage("d-1", "r", "{}", {**dead, "event": "updated"}, 1, sent_at=None, group_id=None)
    copy = redriven_attributes(letter)
    assert copy == {
        "event": "updated",
        REDRIVEN_FROM: "d-1",
        FIRST_FAILURE_SOURCE: "m-1",
        FIRST_FAILURE_AT: dead["failure.first_failed_at"],
    }


def test_a_dead_letter_carries_its_failure_first_then_its_own_attributes_within_the_limits() -> None:
    message = _message({"event": "updated", "failure.stage": "old", REDRIVEN_FROM: "d-9", "z": "last"})
    context = DeadLetterContext("sync", "x" * 2000, "ChannelRejected", element_id=7)
    every = dead_letter_attributes(message, context)
    assert every["failure.stage"] == "sync"  # the new failure wins over the message's own
    assert len(every["failure.reason"]) == 2000 and every["event"] == "updated" and every["z"] == "last"
    # SQS: ten attributes, the failure's values cut; `redriven_from` is the first of the message's own to go in.
    failure_count = len(failure_attributes(message, context))
    limited = dead_letter_attributes(message, context, at_most=failure_count + 1, failure_value_limit=1024)
    assert len(limited) == failure_count + 1 and limited[REDRIVEN_FROM] == "d-9" and "z" not in limited
    assert len(limited["failure.reason"]) == 1024

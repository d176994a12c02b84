"""How an SQS dead letter near its queue's MaximumMessageSize is fitted: the body whole, the context cut in order."""

from __future__ import annotations

from bridge.queue.send_batcher import entry_size
from bridge.queue.sqs import fit_attributes, string_attributes

CONTEXT = {
    "failure.stage": "channels",
    "failure.reason": "é" * 400,  # two bytes each: a cut must not split one
    "failure.error_class": "PermanentError",
    "failure.attempts": "3",
    "failure.element_id": "42",
    "failure.source_message_id": "m" * 36,
    "failure.first_failed_at": "2026-12-01T10:00:00.000+00:00",
    "redriven_from": "d" * 36,
}


def size(body_bytes: int, attributes: dict[str, str]) -> int:
    return body_bytes + entry_size({"MessageBody": "", "MessageAttributes": string_attributes(attributes)})


def test_what_fits_is_left_as_it_is() -> None:
    attributes = CONTEXT | {"event": "updated"}
    assert fit_attributes(1_000, attributes, 262_144) == attributes


def test_the_message_own_attributes_go_first_longest_first() -> None:
    attributes = CONTEXT | {"event": "updated", "trace": "t" * 500}
    limit = size(10_000, attributes) - 100
    fitted = fit_attributes(10_000, attributes, limit)
    assert fitted == CONTEXT | {"event": "updated"}


def test_then_the_reason_is_cut_on_a_character_boundary() -> None:
    attributes = CONTEXT | {"trace": "t" * 500}
    limit = size(10_000, CONTEXT) - 101
    fitted = fit_attributes(10_000, attributes, limit)
    assert fitted is not None and size(10_000, fitted) <= limit
    assert fitted["failure.reason"] == "é" * 349  # 101 bytes over: 51 characters go, none split
    assert set(fitted) == set(CONTEXT)


def test_then_the_rest_of_the_context_least_telling_first() -> None:
    without_reason = {name: value for name, value in CONTEXT.items() if name != "failure.reason"}
    limit = size(10_000, without_reason) - 40
    fitted = fit_attributes(10_000, CONTEXT, limit)
    assert fitted is not None and size(10_000, fitted) <= limit
    assert "failure.reason" not in fitted and "failure.first_failed_at" not in fitted
    assert fitted["failure.stage"] == "channels" and fitted["redriven_from"] == "d" * 36


def test_a_body_that_alone_does_not_fit_cannot_be_fitted() -> None:
    assert fit_attributes(262_145, CONTEXT, 262_144) is None
    assert fit_attributes(262_144, CONTEXT, 262_144) == {}

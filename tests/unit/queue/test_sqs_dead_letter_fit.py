"""How an SQS dead letter near its queue's MaximumMessageSize is fitted: the body whole, the context cut in order."""

from __future__ import annotations

import re
from typing import Any

from bridge.config import QueueSettings
from bridge.queue.dead_letter import DeadLetterContext
from bridge.queue.send_batcher import entry_size
from bridge.queue.sqs import SqsTransport, fit_attributes, string_attributes
from bridge.queue.transport import QueueMessage

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


# What SQS takes in a body, and so in a String attribute's value (SendMessage, MessageAttributeValue): anything
# else refuses the whole SendMessage.
SQS_TEXT = re.compile("^[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*$")


async def test_a_failure_reason_with_characters_sqs_refuses_still_makes_a_dead_letter() -> None:
    # A reason quotes what failed: a Kordiam or CMS answer that is not JSON (its first bytes), a JSON problem whose
    # title holds an escaped control character or a lone surrogate. SQS refuses such a value; the copy would fail
    # on every receive (and, without a redrive policy, the message would be retried for ever).
    sent: list[dict[str, Any]] = []

    class Client:
        async def send_message(self, **request: Any) -> dict[str, Any]:
            sent.append(request)
            return {"MessageId": "d1"}

    transport = SqsTransport(Client(), QueueSettings(url="https://sqs.test/q", dlq_url="https://sqs.test/dlq"))
    message = QueueMessage("m1", "r1", '{"id": 1}', {"event": "updated"}, 3, None, None)
    reason = "Kordiam answered 400: \x00\x1b[31mbad\x0b request \ud800 é"
    await transport.send_dead_letter(message, DeadLetterContext(stage="fetch", reason=reason, error_class="X"))
    [request] = sent
    values = {name: value["StringValue"] for name, value in request["MessageAttributes"].items()}
    assert all(SQS_TEXT.match(value) for value in values.values()), values
    assert values["failure.reason"].startswith("Kordiam answered 400: ") and values["failure.reason"].endswith(" é")
    values["failure.reason"].encode()  # botocore sends UTF-8: a lone surrogate could not even be sent

"""What ``dlq show`` prints: the broker's own attributes under the name the broker gives them, and no empty table."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from rich.console import Console

from bridge.admin.rendering import render_dlq_message, render_redrive
from bridge.admin.results import DlqMessage
from bridge.queue.dead_letter import FailureContext
from bridge.queue.transport import RedriveFailure, RedriveResult


def shown(message: DlqMessage) -> str:
    console = Console(record=True, width=160)
    render_dlq_message(message, console)
    return console.export_text()


SQS_LETTER = DlqMessage(
    message_id="m-1",
    body='{"id": 7}',
    attributes={"failure.stage": "decode", "event": "updated"},
    system_attributes={"SentTimestamp": "1700000000000", "ApproximateReceiveCount": "2"},
    system_attributes_title="SQS attributes",
    sent_at=datetime(2023, 11, 14, tzinfo=UTC),
    receive_count=2,
    group_id=None,
    element_id=7,
    failure=FailureContext("decode", "r", "PoisonMessage", 3, 7, "src-1"),
)


def test_the_brokers_attributes_are_shown_under_the_brokers_name_for_them() -> None:
    sqs = shown(SQS_LETTER)
    assert "SQS attributes" in sqs and "ApproximateReceiveCount" in sqs
    activemq = shown(
        dataclasses.replace(
            SQS_LETTER,
            system_attributes={"message-id": "ID:b-1:1:1:1:1", "timestamp": "1700000000000", "priority": "4"},
            system_attributes_title="Broker headers",
        )
    )
    assert "Broker headers" in activemq and "priority" in activemq and "SQS" not in activemq


def test_no_table_is_printed_empty() -> None:
    # A broker that shows nothing beside the message gets no section; a dead letter without attributes says so.
    bare = shown(dataclasses.replace(SQS_LETTER, attributes={}, system_attributes={}, failure=None))
    assert "SQS attributes" not in bare and "name" not in bare and "┏" not in bare
    assert "Message attributes: none" in bare
    assert '"id": 7' in bare


def test_a_body_that_is_not_json_is_shown_as_it_is() -> None:
    # Printed without markup, so nothing may be escaped for markup either: `x[b]y` once came out as `x\[b]y`, a body
    # the dead letter does not hold (an operator copying it to resend would send another one).
    body = r"<p>not json [b]bold[/b] \[x] C:\temp\ [link=file:///etc]</p>"
    text = shown(dataclasses.replace(SQS_LETTER, body=body, group_id="[red]g[/red]"))
    assert body in text
    assert "[red]g[/red]" in text


def test_a_redrive_that_stopped_early_names_the_activemq_message_id_as_it_is() -> None:
    # An ActiveMQ message id holds ":-1:", which rich would read as an emoji code (a thumbs-down) in markup.
    stuck, gone = "ID:vm-1-179:149:-1:1:154", "ID:vm-1-179:149:-1:1:155"
    result = RedriveResult(
        "manual",
        "stomp://127.0.0.1:61613/queue/kordiam-dlq",
        "stomp://127.0.0.1:61613/queue/kordiam",
        failed=[RedriveFailure(stuck, "SendReceiptError: timeout")],
        stopped_reason=f"dead letter {gone} did not come [red]",
    )
    console = Console(record=True, width=200)
    render_redrive(result, console)
    text = console.export_text()
    assert f"not moved {stuck}: SendReceiptError: timeout" in text
    assert f"stopped early: dead letter {gone} did not come [red]" in text


def test_a_json_body_s_8_bit_controls_are_written_out_too() -> None:
    # json.dumps escapes C0 characters in strings, not DEL or C1: SQS carries \x9b, an 8-bit CSI to some terminals.
    text = shown(dataclasses.replace(SQS_LETTER, body='{"title": "a\\u009b2Jb\\u007f"}'))
    assert "\x9b" not in text and "\x7f" not in text
    assert '"title": "a\\x9b2Jb\\x7f"' in text

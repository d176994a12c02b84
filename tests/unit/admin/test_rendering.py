"""What ``dlq show`` prints: the broker's own attributes under the name the broker gives them, and no empty table."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from rich.console import Console

from bridge.admin.rendering import render_dlq_message
from bridge.admin.results import DlqMessage
from bridge.queue.dead_letter import FailureContext


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

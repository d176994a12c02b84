"""Terminal rendering of the operator commands' results with rich; nothing here talks to a queue.

What came off a queue (ids, attribute names and values) goes in as ``Text``: rich then reads no markup or emoji
codes in it (an ActiveMQ message id such as ``ID:host-1:2:-1:1`` would otherwise show a thumbs-down).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from bridge.admin.results import (
    FIFO_HELD_BACK,
    INTERRUPTED,
    DlqListing,
    DlqMessage,
    ParkedListing,
    ParkedRequeueResult,
    RedriveResult,
    ReplayResult,
)
from bridge.queue.dead_letter import FAILURE_PREFIX

# --------------------------------------------------------------------------------------------------- rendering


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _short(text: str | None, width: int) -> str:
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def render_replay(result: ReplayResult, console: Console) -> None:
    unsent = [e.element_id for e in result.elements if e.error == INTERRUPTED]
    for element in result.elements:
        if element.error == INTERRUPTED:
            continue
        if element.error is None:
            console.print(f"element {element.element_id}: enqueued as {element.message_id}")
        else:
            console.print(f"[red]element {element.element_id}: not enqueued: {escape(element.error)}[/red]")
    console.print(f"{result.sent} of {len(result.elements)} notification(s) sent to {result.queue_url}")
    if unsent:
        shown = " ".join(map(str, unsent[:10])) + (" …" if len(unsent) > 10 else "")
        console.print(
            f"[yellow]interrupted (Ctrl-C): {len(unsent)} not sent ({shown}); replay them again "
            "(a repeat is harmless)[/yellow]"
        )


def render_parked_list(listing: ParkedListing, console: Console) -> None:
    table = Table(title=f"Parked elements (state: {listing.state_url})", title_justify="left")
    for column in ("element", "channel", "since", "age", "reason"):
        # The reason is what gives way on a narrow terminal: the rest is what an operator acts on.
        table.add_column(column, overflow="fold", no_wrap=column != "reason")
    for parked in listing.elements:
        table.add_row(
            str(parked.element_id),
            Text(parked.channel),
            parked.since.isoformat(timespec="seconds"),
            format_age(parked.age_seconds),
            Text(_short(parked.reason, 80)),
        )
    console.print(table)
    summary = f"{len(listing.elements)} shown; {listing.parked} parked ({', '.join(listing.channels)})"
    if listing.truncated:
        summary += "; more not shown (raise --limit)"
    console.print(summary, markup=False, highlight=False)
    for name in listing.unconfigured:
        console.print(
            Text(
                f"{name} is not configured (renamed or removed?), so no worker requeues its elements: "
                f"`kordiam-bridge parked requeue --channel {name}` puts them back on the queue, for the channels "
                "configured now",
                style="yellow",
            )
        )


def render_parked_requeue(result: ParkedRequeueResult, console: Console) -> None:
    unsent = [e.element_id for e in result.elements if e.error == INTERRUPTED]
    for element in result.elements:
        if element.error == INTERRUPTED:
            continue
        channels = ", ".join(element.channels)
        if element.error is None:
            console.print(
                Text(f"element {element.element_id}: enqueued as {element.message_id}, unparked ({channels})")
            )
        else:
            console.print(Text(f"element {element.element_id}: {element.error}", style="red"))
    console.print(f"{result.sent} of {len(result.elements)} notification(s) sent to {result.queue_url}")
    if unsent:
        shown = " ".join(map(str, unsent[:10])) + (" …" if len(unsent) > 10 else "")
        console.print(
            f"[yellow]interrupted (Ctrl-C): {len(unsent)} not sent, still parked ({shown}); requeue them again[/yellow]"
        )


def render_dlq_list(listing: DlqListing, console: Console) -> None:
    now = datetime.now(UTC)
    table = Table(title=f"Dead letters in {listing.queue_url}", title_justify="left")
    for column in ("message id", "element", "stage", "error", "reason", "attempts", "age"):
        table.add_column(column, overflow="fold" if column == "message id" else "ellipsis")
    for message in listing.messages:
        failure = message.failure
        table.add_row(
            Text(message.message_id),
            str(message.element_id) if message.element_id is not None else "-",
            escape(failure.stage or "-") if failure else "(moved by SQS)",
            escape(failure.error_class or "-") if failure else "-",
            escape(_short(failure.reason if failure else None, 60)),
            # Without the worker's context only SQS's receive count is known, and listings add to it.
            str(failure.attempts) if failure and failure.attempts is not None else "-",
            format_age(message.age_seconds(now)),
        )
    console.print(table)
    summary = f"{len(listing.messages)} shown; about {listing.approximate_visible} visible"
    if listing.approximate_in_flight:
        summary += f", {listing.approximate_in_flight} in flight (held by a consumer, not listed)"
    if listing.truncated:
        summary += "; more not shown (raise --limit)"
    if listing.held_back:
        summary += f"; about {listing.held_back} more {FIFO_HELD_BACK}"
    console.print(summary)


def render_dlq_message(message: DlqMessage, console: Console) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("message id", Text(message.message_id))
    table.add_row("element", str(message.element_id) if message.element_id is not None else "-")
    table.add_row("sent", message.sent_at.isoformat() if message.sent_at else "-")
    table.add_row("age", format_age(message.age_seconds()))
    table.add_row("receive count", str(message.receive_count))
    if message.group_id:
        table.add_row("group", Text(message.group_id))
    console.print(table)
    if message.attributes:
        attributes = Table(title="Message attributes", title_justify="left")
        attributes.add_column("name")
        attributes.add_column("value", overflow="fold")
        for name in sorted(message.attributes, key=lambda n: (not n.startswith(FAILURE_PREFIX), n)):
            attributes.add_row(Text(name), Text(message.attributes[name]))
        console.print(attributes)
    else:
        console.print("Message attributes: none")
    # Under the broker's own name for them; a broker that shows nothing beside the message gets no section.
    if message.system_attributes:
        system = Table(title=message.system_attributes_title, title_justify="left")
        system.add_column("name")
        system.add_column("value", overflow="fold")
        for name, value in sorted(message.system_attributes.items()):
            system.add_row(Text(name), Text(value))
        console.print(system)
    if message.body_is_utf8:
        console.print("[bold]Body[/bold]")
    else:
        console.print(
            "[bold]Body[/bold] (not UTF-8: its bad bytes shown as \ufffd; the dead letter keeps them as they came)"
        )
    parsed = message.body_json
    if parsed is not None:
        console.print(Syntax(json.dumps(parsed, indent=2, ensure_ascii=False), "json", word_wrap=True))
    else:
        console.print(Text(message.body), highlight=False)  # as it is: no markup read, none escaped


def render_redrive(result: RedriveResult, console: Console) -> None:
    via = "SQS move task" if result.method == "move-task" else "copy and delete"
    console.print(f"Redrive {result.source_url} → {result.destination_url} ({via})")
    if result.fallback_reason:
        console.print(f"  manual copy because: {escape(result.fallback_reason)}")
    console.print(f"  moved: {result.moved_total}")
    if result.task_status:
        console.print(f"  move task status: {result.task_status}")
    if result.skipped:
        console.print(f"  left in the dead-letter queue (filter/limit): {result.skipped}")
    if result.arrived:
        console.print(f"  arrived after the run started, left for a later run: {result.arrived}")
    if result.interrupted:
        console.print("  [yellow]interrupted (Ctrl-C): the figures above are what this run did before[/yellow]")
    for failure in result.failed:
        console.print(Text.assemble(("  not moved", "red"), f" {failure.dlq_message_id}: {failure.reason}"))
    if result.duplicated:
        console.print(
            f"  [yellow]copied but still in the dead-letter queue (delete failed): {len(result.duplicated)}[/yellow]"
            " — they will be processed twice, which is safe; delete or redrive them again"
        )
    if result.stopped_reason:
        console.print(f"  [red]stopped early:[/red] {escape(result.stopped_reason)}")
    if result.remaining is not None:
        console.print(f"  dead-letter queue now holds about {result.remaining} message(s)")

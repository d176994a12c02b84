"""Terminal rendering of the operator commands' results with rich; nothing here talks to a queue.

What came off a queue (ids, attribute names and values) goes in as ``Text``: rich then reads no markup or emoji
codes in it (an ActiveMQ message id such as ``ID:host-1:2:-1:1`` would otherwise show a thumbs-down). What came from
outside (that, and what a failure's reason or an error quotes of a peer's answer) has its control characters written
out (``bridge.terminal``) before rich measures it: raw, an escape sequence would reach the operator's terminal.
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
    IN_LINE,
    INTERRUPTED,
    DlqDeleteResult,
    DlqListing,
    DlqMessage,
    ElementReport,
    ParkedListing,
    ParkedRequeueResult,
    RedriveResult,
    ReplayResult,
    paged_in_note,
)
from bridge.queue.dead_letter import FAILURE_PREFIX
from bridge.terminal import visible

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


def outside(text: str, style: str = "") -> Text:
    """``text`` from outside as a cell or a line: no markup read, its control characters written out."""
    return Text(visible(text), style=style)


def _short(text: str | None, width: int) -> str:
    """A reason (which quotes a peer's answer) on one line of at most ``width`` characters as it is shown."""
    if not text:
        return "-"
    text = visible(" ".join(text.split()))
    return text if len(text) <= width else text[: width - 1] + "…"


def render_replay(result: ReplayResult, console: Console) -> None:
    unsent = [e.element_id for e in result.elements if e.error == INTERRUPTED]
    for element in result.elements:
        if element.error == INTERRUPTED:
            continue
        if element.error is None:
            console.print(outside(f"element {element.element_id}: enqueued as {element.message_id}"))
        else:
            console.print(f"[red]element {element.element_id}: not enqueued: {escape(visible(element.error))}[/red]")
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
            outside(parked.channel),
            parked.since.isoformat(timespec="seconds"),
            format_age(parked.age_seconds),
            Text(_short(parked.reason, 80)),
        )
    console.print(table)
    if listing.parked_by_channel:
        held = ", ".join(f"{count} for {name}" for name, count in listing.parked_by_channel.items())
        summary = f"{len(listing.elements)} shown; {listing.parked} parked: {held}"
    else:
        summary = f"{len(listing.elements)} shown; nothing parked (looked at {', '.join(listing.channels)})"
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
                outside(f"element {element.element_id}: enqueued as {element.message_id}, unparked ({channels})")
            )
        else:
            console.print(outside(f"element {element.element_id}: {element.error}", style="red"))
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
            outside(message.message_id),
            str(message.element_id) if message.element_id is not None else "-",
            outside(failure.stage or "-") if failure else "(moved by SQS)",
            outside(failure.error_class or "-") if failure else "-",
            Text(_short(failure.reason if failure else None, 60)),
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
    if listing.paged_in:
        summary += f"; {paged_in_note(listing.paged_in)}"
    console.print(summary)


def render_dlq_message(message: DlqMessage, console: Console) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("message id", outside(message.message_id))
    table.add_row("element", str(message.element_id) if message.element_id is not None else "-")
    table.add_row("sent", message.sent_at.isoformat() if message.sent_at else "-")
    table.add_row("age", format_age(message.age_seconds()))
    table.add_row("receive count", str(message.receive_count))
    if message.group_id:
        table.add_row("group", outside(message.group_id))
    console.print(table)
    if message.attributes:
        attributes = Table(title="Message attributes", title_justify="left")
        attributes.add_column("name")
        attributes.add_column("value", overflow="fold")
        for name in sorted(message.attributes, key=lambda n: (not n.startswith(FAILURE_PREFIX), n)):
            attributes.add_row(outside(name), outside(message.attributes[name]))
        console.print(attributes)
    else:
        console.print("Message attributes: none")
    # Under the broker's own name for them; a broker that shows nothing beside the message gets no section.
    if message.system_attributes:
        system = Table(title=message.system_attributes_title, title_justify="left")
        system.add_column("name")
        system.add_column("value", overflow="fold")
        for name, value in sorted(message.system_attributes.items()):
            system.add_row(outside(name), outside(value))
        console.print(system)
    if message.body_is_utf8:
        console.print("[bold]Body[/bold]")
    else:
        console.print(
            "[bold]Body[/bold] (not UTF-8: its bad bytes shown as \ufffd; the dead letter keeps them as they came)"
        )
    parsed = message.body_json
    # Its line breaks and tabs kept (a JSON body's are the indentation's: json.dumps escapes those inside strings,
    # and every other C0 character, not DEL or C1).
    if parsed is not None:
        indented = json.dumps(parsed, indent=2, ensure_ascii=False)
        console.print(Syntax(visible(indented, keep="\n"), "json", word_wrap=True))
    else:
        # As it is but for its control characters: no markup read, none escaped.
        console.print(Text(visible(message.body, keep="\n\t")), highlight=False)


def render_dlq_delete(result: DlqDeleteResult, console: Console) -> None:
    """One line per dead letter found: deleted, or (a dry run) would be; an id not handled is the command's error
    line on stderr (``bridge.cli``), not here."""
    found = [d for d in result.deletions if d.message is not None and d.error is None]
    for deletion in found:
        message = deletion.message
        assert message is not None  # chosen above; the check keeps the type narrow
        failure = message.failure
        named = "" if deletion.requested_id == message.message_id else f" (named {deletion.requested_id})"
        stage = (failure.stage or "-") if failure else "(moved by SQS)"
        reason = " ".join((failure.reason or "-").split()) if failure else "-"
        element = str(message.element_id) if message.element_id is not None else "-"
        done = "would delete" if result.dry_run else "deleted"
        console.print(
            outside(f"{done} {message.message_id}{named}: element {element}, stage {stage}, reason {reason}"),
            soft_wrap=True,
        )
    if result.dry_run and found:
        console.print(
            f"nothing deleted: give --yes to delete {'this one' if len(found) == 1 else f'these {len(found)}'}"
        )


def render_redrive(result: RedriveResult, console: Console) -> None:
    via = "SQS move task" if result.method == "move-task" else "copy and delete"
    console.print(f"Redrive {result.source_url} → {result.destination_url} ({via})")
    if result.fallback_reason:
        console.print(f"  manual copy because: {escape(visible(result.fallback_reason))}")
    console.print(f"  moved: {result.moved_total}")
    if result.task_status:
        console.print(outside(f"  move task status: {result.task_status}"))
    if result.skipped:
        console.print(f"  left in the dead-letter queue (filter/limit): {result.skipped}")
    if result.arrived:
        console.print(f"  arrived after the run started, left for a later run: {result.arrived}")
    if result.interrupted:
        console.print("  [yellow]interrupted (Ctrl-C): the figures above are what this run did before[/yellow]")
    for failure in result.failed:
        console.print(Text.assemble(("  not moved", "red"), outside(f" {failure.dlq_message_id}: {failure.reason}")))
    if result.duplicated:
        console.print(
            f"  [yellow]copied but still in the dead-letter queue (delete failed): {len(result.duplicated)}[/yellow]"
            " — they will be processed twice, which is safe; delete or redrive them again"
        )
    if result.stopped_reason:
        # It names a message id: an ActiveMQ one holds ":-1:", an emoji code to rich in markup.
        console.print(Text.assemble(("  stopped early:", "red"), outside(f" {result.stopped_reason}")))
    if result.paged_in:
        console.print(f"  [yellow]{paged_in_note(result.paged_in)}[/yellow]")
    if result.remaining is not None:
        console.print(f"  dead-letter queue now holds about {result.remaining} message(s)")


def short_fingerprint(text: str) -> str:
    """A fingerprint as an operator compares it by eye: its version prefix and the first 10 hex digits."""
    prefix, _, digest = text.rpartition(":")
    shown = digest[:10] + ("…" if len(digest) > 10 else "")
    return f"{prefix}:{shown}" if prefix else shown


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "-"


def _version(modified: datetime | None, version: int | None) -> str:
    """A Kordiam version as the store keeps it: its modification date and version number, either may be missing."""
    return f"{_when(modified)}, version {version if version is not None else '-'}"


def render_element(report: ElementReport, console: Console) -> None:
    element = report.element_id
    console.print(Text(f"Element {element} (state: {report.state_url})", style="bold"))
    if not report.seen:
        console.print(
            Text(f"The state store has never seen element {element}: no worker synced it, nor saw it deleted.")
        )
    else:
        mark = Table(show_header=False, box=None)
        mark.add_column(style="bold")
        mark.add_column(overflow="fold")
        mark.add_row("last synced", _version(report.synced_modification_date, report.synced_version))
        mark.add_row("deleted", "yes (seen deleted in Kordiam)" if report.deleted else "no")
        mark.add_row("fetch started", _when(report.fetch_started_at))
        console.print(mark)
    if report.deliveries:
        table = Table(title="Deliveries", title_justify="left")
        for column in ("channel", "publication", "external id", "version", "recorded", "fingerprint", "links"):
            table.add_column(column, overflow="fold")
        for delivery in report.deliveries:
            links = "\n".join(visible(link) for link in (delivery.edit_link, delivery.open_link) if link) or "-"
            table.add_row(
                outside(delivery.channel if delivery.configured else f"{delivery.channel} (not configured)"),
                str(delivery.publication_id),
                outside(delivery.external_id or "-"),
                _version(delivery.modification_date, delivery.version) + (", live" if delivery.live else ""),
                _when(delivery.recorded_at),
                short_fingerprint(delivery.fingerprint),
                Text(links),
            )
        console.print(table)
    elif report.seen:
        console.print("Deliveries: none (no channel holds an item of it)")
    for parked in report.parked:
        where = parked.channel if parked.configured else f"{parked.channel} (not configured)"
        console.print(
            outside(
                f"Parked for {where} since {_when(parked.since)} ({format_age(parked.age_seconds)}): "
                f"{_short(parked.reason, 200)}",
                style="red",
            )
        )
    lease = report.lease
    if lease is not None:
        who = f"pid {lease.pid}" + (f" on host {lease.host}" if lease.host else "") if lease.pid else lease.owner
        if lease.held and lease.owner_gone:
            line = f"Lease: taken by {who} until {_when(lease.expires_at)}, whose process is gone (taken over at once)"
        elif lease.held:
            line = f"Lease: held now by {who} until {_when(lease.expires_at)} (a worker is syncing it)"
        else:
            line = f"Lease: free (the last, {who}'s, expired at {_when(lease.expires_at)})"
        console.print(outside(line))
    else:
        console.print("Lease: free")
    found = report.dead_letters
    if found is not None:
        if found.error is not None:
            console.print(outside(f"Dead letters: not looked at: {found.error}"))
        elif found.messages:
            table = Table(title=f"Dead letters in {found.queue_url}", title_justify="left")
            for column in ("message id", "stage", "error", "reason", "age"):
                table.add_column(column, overflow="fold" if column == "message id" else "ellipsis")
            for message in found.messages:
                failure = message.failure
                table.add_row(
                    outside(message.message_id),
                    outside(failure.stage or "-") if failure else "(moved by SQS)",
                    outside(failure.error_class or "-") if failure else "-",
                    Text(_short(failure.reason if failure else None, 60)),
                    format_age(message.age_seconds()),
                )
            console.print(table)
        else:
            console.print(Text(f"Dead letters: none among the {found.looked_at} looked at in {found.queue_url}"))
        if found.more:
            console.print(
                Text(
                    f"Looked at the first {found.looked_at} dead letters only, and the queue holds more: "
                    "raise --scan-limit",
                    style="yellow",
                )
            )
        if found.held_back:
            console.print(Text(f"About {found.held_back} more {FIFO_HELD_BACK}", style="yellow"))
        if found.paged_in:
            console.print(Text(f"Dead letters looked at: {paged_in_note(found.paged_in)}", style="yellow"))
    kordiam = report.kordiam
    if kordiam is not None:
        if kordiam.error is not None:
            console.print(outside(f"In Kordiam now: not known: {kordiam.error}", style="yellow"))
        elif kordiam.found:
            console.print(f"In Kordiam now: {_version(kordiam.modification_date, kordiam.version)}")
        else:
            console.print("In Kordiam now: [red]deleted[/red] (404: deleted, or not visible to the bridge's account)")
        if kordiam.checks:
            table = Table(title="Against Kordiam", title_justify="left")
            for column in ("channel", "publication", "verdict", "why"):
                table.add_column(column, overflow="fold")
            for check in kordiam.checks:
                table.add_row(
                    outside(check.channel),
                    str(check.publication_id),
                    Text(
                        check.verdict,
                        style="red" if check.out_of_line else "green" if check.verdict == IN_LINE else "",
                    ),
                    outside(check.detail or ""),
                )
            console.print(table)
        elif not kordiam.found and kordiam.error is None:
            console.print("No channel holds an item of it: in line.")
        console.print(Text(f"Re-sync it: {kordiam.replay}  (--force also rewrites the channels in line)"))
    worker = report.worker
    unknown = ""
    if worker is not None and not worker.reachable:
        if worker.endpoint:
            console.print(outside(f"Worker at {worker.endpoint} not reachable: {worker.detail}", style="yellow"))
            unknown = "; whether the worker is paused is not known (its ops endpoint was not reached)"
        else:
            console.print(outside(f"Worker not asked: {worker.detail}", style="yellow"))
            unknown = "; whether the worker is paused is not known (no ops endpoint to ask)"
    elif worker is not None and worker.paused is not None:
        since = f" since {_when(worker.paused_since)}" if worker.paused_since else ""
        state = f"paused{since}" if worker.paused_since else "takes no messages"
        console.print(outside(f"Worker at {worker.endpoint}: {state}: {worker.paused}", style="red"))
    elif worker is not None:
        # A pause is per worker process: another worker, paused or not, answers on its own ops endpoint.
        console.print(
            outside(
                f"Worker at {worker.endpoint}: taking messages (only this worker process was asked, at [ops]; "
                "another worker, with its own ops endpoint, was not asked)"
            )
        )
    for failing in report.failing_channels:
        if failing.goes is None:
            console.print(
                outside(
                    f"Channel {failing.channel}: {failing.why}; whether element {report.element_id} goes to it is not "
                    "known without --kordiam (the store holds no delivery of it there, nothing parked for it)",
                    style="yellow",
                )
            )
        elif not failing.goes:
            console.print(
                outside(
                    f"Channel {failing.channel}: {failing.why}; element {report.element_id} does not go to it "
                    "(the configured routing of the element Kordiam holds now): no problem for it"
                )
            )
    problems = report.problems
    if problems:
        console.print("[bold red]Problems[/bold red]")
        for problem in problems:
            console.print(outside(f"  - {problem}"))
    else:
        console.print(Text(f"No problems found{unknown}.", style="green" if not unknown else "yellow"))

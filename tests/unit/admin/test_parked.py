"""``parked list`` and ``parked requeue`` over the ``StateStore`` contract (the in-memory fake, and a real SQLite
file where the command opens it): the listing's order, limit and footer; a requeue sends one notification per
element and unparks it only once the queue holds it; a requeue needs a selection; a store that cannot be read is one
line, and listing changes nothing in the file."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from bridge.admin.parked import list_parked, parked_list, parked_requeue, requeue_parked, requeue_selection
from bridge.admin.rendering import render_parked_list, render_parked_requeue
from bridge.admin.results import (
    INTERRUPTED,
    NOT_PARKED,
    ParkedElement,
    ParkedListing,
    ParkedRequeueResult,
    RequeuedElement,
    to_json,
)
from bridge.cli import main
from bridge.config import KORDIAM_FEEDBACK, StatusSettings
from bridge.errors import ConfigError
from bridge.queue.transport import (
    DeadLetterDeletion,
    OutgoingMessage,
    PeekedMessage,
    ProgressSink,
    QueueDepth,
    RedriveRequest,
    RedriveResult,
    SendOutcome,
)
from bridge.state import SqliteStateStore
from bridge.state.base import Parked
from bridge.state.sqlite import SCHEMA_VERSION
from tests.unit.fakes import MemoryStateStore

MAIN = "queue://main"


class SendingQueue:
    """A ``QueueAdmin`` for ``parked requeue``, which only sends: records every message; ``refuse`` names the
    elements whose send fails."""

    def __init__(self, refuse: Sequence[int] = ()) -> None:
        self.sent: list[tuple[str, dict[str, str], str | None]] = []
        self.batches: list[int] = []
        self.refuse = set(refuse)

    @property
    def url(self) -> str:
        return MAIN

    async def ensure_usable(self) -> None:
        return None

    async def send(self, messages: Sequence[OutgoingMessage]) -> list[SendOutcome]:
        self.batches.append(len(messages))
        outcomes = []
        for message in messages:
            if int(json.loads(message.body)["id"]) in self.refuse:
                outcomes.append(SendOutcome(None, "AccessDenied: not allowed to send"))
            else:
                self.sent.append((message.body, message.attributes, message.group_id))
                outcomes.append(SendOutcome(f"m-{len(self.sent)}"))
        return outcomes

    async def dead_letter_url(self) -> str:
        raise AssertionError("not asked by parked requeue")

    async def depth(self, url: str) -> QueueDepth:
        raise AssertionError("not asked by parked requeue")

    async def peek(
        self,
        url: str,
        *,
        limit: int,
        until: Callable[[PeekedMessage], bool] | None = None,
        progress: ProgressSink | None = None,
    ) -> tuple[list[PeekedMessage], bool]:
        raise AssertionError("not asked by parked requeue")

    async def delete_dead_letters(
        self,
        *,
        limit: int,
        chosen: Callable[[PeekedMessage], bool],
        until: Callable[[PeekedMessage], bool] | None = None,
        progress: ProgressSink | None = None,
        on_deleted: Callable[[PeekedMessage], None] | None = None,
    ) -> DeadLetterDeletion:
        raise AssertionError("not asked by parked requeue")

    @staticmethod
    def check_redrive(request: RedriveRequest) -> None:
        raise AssertionError("not asked by parked requeue")

    async def redrive(self, request: RedriveRequest, *, progress: ProgressSink, stop: asyncio.Event) -> RedriveResult:
        raise AssertionError("not asked by parked requeue")


def park(store: MemoryStateStore, element_id: int, channel: str, minutes_ago: float, reason: str = "401") -> None:
    since = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    store.parks[(channel, element_id)] = Parked(element_id, channel, reason, since)


@pytest.fixture
def store() -> MemoryStateStore:
    store = MemoryStateStore()
    park(store, 30, "web", 5)
    park(store, 10, "web", 60)
    park(store, 20, "web", 1)
    park(store, 10, "print", 2)
    park(store, 40, "gone", 9)  # a channel no longer configured: not among the listed ones
    return store


def rendered(render: object, value: object) -> str:
    out = io.StringIO()
    render(value, Console(file=out, width=200))  # type: ignore[operator]
    return out.getvalue()


async def test_list_is_by_channel_in_configuration_order_then_by_element_id(store: MemoryStateStore) -> None:
    listing = await list_parked(store, ["web", "print"], limit=50, state_url="sqlite:///state.db")
    assert [(p.channel, p.element_id) for p in listing.elements] == [
        ("web", 10),
        ("web", 20),
        ("web", 30),
        ("print", 10),
    ]
    assert listing.parked == 4 and not listing.truncated
    first = listing.elements[0]
    assert 59 * 60 < first.age_seconds < 61 * 60 and first.reason == "401"
    text = rendered(render_parked_list, listing)
    assert "4 shown; 4 parked: 3 for web, 1 for print" in text and "raise --limit" not in text


async def test_a_parked_reason_is_printed_with_its_control_characters_escaped(store: MemoryStateStore) -> None:
    # The reason quotes a channel's answer: before, its escape sequences reached the operator's terminal raw.
    park(store, 50, "web", 3, reason="HTTP 401: \x1b[2J\x1b]0;owned\x07 [bold]x[/bold]\x9b31m")
    text = rendered(render_parked_list, await list_parked(store, ["web"], limit=50, state_url="sqlite:///state.db"))
    assert not any(control in text for control in "\x1b\x07\x9b"), text
    assert "HTTP 401: \\x1b[2J\\x1b]0;owned\\x07 [bold]x[/bold]\\x9b31m" in text


async def test_list_stops_at_the_limit_and_says_how_many_are_parked(store: MemoryStateStore) -> None:
    listing = await list_parked(store, ["web", "print"], limit=2, state_url="sqlite:///state.db")
    assert [(p.channel, p.element_id) for p in listing.elements] == [("web", 10), ("web", 20)]
    assert listing.parked == 4 and listing.truncated
    text = rendered(render_parked_list, listing)
    assert "2 shown; 4 parked: 3 for web, 1 for print; more not shown (raise --limit)" in text
    assert json.loads(to_json(listing))["truncated"] is True


async def test_list_of_one_channel(store: MemoryStateStore) -> None:
    listing = await list_parked(store, ["print"], limit=50, state_url="sqlite:///state.db")
    assert [(p.channel, p.element_id) for p in listing.elements] == [("print", 10)]
    assert listing.parked == 1


async def test_requeue_sends_one_notification_per_element_and_unparks_it(store: MemoryStateStore) -> None:
    queue = SendingQueue()
    since = {name: store.parks[(name, 10)].since.isoformat(timespec="microseconds") for name in ("web", "print")}
    result = await requeue_parked(queue, store, ["web", "print"])
    # Element 10 is parked for both channels: one notification serves both, and it is unparked for each.
    assert [json.loads(body)["id"] for body, _, _ in queue.sent] == [10, 20, 30]
    # The first element sent for each channel asks a worker holding it back for refused credentials to try it now.
    # Each carries when it was first parked for each channel: parked again, it keeps that time.
    assert queue.sent[0] == (
        '{"id": 10, "event": "updated"}',
        {
            "event": "updated",
            "source": "parked-requeue",
            "try-channels": "print,web",
            "parked-since": f"print={since['print']},web={since['web']}",
        },
        "10",
    )
    assert [attributes.get("try-channels") for _, attributes, _ in queue.sent] == ["print,web", None, None]
    assert [(e.element_id, e.channels, e.error) for e in result.elements] == [
        (10, ["web", "print"], None),
        (20, ["web"], None),
        (30, ["web"], None),
    ]
    assert set(store.parks) == {("gone", 40)}
    assert result.sent == 3 and result.failed == 0
    assert "3 of 3 notification(s) sent to queue://main" in rendered(render_parked_requeue, result)


async def test_requeue_of_one_channel_leaves_the_others_parked(store: MemoryStateStore) -> None:
    await requeue_parked(SendingQueue(), store, ["print"])
    assert ("print", 10) not in store.parks and ("web", 10) in store.parks


async def test_a_failed_send_leaves_the_element_parked_and_is_reported(store: MemoryStateStore) -> None:
    queue = SendingQueue(refuse=[20])
    result = await requeue_parked(queue, store, ["web"])
    assert ("web", 20) in store.parks and ("web", 10) not in store.parks and ("web", 30) not in store.parks
    failed = [e for e in result.elements if e.error is not None]
    assert [(e.element_id, e.message_id) for e in failed] == [(20, None)]
    assert failed[0].error is not None and "still parked" in failed[0].error and "AccessDenied" in failed[0].error
    assert result.failed == 1 and result.sent == 2
    assert "element 20: not sent, still parked: AccessDenied" in rendered(render_parked_requeue, result)


async def test_when_the_element_asking_for_a_trial_was_not_sent_the_next_batch_asks() -> None:
    store = MemoryStateStore()
    for element_id in range(1, 13):
        park(store, element_id, "web", 1)
    queue = SendingQueue(refuse=[1])
    await requeue_parked(queue, store, ["web"])
    asked = [json.loads(body)["id"] for body, attributes, _ in queue.sent if "try-channels" in attributes]
    assert queue.batches == [10, 2] and asked == [11]


async def test_requeue_by_element_sends_only_those_and_names_one_not_parked(store: MemoryStateStore) -> None:
    queue = SendingQueue()
    result = await requeue_parked(queue, store, ["web", "print"], element_ids=[30, 99, 30])
    assert [json.loads(body)["id"] for body, _, _ in queue.sent] == [30]
    assert [(e.element_id, e.error) for e in result.elements] == [(30, None), (99, NOT_PARKED)]
    assert result.failed == 1
    assert ("web", 20) in store.parks


async def test_an_interrupted_requeue_leaves_the_rest_parked(store: MemoryStateStore) -> None:
    for element_id in range(100, 125):
        park(store, element_id, "web", 1)
    stop = asyncio.Event()

    class StopAfterFirstBatch(SendingQueue):
        async def send(self, messages: Sequence[OutgoingMessage]) -> list[SendOutcome]:
            stop.set()
            return await super().send(messages)

    queue = StopAfterFirstBatch()
    result = await requeue_parked(queue, store, ["web"], stop=stop)
    assert queue.batches == [10]
    interrupted = [e.element_id for e in result.elements if e.error == INTERRUPTED]
    assert len(interrupted) == 18
    assert all(("web", e) in store.parks for e in interrupted)
    assert "interrupted (Ctrl-C): 18 not sent, still parked" in rendered(render_parked_requeue, result)


@pytest.mark.parametrize(
    ("channel", "elements", "everything", "problem"),
    [
        (None, None, False, "say what to requeue: --channel NAME, --element ID (repeat) or --all"),
        (None, [], False, "say what to requeue"),
        ("web", None, True, "--all requeues every parked element of every channel: give it alone"),
        (None, [1], True, "--all requeues every parked element"),
    ],
)
def test_requeue_needs_a_selection(
    channel: str | None, elements: list[int] | None, everything: bool, problem: str
) -> None:
    with pytest.raises(ValueError, match="^" + problem.replace("(", r"\(").replace(")", r"\)")):
        requeue_selection(channel, elements, everything)
    requeue_selection("web", None, False)
    requeue_selection(None, [1], False)
    requeue_selection(None, None, True)


# --- a real SQLite file, opened as the command opens it


def settings_for(tmp_path: Path) -> StatusSettings:
    return StatusSettings(
        queue={
            "url": "https://sqs.eu-central-1.amazonaws.com/123456789012/bridge",
            "endpoint_url": "http://127.0.0.1:9",
        },
        state={"url": f"sqlite:///{tmp_path / 'state.db'}"},
        channels=[
            {"name": "web", "type": "folder", "platforms": [1], "path": str(tmp_path / "web")},
            {"name": "print", "type": "folder", "platforms": [2], "path": str(tmp_path / "print")},
        ],
    )


async def parked_in_sqlite(path: Path, *items: tuple[int, str]) -> None:
    store = SqliteStateStore(path)
    await store.open()
    try:
        for element_id, channel in items:
            await store.park(element_id, channel, "HTTP 401: application password revoked")
    finally:
        await store.close()


def file_state(path: Path) -> bytes:
    # The database itself: a reader of a WAL file may leave an empty -wal and a -shm index beside it, as SQLite's
    # readers do (``status`` too); neither holds data.
    return path.read_bytes()


async def test_list_reads_a_sqlite_file_without_changing_it(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    await parked_in_sqlite(path, (7, "web"), (3, "web"), (5, "print"))
    before = file_state(path)
    listing = await parked_list(settings_for(tmp_path), limit=2)
    assert [(p.channel, p.element_id) for p in listing.elements] == [("web", 3), ("web", 7)]
    assert listing.parked == 3 and listing.elements[0].reason == "HTTP 401: application password revoked"
    only_print = await parked_list(settings_for(tmp_path), channel="print")
    assert [(p.channel, p.element_id) for p in only_print.elements] == [("print", 5)]
    assert file_state(path) == before


async def test_the_summary_names_the_channels_that_hold_parked_elements_with_their_counts(tmp_path: Path) -> None:
    # Two channels configured, elements parked for one: the summary names that one, not every channel looked at.
    await parked_in_sqlite(tmp_path / "state.db", (7, "web"), (3, "web"), (9, "web"))
    listing = await parked_list(settings_for(tmp_path), limit=2)
    assert listing.parked_by_channel == {"web": 3}
    text = rendered(render_parked_list, listing)
    assert "2 shown; 3 parked: 3 for web; more not shown (raise --limit)" in text and "print" not in text
    assert json.loads(to_json(listing))["parked_by_channel"] == {"web": 3}
    await parked_in_sqlite(tmp_path / "state.db", (4, "print"))
    both = rendered(render_parked_list, await parked_list(settings_for(tmp_path)))
    assert "4 shown; 4 parked: 3 for web, 1 for print" in both
    none = rendered(render_parked_list, await parked_list(settings_for(tmp_path), channel="print", limit=1))
    assert "1 shown; 1 parked: 1 for print" in none


async def test_a_listing_with_nothing_parked_says_so_naming_the_channels_looked_at(tmp_path: Path) -> None:
    await parked_in_sqlite(tmp_path / "state.db")
    text = rendered(render_parked_list, await parked_list(settings_for(tmp_path)))
    assert "0 shown; nothing parked (looked at web, print, kordiam-feedback)" in text


async def test_a_channel_neither_configured_nor_holding_parked_elements_is_one_line(tmp_path: Path) -> None:
    await parked_in_sqlite(tmp_path / "state.db", (7, "web"), (8, "old-print"))
    with pytest.raises(
        ConfigError,
        match="--channel: no channel 'fax' is configured, nor has one of that name parked elements "
        "\\(channels: web, print, kordiam-feedback, old-print\\)",
    ):
        await parked_list(settings_for(tmp_path), channel="fax")


async def test_a_channel_renamed_or_removed_with_parked_elements_is_listed_and_requeued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "old-print" was renamed in the configuration while elements were parked for it: no worker calls it, so they
    # are listed after the configured channels, and a requeue by hand puts them back on the queue.
    path = tmp_path / "state.db"
    await parked_in_sqlite(path, (7, "web"), (9, "old-print"), (8, "old-print"))
    store = SqliteStateStore(path)
    await store.open()
    await store.park(5, "gone", "401")
    await store.unpark(5, "gone")  # parked under once, nothing left: not listed
    await store.close()
    settings = settings_for(tmp_path)
    listing = await parked_list(settings)
    assert listing.channels == ["web", "print", "kordiam-feedback", "old-print"] and listing.unconfigured == [
        "old-print"
    ]
    assert [(p.channel, p.element_id) for p in listing.elements] == [("web", 7), ("old-print", 8), ("old-print", 9)]
    text = rendered(render_parked_list, listing)
    assert "old-print is not configured (renamed or removed?)" in text
    assert "kordiam-bridge parked requeue --channel old-print" in text
    only = await parked_list(settings, channel="old-print")
    assert [p.element_id for p in only.elements] == [8, 9] and only.unconfigured == ["old-print"]

    queue = SendingQueue()

    @contextlib.asynccontextmanager
    async def queue_admin(_: object) -> AsyncIterator[SendingQueue]:
        yield queue

    monkeypatch.setattr("bridge.admin.parked.open_queue_admin", queue_admin)
    result = await parked_requeue(settings, channel="old-print")
    assert [(e.element_id, e.channels, e.error) for e in result.elements] == [
        (8, ["old-print"], None),
        (9, ["old-print"], None),
    ]
    assert [json.loads(body)["id"] for body, _, _ in queue.sent] == [8, 9]
    after = await parked_list(settings)
    assert [(p.channel, p.element_id) for p in after.elements] == [("web", 7)] and after.unconfigured == []


async def test_list_of_a_missing_sqlite_file_is_one_line_and_makes_no_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"state\.db does not exist"):
        await parked_list(settings_for(tmp_path))
    assert not (tmp_path / "state.db").exists()


async def test_list_of_an_older_schema_is_one_line_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION - 1,))
        db.execute("CREATE TABLE deliveries (element_id INTEGER)")
        db.execute("CREATE TABLE elements (element_id INTEGER)")
    db.close()
    before = file_state(path)
    for command in (parked_list(settings_for(tmp_path)), parked_requeue(settings_for(tmp_path), channel="web")):
        with pytest.raises(ConfigError, match=f"has schema version {SCHEMA_VERSION - 1}"):
            await command
    assert file_state(path) == before


def test_cli_refuses_a_requeue_without_a_selection_and_lists_a_missing_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(
        f"""
[queue]
url = "https://sqs.eu-central-1.amazonaws.com/123456789012/bridge"
endpoint_url = "http://127.0.0.1:9"

[state]
url = "sqlite:///{tmp_path / "state.db"}"

[[channels]]
name = "web"
type = "folder"
platforms = [1]
path = "{tmp_path / "web"}"
""",
        encoding="utf-8",
    )
    assert main(["parked", "requeue", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err == "kordiam-bridge parked requeue: say what to requeue: --channel NAME, --element ID (repeat) or --all\n"

    assert main(["parked", "list", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "state.db does not exist" in err, err
    assert not (tmp_path / "state.db").exists()

    asyncio.run(parked_in_sqlite(tmp_path / "state.db", (7, "web")))
    assert main(["parked", "list", "--config", str(config), "--channel", "fax"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no channel 'fax' is configured" in err, err

    with pytest.raises(SystemExit) as exited:
        main(["parked", "list", "--limit", "0"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == "kordiam-bridge parked list: argument --limit: 0 is not a count (1..1000000)\n"


def test_listing_and_result_are_json_serialisable() -> None:
    since = datetime(2026, 1, 1, tzinfo=UTC)
    listing = ParkedListing("sqlite:///s.db", ["web"], [ParkedElement(1, "web", since, 3.0, "401")], 2)
    assert json.loads(to_json(listing))["elements"][0]["since"] == "2026-01-01T00:00:00+00:00"
    result = ParkedRequeueResult(MAIN, [RequeuedElement(1, ["web"], "m-1"), RequeuedElement(2, [], None, NOT_PARKED)])
    assert json.loads(to_json(result))["failed"] == 1


async def test_elements_parked_for_kordiams_feedback_are_listed_as_the_workers_own(tmp_path: Path) -> None:
    # Parked while Kordiam's writes failed for every element: a worker requeues them once Kordiam takes one again.
    await parked_in_sqlite(tmp_path / "state.db", (7, KORDIAM_FEEDBACK))
    listing = await parked_list(settings_for(tmp_path))
    assert listing.unconfigured == []
    assert [(p.channel, p.element_id) for p in listing.elements] == [(KORDIAM_FEEDBACK, 7)]
    assert "not configured" not in rendered(render_parked_list, listing)

"""The operator commands over the ``QueueAdmin`` contract, backend-neutral: a listing counts from the queue's depth
where the broker gives one and from what it saw where it does not; dead letters are named by their element."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable, Sequence

import pytest
from rich.console import Console

from bridge import redaction
from bridge.admin.dlq import element_of, find_dead_letter, list_dead_letters, to_dlq_message
from bridge.admin.dlq_delete import delete_dead_letters
from bridge.admin.redrive import redrive_request
from bridge.admin.rendering import render_dlq_delete, render_dlq_list, render_dlq_message
from bridge.admin.results import DlqDeleteResult, DlqListing, to_json
from bridge.queue.dead_letter import DeadLetterContext, failure_attributes
from bridge.queue.transport import (
    DeadLetterDeletion,
    OutgoingMessage,
    PeekedMessage,
    ProgressSink,
    QueueAdmin,
    QueueDepth,
    QueueMessage,
    RedriveRequest,
    RedriveResult,
    SendOutcome,
)

MAIN, DLQ = "queue://main", "queue://dlq"


def dead_letter(message_id: str, body: str, sent_at: float, context: DeadLetterContext | None) -> PeekedMessage:
    original = QueueMessage(f"source-{message_id}", "r", body, {"event": "updated"}, 3, None, None)
    attributes = {"event": "updated", **(failure_attributes(original, context) if context else {})}
    message = QueueMessage(message_id, "r", body, attributes, 1, sent_at, None)
    return PeekedMessage(message, {"SentTimestamp": "1"}, "SQS attributes")


class ListedQueue:
    """A ``QueueAdmin`` whose dead-letter queue holds ``letters``; ``depth`` None: the broker gives no depth."""

    def __init__(
        self,
        letters: list[PeekedMessage],
        depth: QueueDepth,
        *,
        refuse_deletes: Sequence[str] = (),
        interrupted_after: int | None = None,
        main_depth: QueueDepth | None = None,
    ) -> None:
        self.letters = letters
        self._depth = depth
        # The main queue's (its redrive policy): by default as the dead-letter queue's.
        self._main_depth = main_depth
        self.looked_at = 0
        self.refuse_deletes = set(refuse_deletes)
        # Ctrl-C (the command's task cancelled) once this many are deleted.
        self.interrupted_after = interrupted_after
        self.deleted: list[str] = []

    @property
    def url(self) -> str:
        return MAIN

    async def dead_letter_url(self) -> str:
        return DLQ

    async def ensure_usable(self) -> None:
        return None

    async def depth(self, url: str) -> QueueDepth:
        return self._main_depth if url == MAIN and self._main_depth is not None else self._depth

    async def peek(
        self,
        url: str,
        *,
        limit: int,
        until: Callable[[PeekedMessage], bool] | None = None,
        progress: ProgressSink | None = None,
    ) -> tuple[list[PeekedMessage], bool]:
        seen = []
        for letter in self.letters[:limit]:
            seen.append(letter)
            if until is not None and until(letter):
                return seen, True
        return seen, len(self.letters) > limit

    async def delete_dead_letters(
        self,
        *,
        limit: int,
        chosen: Callable[[PeekedMessage], bool],
        until: Callable[[PeekedMessage], bool] | None = None,
        progress: ProgressSink | None = None,
        on_deleted: Callable[[PeekedMessage], None] | None = None,
    ) -> DeadLetterDeletion:
        seen: list[PeekedMessage] = []
        more = len(self.letters) > limit
        for letter in self.letters[:limit]:
            seen.append(letter)
            if until is not None and until(letter):
                more = True
                break
        self.looked_at = len(seen)
        picked = [letter.message.message_id for letter in seen if chosen(letter)]
        failed = {message_id: "refused" for message_id in picked if message_id in self.refuse_deletes}
        deleted: list[str] = []
        for letter in [letter for letter in seen if letter.message.message_id in picked]:
            if letter.message.message_id in failed:
                continue
            if len(deleted) == self.interrupted_after:
                raise asyncio.CancelledError
            deleted.append(letter.message.message_id)
            self.deleted.append(letter.message.message_id)
            self.letters.remove(letter)
            if on_deleted is not None:
                on_deleted(letter)
        return DeadLetterDeletion(seen, more, deleted, failed)

    async def send(self, messages: Sequence[OutgoingMessage]) -> list[SendOutcome]:
        raise AssertionError("not sent by these commands")

    @staticmethod
    def check_redrive(request: RedriveRequest) -> None:
        return None

    async def redrive(self, request: RedriveRequest, *, progress: ProgressSink, stop: asyncio.Event) -> RedriveResult:
        raise AssertionError("not redriven by these commands")


LETTERS = [
    dead_letter("d-2", json.dumps({"id": 12}), 2000.0, None),  # moved by the broker: no context, element from body
    dead_letter("d-1", "not json", 1000.0, DeadLetterContext("decode", "body is not JSON", "PoisonMessage")),
    dead_letter("d-3", json.dumps({"id": 99}), 3000.0, DeadLetterContext("sync", "refused", "X", element_id=13)),
]


async def test_a_listing_with_a_depth_counts_from_it() -> None:
    queue: QueueAdmin = ListedQueue(LETTERS, QueueDepth(visible=5, in_flight=1, delayed=0))
    listing = await list_dead_letters(queue, limit=3)
    assert [m.message_id for m in listing.messages] == ["d-1", "d-2", "d-3"]  # oldest first
    assert [m.element_id for m in listing.messages] == [None, 12, 13]  # the context's element wins over the body's
    assert (listing.approximate_visible, listing.approximate_in_flight, listing.truncated) == (5, 1, True)
    assert listing.messages[1].failure is None and listing.messages[2].failure is not None
    assert listing.messages[2].system_attributes == {"SentTimestamp": "1"}


@pytest.mark.parametrize("visible", [3, 5])
async def test_a_listing_short_of_its_limit_gives_no_hint_to_raise_it(visible: int) -> None:
    # SQS's depth is approximate and lags (dead letters just redriven still count): 3 seen of a limit of 50 is the
    # whole queue, whatever it says. Before, "about 5 visible" put "more not shown (raise --limit)" under them.
    listing = await list_dead_letters(ListedQueue(LETTERS, QueueDepth(visible, in_flight=0, delayed=0)), limit=50)
    assert (len(listing.messages), listing.approximate_visible, listing.truncated) == (3, visible, False)
    assert _summary(listing) == f"3 shown; about {visible} visible"


async def test_a_listing_the_limit_stopped_says_to_raise_it() -> None:
    listing = await list_dead_letters(ListedQueue(LETTERS, QueueDepth(visible=3, in_flight=0, delayed=0)), limit=2)
    assert _summary(listing) == "2 shown; about 3 visible; more not shown (raise --limit)"
    # At the limit, but the depth says that was all of it.
    everything = await list_dead_letters(ListedQueue(LETTERS, QueueDepth(visible=3, in_flight=0, delayed=0)), limit=3)
    assert _summary(everything) == "3 shown; about 3 visible"


def _summary(listing: DlqListing) -> str:
    """The line ``dlq list`` prints under its table."""
    out = io.StringIO()
    render_dlq_list(listing, Console(file=out, width=200))
    return out.getvalue().splitlines()[-1]


async def test_a_listing_without_a_depth_counts_what_it_saw() -> None:
    unknown = QueueDepth(visible=None, in_flight=None, delayed=None, note="no depth here")
    everything = await list_dead_letters(ListedQueue(LETTERS, unknown), limit=10)
    assert (everything.approximate_visible, everything.approximate_in_flight, everything.truncated) == (3, 0, False)
    first_two = await list_dead_letters(ListedQueue(LETTERS, unknown), limit=2)
    assert (len(first_two.messages), first_two.approximate_visible, first_two.truncated) == (2, 3, True)
    with pytest.raises(ValueError, match="at least 1"):
        await list_dead_letters(ListedQueue(LETTERS, unknown), limit=0)


async def test_a_dead_letter_is_found_by_its_id_or_its_source_message_id() -> None:
    queue = ListedQueue(LETTERS, QueueDepth(visible=3, in_flight=0, delayed=0))
    assert (await find_dead_letter(queue, "d-3", scan_limit=10)) is not None
    found = await find_dead_letter(queue, "source-d-1", scan_limit=10)
    assert found is not None and found.message_id == "d-1"
    assert await find_dead_letter(queue, "nowhere", scan_limit=10) is None


def test_the_redrive_filter_names_elements_as_the_listing_does() -> None:
    assert redrive_request(limit=None, element_ids=None, native=None).wanted is None
    assert redrive_request(limit=None, element_ids=[], native=None).wanted is None  # no --element: everything
    request = redrive_request(limit=2, element_ids=[12, 13], native=False)
    assert request.wanted is not None and (request.limit, request.native) == (2, False)
    assert [request.wanted(p.message) for p in LETTERS] == [True, False, True]
    assert [element_of(p.message) for p in LETTERS] == [12, None, 13]


def test_a_poison_dead_letter_without_an_element_in_its_context_is_named_by_its_readable_id() -> None:
    # Dead-lettered before the context carried the element: the body's id still names it for `element --dlq`.
    poison = DeadLetterContext("decode", "unknown event 'exploded'", "PoisonMessage")
    letter = dead_letter("d-9", json.dumps({"elementId": 1003, "event": "exploded"}), 1.0, poison)
    assert element_of(letter.message) == 1003


def test_an_older_dead_letters_reason_is_shown_without_the_configured_secrets_in_its_attributes_too() -> None:
    # `dlq show` prints every attribute (and --json carries them): failure.reason among them, as a dead letter
    # written before its reason was redacted holds it.
    redaction.SECRETS.remember_secrets("s3cret-value")
    original = QueueMessage("m-1", "r", '{"id": 7}', {"failure.reason": "refused s3cret-value"}, 3, 1.0, None)
    message = to_dlq_message(PeekedMessage(original, {"SentTimestamp": "1"}, "SQS attributes"))
    console = Console(record=True, width=200)
    render_dlq_message(message, console)
    assert "refused ***" in console.export_text() and "s3cret-value" not in console.export_text()
    assert "s3cret-value" not in to_json(message)


# --------------------------------------------------------------------------------------------------- dlq delete


async def test_delete_without_yes_names_what_it_would_delete_and_deletes_nothing() -> None:
    queue = ListedQueue(list(LETTERS), QueueDepth(visible=3, in_flight=0, delayed=0))
    result = await delete_dead_letters(queue, ["d-1", "source-d-3"], delete=False, scan_limit=10)
    assert queue.deleted == [] and len(queue.letters) == 3 and result.dry_run
    assert [(d.requested_id, d.message and d.message.message_id, d.deleted, d.error) for d in result.deletions] == [
        ("d-1", "d-1", False, None),
        ("source-d-3", "d-3", False, None),  # the original message's id, as `dlq show` takes it
    ]
    assert _delete_lines(result) == [
        "would delete d-1: element -, stage decode, reason body is not JSON",
        "would delete d-3 (named source-d-3): element 13, stage sync, reason refused",
        "nothing deleted: give --yes to delete these 2",
    ]


async def test_delete_with_yes_deletes_exactly_the_named_dead_letters_and_logs_each(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bridge.ops.logging import configure_logging

    configure_logging("info")
    queue = ListedQueue(list(LETTERS), QueueDepth(visible=3, in_flight=0, delayed=0))
    result = await delete_dead_letters(queue, ["d-2", "source-d-1"], delete=True, scan_limit=10)
    assert queue.deleted == ["d-2", "d-1"] and [p.message.message_id for p in queue.letters] == ["d-3"]
    assert [(d.requested_id, d.deleted, d.error) for d in result.deletions] == [
        ("d-2", True, None),
        ("source-d-1", True, None),
    ]
    assert _delete_lines(result) == [
        "deleted d-2: element 12, stage (moved by SQS), reason -",
        "deleted d-1 (named source-d-1): element -, stage decode, reason body is not JSON",
    ]
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    deleted = [line for line in logged if line["event"] == "dead_letter_deleted"]
    assert [(line["message_id"], line["element_id"], line["reason"]) for line in deleted] == [
        ("d-2", 12, None),
        ("d-1", None, "body is not JSON"),
    ]
    assert deleted[1]["stage"] == "decode" and deleted[1]["queue"] == DLQ


async def test_a_delete_interrupted_midway_still_logs_each_dead_letter_it_deleted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bridge.ops.logging import configure_logging

    configure_logging("info")
    queue = ListedQueue(list(LETTERS), QueueDepth(visible=3, in_flight=0, delayed=0), interrupted_after=1)
    with pytest.raises(asyncio.CancelledError):  # Ctrl-C while the second is being deleted
        await delete_dead_letters(queue, ["d-2", "d-3"], delete=True, scan_limit=10)
    assert queue.deleted == ["d-2"]
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert [line["message_id"] for line in logged if line["event"] == "dead_letter_deleted"] == ["d-2"]


async def test_an_id_not_found_is_an_error_naming_it_and_the_others_are_still_deleted() -> None:
    queue = ListedQueue(list(LETTERS), QueueDepth(visible=3, in_flight=0, delayed=0))
    result = await delete_dead_letters(queue, ["nowhere", "d-3"], delete=True, scan_limit=10)
    assert queue.deleted == ["d-3"] and result.failed == 1
    assert [(d.requested_id, d.deleted, d.error) for d in result.deletions] == [
        ("nowhere", False, "no dead letter nowhere found"),
        ("d-3", True, None),
    ]


async def test_an_id_beyond_the_scan_limit_is_not_called_gone() -> None:
    # As `dlq show`: "not found" after looking at 2 of 3 would tell the operator it is gone when it may be there.
    queue = ListedQueue(list(LETTERS), QueueDepth(visible=3, in_flight=0, delayed=0))
    result = await delete_dead_letters(queue, ["d-2", "d-3"], delete=True, scan_limit=2)
    assert queue.deleted == ["d-2"]
    (error,) = [d.error for d in result.deletions if d.error is not None]
    assert "d-3 is not among the first 2 looked at" in error and "--scan-limit (now 2)" in error


async def test_a_delete_the_queue_refused_is_reported_and_the_dead_letter_stays() -> None:
    queue = ListedQueue(list(LETTERS), QueueDepth(visible=3, in_flight=0, delayed=0), refuse_deletes=["d-1"])
    result = await delete_dead_letters(queue, ["d-1", "d-2"], delete=True, scan_limit=10)
    assert queue.deleted == ["d-2"] and "d-1" in [p.message.message_id for p in queue.letters]
    assert [(d.requested_id, d.deleted, d.error) for d in result.deletions] == [
        ("d-1", False, "dead letter d-1 not deleted: refused"),
        ("d-2", True, None),
    ]


async def test_an_id_that_is_a_dead_letters_own_deletes_that_one_not_another_from_the_same_message() -> None:
    # The bridge dead-lettered the message (d-5, naming it as its source) but could not delete it from the main
    # queue; SQS later moved the message itself, under its own id. `dlq list` shows both; the operator names the
    # second by the id it shows.
    failed = dead_letter("d-5", "{}", 1000.0, DeadLetterContext("sync", "refused", "X", element_id=15))
    moved = dead_letter("source-d-5", "{}", 2000.0, None)
    queue = ListedQueue([failed, moved], QueueDepth(visible=2, in_flight=0, delayed=0), main_depth=MOVES_ITSELF)
    result = await delete_dead_letters(queue, ["source-d-5"], delete=True, scan_limit=10)
    assert queue.deleted == ["source-d-5"] and [p.message.message_id for p in queue.letters] == ["d-5"]
    assert [(d.requested_id, d.message and d.message.message_id) for d in result.deletions] == [
        ("source-d-5", "source-d-5")
    ]


# A main queue with a redrive policy of its own: SQS may move a failed message to the dead-letter queue itself.
MOVES_ITSELF = QueueDepth(visible=0, in_flight=0, delayed=0, redrive_policy='{"maxReceiveCount": "5"}')


async def test_an_id_of_an_original_message_stops_the_look_where_no_queue_moves_messages_itself() -> None:
    # Found by its original's id (the message_id of its `dead_lettered` line): the look went on through every dead
    # letter (5,000: 500 receives, each dead letter held and counted a receive) in case the original was there
    # under its own id. Without a redrive policy on the main queue nothing puts it there: the first match is it.
    letters = [
        dead_letter(f"d-{n}", json.dumps({"id": n}), 1000.0 + n, DeadLetterContext("decode", "bad", "X", element_id=n))
        for n in range(5000)
    ]
    queue = ListedQueue(letters, QueueDepth(visible=5000, in_flight=0, delayed=0))
    result = await delete_dead_letters(queue, ["source-d-5"], delete=True, scan_limit=10_000)
    assert queue.deleted == ["d-5"] and [d.deleted for d in result.deletions] == [True]
    assert queue.looked_at == 6

    # With a redrive policy the look still goes on: the original may follow under its own id.
    queue = ListedQueue(letters, QueueDepth(visible=4999, in_flight=0, delayed=0), main_depth=MOVES_ITSELF)
    await delete_dead_letters(queue, ["source-d-6"], delete=True, scan_limit=10_000)
    assert queue.deleted == ["d-6"] and queue.looked_at == 4999


async def test_an_id_given_twice_deletes_its_dead_letter_once() -> None:
    queue = ListedQueue(list(LETTERS), QueueDepth(visible=3, in_flight=0, delayed=0))
    result = await delete_dead_letters(queue, ["d-1", "d-1", "source-d-1"], delete=True, scan_limit=10)
    assert queue.deleted == ["d-1"]
    assert [(d.requested_id, d.deleted) for d in result.deletions] == [("d-1", True), ("source-d-1", True)]


def _delete_lines(result: DlqDeleteResult) -> list[str]:
    """What ``dlq delete`` prints on stdout."""
    out = io.StringIO()
    render_dlq_delete(result, Console(file=out, width=300))
    return out.getvalue().splitlines()

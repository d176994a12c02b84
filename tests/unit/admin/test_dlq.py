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
from bridge.admin.redrive import redrive_request
from bridge.admin.rendering import render_dlq_list, render_dlq_message
from bridge.admin.results import DlqListing, to_json
from bridge.queue.dead_letter import DeadLetterContext, failure_attributes
from bridge.queue.transport import (
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

    def __init__(self, letters: list[PeekedMessage], depth: QueueDepth) -> None:
        self.letters = letters
        self._depth = depth

    @property
    def url(self) -> str:
        return MAIN

    async def dead_letter_url(self) -> str:
        return DLQ

    async def depth(self, url: str) -> QueueDepth:
        return self._depth

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

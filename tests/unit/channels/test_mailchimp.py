"""The Mailchimp mapping: quarter-hour rounding, schedule rules, subject/preview/content, options, error text."""

from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import ValidationError
from structlog.testing import capture_logs
from yarl import URL

from bridge.channels.mailchimp import (
    DEFAULT_FOOTER,
    MailchimpChannel,
    MailchimpOptions,
    mailchimp_time,
    map_campaign,
    plan_schedule,
    problem_summary,
    quarter_hour_ceil,
    shorten,
)
from bridge.channels.text import plain_text
from bridge.errors import ChannelRejected, ChannelUnavailable
from bridge.http import HttpRequest, HttpResponse
from bridge.kordiam.models import Element
from bridge.pipeline.handler import MessageHandler
from bridge.queue.outcome import Done, Retry
from bridge.queue.transport import QueueMessage
from tests.servers.mailchimp import Fault, create_app, default_state
from tests.support import http_answering, story
from tests.unit.fakes import FakeKordiam, MemoryStateStore, sync_engine

FIXTURES = Path(__file__).parents[2] / "fixtures"
UTC = dt.UTC
NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def at(hour: int, minute: int, second: int = 0, micro: int = 0, day: int = 23) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, second, micro, tzinfo=UTC)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (at(19, 30), at(19, 30)),
        (at(19, 0), at(19, 0)),
        (at(19, 30, 0, 1), at(19, 45)),
        (at(19, 30, 1), at(19, 45)),
        (at(19, 31), at(19, 45)),
        (at(19, 44, 59), at(19, 45)),
        (at(19, 46), at(20, 0)),
        (at(23, 59), at(0, 0, day=24)),
        (dt.datetime(2026, 12, 31, 23, 50, tzinfo=UTC), dt.datetime(2027, 1, 1, tzinfo=UTC)),
        # Another zone is converted first: 20:31 at +01:00 is 19:31 UTC.
        (dt.datetime(2026, 11, 23, 20, 31, tzinfo=dt.timezone(dt.timedelta(hours=1))), at(19, 45)),
        # A zone with a 30-minute offset: 01:10 at +05:30 is 19:40 UTC the day before.
        (dt.datetime(2026, 11, 24, 1, 10, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))), at(19, 45)),
    ],
)
def test_quarter_hour_rounds_up(moment: dt.datetime, expected: dt.datetime) -> None:
    rounded = quarter_hour_ceil(moment)
    assert rounded == expected and rounded.tzinfo == UTC
    assert rounded.minute % 15 == 0 and rounded.second == 0 and rounded.microsecond == 0


def test_naive_times_are_utc() -> None:
    assert quarter_hour_ceil(dt.datetime(2026, 11, 23, 19, 31)) == at(19, 45)


@pytest.mark.parametrize(
    ("planned", "expected"),
    [
        (None, None),
        (NOW - dt.timedelta(days=1), None),  # in the past: an unscheduled draft
        (NOW, None),  # now is not the future
        (NOW + dt.timedelta(seconds=20), at(12, 15, day=22)),  # 12:00:20 rounds up to 12:15
        (NOW + dt.timedelta(minutes=1), at(12, 15, day=22)),
        (at(19, 30), at(19, 30)),
        (at(19, 37), at(19, 45)),
        (NOW + dt.timedelta(days=366), None),  # beyond Mailchimp's year
        # The last quarter hour of year 9999 has no next one to round up to: a draft, not an OverflowError.
        (dt.datetime(9999, 12, 31, 23, 50, tzinfo=UTC), None),
    ],
)
def test_plan_schedule(planned: dt.datetime | None, expected: dt.datetime | None) -> None:
    assert plan_schedule(planned, NOW) == expected


def test_too_close_after_rounding_is_left_unscheduled() -> None:
    now = dt.datetime(2026, 11, 22, 12, 14, 30, tzinfo=UTC)
    assert plan_schedule(now + dt.timedelta(seconds=10), now) is None  # 12:15 is 30 s away
    assert plan_schedule(now + dt.timedelta(seconds=40), now) == at(12, 30, day=22)


def test_schedule_time_is_iso_utc() -> None:
    assert mailchimp_time(at(19, 45)) == "2026-11-23T19:45:00+00:00"
    local = dt.datetime(2026, 11, 23, 20, 45, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert mailchimp_time(local) == "2026-11-23T19:45:00+00:00"


# --- mapping ---------------------------------------------------------------------------------------------------


def element(*args: str, **changes: Any) -> Element:
    data = story(*args, platforms=(99005,))
    data.update(id=4711, version=3, modificationDate="2026-11-20T10:00:00Z")
    data["tasks"][0]["id"] = 31
    data["publications"][0]["id"] = 813
    for key, value in changes.items():
        if key in ("headline", "lead", "text"):
            data["tasks"][0]["content"][key] = value
        else:
            data[key] = value
    return Element.model_validate(data)


def test_subject_preview_title_from_the_story() -> None:
    value = element()
    plan = map_campaign(value, value.publications[0], footer_html=DEFAULT_FOOTER, now=NOW)
    assert plan.settings == {
        "subject_line": "Council approves budget",
        "preview_text": "The lead.",
        "title": "Council approves budget [Kordiam 4711/813]",
    }
    assert plan.send_at == at(19, 30)
    assert "<h1>Council approves budget</h1>" in plan.html
    assert "<p><b>Body</b>" not in plan.html and "<p>Body <b>text</b>.</p>" in plan.html
    assert "Anna Berg" in plan.html and "<strong>The lead.</strong>" in plan.html
    assert plan.html.rstrip().endswith("</body></html>") and "*|UNSUB|*" in plan.html


def test_subject_is_plain_text_and_escaped_in_html() -> None:
    value = element(headline="Tom & Jerry <i>live</i> 😀", lead="<b>Lead</b> &amp; more\n\n")
    plan = map_campaign(value, value.publications[0], footer_html="", now=NOW)
    assert plan.settings["subject_line"] == "Tom & Jerry live 😀"
    assert plan.settings["preview_text"] == "Lead & more"
    assert "<h1>Tom &amp; Jerry live 😀</h1>" in plan.html
    assert "<title>Tom &amp; Jerry live 😀</title>" in plan.html


def test_subject_falls_back_to_title_then_slug() -> None:
    value = element("The element title", headline=None)
    assert map_campaign(value, value.publications[0], footer_html="", now=NOW).settings["subject_line"] == (
        "The element title"
    )
    value = element(headline=None, title=None, slug="the-slug")
    assert map_campaign(value, value.publications[0], footer_html="", now=NOW).settings["subject_line"] == "the-slug"


def test_long_subject_and_preview_are_cut() -> None:
    value = element(headline="word " * 60, lead="lead " * 60)
    plan = map_campaign(value, value.publications[0], footer_html="", now=NOW)
    assert len(plan.settings["subject_line"]) <= 150 and plan.settings["subject_line"].endswith("…")
    assert len(plan.settings["preview_text"]) <= 150 and plan.settings["preview_text"].endswith("…")
    assert len(plan.settings["title"]) <= 100 and plan.settings["title"].endswith("[Kordiam 4711/813]")


def test_hostile_body_is_sanitised() -> None:
    text = (
        '<script>alert(1)</script><p onclick="x()">a</p><img src=x onerror=alert(1)>'
        '<a href="javascript:alert(1)">j</a><iframe src="https://evil"></iframe><style>p{}</style>'
        '<form action="https://evil"><input name="q"></form>\ud800 <p>😀 Grüße</p>'
    )
    value = element(text=text)
    plan = map_campaign(value, value.publications[0], footer_html="", now=NOW)
    for forbidden in ("alert", "onclick", "onerror", "javascript", "<iframe", "<style", "<form", "<input"):
        assert forbidden not in plan.html
    assert "<p>😀 Grüße</p>" in plan.html and '<img src="x">' in plan.html


def test_merge_tag_syntax_in_the_story_reaches_the_reader_literally() -> None:
    # Mailchimp expands *|TAG|* (and *%7CTAG%7C* in links) wherever it appears in the source it is sent; only the
    # operator's footer may use them. Before: the story's tags were sent as written and expanded at send time.
    value = element(
        headline="How *|FNAME|* works",
        lead="Write *|IF:VIP|*hi*|END:IF|*",
        text='<p>Use *|UNSUB|* <a href="*|UNSUB|*">u</a> <a href="https://x.example/?e=*%7CEMAIL%7C*">e</a></p>',
    )
    plan = map_campaign(value, value.publications[0], footer_html=DEFAULT_FOOTER, now=NOW)
    story_html, footer = plan.html.split(DEFAULT_FOOTER)
    for opener in ("*|", "*%7C", "*%7c"):
        assert opener not in story_html
    assert footer == "\n</body></html>\n" and "*|UNSUB|*" in DEFAULT_FOOTER
    # What a mail client shows (character references decoded) is the story as written.
    shown = html.unescape(story_html)
    assert "<h1>How *|FNAME|* works</h1>" in shown and "<title>How *|FNAME|* works</title>" in shown
    assert "Write *|IF:VIP|*hi*|END:IF|*" in shown and "<p>Use *|UNSUB|* " in shown
    assert '<a href="*|UNSUB|*">' in shown and '<a href="https://x.example/?e=*%7CEMAIL%7C*">' in shown
    # Subject and preview are plain text: an invisible zero-width non-joiner parts each opener.
    subject, preview = plan.settings["subject_line"], plan.settings["preview_text"]
    assert "*|" not in subject + preview
    assert subject == "How *\u200c|FNAME|* works" and preview == "Write *\u200c|IF:VIP|*hi*\u200c|END:IF|*"
    assert plan.settings["title"] == "How *|FNAME|* works [Kordiam 4711/813]", "the title is never sent"


def test_an_opener_at_the_subjects_limit_is_parted_before_it_is_cut() -> None:
    value = element(headline="x" * 147 + "*|FNAME|*")
    subject = map_campaign(value, value.publications[0], footer_html="", now=NOW).settings["subject_line"]
    assert len(subject) <= 150 and "*|" not in subject


def test_no_date_or_time_means_no_schedule() -> None:
    data = story(platforms=(99005,))
    data.update(id=1)
    data["tasks"][0]["id"] = 2
    data["publications"][0].update(id=3, schedule={"kind": "single", "date": "2026-11-23"})
    value = Element.model_validate(data)
    assert map_campaign(value, value.publications[0], footer_html="", now=NOW).send_at is None


@pytest.mark.parametrize("name", ["seed001_full.json", "seed002_full.json"])
def test_seed_examples_map(name: str) -> None:
    value = Element.model_validate(json.loads((FIXTURES / name).read_text()))
    for publication in value.publications:
        plan = map_campaign(value, publication, footer_html=DEFAULT_FOOTER, now=NOW)
        assert plan.settings["subject_line"]
        assert plan.send_at is None, "the seeds' dates are long past"


def test_plain_text_and_shorten() -> None:
    assert plain_text("  a <b>b</b>\n&lt;c&gt; ") == "a b <c>"
    assert plain_text(None) == ""
    assert shorten("abc", 3) == "abc" and shorten("abcd", 3) == "ab…"


# --- options ---------------------------------------------------------------------------------------------------


def test_data_centre_comes_from_the_key() -> None:
    options = MailchimpOptions(api_key="0123456789abcdef0123456789abcdef-us21", list_id="abc123")
    assert options.data_centre == "us21"
    assert options.api_url == "https://us21.api.mailchimp.com/3.0"
    assert "0123456789abcdef" not in repr(options) and "0123456789abcdef" not in str(options.model_dump())


def test_base_url_overrides() -> None:
    options = MailchimpOptions(api_key="0123456789abcdef-us3", list_id="abc", base_url="http://127.0.0.1:9/3.0/")
    assert options.api_url == "http://127.0.0.1:9/3.0" and options.data_centre == "us3"
    assert MailchimpOptions(api_key="plainkey", list_id="abc", base_url="http://x/3.0").data_centre is None


@pytest.mark.parametrize(
    "options",
    [
        {"api_key": "no-data-centre", "list_id": "abc"},
        {"api_key": "", "list_id": "abc"},
        {"api_key": "key with space-us1", "list_id": "abc"},
        {"api_key": "0123456789abcdef-us1", "list_id": ""},
        {"api_key": "0123456789abcdef-us1", "list_id": "a/b"},
        {"api_key": "0123456789abcdef-us1", "list_id": "abc", "reply_to": "not-an-address"},
        {"api_key": "0123456789abcdef-us1", "list_id": "abc", "base_url": "ftp://x"},
        {"api_key": "0123456789abcdef-us1", "list_id": "abc", "delete_mode": "trash"},
        {"api_key": "0123456789abcdef-us1", "list_id": "abc", "sent_edits": "retry"},
        {"api_key": "0123456789abcdef-us1", "list_id": "abc", "unknown": True},
    ],
)
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        MailchimpOptions.model_validate(options)


def test_key_error_never_echoes_the_key() -> None:
    with pytest.raises(ValidationError) as caught:
        MailchimpOptions.model_validate({"api_key": "supersecretvalue", "list_id": "abc"})
    assert "supersecretvalue" not in str(caught.value)
    assert caught.value.errors()[0]["loc"] == ("api_key",)


# --- error text ------------------------------------------------------------------------------------------------


async def test_an_unexpected_answer_echoing_the_key_is_quoted_without_it() -> None:
    # A proxy answering 200 with the request it saw: the quote of "an unexpected answer" is as public as any error.
    key = "0123456789abcdef0123456789abcdef-us21"
    options = MailchimpOptions.model_validate({"api_key": key, "list_id": "list1"})
    echo = http_answering(lambda request: httpx.Response(200, json=[f"key {key}"]))
    story_element = element()
    with pytest.raises(ChannelRejected) as rejected:
        await MailchimpChannel("newsletter", options, echo).upsert(story_element, story_element.publications[0], None)
    assert "unexpected answer" in str(rejected.value) and key[:20] not in str(rejected.value)


def mailchimp_answer(status: int, body: bytes) -> HttpResponse:
    request = HttpRequest("POST", URL("https://us1.api.mailchimp.com/3.0/campaigns"), CIMultiDict(), None, 5.0)
    return HttpResponse(status, CIMultiDictProxy(CIMultiDict()), body, request)


def test_problem_summary_keeps_detail_and_field_errors() -> None:
    body = {
        "type": "https://mailchimp.com/developer/marketing/docs/errors/",
        "title": "Invalid Resource",
        "status": 400,
        "detail": "The resource submitted could not be validated.",
        "instance": "8cf2c011",
        "errors": [{"field": "settings.reply_to", "message": "This value should be a valid email."}],
    }
    response = mailchimp_answer(400, json.dumps(body).encode())
    assert problem_summary(response) == (
        "Invalid Resource; The resource submitted could not be validated.; "
        "settings.reply_to: This value should be a valid email.; instance 8cf2c011"
    )
    assert problem_summary(mailchimp_answer(502, b"<html>bad gateway</html>")) == "Bad Gateway"


# --- a story deleted in Kordiam before the retry of a lost step (the engine over the test server, in process) -----


class InProcessMailchimp:
    """``tests/servers/mailchimp.py`` answered in process; ``lose`` names path endings whose next answer is lost
    after the server acted on the request (a timeout after Mailchimp did it)."""

    def __init__(self) -> None:
        self.state = default_state()
        self.lose: set[str] = set()
        self._app = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(self.state)))

    async def answer(self, request: httpx.Request) -> httpx.Response:
        response = await self._app.send(request)
        lost = next((end for end in self.lose if request.url.path.endswith(end)), None)
        if lost is not None:
            self.lose.discard(lost)
            raise httpx.ReadTimeout("no answer within 10 s", request=request)
        return response

    def channel(self, **options: Any) -> MailchimpChannel:
        values = {"api_key": "test-key-us21", "list_id": "list1", "base_url": "http://mailchimp.test/3.0", **options}
        return MailchimpChannel("newsletter", MailchimpOptions.model_validate(values), http_answering(self.answer))

    def listings(self) -> int:
        return sum(1 for r in self.state.requests if (r["method"], r["path"]) == ("GET", "/3.0/campaigns"))


NEWSLETTER = 99005


def newsletter_story(element_id: int = 4711) -> dict[str, Any]:
    """A story with one newsletter publication planned two days ahead."""
    when = dt.datetime.now(UTC) + dt.timedelta(days=2)
    body = story("Council approves budget", platforms=(NEWSLETTER,))
    body["id"] = element_id
    body["tasks"][0]["id"] = 31
    body["publications"][0]["id"] = 813
    body["publications"][0]["schedule"] = {
        "kind": "single",
        "date": when.date().isoformat(),
        "timing": {"type": "time", "time": "19:30"},
    }
    return body


def queue_message(element_id: int = 4711, receive_count: int = 1) -> QueueMessage:
    body = json.dumps({"id": element_id})
    return QueueMessage(
        message_id="m1",
        receipt_handle="r1",
        body=body,
        attributes={},
        receive_count=receive_count,
        sent_at=None,
        group_id=None,
    )


async def scheduled_but_answer_lost(
    mailchimp: InProcessMailchimp, **options: Any
) -> tuple[MessageHandler, FakeKordiam, MemoryStateStore]:
    """The story's first sync: Mailchimp scheduled the campaign, but the answer was lost, so the message is to be
    retried and the state store holds no delivery for it."""
    kordiam, state = FakeKordiam(), MemoryStateStore()
    kordiam.elements[4711] = newsletter_story()
    channel = mailchimp.channel(from_name="The Daily", reply_to="desk@example.org", **options)
    handler = MessageHandler(sync_engine(kordiam, state, [(channel, NEWSLETTER)]), tracing=False)
    mailchimp.lose.add("/actions/schedule")
    assert isinstance(await handler(queue_message()), Retry)
    assert [c["status"] for c in mailchimp.state.campaigns.values()] == ["schedule"]
    assert state.rows == {}
    return handler, kordiam, state


async def test_a_deleted_storys_campaign_whose_schedule_answer_was_lost_is_deleted() -> None:
    mailchimp = InProcessMailchimp()
    handler, kordiam, state = await scheduled_but_answer_lost(mailchimp)
    (campaign,) = mailchimp.state.campaigns
    del kordiam.elements[4711]  # deleted in Kordiam before the queue's retry
    listed = mailchimp.listings()
    with capture_logs() as logs:
        outcome = await handler(queue_message(receive_count=2))
    assert isinstance(outcome, Done)
    assert mailchimp.state.campaigns == {}, "a newsletter about a deleted story would go out"
    assert mailchimp.listings() - listed == 1, "one search for the deleted element"
    (done,) = [entry for entry in logs if entry["event"] == "done"]
    assert done["channels"] == {"newsletter/813": "deleted"}
    (retracted,) = [entry for entry in logs if entry["event"] == "unrecorded_item_retracted"]
    assert (retracted["channel"], retracted["publication_id"], retracted["external_id"]) == (
        "newsletter",
        813,
        campaign,
    )
    assert state.marks[4711].deleted


async def test_a_deleted_storys_lost_campaign_already_sent_is_kept_with_a_warning() -> None:
    mailchimp = InProcessMailchimp()
    handler, kordiam, _ = await scheduled_but_answer_lost(mailchimp)
    (campaign,) = mailchimp.state.campaigns.values()
    campaign["status"], campaign["send_time"] = "sent", "2026-11-23T19:30:00+00:00"  # Mailchimp sent it meanwhile
    del kordiam.elements[4711]
    with capture_logs() as logs:
        outcome = await handler(queue_message(receive_count=2))
    assert isinstance(outcome, Done)
    assert mailchimp.state.campaigns[campaign["id"]]["status"] == "sent"
    kept = [entry for entry in logs if entry["event"] == "mailchimp.sent_campaign_kept"]
    assert len(kept) == 1 and kept[0]["log_level"] == "warning" and kept[0]["campaign"] == campaign["id"]
    assert not any(request["method"] == "DELETE" for request in mailchimp.state.requests)


async def test_a_failed_search_for_a_deleted_storys_campaign_is_retried() -> None:
    mailchimp = InProcessMailchimp()
    handler, kordiam, state = await scheduled_but_answer_lost(mailchimp)
    del kordiam.elements[4711]
    mailchimp.state.faults.append(Fault(status=503, count=1))
    outcome = await handler(queue_message(receive_count=2))
    assert isinstance(outcome, Retry) and outcome.stage == "newsletter"
    assert "HTTP 503" in outcome.reason and outcome.error_class == "ChannelUnavailable"
    assert 4711 not in state.marks, "a failed retraction marks nothing"
    assert isinstance(await handler(queue_message(receive_count=3)), Done)
    assert mailchimp.state.campaigns == {}


async def test_delete_mode_unschedule_only_unschedules_a_deleted_storys_lost_campaign() -> None:
    mailchimp = InProcessMailchimp()
    handler, kordiam, _ = await scheduled_but_answer_lost(mailchimp, delete_mode="unschedule")
    del kordiam.elements[4711]
    assert isinstance(await handler(queue_message(receive_count=2)), Done)
    assert [c["status"] for c in mailchimp.state.campaigns.values()] == ["save"]
    # The draft is what this mode leaves: a later look at the deleted element finds nothing more to retract.
    with capture_logs() as logs:
        assert isinstance(await handler(queue_message(receive_count=1)), Done)
    assert not [entry for entry in logs if entry["event"] == "unrecorded_item_retracted"]


async def test_an_update_never_searches_and_a_recorded_campaign_is_deleted_once() -> None:
    mailchimp = InProcessMailchimp()
    kordiam, state = FakeKordiam(), MemoryStateStore()
    kordiam.elements[4711] = newsletter_story()
    channel = mailchimp.channel(from_name="The Daily", reply_to="desk@example.org")
    handler = MessageHandler(sync_engine(kordiam, state, [(channel, NEWSLETTER)]), tracing=False)
    assert isinstance(await handler(queue_message()), Done)
    kordiam.elements[4711]["title"] = "Budget: the vote"
    listed = mailchimp.listings()
    assert isinstance(await handler(queue_message()), Done)
    assert mailchimp.listings() == listed, "an update with a recorded campaign searches nothing"
    del kordiam.elements[4711]
    with capture_logs() as logs:
        assert isinstance(await handler(queue_message()), Done)
    assert mailchimp.state.campaigns == {}
    assert not [entry for entry in logs if entry["event"] == "unrecorded_item_retracted"]


# --- "gone" is Mailchimp's word, not a proxy's ------------------------------------------------------------------


@pytest.mark.parametrize(
    "proxy_404",
    [
        httpx.Response(404, text="<html><body><h1>404 Not Found</h1>nginx</body></html>"),
        httpx.Response(404),
        httpx.Response(404, json={"message": "no Route matched with those values"}),
    ],
    ids=["html-page", "empty", "no-route"],
)
async def test_a_404_that_is_not_mailchimps_does_not_count_as_a_deleted_campaign(proxy_404: httpx.Response) -> None:
    """A proxy in front of Mailchimp (``base_url``) answering 404 has not seen the request: taking it for "gone"
    would record the delete as done while the scheduled newsletter about a deleted story still goes out."""
    mailchimp = InProcessMailchimp()
    channel = mailchimp.channel(from_name="The Daily", reply_to="desk@example.org")
    value = Element.model_validate(newsletter_story())
    result = await channel.upsert(value, value.publications[0], None)
    assert [c["status"] for c in mailchimp.state.campaigns.values()] == ["schedule"]
    proxy = MailchimpChannel("newsletter", channel.options, http_answering(lambda request: proxy_404))
    with pytest.raises(ChannelUnavailable, match="HTTP 404"):
        await proxy.delete(value.id, value.publications[0].id, result.external_id)
    await channel.delete(value.id, value.publications[0].id, result.external_id)
    assert mailchimp.state.campaigns == {}
    await channel.delete(value.id, value.publications[0].id, result.external_id)  # Mailchimp's own 404: done

"""The WordPress channel's pure parts: options, the status/date table, HTML sanitising, and how HTTP answers
become errors (answered in process by httpx-style handlers; the real site is in
tests/integration/test_wordpress_channel.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from bridge.channels.text import sanitize_html
from bridge.channels.wordpress import (
    CONTENT_HTML,
    WordPressChannel,
    WordPressOptions,
    lookup,
    map_post,
    marker_token,
    plan_status,
    publication_marker,
    title_text,
    wordpress_date,
)
from bridge.errors import ChannelCredentialsRefused, ChannelRejected, ChannelUnavailable
from bridge.kordiam.models import Element, Ref
from bridge.pipeline.handler import MessageHandler
from bridge.queue.outcome import Done, Retry
from bridge.queue.transport import QueueMessage
from tests.support import http_answering
from tests.unit.fakes import FakeKordiam, MemoryStateStore, sync_engine

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
FUTURE = NOW + timedelta(hours=3)
PAST = NOW - timedelta(days=1)


def element(
    *,
    status: dict[str, Any] | None = None,
    schedule: dict[str, Any] | None = None,
    content: dict[str, Any] | None = None,
    title: str | None = "Element title",
    slug: str | None = "budget",
    category: dict[str, Any] | None = None,
) -> Element:
    publication: dict[str, Any] = {"id": 7001, "platform": {"id": 1, "name": "Web"}, "assignedTaskIds": [5001]}
    if status is not None:
        publication["status"] = status
    if schedule is not None:
        publication["schedule"] = schedule
    if category is not None:
        publication["category"] = category
    return Element.model_validate(
        {
            "id": 1001,
            "title": title,
            "slug": slug,
            "tasks": [
                {
                    "id": 5001,
                    "format": {"id": 1, "name": "Text"},
                    "user": {"id": 3, "email": "Anna@Example.org"},
                    "content": content
                    if content is not None
                    else {"headline": "Budget passes", "lead": "The lead", "text": "<p>Body</p>"},
                }
            ],
            "publications": [publication],
        }
    )


def options(**overrides: Any) -> WordPressOptions:
    values: dict[str, Any] = {"url": "https://news.example/", "username": "bridge", "app_password": "abcd efgh ijkl"}
    values.update(overrides)
    return WordPressOptions.model_validate(values)


# --- options ---------------------------------------------------------------------------------------------------


def test_options_defaults_and_normalised_keys() -> None:
    opts = options(
        status_map={"Ready to publish": "PUBLISH", 7: "draft", " 8 ": "pending"},
        category_map={"Sport": 4, 12: " 5 ", "Local": "Lokales"},
    )
    assert opts.url == "https://news.example"
    assert opts.post_type == "post"
    assert opts.delete_mode == "trash"
    assert opts.rest_route == "auto"
    assert opts.create_missing_categories is False
    assert opts.default_author is None
    assert opts.status_map == {"ready to publish": "publish", "7": "draft", "8": "pending"}
    assert opts.category_map == {"sport": 4, "12": 5, "local": "Lokales"}
    assert "abcd efgh ijkl" not in repr(opts)


@pytest.mark.parametrize(
    "overrides",
    [
        {"url": "ftp://news.example"},
        {"url": "news.example"},
        {"url": "https://news.example/?p=1"},
        {"app_password": "  "},
        {"status_map": {"Ready": "future"}},
        {"status_map": {"Ready": "published"}},
        {"category_map": {"Sport": 0}},
        {"category_map": {"Sport": " "}},
        {"post_type": "Posts with spaces"},
        {"delete_mode": "shred"},
        {"rest_route": "magic"},
        {"default_author": 0},
        {"unknown_key": 1},
    ],
)
def test_options_reject(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        options(**overrides)


@pytest.mark.parametrize(
    ("key", "overrides", "same"),
    [
        ("status_map", {"status_map": {"Published": "publish", "PUBLISHED": "draft"}}, "'Published' and 'PUBLISHED'"),
        ("status_map", {"status_map": {5: "publish", " 5": "draft"}}, "5 and ' 5'"),
        ("category_map", {"category_map": {"Sport": 4, "sport": 9}}, "'Sport' and 'sport'"),
    ],
)
def test_two_map_keys_the_adapter_reads_as_one_are_refused(key: str, overrides: dict[str, Any], same: str) -> None:
    # Names are matched without case and ids by their digits: the second key silently replaced the first, so one
    # of the two mappings written never applied.
    with pytest.raises(ValidationError) as raised:
        options(**overrides)
    (error,) = raised.value.errors()
    assert error["loc"] == (key,)
    assert error["msg"] == f"Value error, {same} are one key (ids by their digits, names without case): keep one"


def test_lookup_by_id_then_name() -> None:
    mapping = options(status_map={"3": "draft", "Ready": "publish"}).status_map
    assert lookup(mapping, Ref(id=3, name="Ready")) == "draft"
    assert lookup(mapping, Ref(id=4, name=" READY ")) == "publish"
    assert lookup(mapping, Ref(id=4, name="Other")) is None
    assert lookup(mapping, Ref(id=4)) is None
    assert lookup(mapping, None) is None


# --- status and date ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mapped", "scheduled", "status", "date"),
    [
        (None, None, "draft", None),
        (None, FUTURE, "draft", FUTURE),
        (None, PAST, "draft", PAST),
        ("publish", None, "publish", None),
        ("publish", FUTURE, "future", FUTURE),
        ("publish", PAST, "publish", PAST),
        ("publish", NOW, "publish", NOW),
        ("draft", None, "draft", None),
        ("draft", FUTURE, "draft", FUTURE),
        ("pending", FUTURE, "pending", FUTURE),
        ("private", None, "private", None),
        ("private", PAST, "private", PAST),
    ],
)
def test_status_table(mapped: Any, scheduled: datetime | None, status: str, date: datetime | None) -> None:
    assert plan_status(mapped, scheduled, NOW) == (status, date)


def test_wordpress_date_is_utc_without_suffix() -> None:
    assert wordpress_date(datetime(2026, 11, 22, 19, 30, 15, 999, tzinfo=UTC)) == "2026-11-22T19:30:15"
    berlin = datetime(2026, 11, 22, 20, 30, tzinfo=UTC).astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    assert wordpress_date(berlin) == "2026-11-22T20:30:00"
    assert wordpress_date(datetime(2026, 1, 2, 3, 4)) == "2026-01-02T03:04:00"


def test_map_post_future_publish() -> None:
    item = element(
        status={"id": 9, "name": "Ready"},
        schedule={"kind": "single", "date": "2026-11-22", "timing": {"type": "time", "time": "15:00"}},
        category={"id": 90000, "name": "Politics"},
    )
    plan = map_post(item, item.publications[0], options(status_map={"9": "publish"}).status_map, NOW)
    assert plan.fields == {
        "title": "Budget passes",
        "status": "future",
        "content": "<p>Body</p>",
        "excerpt": "The lead",
        "slug": "budget",
        "date_gmt": "2026-11-22T15:00:00",
    }
    assert plan.category == Ref(id=90000, name="Politics")
    assert plan.author_email == "Anna@Example.org"


def test_map_post_unmapped_status_never_publishes() -> None:
    item = element(
        status={"id": 2, "name": "Published"},
        schedule={"kind": "single", "date": "2026-11-21", "timing": {"type": "time", "time": "08:00"}},
    )
    plan = map_post(item, item.publications[0], options(status_map={"Ready": "publish"}).status_map, NOW)
    assert plan.fields["status"] == "draft"
    assert plan.fields["date_gmt"] == "2026-11-21T08:00:00"


def test_map_post_date_only_schedule_sends_no_date() -> None:
    item = element(status={"id": 9, "name": "Ready"}, schedule={"kind": "single", "date": "2026-12-01"})
    plan = map_post(item, item.publications[0], {"ready": "publish"}, NOW)
    assert plan.fields["status"] == "publish"
    assert "date_gmt" not in plan.fields


def test_map_post_title_fallbacks_and_missing_parts() -> None:
    item = element(content={"text": "<p>Only text</p>"})
    plan = map_post(item, item.publications[0], {}, NOW)
    assert plan.fields["title"] == "Element title"
    assert plan.fields["excerpt"] == "", "no lead empties the excerpt"

    item = element(content={"headline": "H"}, title=None, slug=None)
    plan = map_post(item, item.publications[0], {}, NOW)
    assert plan.fields == {"title": "H", "status": "draft"}, "no text in Kordiam: the body is not Kordiam's"

    bare = Element.model_validate({"id": 5, "slug": "only-slug", "publications": [{"id": 1, "platform": 1}]})
    plan = map_post(bare, bare.publications[0], {}, NOW)
    assert plan.fields == {"title": "only-slug", "status": "draft", "slug": "only-slug"}
    assert plan.author_email is None
    assert plan.category is None


@pytest.mark.parametrize("headline", ["<p></p>", "<script>alert(1)</script>", "<b> </b>", "&nbsp;"])
def test_a_headline_of_markup_alone_falls_back_to_the_title(headline: str) -> None:
    # As NewsML and Mailchimp fall back: on what the plain text is, not on the raw value (an editor's empty
    # paragraph would otherwise leave the post without a title while the element has one).
    item = element(content={"headline": headline, "text": "<p>Body</p>"})
    assert map_post(item, item.publications[0], {}, NOW).fields["title"] == "Element title"
    item = element(content={"headline": headline, "text": "<p>Body</p>"}, title="<i></i>")
    assert map_post(item, item.publications[0], {}, NOW).fields["title"] == "budget"


# --- sanitising ----------------------------------------------------------------------------------------------


HOSTILE = (
    '<p onclick="steal()">Hi <script>alert(1)</script><a href="javascript:alert(2)">link</a></p>'
    "<style>body{display:none}</style>"
    '<img src="x.png" onerror="alert(3)" alt="pic">'
    '<img src="data:image/svg+xml;base64,PHN2Zz4=" alt="data">'
    '<iframe src="https://evil.example"></iframe>'
    '<a href="JaVaScRiPt:alert(4)">x</a><a href=" javascript:alert(5)">y</a>'
    '<svg onload="alert(6)"><script>alert(7)</script></svg>'
    '<form action="https://evil.example"><input name="q"></form>'
    '<div style="background:url(javascript:alert(8))">styled</div>'
    "<!-- comment --><object data=x></object><embed src=x>"
)


def test_sanitize_removes_hostile_html() -> None:
    clean = sanitize_html(HOSTILE, CONTENT_HTML)
    lowered = clean.lower()
    needles = ["<script", "alert(", "javascript:", "onclick", "onerror", "onload", "<style", "display:none"]
    needles += ["<iframe", "data:image", "<svg", "<form", "<input", "style=", "<!--", "<object", "<embed"]
    for needle in needles:
        assert needle not in lowered, (needle, clean)
    assert "Hi " in clean
    assert '<img src="x.png" alt="pic">' in clean
    assert "styled" in clean


def test_sanitize_keeps_editorial_html() -> None:
    story = (
        '<h2>Sub</h2><h3 lang="de">Unter</h3><p>A <strong>b</strong> <em>c</em> '
        '<a href="https://x.example/a?b=1&amp;c=2" title="t">d</a> <a href="/relative">r</a> '
        '<a href="mailto:desk@example.org">m</a></p>'
        "<ul><li>one</li></ul><ol><li>two</li></ol><blockquote><p>quote</p></blockquote>"
        '<figure><img src="https://img.example/p.jpg" alt="A photo"><figcaption>Caption</figcaption></figure>'
        "<table><tbody><tr><td>cell</td></tr></tbody></table>"
    )
    assert sanitize_html(story, CONTENT_HTML) == story


def test_sanitize_and_plain_text_keep_non_latin_and_emoji() -> None:
    text = '<p dir="rtl" lang="ar">مرحبا بالعالم</p><p>Привет, 世界! Zürich — ½ 🎉👩🏽‍💻</p>'
    assert sanitize_html(text, CONTENT_HTML) == text
    assert title_text("Ελληνικά 日本語 🚀") == "Ελληνικά 日本語 🚀"


def test_plain_text_title() -> None:
    assert title_text("<b>Tom</b> & Jerry <script>x()</script>") == "Tom &amp; Jerry"
    assert title_text("a < b") == "a &lt; b"


# --- HTTP answers → errors (mock transport) ------------------------------------------------------------------

TYPE_POST = {"slug": "post", "rest_base": "posts", "taxonomies": ["category", "post_tag"]}


def channel(handler: Callable[[httpx.Request], httpx.Response], **overrides: Any) -> WordPressChannel:
    client = http_answering(handler)
    return WordPressChannel("web", options(**overrides), client)


def wp_error(status: int, code: str, message: str, **data: Any) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "message": message, "data": {"status": status, **data}})


def set_up_reads(request: httpx.Request) -> httpx.Response | None:
    """WordPress's answer to the adapter's set-up reads (the post type; no user with the assignee's e-mail)."""
    if "types" in request.url.path:
        return httpx.Response(200, json=TYPE_POST)
    if request.url.path.endswith("/users"):
        return httpx.Response(200, json=[])
    return None


def post_answer(post_id: int, status: str = "draft") -> httpx.Response:
    return httpx.Response(200, json={"id": post_id, "status": status, "link": f"https://news.example/?p={post_id}"})


async def test_auto_route_falls_back_to_query_and_remembers() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}?{request.url.query.decode()}")
        if request.url.path.startswith("/wp-json/"):
            return httpx.Response(404, text="<html>Not found</html>", headers={"content-type": "text/html"})
        route = request.url.params["rest_route"]
        if route == "/wp/v2/types/post":
            return httpx.Response(200, json=TYPE_POST)
        if route == "/wp/v2/users":
            return httpx.Response(200, json=[])
        assert route in ("/wp/v2/posts", "/wp/v2/posts/12")
        assert request.headers["authorization"].startswith("Basic ")
        return post_answer(12, "publish")

    wp = channel(handler)
    item = element()
    result = await wp.upsert(item, item.publications[0], None)
    assert result.external_id == "12"
    assert result.live is True
    assert result.edit_link == "https://news.example/wp-admin/post.php?post=12&action=edit"
    await wp.upsert(item, item.publications[0], "12")
    # One probe of /wp-json/, one of ?rest_route=, then only ?rest_route=; the missing author is remembered.
    assert sum(line.startswith("GET /wp-json/") for line in seen) == 1
    assert sum("types" in line for line in seen) == 2
    assert sum("users" in line for line in seen) == 1


async def test_no_rest_api_at_all() -> None:
    wp = channel(lambda request: httpx.Response(404, text="nope"))
    item = element()
    with pytest.raises(ChannelRejected, match=r"'web'.*no WordPress REST API at https://news.example"):
        await wp.upsert(item, item.publications[0], None)


async def test_unknown_post_type() -> None:
    wp = channel(lambda request: wp_error(404, "rest_type_invalid", "Invalid post type."), post_type="article")
    item = element()
    with pytest.raises(ChannelRejected, match="post type 'article' is not available"):
        await wp.upsert(item, item.publications[0], None)


@pytest.mark.parametrize(
    ("answer", "error", "match"),
    [
        (
            wp_error(401, "rest_cannot_create", "Sorry, you are not allowed"),
            ChannelRejected,
            "'web'.*401 rest_cannot_create",
        ),
        (wp_error(403, "rest_forbidden", "No"), ChannelRejected, "403 rest_forbidden: No"),
        (
            wp_error(400, "rest_invalid_param", "Invalid parameter(s): status", params={"status": "bad"}),
            ChannelRejected,
            r"Invalid parameter\(s\): status \(status: bad\)",
        ),
        (httpx.Response(200, text="<?php oops"), ChannelRejected, "not JSON"),
        (
            httpx.Response(200, content=b"<html>down</html>", headers={"content-type": "text/html; charset=bogus"}),
            ChannelRejected,
            r"not JSON \(text/html; charset=bogus: '<html>down</html>'\)",
        ),
        (httpx.Response(200, json={"unexpected": True}), ChannelRejected, "no post id"),
        (httpx.Response(301, headers={"location": "https://www.news.example/"}), ChannelRejected, "redirected"),
        (httpx.Response(500, text="fatal"), ChannelUnavailable, "HTTP 500"),
        (wp_error(503, "maintenance", "Briefly unavailable"), ChannelUnavailable, "503 maintenance"),
        (httpx.Response(429, headers={"retry-after": "7"}), ChannelUnavailable, "HTTP 429"),
        (httpx.Response(408), ChannelUnavailable, "HTTP 408"),
    ],
)  # fmt: skip
async def test_answers_become_errors(answer: httpx.Response, error: type[Exception], match: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "types" in request.url.path:
            return httpx.Response(200, json=TYPE_POST)
        return answer

    wp = channel(handler)
    item = element()
    with pytest.raises(error, match=match) as raised:
        await wp.upsert(item, item.publications[0], None)
    if answer.status_code == 429:
        assert isinstance(raised.value, ChannelUnavailable)
        assert raised.value.retry_after == 7.0


async def test_transport_errors_are_transient() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    wp = channel(handler)
    item = element()
    with pytest.raises(ChannelUnavailable, match="unreachable: connection refused"):
        await wp.upsert(item, item.publications[0], None)


async def test_update_of_deleted_post_creates_a_new_one() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if "types" in request.url.path:
            return httpx.Response(200, json=TYPE_POST)
        if request.url.path.endswith("/posts/12"):
            return wp_error(404, "rest_post_invalid_id", "Invalid post ID.")
        if request.method == "GET" and request.url.path.endswith("/posts"):
            return httpx.Response(200, json=[])  # no post carries the publication's marker
        return post_answer(13)

    wp = channel(handler)
    item = element()
    result = await wp.upsert(item, item.publications[0], "12")
    assert result.external_id == "13"
    assert calls[-3:] == ["POST /wp-json/wp/v2/posts/12", "GET /wp-json/wp/v2/posts", "POST /wp-json/wp/v2/posts"]


def marked_posts_answer(request: httpx.Request, posts: list[tuple[int, str]]) -> httpx.Response:
    params = request.url.params
    assert (params["status"], params["context"], params["orderby"], params["order"]) == ("any", "edit", "id", "asc")
    return httpx.Response(200, json=[{"id": post_id, "content": {"raw": raw}} for post_id, raw in posts])


async def test_creation_adopts_the_oldest_post_carrying_the_exact_marker() -> None:
    item = element()
    marker = publication_marker(item.id, item.publications[0].id)
    longer = publication_marker(item.id, item.publications[0].id * 10 + 1)  # the same word plus a digit
    calls: list[str] = []
    bodies: dict[str, dict[str, Any]] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        path = request.url.path
        if (answer := set_up_reads(request)) is not None:
            return answer
        if request.method == "GET" and path.endswith("/posts"):
            assert request.url.params["search"] == marker_token(marker)
            return marked_posts_answer(request, [(30, f"<p>x</p>{longer}"), (31, f"<p>a</p>{marker}"), (32, marker)])
        bodies[path] = json.loads(request.content)
        return post_answer(int(path.rsplit("/", 1)[1]))

    wp = channel(handler)
    with capture_logs() as logs:
        result = await wp.upsert(item, item.publications[0], None)
    assert result.external_id == "31"
    assert calls[-2:] == ["GET /wp-json/wp/v2/posts", "POST /wp-json/wp/v2/posts/31"]
    assert bodies["/wp-json/wp/v2/posts/31"]["content"].endswith(marker)
    assert ("wordpress.duplicate_posts", [31, 32]) in [(entry["event"], entry.get("posts")) for entry in logs]


async def test_a_new_post_without_text_is_created_with_the_marker_alone() -> None:
    item = element(content={"headline": "Only a headline"})
    created: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if (answer := set_up_reads(request)) is not None:
            return answer
        if request.method == "GET" and path.endswith("/posts"):
            return marked_posts_answer(request, [])
        created.append(json.loads(request.content))
        return post_answer(40)

    await channel(handler).upsert(item, item.publications[0], None)
    assert created[0]["content"] == publication_marker(item.id, item.publications[0].id)
    await channel(handler).upsert(item, item.publications[0], "40")  # an update leaves WordPress's content alone
    assert "content" not in created[1]


async def test_an_update_that_empties_the_story_empties_the_post() -> None:
    # Kordiam is the source of truth: the post mirrors the story. Before: an update without text or lead sent
    # no content or excerpt, so WordPress kept the old body and excerpt online.
    wordpress = InProcessWordPress()
    item = element()
    result = await channel(wordpress).upsert(item, item.publications[0], None)
    marker = publication_marker(item.id, item.publications[0].id)
    post = wordpress.posts[int(result.external_id)]
    assert (post["content"], post["excerpt"]) == ("<p>Body</p>" + marker, "The lead")

    data = item.model_dump(mode="json", by_alias=True, exclude_none=True)
    # What an editor leaves of an emptied text (a bare "" the models read as no text at all: see the next test).
    data["tasks"][0]["content"] = {"headline": "Budget passes", "lead": "", "text": "<p></p>"}
    emptied = Element.model_validate(data)
    await channel(wordpress).upsert(emptied, emptied.publications[0], result.external_id)
    assert (post["content"], post["excerpt"]) == ("<p></p>" + marker, ""), "the emptied story's old text stays online"


@pytest.mark.parametrize("kordiam_text", ["a text task planned without text", "no text task"])
async def test_a_story_whose_text_kordiam_does_not_hold_keeps_the_posts_body(kordiam_text: str) -> None:
    # Kordiam as the planning tool, the text written in WordPress: the text task carries no content (seed 001's
    # "Requested" Text task), or the element has no text task. An update (a status, a schedule) must not blank
    # what the editors wrote in WordPress; the body is Kordiam's only once Kordiam holds a text, even an empty one.
    wordpress = InProcessWordPress()
    data = element().model_dump(mode="json", by_alias=True, exclude_none=True)
    if kordiam_text == "no text task":
        data["tasks"], data["publications"][0]["assignedTaskIds"] = [], []
    else:
        del data["tasks"][0]["content"]
    item = Element.model_validate(data)
    result = await channel(wordpress).upsert(item, item.publications[0], None)
    marker = publication_marker(item.id, item.publications[0].id)
    post = wordpress.posts[int(result.external_id)]
    assert post["content"] == marker, "a new post carries the marker alone"
    post["content"], post["excerpt"] = "<p>Written in WordPress.</p>" + marker, "A WordPress excerpt."

    await channel(wordpress).upsert(item, item.publications[0], result.external_id)
    assert (post["content"], post["excerpt"]) == ("<p>Written in WordPress.</p>" + marker, "A WordPress excerpt.")


async def test_search_refused_to_a_visitor_names_the_credentials() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if (answer := set_up_reads(request)) is not None:
            return answer
        return wp_error(400, "rest_invalid_param", "Invalid parameter(s): status", params={"status": "forbidden"})

    item = element()
    # The bridge's credentials were not applied: its own fault, so the element is parked, not the story rejected.
    with pytest.raises(
        ChannelCredentialsRefused, match=r"'web': looking for a post made before: HTTP 400.*app_password"
    ):
        await channel(handler).upsert(item, item.publications[0], None)


async def test_delete_modes_and_already_gone() -> None:
    calls: list[str] = []
    answers = iter([wp_error(410, "rest_already_trashed", "gone"), wp_error(404, "rest_post_invalid_id", "x")])

    def handler(request: httpx.Request) -> httpx.Response:
        if "types" in request.url.path:
            return httpx.Response(200, json=TYPE_POST)
        calls.append(f"{request.method} {request.url.path} {request.url.query.decode()}")
        return next(answers)

    wp = channel(handler, delete_mode="force")
    await wp.delete(1, 2, "12")
    await wp.delete(1, 2, "13")
    await wp.delete(1, 2, "not-a-wordpress-id")
    assert calls == ["DELETE /wp-json/wp/v2/posts/12 force=true", "DELETE /wp-json/wp/v2/posts/13 force=true"]


async def test_body_sent_to_wordpress() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if "types" in path:
            return httpx.Response(200, json=TYPE_POST)
        if path.endswith("/users"):
            assert request.url.params["context"] == "edit"
            return httpx.Response(200, json=[{"id": 5, "email": "anna@example.org"}])
        if path.endswith("/categories") and request.method == "GET":
            return httpx.Response(200, json=[{"id": 3, "name": "Politics &amp; More"}])
        if request.method == "GET" and path.endswith("/posts"):
            return httpx.Response(200, json=[])
        bodies.append(json.loads(request.content))
        return post_answer(21)

    wp = channel(handler, category_map={"90000": "politics & more"})
    item = element(category={"id": 90000, "name": "Politics"})
    await wp.upsert(item, item.publications[0], None)
    await wp.upsert(item, item.publications[0], None)  # lookups come from the caches now
    assert bodies[0]["categories"] == [3]
    assert bodies[0]["author"] == 5
    assert bodies[0] == bodies[1]


async def test_category_created_or_taken_from_term_exists() -> None:
    created: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if (answer := set_up_reads(request)) is not None:
            return answer
        if path.endswith("/categories") and request.method == "GET":
            return httpx.Response(200, json=[{"id": 8, "name": "Politics abroad"}])  # a near miss
        if path.endswith("/categories"):
            name = json.loads(request.content)["name"]
            created.append(name)
            if name == "Politics":  # made by someone else meanwhile
                return wp_error(400, "term_exists", "A term with the name provided already exists.", term_id=44)
            return httpx.Response(201, json={"id": 45, "name": name})
        body = json.loads(request.content)
        return httpx.Response(200, json={"id": 1, "status": "draft", "link": "x", "seen": body})

    wp = channel(handler, create_missing_categories=True)
    first = element(category={"id": 1, "name": "Politics"})
    second = element(category={"id": 2, "name": "Culture"})
    assert await wp._category_for(first.publications[0].category) == 44
    assert await wp._category_for(second.publications[0].category) == 45
    assert await wp._category_for(first.publications[0].category) == 44
    assert created == ["Politics", "Culture"]


async def test_category_without_create_option() -> None:
    checks: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if "types" in request.url.path:
            return httpx.Response(200, json=TYPE_POST)
        if request.method == "GET" and request.url.path.endswith("/categories/7"):
            checks.append(request.url.path)
            return httpx.Response(200, json={"id": 7})
        raise AssertionError(f"unexpected {request.method} {request.url}")

    wp = channel(handler, category_map={"Sport": 7})
    assert await wp._category_for(Ref(id=1, name="sport")) == 7
    assert await wp._category_for(Ref(id=1, name="sport")) == 7
    assert checks == ["/wp-json/wp/v2/categories/7"]  # checked once
    assert await wp._category_for(Ref(id=2, name="Unmapped")) is None
    assert await wp._category_for(None) is None


async def test_category_map_to_an_unknown_id_is_rejected_before_the_post_is_written() -> None:
    # WordPress takes an unknown category id silently and files the post under no category at all.
    writes: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if (answer := set_up_reads(request)) is not None:
            return answer
        if request.method == "GET" and request.url.path.endswith("/categories/99"):
            return wp_error(404, "rest_term_invalid", "Term does not exist.")
        writes.append(f"{request.method} {request.url.path}")
        return post_answer(1)

    wp = channel(handler, category_map={"Sport": 99})
    item = element(category={"id": 1, "name": "Sport"})
    with pytest.raises(ChannelRejected, match=r"'web': category id 99 \(from category_map\) does not exist"):
        await wp.upsert(item, item.publications[0], None)
    assert writes == []


async def test_author_lookup_forbidden_falls_back_to_default() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if "types" in request.url.path:
            return httpx.Response(200, json=TYPE_POST)
        return wp_error(403, "rest_forbidden_context", "Sorry, you are not allowed to list users.")

    wp = channel(handler, default_author=9)
    assert await wp._author_for("a@example.org") == 9
    assert await wp._author_for("b@example.org") == 9
    assert await wp._author_for(None) == 9
    assert sum(path.endswith("/users") for path in calls) == 1


async def test_a_refused_author_lookup_is_logged_without_the_credentials_the_answer_echoes() -> None:
    # A debug plugin (or a proxy) that repeats the request in the error's data: the log line is as public as an
    # error, so it carries what WordPress said, redacted, and not its raw data.
    def handler(request: httpx.Request) -> httpx.Response:
        if "types" in request.url.path:
            return httpx.Response(200, json=TYPE_POST)
        seen = {"authorization": request.headers["Authorization"], "password": "abcd efgh ijkl"}
        return wp_error(403, "rest_forbidden_context", "Sorry, you are not allowed to list users.", request=seen)

    with capture_logs() as logs:
        assert await channel(handler, default_author=9)._author_for("a@example.org") == 9
    (logged,) = [entry for entry in logs if entry["event"] == "wordpress.cannot_list_users"]
    assert "abcd efgh ijkl" not in str(logged) and "YnJpZGdl" not in str(logged)  # base64 of "bridge:…"
    assert "rest_forbidden_context" in str(logged)


# --- a story deleted in Kordiam before the retry of a lost create (the engine over an in-process WordPress) -------


class InProcessWordPress:
    """Just enough of WordPress's posts endpoint, in memory: create, update, search (``status=any``: every status
    but trash; a LIKE on the content), trash and force-delete. ``lose_create`` loses the next creation's answer
    after WordPress made the post; ``fail_search`` answers the next search with that status."""

    def __init__(self) -> None:
        self.posts: dict[int, dict[str, Any]] = {}
        self.searches: list[str] = []
        self.lose_create = False
        self.fail_search: int | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if (answer := set_up_reads(request)) is not None:
            return answer
        path, params = request.url.path, request.url.params
        if request.method == "GET" and path.endswith("/posts"):
            self.searches.append(params["search"])
            if self.fail_search is not None:
                status, self.fail_search = self.fail_search, None
                return wp_error(status, "internal_server_error", "down")
            found = [
                {"id": post_id, "content": {"raw": post["content"]}}
                for post_id, post in sorted(self.posts.items())
                if post["status"] != "trash" and params["search"] in post["content"]
            ]
            return httpx.Response(200, json=found)
        if request.method == "POST" and path.endswith("/posts"):
            post_id = max(self.posts, default=100) + 1
            self.posts[post_id] = dict(json.loads(request.content))
            if self.lose_create:
                self.lose_create = False
                raise httpx.ReadTimeout("no answer within 10 s", request=request)
            return post_answer(post_id, self.posts[post_id]["status"])
        post_id = int(path.rsplit("/", 1)[1])
        if post_id not in self.posts:
            return wp_error(404, "rest_post_invalid_id", "Invalid post ID.")
        if request.method == "DELETE" and params.get("force") == "true":
            del self.posts[post_id]
            return httpx.Response(200, json={"deleted": True})
        if request.method == "DELETE":
            if self.posts[post_id]["status"] == "trash":
                return wp_error(410, "rest_already_trashed", "The post has already been moved to the Trash.")
            self.posts[post_id]["status"] = "trash"
            return post_answer(post_id, "trash")
        self.posts[post_id].update(json.loads(request.content))
        return post_answer(post_id, self.posts[post_id]["status"])


def kordiam_story(element_id: int = 1001, *publication_ids: int) -> dict[str, Any]:
    """Element ``element_id`` with one website publication (platform 1) per id, each linked to its text task."""
    return {
        "id": element_id,
        "title": "Budget",
        "slug": "budget",
        "tasks": [{"id": 5001, "format": {"id": 1, "name": "Text"}, "content": {"text": "<p>Body</p>"}}],
        "publications": [
            {"id": pid, "platform": {"id": 1}, "assignedTaskIds": [5001]} for pid in publication_ids or (7001,)
        ],
    }


def queue_message(element_id: int = 1001, receive_count: int = 1) -> QueueMessage:
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


async def created_but_answer_lost(
    wordpress: InProcessWordPress, **overrides: Any
) -> tuple[MessageHandler, FakeKordiam, MemoryStateStore]:
    """The story's first sync: WordPress made the post, but its answer was lost, so the message is to be retried
    and the state store holds no delivery for it."""
    kordiam, state = FakeKordiam(), MemoryStateStore()
    kordiam.elements[1001] = kordiam_story()
    handler = MessageHandler(sync_engine(kordiam, state, [(channel(wordpress, **overrides), 1)]), tracing=False)
    wordpress.lose_create = True
    assert isinstance(await handler(queue_message()), Retry)
    assert list(wordpress.posts) == [101] and state.rows == {}
    return handler, kordiam, state


async def test_a_deleted_storys_post_whose_creation_answer_was_lost_is_trashed() -> None:
    wordpress = InProcessWordPress()
    handler, kordiam, state = await created_but_answer_lost(wordpress)
    # Another element's posts, one of them with a longer id that starts with the same digits, are not touched.
    wordpress.posts[200] = {"status": "publish", "content": "<p>x</p><!-- kordiam-10011-7001 -->"}
    wordpress.posts[201] = {"status": "publish", "content": "<p>mentions kordiam-1001-7001 but carries no marker</p>"}
    del kordiam.elements[1001]
    searches = len(wordpress.searches)
    with capture_logs() as logs:
        outcome = await handler(queue_message(receive_count=2))
    assert isinstance(outcome, Done)
    assert wordpress.posts[101]["status"] == "trash", "the post of a deleted story would stay published"
    assert wordpress.posts[200]["status"] == wordpress.posts[201]["status"] == "publish"
    assert wordpress.searches[searches:] == ["kordiam-1001-"], "one search for the deleted element"
    (retracted,) = [entry for entry in logs if entry["event"] == "unrecorded_item_retracted"]
    assert (retracted["channel"], retracted["publication_id"], retracted["external_id"]) == ("web", 7001, "101")
    assert state.marks[1001].deleted


async def test_a_failed_search_for_a_deleted_storys_post_is_retried() -> None:
    wordpress = InProcessWordPress()
    handler, kordiam, _ = await created_but_answer_lost(wordpress)
    del kordiam.elements[1001]
    wordpress.fail_search = 503
    outcome = await handler(queue_message(receive_count=2))
    assert isinstance(outcome, Retry) and outcome.stage == "web" and "HTTP 503" in outcome.reason
    assert wordpress.posts[101]["status"] == "draft"
    assert isinstance(await handler(queue_message(receive_count=3)), Done)
    assert wordpress.posts[101]["status"] == "trash"


async def test_a_deleted_storys_recorded_post_is_deleted_once_and_force_mode_deletes_for_good() -> None:
    wordpress = InProcessWordPress()
    kordiam, state = FakeKordiam(), MemoryStateStore()
    kordiam.elements[1001] = kordiam_story(1001, 7001, 7002)
    handler = MessageHandler(sync_engine(kordiam, state, [(channel(wordpress, delete_mode="force"), 1)]), tracing=False)
    assert isinstance(await handler(queue_message()), Done)
    assert len(wordpress.searches) == 2, "one search per creation"
    kordiam.elements[1001]["title"] = "Budget: the vote"
    assert isinstance(await handler(queue_message()), Done)
    assert len(wordpress.searches) == 2, "an update searches nothing"
    del state.rows[(1001, "web", 7002)]  # its record lost, as with a create whose answer was lost
    del kordiam.elements[1001]
    with capture_logs() as logs:
        assert isinstance(await handler(queue_message()), Done)
    assert wordpress.posts == {}
    retracted = [entry for entry in logs if entry["event"] == "unrecorded_item_retracted"]
    assert [(entry["publication_id"], entry["external_id"]) for entry in retracted] == [(7002, "102")]


async def test_a_delete_answered_no_route_is_not_taken_as_the_post_gone() -> None:
    # A deactivated plugin that registered the post type: WordPress answers every item of it `rest_no_route`. Taken as
    # "already deleted", the bridge would record the story retracted while its post comes back with the plugin.
    def handler(request: httpx.Request) -> httpx.Response:
        if "types" in request.url.path:
            return httpx.Response(200, json=TYPE_POST)
        return wp_error(404, "rest_no_route", "No route was found matching the URL and request method.")

    with pytest.raises(ChannelUnavailable, match=r"'web': deleting post 12: .*rest_no_route"):
        await channel(handler).delete(1, 2, "12")


async def test_an_update_answered_no_route_creates_nothing() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if (answer := set_up_reads(request)) is not None:
            return answer
        calls.append(f"{request.method} {request.url.path}")
        return wp_error(404, "rest_no_route", "No route was found matching the URL and request method.")

    item = element()
    with pytest.raises(ChannelUnavailable, match="rest_no_route"):
        await channel(handler).upsert(item, item.publications[0], "12")
    assert calls == ["POST /wp-json/wp/v2/posts/12"]

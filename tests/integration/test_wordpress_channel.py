"""The WordPress channel against a real WordPress (``scripts/wordpress.sh start``; ``eval "$(scripts/wordpress.sh
env)"`` sets ``BRIDGE_TEST_WORDPRESS`` to its credentials.json). Everything is read back through WordPress's own
REST API with ``context=edit``; each test makes its own posts (unique slugs) and removes them afterwards."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.channels import ChannelContext, FoundItem
from bridge.channels.wordpress import WordPressChannel, WordPressOptions, create, marker_token, publication_marker
from bridge.config import ChannelSettings
from bridge.errors import ChannelRejected, ChannelUnavailable
from bridge.http import HttpClient, HttpRequest, HttpResponse, HttpTimeout
from bridge.kordiam.models import Element
from bridge.pipeline.handler import MessageHandler
from bridge.queue.outcome import Done, Retry
from bridge.queue.transport import QueueMessage
from tests.unit.fakes import FakeKordiam, MemoryStateStore, sync_engine

CREDENTIALS_ENV = "BRIDGE_TEST_WORDPRESS"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not os.environ.get(CREDENTIALS_ENV),
        reason=f'{CREDENTIALS_ENV} is not set: run scripts/wordpress.sh start && eval "$(scripts/wordpress.sh env)"',
    ),
]

READY, PUBLISHED, PLANNED, KILLED = 11, 12, 13, 14
STATUS_MAP = {str(READY): "publish", "Published": "publish", "Killed": "draft", "Waiting": "pending"}


@pytest.fixture(scope="module")
def creds() -> dict[str, Any]:
    path = Path(os.environ[CREDENTIALS_ENV])
    if not path.is_file():
        pytest.fail(f"{CREDENTIALS_ENV}={path} does not exist: run scripts/wordpress.sh start")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    """The bridge's own shared client (aiohttp), as the worker passes it in ChannelContext."""
    client = HttpClient(max_connections=8, timeout=15)
    try:
        yield client
    finally:
        await client.aclose()


class Site:
    """Reads WordPress back as an administrator, and cleans up what a test made."""

    def __init__(self, creds: dict[str, Any]) -> None:
        self.url = creds["url"]
        self.client = httpx.AsyncClient(
            base_url=f"{self.url}/wp-json/wp/v2/", auth=(creds["username"], creds["app_password"]), timeout=15
        )
        self.posts: set[int] = set()
        self.categories: set[int] = set()

    async def post(self, post_id: int | str) -> dict[str, Any] | None:
        response = await self.client.get(f"posts/{post_id}", params={"context": "edit"})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    async def must_post(self, post_id: int | str) -> dict[str, Any]:
        post = await self.post(post_id)
        assert post is not None, f"post {post_id} does not exist"
        return post

    async def category(self, category_id: int) -> dict[str, Any]:
        response = await self.client.get(f"categories/{category_id}")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    async def new_category(self, name: str) -> int:
        response = await self.client.post("categories", json={"name": name})
        response.raise_for_status()
        category_id = int(response.json()["id"])
        self.categories.add(category_id)
        return category_id

    async def marked(self, element: Element, index: int = 0) -> list[int]:
        """The ids of the posts, in any status but trash, whose content carries the publication's marker."""
        marker = marker_of(element, index)
        params = {"search": marker_token(marker), "status": "any", "context": "edit", "per_page": "100"}
        response = await self.client.get("posts", params=params)
        response.raise_for_status()
        return sorted(post["id"] for post in response.json() if marker in post["content"]["raw"])

    async def trash(self, post_id: int | str) -> None:
        (await self.client.delete(f"posts/{post_id}")).raise_for_status()

    async def force_delete(self, post_id: int | str) -> None:
        (await self.client.delete(f"posts/{post_id}", params={"force": "true"})).raise_for_status()

    async def cleanup(self) -> None:
        for post_id in self.posts:
            await self.client.delete(f"posts/{post_id}", params={"force": "true"})
        for category_id in self.categories:
            await self.client.delete(f"categories/{category_id}", params={"force": "true"})
        await self.client.aclose()


@pytest.fixture
async def site(creds: dict[str, Any]) -> AsyncIterator[Site]:
    wordpress = Site(creds)
    try:
        yield wordpress
    finally:
        await wordpress.cleanup()


ChannelFactory = Callable[..., WordPressChannel]


@pytest.fixture
def make_channel(creds: dict[str, Any], http: HttpClient) -> ChannelFactory:
    def build(**overrides: Any) -> WordPressChannel:
        values: dict[str, Any] = {
            "url": creds["url"],
            "username": creds["username"],
            "app_password": creds["app_password"],
            "status_map": STATUS_MAP,
        }
        values.update(overrides)
        settings = ChannelSettings(name="wp-test", type="wordpress", platforms=[1])
        channel = create(settings, WordPressOptions.model_validate(values), ChannelContext(http=http))
        assert isinstance(channel, WordPressChannel)
        return channel

    return build


def unique(prefix: str = "it") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def story(
    slug: str,
    *,
    headline: str = "Council approves budget",
    text: str = "<p>The council approved the budget.</p>",
    lead: str | None = "A short lead.",
    status: tuple[int, str] | None = None,
    at: datetime | None = None,
    category: tuple[int, str] | None = None,
    email: str | None = None,
    publications: int = 1,
) -> Element:
    """A Kordiam element in the API v2 shape with one text task linked to its publication(s)."""
    return Element.model_validate(
        story_body(
            slug,
            headline=headline,
            text=text,
            lead=lead,
            status=status,
            at=at,
            category=category,
            email=email,
            publications=publications,
        )
    )


def story_body(
    slug: str,
    *,
    headline: str = "Council approves budget",
    text: str = "<p>The council approved the budget.</p>",
    lead: str | None = "A short lead.",
    status: tuple[int, str] | None = None,
    at: datetime | None = None,
    category: tuple[int, str] | None = None,
    email: str | None = None,
    publications: int = 1,
) -> dict[str, Any]:
    """``story``'s element as Kordiam's API answers it (JSON)."""
    publication: dict[str, Any] = {"platform": {"id": 1, "name": "Website"}, "assignedTaskIds": [5001]}
    if status is not None:
        publication["status"] = {"id": status[0], "name": status[1]}
    if at is not None:
        publication["schedule"] = {
            "kind": "single",
            "date": at.date().isoformat(),
            "timing": {"type": "time", "time": at.strftime("%H:%M")},
        }
    if category is not None:
        publication["category"] = {"id": category[0], "name": category[1]}
    task: dict[str, Any] = {
        "id": 5001,
        "format": {"id": 1, "name": "Text"},
        "content": {"headline": headline, "lead": lead, "text": text},
    }
    if email is not None:
        task["user"] = {"id": 3, "email": email, "firstName": "Test", "lastName": "Author"}
    return {
        "id": 900_000 + uuid.uuid4().int % 100_000,
        "title": f"Planning title {slug}",
        "slug": slug,
        "tasks": [task],
        "publications": [{**publication, "id": 7000 + n} for n in range(publications)],
    }


def minute(delta: timedelta) -> datetime:
    """A moment ``delta`` from now, whole minutes (Kordiam schedules are HH:mm, GMT)."""
    return (datetime.now(UTC) + delta).replace(second=0, microsecond=0)


def wp_date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


async def upsert(
    channel: WordPressChannel, site: Site, element: Element, external_id: str | None = None, index: int = 0
) -> Any:
    result = await channel.upsert(element, element.publications[index], external_id)
    site.posts.add(int(result.external_id))
    return result


def marker_of(element: Element, index: int = 0) -> str:
    return publication_marker(element.id, element.publications[index].id)


# --- create, update, schedule, publish ------------------------------------------------------------------------


async def test_create_then_update_title_content_category_schedule(make_channel: ChannelFactory, site: Site) -> None:
    politics = await site.new_category(unique("Politics"))
    sport = await site.new_category(unique("Sport"))
    channel = make_channel(category_map={"90001": politics, "Sport": sport})
    slug = unique()

    element = story(slug, category=(90001, "Politik"))
    created = await upsert(channel, site, element)
    post = await site.must_post(created.external_id)
    assert post["status"] == "draft"
    assert post["title"]["raw"] == "Council approves budget"
    assert post["content"]["raw"] == "<p>The council approved the budget.</p>" + marker_of(element)
    assert post["excerpt"]["raw"] == "A short lead."
    assert post["slug"] == slug
    assert post["categories"] == [politics]
    assert created.live is False
    assert created.edit_link == f"{site.url}/wp-admin/post.php?post={created.external_id}&action=edit"
    assert created.open_link == post["link"]
    assert channel._route is not None and channel._route.style == "pretty"

    when = minute(timedelta(days=2))
    changed = story(
        slug,
        headline="Council approves budget, again",
        text="<p>Updated text.</p><h2>More</h2>",
        status=(READY, "Ready"),
        at=when,
        category=(55, "Sport"),
    )
    updated = await upsert(channel, site, changed, created.external_id)
    assert updated.external_id == created.external_id
    post = await site.must_post(created.external_id)
    assert post["title"]["raw"] == "Council approves budget, again"
    assert post["content"]["raw"] == "<p>Updated text.</p><h2>More</h2>" + marker_of(changed)
    assert post["categories"] == [sport]
    assert post["status"] == "future"
    assert post["date_gmt"] == wp_date(when)
    # The site runs in Europe/Berlin: WordPress derived the local date from our GMT one.
    assert post["date"] != post["date_gmt"]
    assert updated.live is False


async def test_schedule_future_then_publish_now_then_unpublish(make_channel: ChannelFactory, site: Site) -> None:
    channel = make_channel()
    slug = unique()
    when = minute(timedelta(hours=5))

    scheduled = await upsert(channel, site, story(slug, status=(READY, "Ready"), at=when))
    post = await site.must_post(scheduled.external_id)
    assert (post["status"], post["date_gmt"]) == ("future", wp_date(when))
    assert scheduled.live is False

    # The schedule is dropped and the status says publish: that means now, not at the old future date.
    published = await upsert(channel, site, story(slug, status=(PUBLISHED, "Published")), scheduled.external_id)
    post = await site.must_post(scheduled.external_id)
    assert post["status"] == "publish"
    assert published.live is True
    assert datetime.fromisoformat(post["date_gmt"]).replace(tzinfo=UTC) <= datetime.now(UTC)
    assert published.open_link == post["link"]
    assert f"/{slug}/" in post["link"]  # pretty permalink

    unpublished = await upsert(channel, site, story(slug, status=(KILLED, "Killed")), scheduled.external_id)
    post = await site.must_post(scheduled.external_id)
    assert post["status"] == "draft"
    assert unpublished.live is False
    assert unpublished.external_id == scheduled.external_id


async def test_publish_with_past_schedule_is_back_dated(make_channel: ChannelFactory, site: Site) -> None:
    channel = make_channel()
    when = minute(-timedelta(days=3))
    result = await upsert(channel, site, story(unique(), status=(READY, "Ready"), at=when))
    post = await site.must_post(result.external_id)
    assert (post["status"], post["date_gmt"]) == ("publish", wp_date(when))
    assert result.live is True


async def test_unmapped_status_with_future_date_stays_draft(make_channel: ChannelFactory, site: Site) -> None:
    channel = make_channel()
    when = minute(timedelta(days=1))
    result = await upsert(channel, site, story(unique(), status=(PLANNED, "Planned"), at=when))
    post = await site.must_post(result.external_id)
    assert (post["status"], post["date_gmt"]) == ("draft", wp_date(when))
    assert result.live is False


async def test_an_unmapped_status_on_a_live_post_leaves_it_live(make_channel: ChannelFactory, site: Site) -> None:
    # Kordiam moves a story on to a status nobody mapped (its own Published, after the bridge's publish write, where
    # only "Ready" is mapped): "never publishes" must not turn into taking the story off the site.
    channel = make_channel()
    slug = unique()
    live = await upsert(channel, site, story(slug, status=(READY, "Ready")))
    assert (await site.must_post(live.external_id))["status"] == "publish"
    moved = await upsert(channel, site, story(slug, status=(PLANNED, "Planned"), headline="Moved on"), live.external_id)
    post = await site.must_post(live.external_id)
    assert (post["status"], post["title"]["raw"]) == ("publish", "Moved on")
    assert moved.live is True


async def test_mapped_pending_by_name(make_channel: ChannelFactory, site: Site) -> None:
    result = await upsert(make_channel(), site, story(unique(), status=(99, "waiting")))
    assert (await site.must_post(result.external_id))["status"] == "pending"


async def test_two_publications_become_two_posts(make_channel: ChannelFactory, site: Site) -> None:
    channel = make_channel()
    element = story(unique(), status=(READY, "Ready"), publications=2)
    first = await upsert(channel, site, element, index=0)
    second = await upsert(channel, site, element, index=1)
    assert first.external_id != second.external_id
    one, two = await site.must_post(first.external_id), await site.must_post(second.external_id)
    assert one["title"]["raw"] == two["title"]["raw"] == "Council approves budget"
    assert one["status"] == two["status"] == "publish"
    assert one["slug"] != two["slug"]  # WordPress keeps published slugs unique


# --- delete ---------------------------------------------------------------------------------------------------


async def test_delete_to_trash_then_again(make_channel: ChannelFactory, site: Site) -> None:
    channel = make_channel()
    element = story(unique(), status=(READY, "Ready"))
    result = await upsert(channel, site, element)
    await channel.delete(element.id, element.publications[0].id, result.external_id)
    post = await site.must_post(result.external_id)
    assert post["status"] == "trash"
    await channel.delete(element.id, element.publications[0].id, result.external_id)  # 410: already trashed


async def test_force_delete_then_again(make_channel: ChannelFactory, site: Site) -> None:
    channel = make_channel(delete_mode="force")
    element = story(unique())
    result = await upsert(channel, site, element)
    await channel.delete(element.id, element.publications[0].id, result.external_id)
    assert await site.post(result.external_id) is None
    await channel.delete(element.id, element.publications[0].id, result.external_id)  # 404: already gone


async def test_post_deleted_by_hand_is_recreated(make_channel: ChannelFactory, site: Site) -> None:
    channel = make_channel()
    slug = unique()
    first = await upsert(channel, site, story(slug))
    await site.force_delete(first.external_id)
    again = await upsert(channel, site, story(slug, headline="Back again"), first.external_id)
    assert again.external_id != first.external_id
    assert await site.post(first.external_id) is None
    assert (await site.must_post(again.external_id))["title"]["raw"] == "Back again"


async def test_post_trashed_by_hand_comes_back(make_channel: ChannelFactory, site: Site) -> None:
    channel = make_channel()
    slug = unique()
    first = await upsert(channel, site, story(slug, status=(READY, "Ready")))
    await site.trash(first.external_id)
    again = await upsert(channel, site, story(slug, status=(READY, "Ready")), first.external_id)
    assert again.external_id == first.external_id
    post = await site.must_post(first.external_id)
    assert (post["status"], post["slug"]) == ("publish", slug)


# --- content --------------------------------------------------------------------------------------------------


def losing_the_first_creation(
    creds: dict[str, Any], http: HttpClient, site: Site, lost: list[int], **overrides: Any
) -> WordPressChannel:
    """A channel whose first post creation WordPress carries out but whose answer never arrives (a timeout);
    the post's id goes to ``lost`` (and to the site's clean-up)."""

    async def lose_the_first_creation(request: HttpRequest) -> HttpResponse:
        response = await http.request(
            request.method,
            str(request.url),
            content=request.content,
            headers=request.headers,
            timeout_seconds=request.timeout_seconds,
        )
        if request.method == "POST" and request.url.path.endswith("/wp/v2/posts") and not lost:
            lost.append(int(json.loads(response.content)["id"]))
            site.posts.update(lost)
            raise HttpTimeout("no answer within 15 s")
        return response

    settings = ChannelSettings(name="wp-test", type="wordpress", platforms=[1])
    options = WordPressOptions.model_validate(
        {"url": creds["url"], "username": creds["username"], "app_password": creds["app_password"], **overrides}
    )
    channel = create(settings, options, ChannelContext(http=HttpClient.answering(lose_the_first_creation)))
    assert isinstance(channel, WordPressChannel)
    return channel


async def test_a_creation_whose_answer_was_lost_is_not_made_twice(
    creds: dict[str, Any], http: HttpClient, site: Site
) -> None:
    """WordPress creates the post but its answer never arrives (a timeout); the queue's retry finds the post."""
    lost: list[int] = []
    channel = losing_the_first_creation(creds, http, site, lost)
    element = story(unique())
    with pytest.raises(ChannelUnavailable):
        await channel.upsert(element, element.publications[0], None)
    assert len(lost) == 1 and await site.marked(element) == lost

    retried = await upsert(channel, site, element)
    assert int(retried.external_id) == lost[0]
    assert await site.marked(element) == lost


async def test_a_story_deleted_before_the_retry_of_a_lost_creation_has_its_post_trashed(
    creds: dict[str, Any], http: HttpClient, site: Site, make_channel: ChannelFactory
) -> None:
    """The engine over the real WordPress: the creation's answer is lost, so the store records nothing; the story
    is deleted in Kordiam before the queue's retry. The deletion's sync finds the post by its marker (one search)
    and trashes it; another story's post, and the marker's text in a post that does not carry it, stay."""
    lost: list[int] = []
    kordiam, state = FakeKordiam(), MemoryStateStore()
    body = story_body(unique(), status=(READY, "Ready"))
    element_id = body["id"]
    kordiam.elements[element_id] = body
    channel = losing_the_first_creation(creds, http, site, lost, status_map=STATUS_MAP)
    handler = MessageHandler(sync_engine(kordiam, state, [(channel, 1)]), tracing=False)
    assert isinstance(await handler(notification(element_id)), Retry)
    assert (await site.must_post(lost[0]))["status"] == "publish" and state.rows == {}

    other = await upsert(make_channel(), site, story(unique(), text=f"<p>About kordiam-{element_id}-7000.</p>"))
    del kordiam.elements[element_id]
    assert await channel.find_items(element_id) == [FoundItem(7000, str(lost[0]))]
    assert isinstance(await handler(notification(element_id, receive_count=2)), Done)
    assert (await site.must_post(lost[0]))["status"] == "trash"
    assert (await site.must_post(other.external_id))["status"] == "draft"
    assert await channel.find_items(element_id) == [], "a trashed post is retracted already"


def notification(element_id: int, receive_count: int = 1) -> QueueMessage:
    return QueueMessage(
        message_id=f"m{receive_count}",
        receipt_handle="r",
        body=json.dumps({"id": element_id}),
        attributes={},
        receive_count=receive_count,
        sent_at=None,
        group_id=None,
    )


async def test_a_post_without_text_still_carries_its_marker(make_channel: ChannelFactory, site: Site) -> None:
    element = story(unique(), text="")
    result = await upsert(make_channel(), site, element)
    post = await site.must_post(result.external_id)
    assert post["content"]["raw"] == marker_of(element)
    # A second channel instance (a restarted worker) with no record of the post finds it instead of creating one.
    again = await upsert(make_channel(), site, element)
    assert again.external_id == result.external_id
    assert await site.marked(element) == [int(result.external_id)]


async def test_a_story_whose_text_is_emptied_empties_the_post_and_one_without_text_keeps_it(
    make_channel: ChannelFactory, site: Site
) -> None:
    # The post mirrors a text Kordiam holds: before, an update with an emptied text or lead left the old ones online.
    channel, slug = make_channel(), unique()
    element = story(slug)
    created = await upsert(channel, site, element)
    emptied = story(slug, text="<p></p>", lead=None)
    emptied = emptied.model_copy(update={"id": element.id})
    await upsert(channel, site, emptied, created.external_id)
    post = await site.must_post(created.external_id)
    assert (post["content"]["raw"], post["excerpt"]["raw"]) == ("<p></p>" + marker_of(element), "")

    # A story whose text Kordiam does not hold (written in WordPress) keeps the post's body and excerpt.
    await upsert(channel, site, element, created.external_id)
    kept = await site.must_post(created.external_id)
    removed = element.model_copy(update={"tasks": []})
    await upsert(channel, site, removed, created.external_id)
    post = await site.must_post(created.external_id)
    assert (post["content"]["raw"], post["excerpt"]["raw"]) == (kept["content"]["raw"], "A short lead.")
    assert post["title"]["raw"] == f"Planning title {slug}", "the headline went with the text task"


async def test_hostile_html_never_reaches_wordpress(make_channel: ChannelFactory, site: Site) -> None:
    hostile = (
        '<p onclick="steal()">Hello <script>alert("x")</script><a href="javascript:alert(1)">click</a></p>'
        "<style>body{display:none}</style>"
        '<img src="https://img.example/a.jpg" onerror="alert(2)" alt="A">'
        '<iframe src="https://evil.example/"></iframe><a href=" JAVASCRIPT:alert(3)">x</a>'
    )
    result = await upsert(
        make_channel(), site, story(unique(), headline='<img src=x onerror="alert(4)">Headline', text=hostile)
    )
    post = await site.must_post(result.external_id)
    stored = (post["content"]["raw"] + post["title"]["raw"] + post["excerpt"]["raw"]).lower()
    for needle in ("<script", "alert(", "javascript:", "onclick", "onerror", "<style", "display:none", "<iframe"):
        assert needle not in stored, (needle, post["content"]["raw"])
    assert '<img src="https://img.example/a.jpg" alt="A">' in post["content"]["raw"]
    assert post["title"]["raw"] == "Headline"


async def test_non_latin_and_emoji_round_trip(make_channel: ChannelFactory, site: Site) -> None:
    headline = "Тест: 東京で会議 — مرحبا 🎉👩🏽‍💻"
    text = '<p lang="ar" dir="rtl">مرحبا بالعالم</p><p>Zürich, Ελλάδα, 中文, हिन्दी 🚀🇺🇦</p>'
    lead = "Kurz: Grüße aus 🌍"
    element = story(unique(), headline=headline, text=text, lead=lead)
    result = await upsert(make_channel(), site, element)
    post = await site.must_post(result.external_id)
    assert post["title"]["raw"] == headline
    assert post["content"]["raw"] == text + marker_of(element)
    assert post["excerpt"]["raw"] == lead


# --- credentials, categories, authors, routes -----------------------------------------------------------------


async def test_wrong_app_password_is_rejected_naming_the_channel(make_channel: ChannelFactory) -> None:
    channel = make_channel(app_password="abcd efgh ijkl mnop qrst uvwx")
    element = story(unique())
    expected = r"wordpress channel 'wp-test'.*check username and app_password"
    with pytest.raises(ChannelRejected, match=expected) as raised:
        await channel.upsert(element, element.publications[0], None)
    assert "abcd" not in str(raised.value)


async def test_category_created_on_demand_and_reused(make_channel: ChannelFactory, site: Site) -> None:
    name = unique("Kultur & Medien")
    channel = make_channel(create_missing_categories=True)
    result = await upsert(channel, site, story(unique(), category=(4711, name)))
    post = await site.must_post(result.external_id)
    [category_id] = post["categories"]
    site.categories.add(category_id)
    assert (await site.category(category_id))["name"] == name.replace("&", "&amp;")

    # A fresh channel (empty cache) finds the same category instead of making a second one.
    other = make_channel(create_missing_categories=True)
    result = await upsert(other, site, story(unique(), category=(4711, name.upper())))
    assert (await site.must_post(result.external_id))["categories"] == [category_id]


async def test_unmapped_category_without_creation_is_left_alone(make_channel: ChannelFactory, site: Site) -> None:
    result = await upsert(make_channel(), site, story(unique(), category=(4712, unique("Nowhere"))))
    assert (await site.must_post(result.external_id))["categories"] == [1]  # WordPress's default category


async def test_category_map_to_missing_name_is_rejected(make_channel: ChannelFactory) -> None:
    channel = make_channel(category_map={"Lokal": unique("Missing")})
    element = story(unique(), category=(4713, "Lokal"))
    with pytest.raises(ChannelRejected, match="does not exist in WordPress"):
        await channel.upsert(element, element.publications[0], None)


async def test_category_map_to_missing_id_is_rejected_before_any_post(make_channel: ChannelFactory, site: Site) -> None:
    # WordPress itself takes an unknown category id without a word and files the post under no category at all.
    missing = await site.new_category(unique("Gone"))
    await site.client.delete(f"categories/{missing}", params={"force": "true"})
    channel = make_channel(category_map={"Lokal": missing})
    element = story(unique(), category=(4715, "Lokal"))
    with pytest.raises(ChannelRejected, match=f"category id {missing} .*does not exist in WordPress"):
        await channel.upsert(element, element.publications[0], None)
    assert await site.marked(element) == []


async def test_author_by_email_else_default(make_channel: ChannelFactory, site: Site, creds: dict[str, Any]) -> None:
    channel = make_channel()
    result = await upsert(channel, site, story(unique(), email=creds["author_email"].upper()))
    assert (await site.must_post(result.external_id))["author"] == creds["author_id"]

    fallback = make_channel(default_author=creds["author_id"])
    result = await upsert(fallback, site, story(unique(), email=f"{unique('nobody')}@example.test"))
    assert (await site.must_post(result.external_id))["author"] == creds["author_id"]

    result = await upsert(channel, site, story(unique(), email=f"{unique('nobody')}@example.test"))
    assert (await site.must_post(result.external_id))["author"] != creds["author_id"]  # the API user


async def test_query_style_rest_route(make_channel: ChannelFactory, site: Site) -> None:
    channel = make_channel(rest_route="query")
    element = story(unique(), status=(READY, "Ready"))
    result = await upsert(channel, site, element)
    assert channel._route is not None and channel._route.style == "query"
    assert (await site.must_post(result.external_id))["status"] == "publish"
    await channel.delete(element.id, element.publications[0].id, result.external_id)
    assert (await site.must_post(result.external_id))["status"] == "trash"


async def test_pages_post_type(make_channel: ChannelFactory, site: Site) -> None:
    channel = make_channel(post_type="page", create_missing_categories=True)
    element = story(unique(), category=(4714, unique("Ignored")))
    result = await channel.upsert(element, element.publications[0], None)
    try:
        page = (await site.client.get(f"pages/{result.external_id}", params={"context": "edit"})).json()
        assert page["title"]["raw"] == "Council approves budget"
        assert "categories" not in page
    finally:
        await site.client.delete(f"pages/{result.external_id}", params={"force": "true"})


async def test_unknown_post_type_is_rejected(make_channel: ChannelFactory) -> None:
    channel = make_channel(post_type="no_such_type")
    element = story(unique())
    with pytest.raises(ChannelRejected, match="post type 'no_such_type' is not available"):
        await channel.upsert(element, element.publications[0], None)

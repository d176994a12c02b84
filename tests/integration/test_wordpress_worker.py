"""A story's life in Kordiam ends in the matching post state in a real WordPress, through the whole worker:
simulator → SQS → worker → WordPress → feedback (post id, both links, published) back in Kordiam."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.admin.replay import replay
from bridge.config import Settings
from bridge.simulator import RunningSimulator
from bridge.state.sqlite import SqliteStateStore
from tests.support import SimulatorAdmin, SqsEndpoint, drain, eventually, queue_settled, running_worker, send, story

CREDENTIALS_ENV = "BRIDGE_TEST_WORDPRESS"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not os.environ.get(CREDENTIALS_ENV),
        reason=f'{CREDENTIALS_ENV} is not set: run scripts/wordpress.sh start && eval "$(scripts/wordpress.sh env)"',
    ),
]


@pytest.fixture
async def wordpress() -> AsyncIterator[tuple[dict[str, Any], httpx.AsyncClient]]:
    creds: dict[str, Any] = json.loads(Path(os.environ[CREDENTIALS_ENV]).read_text())
    async with httpx.AsyncClient(
        base_url=f"{creds['url']}/wp-json/wp/v2/", auth=(creds["username"], creds["app_password"]), timeout=15
    ) as client:
        yield creds, client


def settings(creds: dict[str, Any], queue: str, endpoint: str, kordiam: str, workdir: Path) -> Settings:
    return Settings(
        queue={
            "url": queue,
            "endpoint_url": endpoint,
            "concurrency": 4,
            "wait_time_seconds": 1,
            "visibility_timeout": 20,
            "retry_base_seconds": 1,
            "retry_max_seconds": 2,
            "shutdown_timeout": 10,
        },
        kordiam={"base_url": kordiam, "client_id": "demo-client", "client_secret": "demo-secret"},
        state={"url": f"sqlite:///{workdir / 'state.db'}"},
        channels=[
            {
                "name": "website",
                "type": "wordpress",
                "platforms": [99003],
                "url": creds["url"],
                "username": creds["username"],
                "app_password": creds["app_password"],
                "status_map": {"Accepted": "publish", "Published": "publish"},
                "create_missing_categories": True,
            }
        ],
        ops={"port": 0},
    )


async def test_story_life_in_wordpress(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    wordpress: tuple[dict[str, Any], httpx.AsyncClient],
    tmp_path: Path,
) -> None:
    creds, wp = wordpress
    slug = f"bridge-{uuid.uuid4().hex[:10]}"
    later = datetime.now(UTC) + timedelta(days=2)
    body = story("Harbour reopens", platforms=(99003,))
    body["slug"] = slug
    body["publications"][0]["schedule"] = {
        "kind": "single",
        "date": later.date().isoformat(),
        "timing": {"type": "time", "time": "10:00"},
    }
    body["tasks"][0]["content"]["text"] = '<p onclick="x()">Ships are back.<script>alert(1)</script></p>'

    async def post_of(element_id: int) -> dict[str, Any] | None:
        element = await admin.get(element_id)
        post_id = element["publications"][0].get("externalId")
        if not post_id:
            return None
        response = await wp.get(f"posts/{post_id}", params={"context": "edit"})
        return response.json() if response.status_code == 200 else None

    async with running_worker(settings(creds, queues[0], sqs_endpoint.url, simulator.base_url, tmp_path)):
        # 1. Created with an unmapped status ("No Status"): a draft, dated, never published.
        element_id = (await admin.create(body))["id"]
        await eventually(lambda: _has(post_of(element_id)), what="draft post")
        post = await post_of(element_id)
        assert post is not None and post["status"] == "draft" and post["slug"] == slug
        assert post["title"]["raw"] == "Harbour reopens"
        assert "<script" not in post["content"]["raw"] and "onclick" not in post["content"]["raw"]
        assert post["date_gmt"].startswith(f"{later.date().isoformat()}T10:00")
        element = await admin.get(element_id)
        publication = element["publications"][0]
        assert publication["cms"]["editLink"] == f"{creds['url']}/wp-admin/post.php?post={post['id']}&action=edit"
        assert publication["cms"]["openLink"] == post["link"]
        assert element["externalElement"]["externalId"] == str(post["id"])

        # 2. Accepted (mapped to publish) with a date ahead: scheduled ("future").
        element["publications"][0]["status"] = {"id": 3, "name": "Accepted"}
        element["tasks"][0]["content"]["headline"] = "Harbour reopens after storm"
        await admin.replace(element_id, element)
        await eventually(lambda: _status(post_of(element_id), "future"), what="scheduled post")
        post = await post_of(element_id)
        assert post is not None and post["title"]["raw"] == "Harbour reopens after storm"

        # 3. The date is removed: published now, live, and Kordiam's publication is published by the bridge.
        element = await admin.get(element_id)
        element["publications"][0].pop("schedule", None)
        await admin.replace(element_id, element)
        await eventually(lambda: _status(post_of(element_id), "publish"), what="published post")

        async def published_in_kordiam() -> bool:
            return "published" in (await admin.get(element_id))["publications"][0]

        await eventually(published_in_kordiam, what="publication published in Kordiam")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="queue settled")

        # 4. Duplicate and re-ordered notifications: still one post.
        await admin.notify(element_id, "created")
        send(sqs_endpoint.url, queues[0], {**(await admin.get(element_id)), "modificationDate": "2020-01-01T00:00:00Z"})
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="duplicates processed")
        found = (await wp.get("posts", params={"slug": slug, "status": "any", "context": "edit"})).json()
        assert len(found) == 1

        # 5. Deleted in Kordiam: the post goes to the trash.
        post_id = found[0]["id"]
        await admin.delete(element_id)

        async def trashed() -> bool:
            response = await wp.get(f"posts/{post_id}", params={"context": "edit"})
            return response.status_code == 200 and response.json()["status"] == "trash"

        await eventually(trashed, what="post in the trash")
    assert drain(sqs_endpoint.url, queues[1]) == []
    await wp.delete(f"posts/{post_id}", params={"force": "true"})


async def _has(post: Any) -> bool:
    return (await post) is not None


async def _status(post: Any, status: str) -> bool:
    found = await post
    return found is not None and found["status"] == status


async def test_replay_force_recreates_a_post_deleted_in_wordpress_and_writes_the_feedback(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    wordpress: tuple[dict[str, Any], httpx.AsyncClient],
    tmp_path: Path,
) -> None:
    """WordPress does not tell the bridge that a post was deleted: plain replay finds the fingerprint unchanged
    and leaves it missing; --force writes it again, and Kordiam learns the new post id."""
    creds, wp = wordpress
    worker_settings = settings(creds, queues[0], sqs_endpoint.url, simulator.base_url, tmp_path)
    element_id = (await admin.create(story("Deleted behind our back", platforms=(99003,))))["id"]

    async def external_id() -> str | None:
        value = (await admin.get(element_id))["publications"][0].get("externalId")
        return str(value) if value else None

    async with running_worker(worker_settings):
        await eventually(lambda: _has(external_id()), what="post created")
        first = await external_id()
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="feedback settled")
        assert (await wp.delete(f"posts/{first}", params={"force": "true"})).status_code == 200

        await replay(worker_settings.queue, [element_id])
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="plain replay processed")
        assert (await wp.get(f"posts/{first}", params={"context": "edit"})).status_code == 404
        assert await external_id() == first

        await replay(worker_settings.queue, [element_id], force=True)
        await eventually(lambda: _changed(external_id(), first), what="post recreated, feedback written")
    second = await external_id()
    post = (await wp.get(f"posts/{second}", params={"context": "edit"})).json()
    assert post["title"]["raw"] == "Deleted behind our back"
    assert drain(sqs_endpoint.url, queues[1]) == []


async def _changed(value: Any, old: str | None) -> bool:
    return (await value) not in (None, old)


async def test_a_wrong_app_password_parks_the_stories_and_a_restart_with_the_right_one_publishes_each_once(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    wordpress: tuple[dict[str, Any], httpx.AsyncClient],
    tmp_path: Path,
) -> None:
    """A revoked or mistyped application password is the bridge's own fault: the stories are parked, not
    dead-lettered, and once the worker runs with the right password they are requeued and published."""
    creds, wp = wordpress
    wrong = {**creds, "app_password": "abcd EFGH ijkl MNOP qrst UVWX"}
    titles = [f"Parked story {uuid.uuid4().hex[:8]}" for _ in range(3)]
    ids = [(await admin.create(story(title, platforms=(99003,))))["id"] for title in titles]

    async with running_worker(settings(wrong, queues[0], sqs_endpoint.url, simulator.base_url, tmp_path)):
        state = SqliteStateStore(tmp_path / "state.db")

        async def all_parked() -> bool:
            return [p.element_id for p in await state.parked("website")] == sorted(ids)

        await state.open()
        try:
            await eventually(all_parked, what="every story parked for the website")
        finally:
            await state.close()
    assert drain(sqs_endpoint.url, queues[1]) == []  # nothing dead-lettered for the bridge's own secret
    for title in titles:
        assert (await wp.get("posts", params={"search": title, "status": "any", "context": "edit"})).json() == []

    async def published(title: str) -> bool:
        found = (await wp.get("posts", params={"search": title, "status": "any", "context": "edit"})).json()
        return len(found) == 1

    async with running_worker(settings(creds, queues[0], sqs_endpoint.url, simulator.base_url, tmp_path)):
        for title in titles:
            await eventually(lambda title=title: published(title), what=f"{title} published")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="queue settled")
    state = SqliteStateStore(tmp_path / "state.db")
    await state.open()
    try:
        assert await state.parked_count("website") == 0
    finally:
        await state.close()
    assert drain(sqs_endpoint.url, queues[1]) == []
    for element_id in ids:
        post_id = (await admin.get(element_id))["publications"][0].get("externalId")
        assert post_id  # the feedback reached Kordiam
        await wp.delete(f"posts/{post_id}", params={"force": "true"})

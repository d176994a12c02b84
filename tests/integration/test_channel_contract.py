"""One contract suite over every channel adapter, each against its real or test server (as the state stores have).

What the ``Channel`` Protocol (``bridge/channels/base.py``) promises, checked the same way for all: an upsert
repeated with the external id it returned updates the one item; a delete of an item that is not there (or no
longer there) is done; a target that does not answer is ``ChannelUnavailable`` (retried); refused credentials
are ``ChannelRejected`` (not retried). Every channel is built through the registry (``build_channel``), as the
worker builds it. Adapters whose remote item is found again after a lost answer (a deterministic name, a marker)
are also checked for that, with a fresh channel standing for a restarted worker; those that implement
``FindsItems`` for finding such an item by its element, until it is retracted.

Targets: folder and NewsML on a tmp folder, NewsML on moto S3, Mailchimp on ``tests/servers/mailchimp.py``, the
Global Export and Platform integration protocols on ``tests/servers/``, WordPress on the real WordPress when
``BRIDGE_TEST_WORDPRESS`` names its credentials (else those cases skip, saying so).
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from bridge.channels import Channel, ChannelContext, FindsItems, FoundItem, build_channel
from bridge.config import ChannelSettings
from bridge.errors import ChannelRejected, ChannelUnavailable
from bridge.http import HttpClient
from bridge.kordiam.models import Element, Publication
from tests.servers.global_export import GlobalExportServer
from tests.servers.mailchimp import RunningMailchimp
from tests.servers.platform_integration import PlatformIntegrationServer
from tests.support import REGION, story

pytestmark = pytest.mark.integration

PLATFORM = 99003
WORDPRESS_ENV = "BRIDGE_TEST_WORDPRESS"
MAILCHIMP_KEY = "test-key-us21"
ADAPTERS = ["folder", "wordpress", "newsml-folder", "newsml-s3", "mailchimp", "kordiam-webhook", "kordiam-platform"]
_ids = itertools.count(int(uuid.uuid4().int % 10_000) * 1000 + 7000)


@dataclass
class Adapter:
    """One adapter against its server: its ``[[channels]]`` table, and how to count the items it made there."""

    table: dict[str, Any]
    items: Callable[[Element], Awaitable[int]]
    # Option overrides that point it at nothing / at refused credentials; a string says why the case does not apply.
    unreachable: dict[str, Any] | str
    refused: dict[str, Any] | str
    # The item of a create whose answer was lost is found again (a deterministic name, a marker in the content).
    finds_lost_create: bool
    missing_id: str
    cleanup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def element() -> Element:
    data = story(f"Contract {uuid.uuid4().hex[:8]}", platforms=(PLATFORM,))
    data.update(id=next(_ids), version=1, modificationDate="2026-11-20T10:00:00Z")
    data["tasks"][0]["id"] = next(_ids)
    data["publications"][0]["id"] = next(_ids)
    return Element.model_validate(data)


# --- servers (one per module; moto is the session's moto_url) ---------------------------------------------------


@pytest.fixture(scope="module")
def mailchimp() -> Iterator[RunningMailchimp]:
    with RunningMailchimp() as running:
        yield running


@pytest.fixture(scope="module")
def global_export() -> Iterator[GlobalExportServer]:
    with GlobalExportServer("bearer") as server:
        yield server


@pytest.fixture(scope="module")
def platform_integration() -> Iterator[PlatformIntegrationServer]:
    with PlatformIntegrationServer() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient(max_connections=8, timeout=10)
    yield client
    await client.aclose()


# --- the adapters -------------------------------------------------------------------------------------------------


def _folder(tmp_path: Path) -> Adapter:
    folder = tmp_path / "web"

    async def items(value: Element) -> int:
        return len(list(folder.glob(f"{value.id}-*.json")))

    no_network = "a folder is not reached over a network (files.py's errno reading is tested in test_channel_files)"
    return Adapter(
        {"type": "folder", "path": str(folder)},
        items,
        unreachable=no_network,
        refused="a folder has no credentials (EACCES is read as a share briefly gone: retried)",
        finds_lost_create=True,
        missing_id="1-2",
    )


def _newsml_folder(tmp_path: Path) -> Adapter:
    folder = tmp_path / "print"

    async def items(value: Element) -> int:
        return len(list(folder.glob(f"kordiam-{value.id}-*.xml")))

    return Adapter(
        {"type": "newsml", "target": str(folder)},
        items,
        unreachable="a folder is not reached over a network (files.py's errno reading is tested in test_channel_files)",
        refused="a folder has no credentials",
        finds_lost_create=True,
        missing_id="urn:kordiam:1:2",
    )


def _newsml_s3(moto_s3: str) -> Adapter:
    bucket = f"contract-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_s3)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})

    async def items(value: Element) -> int:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"in/kordiam-{value.id}-")
        return len(listed.get("Contents", []))

    return Adapter(
        {"type": "newsml", "target": f"s3://{bucket}/in/", "endpoint_url": moto_s3, "region": REGION},
        items,
        unreachable={"endpoint_url": f"http://127.0.0.1:{closed_port()}", "timeout": 2},
        refused="moto accepts any AWS credentials (s3_error's reading of AccessDenied is unit-tested in test_newsml)",
        finds_lost_create=True,
        missing_id="urn:kordiam:1:2",
    )


def _mailchimp(server: RunningMailchimp) -> Adapter:
    async def items(value: Element) -> int:
        async with httpx.AsyncClient(timeout=10) as client:
            campaigns = (await client.get(f"{server.url}/_admin/campaigns")).json()
        mark = f"[Kordiam {value.id}/"
        return sum(1 for campaign in campaigns if mark in json.dumps(campaign))

    return Adapter(
        {"type": "mailchimp", "api_key": MAILCHIMP_KEY, "list_id": "list1", "base_url": server.base_url},
        items,
        unreachable={"base_url": f"http://127.0.0.1:{closed_port()}/3.0"},
        refused={"api_key": "wrong-key-us21"},
        finds_lost_create=True,
        missing_id="0000000000",
    )


def _kordiam_webhook(server: GlobalExportServer) -> Adapter:
    async def items(value: Element) -> int:
        return sum(1 for stored in server.elements().values() if stored.get("id") == value.id)

    return Adapter(
        {"type": "kordiam-webhook", "url": server.base_url, "auth": {"type": "bearer", "token": server.token}},
        items,
        unreachable={"url": f"http://127.0.0.1:{closed_port()}/ge"},
        refused={"auth": {"type": "bearer", "token": "not-the-token"}},
        finds_lost_create=False,  # found again within one process only (its memory), not after a restart
        missing_id="999999",
    )


def _kordiam_platform(server: PlatformIntegrationServer) -> Adapter:
    async def items(value: Element) -> int:
        return sum(1 for stored in server.publications().values() if stored.get("id") == value.id)

    return Adapter(
        {
            "type": "kordiam-platform",
            "url": server.base_url,
            "api_user": server.api_user,
            "api_secret": server.api_secret,
        },
        items,
        unreachable={"url": f"http://127.0.0.1:{closed_port()}/wp-json/wp-desk-net/v1"},
        refused={"api_secret": "not-the-secret"},
        finds_lost_create=False,  # the protocol has no look-up: the CMS alone knows its id
        missing_id="999999",
    )


def _wordpress() -> Adapter:
    path = os.environ.get(WORDPRESS_ENV)
    if not path:
        pytest.skip(f'{WORDPRESS_ENV} is not set: run scripts/wordpress.sh start && eval "$(scripts/wordpress.sh env)"')
    creds = json.loads(Path(path).read_text())
    site = httpx.AsyncClient(
        base_url=f"{creds['url']}/wp-json/wp/v2/", auth=(creds["username"], creds["app_password"]), timeout=15
    )
    made: set[int] = set()

    async def items(value: Element) -> int:
        marker = f"kordiam-{value.id}-{value.publications[0].id}"
        found = (await site.get("posts", params={"search": marker, "status": "any", "context": "edit"})).json()
        made.update(post["id"] for post in found)
        return sum(1 for post in found if marker in post["content"]["raw"])

    async def cleanup() -> None:
        for post_id in made:
            await site.delete(f"posts/{post_id}", params={"force": "true"})
        await site.aclose()

    return Adapter(
        {
            "type": "wordpress",
            "url": creds["url"],
            "username": creds["username"],
            "app_password": creds["app_password"],
        },
        items,
        unreachable={"url": f"http://127.0.0.1:{closed_port()}"},
        refused={"app_password": "abcd efgh ijkl mnop qrst uvwx"},
        finds_lost_create=True,
        missing_id="999999",
        cleanup=[cleanup],
    )


@pytest.fixture(params=ADAPTERS)
async def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Adapter]:
    name = request.param
    if name == "folder":
        made = _folder(tmp_path)
    elif name == "newsml-folder":
        made = _newsml_folder(tmp_path)
    elif name == "newsml-s3":
        made = _newsml_s3(request.getfixturevalue("moto_url"))
    elif name == "mailchimp":
        made = _mailchimp(request.getfixturevalue("mailchimp"))
    elif name == "kordiam-webhook":
        made = _kordiam_webhook(request.getfixturevalue("global_export"))
    elif name == "kordiam-platform":
        made = _kordiam_platform(request.getfixturevalue("platform_integration"))
    else:
        made = _wordpress()
    yield made
    for step in made.cleanup:
        await step()


@pytest.fixture
async def build(adapter: Adapter, http: HttpClient) -> AsyncIterator[Callable[..., Channel]]:
    """Builds the adapter through the registry, as the worker does; ``overrides`` replace its options."""
    built: list[Channel] = []

    def make(**overrides: Any) -> Channel:
        table = {**adapter.table, **overrides}
        settings = ChannelSettings(name="contract", platforms=[PLATFORM], **table)
        channel = build_channel(settings, ChannelContext(http=http))
        built.append(channel)
        return channel

    yield make
    for channel in built:
        await channel.aclose()


def only(value: Element) -> Publication:
    return value.publications[0]


# --- the contract -------------------------------------------------------------------------------------------------


async def test_upsert_again_with_its_id_updates_the_one_item(adapter: Adapter, build: Callable[..., Channel]) -> None:
    channel = build()
    value = element()
    first = await channel.upsert(value, only(value), None)
    assert first.external_id
    again = await channel.upsert(value, only(value), first.external_id)
    assert again.external_id == first.external_id
    assert await adapter.items(value) == 1


async def test_a_create_whose_answer_was_lost_is_found_again(adapter: Adapter, build: Callable[..., Channel]) -> None:
    if not adapter.finds_lost_create:
        pytest.skip("this adapter cannot find an item whose create answer was lost (said on its class docstring)")
    value = element()
    first = await build().upsert(value, only(value), None)
    # A restarted worker that never recorded the id: a new channel, no external id.
    second = await build().upsert(value, only(value), None)
    assert second.external_id == first.external_id
    assert await adapter.items(value) == 1


async def test_a_channel_that_searches_finds_an_unrecorded_item_until_it_is_retracted(
    adapter: Adapter, build: Callable[..., Channel]
) -> None:
    channel = build()
    if not isinstance(channel, FindsItems):
        pytest.skip("this adapter cannot search its target for an element's items (it does not implement FindsItems)")
    value = element()
    made = await build().upsert(value, only(value), None)  # made by another worker: this one recorded nothing
    assert await channel.find_items(value.id) == [FoundItem(only(value).id, made.external_id)]
    assert await channel.find_items(value.id + 1) == []
    await channel.delete(value.id, only(value).id, made.external_id)
    assert await channel.find_items(value.id) == []


async def test_delete_of_a_missing_item_is_done(adapter: Adapter, build: Callable[..., Channel]) -> None:
    channel = build()
    await channel.delete(1, 2, adapter.missing_id)
    value = element()
    made = await channel.upsert(value, only(value), None)
    await channel.delete(value.id, only(value).id, made.external_id)
    await channel.delete(value.id, only(value).id, made.external_id)  # already gone


async def test_unreachable_is_transient(adapter: Adapter, build: Callable[..., Channel]) -> None:
    if isinstance(adapter.unreachable, str):
        pytest.skip(adapter.unreachable)
    channel = build(**adapter.unreachable)
    value = element()
    with pytest.raises(ChannelUnavailable):
        await channel.upsert(value, only(value), None)
    with pytest.raises(ChannelUnavailable):
        await channel.delete(value.id, only(value).id, adapter.missing_id)
    if isinstance(channel, FindsItems):
        with pytest.raises(ChannelUnavailable):
            await channel.find_items(value.id)


async def test_refused_credentials_are_permanent(adapter: Adapter, build: Callable[..., Channel]) -> None:
    if isinstance(adapter.refused, str):
        pytest.skip(adapter.refused)
    channel = build(**adapter.refused)
    value = element()
    with pytest.raises(ChannelRejected):
        await channel.upsert(value, only(value), None)

"""``kordiam-webhook`` and ``kordiam-platform`` over real HTTP, through the bridge's own HTTP client (aiohttp),
against receivers built as seeds 001 and 002 describe (``tests/servers``); and once through the whole
worker (SQS, the Kordiam simulator, feedback)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.channels import ChannelContext
from bridge.channels.kordiam_platform import (
    DEFAULT_PLATFORM_STATUSES,
    KordiamPlatformChannel,
    KordiamPlatformOptions,
    platform_publication_body,
    platform_statuses_body,
)
from bridge.channels.kordiam_platform import create as create_platform
from bridge.channels.kordiam_webhook import KordiamWebhookChannel, KordiamWebhookOptions, global_export_body
from bridge.channels.kordiam_webhook import create as create_webhook
from bridge.config import ChannelSettings
from bridge.errors import ChannelRejected, ChannelUnavailable
from bridge.http import HttpClient
from bridge.kordiam.models import Element
from bridge.simulator import RunningSimulator
from tests.fixtures import load
from tests.servers.global_export import GlobalExportServer
from tests.servers.platform_integration import PlatformIntegrationServer
from tests.support import (
    SimulatorAdmin,
    SqsEndpoint,
    drain,
    eventually,
    queue_settled,
    running_worker,
    story,
    worker_settings,
)

pytestmark = pytest.mark.integration

JWT_SECRET = "jwt-shared-secret"


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    """The bridge's own shared client, as the worker passes it in ChannelContext."""
    client = HttpClient(max_connections=8, timeout=5)
    try:
        yield client
    finally:
        await client.aclose()


def auth_table(kind: str, server: GlobalExportServer) -> dict[str, Any]:
    tables: dict[str, dict[str, Any]] = {
        "bearer": {"type": "bearer", "token": server.token},
        "jwt": {"type": "jwt", "secret": server.jwt_secret, "issuer": "kordiam-bridge", "audience": "cms"},
        "api_key": {"type": "api_key", "api_key": server.api_key, "api_secret": server.api_secret},
        "headers": {"type": "headers", "headers": server.expected_headers},
    }
    return tables[kind]


def webhook_channel(
    http: HttpClient,
    server: GlobalExportServer,
    *,
    auth: dict[str, Any] | None = None,
    platforms: tuple[int, ...] = (99999, 4, 99003, 99004),
    main: bool = False,
    url: str | None = None,
) -> KordiamWebhookChannel:
    settings = ChannelSettings(
        name="cms",
        type="kordiam-webhook",
        platforms=list(platforms),
        main=main,
        url=url or server.base_url,
        auth=auth or auth_table(server.auth, server),
    )
    options = KordiamWebhookOptions.model_validate(settings.options)
    channel = create_webhook(settings, options, ChannelContext(http=http))
    assert isinstance(channel, KordiamWebhookChannel)
    return channel


def platform_channel(
    http: HttpClient,
    server: PlatformIntegrationServer,
    *,
    platforms: tuple[int, ...] = (99003,),
    statuses: list[int | str] | None = None,
    **options: Any,
) -> KordiamPlatformChannel:
    settings = ChannelSettings(
        name="website",
        type="kordiam-platform",
        platforms=list(platforms),
        statuses=statuses,
        url=server.base_url,
        api_user=server.api_user,
        api_secret=server.api_secret,
        **options,
    )
    parsed = KordiamPlatformOptions.model_validate(settings.options)
    channel = create_platform(settings, parsed, ChannelContext(http=http))
    assert isinstance(channel, KordiamPlatformChannel)
    return channel


def element(data: dict[str, Any]) -> Element:
    return Element.model_validate(data)


# --- kordiam-webhook -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bearer", "jwt", "api_key", "headers"])
async def test_webhook_every_auth_type_create_update_delete(http: HttpClient, kind: str) -> None:
    with GlobalExportServer(kind, jwt_issuer="kordiam-bridge", jwt_audience="cms", prefix="/kordiam") as server:
        channel = webhook_channel(http, server)
        full = element(load("seed001_full"))
        created = await channel.upsert(full, full.publications[0], None)
        assert server.elements() == {created.external_id: global_export_body(full)}
        updated = await channel.upsert(full, full.publications[0], created.external_id)
        assert updated.external_id == created.external_id
        await channel.delete(full.id, full.publications[0].id, created.external_id)
        assert server.elements() == {}
        assert server.auth_failures == []
        assert [(c.method, c.path, c.status) for c in server.calls(path="/element")] == [
            ("POST", "/element", 201),
            ("PUT", f"/element/{created.external_id}", 200),
            ("DELETE", f"/element/{created.external_id}", 204),
        ]
        post = server.calls("POST", "/element")[0]
        assert post.header("Content-Type") == "application/json;charset=UTF-8"
        if kind == "api_key":
            assert server.token_requests == 1  # one token, cached for all three requests
        if kind == "jwt":
            assert len(server.jwt_claims) == 3 and len({c["jti"] for c in server.jwt_claims}) == 3
            assert all(c["exp"] - c["iat"] == 60 and c["iss"] == "kordiam-bridge" for c in server.jwt_claims)


async def test_webhook_seed_request_examples_create_then_update(http: HttpClient) -> None:
    with GlobalExportServer() as server:
        channel = webhook_channel(http, server)
        first = element(load("seed001_create"))
        created = await channel.upsert(first, first.publications[0], None)
        assert server.elements()[created.external_id] == load("seed001_create")
        second = element(load("seed001_update"))  # the same story, its publication re-planned
        updated = await channel.upsert(second, second.publications[0], None)
        assert updated.external_id == created.external_id  # the element is known: no second remote element
        assert server.elements() == {created.external_id: load("seed001_update")}


async def test_webhook_two_publications_of_one_element_are_one_remote_element(http: HttpClient) -> None:
    with GlobalExportServer() as server:
        channel = webhook_channel(http, server)
        story_element = element(two_publication_element())
        web, app = story_element.publications
        results = [await channel.upsert(story_element, p, None) for p in (web, app)]
        assert results[0].external_id == results[1].external_id
        (remote,) = server.elements().values()
        assert [p["id"] for p in remote["publications"]] == [web.id, app.id]
        assert [c.method for c in server.calls(path="/element")] == ["POST", "PUT"]

        # Removing one publication keeps the remote element; removing the last deletes it.
        await channel.delete(story_element.id, app.id, results[1].external_id)
        (remote,) = server.elements().values()
        assert [p["id"] for p in remote["publications"]] == [web.id]
        await channel.delete(story_element.id, web.id, results[0].external_id)
        assert server.elements() == {}


async def test_webhook_main_channel_finds_its_element_after_a_restart(http: HttpClient) -> None:
    with GlobalExportServer() as server:
        data = two_publication_element()
        first = element({**data, "publications": data["publications"][:1]})
        created = await webhook_channel(http, server, main=True).upsert(first, first.publications[0], None)
        # A new process; Kordiam's element is linked to the remote element (the bridge's feedback did that).
        linked = element({**data, "externalElement": {"externalId": created.external_id}})
        restarted = webhook_channel(http, server, main=True)
        result = await restarted.upsert(linked, linked.publications[1], None)
        assert result.external_id == created.external_id and len(server.elements()) == 1


async def test_webhook_404_on_update_creates_again(http: HttpClient) -> None:
    with GlobalExportServer() as server:
        channel = webhook_channel(http, server)
        seed = element(load("seed001_create"))
        created = await channel.upsert(seed, seed.publications[0], None)
        server.remove(created.external_id)  # deleted by hand in the CMS
        again = await webhook_channel(http, server).upsert(seed, seed.publications[0], created.external_id)
        assert again.external_id != created.external_id
        assert list(server.elements()) == [again.external_id]
        assert [(c.method, c.status) for c in server.calls(path="/element")][-2:] == [("PUT", 404), ("POST", 201)]
        await channel.delete(seed.id, seed.publications[0].id, created.external_id)  # already gone: fine


async def test_webhook_delete_on_a_path_the_receiver_does_not_route_is_not_counted_as_deleted(
    http: HttpClient,
) -> None:
    # Before: the receiver's "no route" 404 counted as "already deleted", and the element stayed in the CMS.
    with GlobalExportServer() as server:
        seed = element(load("seed001_create"))
        created = await webhook_channel(http, server).upsert(seed, seed.publications[0], None)
        misrouted = webhook_channel(http, server, url=f"{server.base_url}/v2")
        with pytest.raises(ChannelUnavailable, match=r"HTTP 404 no route DELETE /v2/element/.*check url"):
            await misrouted.delete(seed.id, seed.publications[0].id, created.external_id)
        assert list(server.elements()) == [created.external_id]
        await webhook_channel(http, server).delete(seed.id, seed.publications[0].id, created.external_id)
        assert server.elements() == {}


@pytest.mark.parametrize(
    ("kind", "wrong", "hint"),
    [
        ("bearer", {"type": "bearer", "token": "bad-s3cret"}, "auth.token"),
        ("jwt", {"type": "jwt", "secret": "bad-s3cret"}, "auth.secret"),
        ("api_key", {"type": "api_key", "api_key": "ge-api-key", "api_secret": "bad-s3cret"}, "auth.api_key"),
        ("headers", {"type": "headers", "headers": {"X-Api-Key": "bad-s3cret"}}, "auth.headers"),
    ],
)
async def test_webhook_wrong_credentials_are_rejected_naming_the_channel(
    http: HttpClient, kind: str, wrong: dict[str, Any], hint: str
) -> None:
    with GlobalExportServer(kind) as server:
        channel = webhook_channel(http, server, auth=wrong)
        seed = element(load("seed001_create"))
        with pytest.raises(ChannelRejected) as error:
            await channel.upsert(seed, seed.publications[0], None)
        message = str(error.value)
        assert "kordiam-webhook channel 'cms'" in message and "HTTP 401" in message and hint in message
        assert "s3cret" not in message  # no secret in the message
        assert server.elements() == {}


async def test_webhook_api_key_token_is_renewed_on_expiry_and_on_401(http: HttpClient) -> None:
    with GlobalExportServer("api_key", token_ttl=1) as server:
        channel = webhook_channel(http, server)
        seed = element(load("seed001_create"))
        created = await channel.upsert(seed, seed.publications[0], None)
        await asyncio.sleep(1.1)  # past expires_in
        await channel.upsert(seed, seed.publications[0], created.external_id)
        assert server.token_requests == 2 and server.auth_failures == []

    with GlobalExportServer("api_key") as server:
        channel = webhook_channel(http, server)
        created = await channel.upsert(seed, seed.publications[0], None)
        server.revoke_tokens()  # the CMS replaced its tokens
        await channel.upsert(seed, seed.publications[0], created.external_id)
        assert server.token_requests == 2
        assert [c.status for c in server.calls("PUT")] == [401, 200]


async def test_webhook_transient_failures_are_unavailable(http: HttpClient) -> None:
    with GlobalExportServer() as server:
        channel = webhook_channel(http, server)
        seed = element(load("seed001_create"))
        server.fail_next(1, 503, retry_after="7")
        with pytest.raises(ChannelUnavailable) as error:
            await channel.upsert(seed, seed.publications[0], None)
        assert error.value.retry_after == 7.0 and "'cms'" in str(error.value)
        server.fail_next(1, 429, body={"message": "rate limited"})
        with pytest.raises(ChannelUnavailable, match="rate limited"):
            await channel.upsert(seed, seed.publications[0], None)
        server.fail_next(1, 400, body={"message": "slug must be unique"})
        with pytest.raises(ChannelRejected, match="slug must be unique"):
            await channel.upsert(seed, seed.publications[0], None)
        # The queue's retry then succeeds, creating the element once.
        created = await channel.upsert(seed, seed.publications[0], None)
        assert list(server.elements()) == [created.external_id]

    short = HttpClient(max_connections=2, timeout=0.5)
    try:
        with GlobalExportServer() as server:
            server.stall_next(2.0)
            with pytest.raises(ChannelUnavailable, match="unreachable"):
                await webhook_channel(short, server).upsert(seed, seed.publications[0], None)
            url = server.base_url
        settings = ChannelSettings(
            name="cms", type="kordiam-webhook", platforms=[1], url=url, auth={"type": "bearer", "token": "t0ken-value"}
        )
        gone = create_webhook(settings, KordiamWebhookOptions.model_validate(settings.options), ChannelContext(short))
        with pytest.raises(ChannelUnavailable, match="unreachable"):
            await gone.upsert(seed, seed.publications[0], None)  # the server is stopped: connection refused
    finally:
        await short.aclose()


# --- kordiam-platform ------------------------------------------------------------------------------------------


async def test_platform_create_update_delete_with_seed_body_and_links(http: HttpClient) -> None:
    with PlatformIntegrationServer() as server:
        channel = platform_channel(http, server, statuses=["Published", "Top story", "Proposal", "No Status"])
        seed = element(load("seed002_publication"))
        created = await channel.upsert(seed, seed.publications[0], None)
        links = server.links(created.external_id)
        assert created.edit_link == links["cmsEditLink"] and created.open_link == links["cmsOpenLink"]
        assert (created.edit_link_title, created.open_link_title) == ("Edit post", "View post")
        stored = server.publications()[created.external_id]
        assert {k: v for k, v in stored.items() if k in load("seed002_publication")} == load("seed002_publication")
        assert stored == platform_publication_body(seed, seed.publications[0], None)
        assert server.statuses() == [load("seed002_statuses")]

        updated = await channel.upsert(seed, seed.publications[0], created.external_id)
        assert updated.external_id == created.external_id
        assert server.publications()[created.external_id]["post_id"] == int(created.external_id)
        await channel.delete(seed.id, seed.publications[0].id, created.external_id)
        await channel.delete(seed.id, seed.publications[0].id, created.external_id)  # 404: already gone
        assert server.publications() == {}
        assert server.token_requests == 1 and len(server.statuses()) == 1
        token_call = server.calls(path="/oauth2/token")[0]
        assert (
            token_call.header("Authorization")
            == "Basic YXBpXzVkNGJlMDM5NDQwYTkwMDQxMjYyMTU6NWQ0YmUwMzk0NDBjNTQ3OTkwNjM2OQ=="
        )
        assert token_call.form["grant_type"] == "client_credentials"


async def test_platform_statuses_are_posted_once_per_start(http: HttpClient) -> None:
    with PlatformIntegrationServer() as server:
        channel = platform_channel(http, server, platforms=(99003, 99004))
        data = two_publication_element()
        elements = [element({**data, "id": 400 + n}) for n in range(6)]
        await asyncio.gather(*(channel.upsert(e, e.publications[0], None) for e in elements))
        assert len(server.publications()) == 6
        expected = [platform_statuses_body(p, DEFAULT_PLATFORM_STATUSES, None) for p in (99003, 99004)]
        assert server.statuses() == expected
        assert [c.path for c in server.calls()][:3] == ["/oauth2/token", "/statuses", "/statuses"]
        # A restart (or a config change, which needs one) sends them again.
        await platform_channel(http, server).delete(1, 2, "999")
        assert len(server.statuses()) == 3


async def test_platform_404_on_update_creates_again(http: HttpClient) -> None:
    with PlatformIntegrationServer() as server:
        channel = platform_channel(http, server)
        seed = element(load("seed002_publication"))
        created = await channel.upsert(seed, seed.publications[0], None)
        server.remove(created.external_id)
        again = await channel.upsert(seed, seed.publications[0], created.external_id)
        assert again.external_id != created.external_id
        assert again.edit_link == server.links(again.external_id)["cmsEditLink"]
        assert list(server.publications()) == [again.external_id]


async def test_platform_wrong_credentials_are_rejected_naming_the_channel(http: HttpClient) -> None:
    with PlatformIntegrationServer() as server:
        channel = platform_channel(http, server)  # configured with the secret the connector had
        server.api_secret = "rotated-in-the-cms"
        seed = element(load("seed002_publication"))
        with pytest.raises(ChannelRejected) as error:
            await channel.upsert(seed, seed.publications[0], None)
        message = str(error.value)
        assert "kordiam-platform channel 'website'" in message and "Invalid API user or secret" in message
        assert "api_user and api_secret" in message and "5d4be039440c5479906369" not in message
        assert server.publications() == {} and server.statuses() == []


async def test_platform_tokens_cached_renewed_or_fetched_per_request(http: HttpClient) -> None:
    seed = element(load("seed002_publication"))
    with PlatformIntegrationServer() as server:
        channel = platform_channel(http, server)
        created = await channel.upsert(seed, seed.publications[0], None)
        server.revoke_tokens()
        await channel.upsert(seed, seed.publications[0], created.external_id)
        assert server.token_requests == 2
        assert [c.status for c in server.calls("PUT")] == [401, 200]

    with PlatformIntegrationServer() as server:
        channel = platform_channel(http, server, token_cache=False)  # exactly as Kordiam does
        created = await channel.upsert(seed, seed.publications[0], None)
        await channel.upsert(seed, seed.publications[0], created.external_id)
        assert server.token_requests == 3  # /statuses, POST, PUT


async def test_platform_failures_and_a_connector_without_statuses(http: HttpClient) -> None:
    seed = element(load("seed002_publication"))
    with PlatformIntegrationServer(statuses_supported=False, prefix="/api/v1/kordiam-integration") as server:
        channel = platform_channel(http, server)
        server.fail_next(1, 503, retry_after="3", path="/publication")
        with pytest.raises(ChannelUnavailable) as error:
            await channel.upsert(seed, seed.publications[0], None)
        assert error.value.retry_after == 3.0
        server.fail_next(1, 422, body={"code": "invalid", "message": "category unknown"}, path="/publication")
        with pytest.raises(ChannelRejected, match="category unknown"):
            await channel.upsert(seed, seed.publications[0], None)
        created = await channel.upsert(seed, seed.publications[0], None)
        assert list(server.publications()) == [created.external_id]
        assert [c.status for c in server.calls(path="/statuses")] == [404]  # asked once, then skipped

    with PlatformIntegrationServer(token_path="/oauth/token") as server:  # Livingdocs' token path
        channel = platform_channel(http, server, token_path="oauth/token")
        assert (await channel.upsert(seed, seed.publications[0], None)).external_id in server.publications()


async def test_webhook_update_answered_with_something_that_is_not_json_is_done(http: HttpClient) -> None:
    # Seed 001 gives only the POST an answer ({"id": …}); Kordiam reads nothing of a PUT's, so a receiver may
    # answer it with a page or "OK". The update was made: it must not be reported as refused.
    with GlobalExportServer(put_answer=b"<html><body>OK</body></html>") as server:
        channel = webhook_channel(http, server)
        seed = element(load("seed001_create"))
        created = await channel.upsert(seed, seed.publications[0], None)
        changed = element({**load("seed001_create"), "title": "Changed"})
        updated = await webhook_channel(http, server).upsert(changed, changed.publications[0], created.external_id)
        assert updated.external_id == created.external_id
        assert server.elements()[created.external_id]["title"] == "Changed"


# --- through the worker ----------------------------------------------------------------------------------------


def two_publication_element() -> dict[str, Any]:
    return {
        "id": 301,
        "title": "Budget passes",
        "slug": "budget-passes",
        "elementStatus": {"id": 2, "name": "Accepted"},
        "tasks": [
            {
                "id": 501,
                "format": {"id": 1, "name": "Text"},
                "status": {"id": 2, "name": "Received"},
                "user": {"id": 3, "email": "anna@example.org"},
                "content": {"headline": "Budget passes", "text": "<p>Body</p>"},
            }
        ],
        "publications": [
            {
                "id": 701 + index,
                "status": {"id": 1, "name": "No Status"},
                "platform": {"id": platform},
                "schedule": {"kind": "single", "date": "2026-11-23", "timing": {"type": "time", "time": "19:30"}},
                "assignedTaskIds": [501],
            }
            for index, platform in enumerate((99003, 99004))
        ],
    }


async def test_worker_end_to_end_with_both_protocol_channels(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    tmp_path: Path,
) -> None:
    with GlobalExportServer("jwt") as archive, PlatformIntegrationServer() as website:
        base = worker_settings(queue=queues[0], endpoint=sqs_endpoint.url, kordiam=simulator.base_url, workdir=tmp_path)
        channels = [
            ChannelSettings(
                name="website",
                type="kordiam-platform",
                platforms=[99003],
                main=True,
                url=website.base_url,
                api_user=website.api_user,
                api_secret=website.api_secret,
            ),
            ChannelSettings(
                name="archive",
                type="kordiam-webhook",
                platforms=[99003, 99004],
                url=archive.base_url,
                auth={"type": "jwt", "secret": archive.jwt_secret},
            ),
        ]
        settings = base.model_copy(update={"channels": channels})

        async with running_worker(settings):
            created = await admin.create(story("Budget passes"))
            element_id = created["id"]
            web_pub, print_pub = (p["id"] for p in created["publications"])

            async def fed_back() -> bool:
                current = await admin.get(element_id)
                return all(p.get("externalId") for p in current["publications"]) and "externalElement" in current

            await eventually(fed_back, what="feedback in Kordiam")
            await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="queue to settle after create")
            current = await admin.get(element_id)
            (cms_id,) = website.publications()
            (archive_id,) = archive.elements()
            web, printed = current["publications"]
            assert web["externalId"] == cms_id and web["cms"]["editLink"] == website.links(cms_id)["cmsEditLink"]
            assert printed["externalId"] == archive_id  # the archive speaks for the print publication
            assert current["externalElement"]["externalId"] == cms_id  # the website channel is main
            assert [p["id"] for p in archive.elements()[archive_id]["publications"]] == [web_pub, print_pub]
            assert website.publications()[cms_id]["publication"]["id"] == web_pub

            await admin.replace(element_id, {**current, "title": "Budget passes after all"})
            await eventually(
                lambda: archive.elements().get(archive_id, {}).get("title") == "Budget passes after all",
                what="the title update in the archive",
            )
            await eventually(
                lambda: website.publications().get(cms_id, {}).get("title") == "Budget passes after all",
                what="the title update on the website",
            )
            await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="queue to settle after update")
            assert list(archive.elements()) == [archive_id] and list(website.publications()) == [cms_id]

            await admin.delete(element_id)
            await eventually(lambda: not archive.elements() and not website.publications(), what="retraction")
            await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="queue to settle after delete")

        assert len(website.statuses()) == 1 and website.token_requests == 1
        assert archive.auth_failures == [] and len(archive.calls("POST")) == 1
    assert drain(sqs_endpoint.url, queues[1]) == []


async def test_a_restarted_worker_adds_a_publication_to_the_same_remote_element(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    tmp_path: Path,
) -> None:
    # The Global Export is element-level: after a restart (or on another worker) the channel's memory is empty,
    # so only the shared state store can say which remote element a new publication belongs to.
    with GlobalExportServer() as cms:
        base = worker_settings(queue=queues[0], endpoint=sqs_endpoint.url, kordiam=simulator.base_url, workdir=tmp_path)
        archive = ChannelSettings(
            name="archive",
            type="kordiam-webhook",
            platforms=[99003, 99004],
            url=cms.base_url,
            auth={"type": "bearer", "token": cms.token},
        )
        settings = base.model_copy(update={"channels": [archive]})

        async with running_worker(settings):
            created = await admin.create(story("One platform first", platforms=(99003,)))
            await eventually(lambda: len(cms.elements()) == 1, what="the remote element")
            await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="first sync settled")
        (remote_id,) = cms.elements()

        async with running_worker(settings):  # a new process: a new channel with an empty memory
            current = await admin.get(created["id"])
            second = {**current["publications"][0], "platform": {"id": 99004}}
            second.pop("id")
            second.pop("externalId", None)
            second.pop("cms", None)
            await admin.replace(created["id"], {**current, "publications": [*current["publications"], second]})
            await eventually(
                lambda: len(cms.elements().get(remote_id, {}).get("publications", [])) == 2,
                what="the second publication on the same remote element",
            )
            await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="second sync settled")
        assert list(cms.elements()) == [remote_id]
        element = await admin.get(created["id"])
        assert [p["externalId"] for p in element["publications"]] == [remote_id, remote_id]


async def test_a_restarted_worker_removing_one_of_two_publications_keeps_the_remote_element(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    tmp_path: Path,
) -> None:
    # The remote element stands for both publications. A new process does not remember that; the shared state
    # store does. Removing one publication must not DELETE the remote element the other still stands on: its
    # delivery is unchanged, so nothing would ever create it again.
    with GlobalExportServer() as cms:
        base = worker_settings(queue=queues[0], endpoint=sqs_endpoint.url, kordiam=simulator.base_url, workdir=tmp_path)
        archive = ChannelSettings(
            name="archive",
            type="kordiam-webhook",
            platforms=[99003, 99004],
            url=cms.base_url,
            auth={"type": "bearer", "token": cms.token},
        )
        settings = base.model_copy(update={"channels": [archive]})

        async with running_worker(settings):
            created = await admin.create(story("Two platforms", platforms=(99003, 99004)))
            await eventually(
                lambda: [len(e.get("publications", [])) for e in cms.elements().values()] == [2],
                what="one remote element with both publications",
            )
            await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="first sync settled")
        (remote_id,) = cms.elements()
        web_pub = created["publications"][0]["id"]

        async with running_worker(settings):  # a new process: a new channel with an empty memory
            current = await admin.get(created["id"])
            await admin.replace(created["id"], {**current, "publications": current["publications"][:1]})
            await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="second sync settled")
            await eventually(
                lambda: [p["id"] for p in cms.elements().get(remote_id, {}).get("publications", [])] == [web_pub],
                what="the remote element without the removed publication",
            )
        assert list(cms.elements()) == [remote_id]
        element = await admin.get(created["id"])
        assert [p["externalId"] for p in element["publications"]] == [remote_id]
    assert drain(sqs_endpoint.url, queues[1]) == []

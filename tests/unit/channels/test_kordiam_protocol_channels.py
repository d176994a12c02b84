"""``kordiam-webhook`` and ``kordiam-platform``: wire bodies against the seeds' examples, options, auth, the
element-vs-publication mapping and the error classes (HTTP answered in process by httpx-style handlers)."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from structlog.testing import capture_logs

from bridge.channels import ChannelContext, ChannelType, build_channel, kordiam_webhook
from bridge.channels import auth as auth_module
from bridge.channels.auth import JwtAuth, JwtSigner, TokenSource, mint_hs256
from bridge.channels.kordiam_platform import (
    DEFAULT_PLATFORM_STATUSES,
    KordiamPlatformChannel,
    KordiamPlatformOptions,
    platform_publication_body,
    platform_statuses_body,
)
from bridge.channels.kordiam_platform import create as create_platform
from bridge.channels.kordiam_v1 import utc_timestamp
from bridge.channels.kordiam_webhook import (
    KordiamWebhookChannel,
    KordiamWebhookOptions,
    global_export_body,
)
from bridge.channels.kordiam_webhook import create as create_webhook
from bridge.config import ChannelSettings
from bridge.errors import ChannelRejected, ChannelUnavailable, ConfigError
from bridge.http import HttpClient
from bridge.kordiam.models import Element
from tests.fixtures import load
from tests.servers.global_export import verify_hs256
from tests.support import http_answering

# Fields of the seeds' examples that the Element model does not keep (reported as a model change).
SEED001_NOT_CARRIED: set[tuple[str, ...]] = {
    ("groups", "parent"),
    ("groups", "selected"),
    ("publications", "single", "issue_label"),
}
SEED002_NOT_CARRIED: set[tuple[str, ...]] = {("tasks", "cost"), ("tasks", "files")}


def without(data: Any, paths: set[tuple[str, ...]]) -> Any:
    """``data`` without the keys at ``paths`` (a path walks through lists)."""
    result = copy.deepcopy(data)

    def drop(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, list):
            for item in node:
                drop(item, path)
        elif isinstance(node, dict) and path:
            if len(path) == 1:
                node.pop(path[0], None)
            elif path[0] in node:
                drop(node[path[0]], path[1:])

    for path in paths:
        drop(result, path)
    return result


def key_paths(data: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every key path in a JSON document (lists are walked, indices ignored)."""
    paths: set[tuple[str, ...]] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            paths.add((*prefix, key))
            paths |= key_paths(value, (*prefix, key))
    elif isinstance(data, list):
        for item in data:
            paths |= key_paths(item, prefix)
    return paths


def not_carried(missing: set[tuple[str, ...]]) -> set[tuple[str, ...]]:
    """The missing key paths, without those inside another missing one."""
    return {path for path in missing if not any(path[: len(other)] == other for other in missing if other != path)}


# --- wire bodies against the seeds ---------------------------------------------------------------------------


def test_global_export_body_reproduces_seed_001_json_example() -> None:
    seed = load("seed001_full")
    body = global_export_body(Element.model_validate(seed))
    assert not_carried(key_paths(seed) - key_paths(body)) == SEED001_NOT_CARRIED
    assert key_paths(body) <= key_paths(seed)  # nothing the seed does not know either
    assert body == without(seed, SEED001_NOT_CARRIED)
    assert isinstance(body["publications"][0]["platform"], int)
    assert body["tasks"][0]["assignee"] == {"id": 5, "name": "email", "external_id": "_external_id_"}


@pytest.mark.parametrize("name", ["seed001_create", "seed001_update"])
def test_global_export_body_reproduces_seed_001_request_examples(name: str) -> None:
    seed = load(name)
    assert global_export_body(Element.model_validate(seed)) == seed


def test_global_export_body_from_an_api_v2_element() -> None:
    element = Element.model_validate(v2_element())
    body = global_export_body(element)
    assert body["elementStatus"] == {"id": 2, "name": "Accepted"}
    assert body["modificationDate"] == "2026-11-20T08:15:00Z"
    assert body["tasks"][0] == {
        "id": 501,
        "format": {"id": 1, "name": "Text"},
        "status": {"id": 2, "name": "Received"},
        "assignee": {"id": 3, "name": "anna@example.org"},
        "deadline": {"date": "2026-11-23", "time": "18:00"},
        "content": "<p>Body</p>",
        "headline": "Budget passes",
    }
    assert body["publications"][0] == {
        "id": 701,
        "status": {"id": 1, "name": "No Status"},
        "platform": 99003,
        "category": {"id": 90000, "name": "Politics"},
        "single": {"start": {"date": "2026-11-23", "time": "19:30"}},
        "assignments": [True],
    }
    assert body["customFields"] == [{"customFieldId": 77, "value": "breaking"}]


def test_a_schedule_time_with_an_offset_is_sent_in_gmt() -> None:
    # v1's single.start is GMT ("HH:mm"): a time with an offset of its own is sent as that instant in GMT,
    # the date with it, not as the local time read as GMT.
    data = v2_element()
    data["publications"][0]["schedule"] = {"kind": "single", "date": "2026-11-23", "timing": {"time": "23:30-05:00"}}
    element = Element.model_validate(data)
    for body in (
        global_export_body(element)["publications"][0],
        platform_publication_body(element, element.publications[0], None)["publication"],
    ):
        assert body["single"] == {"start": {"date": "2026-11-24", "time": "04:30"}}


def test_platform_body_reproduces_seed_002_json_example() -> None:
    seed = load("seed002_full")
    element = Element.model_validate(seed)
    body = platform_publication_body(element, element.publications[0], None)
    assert not_carried(key_paths(seed) - key_paths(body)) == SEED002_NOT_CARRIED
    assert key_paths(body) - key_paths(seed) == {("title",)}  # seed 002's request example has it too
    assert {k: v for k, v in body.items() if k != "title"} == without(seed, SEED002_NOT_CARRIED)
    assert body["elementStatus"] == 1 and body["description"] == "_element_title_" and body["post_id"] is None


def test_platform_body_reproduces_seed_002_request_example() -> None:
    seed = load("seed002_publication")
    element = Element.model_validate(seed)
    body = platform_publication_body(element, element.publications[0], "9369832")
    assert {k: v for k, v in body.items() if k in seed} == seed
    assert body["description"] == "title" and body["post_id"] == 9369832


def test_platform_statuses_body_reproduces_seed_002() -> None:
    body = platform_statuses_body(99003, DEFAULT_PLATFORM_STATUSES, ["Published", 4, "proposal", "No Status"])
    assert body == load("seed002_statuses")
    everything = platform_statuses_body(99003, DEFAULT_PLATFORM_STATUSES, None)
    assert [s["id"] for s in everything["activeStatuses"]] == [5, 4, 2, 1, 3]
    assert everything["deactivatedStatuses"] == []


def test_platform_statuses_explicit_triggers_export_wins() -> None:
    options = KordiamPlatformOptions.model_validate(
        {
            "url": "https://cms.example.org",
            "api_user": "u",
            "api_secret": "api-secret",
            "platform_statuses": [{"id": 1, "name": "Draft", "triggersExport": False}, {"id": 2, "name": "Live"}],
        }
    )
    body = platform_statuses_body(7, options.platform_statuses, None)
    assert body == {
        "platform": 7,
        "activeStatuses": [{"id": 2, "name": "Live", "triggersExport": True}],
        "deactivatedStatuses": [{"id": 1, "name": "Draft", "triggersExport": False}],
    }


# --- options ---------------------------------------------------------------------------------------------------


def test_webhook_options_auth_is_a_discriminated_union() -> None:
    def parse(auth: dict[str, Any]) -> KordiamWebhookOptions:
        return KordiamWebhookOptions.model_validate({"url": "https://cms.example.org/kordiam/", "auth": auth})

    assert parse({"type": "bearer", "token": "t0ken-value"}).url == "https://cms.example.org/kordiam"
    jwt = parse({"type": "jwt", "secret": "jwt-secret"}).auth
    assert isinstance(jwt, JwtAuth) and jwt.ttl_seconds == 60 and jwt.issuer == "kordiam-bridge"
    assert parse({"type": "api_key", "api_key": "k", "api_secret": "api-secret"}).auth.type == "api_key"
    headers = parse({"type": "headers", "headers": {"X-Api-Key": "key-value"}})
    assert "v" not in repr(headers) and "**" in repr(headers)
    for bad in (
        {"type": "oauth"},
        {"type": "bearer"},
        {"type": "bearer", "token": " "},
        {"type": "bearer", "token": "t0ken-value", "secret": "jwt-secret"},
        {"type": "jwt", "secret": "jwt-secret", "ttl_seconds": 0},
        {"type": "headers", "headers": {}},
        {"type": "headers", "headers": {"Bad Name": "v"}},
        {"type": "headers", "headers": {"Content-Type": "v"}},
        {"type": "api_key", "api_key": "k", "api_secret": "api-secret", "token_url": "ftp://x"},
    ):
        with pytest.raises(ValidationError):
            parse(bad)
    with pytest.raises(ValidationError):
        KordiamWebhookOptions.model_validate(
            {"url": "https://x?y=1", "auth": {"type": "bearer", "token": "t0ken-value"}}
        )
    with pytest.raises(ValidationError):
        KordiamWebhookOptions.model_validate(
            {
                "url": "https://x",
                "auth": {"type": "bearer", "token": "t0ken-value"},
                "edit_link_template": "https://x/edit",
            }
        )


def test_platform_options_defaults() -> None:
    options = KordiamPlatformOptions.model_validate(
        {"url": "https://wp.example.org/wp-json/wp-desk-net/v1/", "api_user": "u", "api_secret": "s3cr3t-value"}
    )
    assert options.token_url == "https://wp.example.org/wp-json/wp-desk-net/v1/oauth2/token"
    assert options.token_cache and options.send_statuses and options.platform_statuses == DEFAULT_PLATFORM_STATUSES
    assert "s3cr3t" not in repr(options) and "s3cr3t" not in str(options.model_dump())
    for bad in ({"api_secret": ""}, {"statuses": [1]}, {"platform_statuses": [{"id": 1, "name": "a"}] * 2}):
        with pytest.raises(ValidationError):
            KordiamPlatformOptions.model_validate(
                {"url": "https://x", "api_user": "u", "api_secret": "api-secret", **bad}
            )


def test_build_channel_names_the_key() -> None:
    types = {
        "kordiam-webhook": ChannelType(KordiamWebhookOptions, create_webhook),
        "kordiam-platform": ChannelType(KordiamPlatformOptions, create_platform),
    }
    context = ChannelContext(http=http_answering(lambda request: httpx.Response(500)))
    settings = ChannelSettings(
        name="cms",
        type="kordiam-webhook",
        platforms=[1],
        url="https://x",
        auth={"type": "bearer", "token": "t0ken-value"},
    )
    assert isinstance(build_channel(settings, context, types=types), KordiamWebhookChannel)
    platform = ChannelSettings(
        name="wp", type="kordiam-platform", platforms=[1], url="https://x", api_user="u", api_secret="api-secret"
    )
    assert isinstance(build_channel(platform, context, types=types), KordiamPlatformChannel)
    broken = ChannelSettings(name="cms", type="kordiam-webhook", platforms=[1], url="https://x", auth={"type": "jwt"})
    with pytest.raises(ConfigError) as error:
        build_channel(broken, context, index=2, types=types)
    assert error.value.key.startswith("channels[2].auth")


# --- auth ------------------------------------------------------------------------------------------------------


def test_jwt_is_hs256_with_short_expiry_and_verifies_independently() -> None:
    signer = JwtSigner(JwtAuth(type="jwt", secret="shh-secret", issuer="bridge", audience="cms", ttl_seconds=45))
    credentials = asyncio.run(signer.credentials())
    token = credentials.headers["Authorization"].removeprefix("Bearer ")
    claims = verify_hs256(token, b"shh-secret")
    assert claims["iss"] == "bridge" and claims["aud"] == "cms" and claims["exp"] - claims["iat"] == 45
    assert abs(claims["iat"] - time.time()) < 5 and claims["jti"]
    with pytest.raises(ValueError, match="signature"):
        verify_hs256(token, b"other")
    assert mint_hs256(b"k", {"a": 1}).split(".")[0] == "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    # The bytes the hand-written minting produced before PyJWT signed: claims sorted, compact JSON, ASCII-escaped.
    assert mint_hs256("ünï".encode(), {"sub": "é", "jti": "ab", "iat": 1, "aud": "cms"}) == (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJjbXMiLCJpYXQiOjEsImp0aSI6ImFiIiwic3ViIjoiXHUwMGU5In0"
        ".aoU_LN2Dwqg932tgPYQZwcEDknogc8muF4B1-Y08OFI"
    )
    second = asyncio.run(signer.credentials())
    assert second.headers != credentials.headers  # a new token per request (jti)


Handler = Callable[[httpx.Request], httpx.Response]


def mock_http(handler: Handler) -> HttpClient:
    return http_answering(handler)


async def test_token_source_caches_until_expiry_and_fetches_once_concurrently() -> None:
    issued: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        issued.append(request)
        return httpx.Response(200, json={"access_token": f"t{len(issued)}", "token_type": "bearer", "expires_in": 100})

    async with mock_http(handler) as http:
        source = TokenSource(http, "https://x/oauth2/token", "key", SecretStr("sec-value"), "label", "hint")
        results = await asyncio.gather(*(source.credentials() for _ in range(5)))
        assert len(issued) == 1 and {r.headers["Authorization"] for r in results} == {"Bearer t1"}
        form = dict(x.split("=") for x in issued[0].content.decode().split("&"))
        assert form == {"grant_type": "client_credentials", "api_key": "key", "api_secret": "sec-value"}
        assert issued[0].headers["Authorization"] == "Basic a2V5OnNlYy12YWx1ZQ=="  # base64("key:sec-value")
        cached = await source.credentials()
        assert cached.renewable
        source.refused(cached)
        assert (await source.credentials()).headers["Authorization"] == "Bearer t2"
        assert auth_module._lifetime(100) == 90 and auth_module._lifetime(3600) == 3570
        assert auth_module._lifetime(None) == auth_module.TOKEN_DEFAULT_LIFETIME


async def test_token_source_without_cache_fetches_per_request() -> None:
    count = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal count
        count += 1
        return httpx.Response(200, json={"access_token": f"t{count}", "expires_in": 943199})

    async with mock_http(handler) as http:
        source = TokenSource(http, "https://x/t", "k", SecretStr("s3cret-value"), "l", "h", cache=False)
        first, second = await source.credentials(), await source.credentials()
        assert count == 2 and not first.renewable and first.headers != second.headers


# --- the kordiam-webhook adapter -------------------------------------------------------------------------------


def v2_element(element_id: int = 301, platforms: tuple[int, ...] = (99003,), **extra: Any) -> dict[str, Any]:
    return {
        "id": element_id,
        "title": "Budget passes",
        "slug": "budget-passes",
        "elementStatus": {"id": 2, "name": "Accepted"},
        "modificationDate": "2026-11-20T09:15:00+01:00",
        "customFields": [{"id": 77, "value": "breaking"}],
        "tasks": [
            {
                "id": 501,
                "format": {"id": 1, "name": "Text"},
                "status": {"id": 2, "name": "Received"},
                "user": {"id": 3, "email": "anna@example.org"},
                "deadline": {"date": "2026-11-23", "time": "18:00"},
                "content": {"headline": "Budget passes", "text": "<p>Body</p>"},
            }
        ],
        "publications": [
            {
                "id": 701 + index,
                "status": {"id": 1, "name": "No Status"},
                "platform": {"id": platform},
                "category": {"id": 90000, "name": "Politics"},
                "schedule": {"kind": "single", "date": "2026-11-23", "timing": {"type": "time", "time": "19:30"}},
                "assignedTaskIds": [501],
            }
            for index, platform in enumerate(platforms)
        ],
        **extra,
    }


class FakeReceiver:
    """A Global Export receiver answering in process, to check the mapping's requests one by one."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.elements: dict[str, Any] = {}
        self.next_id = 1
        self.answers: list[httpx.Response] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        path = request.url.path.removeprefix("/ge")
        self.requests.append((request.method, path, body))
        if self.answers:
            return self.answers.pop(0)
        if request.method == "POST":
            new = str(self.next_id)
            self.next_id += 1
            self.elements[new] = body
            return httpx.Response(201, json={"id": int(new)})
        item = path.rsplit("/", 1)[-1]
        if item not in self.elements:
            return httpx.Response(404, json={"message": f"element {item} not found"})
        if request.method == "PUT":
            self.elements[item] = body
            return httpx.Response(200, json={"id": int(item)})
        del self.elements[item]
        return httpx.Response(204)


def webhook(
    http: HttpClient, platforms: tuple[int, ...] = (99003, 99004), *, bare_404_is_gone: bool = False, **kwargs: Any
) -> KordiamWebhookChannel:
    options = KordiamWebhookOptions.model_validate(
        {
            "url": "https://cms.example.org/ge",
            "auth": {"type": "bearer", "token": "t0ken-value"},
            "bare_404_is_gone": bare_404_is_gone,
        }
    )
    return KordiamWebhookChannel("cms", options, http, platforms=platforms, **kwargs)


async def test_two_publications_of_one_element_are_one_remote_element() -> None:
    receiver = FakeReceiver()
    async with mock_http(receiver) as http:
        channel = webhook(http)
        element = Element.model_validate(v2_element(platforms=(99003, 99004, 55555)))
        web, app, _foreign = element.publications
        first = await channel.upsert(element, web, None)
        second = await channel.upsert(element, app, None)
        assert first.external_id == second.external_id == "1"
        assert [(m, p) for m, p, _ in receiver.requests] == [("POST", "/element"), ("PUT", "/element/1")]
        stored = receiver.elements["1"]
        assert [p["id"] for p in stored["publications"]] == [web.id, app.id]  # not the foreign platform's
        assert receiver.requests[0][2]["tasks"][0]["id"] == 501
        # An update of either publication goes to the same element.
        assert (await channel.upsert(element, app, "1")).external_id == "1"
        assert receiver.requests[-1][:2] == ("PUT", "/element/1")


async def test_removing_one_publication_keeps_the_element_and_the_last_deletes_it() -> None:
    receiver = FakeReceiver()
    async with mock_http(receiver) as http:
        channel = webhook(http)
        element = Element.model_validate(v2_element(platforms=(99003, 99004)))
        web, app = element.publications
        await channel.upsert(element, web, None)
        await channel.upsert(element, app, None)
        await channel.delete(element.id, app.id, "1")
        assert receiver.requests[-1][:2] == ("PUT", "/element/1")
        assert [p["id"] for p in receiver.elements["1"]["publications"]] == [web.id]
        await channel.delete(element.id, web.id, "1")
        assert receiver.requests[-1][:2] == ("DELETE", "/element/1") and receiver.elements == {}
        assert channel.remote(element.id) is None
        await channel.delete(element.id, web.id, "1")  # again: already gone is fine
        assert receiver.requests[-1][:2] == ("DELETE", "/element/1")


async def test_what_the_channel_remembers_is_bounded_in_bytes_as_well_as_in_elements(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each remembered element keeps the body last sent (a partial delete sends it without the publication): a count
    # alone lets large elements hold count x body size for the process's life.
    monkeypatch.setattr(kordiam_webhook, "REMEMBERED_BYTES", 100_000)
    receiver = FakeReceiver()
    async with mock_http(receiver) as http:
        channel = webhook(http)
        ids = range(1, 41)
        for element_id in ids:
            element = Element.model_validate(v2_element(element_id, title="x" * 20_000))
            await channel.upsert(element, element.publications[0], None)
        kept = {element_id: remote for element_id in ids if (remote := channel.remote(element_id)) is not None}
        remembered = list(kept)
        assert 0 < len(remembered) < len(ids)
        assert remembered == list(ids)[-len(remembered) :]  # the most recently written
        assert sum(len(remote.sent) for remote in kept.values()) <= 100_000
        # Forgotten only costs what a restarted process does: the delivery's external id is PUT to, as before.
        first = Element.model_validate(v2_element(1, title="x" * 20_000))
        assert (await channel.upsert(first, first.publications[0], "1")).external_id == "1"
        assert receiver.requests[-1][:2] == ("PUT", "/element/1")


async def test_status_filtered_publication_travels_but_does_not_keep_the_element_alive() -> None:
    receiver = FakeReceiver()
    async with mock_http(receiver) as http:
        channel = webhook(http, statuses=["Ready"])
        data = v2_element(platforms=(99003, 99004))
        data["publications"][0]["status"] = {"id": 9, "name": "Ready"}
        element = Element.model_validate(data)
        web, app = element.publications
        await channel.upsert(element, web, None)
        assert [p["id"] for p in receiver.elements["1"]["publications"]] == [web.id, app.id]
        await channel.delete(element.id, web.id, "1")  # app was never exported: nothing holds the element
        assert receiver.requests[-1][:2] == ("DELETE", "/element/1")


async def test_a_fresh_process_finds_the_remote_element() -> None:
    receiver = FakeReceiver()
    receiver.elements["42"] = {}
    async with mock_http(receiver) as http:
        element = Element.model_validate(
            v2_element(platforms=(99003, 99004), externalElement={"externalId": "42", "link": "https://cms/42"})
        )
        web, app = element.publications
        # The bridge knows the publication's external id: PUT.
        assert (await webhook(http).upsert(element, web, "42")).external_id == "42"
        # A new publication, a restarted process, the channel is main: Kordiam's element link names it.
        assert (await webhook(http, main=True).upsert(element, app, None)).external_id == "42"
        assert [(m, p) for m, p, _ in receiver.requests] == [("PUT", "/element/42"), ("PUT", "/element/42")]
        # Not main: the element link may be another channel's, so it is not used.
        assert (await webhook(http).upsert(element, app, None)).external_id == "1"


async def test_update_of_a_vanished_element_creates_it_again() -> None:
    receiver = FakeReceiver()
    async with mock_http(receiver) as http:
        channel = webhook(http)
        element = Element.model_validate(v2_element())
        result = await channel.upsert(element, element.publications[0], "99")
        assert result.external_id == "1"
        assert [(m, p) for m, p, _ in receiver.requests] == [("PUT", "/element/99"), ("POST", "/element")]
        # The process now knows the new id, so a stale external id is not used again.
        assert (await channel.upsert(element, element.publications[0], "99")).external_id == "1"
        assert receiver.requests[-1][:2] == ("PUT", "/element/1")


async def test_every_known_id_is_tried_before_creating() -> None:
    receiver = FakeReceiver()
    async with mock_http(receiver) as http:
        channel = webhook(http)
        element = Element.model_validate(v2_element())
        assert (await channel.upsert(element, element.publications[0], None)).external_id == "1"
        # Another worker found "1" deleted in the CMS and created "5"; this process still remembers "1".
        receiver.elements = {"5": {}}
        assert (await channel.upsert(element, element.publications[0], "5")).external_id == "5"
        assert [(m, p) for m, p, _ in receiver.requests][-2:] == [("PUT", "/element/1"), ("PUT", "/element/5")]
        assert channel.remote(element.id) is not None and channel.remote(element.id).remote_id == "5"  # type: ignore[union-attr]


async def test_links_from_templates_or_from_the_answer() -> None:
    receiver = FakeReceiver()
    async with mock_http(receiver) as http:
        options = KordiamWebhookOptions.model_validate(
            {
                "url": "https://cms.example.org/ge",
                "auth": {"type": "bearer", "token": "t0ken-value"},
                "edit_link_template": "https://cms.example.org/edit/{id}",
                "open_link_template": "https://cms.example.org/read/{id}?preview=1",
            }
        )
        channel = KordiamWebhookChannel("cms", options, http, platforms=[99003])
        element = Element.model_validate(v2_element())
        result = await channel.upsert(element, element.publications[0], None)
        assert result.edit_link == "https://cms.example.org/edit/1"
        assert result.open_link == "https://cms.example.org/read/1?preview=1"
        receiver.answers.append(
            httpx.Response(200, json={"id": 1, "cmsEditLink": "https://e", "cmsEditLinkTitle": "Edit it"})
        )
        result = await channel.upsert(element, element.publications[0], "1")
        assert (result.edit_link, result.edit_link_title) == ("https://e", "Edit it")


def status_answer(status: int, **kwargs: Any) -> Handler:
    return lambda request: httpx.Response(status, **kwargs)


@pytest.mark.parametrize(
    ("answer", "kind", "in_message", "retry_after"),
    [
        (httpx.Response(401, json={"message": "bad token"}), ChannelRejected, "'cms'", None),
        (httpx.Response(403, text="forbidden"), ChannelRejected, "check auth.token", None),
        (httpx.Response(400, json={"message": "title is required"}), ChannelRejected, "title is required", None),
        (httpx.Response(422, json={"error": "invalid", "detail": "slug taken"}), ChannelRejected, "slug taken", None),
        (httpx.Response(302, headers={"location": "https://elsewhere"}), ChannelRejected, "elsewhere", None),
        (httpx.Response(503, headers={"Retry-After": "12"}), ChannelUnavailable, "503", 12.0),
        (httpx.Response(429, json={"message": "slow down"}), ChannelUnavailable, "slow down", None),
        (httpx.Response(408), ChannelUnavailable, "408", None),
        (httpx.Response(201, text="<html>ok</html>"), ChannelRejected, "not JSON", None),
        (httpx.Response(201, json={"ok": True}), ChannelRejected, "without the element's id", None),
        # A CMS that reports its refusal in a 200: what it said is the operator's clue.
        (
            httpx.Response(200, json={"success": False, "message": "Unknown category 'Sport'"}),
            ChannelRejected,
            "without the element's id (the Global Export expects {\"id\": …}); it answered: Unknown category 'Sport'",
            None,
        ),
    ],
)
async def test_webhook_errors(
    answer: httpx.Response, kind: type[Exception], in_message: str, retry_after: float | None
) -> None:
    async with mock_http(lambda request: answer) as http:
        element = Element.model_validate(v2_element())
        with pytest.raises(kind) as error:
            await webhook(http).upsert(element, element.publications[0], None)
    assert in_message in str(error.value) and "kordiam-webhook channel 'cms'" in str(error.value)
    if isinstance(error.value, ChannelUnavailable):
        assert error.value.retry_after == retry_after


async def test_retry_after_as_http_date_and_transport_errors() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    async with mock_http(status_answer(503, headers={"Retry-After": when})) as http:
        with pytest.raises(ChannelUnavailable) as error:
            await webhook(http).delete(1, 2, "3")
    assert error.value.retry_after is not None and 20 < error.value.retry_after <= 30

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with mock_http(refuse) as http:
        with pytest.raises(ChannelUnavailable, match="unreachable"):
            await webhook(http).delete(1, 2, "3")


# --- the kordiam-platform adapter ------------------------------------------------------------------------------


def platform(http: HttpClient, **options: Any) -> KordiamPlatformChannel:
    parsed = KordiamPlatformOptions.model_validate(
        {"url": "https://wp.example.org/wp-json/wp-desk-net/v1", "api_user": "u", "api_secret": "api-secret", **options}
    )
    return KordiamPlatformChannel("web", parsed, http, platforms=[99003, 99004], statuses=None)


class FakeConnector:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.answers: dict[tuple[str, str], list[httpx.Response]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/wp-json/wp-desk-net/v1")
        body = json.loads(request.content) if request.content and path != "/oauth2/token" else None
        self.requests.append((request.method, path, body))
        queued = self.answers.get((request.method, path))
        if queued:
            return queued.pop(0)
        if path == "/oauth2/token":
            return httpx.Response(200, json={"access_token": "tok", "token_type": "bearer", "expires_in": 3600})
        if path == "/statuses":
            return httpx.Response(200, json={})
        if request.method == "DELETE":
            return httpx.Response(200, json={})
        cms_id = path.rsplit("/", 1)[-1] if request.method == "PUT" else "77"
        return httpx.Response(
            200, json={"id": int(cms_id), "cmsEditLink": f"https://e/{cms_id}", "cmsOpenLink": f"https://o/{cms_id}"}
        )


async def test_platform_sends_statuses_once_then_publications() -> None:
    connector = FakeConnector()
    async with mock_http(connector) as http:
        channel = platform(http)
        element = Element.model_validate(v2_element(platforms=(99003,)))
        results = await asyncio.gather(*(channel.upsert(element, element.publications[0], None) for _ in range(3)))
        assert {r.external_id for r in results} == {"77"} and results[0].edit_link == "https://e/77"
        statuses = [body for method, path, body in connector.requests if path == "/statuses"]
        assert [s["platform"] for s in statuses] == [99003, 99004]
        assert [p for _, p, _ in connector.requests].count("/oauth2/token") == 1
        result = await channel.upsert(element, element.publications[0], "77")
        assert result.external_id == "77" and connector.requests[-1][:2] == ("PUT", "/publication/77")
        assert connector.requests[-1][2]["post_id"] == 77
        await channel.delete(element.id, element.publications[0].id, "77")
        assert connector.requests[-1][:2] == ("DELETE", "/publication/77")
        assert [p for _, p, _ in connector.requests].count("/statuses") == 2


async def test_platform_recreates_on_404_and_ignores_404_on_delete() -> None:
    connector = FakeConnector()
    connector.answers[("PUT", "/publication/5")] = [httpx.Response(404, json={"message": "gone"})]
    connector.answers[("DELETE", "/publication/6")] = [httpx.Response(404, json={"message": "gone"})]
    async with mock_http(connector) as http:
        channel = platform(http, send_statuses=False)
        element = Element.model_validate(v2_element(platforms=(99003,)))
        assert (await channel.upsert(element, element.publications[0], "5")).external_id == "77"
        assert connector.requests[-1][2]["post_id"] is None
        await channel.delete(element.id, element.publications[0].id, "6")
        assert "/statuses" not in [p for _, p, _ in connector.requests]


async def test_platform_create_answered_without_an_id_keeps_what_the_connector_said() -> None:
    connector = FakeConnector()
    refusal = httpx.Response(200, json={"status": "error", "error": "Post type 'story' is not registered"})
    connector.answers[("POST", "/publication")] = [refusal]
    async with mock_http(connector) as http:
        element = Element.model_validate(v2_element(platforms=(99003,)))
        with pytest.raises(ChannelRejected, match=r"without the publication's id .*; it answered: .*'story' is not"):
            await platform(http, send_statuses=False).upsert(element, element.publications[0], None)


async def test_platform_refreshes_a_refused_token_once_then_rejects() -> None:
    connector = FakeConnector()
    async with mock_http(connector) as http:
        channel = platform(http, send_statuses=False)
        element = Element.model_validate(v2_element(platforms=(99003,)))
        await channel.upsert(element, element.publications[0], None)  # token 1, cached
        connector.answers[("POST", "/publication")] = [httpx.Response(401, json={"message": "expired"})]
        assert (await channel.upsert(element, element.publications[0], None)).external_id == "77"
        assert [p for _, p, _ in connector.requests].count("/oauth2/token") == 2
        connector.answers[("POST", "/publication")] = [httpx.Response(401, json={"message": "no"})] * 2
        with pytest.raises(ChannelRejected, match=r"kordiam-platform channel 'web'.*check api_user and api_secret"):
            await channel.upsert(element, element.publications[0], None)


async def test_platform_statuses_unsupported_or_failing() -> None:
    connector = FakeConnector()
    connector.answers[("POST", "/statuses")] = [httpx.Response(503), httpx.Response(404)]
    async with mock_http(connector) as http:
        channel = platform(http)
        element = Element.model_validate(v2_element(platforms=(99003,)))
        with pytest.raises(ChannelUnavailable):
            await channel.upsert(element, element.publications[0], None)
        await channel.upsert(element, element.publications[0], None)  # 404: not supported, go on
        await channel.upsert(element, element.publications[0], None)
        assert [p for _, p, _ in connector.requests].count("/statuses") == 2


@pytest.mark.parametrize("status", [400, 422])
async def test_platform_statuses_the_connector_refuses_do_not_stop_its_publications(status: int) -> None:
    # The statuses are only information for the CMS; a connector that refuses them for good (its own validation)
    # must not block every story of the channel.
    connector = FakeConnector()
    connector.answers[("POST", "/statuses")] = [httpx.Response(status, json={"message": "unknown status id 5"})]
    async with mock_http(connector) as http:
        channel = platform(http)
        element = Element.model_validate(v2_element(platforms=(99003,)))
        assert (await channel.upsert(element, element.publications[0], None)).external_id
        await channel.upsert(element, element.publications[0], None)
        assert [p for _, p, _ in connector.requests].count("/statuses") == 1


async def test_platform_statuses_with_refused_credentials_still_refuse() -> None:
    connector = FakeConnector()
    connector.answers[("POST", "/statuses")] = [httpx.Response(403, json={"message": "forbidden"})]
    async with mock_http(connector) as http:
        element = Element.model_validate(v2_element(platforms=(99003,)))
        with pytest.raises(ChannelRejected):
            await platform(http).upsert(element, element.publications[0], None)


async def test_platform_token_endpoint_refusal_names_the_channel() -> None:
    async with mock_http(status_answer(401, json={"message": "Invalid API user"})) as http:
        element = Element.model_validate(v2_element(platforms=(99003,)))
        with pytest.raises(ChannelRejected, match=r"'web'.*Invalid API user.*api_user"):
            await platform(http).upsert(element, element.publications[0], None)


# --- a 404 counts as "gone" only when the receiver says so ---------------------------------------------------

# 404s that say nothing of the item: the call never reached the receiver's item, so the item may still be online.
NOT_THE_RECEIVERS_WORD = {
    "a proxy's page": httpx.Response(404, text="<html><h1>404 Not Found</h1>nginx</html>"),
    "an empty answer": httpx.Response(404),
    "WordPress without the route (connector deactivated)": httpx.Response(
        404, json={"code": "rest_no_route", "message": "No route was found matching the URL and request method."}
    ),
    "an unrouted path": httpx.Response(404, json={"message": "no route DELETE /ge/element/1"}),
    "a framework's bare default": httpx.Response(404, json={"detail": "Not Found"}),
    "Kordiam's no such endpoint": httpx.Response(
        404, json={"type": "https://api.kordiam.app/problems/endpoint-not-found", "title": "Not Found"}
    ),
}
THE_RECEIVERS_WORD = {
    "the item is not found": httpx.Response(404, json={"message": "element 1 not found"}),
    "WordPress: no such post": httpx.Response(
        404, json={"code": "rest_post_invalid_id", "message": "Invalid post ID."}
    ),
    "410 Gone": httpx.Response(410),
}


def fresh(response: httpx.Response) -> httpx.Response:
    return httpx.Response(response.status_code, content=response.content, headers=response.headers)


@pytest.mark.parametrize("answer", NOT_THE_RECEIVERS_WORD.values(), ids=NOT_THE_RECEIVERS_WORD.keys())
async def test_webhook_delete_answered_a_404_that_is_not_the_receivers_word_is_retried(answer: httpx.Response) -> None:
    # Before: counted as deleted, so the delivery was forgotten while the element stayed in the CMS.
    receiver = FakeReceiver()
    async with mock_http(receiver) as http:
        channel = webhook(http)
        element = Element.model_validate(v2_element(platforms=(99003,)))
        await channel.upsert(element, element.publications[0], None)
        receiver.answers = [fresh(answer)]
        with pytest.raises(ChannelUnavailable, match=r"deleting element 301 \(1\): HTTP 404 .*check url"):
            await channel.delete(element.id, element.publications[0].id, "1")
        assert "1" in receiver.elements and channel.remote(element.id) is not None
        await channel.delete(element.id, element.publications[0].id, "1")  # the retry reaches the receiver
        assert receiver.elements == {}


@pytest.mark.parametrize("answer", NOT_THE_RECEIVERS_WORD.values(), ids=NOT_THE_RECEIVERS_WORD.keys())
async def test_webhook_404s_that_are_not_the_receivers_word_never_count_as_gone(answer: httpx.Response) -> None:
    receiver = FakeReceiver()
    async with mock_http(receiver) as http:
        channel = webhook(http)
        element = Element.model_validate(v2_element(platforms=(99003, 99004)))
        web, app = element.publications
        await channel.upsert(element, web, None)
        await channel.upsert(element, app, None)
        # Removing one publication PUTs the element without it: a stray 404 there is no "gone" either.
        receiver.answers = [fresh(answer)]
        with pytest.raises(ChannelUnavailable, match="HTTP 404"):
            await channel.delete(element.id, app.id, "1")
        assert channel.remote(element.id) is not None
        # An update's PUT: a stray 404 must not make a second element (the first stays online).
        receiver.answers = [fresh(answer)]
        with pytest.raises(ChannelUnavailable, match="HTTP 404"):
            await channel.upsert(element, web, "1")
        assert [m for m, _, _ in receiver.requests].count("POST") == 1 and list(receiver.elements) == ["1"]


@pytest.mark.parametrize("answer", THE_RECEIVERS_WORD.values(), ids=THE_RECEIVERS_WORD.keys())
async def test_webhook_404_or_410_that_is_the_receivers_word_counts_as_gone(answer: httpx.Response) -> None:
    receiver = FakeReceiver()
    async with mock_http(receiver) as http:
        channel = webhook(http)
        element = Element.model_validate(v2_element(platforms=(99003,)))
        receiver.answers = [fresh(answer)]
        await channel.delete(element.id, element.publications[0].id, "1")
        receiver.answers = [fresh(answer)]
        assert (await channel.upsert(element, element.publications[0], "1")).external_id == "1"
        assert [m for m, _, _ in receiver.requests] == ["DELETE", "PUT", "POST"]


@pytest.mark.parametrize("answer", NOT_THE_RECEIVERS_WORD.values(), ids=NOT_THE_RECEIVERS_WORD.keys())
async def test_platform_404s_that_are_not_the_connectors_word_never_count_as_gone(answer: httpx.Response) -> None:
    connector = FakeConnector()
    connector.answers[("DELETE", "/publication/6")] = [fresh(answer)]
    connector.answers[("PUT", "/publication/6")] = [fresh(answer)]
    async with mock_http(connector) as http:
        channel = platform(http, send_statuses=False)
        element = Element.model_validate(v2_element(platforms=(99003,)))
        with pytest.raises(ChannelUnavailable, match=r"deleting publication .* \(6\): HTTP 404 .*check url"):
            await channel.delete(element.id, element.publications[0].id, "6")
        with pytest.raises(ChannelUnavailable, match="HTTP 404"):
            await channel.upsert(element, element.publications[0], "6")
        assert "POST" not in [m for m, p, _ in connector.requests if p == "/publication"]


@pytest.mark.parametrize("answer", THE_RECEIVERS_WORD.values(), ids=THE_RECEIVERS_WORD.keys())
async def test_platform_404_or_410_that_is_the_connectors_word_counts_as_gone(answer: httpx.Response) -> None:
    connector = FakeConnector()
    connector.answers[("DELETE", "/publication/6")] = [fresh(answer)]
    connector.answers[("PUT", "/publication/6")] = [fresh(answer)]
    async with mock_http(connector) as http:
        channel = platform(http, send_statuses=False)
        element = Element.model_validate(v2_element(platforms=(99003,)))
        await channel.delete(element.id, element.publications[0].id, "6")
        assert (await channel.upsert(element, element.publications[0], "6")).external_id == "77"


# A receiver whose own answer for an item it no longer has is a framework's bare default (FastAPI's
# HTTPException(404) is {"detail": "Not Found"}): without a way to say so, every DELETE and update of such an item
# failed as unavailable, was retried, counted against the channel's breaker and dead-lettered with "check url",
# and no replay could ever succeed.
BARE_NOT_FOUND = httpx.Response(404, json={"detail": "Not Found"})


async def test_webhook_bare_404_names_the_setting_and_counts_as_gone_with_it() -> None:
    receiver = FakeReceiver()
    async with mock_http(receiver) as http:
        element = Element.model_validate(v2_element(platforms=(99003,)))
        receiver.answers = [fresh(BARE_NOT_FOUND)]
        with pytest.raises(ChannelUnavailable, match=r"bare_404_is_gone = true"):
            await webhook(http).delete(element.id, element.publications[0].id, "1")

        channel = webhook(http, bare_404_is_gone=True)
        receiver.answers = [fresh(BARE_NOT_FOUND)]
        await channel.delete(element.id, element.publications[0].id, "1")
        receiver.answers = [fresh(BARE_NOT_FOUND)]
        assert (await channel.upsert(element, element.publications[0], "1")).external_id == "1"
        # Even so, a router that says no route matched is not the receiver's word on the item.
        receiver.answers = [fresh(NOT_THE_RECEIVERS_WORD["WordPress without the route (connector deactivated)"])]
        with pytest.raises(ChannelUnavailable, match="HTTP 404"):
            await channel.delete(element.id, element.publications[0].id, "1")


async def test_platform_bare_404_counts_as_gone_with_the_setting() -> None:
    connector = FakeConnector()
    connector.answers[("DELETE", "/publication/6")] = [fresh(BARE_NOT_FOUND), fresh(BARE_NOT_FOUND)]
    async with mock_http(connector) as http:
        element = Element.model_validate(v2_element(platforms=(99003,)))
        with pytest.raises(ChannelUnavailable, match=r"bare_404_is_gone = true"):
            await platform(http, send_statuses=False).delete(element.id, element.publications[0].id, "6")
        await platform(http, send_statuses=False, bare_404_is_gone=True).delete(
            element.id, element.publications[0].id, "6"
        )


async def test_token_endpoint_answer_that_is_not_json_is_not_quoted() -> None:
    # A token endpoint answering form-encoded (as some OAuth servers do) holds the token in its first bytes: the
    # error, which reaches the log and the dead letter, must say what came back without quoting it.
    def handler(request: httpx.Request) -> httpx.Response:
        body = "access_token=tok-SECRET-123&token_type=bearer&expires_in=3600"
        return httpx.Response(200, text=body, headers={"Content-Type": "application/x-www-form-urlencoded"})

    async with mock_http(handler) as http:
        source = TokenSource(http, "https://x/oauth2/token", "key", SecretStr("sec-value"), "label", "hint")
        with pytest.raises(ChannelRejected) as raised:
            await source.credentials()
    assert "tok-SECRET-123" not in str(raised.value)
    assert "not JSON" in str(raised.value) and "application/x-www-form-urlencoded" in str(raised.value)


@pytest.mark.parametrize(
    "echo",
    [
        lambda value: httpx.Response(400, json={"message": f"unknown key {value}"}),
        lambda value: httpx.Response(403, text=f"<pre>X-Api-Key: {value}</pre>"),
        lambda value: httpx.Response(502, text=f"upstream refused x-api-key={value}"),
        lambda value: httpx.Response(201, json={"success": False, "message": f"bad key {value}"}),
    ],
)
async def test_an_answer_echoing_a_configured_custom_header_is_quoted_without_it(
    echo: Callable[[str], httpx.Response],
) -> None:
    # A receiver or proxy that repeats the request's headers would put the key into the log and the dead letter.
    secret = "hdr-SECRET-0123"
    async with mock_http(lambda request: echo(request.headers["X-Api-Key"])) as http:
        options = KordiamWebhookOptions.model_validate(
            {"url": "https://cms.example.org/ge", "auth": {"type": "headers", "headers": {"X-Api-Key": secret}}}
        )
        element = Element.model_validate(v2_element())
        with pytest.raises((ChannelRejected, ChannelUnavailable)) as error:
            await KordiamWebhookChannel("cms", options, http, platforms=(99003,)).upsert(
                element, element.publications[0], None
            )
    assert secret not in str(error.value) and "***" in str(error.value)


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 11, 20, 8, 15, 0, 999999, tzinfo=UTC), "2026-11-20T08:15:00Z"),  # seconds: cut, not rounded
        (datetime(2026, 11, 20, 9, 15, tzinfo=timezone(timedelta(hours=1))), "2026-11-20T08:15:00Z"),
        (datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=2))), "2025-12-31T22:30:00Z"),
    ],
)
def test_the_bodys_modification_date_is_utc_to_the_second(moment: datetime, text: str) -> None:
    # The text the Global Export body always carried: isoformat to the second, in UTC, with a Z.
    assert utc_timestamp(moment) == text
    assert text == moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


# --- a create whose answer was lost, refused by a receiver that keeps one item per Kordiam id --------------------


def existing_element(element_id: str) -> httpx.Response:
    return httpx.Response(409, json={"message": "element exists", "id": int(element_id)})


async def test_webhook_adopts_the_element_a_receiver_names_when_it_refuses_a_second_create() -> None:
    """The receiver made the element but the answer was lost: the retry's POST is answered 409 with the id of the
    element it already has (what the README asks of a receiver that can refuse a second one). The bridge updates
    that element and links it, instead of retrying a POST that can never succeed."""
    receiver = FakeReceiver()
    receiver.elements["7"] = {"title": "the first attempt"}
    receiver.answers.append(existing_element("7"))
    async with mock_http(receiver) as http:
        channel = webhook(http)
        element = Element.model_validate(v2_element())
        with capture_logs() as logs:
            result = await channel.upsert(element, element.publications[0], None)
        assert result.external_id == "7"
        assert [(m, p) for m, p, _ in receiver.requests] == [("POST", "/element"), ("PUT", "/element/7")]
        assert receiver.elements["7"]["title"] == element.title and len(receiver.elements) == 1
        assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == ["kordiam_webhook.adopted"]
        assert (await channel.upsert(element, element.publications[0], None)).external_id == "7"
        assert receiver.requests[-1][:2] == ("PUT", "/element/7")


@pytest.mark.parametrize(
    "refusal",
    [
        httpx.Response(409, json={"message": "busy"}),
        httpx.Response(409, text="Conflict"),
        httpx.Response(422, json={"message": "exists", "id": 7}),
    ],
    ids=["409-without-id", "409-not-json", "422-with-id"],
)
async def test_webhook_adopts_nothing_a_refusal_does_not_name(refusal: httpx.Response) -> None:
    receiver = FakeReceiver()
    receiver.answers.append(refusal)
    async with mock_http(receiver) as http:
        element = Element.model_validate(v2_element())
        with pytest.raises(ChannelUnavailable if refusal.status_code == 409 else ChannelRejected):
            await webhook(http).upsert(element, element.publications[0], None)
        assert [(m, p) for m, p, _ in receiver.requests] == [("POST", "/element")]


async def test_platform_adopts_the_item_a_connector_names_when_it_refuses_a_second_create() -> None:
    connector = FakeConnector()
    connector.answers[("POST", "/publication")] = [existing_element("55")]
    connector.answers[("PUT", "/publication/55")] = [
        httpx.Response(200, json={"id": 55, "cmsEditLink": "https://e/55"})
    ]
    async with mock_http(connector) as http:
        element = Element.model_validate(v2_element(platforms=(99003,)))
        with capture_logs() as logs:
            result = await platform(http, send_statuses=False).upsert(element, element.publications[0], None)
        assert (result.external_id, result.edit_link) == ("55", "https://e/55")
        assert [(m, p) for m, p, _ in connector.requests if p != "/oauth2/token"] == [
            ("POST", "/publication"),
            ("PUT", "/publication/55"),
        ]
        assert connector.requests[-1][2]["post_id"] == 55
        assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == ["kordiam_platform.adopted"]

"""Each HTTP channel's ``timeout``: how long its requests may take, apart from the Kordiam client's."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from bridge.channels import ChannelContext, build_channel
from bridge.config import ChannelSettings
from bridge.errors import ChannelUnavailable
from bridge.http import HttpClient, HttpRequest, HttpResponse
from bridge.kordiam.models import Element

SHARED_TIMEOUT = 10.0  # the process's client, made with kordiam.timeout

OPTIONS: dict[str, dict[str, Any]] = {
    "wordpress": {"url": "https://news.example", "username": "bridge", "app_password": "abcd efgh"},
    "mailchimp": {"api_key": "key-us21", "list_id": "list1", "from_name": "Desk", "reply_to": "desk@example.org"},
    "kordiam-webhook": {
        "url": "https://cms.example/ge",
        "auth": {"type": "api_key", "api_key": "user", "api_secret": "api-secret"},
    },
    "kordiam-platform": {"url": "https://cms.example/pi", "api_user": "user", "api_secret": "api-secret"},
}


async def _timeouts(kind: str, **extra: Any) -> list[tuple[str, float]]:
    """The timeout of every request one upsert sends: tokens are handed out, everything else answers 503."""
    seen: list[tuple[str, float]] = []

    async def answer(request: HttpRequest) -> HttpResponse:
        seen.append((request.url.path, request.timeout_seconds))
        token = request.url.path.endswith("/oauth2/token")
        body = b'{"access_token": "t", "expires_in": 3600}' if token else b"{}"
        headers = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"}))
        return HttpResponse(200 if token else 503, headers, body, request)

    http = HttpClient.answering(answer, timeout=SHARED_TIMEOUT)
    settings = ChannelSettings(name="target", type=kind, platforms=[1], **OPTIONS[kind], **extra)
    channel = build_channel(settings, ChannelContext(http=http))
    element = Element.model_validate({"id": 1, "title": "t", "publications": [{"id": 2, "platform": {"id": 1}}]})
    with pytest.raises(ChannelUnavailable, match="HTTP 503"):
        await channel.upsert(element, element.publications[0], None)
    return seen


@pytest.mark.parametrize("kind", sorted(OPTIONS))
async def test_a_channels_timeout_governs_its_requests(kind: str) -> None:
    # A CMS that takes longer than Kordiam to save a story: every request, the token's too, may take that long.
    seen = await _timeouts(kind, timeout=45)
    assert seen and all(seconds == 45 for _, seconds in seen), seen
    if kind in ("kordiam-webhook", "kordiam-platform"):
        assert any(path.endswith("/oauth2/token") for path, _ in seen)


@pytest.mark.parametrize("kind", sorted(OPTIONS))
async def test_without_a_timeout_the_shared_clients_applies(kind: str) -> None:
    seen = await _timeouts(kind)
    assert seen and all(seconds == SHARED_TIMEOUT for _, seconds in seen), seen

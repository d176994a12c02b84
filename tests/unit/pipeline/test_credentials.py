"""The start-up check of the worker's Kordiam credentials: which answers stop the start, naming which key."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from bridge.errors import ConfigError
from bridge.kordiam.client import KordiamClient
from bridge.pipeline.credentials import KordiamCredentials
from bridge.queue.gate import ReceiveGate
from tests.support import http_answering


def credentials_answered_by(status: int) -> tuple[KordiamCredentials, ReceiveGate]:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"title": "answer", "status": status})

    client = KordiamClient(
        http_answering(answer), base_url="https://kordiam.test", client_id="c", client_secret=SecretStr("s3cret-value")
    )
    gate = ReceiveGate()
    return KordiamCredentials(client, gate), gate


@pytest.mark.parametrize(
    ("status", "key"),
    [
        (401, "kordiam.client_secret"),
        (400, "kordiam.client_secret"),
        (404, "kordiam.base_url"),
        (301, "kordiam.base_url"),  # the API moved: the redirect is not followed, its place is named
        (308, "kordiam.base_url"),
    ],
)
async def test_refused_or_misdirected_at_start_is_a_configuration_error(status: int, key: str) -> None:
    credentials, gate = credentials_answered_by(status)
    with pytest.raises(ConfigError) as raised:
        await credentials.check_at_start()
    assert raised.value.key == key
    assert gate.reason is None


async def test_unreachable_at_start_starts_paused_not_failed() -> None:
    credentials, gate = credentials_answered_by(503)
    try:
        await credentials.check_at_start()
        assert gate.reason is not None and gate.reason.startswith("Kordiam not reachable at start-up")
    finally:
        await credentials.aclose()


async def test_a_token_answer_of_200_with_an_oauth_error_at_start_names_the_secret() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"error": "invalid_client", "error_description": "unknown client"})

    client = KordiamClient(
        http_answering(answer), base_url="https://kordiam.test", client_id="c", client_secret=SecretStr("s3cret-value")
    )
    with pytest.raises(ConfigError, match="invalid_client: unknown client") as raised:
        await KordiamCredentials(client, ReceiveGate()).check_at_start()
    assert raised.value.key == "kordiam.client_secret"

"""The webhook ingress in-process: every route, every auth type, id mapping, limits, the seeds' bodies verbatim.

The queue is an in-memory recorder (the real queues are in tests/integration/test_ingress.py); the state store is
the real SQLite one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest.mock import patch

import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from structlog.testing import capture_logs

from bridge.config import DEFAULT_MAX_BODY_BYTES, IngressSettings
from bridge.errors import ConfigError
from bridge.ingress import common, metrics
from bridge.ingress.app import IngressServer, RateLimiter, build_app, client_address
from bridge.ingress.auth import TokenIssuer
from bridge.pipeline.notification import decode_notification
from bridge.queue import MessageTooLarge
from bridge.queue.send_batcher import SendRejected
from bridge.state import Delivery, SqliteStateStore

FIXTURES = Path(__file__).parents[2] / "fixtures"
JSON = {"Content-Type": "application/json;charset=UTF-8", "Accept": "application/json, application/*+json"}
TOKEN = "persistent-token-1"
JWT_SECRET = "jwt-secret-of-at-least-32-bytes-long!"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@dataclass
class RecordingTransport:
    """Records sends; ``down`` makes every send fail as an unreachable queue does; a body over
    ``max_message_bytes`` is refused as ``Transport.send`` promises."""

    url: str = "https://sqs.test/queue"
    dlq_url: str | None = None
    down: bool = False
    disconnected: bool = False
    attempts: int = 0
    max_message_bytes: int | None = None
    # As SQS: a body with a character outside #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF is
    # refused (SendMessageBatch answers the entry as failed, InvalidMessageContents).
    xml_characters_only: bool = False
    sent: list[tuple[str, dict[str, str], str | None]] = field(default_factory=list)

    def connected(self) -> bool:
        return not self.disconnected

    async def send(self, body: str, attributes: dict[str, str] | None = None, *, group_id: str | None = None) -> str:
        self.attempts += 1
        if self.disconnected:
            await asyncio.sleep(3600)  # a send on a lost connection waits for the reconnection
        if self.down:
            raise ConnectionError("queue unreachable")
        if self.max_message_bytes is not None and len(body.encode()) > self.max_message_bytes:
            raise MessageTooLarge(len(body.encode()), self.max_message_bytes)
        if self.xml_characters_only and re.search("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]", body):
            raise SendRejected("InvalidMessageContents", "Invalid binary character")
        self.sent.append((body, dict(attributes or {}), group_id))
        return f"m-{len(self.sent)}"

    def __getattr__(self, name: str) -> Any:  # the consumer's side of the contract is never used by the ingress
        raise AttributeError(name)


def settings(**overrides: Any) -> IngressSettings:
    data: dict[str, Any] = {
        "global_export": {"path": "/kordiam", "auth": {"type": "bearer", "token": TOKEN}},
        "platform": {
            "path": "/platform",
            "api_user": "api_5d4be039440a9004126215",
            "api_secret": "5d4be039440c5479906369",
        },
    }
    data.update(overrides)
    return IngressSettings.model_validate(data)


Factory = Callable[..., Awaitable[tuple[TestClient[Any, Any], RecordingTransport]]]


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[SqliteStateStore]:
    store = SqliteStateStore(tmp_path / "state.db")
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def ingress(state: SqliteStateStore) -> AsyncIterator[Factory]:
    clients: list[TestClient[Any, Any]] = []

    async def start(config: IngressSettings | None = None) -> tuple[TestClient[Any, Any], RecordingTransport]:
        transport = RecordingTransport()
        app, _ = build_app(config or settings(), transport, state, "web")
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client, transport

    yield start
    for client in clients:
        await client.close()


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {**JSON, "Authorization": f"Bearer {token}"}


# --- Global Export: routes and the seeds' bodies ---------------------------------------------------------------


async def test_post_element_with_seed_body_enqueues_it_verbatim_and_answers_the_element_id(ingress: Factory) -> None:
    client, transport = await ingress()
    body = fixture("seed001_create.json")
    response = await client.post("/kordiam/element", data=body, headers=bearer())
    assert response.status == 201
    assert await response.json() == {"id": 123456}
    [(sent, attributes, group)] = transport.sent
    assert sent == body.decode()
    assert attributes == {"event": "created", "source": "ingress-global-export"}
    assert group == "123456"
    assert decode_notification(sent, attributes).element_id == 123456


@pytest.mark.parametrize("name", ["seed001_update.json", "seed001_full.json"])
async def test_put_element_with_seed_bodies_enqueues_an_update(ingress: Factory, name: str) -> None:
    client, transport = await ingress()
    body = fixture(name)
    response = await client.put("/kordiam/element/123", data=body, headers=bearer())
    assert response.status == 200
    assert await response.json() == {"id": 123}
    [(sent, attributes, _)] = transport.sent
    assert sent == body.decode() and attributes["event"] == "updated"
    assert decode_notification(sent, attributes).element_id == json.loads(body)["id"]


# Seed 001: without the id, Kordiam sends "an empty (null) value": the text "null", or nothing at all after the
# slash. A 404 for the empty one would drop the update of a story whose POST never reached the bridge.
@pytest.mark.parametrize("missing", ["null", ""], ids=["null", "empty"])
async def test_put_with_null_id_still_enqueues_from_the_body(ingress: Factory, missing: str) -> None:
    client, transport = await ingress()
    response = await client.put(f"/kordiam/element/{missing}", data=fixture("seed001_update.json"), headers=bearer())
    assert response.status == 200
    assert await response.json() == {"id": 123456}
    assert len(transport.sent) == 1
    headers = bearer(await platform_token(client))
    body = fixture("seed002_publication.json")
    response = await client.put(f"/platform/publication/{missing}", data=body, headers=headers)
    assert response.status == 200
    assert (await response.json())["id"] == 1157281
    assert [attributes["event"] for _, attributes, _ in transport.sent] == ["updated", "updated"]


async def test_delete_maps_the_id_the_ingress_answered_back_to_the_element(ingress: Factory) -> None:
    client, transport = await ingress()
    response = await client.delete("/kordiam/element/123456", headers=bearer())
    assert response.status == 200
    [(sent, attributes, _)] = transport.sent
    assert json.loads(sent) == {"id": 123456, "event": "deleted"}
    assert attributes["event"] == "deleted"


async def test_delete_maps_a_linked_cms_id_through_the_state_store(ingress: Factory, state: SqliteStateStore) -> None:
    # The worker delivered element 777 to WordPress post 55 and linked it: Kordiam now sends 55. But 55 may also be
    # the id the ingress answered for element 55, never linked (its feedback failed, or link_element is off): only
    # Kordiam knows which of the two it deleted. Both are enqueued, the linked one first; the worker fetches each,
    # deletes the one Kordiam no longer has and only syncs the other again.
    await state.record(Delivery(777, "web", 1, "55", "fp"))
    client, transport = await ingress()
    response = await client.delete("/kordiam/element/55", headers=bearer())
    assert response.status == 200 and await response.json() == {"id": 55}
    assert [json.loads(body) for body, _, _ in transport.sent] == [
        {"id": 777, "event": "deleted"},
        {"id": 55, "event": "deleted"},
    ]


# The queue failing after the first of a DELETE's messages: 503, so Kordiam retries the whole call; its retry sends
# the first again (a duplicate the worker's fetch makes harmless) and the second for the first time. Answered 200,
# the second element's deletion would be lost.
async def test_a_delete_whose_queue_fails_half_way_is_a_503_and_its_retry_enqueues_every_element(
    ingress: Factory, state: SqliteStateStore
) -> None:
    await state.record(Delivery(777, "web", 1, "55", "fp"))
    client, transport = await ingress()
    send = transport.send

    async def second_fails(body: str, attributes: dict[str, str] | None = None, *, group_id: str | None = None) -> str:
        if transport.attempts == 1:
            transport.attempts += 1
            raise ConnectionError("queue unreachable")
        return await send(body, attributes, group_id=group_id)

    with patch.object(transport, "send", side_effect=second_fails):
        response = await client.delete("/kordiam/element/55", headers=bearer())
    assert response.status == 503 and response.headers["Retry-After"] == "10"
    assert [json.loads(body)["id"] for body, _, _ in transport.sent] == [777]
    retried = await client.delete("/kordiam/element/55", headers=bearer())
    assert retried.status == 200 and await retried.json() == {"id": 55}
    assert [json.loads(body)["id"] for body, _, _ in transport.sent] == [777, 777, 55]


async def test_a_platform_delete_of_an_id_that_is_a_cms_id_and_a_placeholder_enqueues_both(
    ingress: Factory, state: SqliteStateStore
) -> None:
    await state.record(Delivery(17, "web", 1017, "post-17", "fp"))  # answered 1017, its publication, then linked
    await state.record(Delivery(88, "web", 2088, "1017", "fp"))  # a CMS item whose id is 1017 as well
    client, transport = await ingress()
    response = await client.delete("/platform/publication/1017", headers=bearer(await platform_token(client)))
    assert response.status == 200
    assert [json.loads(body)["id"] for body, _, _ in transport.sent] == [88, 17]


async def test_delete_prefers_the_main_channel_delivery(ingress: Factory, state: SqliteStateStore) -> None:
    await state.record(Delivery(1, "archive", 1, "abc", "fp"))
    await state.record(Delivery(2, "web", 2, "abc", "fp"))
    client, transport = await ingress()
    await client.delete("/kordiam/element/abc", headers=bearer())
    assert json.loads(transport.sent[0][0])["id"] == 2


async def test_delete_finds_the_linked_id_through_the_index_not_a_scan(
    ingress: Factory, state: SqliteStateStore
) -> None:
    for element in range(1, 50):
        await state.record(Delivery(element, "web", element, f"post-{element}", "fp"))
    client, transport = await ingress()
    with patch.object(state, "all_deliveries", side_effect=AssertionError("a scan of every delivery")):
        response = await client.delete("/kordiam/element/post-17", headers=bearer())
    assert response.status == 200
    assert json.loads(transport.sent[0][0]) == {"id": 17, "event": "deleted"}


async def test_platform_delete_finds_the_placeholder_publication_through_the_index_not_a_scan(
    ingress: Factory, state: SqliteStateStore
) -> None:
    for element in range(1, 50):
        await state.record(Delivery(element, "web", 1000 + element, f"post-{element}", "fp"))
    client, transport = await ingress()
    headers = bearer(await platform_token(client))
    with patch.object(state, "all_deliveries", side_effect=AssertionError("a scan of every delivery")):
        response = await client.delete("/platform/publication/1017", headers=headers)
    assert response.status == 200
    assert json.loads(transport.sent[0][0]) == {"id": 17, "event": "deleted"}


# An id larger than any the state stores keep (2**63 - 1) would be enqueued as a message the worker can only
# dead-letter: a caller could fill the dead-letter queue and trip its alarm.
@pytest.mark.parametrize("unknown", ["null", "", "not-a-known-id", "9223372036854775808", "99999999999999999999999"])
async def test_delete_of_an_unmappable_id_enqueues_nothing(ingress: Factory, unknown: str) -> None:
    client, transport = await ingress()
    response = await client.delete(f"/kordiam/element/{unknown}", headers=bearer())
    assert response.status == 200
    assert await response.json() == {"id": None, "mapped": False}
    response = await client.delete(f"/platform/publication/{unknown}", headers=bearer(await platform_token(client)))
    assert response.status == 200
    assert await response.json() == {"id": None, "mapped": False}
    assert transport.sent == []


# Characters that str.isdigit() calls digits but are not ASCII: int() refuses "²" (a ValueError that answered 500
# with a traceback, after the PUT's message was already on the queue) and reads "٣" as 3 (another element's id).
@pytest.mark.parametrize("odd", ["\u00b2", "\u0663"], ids=["superscript-two", "arabic-indic-three"])
async def test_ids_with_non_ascii_digits_are_not_element_ids(ingress: Factory, odd: str) -> None:
    client, transport = await ingress()
    response = await client.delete(f"/kordiam/element/{odd}", headers=bearer())
    assert response.status == 200
    assert await response.json() == {"id": None, "mapped": False}
    assert transport.sent == []
    body = fixture("seed001_update.json")
    response = await client.put(f"/kordiam/element/{odd}", data=body, headers=bearer())
    assert response.status == 200
    assert await response.json() == {"id": odd}  # the id Kordiam holds, answered back as it came
    assert len(transport.sent) == 1
    response = await client.post("/kordiam/element", data=json.dumps({"id": odd}).encode(), headers=bearer())
    assert response.status == 400
    assert (await response.json())["error"].startswith("body is not a Kordiam element: `id` is not a positive")
    assert len(transport.sent) == 1


# Python refuses to read an integer of more than 4300 digits (a ValueError): the id is simply no element's, not a
# failing state store (a 503 Kordiam retries in vain, a misleading state_lookup_failed) nor a 500 after the enqueue.
async def test_an_id_of_more_digits_than_python_reads_is_no_elements_id(ingress: Factory) -> None:
    client, transport = await ingress()
    huge = "9" * 5000
    token = await platform_token(client)
    for path, headers in ((f"/kordiam/element/{huge}", bearer()), (f"/platform/publication/{huge}", bearer(token))):
        response = await client.delete(path, headers=headers)
        assert response.status == 200 and await response.json() == {"id": None, "mapped": False}
    assert transport.sent == []
    response = await client.put(f"/kordiam/element/{huge}", data=fixture("seed001_update.json"), headers=bearer())
    assert response.status == 200 and await response.json() == {"id": huge}
    body = fixture("seed002_publication.json")
    response = await client.put(f"/platform/publication/{huge}", data=body, headers=bearer(token))
    assert response.status == 200 and (await response.json())["id"] == huge
    assert len(transport.sent) == 2


async def test_a_platform_delete_of_an_id_too_large_for_a_publication_enqueues_nothing(ingress: Factory) -> None:
    client, transport = await ingress()
    headers = bearer(await platform_token(client))
    response = await client.delete("/platform/publication/99999999999999999999999", headers=headers)
    assert response.status == 200 and (await response.json())["mapped"] is False
    assert transport.sent == []


# --- authentication ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [JSON, bearer("wrong"), {**JSON, "Authorization": TOKEN}, {**JSON, "Authorization": "Basic " + TOKEN}],
    ids=["missing", "wrong", "no-scheme", "other-scheme"],
)
async def test_bearer_refusals_never_reach_the_queue(ingress: Factory, headers: dict[str, str]) -> None:
    client, transport = await ingress()
    for call in (
        client.post("/kordiam/element", data=fixture("seed001_create.json"), headers=headers),
        client.put("/kordiam/element/1", data=fixture("seed001_update.json"), headers=headers),
        client.delete("/kordiam/element/1", headers=headers),
    ):
        response = await call
        assert response.status == 401
        assert await response.json() == {"error": "missing or invalid credentials"}
    assert transport.sent == []


def jwt_settings(**auth: Any) -> IngressSettings:
    return settings(global_export={"path": "/kordiam", "auth": {"type": "jwt", "secret": JWT_SECRET, **auth}})


def token(claims: dict[str, Any], secret: str = JWT_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


@pytest.mark.parametrize(
    ("expires_in", "secret", "status"),
    [
        (None, JWT_SECRET, 201),  # Kordiam's persistent JWT: no exp
        (60, JWT_SECRET, 201),
        (-60, JWT_SECRET, 401),  # expired
        (None, "another-secret-of-at-least-32-bytes!", 401),  # wrong signature
    ],
    ids=["persistent", "unexpired", "expired", "wrong-secret"],
)
async def test_jwt(ingress: Factory, expires_in: int | None, secret: str, status: int) -> None:
    client, transport = await ingress(jwt_settings())
    # The expiry is taken when the test runs, not when pytest collects it (minutes earlier in a full run).
    claims = {} if expires_in is None else {"exp": int(time.time()) + expires_in}
    headers = bearer(token(claims, secret))
    response = await client.post("/kordiam/element", data=fixture("seed001_create.json"), headers=headers)
    assert response.status == status
    assert len(transport.sent) == (1 if status == 201 else 0)


async def test_jwt_missing_and_unsigned_are_refused(ingress: Factory) -> None:
    client, transport = await ingress(jwt_settings())
    unsigned = jwt.encode({"sub": "x"}, "", algorithm="none")  # PyJWT takes "" as no key
    for headers in (JSON, bearer(unsigned), bearer("not.a.jwt")):
        response = await client.post("/kordiam/element", data=fixture("seed001_create.json"), headers=headers)
        assert response.status == 401
    assert transport.sent == []


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        ({"iss": "kordiam", "aud": "newsroom"}, 201),
        ({"iss": "someone-else", "aud": "newsroom"}, 401),
        ({"iss": "kordiam", "aud": "another"}, 401),
        ({"aud": "newsroom"}, 401),
    ],
    ids=["match", "wrong-issuer", "wrong-audience", "no-issuer"],
)
async def test_jwt_issuer_and_audience_when_set(ingress: Factory, claims: dict[str, Any], status: int) -> None:
    client, _ = await ingress(jwt_settings(issuer="kordiam", audience="newsroom"))
    response = await client.post("/kordiam/element", data=fixture("seed001_create.json"), headers=bearer(token(claims)))
    assert response.status == status


async def test_jwt_require_expiry_refuses_a_persistent_token(ingress: Factory) -> None:
    client, _ = await ingress(jwt_settings(require_expiry=True))
    response = await client.post("/kordiam/element", data=fixture("seed001_create.json"), headers=bearer(token({})))
    assert response.status == 401


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


async def test_api_key_exchanged_for_a_token_then_used(ingress: Factory) -> None:
    auth = {"type": "api_key", "api_key": "key-1", "api_secret": "secret-1", "token_path": "/auth/token"}
    client, transport = await ingress(settings(global_export={"path": "/kordiam", "auth": auth}))
    refused = await client.post("/kordiam/auth/token", headers=basic("key-1", "wrong"))
    assert refused.status == 401
    missing = await client.post("/kordiam/auth/token")
    assert missing.status == 401
    issued = await client.post("/kordiam/auth/token", headers=basic("key-1", "secret-1"))
    assert issued.headers["Cache-Control"] == "no-store" and issued.headers["Pragma"] == "no-cache"
    answer = await issued.json()
    assert answer["token_type"] == "bearer" and answer["expires_in"] == 3600
    # seed 002's form body works too
    form = await client.post(
        "/kordiam/auth/token",
        data="grant_type=client_credentials&api_key=key-1&api_secret=secret-1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status == 200
    body = fixture("seed001_create.json")
    assert (await client.post("/kordiam/element", data=body, headers=bearer("made-up"))).status == 401
    assert (await client.post("/kordiam/element", data=body, headers=bearer(answer["access_token"]))).status == 201
    assert len(transport.sent) == 1


async def test_api_key_token_expires(ingress: Factory) -> None:
    auth = {"type": "api_key", "api_key": "k", "api_secret": "s3cret-value"}
    client, transport = await ingress(settings(global_export={"path": "/kordiam", "auth": auth}))
    issuer = TokenIssuer("s3cret-value", 60, "global_export")  # what the ingress issues, with a 60 s lifetime
    fresh = str(issuer.issue()["access_token"])
    with patch("time.time", return_value=time.time() - 120):  # issued two minutes ago: expired a minute ago
        expired = str(issuer.issue()["access_token"])
    body = fixture("seed001_create.json")
    assert (await client.post("/kordiam/element", data=body, headers=bearer(expired))).status == 401
    assert transport.sent == []
    assert (await client.post("/kordiam/element", data=body, headers=bearer(fresh))).status == 201


def test_an_issued_token_is_verified_once_and_still_expires() -> None:
    issuer = TokenIssuer("s3cret", 60, "platform")
    headers = {"Authorization": f"Bearer {issuer.issue()['access_token']}"}
    with patch("jwt.decode", wraps=jwt.decode) as decode:
        assert issuer.check(headers) is None
        assert issuer.check(headers) is None
        assert decode.call_count == 1  # the second call was remembered
    # Past its exp the memory no longer answers: PyJWT decides again (on its own clock, which says expired then).
    with (
        patch("time.time", return_value=time.time() + 61),
        patch("jwt.decode", side_effect=jwt.ExpiredSignatureError) as decode,
    ):
        assert issuer.check(headers) == "token expired"
        assert decode.call_count == 1


def test_a_token_that_failed_is_never_remembered() -> None:
    issuer = TokenIssuer("s3cret", 60, "platform")
    forged = {"Authorization": f"Bearer {TokenIssuer('other', 60, 'platform').issue()['access_token']}"}
    with patch("jwt.decode", wraps=jwt.decode) as decode:
        assert issuer.check(forged) == "token not issued by this ingress"
        assert issuer.check(forged) == "token not issued by this ingress"
        assert decode.call_count == 2


def test_the_memory_of_verified_tokens_is_bounded() -> None:
    issuer = TokenIssuer("s3cret", 60, "platform")
    for _ in range(TokenIssuer.VERIFIED_TOKENS_KEPT + 5):
        token = issuer.issue()["access_token"]  # each with its own jti
        assert issuer.check({"Authorization": f"Bearer {token}"}) is None
    assert len(issuer._verified) <= TokenIssuer.VERIFIED_TOKENS_KEPT


async def test_custom_headers(ingress: Factory) -> None:
    auth = {"type": "headers", "headers": {"X-Api-Key": "key-0001", "X-Tenant": "tenant-0001"}}
    client, transport = await ingress(settings(global_export={"path": "/kordiam", "auth": auth}))
    body = fixture("seed001_create.json")
    for headers, status in (
        ({**JSON, "X-Api-Key": "key-0001", "X-Tenant": "tenant-0001"}, 201),
        ({**JSON, "X-Api-Key": "key-0001", "X-Tenant": "wrong"}, 401),
        ({**JSON, "X-Api-Key": "key-0001"}, 401),
        (JSON, 401),
    ):
        assert (await client.post("/kordiam/element", data=body, headers=headers)).status == status
    assert len(transport.sent) == 1


# --- Platform integration ---------------------------------------------------------------------------------------


async def platform_token(client: TestClient[Any, Any]) -> str:
    # seed 002's own example header: Basic base64(api_5d4be039440a9004126215:5d4be039440c5479906369)
    response = await client.post(
        "/platform/oauth2/token",
        data="grant_type=client_credentials&api_key=_api_key_&api_secret=_api_secret_",
        headers={
            "Authorization": "Basic YXBpXzVkNGJlMDM5NDQwYTkwMDQxMjYyMTU6NWQ0YmUwMzk0NDBjNTQ3OTkwNjM2OQ==",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert response.status == 200
    # RFC 6749 5.1: an answer carrying a token is never stored by a cache on the way.
    assert response.headers["Cache-Control"] == "no-store" and response.headers["Pragma"] == "no-cache"
    answer = await response.json()
    assert answer["token_type"] == "bearer" and answer["expires_in"] == 3600
    return str(answer["access_token"])


async def stalled_token_request(client: TestClient[Any, Any], *, chunked: bool) -> bytes:
    """A caller without credentials that announces a body of max_body_bytes at the token path, sends 64 KiB of it
    and stalls: the status line of the answer, or b"" if none came within 5 s (the ingress still holding it)."""
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {DEFAULT_MAX_BODY_BYTES}"
    writer.write(
        f"POST /platform/oauth2/token HTTP/1.1\r\nHost: ingress\r\n{framing}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode()
    )
    part = b"api_key=" + b"k" * (64 * 1024)
    writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n" if chunked else part)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.readline(), timeout=5)
    except TimeoutError:
        return b""
    finally:
        writer.close()


# A token request is a few short form fields (seed 002) or an HTTP Basic header: a caller not yet authenticated
# gets no more read than that. Reading up to max_body_bytes (4 MiB) and waiting for it without a time limit let
# any caller hold 4 MiB of the ingress's memory per connection, for as long as it kept the connection open.
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_token_request_body_is_read_only_up_to_a_few_kib(ingress: Factory, chunked: bool) -> None:
    client, _ = await ingress()
    assert (await stalled_token_request(client, chunked=chunked)).startswith(b"HTTP/1.1 413")


async def test_platform_token_refuses_wrong_basic(ingress: Factory) -> None:
    client, _ = await ingress()
    assert (await client.post("/platform/oauth2/token", headers=basic("api_5d4be039440a9004126215", "x"))).status == 401


async def test_platform_publication_lifecycle(ingress: Factory, state: SqliteStateStore) -> None:
    client, transport = await ingress()
    headers = bearer(await platform_token(client))
    body = fixture("seed002_publication.json")
    created = await client.post("/platform/publication", data=body, headers=headers)
    assert created.status == 200
    # first sight: the Kordiam publication id as a stable placeholder
    assert await created.json() == {"id": 1157281, "cmsEditLink": None, "cmsOpenLink": None}
    assert transport.sent[0][0] == body.decode() and transport.sent[0][1]["event"] == "created"

    # the worker delivered it: the answer now carries the CMS item
    await state.record(
        Delivery(1212538, "web", 1157281, "9369832", "fp", "https://cms/edit/9369832", "https://cms/9369832", True)
    )
    updated = await client.put("/platform/publication/1157281", data=body, headers=headers)
    assert await updated.json() == {
        "id": 9369832,
        "cmsEditLink": "https://cms/edit/9369832",
        "cmsOpenLink": "https://cms/9369832",
        "cmsEditLinkTitle": None,
        "cmsOpenLinkTitle": None,
    }
    deleted = await client.delete("/platform/publication/9369832", headers=headers)
    assert deleted.status == 200
    assert json.loads(transport.sent[-1][0]) == {"id": 1212538, "event": "deleted"}
    # the placeholder id maps too
    await client.delete("/platform/publication/1157281", headers=headers)
    assert json.loads(transport.sent[-1][0]) == {"id": 1212538, "event": "deleted"}
    assert [a["event"] for _, a, _ in transport.sent] == ["created", "updated", "deleted", "deleted"]


async def test_platform_full_example_and_files(ingress: Factory) -> None:
    client, transport = await ingress()
    headers = bearer(await platform_token(client))
    response = await client.post("/platform/files", data=fixture("seed002_full.json"), headers=headers)
    assert response.status == 200
    assert len(transport.sent) == 1


async def test_platform_statuses_accepted_not_enqueued(ingress: Factory) -> None:
    client, transport = await ingress()
    headers = bearer(await platform_token(client))
    response = await client.post("/platform/statuses", data=fixture("seed002_statuses.json"), headers=headers)
    assert response.status == 200
    assert await response.json() == {"platform": 99003}
    assert transport.sent == []


# `platform` is logged and answered back: anything but a platform id (a 4 MiB string, an object) is refused rather
# than written into the log ("bodies are never logged") and echoed.
@pytest.mark.parametrize(
    "platform", ["x" * 100_000, {"id": 1}, True, None, -1], ids=["text", "object", "bool", "null", "negative"]
)
async def test_platform_statuses_need_a_platform_id(ingress: Factory, platform: object) -> None:
    client, _ = await ingress()
    headers = bearer(await platform_token(client))
    with capture_logs() as lines:
        response = await client.post("/platform/statuses", data=json.dumps({"platform": platform}), headers=headers)
    assert response.status == 400
    assert await response.json() == {
        "error": "body must be a JSON object with `platform`, a platform id (seed 002's statuses)"
    }
    assert [line for line in lines if line["event"] == "statuses_received"] == []
    as_text = await client.post("/platform/statuses", data=json.dumps({"platform": "99003"}), headers=headers)
    assert as_text.status == 200 and await as_text.json() == {"platform": "99003"}


async def test_platform_calls_need_the_issued_token(ingress: Factory) -> None:
    client, transport = await ingress()
    body = fixture("seed002_publication.json")
    for headers in (JSON, bearer("forged"), {**JSON, **basic("api_5d4be039440a9004126215", "5d4be039440c5479906369")}):
        assert (await client.post("/platform/publication", data=body, headers=headers)).status == 401
    # a token the global_export receiver would issue with the same secret is not accepted either
    other = str(TokenIssuer("5d4be039440c5479906369", 3600, "global_export").issue()["access_token"])
    assert (await client.post("/platform/publication", data=body, headers=bearer(other))).status == 401
    assert transport.sent == []


# --- hardening --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"id": 1,', "body is not JSON: Expecting property name enclosed in double quotes at line 1 column 10"),
        (b"[1, 2]", "body must be a JSON object (a Kordiam element), not a JSON array"),
        (b'{"title": "x"}', "body is not a Kordiam element: no element id (expected `id` or `elementId`; keys: title)"),
        (b'{"id": 1, "title": 5}', "body is not a Kordiam element: element body does not parse at title:"),
        (b"\xff\xfe", "body is not UTF-8 (byte 0)"),
        # Python refuses to read an integer of more than 4300 digits (a ValueError that is not a JSONDecodeError).
        (b'{"id": ' + b"1" * 5000 + b', "title": "x"}', "body is not JSON: Exceeds the limit (4300 digits)"),
        (b'{"id": "' + b"1" * 5000 + b'"}', "body is not a Kordiam element: `id` " + "1" * 40 + "… is larger than"),
    ],
)
async def test_malformed_bodies_get_a_400_that_says_what_is_wrong(ingress: Factory, body: bytes, message: str) -> None:
    client, transport = await ingress()
    response = await client.post("/kordiam/element", data=body, headers=bearer())
    assert response.status == 400
    assert (await response.json())["error"].startswith(message)
    assert transport.sent == []


async def test_content_type_must_be_json(ingress: Factory) -> None:
    client, transport = await ingress()
    headers = {**bearer(), "Content-Type": "text/plain"}
    response = await client.post("/kordiam/element", data=fixture("seed001_create.json"), headers=headers)
    assert response.status == 415
    assert transport.sent == []


def large_element() -> dict[str, Any]:
    """A story at the large end of what Kordiam sends: 50 tasks with full article text, 30 publications."""
    article = "<p>" + "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 350 + "</p>"  # ~20,000 chars
    custom = [{"id": i, "customField": {"id": i}, "type": "text", "value": "x" * 200} for i in range(20)]
    return {
        "id": 1,
        "title": "T" * 500,
        "slug": "s" * 200,
        "note": "n" * 5000,
        "modificationDate": "2026-12-04T10:00:00Z",
        "tasks": [
            {"id": 10 + i, "format": {"id": 8, "name": "Text"}, "content": article, "customFields": custom}
            for i in range(50)
        ],
        "publications": [
            {"id": 1000 + i, "platform": 4, "status": {"id": 1, "name": "x"}, "customFields": custom} for i in range(30)
        ],
    }


async def test_a_large_element_fits_the_default_limit_and_a_larger_body_gets_413(ingress: Factory) -> None:
    large = json.dumps(large_element()).encode()
    assert 1_000_000 < len(large) < DEFAULT_MAX_BODY_BYTES
    client, transport = await ingress()
    assert (await client.post("/kordiam/element", data=large, headers=bearer())).status == 201
    assert transport.sent[0][0] == large.decode()
    small, small_transport = await ingress(settings(max_body_bytes=64 * 1024))
    response = await small.post("/kordiam/element", data=large, headers=bearer())
    assert response.status == 413
    assert small_transport.sent == []


async def test_a_body_larger_than_the_queue_takes_is_enqueued_as_the_id_and_event(ingress: Factory) -> None:
    # SQS takes 1 MiB at most (a queue may be set lower); the ingress takes up to max_body_bytes. Kordiam would
    # retry a 503 a few times and drop the call, so the notification goes without the body the worker never needs.
    large = json.dumps(large_element())
    client, transport = await ingress()
    transport.max_message_bytes = 256 * 1024
    trimmed_before = metrics.BODIES_TRIMMED._value.get()
    response = await client.post("/kordiam/element", data=large.encode(), headers=bearer())
    assert response.status == 201
    assert await response.json() == {"id": 1}
    [(body, attributes, group_id)] = transport.sent
    assert json.loads(body) == {"id": 1, "event": "created"}
    assert attributes == {"event": "created", "source": "ingress-global-export", "trimmed_body_bytes": str(len(large))}
    assert group_id == "1"
    assert decode_notification(body, attributes).element_id == 1
    assert metrics.BODIES_TRIMMED._value.get() == trimmed_before + 1
    assert (await client.get("/readyz")).status == 200
    # A body the queue takes goes as it came.
    small = fixture("seed001_create.json")
    assert (await client.post("/kordiam/element", data=small, headers=bearer())).status == 201
    assert transport.sent[1][0] == small.decode()


# JSON allows U+FFFE and U+FFFF raw in a string (a title pasted from somewhere); SQS refuses them. Answered 503, the
# call would fail the same way on each of Kordiam's retries and be dropped, and each failure took /readyz to 503.
async def test_a_body_with_characters_sqs_refuses_is_enqueued_as_the_same_json(ingress: Factory) -> None:
    client, transport = await ingress()
    transport.xml_characters_only = True
    element = {"id": 5, "title": "Odd \ufffe\uffff title", "modificationDate": "2026-12-04T10:00:00Z"}
    response = await client.post("/kordiam/element", data=json.dumps(element, ensure_ascii=False), headers=bearer())
    assert response.status == 201
    [(body, attributes, _)] = transport.sent
    assert json.loads(body) == element
    assert decode_notification(body, attributes).modification_date is not None
    assert (await client.get("/readyz")).status == 200


# DELETE maps the id through the state store, and a Platform answer carries what it knows: with the store failing
# (DynamoDB throttled or unreachable) the call is answered 503 with a reason and Retry-After, as a failing queue is,
# not 500 "internal error" with a traceback in the log.
async def test_a_failing_state_store_answers_503_with_a_reason(ingress: Factory, state: SqliteStateStore) -> None:
    client, transport = await ingress()
    token = await platform_token(client)
    failing = ConnectionError("state store unreachable")
    with (
        patch.object(state, "deliveries_with_external_id", side_effect=failing),
        patch.object(state, "deliveries", side_effect=failing),
    ):
        deleted = await client.delete("/kordiam/element/post-1", headers=bearer())
        updated = await client.put(
            "/platform/publication/9", data=fixture("seed002_publication.json"), headers=bearer(token)
        )
    for response in (deleted, updated):
        assert response.status == 503
        assert await response.json() == {"error": "state store unavailable, retry later"}
        assert response.headers["Retry-After"] == "10"
    assert len(transport.sent) == 1  # the PUT's message: on the queue before its answer was looked up


async def test_queue_down_answers_503_and_readyz_says_so(ingress: Factory) -> None:
    client, transport = await ingress()
    transport.down = True
    response = await client.post("/kordiam/element", data=fixture("seed001_create.json"), headers=bearer())
    assert response.status == 503
    assert await response.json() == {"error": "queue unavailable, retry later"}
    assert (await client.get("/readyz")).status == 503
    transport.down = False
    assert (await client.post("/kordiam/element", data=fixture("seed001_create.json"), headers=bearer())).status == 201
    assert (await client.get("/readyz")).status == 200


# Kordiam drops a call after a few retries (3 x 5 s, 5 x 1 s): a 429 for a call it is entitled to make loses the
# change for good. A bulk change in Kordiam is a burst from one address well beyond rate_limit_burst; with the
# defaults (200, 50/s) about 200 of 1,000 Global Export calls, and 550 of 1,000 Platform calls, were lost. So only a
# call the ingress answered 4xx (no or wrong credentials, a bad body, an unknown path) takes a token: the bucket
# stops callers that keep getting it wrong, and never Kordiam's calls that are taken.
async def test_rate_limit_per_client_counts_only_calls_answered_4xx(ingress: Factory) -> None:
    client, transport = await ingress(settings(rate_limit_per_second=0.01, rate_limit_burst=2))
    body = fixture("seed001_create.json")

    async def post(token: str = TOKEN) -> int:
        return (await client.post("/kordiam/element", data=body, headers=bearer(token))).status

    assert [await post() for _ in range(5)] == [201] * 5
    assert [await post("wrong"), await post("wrong"), await post("wrong")] == [401, 401, 429]
    assert await post() == 429  # the same address: its bucket is empty for now
    assert len(transport.sent) == 5


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket(ingress: Factory) -> None:
    # The test client calls from 127.0.0.1: as a trusted proxy (a load balancer), its X-Forwarded-For names the
    # client. Without trusted_proxies, the two would share one bucket and the third call would be refused.
    client, transport = await ingress(
        settings(rate_limit_per_second=0.01, rate_limit_burst=1, trusted_proxies=["127.0.0.0/8"])
    )

    async def call(forwarded: str, token: str = "wrong") -> int:
        headers = bearer(token) | {"X-Forwarded-For": forwarded}
        return (await client.post("/kordiam/element", data=fixture("seed001_create.json"), headers=headers)).status

    assert [await call("203.0.113.7"), await call("198.51.100.9"), await call("203.0.113.7")] == [401, 401, 429]
    assert await call("192.0.2.1", TOKEN) == 201
    assert len(transport.sent) == 1
    # A scanner's calls to paths the ingress does not serve count as well.
    scanner = {"X-Forwarded-For": "192.0.2.66"}
    assert [(await client.get("/wp-login.php", headers=scanner)).status for _ in range(2)] == [404, 429]


def test_client_address_trusts_only_the_configured_proxies() -> None:
    proxies = settings(trusted_proxies=["10.0.0.0/8"]).trusted_proxies

    def client(peer: str, forwarded: str | None, trusted: tuple[Any, ...] = proxies) -> str:
        headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
        request = make_mocked_request("POST", "/kordiam/element", headers=headers)
        with patch.object(type(request), "remote", peer):
            return client_address(request, trusted)

    assert client("10.1.2.3", "203.0.113.7") == "203.0.113.7"
    # A client's own claim further left is not believed; the nearest untrusted hop is the client.
    assert client("10.1.2.3", "1.2.3.4, 203.0.113.7, 10.9.9.9") == "203.0.113.7"
    # A peer that is not a trusted proxy is the client, whatever it forwards.
    assert client("198.51.100.1", "203.0.113.7") == "198.51.100.1"
    assert client("10.1.2.3", "203.0.113.7", ()) == "10.1.2.3"
    assert client("10.1.2.3", None) == "10.1.2.3"
    assert client("10.1.2.3", "not-an-address") == "not-an-address"


def test_rate_limiter_refills() -> None:
    limiter = RateLimiter(per_second=1.0, burst=1)
    assert limiter.allow("a", now=0.0)
    assert limiter.allow("a", now=0.1)  # asking takes nothing
    limiter.charge("a", now=0.2)
    assert not limiter.allow("a", now=0.5)
    assert limiter.allow("b", now=0.5)
    assert limiter.allow("a", now=1.3)


def test_rate_limiter_keeps_only_buckets_that_are_not_full_again_and_never_too_many() -> None:
    limiter = RateLimiter(per_second=50.0, burst=2)  # full again 0.04 s after the last charge
    assert limiter.allow("a", now=0.0)
    assert limiter._buckets == {}  # a full bucket is not kept
    limiter.charge("a", now=0.0)
    limiter.charge("a", now=0.0)
    assert not limiter.allow("a", now=0.001)  # a's bucket is empty: kept while it refills
    limiter.charge("b", now=0.002)
    assert len(limiter._buckets) == 2
    limiter.charge("b", now=1.0)
    limiter.charge("c", now=1.0)  # a is full again: its bucket went
    assert "a" not in limiter._buckets
    # Many clients at once: the table stays bounded, and each charge drops at most one bucket (no rebuild).
    for n in range(25_000):
        limiter.charge(f"10.0.{n // 256}.{n % 256}", now=2.0)
    assert len(limiter._buckets) <= 10_000


async def test_unknown_route_and_method_are_json_and_request_ids_are_echoed(ingress: Factory) -> None:
    client, _ = await ingress()
    missing = await client.get("/nothing", headers={"X-Request-Id": "abc-123"})
    assert missing.status == 404 and missing.headers["X-Request-Id"] == "abc-123"
    assert "error" in await missing.json()
    wrong = await client.get("/kordiam/element", headers={"X-Request-Id": "bad id with spaces"})
    assert wrong.status == 405
    assert len(wrong.headers["X-Request-Id"]) == 32
    # A 405 names the methods the path takes (RFC 9110 15.5.6), as aiohttp's own answer does.
    assert wrong.headers["Allow"] == "POST"
    options = await client.options("/platform/publication/7")
    assert options.status == 405 and set(options.headers["Allow"].split(",")) == {"PUT", "DELETE"}


async def test_health_and_metrics(ingress: Factory) -> None:
    client, _ = await ingress()
    assert (await client.get("/healthz")).status == 200
    await client.post("/kordiam/element", data=fixture("seed001_create.json"), headers=bearer("wrong"))
    text = await (await client.get("/metrics")).text()
    assert 'bridge_ingress_requests_total{route="global_export.create",status="401"}' in text
    assert 'bridge_ingress_auth_failures_total{receiver="global_export"}' in text
    assert "bridge_ingress_enqueue_seconds_bucket" in text


def test_settings_need_a_receiver_and_distinct_paths() -> None:
    with pytest.raises(ValueError, match="configure"):
        IngressSettings.model_validate({})
    with pytest.raises(ValueError, match="must differ"):
        settings(platform={"path": "/kordiam", "api_user": "u", "api_secret": "api-secret"})


def test_ingress_command_without_an_ingress_table_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bridge.cli import main

    config = tmp_path / "bridge.toml"
    config.write_text(
        '[queue]\nurl = "https://sqs.eu-central-1.amazonaws.com/1/q"\n'
        '[kordiam]\nbase_url = "https://api.kordiam.app"\nclient_id = "c"\nclient_secret = "s"\n'
        '[[channels]]\nname = "web"\ntype = "folder"\nplatforms = [1]\npath = "out"\n'
    )
    assert main(["ingress", "--config", str(config)]) == 2
    assert capsys.readouterr().err.strip().endswith("configuration error: ingress: is required")
    config.write_text(config.read_text() + '[ingress]\nport = 8780\n[ingress.platform]\napi_user = "u"\n')
    assert main(["ingress", "--config", str(config)]) == 2
    assert "ingress.platform.api_secret: is required" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--global-export-url", "ftp://x"], "--global-export-url: must be an http(s) URL"),
        (["--global-export-url", "http://x"], "--global-export-auth: is required with the URL"),
        (["--global-export-url", "http://x", "--global-export-auth", "basic:x"], "--global-export-auth: must be"),
        (["--global-export-auth", "bearer:x"], "--global-export-auth: needs --global-export-url"),
        (["--platform-url", "http://x"], "--platform-api-user: --platform-url needs --platform-api-user"),
    ],
)
def test_simulator_webhook_flags_are_checked(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from bridge.cli import main

    assert main(["simulator", *argv]) == 2
    assert capsys.readouterr().err.startswith(f"kordiam-bridge: configuration error: {message}")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("header:Bad Name=v", "'Bad Name' is not a valid header name"),
        ("header:X-Token=a\nb", "a header value must not hold control characters"),
        ("bearer:tok\ren", "a header value must not hold control characters"),
    ],
)
def test_simulator_webhook_auth_no_request_can_carry_is_refused(
    spec: str, message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: the simulator started, and every webhook call failed in httpx before it was sent (retried, logged as
    # a warning, recorded with no status): the receiver looked unreachable.
    from bridge.cli import main

    def served(*_: object) -> None:
        raise AssertionError("the simulator was started with auth no request can carry")

    monkeypatch.setattr("bridge.simulator.run_simulator", served)
    assert main(["simulator", "--global-export-url", "http://127.0.0.1:9", "--global-export-auth", spec]) == 2
    assert capsys.readouterr().err == f"kordiam-bridge: configuration error: --global-export-auth: {message}\n"


def test_webhook_auth_specs() -> None:
    from bridge.simulator.webhooks import WebhookAuth

    assert WebhookAuth.parse(["bearer:t"]) == WebhookAuth("bearer", token="t")
    assert WebhookAuth.parse(["jwt:s"]) == WebhookAuth("jwt", token="s")
    assert WebhookAuth.parse(["api_key:k:s:x"]) == WebhookAuth("api_key", token="s:x", api_key="k")
    assert WebhookAuth.parse(["header:A=1", "header:B=2"]) == WebhookAuth("headers", headers=(("A", "1"), ("B", "2")))
    with pytest.raises(ValueError, match="only header"):
        WebhookAuth.parse(["bearer:t", "bearer:u"])


async def test_an_ingress_port_in_use_is_a_config_error_naming_it(state: SqliteStateStore) -> None:
    app, _ = build_app(settings(), RecordingTransport(), state, "web")
    taken = IngressServer(app, "127.0.0.1", 0)
    await taken.start()
    try:
        second, _ = build_app(settings(), RecordingTransport(), state, "web")
        with pytest.raises(ConfigError) as raised:
            await IngressServer(second, "127.0.0.1", taken.port).start()
        assert raised.value.key == "ingress.port"
        assert raised.value.problem == f"cannot listen on 127.0.0.1:{taken.port}: address already in use"
    finally:
        await taken.stop()


async def test_readiness_comes_back_by_itself_after_a_failed_send(
    ingress: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A load balancer that routes by /readyz sends no call while it is 503: the call whose success would clear it.
    monkeypatch.setattr(common, "RECHECK_SECONDS", 0.3)
    client, transport = await ingress()
    transport.down = True
    response = await client.post("/kordiam/element", data=fixture("seed001_create.json"), headers=bearer())
    assert response.status == 503 and response.headers["Retry-After"] == "0.3"
    assert (await client.get("/readyz")).status == 503
    transport.down = False
    await asyncio.sleep(0.4)
    assert (await client.get("/readyz")).status == 200


async def test_a_call_while_the_broker_is_known_down_is_answered_at_once(ingress: Factory) -> None:
    client, transport = await ingress()
    transport.disconnected = True
    response = await client.post("/kordiam/element", data=fixture("seed001_create.json"), headers=bearer())
    assert response.status == 503 and response.headers["Retry-After"] == "10"
    # Not sent into the lost connection to wait out the enqueue timeout (5 s) before the same answer.
    assert transport.attempts == 0 and (await client.get("/readyz")).status == 503

"""The process's HTTP client (``bridge.http``) over a real socket: how much of an answer it reads."""

from __future__ import annotations

import gzip
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from bridge.channels.wordpress import WordPressChannel, WordPressOptions
from bridge.errors import ChannelUnavailable, KordiamUnavailable
from bridge.http import HttpAnswerTooLarge, HttpClient, retry_after_seconds
from bridge.kordiam.client import KordiamClient
from bridge.kordiam.models import Element
from bridge.retry import RetryPolicy

LIMIT = 1000


async def _sized(request: web.Request) -> web.Response:
    return web.Response(body=b"x" * int(request.query.get("n", LIMIT * 10)), content_type="text/html")


async def _streamed(request: web.Request) -> web.StreamResponse:
    answer = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    answer.enable_chunked_encoding()
    await answer.prepare(request)
    for _ in range(int(request.query["n"]) // 100):
        await answer.write(b"y" * 100)
    await answer.write_eof()
    return answer


async def _compressed(request: web.Request) -> web.Response:
    # A small gzip body (with its Content-Length) that becomes far more than the limit once decompressed.
    body = gzip.compress(b"z" * int(request.query["n"]))
    return web.Response(body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_get("/sized", _sized)
    app.router.add_get("/compressed", _compressed)
    app.router.add_get("/streamed", _streamed)
    app.router.add_get("/wp-json/wp/v2/types/post", _sized)
    running = TestServer(app, host="127.0.0.1")
    async with running:  # its __aenter__ is typed as answering the base class
        yield running


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    async with HttpClient(max_connections=2, timeout=10, max_answer_bytes=LIMIT) as client:
        yield client


@pytest.mark.parametrize("path", ["/sized", "/streamed", "/compressed"])
async def test_an_answer_up_to_the_limit_is_read_whole(server: TestServer, http: HttpClient, path: str) -> None:
    response = await http.request("GET", str(server.make_url(path)), params={"n": LIMIT})
    assert len(response.content) == LIMIT


@pytest.mark.parametrize("path", ["/sized", "/streamed", "/compressed"])
async def test_a_larger_answer_is_refused_not_read(server: TestServer, http: HttpClient, path: str) -> None:
    # With or without Content-Length: a URL that points at a download must not fill the worker's memory.
    with pytest.raises(HttpAnswerTooLarge, match=f"larger than {LIMIT} bytes"):
        await http.request("GET", str(server.make_url(path)), params={"n": LIMIT + 100})
    after = await http.request("GET", str(server.make_url(path)), params={"n": 200})
    assert len(after.content) == 200  # the client goes on working


async def test_a_channel_reports_a_huge_answer_in_one_line(server: TestServer, http: HttpClient) -> None:
    options = WordPressOptions(
        url=str(server.make_url("/")), username="u", app_password="pass word", rest_route="pretty"
    )
    channel = WordPressChannel("web", options, http)
    element = Element.model_validate({"id": 1, "title": "t", "publications": [{"id": 2, "platform": {"id": 1}}]})
    with pytest.raises(ChannelUnavailable, match=f"unreachable: the answer .* is larger than {LIMIT} bytes"):
        await channel.upsert(element, element.publications[0], None)


def test_a_retry_after_date_with_an_unknown_zone_is_gmt_not_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # "-0000" is RFC 5322's "zone unknown", read as a naive datetime: an HTTP date is GMT whatever the host's zone.
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        now = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=120)
        for zone in ("GMT", "-0000"):
            header = now.strftime(f"%a, %d %b %Y %H:%M:%S {zone}")
            seconds = retry_after_seconds({"retry-after": header})
            assert seconds is not None and 100 < seconds <= 120, (zone, seconds)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


async def test_kordiam_answers_too_large_are_fetched_once_per_receive(server: TestServer) -> None:
    # A body past the limit will be past it again in a moment: the client's quick retries would download up to
    # ``max_answer_bytes`` each time (a chunked answer is read up to the limit), so the message goes back to the
    # queue at once, where its receives and the dead-letter reason take over.
    fetches = 0

    async def token(request: web.Request) -> web.Response:
        return web.json_response({"access_token": "t", "expires_in": 3600})

    async def element(request: web.Request) -> web.StreamResponse:
        nonlocal fetches
        fetches += 1
        answer = web.StreamResponse(headers={"Content-Type": "application/json"})
        answer.enable_chunked_encoding()
        await answer.prepare(request)
        for _ in range(LIMIT // 100 + 2):
            await answer.write(b"y" * 100)
        await answer.write_eof()
        return answer

    app = web.Application()
    app.router.add_post("/api/v2/auth/token", token)
    app.router.add_get("/api/v2/elements/1", element)
    async with (
        TestServer(app, host="127.0.0.1") as kordiam,
        HttpClient(max_connections=2, timeout=10, max_answer_bytes=LIMIT) as http,
    ):
        client = KordiamClient(
            http,
            base_url=str(kordiam.make_url("/")),
            client_id="c",
            client_secret=SecretStr("s"),
            retry=RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.002, total_seconds=5),
        )
        with pytest.raises(
            KordiamUnavailable,
            match=f"GET /elements/1: the answer .* is larger than {LIMIT} bytes, .*not retried at once",
        ):
            await client.get_element(1)
    assert fetches == 1

"""The ingress's bounds on what clients hold, over real TCP connections to the running server (``IngressServer``,
as ``kordiam-bridge ingress`` runs it): calls in progress, the time a body may take, the time a head may take."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bridge.config import IngressSettings
from bridge.ingress import metrics
from bridge.ingress.app import CAPACITY, IngressServer, build_app
from bridge.ingress.common import MAX_TOKEN_FORMS_IN_PROGRESS
from bridge.state import SqliteStateStore
from tests.support import eventually
from tests.unit.ingress.test_ingress import RecordingTransport, bearer, fixture, settings

# A hang guard, never a speed check: the bounds under test are fractions of a second.
ANSWER_WITHIN = 10.0


@contextlib.asynccontextmanager
async def running(config: IngressSettings, tmp_path: Path) -> AsyncIterator[tuple[web.Application, int]]:
    store = SqliteStateStore(tmp_path / "state.db")
    await store.open()
    app, _ = build_app(config, RecordingTransport(), store, "web")
    server = IngressServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        yield app, server.port
    finally:
        await server.stop()
        await store.close()


async def trickled_call(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An authenticated element POST whose head arrives whole and whose body stops after its first bytes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = fixture("seed001_create.json")
    head = "".join(f"{name}: {value}\r\n" for name, value in bearer().items())
    writer.write(
        f"POST /kordiam/element HTTP/1.1\r\nHost: ingress\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:10]
    )
    await writer.drain()
    return reader, writer


async def post_element(port: int) -> tuple[int, dict[str, str], object]:
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{port}/kordiam/element"
        async with http.post(url, data=fixture("seed001_create.json"), headers=bearer()) as response:
            return response.status, dict(response.headers), await response.json()


async def test_a_call_beyond_max_concurrent_requests_is_answered_503_at_once(tmp_path: Path) -> None:
    # Without a cap every connection that got its head in held a handler, a body buffer and a queue send: 200
    # stalled calls were 200 calls in progress, and none was refused.
    config = settings(max_concurrent_requests=1, body_timeout_seconds=60)
    refused_before = metrics.OVER_CAPACITY._value.get()
    async with running(config, tmp_path) as (app, port):
        _, holder = await trickled_call(port)
        await eventually(lambda: app[CAPACITY].in_progress == 1, timeout=ANSWER_WITHIN, what="the slot taken")

        status, headers, answer = await asyncio.wait_for(post_element(port), ANSWER_WITHIN)
        assert status == 503
        assert headers["Retry-After"] == "10"
        assert answer == {"error": "ingress at capacity (ingress.max_concurrent_requests = 1), retry later"}
        assert metrics.OVER_CAPACITY._value.get() == refused_before + 1
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as health:
            assert health.status == 200  # the load balancer's probe never counts against the cap

        holder.close()  # the stalled client goes away: its slot is free again
        await eventually(lambda: app[CAPACITY].in_progress == 0, timeout=ANSWER_WITHIN, what="the slot freed")
        status, _, answer = await asyncio.wait_for(post_element(port), ANSWER_WITHIN)
        assert (status, answer) == (201, {"id": 123456})


async def test_a_body_trickled_past_body_timeout_seconds_gets_408_and_frees_its_slot(tmp_path: Path) -> None:
    # Without a bound a client sending its body byte by byte (or not at all) held its call in progress for as long
    # as it kept the connection open.
    config = settings(max_concurrent_requests=1, body_timeout_seconds=0.5)
    async with running(config, tmp_path) as (app, port):
        reader, writer = await trickled_call(port)
        try:
            status_line = await asyncio.wait_for(reader.readline(), ANSWER_WITHIN)
        finally:
            writer.close()
        assert status_line.startswith(b"HTTP/1.1 408")
        await eventually(lambda: app[CAPACITY].in_progress == 0, timeout=ANSWER_WITHIN, what="the slot freed")
        status, _, _ = await asyncio.wait_for(post_element(port), ANSWER_WITHIN)
        assert status == 201


@pytest.mark.parametrize("after_a_call", [False, True], ids=["new-connection", "kept-alive"])
async def test_a_connection_without_a_whole_request_head_in_time_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after_a_call: bool
) -> None:
    # A head sent byte by byte holds no slot (the cap counts calls whose head arrived), but it held a socket and
    # its buffer for aiohttp's default keep-alive of an hour.
    monkeypatch.setattr(IngressServer, "keepalive_timeout", 0.5, raising=False)
    async with running(settings(), tmp_path) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            if after_a_call:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: ingress\r\n\r\n")
                assert (await asyncio.wait_for(reader.readline(), ANSWER_WITHIN)).startswith(b"HTTP/1.1 200")
                await asyncio.wait_for(reader.readuntil(b"}"), ANSWER_WITHIN)  # the rest of the answer
            writer.write(b"POST /kordiam/element HTTP/1.1\r\nHost: ingress\r\n")  # ... and the head stops
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), ANSWER_WITHIN) == b""  # closed, nothing answered
        finally:
            writer.close()


async def trickled_token_form(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A Platform token request with its credentials in a form (no Basic header) that stops after its first bytes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    form = b"grant_type=client_credentials&api_key=api_5d4be039440a9004126215&api_secret=5d4be039440c5479906369"
    writer.write(
        b"POST /platform/oauth2/token HTTP/1.1\r\nHost: ingress\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        + f"Content-Length: {len(form)}\r\n\r\n".encode()
        + form[:10]
    )
    await writer.drain()
    return reader, writer


async def test_trickled_token_forms_cannot_take_the_slots_kordiams_webhook_calls_need(tmp_path: Path) -> None:
    # A token form is read before its caller is known: without a bound of its own, one unknown client trickling
    # forms held every slot of max_concurrent_requests for body_timeout_seconds each, and Kordiam's calls got 503s.
    config = settings(max_concurrent_requests=MAX_TOKEN_FORMS_IN_PROGRESS + 2, body_timeout_seconds=60)
    async with running(config, tmp_path) as (app, port):
        held = [await trickled_token_form(port) for _ in range(MAX_TOKEN_FORMS_IN_PROGRESS)]
        try:
            await eventually(
                lambda: app[CAPACITY].in_progress == MAX_TOKEN_FORMS_IN_PROGRESS,
                timeout=ANSWER_WITHIN,
                what="the token forms being read",
            )
            reader, writer = await trickled_token_form(port)
            try:
                assert (await asyncio.wait_for(reader.readline(), ANSWER_WITHIN)).startswith(b"HTTP/1.1 503")
            finally:
                writer.close()
            # Kordiam's webhook calls still find slots.
            for _ in range(3):
                status, _, answer = await asyncio.wait_for(post_element(port), ANSWER_WITHIN)
                assert (status, answer) == (201, {"id": 123456})
        finally:
            for _, writer in held:
                writer.close()
        await eventually(lambda: app[CAPACITY].in_progress == 0, timeout=ANSWER_WITHIN, what="the slots freed")

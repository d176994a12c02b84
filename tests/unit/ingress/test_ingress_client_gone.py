"""A client that goes away while its body is being read (its HTTP client timed out, a load balancer cut it), over
real TCP connections to the running server: one log line without a traceback and status 499, never a 500.

aiohttp 3.14.5 raises ``ConnectionResetError`` in the handler's read, ``"Connection lost"`` after the client's FIN and
``[Errno 104] Connection reset by peer`` after its RST, from ``request.read()`` and ``request.content.iter_any()``
alike (measured over a socket; ``aiohttp.ClientConnectionResetError`` is a subclass).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from structlog.testing import capture_logs

from bridge.ingress import common, metrics
from bridge.ingress.app import CAPACITY, IngressServer, build_app
from bridge.state import SqliteStateStore
from tests.support import eventually
from tests.unit.ingress.test_ingress import JSON, RecordingTransport, bearer, fixture, settings

# A hang guard, never a speed check.
WITHIN = 10.0
SENT_OF_THE_BODY = 10


@contextlib.asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[tuple[web.Application, RecordingTransport, int]]:
    store = SqliteStateStore(tmp_path / "state.db")
    await store.open()
    transport = RecordingTransport()
    app, _ = build_app(settings(body_timeout_seconds=60), transport, store, "web")
    server = IngressServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        yield app, transport, server.port
    finally:
        await server.stop()
        await store.close()


def answered(route: str, status: int) -> float:
    return float(metrics.REQUESTS.labels(route, str(status))._value.get())


# route name, path, headers, body: an element (request.read) and a token form (request.content.iter_any).
CALLS = {
    "element": (
        "global_export.create",
        "/kordiam/element",
        bearer(),
        fixture("seed001_create.json"),
    ),
    "token-form": (
        "platform.token",
        "/platform/oauth2/token",
        {"Content-Type": "application/x-www-form-urlencoded"},
        b"grant_type=client_credentials&api_key=api_5d4be039440a9004126215&api_secret=5d4be039440c5479906369",
    ),
}


@pytest.mark.parametrize("call", CALLS, ids=CALLS)
@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
async def test_a_client_gone_mid_body_is_one_line_and_a_499_not_a_500_with_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, call: str, reset: bool
) -> None:
    # Before: every such client was an `ingress_error` line with a stack trace and a 500 in the request log and in
    # bridge_ingress_requests_total: 200 clients leaving read as 200 failures of the bridge.
    route, path, headers, body = CALLS[call]
    before_500, before_499 = answered(route, 500), answered(route, 499)
    async with running(tmp_path) as (app, transport, port):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: ingress\r\nX-Request-Id: gone-1\r\n{head}"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:SENT_OF_THE_BODY]
        )
        await writer.drain()
        await eventually(lambda: app[CAPACITY].in_progress == 1, timeout=WITHIN, what="the body being read")
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as lines:
            if reset:  # an abortive close: the server's read sees the peer's reset, not an end of stream
                writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.close()
            await eventually(lambda: app[CAPACITY].in_progress == 0, timeout=WITHIN, what="the slot freed")
            # The request log counts the call after the slot is freed, on its way out: either way, 499 or 500.
            await eventually(
                lambda: answered(route, 499) + answered(route, 500) > before_499 + before_500,
                timeout=WITHIN,
                what="the call counted",
            )

    assert (answered(route, 499), answered(route, 500)) == (before_499 + 1, before_500)
    assert transport.sent == []
    [line] = lines  # one line for the call: not an error with a traceback, then a request line
    assert line == {
        "event": "ingress_client_gone",
        "log_level": "info",
        "request_id": "gone-1",
        "method": "POST",
        "route": route,
        "status": 499,
        "client": "127.0.0.1",
        "duration_ms": line["duration_ms"],
        "body_bytes_read": SENT_OF_THE_BODY,
        "content_length": len(body),
    }
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []  # nor aiohttp's own


async def test_an_internal_connection_reset_while_the_client_waits_is_still_a_500_with_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the client's own connection gone makes a 499: the same exception from something of the bridge's, with the
    # client still there, is an internal error.
    def broken(payload: Any) -> Any:
        raise ConnectionResetError("a connection of the bridge's own")

    monkeypatch.setattr(common, "decode_payload", broken)
    before_500 = answered("global_export.create", 500)
    async with running(tmp_path) as (_, transport, port):
        body = fixture("seed001_create.json")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = "".join(f"{name}: {value}\r\n" for name, value in {**JSON, **bearer()}.items())
        with capture_logs() as lines:
            writer.write(
                f"POST /kordiam/element HTTP/1.1\r\nHost: ingress\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            try:
                status_line = await asyncio.wait_for(reader.readline(), WITHIN)
            finally:
                writer.close()
    assert status_line.startswith(b"HTTP/1.1 500")
    assert answered("global_export.create", 500) == before_500 + 1
    assert transport.sent == []
    [error] = [line for line in lines if line["event"] == "ingress_error"]
    assert error["exc_info"] is True and error["log_level"] == "error"

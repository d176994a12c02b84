"""Credentials that are not ASCII, as raw bytes on a real connection (aiohttp reads a header's bytes as UTF-8, a byte
that is not as a lone surrogate): whoever sends them, they are wrong credentials, a 401 like any other, never a 500
with a traceback (the bridge's own failure, which anyone could then log and count at will)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bridge.ingress.app import IngressServer, build_app
from bridge.state import SqliteStateStore
from tests.unit.ingress.test_ingress import RecordingTransport, settings

# A hang guard, never a speed check.
WITHIN = 10.0
AUTH: dict[str, dict[str, Any]] = {
    "bearer": {"type": "bearer", "token": "persistent-token-1"},
    "jwt": {"type": "jwt", "secret": "jwt-secret-of-at-least-32-bytes-long!"},
    "headers": {"type": "headers", "headers": {"X-Api-Key": "header-secret-1"}},
    "api_key": {"type": "api_key", "api_key": "key-00001", "api_secret": "secret-00001"},
}
NOT_UTF8 = b"\xff\xfe"
NOT_ASCII = "\u00e9t\u00e9".encode()  # valid UTF-8, but no base64 and no token


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, auth: dict[str, Any]) -> AsyncIterator[tuple[RecordingTransport, int]]:
    store = SqliteStateStore(tmp_path / "state.db")
    await store.open()
    transport = RecordingTransport()
    app, _ = build_app(settings(global_export={"path": "/kordiam", "auth": auth}), transport, store, "web")
    server = IngressServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        yield transport, server.port
    finally:
        await server.stop()
        await store.close()


async def status_of(port: int, path: str, header: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: ingress\r\nConnection: close\r\n" + header + b"\r\n"
        b'Content-Type: application/json\r\nContent-Length: 9\r\n\r\n{"id": 1}'
    )
    try:
        answer = await asyncio.wait_for(reader.read(), WITHIN)
    finally:
        writer.close()
    return int(answer.split(b" ", 2)[1])


def calls(auth: str) -> list[tuple[str, bytes]]:
    """(path, header line) pairs: each credential header the receiver reads, its value not ASCII."""
    odd = [
        ("/kordiam/element", b"Authorization: Bearer " + NOT_UTF8),
        ("/kordiam/element", b"Authorization: Bearer " + NOT_ASCII),
        ("/platform/publication", b"Authorization: Bearer " + NOT_UTF8),
        ("/platform/oauth2/token", b"Authorization: Basic " + NOT_UTF8),
        ("/platform/oauth2/token", b"Authorization: Basic " + NOT_ASCII),
    ]
    if auth == "headers":
        odd += [("/kordiam/element", b"X-Api-Key: " + NOT_UTF8), ("/kordiam/element", b"X-Api-Key: " + NOT_ASCII)]
    if auth == "api_key":
        odd += [
            ("/kordiam/oauth2/token", b"Authorization: Basic " + NOT_UTF8),
            ("/kordiam/oauth2/token", b"Authorization: Basic " + NOT_ASCII),
        ]
    return odd


@pytest.mark.parametrize("auth", AUTH, ids=AUTH)
async def test_credentials_that_are_not_ascii_are_refused_with_401(tmp_path: Path, auth: str) -> None:
    async with serving(tmp_path, AUTH[auth]) as (transport, port):
        with capture_logs() as lines:
            answers = {(path, header): await status_of(port, path, header) for path, header in calls(auth)}
    assert answers == dict.fromkeys(answers, 401)
    assert transport.sent == []
    assert [line for line in lines if line["log_level"] == "error"] == []

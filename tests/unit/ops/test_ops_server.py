"""The worker's ops endpoint over real TCP connections."""

from __future__ import annotations

import asyncio

import pytest

from bridge.ops.server import OpsServer

# A hang guard, never a speed check.
WITHIN = 10.0


@pytest.mark.parametrize("after_a_probe", [False, True], ids=["new-connection", "kept-alive"])
async def test_a_connection_without_a_whole_request_head_in_time_is_closed(
    monkeypatch: pytest.MonkeyPatch, after_a_probe: bool
) -> None:
    # The ops port shares the worker's file descriptors with its SQS, Kordiam and channel connections. With
    # aiohttp's default keep-alive of an hour, a head sent byte by byte, or an idle connection, held one for that
    # long: enough of them (ops.host 0.0.0.0 in a container) and the worker could open no connection of its own.
    monkeypatch.setattr(OpsServer, "keepalive_timeout", 0.5, raising=False)
    ops = OpsServer("127.0.0.1", 0, healthy=lambda: True, ready=lambda: True)
    await ops.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", ops.port)
        try:
            if after_a_probe:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: worker\r\n\r\n")
                assert (await asyncio.wait_for(reader.readline(), WITHIN)).startswith(b"HTTP/1.1 200")
                await asyncio.wait_for(reader.readuntil(b"}"), WITHIN)  # the rest of the answer
            writer.write(b"GET /readyz HTTP/1.1\r\nHost: worker\r\n")  # ... and the head stops
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), WITHIN) == b""  # closed, nothing answered
        finally:
            writer.close()
    finally:
        await ops.stop()

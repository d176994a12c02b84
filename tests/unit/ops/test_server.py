"""The ops server's own life cycle (its endpoints are tested with the worker)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web

from bridge.ops.server import OpsServer
from tests.support import free_port


async def test_a_start_cancelled_once_the_port_is_bound_leaves_it_free(monkeypatch: pytest.MonkeyPatch) -> None:
    # A SIGTERM while the ops server starts cancels the start (bridge.worker.StopEndsStart). Before, the runner of a
    # start cancelled after the bind was never cleaned up: the port stayed bound for as long as the process lived.
    bound = asyncio.Event()
    real_start = web.TCPSite.start

    async def bind_then_wait(site: web.TCPSite) -> None:
        await real_start(site)
        bound.set()
        await asyncio.Event().wait()  # the rest of the start, cancelled here

    monkeypatch.setattr(web.TCPSite, "start", bind_then_wait)
    port = free_port()
    ops = OpsServer("127.0.0.1", port, healthy=lambda: True, ready=lambda: True)
    starting = asyncio.create_task(ops.start())
    await bound.wait()
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))  # OSError "address already in use" while the runner still listens
    await ops.stop()  # and a stop after it has nothing left to do

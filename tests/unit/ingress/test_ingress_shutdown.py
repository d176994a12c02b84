"""``IngressServer.stop`` (SIGTERM to ``kordiam-bridge ingress``) with a call in flight: the listener closes at once,
and the call is still answered, after its enqueue, before the queue is closed (``run_ingress`` closes the transport
only after ``stop`` returned). Kordiam is never told 201 for a call the queue does not hold, nor left without an
answer for one it does."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bridge.ingress.app import IngressServer, build_app
from bridge.state import SqliteStateStore
from tests.support import eventually
from tests.unit.ingress.test_ingress import RecordingTransport, bearer, fixture, settings

# A hang guard, never a speed check.
WITHIN = 10.0


@dataclass
class HeldTransport(RecordingTransport):
    """Takes a send only once ``sends_let_through`` is set."""

    sends_let_through: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, body: str, attributes: dict[str, str] | None = None, *, group_id: str | None = None) -> str:
        self.attempts += 1
        await self.sends_let_through.wait()
        return await super().send(body, attributes, group_id=group_id)


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:  # refused, or reset while the listener closes
        return True
    writer.close()
    return False


async def test_a_call_in_flight_at_shutdown_is_answered_after_its_enqueue(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.db")
    await store.open()
    transport = HeldTransport()
    app, _ = build_app(settings(), transport, store, "web")
    server = IngressServer(app, "127.0.0.1", 0)
    await server.start()
    port = server.port
    try:
        async with aiohttp.ClientSession() as http:

            async def post() -> tuple[int, object]:
                url = f"http://127.0.0.1:{port}/kordiam/element"
                async with http.post(url, data=fixture("seed001_create.json"), headers=bearer()) as response:
                    return response.status, await response.json()

            call = asyncio.create_task(post())
            await eventually(lambda: transport.attempts == 1, timeout=WITHIN, what="the call's send under way")
            stopping = asyncio.create_task(server.stop())
            await eventually(lambda: refused(port), timeout=WITHIN, what="the listener closed")
            assert not call.done() and not stopping.done()
            transport.sends_let_through.set()
            assert await asyncio.wait_for(call, WITHIN) == (201, {"id": 123456})
            await asyncio.wait_for(stopping, WITHIN)
        assert len(transport.sent) == 1
    finally:
        await server.stop()
        await store.close()

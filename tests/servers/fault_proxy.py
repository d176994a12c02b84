"""A TCP proxy in front of a real peer (the Kordiam simulator, a CMS stand-in, moto's SQS) that a fault test can
switch between answering normally and failing the way a network does without closing anything:

- ``blackhole``: takes the request and never answers nor closes (a dropped route, an expired NAT entry, a proxy
  that hangs). Every connection open when it began (idle keep-alive ones too), and every one that met it, stays
  dead after the proxy is back to ``normal``, as one whose NAT entry expired does: only new connections work
  again, so a client's pool of such connections shows.
- ``stall``: forwards the request and the head of the answer, then nothing more, never closing.
- ``drip``: forwards the answer one byte every ``drip_seconds``.
- ``answer``: answers the request itself with an HTTP answer the test gives (``answer``: an error the peer could
  give, such as SQS refusing one action to the caller), and closes the connection; the peer never sees it.

``only`` limits the fault to requests whose bytes contain it (an ``X-Amz-Target`` naming one SQS action, a path),
so that the rest of a peer's calls go on. A request's first chunk decides; HTTP clients write a request's head in
one piece.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Literal

from yarl import URL

Mode = Literal["normal", "blackhole", "stall", "drip", "answer"]
_CHUNK = 64 * 1024


class FaultProxy:
    def __init__(self, target: str) -> None:
        peer = URL(target)
        assert peer.host is not None and peer.port is not None
        self._host, self._port = peer.host, peer.port
        self._target = peer
        self.mode: Mode = "normal"
        self.only: bytes | None = None
        self.drip_seconds = 0.5
        self.answer = b""
        # Requests the fault took (held unanswered, stalled, dripped or answered), and connections accepted.
        self.faulted = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Each open connection's answer mode (see _serve), by the connection's own list (identity, not value).
        self._open: dict[int, list[str]] = {}
        self.port = 0

    def url(self, path: str = "") -> str:
        """The proxy's address for the peer's ``target`` URL (same scheme and path)."""
        return str(self._target.with_host("127.0.0.1").with_port(self.port)) + path

    def fail(self, mode: Mode, *, only: bytes | None = None, drip_seconds: float = 0.5) -> None:
        self.mode, self.only, self.drip_seconds = mode, only, drip_seconds
        if mode == "blackhole" and only is None:  # the route is gone for every connection, idle or busy
            for answers in self._open.values():
                answers[0] = "dead"

    def answer_with(self, status: int, body: str, *, only: bytes, headers: dict[str, str] | None = None) -> None:
        """``answer`` mode: each request containing ``only`` is answered ``status`` with ``body`` (JSON) and
        ``headers``, by the proxy."""
        head = [f"HTTP/1.1 {status} Fault", "Content-Type: application/x-amz-json-1.0", "Connection: close"]
        head += [f"{name}: {value}" for name, value in (headers or {}).items()]
        encoded = body.encode()
        head.append(f"Content-Length: {len(encoded)}")
        self.answer = ("\r\n".join(head) + "\r\n\r\n").encode() + encoded
        self.mode, self.only = "answer", only

    def heal(self) -> None:
        self.mode, self.only = "normal", None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(client_in, client_out)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            client_out.close()

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        peer_in, peer_out = await asyncio.open_connection(self._host, self._port)
        # What the connection's answers get: the mode its last request met ("dead": nothing, ever again).
        answers: list[str] = ["normal"]
        self._open[id(answers)] = answers
        forwarding = asyncio.create_task(self._answers(peer_in, client_out, answers))
        try:
            while chunk := await client_in.read(_CHUNK):
                if answers[0] == "dead":
                    continue  # read and dropped: a connection that met a blackhole never comes back
                if self.mode != "normal" and (self.only is None or self.only in chunk):
                    self.faulted += 1
                    if self.mode == "blackhole":
                        answers[0] = "dead"
                        continue
                    if self.mode == "answer":  # not forwarded; what is left of the request is dropped with it
                        client_out.write(self.answer)
                        await client_out.drain()
                        return
                    answers[0] = self.mode
                peer_out.write(chunk)
                await peer_out.drain()
        finally:  # the client closed (its timeout): so does the proxy, toward the peer
            del self._open[id(answers)]
            forwarding.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await forwarding
            peer_out.close()

    async def _answers(
        self, peer_in: asyncio.StreamReader, client_out: asyncio.StreamWriter, answers: list[str]
    ) -> None:
        head_sent = False
        while chunk := await peer_in.read(_CHUNK):
            if answers[0] == "dead":
                continue
            if answers[0] == "stall":
                if head_sent:
                    continue
                end = chunk.find(b"\r\n\r\n")
                client_out.write(chunk if end < 0 else chunk[: end + 4])
                head_sent = end >= 0
                await client_out.drain()
                continue
            if answers[0] == "drip":
                for byte in chunk:
                    client_out.write(bytes([byte]))
                    await client_out.drain()
                    await asyncio.sleep(self.drip_seconds)
                continue
            client_out.write(chunk)
            await client_out.drain()


@contextlib.asynccontextmanager
async def fault_proxy(target: str) -> AsyncIterator[FaultProxy]:
    """A ``FaultProxy`` to ``target`` (a URL: its host and port are proxied), stopped on exit."""
    proxy = FaultProxy(target)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()

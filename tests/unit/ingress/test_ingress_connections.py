"""``ConnectionCap`` (``ingress.max_connections``) over real sockets, and the file descriptors the ingress makes sure
of at start (``ensure_descriptors``), in a process of its own with a low ``ulimit -n``."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.streams import EMPTY_PAYLOAD
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from bridge.ingress.connections import PROCESS_DESCRIPTORS, ConnectionCap
from tests.unit.test_config import INGRESS, VALID

GREETING = b"+"


class Greeting(asyncio.Protocol):
    """The server's side of a test connection: greets (so the client knows it was made), echoes, and records its
    transport (for the test to put it in a call) and its loss."""

    def __init__(self, made: list[asyncio.Transport], lost: list[asyncio.Event]) -> None:
        self._made = made
        self._lost = lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._made.append(transport)
        self._lost.append(asyncio.Event())
        self._index = len(self._lost) - 1
        transport.write(GREETING)

    def data_received(self, data: bytes) -> None:
        self._transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost[self._index].set()


@contextlib.asynccontextmanager
async def capped(
    limit: int,
) -> AsyncIterator[tuple[ConnectionCap, int, list[asyncio.Transport], list[asyncio.Event]]]:
    cap = ConnectionCap(limit)
    made: list[asyncio.Transport] = []
    lost: list[asyncio.Event] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: cap.protocol(lambda: Greeting(made, lost)), "127.0.0.1", 0)
    try:
        yield cap, int(server.sockets[0].getsockname()[1]), made, lost
    finally:
        server.close()
        for transport in made:
            transport.close()


async def greeted(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection the server has made (its greeting read)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await reader.readexactly(len(GREETING)) == GREETING
    return reader, writer


async def still_open(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"?")
    return await reader.read(1) == b"?"


def open_connections() -> float | None:
    return REGISTRY.get_sample_value("bridge_ingress_open_connections")


def shed(outcome: str) -> float:
    return REGISTRY.get_sample_value("bridge_ingress_connections_shed_total", {"outcome": outcome}) or 0.0


async def test_a_new_connection_closes_the_longest_idle_one_or_is_closed_itself_when_every_one_is_in_a_call() -> None:
    refused, idle_closed = shed("refused"), shed("idle_closed")
    async with capped(2) as (cap, port, made, lost):
        with capture_logs() as lines:
            first = await greeted(port)
            second = await greeted(port)
            cap.call_started(made[0])
            cap.call_started(made[1])
            # Both in a call: a third is closed at once, before a byte is read or written.
            third_reader, _ = await asyncio.open_connection("127.0.0.1", port)
            assert await third_reader.read() == b""
            assert shed("refused") == refused + 1
            assert await still_open(*first) and await still_open(*second)
            assert open_connections() == 2
            # The first call ends: its connection is idle, and the next connection takes its place.
            cap.call_finished(made[0], EMPTY_PAYLOAD)
            fourth = await greeted(port)
            assert await first[0].read() == b""
            assert shed("idle_closed") == idle_closed + 1
            assert await still_open(*second) and await still_open(*fourth)
            # A connection in a call is never idle, however long ago it opened: the fourth goes, not the second.
            fifth = await greeted(port)
            assert await fourth[0].read() == b""
            assert await still_open(*second) and await still_open(*fifth)
            for _, writer in (second, fifth):
                writer.close()
            await lost[1].wait()
            await lost[3].wait()
    assert open_connections() == 0
    # One line when the cap is reached and one when the episode is over, however many connections it shed.
    assert [(line["event"], line["log_level"]) for line in lines] == [
        ("ingress_connections_at_limit", "warning"),
        ("ingress_connections_below_limit", "info"),
    ]
    assert lines[0]["max_connections"] == 2 and lines[0]["open_connections"] == 2
    assert (lines[1]["refused"], lines[1]["idle_closed"]) == (1, 2)


def unfinished_heads(status: int) -> float:
    labels = {"route": "unparsed", "status": str(status)}
    return REGISTRY.get_sample_value("bridge_ingress_requests_total", labels) or 0.0


async def test_a_head_begun_and_never_finished_is_counted_when_its_connection_ends() -> None:
    # Before, it was counted nowhere (the open-connections gauge showed it only while it was open).
    before = {status: unfinished_heads(status) for status in (408, 499)}
    async with capped(2) as (_, port, _made, lost):
        silent = await greeted(port)
        begun = await greeted(port)
        begun[1].write(b"POST /kordiam/el")
        assert await begun[0].readexactly(16) == b"POST /kordiam/el"  # echoed: the server has it
        # Each new connection closes the longest idle one: one that sent nothing made no request.
        third = await greeted(port)
        assert await silent[0].read() == b""
        # One that began a head, closed by the ingress: 408.
        fourth = await greeted(port)
        assert await begun[0].read() == b""
        # One whose client closes it in the middle of a head: 499.
        fourth[1].write(b"GET /")
        assert await fourth[0].readexactly(5) == b"GET /"
        fourth[1].close()
        await lost[3].wait()
        third[1].close()
        await lost[2].wait()
    assert {status: unfinished_heads(status) - before[status] for status in (408, 499)} == {408: 1, 499: 1}


def with_descriptor_limit(soft: int, hard: int, code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a Python of its own whose ``ulimit -n`` is ``soft`` (``-Sn``) and ``hard`` (``-Hn``)."""

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return subprocess.run(
        [sys.executable, "-c", code], preexec_fn=limited, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_soft_descriptor_limit_below_what_max_connections_needs_is_raised_to_it() -> None:
    needed = 100 + 10 + PROCESS_DESCRIPTORS
    ran = with_descriptor_limit(
        needed - 50,
        needed + 50,
        "import resource; from bridge.ingress.connections import ensure_descriptors; ensure_descriptors(100, 10); "
        "print(resource.getrlimit(resource.RLIMIT_NOFILE))",
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip().splitlines()[-1] == f"({needed}, {needed + 50})"


def test_the_ingress_refuses_to_start_in_one_line_when_the_hard_descriptor_limit_is_too_low(tmp_path: Path) -> None:
    # Before: it started, and a flood of idle connections took every descriptor; enqueues failed with EMFILE.
    # Nothing listens on port 9: the ingress must stop before it connects anywhere.
    text = VALID.replace("127.0.0.1:4566", "127.0.0.1:9").replace("/tmp/state.db", str(tmp_path / "state.db"))
    config = tmp_path / "bridge.toml"
    config.write_text(text + INGRESS.replace("[ingress]\n", "[ingress]\nmax_connections = 400\n"), encoding="utf-8")
    ran = with_descriptor_limit(
        200, 300, f"import sys; from bridge.cli import main; sys.exit(main(['ingress', '--config', {str(config)!r}]))"
    )
    assert ran.returncode == 2  # a configuration error
    besides = 32 + 1 + 8 + PROCESS_DESCRIPTORS  # the SQS pool (queue.concurrency 32, one poller, 8) and the process's
    problem = (
        f"ingress.max_connections: 400 connections need {400 + besides} file descriptors (with {besides} for the "
        "queue's and the state store's connections and the process's own), but this process may open at most 300 "
        f"(ulimit -Hn): lower ingress.max_connections to {300 - besides} or raise the limit"
    )
    assert problem in ran.stderr
    assert "Traceback" not in ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1, ran.stderr


@pytest.mark.parametrize("max_connections", [100, 300 - 10 - PROCESS_DESCRIPTORS])
def test_a_descriptor_limit_that_suffices_is_left_as_it_is(max_connections: int) -> None:
    ran = with_descriptor_limit(
        300,
        300,
        "import resource; from bridge.ingress.connections import ensure_descriptors; "
        f"ensure_descriptors({max_connections}, 10); print(resource.getrlimit(resource.RLIMIT_NOFILE))",
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip().splitlines()[-1] == "(300, 300)"

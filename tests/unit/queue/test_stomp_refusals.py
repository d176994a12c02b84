"""A broker that takes the connection but refuses, or never confirms, a subscription (an account that may not read
the queue, a broker that hangs): one line for the worker's start and for the operator commands, never a traceback.
The broker is a small STOMP server in the test; ActiveMQ answers a refused SUBSCRIBE with the same ERROR frame."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.admin.dlq import dlq_list
from bridge.admin.redrive import dlq_redrive
from bridge.cli import main
from bridge.errors import AdminError, ConfigError
from bridge.queue import open_transport
from bridge.queue import stomp as stomp_module
from tests.support import free_port, stomp_settings

REFUSAL = "User acme is not authorized to read from: queue://kordiam"


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, silent: bool) -> None:
    """CONNECTED to any CONNECT, an ERROR (with the receipt-id) to any SUBSCRIBE unless ``silent``, nothing to
    anything else."""
    buffer = b""
    while chunk := await reader.read(65536):
        buffer += chunk
        while b"\x00" in buffer:
            frame, buffer = buffer.split(b"\x00", 1)
            lines = frame.lstrip(b"\r\n").decode().split("\n")
            headers = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
            if lines[0] == "CONNECT":
                writer.write(b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\x00")
            elif lines[0] == "SUBSCRIBE" and "receipt" in headers and not silent:
                message = REFUSAL.replace(":", "\\c")  # STOMP 1.2 escapes a colon in a header value, as ActiveMQ does
                writer.write(f"ERROR\nreceipt-id:{headers['receipt']}\nmessage:{message}\n\n\x00".encode())
            await writer.drain()
    writer.close()


@contextlib.contextmanager
def refusing_broker(*, silent: bool = False) -> Iterator[str]:
    """``stomp://127.0.0.1:PORT``, served in a thread of its own (the CLI runs its own event loop)."""
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def serve() -> None:
        server = await asyncio.start_server(functools.partial(_serve, silent=silent), "127.0.0.1", port)
        async with server:
            ready.set()
            with contextlib.suppress(asyncio.CancelledError):
                await server.serve_forever()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield f"stomp://127.0.0.1:{port}"
    finally:
        for task in asyncio.all_tasks(loop):
            loop.call_soon_threadsafe(task.cancel)
        thread.join(10)


@pytest.fixture
def broker() -> Iterator[str]:
    with refusing_broker() as url:
        yield url


async def test_a_refused_subscription_stops_the_worker_with_one_line(broker: str) -> None:
    with pytest.raises(ConfigError) as refused:
        async with open_transport(stomp_settings(f"{broker}/queue/kordiam")):
            pass
    assert refused.value.key == "queue.url"
    assert REFUSAL in str(refused.value) and "\n" not in str(refused.value)


async def test_a_refused_browse_is_one_line_for_the_operator(broker: str) -> None:
    settings = stomp_settings(f"{broker}/queue/kordiam")
    with pytest.raises(AdminError, match="not authorized"):
        await dlq_list(settings)
    with pytest.raises(AdminError, match="not authorized"):
        await dlq_redrive(settings)


async def test_a_browse_the_broker_never_confirms_is_one_line_for_the_operator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stomp_module, "RECEIPT_TIMEOUT_SECONDS", 0.5)
    with refusing_broker(silent=True) as silent, pytest.raises(AdminError, match="timeout"):
        await dlq_list(stomp_settings(f"{silent}/queue/kordiam"))


def test_the_cli_says_it_in_one_line_without_a_traceback(
    broker: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(f'[queue]\nurl = "{broker}/queue/kordiam"\ndlq_url = "{broker}/queue/kordiam.dlq"\n')
    assert main(["dlq", "list", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("kordiam-bridge:")]
    assert REFUSAL in line

"""Requests aiohttp refuses before any handler runs (a head that is not valid HTTP, a Content-Encoding it cannot
decode), over real TCP connections: aiohttp answers them 400 itself, and the ingress logs each as one warning line
with the client and the reason, never an error with a traceback (the bridge's own failures; anyone on the
internet can send these, and a scanner would fill the log and page whoever watches its errors)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.unit.ingress.test_ingress_client_gone import WITHIN, running

HEADS = {
    "bad-content-length": b"POST /kordiam/element HTTP/1.1\r\nHost: ingress\r\nContent-Length: abc\r\n\r\n",
    "length-and-chunked": (
        b"POST /kordiam/element HTTP/1.1\r\nHost: ingress\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    ),
    "unknown-encoding": (
        b"POST /kordiam/element HTTP/1.1\r\nHost: ingress\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\n{}"
    ),
    "byte-in-path": b"DELETE /kordiam/element/\xff HTTP/1.1\r\nHost: ingress\r\n\r\n",
}


@pytest.mark.parametrize("head", HEADS, ids=HEADS)
async def test_a_request_aiohttp_refuses_is_one_warning_line_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, head: str
) -> None:
    async with running(tmp_path) as (_, transport, port):
        with capture_logs() as lines:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(HEADS[head])
            try:
                answer = await asyncio.wait_for(reader.read(), WITHIN)
            finally:
                writer.close()
    assert answer.split(b" ", 2)[1] == b"400"
    assert transport.sent == []
    assert [record for record in caplog.records if record.levelno >= logging.ERROR] == []
    [line] = [line for line in lines if line["log_level"] != "debug"]
    assert line["event"] == "ingress_bad_request" and line["log_level"] == "warning"
    assert line["client"] == "127.0.0.1" and line["status"] == 400
    assert line["reason"] and "\n" not in line["reason"] and "Traceback" not in line["reason"]

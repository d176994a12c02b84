"""Bodies sent compressed (``Content-Encoding``) or chunked, over real TCP connections to the running server: aiohttp
reads both; a body that cannot be read as its headers say is the caller's fault, a 400 in one line, never a 500
with a traceback (the bridge's own failure, and what an operator is paged for)."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import zlib
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.unit.ingress.test_ingress import bearer, fixture
from tests.unit.ingress.test_ingress_client_gone import WITHIN, answered, running

ELEMENT = fixture("seed001_create.json")
FORM = b"grant_type=client_credentials&api_key=api_5d4be039440a9004126215&api_secret=5d4be039440c5479906369"
FORM_TYPE = {"Content-Type": "application/x-www-form-urlencoded"}


async def call(port: int, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request as raw bytes (``headers`` as given, nothing added but Host and Connection): status, headers, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    writer.write(f"POST {path} HTTP/1.1\r\nHost: ingress\r\nConnection: close\r\n{head}\r\n".encode() + body)
    try:
        answer = await asyncio.wait_for(reader.read(), WITHIN)
    finally:
        writer.close()
    head_text, _, content = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head_text.decode().split("\r\n")
    answer_headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), answer_headers, content


def chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compressed_or_chunked_body_is_enqueued_as_the_json_it_holds(tmp_path: Path, encoding: str) -> None:
    packed = gzip.compress(ELEMENT) if encoding == "gzip" else zlib.compress(ELEMENT)
    async with running(tmp_path) as (_, transport, port):
        headers = {**bearer(), "Content-Encoding": encoding, "Content-Length": str(len(packed))}
        status, _, content = await call(port, "/kordiam/element", headers, packed)
        assert (status, json.loads(content)) == (201, {"id": 123456})
        assert transport.sent[0][0] == ELEMENT.decode()
        unsized = {**bearer(), "Transfer-Encoding": "chunked"}
        status, _, _ = await call(port, "/kordiam/element", unsized, chunked(ELEMENT[:100], ELEMENT[100:]))
        assert status == 201
        assert transport.sent[1][0] == ELEMENT.decode()


# (route, path, headers, body): an element (request.read) and a token form (request.content.iter_any), each with a
# body that is not what its Content-Encoding says.
BROKEN = {
    "element-not-gzip": ("global_export.create", "/kordiam/element", {**bearer(), "Content-Encoding": "gzip"}, ELEMENT),
    "element-cut-gzip": (
        "global_export.create",
        "/kordiam/element",
        {**bearer(), "Content-Encoding": "gzip"},
        gzip.compress(ELEMENT)[:5] + b"\xff" * 40,
    ),
    "form-not-deflate": (
        "platform.token",
        "/platform/oauth2/token",
        {**FORM_TYPE, "Content-Encoding": "deflate"},
        FORM,
    ),
}


@pytest.mark.parametrize("case", BROKEN, ids=BROKEN)
async def test_a_body_that_cannot_be_read_as_its_headers_say_is_a_400_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    route, path, headers, body = BROKEN[case]
    headers = {**headers, "Content-Length": str(len(body))}
    before_500 = answered(route, 500)
    async with running(tmp_path) as (_, transport, port):
        with capture_logs() as lines:
            status, answer_headers, content = await call(port, path, headers, body)
    assert status == 400, content
    assert answer_headers["Content-Type"].startswith("application/json")
    error = json.loads(content)["error"]
    assert error == f"body could not be read as sent: Can not decode content-encoding: {headers['Content-Encoding']}"
    assert transport.sent == []
    assert answered(route, 500) == before_500
    assert [line["event"] for line in lines if line["log_level"] in ("warning", "error")] == []
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []  # nor aiohttp's own


@pytest.mark.parametrize("framing", ["no-length", "length-0", "chunked"])
async def test_an_empty_body_says_it_is_empty(tmp_path: Path, framing: str) -> None:
    # A POST without Content-Length or chunks has no body (RFC 9112 6.3), so no 411: it is told what was missing.
    # Before: "body is not JSON: Expecting value at line 1 column 1", as if a body had been sent.
    framed = {"no-length": {}, "length-0": {"Content-Length": "0"}, "chunked": {"Transfer-Encoding": "chunked"}}
    async with running(tmp_path) as (_, transport, port):
        status, _, content = await call(
            port, "/kordiam/element", bearer() | framed[framing], chunked() if framing == "chunked" else b""
        )
    assert status == 400 and transport.sent == []
    assert json.loads(content) == {"error": "body is empty: a Kordiam element, as JSON, expected"}

"""Requests aiohttp refuses before any handler runs (a head that is not valid HTTP, a Content-Encoding it cannot
decode), over real TCP connections: aiohttp answers them 400 itself, and the ingress logs them as warning lines (at
most one per 10 s) with the client and the reason, never an error with a traceback (the bridge's own failures;
anyone on the internet can send these, and a scanner would fill the log and page whoever watches its errors)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp.http_exceptions import BadHttpMethod, BadStatusLine, HttpProcessingError, LineTooLong
from structlog.testing import capture_logs

from bridge.ingress.app import IngressServer, _RefusalLog, build_app
from bridge.ingress.metrics import UNPARSED_ROUTE
from bridge.state import SqliteStateStore
from tests.unit.ingress.test_ingress import RecordingTransport, bearer, fixture, settings
from tests.unit.ingress.test_ingress_client_gone import WITHIN, answered, running

HEADS = {
    "bad-content-length": b"POST /kordiam/element HTTP/1.1\r\nHost: ingress\r\nContent-Length: abc\r\n\r\n",
    "length-and-chunked": (
        b"POST /kordiam/element HTTP/1.1\r\nHost: ingress\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    ),
    "unknown-encoding": (
        b"POST /kordiam/element HTTP/1.1\r\nHost: ingress\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\n{}"
    ),
    "byte-in-path": b"DELETE /kordiam/element/\xff HTTP/1.1\r\nHost: ingress\r\n\r\n",
    "space-in-header-name": b"POST /kordiam/element HTTP/1.1\r\nHost: ingress\r\nBad Header: y\r\n\r\n",
    "no-host": b"POST /kordiam/element HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
    "http-3.0": b"GET /healthz HTTP/3.0\r\nHost: ingress\r\n\r\n",
    "bad-chunk-size": (b"POST /kordiam/element HTTP/1.1\r\nHost: ingress\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
    "too-many-headers": b"GET /healthz HTTP/1.1\r\nHost: ingress\r\n"
    + b"".join(b"X-Header-%d: a\r\n" % n for n in range(200))
    + b"\r\n",
    # The first request of a connection whose method is not HTTP: aiohttp logs these at debug only, so they were
    # neither logged nor counted. TLS sent to the plain-HTTP port (a client or health check with https:// for
    # http://), and a scanner's garbage.
    "tls-client-hello": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(40),
    "not-a-method": b"G(T /healthz HTTP/1.1\r\nHost: ingress\r\n\r\n",
}


async def refused(port: int, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """The answer to ``head``: its status, headers and body, read up to the connection's close (which follows
    it; a hang guard would say otherwise)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    try:
        answer = await asyncio.wait_for(reader.read(), WITHIN)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    head_lines, _, body = rest.partition(b"\r\n\r\n")
    headers = dict(line.decode().split(": ", 1) for line in head_lines.split(b"\r\n"))
    return int(status_line.split(b" ")[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.parametrize("head", HEADS, ids=HEADS)
async def test_a_request_aiohttp_refuses_is_one_warning_line_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, head: str
) -> None:
    before = answered(UNPARSED_ROUTE, 400)
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
    assert answered(UNPARSED_ROUTE, 400) == before + 1


async def test_an_expectation_aiohttp_does_not_meet_is_a_json_417(tmp_path: Path) -> None:
    # aiohttp checks Expect before any middleware runs, and answered anything but 100-continue in text, quoting it.
    head = (
        b"POST /kordiam/element HTTP/1.1\r\nHost: ingress\r\nExpect: 200-ok\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    async with running(tmp_path) as (_, transport, port):
        status, headers, body = await refused(port, head)
    assert status == 417 and transport.sent == []
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(body) == {"error": "Expect: only 100-continue is understood"}


async def test_a_body_declared_too_large_is_refused_before_it_is_invited(tmp_path: Path) -> None:
    # A client that asks first (Expect: 100-continue, as curl does for a large body) was told to go on, and sent the
    # body the 413 that followed refused. Now the 413 comes instead of the 100: the body is never sent.
    head = (
        b"POST /kordiam/element HTTP/1.1\r\nHost: ingress\r\nExpect: 100-continue\r\nContent-Type: application/json\r\n"
        b"Content-Length: 999999999\r\n\r\n"
    )
    async with running(tmp_path) as (_, transport, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        try:
            status_line = await asyncio.wait_for(reader.readline(), WITHIN)
        finally:
            writer.close()
    assert status_line.startswith(b"HTTP/1.1 413 ") and transport.sent == []


@pytest.mark.parametrize("path", ["/kordiam/element", "/platform/publication"])
async def test_a_call_with_wrong_credentials_is_refused_before_its_body_is_invited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    # 100 Continue went out before the credentials were checked, so a client asking first sent its body (up to
    # max_body_bytes) for a 401. Now the 401 comes instead of the 100 and the connection is closed after it: no body
    # was invited, so none is read on for (here longer than the test).
    monkeypatch.setattr(IngressServer, "lingering_time", 3600.0)
    head = f"POST {path} HTTP/1.1\r\nHost: ingress\r\nExpect: 100-continue\r\nContent-Type: application/json\r\n"
    head += "Authorization: Bearer not-the-token\r\nContent-Length: 100000\r\n\r\n"
    async with running(tmp_path) as (_, transport, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head.encode())
        try:
            answer = await asyncio.wait_for(reader.read(), WITHIN)
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 401 ") and b"100 Continue" not in answer and transport.sent == []


async def test_a_token_request_is_invited_to_send_its_form(tmp_path: Path) -> None:
    # Its credentials may be in its body (seed 002's form), so they cannot be checked before it.
    form = b"grant_type=client_credentials&api_key=api_5d4be039440a9004126215&api_secret=5d4be039440c5479906369"
    head = b"POST /platform/oauth2/token HTTP/1.1\r\nHost: ingress\r\nExpect: 100-continue\r\nConnection: close\r\n"
    head += b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % len(form)
    async with running(tmp_path) as (_, _transport, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        try:
            assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WITHIN) == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(form)
            answer = await asyncio.wait_for(reader.read(), WITHIN)
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and b"access_token" in answer


async def test_a_body_within_the_limit_is_invited_and_taken(tmp_path: Path) -> None:
    element = fixture("seed001_create.json")
    auth = "".join(f"{name}: {value}\r\n" for name, value in bearer().items()).encode()
    head = b"POST /kordiam/element HTTP/1.1\r\nHost: ingress\r\nExpect: 100-continue\r\nConnection: close\r\n"
    head += auth + b"Content-Length: %d\r\n\r\n" % len(element)
    async with running(tmp_path) as (_, transport, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        try:
            assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WITHIN) == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(element)
            answer = await asyncio.wait_for(reader.read(), WITHIN)
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 201 ") and transport.sent[0][0] == element.decode()


def test_a_flood_of_bad_requests_is_one_warning_line_per_10_seconds_and_every_one_counted() -> None:
    # A client looping garbage at the port was one warning line per request (aiohttp's refusals come before the
    # per-client rate limit): the first of an episode is logged at once, then at most one line per 10 s with the
    # refusals since the last line and the last reason, as ingress_over_capacity is.
    now = [1000.0]
    refusals = _RefusalLog(clock=lambda: now[0])
    before = answered(UNPARSED_ROUTE, 400)

    def refuse(client: str, error: HttpProcessingError, seconds_later: float) -> None:
        now[0] += seconds_later
        # As aiohttp reports them: the first request of a connection with a method that is not HTTP at debug, any
        # other refusal as an exception.
        if isinstance(error, BadHttpMethod):
            refusals.debug("Error handling request from %s", client, exc_info=error)
        else:
            refusals.exception("Error handling request from %s", client, exc_info=error)

    with capture_logs() as lines:
        refuse("203.0.113.7", BadHttpMethod("G(T"), 0)
        for _ in range(99):
            refuse("203.0.113.7", BadStatusLine("junk"), 0.05)  # 4.95 s of them
        refuse("203.0.113.8", LineTooLong("X-Header", 2048), 5.5)  # 10.45 s after the first line
        for _ in range(10):
            refuse("203.0.113.7", BadHttpMethod("G(T"), 0.5)
        refuse("203.0.113.9", BadStatusLine("junk"), 60)  # a new episode, after a quiet minute
    assert [(line["event"], line["log_level"]) for line in lines] == [("ingress_bad_request", "warning")] * 3
    assert [(line["client"], line["refused"]) for line in lines] == [
        ("203.0.113.7", 1),
        ("203.0.113.8", 100),
        ("203.0.113.9", 11),
    ]
    assert [line["reason"] for line in lines] == [
        "Bad HTTP method in status line 'G(T'",
        "Got more than 2048 bytes when reading: 'X-Header'.",
        "Bad status line 'junk'",
    ]
    assert answered(UNPARSED_ROUTE, 400) == before + 112


LONGEST_TOKEN = "T" * 2026
LONGEST_SECRET = "S" * (1517 - len("kordiam"))
LONGEST_HEADERS = {"N" * 1024: "header-value-1", "M" * 1024: "header-value-2", "X-Key": "V" * 2041}


@pytest.mark.parametrize("auth", ["bearer", "headers"])
async def test_the_longest_credentials_the_configuration_takes_reach_the_ingress(tmp_path: Path, auth: str) -> None:
    # The configuration refuses credentials beyond these (bridge.config.INGRESS_FIELD_BYTES): each is taken as sent
    # first in the head, where aiohttp's C parser counts a field's name with its value, and two names of 1024
    # bytes one after the other, which it counts together.
    store = SqliteStateStore(tmp_path / "state.db")
    await store.open()
    checks: dict[str, Any] = {
        "bearer": {"type": "bearer", "token": LONGEST_TOKEN},
        "headers": {"type": "headers", "headers": LONGEST_HEADERS},
    }
    config = settings(
        global_export={"path": "/kordiam", "auth": checks[auth]},
        platform={"path": "/platform", "api_user": "kordiam", "api_secret": LONGEST_SECRET},
    )
    credentials = {
        "bearer": [("Authorization", f"Bearer {LONGEST_TOKEN}")],
        "headers": list(LONGEST_HEADERS.items()),
    }[auth]
    element = fixture("seed001_create.json")
    basic = base64.b64encode(f"kordiam:{LONGEST_SECRET}".encode()).decode()
    app, _ = build_app(config, RecordingTransport(), store, "web")
    server = IngressServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        created = await answer_to(server.port, "/kordiam/element", credentials, element)
        token = await answer_to(server.port, "/platform/oauth2/token", [("Authorization", f"Basic {basic}")], b"")
    finally:
        await server.stop()
        await store.close()
    assert created.startswith(b"HTTP/1.1 201 ") and token.startswith(b"HTTP/1.1 200 ")


async def answer_to(port: int, path: str, first_fields: list[tuple[str, str]], body: bytes) -> bytes:
    """The answer to a POST whose head starts with ``first_fields``."""
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in first_fields)
    head += f"Host: ingress\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + b"\r\n" + body)
    try:
        return await asyncio.wait_for(reader.read(), WITHIN)
    finally:
        writer.close()


async def test_the_longest_receiver_paths_the_configuration_takes_reach_the_ingress(tmp_path: Path) -> None:
    # The configuration refuses paths beyond these (bridge.config.INGRESS_LINE_BYTES): Kordiam's longest call to
    # each, a DELETE with an id of the 1024 bytes kept for it, is a request line of exactly 2048 bytes.
    store = SqliteStateStore(tmp_path / "state.db")
    await store.open()
    global_export, platform = "/" + "g" * 998, "/" + "p" * 994
    config = settings(
        global_export={"path": global_export, "auth": {"type": "bearer", "token": LONGEST_TOKEN}},
        platform={"path": platform, "api_user": "kordiam", "api_secret": LONGEST_SECRET},
    )
    app, _ = build_app(config, RecordingTransport(), store, "web")
    server = IngressServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        basic = base64.b64encode(f"kordiam:{LONGEST_SECRET}".encode()).decode()
        issued = await answer_to(server.port, f"{platform}/oauth2/token", [("Authorization", f"Basic {basic}")], b"")
        token = json.loads(issued.partition(b"\r\n\r\n")[2])["access_token"]
        answers = [
            await delete(server.port, f"{global_export}/element/{'1' * 1024}", LONGEST_TOKEN),
            await delete(server.port, f"{platform}/publication/{'2' * 1024}", token),
        ]
    finally:
        await server.stop()
        await store.close()
    assert [answer.partition(b"\r\n")[0] for answer in answers] == [b"HTTP/1.1 200 OK"] * 2
    assert all(answer.endswith(b'{"id": null, "mapped": false}') for answer in answers)


async def delete(port: int, target: str, token: str) -> bytes:
    """The answer to a DELETE of ``target`` with ``token``, its request line exactly 2048 bytes."""
    line = f"DELETE {target} HTTP/1.1"
    assert len(line) == 2048
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{line}\r\nHost: ingress\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    try:
        return await asyncio.wait_for(reader.read(), WITHIN)
    finally:
        writer.close()

"""Hostile and broken clients over raw sockets against a running ingress and a real queue (moto server or
LocalStack): for each, the answers, that nothing is logged as an error or with a traceback, that a message is
enqueued only for a whole and valid webhook, and that ``bridge_ingress_requests_total`` counts what happened.

aiohttp refuses some requests itself before any route (route ``unparsed``); those answers are aiohttp's own plain
text, not the ingress's JSON: aiohttp 3 offers no public way to replace them (its 4.0 passes them through the
middlewares, aio-libs/aiohttp#3287). The table is that of aiohttp's C parser, the one its wheels carry; where its
pure-Python parser (``AIOHTTP_NO_EXTENSIONS=1``) hands the ingress what the C parser refuses, the last test checks
the ingress's answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from bridge.ingress.app import IngressServer
from bridge.ingress.metrics import UNPARSED_ROUTE
from tests.integration.test_ingress import INGRESS, TOKEN, running_ingress
from tests.support import SqsEndpoint, drain, eventually, free_port, worker_settings, write_config

pytestmark = pytest.mark.integration

# A hang guard, never a speed check.
WITHIN = 10.0
CREATE = "global_export.create"
ELEMENT = json.dumps({"id": 4712, "title": "Hostile", "modificationDate": "2026-12-07T10:00:00Z"}).encode()
SECOND = ELEMENT.replace(b"4712", b"4713")
AUTH = b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Type: application/json\r\n"
# A body late by this much ends in a 408, which one case waits for (within WITHIN).
HOSTILE = INGRESS.model_copy(update={"body_timeout_seconds": 2})


def post(
    body: bytes = ELEMENT,
    *,
    head: bytes = b"",
    path: bytes = b"/kordiam/element",
    version: bytes = b"HTTP/1.1",
    host: bytes = b"Host: ingress\r\n",
    length: bool = True,
) -> bytes:
    """A Global Export POST as raw bytes: ``head`` adds header lines; ``length`` a Content-Length of ``body``."""
    sized = b"Content-Length: %d\r\n" % len(body) if length else b""
    return b"POST " + path + b" " + version + b"\r\n" + host + AUTH + head + sized + b"\r\n" + body


def chunk(data: bytes, declared: int | None = None) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data) if declared is None else declared, data)


# What the README says a head may hold (IngressServer's max_line_size, max_field_size, max_headers): a request line
# and each header field line of 2 KiB, 32 header fields (aiohttp's C parser, the one its wheels carry).
LINE_BYTES = FIELD_BYTES = 2048
HEAD_FIELDS = 32
# The header fields post() sends itself: Host, Authorization, Content-Type, Content-Length.
FIELDS_OF_POST = 4


def header_field(number: int, line_bytes: int = 16) -> bytes:
    """A header field ``X-nnnn: aaa…`` of ``line_bytes`` bytes, its CRLF apart."""
    name = b"X-%04d: " % number
    return name + b"a" * (line_bytes - len(name)) + b"\r\n"


def target_of(target_bytes: int) -> bytes:
    """The Global Export create path, padded with a query to this many bytes."""
    path = b"/kordiam/element?pad="
    return path + b"a" * (target_bytes - len(path))


JSON = "json"  # the ingress's own {"error": ...} (or, for a 2xx, its JSON answer)
TEXT = "text"  # aiohttp's own plain-text 400


@dataclass(frozen=True)
class Case:
    sent: bytes
    # Each answer in order: its status and its Content-Type's kind (100 Continue: none).
    answers: tuple[tuple[int, str | None], ...]
    # bridge_ingress_requests_total's samples that grow, and by how much; no other grows.
    counted: dict[tuple[str, int], int] = field(default_factory=dict)
    enqueued: tuple[int, ...] = ()
    # After sending: wait for the answers; or close the sending side (half-close) or the connection (abort), with
    # the body still unfinished; or, once the body is being read, send ``later`` (later).
    then: Literal["wait", "half-close", "abort", "later"] = "wait"
    later: bytes = b""


def refused(status: int = 400) -> dict[tuple[str, int], int]:
    return {(UNPARSED_ROUTE, status): 1}


# A head announcing a body above ingress.max_body_bytes, sent without it: answered 413 at once, and then aiohttp reads
# on for the body the head announced (lingering) so that a client sending it reads its 413 rather than a reset.
TOO_LARGE = post(b"", head=b"Content-Length: 99999999\r\n", length=False)


CASES = {
    "whole-webhook": Case(post(), ((201, JSON),), {(CREATE, 201): 1}, (4712,)),
    # A head that never ends: lines that each fit but never the empty line (more than the 32 fields a head may hold).
    "head-never-ends": Case(
        b"POST /kordiam/element HTTP/1.1\r\nHost: ingress\r\n" + b"".join(b"X-%d: a\r\n" % n for n in range(500)),
        ((400, TEXT),),
        refused(),
    ),
    # A head at every limit is taken; one byte or one field beyond any is aiohttp's 400.
    "head-at-the-limits": Case(
        post(
            path=target_of(LINE_BYTES - len(b"POST  HTTP/1.1")),
            head=b"".join(header_field(n, FIELD_BYTES) for n in range(HEAD_FIELDS - FIELDS_OF_POST)),
        ),
        ((201, JSON),),
        {(CREATE, 201): 1},
        (4712,),
    ),
    # aiohttp's C parser checks the request target (path and query) and a field's value on their own: each one
    # byte over the limit.
    "request-target-one-byte-over": Case(post(path=target_of(LINE_BYTES + 1)), ((400, TEXT),), refused()),
    "header-value-one-byte-over": Case(
        post(head=b"X-Big: " + b"a" * (FIELD_BYTES + 1) + b"\r\n"), ((400, TEXT),), refused()
    ),
    "one-header-field-too-many": Case(
        post(head=b"".join(header_field(n) for n in range(HEAD_FIELDS - FIELDS_OF_POST + 1))),
        ((400, TEXT),),
        refused(),
    ),
    # A head its client gives up on (it closes the connection before the head's end): counted as such (499).
    "head-then-the-client-closes": Case(
        b"POST /kordiam/element HTTP/1.1\r\nHost: ingress\r\n" + AUTH, (), {(UNPARSED_ROUTE, 499): 1}, then="half-close"
    ),
    "length-and-chunked": Case(post(head=b"Transfer-Encoding: chunked\r\n"), ((400, TEXT),), refused()),
    "two-content-lengths": Case(post(head=b"Content-Length: 3\r\n"), ((400, TEXT),), refused()),
    "chunked-whole": Case(
        post(chunk(ELEMENT) + chunk(b""), head=b"Transfer-Encoding: chunked\r\n", length=False),
        ((201, JSON),),
        {(CREATE, 201): 1},
        (4712,),
    ),
    "chunk-size-smaller-than-its-data": Case(
        post(chunk(ELEMENT, 5) + chunk(b""), head=b"Transfer-Encoding: chunked\r\n", length=False),
        ((400, TEXT),),
        refused(),
    ),
    # The body ends (the client half-closes) before the chunk it announced.
    "chunk-size-larger-than-its-data": Case(
        post(chunk(ELEMENT, 0xFFFF) + chunk(b""), head=b"Transfer-Encoding: chunked\r\n", length=False),
        (),
        {(CREATE, 499): 1},
        then="half-close",
    ),
    "expect-100-continue-with-body": Case(
        post(head=b"Expect: 100-continue\r\n"), ((100, None), (201, JSON)), {(CREATE, 201): 1}, (4712,)
    ),
    "expect-100-continue-without-body": Case(
        post(b"", head=b"Expect: 100-continue\r\n"), ((100, None), (400, JSON)), {(CREATE, 400): 1}
    ),
    "expect-100-continue-too-large": Case(
        post(b"", head=b"Expect: 100-continue\r\nContent-Length: 99999999\r\n", length=False),
        ((413, JSON),),
        {(CREATE, 413): 1},
    ),
    # The credentials are checked before the body is invited: a 401 instead of 100 Continue, the body never sent.
    "expect-100-continue-wrong-token": Case(
        post(b"", head=b"Expect: 100-continue\r\nContent-Length: %d\r\n" % len(ELEMENT), length=False).replace(
            TOKEN.encode(), b"not-" + TOKEN.encode()
        ),
        ((401, JSON),),
        {(CREATE, 401): 1},
    ),
    # An expectation other than 100-continue: answered, counted and logged as any other refusal.
    "expect-something-else": Case(post(head=b"Expect: 200-ok\r\n"), ((417, JSON),), {(CREATE, 417): 1}),
    "http-1.0-without-host": Case(post(version=b"HTTP/1.0", host=b""), ((201, JSON),), {(CREATE, 201): 1}, (4712,)),
    # aiohttp drops every request it parsed from a read that ends in a parser error: the whole webhook before the
    # garbage is answered by the 400 alone and not enqueued, so its client retries it (Kordiam sends one call at a
    # time on a connection).
    "a-webhook-then-garbage-in-one-write": Case(post() + b"GARBAGE\r\n\r\n", ((400, TEXT),), refused()),
    # Garbage in the same write as the end of a body whose head came before: that call was under way, so it is
    # answered and enqueued, and the garbage gets its own 400 after it.
    "a-body-ends-then-garbage-in-one-write": Case(
        post()[:-10],
        ((201, JSON), (400, TEXT)),
        {(CREATE, 201): 1, (UNPARSED_ROUTE, 400): 1},
        (4712,),
        then="later",
        later=post()[-10:] + b"GARBAGE\r\n\r\n",
    ),
    # A chunk-size line broken once the body is being read: aiohttp's C parser drops the body it was feeding
    # without an error (and queues its 400 behind the call), so the call ends at ingress.body_timeout_seconds.
    "chunk-size-line-broken-mid-body": Case(
        post(chunk(ELEMENT[:16]), head=b"Transfer-Encoding: chunked\r\n", length=False),
        ((408, JSON),),
        {(CREATE, 408): 1},
        then="later",
        later=b"zz\r\n",
    ),
    "two-webhooks-in-one-write": Case(
        post() + post(SECOND), ((201, JSON), (201, JSON)), {(CREATE, 201): 2}, (4712, 4713)
    ),
    "not-gzip": Case(post(ELEMENT, head=b"Content-Encoding: gzip\r\n"), ((400, JSON),), {(CREATE, 400): 1}),
    "gzip-header-then-garbage": Case(
        post(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff" * 30, head=b"Content-Encoding: gzip\r\n"),
        ((400, JSON),),
        {(CREATE, 400): 1},
    ),
    "content-length-overflows": Case(
        post(b"", head=b"Content-Length: 99999999999999999999999999\r\n", length=False), ((400, TEXT),), refused()
    ),
    "content-length-over-max-body-bytes": Case(TOO_LARGE, ((413, JSON),), {(CREATE, 413): 1}),
    "closed-half-way-through-the-body": Case(
        post(ELEMENT[:20], head=b"Content-Length: %d\r\n" % len(ELEMENT), length=False),
        (),
        {(CREATE, 499): 1},
        then="abort",
    ),
    "nul-in-the-path": Case(post(path=b"/kordiam/element\x00"), ((400, TEXT),), refused()),
    "non-utf-8-in-the-path": Case(
        b"DELETE /kordiam/element/\xff\xfe HTTP/1.1\r\nHost: ingress\r\n" + AUTH + b"\r\n", ((400, TEXT),), refused()
    ),
    "nul-in-a-header": Case(post(head=b"X-Request-Id: a\x00b\r\n"), ((400, TEXT),), refused()),
    "non-utf-8-in-a-header-name": Case(post(head=b"X-\xff: a\r\n"), ((400, TEXT),), refused()),
    # Header values are bytes to HTTP: a request id that is not sane is replaced, the webhook taken.
    "non-utf-8-in-a-header-value": Case(
        post(head=b"X-Request-Id: \xff\xfe\r\n"), ((201, JSON),), {(CREATE, 201): 1}, (4712,)
    ),
    "non-utf-8-in-the-token": Case(
        post().replace(TOKEN.encode(), b"\xff" + TOKEN.encode()), ((401, JSON),), {(CREATE, 401): 1}
    ),
    "tls-client-hello": Case(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(40), ((400, TEXT),), refused()),
}


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, str | None]:
    """One answer's status and the kind of its Content-Type, its body read by its Content-Length (a JSON answer's
    body checked to be the ingress's shape)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *lines = head.strip().split("\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}
    status = int(status_line.split()[1])
    if status == 100:
        return status, None
    body = await reader.readexactly(int(headers["content-length"]))
    kind = JSON if headers["content-type"].startswith("application/json") else TEXT
    if kind == JSON and status >= 400:
        error = json.loads(body)["error"]
        assert isinstance(error, str) and error and "\n" not in error
    elif kind == TEXT:
        assert b"Traceback" not in body
    return status, kind


def requests_counted() -> dict[tuple[str, int], float]:
    return {
        (sample.labels["route"], int(sample.labels["status"])): sample.value
        for family in REGISTRY.collect()
        if family.name == "bridge_ingress_requests"
        for sample in family.samples
        if sample.name == "bridge_ingress_requests_total"
    }


def grown(before: dict[tuple[str, int], float]) -> dict[tuple[str, int], int]:
    after = requests_counted()
    return {key: int(value - before.get(key, 0)) for key, value in after.items() if value != before.get(key, 0)}


@pytest.mark.parametrize("name", CASES, ids=CASES)
async def test_a_hostile_or_broken_client_gets_a_clear_answer_and_only_a_whole_webhook_is_enqueued(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    name: str,
) -> None:
    case = CASES[name]
    settings = worker_settings(
        queue=queues[0], endpoint=sqs_endpoint.url, kordiam="http://127.0.0.1:9", workdir=tmp_path
    )
    before = requests_counted()
    async with running_ingress(settings, HOSTILE) as url:
        with capture_logs() as lines:
            reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
            try:
                writer.write(case.sent)
                if case.then == "half-close":
                    writer.write_eof()
                elif case.then in ("abort", "later"):
                    await eventually(
                        lambda: REGISTRY.get_sample_value("bridge_ingress_requests_in_progress") == 1,
                        timeout=WITHIN,
                        what="the body being read",
                    )
                    if case.then == "abort":
                        writer.transport.abort()
                    else:
                        writer.write(case.later)
                answers = [await asyncio.wait_for(read_answer(reader), WITHIN) for _ in case.answers]
                await eventually(lambda: grown(before) == case.counted, timeout=WITHIN, what=f"{case.counted}")
            finally:
                writer.close()
    assert answers == list(case.answers)
    assert sorted(json.loads(message["Body"])["id"] for message in drain(sqs_endpoint.url, queues[0])) == list(
        case.enqueued
    )
    assert grown(before) == case.counted
    assert [line for line in lines if line["log_level"] in ("error", "critical") or "exc_info" in line] == []
    assert [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info] == []


async def test_a_head_that_is_never_finished_is_closed_without_an_answer(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A head trickled and never finished (a slowloris) holds no call slot and is closed once
    ``IngressServer.keepalive_timeout`` has passed since the connection opened: no answer, counted under route
    ``unparsed`` as 408 (before, it was counted nowhere), nothing logged as an error. A connection that sent nothing,
    closed alike, is no request and is not counted; nor is a keep-alive connection closed after its answer."""
    monkeypatch.setattr(IngressServer, "keepalive_timeout", 1.0)
    settings = worker_settings(
        queue=queues[0], endpoint=sqs_endpoint.url, kordiam="http://127.0.0.1:9", workdir=tmp_path
    )
    before = requests_counted()
    async with running_ingress(settings, INGRESS) as url:
        port = int(url.rsplit(":", 1)[1])
        with capture_logs() as lines:
            connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
            (reader, writer), (silent_reader, _), (answered_reader, answered_writer) = connections
            writer.write(b"POST /kordiam/element HTTP/1.1\r\nHost: ingress\r\n" + AUTH + b"Content-Len")
            answered_writer.write(post())
            try:
                answered = await asyncio.wait_for(read_answer(answered_reader), WITHIN)
                closed_with = [
                    await asyncio.wait_for(r.read(), WITHIN) for r in (reader, silent_reader, answered_reader)
                ]
            finally:
                for _, each in connections:
                    each.close()
        assert REGISTRY.get_sample_value("bridge_ingress_requests_in_progress") == 0
    assert answered == (201, JSON) and closed_with == [b""] * 3
    assert grown(before) == {(CREATE, 201): 1, (UNPARSED_ROUTE, 408): 1}
    assert [json.loads(m["Body"])["id"] for m in drain(sqs_endpoint.url, queues[0])] == [4712]
    assert [line for line in lines if line["log_level"] in ("error", "critical") or "exc_info" in line] == []
    assert [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info] == []


def aiohttp_connection_handlers() -> int:
    """aiohttp's connection handlers still running in this process: one task (``RequestHandler.start``) per
    connection, from its opening until aiohttp is done with it, reading on after an answer ("lingering") included."""
    return sum(
        1 for task in asyncio.all_tasks() if getattr(task.get_coro(), "__qualname__", "") == "RequestHandler.start"
    )


async def test_a_client_that_leaves_while_aiohttp_reads_on_after_its_answer_ends_its_connection_handler(
    sqs_endpoint: SqsEndpoint, queues: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiohttp 3.14 does not end its read after an answer when the connection is lost: before, the handler of a
    connection its client had closed ran on for ``lingering_time``, and an ingress stopped meanwhile waited for it
    (its ``shutdown_timeout``). Here the lingering time outlasts the test."""
    monkeypatch.setattr(IngressServer, "lingering_time", 3600.0)
    settings = worker_settings(
        queue=queues[0], endpoint=sqs_endpoint.url, kordiam="http://127.0.0.1:9", workdir=tmp_path
    )
    async with running_ingress(settings, HOSTILE) as url:
        assert aiohttp_connection_handlers() == 0
        reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
        writer.write(TOO_LARGE)
        assert await asyncio.wait_for(read_answer(reader), WITHIN) == (413, JSON)
        assert aiohttp_connection_handlers() == 1
        writer.close()
        await writer.wait_closed()
        await eventually(
            lambda: aiohttp_connection_handlers() == 0, timeout=WITHIN, what="the closed connection's handler to end"
        )


async def test_an_ingress_stopped_while_aiohttp_reads_on_after_an_answer_closes_that_connection_at_once(
    sqs_endpoint: SqsEndpoint, queues: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop finishes the calls in progress, not aiohttp's read after an answer: before, it waited for that read
    (at most ``shutdown_timeout``, here as long as the lingering time, both beyond the test), so a client that kept
    its connection open after a 413 held a SIGTERM of ``kordiam-bridge ingress`` for 10 s."""
    monkeypatch.setattr(IngressServer, "lingering_time", 3600.0)
    monkeypatch.setattr(IngressServer, "shutdown_timeout", 3600.0)
    settings = worker_settings(
        queue=queues[0], endpoint=sqs_endpoint.url, kordiam="http://127.0.0.1:9", workdir=tmp_path
    )
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(running_ingress(settings, HOSTILE))
        reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
        try:
            writer.write(TOO_LARGE)
            assert await asyncio.wait_for(read_answer(reader), WITHIN) == (413, JSON)
            await asyncio.wait_for(stack.aclose(), WITHIN)  # a hang guard
            assert await asyncio.wait_for(reader.read(), WITHIN) == b""
        finally:
            writer.close()
    assert aiohttp_connection_handlers() == 0


@contextlib.asynccontextmanager
async def ingress_process(
    sqs_endpoint: SqsEndpoint, queue: str, workdir: Path, env: dict[str, str]
) -> AsyncIterator[tuple[int, Path]]:
    """``kordiam-bridge ingress`` as a process with ``env`` added; yields its port and its log file."""
    port = free_port()
    config = write_config(
        workdir / "bridge.toml",
        queue=queue,
        endpoint=sqs_endpoint.url,
        kordiam="http://127.0.0.1:9",
        workdir=workdir,
        ops_port=free_port(),
    )
    config.write_text(
        config.read_text()
        + f'\n[ingress]\nport = {port}\n[ingress.global_export]\npath = "/kordiam"\nauth = {{ type = "bearer" }}\n'
    )
    log = workdir / "ingress.log"
    with log.open("w") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "ingress",
            "--config",
            str(config),
            stdout=output,
            stderr=output,
            env={**os.environ, "BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__TOKEN": TOKEN, **env},
        )
        try:
            await eventually(lambda: '"ingress_listening"' in log.read_text(), what="the ingress process listening")
            yield port, log
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), WITHIN)


async def in_progress(port: int) -> bool:
    """Whether a call is in progress, as the ingress's /metrics says."""
    async with httpx.AsyncClient(timeout=WITHIN) as http:
        exported = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    return "bridge_ingress_requests_in_progress 1.0" in exported.splitlines()


async def one_answer(port: int, sent: bytes, later: bytes = b"") -> tuple[int, str]:
    """The status and JSON error of the answer to ``sent`` (and ``later``, sent once ``sent`` has been)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(sent)
        if later:
            await eventually(lambda: in_progress(port), timeout=WITHIN, what="the body being read")
            writer.write(later)
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WITHIN)).decode("latin-1")
        length = next(line.split(":")[1] for line in head.split("\r\n") if line.lower().startswith("content-length:"))
        body = await asyncio.wait_for(reader.readexactly(int(length)), WITHIN)
    finally:
        writer.close()
    return int(head.split()[1]), json.loads(body).get("error", "")


async def test_on_aiohttps_pure_python_parser_a_broken_chunk_and_a_non_utf8_id_are_400s_not_failures(
    sqs_endpoint: SqsEndpoint, queues: tuple[str, str], tmp_path: Path
) -> None:
    """aiohttp's pure-Python parser (``AIOHTTP_NO_EXTENSIONS=1``, aiohttp's own fallback where its C extension
    is not built) delivers a broken chunk to the body's reader as its own parser error, and takes non-UTF-8 bytes in
    a path, which its C parser refuses. Before: the broken chunk was a 500 with an ``ingress_error`` traceback, and
    a DELETE of such an id a 503 "state store unavailable" (SQLite cannot encode it), retried by Kordiam in vain."""
    async with ingress_process(sqs_endpoint, queues[0], tmp_path, {"AIOHTTP_NO_EXTENSIONS": "1"}) as (port, log):
        broken_chunk = await one_answer(
            port,
            post(chunk(ELEMENT[:16]), head=b"Transfer-Encoding: chunked\r\n", length=False),
            later=b"zz\r\n",
        )
        non_utf8_id = await one_answer(
            port, b"DELETE /kordiam/element/\xff\xfe HTTP/1.1\r\nHost: ingress\r\n" + AUTH + b"\r\n"
        )
    assert broken_chunk == (400, "body could not be read as sent: broken chunked encoding: zz")
    assert non_utf8_id == (400, "the id in the path is not UTF-8")
    assert drain(sqs_endpoint.url, queues[0]) == []
    logged = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert [line["event"] for line in logged if line["level"] in ("warning", "error", "critical")] == []
    assert "Traceback" not in log.read_text()

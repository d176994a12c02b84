"""Test support: real endpoints, a worker running in-process, and a channel that counts what it was asked."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import itertools
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import boto3
import httpx
import pytest
import stompman
from moto.server import ThreadedMotoServer
from moto.sqs.models import SQSBackend
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import REGISTRY
from pydantic import BaseModel, ConfigDict

from bridge.channels import ChannelContext, ChannelResult, ChannelType, channel_types
from bridge.channels.folder import FolderChannel, FolderOptions
from bridge.config import ChannelSettings, QueueSettings, Settings, parse_stomp_url
from bridge.errors import ChannelUnavailable
from bridge.http import HttpClient, HttpRequest, HttpResponse, HttpTimeout, HttpTransportError
from bridge.kordiam.models import Element, Publication
from bridge.ops.server import OpsServer
from bridge.queue import open_transport
from bridge.queue.gate import ReceiveGate
from bridge.queue.transport import QueueMessage
from bridge.state import DynamoDbStateStore, SqliteStateStore
from bridge.state.base import Delivery, StateStore, StateUnavailable
from bridge.worker import run_worker

REGION = "eu-central-1"


@dataclass(frozen=True)
class SqsEndpoint:
    url: str
    kind: str


def start_moto() -> tuple[ThreadedMotoServer, str]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    _take_messages_atomically()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


_MOTO_TAKING = threading.Lock()


def _take_messages_atomically() -> None:
    """Make moto's ReceiveMessage take each message once across its server threads.

    moto checks that a message is visible and then marks it received, with no lock between: two receives running
    at once (a worker has up to 8 pollers) may both take one message, a duplicate SQS itself sends only rarely.
    Under a busy machine that made the fault suite's receive counts flaky (a third receive after a stop that cost
    none). Each pass of moto's own receive now runs under one lock, without waiting there; the long poll waits
    outside it. The consumer's handling of a message handed out twice is tested on purpose
    (tests/unit/queue/test_consumer.py).
    """
    if getattr(SQSBackend.receive_message, "takes_atomically", False):
        return
    original = SQSBackend.receive_message

    def receive_message(
        self: SQSBackend,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> list[Any]:
        deadline = time.monotonic() + wait_seconds_timeout
        while True:
            with _MOTO_TAKING:
                taken: list[Any] = original(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
            remaining = deadline - time.monotonic()
            if taken or remaining <= 0:
                return taken
            # Returns at once while the queue holds visible messages this receive could not take (a FIFO group
            # in flight): the short sleep keeps that from spinning.
            self.get_queue(queue_name).wait_for_messages(1)
            time.sleep(0.01)

    receive_message.takes_atomically = True  # type: ignore[attr-defined]
    SQSBackend.receive_message = receive_message  # type: ignore[method-assign]


def sqs_client(endpoint: str) -> Any:
    return boto3.client("sqs", region_name=REGION, endpoint_url=endpoint)


def make_queues(endpoint: str, name: str, *, max_receive_count: int = 3, fifo: bool = False) -> tuple[str, str]:
    client = sqs_client(endpoint)
    suffix = ".fifo" if fifo else ""
    fifo_attributes = {"FifoQueue": "true"} if fifo else {}
    dlq = client.create_queue(QueueName=f"{name}-dlq{suffix}", Attributes=fifo_attributes)["QueueUrl"]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)})
    queue = client.create_queue(QueueName=f"{name}{suffix}", Attributes={"RedrivePolicy": redrive, **fifo_attributes})[
        "QueueUrl"
    ]
    return queue, dlq


def send(endpoint: str, queue: str, body: str | dict[str, Any], attributes: dict[str, str] | None = None) -> str:
    text = body if isinstance(body, str) else json.dumps(body)
    response = sqs_client(endpoint).send_message(
        QueueUrl=queue,
        MessageBody=text,
        MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in (attributes or {}).items()},
    )
    return str(response["MessageId"])


def queue_depth(endpoint: str, queue: str) -> int:
    """Visible plus in-flight messages."""
    attributes = sqs_client(endpoint).get_queue_attributes(
        QueueUrl=queue,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


MockHandler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


def http_answering(handler: MockHandler) -> HttpClient:
    """The bridge's HTTP client answered in process by an httpx-style handler (as with ``httpx.MockTransport``).

    A handler raising ``httpx.TimeoutException``/``httpx.TransportError`` stands for a request with no answer.
    """

    async def answer(request: HttpRequest) -> HttpResponse:
        mirrored = httpx.Request(
            request.method, str(request.url), headers=list(request.headers.items()), content=request.content or b""
        )
        try:
            result = handler(mirrored)
            response = await result if inspect.isawaitable(result) else result
        except httpx.TimeoutException as error:
            raise HttpTimeout(str(error)) from error
        except httpx.TransportError as error:
            raise HttpTransportError(str(error)) from error
        assert isinstance(response, httpx.Response)
        headers = CIMultiDictProxy(CIMultiDict(response.headers.multi_items()))
        return HttpResponse(response.status_code, headers, await response.aread(), request)

    return HttpClient.answering(answer)


async def queue_settled(endpoint: str, queue: str) -> bool:
    """True when the queue holds nothing, visible or in flight, on two reads a moment apart.

    One read is not enough: moto computes each attribute separately, so a message whose visibility ends between
    the two counts is in neither, and an in-flight retry looks like an empty queue.
    """
    if queue_depth(endpoint, queue) != 0:
        return False
    await asyncio.sleep(0.3)
    return queue_depth(endpoint, queue) == 0


def drain(endpoint: str, queue: str) -> list[dict[str, Any]]:
    """Receive (and delete) everything visible in a queue, with its message attributes.

    Short polls: the emulators (moto, LocalStack) answer one with every visible message, where a long poll of an
    empty queue would wait out its whole WaitTimeSeconds on every call (a second per drain, most of them of an
    empty dead-letter queue)."""
    client = sqs_client(endpoint)
    found: list[dict[str, Any]] = []
    while True:
        response = client.receive_message(
            QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"]
        )
        messages = response.get("Messages", [])
        if not messages:
            return found
        for message in messages:
            found.append(message)
            client.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])


def stomp_settings(url: str, **overrides: Any) -> QueueSettings:
    """Settings for an ActiveMQ queue; the dead-letter queue is ``url`` + ``-dlq`` unless given."""
    return QueueSettings(**({"url": url, "dlq_url": f"{url}-dlq", "concurrency": 4} | overrides))


async def stomp_drain(url: str, *, quiet: float = 1.0) -> list[QueueMessage]:
    """Receive and acknowledge everything an ActiveMQ queue holds: until the broker counts nothing left on it
    (``stomp_queue_size``), or ``quiet`` seconds pass without a message.

    The broker's count ends the drain at once where only a quiet spell could (a second on every call, most of them
    of an empty queue). A message received but not yet acknowledged counts, so nothing still coming is cut off; a
    message sent after the drain began (a worker still running) is a caller's to wait for, as ever."""
    found: list[QueueMessage] = []
    async with open_transport(stomp_settings(url, dlq_url=f"{url}-unused")) as transport:
        while await stomp_queue_size(url) > 0:
            messages = await transport.receive(10, wait_time=max(1, int(quiet)))
            if not messages:
                break
            found.extend(messages)
            await transport.complete(messages)
    return found


async def stomp_queue_size(url: str) -> int:
    """The messages on an ActiveMQ queue, delivered or not, as long as none acknowledged them: the ``size`` its
    statistics plugin answers (``scripts/activemq.sh`` turns it on) for a request to
    ``ActiveMQ.Statistics.Destination.<queue>``, on a temporary queue of this call's, as JSON."""
    name = parse_stomp_url(url).destination.removeprefix("/queue/")
    replies: asyncio.Queue[stompman.MessageFrame] = asyncio.Queue()
    reply_to = f"/temp-queue/test-stats-{uuid.uuid4().hex}"
    async with _stomp_client(url) as (client, _):
        subscription = await client.subscribe(
            reply_to,
            replies.put,
            ack="auto",
            headers={"transformation": "jms-map-json"},
            on_suppressed_exception=lambda error, frame: None,
            receipt_timeout=10,
        )
        try:
            await client.send(b"", f"/queue/ActiveMQ.Statistics.Destination.{name}", headers={"reply-to": reply_to})
            async with asyncio.timeout(10):
                while True:
                    entries = json.loads((await replies.get()).body)["map"]["entry"]
                    # Entries are {"string": key, "long": value} or {"string": [key, value]}.
                    stats = {e["string"] if isinstance(e["string"], str) else e["string"][0]: e for e in entries}
                    if stats["destinationName"]["string"][1] == f"queue://{name}":
                        return int(stats["size"]["long"])
        finally:
            await subscription.unsubscribe()


async def stomp_send(url: str, body: str, attributes: dict[str, str] | None = None) -> None:
    async with open_transport(stomp_settings(url, dlq_url=f"{url}-unused"), consume=False) as transport:
        await transport.send(body, attributes)


@contextlib.asynccontextmanager
async def _stomp_client(url: str) -> AsyncIterator[tuple[stompman.Client, str]]:
    address = parse_stomp_url(url)
    server = stompman.ConnectionParameters(host=address.host, port=address.port, login="", passcode="")
    async with stompman.Client(servers=[server], connect_retry_attempts=3) as client:
        yield client, address.destination


async def stomp_send_raw(url: str, body: bytes, headers: dict[str, str] | None = None) -> None:
    """SEND ``body`` as these bytes, with a plain stompman client (not the bridge's transport), persistently."""
    async with _stomp_client(url) as (client, destination):
        await client.send(body, destination, headers=(headers or {}) | {"persistent": "true"}, receipt_timeout=10)


async def stomp_browse_raw(url: str) -> list[tuple[dict[str, str], bytes]]:
    """What an ActiveMQ queue holds as the broker holds it, headers and body bytes, read with a plain stompman
    queue browser (consumes nothing, counts no delivery); the test's own view, not the bridge's transport's."""
    seen: list[tuple[dict[str, str], bytes]] = []
    ended = asyncio.Event()

    async def on_frame(frame: stompman.AckableMessageFrame) -> None:
        if frame.headers.get("browser") == "end":
            ended.set()
        else:
            seen.append((dict(frame.headers), frame.body))  # type: ignore[arg-type]

    async with _stomp_client(url) as (client, destination):
        subscription = await client.subscribe_with_manual_ack(
            destination, on_frame, ack="auto", headers={"browser": "true"}, receipt_timeout=10
        )
        await asyncio.wait_for(ended.wait(), 10)
        await subscription.unsubscribe()
    return seen


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "256k") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (root can fill a disk; it cannot be kept out of a read-only folder)."""
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=False, capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(folder: Path) -> Path:
    """Fill the filesystem holding ``folder`` until a write fails with ENOSPC; the filler file is returned."""
    filler = folder / ".filler"
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC, error
    return filler


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], *, timeout: float = 20.0, what: str = "condition"
) -> None:
    """Poll ``check`` until it is true; fail with ``what`` after ``timeout`` seconds (a bound, not a speed test)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


class SimulatorAdmin:
    """The simulator's admin API over HTTP."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.AsyncClient(base_url=base_url, timeout=10)

    async def create(self, element: dict[str, Any]) -> dict[str, Any]:
        return await self._object("POST", "/_admin/elements", element)

    async def replace(self, element_id: int, element: dict[str, Any]) -> dict[str, Any]:
        return await self._object("PUT", f"/_admin/elements/{element_id}", element)

    async def patch(self, element_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        return await self._object("PATCH", f"/_admin/elements/{element_id}", changes)

    async def delete(self, element_id: int) -> None:
        await self._call("DELETE", f"/_admin/elements/{element_id}")

    async def get(self, element_id: int) -> dict[str, Any]:
        return await self._object("GET", f"/_admin/elements/{element_id}")

    async def notify(self, element_id: int, event: str = "updated") -> None:
        await self._call("POST", f"/_admin/elements/{element_id}/notify", {"event": event})

    async def fault(self, **fault: Any) -> None:
        await self._call("POST", "/_admin/faults", fault)

    async def clear_faults(self) -> None:
        await self._call("DELETE", "/_admin/faults")

    async def requests(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "/_admin/requests")
        return result

    async def notifications(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "/_admin/notifications")
        return result

    async def revoke_tokens(self) -> None:
        await self._call("POST", "/_admin/tokens/revoke")

    async def _object(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        result = await self._call(method, path, body)
        assert isinstance(result, dict)
        return result

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.http.request(method, path, json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    async def aclose(self) -> None:
        await self.http.aclose()


class RecordingOptions(FolderOptions):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class ChannelLog:
    """What every recording channel was asked to do, for exactly-once assertions."""

    creates: Counter[tuple[str, int, int]] = field(default_factory=Counter)
    updates: Counter[tuple[str, int, int]] = field(default_factory=Counter)
    deletes: Counter[tuple[str, int, int]] = field(default_factory=Counter)
    fail_next: dict[str, list[Exception]] = field(default_factory=dict)
    # A channel answers ChannelUnavailable until this monotonic time.
    down_until: dict[str, float] = field(default_factory=dict)
    # When each write happened (monotonic), per channel.
    written_at: dict[str, list[float]] = field(default_factory=dict)
    attempts: Counter[str] = field(default_factory=Counter)

    def clear(self) -> None:
        for counter in (self.creates, self.updates, self.deletes, self.attempts):
            counter.clear()
        self.fail_next.clear()
        self.down_until.clear()
        self.written_at.clear()

    def duplicates(self) -> int:
        """Creates beyond the first for one (channel, element, publication): each one a duplicate item."""
        return sum(count - 1 for count in self.creates.values() if count > 1)


CHANNEL_LOG = ChannelLog()


class RecordingChannel(FolderChannel):
    """A folder channel that also counts creates, updates and deletes (a create twice would be a duplicate)."""

    async def upsert(self, element: Element, publication: Publication, external_id: str | None) -> ChannelResult:
        CHANNEL_LOG.attempts[self.name] += 1
        failures = CHANNEL_LOG.fail_next.get(self.name)
        if failures:
            raise failures.pop(0)
        if time.monotonic() < CHANNEL_LOG.down_until.get(self.name, 0.0):
            raise ChannelUnavailable(f"{self.name} is down")
        CHANNEL_LOG.written_at.setdefault(self.name, []).append(time.monotonic())
        key = (self.name, element.id, publication.id)
        (CHANNEL_LOG.creates if external_id is None else CHANNEL_LOG.updates)[key] += 1
        return await super().upsert(element, publication, external_id)

    async def delete(self, element_id: int, publication_id: int, external_id: str) -> None:
        CHANNEL_LOG.deletes[(self.name, element_id, publication_id)] += 1
        await super().delete(element_id, publication_id, external_id)


def _create_recording(settings: ChannelSettings, options: BaseModel, context: ChannelContext) -> RecordingChannel:
    assert isinstance(options, RecordingOptions)
    return RecordingChannel(settings.name, options.path)


def channel_types_with_recording() -> dict[str, ChannelType]:
    """The built-in channel registry plus the ``recording`` type; ``running_worker`` builds its channels from it."""
    return {**channel_types(), "recording": ChannelType(RecordingOptions, _create_recording)}


@contextlib.contextmanager
def recording_channels() -> Any:
    """The log of every ``recording`` channel, empty at the start of a test and cleared after it."""
    CHANNEL_LOG.clear()
    try:
        yield CHANNEL_LOG
    finally:
        CHANNEL_LOG.clear()


def worker_settings(
    *,
    queue: str,
    endpoint: str,
    kordiam: str,
    workdir: Path,
    channel_type: str = "recording",
    concurrency: int = 8,
    **queue_overrides: Any,
) -> Settings:
    """``queue`` an SQS queue on ``endpoint``, or a stomp:// queue (``endpoint`` is then its dead-letter queue)."""
    if queue.startswith("stomp"):
        backend: dict[str, Any] = {"dlq_url": endpoint}
    else:
        backend = {"endpoint_url": endpoint, "region": REGION, "wait_time_seconds": 1, "visibility_timeout": 10}
    return Settings(
        queue={
            "url": queue,
            **backend,
            "concurrency": concurrency,
            "retry_base_seconds": 1,
            "retry_max_seconds": 2,
            "shutdown_timeout": 10,
            **queue_overrides,
        },
        kordiam={"base_url": kordiam, "client_id": "demo-client", "client_secret": "demo-secret", "timeout": 5},
        state={"url": f"sqlite:///{workdir / 'state.db'}"},
        channels=[
            {"name": "web", "type": channel_type, "platforms": [99003], "path": str(workdir / "web")},
            {"name": "print", "type": channel_type, "platforms": [99004], "path": str(workdir / "print")},
        ],
        ops={"port": 0},
    )


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[asyncio.Task[None]]:
    """The worker as a task in this event loop; stopped (drained) on exit, and any crash re-raised."""
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_worker(settings, stop, serve_ops=False, channel_types=channel_types_with_recording())
    )
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


def story(title: str = "Council approves budget", *, platforms: tuple[int, ...] = (99003, 99004)) -> dict[str, Any]:
    """A story like the seeds' examples: a text task and one publication per platform."""
    return {
        "title": title,
        "slug": title.lower().replace(" ", "-")[:40],
        "note": "Check the figures with the finance desk.",
        "elementStatus": {"id": 2, "name": "Accepted"},
        "tasks": [
            {
                "format": {"id": 1, "name": "Text"},
                "status": {"id": 2, "name": "Received"},
                "user": {"id": 3, "email": "anna@example.org", "firstName": "Anna", "lastName": "Berg"},
                "content": {"headline": title, "lead": "The lead.", "text": "<p>Body <b>text</b>.</p>"},
            }
        ],
        "publications": [
            {
                "status": {"id": 1, "name": "No Status"},
                "platform": {"id": platform},
                "category": {"id": 90000, "name": "Politics"},
                "schedule": {"kind": "single", "date": "2026-11-23", "timing": {"type": "time", "time": "19:30"}},
            }
            for platform in platforms
        ],
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(
    path: Path,
    *,
    queue: str,
    endpoint: str,
    kordiam: str,
    workdir: Path,
    ops_port: int,
    state_url: str | None = None,
    state_extra: str = "",
    visibility_timeout: int = 20,
    wait_time_seconds: int = 2,
    retry_max_seconds: float = 900,
    clock_skew_seconds: float = 5,
    kordiam_timeout: float = 5,
) -> Path:
    """A worker config with two folder channels (web: 99003, print: 99004); SQLite state unless ``state_url``.

    ``queue`` an SQS queue on ``endpoint``, or a stomp:// queue (``endpoint`` is then its dead-letter queue).
    """
    state_url = state_url or f"sqlite:///{workdir / 'state.db'}"
    if queue.startswith("stomp"):
        backend = f'dlq_url = "{endpoint}"'
    else:
        backend = (
            f'endpoint_url = "{endpoint}"\nregion = "{REGION}"\nwait_time_seconds = {wait_time_seconds}\n'
            f"visibility_timeout = {visibility_timeout}"
        )
    path.write_text(
        f"""
[queue]
url = "{queue}"
{backend}
concurrency = 4
retry_base_seconds = 1
retry_max_seconds = {retry_max_seconds}
shutdown_timeout = 20
clock_skew_seconds = {clock_skew_seconds}

[kordiam]
base_url = "{kordiam}"
client_id = "demo-client"
timeout = {kordiam_timeout}

[state]
url = "{state_url}"
{state_extra}

[[channels]]
name = "web"
type = "folder"
platforms = [99003]
path = "{workdir / "web"}"

[[channels]]
name = "print"
type = "folder"
platforms = [99004]
path = "{workdir / "print"}"

[ops]
port = {ops_port}
""",
        encoding="utf-8",
    )
    return path


class WorkerProcess:
    """``python -m bridge run`` (or another ``command``, such as ``ingress``) as a real process, its output in
    ``log``; ``env`` adds variables (secrets) to the environment."""

    def __init__(
        self,
        config: Path,
        log: Path,
        *,
        name: str = "worker",
        client_secret: str = "demo-secret",
        command: str = "run",
        env: dict[str, str] | None = None,
    ) -> None:
        env = {**os.environ, "BRIDGE_KORDIAM__CLIENT_SECRET": client_secret, **(env or {})}
        self.name = name
        self.log = log
        self._handle = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bridge", command, "--config", str(config)],
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            env=env,
        )

    async def ready(self, ops_port: int) -> bool:
        """``/readyz`` on ``ops_port`` (the ingress: its own port) answers 200; a process that exited fails the test
        with its log."""
        if self.process.poll() is not None:
            log = self.log.read_text()[-3000:]
            raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{log}")
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"http://127.0.0.1:{ops_port}/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    def terminate(self, timeout: float = 30) -> tuple[int, float]:
        """SIGTERM, then the exit code and how long the drain took; killed (code -9) if it outlasts ``timeout``."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._handle.close()
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._handle.close()

    def events(self) -> list[dict[str, Any]]:  # JSON log lines
        lines = self.log.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


@contextlib.asynccontextmanager
async def worker_process(
    config: Path,
    ops_port: int,
    log: Path,
    *,
    ready_within: float | None,
) -> AsyncIterator[tuple[WorkerProcess, httpx.AsyncClient]]:
    """``kordiam-bridge run`` on ``config`` as a real process, and a client of its ops endpoint on ``ops_port``.

    Entered once ``/readyz`` answers 200 (``ready_within`` seconds at most), or at once with ``ready_within=None``
    for a case that waits for something else first. At the end (a failure too) the client is closed and the worker
    stopped with SIGTERM: its exit code is then ``worker.process.returncode``."""
    worker = WorkerProcess(config, log)
    ops = httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops_port}", timeout=5)
    try:
        if ready_within is not None:
            await eventually(lambda: worker.ready(ops_port), timeout=ready_within, what="worker ready")
        yield worker, ops
    finally:
        await ops.aclose()
        worker.terminate()


def consumer_paused() -> bool:
    """An in-process worker's ``bridge_consumer_paused`` gauge is 1: it takes no messages for a fault of its own."""
    return (REGISTRY.get_sample_value("bridge_consumer_paused") or 0.0) == 1.0


async def resumed_and_delivered(endpoint: str, queue: str, workdir: Path, deliveries_expected: int) -> None:
    """After a fault of the whole worker heals: it resumes, every delivery lands, and the queue settles."""
    await eventually(lambda: not consumer_paused(), timeout=60, what="the worker resumed")
    await eventually(lambda: len(deliveries(workdir)) == deliveries_expected, timeout=60, what="every delivery")
    await eventually(lambda: queue_settled(endpoint, queue), timeout=30, what="queue settled")


def deliveries(workdir: Path) -> list[tuple[int, str, int]]:
    """The deliveries in the worker's state file; none while the worker, starting, has not made its tables yet."""
    with contextlib.closing(sqlite3.connect(workdir / "state.db")) as db:
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'deliveries'").fetchone() is None:
            return []
        return db.execute("SELECT element_id, channel, publication_id FROM deliveries ORDER BY 1, 2, 3").fetchall()


# ---- state stores ----------------------------------------------------------------------------------------------

Store = TypeVar("Store", bound=StateStore)
T = TypeVar("T")


@contextlib.asynccontextmanager
async def opened_stores(make: Callable[..., Store]) -> AsyncIterator[Callable[..., Awaitable[Store]]]:
    """A factory of open stores (each its own owner, like separate worker processes), all closed at the end."""
    opened: list[Store] = []

    async def factory(*args: Any, **options: Any) -> Store:
        store = make(*args, **options)
        opened.append(store)  # before open(): a failed open leaves its connection to close
        await store.open()
        return store

    try:
        yield factory
    finally:
        for store in opened:
            await store.close()


@contextlib.contextmanager
def writes_failing(store: StateStore, *, mark_only: bool = False) -> Iterator[None]:
    """The store's writes fail as an outage fails them (``StateUnavailable``) while inside: all of them, or with
    ``mark_only`` only the write that records a lease's mark as it is released (SQLite: the statement that records
    it with the release, which fails whole; DynamoDB: its update of the mark item)."""
    with pytest.MonkeyPatch.context() as patch:
        if isinstance(store, DynamoDbStateStore):
            real_call = store._call

            async def call(operation: str, **request: Any) -> dict[str, Any]:
                marks = "#deleted" in str(request.get("UpdateExpression", ""))
                if operation in ("put_item", "update_item", "delete_item") and (marks or not mark_only):
                    raise StateUnavailable(f"injected outage: DynamoDB {operation}")
                return await real_call(operation, **request)

            patch.setattr(store, "_call", call)
        else:
            assert isinstance(store, SqliteStateStore)
            real_write = store._write
            writes = itertools.count()

            async def write(operation: Callable[[sqlite3.Connection], T]) -> T:
                if not mark_only or next(writes) == 0:  # a release given a mark writes it first
                    raise StateUnavailable("injected outage: SQLite write")
                return await real_write(operation)

            patch.setattr(store, "_write", write)
        yield


T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def delivery(
    element_id: int = 1,
    channel: str = "web",
    publication_id: int = 10,
    *,
    modification_date: datetime | None = T0,
    version: int | None = 1,
    external_id: str = "ext-1",
    **fields: Any,
) -> Delivery:
    """A delivery record as the state store tests write it (fingerprint from the version)."""
    return Delivery(
        element_id=element_id,
        channel=channel,
        publication_id=publication_id,
        external_id=external_id,
        fingerprint=f"fp-{version}",
        modification_date=modification_date,
        version=version,
        **fields,
    )


async def stop_worker_mid_batch(
    sig: signal.Signals, config: Path, admin: SimulatorAdmin, workdir: Path, stories: int = 20
) -> tuple[list[dict[str, Any]], float]:
    """Create ``stories``, start a worker on ``config``, and stop it with ``sig`` once a few are delivered.

    Returns the stories and how long the stop took; asserts what the signal promises (SIGTERM: a drain and exit 0
    within 25 s; SIGKILL: killed).
    """
    created = [await admin.create(story(f"Story {n}")) for n in range(stories)]
    # Slow some fetches (429, Retry-After: 1 s) so that work is in flight when the signal arrives.
    await admin.fault(method="GET", path=r"^/api/v2/elements/\d+$", status=429, count=8, retry_after=1)
    first = WorkerProcess(config, workdir / "worker-1.log")
    try:
        await eventually(lambda: len(list((workdir / "web").glob("*.json"))) >= 3, what="first deliveries")
        started = time.monotonic()
        first.process.send_signal(sig)
        code = first.process.wait(timeout=30)
        stop_seconds = time.monotonic() - started
    finally:
        first.kill()
    if sig == signal.SIGTERM:
        assert code == 0 and stop_seconds < 25, f"exit {code} after {stop_seconds:.1f} s"
        events = [e.get("event") for e in first.events()]
        assert "consumer_draining" in events and "consumer_stopped" in events
    else:
        assert code == -signal.SIGKILL
    return created, stop_seconds


class HeldKordiam:
    """Kordiam that answers the token call (or not, ``answer_token=False``) and holds every other request
    unanswered until the test is over; ``held`` is set once one is held."""

    def __init__(self, *, answer_token: bool) -> None:
        self.answer_token = answer_token
        self.held = asyncio.Event()
        self.held_requests: list[str] = []
        self.released = asyncio.Event()
        self.url = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            request_line = head.split(b"\r\n", 1)[0].decode()
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            if self.answer_token and request_line.startswith("POST /api/v2/auth/token "):
                body = b'{"access_token": "t", "token_type": "Bearer", "expires_in": 3600}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                continue
            self.held_requests.append(request_line)
            self.held.set()
            await self.released.wait()
            writer.close()
            return


@contextlib.asynccontextmanager
async def held_kordiam(*, answer_token: bool) -> AsyncIterator[HeldKordiam]:
    kordiam = HeldKordiam(answer_token=answer_token)
    server = await asyncio.start_server(kordiam.serve, "127.0.0.1", 0)
    kordiam.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield kordiam
    finally:
        kordiam.released.set()
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def worker_ops(gate: ReceiveGate) -> AsyncIterator[OpsServer]:
    """A worker's ops endpoint on a free port of 127.0.0.1, wired to ``gate`` as ``run_worker`` wires it (alive, and
    ready but for what closes the gate)."""
    ops = OpsServer(
        "127.0.0.1",
        0,
        healthy=lambda: True,
        ready=lambda: True,
        not_ready_reason=lambda: gate.reason,
        not_ready_since=lambda: gate.closed_since,
    )
    await ops.start()
    try:
        yield ops
    finally:
        await ops.stop()

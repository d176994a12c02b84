"""The webhook ingress over real HTTP and a real queue (moto server or LocalStack), with the worker consuming:
Kordiam-shaped webhook calls → queue → worker → channels → feedback in the Kordiam simulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler
from moto.server import ThreadedMotoServer
from prometheus_client import REGISTRY

from bridge.config import IngressSettings, Settings
from bridge.ingress.app import IngressServer, build_app
from bridge.queue import open_transport
from bridge.simulator import RunningSimulator, SimulatorSettings
from bridge.simulator.webhooks import WebhookAuth
from bridge.state import open_state_store
from tests.support import (
    REGION,
    ChannelLog,
    SimulatorAdmin,
    SqsEndpoint,
    drain,
    eventually,
    free_port,
    make_queues,
    queue_depth,
    queue_settled,
    running_worker,
    sqs_client,
    story,
    worker_settings,
    write_config,
)

pytestmark = pytest.mark.integration

TOKEN = "ingress-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json;charset=UTF-8"}
INGRESS = IngressSettings.model_validate(
    {"port": 0, "global_export": {"path": "/kordiam", "auth": {"type": "bearer", "token": TOKEN}}}
)


@contextlib.asynccontextmanager
async def running_ingress(settings: Settings, ingress: IngressSettings = INGRESS) -> AsyncIterator[str]:
    """The ingress on a free port, enqueueing to ``settings.queue``; yields its base URL."""
    state = await open_state_store(settings.state)
    try:
        async with open_transport(settings.queue, consume=False) as transport:
            app, _ = build_app(ingress, transport, state, settings.main_channel)
            server = IngressServer(app, "127.0.0.1", 0)
            await server.start()
            try:
                yield f"http://127.0.0.1:{server.port}"
            finally:
                await server.stop()
    finally:
        await state.close()


@pytest.mark.localstack
async def test_webhooks_reach_the_channels_and_feedback_links_the_element(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    quiet_simulator: RunningSimulator,
    kordiam: SimulatorAdmin,
    channel_log: ChannelLog,
    tmp_path: Path,
) -> None:
    settings = worker_settings(
        queue=queues[0], endpoint=sqs_endpoint.url, kordiam=quiet_simulator.base_url, workdir=tmp_path
    )
    async with running_ingress(settings) as ingress, running_worker(settings), httpx.AsyncClient() as http:
        element = await kordiam.create(story("Harbour reopens"))
        element_id = element["id"]
        web_pub, print_pub = (p["id"] for p in element["publications"])

        # Kordiam's POST: answered with an id at once, before any channel has the story.
        created = await http.post(f"{ingress}/kordiam/element", content=json.dumps(element), headers=AUTH)
        assert created.status_code == 201
        assert created.json() == {"id": element_id}

        async def linked() -> bool:
            return "externalElement" in await kordiam.get(element_id)

        await eventually(linked, what="the worker's feedback linking the element")
        linked_id = (await kordiam.get(element_id))["externalElement"]["externalId"]
        assert linked_id == f"{element_id}-{web_pub}"
        assert (tmp_path / "web" / f"{linked_id}.html").exists()
        assert (tmp_path / "print" / f"{element_id}-{print_pub}.html").exists()

        # Kordiam's PUT carries the id the worker linked.
        changed = await kordiam.patch(element_id, {"title": "Harbour reopens at last"})
        updated = await http.put(f"{ingress}/kordiam/element/{linked_id}", content=json.dumps(changed), headers=AUTH)
        assert updated.status_code == 200

        async def headline_updated() -> bool:
            return "Harbour reopens at last" in (tmp_path / "web" / f"{linked_id}.json").read_text()

        await eventually(headline_updated, what="the update in the web channel")

        # Kordiam's DELETE has no body: the ingress finds the element behind the linked id in the state store.
        await kordiam.delete(element_id)
        deleted = await http.delete(f"{ingress}/kordiam/element/{linked_id}", headers=AUTH)
        assert deleted.status_code == 200

        async def gone() -> bool:
            return not (tmp_path / "web" / f"{linked_id}.html").exists()

        await eventually(gone, what="the story removed from the web channel")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="the queue to settle")
    assert channel_log.duplicates() == 0
    assert channel_log.deletes[("web", element_id, web_pub)] == 1


@pytest.mark.localstack
async def test_an_element_larger_than_the_queue_takes_still_reaches_the_channels(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    quiet_simulator: RunningSimulator,
    kordiam: SimulatorAdmin,
    tmp_path: Path,
) -> None:
    # A queue whose MaximumMessageSize is 256 KiB (SQS's old maximum, still a common setting); a long story is more
    # than that. The ingress answered such a call 503 until Kordiam gave up on it.
    sqs_client(sqs_endpoint.url).set_queue_attributes(QueueUrl=queues[0], Attributes={"MaximumMessageSize": "262144"})
    settings = worker_settings(
        queue=queues[0], endpoint=sqs_endpoint.url, kordiam=quiet_simulator.base_url, workdir=tmp_path
    )
    async with running_ingress(settings) as ingress, running_worker(settings), httpx.AsyncClient() as http:
        long_story = story("Budget in full")
        long_story["tasks"][0]["content"]["text"] = "<p>" + "Line after line of the budget. " * 10_000 + "</p>"
        element = await kordiam.create(long_story)
        body = json.dumps(element)
        assert len(body) > 262_144
        created = await http.post(f"{ingress}/kordiam/element", content=body, headers=AUTH)
        assert created.status_code == 201
        assert created.json() == {"id": element["id"]}

        async def linked() -> bool:
            return "externalElement" in await kordiam.get(element["id"])

        await eventually(linked, what="the worker's feedback linking the element")
        linked_id = (await kordiam.get(element["id"]))["externalElement"]["externalId"]
        assert (tmp_path / "web" / f"{linked_id}.html").exists()
        assert (await http.get(f"{ingress}/readyz")).status_code == 200
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="the queue to settle")


async def test_queue_down_answers_503_then_recovers(tmp_path: Path) -> None:
    """The queue goes away: Kordiam gets 503 (and retries); nothing is answered 2xx that the queue does not hold."""
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    queue, _ = make_queues(endpoint, "ingress-outage")
    settings = worker_settings(queue=queue, endpoint=endpoint, kordiam="http://127.0.0.1:9", workdir=tmp_path)
    ingress = INGRESS.model_copy(update={"enqueue_timeout_seconds": 3.0})
    body = json.dumps({"id": 4711, "title": "Outage", "modificationDate": "2026-12-04T10:00:00Z"})
    try:
        async with running_ingress(settings, ingress) as url, httpx.AsyncClient(timeout=10) as http:
            assert (await http.post(f"{url}/kordiam/element", content=body, headers=AUTH)).status_code == 201
            moto.stop()
            down = await http.post(f"{url}/kordiam/element", content=body, headers=AUTH)
            assert down.status_code == 503
            assert down.json() == {"error": "queue unavailable, retry later"}
            unready = await http.get(f"{url}/readyz")
            assert unready.status_code == 503 and unready.headers["Retry-After"] == "10"
            # The queue comes back (moto keeps its queues in this process): Kordiam's retry is taken.
            moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            moto.start()
            assert (await http.post(f"{url}/kordiam/element", content=body, headers=AUTH)).status_code == 201
            assert (await http.get(f"{url}/readyz")).status_code == 200
        assert queue_depth(endpoint, queue) == 2  # the two calls answered 201, not the one answered 503
    finally:
        moto.stop()


# A bound against a hang, not a speed check: on a loaded 2-core machine the burst and its drain take minutes.
@pytest.mark.timeout(600)
async def test_a_burst_of_500_calls_with_kordiams_retries_delivers_every_story_once(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    quiet_simulator: RunningSimulator,
    kordiam: SimulatorAdmin,
    channel_log: ChannelLog,
    tmp_path: Path,
) -> None:
    """125 stories, four calls each from 32 clients at once: the POST, Kordiam's retry of it (its answer was lost,
    Global Export retries 3 × 5 s), a PUT and the PUT's retry. Every story lands once in its channel. (The
    ingress's rate under load is `make bench`'s to measure; 500 calls keep 32 clients busy without a minute of CI.)"""
    settings = worker_settings(
        queue=queues[0], endpoint=sqs_endpoint.url, kordiam=quiet_simulator.base_url, workdir=tmp_path, concurrency=32
    )
    elements = [await kordiam.create(story(f"Story {n}", platforms=(99003,))) for n in range(125)]
    calls: list[tuple[str, str, dict[str, Any]]] = []
    for element in elements:
        calls += [("POST", "/kordiam/element", element)] * 2
        calls += [("PUT", f"/kordiam/element/{element['id']}", element)] * 2
    assert len(calls) == 500
    ingress = INGRESS.model_copy(update={"rate_limit_burst": 1000})
    async with running_ingress(settings, ingress) as url, httpx.AsyncClient(timeout=30) as http:
        pending = iter(calls)
        statuses: list[int] = []

        async def client() -> None:
            for method, path, element in pending:
                response = await http.request(method, f"{url}{path}", content=json.dumps(element), headers=AUTH)
                statuses.append(response.status_code)

        await asyncio.gather(*(client() for _ in range(32)))
        assert sorted(set(statuses)) == [200, 201]
        assert queue_depth(sqs_endpoint.url, queues[0]) == 500
        async with running_worker(settings):

            async def all_delivered() -> bool:
                return len(channel_log.creates) == len(elements)

            await eventually(all_delivered, timeout=120, what="every story in the web channel")
            await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=60, what="queue settled")
    assert channel_log.duplicates() == 0
    assert set(channel_log.creates.values()) == {1}
    assert drain(sqs_endpoint.url, queues[1]) == []
    for element in elements:
        assert (tmp_path / "web" / f"{element['id']}-{element['publications'][0]['id']}.html").exists()


GLOBAL_EXPORT_AUTH: dict[str, tuple[dict[str, Any], list[str]]] = {
    "bearer": ({"type": "bearer", "token": "tok-00001"}, ["bearer:tok-00001"]),
    "jwt": (
        {"type": "jwt", "secret": "a-jwt-secret-of-32-bytes-or-more!!"},
        ["jwt:a-jwt-secret-of-32-bytes-or-more!!"],
    ),
    "api_key": ({"type": "api_key", "api_key": "k-1", "api_secret": "sec-00001"}, ["api_key:k-1:sec-00001"]),
    "headers": (
        {"type": "headers", "headers": {"X-Api-Key": "hdr-00001", "X-Org": "acme-org-1"}},
        ["header:X-Api-Key=hdr-00001", "header:X-Org=acme-org-1"],
    ),
}


@pytest.mark.localstack
@pytest.mark.parametrize("auth", sorted(GLOBAL_EXPORT_AUTH))
async def test_the_simulator_calls_the_ingress_as_kordiam_would(
    sqs_endpoint: SqsEndpoint, queues: tuple[str, str], channel_log: ChannelLog, tmp_path: Path, auth: str
) -> None:
    """Simulator (Global Export, each auth type) → ingress → queue → worker → channels → feedback → the PUT and
    DELETE Kordiam sends next carry the linked id, and the ingress maps them back."""
    ingress_auth, flags = GLOBAL_EXPORT_AUTH[auth]
    ingress = IngressSettings.model_validate(
        {
            "port": 0,
            "global_export": {"path": "/kordiam", "auth": ingress_auth},
            "platform": {"path": "/platform", "api_user": "api-user", "api_secret": "api-secret"},
        }
    )
    placeholder = worker_settings(queue=queues[0], endpoint=sqs_endpoint.url, kordiam="http://x", workdir=tmp_path)
    async with running_ingress(placeholder, ingress) as url:
        simulator_settings = SimulatorSettings(
            region=REGION,
            global_export_url=f"{url}/kordiam",
            global_export_auth=WebhookAuth.parse(flags),
            platform_url=f"{url}/platform",
            platform_api_user="api-user",
            platform_api_secret="api-secret",
        )
        with RunningSimulator(simulator_settings) as simulator:
            settings = worker_settings(
                queue=queues[0], endpoint=sqs_endpoint.url, kordiam=simulator.base_url, workdir=tmp_path
            )
            admin = SimulatorAdmin(simulator.base_url)
            try:
                async with running_worker(settings):
                    element = await admin.create(story("Bridge opens"))
                    element_id = element["id"]
                    web_pub = element["publications"][0]["id"]

                    async def linked() -> bool:
                        return "externalElement" in await admin.get(element_id)

                    await eventually(linked, what="feedback linking the element")
                    linked_id = f"{element_id}-{web_pub}"
                    await admin.patch(element_id, {"title": "Bridge opens at noon"})

                    async def updated() -> bool:
                        return "Bridge opens at noon" in (tmp_path / "web" / f"{linked_id}.json").read_text()

                    await eventually(updated, what="the update in the web channel")
                    await admin.delete(element_id)

                    async def gone() -> bool:
                        return not (tmp_path / "web" / f"{linked_id}.html").exists()

                    await eventually(gone, what="the deletion in the web channel")
                    calls = await admin._call("GET", "/_admin/webhooks")
            finally:
                await admin.aclose()
    global_export = [
        (c["method"], c["path"], c["status"], c["attempts"]) for c in calls if c["target"] == "global_export"
    ]
    assert global_export == [
        ("POST", "/element", 201, 1),
        ("PUT", f"/element/{linked_id}", 200, 1),
        ("DELETE", f"/element/{linked_id}", 200, 1),
    ]
    platform = [(c["method"], c["status"], c["attempts"]) for c in calls if c["target"] == "platform"]
    assert platform == [("POST", 200, 1)] * 2 + [("PUT", 200, 1)] * 2 + [("DELETE", 200, 1)] * 2
    assert channel_log.duplicates() == 0


async def test_webhooks_through_activemq(
    stomp_queues: tuple[str, str],
    quiet_simulator: RunningSimulator,
    kordiam: SimulatorAdmin,
    channel_log: ChannelLog,
    tmp_path: Path,
) -> None:
    """The same chain on ActiveMQ: the ingress enqueues through whichever transport ``queue.url`` names."""
    settings = worker_settings(
        queue=stomp_queues[0], endpoint=stomp_queues[1], kordiam=quiet_simulator.base_url, workdir=tmp_path
    )
    async with running_ingress(settings) as ingress, running_worker(settings), httpx.AsyncClient() as http:
        element = await kordiam.create(story("Ferry strike ends"))
        element_id = element["id"]
        created = await http.post(f"{ingress}/kordiam/element", content=json.dumps(element), headers=AUTH)
        assert created.status_code == 201

        async def linked() -> bool:
            return "externalElement" in await kordiam.get(element_id)

        await eventually(linked, what="the worker's feedback linking the element")
        linked_id = (await kordiam.get(element_id))["externalElement"]["externalId"]
        await kordiam.delete(element_id)
        assert (await http.delete(f"{ingress}/kordiam/element/{linked_id}", headers=AUTH)).status_code == 200

        async def gone() -> bool:
            return not (tmp_path / "web" / f"{linked_id}.html").exists()

        await eventually(gone, what="the story removed from the web channel")
    assert channel_log.duplicates() == 0


async def test_the_ingress_command_serves_and_stops_on_sigterm(
    sqs_endpoint: SqsEndpoint, queues: tuple[str, str], tmp_path: Path
) -> None:
    """``kordiam-bridge ingress --config …`` as a real process: the secret from the environment, a webhook call
    answered after the queue holds it, SIGTERM ends it with exit code 0."""
    port = free_port()
    config = write_config(
        tmp_path / "bridge.toml",
        queue=queues[0],
        endpoint=sqs_endpoint.url,
        kordiam="http://127.0.0.1:9",
        workdir=tmp_path,
        ops_port=free_port(),
    )
    config.write_text(
        config.read_text()
        + f'\n[ingress]\nport = {port}\n[ingress.global_export]\npath = "/kordiam"\nauth = {{ type = "bearer" }}\n'
    )
    env = {**os.environ, "BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__TOKEN": TOKEN}
    log = (tmp_path / "ingress.log").open("w")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "ingress", "--config", str(config), stdout=log, stderr=log, env=env
    )
    try:
        async with httpx.AsyncClient(timeout=10) as http:

            async def healthy() -> bool:
                try:
                    return (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await eventually(healthy, what="the ingress process to answer /healthz")
            body = json.dumps({"id": 31, "title": "From a process", "modificationDate": "2026-12-04T10:00:00Z"})
            answer = await http.post(f"http://127.0.0.1:{port}/kordiam/element", content=body, headers=AUTH)
            assert answer.status_code == 201
            assert queue_depth(sqs_endpoint.url, queues[0]) == 1
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log.close()
    logged = (tmp_path / "ingress.log").read_text()
    assert TOKEN not in logged
    # One line per call, with what it enqueued.
    [line] = [json.loads(line) for line in logged.splitlines() if '"global_export.create"' in line]
    assert line["event"] == "ingress_request"
    assert line["status"] == 201
    assert line["element_id"] == 31
    assert line["webhook_event"] == "created"
    assert line["message_id"]


async def test_an_answer_lost_after_the_enqueue_makes_a_harmless_duplicate(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    quiet_simulator: RunningSimulator,
    kordiam: SimulatorAdmin,
    channel_log: ChannelLog,
    tmp_path: Path,
) -> None:
    """The ingress dies between the queue's confirmation and its answer (here: the connection is cut right after
    the enqueue); Kordiam sees no answer and retries. Both copies are on the queue; the story lands once."""
    settings = worker_settings(
        queue=queues[0], endpoint=sqs_endpoint.url, kordiam=quiet_simulator.base_url, workdir=tmp_path
    )
    state = await open_state_store(settings.state)
    cut: list[str] = []

    @web.middleware
    async def cut_the_first_answer(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if not cut and request.transport is not None:
            cut.append(request.path)
            request.transport.abort()  # the queue holds the message; the answer never leaves
        return response

    try:
        async with open_transport(settings.queue, consume=False) as transport:
            app, _ = build_app(INGRESS, transport, state, settings.main_channel)
            app.middlewares.append(cut_the_first_answer)
            server = IngressServer(app, "127.0.0.1", 0)
            await server.start()
            url = f"http://127.0.0.1:{server.port}/kordiam/element"
            try:
                element = await kordiam.create(story("Lost answer", platforms=(99003,)))
                async with httpx.AsyncClient(timeout=10) as http:
                    with pytest.raises(httpx.HTTPError):
                        await http.post(url, content=json.dumps(element), headers=AUTH)
                    # Kordiam's retry (Global Export: after 5 s; here at once)
                    retried = await http.post(url, content=json.dumps(element), headers=AUTH)
                    assert retried.status_code == 201
                assert queue_depth(sqs_endpoint.url, queues[0]) == 2
                async with running_worker(settings):

                    async def delivered() -> bool:
                        return len(channel_log.creates) == 1

                    await eventually(delivered, what="the story in the web channel")
                    await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="the queue to settle")
            finally:
                await server.stop()
    finally:
        await state.close()
    assert cut == ["/kordiam/element"]
    assert channel_log.duplicates() == 0
    assert drain(sqs_endpoint.url, queues[1]) == []


async def healthz_answered(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Whether a ``/healthz`` call on this connection is answered 200 (the connection is kept alive after it)."""
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: ingress\r\n\r\n")
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    [length] = [line.split(":")[1] for line in head.split("\r\n") if line.lower().startswith("content-length:")]
    await reader.readexactly(int(length))
    return head.startswith("HTTP/1.1 200")


async def keep_alive_call(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that had one call answered (``/healthz``) and is kept alive for the next."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await healthz_answered(reader, writer)
    return reader, writer


async def test_idle_connections_beyond_max_connections_are_closed_and_a_webhook_still_reaches_the_queue(
    sqs_endpoint: SqsEndpoint, queues: tuple[str, str], tmp_path: Path
) -> None:
    """Twice ``max_connections`` idle connections (keep-alive ones, then ones that never send a byte, as a port scan
    or a slowloris holds them): each new one closes the longest idle, so the ingress never holds more than its cap,
    and a webhook call on a new connection is answered 201 with its message on the queue."""
    settings = worker_settings(
        queue=queues[0], endpoint=sqs_endpoint.url, kordiam="http://127.0.0.1:9", workdir=tmp_path
    )
    ingress = INGRESS.model_copy(update={"max_concurrent_requests": 2, "max_connections": 4})
    idle_closed = REGISTRY.get_sample_value("bridge_ingress_connections_shed_total", {"outcome": "idle_closed"}) or 0
    async with running_ingress(settings, ingress) as url:
        port = int(url.rsplit(":", 1)[1])
        idle = [await keep_alive_call(port) for _ in range(4)]
        for _ in range(4):
            idle.append(await asyncio.open_connection("127.0.0.1", port))
            # The longest idle is closed for it: the keep-alive ones first, in the order of their answers.
            assert await idle[len(idle) - 5][0].read() == b""
        # The newest is still open (it is then the most recently active, the others keep their order).
        assert await healthz_answered(*idle[-1])
        assert REGISTRY.get_sample_value("bridge_ingress_open_connections") == 4
        body = json.dumps({"id": 4712, "title": "Through", "modificationDate": "2026-12-07T10:00:00Z"})
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.post(f"{url}/kordiam/element", content=body, headers=AUTH)
            assert answer.status_code == 201
            assert await idle[4][0].read() == b""  # the oldest of the silent ones made room for the webhook's
            # (c) the metric, as /metrics exports it (on the webhook's kept-alive connection: no one more is closed)
            exported = (await http.get(f"{url}/metrics")).text
        for _, writer in idle:
            writer.close()
    counted = 'bridge_ingress_connections_shed_total{outcome="idle_closed"}'
    assert [float(line.split()[-1]) for line in exported.splitlines() if line.startswith(counted)] == [idle_closed + 5]
    [message] = drain(sqs_endpoint.url, queues[0])
    assert json.loads(message["Body"])["id"] == 4712

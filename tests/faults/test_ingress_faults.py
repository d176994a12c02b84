"""Fault injection on the webhook path, all real processes: ``kordiam-bridge ingress`` and ``kordiam-bridge run``
as subprocesses, a real SQS (moto server), the Kordiam simulator as the API; the test plays Kordiam's webhook
sender, retries included. Each case records its figures (see conftest.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import httpx
import pytest
from aiohttp import web
from moto.server import ThreadedMotoServer

from bridge.simulator import RunningSimulator
from tests.faults.conftest import Figures, assert_each_story_once
from tests.support import (
    SimulatorAdmin,
    SqsEndpoint,
    WorkerProcess,
    deliveries,
    drain,
    eventually,
    free_port,
    make_queues,
    queue_depth,
    queue_settled,
    story,
    write_config,
)

pytestmark = pytest.mark.integration

TOKEN = "fault-ingress-token"
WEBHOOK_HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json;charset=UTF-8"}


def ingress_process(config: Path, log: Path) -> WorkerProcess:
    """``kordiam-bridge ingress`` as a real process, its bearer token from the environment."""
    token = {"BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__TOKEN": TOKEN}
    return WorkerProcess(config, log, name="ingress", command="ingress", env=token)


def configs(
    workdir: Path, queue: str, worker_endpoint: str, ingress_endpoint: str, kordiam: str
) -> tuple[Path, Path, int]:
    """The worker's config (two folder channels, SQLite state in ``workdir``), the ingress's (the same plus
    ``[ingress]``, its queue reached through ``ingress_endpoint``, a short enqueue timeout) and the ingress's port."""
    worker = write_config(
        workdir / "worker.toml",
        queue=queue,
        endpoint=worker_endpoint,
        kordiam=kordiam,
        workdir=workdir,
        ops_port=free_port(),
        visibility_timeout=6,
        wait_time_seconds=1,
    )
    port = free_port()
    ingress = workdir / "ingress.toml"
    ingress.write_text(
        worker.read_text().replace(f'endpoint_url = "{worker_endpoint}"', f'endpoint_url = "{ingress_endpoint}"')
        + f"\n[ingress]\nport = {port}\nenqueue_timeout_seconds = 2\n"
        + '[ingress.global_export]\npath = "/kordiam"\nauth = { type = "bearer" }\n'
    )
    return worker, ingress, port


def channel_writes(worker: WorkerProcess) -> Counter[str]:
    """How often the worker wrote each channel item (created or updated), from its ``done`` log lines."""
    writes: Counter[str] = Counter()
    for event in worker.events():
        if event.get("event") == "done":
            channels = event.get("channels") or {}
            assert isinstance(channels, dict)
            writes.update(item for item, action in channels.items() if action in ("created", "updated"))
    return writes


class KillAfterTheQueueAnswers:
    """A pass-through proxy in front of the SQS endpoint that SIGKILLs the ingress on the first send, after the
    queue answered that it holds the message and before the ingress can read that answer: the ingress dies between
    the enqueue and its own answer to Kordiam."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.victim: subprocess.Popen[bytes] | None = None
        self.killed_after: list[str] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with (
            aiohttp.ClientSession() as http,
            http.request(request.method, self.upstream + request.path_qs, data=body, headers=headers) as answer,
        ):
            answered = await answer.read()
            status, content_type = answer.status, answer.headers.get("Content-Type", "application/json")
        action = request.headers.get("X-Amz-Target", "") + body.decode(errors="replace")[:200]
        if self.victim is not None and not self.killed_after and "SendMessage" in action and status == 200:
            self.killed_after.append(action)
            self.victim.send_signal(signal.SIGKILL)
            self.victim.wait()
        return web.Response(body=answered, status=status, headers={"Content-Type": content_type})


async def test_the_ingress_killed_between_the_enqueue_and_its_answer_then_kordiams_retry_is_harmless(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    quiet_simulator: RunningSimulator,
    kordiam: SimulatorAdmin,
    tmp_path: Path,
    figures: Figures,
) -> None:
    proxy = KillAfterTheQueueAnswers(sqs_endpoint.url)
    await proxy.start()
    worker_config, ingress_config, port = configs(
        tmp_path, queues[0], sqs_endpoint.url, proxy.url, quiet_simulator.base_url
    )
    url = f"http://127.0.0.1:{port}/kordiam/element"
    element = await kordiam.create(story("Killed mid-answer"))
    body = json.dumps(element)
    first = ingress_process(ingress_config, tmp_path / "ingress-1.log")
    second: WorkerProcess | None = None
    worker: WorkerProcess | None = None
    try:
        await eventually(lambda: first.ready(port), what="the first ingress to answer /readyz")
        proxy.victim = first.process
        async with httpx.AsyncClient(timeout=10) as http:
            with pytest.raises(httpx.TransportError):
                await http.post(url, content=body, headers=WEBHOOK_HEADERS)  # no answer: the ingress died
            assert first.process.returncode == -signal.SIGKILL
            assert queue_depth(sqs_endpoint.url, queues[0]) == 1  # the queue holds it all the same
            # Kordiam retries (Global Export: 3 x 5 s); the ingress is back by then (its orchestrator restarts it).
            second = ingress_process(ingress_config, tmp_path / "ingress-2.log")
            await eventually(lambda: second.ready(port), what="the restarted ingress to answer /readyz")
            retried = await http.post(url, content=body, headers=WEBHOOK_HEADERS)
            assert retried.status_code == 201 and retried.json() == {"id": element["id"]}
        assert queue_depth(sqs_endpoint.url, queues[0]) == 2  # the duplicate

        worker = WorkerProcess(worker_config, tmp_path / "worker.log")
        expected = sorted(
            (element["id"], channel, p["id"])
            for channel, p in zip(("web", "print"), element["publications"], strict=True)
        )
        await eventually(lambda: deliveries(tmp_path) == expected, timeout=60, what="the story in both channels")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=30, what="the queue to settle")
        writes = channel_writes(worker)
    finally:
        first.kill()
        if second is not None:
            second.terminate()
        if worker is not None:
            worker.terminate()
        await proxy.stop()
    dead = drain(sqs_endpoint.url, queues[1])
    figures.sent = 2  # one call and Kordiam's retry
    figures.delivered = len(writes)
    figures.dead_lettered = len(dead)
    figures.duplicates = sum(count - 1 for count in writes.values())
    figures.lost = len(expected) - len(writes)
    figures.notes = {"killed_after": proxy.killed_after[0][:60], "writes": dict(writes)}
    assert len(proxy.killed_after) == 1
    assert sorted(writes) == [f"print/{expected[0][2]}", f"web/{expected[1][2]}"]
    assert_each_story_once(figures)


async def test_a_queue_outage_answers_503_acknowledges_nothing_and_kordiams_retry_is_delivered_after(
    quiet_simulator: RunningSimulator,
    kordiam: SimulatorAdmin,
    tmp_path: Path,
    figures: Figures,
) -> None:
    # A queue of this test's own, in a moto server it can stop and start again (moto keeps its queues meanwhile).
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    # moto's queues live in this process, shared by every moto server in it: a name of this test's own.
    queue, dlq = make_queues(endpoint, f"ingress-outage-{uuid.uuid4().hex[:8]}", max_receive_count=10)
    worker_config, ingress_config, ingress_port = configs(tmp_path, queue, endpoint, endpoint, quiet_simulator.base_url)
    base = f"http://127.0.0.1:{ingress_port}"
    before = await kordiam.create(story("Before the outage"))
    during = await kordiam.create(story("During the outage"))
    ingress = ingress_process(ingress_config, tmp_path / "ingress.log")
    worker = WorkerProcess(worker_config, tmp_path / "worker.log")
    answers: list[int] = []
    try:
        await eventually(lambda: ingress.ready(ingress_port), what="the ingress to answer /readyz")
        async with httpx.AsyncClient(timeout=15) as http:
            answer = await http.post(f"{base}/kordiam/element", content=json.dumps(before), headers=WEBHOOK_HEADERS)
            answers.append(answer.status_code)
            assert answer.status_code == 201
            await eventually(lambda: len(deliveries(tmp_path)) == 2, timeout=60, what="the first story delivered")
            await eventually(lambda: queue_settled(endpoint, queue), timeout=30, what="its message deleted")

            moto.stop()
            # Kordiam's Global Export tries a call three times; every one is refused while the queue is down.
            for _ in range(3):
                answer = await http.post(f"{base}/kordiam/element", content=json.dumps(during), headers=WEBHOOK_HEADERS)
                answers.append(answer.status_code)
                assert answer.status_code == 503, answer.text
                assert answer.json() == {"error": "queue unavailable, retry later"}
            assert (await http.get(f"{base}/readyz")).status_code == 503

            moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            moto.start()
            late = queue_depth(endpoint, queue)
            # Kordiam's next try (or the newsroom's next save) is taken and delivered.
            answer = await http.post(f"{base}/kordiam/element", content=json.dumps(during), headers=WEBHOOK_HEADERS)
            answers.append(answer.status_code)
            assert answer.status_code == 201
            assert (await http.get(f"{base}/readyz")).status_code == 200
        await eventually(lambda: len(deliveries(tmp_path)) == 4, timeout=90, what="the second story delivered")
        await eventually(lambda: queue_settled(endpoint, queue), timeout=30, what="the queue to settle")
        writes = channel_writes(worker)
        handled = sum(1 for e in worker.events() if e.get("event") == "done")
        assert worker.process.poll() is None  # the worker rode out the outage
        dead = drain(endpoint, dlq)
    finally:
        ingress.terminate()
        worker.terminate()
        moto.stop()
    enqueued = [e for e in ingress.events() if e.get("event") == "ingress_request" and "message_id" in e]
    figures.sent = len(answers)
    figures.delivered = len(writes)
    figures.dead_lettered = len(dead)
    figures.duplicates = sum(count - 1 for count in writes.values())
    figures.lost = 4 - len(writes)
    figures.notes = {"answers": answers, "enqueued": len(enqueued), "messages_handled": handled}
    assert answers == [201, 503, 503, 503, 201]
    assert len(enqueued) == 2  # a 201 for every send the queue confirmed, and only for those
    # The three calls answered 503 reached the queue neither then nor once it was back (a send is not retried into
    # the queue after its caller was told to retry): the worker handled the two answered 201, nothing else.
    assert late == 0 and handled == 2
    assert_each_story_once(figures)

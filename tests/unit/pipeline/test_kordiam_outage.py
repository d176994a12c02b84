"""Kordiam down for every message pauses the worker (messages wait, none is dead-lettered for it); one element
Kordiam cannot serve does not. And the probe itself: which answers mean Kordiam is down."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr
from structlog.testing import capture_logs

from bridge.config import FeedbackSettings
from bridge.errors import KordiamUnavailable
from bridge.kordiam.client import KordiamClient
from bridge.pipeline import pause
from bridge.pipeline.handler import MessageHandler
from bridge.pipeline.kordiam_outage import KordiamOutage
from bridge.pipeline.routing import Route
from bridge.pipeline.sync import SyncEngine
from bridge.queue.gate import ReceiveGate
from bridge.queue.outcome import Done, Retry
from bridge.queue.transport import QueueMessage
from bridge.retry import RetryPolicy
from tests.support import http_answering
from tests.unit.fakes import FakeKordiam, MemoryStateStore, ScriptedChannel, element_body, publication

WEB = 99003
ONCE = RetryPolicy(attempts=1)  # the client gives up at once, so each 503 is one failed fetch


@pytest.fixture(autouse=True)
def quick_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bridge.pipeline.pause.FIRST_RETRY_SECONDS", 0.01)


def message(element_id: int) -> QueueMessage:
    return QueueMessage(f"m{element_id}", f"r{element_id}", f'{{"id": {element_id}}}', {}, 1, None, None)


def pipeline(
    kordiam: FakeKordiam, gate: ReceiveGate, *element_ids: int
) -> tuple[MessageHandler, KordiamOutage, ScriptedChannel]:
    for element_id in element_ids:
        kordiam.elements[element_id] = element_body(element_id, publication(element_id * 10, WEB))
    client = kordiam.client(retry=ONCE)
    web = ScriptedChannel("web")
    engine = SyncEngine(
        kordiam=client,
        routes=[Route(web, frozenset({WEB}))],
        state=MemoryStateStore(),
        feedback=FeedbackSettings(),
        main_channel="web",
    )
    outage = KordiamOutage(client, gate)
    return MessageHandler(engine, kordiam_outage=outage, tracing=False), outage, web


async def test_kordiam_down_for_everyone_pauses_the_worker_and_the_message_runs_again_once_it_answers() -> None:
    kordiam, gate = FakeKordiam(), ReceiveGate()
    kordiam.down = 3  # the message's fetch, the probe that confirms the outage, the pause's first probe
    handler, outage, web = pipeline(kordiam, gate, 5)
    before = REGISTRY.get_sample_value("bridge_kordiam_outages_total") or 0.0
    try:
        with capture_logs() as logs:
            running = asyncio.ensure_future(handler(message(5)))
            while not outage.paused:
                await asyncio.sleep(0)
            assert gate.reason is not None and gate.reason.startswith("Kordiam does not answer: GET /platforms: 503")
            outcome = await asyncio.wait_for(running, timeout=5)
    finally:
        await outage.aclose()
    assert isinstance(outcome, Done)  # neither dead-lettered nor handed back: it waited in hand, then ran
    assert web.upserts == [(50, None)] and gate.reason is None
    assert kordiam.reads.count("/platforms") == 3 and kordiam.reads.count("/elements/5") == 2
    assert (REGISTRY.get_sample_value("bridge_kordiam_outages_total") or 0.0) - before == 1
    events = [e["event"] for e in logs]
    assert events.count("kordiam_unavailable") == 1 and events.count("consumer_resumed") == 1


class MaintenancePage(FakeKordiam):
    """Kordiam behind a proxy that answers its token endpoint with a maintenance page (200, HTML) ``pages`` times."""

    def __init__(self, pages: int) -> None:
        super().__init__()
        self.pages = pages

    def answer(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/auth/token") and self.pages:
            self.pages -= 1
            return httpx.Response(200, text="<html>Back soon</html>", headers={"content-type": "text/html"})
        return super().answer(request)


async def test_a_token_answer_the_worker_cannot_use_pauses_it_and_dead_letters_no_message() -> None:
    # The token is the worker's, not the message's: before, each message met it as an UnexpectedResponse of its
    # fetch and was dead-lettered on its first receive, every one of them, while the page lasted.
    kordiam, gate = MaintenancePage(pages=3), ReceiveGate()  # the fetch's, the confirming probe's, the first retry's
    handler, outage, web = pipeline(kordiam, gate, 5)
    try:
        running = asyncio.ensure_future(handler(message(5)))
        while not outage.paused and not running.done():
            await asyncio.sleep(0)
        assert outage.paused and gate.reason is not None and "/auth/token: answer is not JSON" in gate.reason
        outcome = await asyncio.wait_for(running, timeout=5)
    finally:
        await outage.aclose()
    assert isinstance(outcome, Done) and web.upserts == [(50, None)]


async def test_an_element_kordiam_cannot_serve_while_it_answers_otherwise_is_the_messages_own_failure() -> None:
    kordiam, gate = FakeKordiam(), ReceiveGate()
    kordiam.down = 1  # only the message's own fetch
    handler, outage, web = pipeline(kordiam, gate, 5)
    try:
        outcome = await handler(message(5))
    finally:
        await outage.aclose()
    assert isinstance(outcome, Retry) and outcome.stage == "fetch" and outcome.error_class == "KordiamUnavailable"
    assert kordiam.reads.count("/platforms") == 1 and gate.reason is None and web.upserts == []


async def test_a_permanent_refusal_of_the_element_asks_no_probe() -> None:
    kordiam, gate = FakeKordiam(), ReceiveGate()
    kordiam.fail_get = 422
    handler, outage, _ = pipeline(kordiam, gate, 5)
    try:
        outcome = await handler(message(5))
    finally:
        await outage.aclose()
    assert outcome.kind == "dead_letter" and "/platforms" not in kordiam.reads


def probing_client(answer: httpx.Response | Exception) -> KordiamClient:
    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/auth/token"):
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        if isinstance(answer, Exception):
            raise answer
        return answer

    return KordiamClient(
        http_answering(respond), base_url="https://kordiam.test", client_id="c", client_secret=SecretStr("s3cret-value")
    )


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, json={"content": []}),
        httpx.Response(403, json={"title": "Forbidden", "status": 403}),  # a client not allowed to list platforms
        httpx.Response(404, json={"status": 404}),
    ],
    ids=["200", "403", "404"],
)
async def test_any_answer_but_unavailability_means_kordiam_answers(answer: httpx.Response) -> None:
    await probing_client(answer).probe()


async def test_a_success_that_is_not_json_is_no_answer_of_kordiams() -> None:
    # A proxy's maintenance page answered 200 for every call: the worker pauses, instead of retrying each message
    # until the queue dead-letters it.
    with pytest.raises(KordiamUnavailable, match="GET /api/v2/platforms: answer is not JSON"):
        await probing_client(httpx.Response(200, text="<html>maintenance</html>")).probe()


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(503, json={"status": 503}),
        httpx.Response(429, headers={"Retry-After": "30"}, json={"status": 429}),
        httpx.ConnectError("connection refused"),
    ],
    ids=["503", "429", "unreachable"],
)
async def test_unavailability_fails_the_probe_after_one_attempt(answer: httpx.Response | Exception) -> None:
    # The operator reads this in kordiam_unavailable and /readyz: "1 attempt", not "1 attempts".
    with pytest.raises(KordiamUnavailable, match=r"\(gave up after 1 attempt\)$"):
        await probing_client(answer).probe()


class FeedbackDown(FakeKordiam):
    """Kordiam that reads elements but fails ``failing`` writes and probes with 503 first."""

    failing = 2  # the message's first feedback write, then the probe that confirms the outage

    def answer(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if (
            self.failing
            and not path.endswith("/auth/token")
            and (request.method != "GET" or path.endswith("/platforms"))
        ):
            self.failing -= 1
            return httpx.Response(503, json={"title": "Service Unavailable", "status": 503})
        return super().answer(request)


async def test_what_a_sync_achieved_before_the_worker_paused_is_logged_before_it_waits() -> None:
    # The run after the pause finds the channel written already ("unchanged"), so the write must be logged now.
    kordiam, gate = FeedbackDown(), ReceiveGate()
    handler, outage, web = pipeline(kordiam, gate, 5)
    try:
        with capture_logs() as logs:
            outcome = await asyncio.wait_for(handler(message(5)), timeout=5)
    finally:
        await outage.aclose()
    assert isinstance(outcome, Done) and web.upserts == [(50, None)]
    events = [(e["event"], e.get("action")) for e in logs]
    assert events.index(("channel_synced", "created")) < events.index(("consumer_resumed", None))
    done = next(e for e in logs if e["event"] == "done")
    assert done["channels"] == {"web/50": "unchanged"}


class ProbeWaits:
    """Stands in for ``asyncio.sleep``: records each wait the pause's probe loop asks for and blocks it (the test
    reads what was asked, then ends the pause); a zero wait (a test yielding) passes through."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self.waiting = asyncio.Event()
        self._yield = asyncio.sleep

    async def __call__(self, delay: float, result: object = None) -> object:
        if delay <= 0:
            return await self._yield(0, result)
        self.asked.append(delay)
        self.waiting.set()
        await asyncio.Event().wait()
        return result


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [(503, "300", 300.0), (429, "120", 120.0), (503, "86400", pause.MAX_RETRY_AFTER_SECONDS)],
    ids=["503-five-minutes", "429-two-minutes", "503-a-day-bounded"],
)
async def test_a_long_retry_after_from_the_probe_pushes_the_next_probe_out(
    monkeypatch: pytest.MonkeyPatch, status: int, retry_after: str, expected: float
) -> None:
    # Kordiam says when to come back: probing it every second or minute until then only adds to its load.
    client = probing_client(httpx.Response(status, headers={"Retry-After": retry_after}, json={"status": status}))
    outage, waits = KordiamOutage(client, ReceiveGate()), ProbeWaits()
    monkeypatch.setattr(asyncio, "sleep", waits)
    try:
        with capture_logs() as logs:
            assert await outage.confirm(KordiamUnavailable("GET /elements/5: 503"))
            await waits.waiting.wait()
    finally:
        await outage.aclose()
    assert waits.asked == [expected] and outage.retry_in == expected
    (paused,) = [e for e in logs if e["event"] == "kordiam_unavailable"]
    assert paused["retry_in"] == expected


async def test_a_retry_after_shorter_than_the_back_off_does_not_shorten_it(monkeypatch: pytest.MonkeyPatch) -> None:
    client = probing_client(httpx.Response(503, headers={"Retry-After": "0.001"}, json={"status": 503}))
    outage, waits = KordiamOutage(client, ReceiveGate()), ProbeWaits()
    monkeypatch.setattr(asyncio, "sleep", waits)
    try:
        assert await outage.confirm(KordiamUnavailable("GET /elements/5: 503"))
        await waits.waiting.wait()
    finally:
        await outage.aclose()
    assert waits.asked == [pause.FIRST_RETRY_SECONDS]

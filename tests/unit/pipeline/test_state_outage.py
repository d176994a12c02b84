"""A state store that fails for every message pauses the worker (its fault, not the messages'); one that failed for
a single message does not."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from bridge.pipeline.handler import MessageHandler
from bridge.pipeline.state_outage import StateOutage
from bridge.queue.gate import ReceiveGate
from bridge.queue.outcome import Done, Retry
from bridge.queue.transport import QueueMessage
from tests.unit.fakes import FakeKordiam, MemoryStateStore, ScriptedChannel, element_body, publication, sync_engine

WEB = 99003


@pytest.fixture(autouse=True)
def quick_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bridge.pipeline.pause.FIRST_RETRY_SECONDS", 0.01)


def message(element_id: int) -> QueueMessage:
    return QueueMessage(f"m{element_id}", f"r{element_id}", f'{{"id": {element_id}}}', {}, 1, None, None)


def outages() -> float:
    return REGISTRY.get_sample_value("bridge_state_outages_total") or 0.0


def pipeline(
    state: MemoryStateStore, *element_ids: int, gate: ReceiveGate | None = None
) -> tuple[MessageHandler, StateOutage, ScriptedChannel]:
    kordiam = FakeKordiam()
    for element_id in element_ids:
        kordiam.elements[element_id] = element_body(element_id, publication(element_id * 10, WEB))
    web = ScriptedChannel("web")
    outage = StateOutage(state, gate or ReceiveGate())
    handler = MessageHandler(sync_engine(kordiam, state, [(web, WEB)]), state_outage=outage, tracing=False)
    return handler, outage, web


async def test_a_store_down_for_everyone_pauses_the_worker_and_the_message_runs_again_once_it_answers() -> None:
    state = MemoryStateStore()
    state.down = 3  # the message's lease, the probe that confirms the outage, the first probe of the pause
    gate = ReceiveGate()
    handler, outage, web = pipeline(state, 5, gate=gate)
    before = outages()
    try:
        with capture_logs() as logs:
            running = asyncio.ensure_future(handler(message(5)))
            while not outage.paused:
                await asyncio.sleep(0)
            assert gate.reason is not None
            assert gate.reason.startswith("the state store cannot serve the worker: StateUnavailable:")
            outcome = await asyncio.wait_for(running, timeout=5)
    finally:
        await outage.aclose()
    assert isinstance(outcome, Done)  # neither dead-lettered nor handed back: it waited in hand, then ran
    assert web.upserts == [(50, None)] and state.probes == 3 and gate.reason is None
    assert outages() - before == 1
    events = [e["event"] for e in logs]
    assert events.count("state_store_unavailable") == 1 and events.count("consumer_resumed") == 1
    unavailable = next(e for e in logs if e["event"] == "state_store_unavailable")
    assert unavailable["log_level"] == "error" and "disk I/O error" in unavailable["met_by"]


async def test_a_failure_the_probe_does_not_confirm_is_the_messages_own_and_retried() -> None:
    state = MemoryStateStore()
    state.down = 1  # only the message's own lease take
    handler, outage, web = pipeline(state, 5)
    try:
        outcome = await handler(message(5))
    finally:
        await outage.aclose()
    assert isinstance(outcome, Retry) and outcome.stage == "state" and outcome.error_class == "StateUnavailable"
    assert state.probes == 1 and not outage.paused and web.upserts == []


async def test_a_message_is_acknowledged_only_once_the_store_made_its_writes_durable() -> None:
    state = MemoryStateStore()
    state.unflushable = 1  # the fsync after the message's sync fails once; the probe passes
    handler, outage, web = pipeline(state, 5)
    try:
        failed = await handler(message(5))
        done = await handler(message(5))
    finally:
        await outage.aclose()
    # Not acknowledged while a crash of the host could still make the store forget its delivery (and the next
    # change of the element publish it again): retried, then done once a flush passed. The item was written once.
    assert isinstance(failed, Retry) and failed.stage == "state" and failed.error_class == "StateUnavailable"
    assert isinstance(done, Done) and state.flushes == 1 and web.upserts == [(50, None)]


async def test_messages_that_meet_the_outage_together_share_one_probe() -> None:
    state = MemoryStateStore()
    state.down = 3  # both messages' leases, then the one probe they share; the pause's first probe passes
    handler, outage, web = pipeline(state, 5, 6)
    try:
        outcomes = await asyncio.wait_for(asyncio.gather(handler(message(5)), handler(message(6))), timeout=5)
    finally:
        await outage.aclose()
    # A probe each would have let the second message's pass and retried that message instead of keeping it.
    assert all(isinstance(o, Done) for o in outcomes)
    assert state.probes == 2 and sorted(web.upserts) == [(50, None), (60, None)]


async def test_one_fault_healing_leaves_the_gate_closed_while_another_still_holds_it() -> None:
    gate = ReceiveGate()
    gate.close("kordiam-credentials", "Kordiam refuses the client credentials")
    gate.close("state-store", "the state store cannot serve the worker")
    assert gate.reason == "Kordiam refuses the client credentials; the state store cannot serve the worker"
    gate.open("state-store")
    assert gate.reason == "Kordiam refuses the client credentials" and not gate.closed_by("state-store")
    waiting = asyncio.ensure_future(gate.wait_open())
    await asyncio.sleep(0)
    assert not waiting.done()
    gate.open("kordiam-credentials")
    await asyncio.wait_for(waiting, timeout=1)
    assert gate.reason is None

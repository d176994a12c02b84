"""Channel isolation (circuit breaker, limits) and trace continuation."""

from __future__ import annotations

import asyncio
import time

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bridge.channels.base import ChannelResult, FindsItems
from bridge.channels.guard import BreakerState, CircuitBreaker, GuardedChannel, guarded
from bridge.errors import ChannelCircuitOpen, ChannelRejected, ChannelUnavailable
from bridge.kordiam.models import Element, Publication
from bridge.ops.tracing import message_span, xray_to_traceparent
from tests.unit.fakes import FindingChannel, ScriptedChannel

ELEMENT = Element.model_validate({"id": 1, "publications": [{"id": 2, "platform": 3}]})


class Flaky:
    name = "cms"
    element_scoped = False

    def __init__(self) -> None:
        self.calls = 0
        self.failing = True
        self.error: Exception = ChannelUnavailable("503")

    async def upsert(self, element: Element, publication: Publication, external_id: str | None) -> ChannelResult:
        self.calls += 1
        await asyncio.sleep(0)
        if self.failing:
            raise self.error
        return ChannelResult(external_id="x")

    async def delete(self, element_id: int, publication_id: int, external_id: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def upsert(channel: GuardedChannel) -> None:
    await channel.upsert(ELEMENT, ELEMENT.publications[0], None)


def breaker_state(channel: GuardedChannel) -> BreakerState:
    # A call, not the attribute: mypy would keep an asserted state narrowed across the awaits that change it.
    return channel.breaker.state


async def test_breaker_opens_fails_fast_probes_and_closes() -> None:
    inner = Flaky()
    guarded = GuardedChannel(inner, breaker_threshold=3, breaker_cooldown=0.2)
    for _ in range(3):
        with pytest.raises(ChannelUnavailable, match="503") as failed:
            await upsert(guarded)
        assert not isinstance(failed.value, ChannelCircuitOpen)  # the CMS's own failure: the message's to retry
    assert breaker_state(guarded) == BreakerState.OPEN
    # Open: fails fast without calling the CMS, saying when a probe may go (the engine parks the element).
    with pytest.raises(ChannelCircuitOpen, match="circuit open") as raised:
        await upsert(guarded)
    assert inner.calls == 3 and raised.value.retry_after is not None
    await asyncio.sleep(0.25)
    # Half-open: one probe; it fails, so the breaker opens again for twice as long.
    with pytest.raises(ChannelUnavailable, match="503"):
        await upsert(guarded)
    assert breaker_state(guarded) == BreakerState.OPEN and guarded.breaker.cooldown == pytest.approx(0.4)
    await asyncio.sleep(0.45)
    inner.failing = False
    await upsert(guarded)
    assert breaker_state(guarded) == BreakerState.CLOSED and inner.calls == 5


async def test_an_open_circuit_names_the_failure_that_opened_it() -> None:
    # The parked elements' reason (`parked list`, `element ID`) is the open circuit's message: "circuit open after
    # 2 failures" alone tells the operator at 3 a.m. nothing to fix (a read-only folder, a CMS answering 503).
    inner = Flaky()
    inner.error = ChannelUnavailable("folder /srv/print: cannot write 12-34: Operation not permitted (EPERM)")
    guarded = GuardedChannel(inner, breaker_threshold=2, breaker_cooldown=30)
    for _ in range(2):
        with pytest.raises(ChannelUnavailable):
            await upsert(guarded)
    with pytest.raises(ChannelCircuitOpen) as raised:
        await upsert(guarded)
    assert str(raised.value) == (
        "channel cms: circuit open after 2 failures; the last: "
        "folder /srv/print: cannot write 12-34: Operation not permitted (EPERM)"
    )


async def test_an_open_circuit_after_one_failure_says_one_failure() -> None:
    guarded = GuardedChannel(Flaky(), breaker_threshold=1, breaker_cooldown=30)
    with pytest.raises(ChannelUnavailable):
        await upsert(guarded)
    with pytest.raises(ChannelCircuitOpen, match=r"^channel cms: circuit open after 1 failure; the last: 503$"):
        await upsert(guarded)


async def test_guarded_keeps_the_search_exactly_when_the_adapter_has_it_behind_the_same_breaker() -> None:
    assert not isinstance(guarded(ScriptedChannel("web")), FindsItems)
    inner = FindingChannel("web")
    inner.items["web-1-2"] = [2]
    channel = guarded(inner, breaker_threshold=1, breaker_cooldown=10)
    assert isinstance(channel, FindsItems)
    assert [(item.publication_id, item.external_id) for item in await channel.find_items(1)] == [(2, "web-1-2")]
    inner.fail_find = ChannelUnavailable("503")
    with pytest.raises(ChannelUnavailable, match="503"):
        await channel.find_items(1)
    with pytest.raises(ChannelCircuitOpen, match="circuit open"):  # the search's failure opened the breaker
        await channel.delete(1, 2, "web-1-2")
    assert inner.finds == [1, 1] and inner.deletes == []


async def test_permanent_errors_do_not_trip_the_breaker() -> None:
    inner = Flaky()
    inner.error = ChannelRejected("400 bad story")
    guarded = GuardedChannel(inner, breaker_threshold=2, breaker_cooldown=10)
    for _ in range(5):
        with pytest.raises(ChannelRejected):
            await upsert(guarded)
    assert breaker_state(guarded) == BreakerState.CLOSED and inner.calls == 5


async def test_a_cancelled_call_frees_its_slot_and_its_probe_and_leaves_the_count_alone() -> None:
    inner = Flaky()
    guarded = GuardedChannel(inner, breaker_threshold=1, breaker_cooldown=0.05, max_in_flight=1)
    with pytest.raises(ChannelUnavailable, match="503"):
        await upsert(guarded)
    assert breaker_state(guarded) == BreakerState.OPEN
    await asyncio.sleep(0.06)
    hold = asyncio.Event()
    inner.failing = False
    real_upsert = inner.upsert

    async def hanging(element: Element, publication: Publication, external_id: str | None) -> ChannelResult:
        await hold.wait()
        return await real_upsert(element, publication, external_id)

    inner.upsert = hanging  # type: ignore[method-assign]
    probe = asyncio.create_task(upsert(guarded))
    await asyncio.sleep(0.01)  # the probe is in the channel, holding the one slot
    assert breaker_state(guarded) == BreakerState.HALF_OPEN
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    # The next call is the probe now (not failed fast) and gets the slot at once (not after MAX_QUEUE_WAIT).
    hold.set()
    await asyncio.wait_for(upsert(guarded), 1.0)
    assert breaker_state(guarded) == BreakerState.CLOSED and guarded.breaker.failures == 0


async def test_rate_limit_spaces_calls() -> None:
    inner = Flaky()
    inner.failing = False
    guarded = GuardedChannel(inner, rate_limit=20)
    started = time.monotonic()
    await asyncio.gather(*(upsert(guarded) for _ in range(30)))
    # 20 in the first burst, then 10 more at 20/s: at least about half a second. (A bound, not a benchmark.)
    assert time.monotonic() - started >= 0.4 and inner.calls == 30


def test_xray_header_becomes_a_traceparent() -> None:
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    assert xray_to_traceparent(header) == "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"
    assert xray_to_traceparent("garbage") is None


def test_message_span_continues_the_producer_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with message_span("m1", {"traceparent": parent}, None):
        pass
    with message_span("m2", {}, "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"):
        pass
    first, second = exporter.get_finished_spans()
    assert first.context is not None and first.parent is not None
    assert f"{first.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert f"{first.parent.span_id:016x}" == "b7ad6b7169203331"
    assert second.context is not None and f"{second.context.trace_id:032x}" == "5759e988bd862e3fe1be46a994272793"
    assert first.kind == trace.SpanKind.CONSUMER and first.attributes is not None
    assert first.attributes["messaging.message.id"] == "m1"


def test_a_call_failed_fast_while_the_probe_runs_says_so() -> None:
    breaker = CircuitBreaker("web", threshold=1, cooldown=3600.0)
    breaker.failed()
    with pytest.raises(ChannelCircuitOpen) as open_:
        breaker.before_call()
    assert not open_.value.probing  # open: the cool-down's end is when to come back
    breaker.cooldown = 0.0
    breaker.before_call()  # the probe goes
    with pytest.raises(ChannelCircuitOpen) as probing:
        breaker.before_call()
    assert probing.value.probing  # the probe's outcome, not a time, says when

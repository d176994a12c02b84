"""Assemble the worker from its parts: one HTTP client, one queue transport, one state store, per process."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import structlog

from bridge.channels import Channel, ChannelContext, ChannelType, build_channel
from bridge.channels.guard import guarded
from bridge.config import KORDIAM_FEEDBACK, Settings
from bridge.http import HttpClient
from bridge.kordiam.client import KordiamClient
from bridge.ops.heap import settle_after_startup
from bridge.ops.server import OpsServer
from bridge.pipeline.covering import FetchLedger
from bridge.pipeline.credentials import KordiamCredentials
from bridge.pipeline.handler import MessageHandler
from bridge.pipeline.kordiam_outage import KordiamOutage
from bridge.pipeline.parking import ChannelParking, ParkedRequeue
from bridge.pipeline.pause import WorkerPause
from bridge.pipeline.reconcile import Reconciler
from bridge.pipeline.routing import Route
from bridge.pipeline.state_outage import StateOutage
from bridge.pipeline.sync import SyncEngine
from bridge.queue import open_transport
from bridge.queue.consumer import Consumer, ConsumerSettings, poller_count
from bridge.queue.gate import ReceiveGate
from bridge.queue.slots import WorkSlots
from bridge.signals import two_steps
from bridge.state import StateStore, open_state_store

log = structlog.get_logger("bridge.worker")

STOMP_WAIT_SECONDS = 5


@dataclass(slots=True)
class Worker:
    consumer: Consumer
    ops: OpsServer | None
    reconciler: Reconciler | None
    requeue: ParkedRequeue


@dataclass(slots=True)
class Pipeline:
    """What turns one queue message into channel writes and feedback (everything but the queue itself)."""

    kordiam: KordiamClient
    channels: list[Channel]
    handler: MessageHandler
    credentials: KordiamCredentials
    # Every fault of the whole worker that pauses it (the credentials among them); each is closed with the worker.
    pauses: tuple[WorkerPause, ...]
    gate: ReceiveGate
    # The consumer's work slots: the engine takes one only for a notification that needs a fetch.
    slots: WorkSlots
    # The channels refusing the bridge's own credentials, whose elements the engine parks.
    parking: ChannelParking


def build_pipeline(
    settings: Settings,
    http: HttpClient,
    state: StateStore,
    *,
    channel_types: Mapping[str, ChannelType] | None = None,
) -> Pipeline:
    """The Kordiam client, the guarded channels and the sync engine behind a message handler.

    The caller owns ``http`` and ``state``, and closes the channels and the pauses (``aclose``) when it is done;
    ``gate`` is the consumer's: closed while a fault of the whole worker lasts (its Kordiam credentials refused,
    Kordiam or its state store failing for every message).
    ``channel_types``: the channel registry (default: the built-in ``bridge.channels.channel_types()``).
    """
    context = ChannelContext(http=http)
    channels: list[Channel] = []
    routes = []
    for index, channel_settings in enumerate(settings.channels):
        channel: Channel = guarded(
            build_channel(channel_settings, context, index=index, types=channel_types),
            breaker_threshold=channel_settings.breaker_threshold,
            breaker_cooldown=channel_settings.breaker_cooldown,
            max_in_flight=channel_settings.max_in_flight,
            rate_limit=channel_settings.rate_limit,
        )
        channels.append(channel)
        statuses = tuple(channel_settings.statuses) if channel_settings.statuses is not None else None
        routes.append(Route(channel, frozenset(channel_settings.platforms), statuses))
    kordiam = KordiamClient(
        http,
        base_url=settings.kordiam.base_url,
        client_id=settings.kordiam.client_id,
        client_secret=settings.kordiam.client_secret,
        timeout=settings.kordiam.timeout,
    )
    slots = WorkSlots(settings.queue.concurrency)
    # Kordiam's feedback is parked like a channel while its writes fail for every element (``SyncEngine``).
    parking = ChannelParking(state, [*(channel.name for channel in channels), KORDIAM_FEEDBACK])
    engine = SyncEngine(
        kordiam=kordiam,
        routes=routes,
        state=state,
        feedback=settings.feedback,
        main_channel=settings.main_channel,
        fetched=FetchLedger(clock_skew=settings.queue.clock_skew_seconds),
        slots=slots,
        parking=parking,
    )
    gate = ReceiveGate()
    credentials = KordiamCredentials(kordiam, gate)
    pauses = (credentials, KordiamOutage(kordiam, gate), StateOutage(state, gate))
    handler = MessageHandler(engine, credentials=credentials, kordiam_outage=pauses[1], state_outage=pauses[2])
    return Pipeline(kordiam, channels, handler, credentials, pauses, gate, slots, parking)


async def run_worker(
    settings: Settings,
    stop: asyncio.Event,
    *,
    serve_ops: bool = True,
    own_process: bool = False,
    channel_types: Mapping[str, ChannelType] | None = None,
) -> None:
    """Run until ``stop`` is set; then drain and close everything. Set during start-up, ``stop`` ends the start at
    once (``StopEndsStart``): nothing was received yet, so there is nothing to drain.

    ``own_process``: the worker is all this process runs (``kordiam-bridge run``), so what start-up built is
    frozen out of the garbage collector's way (see ``bridge.ops.heap``).
    """
    async with contextlib.AsyncExitStack() as stack:
        async with StopEndsStart(stop) as start:
            worker = await stack.enter_async_context(
                assemble(settings, serve_ops=serve_ops, channel_types=channel_types)
            )
        if start.stopped:
            log.info("stopped_during_start_up")
            return
        if own_process:
            settle_after_startup()
        background = [asyncio.create_task(worker.requeue.run(stop))]
        if worker.reconciler:
            background.append(asyncio.create_task(worker.reconciler.run(stop)))
        try:
            await worker.consumer.run(stop)
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)


class StopEndsStart:
    """Cancels the task inside it when ``stop`` is set, and ends that cancellation on the way out (``stopped``).

    Start-up waits on calls that may hang for their whole timeout: the first Kordiam token (``kordiam.timeout``,
    up to 120 s), the queue's connection and its description. SIGTERM or Ctrl-C meanwhile only set ``stop``,
    which nothing in start-up watches, so the worker used to wait them out (and then go on starting). The
    cancellation stops the call in flight (aiohttp drops the connection) and unwinds whatever start-up had opened.
    """

    __slots__ = ("_cancelling", "_stop", "_task", "_watch", "stopped")

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self._task: asyncio.Task[object] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._cancelling = 0
        self.stopped = False

    async def __aenter__(self) -> StopEndsStart:
        self._task = asyncio.current_task()
        assert self._task is not None
        self._cancelling = self._task.cancelling()
        self._watch = asyncio.get_running_loop().create_task(self._cancel_on_stop(), name="stop-ends-start")
        return self

    async def _cancel_on_stop(self) -> None:
        await self._stop.wait()
        assert self._task is not None
        self.stopped = True
        self._task.cancel()

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, _: object) -> bool:
        # Before any await: once the start is over a stop must no longer cancel this task.
        assert self._task is not None and self._watch is not None
        self._watch.cancel()
        if not self.stopped:
            await asyncio.gather(self._watch, return_exceptions=True)
            return False
        # The cancellation was this one's (delivered where the task waited): take it back, and end it here unless
        # the task was cancelled from outside as well (as asyncio.timeout does).
        return self._task.uncancel() <= self._cancelling and kind is asyncio.CancelledError


@contextlib.asynccontextmanager
async def assemble(
    settings: Settings, *, serve_ops: bool = True, channel_types: Mapping[str, ChannelType] | None = None
) -> AsyncIterator[Worker]:
    queue = settings.queue
    async with contextlib.AsyncExitStack() as stack:
        # The ops port first: a taken one stops the start before anything is opened, and /healthz answers while
        # the start waits (on the state store, Kordiam's token, the parked load, the queue), or a liveness probe
        # could kill a worker that is only starting.
        probes = ConsumerProbes()
        ops = None
        if serve_ops:
            ops = OpsServer(
                settings.ops.host,
                settings.ops.port,
                healthy=probes.healthy,
                ready=probes.ready,
                not_ready_reason=probes.not_ready_reason,
                not_ready_since=probes.not_ready_since,
            )
            await ops.start()
            stack.push_async_callback(ops.stop)
        # Connections: every in-flight message may talk to Kordiam and a channel at the same time.
        http = HttpClient(max_connections=max(10, queue.concurrency * 2), timeout=settings.kordiam.timeout)
        stack.push_async_callback(http.aclose)
        state: StateStore = await open_state_store(
            settings.state, default_region=settings.queue.region, check_access=True
        )
        stack.push_async_callback(state.close)
        pipeline = build_pipeline(settings, http, state, channel_types=channel_types)
        for channel in pipeline.channels:
            stack.push_async_callback(channel.aclose)
        for pause in pipeline.pauses:
            stack.push_async_callback(pause.aclose)
        # Refused credentials stop the start (exit 2); an unreachable Kordiam starts the worker paused.
        await pipeline.credentials.check_at_start()
        await pipeline.parking.load()
        transport = await stack.enter_async_context(open_transport(queue, pollers=poller_count(queue.handlers)))
        info = await transport.describe()
        info.check_attempts(queue.max_receive_count)
        # SQS moves a message to the DLQ on the receive after its maxReceiveCount-th; the worker dead-letters it
        # itself on that last receive, so the dead letter carries its reason.
        consumer_settings = ConsumerSettings(
            concurrency=queue.concurrency,
            read_ahead=queue.read_ahead,
            # ActiveMQ pushes messages into a local inbox: a short wait keeps the poll loop's health check fresh.
            wait_time_seconds=queue.wait_time_seconds if queue.backend == "sqs" else STOMP_WAIT_SECONDS,
            visibility_timeout=transport.lease_seconds,
            shutdown_timeout=queue.shutdown_timeout,
            max_receive_count=queue.max_receive_count or info.max_receive_count,
            queue_redrives=info.has_redrive,
            retry_base_seconds=queue.retry_base_seconds,
            retry_max_seconds=queue.retry_max_seconds,
        )
        consumer = Consumer(transport, pipeline.handler, consumer_settings, gate=pipeline.gate, slots=pipeline.slots)
        probes.consumer = consumer
        # Up, and consuming unless a fault of the whole worker holds it paused from the start (Kordiam not reachable):
        # the line says so, and `consumer_resumed` follows once it heals.
        log.info(
            "worker_ready",
            paused=pipeline.gate.reason,
            queue=queue.url,
            dlq=info.dlq_url,
            max_receive_count=consumer_settings.max_receive_count,
            channels=[c.name for c in pipeline.channels],
            main_channel=settings.main_channel,
            ops_port=ops.port if ops else None,
        )
        reconciler = None
        if settings.reconcile.enabled:
            reconciler = Reconciler(
                kordiam=pipeline.kordiam,
                state=state,
                transport=transport,
                interval=settings.reconcile.interval_seconds,
                lookback=settings.reconcile.lookback_seconds,
                lease_seconds=settings.state.lease_seconds,
            )
        requeue = ParkedRequeue(
            pipeline.parking,
            state=state,
            transport=transport,
            channels=[*(c.name for c in pipeline.channels), KORDIAM_FEEDBACK],
        )
        try:
            yield Worker(consumer, ops, reconciler, requeue)
        finally:
            if ops is not None:
                # Closed first once the worker has run: while the rest closes (its queue connection among it),
                # /readyz would answer `queue connection lost; reconnecting`.
                await ops.stop()


class ConsumerProbes:
    """What the ops port answers for the worker: alive and not ready (`not started`) until ``consumer`` is set at
    the end of the start, then the consumer's own answers."""

    __slots__ = ("consumer",)

    def __init__(self) -> None:
        self.consumer: Consumer | None = None

    def healthy(self) -> bool:
        return self.consumer is None or self.consumer.healthy()

    def ready(self) -> bool:
        return self.consumer is not None and self.consumer.ready()

    def not_ready_reason(self) -> str | None:
        return None if self.consumer is None else self.consumer.not_ready_reason()

    def not_ready_since(self) -> float | None:
        return None if self.consumer is None else self.consumer.not_ready_since()


def stop_on_signals(stop: asyncio.Event) -> contextlib.AbstractContextManager[None]:
    """While inside, SIGTERM (ECS, Kubernetes, docker stop), SIGINT (Ctrl-C) and SIGHUP start a graceful drain (set
    ``stop``); a second Ctrl-C exits at once (130): messages in flight come back when their visibility timeout ends.
    Python's own handlers, so that a loop stuck in a log write cannot hold them up (``bridge.signals.two_steps``).

    SIGHUP (a closed terminal, a ``kill -HUP`` meant as a reload) would otherwise kill the worker without its drain;
    the worker reads its settings only at start, so a stop (and a supervisor's restart) is its reload. A SIGHUP its
    starter ignores (``nohup``) stays ignored."""
    hangup = () if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN else (signal.SIGHUP,)
    return two_steps(
        (signal.SIGTERM, signal.SIGINT, *hangup),
        lambda sig: _request_shutdown(stop, sig),
        "kordiam-bridge: interrupted again, exiting now without draining",
    )


def _request_shutdown(stop: asyncio.Event, sig: signal.Signals) -> None:
    log.info("shutdown_requested", signal=sig.name)
    stop.set()

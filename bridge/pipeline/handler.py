"""One message through the pipeline, ending in an explicit outcome."""

from __future__ import annotations

import structlog

from bridge.errors import KordiamCredentialsRefused, KordiamUnavailable
from bridge.ops.tracing import message_span, tracing_configured
from bridge.pipeline.credentials import KordiamCredentials, UnconfirmedRefusal
from bridge.pipeline.fate import outcome_for, poisoned
from bridge.pipeline.kordiam_outage import KordiamOutage
from bridge.pipeline.notification import Notification, PoisonMessage, decode_notification, not_utf8
from bridge.pipeline.pause import WorkerPause
from bridge.pipeline.state_outage import StateOutage
from bridge.pipeline.sync import Failure, SyncEngine, SyncFailed, SyncReport
from bridge.queue.outcome import Done, Outcome
from bridge.queue.transport import QueueMessage
from bridge.state.base import StateUnavailable

log = structlog.get_logger("bridge.pipeline")


class MessageHandler:
    """Turns one queue message into one ``Outcome``: decode it, sync its element, decide its fate.

    Lifecycle: one per worker, called by the consumer once per message (concurrently for different messages);
    it binds the message's element to the log context and, when tracing is configured, wraps it in a span.

    Backpressure: none of its own; with ``credentials``, ``kordiam_outage`` and ``state_outage``, a message waits
    in hand while the worker's Kordiam credentials are refused, or Kordiam or the state store fails for every
    message, and runs again once the fault has healed: such a fault is the worker's, not the message's, so it
    spends no receive.

    Errors: it never raises for a failure of the message: an undecodable body is a ``DeadLetter`` and a failed
    sync becomes ``Retry`` or ``DeadLetter`` as ``bridge.pipeline.fate`` decides; what a partly failed sync did
    achieve is logged per channel. Anything it does raise is a bug, which the consumer retries.
    """

    def __init__(
        self,
        engine: SyncEngine,
        *,
        credentials: KordiamCredentials | None = None,
        kordiam_outage: KordiamOutage | None = None,
        state_outage: StateOutage | None = None,
        tracing: bool | None = None,
    ) -> None:
        self._engine = engine
        self._credentials = credentials
        self._kordiam_outage = kordiam_outage
        self._state_outage = state_outage
        # The pauses share the consumer's one gate: waiting on any waits until no fault of the worker holds it.
        self._pause: WorkerPause | None = credentials or kordiam_outage or state_outage
        # Decided once: looking the tracer provider up reads the environment, a cost on every message.
        self._tracing = tracing_configured() if tracing is None else tracing

    async def __call__(self, message: QueueMessage) -> Outcome:
        if not self._tracing:
            return await self._handle(message)
        with message_span(message.message_id, message.attributes, message.trace_header) as span:
            outcome = await self._handle(message)
            if span is not None:
                span.set_attribute("bridge.outcome", outcome.kind)
            return outcome

    async def _handle(self, message: QueueMessage) -> Outcome:
        try:
            if message.raw_body is not None:  # bytes the transport could not read as UTF-8
                raise not_utf8(message.raw_body)
            notification = decode_notification(message.body, message.attributes)
        except PoisonMessage as poison:
            return poisoned(poison)

        structlog.contextvars.bind_contextvars(
            # Not "event": structlog uses that key for the log line's own name.
            element_id=notification.element_id,
            kordiam_event=notification.event.value if notification.event else None,
        )

        try:
            report = await self._sync(notification, sent_at=message.sent_at, received_at=message.received_at)
        except SyncFailed as failed:
            _log_achieved(failed.report)
            return outcome_for(failed.failures, element_id=notification.element_id)

        changed = [a for a in report.actions if a.action.value != "unchanged"]
        log.info(
            "done",
            outcome="done",
            skipped=report.skipped,
            covered=report.covered or None,
            element_deleted=report.deleted_element or None,
            channels={f"{a.channel}/{a.publication_id}": a.action.value for a in report.actions} or None,
            feedback=report.feedback or None,
            changed=len(changed),
        )
        return Done()

    async def _sync(
        self, notification: Notification, *, sent_at: float | None, received_at: float | None
    ) -> SyncReport:
        while True:
            if self._pause is not None:
                await self._pause.wait_usable()
            try:
                return await self._engine.sync(notification, sent_at=sent_at, received_at=received_at)
            except SyncFailed as failed:
                if not await self._worker_fault(failed):
                    raise
                # What succeeded is recorded, and logged now: the next run redoes only the rest, and would show
                # these channels as unchanged.
                _log_achieved(failed.report)

    async def _worker_fault(self, failed: SyncFailed) -> bool:
        """True if a failure is the worker's own (it is then paused), so the message waits in hand for its fix."""
        for index, failure in enumerate(failed.failures):
            error = failure.error
            if isinstance(error, KordiamCredentialsRefused) and self._credentials is not None:
                # Confirmed by a probe: a 401 only one element's request meets is that message's own failure.
                if await self._credentials.confirm(error):
                    return True
                failed.failures[index] = Failure(failure.stage, UnconfirmedRefusal(error))
                continue
            outage = self._outage_behind(failure.stage, error)
            if outage is not None and await outage.confirm(error):
                return True
        return False

    def _outage_behind(self, stage: str, error: BaseException) -> WorkerPause | None:
        """The outage of the whole worker this failure may be part of (its probe decides), if any."""
        if stage == "state" and isinstance(error, StateUnavailable):
            return self._state_outage
        if stage in ("fetch", "feedback") and isinstance(error, KordiamUnavailable):
            return self._kordiam_outage
        return None


def _log_achieved(report: SyncReport) -> None:
    """What a failed sync did achieve, one line per channel write (the message's outcome line cannot show it)."""
    for action in report.actions:
        log.info(
            "channel_synced",
            channel=action.channel,
            publication_id=action.publication_id,
            action=action.action.value,
            external_id=action.external_id,
        )

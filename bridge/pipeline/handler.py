"""One message through the pipeline, ending in an explicit outcome."""

from __future__ import annotations

import structlog

from bridge.ops.tracing import message_span, tracing_configured
from bridge.pipeline.notification import PoisonMessage, decode_notification
from bridge.pipeline.sync import SyncEngine, SyncFailed
from bridge.queue.outcome import DeadLetter, Done, Outcome, Retry
from bridge.queue.transport import QueueMessage

log = structlog.get_logger("bridge.pipeline")


class MessageHandler:
    def __init__(self, engine: SyncEngine, *, tracing: bool | None = None) -> None:
        self._engine = engine
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
            notification = decode_notification(message.body, message.attributes)
        except PoisonMessage as poison:
            return DeadLetter(stage="decode", reason=poison.reason, error_class="PoisonMessage")

        structlog.contextvars.bind_contextvars(
            # Not "event": structlog uses that key for the log line's own name.
            element_id=notification.element_id,
            kordiam_event=notification.event.value if notification.event else None,
        )

        try:
            report = await self._engine.sync(notification)
        except SyncFailed as failed:
            first = failed.failures[0].error
            reason = str(failed)[:900]
            for action in failed.report.actions:
                log.info(
                    "channel_synced",
                    channel=action.channel,
                    publication_id=action.publication_id,
                    action=action.action.value,
                    external_id=action.external_id,
                )
            if failed.transient:
                return Retry(
                    delay=failed.retry_after,
                    stage=failed.stage,
                    reason=reason,
                    error_class=type(first).__name__,
                    element_id=notification.element_id,
                )
            return DeadLetter(
                stage=failed.stage, reason=reason, error_class=type(first).__name__, element_id=notification.element_id
            )

        changed = [a for a in report.actions if a.action.value != "unchanged"]
        log.info(
            "done",
            outcome="done",
            skipped=report.skipped,
            element_deleted=report.deleted_element or None,
            channels={f"{a.channel}/{a.publication_id}": a.action.value for a in report.actions} or None,
            feedback=report.feedback or None,
            changed=len(changed),
        )
        return Done()

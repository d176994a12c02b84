"""The operator operations on SQS queues: replay elements, inspect the dead-letter queue, redrive it.

Every operation is an async method of ``QueueAdmin`` and returns a dataclass of ``bridge.admin.results``;
``bridge.admin.rendering`` prints those. Nothing here parses arguments or prints on its own.

Rules the operations keep:

- **Peeking never consumes.** A listing receives with a short hold (``PEEK_HOLD_SECONDS``) so it can page past the
  first ten messages (with visibility 0, SQS hands back the same ten every time), then releases everything it saw
  with visibility 0. If the process dies mid-listing the hold simply expires.
- **Redrive never loses a message.** A message is deleted from the dead-letter queue only after SQS confirmed its
  copy on the main queue; a failed copy stays in the dead-letter queue and is released at the end of the run. The
  worst case (a crash between the copy and the delete) is a duplicate, which the worker handles idempotently.
- **One aiobotocore client** per command, the worker's own ``SqsTransport``.

Why one module of about 700 lines: peek, redrive and the move task share ``QueueAdmin``'s client and its held
receipts. It still calls the client itself; putting those calls behind the transport (a ``QueueAdmin``-style
Protocol in ``bridge.queue``) is the open part of issue 13 item 1, and will split this module with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from bridge.admin.progress import NoProgress, ProgressSink
from bridge.admin.results import (
    AdminError,
    DlqListing,
    DlqMessage,
    MovedMessage,
    RedriveFailure,
    RedriveResult,
    ReplayedElement,
    ReplayResult,
)
from bridge.config import QueueSettings, is_fifo_url
from bridge.errors import ConfigError
from bridge.pipeline.notification import PoisonMessage, decode_notification, resync_notification
from bridge.queue.dead_letter import (
    FAILURE_PREFIX,
    FIRST_FAILURE_AT,
    FIRST_FAILURE_SOURCE,
    REDRIVEN_FROM,
    FailureContext,
)
from bridge.queue.sqs import MAX_ATTRIBUTES, SqsTransport
from bridge.queue.transport import MAX_BATCH, QueueInfo

log = structlog.get_logger("bridge.admin")

log = structlog.get_logger("bridge.admin")

# How long a listing keeps the messages it has seen invisible before it releases them (visibility 0) itself.
PEEK_HOLD_SECONDS = 30
# Long-poll wait of one peek/redrive receive: long enough to ask every SQS server, short enough for a CLI.
RECEIVE_WAIT_SECONDS = 1
# How long a redrive run keeps the messages it skipped (filter) or could not copy, before releasing them itself.
REDRIVE_HOLD_SECONDS = 120
# Receives in a row that bring back only messages this run already handled: the queue holds nothing new.
MAX_STALE_RECEIVES = 3
# SendMessageBatch refuses requests over 256 KiB in total; stay below with room for the request's own overhead.
MAX_BATCH_PAYLOAD = 240 * 1024
MOVE_TASK_POLL_SECONDS = 1.0
MOVE_TASK_RUNNING = frozenset({"RUNNING", "CANCELLING"})


def error_text(error: Exception) -> str:
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        code = details.get("Code") or "error"
        message = str(details.get("Message") or "").strip()
        if message.startswith("<"):  # an HTML error page (e.g. an emulator's 500) says nothing useful
            message = ""
        return f"{code}: {message}" if message else str(code)
    return f"{type(error).__name__}: {error}"


def _entry_failure(failure: dict[str, Any]) -> str:
    """The reason of one failed entry of a batch call."""
    code = str(failure.get("Code") or "error")
    message = str(failure.get("Message") or "").strip()
    return f"{code}: {message}" if message else code


def _string_attributes(raw: dict[str, Any]) -> dict[str, str]:
    result: dict[str, str] = {}
    for name, value in raw.get("MessageAttributes", {}).items():
        if "StringValue" in value:
            result[name] = str(value["StringValue"])
        elif "BinaryValue" in value:
            result[name] = f"<binary, {len(value['BinaryValue'])} bytes>"
    return result


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def element_from_body(body: str, attributes: dict[str, str]) -> int | None:
    try:
        return decode_notification(body, attributes).element_id
    except PoisonMessage:
        return None
    except Exception:  # an odd body must never break a listing
        return None


def to_dlq_message(raw: dict[str, Any]) -> DlqMessage:
    """One received SQS message (``ReceiveMessage`` output) with its failure context decoded."""
    attributes = _string_attributes(raw)
    system = {str(k): str(v) for k, v in raw.get("Attributes", {}).items()}
    sent = _int_or_none(system.get("SentTimestamp"))
    failure = FailureContext.parse(attributes)
    body = str(raw.get("Body", ""))
    element_id = failure.element_id if failure and failure.element_id is not None else None
    if element_id is None:
        element_id = element_from_body(body, attributes)
    return DlqMessage(
        message_id=str(raw["MessageId"]),
        body=body,
        attributes=attributes,
        system_attributes=system,
        sent_at=datetime.fromtimestamp(sent / 1000, UTC) if sent is not None else None,
        receive_count=_int_or_none(system.get("ApproximateReceiveCount")) or 0,
        group_id=system.get("MessageGroupId"),
        element_id=element_id,
        failure=failure,
    )


def _chunks(items: Sequence[Any], size: int = MAX_BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _payload_size(entry: dict[str, Any]) -> int:
    size = len(str(entry["MessageBody"]).encode())
    for name, value in entry.get("MessageAttributes", {}).items():
        size += len(name.encode()) + len(str(value.get("DataType", "")).encode())
        size += len(str(value.get("StringValue", "")).encode()) + len(value.get("BinaryValue", b""))
    return size


def _size_batches(entries: Sequence[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Split send entries into batches of at most 10 that stay under the batch payload limit."""
    batch: list[dict[str, Any]] = []
    size = 0
    for entry in entries:
        entry_size = _payload_size(entry)
        if batch and (len(batch) >= MAX_BATCH or size + entry_size > MAX_BATCH_PAYLOAD):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += entry_size
    if batch:
        yield batch


@dataclass(frozen=True, slots=True)
class QueueDepth:
    visible: int
    in_flight: int
    delayed: int
    redrive_policy: str | None = None

    @property
    def total(self) -> int:
        return self.visible + self.in_flight + self.delayed


class QueueAdmin:
    """The operator operations over one open ``SqsTransport`` (and its single aiobotocore client)."""

    def __init__(self, transport: SqsTransport) -> None:
        self.transport = transport
        # SqsTransport has no public accessor for its client; the admin needs the batch and move-task calls.
        self.client: Any = transport.client
        self._info: QueueInfo | None = None

    @property
    def queue_url(self) -> str:
        return self.transport.url

    async def dead_letter_url(self) -> str:
        """``queue.dlq_url``, else the main queue's redrive target (``ConfigError`` if there is neither)."""
        if self._info is None:
            self._info = await self.transport.describe()
        return self._info.dlq_url

    # ------------------------------------------------------------------------------------------- low level

    async def depth(self, url: str) -> QueueDepth:
        try:
            response = await self.client.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                    "RedrivePolicy",
                ],
            )
        except (ClientError, BotoCoreError) as error:
            raise AdminError(f"cannot read the attributes of {url}: {error_text(error)}") from None
        attributes = response.get("Attributes", {})
        return QueueDepth(
            visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
            redrive_policy=attributes.get("RedrivePolicy"),
        )

    async def queue_arn(self, url: str) -> str:
        try:
            response = await self.client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        except (ClientError, BotoCoreError) as error:
            raise AdminError(f"cannot read the ARN of {url}: {error_text(error)}") from None
        return str(response["Attributes"]["QueueArn"])

    async def _receive(self, url: str, count: int, hold: int) -> list[dict[str, Any]]:
        try:
            response = await self.client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=max(1, min(MAX_BATCH, count)),
                WaitTimeSeconds=RECEIVE_WAIT_SECONDS,
                VisibilityTimeout=hold,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
        except (ClientError, BotoCoreError) as error:
            raise AdminError(f"cannot receive from {url}: {error_text(error)}") from None
        return list(response.get("Messages", []))

    async def _release(self, url: str, receipts: Iterable[str]) -> int:
        """Make held messages visible again at once; returns how many could not be released (they expire)."""
        handles = list(receipts)
        failed = 0
        for chunk in _chunks(handles):
            entries = [{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0} for i, h in enumerate(chunk)]
            try:
                response = await self.client.change_message_visibility_batch(QueueUrl=url, Entries=entries)
            except (ClientError, BotoCoreError) as error:
                log.warning("release_failed", queue=url, count=len(chunk), error=error_text(error))
                failed += len(chunk)
                continue
            failed += len(response.get("Failed", []))
        return failed

    async def _delete(self, url: str, receipts: dict[str, str]) -> list[str]:
        """Delete messages (id → receipt handle); returns the ids that were not deleted."""
        items = list(receipts.items())
        not_deleted: list[str] = []
        for chunk in _chunks(items):
            entries = [{"Id": str(i), "ReceiptHandle": handle} for i, (_, handle) in enumerate(chunk)]
            try:
                response = await self.client.delete_message_batch(QueueUrl=url, Entries=entries)
            except (ClientError, BotoCoreError) as error:
                log.warning("dlq_delete_failed", queue=url, count=len(chunk), error=error_text(error))
                not_deleted.extend(message_id for message_id, _ in chunk)
                continue
            not_deleted.extend(chunk[int(f["Id"])][0] for f in response.get("Failed", []))
        return not_deleted

    async def peek(
        self,
        url: str,
        *,
        limit: int,
        hold: int = PEEK_HOLD_SECONDS,
        until: Callable[[DlqMessage], bool] | None = None,
        progress: ProgressSink | None = None,
    ) -> tuple[list[DlqMessage], bool]:
        """Up to ``limit`` distinct messages without consuming them; stops early once ``until`` matches one.

        Returns the messages and whether the scan stopped before the queue ran dry (limit reached or found).
        Every message seen is released with visibility 0 before returning, also on errors and cancellation.
        """
        seen: dict[str, DlqMessage] = {}
        receipts: dict[str, str] = {}
        stale = 0
        stopped_early = False
        try:
            while len(seen) < limit:
                batch = await self._receive(url, limit - len(seen), hold)
                if not batch:
                    break
                fresh = 0
                # Every receipt first: a message after the one searched for must be released too.
                receipts.update((str(raw["MessageId"]), str(raw["ReceiptHandle"])) for raw in batch)
                for raw in batch:
                    if raw["MessageId"] in seen:
                        continue
                    fresh += 1
                    message = to_dlq_message(raw)
                    seen[message.message_id] = message
                    if progress is not None:
                        progress.advance()
                    if until is not None and until(message):
                        stopped_early = True
                        break
                if stopped_early:
                    break
                stale = 0 if fresh else stale + 1
                if stale >= MAX_STALE_RECEIVES:
                    break
            else:
                stopped_early = True
        finally:
            await asyncio.shield(self._release(url, receipts.values()))
        return list(seen.values()), stopped_early

    # ------------------------------------------------------------------------------------------- replay

    async def replay(
        self,
        element_ids: Sequence[int],
        *,
        event: str = "updated",
        force: bool = False,
        progress: ProgressSink | None = None,
    ) -> ReplayResult:
        """Enqueue a fresh notification per element, as Kordiam would (``{"id": N, "event": …}``).

        The worker then writes a channel only where the element changed since it last wrote it (else its outcome is
        ``unchanged``); ``force`` marks the notifications so that it rewrites every channel of the element.
        """
        ids = replay_ids(element_ids)
        fifo = is_fifo_url(self.queue_url)
        progress = progress or NoProgress()
        progress.start(f"replaying {len(ids)} element(s)", len(ids))
        results: list[ReplayedElement] = []
        for chunk in _chunks(ids):
            entries: list[dict[str, Any]] = []
            for index, element_id in enumerate(chunk):
                body, attributes = resync_notification(element_id, source="replay", event=event, force=force)
                entry: dict[str, Any] = {
                    "Id": str(index),
                    "MessageBody": body,
                    "MessageAttributes": {
                        name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
                    },
                }
                if fifo:
                    entry["MessageGroupId"] = str(element_id)
                    entry["MessageDeduplicationId"] = uuid.uuid4().hex
                entries.append(entry)
            try:
                response = await self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except (ClientError, BotoCoreError) as error:
                reason = error_text(error)
                results.extend(ReplayedElement(element_id, None, reason) for element_id in chunk)
                progress.advance(len(chunk))
                continue
            sent = {int(s["Id"]): str(s["MessageId"]) for s in response.get("Successful", [])}
            failed = {
                int(f["Id"]): f"{f.get('Code', 'error')}: {f.get('Message', '')}" for f in response.get("Failed", [])
            }
            for index, element_id in enumerate(chunk):
                if index in sent:
                    results.append(ReplayedElement(element_id, sent[index]))
                else:
                    results.append(ReplayedElement(element_id, None, failed.get(index, "not acknowledged by SQS")))
            progress.advance(len(chunk))
        log.info("replayed", queue=self.queue_url, sent=sum(r.error is None for r in results), total=len(results))
        return ReplayResult(self.queue_url, results)

    # ------------------------------------------------------------------------------------------- dlq list/show

    async def dlq_list(self, *, limit: int = 50, progress: ProgressSink | None = None) -> DlqListing:
        """Up to ``limit`` dead letters, oldest first, without consuming any."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        url = await self.dead_letter_url()
        depth = await self.depth(url)
        if progress is not None:
            progress.start("reading the dead-letter queue", min(limit, depth.visible))
        messages, _ = await self.peek(url, limit=limit, progress=progress)
        messages.sort(key=lambda m: (m.sent_at is None, m.sent_at or datetime.min.replace(tzinfo=UTC)))
        truncated = len(messages) < depth.visible
        return DlqListing(url, messages, depth.visible, depth.in_flight, truncated)

    async def dlq_show(
        self, message_id: str, *, scan_limit: int = 1000, progress: ProgressSink | None = None
    ) -> DlqMessage | None:
        """The dead letter with this id (its DLQ id or ``failure.source_message_id``); None if not found."""
        url = await self.dead_letter_url()

        def matches(message: DlqMessage) -> bool:
            source = message.failure.source_message_id if message.failure else None
            return message_id in (message.message_id, source)

        if progress is not None:
            depth = await self.depth(url)
            progress.start("searching the dead-letter queue", min(scan_limit, depth.visible))
        messages, _ = await self.peek(url, limit=scan_limit, until=matches, progress=progress)
        return next((m for m in messages if matches(m)), None)

    # ------------------------------------------------------------------------------------------- redrive

    async def redrive(
        self,
        *,
        limit: int | None = None,
        element_ids: Iterable[int] | None = None,
        native: bool | None = None,
        progress: ProgressSink | None = None,
        hold: int = REDRIVE_HOLD_SECONDS,
        poll_interval: float = MOVE_TASK_POLL_SECONDS,
        stop: asyncio.Event | None = None,
    ) -> RedriveResult:
        """Move dead letters back to the main queue without losing any.

        ``native=None`` uses SQS's ``StartMessageMoveTask`` when there is no filter and no limit and the endpoint
        supports it, else the manual copy; ``native=True`` insists on the move task, ``False`` never uses it.
        The move task moves messages verbatim (``failure.*`` attributes stay); the manual copy drops them and adds
        ``redriven_from`` and the first failure's source message id and time (``first_failure.*``).

        The manual copy moves only what was in the dead-letter queue when it started: a dead letter sent later, or
        one that is this run's own copy failing again, stays for a later run (``arrived``), so a run ends even
        while a worker dead-letters every copy again. ``stop`` (Ctrl-C) ends either method at its next step with
        a partial result (``interrupted``).
        """
        stop = stop or asyncio.Event()
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1")
        wanted = frozenset(element_ids or ())
        dlq_url = await self.dead_letter_url()
        progress = progress or NoProgress()
        fallback: str | None = None
        if native is not False:
            if limit is not None or wanted:
                if native:
                    raise ValueError("the SQS move task moves everything: it takes neither a limit nor elements")
                fallback = "a limit or an element filter needs the manual copy"
            else:
                try:
                    return await self._redrive_move_task(dlq_url, progress, poll_interval, stop)
                except _MoveTaskUnavailable as unavailable:
                    if native:
                        raise AdminError(f"StartMessageMoveTask is not available: {unavailable}") from None
                    fallback = f"StartMessageMoveTask unavailable ({unavailable})"
                    log.info("move_task_unavailable", reason=str(unavailable), using="manual copy")
        result = await self._redrive_manual(
            dlq_url, limit=limit, wanted=wanted, progress=progress, hold=hold, stop=stop
        )
        result.fallback_reason = fallback
        return result

    async def _redrive_move_task(
        self, dlq_url: str, progress: ProgressSink, poll_interval: float, stop: asyncio.Event
    ) -> RedriveResult:
        source_arn = await self.queue_arn(dlq_url)
        destination_arn = await self.queue_arn(self.queue_url)
        try:
            started = await self.client.start_message_move_task(SourceArn=source_arn, DestinationArn=destination_arn)
        except (ClientError, BotoCoreError, AttributeError) as error:
            raise _MoveTaskUnavailable(error_text(error)) from None
        handle = str(started.get("TaskHandle", ""))
        log.info("move_task_started", source=dlq_url, destination=self.queue_url, task=handle)
        progress.start("moving dead letters (SQS move task)", None)
        result = RedriveResult("move-task", dlq_url, self.queue_url, task_status="RUNNING", moved_count=0)
        try:
            while True:
                task = await self._move_task_status(source_arn, handle)
                if task is not None:
                    moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
                    total = task.get("ApproximateNumberOfMessagesToMove")
                    progress.update(moved, int(total) if total is not None else None)
                    result.moved_count = moved
                    result.task_status = str(task.get("Status", "UNKNOWN"))
                    if result.task_status not in MOVE_TASK_RUNNING:
                        if result.task_status == "FAILED":
                            result.stopped_reason = str(task.get("FailureReason", "the move task failed"))
                        break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll_interval)
                if stop.is_set():
                    # What the task moved stays moved, the rest stays in the dead-letter queue.
                    result.interrupted = True
                    with contextlib.suppress(ClientError, BotoCoreError):
                        await self.client.cancel_message_move_task(TaskHandle=handle)
                    break
        except asyncio.CancelledError:
            # Ctrl-C: stop the task too; what it moved stays moved, the rest stays in the dead-letter queue.
            with contextlib.suppress(ClientError, BotoCoreError):
                await asyncio.shield(self.client.cancel_message_move_task(TaskHandle=handle))
            raise
        result.remaining = (await self.depth(dlq_url)).total
        return result

    async def _move_task_status(self, source_arn: str, handle: str) -> dict[str, Any] | None:
        try:
            response = await self.client.list_message_move_tasks(SourceArn=source_arn, MaxResults=10)
        except (ClientError, BotoCoreError) as error:
            raise AdminError(f"cannot follow the move task: {error_text(error)}") from None
        tasks: list[dict[str, Any]] = list(response.get("Results", []))
        # Only a running task carries its handle; the newest task comes first.
        for task in tasks:
            if task.get("TaskHandle") == handle:
                return task
        return tasks[0] if tasks else None

    async def _redrive_manual(
        self,
        dlq_url: str,
        *,
        limit: int | None,
        wanted: frozenset[int],
        progress: ProgressSink,
        hold: int,
        stop: asyncio.Event,
    ) -> RedriveResult:
        result = RedriveResult("manual", dlq_url, self.queue_url)
        # SentTimestamp is the SQS server's clock; this run's own copies coming back are also recognised by their
        # `redriven_from`, whatever the clocks say.
        started_ms = int(time.time() * 1000)
        depth = await self.depth(dlq_url)
        total = depth.visible if limit is None else min(limit, depth.visible)
        progress.start("redriving dead letters", total if not wanted else depth.visible)
        handled: set[str] = set()
        # Held by this run and to be released at the end: skipped by the filter or the limit, or not copied.
        held: dict[str, str] = {}
        # Copied to the main queue; deleted from the dead-letter queue only after that copy was confirmed.
        copied_not_deleted: dict[str, str] = {}
        moved_ids: set[str] = set()
        stale = 0
        try:
            while (limit is None or len(result.moved) < limit) and not stop.is_set():
                count = MAX_BATCH if wanted or limit is None else limit - len(result.moved)
                batch = await self._receive(dlq_url, count, hold)
                if not batch:
                    break
                fresh: list[dict[str, Any]] = []
                for raw in batch:
                    message_id = str(raw["MessageId"])
                    if message_id in copied_not_deleted:
                        copied_not_deleted[message_id] = str(raw["ReceiptHandle"])  # retry the delete only
                    elif message_id in handled:
                        held[message_id] = str(raw["ReceiptHandle"])
                    elif _arrived_during_run(raw, started_ms, moved_ids):
                        handled.add(message_id)
                        held[message_id] = str(raw["ReceiptHandle"])
                        result.arrived += 1
                    else:
                        fresh.append(raw)
                if copied_not_deleted:
                    await self._finish_deletes(dlq_url, copied_not_deleted, result)
                stale = 0 if fresh else stale + 1
                if stale >= MAX_STALE_RECEIVES:
                    break
                to_move: list[tuple[dict[str, Any], DlqMessage]] = []
                for raw in fresh:
                    message = to_dlq_message(raw)
                    handled.add(message.message_id)
                    over_limit = limit is not None and len(result.moved) + len(to_move) >= limit
                    if (wanted and message.element_id not in wanted) or over_limit:
                        held[message.message_id] = str(raw["ReceiptHandle"])
                        result.skipped += 1
                        if wanted:
                            progress.advance()
                        continue
                    to_move.append((raw, message))
                if to_move:
                    keep_going = await self._copy_batch(dlq_url, to_move, result, held, copied_not_deleted)
                    moved_ids.update(m.dlq_message_id for m in result.moved)
                    progress.advance(len(to_move))
                    if not keep_going:
                        break
        finally:
            # Also on errors and Ctrl-C: delete what was copied, release what stays.
            await asyncio.shield(self._settle(dlq_url, result, held, copied_not_deleted))
        result.interrupted = stop.is_set()
        result.remaining = (await self.depth(dlq_url)).total
        log.info(
            "redriven",
            arrived=result.arrived,
            interrupted=result.interrupted,
            source=dlq_url,
            destination=self.queue_url,
            moved=len(result.moved),
            failed=len(result.failed),
            skipped=result.skipped,
            duplicated=len(result.duplicated),
        )
        return result

    async def _copy_batch(
        self,
        dlq_url: str,
        to_move: list[tuple[dict[str, Any], DlqMessage]],
        result: RedriveResult,
        held: dict[str, str],
        copied_not_deleted: dict[str, str],
    ) -> bool:
        """Copy messages to the main queue, then delete the confirmed copies; False if the run must stop."""
        by_entry: dict[str, tuple[dict[str, Any], DlqMessage]] = {}
        entries: list[dict[str, Any]] = []
        for index, (raw, message) in enumerate(to_move):
            entry = self._copy_entry(str(index), raw, message)
            by_entry[entry["Id"]] = (raw, message)
            entries.append(entry)
        keep_going = True
        for batch in _size_batches(entries):
            try:
                response = await self.client.send_message_batch(QueueUrl=self.queue_url, Entries=batch)
            except (ClientError, BotoCoreError) as error:
                # The whole batch failed (queue gone, endpoint down, access denied): nothing was copied, nothing is
                # deleted; the rest of the run would fail the same way.
                reason = error_text(error)
                for entry in batch:
                    raw, message = by_entry[entry["Id"]]
                    held[message.message_id] = str(raw["ReceiptHandle"])
                    result.failed.append(RedriveFailure(message.message_id, reason))
                result.stopped_reason = f"sending to {self.queue_url} failed: {reason}"
                log.warning("redrive_send_failed", destination=self.queue_url, count=len(batch), error=reason)
                keep_going = False
                continue
            for success in response.get("Successful", []):
                raw, message = by_entry[str(success["Id"])]
                copied_not_deleted[message.message_id] = str(raw["ReceiptHandle"])
                result.moved.append(MovedMessage(message.message_id, str(success["MessageId"]), message.element_id))
            for failure in response.get("Failed", []):
                raw, message = by_entry[str(failure["Id"])]
                held[message.message_id] = str(raw["ReceiptHandle"])
                result.failed.append(RedriveFailure(message.message_id, _entry_failure(failure)))
            acknowledged = {str(s["Id"]) for s in response.get("Successful", [])} | {
                str(f["Id"]) for f in response.get("Failed", [])
            }
            for entry in batch:
                if entry["Id"] not in acknowledged:  # neither copied nor refused: treat as not copied
                    raw, message = by_entry[entry["Id"]]
                    held[message.message_id] = str(raw["ReceiptHandle"])
                    result.failed.append(RedriveFailure(message.message_id, "not acknowledged by SQS"))
        await self._finish_deletes(dlq_url, copied_not_deleted, result)
        return keep_going

    def _copy_entry(self, entry_id: str, raw: dict[str, Any], message: DlqMessage) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        for name, value in raw.get("MessageAttributes", {}).items():
            if name.startswith(FAILURE_PREFIX) or name == REDRIVEN_FROM:
                continue
            kept = {k: value[k] for k in ("DataType", "StringValue", "BinaryValue") if k in value}
            if "StringValue" in kept or "BinaryValue" in kept:
                attributes[name] = kept
        failure = message.failure
        first_source = (failure.source_message_id if failure else None) or message.message_id
        first_at = (failure.first_failed_at if failure else None) or (
            message.sent_at.isoformat(timespec="milliseconds") if message.sent_at else None
        )
        carried = {REDRIVEN_FROM: message.message_id, FIRST_FAILURE_SOURCE: first_source, FIRST_FAILURE_AT: first_at}
        for name, value in carried.items():
            if value and len(attributes) < MAX_ATTRIBUTES:
                attributes[name] = {"DataType": "String", "StringValue": value}
        entry: dict[str, Any] = {"Id": entry_id, "MessageBody": message.body, "MessageAttributes": attributes}
        if is_fifo_url(self.queue_url):
            group = message.group_id or (str(message.element_id) if message.element_id is not None else "redrive")
            entry["MessageGroupId"] = group
            # Unique: a deterministic id could make SQS swallow a message that failed again within 5 minutes.
            entry["MessageDeduplicationId"] = uuid.uuid4().hex
        return entry

    async def _finish_deletes(self, dlq_url: str, copied_not_deleted: dict[str, str], result: RedriveResult) -> None:
        not_deleted = set(await self._delete(dlq_url, copied_not_deleted))
        for message_id in list(copied_not_deleted):
            if message_id not in not_deleted:
                del copied_not_deleted[message_id]
                if message_id in result.duplicated:
                    result.duplicated.remove(message_id)
            elif message_id not in result.duplicated:
                result.duplicated.append(message_id)

    async def _settle(
        self, dlq_url: str, result: RedriveResult, held: dict[str, str], copied_not_deleted: dict[str, str]
    ) -> None:
        try:
            if copied_not_deleted:
                await self._finish_deletes(dlq_url, copied_not_deleted, result)
            unreleased = await self._release(dlq_url, held.values())
            if unreleased:
                log.info("redrive_release_pending", count=unreleased, visible_again_in=REDRIVE_HOLD_SECONDS)
        except Exception as error:  # settling is best effort: held messages become visible when their hold expires
            log.warning("redrive_settle_failed", error=error_text(error))


class _MoveTaskUnavailable(Exception):
    pass


def _arrived_during_run(raw: dict[str, Any], started_ms: int, moved_ids: set[str]) -> bool:
    """A dead letter this run must leave alone: sent after it started, or its own copy that failed again."""
    redriven_from = raw.get("MessageAttributes", {}).get(REDRIVEN_FROM, {}).get("StringValue")
    if redriven_from in moved_ids:
        return True
    sent = _int_or_none(str(raw.get("Attributes", {}).get("SentTimestamp", "")))
    return sent is not None and sent > started_ms


@contextlib.asynccontextmanager
async def queue_admin(settings: QueueSettings) -> AsyncIterator[QueueAdmin]:
    """One ``QueueAdmin`` on one aiobotocore client for the duration of a command."""
    if settings.backend != "sqs":
        raise ConfigError(
            "queue.url",
            "these operations work on SQS queues; a stomp:// queue has its own (bridge.admin.stomp)",
        )
    async with SqsTransport.connect(settings) as transport:
        yield QueueAdmin(transport)


def replay_ids(element_ids: Sequence[int]) -> list[int]:
    ids = list(dict.fromkeys(element_ids))
    for element_id in ids:
        if isinstance(element_id, bool) or not isinstance(element_id, int) or element_id <= 0:
            raise ValueError(f"element ids are positive integers, not {element_id!r}")
    return ids

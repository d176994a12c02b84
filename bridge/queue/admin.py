"""Operator operations on the queues: replay elements, inspect the dead-letter queue, redrive it.

Every operation is async, takes the ``[queue]`` settings (or an open ``QueueAdmin``) and returns a dataclass; the
``render_*`` functions at the bottom print those with rich. Nothing here parses arguments or prints on its own.

Rules the operations keep:

- **Peeking never consumes.** A listing receives with a short hold (``PEEK_HOLD_SECONDS``) so it can page past the
  first ten messages (with visibility 0, SQS hands back the same ten every time), then releases everything it saw
  with visibility 0. If the process dies mid-listing the hold simply expires.
- **Redrive never loses a message.** A message is deleted from the dead-letter queue only after SQS confirmed its
  copy on the main queue; a failed copy stays in the dead-letter queue and is released at the end of the run. The
  worst case (a crash between the copy and the delete) is a duplicate, which the worker handles idempotently.
- **One aiobotocore client** per command, the worker's own ``SqsTransport``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax
from rich.table import Table

from bridge.config import QueueSettings
from bridge.errors import BridgeError, ConfigError
from bridge.pipeline.notification import PoisonMessage, decode_notification, resync_notification
from bridge.queue import open_transport
from bridge.queue.sqs import MAX_ATTRIBUTES, SqsTransport
from bridge.queue.transport import FIRST_FAILURE_AT, FIRST_FAILURE_SOURCE, MAX_BATCH, REDRIVEN_FROM, QueueInfo

log = structlog.get_logger("bridge.admin")

FAILURE_PREFIX = "failure."
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


class AdminError(BridgeError):
    """An operator command could not do its job (queue missing, endpoint unreachable, access denied)."""


# --------------------------------------------------------------------------------------------------- progress


class ProgressSink(Protocol):
    """Where long operations report progress; ``RichProgress`` draws a bar, ``None`` reports nothing."""

    def start(self, description: str, total: int | None) -> None: ...

    def advance(self, amount: int = 1) -> None: ...

    def update(self, completed: int, total: int | None = None) -> None: ...


class _NoProgress:
    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass

    def update(self, completed: int, total: int | None = None) -> None:
        pass


class RichProgress:
    """A rich progress bar (on stderr, so ``--json`` output on stdout stays clean)."""

    def __init__(self, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._progress.stop()

    def start(self, description: str, total: int | None) -> None:
        if self._task is not None:
            self._progress.update(self._task, visible=False)
        self._task = self._progress.add_task(description, total=total)

    def advance(self, amount: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, amount)

    def update(self, completed: int, total: int | None = None) -> None:
        if self._task is not None:
            if total is not None:
                self._progress.update(self._task, completed=completed, total=total)
            else:
                self._progress.update(self._task, completed=completed)


@contextlib.contextmanager
def progress_bar(enabled: bool | None = None, console: Console | None = None) -> Iterator[ProgressSink]:
    """A rich bar when ``enabled`` (default: when stderr is a terminal), else a sink that reports nothing."""
    console = console or Console(stderr=True)
    if enabled is None:
        enabled = console.is_terminal
    if not enabled:
        yield _NoProgress()
        return
    with RichProgress(console) as bar:
        yield bar


# --------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class FailureContext:
    """The ``failure.*`` attributes ``SqsTransport.send_dead_letter`` puts on a dead letter."""

    stage: str | None
    reason: str | None
    error_class: str | None
    attempts: int | None
    element_id: int | None
    # The main-queue message id and time of the first failure; kept when a redriven copy fails again.
    source_message_id: str | None
    first_failed_at: str | None = None


@dataclass(frozen=True, slots=True)
class DlqMessage:
    message_id: str
    body: str
    # Message attributes as sent (binary values shown as ``<binary, N bytes>``).
    attributes: dict[str, str]
    # SQS system attributes (SentTimestamp, ApproximateReceiveCount, MessageGroupId, …).
    system_attributes: dict[str, str]
    sent_at: datetime | None
    receive_count: int
    group_id: str | None
    element_id: int | None
    # None when SQS moved the message itself (maxReceiveCount) rather than the worker with its context.
    failure: FailureContext | None

    def age_seconds(self, now: datetime | None = None) -> float | None:
        if self.sent_at is None:
            return None
        return max(0.0, ((now or datetime.now(UTC)) - self.sent_at).total_seconds())

    @property
    def body_json(self) -> Any | None:
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            return None


@dataclass(frozen=True, slots=True)
class DlqListing:
    queue_url: str
    messages: list[DlqMessage]
    # ApproximateNumberOfMessages (visible) and …NotVisible when the listing started.
    approximate_visible: int
    approximate_in_flight: int
    truncated: bool


@dataclass(frozen=True, slots=True)
class ReplayedElement:
    element_id: int
    message_id: str | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ReplayResult:
    queue_url: str
    elements: list[ReplayedElement]

    @property
    def sent(self) -> int:
        return sum(e.error is None for e in self.elements)

    @property
    def failed(self) -> int:
        return sum(e.error is not None for e in self.elements)


@dataclass(frozen=True, slots=True)
class MovedMessage:
    dlq_message_id: str
    new_message_id: str
    element_id: int | None


@dataclass(frozen=True, slots=True)
class RedriveFailure:
    dlq_message_id: str
    reason: str


@dataclass(slots=True)
class RedriveResult:
    method: Literal["move-task", "manual"]
    source_url: str
    destination_url: str
    moved: list[MovedMessage] = field(default_factory=list)
    # Copies SQS refused: the message stays in the dead-letter queue.
    failed: list[RedriveFailure] = field(default_factory=list)
    # Messages the element filter (or the limit) left in the dead-letter queue.
    skipped: int = 0
    # Dead letters that arrived after the run started (e.g. a redriven message that failed again): left for a
    # later run, so that a run ends even while a worker keeps dead-lettering what it moves.
    arrived: int = 0
    # Ctrl-C stopped the run: the summary is partial.
    interrupted: bool = False
    # Copied, but the delete from the dead-letter queue failed: the message exists twice (never zero times).
    duplicated: list[str] = field(default_factory=list)
    # Approximate dead-letter depth (visible + in flight) after the run.
    remaining: int | None = None
    # Why the native move task was not used, when it was not.
    fallback_reason: str | None = None
    # Why the run stopped before the queue was empty (a failed batch), if it did.
    stopped_reason: str | None = None
    # Move task: SQS's own count (approximate) and final status.
    moved_count: int | None = None
    task_status: str | None = None

    @property
    def moved_total(self) -> int:
        return self.moved_count if self.moved_count is not None else len(self.moved)

    @property
    def ok(self) -> bool:
        return (
            not self.failed
            and self.stopped_reason is None
            and not self.interrupted
            and self.task_status in (None, "COMPLETED")
        )


def to_jsonable(value: Any) -> Any:
    """A result dataclass as plain JSON types (datetimes as ISO 8601)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for name in ("sent", "failed", "moved_total", "ok", "problems"):
            if name not in data and isinstance(getattr(type(value), name, None), property):
                data[name] = to_jsonable(getattr(value, name))
        return data
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    return value


def to_json(value: Any) -> str:
    return json.dumps(to_jsonable(value), indent=2, sort_keys=False)


# --------------------------------------------------------------------------------------------------- operations


def _error_text(error: Exception) -> str:
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


def _element_from_body(body: str, attributes: dict[str, str]) -> int | None:
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
    failure: FailureContext | None = None
    if any(name.startswith(FAILURE_PREFIX) for name in attributes):
        failure = FailureContext(
            stage=attributes.get("failure.stage"),
            reason=attributes.get("failure.reason"),
            error_class=attributes.get("failure.error_class"),
            attempts=_int_or_none(attributes.get("failure.attempts")),
            element_id=_int_or_none(attributes.get("failure.element_id")),
            source_message_id=attributes.get("failure.source_message_id"),
            first_failed_at=attributes.get("failure.first_failed_at"),
        )
    body = str(raw.get("Body", ""))
    element_id = failure.element_id if failure and failure.element_id is not None else None
    if element_id is None:
        element_id = _element_from_body(body, attributes)
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
            raise AdminError(f"cannot read the attributes of {url}: {_error_text(error)}") from None
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
            raise AdminError(f"cannot read the ARN of {url}: {_error_text(error)}") from None
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
            raise AdminError(f"cannot receive from {url}: {_error_text(error)}") from None
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
                log.warning("release_failed", queue=url, count=len(chunk), error=_error_text(error))
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
                log.warning("dlq_delete_failed", queue=url, count=len(chunk), error=_error_text(error))
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
        ids = _replay_ids(element_ids)
        fifo = self.queue_url.endswith(".fifo")
        progress = progress or _NoProgress()
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
                reason = _error_text(error)
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
        progress = progress or _NoProgress()
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
            raise _MoveTaskUnavailable(_error_text(error)) from None
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
            raise AdminError(f"cannot follow the move task: {_error_text(error)}") from None
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
                reason = _error_text(error)
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
        if self.queue_url.endswith(".fifo"):
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
            log.warning("redrive_settle_failed", error=_error_text(error))


class _MoveTaskUnavailable(Exception):
    pass


def _arrived_during_run(raw: dict[str, Any], started_ms: int, moved_ids: set[str]) -> bool:
    """A dead letter this run must leave alone: sent after it started, or its own copy that failed again."""
    redriven_from = raw.get("MessageAttributes", {}).get(REDRIVEN_FROM, {}).get("StringValue")
    if redriven_from in moved_ids:
        return True
    sent = _int_or_none(str(raw.get("Attributes", {}).get("SentTimestamp", "")))
    return sent is not None and sent > started_ms


# --------------------------------------------------------------------------------------------------- entry points


@contextlib.asynccontextmanager
async def queue_admin(settings: QueueSettings) -> AsyncIterator[QueueAdmin]:
    """One ``QueueAdmin`` on one aiobotocore client for the duration of a command."""
    if settings.backend != "sqs":
        raise ConfigError(
            "queue.url",
            "dlq and status work on SQS queues only for now; on ActiveMQ use the broker's own tools "
            '(see the README, "Kordiam gave me an ActiveMQ queue")',
        )
    async with SqsTransport.connect(settings) as transport:
        yield QueueAdmin(transport)


async def replay(
    settings: QueueSettings,
    element_ids: Sequence[int],
    *,
    event: str = "updated",
    force: bool = False,
    progress: ProgressSink | None = None,
) -> ReplayResult:
    if settings.backend == "stomp":
        return await _replay_on_broker(
            settings, element_ids, event=event, force=force, progress=progress or _NoProgress()
        )
    async with queue_admin(settings) as admin:
        return await admin.replay(element_ids, event=event, force=force, progress=progress)


async def _replay_on_broker(
    settings: QueueSettings, element_ids: Sequence[int], *, event: str, force: bool, progress: ProgressSink
) -> ReplayResult:
    """``replay`` on ActiveMQ: one confirmed send per element through the transport contract."""
    ids = _replay_ids(element_ids)
    progress.start(f"replaying {len(ids)} element(s)", len(ids))
    results: list[ReplayedElement] = []
    async with open_transport(settings, consume=False) as transport:
        for element_id in ids:
            body, attributes = resync_notification(element_id, source="replay", event=event, force=force)
            try:
                results.append(ReplayedElement(element_id, await transport.send(body, attributes)))
            except Exception as error:  # stompman's errors: refused, no receipt in time, connection lost
                results.append(ReplayedElement(element_id, None, _error_text(error)))
            progress.advance(1)
    log.info("replayed", queue=settings.url, sent=sum(r.error is None for r in results), total=len(results))
    return ReplayResult(settings.url, results)


def _replay_ids(element_ids: Sequence[int]) -> list[int]:
    ids = list(dict.fromkeys(element_ids))
    for element_id in ids:
        if isinstance(element_id, bool) or not isinstance(element_id, int) or element_id <= 0:
            raise ValueError(f"element ids are positive integers, not {element_id!r}")
    return ids


async def dlq_list(settings: QueueSettings, *, limit: int = 50, progress: ProgressSink | None = None) -> DlqListing:
    async with queue_admin(settings) as admin:
        return await admin.dlq_list(limit=limit, progress=progress)


async def dlq_show(
    settings: QueueSettings, message_id: str, *, scan_limit: int = 1000, progress: ProgressSink | None = None
) -> DlqMessage | None:
    async with queue_admin(settings) as admin:
        return await admin.dlq_show(message_id, scan_limit=scan_limit, progress=progress)


async def dlq_redrive(
    settings: QueueSettings,
    *,
    limit: int | None = None,
    element_ids: Iterable[int] | None = None,
    native: bool | None = None,
    progress: ProgressSink | None = None,
    stop: asyncio.Event | None = None,
) -> RedriveResult:
    async with queue_admin(settings) as admin:
        return await admin.redrive(limit=limit, element_ids=element_ids, native=native, progress=progress, stop=stop)


# --------------------------------------------------------------------------------------------------- rendering


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _short(text: str | None, width: int) -> str:
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def render_replay(result: ReplayResult, console: Console) -> None:
    for element in result.elements:
        if element.error is None:
            console.print(f"element {element.element_id}: enqueued as {element.message_id}")
        else:
            console.print(f"[red]element {element.element_id}: not enqueued: {escape(element.error)}[/red]")
    console.print(f"{result.sent} of {len(result.elements)} notification(s) sent to {result.queue_url}")


def render_dlq_list(listing: DlqListing, console: Console) -> None:
    now = datetime.now(UTC)
    table = Table(title=f"Dead letters in {listing.queue_url}", title_justify="left")
    for column in ("message id", "element", "stage", "error", "reason", "attempts", "age"):
        table.add_column(column, overflow="fold" if column == "message id" else "ellipsis")
    for message in listing.messages:
        failure = message.failure
        table.add_row(
            message.message_id,
            str(message.element_id) if message.element_id is not None else "-",
            escape(failure.stage or "-") if failure else "(moved by SQS)",
            escape(failure.error_class or "-") if failure else "-",
            escape(_short(failure.reason if failure else None, 60)),
            # Without the worker's context only SQS's receive count is known, and listings add to it.
            str(failure.attempts) if failure and failure.attempts is not None else "-",
            format_age(message.age_seconds(now)),
        )
    console.print(table)
    summary = f"{len(listing.messages)} shown; about {listing.approximate_visible} visible"
    if listing.approximate_in_flight:
        summary += f", {listing.approximate_in_flight} in flight (held by a consumer, not listed)"
    if listing.truncated:
        summary += "; more not shown (raise --limit)"
    console.print(summary)


def render_dlq_message(message: DlqMessage, console: Console) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("message id", message.message_id)
    table.add_row("element", str(message.element_id) if message.element_id is not None else "-")
    table.add_row("sent", message.sent_at.isoformat() if message.sent_at else "-")
    table.add_row("age", format_age(message.age_seconds()))
    table.add_row("receive count", str(message.receive_count))
    if message.group_id:
        table.add_row("group", message.group_id)
    console.print(table)
    attributes = Table(title="Message attributes", title_justify="left")
    attributes.add_column("name")
    attributes.add_column("value", overflow="fold")
    for name in sorted(message.attributes, key=lambda n: (not n.startswith(FAILURE_PREFIX), n)):
        attributes.add_row(escape(name), escape(message.attributes[name]))
    console.print(attributes)
    system = Table(title="SQS attributes", title_justify="left")
    system.add_column("name")
    system.add_column("value", overflow="fold")
    for name, value in sorted(message.system_attributes.items()):
        system.add_row(name, value)
    console.print(system)
    console.print("[bold]Body[/bold]")
    parsed = message.body_json
    if parsed is not None:
        console.print(Syntax(json.dumps(parsed, indent=2, ensure_ascii=False), "json", word_wrap=True))
    else:
        console.print(escape(message.body), markup=False, highlight=False)


def render_redrive(result: RedriveResult, console: Console) -> None:
    via = "SQS move task" if result.method == "move-task" else "copy and delete"
    console.print(f"Redrive {result.source_url} → {result.destination_url} ({via})")
    if result.fallback_reason:
        console.print(f"  manual copy because: {escape(result.fallback_reason)}")
    console.print(f"  moved: {result.moved_total}")
    if result.task_status:
        console.print(f"  move task status: {result.task_status}")
    if result.skipped:
        console.print(f"  left in the dead-letter queue (filter/limit): {result.skipped}")
    if result.arrived:
        console.print(f"  arrived after the run started, left for a later run: {result.arrived}")
    if result.interrupted:
        console.print("  [yellow]interrupted (Ctrl-C): the figures above are what this run did before[/yellow]")
    for failure in result.failed:
        console.print(f"  [red]not moved[/red] {failure.dlq_message_id}: {escape(failure.reason)}")
    if result.duplicated:
        console.print(
            f"  [yellow]copied but still in the dead-letter queue (delete failed): {len(result.duplicated)}[/yellow]"
            " — they will be processed twice, which is safe; delete or redrive them again"
        )
    if result.stopped_reason:
        console.print(f"  [red]stopped early:[/red] {escape(result.stopped_reason)}")
    if result.remaining is not None:
        console.print(f"  dead-letter queue now holds about {result.remaining} message(s)")

"""The SQS backend of ``QueueAdmin``: the operator operations on the transport's one aiobotocore client.

- **Peeking never consumes.** A peek receives with a short hold (``PEEK_HOLD_SECONDS``) so it can page past the
  first ten messages (with visibility 0, SQS hands back the same ten every time), then releases everything it saw
  with visibility 0 (after Ctrl-C, once its aborted receive has ended on the server: ``sqs.AbandonedPolls``). If
  the process dies mid-peek the hold simply expires.
- **Redrive never loses a message.** A message is deleted from the dead-letter queue only after SQS confirmed its
  copy on the main queue; a failed copy stays in the dead-letter queue and is released at the end of the run. The
  worst case (a crash between the copy and the delete) is a duplicate, which the worker handles idempotently.
  Without a limit or a filter, SQS's own ``StartMessageMoveTask`` does the move where the endpoint has it.
- **Deleting dead letters deletes only the chosen ones** (``delete_dead_letters``): a peek that deletes each chosen
  one by the receipt handle of its own receive while it still holds it, then releases the rest as a peek does.

Why one module of about 600 lines: the manual redrive (``_ManualRedrive``: receive, copy, delete, release) works
on the receive, delete and release calls of ``SqsQueueAdmin`` that the peek uses too, and falls back from the move
task; apart, each half would need the other's private calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal

import structlog
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as NoConnection

from bridge.config import is_fifo_url
from bridge.errors import AdminError, ConfigError
from bridge.queue.dead_letter import REDRIVEN_FROM, is_failure_attribute, redrive_markers
from bridge.queue.sqs import MAX_ATTRIBUTES, START_OUTAGE_CODES, SqsTransport, string_attributes
from bridge.queue.transport import (
    MAX_BATCH,
    DeadLetterDeletion,
    MovedMessage,
    OutgoingMessage,
    PeekedMessage,
    ProgressSink,
    QueueDepth,
    QueueInfo,
    QueueMessage,
    RedriveFailure,
    RedriveRequest,
    RedriveResult,
    SendOutcome,
)

log = structlog.get_logger("bridge.admin")

# How long a peek keeps the messages it has seen invisible before it releases them (visibility 0) itself.
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
# The error codes of a SendMessageBatch call SQS refuses for what one entry holds, not for the queue.
_ENTRY_REFUSALS = frozenset(
    {"InvalidParameterValue", "InvalidMessageContents", "InvalidAttributeName", "InvalidAttributeValue"}
)
MOVE_TASK_RUNNING = frozenset({"RUNNING", "CANCELLING"})
# SQS refusing a call to the caller's credentials (IAM): its query protocol's code, and its JSON protocol's.
_ACCESS_DENIED = frozenset({"AccessDenied", "AccessDeniedException"})
# A gateway's or an overloaded server's answer, with or without an SQS error in it: the same call may pass later.
_GATEWAY_STATUSES = frozenset({502, 503, 504})


def error_text(error: Exception) -> str:
    """One line for an operator: the SQS error code and message, or the exception's type and text."""
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        code = details.get("Code") or "error"
        message = str(details.get("Message") or "").strip()
        if message.startswith("<"):  # an HTML error page (e.g. an emulator's 500) says nothing useful
            message = ""
        return f"{code}: {message}" if message else str(code)
    return f"{type(error).__name__}: {error}"


def move_task_failure(error: Exception) -> Literal["transient", "denied", "unavailable"]:
    """Why ``StartMessageMoveTask`` failed, as what the operator does about it:

    - ``transient``: it may pass (SQS throttling or in trouble, a gateway's 502 to 504, no answer): run again;
    - ``denied``: the credentials may not start it (IAM): allow ``sqs:StartMessageMoveTask``, or copy by hand;
    - ``unavailable``: the endpoint cannot start it, and would not on a second try: it lacks the call (moto
      answers a bare 500, an error page with no SQS error in it; LocalStack before it had the call a 501; a botocore
      without it), or refuses it for this queue (not another queue's dead-letter queue, a task already running).
    """
    if isinstance(error, HTTPClientError | NoConnection):  # no answer: a connection error, a timeout
        return "transient"
    if not isinstance(error, ClientError):
        return "unavailable"
    code = str(error.response.get("Error", {}).get("Code") or "")
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code in _ACCESS_DENIED:
        return "denied"
    if status == 501:
        return "unavailable"
    if code in START_OUTAGE_CODES or status == 429 or status in _GATEWAY_STATUSES:
        return "transient"
    if status >= 500 and not code.isdigit():  # an SQS error; botocore's code is the bare status where none came
        return "transient"
    return "unavailable"


def _entry_failure(failure: dict[str, Any]) -> str:
    """The reason of one failed entry of a batch call."""
    code = str(failure.get("Code") or "error")
    message = str(failure.get("Message") or "").strip()
    return f"{code}: {message}" if message else code


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _peeked(raw: dict[str, Any]) -> PeekedMessage:
    """One ``ReceiveMessage`` message as seen by an operator: string attributes (a binary one shown as
    ``<binary, N bytes>``) and every system attribute."""
    attributes: dict[str, str] = {}
    for name, value in raw.get("MessageAttributes", {}).items():
        if "StringValue" in value:
            attributes[name] = str(value["StringValue"])
        elif "BinaryValue" in value:
            attributes[name] = f"<binary, {len(value['BinaryValue'])} bytes>"
    system = {str(k): str(v) for k, v in raw.get("Attributes", {}).items()}
    sent = _int_or_none(system.get("SentTimestamp"))
    message = QueueMessage(
        message_id=str(raw["MessageId"]),
        receipt_handle=str(raw.get("ReceiptHandle", "")),
        body=str(raw.get("Body", "")),
        attributes=attributes,
        receive_count=_int_or_none(system.get("ApproximateReceiveCount")) or 0,
        sent_at=sent / 1000 if sent is not None else None,
        group_id=system.get("MessageGroupId"),
        trace_header=system.get("AWSTraceHeader"),
    )
    return PeekedMessage(message, system, "SQS attributes")


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


class SqsQueueAdmin:
    """``QueueAdmin`` over one open ``SqsTransport`` and its aiobotocore client (the batch and move-task calls the
    worker never makes are here, beside the transport, not in ``bridge.admin``)."""

    def __init__(self, transport: SqsTransport) -> None:
        self.transport = transport
        self.client: Any = transport.client
        self._info: QueueInfo | None = None

    @property
    def url(self) -> str:
        return self.transport.url

    async def dead_letter_url(self) -> str:
        if self._info is None:
            self._info = await self.transport.describe()
        return self._info.dlq_url

    async def ensure_usable(self) -> None:
        await self.transport.check_usable()

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

    async def _visible(self, url: str) -> int:
        return (await self.depth(url)).visible or 0

    async def _remaining(self, url: str) -> int:
        return (await self.depth(url)).total or 0

    async def _queue_arn(self, url: str) -> str:
        try:
            response = await self.client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        except (ClientError, BotoCoreError) as error:
            raise AdminError(f"cannot read the ARN of {url}: {error_text(error)}") from None
        return str(response["Attributes"]["QueueArn"])

    async def _receive(self, url: str, count: int, hold: int) -> list[dict[str, Any]]:
        started = time.monotonic()
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
        except asyncio.CancelledError:
            self.transport.abandoned_polls.abandoned(url, started, RECEIVE_WAIT_SECONDS)
            raise
        return list(response.get("Messages", []))

    async def _release(self, url: str, receipts: Iterable[str]) -> int:
        """Make held messages visible again at once, or once no receive abandoned on ``url`` can take them (the
        ``sqs`` module docstring); returns how many could not be released (they expire)."""
        return await self._hide(url, receipts, self.transport.abandoned_polls.seconds_left(url))

    async def _hide(self, url: str, receipts: Iterable[str], seconds: int) -> int:
        """Set the held messages' visibility to ``seconds`` from now; returns how many failed."""
        handles = list(receipts)
        failed = 0
        for chunk in _chunks(handles):
            entries = [{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": seconds} for i, h in enumerate(chunk)]
            try:
                response = await self.client.change_message_visibility_batch(QueueUrl=url, Entries=entries)
            except (ClientError, BotoCoreError) as error:
                log.warning("release_failed", queue=url, count=len(chunk), error=error_text(error))
                failed += len(chunk)
                continue
            failed += len(response.get("Failed", []))
        return failed

    async def _delete(self, url: str, receipts: dict[str, str]) -> dict[str, str]:
        """Delete messages (id → receipt handle); returns the ids that were not deleted, each with why."""
        items = list(receipts.items())
        not_deleted: dict[str, str] = {}
        for chunk in _chunks(items):
            entries = [{"Id": str(i), "ReceiptHandle": handle} for i, (_, handle) in enumerate(chunk)]
            try:
                response = await self.client.delete_message_batch(QueueUrl=url, Entries=entries)
            except (ClientError, BotoCoreError) as error:
                log.warning("dlq_delete_failed", queue=url, count=len(chunk), error=error_text(error))
                not_deleted.update((message_id, error_text(error)) for message_id, _ in chunk)
                continue
            not_deleted.update((chunk[int(f["Id"])][0], _entry_failure(f)) for f in response.get("Failed", []))
        return not_deleted

    async def peek(
        self,
        url: str,
        *,
        limit: int,
        until: Callable[[PeekedMessage], bool] | None = None,
        progress: ProgressSink | None = None,
        hold: int = PEEK_HOLD_SECONDS,
    ) -> tuple[list[PeekedMessage], bool]:
        """Every message seen is released before returning, also on errors and cancellation (see ``_release``)."""
        look = await self._look(url, limit=limit, until=until, progress=progress, hold=hold)
        return look.seen, look.more

    async def delete_dead_letters(
        self,
        *,
        limit: int,
        chosen: Callable[[PeekedMessage], bool],
        until: Callable[[PeekedMessage], bool] | None = None,
        progress: ProgressSink | None = None,
        on_deleted: Callable[[PeekedMessage], None] | None = None,
    ) -> DeadLetterDeletion:
        """A peek that deletes the chosen dead letters while it holds them, by the receipt handle of its own receive
        (an older one may delete nothing); what else it saw, and a chosen one SQS did not delete, is released."""
        url = await self.dead_letter_url()
        return await self._look(
            url,
            limit=limit,
            until=until,
            progress=progress,
            hold=PEEK_HOLD_SECONDS,
            chosen=chosen,
            on_deleted=on_deleted,
        )

    async def _look(
        self,
        url: str,
        *,
        limit: int,
        until: Callable[[PeekedMessage], bool] | None,
        progress: ProgressSink | None,
        hold: int,
        chosen: Callable[[PeekedMessage], bool] | None = None,
        on_deleted: Callable[[PeekedMessage], None] | None = None,
    ) -> DeadLetterDeletion:
        """``peek``, deleting the messages ``chosen`` once the look has ended (not after an error or a cancellation:
        then none is), before the release; ``on_deleted`` is told of each batch SQS confirmed, as it comes."""
        seen: dict[str, PeekedMessage] = {}
        receipts: dict[str, str] = {}
        to_delete: list[str] = []
        not_deleted: dict[str, str] = {}
        stale = 0
        stopped_early = False
        held_at = time.monotonic()
        try:
            while len(seen) < limit:
                if time.monotonic() - held_at > hold / 2:
                    # A long scan (thousands of dead letters, a slow endpoint) would otherwise meet its first
                    # messages again once their hold ran out, take them for the end of the queue and stop early.
                    await self._hide(url, receipts.values(), hold)
                    held_at = time.monotonic()
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
                    peeked = _peeked(raw)
                    seen[peeked.message.message_id] = peeked
                    if progress is not None:
                        progress.advance()
                    if until is not None and until(peeked):
                        stopped_early = True
                        break
                if stopped_early:
                    break
                stale = 0 if fresh else stale + 1
                if stale >= MAX_STALE_RECEIVES:
                    break
            else:
                stopped_early = True
            if chosen is not None:
                to_delete = [message_id for message_id, peeked in seen.items() if chosen(peeked)]
            for chunk in _chunks(to_delete):
                # By the newest receipt handle of each: SQS may ignore an older one and answer success all the same.
                refused = await self._delete(url, {message_id: receipts[message_id] for message_id in chunk})
                not_deleted.update(refused)
                for message_id in chunk:
                    if message_id not in refused:
                        del receipts[message_id]
                        if on_deleted is not None:
                            on_deleted(seen[message_id])
        finally:
            await asyncio.shield(self._release(url, receipts.values()))
        deleted = [message_id for message_id in to_delete if message_id not in not_deleted]
        return DeadLetterDeletion(list(seen.values()), stopped_early, deleted, not_deleted)

    # ------------------------------------------------------------------------------------------- send

    async def send(self, messages: Sequence[OutgoingMessage]) -> list[SendOutcome]:
        if len(messages) > MAX_BATCH:
            raise ValueError(f"send takes at most {MAX_BATCH} messages at once")
        if not messages:
            return []
        fifo = is_fifo_url(self.url)
        entries: list[dict[str, Any]] = []
        for index, message in enumerate(messages):
            entry: dict[str, Any] = {
                "Id": str(index),
                "MessageBody": message.body,
                "MessageAttributes": string_attributes(message.attributes),
            }
            if fifo:
                entry["MessageGroupId"] = message.group_id or "default"
                entry["MessageDeduplicationId"] = uuid.uuid4().hex
            entries.append(entry)
        try:
            response = await self.client.send_message_batch(QueueUrl=self.url, Entries=entries)
        except (ClientError, BotoCoreError) as error:
            return [SendOutcome(None, error_text(error))] * len(messages)
        sent = {int(s["Id"]): str(s["MessageId"]) for s in response.get("Successful", [])}
        failed = {int(f["Id"]): _entry_failure(f) for f in response.get("Failed", [])}
        unanswered = "not acknowledged by SQS"
        return [
            SendOutcome(sent[index]) if index in sent else SendOutcome(None, failed.get(index, unanswered))
            for index in range(len(messages))
        ]

    # ------------------------------------------------------------------------------------------- redrive

    @staticmethod
    def check_redrive(request: RedriveRequest) -> None:
        if request.limit is not None and request.limit < 1:
            raise ValueError("limit must be at least 1")
        if request.native and (request.limit is not None or request.wanted is not None):
            raise ValueError("the SQS move task moves everything: it takes neither a limit nor elements")

    async def redrive(
        self,
        request: RedriveRequest,
        *,
        progress: ProgressSink,
        stop: asyncio.Event,
        hold: int = REDRIVE_HOLD_SECONDS,
        poll_interval: float = MOVE_TASK_POLL_SECONDS,
    ) -> RedriveResult:
        """Without a limit and a filter, SQS's ``StartMessageMoveTask`` where the endpoint supports it (polled every
        ``poll_interval`` seconds), else the manual copy (receive with ``hold``, copy, delete)."""
        self.check_redrive(request)
        dlq_url = await self.dead_letter_url()
        fallback: str | None = None
        if request.native is not False:
            if request.limit is not None or request.wanted is not None:
                fallback = "a limit or an element filter needs the manual copy"
            else:
                try:
                    return await self._redrive_move_task(dlq_url, progress, poll_interval, stop)
                except _MoveTaskUnavailable as unavailable:
                    if request.native:
                        raise unavailable.for_native() from None
                    # The manual copy needs neither the call nor its permission.
                    fallback = f"StartMessageMoveTask unavailable ({unavailable.reason})"
                    log.info("move_task_unavailable", reason=unavailable.reason, using="manual copy")
        run = _ManualRedrive(self, dlq_url, request, hold=hold)
        result = await run.run(progress, stop)
        result.fallback_reason = fallback
        return result

    async def _redrive_move_task(
        self, dlq_url: str, progress: ProgressSink, poll_interval: float, stop: asyncio.Event
    ) -> RedriveResult:
        source_arn = await self._queue_arn(dlq_url)
        destination_arn = await self._queue_arn(self.url)
        try:
            started = await self.client.start_message_move_task(SourceArn=source_arn, DestinationArn=destination_arn)
        except (ClientError, BotoCoreError, AttributeError) as error:
            failure = move_task_failure(error)
            if failure == "transient":
                # Not the manual copy instead: the endpoint has the move task, and a copy by hand would make its many
                # calls to an endpoint in trouble (a start whose answer was lost may also have started the task).
                raise AdminError(
                    f"SQS did not start the move task ({error_text(error)}); this may pass: run dlq redrive again"
                ) from None
            endpoint = str(self.client.meta.endpoint_url)
            raise _MoveTaskUnavailable(error_text(error), endpoint, source_arn, denied=failure == "denied") from None
        handle = str(started.get("TaskHandle", ""))
        log.info("move_task_started", source=dlq_url, destination=self.url, task=handle)
        progress.start("moving dead letters (SQS move task)", None)
        result = RedriveResult("move-task", dlq_url, self.url, task_status="RUNNING", moved_count=0)
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
        result.remaining = await self._remaining(dlq_url)
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


class _MoveTaskUnavailable(Exception):
    """StartMessageMoveTask cannot be had here (``move_task_failure``: ``unavailable`` or ``denied``); without
    ``--native`` the manual copy takes over."""

    def __init__(self, reason: str, endpoint: str, source_arn: str, *, denied: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.endpoint = endpoint
        self.source_arn = source_arn
        self.denied = denied

    def for_native(self) -> ConfigError:
        """What stops ``dlq redrive --native`` (exit 2): the permission to grant, or the flag to drop."""
        without = "run without --native: the manual copy moves the dead letters"
        if self.denied:
            return ConfigError(
                "--native",
                f"these credentials may not start SQS's move task ({self.reason}): allow the IAM action "
                f"sqs:StartMessageMoveTask on the dead-letter queue {self.source_arn}, or {without}",
            )
        return ConfigError(
            "--native",
            f"SQS's move task cannot be started at {self.endpoint} (StartMessageMoveTask: {self.reason}): {without}",
        )


class _ManualRedrive:
    """One manual redrive run: receive with a hold, copy to the main queue, delete only confirmed copies, release
    the rest. Holds the receipts of the run (``held``: to release; ``copied_not_deleted``: to delete)."""

    def __init__(self, admin: SqsQueueAdmin, dlq_url: str, request: RedriveRequest, *, hold: int) -> None:
        self.admin = admin
        self.client = admin.client
        self.dlq_url = dlq_url
        self.limit = request.limit
        self.wanted = request.wanted
        self.element_of = request.element_of
        self.hold = hold
        self.result = RedriveResult("manual", dlq_url, admin.url)
        # Held by this run and to be released at the end: skipped by the filter or the limit, or not copied.
        self.held: dict[str, str] = {}
        # Copied to the main queue; deleted from the dead-letter queue only after that copy was confirmed.
        self.copied_not_deleted: dict[str, str] = {}

    async def run(self, progress: ProgressSink, stop: asyncio.Event) -> RedriveResult:
        result, limit = self.result, self.limit
        # SentTimestamp is the SQS server's clock; this run's own copies coming back are also recognised by their
        # `redriven_from`, whatever the clocks say.
        started_ms = int(time.time() * 1000)
        visible = await self.admin._visible(self.dlq_url)
        total = visible if limit is None else min(limit, visible)
        progress.start("redriving dead letters", total if self.wanted is None else visible)
        handled: set[str] = set()
        moved_ids: set[str] = set()
        stale = 0
        held_at = time.monotonic()
        try:
            while (limit is None or len(result.moved) < limit) and not stop.is_set():
                if time.monotonic() - held_at > self.hold / 2:
                    # As a long peek: what the run skipped would otherwise come back once its hold ran out, be taken
                    # for the end of the queue (only handled ones), and the run end short of what it was to move.
                    await self.admin._hide(self.dlq_url, self.held.values(), self.hold)
                    held_at = time.monotonic()
                count = MAX_BATCH if self.wanted is not None or limit is None else limit - len(result.moved)
                try:
                    batch = await self.admin._receive(self.dlq_url, count, self.hold)
                except AdminError as error:
                    # What moved stays moved and what is held is released (below): the summary says how far it got.
                    result.stopped_reason = str(error)
                    log.warning("redrive_receive_failed", source=self.dlq_url, error=str(error))
                    break
                if not batch:
                    break
                fresh: list[dict[str, Any]] = []
                for raw in batch:
                    message_id = str(raw["MessageId"])
                    if message_id in self.copied_not_deleted:
                        self.copied_not_deleted[message_id] = str(raw["ReceiptHandle"])  # retry the delete only
                    elif message_id in handled:
                        self.held[message_id] = str(raw["ReceiptHandle"])
                    elif _arrived_during_run(raw, started_ms, moved_ids):
                        handled.add(message_id)
                        self.held[message_id] = str(raw["ReceiptHandle"])
                        result.arrived += 1
                    else:
                        fresh.append(raw)
                if self.copied_not_deleted:
                    await self._finish_deletes()
                stale = 0 if fresh else stale + 1
                if stale >= MAX_STALE_RECEIVES:
                    break
                to_move: list[tuple[dict[str, Any], QueueMessage]] = []
                for raw in fresh:
                    message = _peeked(raw).message
                    handled.add(message.message_id)
                    over_limit = limit is not None and len(result.moved) + len(to_move) >= limit
                    if (self.wanted is not None and not self.wanted(message)) or over_limit:
                        self.held[message.message_id] = str(raw["ReceiptHandle"])
                        result.skipped += 1
                        if self.wanted is not None:
                            progress.advance()
                        continue
                    to_move.append((raw, message))
                if to_move:
                    keep_going = await self._copy_batch(to_move)
                    moved_ids.update(m.dlq_message_id for m in result.moved)
                    progress.advance(len(to_move))
                    if not keep_going:
                        break
        finally:
            # Also on errors and Ctrl-C: delete what was copied, release what stays.
            await asyncio.shield(self._settle())
        result.interrupted = stop.is_set()
        with contextlib.suppress(AdminError):  # the endpoint failing now leaves it unknown, not the summary unsaid
            result.remaining = await self.admin._remaining(self.dlq_url)
        log.info(
            "redriven",
            arrived=result.arrived,
            interrupted=result.interrupted,
            source=self.dlq_url,
            destination=self.admin.url,
            moved=len(result.moved),
            failed=len(result.failed),
            skipped=result.skipped,
            duplicated=len(result.duplicated),
        )
        return result

    async def _copy_batch(self, to_move: list[tuple[dict[str, Any], QueueMessage]]) -> bool:
        """Copy messages to the main queue, then delete the confirmed copies; False if the run must stop."""
        result, destination = self.result, self.admin.url
        by_entry: dict[str, tuple[dict[str, Any], QueueMessage]] = {}
        entries: list[dict[str, Any]] = []
        for index, (raw, message) in enumerate(to_move):
            entry = self._copy_entry(str(index), raw, message)
            by_entry[entry["Id"]] = (raw, message)
            entries.append(entry)
        keep_going = True
        for batch in _size_batches(entries):
            response, refused = await self._send_copies(destination, batch)
            if refused is not None:
                # The destination refused the call itself (queue gone, endpoint down, access denied): what it did
                # not confirm was not copied, nothing of it is deleted; the rest of the run would fail the same way.
                result.stopped_reason = f"sending to {destination} failed: {refused}"
                log.warning("redrive_send_failed", destination=destination, count=len(batch), error=refused)
                keep_going = False
            for success in response.get("Successful", []):
                raw, message = by_entry[str(success["Id"])]
                self.copied_not_deleted[message.message_id] = str(raw["ReceiptHandle"])
                moved = MovedMessage(message.message_id, str(success["MessageId"]), self.element_of(message))
                result.moved.append(moved)
            for failure in response.get("Failed", []):
                raw, message = by_entry[str(failure["Id"])]
                self.held[message.message_id] = str(raw["ReceiptHandle"])
                result.failed.append(RedriveFailure(message.message_id, _entry_failure(failure)))
            acknowledged = {str(s["Id"]) for s in response.get("Successful", [])} | {
                str(f["Id"]) for f in response.get("Failed", [])
            }
            for entry in batch:
                if entry["Id"] not in acknowledged:  # neither copied nor refused: treat as not copied
                    raw, message = by_entry[entry["Id"]]
                    self.held[message.message_id] = str(raw["ReceiptHandle"])
                    result.failed.append(RedriveFailure(message.message_id, refused or "not acknowledged by SQS"))
        await self._finish_deletes()
        return keep_going

    async def _send_copies(self, destination: str, batch: list[dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
        """SQS's answer to sending ``batch`` (``Successful`` and ``Failed`` entries), and why the destination refused
        the call itself, if it did (then the entries it did not answer were not sent).

        SQS refuses a whole call for what one entry holds (``_ENTRY_REFUSALS``: a copy over the main queue's
        MaximumMessageSize, which a larger dead-letter queue took, or an attribute it will not take): the entries
        then go again one by one, so that only the one refused fails and stays in the dead-letter queue, and one such
        dead letter does not stop every run at the same batch."""
        try:
            return dict(await self.client.send_message_batch(QueueUrl=destination, Entries=batch)), None
        except (ClientError, BotoCoreError) as error:
            details = error.response.get("Error", {}) if isinstance(error, ClientError) else {}
            if details.get("Code") not in _ENTRY_REFUSALS:
                return {}, error_text(error)
            if len(batch) == 1:
                return {"Failed": [{"Id": batch[0]["Id"], **details}]}, None
        answered: dict[str, list[dict[str, Any]]] = {"Successful": [], "Failed": []}
        for entry in batch:
            alone, refused = await self._send_copies(destination, [entry])
            answered["Successful"] += alone.get("Successful", [])
            answered["Failed"] += alone.get("Failed", [])
            if refused is not None:
                return dict(answered), refused
        return dict(answered), None

    def _copy_entry(self, entry_id: str, raw: dict[str, Any], message: QueueMessage) -> dict[str, Any]:
        """The copy's send entry: the dead letter's own attributes as they were (binary ones too), without its
        ``failure.*`` context, plus ``redrive_markers`` as far as SQS's ten attributes allow."""
        attributes: dict[str, Any] = {}
        for name, value in raw.get("MessageAttributes", {}).items():
            if is_failure_attribute(name):
                continue
            kept = {k: value[k] for k in ("DataType", "StringValue", "BinaryValue") if k in value}
            if "StringValue" in kept or "BinaryValue" in kept:
                attributes[name] = kept
        for name, value in redrive_markers(message).items():
            if len(attributes) < MAX_ATTRIBUTES:
                attributes[name] = {"DataType": "String", "StringValue": value}
        entry: dict[str, Any] = {"Id": entry_id, "MessageBody": message.body, "MessageAttributes": attributes}
        if is_fifo_url(self.admin.url):
            element_id = self.element_of(message)
            entry["MessageGroupId"] = message.group_id or (str(element_id) if element_id is not None else "redrive")
            # Unique: a deterministic id could make SQS swallow a message that failed again within 5 minutes.
            entry["MessageDeduplicationId"] = uuid.uuid4().hex
        return entry

    async def _finish_deletes(self) -> None:
        result = self.result
        not_deleted = set(await self.admin._delete(self.dlq_url, self.copied_not_deleted))
        for message_id in list(self.copied_not_deleted):
            if message_id not in not_deleted:
                del self.copied_not_deleted[message_id]
                if message_id in result.duplicated:
                    result.duplicated.remove(message_id)
            elif message_id not in result.duplicated:
                result.duplicated.append(message_id)

    async def _settle(self) -> None:
        try:
            if self.copied_not_deleted:
                await self._finish_deletes()
            unreleased = await self.admin._release(self.dlq_url, self.held.values())
            if unreleased:
                log.info("redrive_release_pending", count=unreleased, visible_again_in=REDRIVE_HOLD_SECONDS)
        except Exception as error:  # settling is best effort: held messages become visible when their hold expires
            log.warning("redrive_settle_failed", error=error_text(error))


def _arrived_during_run(raw: dict[str, Any], started_ms: int, moved_ids: set[str]) -> bool:
    """A dead letter this run must leave alone: sent after it started, or its own copy that failed again."""
    redriven_from = raw.get("MessageAttributes", {}).get(REDRIVEN_FROM, {}).get("StringValue")
    if redriven_from in moved_ids:
        return True
    sent = _int_or_none(str(raw.get("Attributes", {}).get("SentTimestamp", "")))
    return sent is not None and sent > started_ms

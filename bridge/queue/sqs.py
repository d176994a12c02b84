"""The SQS backend of the transport contract, on one long-lived aiobotocore client.

Done deletes the message; retry later, release and extend set its visibility (the message is never re-sent, so SQS's
receive count and native redrive keep working); a dead letter is a copy on the DLQ with ``failure.*`` attributes.

A long poll cancelled here (a shutdown aborts one that has waited a second, Ctrl-C in an operator command any) goes
on on the server for the rest of its wait: whatever becomes visible meanwhile, it takes for a reader that is gone,
which costs that message one of its receives and hides it for the visibility timeout (LocalStack does exactly
this). So nothing is made visible on a queue while a poll abandoned on it may still run (``AbandonedPolls``):
``release`` and ``retry_later`` here, and the operator commands' releases (``sqs_admin``), which share the
transport's record.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from typing import Any, TypeVar

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ReadTimeoutError

from bridge.config import QueueSettings, is_fifo_url
from bridge.deadline import DeadlineMissed, by_deadline
from bridge.errors import BridgeError, ConfigError, QueueUnreachable, TransientError
from bridge.queue.dead_letter import REDRIVEN_FROM, DeadLetterContext, dead_letter_attributes, is_failure_attribute
from bridge.queue.send_batcher import SendBatcher, entry_size
from bridge.queue.transport import (
    DEFAULT_MAX_RECEIVE_COUNT,
    MAX_BATCH,
    RECEIVE_MARGIN_SECONDS,
    MessageTooLarge,
    QueueInfo,
    QueueMessage,
)

log = structlog.get_logger("bridge.queue")

# SQS's answers at start that say it is in trouble (or throttling the calls), not that the queue is wrong.
START_OUTAGE_CODES = frozenset(
    {"RequestThrottled", "ThrottlingException", "Throttling", "ServiceUnavailable", "InternalError", "InternalFailure"}
)
# SQS allows 10 message attributes; the failure context takes these, the original attributes get the rest.
MAX_ATTRIBUTES = 10
MAX_ATTRIBUTE_VALUE = 1024
# The smallest MaximumMessageSize a queue can have: a message up to this size needs no look at the queue's own.
SMALLEST_MESSAGE_LIMIT = 1024
# How much longer than its wait an abandoned long poll may run on the server (request and answer in transit).
ABANDONED_POLL_MARGIN_SECONDS = 1.0
# Deadlines of the worker's SQS calls, botocore's retries included. botocore's read timeout counts per read, so an
# endpoint that answers a byte at a time (a sick proxy, a congested link) never meets it, and one that stops
# mid-answer meets it only after the long poll's margin on every attempt: a receive, a delete or a heartbeat would
# hang for minutes, with the poll loop or the heartbeat stuck in it. A receive gets its wait and the read timeout's
# margin; any other call CALL_SECONDS, and a heartbeat's extension at most a sixth of the visibility timeout (the
# heartbeat's interval), so that a dead connection costs one heartbeat: the next, on a new connection, lands before
# the message's visibility runs out. The receive's margin is RECEIVE_MARGIN_SECONDS, of the Transport's contract:
# the consumer's stall limit (/healthz) outlasts it.
CALL_SECONDS = 10.0
# SQS refuses a visibility that ends more than 12 h after the message's receive (ChangeMessageVisibility). What the
# bridge asks for leaves a margin: SQS counts from when it handed the message out, before its answer arrived here.
MAX_VISIBILITY_SECONDS = 43_200
VISIBILITY_LIMIT_MARGIN_SECONDS = 10
# What SQS refuses in a body, and so in a String attribute's value (SendMessage): control characters, lone
# surrogates, U+FFFE and U+FFFF.
_NOT_SQS_TEXT = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


T = TypeVar("T")


class SqsCallTimeout(ReadTimeoutError):  # type: ignore[misc]  # botocore has no type hints
    """An SQS call that did not end by its deadline (``CALL_SECONDS``, a receive's wait and margin); a
    ``BotoCoreError``, as botocore's own read timeout is, for the callers that handle SQS failing."""

    fmt = "SQS {action} did not answer within {seconds:g} s (endpoint {endpoint_url})"


class AbandonedPolls:
    """Until when, per queue, a long poll cancelled in this process may still take messages on the server."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}  # queue URL -> time.monotonic()

    def abandoned(self, url: str, started: float, wait_seconds: int) -> None:
        """A receive on ``url`` that started at ``started`` (monotonic) with ``wait_seconds`` was cancelled."""
        ends = started + wait_seconds + ABANDONED_POLL_MARGIN_SECONDS
        self._until[url] = max(self._until.get(url, 0.0), ends)

    def seconds_left(self, url: str) -> int:
        """Whole seconds until no abandoned poll on ``url`` can take a message: the least visibility to release with."""
        return math.ceil(max(0.0, self._until.get(url, 0.0) - time.monotonic()))


def visibility_left(message: QueueMessage, now: float) -> int:
    """The longest visibility SQS still accepts for ``message`` at ``now`` (``time.monotonic``): 12 h from its
    receive, less the time since and ``VISIBILITY_LIMIT_MARGIN_SECONDS``; 0 or less when none is left."""
    return MAX_VISIBILITY_SECONDS - math.ceil(now - message.received_at) - VISIBILITY_LIMIT_MARGIN_SECONDS


def sqs_text(text: str) -> str:
    """``text`` with each character SQS refuses replaced by U+FFFD."""
    return _NOT_SQS_TEXT.sub("\ufffd", text)


def string_attributes(attributes: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Attributes as SQS ``MessageAttributes``: every one a ``String``."""
    return {name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()}


def pool_connections(settings: QueueSettings, pollers: int) -> int:
    """The most connections an ``SqsTransport`` holds: long polls, deletes, heartbeats and dead-letter sends must
    never wait for each other's."""
    return max(10, settings.concurrency + pollers + 8)


class SqsTransport:
    """The ``Transport`` contract over SQS: a thin, typed wrapper over the aiobotocore client, one per process."""

    def __init__(self, client: Any, settings: QueueSettings) -> None:
        self._client = client
        self.settings = settings
        self.url = settings.url
        self.dlq_url: str | None = settings.dlq_url
        self._sends = SendBatcher(self._send_batch)
        # Each queue's MaximumMessageSize (the main queue's and the DLQ's), read at the first send that could
        # exceed it.
        self._message_limits: dict[str, int] = {}
        # Long polls cancelled here (and in the operator commands on this transport's client) still running on SQS.
        self.abandoned_polls = AbandonedPolls()

    @property
    def ordered_groups(self) -> bool:
        return self.settings.is_fifo

    @property
    def lease_seconds(self) -> int:
        return self.settings.visibility_timeout

    @property
    def aborted_receive_hides(self) -> bool:
        # SQS answers a receive as soon as a message is visible: what it handed out is the abandoned reader's.
        return True

    def connected(self) -> bool:
        """SQS is an HTTP API: there is no connection to lose (a failing receive shows in the consumer's health)."""
        return True

    @property
    def client(self) -> Any:
        """The underlying aiobotocore SQS client, for ``SqsQueueAdmin`` (the operator calls the worker never makes)."""
        return self._client

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, settings: QueueSettings, *, pollers: int = 1) -> AsyncIterator[SqsTransport]:
        config = AioConfig(
            max_pool_connections=pool_connections(settings, pollers),
            # The read timeout must outlast the long poll, or every empty poll would end in a timeout error.
            read_timeout=settings.wait_time_seconds + RECEIVE_MARGIN_SECONDS,
            connect_timeout=5,
            retries={"max_attempts": 3, "mode": "standard"},
            # Every call's parameters are built here from typed values, and SQS checks them anyway; botocore's
            # client-side validation was a tenth of the CPU of each receive.
            parameter_validation=False,
        )
        session = get_session()
        async with session.create_client(
            "sqs", region_name=settings.region, endpoint_url=settings.endpoint_url, config=config
        ) as client:
            transport = cls(client, settings)
            try:
                yield transport
            finally:
                await transport._sends.aclose()

    async def describe(self) -> QueueInfo:
        """Resolve the dead-letter queue (``queue.dlq_url``, else the redrive target); refuse to run without one.
        A configured ``queue.dlq_url`` must exist and be another queue: otherwise the first poison message would
        fail its dead-letter copy on every receive (or come straight back), found only then."""
        attributes = await self._start_attributes(
            self.url, ["RedrivePolicy", "QueueArn", "MaximumMessageSize"], key="queue.url"
        )
        policy_text = attributes.get("RedrivePolicy")
        policy: dict[str, Any] = json.loads(policy_text) if policy_text else {}
        max_receive = int(policy.get("maxReceiveCount", 0)) or DEFAULT_MAX_RECEIVE_COUNT
        if self.dlq_url is None:
            target = policy.get("deadLetterTargetArn")
            if not target:
                raise ConfigError(
                    "queue.dlq_url",
                    f"queue {self.url} has no redrive policy; set queue.dlq_url or give the queue a dead-letter queue "
                    "(the bridge never drops a message it cannot process)",
                )
            *_, account, name = target.split(":")
            try:
                found = await self._by_deadline(
                    "GetQueueUrl",
                    CALL_SECONDS,
                    self._client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account),
                )
            except ClientError as error:
                # SQS lets a dead-letter queue be deleted and keeps its ARN in the policy.
                raise _start_error(
                    error,
                    f"the dead-letter queue {target} (queue {self.url}'s redrive policy names it)",
                    "queue.dlq_url",
                    advice="; re-create it, or set queue.dlq_url",
                ) from None
            except BotoCoreError as error:
                raise _unreachable(error, self.settings) from None
            self.dlq_url = str(found["QueueUrl"])
        dead = await self._start_attributes(self.dlq_url, ["QueueArn", "MaximumMessageSize"], key="queue.dlq_url")
        if dead.get("QueueArn") is not None and dead.get("QueueArn") == attributes.get("QueueArn"):
            raise ConfigError("queue.dlq_url", "names the main queue itself; it must be another queue")
        self._remember_limit(self.url, attributes)
        self._remember_limit(self.dlq_url, dead)
        queue_limit, dlq_limit = self._message_limits.get(self.url), self._message_limits.get(self.dlq_url)
        if queue_limit is not None and dlq_limit is not None and dlq_limit < queue_limit:
            if not policy:  # without a redrive of its own the queue would retry such a message for ever
                raise ConfigError(
                    "queue.dlq_url",
                    f"the dead-letter queue takes messages of at most {dlq_limit} bytes, the queue {queue_limit}, and "
                    "the queue has no redrive policy: a larger message could never leave it; raise the dead-letter "
                    f"queue's MaximumMessageSize to {queue_limit}, or give the queue a redrive policy",
                )
            # Not refused: most messages fit. One that does not is retried until the queue's own redrive moves it.
            log.warning(
                "dlq_smaller_than_queue",
                dlq_url=self.dlq_url,
                dlq_maximum_message_size=dlq_limit,
                queue_maximum_message_size=queue_limit,
                consequence="a message larger than the DLQ takes cannot be copied there with its failure context",
            )
        return QueueInfo(self.dlq_url, max_receive, has_redrive=bool(policy))

    async def check_usable(self) -> None:
        """``ConfigError`` naming ``queue.url`` unless the main queue answers: it exists, the credentials may use it."""
        await self._start_attributes(self.url, ["QueueArn"], key="queue.url")

    def _remember_limit(self, url: str, attributes: Mapping[str, str]) -> None:
        if (limit := attributes.get("MaximumMessageSize")) is not None:
            self._message_limits[url] = int(limit)

    async def _start_attributes(self, url: str, names: list[str], *, key: str) -> dict[str, str]:
        """A queue's attributes read at start; ``ConfigError`` naming ``key`` (the queue's setting) when the queue
        is not usable, or the credentials or the endpoint when SQS did not answer."""
        try:
            response = await self._by_deadline(
                "GetQueueAttributes",
                CALL_SECONDS,
                self._client.get_queue_attributes(QueueUrl=url, AttributeNames=names),
            )
        except ClientError as error:
            raise _start_error(error, f"queue {url}", key) from None
        except BotoCoreError as error:
            raise _unreachable(error, self.settings) from None
        return dict(response.get("Attributes", {}))

    async def receive(self, max_messages: int, wait_time: int) -> list[QueueMessage]:
        started = time.monotonic()
        seconds = wait_time + RECEIVE_MARGIN_SECONDS
        try:
            response = await self._by_deadline(
                "ReceiveMessage",
                seconds,
                self._client.receive_message(
                    QueueUrl=self.url,
                    MaxNumberOfMessages=max(1, min(MAX_BATCH, max_messages)),
                    WaitTimeSeconds=wait_time,
                    VisibilityTimeout=self.settings.visibility_timeout,
                    MessageSystemAttributeNames=[
                        "ApproximateReceiveCount",
                        "SentTimestamp",
                        "MessageGroupId",
                        "AWSTraceHeader",
                    ],
                    MessageAttributeNames=["All"],
                ),
            )
        except (asyncio.CancelledError, SqsCallTimeout):
            self.abandoned_polls.abandoned(self.url, started, wait_time)  # it may still run on the server
            raise
        now = time.monotonic()
        messages = []
        for raw in response.get("Messages", []):
            system = raw.get("Attributes", {})
            sent = system.get("SentTimestamp")
            messages.append(
                QueueMessage(
                    message_id=raw["MessageId"],
                    receipt_handle=raw["ReceiptHandle"],
                    body=raw.get("Body", ""),
                    attributes={
                        name: value["StringValue"]
                        for name, value in raw.get("MessageAttributes", {}).items()
                        if "StringValue" in value
                    },
                    receive_count=int(system.get("ApproximateReceiveCount", "1")),
                    sent_at=int(sent) / 1000 if sent else None,
                    group_id=system.get("MessageGroupId"),
                    trace_header=system.get("AWSTraceHeader"),
                    received_at=now,
                    visible_until=now + self.settings.visibility_timeout,
                )
            )
        return messages

    async def delete_batch(self, messages: Sequence[QueueMessage]) -> list[str]:
        """Delete up to 10 messages; returns the ids SQS did not delete."""
        entries = [{"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(messages)]
        response = await self._by_deadline(
            "DeleteMessageBatch", CALL_SECONDS, self._client.delete_message_batch(QueueUrl=self.url, Entries=entries)
        )
        failed = response.get("Failed", [])
        for failure in failed:
            message = messages[int(failure["Id"])]
            log.warning(
                "delete_failed",
                message_id=message.message_id,
                code=failure.get("Code"),
                detail=failure.get("Message"),
                hint="the message will be received again; processing is idempotent",
            )
        return [messages[int(f["Id"])].message_id for f in failed]

    async def change_visibility(
        self, messages: Sequence[QueueMessage], seconds: int, *, deadline: float = CALL_SECONDS
    ) -> list[str]:
        """Set the visibility of up to 10 messages; returns the ids that failed (e.g. already deleted).

        Each message gets at most what SQS still accepts for it (``visibility_left``): a longer wait is cut to
        that, logged ``visibility_capped`` (the message comes back sooner than asked, one more receive). A message
        with nothing left is not asked for (``visibility_limit_reached``; it is visible again once its current
        visibility ends) and is returned as failed.
        """
        now = time.monotonic()
        entries: list[dict[str, Any]] = []
        capped: list[str] = []
        spent: list[str] = []
        for index, message in enumerate(messages):
            left = max(0, visibility_left(message, now))
            if left == 0 and seconds > 0:
                spent.append(message.message_id)
                continue
            if seconds > left:
                capped.append(message.message_id)
            entries.append(
                {"Id": str(index), "ReceiptHandle": message.receipt_handle, "VisibilityTimeout": min(seconds, left)}
            )
        if capped:
            log.warning(
                "visibility_capped",
                message_ids=capped,
                asked=seconds,
                hint=f"SQS keeps a message hidden at most {MAX_VISIBILITY_SECONDS // 3600} h from its receive: it "
                "comes back sooner than asked, as one more receive",
            )
        if spent:
            log.warning(
                "visibility_limit_reached",
                message_ids=spent,
                asked=seconds,
                hint=f"held {MAX_VISIBILITY_SECONDS // 3600} h since its receive, SQS accepts no later visibility: "
                "it is visible again once its current visibility ends",
            )
        if not entries:
            return spent
        response = await self._by_deadline(
            "ChangeMessageVisibilityBatch",
            deadline,
            self._client.change_message_visibility_batch(QueueUrl=self.url, Entries=entries),
        )
        return spent + [messages[int(f["Id"])].message_id for f in response.get("Failed", [])]

    async def complete(self, messages: Sequence[QueueMessage]) -> list[str]:
        return await self.delete_batch(messages)

    async def retry_later(self, messages: Sequence[QueueMessage], seconds: int) -> list[str]:
        return await self.change_visibility(messages, max(seconds, self.abandoned_polls.seconds_left(self.url)))

    async def release(self, messages: Sequence[QueueMessage]) -> list[str]:
        """Visible at once; or, while a long poll this transport abandoned may still run on the server, as soon as
        it has ended (see the module docstring), so that it cannot take them."""
        return await self.change_visibility(messages, self.abandoned_polls.seconds_left(self.url))

    async def extend(self, messages: Sequence[QueueMessage], seconds: int) -> list[str]:
        deadline = min(CALL_SECONDS, max(1.0, self.settings.visibility_timeout / 6))
        return await self.change_visibility(messages, seconds, deadline=deadline)

    async def send_dead_letter(self, message: QueueMessage, context: DeadLetterContext) -> None:
        """Copy the message to the dead-letter queue with its failure context as message attributes."""
        if self.dlq_url is None:
            raise RuntimeError("describe() must resolve the dead-letter queue first")
        # The failure context quotes what failed (an answer's first bytes, a problem's title): SQS would refuse the
        # whole copy for one character it does not take, on every receive.
        attributes = {
            name: sqs_text(value)
            for name, value in dead_letter_attributes(
                message, context, at_most=MAX_ATTRIBUTES, failure_value_limit=MAX_ATTRIBUTE_VALUE
            ).items()
        }
        body = message.body or "(empty body)"
        request: dict[str, Any] = {
            "QueueUrl": self.dlq_url,
            "MessageBody": body,
            "MessageAttributes": string_attributes(attributes),
        }
        size = entry_size(request)
        if size > SMALLEST_MESSAGE_LIMIT and size > (limit := await self._max_message_size(self.dlq_url)):
            # SQS counts the attributes too: a message near the limit would be refused on every receive, and
            # native redrive would then move it without any context. The body is kept whole; the context is cut.
            fitted = fit_attributes(len(body.encode()), attributes, limit)
            if fitted is None:
                raise MessageTooLarge(size, limit)
            request["MessageAttributes"] = string_attributes(fitted)
        if is_fifo_url(self.dlq_url):
            request["MessageGroupId"] = message.group_id or "dead-letters"
            request["MessageDeduplicationId"] = message.message_id
        await self._by_deadline("SendMessage", CALL_SECONDS, self._client.send_message(**request))

    async def send(self, body: str, attributes: dict[str, str] | None = None, *, group_id: str | None = None) -> str:
        """Send one message to the main queue (the sweep, ``replay``, the ingress); concurrent sends share
        ``SendMessageBatch`` calls (``bridge.queue.send_batcher``)."""
        entry: dict[str, Any] = {
            "MessageBody": body,
            "MessageAttributes": string_attributes(attributes or {}),
        }
        if self.settings.is_fifo:
            entry["MessageGroupId"] = group_id or "default"
            # Unique per send: a clock's tick can hold two sends for one element, and SQS would keep only the first.
            entry["MessageDeduplicationId"] = uuid.uuid4().hex
        size = entry_size(entry)
        if size > SMALLEST_MESSAGE_LIMIT and size > (limit := await self._max_message_size(self.url)):
            # Refused before sending: SQS would fail the whole SendMessageBatch call, as if it were unavailable.
            raise MessageTooLarge(size, limit)
        return await self._sends.send(entry)

    async def _max_message_size(self, url: str) -> int:
        limit = self._message_limits.get(url)
        if limit is None:
            response = await self._by_deadline(
                "GetQueueAttributes",
                CALL_SECONDS,
                self._client.get_queue_attributes(QueueUrl=url, AttributeNames=["MaximumMessageSize"]),
            )
            limit = self._message_limits[url] = int(response["Attributes"]["MaximumMessageSize"])
        return limit

    async def _send_batch(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        call = self._client.send_message_batch(QueueUrl=self.url, Entries=entries)
        return dict(await self._by_deadline("SendMessageBatch", CALL_SECONDS, call))

    async def _by_deadline(self, action: str, seconds: float, call: Awaitable[T]) -> T:
        """``call``'s answer, or ``SqsCallTimeout`` once it has taken ``seconds`` (botocore's retries included)."""
        try:
            return await by_deadline(seconds, call)
        except DeadlineMissed as error:
            raise SqsCallTimeout(action=action, seconds=seconds, endpoint_url=self._client.meta.endpoint_url) from error


# What a dead letter gives up, in this order, when it must fit its queue's MaximumMessageSize (after the message's own
# attributes, longest first, and after ``failure.reason`` has been cut): the least telling first.
DEAD_LETTER_DROP_ORDER = (
    "failure.first_failed_at",
    "failure.source_message_id",
    REDRIVEN_FROM,
    "failure.element_id",
    "failure.attempts",
    "failure.error_class",
    "failure.stage",
)


def fit_attributes(body_bytes: int, attributes: dict[str, str], limit: int) -> dict[str, str] | None:
    """``attributes`` cut so that they fit beside a body of ``body_bytes`` in ``limit`` (as SQS counts them):
    the message's own attributes go first, longest first (``redriven_from`` last), then ``failure.reason`` is
    shortened, then the rest of the context in ``DEAD_LETTER_DROP_ORDER``. None when the body alone does not fit."""
    kept = dict(attributes)

    def over() -> int:
        return entry_size({"MessageBody": "", "MessageAttributes": string_attributes(kept)}) + body_bytes - limit

    own = sorted((name for name in kept if not is_failure_attribute(name)), key=lambda name: -len(kept[name].encode()))
    for name in own:
        if over() <= 0:
            return kept
        del kept[name]
    reason = kept.get("failure.reason", "").encode()
    if over() > 0 and reason:
        cut = reason[: max(0, len(reason) - over())].decode(errors="ignore")
        if cut:
            kept["failure.reason"] = cut
        else:
            del kept["failure.reason"]
    for name in DEAD_LETTER_DROP_ORDER:
        if over() <= 0:
            return kept
        kept.pop(name, None)
    return kept if over() <= 0 else None


def _start_error(error: ClientError, what: str, key: str, *, advice: str = "") -> BridgeError:
    """What stops the start when SQS refused a call about a queue (``what``): SQS's own trouble is an outage, which
    a later start may not meet; anything else (no such queue, access denied) the setting ``key`` names."""
    code = error.response.get("Error", {}).get("Code", "")
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code in START_OUTAGE_CODES or status >= 500:
        return TransientError(f"{what} could not be checked now (an outage, not the configuration): {code or status}")
    return ConfigError(key, f"{what} is not usable: {code or error}{advice}")


def _unreachable(error: BotoCoreError, settings: QueueSettings) -> ConfigError:
    """What stops the start when SQS did not answer: no credentials to sign with, or no endpoint that answers,
    named by the setting that chose the address (``queue.endpoint_url``, else on AWS ``queue.region``)."""
    if isinstance(error, NoCredentialsError):
        return ConfigError(
            "AWS credentials",
            "none found (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or the task's role; "
            "any pair will do for an emulator)",
        )
    key = "queue.endpoint_url" if settings.endpoint_url else "queue.region"
    return QueueUnreachable(key, f"cannot reach SQS: {error}")

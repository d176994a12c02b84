"""The ActiveMQ backend of the transport contract: STOMP 1.2 on ``stompman``.

How each outcome is carried out (ActiveMQ Classic and Artemis both speak this):

- Receive: one subscription with ``ack:client-individual`` and a broker prefetch of what the consumer may hold
  (``QueueSettings.handlers`` plus ``prefetch_for``); MESSAGE frames wait in a local inbox until the consumer asks
  for them. A message stays reserved for this connection until it is acknowledged or the connection ends.
- Redelivery: a connection that ends (a crash, ``kill -9``, a lost network, a shutdown) hands back what it held
  unacknowledged, and the broker redelivers it marked ``redelivered:true``, with no count (ActiveMQ Classic 5.17
  sends no redelivery counter over STOMP: measured, the frame's headers are the same but for ``redelivered``). Such
  a delivery is not handed out: its copy with ``bridge-attempt`` one higher replaces it (copy and ACK in one
  transaction, below), so every redelivery costs the message one attempt written on the message itself, and a
  message that kills the worker every time is dead-lettered (stage ``receive``, "redelivered after N attempts
  without an outcome …") once the attempt that ended without an outcome was the last of ``max_receive_count``. The
  copy goes to the back of the queue (no group order is kept on ActiveMQ anyway, see ``ordered_groups``); while it
  is made, the redelivery takes one place of the prefetch. A redelivery the broker takes no copy of is handed out
  as it is, counted one higher, never held.
- Done: ACK.
- Copy and ACK, one transaction: a retry's copy, a dead letter, a redelivery's recount and a redriven dead letter
  are each BEGIN, the SEND of the copy and the ACK of the original (each with a receipt: ActiveMQ answers a refused
  one with an ERROR and keeps the transaction open, so it is aborted rather than committed with the other alone),
  COMMIT with a receipt, all on the connection the original came on
  (ActiveMQ Classic honours a transactional ACK on a ``client-individual`` subscription, and keeps a scheduled SEND
  until the COMMIT). A connection lost anywhere before the COMMIT, an ERROR, or no receipt in time leaves the
  original unacknowledged and no copy (aborted, or rolled back by the broker with the connection); only a COMMIT
  whose receipt never came (``CommitUnconfirmed``) leaves it unknown whether both or neither happened, never one;
  the message is then left alone (a later retry or dead letter of it sends nothing, the broker redelivers it if
  neither happened).
- Retry later: the message is SENT again with ``AMQ_SCHEDULED_DELAY`` (the broker's scheduler holds it for the
  delay) and ``bridge-attempt`` one higher, in one transaction with the original's ACK. The attempt count lives on
  the message, so it survives a worker restart and ``max_receive_count`` still ends in a dead letter with a reason.
  When the transaction is not committed, the original (not ACKed) is handed to ``receive`` again after the delay,
  as one more attempt, rather than held for this connection until it ends. Not NACK: ActiveMQ
  Classic treats a STOMP NACK as a poison acknowledgement and moves the message to its own DLQ at once, without the
  bridge's reason; and holding the message unacknowledged for the delay would fill the prefetch with sleepers.
- Dead letter: SEND to ``queue.dlq_url`` with the original body and headers plus the ``failure.*`` context, in one
  transaction with the original's ACK (the ``complete`` that follows has nothing left to do).
- Bodies are bytes on the broker. One that is not UTF-8 keeps its bytes (``QueueMessage.raw_body``): the decoder
  dead-letters it as such, and a copy (dead letter, retry, redrive) carries the bytes as they came, never the text
  read with U+FFFD.
- Operator commands: the dead-letter queue is read with a queue browser (``browser:true`` until ``browser:end``),
  which delivers nothing; redrive receives one chosen dead letter at a time (a subscription whose selector names its
  message id), and SENDs the copy and ACKs it in one transaction; ``dlq delete`` receives it the same way and ACKs it
  alone, with a receipt. A dead letter delivered to a subscription and not
  ACKed comes back marked redelivered (one more receive), so the ones a redrive leaves are never delivered to it.
- Release (shutdown): a released message, and at the close one that waited in the inbox, is copied back to its
  queue with the attempt it had (``bridge-attempt`` and its other headers unchanged) and ACKed, all in one release
  transaction (``_ReleaseTransaction``) that stays open until the transport closes: there the subscription is
  ended first and the transaction committed after it, so the copies are never dispatched back to this closing
  connection. (Measured on 5.17: every ACK, in a transaction or not, lets the broker push one more message into the
  prefetch at once, and what the prefetch holds at the close comes back ``redelivered``; an ACK in a transaction
  still counts once the subscription it was made on has ended.) A clean shutdown therefore costs no attempt to a
  message the worker held; it costs one only to a message the broker pushed in while the release ran (a backlog
  behind the prefetch), one per message released, which it would have cost anyway. Anything that fails (a copy
  refused, no receipt, the connection lost, the consumer's deadline, a crash before the COMMIT) aborts the whole
  release transaction, or the broker rolls it back: every released message is then redelivered, one attempt each,
  as before; never copy and original both. Order: the copies go to the back of the queue in the order released;
  a group's order is not kept on ActiveMQ anyway (``ordered_groups``), and a redelivery is recounted the same way.
- Broker restart / network cut: stompman reconnects in the background (1 s, 2 s … 5 s apart, for ever) and
  subscribes again; ``connected()`` is False meanwhile. What was unacknowledged on the lost connection is
  redelivered (with ``redelivered:true``, one more attempt: see Redelivery). A delivery of the lost connection is
  therefore the broker's again: ``receive`` no longer hands it out, and settling one is not reported done (stompman
  drops its ACK; ``complete`` returns its id, ``retry_later`` sends no copy, ``send_dead_letter`` raises
  ``DeliveryLost``), so the redelivery is the message's only copy; and a copy whose transaction the lost connection
  took with it was never queued. When the connection drops again
  before the broker confirmed that subscription, stompman forgets the subscription for good; the transport then
  subscribes anew (log line ``resubscribed``), and ``connected()`` is False until it has.
- Header limits: ActiveMQ Classic refuses a frame with a header line over 10240 bytes or more than 1000 headers
  (``StompWireFormat``: "The maximum header length was exceeded") and drops the connection with it, failing every
  send in flight on it. Every header of a dead letter is bounded (``dead_letter_headers``), whatever the failure's
  reason; any other frame over the limits is refused before it is sent (``MessageTooLarge``, from ``send``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Literal, Self
from urllib.parse import quote

import stompman
import structlog
from stompman.connection_manager import ActiveConnectionState, ConnectionManager
from stompman.frames import AbortFrame, AckFrame, BeginFrame, CommitFrame, SendFrame
from stompman.receipts import PendingReceipt, PendingReceipts, make_receipt_id, wait_for_result

from bridge.config import QueueSettings, parse_stomp_url
from bridge.errors import ConfigError, QueueUnreachable
from bridge.ops import metrics
from bridge.queue.dead_letter import (
    DeadLetterContext,
    dead_letter_attributes,
    redriven_attributes,
)
from bridge.queue.transport import (
    DEFAULT_MAX_RECEIVE_COUNT,
    MAX_BATCH,
    MessageTooLarge,
    PeekedMessage,
    QueueInfo,
    QueueMessage,
    prefetch_for,
)

log = structlog.get_logger("bridge.queue")

ATTEMPT_HEADER = "bridge-attempt"
SEND_ID_HEADER = "bridge-send-id"
SCHEDULED_DELAY_HEADER = "AMQ_SCHEDULED_DELAY"
GROUP_HEADER = "JMSXGroupID"
# Headers the broker sets on a MESSAGE frame: not the producer's attributes, and never copied onto a re-send.
BROKER_HEADERS = frozenset(
    {
        "ack",
        "content-length",
        "destination",
        "expires",
        "message-id",
        "persistent",
        "priority",
        "receipt",
        "redelivered",
        "subscription",
        "timestamp",
        "scheduledJobId",
        ATTEMPT_HEADER,
        SCHEDULED_DELAY_HEADER,
        "AMQ_SCHEDULED_PERIOD",
        "AMQ_SCHEDULED_REPEAT",
        "AMQ_SCHEDULED_CRON",
    }
)
# What dlq show calls the broker's headers of a message (BROKER_HEADERS without the reader's own: the subscription
# and ack id belong to the browse that read it, not to the message).
BROKER_HEADERS_TITLE = "Broker headers"
READERS_HEADERS = frozenset({"ack", "receipt", "subscription"})
RECEIPT_TIMEOUT_SECONDS = 10.0
# The frames of a transaction the transport writes itself (``StompTransport._copy_and_ack``).
FramedWrite = BeginFrame | SendFrame | AckFrame | CommitFrame
# The most dead letters one redrive run takes on (it browses them first to bound the run).
REDRIVE_BROWSE_LIMIT = 10_000
# A queue's size on request: ActiveMQ Classic's statistics plugin (optional: a broker without it never answers)
# answers a SEND to STATISTICS_DESTINATION + the queue's name on its ``reply-to``. STATISTICS_END asks it to end its
# answer with an empty map, so that a queue the broker does not hold (nothing on it: no entry) is answered at once.
STATISTICS_DESTINATION = "/queue/ActiveMQ.Statistics.Destination."
STATISTICS_END = "ActiveMQ.Statistics.Destination.List.End.With.Null"
STATISTICS_TIMEOUT_SECONDS = 2.0
FIRST_CONNECT_TIMEOUT_SECONDS = 15.0
# The most copies one release transaction takes (``StompTransport.release``): measured on 5.17, the 500 copies of one
# transaction committed at a shutdown were dispatched to the next consumer only some 28 s later (its 30 s expiry
# scan); 100 per transaction at once.
RELEASE_TRANSACTION_COPIES = 100
# A retry whose copy was refused comes back to ``receive`` after its delay, and never sooner than this.
MIN_HAND_BACK_SECONDS = 1.0
CONNECTION_CHECK_SECONDS = 1.0
# What ActiveMQ Classic takes in a frame it is sent (StompWireFormat; 5.17 takes one byte and one header more):
# header lines ("name:value", UTF-8, escaped) of at most MAX_HEADER_LINE_BYTES, and at most MAX_FRAME_HEADERS
# headers, counting the SEND_FRAME_HEADERS stompman adds (destination, content-length, receipt).
MAX_HEADER_LINE_BYTES = 10_240
MAX_FRAME_HEADERS = 1000
SEND_FRAME_HEADERS = 3
# A dead letter's headers, well inside those limits: each value cut to MAX_HEADER_VALUE characters (at most 4 KiB
# in UTF-8, as SQS cuts failure values); the message's own headers, after the failure.* ones, only while the whole
# stays within MAX_DEAD_LETTER_HEADERS headers and MAX_DEAD_LETTER_HEADER_BYTES bytes, and none with a name longer
# than MAX_HEADER_NAME.
MAX_HEADER_VALUE = 1024
MAX_HEADER_NAME = 200
MAX_DEAD_LETTER_HEADERS = 100
MAX_DEAD_LETTER_HEADER_BYTES = 32 * 1024


@dataclasses.dataclass(slots=True)
class _ReleaseTransaction:
    """The transaction a shutdown's copies and ACKs go into (``StompTransport.release``), committed at the close.
    ``spoiled``: a step of it failed or was cancelled, so it is aborted (a SEND without its ACK must never commit)."""

    state: ActiveConnectionState
    transaction: str
    copies: int = 0
    spoiled: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class QueueStatistics:
    """A queue as ActiveMQ's statistics plugin counts it: ``size`` messages on it not yet acknowledged, all of them
    (also those beyond what the broker has paged into memory), of which ``in_flight`` are delivered to a consumer."""

    size: int
    in_flight: int

    @property
    def waiting(self) -> int:
        """The ones no consumer holds: what a browse would show, were they all in memory."""
        return max(0, self.size - self.in_flight)


@dataclasses.dataclass(frozen=True, slots=True)
class MovedDeadLetter:
    """A dead letter moved to the main queue (``send_id``: the copy's ``bridge-send-id``)."""

    send_id: str


class DeliveryLost(Exception):
    """The connection a message was delivered on is lost: it can no longer be settled on it, and the broker
    redelivers it (marked redelivered, one more attempt)."""

    def __init__(self, message_id: str) -> None:
        super().__init__(f"message {message_id}: its connection was lost; the broker redelivers it")


class WrongDeadLetter(Exception):
    """A subscription whose selector names one dead letter was delivered another: the broker did not honour the
    selector. Neither is settled."""

    def __init__(self, wanted: str, delivered: str) -> None:
        super().__init__(
            f"the broker delivered {delivered} to a subscription whose selector names {wanted} (does it honour JMS "
            "selectors?); neither was touched"
        )


class BrokerNotAnswering(Exception):
    """A dead letter asked for alone did not come, and meanwhile the connection was lost or the broker stopped
    answering (its heart-beats missed): nothing was settled, and whether it is still on its queue is not known."""

    def __init__(self, message_id: str) -> None:
        super().__init__(
            f"dead letter {message_id} did not come: the connection to the broker was lost or the broker stopped "
            "answering meanwhile; nothing was moved or deleted"
        )


class CommitUnconfirmed(Exception):
    """The broker did not confirm a transaction's COMMIT (no RECEIPT in time, or the connection lost while waiting):
    its copy and its ACK took effect both or neither, which is not known; never one without the other."""

    def __init__(self, message_id: str, reason: str) -> None:
        super().__init__(
            f"message {message_id}: the broker did not confirm the commit of its copy and ACK ({reason}): both took "
            "effect or neither"
        )
        self.reason = reason


def _not_connected(error: Exception) -> str:
    """Why the first connection was not made. stompman tries again after a refused connection or a login left
    unanswered, so its deadline ending is the usual way: its class name, TimeoutError, would read as a network that
    drops the packets."""
    if isinstance(error, TimeoutError):  # an OSError too
        return f"no STOMP connection within {FIRST_CONNECT_TIMEOUT_SECONDS:g} s of trying"
    if isinstance(error, stompman.FailedAllConnectAttemptsError):
        return f"no STOMP connection in {error.retry_attempts} attempts"
    return str(error) or type(error).__name__  # a TLS handshake's reason, for one


class StompTransport:
    """The ``Transport`` contract over one STOMP connection to ActiveMQ (see the module docstring for the mechanics).

    One instance per process, around one ``stompman.Client`` that keeps its connection alive by itself.
    """

    def __init__(self, settings: QueueSettings, client: stompman.Client) -> None:
        if settings.dlq_url is None:  # the config requires it; the check keeps the type narrow
            raise ConfigError("queue.dlq_url", "is required for a stomp:// queue")
        self.settings = settings
        self.url = settings.url
        self.dlq_url: str | None = settings.dlq_url
        self._client = client
        self._address = parse_stomp_url(settings.url)
        self._dlq_destination = parse_stomp_url(settings.dlq_url).destination
        self._inbox: asyncio.Queue[QueueMessage] = asyncio.Queue()
        self._frames: dict[str, stompman.AckableMessageFrame] = {}
        # Deliveries whose dead letter was committed with their ACK: ``complete`` has nothing left to do for them.
        self._acked: set[str] = set()
        # Deliveries whose dead letter was not sent because they are no longer this transport's to copy: their
        # connection is lost (the broker redelivers them), or their copy and ACK are unconfirmed (``CommitUnconfirmed``:
        # both took effect or neither). The retry the consumer makes of a failed dead letter sends nothing for them:
        # it would be a second message. Kept until that retry (or ``complete``, ``release``).
        self._not_to_copy: set[str] = set()
        # The main queue's subscription; None on a transport that does not consume.
        self._subscription: stompman.ManualAckSubscription | None = None
        # The copies of released messages and their ACKs, committed once the subscription has ended (``_close``).
        self._releases: list[_ReleaseTransaction] = []

    @property
    def ordered_groups(self) -> bool:
        # A retry goes to the back of the queue, so a group's order cannot be kept across one; elements keep theirs
        # through the state store's leases and modification dates.
        return False

    @property
    def lease_seconds(self) -> None:
        return None

    @property
    def aborted_receive_hides(self) -> bool:
        # ``receive`` takes from the local inbox, and a cancelled get leaves the frame there (released at the close).
        return False

    def connected(self) -> bool:
        """The connection is up and, on a consuming transport, its subscription is active (a connection that
        receives nothing is not one to report healthy)."""
        return self._client.is_alive() and self._subscribed()

    def _subscribed(self) -> bool:
        if self._subscription is None:
            return True
        # stompman has no public question for this: a subscription it forgot is no longer among its active ones.
        return self._client._active_subscriptions.contains_by_id(self._subscription.id)

    # ---- lifecycle -------------------------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, settings: QueueSettings, *, consume: bool = True) -> AsyncIterator[Self]:
        """Connect (``ConfigError`` naming ``queue.url`` when the broker cannot be reached) and, with ``consume``,
        subscribe; on exit unsubscribe and disconnect, which hands every unacknowledged message back."""
        address = parse_stomp_url(settings.url)
        tls: Literal[True] | ssl.SSLContext | None = None
        if address.tls:
            tls = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
        password = settings.password.get_secret_value() if settings.password else ""
        server = stompman.ConnectionParameters(
            host=address.host,
            port=address.port,
            login=settings.username or "",
            # stompman percent-decodes the passcode (it is meant for URL parts): encode it so it arrives as written.
            passcode=quote(password, safe=""),
        )
        client = stompman.Client(
            servers=[server],
            on_error_frame=_log_error_frame,
            ssl=tls,
            connect_retry_attempts=5,
            connect_retry_interval=1,
            connect_timeout=5,
            connection_confirmation_timeout=5,
            # After start-up, a lost connection is re-made in the background for as long as it takes.
            keep_alive_on_connection_failure=True,
            # Its default reconnects after an hour without messages: that would hand back what the worker holds.
            no_message_restart_interval=None,
            # The handler only files the frame in the inbox; the broker's prefetch bounds what arrives.
            max_concurrent_handlers=None,
        )
        async with contextlib.AsyncExitStack() as stack:
            try:
                async with asyncio.timeout(FIRST_CONNECT_TIMEOUT_SECONDS):
                    await stack.enter_async_context(client)
            except (TimeoutError, stompman.FailedAllConnectAttemptsError, OSError) as error:
                raise QueueUnreachable(
                    "queue.url",
                    f"cannot connect to the ActiveMQ broker at {address.broker}: {_not_connected(error)}; is it "
                    "running, and are host, port, username and password right?",
                ) from None
            transport = cls(settings, client)
            if consume:
                try:
                    await transport._subscribe()
                except (stompman.Error, TimeoutError) as error:  # e.g. a login that may not read the queue
                    raise ConfigError(
                        "queue.url",
                        f"the ActiveMQ broker at {address.broker} did not let this login consume "
                        f"{address.destination}: {stomp_error_text(error)}",
                    ) from None
                # The client waits for its subscriptions to end before it disconnects.
                stack.push_async_callback(transport._close)
            watcher = asyncio.create_task(transport._watch_connection(), name="stomp-connection-watch")
            stack.push_async_callback(_cancel, watcher)  # before unsubscribing: it may be subscribing anew
            yield transport

    async def _subscribe(self) -> None:
        self._subscription = await self._client.subscribe_with_manual_ack(
            self._address.destination,
            self._on_message,
            ack="client-individual",
            headers={"activemq.prefetchSize": str(self.settings.handlers + prefetch_for(self.settings.handlers))},
            receipt_timeout=RECEIPT_TIMEOUT_SECONDS,
        )

    async def _close(self) -> None:
        """Release what waited in the inbox too, end the subscription, then commit the release transaction: its
        copies reach the queue only once this connection can no longer be handed them."""
        waiting: list[QueueMessage] = []
        while not self._inbox.empty():
            waiting.append(self._inbox.get_nowait())
        with contextlib.suppress(Exception):  # logged by ``release``; those messages come back as redeliveries
            async with asyncio.timeout(RECEIPT_TIMEOUT_SECONDS):
                await self.release(self._deliverable(waiting))
        try:
            await self._unsubscribe()
        finally:
            await self._end_release()

    async def _end_release(self) -> None:
        releases, self._releases = self._releases, []
        for release in releases:
            await self._end_one_release(release)

    async def _end_one_release(self, release: _ReleaseTransaction) -> None:
        manager = self._client._connection_manager
        receipts = self._client._receipts
        if release.spoiled or manager._active_connection_state is not release.state:
            await _abort(manager, release.state, release.transaction)
            log.warning(
                "release_copies_aborted",
                count=release.copies,
                hint="the broker redelivers the released messages: one attempt each",
            )
            return
        try:
            commit = CommitFrame(headers={"transaction": release.transaction})
            await _receipt(receipts, await _write_expecting_receipt(manager, receipts, release.state, commit))
        except Exception as error:
            log.warning(
                "release_commit_failed",
                count=release.copies,
                error=stomp_error_text(error),
                hint="copied back with their attempt, or redelivered with one more: never both",
            )
            return
        log.info("released_to_queue", count=release.copies, hint="copied back with the attempt each had")

    async def _unsubscribe(self) -> None:
        # A forgotten subscription is not on the broker: unsubscribing it would only earn an ERROR frame.
        if self._subscription is not None and self._subscribed():
            await self._subscription.unsubscribe()

    async def _resubscribe(self) -> None:
        """Subscribe anew. stompman re-subscribes after a reconnect, but when that SUBSCRIBE's receipt is lost (the
        connection dropped again meanwhile) it drops the subscription and never tries again: the worker would stay
        connected, and look healthy, without receiving a message."""
        assert self._subscription is not None
        forgotten = self._subscription.id
        try:
            await self._subscribe()
        except Exception as error:  # connection lost again, or refused: the next check tries again
            log.warning(
                "resubscribe_failed", destination=self._address.destination, error=f"{type(error).__name__}: {error}"
            )
            return
        log.warning(
            "resubscribed",
            destination=self._address.destination,
            forgotten_subscription=forgotten,
            hint="the client had dropped its subscription after a failed confirmation",
        )

    async def _watch_connection(self) -> None:
        """One log line when the connection is lost and one when it is back (stompman reconnects by itself); and a
        new subscription whenever stompman has dropped the one this transport consumes from."""
        was_connected, lost_at = True, 0.0
        while True:
            await asyncio.sleep(CONNECTION_CHECK_SECONDS)
            connected = self._client.is_alive()
            if connected and not self._subscribed():
                await self._resubscribe()
            if connected == was_connected:
                continue
            was_connected = connected
            loop_time = asyncio.get_running_loop().time()
            if not connected:
                lost_at = loop_time
                log.warning(
                    "broker_connection_lost",
                    broker=self._address.broker,
                    hint="reconnecting; unacknowledged messages stay on the broker",
                )
            else:
                log.info("broker_reconnected", broker=self._address.broker, outage_seconds=round(loop_time - lost_at))

    # ---- receiving -------------------------------------------------------------------------------------------

    async def _on_message(self, frame: stompman.AckableMessageFrame) -> None:
        message = _to_message(frame)
        if frame.headers.get("redelivered") == "true" and await self._count_redelivery(frame, message):
            return
        self._frames[message.receipt_handle] = frame
        self._inbox.put_nowait(message)

    async def _count_redelivery(self, frame: stompman.AckableMessageFrame, message: QueueMessage) -> bool:
        """Write on the message the attempt its redelivery stands for; True when that settled the delivery.

        The broker redelivers what a connection held unacknowledged when it ended (the worker crashed, was killed,
        lost its connection, or shut down), marked ``redelivered`` but with no count. Handed out as it is, a message
        that kills the worker would come back for ever with the same ``bridge-attempt``. So its copy with
        ``bridge-attempt`` one higher replaces it, in one transaction with its ACK (it arrives as a fresh delivery,
        at the back of the queue); once the attempt that ended without an outcome was the last of
        ``max_receive_count``, the dead-letter queue gets it instead, with the reason. When the broker takes neither,
        the delivery is handed out as it is (counted one higher, as before), so it is never stuck here."""
        budget = self.settings.max_receive_count or DEFAULT_MAX_RECEIVE_COUNT
        attempts = message.receive_count - 1  # the attempt the header counts is the one that ended without outcome
        try:
            if attempts >= budget:
                given_up = dataclasses.replace(message, receive_count=attempts)
                context = DeadLetterContext(
                    stage="receive",
                    reason=(
                        f"redelivered after {attempts} attempts without an outcome: the worker crashed or lost its "
                        "connection while holding it"
                    ),
                    error_class="RedeliveredWithoutOutcome",
                )
                headers = _dead_letter_send_headers(given_up, context)
                await self._copy_and_ack(frame, self._dlq_destination, _payload(message), headers)
                metrics.MESSAGE_OUTCOMES.labels(context.kind).inc()
                log.error(
                    "dead_lettered",
                    message_id=message.message_id,
                    outcome="dead_letter",
                    stage=context.stage,
                    reason=context.reason,
                    error_class=context.error_class,
                )
            else:
                headers = self._carried_headers(message) | {ATTEMPT_HEADER: str(message.receive_count)}
                await self._copy_and_ack(frame, self._address.destination, _payload(message), headers)
                log.info("redelivery_counted", message_id=message.message_id, attempt=message.receive_count)
        except CommitUnconfirmed as error:  # recounted or not, the broker has it: not to be handed out as well
            log.error("redelivery_count_unconfirmed", message_id=message.message_id, error=str(error))
        except Exception as error:
            log.error(
                "redelivery_count_failed",
                message_id=message.message_id,
                error=f"{type(error).__name__}: {error}",
                hint="handed out as it is; its next redelivery counts again",
            )
            return False
        return True

    async def receive(self, max_messages: int, wait_time: int) -> list[QueueMessage]:
        """Up to ``max_messages`` of what the broker pushed, waiting up to ``wait_time`` s for the first."""
        wanted = max(1, min(MAX_BATCH, max_messages))
        messages: list[QueueMessage] = []
        try:
            async with asyncio.timeout(wait_time):
                while not messages:
                    messages = self._deliverable([await self._inbox.get()])
        except TimeoutError:
            return []
        while len(messages) < wanted and not self._inbox.empty():
            messages.extend(self._deliverable([self._inbox.get_nowait()]))
        return messages

    def _deliverable(self, messages: list[QueueMessage]) -> list[QueueMessage]:
        """Those delivered on the connection that is up: one that came on a lost connection is the broker's again
        (it redelivers it on the new one), and handing it out too would process it twice."""
        live = []
        for message in messages:
            frame = self._frames.get(message.receipt_handle)
            if frame is not None and self._delivery_alive(frame):
                live.append(message)
            else:
                self._frames.pop(message.receipt_handle, None)
        return live

    def _delivery_alive(self, frame: stompman.AckableMessageFrame) -> bool:
        """Whether ``frame`` came on the connection that is up, to a subscription the client still holds: only then
        can it be ACKed. stompman drops an ACK of a delivery of a lost connection without raising (the broker
        redelivers that message, marked redelivered), so settling one must not be reported done."""
        epoch = self._client._connection_manager._reconnection_count
        return frame._received_at_reconnection_count == epoch and self._client._active_subscriptions.contains_by_id(
            frame._subscription.id
        )

    # ---- browsing (operator commands) ------------------------------------------------------------------------

    async def browse(self, url: str, *, limit: int) -> tuple[list[PeekedMessage], bool]:
        """Up to ``limit`` messages on the queue at ``url`` (the main or the dead-letter queue), without consuming
        any, each with the broker's own headers of it (``BROKER_HEADERS_TITLE``), and whether it holds more.

        An ActiveMQ queue browser (``browser:true``) sees the queue as it is and ends with a ``browser:end`` frame;
        a browsed message is not delivered, so it counts as no attempt. ``TimeoutError`` when the broker sends
        nothing for ``RECEIPT_TIMEOUT_SECONDS``: a deep queue takes longer than that in all (stompman reads about
        3 MB/s), so the wait is for each frame, not for the whole browse.
        """
        seen: list[PeekedMessage] = []
        ended = asyncio.Event()
        answered = asyncio.Event()

        async def on_frame(frame: stompman.AckableMessageFrame) -> None:
            answered.set()
            if frame.headers.get("browser") == "end":
                ended.set()
            elif len(seen) <= limit:
                seen.append(PeekedMessage(_to_message(frame), _broker_headers(frame), BROKER_HEADERS_TITLE))
                if len(seen) > limit:  # one more than asked tells that there are more; no need to see the rest
                    ended.set()

        subscription = await self._client.subscribe_with_manual_ack(
            parse_stomp_url(url).destination,
            on_frame,
            ack="auto",
            headers={"browser": "true"},
            receipt_timeout=RECEIPT_TIMEOUT_SECONDS,
        )
        try:
            while not ended.is_set():
                answered.clear()
                async with asyncio.timeout(RECEIPT_TIMEOUT_SECONDS):
                    await answered.wait()
        finally:
            await subscription.unsubscribe()
        return seen[:limit], len(seen) > limit

    async def queue_statistics(self, url: str) -> QueueStatistics | None:
        """The queue at ``url`` as the broker's statistics plugin counts it, asked on this connection (the answer
        comes on a temporary queue of this call's); a queue the broker does not hold counts 0. None when nothing
        answers within ``STATISTICS_TIMEOUT_SECONDS`` (a broker without the plugin), the broker refuses, or the answer
        is not understood: unknown, never a failure.

        The request is non-persistent and expires with the wait: a broker without the plugin queues it as a
        message on ``ActiveMQ.Statistics.Destination.<queue>``, and drops it once expired."""
        name = parse_stomp_url(url).destination.removeprefix("/queue/")
        answers: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_frame(frame: stompman.AckableMessageFrame) -> None:
            answers.put_nowait(frame.body)

        reply_to = f"/temp-queue/bridge-statistics-{uuid.uuid4().hex}"
        expires = int((time.time() + STATISTICS_TIMEOUT_SECONDS) * 1000)
        try:
            subscription = await self._client.subscribe_with_manual_ack(
                reply_to,
                on_frame,
                ack="auto",
                headers={"transformation": "jms-map-json"},  # the answer, a JMS map message, as JSON
                receipt_timeout=STATISTICS_TIMEOUT_SECONDS,
            )
            try:
                async with asyncio.timeout(STATISTICS_TIMEOUT_SECONDS):
                    await self._client.send(
                        b"",
                        STATISTICS_DESTINATION + name,
                        headers={
                            "reply-to": reply_to,
                            STATISTICS_END: "true",
                            "persistent": "false",
                            "expires": str(expires),
                        },
                    )
                    while (entries := _statistics_map(await answers.get())) is not None:
                        if entries.get("destinationName") == f"queue://{name}":
                            return QueueStatistics(_count(entries, "size"), _count(entries, "inflightCount"))
                    return QueueStatistics(0, 0)  # the end, and no entry for it: the broker holds no such queue
            finally:
                await subscription.unsubscribe()
        except (stompman.Error, TimeoutError, ValueError) as error:
            log.info("queue_statistics_unknown", queue=url, error=stomp_error_text(error))
            return None

    async def move_dead_letter(self, message_id: str) -> MovedDeadLetter | None:
        """Move the dead letter ``message_id`` back to the main queue: receive it alone (``_dead_letter_alone``),
        then SEND its copy and ACK it in one transaction (``_copy_and_ack``). Returns the copy's ``bridge-send-id``;
        None when the dead letter did not come (no longer on the queue: another consumer took it).

        Raises when the broker did not commit the move; the dead letter then stays and no copy was queued (this one
        marked redelivered: it was tried), except after ``CommitUnconfirmed``: moved or not, never both.
        """
        async with self._dead_letter_alone(message_id) as frame:
            if frame is None:
                return None
            message = _to_message(frame)
            send_id = uuid.uuid4().hex
            headers = redriven_attributes(message) | {SEND_ID_HEADER: send_id}
            if message.group_id is not None:
                headers[GROUP_HEADER] = message.group_id
            await self._copy_and_ack(frame, self._address.destination, _payload(message), headers)
            return MovedDeadLetter(send_id)

    async def delete_dead_letter(self, message_id: str) -> bool:
        """Delete the dead letter ``message_id``: receive it alone (``_dead_letter_alone``) and ACK it, returning once
        the broker confirmed the ACK (``_ack_confirmed``). False when it did not come (no longer on the queue).
        Raises when the ACK was not confirmed; the dead letter then stays, marked redelivered (it was tried)."""
        async with self._dead_letter_alone(message_id) as frame:
            if frame is None:
                return False
            await self._ack_confirmed(frame)
            return True

    @contextlib.asynccontextmanager
    async def _dead_letter_alone(self, message_id: str) -> AsyncIterator[stompman.AckableMessageFrame | None]:
        """The dead letter ``message_id`` delivered to a subscription of its own, for as long as the block runs;
        None when it did not come within ``RECEIPT_TIMEOUT_SECONDS`` (gone: another consumer took it; or the broker
        did not take the subscription); ``WrongDeadLetter`` when another came instead; ``BrokerNotAnswering`` when it
        did not come and the connection was lost or the broker went silent meanwhile (then it may well be there).

        The subscription's selector names this one message, so no other dead letter is delivered to it: one
        delivered and not ACKed would come back marked redelivered, a receive counted on a message the operator left
        alone."""
        frames: asyncio.Queue[stompman.AckableMessageFrame] = asyncio.Queue()

        async def on_frame(frame: stompman.AckableMessageFrame) -> None:
            frames.put_nowait(frame)

        epoch = self._client._connection_manager._reconnection_count
        subscription = await self._client.subscribe_with_manual_ack(
            self._dlq_destination,
            on_frame,
            ack="client-individual",
            headers={"selector": _selector_for(message_id), "activemq.prefetchSize": "1"},
            # No RECEIPT: the message arriving confirms the subscription. With one, ActiveMQ writes the RECEIPT and
            # the MESSAGE as two small packets and the second waits for the client's delayed TCP ACK: 40 ms a dead
            # letter instead of 2 (measured on 5.17, 1,000 dead letters).
            receipt_timeout=None,
        )
        try:
            frame: stompman.AckableMessageFrame | None
            try:
                async with asyncio.timeout(RECEIPT_TIMEOUT_SECONDS):
                    frame = await frames.get()
            except TimeoutError:
                if not self._client.is_alive() or self._client._connection_manager._reconnection_count != epoch:
                    raise BrokerNotAnswering(message_id) from None
                frame = None
            if frame is not None and (delivered := frame.headers.get("message-id")) != message_id:
                # A broker that ignores the selector delivers any dead letter: never settle one nobody chose. Not
                # ACKed, it stays (marked redelivered).
                raise WrongDeadLetter(message_id, str(delivered))
            yield frame
        finally:
            await subscription.unsubscribe()

    async def _ack_confirmed(self, frame: stompman.AckableMessageFrame) -> None:
        """ACK ``frame`` with a receipt, on the connection it came on; returns once the broker confirmed it. Raises
        ``DeliveryLost`` when that connection is already lost, ``SendReceiptError`` when the broker refused the ACK,
        did not answer in time or the connection was lost meanwhile (the message then stays on its queue)."""
        manager = self._client._connection_manager
        state = manager._active_connection_state
        if state is None or not self._delivery_alive(frame):
            raise DeliveryLost(str(frame.headers.get("message-id", "?")))
        ack = _ack_frame(frame)
        receipts = self._client._receipts
        await _receipt(receipts, await _write_expecting_receipt(manager, receipts, state, ack))

    # ---- settling --------------------------------------------------------------------------------------------

    async def describe(self) -> QueueInfo:
        assert self.dlq_url is not None
        return QueueInfo(self.dlq_url, self.settings.max_receive_count or DEFAULT_MAX_RECEIVE_COUNT, has_redrive=False)

    async def complete(self, messages: Sequence[QueueMessage]) -> list[str]:
        """ACK each. One delivered on a lost connection cannot be ACKed (stompman drops the ACK; the broker
        redelivers the message), nor one whose connection is lost while its ACK is written: their ids are returned."""
        failed = []
        for message in messages:
            if message.receipt_handle in self._acked:  # its dead letter's transaction ACKed it
                self._acked.discard(message.receipt_handle)
                continue
            self._not_to_copy.discard(message.receipt_handle)
            frame = self._frames.pop(message.receipt_handle, None)
            if frame is None or not self._delivery_alive(frame):
                failed.append(message.message_id)
                continue
            await frame.ack()
            if not self._delivery_alive(frame):
                failed.append(message.message_id)
        return failed

    async def retry_later(self, messages: Sequence[QueueMessage], seconds: int) -> list[str]:
        failed = []
        for message in messages:
            if not self._held(message):
                # Its connection is lost, or its copy and ACK unconfirmed: the broker redelivers it (or it is
                # settled already), and a copy sent now would be a second message.
                self._not_to_copy.discard(message.receipt_handle)
                failed.append(message.message_id)
                continue
            headers = self._carried_headers(message)
            headers[ATTEMPT_HEADER] = str(message.receive_count + 1)
            if seconds > 0:
                headers[SCHEDULED_DELAY_HEADER] = str(seconds * 1000)
            frame = self._frames.get(message.receipt_handle)
            try:
                if frame is None:  # not received here: nothing to ACK
                    await self._send_confirmed(self._address.destination, _payload(message), headers)
                else:
                    await self._copy_and_ack(frame, self._address.destination, _payload(message), headers)
            except Exception as error:
                log.error("retry_send_failed", message_id=message.message_id, error=f"{type(error).__name__}: {error}")
                failed.append(message.message_id)
                if isinstance(error, CommitUnconfirmed):  # ACKed with its copy, or held until the connection ends
                    self._frames.pop(message.receipt_handle, None)
                else:  # rolled back: the original is still this connection's (or the broker's again)
                    self._hand_back_later(message, seconds)
                continue
            self._frames.pop(message.receipt_handle, None)
        return failed

    def _hand_back_later(self, message: QueueMessage, seconds: int) -> None:
        """A retry whose copy the broker did not confirm: the delivery is not ACKed, so the broker holds it for this
        connection, and would hand it back only when the connection ends (it may never), keeping a place of the
        prefetch meanwhile. Hand it to ``receive`` again after the delay instead, as SQS does once the visibility
        runs out: counted as one more attempt, so that the budget still ends it in a dead letter."""
        again = dataclasses.replace(
            message, receive_count=message.receive_count + 1, received_at=time.monotonic(), visible_until=0.0
        )
        asyncio.get_running_loop().call_later(max(seconds, MIN_HAND_BACK_SECONDS), self._hand_back, again)

    def _hand_back(self, message: QueueMessage) -> None:
        if self._held(message) and message.receipt_handle in self._frames:
            self._inbox.put_nowait(message)

    async def release(self, messages: Sequence[QueueMessage]) -> list[str]:
        """Copy each back to the queue with the attempt it has and ACK it, in the release transaction that the close
        commits after the subscription has ended (see the module docstring): a clean shutdown costs it no attempt.
        One that cannot be copied (its connection lost, its dead letter unconfirmed, headers the broker would
        refuse) is only forgotten, and the end of the connection hands it back (a STOMP NACK would dead-letter it),
        as is every message released here when a step fails: the whole transaction is then aborted."""
        copies: list[tuple[stompman.AckableMessageFrame, QueueMessage]] = []
        for message in messages:
            frame = self._frames.pop(message.receipt_handle, None)
            if message.receipt_handle in self._not_to_copy:
                self._not_to_copy.discard(message.receipt_handle)
            elif frame is not None and self._delivery_alive(frame):
                copies.append((frame, message))
        if self._subscription is not None:
            for start in range(0, len(copies), RELEASE_TRANSACTION_COPIES):
                await self._copy_into_release(copies[start : start + RELEASE_TRANSACTION_COPIES])
        return []

    async def _copy_into_release(self, copies: list[tuple[stompman.AckableMessageFrame, QueueMessage]]) -> None:
        """Write the SEND of each copy and the ACK of its original into the release transaction (BEGUN on first
        use), all at once, then wait for their receipts: hundreds at a shutdown, one round trip in all."""
        manager = self._client._connection_manager
        receipts = self._client._receipts
        state = manager._active_connection_state
        release = self._releases[-1] if self._releases else None
        if release is not None and release.copies + len(copies) > RELEASE_TRANSACTION_COPIES:
            release = None
        if release is None and state is not None:
            release = _ReleaseTransaction(state, uuid.uuid4().hex)
            self._releases.append(release)
            try:
                await _write(manager, state, BeginFrame(headers={"transaction": release.transaction}))
            except BaseException:
                release.spoiled = True
                raise
        if release is None or release.spoiled or release.state is not state:
            return
        frames: list[FramedWrite] = []
        for frame, message in copies:
            headers = self._carried_headers(message) | {ATTEMPT_HEADER: str(message.receive_count)}
            try:
                frames += _copy_frames(
                    frame, self._address.destination, _payload(message), headers, release.transaction
                )
            except MessageTooLarge:  # it came with them: left to the broker's redelivery
                continue
        awaited: list[PendingReceipt] = []
        try:
            for step in frames:
                awaited.append(await _write_expecting_receipt(manager, receipts, state, step))
            for pending in awaited:
                await _receipt(receipts, pending)
        except BaseException as error:
            release.spoiled = True
            for pending in awaited:
                receipts.discard(pending.receipt_id)
            if isinstance(error, Exception):
                log.error("release_copy_failed", count=len(copies), error=stomp_error_text(error))
                return
            raise
        release.copies += len(frames) // 2

    async def extend(self, messages: Sequence[QueueMessage], seconds: int) -> list[str]:
        return []

    async def send_dead_letter(self, message: QueueMessage, context: DeadLetterContext) -> None:
        """The dead letter and the original's ACK are one transaction (``_copy_and_ack``): the ``complete`` that
        follows has nothing left to do. Raises ``DeliveryLost``, sending nothing, for a message delivered on a lost
        connection: its ACK could not be sent, and the broker's redelivery of it beside the dead letter would be
        dead-lettered a second time. After that, or ``CommitUnconfirmed``, the retry the consumer makes of the
        message sends no copy either (``_not_to_copy``)."""
        if not self._held(message):
            self._not_to_copy.add(message.receipt_handle)
            raise DeliveryLost(message.message_id)
        headers = _dead_letter_send_headers(message, context)
        # The body as it came, even empty (SQS needs a stand-in text for that; a STOMP frame does not).
        frame = self._frames.get(message.receipt_handle)
        if frame is None:  # not received here: nothing to ACK
            await self._send_confirmed(self._dlq_destination, _payload(message), headers)
            return
        try:
            await self._copy_and_ack(frame, self._dlq_destination, _payload(message), headers)
        except CommitUnconfirmed:
            self._frames.pop(message.receipt_handle, None)  # ACKed with its dead letter, or held until the end
            self._not_to_copy.add(message.receipt_handle)
            raise
        del self._frames[message.receipt_handle]
        self._acked.add(message.receipt_handle)

    async def send(self, body: str, attributes: dict[str, str] | None = None, *, group_id: str | None = None) -> str:
        """Returns the ``bridge-send-id`` header it gave the message: the broker assigns its message id only on
        delivery, so this is what ties a send (``replay``, the sweep) to the message on the queue. Headers the broker
        would refuse (a line over ``MAX_HEADER_LINE_BYTES``, more than ``MAX_FRAME_HEADERS``) raise
        ``MessageTooLarge``, nothing sent: refused, not cut, since a cut attribute would alter the message."""
        return await self._send_new(body.encode(), attributes or {}, group_id)

    async def _send_new(self, body: bytes, attributes: dict[str, str], group_id: str | None) -> str:
        """SEND a new message to the main queue (``send``, a redriven copy) tagged with a fresh ``bridge-send-id``,
        which it returns, and its group."""
        send_id = uuid.uuid4().hex
        headers = attributes | {SEND_ID_HEADER: send_id}
        if group_id is not None:
            headers[GROUP_HEADER] = group_id
        await self._send_confirmed(self._address.destination, body, headers)
        return send_id

    def _held(self, message: QueueMessage) -> bool:
        """False when ``message`` came on a connection that is lost (the broker has it back), its frame then
        forgotten, or when its dead letter was not sent for that reason or is unconfirmed (``_not_to_copy``). A
        message whose frame is not known (never received here) is the caller's to copy."""
        if message.receipt_handle in self._not_to_copy:
            return False
        frame = self._frames.get(message.receipt_handle)
        if frame is None or self._delivery_alive(frame):
            return True
        del self._frames[message.receipt_handle]
        return False

    def _carried_headers(self, message: QueueMessage) -> dict[str, str]:
        """The headers of a copy that stays the same message (a retry, a redelivery's recount): all of its own, a
        redriven copy's ``first_failure.*`` among them (not ``carried_attributes``, which is for a dead letter, where
        those became ``failure.*``), and its group."""
        headers = dict(message.attributes)
        if message.group_id is not None:
            headers[GROUP_HEADER] = message.group_id
        return headers

    async def _send_confirmed(self, destination: str, body: bytes, headers: dict[str, str]) -> None:
        """SEND persistently; returns once the broker's RECEIPT arrived (raises on an ERROR, a timeout, a lost
        connection). Headers the broker would refuse raise ``MessageTooLarge`` and nothing is sent: the broker would
        drop the connection, and every other send in flight on it would fail too."""
        framed = headers | {"persistent": "true"}
        _check_headers(framed)
        await self._client.send(body, destination, headers=framed, receipt_timeout=RECEIPT_TIMEOUT_SECONDS)

    async def _copy_and_ack(
        self, frame: stompman.AckableMessageFrame, destination: str, body: bytes, headers: dict[str, str]
    ) -> None:
        """SEND a persistent copy to ``destination`` and ACK ``frame`` in one STOMP transaction, on the connection
        ``frame`` came on: BEGIN, the SEND and the ACK each with a receipt (ActiveMQ answers a refused one with an
        ERROR and keeps the transaction open: committed, the other would take effect alone), then COMMIT with a
        receipt. Returns once the broker confirmed the COMMIT: the copy is queued and the original gone.

        Until the COMMIT, a failure aborts the transaction (or the broker rolls it back with the lost connection):
        the original stays unacknowledged and no copy is queued. Raises ``DeliveryLost`` when the connection
        ``frame`` came on is already lost, ``MessageTooLarge`` before sending anything, and ``CommitUnconfirmed``
        when the COMMIT's receipt did not come. stompman's own transactions are not used: they re-send the SENDs
        and COMMIT on a new connection after a reconnect, without the ACK.
        """
        manager = self._client._connection_manager
        state = manager._active_connection_state
        if state is None or not self._delivery_alive(frame):
            raise DeliveryLost(str(frame.headers.get("message-id", "?")))
        transaction = uuid.uuid4().hex
        send, ack = _copy_frames(frame, destination, body, headers, transaction)  # MessageTooLarge: nothing sent
        receipts = self._client._receipts
        await _write(manager, state, BeginFrame(headers={"transaction": transaction}))
        awaited: list[PendingReceipt] = []
        try:
            # One after the other: two answers the broker writes back to back wait for this side's delayed TCP ACK
            # (47 ms a redriven dead letter instead of 5, measured on 5.17).
            for step in (send, ack):
                awaited.append(await _write_expecting_receipt(manager, receipts, state, step))
                await _receipt(receipts, awaited[-1])
        except BaseException:
            for pending in awaited:
                receipts.discard(pending.receipt_id)
            await _abort(manager, state, transaction)
            raise
        try:
            commit = CommitFrame(headers={"transaction": transaction})
            await _receipt(receipts, await _write_expecting_receipt(manager, receipts, state, commit))
        except stompman.SendReceiptError as error:
            if error.reason == "rejected":  # the broker refused the COMMIT: nothing of it took effect
                raise
            raise CommitUnconfirmed(str(frame.headers.get("message-id", "?")), error.reason) from None


@dataclasses.dataclass(frozen=True, slots=True)
class _Confirmation:
    """stompman's receipt waiter for any frame (its own serves only SENDs): the broker's RECEIPT, its ERROR for the
    frame, or the connection lost. An ERROR without a receipt id is another frame's (every frame of a transaction
    carries a receipt): stompman hands it to every waiter, but taken as a refused COMMIT the original would be handed
    back beside a copy the broker did commit; the wait goes on for the RECEIPT (or the timeout)."""

    receipts: PendingReceipts

    def confirm(self, pending: PendingReceipt) -> None:
        self._settle(pending, None)

    def fail_on_error_frame(self, pending: PendingReceipt, frame: stompman.ErrorFrame) -> None:
        if frame.headers.get("receipt-id") != pending.receipt_id:
            return
        self._settle(pending, stompman.SendReceiptError(receipt_id=pending.receipt_id, reason="rejected", frame=frame))

    def fail_on_connection_loss(self, pending: PendingReceipt) -> None:
        self._settle(pending, stompman.SendReceiptError(receipt_id=pending.receipt_id, reason="connection_lost"))

    def _settle(self, pending: PendingReceipt, error: stompman.SendReceiptError | None) -> None:
        self.receipts.discard(pending.receipt_id)
        if not pending.result.done():
            pending.result.set_result(error)


def _copy_frames(
    frame: stompman.AckableMessageFrame, destination: str, body: bytes, headers: dict[str, str], transaction: str
) -> tuple[SendFrame, AckFrame]:
    """A persistent copy's SEND to ``destination`` and ``frame``'s ACK, both in ``transaction``: a retry, a dead
    letter, a redriven dead letter or a release. ``MessageTooLarge`` for headers the broker would refuse."""
    framed = headers | {"persistent": "true"}
    _check_headers(framed)
    send = SendFrame.build(
        body=body,
        destination=destination,
        transaction=transaction,
        content_type=None,
        add_content_length=True,
        headers=framed,
    )
    return send, _ack_frame(frame, transaction)


def _ack_frame(frame: stompman.AckableMessageFrame, transaction: str | None = None) -> AckFrame:
    """The ACK of ``frame`` (STOMP 1.2: its ``ack`` header and subscription), inside ``transaction`` if given."""
    ack = AckFrame(headers={"id": str(frame.headers["ack"]), "subscription": frame._subscription.id})
    if transaction is not None:
        ack.headers["transaction"] = transaction
    return ack


async def _abort(manager: ConnectionManager, state: ActiveConnectionState, transaction: str) -> None:
    """ABORT ``transaction`` on its connection; on a lost one the broker rolls it back by itself. With a receipt, so
    that the broker's ERROR for it (if any) fails no other frame's receipt; never raises."""
    if manager._active_connection_state is not state:
        return
    abort = AbortFrame(headers={"transaction": transaction})
    abort.headers["receipt"] = make_receipt_id()  # type: ignore[typeddict-unknown-key]
    with contextlib.suppress(Exception):
        await state.connection.write_frame(abort)


async def _write(manager: ConnectionManager, state: ActiveConnectionState, frame: FramedWrite) -> None:
    """Write ``frame`` on that connection only (never on a new one); a connection lost meanwhile is discarded, as
    stompman does, and raises ``ConnectionLostError``."""
    if manager._active_connection_state is not state:
        raise stompman.ConnectionLostError(reason="the connection was replaced")
    try:
        await state.connection.write_frame(frame)
    except stompman.ConnectionLostError as error:
        await manager._discard_failed_connection_state(state, error)
        raise


async def _write_expecting_receipt(
    manager: ConnectionManager, receipts: PendingReceipts, state: ActiveConnectionState, frame: FramedWrite
) -> PendingReceipt:
    """``_write`` with a receipt header; the broker's answer is awaited with ``_receipt``. Every frame of a
    transaction carries one: an ERROR without a receipt id fails every receipt awaited on the connection."""
    loop = asyncio.get_running_loop()
    pending = PendingReceipt(
        waiter=_Confirmation(receipts),
        connection=state.connection,
        receipt_id=make_receipt_id(),
        epoch=manager._reconnection_count,
        deadline=loop.time() + RECEIPT_TIMEOUT_SECONDS,
        result=loop.create_future(),
    )
    frame.headers["receipt"] = pending.receipt_id  # type: ignore[typeddict-unknown-key]
    receipts.add(pending)
    try:
        await _write(manager, state, frame)
    except BaseException:
        receipts.discard(pending.receipt_id)
        raise
    return pending


async def _receipt(receipts: PendingReceipts, pending: PendingReceipt) -> None:
    """Returns once the broker's RECEIPT for ``pending`` arrived; raises ``SendReceiptError`` (rejected: the broker's
    ERROR for it; timeout; connection_lost)."""
    try:
        error = await wait_for_result(pending)
    except TimeoutError:
        error = stompman.SendReceiptError(receipt_id=pending.receipt_id, reason="timeout")
    finally:
        receipts.discard(pending.receipt_id)
    if error is not None:
        raise error


def dead_letter_headers(message: QueueMessage, context: DeadLetterContext) -> dict[str, str]:
    """``dead_letter_attributes`` as headers the broker takes, however long the reason or the message's own headers
    (see ``MAX_HEADER_VALUE``): an oversized header would make the broker drop the connection, the dead letter would
    never be sent, and the message would come back again and again."""
    headers: dict[str, str] = {}
    size = 0
    for name, full in dead_letter_attributes(message, context, failure_value_limit=MAX_HEADER_VALUE).items():
        value = full[:MAX_HEADER_VALUE]
        line = _header_line_bytes(name, value) + 1  # and its "\n"
        # The failure.* headers come first and always fit (seven short names, values of at most 4 KiB); what does
        # not fit is one of the message's own headers, left off the dead letter.
        fits = size + line <= MAX_DEAD_LETTER_HEADER_BYTES and len(headers) < MAX_DEAD_LETTER_HEADERS
        if fits and len(name) <= MAX_HEADER_NAME:
            headers[name] = value
            size += line
    return headers


def _dead_letter_send_headers(message: QueueMessage, context: DeadLetterContext) -> dict[str, str]:
    """What the SEND of a dead letter carries: ``dead_letter_headers`` and the message's group."""
    headers = dead_letter_headers(message, context)
    if message.group_id is not None:
        headers[GROUP_HEADER] = message.group_id[:MAX_HEADER_VALUE]
    return headers


def _check_headers(headers: dict[str, str]) -> None:
    """``MessageTooLarge`` for a SEND's headers the broker would refuse (``MAX_FRAME_HEADERS``,
    ``MAX_HEADER_LINE_BYTES``), each line measured as ``dead_letter_headers`` measures it."""
    count = len(headers) + SEND_FRAME_HEADERS
    if count > MAX_FRAME_HEADERS:
        raise MessageTooLarge(count, MAX_FRAME_HEADERS, unit="headers")
    for name, value in headers.items():
        line = _header_line_bytes(name, value)
        if line > MAX_HEADER_LINE_BYTES:
            raise MessageTooLarge(line, MAX_HEADER_LINE_BYTES, what=f"header line {name[:40]!r}")


def _header_line_bytes(name: str, value: str) -> int:
    """Bytes of the header line ``name:value`` in a STOMP 1.2 frame, without its newline."""
    return _encoded_length(name) + 1 + _encoded_length(value)


def _encoded_length(text: str) -> int:
    """Bytes of ``text`` in a STOMP 1.2 header: UTF-8, with backslash, colon, CR and LF escaped to two."""
    return len(text.encode(errors="replace")) + sum(text.count(char) for char in "\\:\r\n")


def broker_stalled(error: Exception) -> bool:
    """Whether ``error`` is the broker not answering a frame in time: a broker that blocks its producers (memory or
    store full: producer flow control) or is overloaded, which makes every frame after it wait as long."""
    if isinstance(error, stompman.SendReceiptError):
        return error.reason == "timeout"
    return isinstance(error, CommitUnconfirmed) and error.reason == "timeout"


def stomp_error_text(error: Exception) -> str:
    """One line for what the broker or the connection did: the broker's own message where it refused (an ERROR
    frame), else what went wrong (no answer in time, the connection lost)."""
    if isinstance(error, stompman.SubscriptionError | stompman.SendReceiptError):
        message = error.frame.headers.get("message") if error.frame is not None else None
        if error.reason == "rejected" and message:
            return "refused by the broker: " + " ".join(str(message).split())
        if error.reason == "timeout":
            return f"timeout: no answer within {RECEIPT_TIMEOUT_SECONDS:g} s"
        return error.reason.replace("_", " ")
    if isinstance(error, TimeoutError):
        return f"timeout: no answer within {RECEIPT_TIMEOUT_SECONDS:g} s"
    return f"{type(error).__name__}: {error}"


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _broker_headers(frame: stompman.AckableMessageFrame) -> dict[str, str]:
    """The headers the broker set on the message (``BROKER_HEADERS``), without the ones of the subscription that read
    it (``READERS_HEADERS``)."""
    return {
        name: str(value)
        for name, value in frame.headers.items()
        if name in BROKER_HEADERS and name not in READERS_HEADERS
    }


def _selector_for(message_id: str) -> str:
    """A JMS selector that names one message (a quote in an SQL-92 string literal is doubled)."""
    quoted = message_id.replace("'", "''")
    return f"JMSMessageID = '{quoted}'"


def _payload(message: QueueMessage) -> bytes:
    """What a copy of ``message`` carries: its bytes as received."""
    return message.raw_body if message.raw_body is not None else message.body.encode()


def _to_message(frame: stompman.AckableMessageFrame) -> QueueMessage:
    """A MESSAGE frame as the transport contract's message (the broker's own headers left out of the attributes)."""
    headers: dict[str, str] = dict(frame.headers)  # type: ignore[arg-type]
    # A browser's frames (ack:auto) carry no ack id.
    handle = f"{headers['subscription']}/{headers['ack']}" if "ack" in headers else headers["subscription"]
    attempt = _int(headers.get(ATTEMPT_HEADER), 1)
    timestamp = _int(headers.get("timestamp"), 0)
    try:
        body, raw_body = frame.body.decode(), None
    except UnicodeDecodeError:  # kept as bytes: the text is only for reading (the decoder rejects it, dlq show)
        body, raw_body = frame.body.decode(errors="replace"), frame.body
    return QueueMessage(
        message_id=headers.get("message-id", handle),
        receipt_handle=handle,
        body=body,
        raw_body=raw_body,
        attributes={name: value for name, value in headers.items() if name not in BROKER_HEADERS},
        # A redelivery after a lost connection is an attempt the message's header does not know of yet.
        receive_count=attempt + (1 if headers.get("redelivered") == "true" else 0),
        sent_at=timestamp / 1000 if timestamp else None,
        group_id=headers.get(GROUP_HEADER),
    )


def _statistics_map(body: bytes) -> dict[str, object] | None:
    """One answer of the statistics plugin (a JMS map message as ``jms-map-json``: ``{"map": {"entry": [...]}}``,
    each entry ``{"string": key, "long": value}`` or ``{"string": [key, value]}``) as a dict; None for the empty map
    that ends the answer (``{"map": ""}``). ``ValueError`` for anything else."""
    try:
        shape = json.loads(body)["map"]
        if not shape:
            return None
        entries = shape["entry"]
        values: dict[str, object] = {}
        for entry in entries if isinstance(entries, list) else [entries]:  # one entry comes as an object, not a list
            key = entry["string"]
            if isinstance(key, list):
                values[str(key[0])] = key[1]
            else:
                (values[str(key)],) = (value for kind, value in entry.items() if kind != "string")
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as error:  # ValueError: not JSON
        raise ValueError(f"not a statistics answer: {error!r}") from None
    return values


def _count(entries: dict[str, object], name: str) -> int:
    """The statistic ``name`` of a statistics answer (``_statistics_map``); ``ValueError`` when it holds no count."""
    value = entries.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"no count {name}: {value!r}")
    return value


def _log_error_frame(frame: stompman.ErrorFrame) -> None:
    log.error("broker_error", message=frame.headers.get("message"), body=frame.body.decode(errors="replace")[:500])


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default

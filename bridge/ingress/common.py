"""What both receivers share: answers, body parsing, authentication and the enqueue that makes a call durable."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import structlog
from aiohttp import web

from bridge.ingress import metrics
from bridge.ingress.auth import CredentialCheck, KeyExchange, basic_credentials
from bridge.ingress.lookup import NO_ID, id_answer
from bridge.pipeline.notification import (
    Event,
    Notification,
    PoisonMessage,
    decode_payload,
    json_kind,
    resync_notification,
)
from bridge.queue import MessageTooLarge, Transport

log = structlog.get_logger("bridge.ingress")

JSON_TYPES = ("application/json",)
# How long a failed send keeps the ingress not ready, and what a 503 tells the caller to wait.
RECHECK_SECONDS = 10
# On a message enqueued without the body the queue could not take: the body's size in bytes.
TRIMMED_ATTRIBUTE = "trimmed_body_bytes"
# The most a token request's body is read (seed 002's form: grant_type, api_key, api_secret; a few hundred bytes).
MAX_TOKEN_REQUEST_BYTES = 4096
_NON_CHARACTERS = str.maketrans({"\ufffe": "\\ufffe", "\uffff": "\\uffff"})
# What a call enqueued (element id, event, message id), for its one ``ingress_request`` log line.
ENQUEUED = web.RequestKey("enqueued", dict[str, Any])
# When (the event loop's clock) a call's body must have arrived: its head's arrival + ingress.body_timeout_seconds.
BODY_DEADLINE = web.RequestKey("body_deadline", float)
# The status a call is logged and counted under when its client went away before its answer (nginx's "client closed
# request"): never sent, no one is there to receive it; a 4xx, as the cause is the client's, not the bridge's.
CLIENT_CLOSED_REQUEST = 499


# A route's answer to ``Expect: 100-continue`` (aiohttp's ``expect_handler``), and what builds it (bridge.ingress.app)
# from the credential check the route's callers must pass before their body is invited: None for a token route,
# whose caller may be known only from its body (seed 002's form).
ExpectHandler = Callable[[web.Request], Awaitable[web.StreamResponse | None]]
ContinueIf = Callable[[CredentialCheck | KeyExchange | None], ExpectHandler]


class QueueUnavailable(Exception):
    """The queue did not confirm the send in time: the caller answers 503 and Kordiam retries."""


def problem(status: int, message: str, **extra: Any) -> web.Response:
    """Every error answer: ``{"error": message}`` and no internals."""
    return web.json_response({"error": message, **extra}, status=status)


@dataclass(slots=True)
class Enqueuer:
    """Sends one notification and returns only once the queue holds it (``Transport.send``'s promise). A body
    larger than the queue takes (``MessageTooLarge``) goes as Kordiam's id shape instead, marked with
    ``TRIMMED_ATTRIBUTE``."""

    transport: Transport
    timeout_seconds: float
    # Until when a failed send keeps /readyz at 503. It lapses by itself: nothing else would clear it if whatever
    # reads /readyz (a load balancer) stopped sending the calls whose success clears it.
    _failed_until: float = 0.0

    @property
    def healthy(self) -> bool:
        """The queue took the last send, or the last failure is more than ``RECHECK_SECONDS`` old."""
        return time.monotonic() >= self._failed_until

    async def enqueue(self, body: str, notification: Notification, event: Event, source: str) -> str:
        started = time.perf_counter()
        attributes = {"event": event.value, "source": source}
        group_id = str(notification.element_id)
        if not self.transport.connected():  # known down (a broker restart): say so now, not after the timeout
            self._unavailable(notification, "disconnected")
        try:
            async with asyncio.timeout(self.timeout_seconds):
                try:
                    message_id = await self.transport.send(body, attributes, group_id=group_id)
                except MessageTooLarge as too_large:
                    # Kordiam would retry the same body and then drop the call. The worker fetches the element
                    # from Kordiam anyway, so the id and the event are the notification; only the body's
                    # modificationDate (which lets the worker skip a stale one unfetched) stays behind.
                    metrics.BODIES_TRIMMED.inc()
                    log.info(
                        "ingress_body_trimmed",
                        element_id=notification.element_id,
                        size=too_large.size,
                        limit=too_large.limit,
                    )
                    compact, _ = resync_notification(notification.element_id, source=source, event=event.value)
                    trimmed = attributes | {TRIMMED_ATTRIBUTE: str(too_large.size)}
                    message_id = await self.transport.send(compact, trimmed, group_id=group_id)
        except Exception as error:  # any failure of the queue is the same answer: not taken, try again
            self._unavailable(notification, type(error).__name__, error)
        self._failed_until = 0.0
        metrics.ENQUEUE_SECONDS.observe(time.perf_counter() - started)
        return message_id

    def _unavailable(self, notification: Notification, error: str, cause: BaseException | None = None) -> NoReturn:
        self._failed_until = time.monotonic() + RECHECK_SECONDS
        metrics.QUEUE_UNAVAILABLE.inc()
        log.warning("enqueue_failed", element_id=notification.element_id, error=error)
        raise QueueUnavailable from cause


def body_too_slow() -> web.Response:
    """The 408 for a body that did not arrive by ``BODY_DEADLINE``; the connection is closed after it."""
    metrics.BODY_TIMEOUTS.inc()
    answer = problem(408, "body not received within ingress.body_timeout_seconds")
    answer.force_close()  # the rest of that body is not waited for on this connection
    return answer


def retry_later(message: str) -> web.Response:
    """Every 503 of a call: the reason, and ``Retry-After: RECHECK_SECONDS`` (Kordiam retries)."""
    answer = problem(503, message)
    answer.headers["Retry-After"] = str(RECHECK_SECONDS)
    return answer


def state_unavailable(error: Exception) -> web.Response:
    """The 503 for a call the state store could not answer (a DynamoDB throttle or outage); logged in one line."""
    log.warning("state_lookup_failed", error=type(error).__name__)
    return retry_later("state store unavailable, retry later")


def authenticate(request: web.Request, check: CredentialCheck | KeyExchange, receiver: str) -> web.Response | None:
    """None when allowed; the 401 answer otherwise (counted, logged without the credentials)."""
    reason = check.check(request.headers)
    if reason is None:
        return None
    metrics.AUTH_FAILURES.labels(receiver).inc()
    log.warning("auth_failed", receiver=receiver, reason=reason)
    return problem(401, "missing or invalid credentials")


async def json_object(request: web.Request, what: str) -> tuple[str, dict[str, Any]] | web.Response:
    """A JSON object body (its text and parsed), or the 415/400 answer saying what is wrong; ``what`` names the
    object Kordiam sends in the message."""
    if request.content_type not in JSON_TYPES and not request.content_type.endswith("+json"):
        return problem(415, f"Content-Type must be application/json, not {request.content_type or 'missing'}")
    try:
        async with asyncio.timeout_at(request.get(BODY_DEADLINE)):
            raw = await request.read()
    except TimeoutError:
        return body_too_slow()
    if not raw:  # no Content-Length and no chunks is no body (RFC 9112 6.3), not a 411
        return problem(400, f"body is empty: {what}, as JSON, expected")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return problem(400, f"body is not UTF-8 (byte {error.start})")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        return problem(400, f"body is not JSON: {error.msg} at line {error.lineno} column {error.colno}")
    except RecursionError:
        return problem(400, "body is not JSON: nested too deeply")
    except ValueError as error:  # an integer longer than Python reads (sys.get_int_max_str_digits)
        return problem(400, f"body is not JSON: {str(error).partition(';')[0][:120]}")
    if not isinstance(payload, dict):
        return problem(400, f"body must be a JSON object ({what}), not a JSON {json_kind(payload)}")
    return text, payload


@dataclass(frozen=True, slots=True)
class ElementCalls:
    """What both receivers do with Kordiam's element calls, answering only once the queue holds the message.

    ``take`` (a POST or PUT): the caller's credentials (401), the element body (415/400), the enqueue (503 when
    the queue did not confirm); the receiver builds the answer from what it returns. ``delete``: the id in the
    path mapped back to the elements it may stand for by ``elements_for`` (nothing enqueued, 200 ``mapped:
    false``, when it maps to none; 400 when it is not UTF-8), a ``deleted`` notification enqueued for each, the id
    answered back.
    """

    receiver: str
    source: str
    check: CredentialCheck | KeyExchange
    enqueuer: Enqueuer

    async def take(self, request: web.Request, event: Event) -> tuple[dict[str, Any], Notification] | web.Response:
        """The element body (parsed) and its notification, once enqueued; or the refusal to answer."""
        if (refused := authenticate(request, self.check, self.receiver)) is not None:
            return refused
        parsed = await json_object(request, "a Kordiam element")
        if isinstance(parsed, web.Response):
            return parsed
        text, payload = parsed
        try:
            notification = decode_payload(payload)
        except PoisonMessage as error:
            return problem(400, f"body is not a Kordiam element: {error.reason}")
        # SQS refuses U+FFFE and U+FFFF (not XML characters), which valid JSON holds raw only inside strings: as
        # escapes the body is the same JSON, and every queue takes it.
        text = text.translate(_NON_CHARACTERS)
        if (unavailable := await self._enqueue(request, text, notification, event)) is not None:
            return unavailable
        return payload, notification

    async def delete(self, request: web.Request, elements_for: Callable[[str], Awaitable[list[int]]]) -> web.Response:
        if (refused := authenticate(request, self.check, self.receiver)) is not None:
            return refused
        external_id = request.match_info["id"]
        if not external_id.isascii() and not _utf8(external_id):
            # Raw bytes that are not UTF-8, which aiohttp's pure-Python parser takes into the path (its C parser
            # answers them 400 itself): no state store can look them up, and a 503 would have Kordiam retry in vain.
            return problem(400, "the id in the path is not UTF-8")
        unknown = external_id.strip().casefold() in NO_ID
        try:
            element_ids = [] if unknown else await elements_for(external_id)
        except Exception as error:  # the state store failed: Kordiam retries, as for a failing queue
            return state_unavailable(error)
        if not element_ids:
            metrics.UNMAPPED.labels(self.receiver).inc()
            log.warning("delete_unmapped", receiver=self.receiver, external_id=external_id[:80])
            # Nothing to enqueue; a 404 would only make Kordiam retry the same unmappable call.
            return web.json_response({"id": None, "mapped": False})
        # The worker fetches each element before it acts: one that still exists is only synced again.
        for element_id in element_ids:
            body, _ = resync_notification(element_id, source=self.source, event=Event.DELETED.value)
            notification = Notification(element_id, Event.DELETED)
            if (unavailable := await self._enqueue(request, body, notification, Event.DELETED)) is not None:
                return unavailable
        if len(element_ids) > 1:
            request[ENQUEUED]["element_ids"] = element_ids
        return web.json_response({"id": id_answer(external_id)})

    async def _enqueue(
        self, request: web.Request, body: str, notification: Notification, event: Event
    ) -> web.Response | None:
        """None once the queue holds the message (what was enqueued goes into the call's log line); else the 503."""
        try:
            message_id = await self.enqueuer.enqueue(body, notification, event, self.source)
        except QueueUnavailable:
            return retry_later("queue unavailable, retry later")
        request[ENQUEUED] = {
            "element_id": notification.element_id,
            "webhook_event": event.value,
            "message_id": message_id,
        }
        return None


def _utf8(text: str) -> bool:
    """Whether ``text`` is UTF-8 as received: aiohttp keeps the bytes of a path that are not as lone surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# A token request's form is read before its caller is known, for up to ingress.body_timeout_seconds: at most this
# many such forms are read at once per token endpoint, so that an unknown caller trickling forms cannot hold every
# slot of ingress.max_concurrent_requests and leave Kordiam's webhook calls (whose callers are known from their
# headers) with 503s. Kordiam asks for a token about once per token lifetime; a Basic header needs no body.
MAX_TOKEN_FORMS_IN_PROGRESS = 8


def token_route(path: str, exchange: KeyExchange, receiver: str, name: str, expect: ContinueIf) -> web.RouteDef:
    """``POST {path}``: HTTP Basic ``key:secret`` or the form ``api_key=…&api_secret=…`` → a bearer token."""
    forms_in_progress = 0

    async def issue_token(request: web.Request) -> web.Response:
        nonlocal forms_in_progress
        # The caller is not authenticated yet: with a Basic header the body is not needed (Basic wins), and a form
        # is a few short fields, so no more than MAX_TOKEN_REQUEST_BYTES is read, rather than max_body_bytes.
        body: bytes | web.Response = b""
        if basic_credentials(request.headers) is None:
            if forms_in_progress >= MAX_TOKEN_FORMS_IN_PROGRESS:
                metrics.OVER_CAPACITY.inc()
                return retry_later(f"{MAX_TOKEN_FORMS_IN_PROGRESS} token requests are being read already, retry later")
            forms_in_progress += 1
            try:
                body = await _small_body(request)
            finally:
                forms_in_progress -= 1
        if isinstance(body, web.Response):
            return body
        answer = exchange.exchange(request.headers, body)
        if answer is None:
            metrics.AUTH_FAILURES.labels(receiver).inc()
            log.warning("auth_failed", receiver=receiver, reason="token request with wrong or missing key/secret")
            return problem(401, "missing or invalid credentials")
        # RFC 6749 5.1: an answer carrying a token must not be stored by any cache on its way.
        return web.json_response(answer, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    return web.post(path, issue_token, name=name, expect_handler=expect(None))


async def _small_body(request: web.Request) -> bytes | web.Response:
    """The body; or the 413 (nothing more read) once it is longer than ``MAX_TOKEN_REQUEST_BYTES``, or the 408 once
    it is late."""
    if request.content_length is not None and request.content_length > MAX_TOKEN_REQUEST_BYTES:
        return _token_body_too_large()
    body = bytearray()
    try:
        async with asyncio.timeout_at(request.get(BODY_DEADLINE)):
            async for chunk in request.content.iter_any():
                body += chunk
                if len(body) > MAX_TOKEN_REQUEST_BYTES:
                    return _token_body_too_large()
    except TimeoutError:
        return body_too_slow()
    return bytes(body)


def _token_body_too_large() -> web.Response:
    return problem(413, f"a token request's body is at most {MAX_TOKEN_REQUEST_BYTES} bytes")

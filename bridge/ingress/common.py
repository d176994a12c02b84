"""What both receivers share: answers, body parsing, authentication and the enqueue that makes a call durable."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from bridge.ingress import metrics
from bridge.ingress.auth import CredentialCheck, KeyExchange
from bridge.pipeline.notification import Event, Notification, PoisonMessage, decode_notification
from bridge.queue import Transport

log = structlog.get_logger("bridge.ingress")

JSON_TYPES = ("application/json",)


class QueueUnavailable(Exception):
    """The queue did not confirm the send in time: the caller answers 503 and Kordiam retries."""


def problem(status: int, message: str, **extra: Any) -> web.Response:
    """Every error answer: ``{"error": message}`` and no internals."""
    return web.json_response({"error": message, **extra}, status=status)


@dataclass(slots=True)
class Enqueuer:
    """Sends one notification and returns only once the queue holds it (``Transport.send``'s promise)."""

    transport: Transport
    timeout_seconds: float
    healthy: bool = True

    async def enqueue(self, body: str, notification: Notification, event: Event, source: str) -> str:
        started = time.perf_counter()
        attributes = {"event": event.value, "source": source}
        try:
            async with asyncio.timeout(self.timeout_seconds):
                message_id = await self.transport.send(body, attributes, group_id=str(notification.element_id))
        except Exception as error:  # any failure of the queue is the same answer: not taken, try again
            self.healthy = False
            metrics.QUEUE_UNAVAILABLE.inc()
            log.warning("enqueue_failed", element_id=notification.element_id, error=type(error).__name__)
            raise QueueUnavailable from error
        self.healthy = True
        metrics.ENQUEUE_SECONDS.observe(time.perf_counter() - started)
        log.info(
            "enqueued",
            element_id=notification.element_id,
            webhook_event=event.value,
            message_id=message_id,
            source=source,
        )
        return message_id


def authenticate(request: web.Request, check: CredentialCheck | KeyExchange, receiver: str) -> web.Response | None:
    """None when allowed; the 401 answer otherwise (counted, logged without the credentials)."""
    reason = check.check(request.headers)
    if reason is None:
        return None
    metrics.AUTH_FAILURES.labels(receiver).inc()
    log.warning("auth_failed", receiver=receiver, reason=reason)
    return problem(401, "missing or invalid credentials")


async def element_body(request: web.Request) -> tuple[str, dict[str, Any], Notification] | web.Response:
    """The JSON element body of a POST/PUT (text and parsed) and the notification it makes, or the 400/415 answer."""
    if request.content_type not in JSON_TYPES and not request.content_type.endswith("+json"):
        return problem(415, f"Content-Type must be application/json, not {request.content_type or 'missing'}")
    raw = await request.read()
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
    if not isinstance(payload, dict):
        return problem(400, f"body must be a JSON object (a Kordiam element), not a JSON {type(payload).__name__}")
    try:
        notification = decode_notification(text)
    except PoisonMessage as error:
        return problem(400, f"body is not a Kordiam element: {error.reason}")
    return text, payload, notification


def token_route(path: str, exchange: KeyExchange, receiver: str, name: str) -> web.RouteDef:
    """``POST {path}``: HTTP Basic ``key:secret`` or the form ``api_key=…&api_secret=…`` → a bearer token."""

    async def issue_token(request: web.Request) -> web.Response:
        answer = exchange.exchange(request.headers, await request.read())
        if answer is None:
            metrics.AUTH_FAILURES.labels(receiver).inc()
            log.warning("auth_failed", receiver=receiver, reason="token request with wrong or missing key/secret")
            return problem(401, "missing or invalid credentials")
        return web.json_response(answer)

    return web.post(path, issue_token, name=name)

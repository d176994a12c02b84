"""Starlette app: the Kordiam API v2 subset the bridge uses, plus an admin API to drive scenarios.

Public API routes live under ``/api/v2`` and behave like Kordiam (bearer auth, problem+json errors,
cursor pagination). Admin routes under ``/_admin`` need no auth; they change elements the way editors
would in Kordiam and emit the matching SQS change notification.

Why one module of ~620 lines: one ``Simulator`` class holds the route table and a handler per route (the API's
shape, read top to bottom against ``reference/kordiam-api.md``); its state lives in ``bridge.simulator.store``.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC
from email.utils import formatdate
from typing import Any, Final
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.simulator.errors import (
    FieldError,
    SimulatorProblem,
    bad_request,
    unauthorized,
    validation_failed,
)
from bridge.simulator.notify import NOTIFICATION_EVENTS, NotificationEvent, Notifier
from bridge.simulator.settings import SimulatorSettings
from bridge.simulator.store import (
    Clock,
    ElementStore,
    FaultInjector,
    IssuedTokens,
    JSONObject,
    RecordedRequest,
    RequestLog,
    TokenState,
    TokenStore,
    decode_cursor,
    encode_cursor,
    has_platform,
    parse_fault,
    parse_query_instant,
    platforms,
    publication_statuses,
    utc_now,
)
from bridge.simulator.webhooks import WebhookCaller, WebhookEvent

logger = logging.getLogger(__name__)

API_PREFIX: Final = "/api/v2"
DEFAULT_PAGE_SIZE: Final = 20
MAX_PAGE_SIZE: Final = 100
PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
SUPPORTED_API_VERSIONS: Final = ("2.0",)
ACCEPTED_API_VERSIONS: Final = frozenset({"2", *SUPPORTED_API_VERSIONS})
_FORM_MEDIA_TYPE: Final = "application/x-www-form-urlencoded"
# Filters (and sorting) Kordiam documents for GET /api/v2/elements that the simulator does not implement: refused by
# name, since answering every element would pass a client that relies on one with data Kordiam would not list.
_UNSIMULATED_LIST_PARAMETERS: Final = (
    "dateFrom",
    "dateTo",
    "creationDateFrom",
    "creationDateTo",
    "deadlineFrom",
    "deadlineTo",
    "done",
    "formatIds",
    "userId",
    "groupIds",
    "platformId",
    "sort",
)
# Never echo credentials into the request log that tests and users print.
_REDACTED_FIELDS: Final = frozenset({"client_secret", "refresh_token"})

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class ApiCall:
    """One API request with its body already read (it is needed for both handler and request log)."""

    request: Request
    body: bytes
    # The public API takes JSON bodies only, as Kordiam does (415 otherwise); the admin API reads any body as JSON.
    json_only: bool = False

    def path_id(self, name: str) -> int:
        value: int = self.request.path_params[name]
        return value

    def json_body(self) -> Any:
        if not self.body.strip():
            raise bad_request("A JSON request body is required.")
        if self.json_only and not _is_json(self.request.headers.get("content-type", "")):
            raise SimulatorProblem(
                415, "unsupported-media-type", "The request body must be application/json (Content-Type)."
            )
        try:
            return json.loads(self.body, parse_constant=_refuse_constant)
        except ValueError:
            raise bad_request("The request body is not valid JSON.") from None
        except RecursionError:  # Python's parser recurses: a body too deep for it is the client's error, not a crash
            raise bad_request("The request body is nested too deeply.") from None


def _refuse_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (RFC 8259) and Kordiam's parser refuses them; stored, one would make every
    later answer carrying it unserialisable."""
    raise ValueError(f"{name} is not a JSON value")


ApiHandler = Callable[[ApiCall], Awaitable[Response]]


def _is_json(content_type: str) -> bool:
    """``application/json`` or an ``application/…+json`` type, parameters aside (media types ignore case)."""
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


def problem_response(problem: SimulatorProblem, instance: str, trace_id: str | None = None) -> JSONResponse:
    return JSONResponse(
        problem.to_json(instance, trace_id or uuid.uuid4().hex),
        status_code=problem.status,
        headers=dict(problem.headers),
        media_type=PROBLEM_MEDIA_TYPE,
    )


def _token_response(tokens: IssuedTokens) -> JSONResponse:
    return JSONResponse(
        {
            "access_token": tokens.access_token,
            "token_type": "Bearer",
            "expires_in": tokens.expires_in,
            "scope": "api.read api.write",
            "refresh_token": tokens.refresh_token,
        }
    )


def _list_envelope(content: list[JSONObject]) -> JSONObject:
    # `size` is the number of items in this page, the same for reference lists and element pages.
    return {"content": content, "size": len(content), "hasMore": False}


def _form_fields(call: ApiCall) -> dict[str, str]:
    """Token endpoints accept JSON or form-encoded bodies, as Kordiam documents."""
    content_type = call.request.headers.get("content-type", "").lower()
    if content_type.startswith(_FORM_MEDIA_TYPE):
        return dict(parse_qsl(call.body.decode("utf-8", "replace"), keep_blank_values=True))
    body = call.json_body()
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return {key: value for key, value in body.items() if isinstance(value, str)}


def _loggable_body(request: Request, body: bytes) -> Any:
    if not body.strip():
        return None
    if request.headers.get("content-type", "").startswith(_FORM_MEDIA_TYPE):
        parsed: Any = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    else:
        try:
            parsed = json.loads(body)
        except ValueError:
            return None
    if isinstance(parsed, dict):
        return {key: "***" if key in _REDACTED_FIELDS else value for key, value in parsed.items()}
    return parsed


def _same_secret(given: str | None, expected: str) -> bool:
    # Constant-time comparison on bytes (compare_digest rejects non-ASCII str).
    return given is not None and secrets.compare_digest(given.encode(), expected.encode())


def _page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    # int() alone would also read "1_0", which Kordiam's Java number parsing refuses.
    if not re.fullmatch(r"\s*[+-]?[0-9]+\s*", raw):
        raise validation_failed([FieldError("query", "size", "type-mismatch", "size must be an integer.")])
    size = int(raw)
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise validation_failed(
            [FieldError("query", "size", "out-of-range", f"size must be between 1 and {MAX_PAGE_SIZE}.")]
        )
    return size


def _check_api_version(request: Request) -> None:
    """The optional ``API-Version`` header names a minor version of the path's major one (reference/kordiam-api.md
    3.1); one Kordiam does not serve is 400 ``unsupported-version``."""
    requested = request.headers.get("api-version")
    if requested is not None and requested.strip() not in ACCEPTED_API_VERSIONS:
        raise SimulatorProblem(
            400,
            "unsupported-version",
            f"API-Version {requested!r} is not served here; supported: {', '.join(SUPPORTED_API_VERSIONS)}.",
            extensions={"requestedVersion": requested, "supportedVersions": list(SUPPORTED_API_VERSIONS)},
        )


def _notification_event(body: Any) -> NotificationEvent:
    unknown = [key for key in body if key != "event"] if isinstance(body, dict) else []
    if unknown:  # a misspelt "event" would silently send the default
        raise validation_failed(
            [FieldError("body", key, "unknown-field", f"Unknown field '{key}'.") for key in unknown]
        )
    event = body.get("event", "updated") if isinstance(body, dict) else None
    for known in NOTIFICATION_EVENTS:
        if event == known:
            return known
    raise validation_failed(
        [FieldError("body", "event", "invalid", f"event must be one of {', '.join(NOTIFICATION_EVENTS)}.")]
    )


class Simulator:
    """Shared state of one simulator app and its request handlers."""

    def __init__(self, settings: SimulatorSettings, clock: Clock = utc_now) -> None:
        self.settings = settings
        self.clock = clock
        self.store = ElementStore(clock)
        self.tokens = TokenStore(clock, settings.token_ttl_seconds)
        self.requests = RequestLog()
        self.faults = FaultInjector()
        self.notifier = Notifier(settings)
        self.webhooks = WebhookCaller(
            settings.global_export_url,
            settings.global_export_auth,
            settings.platform_url,
            settings.platform_api_user,
            settings.platform_api_secret,
        )

    def reset(self) -> None:
        self.store.reset()
        self.tokens.clear()
        self.requests.clear()
        self.notifier.clear()
        self.faults.clear()
        self.webhooks.reset()

    # -- request plumbing ------------------------------------------------------------------------------

    def api(self, handler: ApiHandler, *, authenticated: bool = True) -> Endpoint:
        """Wrap an API handler with fault injection, auth, problem rendering and request logging."""

        async def endpoint(request: Request) -> Response:
            call = ApiCall(request, await request.body(), json_only=True)
            trace_id = uuid.uuid4().hex
            try:
                # Faults come first: a throttling proxy or failing node answers before auth happens.
                fault = self.faults.take(request.method, request.url.path)
                if fault is not None:
                    raise fault.to_problem(self.clock())
                if authenticated:
                    self._authenticate(request)
                _check_api_version(request)
                response = await handler(call)
            except SimulatorProblem as problem:
                response = problem_response(problem, request.url.path, trace_id)
            except Exception:
                logger.exception("Unhandled simulator error on %s %s", request.method, request.url.path)
                internal = SimulatorProblem(500, "server-error", "Unexpected simulator error.")
                response = problem_response(internal, request.url.path, trace_id)
            self._record(call, response.status_code)
            return response

        return endpoint

    @staticmethod
    def admin(handler: ApiHandler) -> Endpoint:
        """Admin routes render problems (an unexpected error of their own as a 500 problem too) but are neither
        authenticated, fault-injected nor logged."""

        async def endpoint(request: Request) -> Response:
            try:
                return await handler(ApiCall(request, await request.body()))
            except SimulatorProblem as problem:
                return problem_response(problem, request.url.path)
            except Exception:
                logger.exception("Unhandled simulator error on %s %s", request.method, request.url.path)
                internal = SimulatorProblem(500, "server-error", "Unexpected simulator error.")
                return problem_response(internal, request.url.path)

        return endpoint

    def _authenticate(self, request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("A bearer access token is required.")
        state = self.tokens.check(token.strip())
        if state is TokenState.REVOKED:
            raise unauthorized("The access token has been revoked.", slug="token-revoked")
        if state is not TokenState.VALID:
            raise unauthorized(f"The access token is {state.value}.")

    def _record(self, call: ApiCall, status: int) -> None:
        at = self.clock().astimezone(UTC).isoformat().replace("+00:00", "Z")
        request = call.request
        self.requests.record(
            RecordedRequest(request.method, request.url.path, status, _loggable_body(request, call.body), at)
        )

    async def _notify_api_write(self, element_id: int) -> None:
        if self.settings.notify_on_api_writes:
            await self.notifier.send(element_id, "updated")

    # -- public API: auth ------------------------------------------------------------------------------

    async def issue_token(self, call: ApiCall) -> Response:
        fields = _form_fields(call)
        valid = (
            fields.get("grant_type") == "client_credentials"
            and _same_secret(fields.get("client_id"), self.settings.client_id)
            and _same_secret(fields.get("client_secret"), self.settings.client_secret)
        )
        if not valid:
            raise unauthorized("Invalid client credentials or unsupported grant type.")
        return _token_response(self.tokens.issue())

    async def refresh_token(self, call: ApiCall) -> Response:
        refresh = _form_fields(call).get("refresh_token")
        tokens = self.tokens.refresh(refresh) if refresh else None
        if tokens is None:
            raise unauthorized("Invalid or already used refresh token.")
        return _token_response(tokens)

    # -- public API: elements --------------------------------------------------------------------------

    async def get_element(self, call: ApiCall) -> Response:
        return JSONResponse(self.store.get(call.path_id("element_id")))

    async def list_elements(self, call: ApiCall) -> Response:
        params = call.request.query_params
        if "page" in params:
            raise validation_failed(
                [FieldError("query", "page", "unsupported", "This list is cursor-only; use cursor and size.")]
            )
        unsimulated = [name for name in _UNSIMULATED_LIST_PARAMETERS if name in params]
        if unsimulated:
            raise bad_request(f"{', '.join(unsimulated)}: a Kordiam list filter the simulator does not implement.")
        size = _page_size(params.get("size"))
        raw_from, raw_to, raw_cursor = (
            params.get("modificationDateFrom"),
            params.get("modificationDateTo"),
            params.get("cursor"),
        )
        page = self.store.list_page(
            modified_from=None
            if raw_from is None
            else parse_query_instant("modificationDateFrom", raw_from, end_of_day=False),
            modified_to=None if raw_to is None else parse_query_instant("modificationDateTo", raw_to, end_of_day=True),
            after=decode_cursor(raw_cursor) if raw_cursor else None,
            size=size,
        )
        body = _list_envelope(page.content)
        if page.next_key is not None:
            body["hasMore"] = True
            body["nextCursor"] = encode_cursor(page.next_key)
        return JSONResponse(body)

    async def patch_publication(self, call: ApiCall) -> Response:
        element_id = call.path_id("element_id")
        body = call.json_body()
        element = self.store.patch_publication(element_id, call.path_id("publication_id"), body)
        await self._notify_api_write(element_id)
        return JSONResponse(element)

    async def publish_publication(self, call: ApiCall) -> Response:
        element_id = call.path_id("element_id")
        element = self.store.publish_publication(element_id, call.path_id("publication_id"))
        await self._notify_api_write(element_id)
        return JSONResponse(element)

    async def link_external(self, call: ApiCall) -> Response:
        element_id = call.path_id("element_id")
        representation = self.store.link_external(element_id, call.json_body())
        await self._notify_api_write(element_id)
        return JSONResponse(representation)

    async def unlink_external(self, call: ApiCall) -> Response:
        element_id = call.path_id("element_id")
        representation = self.store.unlink_external(element_id, call.json_body() if call.body.strip() else {})
        await self._notify_api_write(element_id)
        return JSONResponse(representation)

    # -- public API: reference data --------------------------------------------------------------------

    async def list_platforms(self, call: ApiCall) -> Response:
        return JSONResponse(_list_envelope(platforms()))

    async def list_publication_statuses(self, call: ApiCall) -> Response:
        return JSONResponse(_list_envelope(publication_statuses()))

    async def list_platform_publication_statuses(self, call: ApiCall) -> Response:
        platform_id = call.path_id("platform_id")
        if not has_platform(platform_id):
            raise SimulatorProblem(
                404, "resource-not-found", f"Platform {platform_id} does not exist or is not visible."
            )
        return JSONResponse(_list_envelope(publication_statuses()))

    # -- admin: elements -------------------------------------------------------------------------------

    async def admin_create(self, call: ApiCall) -> Response:
        element = self.store.create(call.json_body())
        await self.notifier.send(element["id"], "created")
        self._webhook(element, "created")
        return JSONResponse(element, status_code=201)

    async def admin_list(self, call: ApiCall) -> Response:
        return JSONResponse(self.store.all())

    async def admin_get(self, call: ApiCall) -> Response:
        return JSONResponse(self.store.get(call.path_id("element_id")))

    async def admin_replace(self, call: ApiCall) -> Response:
        element = self.store.replace(call.path_id("element_id"), call.json_body())
        await self.notifier.send(element["id"], "updated")
        self._webhook(element, "updated")
        return JSONResponse(element)

    async def admin_merge(self, call: ApiCall) -> Response:
        element = self.store.merge(call.path_id("element_id"), call.json_body())
        await self.notifier.send(element["id"], "updated")
        self._webhook(element, "updated")
        return JSONResponse(element)

    async def admin_delete(self, call: ApiCall) -> Response:
        element_id = call.path_id("element_id")
        before = self.store.get(element_id) if self.webhooks.enabled else None
        self.store.delete(element_id)
        await self.notifier.send(element_id, "deleted")
        if before is not None:
            self._webhook(before, "deleted")
        return Response(status_code=204)

    def _webhook(self, element: JSONObject, event: WebhookEvent) -> None:
        if self.webhooks.enabled:
            self.webhooks.changed(element, event)

    async def admin_webhooks(self, call: ApiCall) -> Response:
        """Every webhook call made so far, once the ones in flight ended (answered or given up)."""
        await self.webhooks.idle()
        return JSONResponse([record.to_json() for record in self.webhooks.records])

    async def admin_notify(self, call: ApiCall) -> Response:
        # No existence check: re-sending "deleted" for an element that is gone is a valid scenario.
        event = _notification_event(call.json_body() if call.body.strip() else {})
        record = await self.notifier.send(call.path_id("element_id"), event)
        return JSONResponse(record.to_json())

    # -- admin: observation and control ----------------------------------------------------------------

    async def admin_requests(self, call: ApiCall) -> Response:
        return JSONResponse([entry.to_json() for entry in self.requests.entries()])

    async def admin_clear_requests(self, call: ApiCall) -> Response:
        self.requests.clear()
        return Response(status_code=204)

    async def admin_notifications(self, call: ApiCall) -> Response:
        return JSONResponse([record.to_json() for record in self.notifier.records])

    async def admin_clear_notifications(self, call: ApiCall) -> Response:
        self.notifier.clear()
        return Response(status_code=204)

    async def admin_faults(self, call: ApiCall) -> Response:
        return JSONResponse([fault.to_json() for fault in self.faults.list()])

    async def admin_add_fault(self, call: ApiCall) -> Response:
        fault = parse_fault(call.json_body())
        self.faults.add(fault)
        return JSONResponse(fault.to_json(), status_code=201)

    async def admin_clear_faults(self, call: ApiCall) -> Response:
        self.faults.clear()
        return Response(status_code=204)

    async def admin_revoke_tokens(self, call: ApiCall) -> Response:
        return JSONResponse({"revoked": self.tokens.revoke_all()})

    async def admin_reset(self, call: ApiCall) -> Response:
        self.reset()
        return Response(status_code=204)

    # -- routing ---------------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        element = API_PREFIX + "/elements/{element_id:int}"
        publication = element + "/publications/{publication_id:int}"
        admin_element = "/_admin/elements/{element_id:int}"
        return [
            Route(API_PREFIX + "/auth/token", self.api(self.issue_token, authenticated=False), methods=["POST"]),
            Route(API_PREFIX + "/auth/refresh", self.api(self.refresh_token, authenticated=False), methods=["POST"]),
            Route(API_PREFIX + "/elements", self.api(self.list_elements), methods=["GET"]),
            Route(element, self.api(self.get_element), methods=["GET"]),
            Route(publication, self.api(self.patch_publication), methods=["PATCH"]),
            Route(publication + "/publish", self.api(self.publish_publication), methods=["POST"]),
            Route(element + "/external-element/link", self.api(self.link_external), methods=["POST"]),
            Route(element + "/external-element/unlink", self.api(self.unlink_external), methods=["POST"]),
            Route(API_PREFIX + "/platforms", self.api(self.list_platforms), methods=["GET"]),
            Route(API_PREFIX + "/publication-statuses", self.api(self.list_publication_statuses), methods=["GET"]),
            Route(
                API_PREFIX + "/publication-statuses/platform/{platform_id:int}",
                self.api(self.list_platform_publication_statuses),
                methods=["GET"],
            ),
            Route("/_admin/elements", self.admin(self.admin_create), methods=["POST"]),
            Route("/_admin/elements", self.admin(self.admin_list), methods=["GET"]),
            Route(admin_element, self.admin(self.admin_get), methods=["GET"]),
            Route(admin_element, self.admin(self.admin_replace), methods=["PUT"]),
            Route(admin_element, self.admin(self.admin_merge), methods=["PATCH"]),
            Route(admin_element, self.admin(self.admin_delete), methods=["DELETE"]),
            Route(admin_element + "/notify", self.admin(self.admin_notify), methods=["POST"]),
            Route("/_admin/requests", self.admin(self.admin_requests), methods=["GET"]),
            Route("/_admin/requests", self.admin(self.admin_clear_requests), methods=["DELETE"]),
            Route("/_admin/notifications", self.admin(self.admin_notifications), methods=["GET"]),
            Route("/_admin/webhooks", self.admin(self.admin_webhooks), methods=["GET"]),
            Route("/_admin/notifications", self.admin(self.admin_clear_notifications), methods=["DELETE"]),
            Route("/_admin/faults", self.admin(self.admin_faults), methods=["GET"]),
            Route("/_admin/faults", self.admin(self.admin_add_fault), methods=["POST"]),
            Route("/_admin/faults", self.admin(self.admin_clear_faults), methods=["DELETE"]),
            Route("/_admin/tokens/revoke", self.admin(self.admin_revoke_tokens), methods=["POST"]),
            Route("/_admin/reset", self.admin(self.admin_reset), methods=["POST"]),
            # Liveness for container health checks; touches no state and is not recorded.
            Route("/healthz", _healthz, methods=["GET"]),
        ]


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _routing_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods answer in problem+json too, like every other API error."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    slug = {404: "endpoint-not-found", 405: "method-not-allowed"}.get(status, "bad-request")
    detail = f"{request.method} {request.url.path} is not supported by the simulator."
    return problem_response(SimulatorProblem(status, slug, detail, headers=headers), request.url.path)


class _DatedBySimulatorClock:
    """Every answer's ``Date`` comes from the simulator's clock, as Kordiam's comes from the clock that stamps
    ``modificationDate``: the bridge's reconciliation reads Kordiam's clock from it. The servers in ``server.py``
    leave out uvicorn's own wall-clock ``Date`` so that this is the only one."""

    def __init__(self, app: ASGIApp, clock: Clock) -> None:
        self._app = app
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def dated(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["date"] = formatdate(self._clock().timestamp(), usegmt=True)
            await send(message)

        await self._app(scope, receive, dated)


def create_app(settings: SimulatorSettings, *, clock: Clock | None = None) -> Starlette:
    """Build the simulator app. ``clock`` (returns an aware UTC datetime) lets tests control time.

    The simulator is reachable as ``app.state.simulator`` for in-process inspection.
    """
    simulator = Simulator(settings, clock or utc_now)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await simulator.notifier.start()
        try:
            yield
        finally:
            await simulator.webhooks.close()
            await simulator.notifier.close()

    app = Starlette(
        routes=simulator.routes(),
        exception_handlers={HTTPException: _routing_error},
        middleware=[Middleware(_DatedBySimulatorClock, clock=simulator.clock)],
        lifespan=lifespan,
    )
    # Starlette answers a trailing slash with a 307 to the path without it; Kordiam documents no redirects, and its
    # answer for a path it does not route is 404 endpoint-not-found.
    app.router.redirect_slashes = False
    app.state.simulator = simulator
    return app


__all__ = ["Simulator", "create_app", "problem_response"]

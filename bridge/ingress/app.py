"""The ingress HTTP server: the receivers' routes plus ``/healthz``, ``/readyz``, ``/metrics``.

Every answer of the routes and middlewares is JSON and carries ``X-Request-Id`` (the caller's, when it sent a sane
one); every such request is logged once with that id, the route and the status (499 and ``ingress_client_gone`` for
a client that went away before its answer); an unexpected error answers 500 without internals. A request aiohttp
cannot parse gets aiohttp's own plain-text 400 (logged as ``ingress_bad_request``, paced): aiohttp 3 builds that
answer in ``RequestHandler.handle_error``, outside the middlewares and ``on_response_prepare``, so replacing it
would mean subclassing its undocumented protocol class; aiohttp 4.0 passes these requests through the middlewares
(aio-libs/aiohttp#3287), where ``_errors`` would answer them in JSON. Bodies above ``ingress.max_body_bytes`` get
413 before they are read, and calls with credentials their route refuses 401, instead of ``100 Continue`` when the
client asked for it (``_continue_if``); a client above its rate gets 429 with ``Retry-After``; a call beyond
``ingress.max_concurrent_requests`` in progress gets 503 with ``Retry-After`` at once; a body later than
``ingress.body_timeout_seconds`` gets 408; a connection without a whole request head within
``IngressServer.keepalive_timeout`` of its opening or its last answer is closed; beyond ``ingress.max_connections``
open connections, the longest idle one is closed for a new one, or the new one is (``ConnectionCap``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any, ClassVar

import structlog
from aiohttp import HttpVersion11, web
from aiohttp.http_exceptions import HttpProcessingError, TransferEncodingError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bridge.config import INGRESS_FIELD_BYTES, INGRESS_LINE_BYTES, ApiKeyCheck, IngressCommandSettings, IngressSettings
from bridge.errors import ConfigError
from bridge.ingress import metrics
from bridge.ingress.auth import CredentialCheck, KeyExchange, TokenIssuer, credential_check
from bridge.ingress.common import (
    BODY_DEADLINE,
    CLIENT_CLOSED_REQUEST,
    ENQUEUED,
    RECHECK_SECONDS,
    ContinueIf,
    Enqueuer,
    ExpectHandler,
    log,
    problem,
    retry_later,
)
from bridge.ingress.connections import ConnectionCap, ensure_descriptors, head_refused
from bridge.ingress.global_export import GlobalExportReceiver
from bridge.ingress.lookup import ElementLookup
from bridge.ingress.metrics import UNPARSED_ROUTE
from bridge.ingress.platform import PlatformReceiver
from bridge.ops.heap import settle_after_startup
from bridge.queue import Transport, open_transport, pooled_connections
from bridge.state import StateStore, open_state_store
from bridge.state import pooled_connections as state_pooled_connections

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# The calling client's address (behind a trusted proxy: from X-Forwarded-For), for the request log.
CLIENT = web.RequestKey("client", str)
# At most this many clients' buckets are kept (the least recently seen go first, as if full again).
_MAX_BUCKETS = 10_000
_UNCAPPED = ("/healthz", "/readyz", "/metrics")


@dataclass(slots=True)
class WarningPace:
    """One warning line at most once per ``RECHECK_SECONDS`` for refusals that may come as a flood, so that the
    flood does not flood the log too: the first after a quiet spell at once, later ones with the count since."""

    _refused: int = 0
    _logged_at: float = float("-inf")

    def due(self, now: float) -> int | None:
        """Count a refusal at ``now``; the refusals since the last line (this one included) when a line is due."""
        self._refused += 1
        if now - self._logged_at < RECHECK_SECONDS:
            return None
        refused, self._refused, self._logged_at = self._refused, 0, now
        return refused


@dataclass(slots=True)
class Capacity:
    """How many calls are in progress, of at most ``limit``; a refusal is counted, and logged (``WarningPace``)."""

    limit: int
    in_progress: int = 0
    _pace: WarningPace = field(default_factory=WarningPace)

    def refuse(self) -> web.Response:
        metrics.OVER_CAPACITY.inc()
        if (refused := self._pace.due(time.monotonic())) is not None:
            log.warning("ingress_over_capacity", max_concurrent_requests=self.limit, refused=refused)
        return retry_later(f"ingress at capacity (ingress.max_concurrent_requests = {self.limit}), retry later")


CAPACITY = web.AppKey("capacity", Capacity)
CONNECTIONS = web.AppKey("connections", ConnectionCap)


@dataclass(slots=True)
class RateLimiter:
    """A token bucket per client address for the calls it gets wrong: ``burst`` at once, refilled at ``per_second``.

    A call is refused (429) while its client's bucket is empty (``allow``), and only a call answered 4xx takes a
    token (``charge``): no or wrong credentials, a bad body, an unknown path, a body too slow. Calls the ingress
    took (2xx) or could not take (5xx) never do, as Kordiam drops a call after a few retries: a bulk change in
    Kordiam, a burst well beyond ``burst`` from one address, or its retries after a queue outage, must not be
    refused.

    Only buckets that are not full are kept, least recently charged first: a client not charged for ``burst /
    per_second`` seconds is full again, so dropping its bucket changes nothing. Each call costs O(1), however many
    clients there are.
    """

    per_second: float
    burst: int
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)

    def allow(self, client: str, now: float | None = None) -> bool:
        """Whether ``client``'s bucket holds a token now (none is taken)."""
        return self._tokens(client, time.monotonic() if now is None else now) >= 1.0

    def charge(self, client: str, now: float | None = None) -> None:
        """Take a token from ``client``'s bucket (a call it got wrong)."""
        now = time.monotonic() if now is None else now
        tokens = self._tokens(client, now)
        self._buckets.pop(client, None)
        self._buckets[client] = (max(0.0, tokens - 1.0), now)  # the most recently charged, last
        # One bucket dropped at most per charge: a charge adds at most one, so the table never outgrows
        # _MAX_BUCKETS, and the full ones drain away as charges come.
        _, oldest_seen = next(iter(self._buckets.values()))
        if now - oldest_seen >= self.burst / self.per_second or len(self._buckets) > _MAX_BUCKETS:
            self._buckets.popitem(last=False)

    def retry_after(self) -> int:
        return max(1, int(1 / self.per_second + 0.999))

    def _tokens(self, client: str, now: float) -> float:
        tokens, seen = self._buckets.get(client, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - seen) * self.per_second)


def client_address(request: web.Request, trusted_proxies: tuple[IPv4Network | IPv6Network, ...]) -> str:
    """The calling client: the peer, or, when the peer is a trusted proxy, the nearest address in
    ``X-Forwarded-For`` that is not itself a trusted proxy (entries further left are the client's own claims)."""
    peer = request.remote or "unknown"
    if not trusted_proxies or not _trusted(peer, trusted_proxies):
        return peer
    hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted_proxies):
            return hop
    return hops[0] if hops else peer


def _trusted(address: str, networks: tuple[IPv4Network | IPv6Network, ...]) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False  # not an address (a forged header): never trusted
    return any(ip in network for network in networks)


def build_app(
    settings: IngressSettings, transport: Transport, state: StateStore, main_channel: str
) -> tuple[web.Application, Enqueuer]:
    """The aiohttp application for ``settings``' receivers, enqueueing through ``transport``."""
    enqueuer = Enqueuer(transport, settings.enqueue_timeout_seconds)
    lookup = ElementLookup(state, main_channel)
    limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
    capacity = Capacity(settings.max_concurrent_requests)
    connections = ConnectionCap(settings.max_connections)
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        # _limits outside _errors: it sees every answer as sent (aiohttp's 404 too) when it charges a 4xx.
        middlewares=[_in_call(connections), _request_log, _limits(limiter, capacity, settings), _errors],
    )
    app[CAPACITY] = capacity
    app[CONNECTIONS] = connections
    expect = _continue_if(settings.max_body_bytes)
    routes: list[web.RouteDef] = []
    if settings.global_export is not None:
        receiver = settings.global_export
        token_path = receiver.auth.token_path if isinstance(receiver.auth, ApiKeyCheck) else None
        check = credential_check(receiver.auth, audience="global_export")
        routes += GlobalExportReceiver(receiver.path, check, enqueuer, lookup, token_path=token_path).routes(expect)
    if settings.platform is not None:
        platform = settings.platform
        secret = platform.api_secret.get_secret_value()
        exchange = KeyExchange(platform.api_user, secret, TokenIssuer(secret, platform.token_ttl_seconds, "platform"))
        routes += PlatformReceiver(platform.path, exchange, enqueuer, lookup).routes(expect)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        if transport.connected() and enqueuer.healthy:
            return web.json_response({"status": "ready"})
        # As every 503 of the ingress: when to look again (it lapses by itself after a failed send).
        headers = {"Retry-After": str(RECHECK_SECONDS)}
        return web.json_response({"status": "queue unreachable"}, status=503, headers=headers)

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    health = expect(None)
    routes += [
        web.get("/healthz", healthz, expect_handler=health),
        web.get("/readyz", readyz, expect_handler=health),
        web.get("/metrics", prometheus, expect_handler=health),
    ]
    app.add_routes(routes)
    return app, enqueuer


# 100 Continue was sent: the client's body is on its way.
CONTINUED = web.RequestKey("continued", bool)


def _continue_if(max_body_bytes: int) -> ContinueIf:
    """aiohttp's answer to ``Expect`` (it runs before any middleware, and an answer it returns skips them all), for a
    route whose callers must pass ``check``: ``100 Continue`` only for a body that may be taken, so a refusal the
    middlewares or the handler answer comes before the client sends a byte of it: a body declared larger than
    ``max_body_bytes`` (413, ``_limits``), credentials ``check`` refuses (401, the handler's own check). An ``Expect``
    other than ``100-continue`` gets no 100 either, and its 417 from ``_limits``."""

    def for_route(check: CredentialCheck | KeyExchange | None) -> ExpectHandler:
        async def expect(request: web.Request) -> web.StreamResponse | None:
            if not _asks_to_continue(request):
                return None
            if request.content_length is not None and request.content_length > max_body_bytes:
                return None
            if check is not None and check.check(request.headers) is not None:
                return None
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # as aiohttp does: the answer proper is still to be sent
            request[CONTINUED] = True
            return None

        return expect

    return for_route


def _asks_to_continue(request: web.Request) -> bool:
    """An HTTP/1.1 request whose client waits for ``100 Continue`` before it sends its body."""
    return request.version == HttpVersion11 and request.headers.get("Expect", "").lower() == "100-continue"


def _expects_otherwise(request: web.Request) -> bool:
    """An HTTP/1.1 request with an expectation the ingress cannot meet (HTTP/1.0 has none: its ``Expect`` is
    ignored)."""
    return request.version == HttpVersion11 and "Expect" in request.headers and not _asks_to_continue(request)


def _uninvited(request: web.Request, answer: web.StreamResponse) -> web.StreamResponse:
    """``answer``, and for a client that waits for ``100 Continue`` and got none, the connection closed after it: no
    body is on its way, so none is read on for aiohttp's lingering time (as a body already on its way is, so that its
    client reads the answer rather than a reset)."""
    if _asks_to_continue(request) and CONTINUED not in request and not request.content.is_eof():
        request.content.feed_eof()
        answer.force_close()
    return answer


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    name = resource.name if resource is not None else None
    return name or ("unmatched" if request.match_info.http_exception is not None else request.path)


def _in_call(connections: ConnectionCap) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Outermost: the connection of a call in a handler is not idle, so ``connections`` never closes it for another.
    The answer is written right after the handler returns, with no await between, so it cannot be cut either."""

    @web.middleware
    async def in_call(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        connections.call_started(transport)
        try:
            return await handler(request)
        finally:
            connections.call_finished(transport, request.content)

    return in_call


@web.middleware
async def _request_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    offered = request.headers.get("X-Request-Id", "")
    request_id = offered if _REQUEST_ID.match(offered) else secrets.token_hex(16)
    started = time.perf_counter()
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        response = await handler(request)
        route = _route_name(request)
        metrics.REQUESTS.labels(route, str(response.status)).inc()
        if route not in ("/healthz", "/readyz", "/metrics"):
            gone = response.status == CLIENT_CLOSED_REQUEST
            log.info(
                "ingress_client_gone" if gone else "ingress_request",
                method=request.method,
                route=route,
                status=response.status,
                client=request.get(CLIENT, request.remote),
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                **(_body_so_far(request) if gone else request.get(ENQUEUED, {})),
            )
    response.headers["X-Request-Id"] = request_id
    return response


def _body_so_far(request: web.Request) -> dict[str, int | None]:
    """How much of its body a client that went away had sent: a timeout of its own, or a connection cut."""
    return {"body_bytes_read": request.content.total_bytes, "content_length": request.content_length}


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own errors (404, 405 with its ``Allow``, 413) as JSON; a body aiohttp cannot read as sent as a 400;
    a client gone mid-body as ``CLIENT_CLOSED_REQUEST`` (logged in one line, by the request log); anything
    unexpected as a 500 without internals, its traceback logged."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return problem(413, "body larger than ingress.max_body_bytes")
    except web.RequestPayloadError as error:
        return _unreadable_body(request, error)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        answer = problem(error.status, error.reason)
        if "Allow" in error.headers:  # a 405 names the methods the path takes (RFC 9110 15.5.6)
            answer.headers["Allow"] = error.headers["Allow"]
        return answer
    except asyncio.CancelledError:
        raise
    except Exception as error:
        # The client's connection closed while its body was read: aiohttp 3.14 raises ConnectionResetError from the
        # read ("Connection lost" after a FIN, "Connection reset by peer" after a reset), the request's transport
        # gone. Nothing was enqueued and no one can receive an answer; not the bridge's failure.
        if isinstance(error, ConnectionResetError) and request.transport is None:
            return problem(CLIENT_CLOSED_REQUEST, "client closed the connection before its answer")
        # aiohttp's pure-Python parser hands a broken chunk to the body's read as its own error, unwrapped (and then
        # sets the wrapped one on the body's reader, which is how it is told from an error of the bridge's own).
        if isinstance(error, HttpProcessingError) and request.content.exception() is not None:
            return _unreadable_body(request, error)
        log.exception("ingress_error", route=_route_name(request))
        return problem(500, "internal error; the call was not taken, retry later")


def _unreadable_body(request: web.Request, error: web.RequestPayloadError | HttpProcessingError) -> web.Response:
    """aiohttp could not read the body as its headers say (a Content-Encoding it does not hold, a broken chunk): the
    caller's fault, nothing enqueued; its reason is the parser's, the first line of its message. The body is ended
    here and the connection closed after the answer: aiohttp would otherwise read on after the answer
    ("lingering"), meet the same error and log it as an unhandled exception with its traceback."""
    request.content.feed_eof()
    answer = problem(400, f"body could not be read as sent: {_payload_reason(error)}")
    answer.force_close()
    return answer


def _payload_reason(error: web.RequestPayloadError | HttpProcessingError) -> str:
    cause = error if isinstance(error, HttpProcessingError) else error.__cause__
    if not isinstance(cause, HttpProcessingError):
        return _first_line(error)
    # A broken chunk's message may be only the line it could not read.
    broken = "broken chunked encoding: " if isinstance(cause, TransferEncodingError) else ""
    return broken + _first_line(cause.message)


def _first_line(text: object) -> str:
    """An aiohttp parser's message in one short line (it may quote the offending line below, with a caret)."""
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "unreadable request")[:200]


def _limits(
    limiter: RateLimiter, capacity: Capacity, settings: IngressSettings
) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def limits(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _expects_otherwise(request):  # aiohttp's own answer was text quoting it
            refused = problem(417, "Expect: only 100-continue is understood")
            refused.force_close()
            return refused
        if request.path in _UNCAPPED:  # a load balancer's probe must not fail because the receivers are busy
            return await handler(request)
        if request.content_length is not None and request.content_length > settings.max_body_bytes:
            return _uninvited(
                request, problem(413, f"body larger than ingress.max_body_bytes ({settings.max_body_bytes} bytes)")
            )
        request[CLIENT] = client = client_address(request, settings.trusted_proxies)
        if not limiter.allow(client):
            metrics.RATE_LIMITED.inc()
            answer = problem(429, "too many requests from this client; retry later")
            answer.headers["Retry-After"] = str(limiter.retry_after())
            return answer
        if capacity.in_progress >= capacity.limit:
            return capacity.refuse()
        request[BODY_DEADLINE] = asyncio.get_running_loop().time() + settings.body_timeout_seconds
        capacity.in_progress += 1
        metrics.IN_PROGRESS.inc()
        try:
            response = await handler(request)
        finally:
            capacity.in_progress -= 1
            metrics.IN_PROGRESS.dec()
        # Not a client gone before its answer (499): that may be Kordiam's own timeout of a slow call.
        if 400 <= response.status < 500 and response.status != CLIENT_CLOSED_REQUEST:
            limiter.charge(client)
        return _uninvited(request, response)

    return limits


class _RefusalLog(logging.Logger):
    """aiohttp's server log, as given to its protocol: a request aiohttp refused itself before any handler ran (an
    ``HttpProcessingError``: a head that is not HTTP, a body framing or Content-Encoding it cannot read) is counted,
    and logged as an ``ingress_bad_request`` warning line with the client and the reason, paced (``WarningPace``:
    these come before the per-client rate limit, and a client looping garbage at the port would flood the log);
    aiohttp would log each as an error with its traceback, or, for a connection's first request whose method is not
    HTTP (TLS sent to the port, a scanner's garbage), at debug, so that it was neither logged nor counted. Anything
    else goes to aiohttp's own logger, as before."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__("aiohttp.server")
        self.parent = logging.getLogger("aiohttp.server")
        self._clock = clock
        self._pace = WarningPace()

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self._refused(exc_info, args)
        else:
            super().exception(msg, *args, exc_info=exc_info, **kwargs)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        if isinstance(refusal := kwargs.get("exc_info"), HttpProcessingError):
            self._refused(refusal, args)
        else:
            super().debug(msg, *args, **kwargs)

    def _refused(self, refusal: HttpProcessingError, args: tuple[object, ...]) -> None:
        metrics.REQUESTS.labels(UNPARSED_ROUTE, str(refusal.code)).inc()
        head_refused()  # counted here, not again as a head never finished when its connection ends
        if (refused := self._pace.due(self._clock())) is None:
            return
        # aiohttp's message is "Error handling request from %s" with the peer's address.
        client = str(args[0]) if args else None
        reason = _first_line(refusal.message)
        log.warning("ingress_bad_request", client=client, status=refusal.code, reason=reason, refused=refused)


class IngressServer:
    """The running ingress of an app from ``build_app``: ``start`` binds (``port`` 0 picks a free port, read back from
    ``port``), ``stop`` finishes the calls in progress (``shutdown_timeout`` seconds at most) and closes.

    It listens itself rather than through aiohttp's ``TCPSite``, with the runner's server (a protocol factory) behind
    the app's ``ConnectionCap``: aiohttp offers no hook on accepted connections."""

    shutdown_timeout: ClassVar[float] = 10.0
    # aiohttp closes a connection that has not sent a whole request head this long after it opened or after its
    # last answer: it bounds a head sent byte by byte (which holds no call slot, but a socket and its buffer) and an
    # idle keep-alive connection (aiohttp's own default is an hour). Longer than the 60 s idle timeout of the
    # Terraform module's load balancer, as AWS asks of its targets: the balancer, not the ingress, closes an idle
    # connection, so it never sends a call down one the ingress is closing (a 502 to Kordiam).
    keepalive_timeout: ClassVar[float] = 75.0
    # After answering a call whose body it did not read whole (a 413 before the body), aiohttp reads on and drops
    # what comes for this long ("lingering"), so that a client still sending its body reads the answer rather than
    # a reset (RFC 9112 9.6). aiohttp's default; the connection's loss or the ingress's stop ends it at once
    # (``ConnectionCap.end_unread_bodies``).
    lingering_time: ClassVar[float] = 10.0
    # What a request head may hold; beyond it aiohttp answers 400 itself (``ingress_bad_request``, route
    # ``unparsed``). aiohttp keeps an unfinished head's fields twice (their bytes and their text) until it ends or
    # ``keepalive_timeout`` closes it: at its defaults (128 fields, 8190 bytes) a head took 2 MB, and 300
    # unfinished ones +613 MiB, more than the Terraform module's 512 MiB task. A Kordiam call has about ten fields
    # (Host, Content-Type, Content-Length, Authorization with a token or a JWT of a few hundred bytes or a custom
    # auth header, User-Agent, Accept, Accept-Encoding, Connection) and a path of tens of bytes; the module's load
    # balancer adds four fields of at most about 100 bytes (X-Forwarded-For, -Proto and -Port, X-Amzn-Trace-Id).
    # 32 fields of 2 KiB are twice as many and several times the longest. aiohttp's C parser checks a field's value
    # on its own (with its name for the head's first field, or a name split across reads) and its name with the
    # name before it, so a head may hold 32 values of 2 KiB and names of 1 KiB:
    # measured (``kordiam-bridge ingress``), 512 (``max_connections``) such heads unfinished took +102 MiB over the
    # idle 93 MiB, which leaves the half of the task that ``ingress.max_concurrent_requests`` bodies may take.
    # The configuration refuses credentials and receiver paths that could not arrive within these (``bridge.config``'s
    # INGRESS_FIELD_BYTES: a whole field line, as the pure-Python parser counts it, and a name of half of it;
    # INGRESS_LINE_BYTES: the request target for the C parser, the request line for the Python one).
    max_line_size: ClassVar[int] = INGRESS_LINE_BYTES
    max_field_size: ClassVar[int] = INGRESS_FIELD_BYTES
    max_headers: ClassVar[int] = 32

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._app = app
        self._host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self._app,
            access_log=None,
            logger=_RefusalLog(),
            shutdown_timeout=self.shutdown_timeout,
            keepalive_timeout=self.keepalive_timeout,
            lingering_time=self.lingering_time,
            max_line_size=self.max_line_size,
            max_field_size=self.max_field_size,
            max_headers=self.max_headers,
        )
        await self._runner.setup()
        server = self._runner.server
        assert server is not None  # set up just above
        connections = self._app[CONNECTIONS]
        try:
            self._listener = await asyncio.get_running_loop().create_server(
                lambda: connections.protocol(server),
                self._host,
                self.port,
                backlog=128,  # as aiohttp's TCPSite
            )
        except OSError as error:
            await self.stop()
            raise ConfigError.cannot_listen(
                error, self._host, self.port, port_key="ingress.port", host_key="ingress.host"
            ) from None
        self.port = int(self._listener.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()  # no new connection; those open finish their calls below
            self._listener = None
            self._app[CONNECTIONS].end_unread_bodies()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def run_ingress(
    settings: IngressCommandSettings,
    stop: asyncio.Event,
    *,
    started: asyncio.Event | None = None,
    own_process: bool = False,
) -> None:
    """Serve ``settings.ingress`` until ``stop`` is set: the queue of ``[queue]``, the state store of ``[state]``.

    ``own_process``: the ingress is all this process runs (``kordiam-bridge ingress``), so what start-up built is
    frozen out of the garbage collector's way (``bridge.ops.heap``). Measured with ``python -m bench.ingress``:
    without it, a full collection of about 90 ms stopped every call in flight once per few thousand calls, the
    whole of the p99 at 32 clients.
    """
    ingress = settings.ingress
    ensure_descriptors(
        ingress.max_connections, pooled=pooled_connections(settings.queue) + state_pooled_connections(settings.state)
    )
    state = await open_state_store(settings.state, default_region=settings.queue.region)
    try:
        # Refuse to start, with a one-line error, on a store that cannot map Kordiam's ids (a DynamoDB table
        # without the indexes, or a role without Query on them) rather than fail Kordiam's DELETEs later.
        await state.deliveries_with_external_id("-")
        await state.deliveries_of_publication(1)
        async with open_transport(settings.queue, consume=False) as transport:
            app, _ = build_app(ingress, transport, state, settings.main_channel)
            server = IngressServer(app, ingress.host, ingress.port)
            await server.start()
            if own_process:
                settle_after_startup()
            log.info("ingress_listening", host=ingress.host, port=server.port, max_connections=ingress.max_connections)
            if started is not None:
                started.set()
            try:
                await stop.wait()
            finally:
                await server.stop()
    finally:
        await state.close()

"""The ingress's bound on open connections (``ingress.max_connections``) and on the file descriptors it needs.

aiohttp accepts every connection it is offered and leaves a cap to the application (aio-libs/aiohttp#675); asyncio's
servers have none either (python/asyncio#210). Without one, idle or slow-header connections (a port scan, a
misbehaving proxy, a slowloris) hold a descriptor each until ``IngressServer.keepalive_timeout``, and a process out of
descriptors cannot open its connections to the queue: every webhook call would then fail. So the cap sits where
asyncio hands over a new connection, the protocol factory, with public asyncio API only (aiohttp's ``web.Server`` is
a documented protocol factory).
"""

from __future__ import annotations

import asyncio
import contextvars
import resource
import weakref
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import StreamReader

from bridge.errors import ConfigError
from bridge.ingress import metrics
from bridge.ingress.common import CLIENT_CLOSED_REQUEST, log

# The connection whose aiohttp handler runs in this context: aiohttp starts a connection's handler task in its
# protocol's ``connection_made``, which ``_CountedConnection`` calls with this set, and a task copies the context it
# was started in. So aiohttp's refusal of a head, logged from that task, is known to be this connection's.
_CONNECTION: contextvars.ContextVar[_CountedConnection | None] = contextvars.ContextVar(
    "ingress_connection", default=None
)

# Descriptors the process holds besides its connections: stdio, the event loop's epoll and self-pipe, the listening
# socket, SQLite's database, journal and shared memory, what libraries open. Measured: 12 for `kordiam-bridge
# ingress` on SQLite, started and after 200 calls (its queue's pooled connections apart); five times that is margin.
PROCESS_DESCRIPTORS = 64


def ensure_descriptors(max_connections: int, pooled: int) -> None:
    """Make sure the process may open a descriptor for each of ``max_connections`` client connections, the
    ``pooled`` connections of its queue and state store clients, and ``PROCESS_DESCRIPTORS``: the soft
    ``RLIMIT_NOFILE`` is raised towards the hard limit when it is lower (as nginx's ``worker_rlimit_nofile`` and Go's
    runtime do), and a hard limit too low is a ``ConfigError`` naming both ways out; an ingress that ran out of
    descriptors would fail its enqueues, not its clients' connections."""
    besides = pooled + PROCESS_DESCRIPTORS
    needed = max_connections + besides
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ConfigError(
            "ingress.max_connections",
            f"{max_connections} connections need {needed} file descriptors (with {besides} for the queue's and the "
            f"state store's connections and the process's own), but this process may open at most {hard} "
            f"(ulimit -Hn): lower ingress.max_connections to {max(hard - besides, 0)} or raise the limit",
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    log.info("ingress_descriptor_limit_raised", soft_limit=soft, raised_to=needed, max_connections=max_connections)


class ConnectionCap:
    """At most ``limit`` open connections. A new connection beyond them first closes the connection that has been idle
    the longest (no call in a handler: a keep-alive connection between calls, or one that has not sent a whole
    request head since it opened), as nginx reuses its idle connections when out of ``worker_connections``; with
    none idle (every connection in a call) the new connection is closed at once. Either is counted in
    ``bridge_ingress_connections_shed_total``; an episode of them is logged in two lines, one when the cap is
    first reached and one, with its counts, when the open connections are back below ``resume_below``.

    It also ends aiohttp's read after an answer ("lingering": the rest of a body the call did not read, up to
    ``IngressServer.lingering_time``) when the connection is lost or the ingress stops (``end_unread_bodies``):
    aiohttp 3.14 ends it at neither, so the handler of a connection its client had closed ran on, and a stop waited
    for it up to its ``shutdown_timeout``.

    ``protocol`` wraps the server's protocol factory; the ingress's outermost middleware calls ``call_started`` and
    ``call_finished`` around every call, so a connection in a call is never closed by the cap. The ordering by when a
    connection was last active (opened, or last answered) makes a flood of idle connections close its own oldest
    first, while a webhook's connection, the newest, gets its head in.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # Below this many open connections after an episode, it is over: a margin, so that connections coming and
        # going at the cap are one episode, not one per connection.
        self.resume_below = limit - max(1, limit // 10)
        # From the factory's call to the connection's loss (or its closing by the cap). Weak: a connection whose
        # transport asyncio failed to make is never reported lost, and must not hold a place for good.
        self._open: weakref.WeakSet[_CountedConnection] = weakref.WeakSet()
        # Connected, with no call in a handler: the longest idle first.
        self._idle: OrderedDict[asyncio.BaseTransport, _CountedConnection] = OrderedDict()
        self._episode: dict[str, int] | None = None

    def protocol(self, make: Callable[[], asyncio.Protocol]) -> asyncio.Protocol:
        """The protocol for a connection asyncio has just accepted: ``make()``'s, counted, or one that closes it."""
        if len(self._open) >= self.limit and not self._close_longest_idle():
            self._shed("refused")
            return _RefusedConnection()
        connection = _CountedConnection(self, make())
        self._open.add(connection)
        metrics.OPEN_CONNECTIONS.set(len(self._open))
        return connection

    def call_started(self, transport: asyncio.BaseTransport | None) -> None:
        if transport is not None:
            self._idle.pop(transport, None)
            if isinstance(connection := transport.get_protocol(), _CountedConnection):
                connection.in_call = True
                connection.head_pending = False  # the head was whole: this call is counted by its route

    def call_finished(self, transport: asyncio.BaseTransport | None, body: StreamReader) -> None:
        """A call on ``transport`` has been answered; ``body`` is its request's, which aiohttp reads on unless it
        has ended."""
        if transport is None or transport.is_closing():
            return
        connection = transport.get_protocol()
        if not isinstance(connection, _CountedConnection):
            return
        connection.in_call = False
        if connection in self._open:
            connection.unread_body = None if body.is_eof() else body
            self._idle[transport] = connection  # the most recently active, last

    def end_unread_bodies(self) -> None:
        """End aiohttp's reads after an answer on every open connection (the ingress is stopping): a stop finishes
        the calls in progress, not the bodies their clients were told not to send."""
        for connection in list(self._open):
            connection.end_unread_body()

    def opened(self, connection: _CountedConnection, transport: asyncio.BaseTransport) -> None:
        self._idle[transport] = connection

    def lost(self, connection: _CountedConnection, transport: asyncio.BaseTransport | None) -> None:
        self._open.discard(connection)
        if transport is not None:
            self._idle.pop(transport, None)
        metrics.OPEN_CONNECTIONS.set(len(self._open))
        if self._episode is not None and len(self._open) < self.resume_below:
            log.info("ingress_connections_below_limit", max_connections=self.limit, **self._episode)
            self._episode = None

    def _close_longest_idle(self) -> bool:
        if not self._idle:
            return False
        transport, connection = self._idle.popitem(last=False)
        # Its place is free now, not when asyncio reports the loss (on a later turn of the loop).
        self._open.discard(connection)
        transport.close()
        self._shed("idle_closed")
        return True

    def _shed(self, outcome: str) -> None:
        metrics.CONNECTIONS_SHED.labels(outcome).inc()
        if self._episode is None:
            self._episode = {"idle_closed": 0, "refused": 0}
            log.warning("ingress_connections_at_limit", max_connections=self.limit, open_connections=len(self._open))
        self._episode[outcome] += 1


def head_refused() -> None:
    """aiohttp refused a request head (its refusal is counted by the ingress's refusal log) on the connection whose
    handler runs in this context: aiohttp closes it after its answer, and its head is not counted again."""
    if (connection := _CONNECTION.get()) is not None:
        connection.head_refused = True
        connection.head_pending = False


class _CountedConnection(asyncio.Protocol):
    """The server's protocol for one connection, passed every event, and its place in ``ConnectionCap`` released
    when the connection is lost; so is the body aiohttp may still be reading after the last answer.

    A request head begun and never finished when the connection ends (bytes came since the last answer, no call
    started on them, aiohttp refused none) is counted in ``bridge_ingress_requests_total`` under route ``unparsed``:
    408 when the ingress closed the connection (``IngressServer.keepalive_timeout``, another connection at
    ``ingress.max_connections``, a stop), 499 when its client did. Bytes of a next head that came in one read with a
    call's are taken for that call's, so such a head is not counted: a count may miss a head, never add one."""

    __slots__ = (
        "__weakref__",
        "_cap",
        "_client_closed",
        "_inner",
        "_transport",
        "head_pending",
        "head_refused",
        "in_call",
        "unread_body",
    )

    def __init__(self, cap: ConnectionCap, inner: asyncio.Protocol) -> None:
        self._cap = cap
        self._inner = inner
        self._transport: asyncio.BaseTransport | None = None
        # The body of the last answered call, while aiohttp may read on (until its end, or ``lingering_time``).
        self.unread_body: StreamReader | None = None
        self.in_call = False
        self.head_pending = False
        self.head_refused = False
        self._client_closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._cap.opened(self, transport)
        handler_context = _CONNECTION.set(self)
        try:
            self._inner.connection_made(transport)
        finally:
            _CONNECTION.reset(handler_context)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cap.lost(self, self._transport)
        self._transport = None
        self._inner.connection_lost(exc)
        # aiohttp's handler is past the call, so its loss wakes no read: nothing more can come.
        self.end_unread_body()
        if self.head_pending:
            status = CLIENT_CLOSED_REQUEST if self._client_closed or exc is not None else 408
            metrics.REQUESTS.labels(metrics.UNPARSED_ROUTE, str(status)).inc()

    def end_unread_body(self) -> None:
        if self.unread_body is not None:
            self.unread_body.feed_eof()
            self.unread_body = None

    def data_received(self, data: bytes) -> None:
        # Between calls, and not the rest of an answered call's body that aiohttp reads on: a head.
        if not self.in_call and not self.head_refused and (self.unread_body is None or self.unread_body.is_eof()):
            self.head_pending = True
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        self._client_closed = True
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class _RefusedConnection(asyncio.Protocol):
    """A connection beyond the cap with none idle to close: closed as soon as it is made, nothing read."""

    __slots__ = ()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()

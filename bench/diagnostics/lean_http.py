"""The ``lean-http`` variant's client: ``HttpClient``'s requests over a minimal HTTP/1.1 client instead of aiohttp's.

What aiohttp's client machinery costs the worker, measured rather than sampled: kept-alive connections per host
(asyncio streams), the request written in one send, the status line, headers and a ``Content-Length`` body read
back. Plain ``http://`` only, no chunked or compressed answers (the bench's stubs send neither), no connection
limit: enough for the bench's workload, not a client the bridge could ship (no TLS, no limits on the answer).
"""

from __future__ import annotations

import asyncio

from multidict import CIMultiDict, CIMultiDictProxy

from bridge.http import HttpClient, HttpRequest, HttpResponse, HttpTimeout, HttpTransportError

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]

# Idle kept-alive connections by (host, port); the worker's one event loop is the only user.
_idle: dict[tuple[str, int], list[Connection]] = {}


def install() -> None:
    HttpClient._send = _send  # type: ignore[method-assign]


async def _send(self: HttpClient, request: HttpRequest) -> HttpResponse:
    host, port = request.url.host or "", request.url.port or 80
    if request.url.scheme != "http":
        raise HttpTransportError(f"the lean-http variant speaks plain http only, not {request.url.scheme}")
    lines = [f"{request.method} {request.url.raw_path_qs} HTTP/1.1\r\nHost: {host}:{port}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in request.headers.items()]
    body = request.content or b""
    lines.append(f"Content-Length: {len(body)}\r\n\r\n")
    data = "".join(lines).encode("latin-1") + body
    idle = _idle.setdefault((host, port), [])
    connection: Connection | None = None
    try:
        async with asyncio.timeout(request.timeout_seconds):
            connection = idle.pop() if idle else await asyncio.open_connection(host, port)
            status, reason, headers, content, keep = await _exchange(connection, data)
    except TimeoutError as error:
        _close(connection)
        raise HttpTimeout(f"no answer within {request.timeout_seconds:g} s") from error
    except (OSError, ValueError, asyncio.IncompleteReadError) as error:
        _close(connection)
        raise HttpTransportError(f"{type(error).__name__}: {error}") from error
    if keep:
        idle.append(connection)
    else:
        _close(connection)
    return HttpResponse(status, CIMultiDictProxy(headers), content, request, reason)


async def _exchange(connection: Connection, data: bytes) -> tuple[int, str, CIMultiDict[str], bytes, bool]:
    reader, writer = connection
    writer.write(data)
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("the server closed the connection")
    _, status, reason = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    headers: CIMultiDict[str] = CIMultiDict()
    length, keep = 0, True
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, raw = line.decode("latin-1").partition(":")
        value = raw.strip()
        headers.add(name, value)
        lowered = name.lower()
        if lowered == "content-length":
            length = int(value)
        elif lowered == "connection" and value.lower() == "close":
            keep = False
        elif lowered in ("transfer-encoding", "content-encoding"):
            raise ValueError(f"the lean-http variant reads no {name}: {value}")
    content = await reader.readexactly(length) if length else b""
    return int(status), reason, headers, content, keep


def _close(connection: Connection | None) -> None:
    if connection is not None:
        connection[1].close()

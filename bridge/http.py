"""The process's one HTTP client, for every outbound call of the hot path (Kordiam, channels).

aiohttp directly, behind a small typed surface: a message costs three HTTP calls, and on these machines httpx's
client layer costs about 250 µs of CPU per call on top of aiohttp's 120–140 µs, even on the ``httpx-aiohttp``
transport (measured; see README, "Performance"). The surface keeps what the callers need from httpx's API
(``request`` with ``json``/``content``/``data``/``params``/``auth``, a response with ``status_code``, ``headers``,
``json()``, ``text``) and nothing else: no cookies, no redirects, no per-request client merging.

Tests answer requests in process with ``HttpClient.answering(handler)``.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any, Self
from urllib.parse import parse_qsl, quote_plus, urlencode

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from bridge import __version__, jsontext, redaction
from bridge.valueclass import value_class

USER_AGENT = f"kordiam-bridge/{__version__}"

Params = Mapping[str, str | int | float | bool]


class HttpTransportError(Exception):
    """No HTTP answer: the connection failed, was reset, or the request timed out."""


class HttpTimeout(HttpTransportError):
    """No answer within the request's timeout."""


class HttpAnswerTooLarge(HttpTransportError):
    """The answer's body is larger than the client reads (``max_answer_bytes``); it was not read."""


# Far more than any element, post or campaign answer; a URL pointing at a download must not fill the memory the
# whole worker (every channel) shares.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class BasicAuth:
    """HTTP Basic credentials; the header value is built once, not per request."""

    username: str
    password: str = field(repr=False)
    header: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")
        object.__setattr__(self, "header", f"Basic {token}")
        redaction.SECRETS.remember_secrets(token)


@value_class
class HttpRequest:
    method: str
    url: URL
    headers: CIMultiDict[str]
    content: bytes | None
    timeout_seconds: float


@value_class
class HttpResponse:
    status_code: int
    headers: CIMultiDictProxy[str]
    content: bytes
    request: HttpRequest
    reason: str | None = None

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def reason_phrase(self) -> str:
        if self.reason:
            return self.reason
        try:
            return HTTPStatus(self.status_code).phrase
        except ValueError:
            return ""

    @property
    def text(self) -> str:
        """The body as text in its declared charset; UTF-8 when it names none, or one Python does not know."""
        charset = _charset(self.headers.get("content-type", ""))
        try:
            return self.content.decode(charset or "utf-8", errors="replace")
        except LookupError:
            # A proxy's error page may declare any charset: its text is still the operator's clue, not a crash.
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; raises ``ValueError`` when it is not."""
        return jsontext.decode(self.content)

    def redact(self, said: str) -> str:
        """``said`` (what this answer said, to be quoted in an error or a log line) without the credentials its
        request carried, each replaced by ``***``: a server or proxy that echoes the request (a debug page, a
        token endpoint repeating the form) must not put the bridge's secret into the log and the dead letter.
        The one place every quoted answer goes through; which values are secrets: ``_request_secrets``, and the
        process's own (``bridge.redaction``: another channel's key, a Kordiam token a proxy echoes)."""
        for secret in _request_secrets(self.request):
            said = said.replace(secret, "***")
        return redaction.SECRETS.redact(said)


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


class HttpClient:
    """One per process; every request shares its connection pool. Create it inside the running event loop."""

    def __init__(
        self,
        *,
        max_connections: int,
        timeout: float,
        handler: Handler | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self._timeout = timeout
        self._max_answer_bytes = max_answer_bytes
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        if handler is None:
            connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=timeout),
                auto_decompress=True,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            handler = self._send
        self._handler = handler

    @classmethod
    def answering(cls, handler: Handler, *, timeout: float = 5.0) -> HttpClient:
        """A client whose requests are answered by ``handler`` in process (unit tests), with no network."""
        return cls(max_connections=1, timeout=timeout, handler=handler)

    async def request(
        self,
        method: str,
        url: str | URL,
        *,
        params: Params | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: BasicAuth | None = None,
        timeout_seconds: float | None = None,
    ) -> HttpResponse:
        merged: CIMultiDict[str] = CIMultiDict(headers or ())
        merged.setdefault("User-Agent", USER_AGENT)
        body: bytes | None
        if json is not None:
            body = jsontext.encode(json)
            merged.setdefault("Content-Type", "application/json")
        elif data is not None:
            body = urlencode(data).encode()
            merged.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif isinstance(content, str):
            body = content.encode()
        else:
            body = content
        if auth is not None:
            merged["Authorization"] = auth.header
        target = url if isinstance(url, URL) else URL(url)
        if params:
            target = target.update_query({key: _query_value(value) for key, value in params.items()})
        timeout = self._timeout if timeout_seconds is None else timeout_seconds
        return await self._handler(HttpRequest(method.upper(), target, merged, body, timeout))

    async def _send(self, request: HttpRequest) -> HttpResponse:
        assert self._session is not None
        try:
            async with self._session.request(
                request.method,
                request.url,
                data=request.content,
                headers=request.headers,
                allow_redirects=False,
                timeout=self._client_timeout(request.timeout_seconds),
            ) as answer:
                content = await self._read(answer)
        except TimeoutError as error:
            raise HttpTimeout(f"no answer within {request.timeout_seconds:g} s") from error
        except (aiohttp.ClientError, OSError) as error:
            raise HttpTransportError(f"{type(error).__name__}: {error}") from error
        return HttpResponse(answer.status, answer.headers, content, request, answer.reason)

    async def _read(self, answer: aiohttp.ClientResponse) -> bytes:
        """The body, at most ``max_answer_bytes`` of it: a larger one raises ``HttpAnswerTooLarge`` unread."""
        limit = self._max_answer_bytes
        # Content-Length counts the bytes on the wire: a compressed body is decompressed as it is read, so only
        # the chunked read below can hold it to the limit.
        length = None if answer.headers.get("Content-Encoding") else answer.content_length
        if length is not None and length <= limit:
            return await answer.read()  # the common case: one read, no copies
        too_large = HttpAnswerTooLarge(
            f"the answer ({answer.status}, {answer.headers.get('content-type', 'no content type')}) is larger than "
            f"{limit} bytes, the most the bridge reads"
        )
        if length is not None:  # larger than the limit before any decompression
            raise too_large
        chunks: list[bytes] = []
        size = 0
        while chunk := await answer.content.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    def _client_timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        # Callers use one or two distinct timeouts; keep their objects instead of making one per request.
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(total=seconds)
        return timeout

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def http_date(value: str | None) -> datetime | None:
    """An HTTP date header's moment (``Date``, ``Retry-After``), or ``None`` when there is none or it does not parse."""
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:  # "-0000" ("zone unknown") reads as naive: an HTTP date is always GMT, not local
        moment = moment.replace(tzinfo=UTC)
    return moment


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds from now: the header holds either seconds or an HTTP date (RFC 9110 §10.2.3)."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    moment = http_date(value)
    return None if moment is None else max(0.0, moment.timestamp() - time.time())


# Form fields of a token request that are secrets (Kordiam's OAuth client credentials, the protocol channels'
# api_key exchange).
_SECRET_FORM_FIELDS = ("client_secret", "api_secret", "password")
# The request headers the bridge sets to public values; every other header it sends carries a credential
# (Authorization, a channel's configured custom headers such as X-Api-Key), so a header added later is a secret
# until it is named here.
_PUBLIC_HEADERS = frozenset({"accept", "content-type", "user-agent"})
# Shorter values are not looked for: they would match ordinary words and turn a quote into noise. Every configured
# secret is longer (``bridge.config.SHORTEST_SECRET`` refuses shorter ones at start-up), so this floor only
# passes over an absurd token a token endpoint hands out.
SHORTEST_REDACTED = 4


def _request_secrets(request: HttpRequest) -> list[str]:
    """The credentials as they may come back: every header value but the public ones' (the Authorization header
    whole and its credentials, Basic also decoded and its password alone), and the secret form fields raw and
    form-encoded; longest first, so that a secret inside another is replaced as part of it."""
    found: set[str] = set()
    for name, value in request.headers.items():
        if name.lower() not in _PUBLIC_HEADERS:
            found.add(value.strip())
    authorization = request.headers.get("Authorization", "")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        found.add(credentials.strip())
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode()
            except ValueError:
                decoded = ""
            found.update((decoded, decoded.partition(":")[2]))
    if request.content and "form-urlencoded" in request.headers.get("Content-Type", ""):
        for name, value in parse_qsl(request.content.decode(errors="replace")):
            if name in _SECRET_FORM_FIELDS:
                found.update((value, quote_plus(value)))
    return sorted((secret for secret in found if len(secret) >= SHORTEST_REDACTED), key=len, reverse=True)


def _query_value(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _charset(content_type: str) -> str | None:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            return value.strip('"')
    return None

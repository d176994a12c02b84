"""Authentication and HTTP plumbing shared by the Kordiam-protocol channels (``kordiam-webhook``, ``kordiam-platform``).

Both channels speak a protocol Kordiam itself uses towards a CMS, so the CMS authenticates the bridge the way it
authenticates Kordiam:

- ``bearer``: a persistent token, sent as ``Authorization: Bearer …`` (a persistent JWT is also just this);
- ``jwt``: an HS256 JSON Web Token signed with a shared secret, minted for every request with a short expiry
  (``iat``, ``exp``, ``jti`` and, when configured, ``iss``, ``aud``, ``sub``); signed by PyJWT;
- ``api_key``: ``api_key``/``api_secret`` exchanged for a bearer token at a token endpoint (as Kordiam's own API
  and the Platform integration do), cached until shortly before its ``expires_in`` and fetched again once
  when the CMS answers 401 to a cached token;
- ``headers``: fixed custom headers, every value a secret.

A token endpoint is asked with ``POST`` and both forms seed 002 documents at once: HTTP Basic
``base64(key:secret)`` (what Kordiam sends) and the form body ``grant_type=client_credentials&api_key=…&
api_secret=…`` (what the WordPress connector reads). It must answer ``{"access_token", "token_type",
"expires_in"}``.

``ProtocolHttp`` sends every request through the process's shared client and turns failures into the bridge's
error classes: timeouts, connection errors, 408/409/425/429 and 5xx → ``ChannelUnavailable`` (with the server's
``Retry-After``); 401/403 → ``ChannelRejected`` naming the channel and the keys to check; any other 4xx →
``ChannelRejected`` keeping the server's own message. Nothing is retried in-process (the queue retries), except
the one token refresh after a 401.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import jwt
from jwt.warnings import InsecureKeyLengthWarning
from pydantic import BaseModel, Field, SecretStr, field_validator

from bridge import jsontext, redaction
from bridge.channels.http_errors import http_error, response_json, unreachable
from bridge.config import ApiKeyOptions, BearerAuth, HeadersOptions, Int, JwtOptions, NonBlank
from bridge.config import http_url as config_http_url
from bridge.digits import ascii_digits
from bridge.errors import BridgeError, ChannelRejected
from bridge.http import HttpClient, HttpResponse, HttpTransportError
from bridge.valueclass import value_class

# A token is used until this long before its expiry (at most), so it never expires on the way.
TOKEN_EXPIRY_MARGIN = 30.0
# How long a token whose answer had no usable ``expires_in`` is kept (a 401 fetches a new one anyway).
TOKEN_DEFAULT_LIFETIME = 300.0
JSON_HEADERS = {"Accept": "application/json, application/*+json"}

_RESERVED_HEADERS = frozenset({"host", "content-length", "content-type", "transfer-encoding", "connection"})


def http_url(value: str) -> str:
    """An http(s) base URL (``bridge.config.http_url``'s rules), without a trailing slash."""
    return config_http_url(value).rstrip("/")


# --- options: the sending side of ``bridge.config``'s credential model set ----------------------------------------


class JwtAuth(JwtOptions):
    """An HS256 JWT minted per request: ``iat``, ``exp`` = iat + ttl_seconds, ``jti``, and iss/aud/sub if set."""

    issuer: NonBlank | None = "kordiam-bridge"
    subject: NonBlank | None = None
    ttl_seconds: Int = Field(default=60, ge=5, le=3600)


class ApiKeyAuth(ApiKeyOptions):
    """``api_key``/``api_secret`` exchanged at ``token_url`` (default ``{url}/oauth2/token``) for a bearer token."""

    token_url: str | None = None

    @field_validator("token_url")
    @classmethod
    def _token_url(cls, value: str | None) -> str | None:
        return None if value is None else http_url(value)


class HeadersAuth(HeadersOptions):
    """Fixed custom headers, e.g. ``{ "X-Api-Key" = "…" }``; the values are secrets, each sent as one line."""

    @classmethod
    def value_problem(cls, name: str, value: str) -> str | None:
        if name.lower() in _RESERVED_HEADERS:
            return f"{name!r} is set by the bridge itself"
        if "\n" in value or "\r" in value:
            return f"header {name!r}: the value must be one line"
        return super().value_problem(name, value)


WebhookAuth = Annotated[BearerAuth | JwtAuth | ApiKeyAuth | HeadersAuth, Field(discriminator="type")]


# --- authenticators ------------------------------------------------------------------------------------------


@value_class
class Credentials:
    """Headers for one request; ``renewable``: a 401 may be cured by asking for new credentials once."""

    headers: dict[str, str] = field(repr=False)  # the credentials themselves
    renewable: bool = False


class Authenticator(Protocol):
    #: The keys to check when the target refuses the credentials (for error messages).
    hint: str

    async def credentials(self) -> Credentials: ...

    def refused(self, credentials: Credentials) -> None:
        """The target answered 401 to these credentials: do not use them again."""
        ...


class StaticHeaders:
    def __init__(self, headers: Mapping[str, SecretStr], hint: str) -> None:
        self._headers = dict(headers)
        self.hint = hint

    async def credentials(self) -> Credentials:
        return Credentials({name: value.get_secret_value() for name, value in self._headers.items()})

    def refused(self, credentials: Credentials) -> None:
        return None


def mint_hs256(secret: bytes, claims: Mapping[str, Any]) -> str:
    """A compact JWS (RFC 7515/7519) with ``{"alg": "HS256", "typ": "JWT"}``, signed by PyJWT.

    The claims go in sorted by name, as the hand-written minting did, so the bytes did not change. The secret is
    the target's to choose (as it is for Kordiam's own Global Export): PyJWT's warning about one shorter than 32
    bytes would only reach stderr, outside the structured log, so it is silenced here.
    """
    with warnings.catch_warnings(action="ignore", category=InsecureKeyLengthWarning):
        return jwt.encode(dict(sorted(claims.items())), secret, algorithm="HS256")


class JwtSigner:
    hint = "check auth.secret (and auth.issuer/auth.audience if the target checks them)"

    def __init__(self, options: JwtAuth) -> None:
        self._options = options

    def claims(self, now: float | None = None) -> dict[str, Any]:
        issued = int(now if now is not None else time.time())
        claims: dict[str, Any] = {"iat": issued, "exp": issued + self._options.ttl_seconds, "jti": secrets.token_hex(8)}
        for claim, value in (("iss", self._options.issuer), ("aud", self._options.audience)):
            if value is not None:
                claims[claim] = value
        if self._options.subject is not None:
            claims["sub"] = self._options.subject
        return claims

    async def credentials(self) -> Credentials:
        token = mint_hs256(self._options.secret.get_secret_value().encode(), self.claims())
        return Credentials({"Authorization": f"Bearer {token}"})

    def refused(self, credentials: Credentials) -> None:
        return None


@dataclass(slots=True)
class _Token:
    value: str = field(repr=False)
    expires_at: float


@dataclass(slots=True)
class TokenSource:
    """Bearer tokens from a token endpoint, asked with HTTP Basic plus the ``api_key``/``api_secret`` form fields.

    With ``cache`` a token is reused until ``TOKEN_EXPIRY_MARGIN`` (or a tenth of its lifetime) before it
    expires; without, every request gets a new one (what Kordiam does, seed 002). Concurrent callers share one
    fetch.
    """

    http: HttpClient
    token_url: str
    key: str
    secret: SecretStr
    label: str
    hint: str
    cache: bool = True
    timeout: float | None = None  # seconds per request; None: the shared client's
    fetches: int = 0
    _token: _Token | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def credentials(self) -> Credentials:
        if not self.cache:
            return Credentials({"Authorization": f"Bearer {(await self._fetch()).value}"})
        if (cached := self._valid()) is not None:
            return Credentials({"Authorization": f"Bearer {cached}"}, renewable=True)
        async with self._lock:
            if (cached := self._valid()) is not None:
                return Credentials({"Authorization": f"Bearer {cached}"}, renewable=True)
            self._token = await self._fetch()
            return Credentials({"Authorization": f"Bearer {self._token.value}"})

    def refused(self, credentials: Credentials) -> None:
        if self._token is not None and credentials.headers.get("Authorization") == f"Bearer {self._token.value}":
            self._token = None

    def _valid(self) -> str | None:
        token = self._token
        if token is None or time.monotonic() >= token.expires_at:
            return None
        return token.value

    async def _fetch(self) -> _Token:
        action = f"obtaining a token from {self.token_url}"
        secret = self.secret.get_secret_value()
        basic = base64.b64encode(f"{self.key}:{secret}".encode()).decode("ascii")
        form = {"grant_type": "client_credentials", "api_key": self.key, "api_secret": secret}
        headers = {**JSON_HEADERS, "Authorization": f"Basic {basic}"}
        self.fetches += 1
        try:
            response = await self.http.request(
                "POST", self.token_url, data=form, headers=headers, timeout_seconds=self.timeout
            )
        except HttpTransportError as error:
            raise unreachable(self.label, action, self.token_url, error) from error
        if not response.is_success:
            raise http_error(response, self.label, action, refused=_refused(self.hint))
        answer = response_json(response, self.label, action, quote=False)
        access = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(access, str) or not access.strip():
            raise ChannelRejected(f"{self.label}: {action}: the answer has no access_token")
        redaction.SECRETS.remember_token(access.strip())
        return _Token(access.strip(), time.monotonic() + _lifetime(answer.get("expires_in")))


def _lifetime(expires_in: Any) -> float:
    seconds: float | None = None
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
        seconds = float(expires_in)
    elif isinstance(expires_in, str) and ascii_digits(expires_in.strip()):
        seconds = float(expires_in.strip())
    if seconds is None or seconds <= 0:
        return TOKEN_DEFAULT_LIFETIME
    return seconds - min(TOKEN_EXPIRY_MARGIN, seconds / 10)


def webhook_authenticator(
    auth: BaseModel, http: HttpClient, url: str, label: str, *, timeout: float | None = None
) -> Authenticator:
    """The authenticator for a ``kordiam-webhook`` ``auth`` table (``timeout``: of its token requests)."""
    if isinstance(auth, BearerAuth):
        return StaticHeaders(
            {"Authorization": SecretStr(f"Bearer {auth.token.get_secret_value()}")}, "check auth.token"
        )
    if isinstance(auth, JwtAuth):
        return JwtSigner(auth)
    if isinstance(auth, ApiKeyAuth):
        return TokenSource(
            http,
            auth.token_url or f"{url}/oauth2/token",
            auth.api_key,
            auth.api_secret,
            label,
            "check auth.api_key and auth.api_secret",
            timeout=timeout,
        )
    if isinstance(auth, HeadersAuth):
        return StaticHeaders(auth.headers, "check the values of auth.headers")
    raise TypeError(f"unknown auth options {type(auth).__name__}")


# --- requests and their failures -----------------------------------------------------------------------------


class ProtocolHttp:
    """Authenticated JSON requests through the shared client, failures as ``ChannelUnavailable``/``ChannelRejected``."""

    def __init__(
        self, http: HttpClient, authenticator: Authenticator, label: str, *, timeout: float | None = None
    ) -> None:
        self.http = http
        self.auth = authenticator
        self.label = label
        self.timeout = timeout  # seconds per request; None: the shared client's

    async def request(self, method: str, url: str, action: str, body: Any = None) -> HttpResponse:
        """Send ``body`` as JSON (``bytes``: JSON encoded already); a 401 to renewable credentials (a cached token)
        is retried once with new ones."""
        credentials = await self.auth.credentials()
        response = await self._send(method, url, action, body, credentials)
        if response.status_code == 401 and credentials.renewable:
            self.auth.refused(credentials)
            credentials = await self.auth.credentials()
            response = await self._send(method, url, action, body, credentials)
        return response

    async def _send(self, method: str, url: str, action: str, body: Any, credentials: Credentials) -> HttpResponse:
        headers = {**JSON_HEADERS, **credentials.headers}
        content: bytes | None = None
        if body is not None:
            content = body if isinstance(body, bytes) else jsontext.encode(body)
            headers["Content-Type"] = "application/json;charset=UTF-8"
        try:
            return await self.http.request(method, url, content=content, headers=headers, timeout_seconds=self.timeout)
        except HttpTransportError as error:
            raise unreachable(self.label, action, url, error) from error

    def error(self, response: HttpResponse, action: str) -> BridgeError:
        return http_error(response, self.label, action, refused=_refused(self.auth.hint))


def _refused(hint: str) -> str:
    return f"the target refused the bridge's credentials; {hint}"


def existing_item_id(response: HttpResponse) -> str | None:
    """The id of the item a receiver already has, named in its ``409`` to a create (``{"id": …}``), else None.

    Neither Kordiam protocol lets the sender look an item up, so a create whose answer was lost is sent again; a
    receiver that keeps one item per Kordiam id refuses that second create, and naming its item lets the bridge
    update and link it (without the id, the 409 is retried as any other).
    """
    if response.status_code != 409:
        return None
    try:
        answer = response.json()
    except ValueError:
        return None
    return answer_id(answer.get("id")) if isinstance(answer, dict) else None


def answer_id(value: Any) -> str | None:
    """An id from an answer: a number or a non-empty string, as text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None

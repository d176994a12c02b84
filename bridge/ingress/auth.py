"""Who may call the ingress: the credentials Kordiam presents, checked per receiver.

Every check answers ``None`` (allowed) or a short reason for the log (never the presented secret). Tokens the
ingress issues itself (the ``api_key`` exchange, the Platform integration's ``/oauth2/token``) are HS256 JWTs
signed with the configured secret, so any number of ingress replicas accept each other's tokens without sharing
state, and a changed secret revokes them all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qs

import jwt

from bridge.config import ApiKeyCheck, BearerCheck, HeadersCheck, IngressAuth, JwtCheck

ISSUED_TOKEN_ISSUER = "kordiam-bridge-ingress"


class CredentialCheck(Protocol):
    def check(self, headers: Mapping[str, str]) -> str | None:
        """None when the request's credentials are valid, else why not (for the log, without the secret)."""
        ...


def _same(presented: str, expected: str) -> bool:
    # aiohttp reads a header's bytes as UTF-8 with surrogateescape: a byte that is not UTF-8 is a lone surrogate,
    # which only this error handler encodes (back to the byte that was sent).
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.encode())


def bearer_of(headers: Mapping[str, str]) -> str | None:
    """The bearer token presented, if any; one that is not ASCII is returned too (for the check to refuse)."""
    value = headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.casefold() != "bearer" or not token.strip():
        return None
    return token.strip()


def _jwt_text(token: str) -> bool:
    """A JWT is base64url and dots, so ASCII: anything else is refused before PyJWT, which cannot encode a lone
    surrogate (a byte of the header that was not UTF-8) and would raise UnicodeEncodeError, not InvalidTokenError."""
    return token.isascii()


@dataclass(frozen=True, slots=True)
class BearerTokenCheck:
    token: str = field(repr=False)

    def check(self, headers: Mapping[str, str]) -> str | None:
        presented = bearer_of(headers)
        if presented is None:
            return "no bearer token"
        return None if _same(presented, self.token) else "wrong bearer token"


@dataclass(frozen=True, slots=True)
class JwtTokenCheck:
    secret: str = field(repr=False)
    issuer: str | None
    audience: str | None
    require_expiry: bool

    def check(self, headers: Mapping[str, str]) -> str | None:
        presented = bearer_of(headers)
        if presented is None:
            return "no bearer token"
        if not _jwt_text(presented):
            return "JWT invalid: not ASCII"
        required = ["exp"] if self.require_expiry else []
        if self.issuer is not None:
            required.append("iss")
        try:
            jwt.decode(
                presented,
                self.secret,
                algorithms=["HS256"],
                issuer=self.issuer,
                audience=self.audience,
                options={"require": required, "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            return "JWT expired"
        except jwt.InvalidTokenError as error:
            return f"JWT invalid: {type(error).__name__}"
        return None


class TokenIssuer:
    """Mints and verifies the bearer tokens the ingress hands out at a token path.

    Kordiam presents the same token on every call until it expires, and verifying it (PyJWT: base64, JSON, HMAC,
    the claims) was about a tenth of a Platform call's CPU. So a token that verified is remembered, by its SHA-256
    (the token itself is never kept or compared outside ``hmac``), until its ``exp``; at most
    ``VERIFIED_TOKENS_KEPT`` of them, the whole memory dropped when full. A token that failed is never remembered.
    """

    VERIFIED_TOKENS_KEPT = 1024

    def __init__(self, secret: str, ttl_seconds: int, audience: str) -> None:
        # A key of its own per receiver, 32 bytes whatever the configured secret's length (RFC 7518 3.2).
        self._secret = hmac.new(secret.encode(), f"{ISSUED_TOKEN_ISSUER}:{audience}".encode(), "sha256").digest()
        self.ttl_seconds = ttl_seconds
        self._audience = audience
        self._verified: dict[bytes, float] = {}  # SHA-256 of a token that verified -> its exp

    def issue(self) -> dict[str, object]:
        now = int(time.time())
        claims = {
            "iss": ISSUED_TOKEN_ISSUER,
            "aud": self._audience,
            "iat": now,
            "exp": now + self.ttl_seconds,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self._secret, algorithm="HS256")
        return {"access_token": token, "token_type": "bearer", "expires_in": self.ttl_seconds}

    def check(self, headers: Mapping[str, str]) -> str | None:
        presented = bearer_of(headers)
        if presented is None:
            return "no bearer token"
        if not _jwt_text(presented):
            return "token not issued by this ingress"
        digest = hashlib.sha256(presented.encode()).digest()
        expires = self._verified.get(digest)
        if expires is not None:
            if time.time() < expires:
                return None
            del self._verified[digest]
        try:
            claims = jwt.decode(
                presented,
                self._secret,
                algorithms=["HS256"],
                issuer=ISSUED_TOKEN_ISSUER,
                audience=self._audience,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            return "token expired"
        except jwt.InvalidTokenError:
            return "token not issued by this ingress"
        if len(self._verified) >= self.VERIFIED_TOKENS_KEPT:
            self._verified.clear()
        self._verified[digest] = float(claims["exp"])
        return None


def basic_credentials(headers: Mapping[str, str]) -> tuple[str, str] | None:
    scheme, _, encoded = headers.get("Authorization", "").partition(" ")
    if scheme.casefold() != "basic":
        return None
    try:
        user, separator, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except ValueError:  # not base64 (binascii.Error; a character that is not ASCII), or not UTF-8 once decoded
        return None
    return (user, secret) if separator else None


def form_credentials(body: bytes) -> tuple[str, str] | None:
    """``api_key=…&api_secret=…`` (seed 002's form body), when the request has no Basic header."""
    try:
        fields = parse_qs(body.decode(), keep_blank_values=False)
    except UnicodeDecodeError:
        return None
    key, secret = fields.get("api_key"), fields.get("api_secret")
    return (key[0], secret[0]) if key and secret else None


@dataclass(frozen=True, slots=True)
class KeyExchange:
    """``api_key``/``api_secret`` → bearer token at the token path; then the token on every call."""

    api_key: str
    api_secret: str = field(repr=False)
    issuer: TokenIssuer

    def exchange(self, headers: Mapping[str, str], body: bytes) -> dict[str, object] | None:
        """The token answer, or None when the key and secret are wrong or missing."""
        presented = basic_credentials(headers) or form_credentials(body)
        if presented is None:
            return None
        key, secret = presented
        # Both compared, always, so the answer time does not say which one was wrong.
        key_ok = _same(key, self.api_key)
        secret_ok = _same(secret, self.api_secret)
        return self.issuer.issue() if key_ok and secret_ok else None

    def check(self, headers: Mapping[str, str]) -> str | None:
        return self.issuer.check(headers)


@dataclass(frozen=True, slots=True)
class HeaderValuesCheck:
    expected: tuple[tuple[str, str], ...] = field(repr=False)

    def check(self, headers: Mapping[str, str]) -> str | None:
        missing = [name for name, _ in self.expected if name not in headers]
        if missing:
            return f"header {missing[0]} missing"
        wrong = [name for name, value in self.expected if not _same(headers[name], value)]
        return f"header {wrong[0]} wrong" if wrong else None


def credential_check(auth: IngressAuth, audience: str) -> CredentialCheck | KeyExchange:
    """The check for a receiver's ``auth`` table; ``audience`` names the receiver in the tokens it issues."""
    if isinstance(auth, BearerCheck):
        return BearerTokenCheck(auth.token.get_secret_value())
    if isinstance(auth, JwtCheck):
        return JwtTokenCheck(auth.secret.get_secret_value(), auth.issuer, auth.audience, auth.require_expiry)
    if isinstance(auth, ApiKeyCheck):
        secret = auth.api_secret.get_secret_value()
        return KeyExchange(auth.api_key, secret, TokenIssuer(secret, auth.token_ttl_seconds, audience))
    if isinstance(auth, HeadersCheck):
        return HeaderValuesCheck(tuple((name, value.get_secret_value()) for name, value in auth.headers.items()))
    raise TypeError(f"unknown auth options {type(auth).__name__}")

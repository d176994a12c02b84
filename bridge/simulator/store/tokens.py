"""OAuth2 client-credentials tokens the simulator issues, and what it does with each."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from bridge.simulator.store.base import Clock


class TokenState(Enum):
    VALID = "valid"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass
class _AccessToken:
    expires_at: datetime
    revoked: bool = False


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int


class TokenStore:
    """Opaque random bearer tokens with an expiry taken from the injectable clock."""

    def __init__(self, clock: Clock, ttl_seconds: int) -> None:
        self._clock = clock
        self._ttl = timedelta(seconds=ttl_seconds)
        self._access: dict[str, _AccessToken] = {}
        self._refresh: set[str] = set()

    def issue(self) -> IssuedTokens:
        now = self._clock()
        self._prune_expired(now)
        access_token = secrets.token_urlsafe(32)
        refresh_token = secrets.token_urlsafe(32)
        self._access[access_token] = _AccessToken(expires_at=now + self._ttl)
        self._refresh.add(refresh_token)
        return IssuedTokens(access_token, refresh_token, int(self._ttl.total_seconds()))

    def refresh(self, refresh_token: str) -> IssuedTokens | None:
        """Exchange a refresh token; like Kordiam's, each one works only once."""
        if refresh_token not in self._refresh:
            return None
        self._refresh.discard(refresh_token)
        return self.issue()

    def check(self, access_token: str) -> TokenState:
        token = self._access.get(access_token)
        if token is None:
            return TokenState.UNKNOWN
        if token.revoked:
            return TokenState.REVOKED
        if self._clock() >= token.expires_at:
            return TokenState.EXPIRED
        return TokenState.VALID

    def revoke_all(self) -> int:
        for token in self._access.values():
            token.revoked = True
        self._refresh.clear()
        return len(self._access)

    def clear(self) -> None:
        self._access.clear()
        self._refresh.clear()

    def _prune_expired(self, now: datetime) -> None:
        # Revoked tokens are kept so their holders get the specific "token-revoked" answer.
        expired = [key for key, token in self._access.items() if not token.revoked and now >= token.expires_at]
        for key in expired:
            del self._access[key]

"""The ``[ingress]`` table: the HTTP receiver that turns Kordiam's webhooks into queue messages.

The ``auth`` table has the shape of the ``kordiam-webhook`` channel's (``type`` = bearer | jwt | api_key |
headers), read from the receiving side: the values are what Kordiam must present. Secrets are ``SecretStr`` and
may come from the environment (``BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__TOKEN=…``).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# A large Kordiam element (tests/unit/test_ingress.py builds one: 50 tasks each carrying a 20,000-character article
# as content, 30 publications, custom fields everywhere) is about 1.1 MB of JSON; 4 MiB leaves room.
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _not_blank(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().strip():
        raise ValueError("must not be empty")
    return value


def _path(value: str) -> str:
    if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", value.rstrip("/") or "/x"):
        raise ValueError("must be a URL path like /kordiam (letters, digits, . _ ~ -)")
    return value.rstrip("/")


class BearerCheck(_Model):
    """Kordiam sends ``Authorization: Bearer {token}``."""

    type: Literal["bearer"]
    token: SecretStr

    _token = field_validator("token")(_not_blank)


class JwtCheck(_Model):
    """Kordiam sends ``Authorization: Bearer {HS256 JWT}``: signature, ``exp`` (when present), and ``iss``/``aud``
    when set here are verified."""

    type: Literal["jwt"]
    secret: SecretStr
    issuer: str | None = Field(default=None, min_length=1)
    audience: str | None = Field(default=None, min_length=1)
    # Kordiam's JWT is a persistent token (seed 001); set true to refuse tokens without ``exp``.
    require_expiry: bool = False

    _secret = field_validator("secret")(_not_blank)


class ApiKeyCheck(_Model):
    """Kordiam exchanges ``api_key``/``api_secret`` at ``{path}{token_path}`` for a bearer token, then sends it."""

    type: Literal["api_key"]
    api_key: str = Field(min_length=1)
    api_secret: SecretStr
    token_path: str = "/oauth2/token"
    token_ttl_seconds: int = Field(default=3600, ge=60, le=31_536_000)

    _secret = field_validator("api_secret")(_not_blank)
    _token_path = field_validator("token_path")(_path)


class HeadersCheck(_Model):
    """Kordiam sends these custom headers with these values (every one must match)."""

    type: Literal["headers"]
    headers: dict[str, SecretStr] = Field(min_length=1)

    @field_validator("headers")
    @classmethod
    def _names(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if not secret.get_secret_value().strip():
                raise ValueError(f"header {name!r}: the value must not be empty")
        return value


IngressAuth = Annotated[BearerCheck | JwtCheck | ApiKeyCheck | HeadersCheck, Field(discriminator="type")]


class GlobalExportReceiver(_Model):
    """Seed 001: Kordiam calls ``{path}/element`` (POST) and ``{path}/element/{id}`` (PUT, DELETE)."""

    path: str = "/kordiam"
    auth: IngressAuth

    _path = field_validator("path")(_path)


class PlatformReceiver(_Model):
    """Seed 002: Kordiam calls ``{path}/oauth2/token`` with HTTP Basic ``api_user:api_secret``, then the rest with
    the bearer token it got."""

    path: str = "/platform"
    api_user: str = Field(min_length=1)
    api_secret: SecretStr
    token_ttl_seconds: int = Field(default=3600, ge=60, le=31_536_000)

    _path = field_validator("path")(_path)
    _secret = field_validator("api_secret")(_not_blank)


class IngressSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8780, ge=0, le=65535)
    global_export: GlobalExportReceiver | None = None
    platform: PlatformReceiver | None = None
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024, le=64 * 1024 * 1024)
    # Per client address: a steady rate and a burst (Kordiam's retries and a bulk edit come in bursts).
    rate_limit_per_second: float = Field(default=50.0, gt=0, le=100_000)
    rate_limit_burst: int = Field(default=200, ge=1, le=1_000_000)
    # Longest wait for the queue to confirm a send before answering 503 (Kordiam then retries).
    enqueue_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _receivers(self) -> IngressSettings:
        if self.global_export is None and self.platform is None:
            raise ValueError("global_export: configure [ingress.global_export] or [ingress.platform] (or both)")
        if (
            self.global_export is not None
            and self.platform is not None
            and self.global_export.path == self.platform.path
        ):
            raise ValueError("platform.path: must differ from global_export.path")
        return self

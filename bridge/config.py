"""Configuration: a TOML file, every key overridable from the environment as ``BRIDGE_<SECTION>__<KEY>``.

A wrong or missing value stops start-up with one message that names the key (``ConfigError``); secret values
are ``SecretStr`` and never printed, not even in validation errors.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from bridge.errors import ConfigError

CONFIG_ENV = "BRIDGE_CONFIG"
# Channels are a list, so their keys are addressed by channel name: BRIDGE_CHANNELS__<NAME>__<KEY>.
CHANNEL_ENV_PREFIX = "BRIDGE_CHANNELS__"


def _http_url(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("must be an http(s) URL")
    return value


STOMP_SCHEMES = ("stomp", "stomp+ssl")
STOMP_DEFAULT_PORT = 61613


@dataclass(frozen=True, slots=True)
class StompAddress:
    """A ``stomp://HOST[:PORT]/queue/NAME`` URL, taken apart."""

    host: str
    port: int
    destination: str
    tls: bool

    @property
    def broker(self) -> str:
        return f"{self.host}:{self.port}"


def parse_stomp_url(value: str) -> StompAddress:
    """Raises ``ValueError`` with what is wrong; the queue name may hold ``.``, ``-``, ``_`` (ActiveMQ's own)."""
    parsed = urlparse(value)
    if parsed.scheme not in STOMP_SCHEMES or not parsed.hostname:
        raise ValueError("must be stomp://HOST:PORT/queue/NAME or stomp+ssl://HOST:PORT/queue/NAME")
    if parsed.username or parsed.password:
        raise ValueError("must not hold credentials: set queue.username and queue.password")
    try:
        port = parsed.port or STOMP_DEFAULT_PORT
    except ValueError:
        raise ValueError("has a port that is not a number from 1 to 65535") from None
    if not re.fullmatch(r"/queue/[A-Za-z0-9_.\-]+", parsed.path) or parsed.query or parsed.fragment:
        raise ValueError("must name one queue as its path: stomp://HOST:PORT/queue/NAME")
    return StompAddress(parsed.hostname, port, parsed.path, tls=parsed.scheme == "stomp+ssl")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Keys that mean something for one kind of queue only: set for the other, they would silently do nothing.
SQS_ONLY_KEYS = ("endpoint_url", "region", "wait_time_seconds", "visibility_timeout")
STOMP_ONLY_KEYS = ("username", "password", "ca_file")


class QueueSettings(Section):
    """``url`` chooses the queue: ``https://…`` an SQS queue, ``stomp://HOST:PORT/queue/NAME`` (``stomp+ssl://``
    for TLS) a queue on ActiveMQ. The keys of one kind are refused for the other."""

    url: str
    # SQS only.
    endpoint_url: str | None = None
    region: str = "eu-central-1"
    wait_time_seconds: int = Field(default=20, ge=0, le=20)
    visibility_timeout: int = Field(default=60, ge=5, le=43_200)
    # ActiveMQ only: the broker login, and a CA bundle for stomp+ssl:// (default: the system's).
    username: str | None = Field(default=None, min_length=1)
    password: SecretStr | None = None
    ca_file: FilePath | None = None
    # Both.
    concurrency: int = Field(default=32, ge=1, le=1000)
    dlq_url: str | None = None
    # Attempts before the worker dead-letters a failing message itself, with context; default: the queue's
    # redrive maxReceiveCount (the worker acts one receive earlier so the reason is kept).
    max_receive_count: int | None = Field(default=None, ge=1, le=1000)
    shutdown_timeout: float = Field(default=25.0, gt=0, le=120)
    # Back-off between attempts of a failing message: exponential from `retry_base_seconds`, capped.
    retry_base_seconds: float = Field(default=5.0, gt=0, le=3600)
    retry_max_seconds: float = Field(default=900.0, gt=0, le=43_200)

    @field_validator("url", "dlq_url")
    @classmethod
    def _queue_urls(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if urlparse(value).scheme in STOMP_SCHEMES:
            parse_stomp_url(value)
            return value
        try:
            return _http_url(value)
        except ValueError:
            raise ValueError("must be an SQS queue URL (https://…) or stomp://HOST:PORT/queue/NAME") from None

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return value if value is None else _http_url(value)

    @model_validator(mode="after")
    def _one_kind_of_queue(self) -> QueueSettings:
        stomp = self.backend == "stomp"
        for key in STOMP_ONLY_KEYS if not stomp else SQS_ONLY_KEYS:
            if key in self.model_fields_set:
                kind = "SQS" if key in SQS_ONLY_KEYS else "ActiveMQ (stomp://)"
                raise ValueError(f"{key}: is for {kind} queues only; remove it for this queue.url")
        if not stomp:
            if self.dlq_url is not None and urlparse(self.dlq_url).scheme in STOMP_SCHEMES:
                raise ValueError("dlq_url: must be an SQS queue URL, like queue.url")
            return self
        if self.dlq_url is None:
            raise ValueError("dlq_url: is required for a stomp:// queue (the bridge never drops a message)")
        if urlparse(self.dlq_url).scheme not in STOMP_SCHEMES:
            raise ValueError("dlq_url: must be a stomp:// URL on the same broker as queue.url")
        queue, dlq = parse_stomp_url(self.url), parse_stomp_url(self.dlq_url)
        if (dlq.host, dlq.port, dlq.tls) != (queue.host, queue.port, queue.tls):
            raise ValueError(f"dlq_url: must be on the same broker as queue.url ({queue.broker})")
        if dlq.destination == queue.destination:
            raise ValueError("dlq_url: must name another queue than queue.url")
        if self.password is not None and self.username is None:
            raise ValueError("username: is required with queue.password")
        return self

    @property
    def backend(self) -> Literal["sqs", "stomp"]:
        return "stomp" if urlparse(self.url).scheme in STOMP_SCHEMES else "sqs"

    @property
    def is_fifo(self) -> bool:
        return self.url.endswith(".fifo")


class KordiamSettings(Section):
    base_url: str
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    timeout: float = Field(default=10.0, gt=0, le=120)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("client_secret")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("must not be empty")
        return value


class StateSettings(Section):
    """``sqlite:///PATH`` (one host) or ``dynamodb://TABLE`` (many workers, shared)."""

    url: str = "sqlite:///bridge-state.db"
    # DynamoDB only: for DynamoDB Local / moto server, and the table's region (default: queue.region's default).
    endpoint_url: str | None = None
    region: str | None = None
    # An element's lease: held while one worker syncs it, so two workers never sync one element at once. The
    # holder extends it while it works; a crashed or stalled worker's elements come free after lease_seconds.
    lease_seconds: float = Field(default=120.0, gt=0, le=3600)
    lease_wait_seconds: float = Field(default=10.0, ge=0, le=300)

    @field_validator("url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        scheme, _, rest = value.partition("://")
        if scheme == "sqlite" and rest.startswith("/") and len(rest) > 1:
            return value
        if scheme == "dynamodb" and re.fullmatch(r"[A-Za-z0-9_.-]{3,255}", rest):
            return value
        raise ValueError("must be sqlite:///PATH or dynamodb://TABLE")

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return value if value is None else _http_url(value)

    @property
    def backend(self) -> Literal["sqlite", "dynamodb"]:
        return "dynamodb" if self.url.startswith("dynamodb://") else "sqlite"

    @property
    def sqlite_path(self) -> Path:
        return Path(self.url.removeprefix("sqlite:///"))

    @property
    def table(self) -> str:
        return self.url.removeprefix("dynamodb://")


StatusSelector = int | Annotated[str, Field(min_length=1)]


class ChannelSettings(BaseModel):
    """Keys every channel has; the adapter's own keys stay in ``model_extra`` and its model validates them."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    type: str = Field(min_length=1)
    platforms: list[int] = Field(min_length=1)
    statuses: list[StatusSelector] | None = None
    main: bool = False
    # Isolation: after this many transient failures in a row the channel's calls fail fast for the cool-down.
    breaker_threshold: int = Field(default=5, ge=1, le=1000)
    breaker_cooldown: float = Field(default=30.0, gt=0, le=3600)
    # Optional limits for a CMS that cannot take the worker's full concurrency or rate.
    max_in_flight: int | None = Field(default=None, ge=1, le=1000)
    rate_limit: float | None = Field(default=None, gt=0, le=10_000)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def __repr_args__(self) -> Any:
        # The adapter's own keys may hold secrets until its model turns them into SecretStr: never show them.
        return [(key, value) for key, value in super().__repr_args__() if key not in (self.model_extra or {})]


class FeedbackSettings(Section):
    enabled: bool = True
    link_element: bool = True
    # When a channel reports the item live and Kordiam does not yet show the publication as published.
    publish_when_live: bool = True


class ReconcileSettings(Section):
    """The optional sweep that heals changes whose notification never arrived."""

    enabled: bool = False
    interval_seconds: float = Field(default=900.0, ge=1, le=86_400)
    # How far back the first sweep after start-up looks.
    lookback_seconds: float = Field(default=3600.0, ge=0, le=30 * 86_400)


class OpsSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=9090, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BRIDGE_", env_nested_delimiter="__", extra="forbid", frozen=True, case_sensitive=False
    )

    queue: QueueSettings
    kordiam: KordiamSettings
    state: StateSettings = StateSettings()
    channels: list[ChannelSettings] = Field(min_length=1)
    feedback: FeedbackSettings = FeedbackSettings()
    reconcile: ReconcileSettings = ReconcileSettings()
    ops: OpsSettings = OpsSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init arguments; the environment must win over them.
        return (_SectionEnvSource(settings_cls), init_settings)

    @model_validator(mode="after")
    def _channels_consistent(self) -> Settings:
        names = [c.name for c in self.channels]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise ValueError(f"channels[{index}].name: {name!r} is used by another channel")
        if sum(c.main for c in self.channels) > 1:
            raise ValueError("channels: at most one channel may set main = true")
        return self

    @property
    def main_channel(self) -> str:
        """The channel whose item the Kordiam element is linked to: the one marked main, else the first."""
        return next((c.name for c in self.channels if c.main), self.channels[0].name)


class _SectionEnvSource(EnvSettingsSource):
    """The environment, minus the per-channel variables that ``load_settings`` applies by channel name."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        loaded = super()._load_env_vars()
        return {key: value for key, value in loaded.items() if not key.startswith(CHANNEL_ENV_PREFIX.lower())}


def _channel_overrides(data: dict[str, Any]) -> None:
    """Apply ``BRIDGE_CHANNELS__<NAME>__<KEY>[__<SUBKEY>…]=value`` to the channel of that name.

    The name is matched upper-cased with ``-`` and ``.`` read as ``_``; a value that is a JSON object or list
    (``{…}``, ``[…]``) is parsed, so a whole table can come from one variable too.
    """
    channels = data.get("channels")
    if not isinstance(channels, list):
        return
    by_name = {re.sub(r"[^A-Z0-9]", "_", str(c.get("name", "")).upper()): c for c in channels if isinstance(c, dict)}
    for variable, raw in sorted(os.environ.items()):
        if not variable.upper().startswith(CHANNEL_ENV_PREFIX):
            continue
        name, *path = variable[len(CHANNEL_ENV_PREFIX) :].split("__")
        channel = by_name.get(name.upper())
        if channel is None or not path or not all(path):
            known = ", ".join(sorted(by_name)) or "none"
            raise ConfigError(variable, f"names no configured channel key (channels: {known})")
        value: Any = raw
        if raw.lstrip().startswith(("{", "[")):
            try:
                value = json.loads(raw)
            except ValueError as error:
                raise ConfigError(variable, f"looks like JSON but does not parse: {error.args[0]}") from None
        target = channel
        for part in path[:-1]:
            nested = target.setdefault(part.lower(), {})
            if not isinstance(nested, dict):
                raise ConfigError(variable, f"{part.lower()} is not a table")
            target = nested
        target[path[-1].lower()] = value


def load_settings(path: Path | str | None = None, *, overrides: dict[str, Any] | None = None) -> Settings:
    """Read the TOML file (``path`` or ``$BRIDGE_CONFIG``), apply the environment, validate everything."""
    data: dict[str, Any] = {}
    source = path or os.environ.get(CONFIG_ENV)
    if source:
        file = Path(source)
        try:
            with file.open("rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError("--config", f"file {file} does not exist") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(str(file), f"not valid TOML: {error}") from None
        except OSError as error:
            raise ConfigError(str(file), f"cannot be read: {error.strerror}") from None
    data.update(overrides or {})
    _channel_overrides(data)
    try:
        return Settings(**data)
    except ValidationError as error:
        raise config_error(error) from None


def config_error(error: ValidationError, prefix: str = "") -> ConfigError:
    """The first validation error as a ``ConfigError`` naming its key, never echoing the offending value."""
    first = error.errors(include_input=False, include_url=False)[0]
    key = prefix
    for part in first["loc"]:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing":
        message = "is required"
    elif first["type"] == "extra_forbidden":
        message = "is not a known key"
    # Model validators report their own key in the message ("channels[1].name: …", "dlq_url: …" in queue).
    head, separator, rest = message.partition(": ")
    if separator and re.fullmatch(r"[A-Za-z_][\w.\[\]]*", head):
        key, message = (f"{key}.{head}" if key else head), rest
    others = len(error.errors()) - 1
    if others:
        message += f" (and {others} more problem{'s' if others > 1 else ''})"
    return ConfigError(key or "config", message)

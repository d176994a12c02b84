"""Configuration: a TOML file, every key overridable from the environment as ``BRIDGE_<SECTION>__<KEY>``.

A wrong or missing value stops start-up with one message that names the key (``ConfigError``); secret values
are ``SecretStr`` and never printed, not even in validation errors.

Why one module of about 800 lines: every section is read from one file by ``load_settings`` and several validate
against each other (queue keys by backend, channels against status, the credential model set that the channels
and the ingress share); ``bridge.config`` sits below every package that reads a section.
"""

from __future__ import annotations

import codecs
import contextlib
import difflib
import ipaddress
import json
import math
import os
import re
import select
import ssl
import stat
import tomllib
import types
import unicodedata
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, overload
from urllib.parse import ParseResult, urlparse

import structlog
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FilePath,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from bridge import redaction
from bridge.errors import ConfigError, shown

log = structlog.get_logger("bridge.config")

CONFIG_ENV = "BRIDGE_CONFIG"
ENV_PREFIX = "BRIDGE_"
# Channels are a list, so their keys are addressed by channel name: BRIDGE_CHANNELS__<NAME>__<KEY>.
CHANNELS_ENV = "BRIDGE_CHANNELS"
CHANNEL_ENV_PREFIX = CHANNELS_ENV + "__"
# BRIDGE_* variables that belong to other tools of the project, not to the configuration: the test suite, the
# compose queue initialiser, the container health check.
OTHER_ENV_PREFIXES = ("BRIDGE_TEST_", "BRIDGE_INIT_", "BRIDGE_HEALTHCHECK_", "BRIDGE_SKIP_")


# The fewest characters of a secret setting. Every secret the bridge sends is replaced by *** wherever a server's
# answer quotes it (``bridge.http.HttpResponse.redact``); a shorter one could be guessed, and would match
# ordinary words in those answers, so it is refused at start-up and redaction never has to skip one.
SHORTEST_SECRET = 8
# What Kordiam's feedback writes are parked under while they fail for every element (``bridge.pipeline.sync``): a
# name no channel may take, since a channel's parked elements are kept under its name.
KORDIAM_FEEDBACK = "kordiam-feedback"


def secret_problem(text: str) -> str | None:
    """What is wrong with ``text`` as a secret setting, without echoing it; None when it will do."""
    if not text.strip():
        return "must not be empty"
    if len(text.strip()) < SHORTEST_SECRET:
        return f"is too short for a secret: at least {SHORTEST_SECRET} characters"
    # Sent in a header, no HTTP client takes one; in a form, it is another secret than meant. Most often the last
    # newline of the file a secret store or `--from-file` read it from.
    if any(unicodedata.category(character) == "Cc" for character in text):
        return "holds a line break or control character (a file's last newline?): a secret is one line"
    return None


def plausible_secret(value: SecretStr) -> SecretStr:
    """The rule for every secret setting (``secret_problem``; one ``field_validator`` per model uses it)."""
    problem = secret_problem(value.get_secret_value())
    if problem:
        raise ValueError(problem)
    return value


def _not_a_boolean(value: Any) -> Any:
    # pydantic's lax mode reads true as 1 and false as 0: `concurrency = true` would run one handler, silently.
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


# Every number setting of the configuration and the channels' own keys is one of these (or wrapped in
# ``NotBoolean`` where a number shares a union with text): a boolean is refused, naming the key, like any wrong value.
NotBoolean = BeforeValidator(_not_a_boolean)


def _without_unit(value: Any) -> Any:
    # "30s", "15m", "4MiB": plainly a number, which pydantic would call "not a valid number"; say what is wrong.
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?(\d[\d_]*(\.\d*)?|\.\d+)\s*[A-Za-z]+\s*", value):
        raise ValueError("must be a plain number, without a unit: durations are in seconds, sizes in bytes")
    return value


WithoutUnit = BeforeValidator(_without_unit)
Int = Annotated[int, NotBoolean, WithoutUnit]


def _name_text(value: Any) -> Any:
    # Spaces, or a file's last newline, are as absent as nothing, and around a name they are no part of it: a client
    # id, a user or an issuer of " " or "id\n" would pass `check-config` and fail only at the far end, as credentials
    # refused.
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        raise ValueError("must not be empty or blank")
    if any(unicodedata.category(character) == "Cc" for character in text):
        raise ValueError("must not contain a line break or control character")
    return text


# Every text setting that names something (an id, a user, an issuer, a channel type): one line, read without the
# spaces around it, of at least one character that is not a space.
NonBlank = Annotated[str, BeforeValidator(_name_text), Field(min_length=1)]


class VariableText(str):
    """A value as a ``BRIDGE_*`` variable's text gave it (not parsed as JSON): the one place a boolean setting reads a
    word (``Bool``), since a variable has no booleans, where the file and JSON have theirs."""


# The words a variable may say for a boolean, case-insensitive, around spaces ignored (as a number's are).
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def _boolean(value: Any) -> Any:
    # pydantic's lax mode reads "no", "off", "f", 0 as false and "yes", "on", "t", 1 as true: a file's `enabled =
    # "false"`, text that other tools reading the file take as true, would pass, and a variable's " true" would not.
    if isinstance(value, bool):
        return value
    if isinstance(value, VariableText):
        word = value.strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
        raise ValueError("must be true or false (or yes/no, on/off, 1/0)")
    if isinstance(value, str):
        raise ValueError("must be true or false, without quotes")
    raise ValueError("must be true or false")


# Every boolean setting of the configuration and the channels' own keys: true or false in the file (and in JSON), a
# word of TRUE_WORDS or FALSE_WORDS in a variable; anything else is refused, naming the key.
Bool = Annotated[bool, BeforeValidator(_boolean)]


def _finite(value: Any) -> Any:
    # TOML has nan and inf, and an environment variable's text reads as them ("nan", "1e400"); neither is a
    # duration or a rate, and nan would fail a bound as "less than … 120".
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value  # pydantic says what is wrong with it
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(f"must be a finite number, not {number}")
    return value


Float = Annotated[float, NotBoolean, WithoutUnit, BeforeValidator(_finite)]
# An HTTP channel's `timeout` key: seconds per request to its target; None (unset) is the shared client's
# (kordiam.timeout). A CMS slower than Kordiam to save a story needs more: a write that outlasts its timeout is
# retried, so it would never succeed.
ChannelTimeout = Annotated[Float | None, Field(gt=0, le=120)]


def http_url(value: str) -> str:
    """The one check of every http(s) address the bridge is given (Kordiam, the SQS queues and endpoints, the
    channels' sites and APIs): a URL the HTTP clients can call, returned without surrounding whitespace.

    What urlparse lets through but no request can use is refused here, naming the key, rather than found at the
    first call: there it is an error like any unreachable server's, and the worker would retry it for ever as
    "Kordiam unreachable". So: http or https, a host, a port from 1 to 65535 if one is given, no space or control
    character (urlparse drops tabs and newlines, the clients do not), and no ?query or #fragment (every caller
    appends a path to it). No ``user:password@`` either: an address is no secret (``check-config`` prints it, an
    "unreachable" error in the log and on a dead letter names it), and every credential has its own secret key.
    """
    text = value.strip()
    if any(character.isspace() or not character.isprintable() for character in text):
        raise ValueError("must not contain spaces or control characters")
    parsed = _url_parts(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError("must be an http(s) URL")
    _check_host_name(parsed.hostname)
    try:
        port = parsed.port
    except ValueError:  # out of range, or not a number
        port = 0
    if port == 0:
        raise ValueError("has a port that is not a number from 1 to 65535")
    if parsed.query or parsed.fragment or text.endswith(("?", "#")):
        raise ValueError("must be a base address, without ?query or #fragment")
    if parsed.username is not None or parsed.password is not None:
        raise ValueError("must not hold credentials (user:password@): set them in the keys for secrets")
    return text


def _url_parts(text: str) -> ParseResult:
    """``urlparse``, whose own ``ValueError`` (an unclosed or wrong [IPv6] host: "Invalid IPv6 URL", "'zz' does not
    appear to be an IPv4 or IPv6 address") is said in the words of every address check."""
    try:
        return urlparse(text)
    except ValueError:
        raise ValueError("has a host that is not a valid [IPv6] address") from None


HOST_NAME_PROBLEM = "has a host name that is not valid (each dot-separated label 1 to 63 characters, 253 in all)"


def _check_host_name(host: str) -> None:
    """A host the resolver can take: an IP address, or a name of labels of 1 to 63 characters (after IDNA encoding),
    253 in all. Anything else fails at every connection ("label empty or too long"), which reads as a server that
    cannot be reached and is retried for ever."""
    if _is_ip_address(host):
        return
    try:
        encoded = host.encode("idna")
    except UnicodeError:
        raise ValueError(HOST_NAME_PROBLEM) from None
    if len(encoded.removesuffix(b".")) > 253:
        raise ValueError(HOST_NAME_PROBLEM)


def path_text(value: str) -> str:
    """The check of a setting that names a file or directory (``state.url``, a folder channel's ``path``): read
    without the spaces around it, as every address is, and refused with a control character inside. A variable's
    last newline, or a space before it, would otherwise name another file than meant (``state.db\\n``, a relative
    `` /srv/out``): a fresh, empty store, or exports written where nobody looks, silently."""
    text = value.strip()
    if any(unicodedata.category(character) == "Cc" for character in text):
        raise ValueError("must not contain a line break or control character")
    return text


def aws_endpoint_url(value: str) -> str:
    """An endpoint for the AWS clients (``queue.endpoint_url``, ``state.endpoint_url``, an S3 ``endpoint_url``):
    ``http_url``'s rules and botocore's own, stricter on the host, whose "Invalid endpoint" would otherwise come out
    of the first client made, as a traceback."""
    text = http_url(value)
    from botocore.utils import is_valid_endpoint_url, is_valid_ipv6_endpoint_url

    if not (is_valid_endpoint_url(text) or is_valid_ipv6_endpoint_url(text)):
        raise ValueError(AWS_ENDPOINT_PROBLEM)
    return text


AWS_ENDPOINT_PROBLEM = "has a host the AWS client refuses: letters, digits, '-' and '.' only (no '_'), or an IP address"


# What botocore takes as a region name; anything else is an InvalidRegionError (a traceback) when the first client is
# made. Emulators take any such name ("local").
AWS_REGION = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def aws_region(value: str | None) -> str | None:
    """The check of ``queue.region`` and ``state.region`` (an empty one would be no region, silently)."""
    if value is not None and not AWS_REGION.fullmatch(value):
        raise ValueError("must be an AWS region name like eu-central-1")
    return value


def listen_host(value: str) -> str:
    """The check of ``ops.host`` and ``ingress.host``: asyncio reads an empty host as every interface, so an empty
    template variable would expose the port beyond the 127.0.0.1 default, silently."""
    if not value.strip():
        raise ValueError("must not be empty (0.0.0.0 listens on every interface)")
    # A URL, an address with its port, a space or a control character: never a host to listen on. Shown quoted,
    # so that a space or a control character can be seen.
    if not _is_ip_address(value) and not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
        raise ValueError(f"{value!r} is not an IP address or a host name (letters, digits, '-', '_' and '.')")
    _check_host_name(value)
    return value


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


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


def is_fifo_url(url: str) -> bool:
    """An SQS FIFO queue: AWS requires the ``.fifo`` suffix on its name (the one test of it in the bridge)."""
    return url.endswith(".fifo")


def parse_stomp_url(value: str) -> StompAddress:
    """Raises ``ValueError`` with what is wrong; the queue name may hold ``.``, ``-``, ``_`` (ActiveMQ's own)."""
    parsed = _url_parts(value)
    if parsed.scheme not in STOMP_SCHEMES or not parsed.hostname:
        raise ValueError("must be stomp://HOST:PORT/queue/NAME or stomp+ssl://HOST:PORT/queue/NAME")
    if parsed.username or parsed.password:
        raise ValueError("must not hold credentials: set queue.username and queue.password")
    _check_host_name(parsed.hostname)
    try:
        port = STOMP_DEFAULT_PORT if parsed.port is None else parsed.port
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ValueError("has a port that is not a number from 1 to 65535")
    if not re.fullmatch(r"/queue/[A-Za-z0-9_.\-]+", parsed.path) or parsed.query or parsed.fragment:
        raise ValueError("must name one queue as its path: stomp://HOST:PORT/queue/NAME")
    return StompAddress(parsed.hostname, port, parsed.path, tls=parsed.scheme == "stomp+ssl")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Keys that mean something for one kind of queue only: set for the other, they would silently do nothing.
SQS_ONLY_KEYS = ("endpoint_url", "region", "wait_time_seconds", "visibility_timeout")
STOMP_ONLY_KEYS = ("username", "password", "ca_file")
# Default of queue.read_ahead: 16 messages per slot, at most 512 (the README's consumer loop says how it was
# chosen). Per slot, so that a narrow worker (a CMS that takes one write at a time) does not hold hundreds of
# messages for one slot, each waiting up to 16 syncs instead of hundreds.
READ_AHEAD_PER_SLOT = 16
READ_AHEAD_MAX_DEFAULT = 512
# Default of ingress.max_connections: this many per call in progress (ingress.max_concurrent_requests).
CONNECTIONS_PER_CALL = 8


class QueueSettings(Section):
    """``url`` chooses the queue: ``https://…`` an SQS queue, ``stomp://HOST:PORT/queue/NAME`` (``stomp+ssl://``
    for TLS) a queue on ActiveMQ. The keys of one kind are refused for the other."""

    url: str
    # SQS only.
    endpoint_url: str | None = None
    region: str = "eu-central-1"
    wait_time_seconds: Int = Field(default=20, ge=0, le=20)
    visibility_timeout: Int = Field(default=60, ge=5, le=43_200)
    # ActiveMQ only: the broker login, and a CA bundle for stomp+ssl:// (default: the system's).
    username: NonBlank | None = None
    password: SecretStr | None = None
    ca_file: FilePath | None = None
    # Both.
    concurrency: Int = Field(default=32, ge=1, le=1000)
    # Messages held beyond `concurrency`, whose notifications wait for a slot only if they need a fetch: one an
    # earlier fetch covered is settled as soon as it is received (README, Covered notifications).
    read_ahead: Int = Field(default=READ_AHEAD_MAX_DEFAULT, ge=0, le=5000)
    dlq_url: str | None = None
    # Attempts before the worker dead-letters a failing message itself, with context; default: the queue's
    # redrive maxReceiveCount (the worker acts one receive earlier so the reason is kept).
    max_receive_count: Int | None = Field(default=None, ge=1, le=1000)
    shutdown_timeout: Float = Field(default=25.0, gt=0, le=120)
    # Back-off between attempts of a failing message: exponential from `retry_base_seconds`, capped.
    retry_base_seconds: Float = Field(default=5.0, gt=0, le=3600)
    retry_max_seconds: Float = Field(default=900.0, gt=0, le=43_200)
    # How far a worker's clock may run ahead of the clock that stamps a notification (SQS's; on ActiveMQ the
    # producer's JMS timestamp, else the broker's): by that stamp, a
    # notification is covered by a fetch only if the fetch started more than this after it was sent (a fetch
    # after this worker received it needs no allowance; README, Covered notifications). The same value as
    # bridge.pipeline.covering.DEFAULT_CLOCK_SKEW_SECONDS.
    clock_skew_seconds: Float = Field(default=5.0, ge=0, le=3600)

    @property
    def handlers(self) -> int:
        """Messages a worker runs at once: ``concurrency`` doing their work, ``read_ahead`` up to where they need to."""
        return self.concurrency + self.read_ahead

    @model_validator(mode="before")
    @classmethod
    def _read_ahead_from_concurrency(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("read_ahead") is None:
            try:
                concurrency = int(data.get("concurrency", cls.model_fields["concurrency"].default))
            except (TypeError, ValueError):
                return data  # the concurrency's own error says what is wrong
            return {**data, "read_ahead": min(READ_AHEAD_MAX_DEFAULT, READ_AHEAD_PER_SLOT * max(0, concurrency))}
        return data

    @field_validator("url", "dlq_url")
    @classmethod
    def _queue_urls(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()  # as every http(s) address is (a variable's last newline)
        if _url_parts(value).scheme in STOMP_SCHEMES:
            parse_stomp_url(value)
            return value
        if _url_parts(value).scheme not in ("http", "https"):
            raise ValueError("must be an SQS queue URL (https://…) or stomp://HOST:PORT/queue/NAME")
        return http_url(value)

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, value: Path | None) -> Path | None:
        # Read now, so that a wrong file is a line naming the key, not an SSLError when the worker connects.
        if value is not None:
            try:
                ssl.create_default_context(cafile=str(value))
            except (ssl.SSLError, OSError, ValueError) as error:
                raise ValueError(f"{shown(value)} is not a PEM file of CA certificates ({error})") from None
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return value if value is None else aws_endpoint_url(value)

    _region = field_validator("region")(aws_region)

    @model_validator(mode="after")
    def _one_kind_of_queue(self) -> QueueSettings:
        if self.retry_base_seconds > self.retry_max_seconds:
            raise ValueError(
                f"retry_base_seconds: {self.retry_base_seconds:g} is more than retry_max_seconds "
                f"({self.retry_max_seconds:g}), which caps every back-off"
            )
        stomp = self.backend == "stomp"
        for key in STOMP_ONLY_KEYS if not stomp else SQS_ONLY_KEYS:
            if key in self.model_fields_set:
                kind = "SQS" if key in SQS_ONLY_KEYS else "ActiveMQ (stomp://)"
                raise ValueError(f"{key}: is for {kind} queues only; remove it for this queue.url")
        if not stomp:
            if self.dlq_url is not None and urlparse(self.dlq_url).scheme in STOMP_SCHEMES:
                raise ValueError("dlq_url: must be an SQS queue URL, like queue.url")
            # A dead letter sent to the queue it came from comes straight back: a poison message would loop.
            if self.dlq_url is not None and _queue_path(self.dlq_url) == _queue_path(self.url):
                raise ValueError("dlq_url: must name another queue than queue.url")
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
        if self.ca_file is not None and not queue.tls:
            raise ValueError(
                "ca_file: is for stomp+ssl:// queues only (a stomp:// connection has no TLS); remove it or use "
                "stomp+ssl://"
            )
        return self

    @property
    def backend(self) -> Literal["sqs", "stomp"]:
        return "stomp" if urlparse(self.url).scheme in STOMP_SCHEMES else "sqs"

    @property
    def is_fifo(self) -> bool:
        return is_fifo_url(self.url)


class KordiamSettings(Section):
    base_url: str
    client_id: NonBlank
    client_secret: SecretStr
    timeout: Float = Field(default=10.0, gt=0, le=120)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return http_url(value)

    _client_secret = field_validator("client_secret")(plausible_secret)


DYNAMODB_ONLY_KEYS = ("endpoint_url", "region")
SQLITE_ONLY_KEYS = ("create_directories",)


class StateSettings(Section):
    """``sqlite:///PATH`` (one host) or ``dynamodb://TABLE`` (many workers, shared). The keys of one kind are
    refused for the other."""

    url: str = "sqlite:///bridge-state.db"
    # DynamoDB only: for DynamoDB Local / moto server, and the table's region (default: queue.region's default).
    endpoint_url: str | None = None
    region: str | None = None
    # An element's lease: held while one worker syncs it, so two workers never sync one element at once. The
    # holder extends it while it works; a crashed or stalled worker's elements come free after lease_seconds (on
    # one host at once: a lease whose process is gone is taken over). A message whose element another worker
    # holds waits in hand (heartbeated, no receive spent) up to lease_wait_seconds: longer than lease_seconds by
    # default, so a dead worker's lease on another host expires within one wait.
    lease_seconds: Float = Field(default=120.0, gt=0, le=3600)
    lease_wait_seconds: Float = Field(default=300.0, ge=0, le=3600)
    # SQLite: make the database file's directory if it does not exist (default: refuse, naming state.url).
    create_directories: Bool = False

    @field_validator("url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        value = path_text(value)
        scheme, _, rest = value.partition("://")
        if scheme == "sqlite" and rest.startswith("/") and len(rest) > 1:
            return value
        if scheme == "dynamodb":
            if re.fullmatch(r"[A-Za-z0-9_.-]{3,255}", rest):
                return value
            raise ValueError("dynamodb://TABLE: a DynamoDB table name is 3 to 255 letters, digits, '_', '.' or '-'")
        raise ValueError("must be sqlite:///PATH or dynamodb://TABLE")

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return value if value is None else aws_endpoint_url(value)

    _region = field_validator("region")(aws_region)

    @model_validator(mode="after")
    def _one_kind_of_store(self) -> StateSettings:
        # Like the queue's keys: set for the other kind of store, they would silently do nothing.
        dynamodb = self.backend == "dynamodb"
        for key in SQLITE_ONLY_KEYS if dynamodb else DYNAMODB_ONLY_KEYS:
            # Set to its default it asks for nothing (create_directories = false from the environment, where a
            # file's key cannot be removed).
            if key in self.model_fields_set and getattr(self, key) != type(self).model_fields[key].default:
                kind = "sqlite:///" if dynamodb else "dynamodb://"
                raise ValueError(f"{key}: is for {kind} state stores only; remove it for this state.url")
        return self

    @property
    def backend(self) -> Literal["sqlite", "dynamodb"]:
        return "dynamodb" if self.url.startswith("dynamodb://") else "sqlite"

    @property
    def sqlite_path(self) -> Path:
        return Path(self.url.removeprefix("sqlite:///"))

    @property
    def table(self) -> str:
        return self.url.removeprefix("dynamodb://")


# Kordiam ids are positive 64-bit integers: bridge.kordiam.models.MAX_ID, written out here (the configuration sits
# below the Kordiam client).
MAX_KORDIAM_ID = 2**63 - 1
StatusSelector = Annotated[int | Annotated[str, Field(min_length=1)], NotBoolean]


class ChannelSettings(BaseModel):
    """Keys every channel has; the adapter's own keys stay in ``model_extra`` and its model validates them."""

    model_config = ConfigDict(extra="allow", frozen=True)

    # Not stripped like other names: the channel variables (BRIDGE_CHANNELS__<NAME>__…) match the name as written.
    # At most 100 characters: the name is part of DynamoDB keys (a delivery's range key may hold 1024 bytes, with
    # its publication id), which would refuse every delivery after its channel made the item.
    name: str = Field(max_length=100)
    type: NonBlank
    platforms: list[Int] = Field(min_length=1)
    statuses: list[StatusSelector] | None = None
    main: Bool = False
    # Isolation: after this many transient failures in a row the channel's calls fail fast for the cool-down.
    breaker_threshold: Int = Field(default=5, ge=1, le=1000)
    breaker_cooldown: Float = Field(default=30.0, gt=0, le=3600)
    # Optional limits for a CMS that cannot take the worker's full concurrency or rate.
    max_in_flight: Int | None = Field(default=None, ge=1, le=1000)
    rate_limit: Float | None = Field(default=None, gt=0, le=10_000)

    @field_validator("name")
    @classmethod
    def _name_of_key_characters(cls, name: str) -> str:
        # Said in words: pydantic's own message for a pattern is the regular expression.
        if not name:
            raise ValueError("must not be empty")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(
                "must be letters, digits, '_', '.' or '-' (it is part of the state store's keys and of the "
                "BRIDGE_CHANNELS__NAME__KEY variables)"
            )
        return name

    @model_validator(mode="before")
    @classmethod
    def _misspelt_common_key(cls, data: Any) -> Any:
        # The adapter's keys are let through here, so a misspelt required key (plattforms) would be reported only as
        # the key it stands for missing: name it instead. Only for a missing key, since an adapter's own key may look
        # like a common one (status_map, statuses).
        if isinstance(data, dict):
            missing = [name for name, field in cls.model_fields.items() if field.is_required() and name not in data]
            for key in data:
                if key not in cls.model_fields and (meant := _did_you_mean(str(key), missing)):
                    raise ValueError(f"{key}: is not a known key{meant}")
        return data

    @model_validator(mode="after")
    def _takes_publications(self) -> ChannelSettings:
        # Each of these matches no publication ever: the channel would be configured and silently export nothing.
        for index, platform in enumerate(self.platforms):
            if not 0 < platform <= MAX_KORDIAM_ID:
                raise ValueError(f"platforms[{index}]: must be a Kordiam id (a positive integer)")
        if self.statuses is not None and not self.statuses:
            raise ValueError("statuses: must list at least one status id or name (leave it out for every status)")
        for index, status in enumerate(self.statuses or ()):
            if isinstance(status, int) and not 0 < status <= MAX_KORDIAM_ID:
                raise ValueError(f"statuses[{index}]: must be a Kordiam id (a positive integer) or a status name")
            if isinstance(status, str) and not status.strip():
                raise ValueError(f"statuses[{index}]: must not be blank")
        return self

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def __repr_args__(self) -> Any:
        # The adapter's own keys may hold secrets until its model turns them into SecretStr: never show them.
        return [(key, value) for key, value in super().__repr_args__() if key not in (self.model_extra or {})]


class FeedbackSettings(Section):
    enabled: Bool = True
    link_element: Bool = True
    # When a channel reports the item live and Kordiam does not yet show the publication as published.
    publish_when_live: Bool = True

    @model_validator(mode="after")
    def _writes_need_feedback(self) -> FeedbackSettings:
        # Set true with feedback off, the one write asked for would silently not happen.
        for key in ("link_element", "publish_when_live"):
            if not self.enabled and key in self.model_fields_set and getattr(self, key):
                raise ValueError(
                    f"{key}: needs feedback.enabled = true: with enabled = false the bridge writes nothing back "
                    "to Kordiam"
                )
        return self


class ReconcileSettings(Section):
    """The optional sweep that heals changes whose notification never arrived. Safe on every worker: one at a time
    sweeps, under a lease in the state store, and the sweep's place is kept there (``bridge.pipeline.reconcile``)."""

    enabled: Bool = False
    interval_seconds: Float = Field(default=900.0, ge=1, le=86_400)
    # How far back the first sweep looks while the state store holds no place of the sweep yet (a new store, or the
    # first start of a bridge that keeps it); after that every sweep resumes from the stored place, however old.
    lookback_seconds: Float = Field(default=3600.0, ge=0, le=30 * 86_400)


def _in_lower_case(value: Any) -> Any:
    # LOG_LEVEL=INFO is how most tools spell it; the words are the same in any case.
    return value.strip().lower() if isinstance(value, str) else value


LogLevel = Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_in_lower_case)]


class OpsSettings(Section):
    host: str = "127.0.0.1"
    port: Int = Field(default=9090, ge=0, le=65535)
    log_level: LogLevel = "info"
    # "json": one JSON object a line (log pipelines); "console": readable key=value lines for local use.
    log_format: Annotated[Literal["json", "console"], BeforeValidator(_in_lower_case)] = "json"

    _host = field_validator("host")(listen_host)


# --- credentials of Kordiam's CMS protocols: one model set for both directions ----------------------------------
#
# The ``kordiam-webhook`` / ``kordiam-platform`` channels present credentials to a CMS (``bridge.channels.auth``);
# the webhook ingress checks the ones Kordiam presents to the bridge ([ingress], below). Both read the same
# ``auth`` table shape (``type`` = bearer | jwt | api_key | headers) with the same rules for its common keys; each
# side adds only the keys of its own direction.

HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class BearerAuth(Section):
    """``Authorization: Bearer {token}`` with a persistent token (a persistent JWT is also just this)."""

    type: Literal["bearer"]
    token: SecretStr

    _token = field_validator("token")(plausible_secret)


class JwtOptions(Section):
    """An HS256 JWT under a shared ``secret``; ``iss`` / ``aud`` as configured (what they default to, and what else
    the token carries, is the direction's own: ``JwtAuth`` mints, ``JwtCheck`` verifies)."""

    type: Literal["jwt"]
    secret: SecretStr
    issuer: NonBlank | None = None
    audience: NonBlank | None = None

    _secret = field_validator("secret")(plausible_secret)


class ApiKeyOptions(Section):
    """``api_key`` / ``api_secret`` exchanged at a token endpoint for a bearer token."""

    type: Literal["api_key"]
    api_key: NonBlank
    api_secret: SecretStr

    _secret = field_validator("api_secret")(plausible_secret)


class HeadersOptions(Section):
    """Fixed custom headers, every value a secret; ``value_problem`` is the direction's rule for a value."""

    type: Literal["headers"]
    headers: dict[str, SecretStr] = Field(min_length=1)

    @classmethod
    def value_problem(cls, name: str, value: str) -> str | None:
        problem = secret_problem(value)
        return f"header {name!r}: the value {problem}" if problem else None

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in value.items():
            before, colon, _value = name.partition(":")
            if colon and HEADER_NAME.match(before.strip()):  # a header line copied whole: never print its value
                raise ValueError(
                    f"{before.strip()!r} is written with its value: write {{NAME = VALUE}}, not 'NAME: VALUE'"
                )
            if not HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            problem = cls.value_problem(name, secret.get_secret_value())
            if problem:
                raise ValueError(problem)
        return value


# --- [ingress]: the webhook receiver (`kordiam-bridge ingress`, bridge/ingress) ---------------------------------
#
# The ``auth`` table is the credential model set above, read from the receiving side: the values are what Kordiam
# must present. Secrets may come from the environment (``BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__TOKEN=…``).

# A large Kordiam element (tests/unit/ingress/test_ingress.py builds one: 50 tasks each carrying a 20,000-character
# article as content, 30 publications, custom fields everywhere) is about 1.1 MB of JSON; 4 MiB leaves room. A body
# larger than the queue takes is enqueued without it (bridge.ingress.common.Enqueuer).
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


def _ingress_path(value: str) -> str:
    if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", value.rstrip("/") or "/x"):
        raise ValueError("must be a URL path like /kordiam (letters, digits, . _ ~ -)")
    return value.rstrip("/")


# What a request head the ingress takes may hold (``bridge.ingress.app.IngressServer``, which says why): a header
# line of INGRESS_FIELD_BYTES, name and value (aiohttp's pure-Python parser counts the line; its C parser counts the
# value, but with the name for a head's first field or a name split across reads), and a name of half that (the C
# parser counts a name with the name before it). A credential the ingress expects must fit in them, or every call
# that carries it is answered 400 before the ingress sees it.
INGRESS_FIELD_BYTES = 2048
INGRESS_NAME_BYTES = INGRESS_FIELD_BYTES // 2
# And a request line of this many bytes (aiohttp's C parser counts its target, path and query; its pure-Python parser
# the whole line): a receiver's path must leave room in it for Kordiam's longest call, or that call is answered 400
# before the ingress sees it. Kordiam adds no query string (seeds 001 and 002); the id it puts in a PUT or DELETE
# path is kept INGRESS_ID_BYTES: the CMS item's id the worker linked, of which a DynamoDB state store maps back at
# most 1 KiB (bridge.state.dynamodb.MAX_EXTERNAL_KEY_BYTES), or the id the ingress answered itself.
INGRESS_LINE_BYTES = 2048
INGRESS_ID_BYTES = 1024


def _header_line_problem(name: str, value_bytes: int, what: str, *, prefix: str = "") -> str | None:
    """Why the line ``{name}: {prefix}{value}``, its value ``value_bytes`` long, cannot reach the ingress (``what``
    names the value); None when it can."""
    room = INGRESS_FIELD_BYTES - len(f"{name}: {prefix}".encode())
    if value_bytes <= room:
        return None
    return (
        f"is {value_bytes} bytes, too long to reach the ingress: it takes a header line ({name}: {prefix}…) of at most "
        f"{INGRESS_FIELD_BYTES} bytes, so {what} of at most {room}"
    )


def _request_line_room(call: str) -> int:
    """How long a path Kordiam's ``call`` (method and target, ``{path}`` where the path goes and ``{id}`` where an id
    does) may carry within a request line of INGRESS_LINE_BYTES."""
    fixed = f"{call} HTTP/1.1".replace("{path}", "").replace("{id}", "")
    return INGRESS_LINE_BYTES - len(fixed.encode()) - (INGRESS_ID_BYTES if "{id}" in call else 0)


def _longest_call(path: str, call: str) -> str:
    """``path``, or the error when Kordiam's longest ``call`` under it (``_request_line_room``) cannot reach the
    ingress."""
    room = _request_line_room(call)
    if len(path.encode()) > room:
        kept = f", {INGRESS_ID_BYTES} bytes kept for the id" if "{id}" in call else ""
        raise ValueError(
            f"is {len(path.encode())} bytes, too long to reach the ingress: Kordiam's longest call to it "
            f"({call}{kept}) takes a request line of at most {INGRESS_LINE_BYTES} bytes, so a path of at most {room}"
        )
    return path


class BearerCheck(BearerAuth):
    """Kordiam sends ``Authorization: Bearer {token}``."""

    @field_validator("token")
    @classmethod
    def _fits_a_request_head(cls, value: SecretStr) -> SecretStr:
        problem = _header_line_problem(
            "Authorization", len(value.get_secret_value().encode()), "a token", prefix="Bearer "
        )
        if problem:
            raise ValueError(problem)
        return value


class JwtCheck(JwtOptions):
    """Kordiam sends ``Authorization: Bearer {HS256 JWT}``: signature, ``exp`` (when present), and ``iss``/``aud``
    when set here are verified."""

    # Kordiam's JWT is a persistent token (seed 001); set true to refuse tokens without ``exp``.
    require_expiry: Bool = False


class ApiKeyCheck(ApiKeyOptions):
    """Kordiam exchanges ``api_key``/``api_secret`` at ``{path}{token_path}`` for a bearer token, then sends it."""

    token_path: str = "/oauth2/token"
    token_ttl_seconds: Int = Field(default=3600, ge=60, le=31_536_000)

    _token_path = field_validator("token_path")(_ingress_path)


class HeadersCheck(HeadersOptions):
    """Kordiam sends these custom headers with these values (every one must match)."""

    @classmethod
    def value_problem(cls, name: str, value: str) -> str | None:
        if len(name.encode()) > INGRESS_NAME_BYTES:
            return (
                f"header {name[:20]!r}…: the name is {len(name.encode())} bytes, too long to reach the ingress: it "
                f"takes a name of at most {INGRESS_NAME_BYTES} bytes"
            )
        if problem := super().value_problem(name, value):
            return problem
        too_long = _header_line_problem(name, len(value.encode()), "a value")
        return f"header {name!r}: the value {too_long}" if too_long else None


IngressAuth = Annotated[BearerCheck | JwtCheck | ApiKeyCheck | HeadersCheck, Field(discriminator="type")]


class GlobalExportReceiver(Section):
    """Seed 001: Kordiam calls ``{path}/element`` (POST) and ``{path}/element/{id}`` (PUT, DELETE)."""

    path: str = "/kordiam"
    auth: IngressAuth

    _path = field_validator("path")(_ingress_path)

    @field_validator("path")
    @classmethod
    def _fits_a_request_line(cls, value: str) -> str:
        return _longest_call(value, "DELETE {path}/element/{id}")

    @model_validator(mode="after")
    def _token_path_fits_a_request_line(self) -> GlobalExportReceiver:
        if isinstance(self.auth, ApiKeyCheck):
            room = _request_line_room(f"POST {self.path}{{path}}")  # the token path after this receiver's path
            if len(self.auth.token_path.encode()) > room:
                raise ValueError(
                    f"auth.token_path: is {len(self.auth.token_path.encode())} bytes, too long to reach the ingress: "
                    f"Kordiam's token call (POST {{path}}{{token_path}}) takes a request line of at most "
                    f"{INGRESS_LINE_BYTES} bytes, so a token_path of at most {room} after this path"
                )
        return self


class PlatformReceiver(Section):
    """Seed 002: Kordiam calls ``{path}/oauth2/token`` with HTTP Basic ``api_user:api_secret``, then the rest with
    the bearer token it got."""

    path: str = "/platform"
    api_user: NonBlank
    api_secret: SecretStr
    token_ttl_seconds: Int = Field(default=3600, ge=60, le=31_536_000)

    _path = field_validator("path")(_ingress_path)
    _secret = field_validator("api_secret")(plausible_secret)

    @field_validator("path")
    @classmethod
    def _fits_a_request_line(cls, value: str) -> str:
        return _longest_call(value, "DELETE {path}/publication/{id}")

    @model_validator(mode="after")
    def _fits_a_request_head(self) -> PlatformReceiver:
        # Kordiam sends both as HTTP Basic: base64 of "api_user:api_secret", 4 characters for every 3 bytes.
        joined = len(f"{self.api_user}:{self.api_secret.get_secret_value()}".encode())
        room = INGRESS_FIELD_BYTES - len("Authorization: Basic ")
        if 4 * -(-joined // 3) > room:
            raise ValueError(
                f"api_secret: with api_user, is {joined - 1} bytes, too long to reach the ingress: it takes a header "
                f"line (Authorization: Basic …, their base64) of at most {INGRESS_FIELD_BYTES} bytes, so api_user and "
                f"api_secret of at most {room // 4 * 3 - 1} bytes together"
            )
        return self


def _network_not_an_address_in_it(value: Any) -> Any:
    """``10.0.0.1/16`` is one address with its network's prefix, which ``ip_network`` refuses as "not a valid
    network": name the network meant instead."""
    if isinstance(value, str):
        try:
            ipaddress.ip_network(value)
        except ValueError:
            try:
                network = ipaddress.ip_network(value, strict=False)
            except ValueError:
                return value  # not a network at all: pydantic's own words
            raise ValueError(f"{value} has host bits set: write the network, {network}") from None
    return value


class IngressSettings(Section):
    """``[ingress]``: where ``kordiam-bridge ingress`` listens, its receivers, and what one client or all of them may
    hold of it."""

    host: str = "127.0.0.1"
    port: Int = Field(default=8780, ge=0, le=65535)
    global_export: GlobalExportReceiver | None = None
    platform: PlatformReceiver | None = None
    max_body_bytes: Int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024, le=64 * 1024 * 1024)
    # Per client address: a steady rate and a burst (Kordiam's retries and a bulk edit come in bursts).
    rate_limit_per_second: Float = Field(default=50.0, gt=0, le=100_000)
    rate_limit_burst: Int = Field(default=200, ge=1, le=1_000_000)
    # Proxies (a load balancer) whose X-Forwarded-For names the real client; without this every call behind a
    # load balancer would share the balancer's address, and so one rate-limit bucket.
    trusted_proxies: tuple[Annotated[IPvAnyNetwork, BeforeValidator(_network_not_an_address_in_it)], ...] = ()
    # Longest wait for the queue to confirm a send before answering 503 (Kordiam then retries).
    enqueue_timeout_seconds: Float = Field(default=5.0, gt=0, le=60)
    # Calls in progress at once (their body being read, their message being sent); one more is answered 503 with
    # Retry-After at once (Kordiam retries) rather than queued without bound. 64: twice the 32 clients that never
    # pause of the ingress benchmark, so its measured load is never refused; and 64 bodies of max_body_bytes (4 MiB)
    # are 256 MiB, half of the Terraform module's default ingress task (512 MiB).
    max_concurrent_requests: Int = Field(default=64, ge=1, le=100_000)
    # Connections open at once, idle keep-alive ones included: beyond it a new connection closes the longest idle one,
    # or is closed itself when none is idle (bridge/ingress/connections.py), so that idle or slow-header connections
    # cannot take every file descriptor and leave none for the queue. Unset: CONNECTIONS_PER_CALL times
    # max_concurrent_requests (512 by default), for the keep-alive connections a load balancer and Kordiam hold
    # between calls; a config that raised max_concurrent_requests raises it with it. 512 with the ingress's other
    # descriptors (128 kept for them) fits the soft `ulimit -n` of 1024 that systemd services and many containers
    # start with.
    max_connections: Int = Field(default=CONNECTIONS_PER_CALL * 64, ge=2, le=1_000_000)
    # Longest a call's body may take to arrive once its head has, else 408 and its slot is free again: a client
    # trickling its body cannot hold one of max_concurrent_requests. 10 s: Kordiam's largest element (about 1.1 MB)
    # at 1 Mbit/s; a whole max_body_bytes at 3.4 Mbit/s.
    body_timeout_seconds: Float = Field(default=10.0, gt=0, le=300)
    log_level: LogLevel = "info"

    _host = field_validator("host")(listen_host)

    @model_validator(mode="before")
    @classmethod
    def _max_connections_from_calls(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("max_connections") is None:
            try:
                calls = int(data.get("max_concurrent_requests", cls.model_fields["max_concurrent_requests"].default))
            except (TypeError, ValueError):
                return data  # max_concurrent_requests's own error says what is wrong
            return {**data, "max_connections": min(1_000_000, CONNECTIONS_PER_CALL * max(1, calls))}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> IngressSettings:
        if self.global_export is None and self.platform is None:
            raise ValueError("global_export: configure [ingress.global_export] or [ingress.platform] (or both)")
        if (
            self.global_export is not None
            and self.platform is not None
            and self.global_export.path == self.platform.path
        ):
            raise ValueError("platform.path: must differ from global_export.path")
        if self.max_connections <= self.max_concurrent_requests:
            raise ValueError(
                f"max_connections: must be more than max_concurrent_requests ({self.max_concurrent_requests}): every "
                "call in progress holds a connection, and a health check needs one more"
            )
        return self


class _FileAndEnvironment(BaseSettings):
    """A TOML file's values (passed as init arguments) under the environment's ``BRIDGE_<SECTION>__<KEY>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True, case_sensitive=False
    )

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


class QueueCommandSettings(_FileAndEnvironment):
    """What ``replay`` and ``dlq`` use: ``[queue]`` (and ``[ops]`` for the log format); nothing else is required
    or validated."""

    queue: QueueSettings
    ops: OpsSettings = OpsSettings()


class StatusSettings(_FileAndEnvironment):
    """What ``status`` uses: the queues, the state store, the channel table and the ops endpoint (no secrets)."""

    queue: QueueSettings
    state: StateSettings = StateSettings()
    channels: list[ChannelSettings] = Field(min_length=1)
    ops: OpsSettings = OpsSettings()

    @field_validator("channels")
    @classmethod
    def _first_is_main_by_default(cls, channels: list[ChannelSettings]) -> list[ChannelSettings]:
        # Set on the channel itself, so that what reads ``main`` (check-config, a kordiam-webhook channel looking for
        # the item the element is linked to) sees the main channel as such when none says main = true.
        if channels and not any(c.main for c in channels):
            return [channels[0].model_copy(update={"main": True}), *channels[1:]]
        return channels

    @model_validator(mode="after")
    def _channels_consistent(self) -> StatusSettings:
        names = [c.name for c in self.channels]
        by_variable: dict[str, str] = {}
        for index, name in enumerate(names):
            if name in names[:index]:
                raise ValueError(f"channels[{index}].name: {name!r} is used by another channel")
            if name == KORDIAM_FEEDBACK:
                raise ValueError(
                    f"channels[{index}].name: {name!r} is the name Kordiam's feedback is parked under: rename it"
                )
            prefix = channel_variable(name, "")
            if (other := by_variable.setdefault(prefix, name)) != name:
                # BRIDGE_CHANNELS__<NAME>__… would set one of them, silently: a secret could reach the wrong one.
                raise ValueError(
                    f"channels[{index}].name: {name!r} and {other!r} are one channel to the environment ({prefix}…): "
                    "rename one"
                )
        if sum(c.main for c in self.channels) > 1:
            raise ValueError("channels: at most one channel may set main = true")
        return self

    @property
    def parked_under(self) -> list[str]:
        """The names a worker of this configuration parks elements under, and requeues them from: its channels', in
        configuration order, then Kordiam's feedback's (``KORDIAM_FEEDBACK``)."""
        return [*(c.name for c in self.channels), KORDIAM_FEEDBACK]

    @property
    def main_channel(self) -> str:
        """The channel whose item the Kordiam element is linked to: the one marked main (the first by default; also
        for settings made with ``model_copy``, which validates nothing)."""
        return next((c.name for c in self.channels if c.main), self.channels[0].name)


class IngressCommandSettings(StatusSettings):
    """What ``ingress`` uses: ``[ingress]``, the queue it sends to, the state store and the main channel (the ids
    Kordiam sends back are mapped through them); no Kordiam secrets."""

    ingress: IngressSettings


class KordiamCommandSettings(StatusSettings):
    """What ``element --kordiam`` uses: ``status``'s sections and ``[kordiam]`` (it fetches the element); no
    channel secrets."""

    kordiam: KordiamSettings


class Settings(StatusSettings):
    """Everything the worker uses (``[ingress]`` is not among it: the worker neither needs nor checks its secrets)."""

    kordiam: KordiamSettings
    feedback: FeedbackSettings = FeedbackSettings()
    reconcile: ReconcileSettings = ReconcileSettings()


class FileSettings(Settings):
    """Every section a configuration file may hold: what ``check-config`` validates, and the known sections and
    keys that file keys and ``BRIDGE_*`` variables are checked against."""

    ingress: IngressSettings | None = None


class _SectionEnvSource(EnvSettingsSource):
    """The environment, minus the channel variables ``load_settings`` applies itself (``BRIDGE_CHANNELS``, then
    the per-channel ones by channel name); each value as ``VariableText``."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        loaded = super()._load_env_vars()
        return {
            key: value if value is None else VariableText(value)
            for key, value in loaded.items()
            if key != CHANNELS_ENV.lower() and not key.startswith(CHANNEL_ENV_PREFIX.lower())
        }


def _channels_from_environment(data: dict[str, Any]) -> bool:
    """``BRIDGE_CHANNELS``, a JSON array of channel tables, replaces the file's ``[[channels]]`` (the environment
    wins over the file, as for every setting). Read here rather than by the settings' environment source, so that
    the ``BRIDGE_CHANNELS__<NAME>__<KEY>`` variables apply to these channels too (a deployment that passes the
    channels as one secret still sets a key by name)."""
    raw = next((value for key, value in os.environ.items() if key.upper() == CHANNELS_ENV), None)
    if raw is None:
        return False
    try:
        channels = json.loads(raw)
    except ValueError as error:
        raise ConfigError(CHANNELS_ENV, f"is not valid JSON: {error.args[0]}") from None
    if not isinstance(channels, list) or not all(isinstance(channel, dict) for channel in channels):
        raise ConfigError(CHANNELS_ENV, 'must be a JSON array of channel tables ([{"name": …, "type": …}, …])')
    data["channels"] = channels
    return True


def _queue_path(url: str) -> str:
    """An SQS queue URL's account and name (the host differs between endpoints naming the same queue)."""
    return urlparse(url).path.rstrip("/")


def channel_variable(name: str, key: str) -> str:
    """The variable that sets ``key`` (``auth.token``) of the channel called ``name``."""
    return CHANNEL_ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", name.upper()) + "__" + key.replace(".", "__").upper()


def _channel_overrides(data: dict[str, Any]) -> dict[str, str]:
    """Apply ``BRIDGE_CHANNELS__<NAME>__<KEY>[__<SUBKEY>…]=value`` to the channel of that name.

    The name is matched upper-cased with ``-`` and ``.`` read as ``_``; a value that is a JSON object or list
    (``{…}``, ``[…]``) is parsed, so a whole table can come from one variable too. Returns the variable that set
    each key (``channels[0].path``).
    """
    channels = data.get("channels")
    applied: dict[str, str] = {}
    if not isinstance(channels, list):
        return applied
    by_name = {re.sub(r"[^A-Z0-9]", "_", str(c.get("name", "")).upper()): c for c in channels if isinstance(c, dict)}
    index_of = {id(c): i for i, c in enumerate(channels)}
    for variable, raw in sorted(os.environ.items()):
        if not variable.upper().startswith(CHANNEL_ENV_PREFIX):
            continue
        name, *path = variable[len(CHANNEL_ENV_PREFIX) :].split("__")
        channel = by_name.get(name.upper())
        if channel is None:
            known = ", ".join(sorted(by_name)) or "none"
            raise ConfigError(variable, f"names no configured channel (channels: {known})")
        if not path or not all(path):
            prefix = CHANNEL_ENV_PREFIX + name.upper()
            raise ConfigError(
                variable,
                f"names channel {shown(name.upper())} but no key of it: {shown(prefix + '__KEY')} sets one "
                f"({shown(prefix + '__AUTH__TOKEN')} a nested one)",
            )
        value: Any = VariableText(raw)
        if raw.lstrip().startswith(("{", "[")):
            try:
                value = json.loads(raw)
            except ValueError as error:
                raise ConfigError(variable, f"looks like JSON but does not parse: {error.args[0]}") from None
        target = channel
        for part in path[:-1]:
            nested = target.setdefault(part.lower(), {})
            if not isinstance(nested, dict):
                raise ConfigError(variable, f"{shown(part.lower())} is not a table")
            target = nested
        target[path[-1].lower()] = value
        applied[f"channels[{index_of[id(channel)]}]." + ".".join(part.lower() for part in path)] = variable
    return applied


SettingsT = TypeVar("SettingsT", bound=_FileAndEnvironment)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the configuration: the key as the user wrote it (or the variable that set it)."""

    key: str
    message: str
    # A required secret that is not set: all of these are reported together, each with the variable that sets it.
    missing_secret: bool = False
    variable: str | None = None


# Checks the adapter's own keys of one channel (``bridge.channels.channel_problems``; passed in, since the
# channel registry sits above the configuration).
ChannelCheck = Callable[["ChannelSettings", int], list[Problem]]
# The adapter's options model of a channel ``type`` (None: no such type), for the secrets of channels a command
# does not validate (``bridge.channels.channel_options_model``; passed in for the same reason).
ChannelOptionsModel = Callable[[str], type[BaseModel] | None]


@overload
def load_settings(
    path: Path | str | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    check_channel: ChannelCheck | None = None,
    channel_options_model: ChannelOptionsModel | None = None,
) -> Settings: ...


@overload
def load_settings(
    path: Path | str | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    model: type[SettingsT],
    check_channel: ChannelCheck | None = None,
    channel_options_model: ChannelOptionsModel | None = None,
) -> SettingsT: ...


def load_settings(
    path: Path | str | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    model: type[_FileAndEnvironment] = Settings,
    check_channel: ChannelCheck | None = None,
    channel_options_model: ChannelOptionsModel | None = None,
) -> _FileAndEnvironment:
    """Read the TOML file (``path`` or ``$BRIDGE_CONFIG``), apply the environment, validate what ``model`` holds.

    ``model`` is what the command uses (``Settings`` for the worker, ``StatusSettings``, ``QueueCommandSettings``):
    sections it does not hold are not validated (an operator needs no Kordiam secret to list dead letters), but
    an unknown section is still an error. ``check_channel`` validates each channel's adapter keys as well. Every
    ``BRIDGE_*`` variable that sets nothing is logged as a warning; an error caused by a variable names it; all
    missing secrets are reported at once. The secrets it holds are remembered for redaction
    (``bridge.redaction``): those of ``model``, and, unvalidated, every other secret the file and the environment
    hold (``[kordiam]``'s, ``[ingress]``'s, and each channel's by its ``channel_options_model``), since what a
    command shows (a stored reason) may quote any of them.
    """
    data: dict[str, Any] = {}
    empty_file: tuple[str, Path] | None = None
    source = path or os.environ.get(CONFIG_ENV)
    if source:
        file = Path(source)
        origin = "--config" if path else CONFIG_ENV
        try:
            content = _read_config_file(file, origin)
            data = tomllib.loads(content.decode())
        except FileNotFoundError:
            if (descriptor := _descriptor_named(file)) is not None:
                why = "stdin is closed" if descriptor == 0 else "sudo closes the one of --config <(…)"
                problem = (
                    f"{shown(file)}: file descriptor {descriptor} is not open in this process ({why}): give a file"
                )
                raise ConfigError(origin, problem) from None
            raise ConfigError(origin, f"file {shown(file)} does not exist") from None
        except IsADirectoryError:
            raise ConfigError(origin, f"{shown(file)} is a directory, not a file") from None
        except RecursionError:
            raise ConfigError(str(file), "not valid TOML: nested too deeply") from None
        except tomllib.TOMLDecodeError as error:
            if content.startswith(codecs.BOM_UTF8):  # some Windows editors write one; TOML reads it as a statement
                bom = "starts with a byte order mark (BOM): save it as UTF-8 without one"
                raise ConfigError(str(file), bom) from None
            raise ConfigError(str(file), f"not valid TOML: {error}") from None
        except UnicodeDecodeError as error:
            raise ConfigError(str(file), f"not UTF-8 (byte {error.start}); TOML files are UTF-8") from None
        except OSError as error:
            raise ConfigError(str(file), f"cannot be read: {error.strerror}") from None
        if not data:
            empty_file = (origin, file)
    data.update(overrides or {})
    try:
        settings = _validated(data, model, check_channel, given=bool(source or overrides), empty_file=empty_file)
        redaction.SECRETS.remember_secrets(*_unvalidated_secrets(data, channel_options_model))
        return settings
    except RecursionError:  # a JSON variable nested thousands deep: json's parser gives up so
        raise _nested_too_deeply() from None


def _validated(
    data: dict[str, Any],
    model: type[_FileAndEnvironment],
    check_channel: ChannelCheck | None,
    *,
    given: bool,
    empty_file: tuple[str, Path] | None,
) -> _FileAndEnvironment:
    """``load_settings`` past the file: ``data`` (the file's and ``overrides``' keys) with the environment applied,
    validated as ``model``. ``empty_file``: the file's origin and path, when it held no settings."""
    _refuse_variables_not_utf8()
    _refuse_keys_set_twice(model)
    variables = _setting_variables()
    if not given and not variables:
        raise ConfigError("--config", "no configuration file given (--config or BRIDGE_CONFIG)")
    if empty_file is not None and not data and not variables:  # an empty mount or template, most likely
        raise ConfigError(empty_file[0], f"{shown(empty_file[1])} holds no settings (it is empty, or only comments)")
    channels_variable = CHANNELS_ENV if _channels_from_environment(data) else None
    channel_variables = _channel_overrides(data)
    _warn_unused_variables(validated=model)
    for key in data:
        if key not in FileSettings.model_fields:
            raise ConfigError(
                key, f"is not a known key{_did_you_mean(key, FileSettings.model_fields) or _belongs_elsewhere(key)}"
            )
    wanted = {key: value for key, value in data.items() if key in model.model_fields}
    problems: list[Problem] = []
    settings: _FileAndEnvironment | None = None
    try:
        settings = model(**wanted)
    except ValidationError as error:
        problems.extend(validation_problems(error, model))
    except SettingsError as error:
        raise _not_json(error) from None
    if check_channel is not None and "channels" in model.model_fields:
        channels = (
            list(enumerate(settings.channels)) if isinstance(settings, StatusSettings) else _parsed_channels(wanted)
        )
        for index, channel in channels:
            problems.extend(check_channel(channel, index))
    if problems:
        raise _first_problem(problems, variables | channel_variables, channels_variable)
    assert settings is not None
    redaction.SECRETS.remember_secrets(settings)
    return settings


def _refuse_variables_not_utf8() -> None:
    """The environment holds bytes, read as UTF-8: a ``BRIDGE_*`` variable in another encoding (Latin-1 from a shell
    or a secret store) would reach a URL check as a wrong character, or break the secret's redaction and the log
    line naming it. ``BRIDGE_CONFIG`` is a file name, which may be any bytes."""
    for variable, value in os.environ.items():
        if not variable.upper().startswith(ENV_PREFIX) or variable.upper().startswith(OTHER_ENV_PREFIXES):
            continue
        name = variable.encode(errors="surrogateescape").decode(errors="backslashreplace")
        if name != variable:
            raise ConfigError(name, "the variable's name is not UTF-8")
        if variable.upper() == CONFIG_ENV:
            continue
        try:
            value.encode()
        except UnicodeEncodeError as error:
            # Where the first wrong byte is, never the value itself: it may be a secret.
            at = len(value[: error.start].encode())
            raise ConfigError(variable, f"its value is not UTF-8 (byte {at}); write it in UTF-8") from None


def _refuse_keys_set_twice(model: type[_FileAndEnvironment]) -> None:
    """A variable that sets a table as JSON (``BRIDGE_QUEUE='{"concurrency": 8}'``) beside one that sets a key
    of it the JSON sets too (``BRIDGE_QUEUE__CONCURRENCY=64``): one of the two would be ignored without a word (the
    single key wins), and which one was meant only the operator knows. Keys of the table its JSON leaves out may come
    from their own variables (a secret beside the rest). Only for the sections ``model`` reads; ``BRIDGE_CHANNELS``
    and the by-name variables are documented to apply together."""
    names = {
        variable.upper(): variable
        for variable in os.environ
        if variable.upper().startswith(ENV_PREFIX)
        and not variable.upper().startswith(OTHER_ENV_PREFIXES)
        and variable.upper() not in (CONFIG_ENV, CHANNELS_ENV)
        and variable.upper().removeprefix(ENV_PREFIX).partition("__")[0].lower() in model.model_fields
    }
    for upper, table_variable in sorted(names.items()):
        raw = os.environ[table_variable]
        if not raw.lstrip().startswith("{"):
            continue
        try:
            table = json.loads(raw)
        except ValueError:
            continue  # the variable's own error, where it is read
        for other in sorted(name for name in names if name.startswith(upper + "__")):
            path = other[len(upper) + 2 :].lower().split("__")
            held: Any = table
            for depth, part in enumerate(path):
                if not isinstance(held, dict) or part not in held:
                    break
                held = held[part]
                if depth == len(path) - 1 or not isinstance(held, dict):
                    key = ".".join([*upper.removeprefix(ENV_PREFIX).lower().split("__"), *path[: depth + 1]])
                    problem = f"sets {shown(key)}, which {shown(table_variable)} sets too (a JSON table): set it in one"
                    raise ConfigError(names[other], f"{problem} of them")


def _unvalidated_secrets(data: dict[str, Any], channel_options_model: ChannelOptionsModel | None) -> list[str]:
    """Every secret of ``data`` (the file's keys, its channels with their variables applied) and of the sections'
    ``BRIDGE_*`` variables, read as each key's model reads it but not validated: a section or channel no command
    would accept still gives up its secrets, and never an error."""
    sections = {key: value for key, value in data.items() if key != "channels"}
    for key, variable in _setting_variables().items():
        value: Any = os.environ[variable]
        if value.lstrip().startswith(("{", "[")):  # a whole table (BRIDGE_KORDIAM='{…}')
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        *tables, last = key.split(".")
        target = sections
        for part in tables:  # copied on the way down: ``data`` stays as the file holds it
            nested = target.get(part)
            target[part] = dict(nested) if isinstance(nested, dict) else {}
            target = target[part]
        target[last] = value
    found = list(redaction.unvalidated_secrets(FileSettings, sections))
    channels = data.get("channels")
    if channel_options_model is None or not isinstance(channels, list):
        return found
    for channel in channels:
        options = channel_options_model(str(channel.get("type"))) if isinstance(channel, dict) else None
        if options is not None:
            found.extend(redaction.unvalidated_secrets(options, channel))
    return found


def _nested_too_deeply() -> ConfigError:
    """The ``BRIDGE_*`` variable most deeply nested (by its brackets): the one a parser's ``RecursionError`` was
    about."""
    variables = [name for name in os.environ if name.startswith(ENV_PREFIX)]

    def depth(name: str) -> int:
        value = os.environ[name]
        return value.count("[") + value.count("{")

    deepest = max(variables, key=depth, default=None)
    if deepest is None or depth(deepest) == 0:
        return ConfigError("configuration", "is nested too deeply to read")
    return ConfigError(deepest, "is nested too deeply to read")


def _not_json(error: SettingsError) -> ConfigError:
    """The variable pydantic-settings had to read as JSON and could not: a whole section (``BRIDGE_QUEUE='{…}'``),
    or a key that takes a list or a table (``BRIDGE_INGRESS__TRUSTED_PROXIES=10.0.0.0/8``). Its error names only
    the section."""
    found = re.search(r'field "(\w+)"', str(error))
    section = found.group(1) if found else "a section"
    for key, variable in sorted(_setting_variables().items()):
        if key.partition(".")[0] != section:
            continue
        try:
            json.loads(os.environ[variable])
            continue
        except ValueError:
            pass
        if "." not in key:
            return ConfigError(variable, "is not a JSON table of the section's keys")
        annotation = _annotation_at(key.split("."))
        if get_origin(annotation) in (list, tuple, set, frozenset):
            return ConfigError(f"{variable} ({key})", "must be a JSON list ([…])")
        if get_origin(annotation) is dict or _models_of(annotation):
            return ConfigError(f"{variable} ({key})", "must be a JSON table ({…})")
    return ConfigError(f"{ENV_PREFIX}{section.upper()}", "is not a JSON table of the section's keys")


def _models_of(annotation: Any) -> list[type[BaseModel]]:
    """The models ``annotation`` is, or is a union of."""
    members = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    return [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]


def _annotation_at(path: Sequence[str]) -> Any:
    """The annotation of the key at ``path`` (``["ingress", "trusted_proxies"]``), through unions; None if none."""
    current: Any = FileSettings
    for part in path:
        fields = [m.model_fields[part] for m in _models_of(_strip(current)) if part in m.model_fields]
        if not fields:
            return None
        current = fields[0].annotation
    return _strip(current)


# How long a configuration file that is a named pipe (``mkfifo``) may take to get its first bytes: one no process
# writes to would otherwise hold the command for ever, without a word. An anonymous pipe (`--config <(…)`,
# /dev/stdin of a `|`) has its writer from the start and is read however long that takes (`<(gpg -d …)` asking for
# a passphrase).
CONFIG_PIPE_WAIT_SECONDS = 10.0


# Far more than any configuration (a few KB; hundreds of channels are a few hundred KB): a file read up to here is
# some other file (`--config /dev/zero`, a log), which read whole could take all the memory there is.
CONFIG_MAX_BYTES = 16 * 1024 * 1024


def _read_config_file(file: Path, origin: str) -> bytes:
    """The file's bytes; ``ConfigError`` naming ``origin`` for a named pipe nothing is written to in time, or a file
    larger than ``CONFIG_MAX_BYTES``."""
    # Non-blocking, so that opening a named pipe does not wait for a writer; reading is blocking again.
    descriptor = os.open(file, os.O_RDONLY | os.O_NONBLOCK)
    with open(descriptor, "rb") as handle:
        if stat.S_ISFIFO(os.fstat(descriptor).st_mode) and _named_pipe(descriptor):
            readable, _, _ = select.select([descriptor], [], [], CONFIG_PIPE_WAIT_SECONDS)
            if not readable:
                raise ConfigError(
                    origin,
                    f"{shown(file)} is a pipe nothing was written to within {CONFIG_PIPE_WAIT_SECONDS:g} s (is the "
                    "process that should write it running?)",
                )
        os.set_blocking(descriptor, True)
        content = handle.read(CONFIG_MAX_BYTES + 1)
    if len(content) > CONFIG_MAX_BYTES:
        raise ConfigError(origin, f"{shown(file)} is larger than {CONFIG_MAX_BYTES} bytes: no configuration is")
    return content


def _descriptor_named(file: Path) -> int | None:
    """The file descriptor ``file`` names (``/dev/stdin``, ``/dev/fd/N``, ``/proc/self/fd/N``), if it names one:
    such a path always exists, so "does not exist" would be the wrong words for a descriptor not open here."""
    if str(file) == "/dev/stdin":
        return 0
    named = re.fullmatch(r"/(?:dev|proc/self)/fd/(\d+)", str(file))
    return None if named is None else int(named.group(1))


def _named_pipe(descriptor: int) -> bool:
    """Whether the pipe open as ``descriptor`` is a named one, which may have no writer at all; an anonymous pipe's
    link in /proc reads ``pipe:[INODE]``. Without /proc, any pipe may be a named one."""
    try:
        return not os.readlink(f"/proc/self/fd/{descriptor}").startswith("pipe:")
    except OSError:
        return True


def naming_its_variable(error: ConfigError) -> ConfigError:
    """An error found after loading (the worker's start-up checks: ``state.url``, ``queue.url``, ``ops.port`` …)
    about a setting an environment variable set, named as a load error names it: ``BRIDGE_STATE__URL (state.url):
    …``. The Terraform module and container platforms pass settings so; the file does not hold the value."""
    variable = _variable_of(_setting_variables(), error.key)
    return error if variable is None else ConfigError(f"{variable} ({error.key})", error.problem)


def _variable_of(variables: Mapping[str, str], key: str) -> str | None:
    """The variable that set ``key``: its own, one that set a table holding it (``BRIDGE_QUEUE='{…}'``,
    ``BRIDGE_INGRESS__GLOBAL_EXPORT='{…}'``), or the one variable that set a key below it (``BRIDGE_QUEUE__URL__X``
    makes queue.url a table)."""
    held = key
    while True:
        if held in variables:
            return variables[held]
        # The key holding this one: without its last ".name", or "[index]" (an item of a list the variable set). The
        # name may be empty: BRIDGE_QUEUE__ sets "queue." (a template's `BRIDGE_QUEUE__${KEY}`, KEY unset).
        holder = re.fullmatch(r"(.+)(?:\.[^.\[\]]*|\[\d+\])", held)
        if holder is None:
            break
        held = holder.group(1)
    below = [variable for name, variable in variables.items() if name.startswith(key + ".")]
    return below[0] if len(below) == 1 else None


def _setting_variables() -> dict[str, str]:
    """``BRIDGE_<SECTION>__<KEY>`` variables of a known section, by the key they name (``queue.url``,
    ``ingress.global_export.auth.token``)."""
    sections = {name for name in FileSettings.model_fields if name != "channels"}
    found: dict[str, str] = {}
    for variable in os.environ:
        upper = variable.upper()
        section, _, key = upper.removeprefix(ENV_PREFIX).partition("__")
        if upper.startswith(ENV_PREFIX) and section.lower() in sections:
            # BRIDGE_QUEUE='{…}' sets the whole section.
            found[f"{section.lower()}.{key.lower().replace('__', '.')}" if key else section.lower()] = variable
    return found


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a section field, ``X`` or ``X | None``."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _warn_unused_variables(*, validated: type[BaseModel]) -> None:
    """A ``BRIDGE_*`` variable with a misspelt section or key would be silently ignored: say so. A misspelt key of
    a section the command validates (``validated``) is not ignored but refused as an unknown key: said once, so."""
    sections = {name: _section_model(field.annotation) for name, field in FileSettings.model_fields.items()}
    sections.pop("channels")
    for variable in sorted(os.environ):
        upper = variable.upper()
        if (
            not upper.startswith(ENV_PREFIX)
            or upper in (CONFIG_ENV, CHANNELS_ENV)
            or upper.startswith(CHANNEL_ENV_PREFIX)  # a wrong one of these is an error (_channel_overrides)
            or upper.startswith(OTHER_ENV_PREFIXES)
        ):
            continue
        section, _, key = upper.removeprefix(ENV_PREFIX).partition("__")
        model = sections.get(section.lower())
        if model is None:
            meant = _did_you_mean(section.lower(), sections)
            reason = f"no section {section.lower()!r}" + (meant or f" (sections: {', '.join(sections)})")
        elif not key or section.lower() in validated.model_fields:
            continue  # BRIDGE_QUEUE='{…}': the whole section; or a section the command validates
        elif (name := key.lower().partition("__")[0]) not in model.model_fields:  # a nested key names its table first
            reason = f"[{section.lower()}] has no key {key.lower()!r}{_did_you_mean(name, model.model_fields)}"
        else:
            continue
        log.warning("environment_variable_ignored", variable=variable, reason=reason)


def _parsed_channels(data: dict[str, Any]) -> list[tuple[int, ChannelSettings]]:
    """The channels that parse on their own, by index, when the whole model did not (the others are reported)."""
    raw = data.get("channels")
    parsed = []
    for index, item in enumerate(raw if isinstance(raw, list) else []):
        try:
            parsed.append((index, ChannelSettings.model_validate(item)))
        except ValidationError:
            continue
    return parsed


def _first_problem(
    problems: list[Problem], variables: dict[str, str], channels_variable: str | None = None
) -> ConfigError:
    """The first real problem (with how many more), else all missing secrets in one line. A key is named with the
    variable that set it: its own, or ``channels_variable`` for a channel that came from the environment."""
    real = [p for p in problems if not p.missing_secret]
    if real:
        first = real[0]
        key = first.key
        from_channels_variable = key == "channels" or key.startswith("channels[")
        variable = _variable_of(variables, key) or (channels_variable if from_channels_variable else None)
        if variable:
            key = f"{variable} ({key})"
        message = first.message
        if len(problems) > 1:
            others = len(problems) - 1
            message += f" (and {others} more problem{'s' if others > 1 else ''})"
        return ConfigError(key, message)
    if len(problems) == 1:
        only = problems[0]
        return ConfigError(only.key, f"is required (or set {only.variable})" if only.variable else "is required")
    missing = ", ".join(f"{p.key} (or {p.variable})" if p.variable else p.key for p in problems)
    return ConfigError("secrets", f"not set: {missing}")


def validation_problems(
    error: ValidationError, model: type[BaseModel], prefix: str = "", *, known_beside: Collection[str] = ()
) -> list[Problem]:
    """Each validation error as a ``Problem`` naming its key, never echoing the offending value.

    A union's tag is left out of the key (``auth.token``, not ``auth.bearer.token``): it is not a key anyone
    writes. A missing ``SecretStr`` is marked so that all of them can be reported together. An unknown key says
    which known one it is likely a misspelling of, among the table's keys and ``known_beside`` (a channel's common
    keys, beside its adapter's); that key's own "is required" is then left out, the misspelling being the problem.
    """
    problems = []
    meant_keys = set()
    # The input is looked at for its shape only (a table or a list): never echoed, it may be a secret.
    for detail in error.errors(include_url=False):
        parts, annotation = _field_path(model, detail["loc"])
        key = prefix
        for part in parts:
            key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
        message = detail["msg"].removeprefix("Value error, ")
        # How a TOML file writes this key as a table: [queue], [ingress.global_export]; a channel's own is inline.
        header = key if key and "[" not in key else "section"
        if detail["type"] == "missing":
            message = "is required"
        elif detail["type"] in ("union_tag_not_found", "union_tag_invalid") and (tags := _tags_of(annotation, detail)):
            # A credentials table's type ("Unable to extract tag using discriminator 'type'"): the key to fix is it.
            tag, values = tags
            choices = f"{', '.join(values[:-1])} or {values[-1]}" if len(values) > 1 else values[0]
            key = f"{key}.{tag}"
            message = f"is required: {choices}" if detail["type"] == "union_tag_not_found" else f"must be {choices}"
        elif detail["type"] == "string_type" and isinstance(detail.get("input"), (int, float)):
            message = 'must be text, in quotes ("…")'  # an id of digits written as a number
        elif detail["type"] == "extra_forbidden":
            name = str(detail["loc"][-1])
            if meant := _closest_key(name, [*_keys_of(model, detail["loc"][:-1]), *known_beside]):
                message = f"is not a known key (did you mean {meant!r}?)"
                meant_keys.add(f"{key.rpartition('.')[0]}.{meant}".removeprefix("."))
            else:
                message = "is not a known key" + _belongs_elsewhere(name)
        elif detail["type"] in ("model_type", "dict_type", "model_attributes_type"):
            if isinstance(detail.get("input"), list):
                message = f"must be one table ([{header}]), not a list of them ([[{header}]])"
            else:
                message = "must be a table ([section] or { … }), not a single value"
        elif detail["type"] in ("list_type", "tuple_type", "set_type"):
            if isinstance(detail.get("input"), dict):
                message = f"must be a list ([[{header}]] tables, or [ … ]), not one table"
            else:
                message = "must be a list ([ … ]), not one value"
        # Model validators report their own key in the message ("channels[1].name: …", "dlq_url: …" in queue).
        head, separator, rest = message.partition(": ")
        if separator and re.fullmatch(r"[A-Za-z_][\w.\[\]]*", head):
            key, message = (f"{key}.{head}" if key else head), rest
        secret = detail["type"] == "missing" and _strip(annotation) is SecretStr
        problems.append(Problem(key or "config", message, missing_secret=secret, variable=_variable_for(key)))
    return [p for p in problems if not (p.key in meant_keys and (p.missing_secret or p.message == "is required"))]


def _tags_of(annotation: Any, detail: Any) -> tuple[str, list[str]] | None:
    """The discriminator key of the tagged union ``annotation`` that ``detail`` (a union tag error) is about, and the
    values it takes, quoted; None when it is not a key with literal values."""
    tag = str(detail.get("ctx", {}).get("discriminator", "")).strip("'")
    members = _models_of(_strip(annotation))
    if not members or not all(tag in member.model_fields for member in members):
        return None
    values = [repr(value) for member in members for value in get_args(member.model_fields[tag].annotation)]
    return (tag, values) if values else None


def _closest_key(name: str, known: Iterable[str]) -> str | None:
    """The known key ``name`` is most likely a misspelling of; None if none is close."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return close[0] if close else None


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'KEY'?)`` for ``_closest_key``; empty if none is close."""
    meant = _closest_key(name, known)
    return "" if meant is None else f" (did you mean {meant!r}?)"


def _belongs_elsewhere(name: str) -> str:
    """`` here: it is a key of [queue]`` when ``name`` is a key of other sections, else empty: written below
    another header than meant, most often at the end of the file, in the last [[channels]] table."""
    sections = [
        f"[[{section}]]" if section == "channels" else f"[{section}]"
        for section, field in FileSettings.model_fields.items()
        if (table := _section_model(field.annotation)) is not None and name in table.model_fields
    ]
    if not sections:
        return ""
    return f" here: it is a key of {' or '.join(sections)}"


def _keys_of(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The keys (names and aliases) of the table at ``loc`` in ``model``."""
    _, annotation = _field_path(model, loc)
    return [
        key
        for table in _models_of(_strip(annotation))
        for name, field in table.model_fields.items()
        for key in (name, field.alias)
        if key
    ]


def config_error(
    error: ValidationError,
    prefix: str = "",
    model: type[BaseModel] | None = None,
    *,
    known_beside: Collection[str] = (),
) -> ConfigError:
    """The first validation error as a ``ConfigError`` naming its key, never echoing the offending value."""
    return _first_problem(validation_problems(error, model or BaseModel, prefix, known_beside=known_beside), {})


def _variable_for(key: str) -> str | None:
    """The environment variable that sets ``key`` (``kordiam.client_secret``, ``channels[0].auth.token``)."""
    return None if key.startswith("channels") else ENV_PREFIX + key.replace(".", "__").upper()


def _strip(annotation: Any) -> Any:
    """``Annotated[X, …]`` and ``X | None`` as ``X``."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _strip(members[0])
    return annotation


def _field_path(model: type[BaseModel], loc: Sequence[int | str]) -> tuple[list[int | str], Any]:
    """The error location as the user's keys (union members and tags dropped), and the annotation it ends at."""
    shown: list[int | str] = []
    current: Any = model
    for part in loc:
        current = _strip(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            shown.append(part)
            current = field.annotation if field is not None else None
        elif get_origin(current) in (Union, types.UnionType):
            tagged = [m for m in get_args(current) if _has_tag(m, part)]
            current = tagged[0] if tagged else None  # a tag or a member's name: not a key anyone writes
        elif get_origin(current) in (list, tuple, set, frozenset) and isinstance(part, int):
            shown.append(part)
            current = get_args(current)[0] if get_args(current) else None
        elif get_origin(current) is dict:
            shown.append(part)
            current = get_args(current)[1] if get_args(current) else None
        else:
            shown.append(part)
            current = None
    return shown, current


def _has_tag(member: Any, tag: int | str) -> bool:
    if not (isinstance(member, type) and issubclass(member, BaseModel)):
        return False
    return any(
        get_origin(f.annotation) is Literal and tag in get_args(f.annotation) for f in member.model_fields.values()
    )

"""Where items are stored: a local folder (atomic, fsynced writes) or an S3 prefix (one ``PutObject``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiohttp
import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

from bridge.channels.files import atomic_write, os_error
from bridge.channels.newsml.g2 import MEDIA_TYPE
from bridge.channels.newsml.options import NewsMLOptions
from bridge.deadline import DeadlineMissed, by_deadline
from bridge.digits import ascii_digits
from bridge.errors import BridgeError, ChannelCredentialsRefused, ChannelRejected, ChannelUnavailable

log = structlog.get_logger("bridge.channels.newsml")

T = TypeVar("T")


class Target(Protocol):
    def uri(self, name: str) -> str: ...

    async def read(self, name: str) -> bytes | None: ...

    async def write(self, name: str, data: bytes, metadata: dict[str, str]) -> None: ...

    async def names(self, prefix: str) -> list[str] | None:
        """The names of the items starting with ``prefix``; None if the target lets the bridge write but not list
        (a write-only hot folder)."""
        ...

    async def aclose(self) -> None: ...


class FolderTarget:
    def __init__(self, label: str, path: Path) -> None:
        self._label = label
        self.path = path.resolve()

    def uri(self, name: str) -> str:
        return (self.path / name).as_uri()

    async def read(self, name: str) -> bytes | None:
        return await asyncio.to_thread(self._read, name)

    async def write(self, name: str, data: bytes, metadata: dict[str, str]) -> None:
        await asyncio.to_thread(self._write, name, data)

    async def names(self, prefix: str) -> list[str] | None:
        return await asyncio.to_thread(self._names, prefix)

    async def aclose(self) -> None:
        return None

    def _names(self, prefix: str) -> list[str]:
        try:
            with os.scandir(self.path) as entries:
                return sorted(e.name for e in entries if e.name.startswith(prefix) and e.is_file())
        except FileNotFoundError:
            return []
        except OSError as error:
            raise os_error(error, f"{self._label}: cannot list {self.path}", self.path) from error

    def _read(self, name: str) -> bytes | None:
        try:
            return (self.path / name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise os_error(error, f"{self._label}: cannot read {self.path / name}", self.path) from error

    def _write(self, name: str, data: bytes) -> None:
        target = self.path / name
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            # Readable by the print system, which usually runs as another user.
            atomic_write(target, data)
        except OSError as error:
            raise os_error(error, f"{self._label}: cannot write {target}", self.path) from error


# S3 error codes that retrying cannot fix; everything else 4xx is rejected too, 5xx and these are transient.
_S3_TRANSIENT_CODES = frozenset(
    {
        "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
        "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable", "OperationAborted",
    }
)  # fmt: skip
# S3 not authenticating the bridge at all: its key or session is wrong, for every item alike (AccessDenied is a
# policy's answer to one request, so it stays a rejection).
_S3_CREDENTIALS_REFUSED = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired"}
)
_S3_HINTS = {
    "AccessDenied": "the credentials may not do this (s3:PutObject on the prefix is needed)",
    "NoSuchBucket": "the bucket does not exist (check target and region/endpoint_url)",
    "InvalidAccessKeyId": "the AWS access key is not known",
    "SignatureDoesNotMatch": "the AWS secret key does not match the access key",
    "PermanentRedirect": "the bucket is in another region (set region)",
    "AuthorizationHeaderMalformed": "the bucket is in another region (set region)",
}


def s3_error(error: Exception, label: str, action: str) -> BridgeError:
    """A botocore error as the bridge's taxonomy."""
    if isinstance(error, ClientError):
        response: dict[str, Any] = error.response if isinstance(error.response, dict) else {}
        code = str(response.get("Error", {}).get("Code") or "")
        message = str(response.get("Error", {}).get("Message") or "")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        status = status if isinstance(status, int) else int(code) if ascii_digits(code) else 0
        said = (code or f"HTTP {status}") + (f": {message}" if message else "")
        if code in _S3_TRANSIENT_CODES or status in (408, 429) or status >= 500:
            return ChannelUnavailable(f"{label}: {action}: {said}")
        hint = _S3_HINTS.get(code)
        if code in _S3_CREDENTIALS_REFUSED:
            return ChannelCredentialsRefused(f"{label}: {action}: {said}" + (f" — {hint}" if hint else ""))
        return ChannelRejected(f"{label}: {action}: {said}" + (f" — {hint}" if hint else ""))
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return ChannelCredentialsRefused(f"{label}: {action}: no usable AWS credentials ({error})")
    reason = str(error) or type(error).__name__
    return ChannelUnavailable(f"{label}: {action}: S3 unreachable: {reason}")


class S3Target:
    """One long-lived aiobotocore client per channel, created on first use and closed by ``aclose()``."""

    def __init__(self, label: str, options: NewsMLOptions) -> None:
        self._label = label
        self._options = options
        self.location = options.s3
        self._client: Any = None
        self._stack: AsyncExitStack | None = None
        self._lock = asyncio.Lock()
        self._read_denied_logged = False
        self._list_denied_logged = False

    def key(self, name: str) -> str:
        return f"{self.location.prefix}{name}"

    def uri(self, name: str) -> str:
        return f"s3://{self.location.bucket}/{self.key(name)}"

    async def _ensure_client(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is not None:
                return self._client
            config = AioConfig(
                connect_timeout=self._options.timeout,
                read_timeout=self._options.timeout,
                retries={"max_attempts": 3, "mode": "standard"},
                max_pool_connections=20,
            )
            stack = AsyncExitStack()
            creator = get_session().create_client(
                "s3", region_name=self._options.region, endpoint_url=self._options.endpoint_url, config=config
            )
            try:
                self._client = await stack.enter_async_context(creator)
            except (BotoCoreError, ClientError) as error:
                await stack.aclose()
                raise s3_error(error, self._label, "creating the S3 client") from error
            self._stack = stack
            return self._client

    async def _by_deadline(self, client: Any, action: str, call: Awaitable[T]) -> T:
        """``call``'s answer, or ``ChannelUnavailable`` once it has taken the channel's ``timeout``, botocore's retries
        included. botocore's read timeout counts per read: an answer that drips a byte at a time never meets it, and
        one that stops mid-answer holds each of botocore's 3 attempts for it, with the channel's write waiting. The
        whole call gets the ``timeout``, as an HTTP channel's request does: a write that outlasts it is retried
        through the queue, and the item's name is the same, so a retry replaces it."""
        try:
            return await by_deadline(self._options.timeout, call)
        except DeadlineMissed:
            raise ChannelUnavailable(
                f"{self._label}: {action}: S3 did not answer within {self._options.timeout:g} s "
                f"(endpoint {client.meta.endpoint_url})"
            ) from None

    async def read(self, name: str) -> bytes | None:
        client = await self._ensure_client()
        action = f"reading {self.uri(name)}"

        async def get() -> bytes:
            response = await client.get_object(Bucket=self.location.bucket, Key=self.key(name))
            async with response["Body"] as stream:
                data: bytes = await stream.read()
                return data

        try:
            return await self._by_deadline(client, action, get())
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404", "NotFound"):
                return None
            if code == "AccessDenied":
                # A write-only hot folder, or no s3:ListBucket (then S3 answers 403 for a missing key): carry on
                # without the last item; the PUT shows whether the credentials are wrong altogether.
                if not self._read_denied_logged:
                    self._read_denied_logged = True
                    log.warning("newsml.cannot_read_back", channel=self._label, uri=self.uri(name))
                return None
            raise s3_error(error, self._label, action) from error
        except (BotoCoreError, OSError, TimeoutError, aiohttp.ClientError) as error:
            # aiobotocore passes on a body cut off mid-way (ClientPayloadError) as aiohttp raised it.
            raise s3_error(error, self._label, action) from error

    async def write(self, name: str, data: bytes, metadata: dict[str, str]) -> None:
        client = await self._ensure_client()
        action = f"writing {self.uri(name)}"
        try:
            await self._by_deadline(
                client,
                action,
                client.put_object(
                    Bucket=self.location.bucket,
                    Key=self.key(name),
                    Body=data,
                    ContentType=f"{MEDIA_TYPE}; charset=utf-8",
                    Metadata=metadata,
                ),
            )
        except (ClientError, BotoCoreError, OSError, TimeoutError, aiohttp.ClientError) as error:
            raise s3_error(error, self._label, action) from error

    async def names(self, prefix: str) -> list[str] | None:
        client = await self._ensure_client()
        action = f"listing s3://{self.location.bucket}/{self.key(prefix)}*"
        names: list[str] = []
        request: dict[str, Any] = {"Bucket": self.location.bucket, "Prefix": self.key(prefix)}
        try:
            while True:
                page = await self._by_deadline(client, action, client.list_objects_v2(**request))
                cut = len(self.location.prefix)
                names.extend(str(item["Key"])[cut:] for item in page.get("Contents", []))
                if not page.get("IsTruncated"):
                    return sorted(names)
                request["ContinuationToken"] = page["NextContinuationToken"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "AccessDenied":
                # A write-only hot folder (no s3:ListBucket): the bridge cannot search it; said once.
                if not self._list_denied_logged:
                    self._list_denied_logged = True
                    log.warning("newsml.cannot_list", channel=self._label, uri=self.uri(prefix))
                return None
            raise s3_error(error, self._label, action) from error
        except (BotoCoreError, OSError, TimeoutError, aiohttp.ClientError) as error:
            raise s3_error(error, self._label, action) from error

    async def aclose(self) -> None:
        async with self._lock:
            stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

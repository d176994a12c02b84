"""The ``newsml`` channel's options: where the items go (an S3 prefix or a folder) and how they are named."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import ParseResult, unquote, urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge.channels.text import xml_text
from bridge.config import Float, NonBlank, aws_endpoint_url


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    prefix: str


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class NewsMLOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    target: NonBlank
    endpoint_url: str | None = None
    region: str | None = Field(default=None, pattern=r"^[a-z0-9-]+$")
    provider: NonBlank = Field(default="kordiam-bridge", max_length=200)
    guid_prefix: str = Field(default="urn:kordiam:", pattern=r"^\S+$", max_length=200)
    file_prefix: str = Field(default="kordiam-", pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$|^$")
    language: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
    timeout: Float = Field(default=10.0, gt=0, le=120)

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("s3://"):
            _parse_s3(value)  # raises ValueError with the reason
            return value
        if not value or (value.startswith("file://") and not _file_url(value).path):
            # Path("") is ".": an empty template variable would have the worker write into its working directory.
            raise ValueError("must not be empty")
        path = _folder_path(value)
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} exists and is not a directory")
        return value

    @field_validator("provider", "guid_prefix")
    @classmethod
    def _xml(cls, value: str) -> str:
        # Written into every item: lxml refuses such a character, which would fail every message instead.
        if xml_text(value) != value:
            raise ValueError("contains a character XML 1.0 cannot carry (a control character)")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return aws_endpoint_url(value)

    @model_validator(mode="after")
    def _s3_keys_need_s3(self) -> NewsMLOptions:
        if not self.is_s3 and (self.endpoint_url is not None or self.region is not None):
            raise ValueError("endpoint_url and region apply to an s3:// target only")
        return self

    @property
    def is_s3(self) -> bool:
        return self.target.startswith("s3://")

    @property
    def s3(self) -> S3Location:
        return _parse_s3(self.target)

    @property
    def folder(self) -> Path:
        return _folder_path(self.target)


def _parse_s3(target: str) -> S3Location:
    try:
        parsed = urlparse(target)
    except ValueError:  # urlparse reads "[…]" as an IPv6 host, and words its error so
        bucket = target.removeprefix("s3://").partition("/")[0]
        raise ValueError(f"{bucket!r} is not a valid S3 bucket name (write s3://bucket/prefix/)") from None
    bucket = parsed.netloc
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"{bucket!r} is not a valid S3 bucket name (write s3://bucket/prefix/)")
    if parsed.query or parsed.fragment:
        raise ValueError("an s3:// target takes no ?query or #fragment")
    prefix = parsed.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if "//" in prefix:
        raise ValueError("the S3 prefix must not contain empty path segments")
    return S3Location(bucket, prefix)


def _file_url(target: str) -> ParseResult:
    """A ``file://`` target's parts; a host is refused (urlparse's own error for a "[…]" one is an IPv6 host's)."""
    try:
        parsed = urlparse(target)
    except ValueError:
        parsed = None
    if parsed is None or parsed.netloc not in ("", "localhost"):
        raise ValueError("a file:// target must be local (file:///path)")
    return parsed


def _folder_path(target: str) -> Path:
    if target.startswith("file://"):
        return Path(unquote(_file_url(target).path))
    if "://" in target:
        raise ValueError("must be s3://bucket/prefix/ or a folder path")
    return Path(target).expanduser()

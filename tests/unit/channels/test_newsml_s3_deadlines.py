"""Every S3 call of a ``newsml`` channel ends by the channel's ``timeout``, botocore's retries included: an endpoint
that takes a request and never answers, or answers a byte at a time (which botocore's per-read timeout never
catches), fails the call with ``ChannelUnavailable`` naming the call, the item and the endpoint."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from bridge.channels.newsml import NewsMLOptions, S3Target
from bridge.errors import ChannelUnavailable
from tests.unit.fakes import dripping_endpoint

LABEL = "newsml channel 'print'"


async def never() -> Any:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


class EndlessBody:
    """A GetObject body whose bytes never finish coming."""

    async def __aenter__(self) -> EndlessBody:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def read(self) -> bytes:
        return bytes(await never())


class SilentS3:
    """Takes every call and never answers, except GetObject, which answers its head and never its body."""

    meta = SimpleNamespace(endpoint_url="http://s3.local")

    async def put_object(self, **_: Any) -> Any:
        return await never()

    async def list_objects_v2(self, **_: Any) -> Any:
        return await never()

    async def get_object(self, **_: Any) -> Any:
        return {"Body": EndlessBody()}


def silent_target() -> S3Target:
    target = S3Target(LABEL, NewsMLOptions(target="s3://print-in/hot/", timeout=0.05))
    target._client = SilentS3()
    return target


async def test_a_write_that_meets_no_answer_fails_by_the_channels_timeout_naming_the_item_and_the_endpoint() -> None:
    with pytest.raises(ChannelUnavailable) as raised:
        await silent_target().write("kordiam-1-2.xml", b"<newsItem/>", {})
    assert str(raised.value) == (
        "newsml channel 'print': writing s3://print-in/hot/kordiam-1-2.xml: S3 did not answer within 0.05 s "
        "(endpoint http://s3.local)"
    )


async def test_a_read_back_whose_body_never_ends_and_a_listing_that_meets_no_answer_fail_by_the_timeout() -> None:
    target = silent_target()
    with pytest.raises(ChannelUnavailable, match=r"reading s3://print-in/hot/kordiam-1-2\.xml: S3 did not answer"):
        await target.read("kordiam-1-2.xml")
    with pytest.raises(ChannelUnavailable, match=r"listing s3://print-in/hot/4711-\*: S3 did not answer"):
        await target.names("4711-")


async def test_a_write_whose_answer_drips_fails_by_the_timeout_which_botocores_read_timeout_never_meets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    async with dripping_endpoint() as url:
        options = NewsMLOptions(target="s3://print-in/hot/", endpoint_url=url, region="eu-central-1", timeout=0.5)
        target = S3Target(LABEL, options)
        try:
            # A guard, not the assertion: without a deadline the drip holds the write for ever.
            async with asyncio.timeout(10):
                with pytest.raises(ChannelUnavailable) as raised:
                    await target.write("kordiam-1-2.xml", b"<newsItem/>", {})
        finally:
            await target.aclose()
    assert str(raised.value) == (
        f"newsml channel 'print': writing s3://print-in/hot/kordiam-1-2.xml: S3 did not answer within 0.5 s "
        f"(endpoint {url})"
    )

"""The newsml channel end to end: a local hot folder, and S3 on a moto server (read back with boto3).

Each item written is parsed and checked with the structural NewsML-G2 check of the unit tests.
"""

from __future__ import annotations

import datetime as dt
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from bridge.channels import ChannelContext
from bridge.channels.newsml import CANCELED, NAR, USABLE, NewsMLChannel, NewsMLOptions, create
from bridge.config import ChannelSettings
from bridge.errors import ChannelRejected, ChannelUnavailable
from bridge.http import HttpClient
from bridge.kordiam.models import Element
from tests.support import REGION, start_moto, story
from tests.unit.channels.test_newsml import assert_valid_item

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 11, 20, 10, 0, tzinfo=dt.UTC)


def element(
    title: str = "Council approves budget", *, modified: dt.datetime = T0, element_id: int = 4711, **changes: Any
) -> Element:
    data = story(title, platforms=(99004,))
    data.update(id=element_id, version=3, modificationDate=modified.isoformat())
    data["tasks"][0]["id"] = 31
    data["publications"][0]["id"] = 812
    data.update(changes)
    return Element.model_validate(data)


def facts(data: bytes) -> tuple[int, str, str]:
    """version, pubStatus and headline of an item (after checking its structure)."""
    root = assert_valid_item(data)
    status = root.find(f"{{{NAR}}}itemMeta/{{{NAR}}}pubStatus")
    headline = root.findtext(f"{{{NAR}}}contentMeta/{{{NAR}}}headline") or ""
    return int(root.get("version", "0")), status.get("qcode", "") if status is not None else "", headline


# --- local folder ---------------------------------------------------------------------------------------------------


async def test_folder_create_update_resend_delete_and_readd(tmp_path: Path) -> None:
    folder = tmp_path / "print" / "in"  # created on first write
    channel = NewsMLChannel("print", NewsMLOptions(target=str(folder)))
    file = folder / "kordiam-4711-812.xml"

    result = await channel.upsert(element(), element().publications[0], None)
    assert result.external_id == "urn:kordiam:4711:812"
    assert result.edit_link == result.open_link == file.as_uri() and result.live is False
    first = file.read_bytes()
    assert facts(first) == (int(T0.timestamp()), USABLE, "Council approves budget")
    assert oct(file.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in folder.iterdir()] == [file.name], "no temporary file is left behind"

    # A re-send of the same version is not written again (the print system is not asked to ingest it twice).
    before = file.stat().st_mtime_ns
    await channel.upsert(element(), element().publications[0], result.external_id)
    assert file.read_bytes() == first and file.stat().st_mtime_ns == before

    later = element("Council approves budget, with cuts", modified=T0 + dt.timedelta(minutes=5))
    await channel.upsert(later, later.publications[0], result.external_id)
    version, status, headline = facts(file.read_bytes())
    assert (version, status, headline) == (int(T0.timestamp()) + 300, USABLE, "Council approves budget, with cuts")

    # Two changes in the same second: the second still gets a higher version.
    same_second = element("Council approves budget, with deep cuts", modified=T0 + dt.timedelta(minutes=5))
    await channel.upsert(same_second, same_second.publications[0], result.external_id)
    assert facts(file.read_bytes())[0] == version + 1

    await channel.delete(4711, 812, result.external_id)
    canceled = file.read_bytes()
    assert facts(canceled) == (version + 2, CANCELED, "Council approves budget, with deep cuts")
    await channel.delete(4711, 812, result.external_id)
    assert file.read_bytes() == canceled, "deleting a canceled item again changes nothing"

    # Re-added in Kordiam with the same modification second as before: usable again, and still a higher version.
    await channel.upsert(same_second, same_second.publications[0], result.external_id)
    assert facts(file.read_bytes())[:2] == (version + 3, USABLE)
    await channel.aclose()


async def test_folder_delete_without_a_file_writes_a_canceled_stub(tmp_path: Path) -> None:
    channel = NewsMLChannel("print", NewsMLOptions(target=tmp_path.as_uri(), file_prefix="item-"))
    started = int(dt.datetime.now(dt.UTC).timestamp())
    await channel.delete(1, 2, "urn:kordiam:1:2")
    version, status, _ = facts((tmp_path / "item-1-2.xml").read_bytes())
    assert status == CANCELED and version >= started, "versioned by the clock: no earlier version is known"


async def test_folder_replaces_an_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "kordiam-4711-812.xml").write_text("<not-newsml/>")
    channel = NewsMLChannel("print", NewsMLOptions(target=str(tmp_path)))
    await channel.upsert(element(), element().publications[0], None)
    assert facts((tmp_path / "kordiam-4711-812.xml").read_bytes())[1] == USABLE


async def test_a_folder_under_a_file_waits_as_the_whole_channels_fault(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")  # the target's parent is a file: nobody, not even root, can write there
    channel = NewsMLChannel("print", NewsMLOptions(target=str(tmp_path / "a-file" / "in")))
    # Every story would fail alike: retried, then parked once the breaker opens, never dead-lettered one by one.
    with pytest.raises(ChannelUnavailable, match=r"newsml channel 'print'.*is not a directory") as raised:
        await channel.upsert(element(), element().publications[0], None)
    assert not isinstance(raised.value, ChannelRejected)


async def test_built_through_create_with_the_shared_context(tmp_path: Path) -> None:
    settings = ChannelSettings(name="print", type="newsml", platforms=[99004], target=str(tmp_path))
    http = HttpClient(max_connections=2, timeout=5)
    try:
        channel = create(settings, NewsMLOptions.model_validate(settings.options), ChannelContext(http))
        result = await channel.upsert(element(), element().publications[0], None)
        assert result.external_id == "urn:kordiam:4711:812"
        await channel.aclose()
    finally:
        await http.aclose()


# --- S3 on moto ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[str]:
    server, url = start_moto()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def bucket(moto_s3: str) -> str:
    name = f"print-{uuid.uuid4().hex[:12]}"
    s3(moto_s3).create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return name


def s3(endpoint: str) -> Any:
    return boto3.client("s3", region_name=REGION, endpoint_url=endpoint)


@pytest.fixture
async def s3_channel(moto_s3: str, bucket: str) -> AsyncIterator[NewsMLChannel]:
    channel = NewsMLChannel("print", NewsMLOptions(target=f"s3://{bucket}/hot/in", endpoint_url=moto_s3, region=REGION))
    yield channel
    await channel.aclose()


def read_object(endpoint: str, bucket: str, key: str) -> tuple[bytes, dict[str, Any]]:
    response = s3(endpoint).get_object(Bucket=bucket, Key=key)
    return response["Body"].read(), response


async def test_s3_create_update_delete(moto_s3: str, bucket: str, s3_channel: NewsMLChannel) -> None:
    key = "hot/in/kordiam-4711-812.xml"
    result = await s3_channel.upsert(element(), element().publications[0], None)
    assert result.external_id == "urn:kordiam:4711:812"
    assert result.edit_link == result.open_link == f"s3://{bucket}/{key}" and result.live is False
    data, response = read_object(moto_s3, bucket, key)
    assert facts(data) == (int(T0.timestamp()), USABLE, "Council approves budget")
    assert response["ContentType"].startswith("application/vnd.iptc.g2.newsitem+xml")
    assert response["Metadata"] == {
        "kordiam-element": "4711",
        "kordiam-publication": "812",
        "newsml-version": str(int(T0.timestamp())),
        "newsml-pubstatus": USABLE,
    }
    keys = [o["Key"] for o in s3(moto_s3).list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [key], "one object per publication, under the prefix"

    later = element("Budget: the vote", modified=T0 + dt.timedelta(hours=1))
    await s3_channel.upsert(later, later.publications[0], result.external_id)
    version, status, headline = facts(read_object(moto_s3, bucket, key)[0])
    assert (version, status, headline) == (int(T0.timestamp()) + 3600, USABLE, "Budget: the vote")

    await s3_channel.delete(4711, 812, result.external_id)
    data, response = read_object(moto_s3, bucket, key)
    assert facts(data) == (version + 1, CANCELED, "Budget: the vote")
    assert response["Metadata"]["newsml-pubstatus"] == CANCELED


async def test_s3_resend_is_not_written_again(moto_s3: str, bucket: str, s3_channel: NewsMLChannel) -> None:
    key = "hot/in/kordiam-4711-812.xml"
    await s3_channel.upsert(element(), element().publications[0], None)
    data, response = read_object(moto_s3, bucket, key)
    # Mark the object: a rewrite would replace the metadata.
    s3(moto_s3).put_object(Bucket=bucket, Key=key, Body=data, Metadata={**response["Metadata"], "marker": "1"})
    await s3_channel.upsert(element(), element().publications[0], "urn:kordiam:4711:812")
    assert read_object(moto_s3, bucket, key)[1]["Metadata"]["marker"] == "1"


async def test_s3_one_client_per_channel(s3_channel: NewsMLChannel) -> None:
    target: Any = s3_channel._target
    clients = []
    for minute in range(3):
        value = element(modified=T0 + dt.timedelta(minutes=minute), element_id=100 + minute)
        await s3_channel.upsert(value, value.publications[0], None)
        clients.append(target._client)
    assert clients[0] is not None and all(client is clients[0] for client in clients)
    await s3_channel.aclose()
    assert target._client is None
    await s3_channel.aclose()  # twice is fine


async def test_s3_missing_bucket_is_rejected(moto_s3: str) -> None:
    channel = NewsMLChannel(
        "print", NewsMLOptions(target="s3://no-such-bucket-here/x/", endpoint_url=moto_s3, region=REGION)
    )
    try:
        with pytest.raises(ChannelRejected, match=r"newsml channel 'print'.*NoSuchBucket"):
            await channel.upsert(element(), element().publications[0], None)
    finally:
        await channel.aclose()


async def test_s3_unreachable_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before use: nothing listens there
    channel = NewsMLChannel(
        "print",
        NewsMLOptions(target="s3://bucket-x/in/", endpoint_url=f"http://127.0.0.1:{port}", region=REGION, timeout=2),
    )
    try:
        with pytest.raises(ChannelUnavailable, match="newsml channel 'print'"):
            await channel.upsert(element(), element().publications[0], None)
    finally:
        await channel.aclose()

"""The DynamoDB state store against moto server: leases, conditional records, errors, the table check."""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bridge.config import StateSettings
from bridge.errors import ConfigError, PermanentError, TransientError
from bridge.state import DynamoDbStateStore, open_state_store
from bridge.state.base import Delivery, ElementBusy, ElementMark, is_older
from bridge.state.dynamodb import (
    StateRejected,
    StateUnavailable,
    _create_client,
    create_table,
    decode_date,
    encode_date,
    resolve_region,
)
from tests.support import REGION, start_moto

pytestmark = pytest.mark.integration

StoreFactory = Callable[..., Awaitable[DynamoDbStateStore]]
T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server, url = start_moto()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
async def table(moto_url: str) -> str:
    name = f"bridge-state-{uuid.uuid4().hex[:12]}"
    await create_table(moto_url, name, region=REGION)
    return name


@pytest.fixture
async def stores(moto_url: str, table: str) -> AsyncIterator[StoreFactory]:
    """Open stores (each its own owner, like separate worker processes) on this test's table."""
    opened: list[DynamoDbStateStore] = []

    async def factory(**options: Any) -> DynamoDbStateStore:
        store = DynamoDbStateStore(table, region=REGION, endpoint_url=moto_url, **options)
        await store.open()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()


def delivery(
    element_id: int = 1,
    channel: str = "web",
    publication_id: int = 10,
    *,
    modification_date: datetime | None = T0,
    version: int | None = 1,
    external_id: str = "ext-1",
    **fields: Any,
) -> Delivery:
    return Delivery(
        element_id=element_id,
        channel=channel,
        publication_id=publication_id,
        external_id=external_id,
        fingerprint=f"fp-{version}",
        modification_date=modification_date,
        version=version,
        **fields,
    )


# ---- opening ---------------------------------------------------------------------------------------------------


async def test_missing_table_is_a_config_error_naming_state_url(moto_url: str) -> None:
    settings = StateSettings(url="dynamodb://no-such-table", endpoint_url=moto_url, region=REGION)
    with pytest.raises(ConfigError) as raised:
        await open_state_store(settings)
    assert raised.value.key == "state.url"
    assert "'no-such-table'" in raised.value.problem and "does not exist" in raised.value.problem
    # Nothing was created behind the user's back.
    async with _create_client(REGION, moto_url) as client:
        assert "no-such-table" not in (await client.list_tables())["TableNames"]


async def test_wrong_key_schema_is_a_config_error(moto_url: str) -> None:
    name = f"wrong-{uuid.uuid4().hex[:8]}"
    async with _create_client(REGION, moto_url) as client:
        await client.create_table(
            TableName=name,
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
    store = DynamoDbStateStore(name, region=REGION, endpoint_url=moto_url)
    with pytest.raises(ConfigError, match="key schema") as raised:
        await store.open()
    assert raised.value.key == "state.url"


async def test_unreachable_endpoint_is_a_config_error() -> None:
    store = DynamoDbStateStore("bridge-state", region=REGION, endpoint_url="http://127.0.0.1:9")
    with pytest.raises(ConfigError) as raised:
        await store.open()
    assert raised.value.key == "state.endpoint_url"


async def test_open_state_store_dispatches_on_the_url_and_falls_back_to_the_environment_region(
    moto_url: str, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    store = await open_state_store(StateSettings(url=f"dynamodb://{table}", endpoint_url=moto_url, lease_seconds=7))
    try:
        assert isinstance(store, DynamoDbStateStore)
        assert store.region == REGION and store.table == table
        assert await store.record(delivery())
    finally:
        await store.close()


def test_region_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    settings = StateSettings(url="dynamodb://bridge-state")
    assert resolve_region(settings, "eu-west-1") == "eu-west-1"
    with pytest.raises(ConfigError) as raised:
        resolve_region(settings)
    assert raised.value.key == "state.region"
    monkeypatch.setenv("AWS_REGION", "us-east-2")
    assert resolve_region(settings, "eu-west-1") == "us-east-2"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    assert resolve_region(settings, "eu-west-1") == "us-west-2"
    assert resolve_region(StateSettings(url="dynamodb://bridge-state", region="ap-south-1"), "x") == "ap-south-1"


# ---- leases ----------------------------------------------------------------------------------------------------


async def test_lease_is_exclusive_across_stores(stores: StoreFactory) -> None:
    first = await stores()
    second = await stores(lease_wait_seconds=0.3)
    async with first.lease(1):
        with pytest.raises(ElementBusy):
            async with second.lease(1):
                pytest.fail("two stores held one element")
        async with second.lease(2):  # other elements are free
            pass
    async with second.lease(1):  # released
        pass


async def test_waiting_worker_gets_the_lease_once_it_is_released(stores: StoreFactory) -> None:
    first = await stores()
    second = await stores(lease_wait_seconds=5)
    order: list[str] = []

    async def hold() -> None:
        async with first.lease(1):
            order.append("first in")
            await asyncio.sleep(0.5)
            order.append("first out")

    async def wait() -> None:
        await asyncio.sleep(0.1)
        async with second.lease(1):
            order.append("second in")

    await asyncio.gather(hold(), wait())
    assert order == ["first in", "first out", "second in"]


async def test_expired_lease_is_taken_over(stores: StoreFactory) -> None:
    first = await stores(lease_seconds=1, keep_leases=False)  # a worker whose event loop hangs, or died
    second = await stores(lease_seconds=60, lease_wait_seconds=0)
    third = await stores(lease_wait_seconds=0)
    lease = first.lease(1)
    await lease.__aenter__()
    with pytest.raises(ElementBusy):
        async with second.lease(1):
            pass
    await asyncio.sleep(2.1)  # whole-second expiry: at most lease_seconds + 1
    async with second.lease(1):
        # The stale holder's release must not free the element the new holder has.
        await lease.__aexit__(None, None, None)
        with pytest.raises(ElementBusy):
            async with third.lease(1):
                pass


async def test_a_working_holder_keeps_its_lease_past_lease_seconds(stores: StoreFactory) -> None:
    holder = await stores(lease_seconds=1)
    other = await stores(lease_wait_seconds=0)
    async with holder.lease(1):
        for _ in range(8):  # 4 s: past the whole-second expiry of several lease lifetimes
            with pytest.raises(ElementBusy):
                async with other.lease(1):
                    pass
            await asyncio.sleep(0.5)
    async with other.lease(1):
        pass


async def test_lease_is_reentrant_for_its_owner(stores: StoreFactory) -> None:
    store = await stores(lease_wait_seconds=0)
    other = await stores(lease_wait_seconds=0)
    async with store.lease(1), store.lease(1):
        with pytest.raises(ElementBusy):
            async with other.lease(1):
                pass


async def test_lease_item_carries_owner_and_ttl(stores: StoreFactory, moto_url: str, table: str) -> None:
    store = await stores(lease_seconds=30)
    async with store.lease(5), _create_client(REGION, moto_url) as client:
        item = (await client.get_item(TableName=table, Key={"pk": {"S": "element#5"}, "sk": {"S": "lease"}}))["Item"]
        assert item["owner"]["S"] == store.owner
        expires = int(item["expires_at"]["N"])
        assert 29 <= expires - datetime.now(UTC).timestamp() <= 31
    async with _create_client(REGION, moto_url) as client:
        gone = await client.get_item(TableName=table, Key={"pk": {"S": "element#5"}, "sk": {"S": "lease"}})
        assert "Item" not in gone


# ---- conditional records ---------------------------------------------------------------------------------------


async def test_older_version_is_refused_equal_and_newer_accepted(stores: StoreFactory) -> None:
    store = await stores()
    assert await store.record(delivery(version=1, external_id="a"))
    assert await store.record(delivery(version=2, external_id="b"))
    assert not await store.record(delivery(version=1, external_id="c"))
    assert await store.record(delivery(version=2, external_id="d"))  # a retry of the same version
    # The date decides before the version; the version breaks a tie of dates.
    assert not await store.record(delivery(modification_date=T0 - timedelta(seconds=1), version=9))
    assert await store.record(delivery(modification_date=T0 + timedelta(seconds=1), version=1, external_id="e"))
    [stored] = await store.deliveries(1)
    assert (stored.external_id, stored.version, stored.modification_date) == ("e", 1, T0 + timedelta(seconds=1))


async def test_record_ordering_matches_is_older_exhaustively(stores: StoreFactory) -> None:
    """Every (stored, new) pair of dates {None, t, t+1µs, same instant in another zone} × versions {None, 1, 2}."""
    store = await stores()
    berlin = timezone(timedelta(hours=1))
    dates = [None, T0, T0 + timedelta(microseconds=1), T0.astimezone(berlin)]
    versions = [None, 1, 2]
    values = list(itertools.product(dates, versions))
    element = 1000
    for stored, new in itertools.product(values, values):
        element += 1
        assert await store.record(delivery(element, modification_date=stored[0], version=stored[1]))
        expected = not is_older(new, stored)
        accepted = await store.record(delivery(element, modification_date=new[0], version=new[1], external_id="new"))
        assert accepted == expected, f"stored {stored}, new {new}"
        [kept] = await store.deliveries(element)
        assert kept.external_id == ("new" if expected else "ext-1")


async def test_concurrent_records_keep_the_newest(stores: StoreFactory) -> None:
    """v1 and v2 written at once by two workers, in both orders and with jitter: v2 always wins."""
    first = await stores()
    second = await stores()

    async def write(store: DynamoDbStateStore, element: int, version: int) -> bool:
        await asyncio.sleep(random.uniform(0, 0.01))
        return await store.record(
            delivery(
                element, version=version, modification_date=T0 + timedelta(seconds=version), external_id=f"v{version}"
            )
        )

    rounds = 40
    results = await asyncio.gather(
        *(
            asyncio.gather(write(first, n, 1), write(second, n, 2))
            if n % 2
            else asyncio.gather(write(first, n, 2), write(second, n, 1))
            for n in range(1, rounds + 1)
        )
    )
    for n, outcome in enumerate(results, start=1):
        [kept] = await first.deliveries(n)
        assert (kept.version, kept.external_id) == (2, "v2"), f"element {n}: {outcome}"
        v2_result = outcome[1] if n % 2 else outcome[0]
        assert v2_result is True
    assert len(await second.all_deliveries()) == rounds


async def test_record_keeps_every_field(stores: StoreFactory) -> None:
    store = await stores()
    full = delivery(
        7,
        "print",
        70,
        edit_link="https://cms.example/edit/7",
        open_link="https://example.org/7",
        live=True,
        edit_link_title="Edit",
        open_link_title="Open",
    )
    bare = delivery(7, "web", 71, modification_date=None, version=None)
    assert await store.record(full)
    assert await store.record(bare)
    assert await store.deliveries(7) == [full, bare]
    assert await store.deliveries(8) == []


# ---- deliveries, forget, marks ---------------------------------------------------------------------------------


async def test_forget_and_all_deliveries(stores: StoreFactory) -> None:
    store = await stores()
    other = await stores()
    for element, channel, publication in [(2, "web", 20), (2, "print", 21), (1, "web", 10), (3, "web", 30)]:
        assert await store.record(delivery(element, channel, publication))
    await store.mark_element(ElementMark(2, T0, 1, deleted=False))
    async with store.lease(2):  # marks and leases live beside deliveries and must not show up as deliveries
        assert [(d.element_id, d.channel, d.publication_id) for d in await other.all_deliveries()] == [
            (1, "web", 10),
            (2, "print", 21),
            (2, "web", 20),
            (3, "web", 30),
        ]
        assert [d.publication_id for d in await other.deliveries(2)] == [21, 20]
    await store.forget(2, "web", 20)
    await store.forget(2, "web", 99)  # nothing there: no error
    assert [d.publication_id for d in await other.deliveries(2)] == [21]
    assert len(await other.all_deliveries()) == 3


async def test_marks_round_trip(stores: StoreFactory) -> None:
    store = await stores()
    other = await stores()
    assert await store.element_mark(4) is None
    await store.mark_element(ElementMark(4, T0, 3, deleted=False))
    assert await other.element_mark(4) == ElementMark(4, T0, 3, deleted=False)
    await store.mark_element(ElementMark(4, None, None, deleted=True))
    assert await other.element_mark(4) == ElementMark(4, None, None, deleted=True)


# ---- errors ----------------------------------------------------------------------------------------------------


async def test_oversized_item_is_a_permanent_error(stores: StoreFactory) -> None:
    store = await stores()
    with pytest.raises(StateRejected) as raised:
        await store.record(delivery(external_id="x" * 500_000))
    assert isinstance(raised.value, PermanentError)
    assert "ValidationException" in str(raised.value)


async def test_lost_connection_and_missing_table_are_transient(table: str, stores: StoreFactory) -> None:
    server, url = start_moto()
    try:
        await create_table(url, table, region=REGION)
        store = DynamoDbStateStore(table, region=REGION, endpoint_url=url)
        await store.open()
    finally:
        server.stop()
    try:
        with pytest.raises(StateUnavailable) as raised:
            await store.deliveries(1)
        assert isinstance(raised.value, TransientError)
    finally:
        await store.close()

    # The table deleted under a running worker: retried (the queue's budget still ends in the DLQ).
    running = await stores()
    async with _create_client(REGION, running.endpoint_url) as client:
        await client.delete_table(TableName=table)
    with pytest.raises(StateUnavailable, match="ResourceNotFoundException"):
        await running.record(delivery())


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("ProvisionedThroughputExceededException", 400, StateUnavailable),
        ("ThrottlingException", 400, StateUnavailable),
        ("RequestLimitExceeded", 400, StateUnavailable),
        ("InternalServerError", 500, StateUnavailable),
        ("SomethingNew", 503, StateUnavailable),
        ("AccessDeniedException", 400, StateRejected),
        ("ValidationException", 400, StateRejected),
    ],
)
def test_error_classification(code: str, status: int, kind: type[Exception]) -> None:
    store = DynamoDbStateStore("bridge-state", region=REGION)
    error = ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutItem"
    )
    translated = store._translate("put_item", error)
    assert type(translated) is kind
    assert isinstance(translated, TransientError if kind is StateUnavailable else PermanentError)
    if code == "AccessDeniedException":
        assert "state.url" in str(translated)


def test_encoded_dates_sort_like_datetimes() -> None:
    rng = random.Random(7)
    zones = [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]
    moments = [
        (
            datetime(2000, 1, 1, tzinfo=UTC)
            + timedelta(seconds=rng.randrange(10**9), microseconds=rng.randrange(10**6))
        ).astimezone(rng.choice(zones))
        for _ in range(500)
    ]
    assert sorted(moments) == sorted(moments, key=encode_date)
    for moment in moments:
        assert decode_date(encode_date(moment)) == moment
    assert encode_date(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05.000000Z"

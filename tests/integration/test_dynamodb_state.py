"""The DynamoDB store's own behaviour against moto server: the table check, the lease item, errors, date encoding.

What every store promises (leases, conditional records, marks) is tested on SQLite and DynamoDB alike in
tests/integration/test_state_contract.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar

import pytest
from botocore.exceptions import ClientError
from prometheus_client import REGISTRY
from rich.console import Console
from structlog.testing import capture_logs

from bridge import state as state_package
from bridge.admin import status
from bridge.config import Settings, StateSettings, StatusSettings
from bridge.errors import ConfigError, PermanentError, TransientError
from bridge.state import DynamoDbStateStore, dynamodb, open_state_store
from bridge.state.base import ElementMark, StateUnavailable
from bridge.state.dynamodb import (
    StateAccessRefused,
    StateRejected,
    _create_client,
    create_table,
    decode_date,
    encode_date,
    resolve_region,
)
from bridge.worker import run_worker
from tests.support import (
    REGION,
    T0,
    SimulatorAdmin,
    SqsEndpoint,
    consumer_paused,
    delivery,
    drain,
    eventually,
    make_queues,
    opened_stores,
    queue_depth,
    queue_settled,
    running_worker,
    send,
    start_moto,
    story,
    worker_settings,
)

pytestmark = pytest.mark.integration

StoreFactory = Callable[..., Awaitable[DynamoDbStateStore]]


@pytest.fixture
async def table(moto_url: str) -> str:
    name = f"bridge-state-{uuid.uuid4().hex[:12]}"
    await create_table(moto_url, name, region=REGION)
    return name


@pytest.fixture
async def stores(moto_url: str, table: str) -> AsyncIterator[StoreFactory]:
    """Open stores (each its own owner, like separate worker processes) on this test's table."""
    make = functools.partial(DynamoDbStateStore, table, region=REGION, endpoint_url=moto_url)
    async with opened_stores(make) as factory:
        yield factory


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


async def test_credentials_that_cannot_be_had_are_a_config_error_naming_state_url(
    moto_url: str, table: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An expired SSO login, a credential_process that fails, an instance role not reachable: botocore raises as the
    # client is made, before any call. Before, that escaped open() as it was: a traceback at `kordiam-bridge run`.
    config = tmp_path / "aws-config"
    config.write_text("[profile broken]\ncredential_process = /bin/false\n", encoding="ascii")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_PROFILE", "broken")
    settings = StateSettings(url=f"dynamodb://{table}", endpoint_url=moto_url, region=REGION)
    with pytest.raises(ConfigError) as raised:
        await open_state_store(settings, check_access=True)
    assert raised.value.key == "state.url"
    assert f"'{table}'" in raised.value.problem and "AWS credentials" in raised.value.problem
    assert "custom-process" in raised.value.problem  # botocore's own words: which provider failed


@pytest.mark.parametrize(("code", "status"), [("ThrottlingException", 400), ("InternalServerError", 500)])
async def test_a_table_check_throttled_or_failing_server_side_at_start_is_an_outage_not_a_config_error(
    moto_url: str, table: str, monkeypatch: pytest.MonkeyPatch, code: str, status: int
) -> None:
    # Many workers starting at once may meet DescribeTable's own rate limit: nothing in the configuration is wrong,
    # so the start must not say "configuration error: state.url" (exit 2) but what happened: the store's outage.
    real_client = dynamodb._create_client

    @contextlib.asynccontextmanager
    async def failing_describe(*args: Any, **options: Any) -> AsyncIterator[Any]:
        async with real_client(*args, **options) as client:

            async def describe_table(**request: Any) -> dict[str, Any]:
                error = {
                    "Error": {"Code": code, "Message": "Rate exceeded"},
                    "ResponseMetadata": {"HTTPStatusCode": status},
                }
                raise ClientError(error, "DescribeTable")

            client.describe_table = describe_table
            yield client

    monkeypatch.setattr(dynamodb, "_create_client", failing_describe)
    settings = StateSettings(url=f"dynamodb://{table}", endpoint_url=moto_url, region=REGION)
    with pytest.raises(StateUnavailable) as raised:
        await open_state_store(settings, check_access=True)
    assert type(raised.value) is StateUnavailable
    assert f"'{table}'" in str(raised.value) and code in str(raised.value)


class RefusingStore(DynamoDbStateStore):
    """A worker's store whose IAM role lacks one action (moto does not check IAM): that call is refused as
    DynamoDB refuses it, ``code`` and all; every other call goes to the real table."""

    def __init__(self, *args: Any, refuse: str, code: str = "AccessDeniedException", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refuse, self.code = refuse, code
        self.calls: list[str] = []

    async def _call(self, operation: str, **request: Any) -> dict[str, Any]:
        self.calls.append(operation if "IndexName" not in request else f"{operation} {request['IndexName']}")
        if operation == self.refuse:
            error = ClientError(
                {"Error": {"Code": self.code, "Message": f"not authorized to perform {operation}"}}
                | {"ResponseMetadata": {"HTTPStatusCode": 400}},
                operation,
            )
            raise self._translate(operation, error)
        return await super()._call(operation, **request)


async def items_of(moto_url: str, table: str) -> list[dict[str, Any]]:
    async with _create_client(REGION, moto_url) as client:
        return list((await client.scan(TableName=table))["Items"])


async def test_the_workers_open_tries_each_call_it_makes_and_leaves_nothing(moto_url: str, table: str) -> None:
    store = RefusingStore(table, region=REGION, endpoint_url=moto_url, check_access=True, refuse="none")
    await store.open()
    await store.close()
    assert store.calls == [
        "put_item",
        "get_item",
        "update_item",
        "query",
        "delete_item",
    ]
    assert await items_of(moto_url, table) == []
    # The ingress and the operator commands only read: their open tries no write.
    reader = RefusingStore(table, region=REGION, endpoint_url=moto_url, refuse="none")
    await reader.open()
    await reader.close()
    assert reader.calls == []


@pytest.mark.parametrize("refused", ["put_item", "get_item", "update_item", "query", "delete_item"])
async def test_a_worker_role_missing_an_action_stops_the_start_naming_state_url(
    moto_url: str, table: str, refused: str
) -> None:
    # Before, the role passed DescribeTable at start, and every message met the refusal and was dead-lettered at
    # its first receive (a refusal is permanent for the request).
    store = RefusingStore(table, region=REGION, endpoint_url=moto_url, check_access=True, refuse=refused)
    with pytest.raises(ConfigError) as raised:
        await store.open()
    assert raised.value.key == "state.url"
    action = "".join(part.capitalize() for part in refused.split("_"))
    assert f"may not call dynamodb:{action}" in raised.value.problem
    assert "AccessDeniedException" in raised.value.problem


async def test_a_throttled_access_check_lets_the_start_go_on(moto_url: str, table: str) -> None:
    store = RefusingStore(
        table, region=REGION, endpoint_url=moto_url, check_access=True, refuse="get_item", code="ThrottlingException"
    )
    with capture_logs() as logs:
        await store.open()
    await store.close()
    assert [line["step"] for line in logs if line["event"] == "state_access_check_incomplete"] == ["GetItem"]
    assert await items_of(moto_url, table) == []  # the check's item is tidied away all the same


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


async def test_a_table_without_the_lookup_indexes_serves_the_worker_and_refuses_the_lookups(moto_url: str) -> None:
    """A table made before the index existed: deliveries work, the ingress's lookup says what to add."""
    name = f"no-index-{uuid.uuid4().hex[:8]}"
    async with _create_client(REGION, moto_url) as client:
        await client.create_table(
            TableName=name,
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            BillingMode="PAY_PER_REQUEST",
        )
    store = DynamoDbStateStore(name, region=REGION, endpoint_url=moto_url)
    await store.open()
    try:
        assert await store.record(delivery(external_id="post-55"))
        with pytest.raises(ConfigError, match="no global secondary index 'external_id'") as raised:
            await store.deliveries_with_external_id("post-55")
        assert raised.value.key == "state.url"
        with pytest.raises(ConfigError, match="no global secondary index 'publication_id'"):
            await store.deliveries_of_publication(10)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("index", "key", "kind"), [("external_id", "external_id", "N"), ("by-pub", "publication_id", "S")]
)
async def test_an_index_keyed_on_a_delivery_attribute_of_another_type_stops_the_start(
    moto_url: str, index: str, key: str, kind: str
) -> None:
    """A hand-made table whose index types a delivery's ``external_id`` or ``publication_id`` otherwise than the
    bridge writes it refuses every delivery (a ValidationException, permanent), after the channel was written:
    every message would be dead-lettered, and a redrive would create each item again. The start refuses it."""
    name = f"mistyped-{uuid.uuid4().hex[:8]}"
    async with _create_client(REGION, moto_url) as client:
        await client.create_table(
            TableName=name,
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
                {"AttributeName": key, "AttributeType": kind},
            ],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": index,
                    "KeySchema": [{"AttributeName": key, "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    store = DynamoDbStateStore(name, region=REGION, endpoint_url=moto_url, check_access=True)
    try:
        with pytest.raises(ConfigError) as raised:
            await store.open()
    finally:
        await store.close()
    assert raised.value.key == "state.url"
    assert f"{key!r}" in raised.value.problem and f"'{name}'" in raised.value.problem


@pytest.mark.parametrize(("key", "projection"), [("channel", "ALL"), ("external_id", "KEYS_ONLY")])
async def test_an_index_of_the_bridges_name_on_another_key_or_projection_is_refused_by_the_lookup(
    moto_url: str, key: str, projection: str
) -> None:
    # Queried as it is, one answered ValidationException (StateRejected), the other items without their delivery.
    name = f"other-index-{uuid.uuid4().hex[:8]}"
    async with _create_client(REGION, moto_url) as client:
        await client.create_table(
            TableName=name,
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
                {"AttributeName": key, "AttributeType": "S"},
            ],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "external_id",
                    "KeySchema": [{"AttributeName": key, "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": projection},
                }
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    store = DynamoDbStateStore(name, region=REGION, endpoint_url=moto_url)
    await store.open()
    try:
        assert await store.record(delivery(external_id="post-55"))
        with pytest.raises(ConfigError, match="global secondary index 'external_id'") as raised:
            await store.deliveries_with_external_id("post-55")
        assert raised.value.key == "state.url"
    finally:
        await store.close()


async def test_a_delivery_without_an_external_id_stays_out_of_the_index(stores: StoreFactory) -> None:
    store = await stores()
    assert await store.record(delivery(external_id=""))  # a GSI key may not be empty: the attribute is left out
    assert await store.record(delivery(2, external_id="x" * 3000))  # nor longer than 2 KiB: kept unindexed
    assert [d.external_id for d in await store.deliveries(1)] == [""]
    assert [d.external_id for d in await store.deliveries(2)] == ["x" * 3000]
    assert await store.deliveries_with_external_id("") == []
    assert await store.deliveries_with_external_id("x" * 3000) == []


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


class OneLeaseThrottled(DynamoDbStateStore):
    """DynamoDB throttling every write to element 1's lease (its partition hot); every other call served."""

    async def _call_by(self, seconds: float, operation: str, **request: Any) -> dict[str, Any]:
        if operation == "update_item" and request.get("Key") == {"pk": {"S": "element#1"}, "sk": {"S": "lease"}}:
            error = ClientError(
                {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
                | {"ResponseMetadata": {"HTTPStatusCode": 400}},
                operation,
            )
            raise self._translate(operation, error)
        return await super()._call_by(seconds, operation, **request)


async def test_a_lease_whose_extension_failed_does_not_keep_the_others_from_theirs(moto_url: str, table: str) -> None:
    # The keeper extends every lease held in one call; one that fails must not leave the rest to expire under their
    # live holders (before: the first failure ended the call, every lease after it left as it was, tick after tick).
    store = OneLeaseThrottled(table, region=REGION, endpoint_url=moto_url, lease_seconds=30, keep_leases=False)
    await store.open()
    try:
        async with store.lease(1), store.lease(2), _create_client(REGION, moto_url) as client:
            store._lease_seconds = 3600  # what an extension sets now stands out from what the take set
            with pytest.raises(StateUnavailable, match="ThrottlingException"):
                await store._extend_leases([1, 2])
            key = {"pk": {"S": "element#2"}, "sk": {"S": "lease"}}
            item = (await client.get_item(TableName=table, Key=key))["Item"]
            assert int(item["expires_at"]["N"]) - datetime.now(UTC).timestamp() > 3000
    finally:
        await store.close()


# ---- parked elements -------------------------------------------------------------------------------------------


async def test_a_parked_item_is_a_partition_of_its_channel_that_never_expires(
    stores: StoreFactory, moto_url: str, table: str
) -> None:
    store = await stores()
    await store.park(7, "web", "401 Unauthorized")
    await store.park(8, "web", "401 Unauthorized")
    with pytest.raises(ValueError, match="positive"):
        await store.park(-1, "fax", "401 Unauthorized")  # refused before anything is written
    named, item, _ = sorted(await items_of(moto_url, table), key=lambda i: (i["pk"]["S"], i["sk"]["S"]))
    assert (item["pk"], item["sk"]) == ({"S": "parked#web"}, {"S": "element#00000000000000000007"})
    # The channels ever parked for, in one item of their own: found without a Scan once no longer configured.
    assert (named["pk"], named["sk"], named["channels"]) == (
        {"S": "bridge#parked-channels"},
        {"S": "channels"},
        {"SS": ["web"]},
    )
    assert (item["element_id"], item["channel"], item["reason"]) == (
        {"N": "7"},
        {"S": "web"},
        {"S": "401 Unauthorized"},
    )
    # No TTL attribute, and neither index's key: it is no delivery and no lease.
    assert not {"expires_at", "external_id", "publication_id"} & item.keys()
    assert await store.all_deliveries() == []


class ShortPages(DynamoDbStateStore):
    """A table whose Query pages end early, as DynamoDB's do at 1 MB whatever the ``Limit``."""

    async def _call(self, operation: str, **request: Any) -> dict[str, Any]:
        if operation == "query":
            request["Limit"] = min(request.get("Limit", 3), 3)
        return await super()._call(operation, **request)


async def test_parked_and_its_count_go_on_past_short_query_pages(moto_url: str, table: str) -> None:
    async with opened_stores(functools.partial(ShortPages, table, region=REGION, endpoint_url=moto_url)) as stores:
        store = await stores()
        for element in range(1, 12):
            await store.park(element, "web", "401")
        assert [p.element_id for p in await store.parked("web", limit=10)] == list(range(1, 11))
        assert [p.element_id for p in await store.parked("web", after=8, limit=10)] == [9, 10, 11]
        assert await store.parked_count("web") == 11


class ShortReads(DynamoDbStateStore):
    """A table whose Query and Scan pages end after 3 items, as DynamoDB's do at 1 MB; ``pages`` counts them."""

    pages = 0

    async def _call(self, operation: str, **request: Any) -> dict[str, Any]:
        if operation in ("query", "scan"):
            request["Limit"] = min(request.get("Limit", 3), 3)
            self.pages += 1
        return await super()._call(operation, **request)


async def test_every_read_of_deliveries_goes_on_past_short_pages(moto_url: str, table: str) -> None:
    # An element with many publications (or deliveries of a few hundred KB each) fills more than one page.
    async with opened_stores(functools.partial(ShortReads, table, region=REGION, endpoint_url=moto_url)) as stores:
        store = await stores()
        for publication in range(1, 9):
            await store.record(delivery(1, "web", publication, external_id="shared"))
        await store.record(delivery(2, "web", 5, external_id="shared"))
        await store.mark_element(ElementMark(1, T0, 1, deleted=False))
        expected = [(1, "web", p) for p in range(1, 9)]
        store.pages = 0
        assert [(d.element_id, d.channel, d.publication_id) for d in await store.deliveries(1)] == expected
        assert len((await store.element_record(1)).deliveries) == 8
        assert len(await store.deliveries_with_external_id("shared")) == 9
        assert [d.element_id for d in await store.deliveries_of_publication(5)] == [1, 2]
        assert len(await store.all_deliveries()) == 9
        assert store.pages > 5  # the pages were short indeed


@pytest.mark.parametrize(
    ("code", "kind"),
    [("ThrottlingException", StateUnavailable), ("AccessDeniedException", StateAccessRefused)],
)
@pytest.mark.parametrize("method", ["park", "unpark", "parked", "parked_count"])
async def test_parking_calls_fail_as_every_other_call_does(
    moto_url: str, table: str, method: str, code: str, kind: type[Exception]
) -> None:
    # Throttling is an outage, a refused role the worker's own fault: neither may be the message's (StateRejected).
    calls: dict[str, tuple[str, Callable[[DynamoDbStateStore], Awaitable[object]]]] = {
        "park": ("update_item", lambda store: store.park(7, "web", "401")),
        "unpark": ("delete_item", lambda store: store.unpark(7, "web")),
        "parked": ("query", lambda store: store.parked("web")),
        "parked_count": ("query", lambda store: store.parked_count("web")),
    }
    operation, call = calls[method]
    store = RefusingStore(table, region=REGION, endpoint_url=moto_url, refuse=operation, code=code)
    await store.open()
    try:
        with pytest.raises(kind) as raised:
            await call(store)
        assert type(raised.value) is kind and isinstance(raised.value, TransientError)
    finally:
        await store.close()


# ---- status ----------------------------------------------------------------------------------------------------


class ScanCounting(DynamoDbStateStore):
    """Counts the items every Scan read (``ScannedCount``: what the read capacity is charged for)."""

    scanned: ClassVar[list[int]] = []

    async def _call(self, operation: str, **request: Any) -> dict[str, Any]:
        response = await super()._call(operation, **request)
        if operation == "scan":
            ScanCounting.scanned.append(int(response.get("ScannedCount", 0)))
        return response


async def test_status_reads_a_bounded_part_of_a_large_table(
    moto_url: str, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A newsroom's table holds hundreds of thousands of deliveries; status may run every minute from monitoring.
    # Scaled down: a table of 300 deliveries (and their marks), a status that may read 100 items.
    async with opened_stores(functools.partial(DynamoDbStateStore, table, region=REGION, endpoint_url=moto_url)) as s:
        store = await s()
        for element_id in range(1, 151):
            for channel in ("web", "print"):
                await store.record(delivery(element_id, channel, live=channel == "web"))
            await store.mark_element(ElementMark(element_id, T0, 1, deleted=False))
    monkeypatch.setattr(status, "DELIVERY_COUNT_LIMIT", 100)
    monkeypatch.setattr(state_package, "DynamoDbStateStore", ScanCounting)
    ScanCounting.scanned = []
    settings = StatusSettings.model_validate(
        {
            "queue": {"url": "https://sqs.eu-central-1.amazonaws.com/123456789012/q", "region": REGION},
            "state": {"url": f"dynamodb://{table}", "endpoint_url": moto_url, "region": REGION},
            "channels": [{"name": "web", "type": "folder", "path": "/nowhere", "platforms": [1]}],
        }
    )

    state, channels = await status._state_status(settings)

    assert state.available
    assert 0 < sum(ScanCounting.scanned) <= 100
    # What it counted is said to be a part: at least so many, and how much it read.
    web = channels["web"].counts
    assert 0 < web.deliveries < 150 and web.live == web.deliveries and web.elements == web.deliveries
    assert not state.deliveries_complete and state.items_read is not None and state.items_read <= 100
    assert state.detail is not None and "at least" in state.detail and "first 100" in state.detail
    report = status.StatusReport(
        datetime.now(UTC),
        status.QueueStatus("queue", "q"),
        status.QueueStatus("dead-letter queue", "dlq"),
        state,
        [status.ChannelHealth("web", "folder", True, deliveries=web.deliveries, elements=web.elements)],
        status.WorkerHealth(None, False),
    )
    console = Console(record=True, width=200)
    status.render_status(report, console)
    text = console.export_text()
    assert f">={web.deliveries}" in text and "at least" in text
    assert not [p for p in report.problems if "state" in p]  # a partial count is no problem


# ---- errors ----------------------------------------------------------------------------------------------------


async def test_a_delivery_over_the_item_limit_is_refused_naming_it_and_its_largest_field(
    stores: StoreFactory,
) -> None:
    # A channel that answered an id of half a megabyte: its item exists, but DynamoDB keeps no item over 400 KB.
    # The dead letter's reason must say which delivery, that it is the item limit, and what made it large (before:
    # DynamoDB's own "Item size has exceeded the maximum allowed size", naming nothing).
    store = await stores()
    with pytest.raises(StateRejected) as raised:
        await store.record(delivery(7, "web", 11, external_id="x" * 500_000))
    assert isinstance(raised.value, PermanentError)
    text = str(raised.value)
    assert "element 7" in text and "'web'" in text and "publication 11" in text
    assert "400 KB" in text and "external_id" in text and "500,000 bytes" in text
    assert "\n" not in text and "x" * 100 not in text  # one line, the value itself not quoted
    assert await store.deliveries(7) == []


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
        # The worker's own role: a refusal at start (test above); at run time retried, not the message's fault.
        ("AccessDeniedException", 400, StateAccessRefused),
        ("UnrecognizedClientException", 400, StateAccessRefused),
        ("ValidationException", 400, StateRejected),
        # The table's KMS key disabled, deleted or its grant revoked: the deployment's fault, never the message's.
        ("KMSAccessDeniedException", 400, StateAccessRefused),
        ("KMSDisabledException", 400, StateAccessRefused),
        ("ValidationException: KMS", 400, StateAccessRefused),
    ],
)
def test_error_classification(code: str, status: int, kind: type[Exception]) -> None:
    store = DynamoDbStateStore("bridge-state", region=REGION)
    code, _, detail = code.partition(": ")
    message = f"The {detail} key is disabled" if detail else "m"
    error = ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutItem"
    )
    translated = store._translate("put_item", error)
    assert type(translated) is kind
    assert isinstance(translated, PermanentError if kind is StateRejected else TransientError)
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


async def test_a_worker_whose_role_cannot_write_the_table_does_not_start_and_its_messages_wait(
    moto_url: str, table: str, sqs_endpoint: SqsEndpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The bridge's own fault (its IAM role) must not dead-letter a message: before, every message met the refusal
    # and was dead-lettered at its first receive; now the start stops first, and the queue keeps what it held.
    queue, dlq = make_queues(sqs_endpoint.url, f"iam-{uuid.uuid4().hex[:8]}", max_receive_count=5)
    send(sqs_endpoint.url, queue, {"id": 7, "event": "updated"})
    real_call = DynamoDbStateStore._call

    async def refusing_put(self: DynamoDbStateStore, operation: str, **request: Any) -> dict[str, Any]:
        if operation == "put_item":
            error = ClientError(
                {"Error": {"Code": "AccessDeniedException", "Message": "not authorized to perform PutItem"}}
                | {"ResponseMetadata": {"HTTPStatusCode": 400}},
                "PutItem",
            )
            raise self._translate(operation, error)
        return await real_call(self, operation, **request)

    monkeypatch.setattr(DynamoDbStateStore, "_call", refusing_put)
    settings = Settings(
        queue={"url": queue, "dlq_url": dlq, "endpoint_url": sqs_endpoint.url, "region": REGION},
        kordiam={"base_url": "http://127.0.0.1:9", "client_id": "c", "client_secret": "s3cret-value"},
        state={"url": f"dynamodb://{table}", "endpoint_url": moto_url, "region": REGION},
        channels=[{"name": "web", "type": "folder", "platforms": [1], "path": str(tmp_path / "web")}],
    )
    with pytest.raises(ConfigError) as raised:
        await run_worker(settings, asyncio.Event(), serve_ops=False)
    assert raised.value.key == "state.url" and "dynamodb:PutItem" in raised.value.problem
    assert queue_depth(sqs_endpoint.url, queue) == 1 and queue_depth(sqs_endpoint.url, dlq) == 0


async def test_a_role_stripped_of_writes_under_a_running_worker_pauses_it_and_no_message_is_dead_lettered(
    moto_url: str,
    table: str,
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    admin: SimulatorAdmin,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # The role's fault is the worker's: before, each message met the refusal on every receive and was dead-lettered
    # on its third; now the worker pauses until the role may write again, and every message is delivered.
    monkeypatch.setattr("bridge.pipeline.pause.FIRST_RETRY_SECONDS", 0.2)
    refusing = False
    refusals = 0
    real_call = DynamoDbStateStore._call

    async def stripped_of_writes(self: DynamoDbStateStore, operation: str, **request: Any) -> dict[str, Any]:
        nonlocal refusals
        if refusing and operation in ("put_item", "update_item", "delete_item"):
            refusals += 1
            error = ClientError(
                {"Error": {"Code": "AccessDeniedException", "Message": f"not authorized to perform {operation}"}}
                | {"ResponseMetadata": {"HTTPStatusCode": 400}},
                operation,
            )
            raise self._translate(operation, error)
        return await real_call(self, operation, **request)

    monkeypatch.setattr(DynamoDbStateStore, "_call", stripped_of_writes)
    settings = worker_settings(
        queue=queues[0], endpoint=sqs_endpoint.url, kordiam=admin.base_url, workdir=tmp_path, channel_type="folder"
    )
    settings = settings.model_copy(
        update={"state": StateSettings(url=f"dynamodb://{table}", endpoint_url=moto_url, region=REGION)}
    )

    outages_before = REGISTRY.get_sample_value("bridge_state_outages_total") or 0.0

    def written() -> list[str]:
        return sorted(p.name for p in (tmp_path / "web").glob("*.json"))

    async with running_worker(settings):
        stories = [await admin.create(story("Before"))]
        await eventually(lambda: len(written()) == 1, what="the story before delivered")
        refusing = True
        stories += [await admin.create(story(f"Stripped {n}")) for n in range(3)]
        await eventually(consumer_paused, what="the worker paused")
        # As many refusals as would have spent every message's three receives, had each been the message's fault.
        await eventually(lambda: refusals >= 3 * 3, timeout=30, what="refusals while paused")
        refusing = False
        await eventually(lambda: not consumer_paused(), timeout=30, what="the worker resumed")
        await eventually(lambda: len(written()) == len(stories), timeout=30, what="every story delivered")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=30, what="queue settled")
    assert written() == sorted(f"{s['id']}-{s['publications'][0]['id']}.json" for s in stories)
    assert (REGISTRY.get_sample_value("bridge_state_outages_total") or 0.0) - outages_before == 1
    assert drain(sqs_endpoint.url, queues[1]) == []

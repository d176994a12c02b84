"""Every DynamoDB call of the state store ends by its deadline, botocore's retries included: an endpoint that takes a
request and never answers (or answers a byte at a time, which botocore's per-read timeout never catches) fails the
call with ``StateUnavailable`` naming the call, the table and the endpoint, as DynamoDB being down does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bridge.errors import ConfigError
from bridge.state import dynamodb
from bridge.state.base import Delivery, StateUnavailable
from bridge.state.dynamodb import DynamoDbStateStore
from tests.unit.fakes import dripping_endpoint


class SilentClient:
    """Takes every call and never answers; counts the calls in flight."""

    meta = SimpleNamespace(endpoint_url="http://dynamodb.local")

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0

    def __getattr__(self, operation: str) -> Any:
        async def call(**_: Any) -> dict[str, Any]:
            self.calls.append(operation)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                await asyncio.Event().wait()
            finally:
                self.in_flight -= 1
            raise AssertionError("unreachable")

        return call


@pytest.fixture(autouse=True)
def _short_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dynamodb, "CALL_SECONDS", 0.05)


def silent_store(client: Any, *, lease_seconds: float = 120.0) -> DynamoDbStateStore:
    store = DynamoDbStateStore("bridge-state", region="eu-central-1", lease_seconds=lease_seconds, keep_leases=False)
    store._client = client  # the store as open() leaves it, on an endpoint that never answers
    return store


def delivery() -> Delivery:
    return Delivery(element_id=7, channel="web", publication_id=3, external_id="cms-1", fingerprint="f")


async def test_a_record_that_meets_no_answer_fails_by_its_deadline_naming_the_call_and_the_endpoint() -> None:
    store = silent_store(SilentClient())
    with pytest.raises(StateUnavailable) as raised:
        await store.record(delivery())
    assert str(raised.value) == (
        "DynamoDB put_item on bridge-state did not answer within 0.05 s (endpoint http://dynamodb.local)"
    )


async def test_a_lease_take_and_the_probe_that_meet_no_answer_fail_by_their_deadline() -> None:
    client = SilentClient()
    store = silent_store(client)
    with pytest.raises(StateUnavailable, match="put_item on bridge-state did not answer"):
        async with store.lease(7):
            raise AssertionError("the lease was never taken")
    with pytest.raises(StateUnavailable, match=r"did not answer within 0\.05 s"):
        await store.probe()
    assert client.calls == ["put_item", "put_item", "delete_item"]  # the probe's first step, then its tidy-up


class FailingPutSilentDelete(SilentClient):
    """DynamoDB failing a put at once (a 500) and never answering the delete that tidies up after it."""

    async def put_item(self, **_: Any) -> dict[str, Any]:
        self.calls.append("put_item")
        raise ClientError({"Error": {"Code": "InternalServerError", "Message": "boom"}}, "PutItem")


async def test_a_failed_probes_tidy_up_has_a_short_deadline_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tidy-up only deletes the probe's own item: a hung store must not hold the pause another whole deadline.
    monkeypatch.setattr(dynamodb, "CALL_SECONDS", 3600.0)
    monkeypatch.setattr(dynamodb, "TIDY_SECONDS", 0.05)
    client = FailingPutSilentDelete()
    async with asyncio.timeout(10):  # a guard, not the assertion: the tidy-up by CALL_SECONDS would outlast it
        with pytest.raises(StateUnavailable, match="InternalServerError"):
            await silent_store(client).probe()
    assert client.calls == ["put_item", "delete_item"]


async def test_lease_extensions_run_at_once_each_by_a_deadline_within_the_keepers_margin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The keeper tries a failed extension again a sixth of the lease later: one pass must end well before that,
    # however many leases it extends, or a live holder's leases lapse while the store hangs.
    monkeypatch.setattr(dynamodb, "CALL_SECONDS", 10.0)  # a twelfth of the 12 s lease is less
    client = SilentClient()
    store = silent_store(client, lease_seconds=12.0)
    with pytest.raises(StateUnavailable, match="update_item on bridge-state did not answer within 1 s"):
        await store._extend_leases([1, 2, 3, 4])
    assert client.calls == ["update_item"] * 4
    assert client.most_in_flight == 4


@pytest.fixture
async def dripping() -> AsyncIterator[str]:
    async with dripping_endpoint() as url:
        yield url


@pytest.fixture
def dynamodb_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.mark.usefixtures("dynamodb_credentials")
async def test_an_answer_that_drips_fails_by_the_deadline_which_botocores_read_timeout_never_meets(
    dripping: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dynamodb, "CALL_SECONDS", 0.5)
    store = DynamoDbStateStore("bridge-state", region="eu-central-1", endpoint_url=dripping)
    async with dynamodb._create_client("eu-central-1", dripping) as client:
        store._client = client
        # A guard, not the assertion: without a deadline the drip holds the call for ever.
        async with asyncio.timeout(10):
            with pytest.raises(StateUnavailable) as raised:
                await store.element_mark(7)
    assert str(raised.value) == (f"DynamoDB get_item on bridge-state did not answer within 0.5 s (endpoint {dripping})")


@pytest.mark.usefixtures("dynamodb_credentials")
async def test_a_table_check_at_start_that_drips_fails_by_its_deadline_as_an_unreachable_endpoint(
    dripping: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dynamodb, "CALL_SECONDS", 0.5)
    store = DynamoDbStateStore("bridge-state", region="eu-central-1", endpoint_url=dripping)
    async with asyncio.timeout(10):  # a guard, as above
        with pytest.raises(ConfigError) as raised:
            await store.open()
    assert str(raised.value).endswith(
        f"cannot reach DynamoDB for DynamoDB table 'bridge-state' in eu-central-1 at {dripping}: "
        "DescribeTable did not answer within 0.5 s"
    )

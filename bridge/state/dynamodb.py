"""DynamoDB state store: one table shared by any number of workers, every write conditional.

Single-table layout (hash key ``pk``, range key ``sk``, both strings; TTL on ``expires_at``):

* ``pk = "element#<id>"``, ``sk = "delivery#<channel>#<publication>"``: one publication delivered to one channel,
  with the Kordiam version it carried (``modification_date`` as fixed-width ISO-8601 UTC text, ``version``
  as a number). A write only lands if the stored version is not newer (the ordering of ``is_older``).
* ``sk = "mark"``: the newest version of the element fully synced (or seen deleted), and ``fetched_at`` (epoch
  seconds, a number) when the Kordiam fetch behind it started; a mark whose fetch started earlier than the
  stored one does not land. ``resync``: a token set by a release that found its lease lost (the element's
  channels may hold an older version than its deliveries say), removed by the mark of the re-sync that read it.
* ``sk = "lease"``: the worker (``owner``) syncing the element until ``expires_at`` (epoch seconds).
* ``pk = "parked#<channel>"``, ``sk = "element#<id, 20 digits>"``: an element the channel owes a sync while it
  refuses the bridge's own credentials (``reason``, the latest refusal's text; ``since``, when first parked, as
  fixed-width UTC text; ``generation``, drawn anew by every park, for an unpark conditional on it). One
  partition per channel, the element id zero-padded so that the range key orders by it: a page of a channel's
  parked elements is one Query, their count a Query that counts. No ``expires_at``: they never expire.
* ``pk = "sweep#<name>"`` (``name``: ``reconcile``), ``sk = "cursor"``: where the background sweep resumes
  (``cursor``, fixed-width UTC text), moved on only by a conditional update; no ``expires_at``, it is kept. ``sk =
  "lease"``: the worker running the sweep (``owner``) until ``expires_at``, as an element's lease.
* ``pk = "bridge#parked-channels"``, ``sk = "channels"``: the names of the channels that ever had an element
  parked (``channels``, a string set), added to by ``park`` once per channel per process, never shrunk, so that
  elements parked under a channel name the configuration no longer has can be found without a Scan.

Two global secondary indexes (all attributes projected) find deliveries for the ingress, which maps the id in a
Kordiam ``DELETE`` back to its element: ``external_id`` (hash key ``external_id``, a string) by their channel
item's id, the CMS id; ``publication_id`` (hash key ``publication_id``, a number) by their Kordiam publication,
the placeholder id the ingress answers a Platform integration call with. Both keys are attributes every delivery
has carried from the start. GSIs, not an item of our own per id: DynamoDB keeps them in step with every delivery
written, forgotten or re-pointed (no second write on the worker's path, nothing to go stale), and fills them from
a table's existing deliveries when they are added; their reads are eventually consistent, well within the minutes
between a story's delivery and Kordiam's ``DELETE``. A GSI key may be neither empty nor longer than 2 KiB, so an
empty external id is left out of the item (read back as ``""``) and one longer than 1 KiB is kept as
``external_id_unindexed``; marks, leases and parked elements carry neither key, so the indexes hold deliveries
alone. Projecting every attribute lets a lookup answer whole deliveries, a few hundred bytes each.

The table is created outside the bridge (Terraform in production; ``create_table`` for local use and tests):
``open()`` checks that it exists and refuses to start otherwise, as it refuses a table that types ``external_id`` or
``publication_id`` otherwise (an index keyed on it: DynamoDB would refuse every delivery); a table without the
indexes (or with one of their names on another key or projection) serves the worker, and the lookups refuse with a
``ConfigError`` saying what to add (the ingress asks at start-up).

Why one module of ~1,130 lines: the ``StateStore`` contract is one class (about 750 lines of statements, one method
per contract call, as in ``sqlite.py``); the rest is the item encoding and the table definition those statements
assume, which change together with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
import uuid
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from bridge.config import StateSettings
from bridge.deadline import DeadlineMissed, by_deadline
from bridge.errors import ConfigError, PermanentError
from bridge.state.base import (
    Delivery,
    DeliveryCounts,
    ElementMark,
    ElementRecord,
    HeldLease,
    LeaseRecord,
    Parked,
    RecordedDelivery,
    StateUnavailable,
    count_deliveries,
    new_generation,
)
from bridge.state.leases import LeaseKeeper, LeaseOwner, held_lease, try_sweep_lease

log = structlog.get_logger("bridge.state")

HASH_KEY = "pk"
RANGE_KEY = "sk"
TTL_ATTRIBUTE = "expires_at"
DELIVERY_PREFIX = "delivery#"
MARK = "mark"
# The item the worker's start writes and deletes again to check its IAM permissions (``_check_access``): a hash key
# no element has, and a range key per worker so that workers starting together do not share it.
ACCESS_CHECK_PK = "bridge#access-check"
ACCESS_CHECK_SK_PREFIX = "worker#"
LEASE = "lease"
RESYNC = "resync"
PARKED_PK_PREFIX = "parked#"
PARKED_SK_PREFIX = "element#"
SWEEP_PK_PREFIX = "sweep#"
CURSOR = "cursor"
PARKED_CHANNELS_KEY = {HASH_KEY: {"S": "bridge#parked-channels"}, RANGE_KEY: {"S": "channels"}}
# Digits of a parked element's range key: any positive 64-bit id (Kordiam's element ids are positive; the queue
# refuses others), so that key order is id order.
PARKED_ID_DIGITS = 20
EXTERNAL_ID_INDEX = "external_id"
EXTERNAL_KEY = "external_id"
UNINDEXED_EXTERNAL_ID = "external_id_unindexed"
PUBLICATION_INDEX = "publication_id"
PUBLICATION_KEY = "publication_id"
# What the ingress needs beyond the keys: each index with its hash key and that key's type.
INDEXES = {EXTERNAL_ID_INDEX: (EXTERNAL_KEY, "S"), PUBLICATION_INDEX: (PUBLICATION_KEY, "N")}
MAX_EXTERNAL_KEY_BYTES = 1024
# DynamoDB keeps no item over 400 KB, attribute names and values together. What makes a delivery large is its
# channel's answer: the sync bounds the links and their titles (``bridge.pipeline.sync``), not the id.
MAX_ITEM_BYTES = 400 * 1024

# Throttling and server-side trouble: the same request may succeed later.
TRANSIENT_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "TransactionConflictException",
        "LimitExceededException",
        "RequestTimeout",
        "RequestTimeoutException",
        # Refreshable credentials are renewed by botocore on the next call.
        "ExpiredTokenException",
        # The table is missing or being re-created: retrying later may work, and the queue's retry budget
        # still dead-letters the message if it never comes back.
        "ResourceNotFoundException",
    }
)
# Of those, what the table check at start reports as an outage: an expired token or a missing table there is the
# deployment's to fix, which a configuration error names.
OUTAGE_CODES = TRANSIENT_CODES - {"ExpiredTokenException", "ResourceNotFoundException"}
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class StateRejected(PermanentError):
    """DynamoDB refused the request itself (validation): retrying the same request cannot help."""


class StateAccessRefused(StateUnavailable):
    """DynamoDB refused the worker's role or credentials (AccessDenied, UnrecognizedClient, InvalidSignature): the
    bridge's own configuration, not the message's fault. At start (the worker's access check) it is a configuration
    error naming ``state.url``; at run time (a role changed under a running worker) it is an outage: the worker
    pauses until its probe is allowed again (``bridge.pipeline.state_outage``)."""


class _ConditionFailed(Exception):
    """A conditional write's condition was false (not an error: the caller decides what it means)."""


def resolve_region(settings: StateSettings, default_region: str | None = None) -> str:
    """``state.region``, else ``AWS_DEFAULT_REGION``/``AWS_REGION``, else ``default_region`` (the queue's)."""
    region = settings.region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or default_region
    if not region:
        raise ConfigError("state.region", "no AWS region for the DynamoDB table; set state.region or AWS_REGION")
    return region


# The most connections a store's DynamoDB client holds (unless told otherwise): one per call at once.
POOL_CONNECTIONS = 64
# Deadlines of the store's DynamoDB calls, botocore's retries included. botocore's read timeout counts per read, so
# an endpoint that answers a byte at a time never meets it, and one that stops mid-answer meets it only after 10 s
# on each of its 3 attempts: a lease take, a record or a mark would hold its message's sync for that long, and the
# probe the worker's pause. Any call gets CALL_SECONDS (DynamoDB answers in milliseconds; the SQS calls' deadline).
# A lease extension gets at most a twelfth of state.lease_seconds: the keeper tries a failed one again a sixth of
# the lease later and a lease is extended at the latest half-way into its life, so both tries end before it
# lapses under its live holder even when the first met a dead connection (at least 1 s: a short lease in tests).
CALL_SECONDS = 10.0
MIN_EXTENSION_SECONDS = 1.0
# The tidy-up after a failed probe or access check only deletes their item (no element's key: harmless if it stays),
# so it gets a short deadline: a hung store must not hold the worker's pause, or each probe of it, another 10 s.
TIDY_SECONDS = 1.0


class DynamoDbStateStore:
    """Safe for many worker processes on many hosts: leases and records are conditional writes."""

    reads_in_process = False

    def __init__(
        self,
        table: str,
        *,
        region: str,
        endpoint_url: str | None = None,
        lease_seconds: float = 120.0,
        lease_wait_seconds: float = 10.0,
        max_connections: int = POOL_CONNECTIONS,
        keep_leases: bool = True,
        owner: LeaseOwner | None = None,
        check_access: bool = False,
    ) -> None:
        self.table = table
        self.region = region
        self.endpoint_url = endpoint_url
        self.owner = (owner or LeaseOwner.of_process(os.getpid())).encode()
        self._lease_seconds = lease_seconds
        self._lease_wait = lease_wait_seconds
        self._max_connections = max_connections
        self._client: Any = None
        self._stack: AsyncExitStack | None = None
        self._indexes: frozenset[str] = frozenset()
        # The table's ItemCount as open() read it: DynamoDB's estimate, updated about every six hours.
        self._item_count: int | None = None
        # keep_leases=False: a worker that never extends its leases (tests of expiry stand in a hung worker so);
        # owner: tests stand in another process's store so.
        self._keeper = LeaseKeeper(lease_seconds, self._extend_leases, enabled=keep_leases)
        # The channels this process has added to the parked channels' item (``park``).
        self._parked_channels_named: set[str] = set()
        # check_access: the worker's open tries each call it makes (``_check_access``); the ingress and the
        # operator commands only read, and their IAM roles allow only that.
        self._check_access_at_open = check_access

    @classmethod
    def from_settings(
        cls, settings: StateSettings, *, default_region: str | None = None, check_access: bool = False
    ) -> DynamoDbStateStore:
        return cls(
            settings.table,
            region=resolve_region(settings, default_region),
            endpoint_url=settings.endpoint_url,
            lease_seconds=settings.lease_seconds,
            lease_wait_seconds=settings.lease_wait_seconds,
            check_access=check_access,
        )

    # ---- life cycle ----------------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._client is not None:
            return
        stack = AsyncExitStack()
        try:
            try:
                self._client = await stack.enter_async_context(
                    _create_client(self.region, self.endpoint_url, max_connections=self._max_connections)
                )
            except BotoCoreError as error:
                # Resolving the credentials failed (an expired SSO login, a credential_process or an instance role
                # that answers nothing usable): botocore raises it as the client is made, before any call.
                raise ConfigError("state.url", f"{self._where()}: no usable AWS credentials: {error}") from None
            await self._check_table()
            if self._check_access_at_open:
                await self._check_access()
        except BaseException:
            self._client = None
            await stack.aclose()
            raise
        self._stack = stack
        self._keeper.start()

    async def close(self) -> None:
        await self._keeper.stop()
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    def _where(self) -> str:
        return f"DynamoDB table {self.table!r} in {self.region}" + (
            f" at {self.endpoint_url}" if self.endpoint_url else ""
        )

    async def _check_table(self) -> None:
        where = self._where()
        try:
            response = await by_deadline(CALL_SECONDS, self._client.describe_table(TableName=self.table))
        except ClientError as error:
            code, message = _code(error), _message(error)
            if code == "ResourceNotFoundException":
                raise ConfigError(
                    "state.url",
                    f"{where} does not exist; create it first (Terraform, or bridge.state.dynamodb.create_table "
                    f"for local use) with string keys {HASH_KEY!r} (hash) and {RANGE_KEY!r} (range)",
                ) from None
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in OUTAGE_CODES or status >= 500:
                # DescribeTable's own rate limit (a fleet starting at once) or DynamoDB's trouble: nothing to fix in
                # the configuration.
                raise StateUnavailable(
                    f"{where} could not be checked now (an outage, not the configuration): {code or status}: {message}"
                ) from None
            raise ConfigError("state.url", f"{where} is not usable: {code}: {message}") from None
        except NoCredentialsError:
            raise ConfigError("state.url", f"{where}: no AWS credentials found") from None
        except (BotoCoreError, OSError, DeadlineMissed) as error:
            key = "state.endpoint_url" if self.endpoint_url else "state.region"
            missed = isinstance(error, DeadlineMissed)
            reason = f"DescribeTable did not answer within {CALL_SECONDS:g} s" if missed else str(error)
            raise ConfigError(key, f"cannot reach DynamoDB for {where}: {reason}") from None
        description = response.get("Table", {})
        keys = {k["AttributeName"]: k["KeyType"] for k in description.get("KeySchema", [])}
        types = {a["AttributeName"]: a["AttributeType"] for a in description.get("AttributeDefinitions", [])}
        if keys != {HASH_KEY: "HASH", RANGE_KEY: "RANGE"} or types.get(HASH_KEY) != "S" or types.get(RANGE_KEY) != "S":
            raise ConfigError(
                "state.url",
                f"{where} has key schema {keys}; the bridge needs string keys {HASH_KEY!r} (hash) and "
                f"{RANGE_KEY!r} (range)",
            )
        for key, kind in INDEXES.values():
            # DynamoDB refuses an item whose attribute is typed otherwise than an index keyed on it declares: every
            # delivery would be refused (permanently), after its channel was written.
            if types.get(key, kind) != kind:
                raise ConfigError(
                    "state.url",
                    f"{where} has an index keyed on {key!r} of type {types[key]}; the bridge writes it as "
                    f"{'a string (S)' if kind == 'S' else 'a number (N)'} on every delivery",
                )
        # An index serves the lookups if it has the name, the hash key and the projection their queries assume (a
        # lookup reads whole deliveries from it).
        self._indexes = frozenset(
            name
            for index in description.get("GlobalSecondaryIndexes", [])
            if (name := str(index.get("IndexName"))) in INDEXES
            and index.get("KeySchema") == [{"AttributeName": INDEXES[name][0], "KeyType": "HASH"}]
            and index.get("Projection", {}).get("ProjectionType") == "ALL"
        )
        item_count = description.get("ItemCount")
        self._item_count = int(item_count) if isinstance(item_count, int) else None

    async def _check_access(self) -> None:
        """Try each call the worker makes once (``_access_steps``).

        DynamoDB's refusal of a call (an IAM policy without ``dynamodb:PutItem``, say) is the worker's fault, not a
        message's: here at start it is one line naming ``state.url`` and the action, and the worker does not start;
        the messages wait in the queue. Throttling or an outage here is no verdict on the role: logged, and the
        start goes on. (At run time the worker pauses on either: ``probe``, ``bridge.pipeline.state_outage``.)
        """
        steps = self._access_steps()
        for action, operation, request in steps:
            try:
                await self._call(operation, **request)
            except (StateAccessRefused, StateRejected) as refused:
                raise ConfigError("state.url", f"the worker may not call dynamodb:{action}: {refused}") from None
            except StateUnavailable as error:
                log.warning("state_access_check_incomplete", step=action, error=str(error))
                await self._tidy_access_check(steps)
                return

    async def flush(self) -> None:
        return None  # a write DynamoDB answered is durable already

    async def probe(self) -> None:
        steps = self._access_steps()
        for _, operation, request in steps:
            try:
                await self._call(operation, **request)
            except (StateUnavailable, StateRejected):  # each names the call it met
                await self._tidy_access_check(steps)
                raise

    async def _tidy_access_check(self, steps: list[tuple[str, str, dict[str, Any]]]) -> None:
        _, operation, request = steps[-1]
        with contextlib.suppress(Exception):  # no element's key, so harmless if it stays; tidy if it can
            await self._call_by(TIDY_SECONDS, operation, **request)

    def _access_steps(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Each call the worker makes, once, on an item no element has (``ACCESS_CHECK_PK``), deleted last."""
        key = {HASH_KEY: _s(ACCESS_CHECK_PK), RANGE_KEY: _s(f"{ACCESS_CHECK_SK_PREFIX}{self.owner}")}
        update = {
            "Key": key,
            "UpdateExpression": "SET #at = :at",
            "ExpressionAttributeNames": {"#at": "checked_at"},
            "ExpressionAttributeValues": {":at": _s(encode_date(datetime.now(UTC)))},
        }
        query = {
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": HASH_KEY},
            "ExpressionAttributeValues": {":pk": key[HASH_KEY]},
            "Limit": 1,
        }
        # The worker's calls (not the indexes': only the ingress reads those, with a role of its own).
        return [
            ("PutItem", "put_item", {"Item": key}),
            ("GetItem", "get_item", {"Key": key, "ConsistentRead": True}),
            ("UpdateItem", "update_item", update),
            ("Query", "query", query),
            ("DeleteItem", "delete_item", {"Key": key}),
        ]

    # ---- deliveries ----------------------------------------------------------------------------------------

    async def deliveries(self, element_id: int) -> list[Delivery]:
        items = await self._query(
            KeyConditionExpression="#pk = :pk AND begins_with(#sk, :prefix)",
            ExpressionAttributeNames={"#pk": HASH_KEY, "#sk": RANGE_KEY},
            ExpressionAttributeValues={":pk": _s(_pk(element_id)), ":prefix": _s(DELIVERY_PREFIX)},
        )
        found = [_delivery(item) for item in items]
        return sorted(found, key=lambda d: (d.channel, d.publication_id))

    async def deliveries_with_external_id(self, external_id: str) -> list[Delivery]:
        if not _indexable(external_id):
            self._require(EXTERNAL_ID_INDEX)
            return []
        return await self._by_index(EXTERNAL_ID_INDEX, _s(external_id))

    async def deliveries_of_publication(self, publication_id: int) -> list[Delivery]:
        return await self._by_index(PUBLICATION_INDEX, _n(publication_id))

    async def _by_index(self, index: str, value: dict[str, str]) -> list[Delivery]:
        self._require(index)
        items = await self._paginate(
            "query",
            IndexName=index,
            KeyConditionExpression="#key = :key",
            ExpressionAttributeNames={"#key": INDEXES[index][0]},
            ExpressionAttributeValues={":key": value},
        )
        found = [_delivery(item) for item in items]
        return sorted(found, key=lambda d: (d.element_id, d.channel, d.publication_id))

    def _require(self, index: str) -> None:
        if index not in self._indexes:
            key, kind = INDEXES[index]
            raise ConfigError(
                "state.url",
                f"DynamoDB table {self.table!r} has no global secondary index {index!r} (hash key {key!r}, "
                f"{'string' if kind == 'S' else 'number'}, all attributes projected); the ingress needs it to map "
                "Kordiam's ids",
            )

    async def all_deliveries(self) -> list[Delivery]:
        """Every delivery in the table: a full scan, for operator commands only."""
        items = await self._paginate(
            "scan",
            FilterExpression="begins_with(#sk, :prefix)",
            ExpressionAttributeNames={"#sk": RANGE_KEY},
            ExpressionAttributeValues={":prefix": _s(DELIVERY_PREFIX)},
        )
        found = [_delivery(item) for item in items]
        return sorted(found, key=lambda d: (d.element_id, d.channel, d.publication_id))

    async def delivery_counts(self, limit: int) -> DeliveryCounts:
        """A Scan that stops after ``limit`` items: a whole table's Scan reads every item, hundreds of thousands in
        a newsroom's, for minutes and at the cost of read capacity the workers share. Eventually consistent (half
        the capacity of a consistent read), the attributes counted alone. Counts kept by ``record`` as it writes
        would cost every delivery a second write to one hot item per channel, and an ``ADD`` retried after a
        timeout counts twice: a figure that looks exact and drifts."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")  # DynamoDB would refuse the Scan
        request: dict[str, Any] = {
            "FilterExpression": "begins_with(#sk, :prefix)",
            "ProjectionExpression": "#sk, element_id, channel, live, modification_date",
            "ExpressionAttributeNames": {"#sk": RANGE_KEY},
            "ExpressionAttributeValues": {":prefix": _s(DELIVERY_PREFIX)},
        }
        found: list[tuple[str, int, bool, datetime | None]] = []
        read = 0
        start: dict[str, Any] | None = None
        while True:
            # Limit bounds the items a page reads (before the filter), so that no page reads past ``limit``.
            page = await self._call(
                "scan", **request, Limit=limit - read, **({"ExclusiveStartKey": start} if start else {})
            )
            read += int(page.get("ScannedCount", 0))
            found.extend(
                (
                    str(item["channel"]["S"]),
                    int(item["element_id"]["N"]),
                    bool(item.get("live", {}).get("BOOL", False)),
                    _date_attribute(item, "modification_date"),
                )
                for item in page.get("Items", [])
            )
            start = page.get("LastEvaluatedKey")
            if not start or read >= limit:
                break
        return DeliveryCounts(count_deliveries(found), complete=not start, read=read, table_items=self._item_count)

    async def record(self, delivery: Delivery) -> bool:
        item: dict[str, Any] = {
            HASH_KEY: _s(_pk(delivery.element_id)),
            RANGE_KEY: _s(_delivery_sk(delivery.channel, delivery.publication_id)),
            "element_id": _n(delivery.element_id),
            "channel": _s(delivery.channel),
            "publication_id": _n(delivery.publication_id),
            "fingerprint": _s(delivery.fingerprint),
            "live": {"BOOL": delivery.live},
            "updated_at": _s(encode_date(datetime.now(UTC))),
        }
        optional = {
            "edit_link": delivery.edit_link,
            "open_link": delivery.open_link,
            "edit_link_title": delivery.edit_link_title,
            "open_link_title": delivery.open_link_title,
        }
        item.update({name: _s(value) for name, value in optional.items() if value is not None})
        if _indexable(delivery.external_id):
            item[EXTERNAL_KEY] = _s(delivery.external_id)
        elif delivery.external_id:
            item[UNINDEXED_EXTERNAL_ID] = _s(delivery.external_id)
        if delivery.modification_date is not None:
            item["modification_date"] = _s(encode_date(delivery.modification_date))
        if delivery.version is not None:
            item["version"] = _n(delivery.version)
        condition = not_newer_condition(delivery.modification_date, delivery.version)
        request: dict[str, Any] = {"Item": item}
        if condition is not None:
            expression, values = condition
            request.update(
                ConditionExpression=expression,
                ExpressionAttributeNames={
                    name: attribute
                    for name, attribute in (("#pk", HASH_KEY), ("#md", "modification_date"), ("#v", "version"))
                    if name in expression
                },
                ExpressionAttributeValues=values,
            )
        try:
            await self._call("put_item", **request)
        except _ConditionFailed:
            return False
        except StateRejected:
            # Measured only once refused: DynamoDB's own words name neither the delivery nor what made it large.
            if (size := sum(_attribute_bytes(name, value) for name, value in item.items())) > MAX_ITEM_BYTES:
                raise _too_large(delivery, item, size) from None
            raise
        return True

    async def forget(self, element_id: int, channel: str, publication_id: int) -> None:
        await self._call("delete_item", Key=_key(element_id, _delivery_sk(channel, publication_id)))

    # ---- element marks -------------------------------------------------------------------------------------

    async def element_mark(self, element_id: int) -> ElementMark | None:
        response = await self._call("get_item", Key=_key(element_id, MARK), ConsistentRead=True)
        item = response.get("Item")
        return None if item is None else _mark(element_id, item)

    async def element_record(self, element_id: int) -> ElementRecord:
        # One consistent Query of the element's partition: its deliveries, mark and lease together.
        items = await self._query(
            KeyConditionExpression="#pk = :pk",
            ExpressionAttributeNames={"#pk": HASH_KEY},
            ExpressionAttributeValues={":pk": _s(_pk(element_id))},
        )
        mark: ElementMark | None = None
        lease: LeaseRecord | None = None
        deliveries: list[RecordedDelivery] = []
        for item in items:
            sk = str(item[RANGE_KEY]["S"])
            if sk == MARK:
                mark = _mark(element_id, item)
            elif sk == LEASE and "owner" in item and TTL_ATTRIBUTE in item:
                lease = LeaseRecord(str(item["owner"]["S"]), float(item[TTL_ATTRIBUTE]["N"]))
            elif sk.startswith(DELIVERY_PREFIX):
                deliveries.append(RecordedDelivery(_delivery(item), _date_attribute(item, "updated_at")))
        deliveries.sort(key=lambda r: (r.delivery.channel, r.delivery.publication_id))
        return ElementRecord(element_id, mark, deliveries, lease)

    async def mark_element(self, mark: ElementMark) -> None:
        # An update, not a put: a re-sync token set meanwhile (``_give_back``) stays. A mark whose fetch started
        # before the recorded one is ignored (the condition); one without a fetch time keeps the recorded one.
        names = {"#element": "element_id", "#deleted": "deleted", "#updated": "updated_at"}
        values: dict[str, Any] = {
            ":element": _n(mark.element_id),
            ":deleted": {"BOOL": mark.deleted},
            ":updated": _s(encode_date(datetime.now(UTC))),
        }
        sets = ["#element = :element", "#deleted = :deleted", "#updated = :updated"]
        removes: list[str] = []
        fields = {"modification_date": mark.modification_date, "version": mark.version}
        for name, value in fields.items():
            names[f"#{name}"] = name
            if value is None:
                removes.append(f"#{name}")
            else:
                sets.append(f"#{name} = :{name}")
                values[f":{name}"] = _s(encode_date(value)) if isinstance(value, datetime) else _n(value)
        request: dict[str, Any] = {}
        if mark.fetched_at is not None:
            names["#fetched"] = "fetched_at"
            values[":fetched"] = {"N": repr(mark.fetched_at)}
            sets.append("#fetched = :fetched")
            request["ConditionExpression"] = "attribute_not_exists(#fetched) OR #fetched <= :fetched"
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        try:
            await self._call(
                "update_item",
                Key=_key(mark.element_id, MARK),
                UpdateExpression=expression,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                **request,
            )
        except _ConditionFailed:
            return
        if mark.resync is not None:  # only after a re-sync: its token cleared, unless a newer one was set since
            with contextlib.suppress(_ConditionFailed):
                await self._call(
                    "update_item",
                    Key=_key(mark.element_id, MARK),
                    UpdateExpression="REMOVE #resync",
                    ConditionExpression="#resync = :read",
                    ExpressionAttributeNames={"#resync": RESYNC},
                    ExpressionAttributeValues={":read": _s(mark.resync)},
                )

    async def _mark_for_resync(self, element_id: int) -> None:
        """Give the element a new re-sync token (``ElementMark.resync``), whatever its mark holds."""
        await self._call(
            "update_item",
            Key=_key(element_id, MARK),
            UpdateExpression="SET #element = :element, #resync = :token",
            ExpressionAttributeNames={"#element": "element_id", "#resync": RESYNC},
            ExpressionAttributeValues={":element": _n(element_id), ":token": _s(uuid.uuid4().hex)},
        )

    # ---- parked elements -----------------------------------------------------------------------------------

    async def park(self, element_id: int, channel: str, reason: str, *, since: datetime | None = None) -> None:
        key = _parked_key(channel, element_id)  # refuses an id the key cannot order, before anything is written
        if channel not in self._parked_channels_named:
            # Named before the element is parked: a parked element's channel is always in the item.
            await self._call(
                "update_item",
                Key=PARKED_CHANNELS_KEY,
                UpdateExpression="ADD #channels :channel",
                ExpressionAttributeNames={"#channels": "channels"},
                ExpressionAttributeValues={":channel": {"SS": [channel]}},
            )
            self._parked_channels_named.add(channel)
        # One write whatever is there: the first since stays (if_not_exists), the reason is the latest.
        await self._call(
            "update_item",
            Key=key,
            UpdateExpression="SET #element = :element, #channel = :channel, #reason = :reason, "
            "#since = if_not_exists(#since, :now), #generation = :generation",
            ExpressionAttributeNames={
                "#element": "element_id",
                "#channel": "channel",
                "#reason": "reason",
                "#since": "since",
                "#generation": "generation",
            },
            ExpressionAttributeValues={
                ":element": _n(element_id),
                ":channel": _s(channel),
                ":reason": _s(reason),
                ":now": _s(encode_date(since or datetime.now(UTC))),
                ":generation": _n(new_generation()),
            },
        )

    async def unpark(self, element_id: int, channel: str, *, generation: int | None = None) -> None:
        if generation is None:
            await self._call("delete_item", Key=_parked_key(channel, element_id))
            return
        try:
            await self._call(
                "delete_item",
                Key=_parked_key(channel, element_id),
                ConditionExpression="#generation = :generation",
                ExpressionAttributeNames={"#generation": "generation"},
                ExpressionAttributeValues={":generation": _n(generation)},
            )
        except _ConditionFailed:
            return  # parked again since it was read (or already gone): left as it is

    async def parked(self, channel: str, *, after: int | None = None, limit: int = 100) -> list[Parked]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")  # DynamoDB would refuse the Query
        values = {":pk": _s(_parked_pk(channel))}
        if after is None or after < 0:
            condition = "#pk = :pk AND begins_with(#sk, :after)"
            values[":after"] = _s(PARKED_SK_PREFIX)
        else:
            condition = "#pk = :pk AND #sk > :after"
            values[":after"] = _s(_parked_sk(after))
        request: dict[str, Any] = {
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": {"#pk": HASH_KEY, "#sk": RANGE_KEY},
            "ExpressionAttributeValues": values,
            "ConsistentRead": True,
        }
        items: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        # A page of a Query stops at 1 MB as well as at Limit: go on until limit items or the channel's last.
        while len(items) < limit:
            page = await self._call(
                "query", **request, Limit=limit - len(items), **({"ExclusiveStartKey": start} if start else {})
            )
            items.extend(page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if not start:
                break
        return [
            Parked(
                element_id=int(item["element_id"]["N"]),
                channel=channel,
                reason=str(item["reason"]["S"]),
                since=decode_date(str(item["since"]["S"])),
                generation=int(item["generation"]["N"]) if "generation" in item else 1,
            )
            for item in items
        ]

    async def parked_count(self, channel: str) -> int:
        count = 0
        start: dict[str, Any] | None = None
        while True:  # Select=COUNT reads the items all the same, 1 MB a page
            page = await self._call(
                "query",
                KeyConditionExpression="#pk = :pk",
                ExpressionAttributeNames={"#pk": HASH_KEY},
                ExpressionAttributeValues={":pk": _s(_parked_pk(channel))},
                Select="COUNT",
                ConsistentRead=True,
                **({"ExclusiveStartKey": start} if start else {}),
            )
            count += int(page.get("Count", 0))
            start = page.get("LastEvaluatedKey")
            if not start:
                return count

    async def parked_channels(self) -> list[str]:
        response = await self._call("get_item", Key=PARKED_CHANNELS_KEY, ConsistentRead=True)
        return sorted(response.get("Item", {}).get("channels", {}).get("SS", []))

    # ---- sweeps --------------------------------------------------------------------------------------------

    async def sweep_cursor(self, sweep: str) -> datetime | None:
        response = await self._call("get_item", Key=_sweep_key(sweep, CURSOR), ConsistentRead=True)
        return _date_attribute(response.get("Item", {}), CURSOR)

    async def advance_sweep_cursor(self, sweep: str, to: datetime) -> None:
        with contextlib.suppress(_ConditionFailed):  # it stands there or later already
            await self._call(
                "update_item",
                Key=_sweep_key(sweep, CURSOR),
                UpdateExpression="SET #cursor = :to",
                ConditionExpression="attribute_not_exists(#cursor) OR #cursor < :to",
                ExpressionAttributeNames={"#cursor": CURSOR},
                ExpressionAttributeValues={":to": _s(encode_date(to))},
            )

    async def take_sweep_lease(self, sweep: str, *, seconds: float) -> bool:
        async def take(replacing: str | None) -> str | None:
            return await self._put_lease(_sweep_key(sweep, LEASE), {}, seconds, replacing)

        return await try_sweep_lease(sweep, take)

    async def release_sweep_lease(self, sweep: str) -> None:
        with contextlib.suppress(_ConditionFailed):  # another owner holds it since: left to it
            await self._call(
                "delete_item",
                Key=_sweep_key(sweep, LEASE),
                ConditionExpression="#owner = :me",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":me": _s(self.owner)},
            )

    # ---- leases --------------------------------------------------------------------------------------------

    def lease(self, element_id: int) -> AbstractAsyncContextManager[HeldLease]:
        return held_lease(element_id, self._try_lease, self._release, self._keeper, wait_seconds=self._lease_wait)

    async def _put_lease(
        self, key: dict[str, Any], fields: dict[str, Any], seconds: float, replacing: str | None
    ) -> str | None:
        """Write the lease item at ``key`` (with ``fields``) for this store until ``seconds`` from now, if it may: none
        there, expired, this store's own, or ``replacing``'s (an owner found gone). None once written, else the
        holder's owner text ("" if it was released meanwhile)."""
        now = time.time()
        condition = "attribute_not_exists(#pk) OR #expires < :now OR #owner = :me"
        values: dict[str, Any] = {":now": {"N": f"{now:.3f}"}, ":me": _s(self.owner)}
        if replacing is not None:
            condition += " OR #owner = :gone"
            values[":gone"] = _s(replacing)
        try:
            await self._call(
                "put_item",
                Item={
                    **key,
                    **fields,
                    "owner": _s(self.owner),
                    # Whole seconds: what DynamoDB's TTL expects; a lease lasts at most a second longer.
                    TTL_ATTRIBUTE: _n(math.ceil(now + seconds)),
                },
                ConditionExpression=condition,
                ExpressionAttributeNames={"#pk": HASH_KEY, "#expires": TTL_ATTRIBUTE, "#owner": "owner"},
                ExpressionAttributeValues=values,
            )
        except _ConditionFailed:
            held = await self._call("get_item", Key=key, ConsistentRead=True)
            return _str_attribute(held.get("Item", {}), "owner") or ""
        return None

    async def _try_lease(self, element_id: int, replacing: str | None) -> HeldLease | str:
        fields = {"element_id": _n(element_id)}
        holder = await self._put_lease(_key(element_id, LEASE), fields, self._lease_seconds, replacing)
        return HeldLease(element_id) if holder is None else holder  # the mark is an item of its own: not read here

    async def _extend_leases(self, element_ids: list[int]) -> set[int]:
        # One write per lease, all at once, each by the extension's deadline: a pass over many leases takes one
        # deadline at most, however the store hangs. One that fails (its partition throttled, say) leaves the others
        # to be extended, and is raised once they were, for the keeper to try again at its next tick.
        deadline = min(CALL_SECONDS, max(MIN_EXTENSION_SECONDS, self._lease_seconds / 12))

        async def extend(element_id: int) -> bool:
            """True if the lease is no longer this owner's."""
            try:
                await self._call_by(
                    deadline,
                    "update_item",
                    Key=_key(element_id, LEASE),
                    UpdateExpression="SET #expires = :until",
                    ConditionExpression="#owner = :me",
                    ExpressionAttributeNames={"#expires": TTL_ATTRIBUTE, "#owner": "owner"},
                    ExpressionAttributeValues={
                        ":until": _n(math.ceil(time.time() + self._lease_seconds)),
                        ":me": _s(self.owner),
                    },
                )
            except _ConditionFailed:
                return True
            return False

        outcomes = await asyncio.gather(*(extend(element_id) for element_id in element_ids), return_exceptions=True)
        lost: set[int] = set()
        failed: StateUnavailable | StateRejected | None = None
        for element_id, outcome in zip(element_ids, outcomes, strict=True):
            if isinstance(outcome, StateUnavailable | StateRejected):
                failed = failed or outcome
            elif isinstance(outcome, BaseException):
                raise outcome
            elif outcome:
                lost.add(element_id)
        if failed is not None:
            raise failed
        return lost

    async def _release(self, held: HeldLease) -> None:
        # Two writes, the mark first (a transaction would cost twice the write units of both): what a
        # mark_element call at the block's end did. Until the delete has told, the loss cannot be ruled out.
        held.lost = True
        try:
            if held.mark is not None:
                await self.mark_element(held.mark)
        finally:
            held.lost = await self._give_back(held.element_id)

    async def _give_back(self, element_id: int) -> bool:
        """Delete the lease if it is still this owner's; else mark the element for a re-sync and return True (a
        third write, only then: the delete's own condition tells). A delete that failed raises: whether the lease
        was still this owner's is unknown (the caller's lease stays ``lost``), so the element is marked for a
        re-sync first if the store lets it, for whichever worker syncs it next."""
        try:
            await self._call(
                "delete_item",
                Key=_key(element_id, LEASE),
                ConditionExpression="#owner = :me",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":me": _s(self.owner)},
            )
        except _ConditionFailed:
            log.warning(
                "lease_lost",
                element_id=element_id,
                hint="this worker stalled past state.lease_seconds and another worker took the element over; "
                "the element is marked for a re-sync, which rewrites its channels",
            )
            await self._mark_for_resync_if_possible(element_id)
            return True
        except (StateUnavailable, StateRejected) as error:
            log.warning(
                "lease_release_failed",
                element_id=element_id,
                error=str(error),
                hint="whether another worker took the element over is unknown: it is re-synced",
            )
            await self._mark_for_resync_if_possible(element_id)
            raise
        return False

    async def _mark_for_resync_if_possible(self, element_id: int) -> None:
        try:
            await self._mark_for_resync(element_id)
        except (StateUnavailable, StateRejected) as error:
            # The loss is known all the same: the holder re-syncs the element, forced (``HeldLease.lost``), and until
            # then forces its own next sync of it; failing the release for this would change neither.
            log.warning("resync_mark_failed", element_id=element_id, error=str(error))

    # ---- DynamoDB calls ------------------------------------------------------------------------------------

    async def _query(self, **request: Any) -> list[dict[str, Any]]:
        return await self._paginate("query", ConsistentRead=True, **request)

    async def _paginate(self, operation: str, **request: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        while True:
            page = await self._call(operation, **request, **({"ExclusiveStartKey": start} if start else {}))
            items.extend(page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if not start:
                return items

    async def _call(self, operation: str, **request: Any) -> dict[str, Any]:
        return await self._call_by(CALL_SECONDS, operation, **request)

    async def _call_by(self, seconds: float, operation: str, **request: Any) -> dict[str, Any]:
        """DynamoDB's answer to ``operation``, or ``StateUnavailable`` once it has taken ``seconds``."""
        if self._client is None:
            raise RuntimeError("state store is not open")
        method = getattr(self._client, operation)
        try:
            response: dict[str, Any] = await by_deadline(seconds, method(TableName=self.table, **request))
        except DeadlineMissed:
            raise StateUnavailable(
                f"DynamoDB {operation} on {self.table} did not answer within {seconds:g} s "
                f"(endpoint {self._client.meta.endpoint_url})"
            ) from None
        except ClientError as error:
            raise self._translate(operation, error) from error
        except (BotoCoreError, OSError) as error:
            raise StateUnavailable(f"DynamoDB {operation} on {self.table}: {type(error).__name__}: {error}") from error
        return response

    def _translate(self, operation: str, error: ClientError) -> Exception:
        code, message = _code(error), _message(error)
        if code == "ConditionalCheckFailedException":
            return _ConditionFailed(message)
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        text = f"DynamoDB {operation} on {self.table}: {code or status}: {message}"
        if code in TRANSIENT_CODES or status >= 500:
            return StateUnavailable(text)
        if code in ("AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException"):
            return StateAccessRefused(f"{text} (check the worker's IAM permissions on the table named by state.url)")
        if "KMS" in code or "KMS" in message:
            # The table's key disabled, deleted or no longer granted: the deployment's, for every message alike.
            return StateAccessRefused(f"{text} (check the KMS key of the table named by state.url, and its grants)")
        return StateRejected(text)


# ---- the version ordering -------------------------------------------------------------------------------------


def encode_date(value: datetime) -> str:
    """Fixed-width ISO-8601 UTC with microseconds: string order is time order (naive values count as UTC)."""
    moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}Z"
    )


def decode_date(text: str) -> datetime:
    return datetime.strptime(text, DATE_FORMAT).replace(tzinfo=UTC)


def not_newer_condition(modification_date: datetime | None, version: int | None) -> tuple[str, dict[str, Any]] | None:
    """A condition that holds unless the stored (modification_date, version) is newer than the given one.

    The same ordering as ``is_older``: dates decide when both are known and differ; otherwise versions decide
    when both are known; otherwise neither is older. ``None`` means any stored value may be replaced.
    """
    values: dict[str, Any] = {}
    version_ok: str | None = None
    if version is not None:
        values[":v"] = _n(version)
        version_ok = "(attribute_not_exists(#v) OR #v <= :v)"
    if modification_date is None:
        if version_ok is None:
            return None
        return f"attribute_not_exists(#pk) OR {version_ok}", values
    values[":d"] = _s(encode_date(modification_date))
    same_or_unknown_date = "(attribute_not_exists(#md) OR #md = :d)"
    tie = f"({same_or_unknown_date} AND {version_ok})" if version_ok else same_or_unknown_date
    return f"attribute_not_exists(#pk) OR (attribute_exists(#md) AND #md < :d) OR {tie}", values


# ---- table management (local use and tests; production tables come from Terraform) ---------------------------------


async def create_table(target: Any, table: str, *, region: str | None = None) -> None:
    """Create the state table as Terraform does (``pk``/``sk`` strings, the ``external_id`` and ``publication_id``
    indexes, on demand, TTL on ``expires_at``).

    ``target`` is an aiobotocore DynamoDB client or an endpoint URL (DynamoDB Local, moto server); a table
    that already exists is left as it is.
    """
    if isinstance(target, str):
        region = region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "eu-central-1"
        async with _create_client(region, target) as client:
            await _create_table(client, table)
    else:
        await _create_table(target, table)


async def _create_table(client: Any, table: str) -> None:
    try:
        await client.create_table(
            TableName=table,
            AttributeDefinitions=[
                {"AttributeName": HASH_KEY, "AttributeType": "S"},
                {"AttributeName": RANGE_KEY, "AttributeType": "S"},
                *({"AttributeName": key, "AttributeType": kind} for key, kind in INDEXES.values()),
            ],
            KeySchema=[
                {"AttributeName": HASH_KEY, "KeyType": "HASH"},
                {"AttributeName": RANGE_KEY, "KeyType": "RANGE"},
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": index,
                    "KeySchema": [{"AttributeName": key, "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                }
                for index, (key, _) in INDEXES.items()
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    except ClientError as error:
        if _code(error) != "ResourceInUseException":
            raise
        return
    await client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    with contextlib.suppress(ClientError):  # some emulators do not implement TTL; leases do not rely on it
        await client.update_time_to_live(
            TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
        )


def _create_client(region: str, endpoint_url: str | None, *, max_connections: int = 10) -> Any:
    config = AioConfig(
        # Every in-flight message may hold a lease and write a record at the same time.
        max_pool_connections=max_connections,
        connect_timeout=5,
        read_timeout=10,
        # Standard mode retries throttling and 5xx with back-off; every write here is idempotent on retry.
        retries={"max_attempts": 3, "mode": "standard"},
    )
    return get_session().create_client("dynamodb", region_name=region, endpoint_url=endpoint_url, config=config)


# ---- items ----------------------------------------------------------------------------------------------------


def _pk(element_id: int) -> str:
    return f"element#{element_id}"


def _delivery_sk(channel: str, publication_id: int) -> str:
    return f"{DELIVERY_PREFIX}{channel}#{publication_id}"


def _sweep_key(sweep: str, sk: str) -> dict[str, Any]:
    return {HASH_KEY: _s(f"{SWEEP_PK_PREFIX}{sweep}"), RANGE_KEY: _s(sk)}


def _parked_pk(channel: str) -> str:
    return f"{PARKED_PK_PREFIX}{channel}"


def _parked_sk(element_id: int) -> str:
    if element_id < 0:  # its padded text would sort out of id order
        raise ValueError(f"element ids are positive, not {element_id}")
    return f"{PARKED_SK_PREFIX}{element_id:0{PARKED_ID_DIGITS}d}"


def _parked_key(channel: str, element_id: int) -> dict[str, Any]:
    return {HASH_KEY: _s(_parked_pk(channel)), RANGE_KEY: _s(_parked_sk(element_id))}


def _indexable(external_id: str) -> bool:
    return 0 < len(external_id.encode()) <= MAX_EXTERNAL_KEY_BYTES


def _key(element_id: int, sk: str) -> dict[str, Any]:
    return {HASH_KEY: _s(_pk(element_id)), RANGE_KEY: _s(sk)}


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _str_attribute(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    return None if value is None else str(value["S"])


def _int_attribute(item: dict[str, Any], name: str) -> int | None:
    value = item.get(name)
    return None if value is None else int(value["N"])


def _date_attribute(item: dict[str, Any], name: str) -> datetime | None:
    text = _str_attribute(item, name)
    return None if text is None else decode_date(text)


def _mark(element_id: int, item: dict[str, Any]) -> ElementMark:
    return ElementMark(
        element_id=element_id,
        modification_date=_date_attribute(item, "modification_date"),
        version=_int_attribute(item, "version"),
        deleted=bool(item.get("deleted", {}).get("BOOL", False)),
        fetched_at=float(item["fetched_at"]["N"]) if "fetched_at" in item else None,
        resync=_str_attribute(item, RESYNC),
    )


def _delivery(item: dict[str, Any]) -> Delivery:
    return Delivery(
        element_id=int(item["element_id"]["N"]),
        channel=str(item["channel"]["S"]),
        publication_id=int(item["publication_id"]["N"]),
        external_id=_str_attribute(item, EXTERNAL_KEY) or _str_attribute(item, UNINDEXED_EXTERNAL_ID) or "",
        fingerprint=str(item["fingerprint"]["S"]),
        edit_link=_str_attribute(item, "edit_link"),
        open_link=_str_attribute(item, "open_link"),
        live=bool(item.get("live", {}).get("BOOL", False)),
        edit_link_title=_str_attribute(item, "edit_link_title"),
        open_link_title=_str_attribute(item, "open_link_title"),
        modification_date=_date_attribute(item, "modification_date"),
        version=_int_attribute(item, "version"),
    )


def _attribute_bytes(name: str, value: dict[str, Any]) -> int:
    """What an attribute counts against DynamoDB's item limit: its name and its value in UTF-8."""
    return len(name.encode()) + _value_bytes(value)


def _value_bytes(value: dict[str, Any]) -> int:
    """A value's size in UTF-8 (a number a few bytes more than DynamoDB counts, a boolean one byte)."""
    ((kind, content),) = value.items()
    return 1 if kind == "BOOL" else len(str(content).encode())


def _too_large(delivery: Delivery, item: dict[str, Any], size: int) -> StateRejected:
    largest = max(item, key=lambda name: _value_bytes(item[name]))
    field = EXTERNAL_KEY if largest == UNINDEXED_EXTERNAL_ID else largest
    return StateRejected(
        f"the delivery of element {delivery.element_id} to channel {delivery.channel!r} (publication "
        f"{delivery.publication_id}) is {size:,} bytes, over DynamoDB's 400 KB item limit: its {field} is "
        f"{_value_bytes(item[largest]):,} bytes, as the channel answered; the channel holds the item, which the "
        "bridge cannot record (a redrive makes it again: fix the channel's answer first)"
    )


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _message(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Message", ""))

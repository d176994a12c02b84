"""What the bridge has delivered where: the memory that makes re-deliveries idempotent."""

from bridge.config import StateSettings
from bridge.state.base import Delivery, ElementBusy, ElementMark, StateStore
from bridge.state.dynamodb import POOL_CONNECTIONS, DynamoDbStateStore
from bridge.state.sqlite import SqliteStateStore

__all__ = [
    "Delivery",
    "DynamoDbStateStore",
    "ElementBusy",
    "ElementMark",
    "SqliteStateStore",
    "StateStore",
    "open_state_store",
    "pooled_connections",
]


def pooled_connections(settings: StateSettings) -> int:
    """The most connections the store ``open_state_store`` opens may hold (its file descriptors; SQLite's files are
    the process's own few)."""
    return POOL_CONNECTIONS if settings.backend == "dynamodb" else 0


async def open_state_store(
    settings: StateSettings, *, default_region: str | None = None, read_only: bool = False, check_access: bool = False
) -> StateStore:
    """Open the store ``state.url`` names (validated by the config).

    ``read_only``: for operator commands, which change nothing in the store (DynamoDB's open writes nothing).
    ``check_access``: for the worker, which reads and writes: DynamoDB tries each call it makes once, so that an
    IAM role missing one stops the start naming ``state.url`` (SQLite's open writes anyway).

    ``default_region`` (the queue's region) is the DynamoDB table's region when neither ``state.region`` nor
    ``AWS_DEFAULT_REGION``/``AWS_REGION`` names one.
    """
    store: StateStore
    if settings.backend == "dynamodb":
        store = DynamoDbStateStore.from_settings(settings, default_region=default_region, check_access=check_access)
    else:
        store = SqliteStateStore(
            settings.sqlite_path,
            lease_seconds=settings.lease_seconds,
            lease_wait_seconds=settings.lease_wait_seconds,
            create_directories=settings.create_directories,
            read_only=read_only,
        )
    await store.open()
    return store

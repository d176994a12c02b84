"""What the bridge has delivered where: the memory that makes re-deliveries idempotent."""

from bridge.config import StateSettings
from bridge.state.base import Delivery, ElementBusy, ElementMark, StateStore
from bridge.state.sqlite import SqliteStateStore

__all__ = ["Delivery", "ElementBusy", "ElementMark", "SqliteStateStore", "StateStore", "open_state_store"]


async def open_state_store(settings: StateSettings) -> StateStore:
    """Open the store ``state.url`` names (validated by the config)."""
    store = SqliteStateStore(
        settings.sqlite_path, lease_seconds=settings.lease_seconds, lease_wait_seconds=settings.lease_wait_seconds
    )
    await store.open()
    return store

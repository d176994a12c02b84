"""What the bridge has delivered where: the memory that makes re-deliveries idempotent."""

from bridge.state.base import Delivery, ElementMark, StateStore
from bridge.state.sqlite import SqliteStateStore

__all__ = ["Delivery", "ElementMark", "SqliteStateStore", "StateStore", "open_state_store"]


async def open_state_store(url: str) -> StateStore:
    """Open the store a ``state.url`` names (validated by the config: ``sqlite:///PATH``)."""
    store = SqliteStateStore(url.removeprefix("sqlite:///"))
    await store.open()
    return store

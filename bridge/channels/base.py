"""The one small Protocol every channel adapter implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bridge.kordiam.models import Element, Publication


@dataclass(frozen=True, slots=True)
class ChannelResult:
    """What a channel reports after an upsert; it flows back to Kordiam as feedback."""

    external_id: str
    edit_link: str | None = None
    open_link: str | None = None
    live: bool = False
    edit_link_title: str | None = None
    open_link_title: str | None = None


class Channel(Protocol):
    """A publishing target. Both methods must be idempotent: the bridge may call them again after a crash.

    A channel whose remote item is the whole element rather than one publication (the Global Export protocol)
    sets ``element_scoped = True``: the bridge then hands a publication that has no item of its own the external
    id of one of its siblings on that channel, so every worker, and every restart, finds the same remote item.
    """

    name: str

    async def upsert(self, element: Element, publication: Publication, external_id: str | None) -> ChannelResult:
        """Create the publication in the target (``external_id`` is None) or update the item it names."""
        ...

    async def delete(self, element_id: int, publication_id: int, external_id: str) -> None:
        """Retract the item; an item that is already gone counts as deleted."""
        ...

    async def aclose(self) -> None:
        """Release what the adapter holds (not the shared HTTP client, which the process owns)."""
        ...

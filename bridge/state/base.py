"""The state store interface."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Delivery:
    """One publication as delivered to one channel."""

    element_id: int
    channel: str
    publication_id: int
    external_id: str
    fingerprint: str
    edit_link: str | None = None
    open_link: str | None = None
    live: bool = False
    edit_link_title: str | None = None
    open_link_title: str | None = None
    modification_date: datetime | None = None
    version: int | None = None


@dataclass(frozen=True, slots=True)
class ElementMark:
    """The newest version of an element the bridge has fully synced (or seen deleted)."""

    element_id: int
    modification_date: datetime | None
    version: int | None
    deleted: bool


class StateStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def deliveries(self, element_id: int) -> list[Delivery]: ...

    async def record(self, delivery: Delivery) -> None: ...

    async def forget(self, element_id: int, channel: str, publication_id: int) -> None: ...

    async def element_mark(self, element_id: int) -> ElementMark | None: ...

    async def mark_element(self, mark: ElementMark) -> None: ...

    async def all_deliveries(self) -> list[Delivery]: ...

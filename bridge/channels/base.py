"""The channel contract: the Protocol every adapter implements, what it may raise, and how the registry builds it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel

from bridge.config import ChannelSettings
from bridge.http import HttpClient
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


@dataclass(frozen=True, slots=True)
class ChannelContext:
    """What the process shares with every adapter (the adapter must not close it)."""

    http: HttpClient


class Channel(Protocol):
    """A publishing target. Both methods must be idempotent: the bridge may call them again after a crash.

    Errors. A channel raises only these (``bridge.errors``); anything else is a bug in the adapter, which the
    pipeline treats as transient so the message is not lost::

        BridgeError
        ├── TransientError         the same call may succeed later: the message is retried
        │   └── ChannelUnavailable   unreachable, timed out, 5xx, 408/409/429 (``retry_after`` when the target
        │                            said how long), a full disk, a busy guard
        └── PermanentError         retrying the same input cannot help: the publication is reported failed
            └── ChannelRejected      the target refused the content (4xx, invalid story) or the credentials
                                     (401/403: the message names the setting to fix)

    ``ConfigError`` is raised only by ``create`` (start-up), never by ``upsert`` or ``delete``.

    ``element_scoped``: ``True`` when the channel's remote item is the whole element rather than one publication
    (the Global Export protocol). The bridge then hands a publication that has no item of its own the external id
    of one of its siblings on that channel, so every worker, and every restart, finds the same remote item.
    """

    name: str
    element_scoped: bool

    async def upsert(self, element: Element, publication: Publication, external_id: str | None) -> ChannelResult:
        """Create the publication in the target (``external_id`` is None) or update the item it names.

        Called again with the external id it returned, it updates that item. Whether a create whose answer was
        lost is found again (and not made twice) is the adapter's to say on its class docstring.
        """
        ...

    async def delete(self, element_id: int, publication_id: int, external_id: str) -> None:
        """Retract the item; an item that is already gone counts as deleted."""
        ...

    async def aclose(self) -> None:
        """Release what the adapter holds (not the shared HTTP client, which the process owns)."""
        ...


class ChannelFactory(Protocol):
    """Every adapter module's ``create``: validated options in, a ready channel out.

    It may check the target at start-up (a writable folder) and raise ``ConfigError`` naming its own key.
    """

    def __call__(self, settings: ChannelSettings, options: BaseModel, context: ChannelContext) -> Channel: ...

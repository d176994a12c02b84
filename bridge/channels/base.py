"""The channel contract: the Protocol every adapter implements, what it may raise, and how the registry builds it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pydantic import BaseModel

from bridge.config import ChannelSettings
from bridge.http import HttpClient
from bridge.kordiam.models import Element, Publication
from bridge.valueclass import value_class


@value_class
class ChannelResult:
    """What a channel reports after an upsert; it flows back to Kordiam as feedback."""

    external_id: str
    edit_link: str | None = None
    open_link: str | None = None
    live: bool = False
    edit_link_title: str | None = None
    open_link_title: str | None = None


@dataclass(frozen=True, slots=True)
class FoundItem:
    """An item a channel found in its target by the element's mark: the publication it names, and its id there."""

    publication_id: int
    external_id: str


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
            └── ChannelRejected      the target refused the content (4xx, invalid story) or the account may not
                │                    do this (403); the message names the setting to fix
                └── ChannelCredentialsRefused
                                     the target does not authenticate the bridge (401, a token endpoint's
                                     refusal, an unknown AWS key): the engine parks the element for the channel
                                     instead of failing the message (``bridge.pipeline.parking``)

    ``ConfigError`` is raised only by ``create`` (start-up), never by ``upsert`` or ``delete``.

    ``element_scoped``: ``True`` when the channel's remote item is the whole element rather than one publication
    (the Global Export protocol). The bridge then hands a publication that has no item of its own the external id
    of one of its siblings on that channel, so every worker, and every restart, finds the same remote item.

    A channel whose items carry the element's mark in the target itself may also implement ``FindsItems``, so that
    the item of a create whose answer was lost is retracted when the story is deleted.
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


@runtime_checkable
class FindsItems(Protocol):
    """Optional, beside ``Channel``: the channel finds its items of an element in the target, by the mark each
    carries there (a title or a content marker), without the state store.

    Why: a create whose answer was lost (a timeout after the target made the item) leaves an item the state store
    has no delivery for. An update's retry finds it again by its mark (the adapter's upsert does that), but if the
    story is deleted in Kordiam first, the engine only knows the deliveries it recorded, and the item would stay
    (a scheduled newsletter about a deleted story would go out).

    When: the sync engine calls ``find_items`` only for an element Kordiam answers as deleted (404), once per such
    sync and channel, after the recorded deliveries were retracted; never on a create or an update. It then
    ``delete``s every found item whose external id no delivery of the channel holds, and reports each as deleted.
    An element whose publication merely left the channel is not searched: that would cost a search on every
    update, and the state store does not say which publications were ever tried.

    Contract: one search of the target (it may be bounded, as Mailchimp's 1,000 newest campaigns are), no
    change to it. It returns the items that carry a mark of ``element_id`` and that ``delete`` would still change:
    an item already retracted (trashed, a draft where retracting only unschedules) is left out, and so is one the
    target can no longer retract (a newsletter sent), which the adapter logs as a warning instead.

    Errors: as ``upsert`` and ``delete`` (``ChannelUnavailable``, ``ChannelRejected``). The engine reports either as
    the channel's failure for the message (retried, dead-lettered on the last receive with the reason), and does
    not mark the element deleted, so the search is repeated.

    ``bridge.channels.guard.guarded`` keeps the capability, behind the channel's breaker and limits, exactly when
    the adapter has it.
    """

    async def find_items(self, element_id: int) -> list[FoundItem]:
        """The items in the target that carry a mark of ``element_id`` and that ``delete`` would still change."""
        ...


class ChannelFactory(Protocol):
    """Every adapter module's ``create``: validated options in, a ready channel out.

    It may check the target at start-up (a writable folder) and raise ``ConfigError`` naming its own key.
    """

    def __call__(self, settings: ChannelSettings, options: BaseModel, context: ChannelContext) -> Channel: ...

"""Which publication goes to which channel."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from bridge.channels.base import Channel
from bridge.kordiam.models import Element, Publication


@dataclass(frozen=True, slots=True)
class Route:
    """A configured channel and the Kordiam platforms and publication statuses it takes."""

    channel: Channel
    platforms: frozenset[int]
    statuses: tuple[int | str, ...] | None = None

    @property
    def name(self) -> str:
        return self.channel.name

    @property
    def element_scoped(self) -> bool:
        return self.channel.element_scoped

    def carries(self, publication: Publication) -> bool:
        """The publication is on one of this channel's platforms (whatever its status)."""
        return platform_carries(self.platforms, publication)

    def exports(self, publication: Publication) -> bool:
        """The publication is on this channel's platforms and its status triggers export."""
        return self.carries(publication) and status_exports(self.statuses, publication)


def platform_carries(platforms: Collection[int], publication: Publication) -> bool:
    """The publication is on one of ``platforms`` (a channel's), whatever its status: what ``Route.carries`` asks,
    for a caller that has the channel's settings but no channel."""
    return publication.platform.id in platforms


def status_exports(statuses: Sequence[int | str] | None, publication: Publication) -> bool:
    """The publication's status is one of ``statuses`` (a channel's filter; None: every status): what
    ``Route.exports`` asks beside the platform, for a caller that has the channel's settings but no channel."""
    if statuses is None:
        return True
    status = publication.status
    return status is not None and any(status.matches(selector) for selector in statuses)


def publications_for(route: Route, element: Element) -> list[Publication]:
    return [p for p in element.publications if route.exports(p)]

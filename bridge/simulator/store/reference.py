"""Reference data: platforms, publication statuses, categories and types."""

from __future__ import annotations

import copy
from typing import Final

from bridge.simulator.store.base import JSONObject

DEFAULT_STATUS_ID: Final = 1
PUBLISHED_STATUS_ID: Final = 5

PLATFORMS: Final[tuple[JSONObject, ...]] = (
    {"id": 99003, "name": "Website", "position": 1, "typeCode": "online", "version": 1},
    {"id": 99004, "name": "Print", "position": 2, "typeCode": "print", "version": 1},
    {"id": 99005, "name": "Newsletter", "position": 3, "typeCode": "online", "version": 1},
)

PUBLICATION_STATUSES: Final[tuple[JSONObject, ...]] = (
    {"id": 1, "name": "No Status", "active": True},
    {"id": 2, "name": "Proposal", "active": True},
    {"id": 3, "name": "Accepted", "active": True},
    {"id": 4, "name": "Top story", "active": True},
    {"id": PUBLISHED_STATUS_ID, "name": "Published", "active": True},
)

# Categories and types have no endpoints in the simulator; these seed the lookup used by
# PATCH categoryId/typeId, and admin-created elements add whatever they reference.
DEFAULT_CATEGORIES: Final[dict[int, str]] = {
    90000: "Politics",
    90001: "Business",
    90002: "Sports",
    90003: "Culture",
}
DEFAULT_TYPES: Final[dict[int, str]] = {34: "Article", 35: "Gallery", 36: "Video"}


def platforms() -> list[JSONObject]:
    return copy.deepcopy(list(PLATFORMS))


def publication_statuses() -> list[JSONObject]:
    return copy.deepcopy(list(PUBLICATION_STATUSES))


def has_platform(platform_id: int) -> bool:
    return any(platform["id"] == platform_id for platform in PLATFORMS)


def publication_status_ref(status_id: int) -> JSONObject | None:
    """The embedded ``{id, name}`` form of a publication status, or None if unknown."""
    for status in PUBLICATION_STATUSES:
        if status["id"] == status_id:
            return {"id": status["id"], "name": status["name"]}
    return None


# Kordiam's ids are positive 64-bit integers (bridge.kordiam.models.MAX_ID): the bridge refuses any other.
MAX_ID: Final = 2**63 - 1


def is_id(value: object) -> bool:
    # bool is an int subclass; JSON true must not pass as id 1.
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID


class ReferenceData:
    """Category and type names known to the simulator, for resolving ``categoryId``/``typeId``."""

    def __init__(self) -> None:
        self._categories: dict[int, str] = {}
        self._types: dict[int, str] = {}
        self.reset()

    def reset(self) -> None:
        self._categories = dict(DEFAULT_CATEGORIES)
        self._types = dict(DEFAULT_TYPES)

    def learn(self, publication: JSONObject) -> None:
        """Remember the category/type an admin-supplied publication embeds, so PATCH can set it later."""
        for key, table in (("category", self._categories), ("type", self._types)):
            ref = publication.get(key)
            if isinstance(ref, dict) and is_id(ref.get("id")) and isinstance(ref.get("name"), str):
                table[ref["id"]] = ref["name"]

    def category_ref(self, category_id: int) -> JSONObject | None:
        name = self._categories.get(category_id)
        return None if name is None else {"id": category_id, "name": name}

    def type_ref(self, type_id: int) -> JSONObject | None:
        name = self._types.get(type_id)
        return None if name is None else {"id": type_id, "name": name}

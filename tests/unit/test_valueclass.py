"""``@value_class``: what a frozen dataclass offers besides its runtime guard, for the per-message value objects."""

from __future__ import annotations

import dataclasses

from bridge.state.base import Delivery
from bridge.valueclass import value_class


@value_class
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = dataclasses.field(default=(), compare=False)


@dataclasses.dataclass(frozen=True, slots=True)
class FrozenPoint:
    x: int
    y: int = 0
    tags: tuple[str, ...] = dataclasses.field(default=(), compare=False)


def test_a_value_class_compares_hashes_and_prints_as_a_frozen_dataclass() -> None:
    point, frozen = Point(1, 2, ("a",)), FrozenPoint(1, 2, ("a",))
    assert point == Point(1, 2) and point != Point(2, 2)
    assert hash(point) == hash(frozen) == hash(Point(1, 2))
    assert {point, Point(1, 2)} == {point}
    assert repr(point) == repr(frozen).replace("FrozenPoint", "Point")
    assert dataclasses.replace(point, y=5) == Point(1, 5)
    assert not hasattr(point, "__dict__")  # slotted


def test_the_state_stores_delivery_is_still_a_value() -> None:
    delivery = Delivery(element_id=1, channel="cms", publication_id=2, external_id="x", fingerprint="2:ab")
    same = Delivery(element_id=1, channel="cms", publication_id=2, external_id="x", fingerprint="2:ab")
    assert delivery == same and hash(delivery) == hash(same)
    assert dataclasses.replace(delivery, external_id="y").external_id == "y"

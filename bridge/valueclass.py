"""``@value_class``: a frozen dataclass for the type checker, without the runtime guard's cost, for the value
objects every message makes.

A ``@dataclass(frozen=True, slots=True)`` sets each field in ``__init__`` through ``object.__setattr__``, which
costs about 1,200 instructions a field more than a plain assignment (cachegrind: a five-field ``HttpRequest`` 8.9 k
instructions, 2.8 k unfrozen); a message makes some ten such objects of about 70 fields between them, about 4 % of
what the bridge's own work on it costs (``bench.pipeline``). A ``value_class`` is the same slotted dataclass with the
same equality, hash, ``repr`` and ``dataclasses.replace``; only assigning a field after construction is refused by
``mypy --strict`` (which `make lint` runs) instead of raising ``FrozenInstanceError`` at run time. For classes made
once per message or more; the rest stay ``@dataclass(frozen=True, slots=True)``.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar, dataclass_transform

T = TypeVar("T")


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def value_class(cls: type[T]) -> type[T]:
    # unsafe_hash: the field-wise __hash__ a frozen dataclass gets (an unfrozen one would have none).
    return dataclasses.dataclass(slots=True, unsafe_hash=True)(cls)

"""JSON text for the hot path: orjson, with the standard library's semantics kept where the two differ.

Every message costs the bridge a JSON decode of the element and an encode of each channel's body (3 KB for the
Global Export), plus its log line: orjson does each in a fraction of what ``json`` costs (the body: about a tenth;
measured in the worker, see README "Performance").

- ``encode(value) -> bytes``: compact UTF-8, keys in insertion order, as ``json.dumps(value, separators=(",", ":"),
  ensure_ascii=False)`` writes them. What orjson refuses (an integer beyond 64 bits) is written by ``json``; what
  neither can write raises ``TypeError``. NaN and ±Infinity are written as ``null`` (``json`` would write text
  that is not JSON): none reaches a body, since the Kordiam models refuse non-finite numbers.
- ``decode(data) -> Any``: strict JSON (RFC 8259: no NaN, no Infinity); raises ``ValueError`` (a
  ``json.JSONDecodeError``) when ``data`` is not JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

# Non-str keys are written as text, as json.dumps writes them.
_OPTIONS = orjson.OPT_NON_STR_KEYS


def encode(value: Any, *, default: Callable[[Any], Any] | None = None) -> bytes:
    """``value`` as compact UTF-8 JSON; ``default`` turns what JSON cannot hold into what it can (or raises)."""
    try:
        text = orjson.dumps(value, default=default, option=_OPTIONS)
    except orjson.JSONEncodeError:
        # An integer beyond 64 bits, or a value neither default nor orjson can write: json writes the first and
        # raises TypeError for the second, as it always did here.
        return json.dumps(value, default=default, separators=(",", ":"), ensure_ascii=False).encode()
    return text


def decode(data: bytes | str) -> Any:
    """The JSON value in ``data``; ``ValueError`` (``json.JSONDecodeError``) when it is not strict JSON."""
    return orjson.loads(data)

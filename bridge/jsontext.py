"""JSON text for the hot path: orjson, with the standard library's semantics kept where the two differ.

Every message costs the bridge a JSON decode of the element and an encode of each channel's body (3 KB for the
Global Export), plus its log line: orjson does each in a fraction of what ``json`` costs (the body: about a tenth;
measured in the worker, see README "Performance").

- ``encode(value) -> bytes``: compact UTF-8, keys in insertion order, as ``json.dumps(value, separators=(",", ":"),
  ensure_ascii=False)`` writes them. What orjson refuses (an integer beyond 64 bits) is written by ``json``; what
  neither can write raises ``TypeError``. NaN and ±Infinity are written as ``null`` (``json`` would write text
  that is not JSON): none reaches a body, since the Kordiam models refuse non-finite numbers.
- ``decode(data) -> Any``: strict JSON (RFC 8259: no NaN, no Infinity); raises ``ValueError`` (a
  ``json.JSONDecodeError``) when ``data`` is not JSON. A lone surrogate escape (``"\\ud83d"``: half an emoji, cut by
  an editor's copy and paste or a truncation), which RFC 8259's grammar allows but no UTF-8 can carry, is read as
  U+FFFD (the replacement character): orjson refuses the whole document for it, and a string holding it could
  not be written to any channel, so one such character would otherwise cost a story its sync.
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
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as refused:
        # json reads lone surrogate escapes, which orjson refuses; for anything else it refuses too, the error is
        # orjson's. Only on this rare path, so the hot path stays orjson's.
        try:
            value = json.loads(data, parse_constant=_not_json)
        except (ValueError, RecursionError):  # nesting beyond orjson's limit overflows json's stack
            raise refused from None
        return _without_surrogates(value)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _without_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        # Paired surrogates are already one code point in a str; a lone one becomes U+FFFD.
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_without_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {_without_surrogates(key): _without_surrogates(item) for key, item in value.items()}
    return value

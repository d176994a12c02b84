"""Cursor pagination: opaque cursors over (modification date, id)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from bridge.simulator.errors import FieldError, validation_failed
from bridge.simulator.store.timestamps import format_timestamp, parse_timestamp

_CURSOR_PREFIX: Final = "v1."


@dataclass(frozen=True, order=True)
class CursorKey:
    """Position in the (modificationDate, id) ordering of the element list."""

    modified: datetime
    element_id: int


def encode_cursor(key: CursorKey) -> str:
    raw = json.dumps([format_timestamp(key.modified), key.element_id]).encode()
    # Padding is stripped because Kordiam cursors match ^[A-Za-z0-9._~\-]*$ (no '=').
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> CursorKey:
    invalid = validation_failed([FieldError("query", "cursor", "invalid-cursor", "Cursor is not valid.")])
    if not text.startswith(_CURSOR_PREFIX):
        raise invalid
    encoded = text[len(_CURSOR_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        modified, element_id = json.loads(raw)
        return CursorKey(parse_timestamp(modified), int(element_id))
    except (binascii.Error, ValueError, TypeError):
        raise invalid from None

"""In-memory state of the Kordiam simulator: elements, reference data, tokens, request log and faults.

Everything here is synchronous, plain Python working on JSON-shaped dicts. The app runs it on a single
event loop, so each method call is atomic with respect to other requests and needs no locking.
Methods hand out deep copies so callers can never mutate stored state behind the store's back.
"""

from __future__ import annotations

from bridge.simulator.store.base import Clock, JSONObject, utc_now
from bridge.simulator.store.cursors import decode_cursor, encode_cursor
from bridge.simulator.store.elements import ElementStore
from bridge.simulator.store.faults import FaultInjector, parse_fault
from bridge.simulator.store.reference import has_platform, platforms, publication_statuses
from bridge.simulator.store.requests import RecordedRequest, RequestLog
from bridge.simulator.store.timestamps import parse_query_instant
from bridge.simulator.store.tokens import IssuedTokens, TokenState, TokenStore

__all__ = [
    "Clock",
    "ElementStore",
    "FaultInjector",
    "IssuedTokens",
    "JSONObject",
    "RecordedRequest",
    "RequestLog",
    "TokenState",
    "TokenStore",
    "decode_cursor",
    "encode_cursor",
    "has_platform",
    "parse_fault",
    "parse_query_instant",
    "platforms",
    "publication_statuses",
    "utc_now",
]

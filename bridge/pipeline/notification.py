"""Decode an SQS message into a ``Notification``: which element changed, and how, if the sender said.

Accepted shapes (Kordiam's SQS contract is undocumented, so the decoder takes every shape Kordiam or AWS plumbing
can deliver, and nothing else):

1. ``{"id": 123}`` or ``{"elementId": 123}``, optionally with ``"event": "created" | "updated" | "deleted"``;
   the event may also come as the message attribute ``event``.
2. The full Global Export element body (seed 001): an object with ``id`` and element fields; its
   ``modificationDate`` lets the worker skip a notification older than what it already synced.
3. An SNS envelope: ``{"Type": "Notification", "Message": "<one of these, as a JSON string>"}``.
4. An EventBridge envelope: ``{"detail-type": …, "source": …, "detail": {<one of these>}}``.

Anything else is poison (``PoisonMessage``): it goes to the dead-letter queue on its first receive.

The message attribute ``force = "true"`` (``replay --force``) asks for every channel to be written again even
where the state store says it already holds this version.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from bridge.digits import ascii_digits
from bridge.kordiam import assumptions
from bridge.kordiam.models import MAX_ID, Element
from bridge.valueclass import value_class

MAX_ENVELOPE_DEPTH = 3
# The largest element id the bridge accepts (the state stores' integer, as for ids Kordiam answers): a larger id
# in a notification is poison, not a fault of the worker.
MAX_ELEMENT_ID = MAX_ID
FORCE_ATTRIBUTE = "force"
# The ``source`` of a parked element requeued to carry a channel's trial or probe (``bridge.pipeline.parking``):
# whichever worker takes it and gets the channel to accept the call requeues the channel's parked elements.
CARRIER_SOURCE = "parked-trial"
# Channels (comma-separated; a channel name has no comma) an operator asks to be tried now: set by `parked requeue`
# on the first element it sends for each channel, whose secret may have just been fixed (``bridge.pipeline.parking``).
TRY_NOW_ATTRIBUTE = "try-channels"
# When a requeued element was first parked, per channel (``web=2026-12-06T16:47:23.123456Z,print=…``): parked again,
# it keeps that time, so `parked list` shows how long it has waited, not how long since the last requeue.
PARKED_SINCE_ATTRIBUTE = "parked-since"
# A reason names at most this many of a body's keys, each cut to this many characters.
MAX_KEYS_NAMED = 5
MAX_KEY_CHARS = 40
ELEMENT_FIELDS = frozenset({"title", "slug", "note", "tasks", "publications", "publication", "elementStatus"})


class Event(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


@value_class
class Notification:
    element_id: int
    event: Event | None = None
    modification_date: datetime | None = None
    shape: str = "id"
    # Rewrite every channel whatever the fingerprints say (repairs a channel that lost the item).
    force: bool = False
    # A parked element requeued to carry a channel's trial or probe (``CARRIER_SOURCE``).
    carrier: bool = False
    # Channels to try now if this worker holds them back for refused credentials (``TRY_NOW_ATTRIBUTE``).
    try_now: frozenset[str] = frozenset()
    # A requeued element's first parking time per channel (``PARKED_SINCE_ATTRIBUTE``).
    parked_since: Mapping[str, datetime] = field(default_factory=dict)


class PoisonMessage(Exception):
    """A message the bridge can never process; ``reason`` says why, for the dead-letter attributes, and
    ``element_id`` names the element when the body's id was readable (so `element ID --dlq` finds it)."""

    def __init__(self, reason: str, element_id: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.element_id = element_id


def not_utf8(raw_body: bytes) -> PoisonMessage:
    """A body that is not UTF-8 (JSON is, RFC 8259), naming its first bad byte: read with U+FFFD in its place it
    could pass for a notification of some element, so it is not read at all."""
    try:
        raw_body.decode()
    except UnicodeDecodeError as error:
        bad = raw_body[error.start]
        return PoisonMessage(f"body is not UTF-8: byte 0x{bad:02x} at offset {error.start} ({error.reason})")
    return PoisonMessage("body is not UTF-8")


def decode_notification(body: str, attributes: dict[str, str] | None = None) -> Notification:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, RecursionError) as error:
        raise PoisonMessage(f"body is not JSON: {error}") from None
    return decode_payload(payload, attributes)


def decode_payload(payload: Any, attributes: dict[str, str] | None = None) -> Notification:
    """``decode_notification`` of a body already parsed from JSON (the ingress has parsed it to check it)."""
    notification = _decode(payload, dict(attributes or {}), depth=0)
    if attributes:
        if attributes.get(FORCE_ATTRIBUTE) == "true":
            notification = dataclasses.replace(notification, force=True)
        if attributes.get("source") == CARRIER_SOURCE:
            notification = dataclasses.replace(notification, carrier=True)
        if names := attributes.get(TRY_NOW_ATTRIBUTE):
            notification = dataclasses.replace(notification, try_now=frozenset(filter(None, names.split(","))))
        if since := attributes.get(PARKED_SINCE_ATTRIBUTE):
            notification = dataclasses.replace(notification, parked_since=_parked_since(since))
    return notification


def _decode(payload: Any, attributes: dict[str, str], *, depth: int) -> Notification:
    if not isinstance(payload, dict):
        raise PoisonMessage(f"body is a JSON {json_kind(payload)}, not an object")
    if depth > MAX_ENVELOPE_DEPTH:
        raise PoisonMessage("envelopes nested too deeply")

    if payload.get("Type") == "Notification" and "Message" in payload:
        inner = payload["Message"]
        if not isinstance(inner, str):
            raise PoisonMessage("SNS envelope: Message is not a string")
        try:
            inner_payload = json.loads(inner)
        except json.JSONDecodeError as error:
            raise PoisonMessage(f"SNS envelope: Message is not JSON: {error}") from None
        return _with_shape(_decode(inner_payload, {**_sns_attributes(payload), **attributes}, depth=depth + 1), "sns")

    if isinstance(payload.get("detail"), dict) and ("detail-type" in payload or "source" in payload):
        detail_type = payload.get("detail-type")
        if isinstance(detail_type, str) and "event" not in attributes:
            hinted = next((e.value for e in Event if e.value in detail_type.casefold()), None)
            if hinted:
                attributes = {**attributes, "event": hinted}
        return _with_shape(_decode(payload["detail"], attributes, depth=depth + 1), "eventbridge")

    element_id = _element_id(payload)
    try:
        event = _event(payload, attributes)
        if ELEMENT_FIELDS & payload.keys():
            try:
                element = Element.model_validate(payload)
            except ValidationError as error:
                first = error.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise PoisonMessage(f"element body does not parse at {where}: {first['msg']}") from None
            return Notification(_in_range(element.id, "id"), event, element.modification_date, "element")
    except PoisonMessage as poison:
        poison.element_id = element_id
        raise
    return Notification(element_id, event, None, "id")


def resync_notification(
    element_id: int,
    *,
    source: str,
    event: str = Event.UPDATED.value,
    force: bool = False,
    try_now: Iterable[str] = (),
    parked_since: Mapping[str, datetime] | None = None,
) -> tuple[str, dict[str, str]]:
    """The body and message attributes of a notification the bridge enqueues itself (replay, reconciliation):
    Kordiam's own id shape, so it takes the same path as a notification from Kordiam; ``source`` says who sent it,
    ``force`` asks for every channel to be rewritten, ``try_now`` names channels to try at once if they are held
    back for refused credentials, ``parked_since`` carries a requeued element's first parking time per channel."""
    attributes = {"event": event, "source": source}
    if force:
        attributes[FORCE_ATTRIBUTE] = "true"
    if names := ",".join(sorted(try_now)):
        attributes[TRY_NOW_ATTRIBUTE] = names
    if parked_since:
        attributes[PARKED_SINCE_ATTRIBUTE] = ",".join(
            f"{name}={moment.astimezone(UTC).isoformat(timespec='microseconds')}"
            for name, moment in sorted(parked_since.items())
        )
    return json.dumps({"id": element_id, "event": event}), attributes


def _parked_since(text: str) -> dict[str, datetime]:
    """``PARKED_SINCE_ATTRIBUTE``'s pairs; one that does not read (a hand-made message) is left out: the element
    is then parked as new, nothing worse."""
    found: dict[str, datetime] = {}
    for pair in text.split(","):
        name, _, moment = pair.partition("=")
        try:
            parsed = datetime.fromisoformat(moment)
        except ValueError:
            continue
        if name and parsed.tzinfo is not None:
            found[name] = parsed
    return found


def _element_id(payload: dict[str, Any]) -> int:
    for key in assumptions.NOTIFICATION_ID_KEYS:
        if key in payload:
            value = payload[key]
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return _in_range(value, key)
            if isinstance(value, str) and ascii_digits(digits := value.strip().lstrip("0")):
                # Counted before int(), which refuses more than 4300 digits with a ValueError, no PoisonMessage.
                if len(digits) > len(str(MAX_ELEMENT_ID)):
                    raise PoisonMessage(
                        f"`{key}` {digits[:40]}… is larger than the largest element id ({MAX_ELEMENT_ID})"
                    )
                return _in_range(int(digits), key)
            raise PoisonMessage(f"`{key}` is not a positive element id: {json.dumps(value, default=str)[:40]}")
    raise PoisonMessage(f"no element id (expected `id` or `elementId`; keys: {_some_keys(payload)})")


def json_kind(value: Any) -> str:
    """What a parsed JSON value is, in JSON's own words (``null``, not ``NoneType``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {list: "array", str: "string", int: "number", float: "number"}.get(type(value), type(value).__name__)


def _some_keys(payload: dict[str, Any]) -> str:
    """A few of the body's keys, each cut short, for a reason that stays short whatever the body holds (it travels
    as a dead letter's ``failure.reason`` header, and a broker limits those)."""
    keys = sorted(payload)
    named = [key if len(key) <= MAX_KEY_CHARS else f"{key[:MAX_KEY_CHARS]}…" for key in keys[:MAX_KEYS_NAMED]]
    if len(keys) > MAX_KEYS_NAMED:
        named.append(f"… {len(keys) - MAX_KEYS_NAMED} more")
    return ", ".join(named) or "none"


def _in_range(element_id: int, key: str) -> int:
    if element_id > MAX_ELEMENT_ID:
        raise PoisonMessage(f"`{key}` {element_id} is larger than the largest element id ({MAX_ELEMENT_ID})")
    return element_id


def _event(payload: dict[str, Any], attributes: dict[str, str]) -> Event | None:
    raw = next((payload[k] for k in assumptions.NOTIFICATION_EVENT_KEYS if k in payload), None)
    if raw is None:
        raw = attributes.get("event")
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise PoisonMessage(f"event is not a string: {raw!r}")
    text = raw.strip().casefold()
    for event in Event:
        # Accept "updated", "update", "ELEMENT_UPDATED"…
        if text == event.value or text.endswith(event.value) or text.endswith(event.value[:-1]):
            return event
    raise PoisonMessage(f"unknown event {raw[:40]!r} (expected created, updated or deleted)")


def _sns_attributes(payload: dict[str, Any]) -> dict[str, str]:
    attributes = payload.get("MessageAttributes")
    if not isinstance(attributes, dict):
        return {}
    found = attributes.get("event")
    if isinstance(found, dict) and isinstance(found.get("Value"), str):
        return {"event": found["Value"]}
    return {}


def _with_shape(notification: Notification, envelope: str) -> Notification:
    return Notification(
        notification.element_id,
        notification.event,
        notification.modification_date,
        f"{envelope}/{notification.shape}",
    )

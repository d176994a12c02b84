"""Elements: the in-memory element store behind the API and the admin endpoints."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from bridge.kordiam import assumptions
from bridge.simulator.errors import FieldError, SimulatorProblem, not_found, validation_failed
from bridge.simulator.store.base import Clock, JSONObject, utc_now
from bridge.simulator.store.cursors import CursorKey
from bridge.simulator.store.reference import (
    DEFAULT_STATUS_ID,
    MAX_ID,
    PUBLISHED_STATUS_ID,
    ReferenceData,
    is_id,
    publication_status_ref,
)
from bridge.simulator.store.timestamps import format_timestamp, parse_timestamp

# Fields the server owns: ignored in admin bodies and set by the store itself.
_SERVER_MANAGED: Final = frozenset({"id", "version", "creationTime", "modificationDate"})
_LIST_FIELDS: Final = ("groups", "customFields", "tasks", "publications")

_PUBLICATION_PATCHABLE: Final = frozenset({"statusId", "externalId", "cms", "categoryId", "typeId"})
_PUBLICATION_SCHEDULE_FIELDS: Final = frozenset({"schedule", "published"})
# The publication's `cms` names and the link body's wrapper are the bridge's assumptions (bridge.kordiam.assumptions),
# read at each request: the simulator accepts what the bridge assumes Kordiam takes, and one place changes both.
_LINK_FIELDS: Final = frozenset({"externalId", "link", "systemUrl"})


class _IdSequence:
    def __init__(self, first: int, kind: str) -> None:
        self._next = first
        self._kind = kind

    def take(self) -> int:
        """The next free id; a conflict once an explicit id at the top took the last one (past it, an id would be
        one Kordiam never sends)."""
        value = self._next
        if value > MAX_ID:
            raise SimulatorProblem(409, "conflict", f"No {self._kind} id is left after {MAX_ID}; give ids explicitly.")
        self._next += 1
        return value

    def observe(self, used: int) -> None:
        """Keep generated ids clear of ids the caller chose explicitly."""
        self._next = max(self._next, used + 1)


@dataclass
class _Sequences:
    element: _IdSequence = field(default_factory=lambda: _IdSequence(1001, "element"))
    task: _IdSequence = field(default_factory=lambda: _IdSequence(5001, "task"))
    publication: _IdSequence = field(default_factory=lambda: _IdSequence(7001, "publication"))


@dataclass(frozen=True)
class ElementPage:
    content: list[JSONObject]
    next_key: CursorKey | None


def _body_error(path: str | None, code: str, message: str) -> FieldError:
    return FieldError("body", path, code, message)


class ElementStore:
    """Elements keyed by id, with Kordiam's versioning rules.

    Every change increments ``version`` and moves ``modificationDate`` to the current second. The
    timestamp is clamped to a store-wide high-water mark so it never goes backwards, even when an
    injected clock does; ``version`` disambiguates changes that fall in the same second.
    """

    def __init__(self, clock: Clock = utc_now) -> None:
        self._clock = clock
        self.reference = ReferenceData()
        self._elements: dict[int, JSONObject] = {}
        self._ids = _Sequences()
        self._high_water: datetime | None = None

    def reset(self) -> None:
        self._elements.clear()
        self._ids = _Sequences()
        self._high_water = None
        self.reference.reset()

    # -- reads ---------------------------------------------------------------------------------------

    def get(self, element_id: int) -> JSONObject:
        return copy.deepcopy(self._require(element_id))

    def all(self) -> list[JSONObject]:
        return [copy.deepcopy(element) for _, element in sorted(self._elements.items())]

    def list_page(
        self,
        *,
        modified_from: datetime | None,
        modified_to: datetime | None,
        after: CursorKey | None,
        size: int,
    ) -> ElementPage:
        """One page of elements ordered by (modificationDate, id), both date bounds inclusive.

        Keyset pagination means an element changed while a client pages moves behind the cursor and
        is returned again, which is what a reconciliation sweep wants.
        """
        keyed = sorted(
            ((self._sort_key(element), element) for element in self._elements.values()),
            key=lambda pair: pair[0],
        )
        selected = [
            (key, element)
            for key, element in keyed
            if (modified_from is None or key.modified >= modified_from)
            and (modified_to is None or key.modified <= modified_to)
            and (after is None or key > after)
        ]
        page = selected[:size]
        next_key = page[-1][0] if len(selected) > size else None
        return ElementPage([copy.deepcopy(element) for _, element in page], next_key)

    # -- admin writes ----------------------------------------------------------------------------------

    def create(self, body: object) -> JSONObject:
        requested = body.get("id") if isinstance(body, dict) else None
        if requested is not None and not is_id(requested):
            raise validation_failed([_body_error("id", "invalid-id", "id must be a positive 64-bit int.")])
        if requested is not None and requested in self._elements:
            raise SimulatorProblem(409, "conflict", f"Element {requested} already exists.")
        element = self._normalise(body, owner=requested)
        if requested is None:
            element_id = self._ids.element.take()
        else:
            element_id = requested
            self._ids.element.observe(element_id)
        # id and version first only so the JSON reads naturally; key order carries no meaning.
        element = {"id": element_id, "version": 0, **element}
        stamp = self._touch(element)
        element["creationTime"] = format_timestamp(stamp)
        self._elements[element_id] = element
        return copy.deepcopy(element)

    def replace(self, element_id: int, body: object) -> JSONObject:
        """Full replacement: whatever the body omits is gone afterwards (id and server fields survive)."""
        current = self._require(element_id)
        element = self._normalise(body, owner=element_id)
        return self._store_successor(current, element)

    def merge(self, element_id: int, body: object) -> JSONObject:
        """Shallow merge of top-level keys; a null value removes the key (e.g. ``externalElement``)."""
        current = self._require(element_id)
        if not isinstance(body, dict):
            raise validation_failed([_body_error(None, "invalid-body", "Body must be a JSON object.")])
        merged = {**current, **{key: value for key, value in body.items() if key not in _SERVER_MANAGED}}
        element = self._normalise({key: value for key, value in merged.items() if value is not None}, owner=element_id)
        return self._store_successor(current, element)

    def delete(self, element_id: int) -> None:
        self._require(element_id)
        del self._elements[element_id]

    # -- API writes ------------------------------------------------------------------------------------

    def patch_publication(self, element_id: int, publication_id: int, body: object) -> JSONObject:
        element = self._require(element_id)
        publication = self._require_publication(element, publication_id)
        updates = self._publication_updates(body)
        for key, value in updates.items():
            new_value = _merge_cms(publication.get("cms"), value) if key == "cms" else value
            if new_value is None:
                publication.pop(key, None)
            else:
                publication[key] = new_value
        self._touch(element)
        return copy.deepcopy(element)

    def publish_publication(self, element_id: int, publication_id: int) -> JSONObject:
        element = self._require(element_id)
        publication = self._require_publication(element, publication_id)
        status = publication.get("status")
        already = "published" in publication or (isinstance(status, dict) and status.get("id") == PUBLISHED_STATUS_ID)
        if already:
            raise SimulatorProblem(409, "conflict", f"Publication {publication_id} is already published.")
        # The publish time is the change's own stamp, so `published` and modificationDate agree.
        stamp = self._touch(element)
        publication["status"] = publication_status_ref(PUBLISHED_STATUS_ID)
        publication["published"] = {"date": stamp.strftime("%Y-%m-%d"), "time": stamp.strftime("%H:%M")}
        return copy.deepcopy(element)

    def link_external(self, element_id: int, body: object) -> JSONObject:
        element = self._require(element_id)
        representation = _link_representation(body)
        element["externalElement"] = representation
        self._touch(element)
        return dict(representation)

    def unlink_external(self, element_id: int, body: object) -> JSONObject:
        """Remove the element's external representation; answers the one removed (all null if there was none).
        Unlinking an unlinked element changes nothing and does not touch it."""
        element = self._require(element_id)
        _unlink_body(body)
        removed = element.pop("externalElement", None)
        if removed is not None:
            self._touch(element)
        held = removed if isinstance(removed, dict) else {}
        return {key: held.get(key) for key in ("externalId", "link", "systemUrl")}

    # -- internals -------------------------------------------------------------------------------------

    def _require(self, element_id: int) -> JSONObject:
        element = self._elements.get(element_id)
        if element is None:
            raise not_found(f"Element {element_id} does not exist or is not visible.")
        return element

    @staticmethod
    def _require_publication(element: JSONObject, publication_id: int) -> JSONObject:
        for publication in element.get("publications", []):
            if publication.get("id") == publication_id:
                return publication  # type: ignore[no-any-return]
        raise not_found(f"Publication {publication_id} of element {element['id']} does not exist or is not visible.")

    @staticmethod
    def _sort_key(element: JSONObject) -> CursorKey:
        return CursorKey(parse_timestamp(element["modificationDate"]), element["id"])

    def _next_stamp(self) -> datetime:
        now = self._clock().astimezone(UTC).replace(microsecond=0)
        if self._high_water is not None and now < self._high_water:
            now = self._high_water
        self._high_water = now
        return now

    def _touch(self, element: JSONObject) -> datetime:
        stamp = self._next_stamp()
        element["version"] = int(element.get("version", 0)) + 1
        element["modificationDate"] = format_timestamp(stamp)
        return stamp

    def _store_successor(self, current: JSONObject, element: JSONObject) -> JSONObject:
        element = {"id": current["id"], "version": current["version"], **element}
        element["creationTime"] = current["creationTime"]
        self._touch(element)
        self._elements[element["id"]] = element
        return copy.deepcopy(element)

    def _normalise(self, body: object, *, owner: int | None) -> JSONObject:
        """Validate an admin element body (of element ``owner``, None for a new one) and fill what the server owns
        (child ids, defaults)."""
        if not isinstance(body, dict):
            raise validation_failed([_body_error(None, "invalid-body", "The element must be a JSON object.")])
        element: JSONObject = {k: copy.deepcopy(v) for k, v in body.items() if k not in _SERVER_MANAGED}
        errors: list[FieldError] = []
        for key in _LIST_FIELDS:
            value = element.setdefault(key, [])
            if not isinstance(value, list):
                errors.append(_body_error(key, "type-mismatch", f"'{key}' must be an array."))
        if not errors:
            errors.extend(_child_errors(element["tasks"], "tasks"))
            errors.extend(_child_errors(element["publications"], "publications"))
        if errors:
            raise validation_failed(errors)
        for field_name, kind in (("tasks", "Task"), ("publications", "Publication")):
            self._refuse_taken_ids(element[field_name], field_name, kind, owner)
        for task in element["tasks"]:
            _assign_id(task, self._ids.task)
        for publication in element["publications"]:
            _assign_id(publication, self._ids.publication)
            publication.setdefault("status", publication_status_ref(DEFAULT_STATUS_ID))
            publication.setdefault("assignedTaskIds", [])
            self.reference.learn(publication)
        return element

    def _refuse_taken_ids(self, children: list[JSONObject], field_name: str, kind: str, owner: int | None) -> None:
        """Kordiam's task and publication ids are unique across elements (the bridge looks its deliveries up by
        publication id): an id another element's child holds, or one given twice, is a conflict."""
        taken = {
            child.get("id")
            for element_id, element in self._elements.items()
            if element_id != owner
            for child in element.get(field_name, [])
        }
        seen: set[int] = set()
        for child in children:
            child_id = child.get("id")
            if child_id is None:
                continue
            if child_id in taken or child_id in seen:
                raise SimulatorProblem(409, "conflict", f"{kind} {child_id} already exists.")
            seen.add(child_id)

    def _publication_updates(self, body: object) -> JSONObject:
        """Turn a PATCH body into {response field: new value or None to clear}; strict on purpose.

        Unknown fields are rejected rather than ignored because a silently dropped field is exactly
        the kind of client bug the simulator exists to catch.
        """
        if not isinstance(body, dict):
            raise validation_failed([_body_error(None, "invalid-body", "Body must be a JSON object.")])
        errors: list[FieldError] = []
        updates: JSONObject = {}
        for name, value in body.items():
            if name in _PUBLICATION_SCHEDULE_FIELDS:
                errors.append(
                    _body_error(
                        name,
                        "not-patchable",
                        f"'{name}' cannot be patched; use the schedule or publish endpoint.",
                    )
                )
            elif name not in _PUBLICATION_PATCHABLE:
                errors.append(_body_error(name, "unknown-field", f"Unknown field '{name}'."))
            else:
                self._resolve_publication_field(name, value, updates, errors)
        if errors:
            raise validation_failed(errors)
        status = updates.get("status")
        if isinstance(status, dict) and status.get("id") == PUBLISHED_STATUS_ID:
            raise SimulatorProblem(
                400,
                "business-error",
                "The Published status cannot be set by PATCH; use the publish endpoint.",
            )
        return updates

    def _resolve_publication_field(self, name: str, value: Any, updates: JSONObject, errors: list[FieldError]) -> None:
        if name == "externalId":
            if value is not None and not isinstance(value, str):
                errors.append(_body_error(name, "type-mismatch", "externalId must be a string or null."))
            updates["externalId"] = value
        elif name == "cms":
            errors.extend(_cms_errors(value))
            updates["cms"] = value
        elif name == "statusId":
            _resolve_ref(name, value, publication_status_ref, "status", updates, errors, nullable=False)
        elif name == "categoryId":
            _resolve_ref(name, value, self.reference.category_ref, "category", updates, errors, nullable=True)
        elif name == "typeId":
            _resolve_ref(name, value, self.reference.type_ref, "type", updates, errors, nullable=True)


def _resolve_ref(
    name: str,
    value: Any,
    lookup: Callable[[int], JSONObject | None],
    target: str,
    updates: JSONObject,
    errors: list[FieldError],
    *,
    nullable: bool,
) -> None:
    """Resolve a scalar ``…Id`` write into the embedded ``{id, name}`` object the response shows."""
    if value is None:
        if nullable:
            updates[target] = None
        else:
            errors.append(_body_error(name, "must-not-be-null", f"{name} must not be null."))
        return
    if not is_id(value):
        errors.append(_body_error(name, "type-mismatch", f"{name} must be a positive 64-bit int."))
        return
    ref = lookup(value)
    if ref is None:
        errors.append(_body_error(name, "unknown-id", f"{name} {value} does not exist."))
        return
    updates[target] = ref


def _cms_errors(value: Any) -> list[FieldError]:
    if value is None:
        return []
    if not isinstance(value, dict):
        return [_body_error("cms", "type-mismatch", "cms must be an object or null.")]
    errors: list[FieldError] = []
    cms_keys = set(assumptions.CMS_FIELDS.values())
    for key, item in value.items():
        if key not in cms_keys:
            errors.append(_body_error(f"cms.{key}", "unknown-field", f"Unknown cms field '{key}'."))
        elif item is not None and not isinstance(item, str):
            errors.append(_body_error(f"cms.{key}", "type-mismatch", f"cms.{key} must be a string or null."))
    return errors


def _merge_cms(current: Any, patch: Any) -> JSONObject | None:
    """Presence-aware merge: listed keys change, null clears one key, a null cms clears all."""
    if patch is None:
        return None
    merged: JSONObject = dict(current) if isinstance(current, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged or None


def _link_representation(body: object) -> JSONObject:
    """The representation a link body carries: at the top level, or under ``assumptions.LINK_BODY_WRAPPER``."""
    if not isinstance(body, dict):
        raise validation_failed([_body_error(None, "invalid-body", "Body must be a JSON object.")])
    wrapper = assumptions.LINK_BODY_WRAPPER
    prefix = f"{wrapper}." if wrapper else ""
    if wrapper:
        outside = [_body_error(key, "unknown-field", f"Unknown field '{key}'.") for key in body if key != wrapper]
        inner = body.get(wrapper)
        if not isinstance(inner, dict):
            raise validation_failed(
                [*outside, _body_error(wrapper, "type-mismatch", f"'{wrapper}' must be an object.")]
            )
        if outside:
            raise validation_failed(outside)
        body = inner
    errors = [
        _body_error(prefix + key, "unknown-field", f"Unknown field '{key}'.") for key in body if key not in _LINK_FIELDS
    ]
    for key in _LINK_FIELDS & body.keys():
        if body[key] is not None and not isinstance(body[key], str):
            errors.append(_body_error(prefix + key, "type-mismatch", f"{key} must be a string or null."))
    if not any(isinstance(body.get(key), str) and body[key] for key in ("externalId", "link")):
        errors.append(
            _body_error(None, "external-reference-required", "At least one of externalId or link is required.")
        )
    if errors:
        raise validation_failed(errors)
    return {key: body.get(key) for key in ("externalId", "link", "systemUrl")}


def _unlink_body(body: object) -> None:
    """The unlink body is ``{"systemUrl"?: …}`` (the API's external-system docs): anything else is refused."""
    if not isinstance(body, dict):
        raise validation_failed([_body_error(None, "invalid-body", "Body must be a JSON object.")])
    errors = [_body_error(key, "unknown-field", f"Unknown field '{key}'.") for key in body if key != "systemUrl"]
    if body.get("systemUrl") is not None and not isinstance(body["systemUrl"], str):
        errors.append(_body_error("systemUrl", "type-mismatch", "systemUrl must be a string or null."))
    if errors:
        raise validation_failed(errors)


def _child_errors(children: Iterable[Any], field_name: str) -> list[FieldError]:
    errors: list[FieldError] = []
    for index, child in enumerate(children):
        path = f"{field_name}[{index}]"
        if not isinstance(child, dict):
            errors.append(_body_error(path, "type-mismatch", f"{path} must be an object."))
        elif child.get("id") is not None and not is_id(child["id"]):
            errors.append(_body_error(f"{path}.id", "invalid-id", "id must be a positive 64-bit int."))
    return errors


def _assign_id(entity: JSONObject, sequence: _IdSequence) -> None:
    if entity.get("id") is None:
        entity["id"] = sequence.take()
    else:
        sequence.observe(entity["id"])

"""In-memory state of the Kordiam simulator: elements, reference data, tokens, request log and faults.

Everything here is synchronous, plain Python working on JSON-shaped dicts. The app runs it on a single
event loop, so each method call is atomic with respect to other requests and needs no locking.
Methods hand out deep copies so callers can never mutate stored state behind the store's back.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import random
import re
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import Enum
from typing import Any, Final, Literal

from bridge.simulator.errors import FieldError, SimulatorProblem, not_found, validation_failed

JSONObject = dict[str, Any]
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------------------
# Timestamps
# --------------------------------------------------------------------------------------------------

_TIMESTAMP_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"


def format_timestamp(moment: datetime) -> str:
    """Kordiam's wire format: UTC, seconds resolution, literal ``Z``."""
    return moment.astimezone(UTC).strftime(_TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> datetime:
    return datetime.strptime(text, _TIMESTAMP_FORMAT).replace(tzinfo=UTC)


def parse_query_instant(name: str, text: str, *, end_of_day: bool) -> datetime:
    """Parse a date filter the way Kordiam documents them: ISO 8601 date-time or ``yyyy-MM-dd``.

    Ranges are inclusive, so a bare date used as an upper bound means the end of that day.
    Naive date-times are taken as UTC.
    """
    # An unencoded "+01:00" offset arrives as " 01:00" after query decoding; accept it anyway
    # because that client bug is common and the intent is unambiguous.
    candidate = text.strip().replace(" ", "+")
    try:
        if len(candidate) == len("yyyy-MM-dd"):
            day = date.fromisoformat(candidate)
            return datetime.combine(day, time.max if end_of_day else time.min, tzinfo=UTC)
        moment = datetime.fromisoformat(candidate)
    except ValueError:
        raise SimulatorProblem(
            400,
            "date-format-error",
            f"Query parameter '{name}' must be an ISO 8601 date-time or yyyy-MM-dd, got '{text}'.",
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


# --------------------------------------------------------------------------------------------------
# Reference data
# --------------------------------------------------------------------------------------------------

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


def is_id(value: object) -> bool:
    # bool is an int subclass; JSON true must not pass as id 1.
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


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


# --------------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------------


class TokenState(Enum):
    VALID = "valid"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass
class _AccessToken:
    expires_at: datetime
    revoked: bool = False


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int


class TokenStore:
    """Opaque random bearer tokens with an expiry taken from the injectable clock."""

    def __init__(self, clock: Clock, ttl_seconds: int) -> None:
        self._clock = clock
        self._ttl = timedelta(seconds=ttl_seconds)
        self._access: dict[str, _AccessToken] = {}
        self._refresh: set[str] = set()

    def issue(self) -> IssuedTokens:
        now = self._clock()
        self._prune_expired(now)
        access_token = secrets.token_urlsafe(32)
        refresh_token = secrets.token_urlsafe(32)
        self._access[access_token] = _AccessToken(expires_at=now + self._ttl)
        self._refresh.add(refresh_token)
        return IssuedTokens(access_token, refresh_token, int(self._ttl.total_seconds()))

    def refresh(self, refresh_token: str) -> IssuedTokens | None:
        """Exchange a refresh token; like Kordiam's, each one works only once."""
        if refresh_token not in self._refresh:
            return None
        self._refresh.discard(refresh_token)
        return self.issue()

    def check(self, access_token: str) -> TokenState:
        token = self._access.get(access_token)
        if token is None:
            return TokenState.UNKNOWN
        if token.revoked:
            return TokenState.REVOKED
        if self._clock() >= token.expires_at:
            return TokenState.EXPIRED
        return TokenState.VALID

    def revoke_all(self) -> int:
        for token in self._access.values():
            token.revoked = True
        self._refresh.clear()
        return len(self._access)

    def clear(self) -> None:
        self._access.clear()
        self._refresh.clear()

    def _prune_expired(self, now: datetime) -> None:
        # Revoked tokens are kept so their holders get the specific "token-revoked" answer.
        expired = [key for key, token in self._access.items() if not token.revoked and now >= token.expires_at]
        for key in expired:
            del self._access[key]


# --------------------------------------------------------------------------------------------------
# Request log
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    status: int
    body: Any
    at: str

    def to_json(self) -> JSONObject:
        return {
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "body": self.body,
            "at": self.at,
        }


class RequestLog:
    """API requests as the simulator saw them; bounded so a long-running demo cannot grow without limit."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: deque[RecordedRequest] = deque(maxlen=max_entries)

    def record(self, entry: RecordedRequest) -> None:
        self._entries.append(entry)

    def entries(self) -> list[RecordedRequest]:
        return list(self._entries)

    def clear(self) -> None:
        self._entries.clear()


# --------------------------------------------------------------------------------------------------
# Fault injection
# --------------------------------------------------------------------------------------------------

RetryAfterPlacement = Literal["header", "body", "both"]
_PLACEMENTS: Final[tuple[RetryAfterPlacement, ...]] = ("header", "body", "both")

# Slugs for injected 4xx statuses; 429 and 5xx are handled explicitly.
_FAULT_SLUGS: Final[dict[int, str]] = {
    400: "bad-request",
    401: "unauthorized",
    403: "access-denied",
    404: "resource-not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    415: "unsupported-media-type",
}


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    remaining: int
    retry_after: int | None = None
    retry_after_in: RetryAfterPlacement = "both"
    # The share of matching requests that fail (1.0: every one until `count` is used up).
    probability: float = 1.0

    def matches(self, method: str, path: str) -> bool:
        return self.remaining > 0 and self.method in ("*", method) and self.path.search(path) is not None

    def to_problem(self) -> SimulatorProblem:
        if self.status == 429:
            slug = "too-many-requests"
        elif self.status >= 500:
            slug = "server-error"
        else:
            slug = _FAULT_SLUGS.get(self.status, "bad-request")
        headers: dict[str, str] = {}
        extensions: dict[str, Any] = {}
        if self.retry_after is not None:
            if self.retry_after_in in ("header", "both"):
                headers["Retry-After"] = str(self.retry_after)
            if self.retry_after_in in ("body", "both"):
                extensions["retryAfter"] = self.retry_after
        return SimulatorProblem(self.status, slug, "Injected fault.", headers=headers, extensions=extensions)

    def to_json(self) -> JSONObject:
        return {
            "method": self.method,
            "path": self.path.pattern,
            "status": self.status,
            "count": self.remaining,
            "retry_after": self.retry_after,
            "retry_after_in": self.retry_after_in,
            "probability": self.probability,
        }


def _bounded_int(
    body: JSONObject, name: str, default: int | None, low: int, high: int, errors: list[FieldError]
) -> int | None:
    """Read an optional int field within [low, high]; a problem is appended to ``errors``."""
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return value
    errors.append(FieldError("body", name, "invalid", f"{name} must be an int in {low}..{high}."))
    return None


def _fault_pattern(raw: object, errors: list[FieldError]) -> re.Pattern[str] | None:
    if not isinstance(raw, str):
        errors.append(FieldError("body", "path", "invalid", "path must be a regex string."))
        return None
    try:
        return re.compile(raw)
    except re.error as exc:
        errors.append(FieldError("body", "path", "invalid-regex", f"path is not a valid regex: {exc}"))
        return None


def parse_fault(body: object) -> Fault:
    """Validate an admin fault definition; every problem is reported at once."""
    if not isinstance(body, dict):
        raise validation_failed([FieldError("body", None, "invalid-body", "Body must be a JSON object.")])
    errors: list[FieldError] = []
    method = body.get("method", "*")
    if not isinstance(method, str) or not method:
        errors.append(FieldError("body", "method", "invalid", "method must be an HTTP method or '*'."))
    pattern = _fault_pattern(body.get("path", ".*"), errors)
    status = _bounded_int(body, "status", None, 400, 599, errors)
    if status is None and "status" not in body:
        errors.append(FieldError("body", "status", "required", "status is required."))
    count = _bounded_int(body, "count", 1, 1, 1_000_000, errors)
    retry_after = _bounded_int(body, "retry_after", None, 0, 86_400, errors)
    placement = body.get("retry_after_in", "both")
    if placement not in _PLACEMENTS:
        errors.append(FieldError("body", "retry_after_in", "invalid", "retry_after_in: header, body or both."))
    probability = body.get("probability", 1.0)
    if isinstance(probability, bool) or not isinstance(probability, int | float) or not 0 < probability <= 1:
        errors.append(FieldError("body", "probability", "invalid", "probability must be a number in (0, 1]."))
    if errors or pattern is None or status is None or count is None:
        raise validation_failed(errors)
    return Fault(str(method).upper(), pattern, status, count, retry_after, placement, float(probability))


class FaultInjector:
    """Queue of faults; each matching API request consumes one shot of the first matching fault."""

    def __init__(self, seed: int = 2026) -> None:
        self._faults: list[Fault] = []
        # Seeded, so a probabilistic fault run can be repeated exactly.
        self._random = random.Random(seed)

    def add(self, fault: Fault) -> None:
        self._faults.append(fault)

    def take(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.matches(method, path) and (fault.probability >= 1 or self._random.random() < fault.probability):
                fault.remaining -= 1
                self._faults = [f for f in self._faults if f.remaining > 0]
                return fault
        return None

    def list(self) -> list[Fault]:
        return list(self._faults)

    def clear(self) -> None:
        self._faults.clear()


# --------------------------------------------------------------------------------------------------
# Cursor pagination
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# Elements
# --------------------------------------------------------------------------------------------------

# Fields the server owns: ignored in admin bodies and set by the store itself.
_SERVER_MANAGED: Final = frozenset({"id", "version", "creationTime", "modificationDate"})
_LIST_FIELDS: Final = ("groups", "customFields", "tasks", "publications")

_PUBLICATION_PATCHABLE: Final = frozenset({"statusId", "externalId", "cms", "categoryId", "typeId"})
_PUBLICATION_SCHEDULE_FIELDS: Final = frozenset({"schedule", "published"})
CMS_KEYS: Final = frozenset({"editLink", "openLink", "editLinkTitle", "openLinkTitle"})
_LINK_FIELDS: Final = frozenset({"externalId", "link", "systemUrl"})


class _IdSequence:
    def __init__(self, first: int) -> None:
        self._next = first

    def take(self) -> int:
        value = self._next
        self._next += 1
        return value

    def observe(self, used: int) -> None:
        """Keep generated ids clear of ids the caller chose explicitly."""
        self._next = max(self._next, used + 1)


@dataclass
class _Sequences:
    element: _IdSequence = field(default_factory=lambda: _IdSequence(1001))
    task: _IdSequence = field(default_factory=lambda: _IdSequence(5001))
    publication: _IdSequence = field(default_factory=lambda: _IdSequence(7001))


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
            raise validation_failed([_body_error("id", "invalid-id", "id must be a positive int.")])
        if requested is not None and requested in self._elements:
            raise SimulatorProblem(409, "conflict", f"Element {requested} already exists.")
        element = self._normalise(body)
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
        element = self._normalise(body)
        return self._store_successor(current, element)

    def merge(self, element_id: int, body: object) -> JSONObject:
        """Shallow merge of top-level keys; a null value removes the key (e.g. ``externalElement``)."""
        current = self._require(element_id)
        if not isinstance(body, dict):
            raise validation_failed([_body_error(None, "invalid-body", "Body must be a JSON object.")])
        merged = {**current, **{key: value for key, value in body.items() if key not in _SERVER_MANAGED}}
        element = self._normalise({key: value for key, value in merged.items() if value is not None})
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

    def _normalise(self, body: object) -> JSONObject:
        """Validate an admin element body and fill what the server owns (child ids, defaults)."""
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
        for task in element["tasks"]:
            _assign_id(task, self._ids.task)
        for publication in element["publications"]:
            _assign_id(publication, self._ids.publication)
            publication.setdefault("status", publication_status_ref(DEFAULT_STATUS_ID))
            publication.setdefault("assignedTaskIds", [])
            self.reference.learn(publication)
        return element

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
        errors.append(_body_error(name, "type-mismatch", f"{name} must be a positive int."))
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
    for key, item in value.items():
        if key not in CMS_KEYS:
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
    if not isinstance(body, dict):
        raise validation_failed([_body_error(None, "invalid-body", "Body must be a JSON object.")])
    errors = [_body_error(key, "unknown-field", f"Unknown field '{key}'.") for key in body if key not in _LINK_FIELDS]
    for key in _LINK_FIELDS & body.keys():
        if body[key] is not None and not isinstance(body[key], str):
            errors.append(_body_error(key, "type-mismatch", f"{key} must be a string or null."))
    if not any(isinstance(body.get(key), str) and body[key] for key in ("externalId", "link")):
        errors.append(
            _body_error(None, "external-reference-required", "At least one of externalId or link is required.")
        )
    if errors:
        raise validation_failed(errors)
    return {key: body.get(key) for key in ("externalId", "link", "systemUrl")}


def _child_errors(children: Iterable[Any], field_name: str) -> list[FieldError]:
    errors: list[FieldError] = []
    for index, child in enumerate(children):
        path = f"{field_name}[{index}]"
        if not isinstance(child, dict):
            errors.append(_body_error(path, "type-mismatch", f"{path} must be an object."))
        elif child.get("id") is not None and not is_id(child["id"]):
            errors.append(_body_error(f"{path}.id", "invalid-id", "id must be a positive int."))
    return errors


def _assign_id(entity: JSONObject, sequence: _IdSequence) -> None:
    if entity.get("id") is None:
        entity["id"] = sequence.take()
    else:
        sequence.observe(entity["id"])

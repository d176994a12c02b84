"""Fault injection: scripted error answers for matching requests."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import formatdate
from typing import Any, Final, Literal

from bridge.simulator.errors import FieldError, SimulatorProblem, validation_failed
from bridge.simulator.store.base import JSONObject

RetryAfterPlacement = Literal["header", "body", "both"]
_PLACEMENTS: Final[tuple[RetryAfterPlacement, ...]] = ("header", "body", "both")
# How the Retry-After header says it (RFC 9110 10.2.3 allows both; Kordiam's choice is not documented).
RetryAfterFormat = Literal["seconds", "http-date"]
_FORMATS: Final[tuple[RetryAfterFormat, ...]] = ("seconds", "http-date")

# Slugs for injected 4xx statuses; 429 and 5xx are handled explicitly.
_FAULT_SLUGS: Final[dict[int, str]] = {
    400: "bad-request",
    401: "unauthorized",
    403: "access-denied",
    404: "resource-not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    # Not in Kordiam's catalogue; a 410 stands for an element gone (README, "Assumptions about Kordiam").
    410: "resource-not-found",
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
    # The answer's error type (slug), when not the one its status implies: a 404 `endpoint-not-found`, as a gateway
    # or a Kordiam mid-deployment answers for a path it does not route, where the default is `resource-not-found`.
    slug: str | None = None
    retry_after_format: RetryAfterFormat = "seconds"

    def matches(self, method: str, path: str) -> bool:
        return self.remaining > 0 and self.method in ("*", method) and self.path.search(path) is not None

    def to_problem(self, now: datetime) -> SimulatorProblem:
        """The answer at ``now`` (the simulator's clock, from which an HTTP-date ``Retry-After`` counts)."""
        if self.slug is not None:
            slug = self.slug
        elif self.status == 429:
            slug = "too-many-requests"
        elif self.status >= 500:
            slug = "server-error"
        else:
            slug = _FAULT_SLUGS.get(self.status, "bad-request")
        headers: dict[str, str] = {}
        extensions: dict[str, Any] = {}
        if self.retry_after is not None:
            if self.retry_after_in in ("header", "both"):
                headers["Retry-After"] = (
                    str(self.retry_after)
                    if self.retry_after_format == "seconds"
                    else formatdate(now.timestamp() + self.retry_after, usegmt=True)
                )
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
            "retry_after_format": self.retry_after_format,
            "probability": self.probability,
            "type": self.slug,
        }


_FAULT_KEYS: Final = (
    "method",
    "path",
    "status",
    "count",
    "retry_after",
    "retry_after_in",
    "retry_after_format",
    "probability",
    "type",
)


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
    # Unknown keys are refused, not ignored: a misspelt retry_after would silently leave out the Retry-After.
    errors = [
        FieldError("body", key, "unknown-field", f"Unknown field '{key}'; known: {', '.join(_FAULT_KEYS)}.")
        for key in body
        if key not in _FAULT_KEYS
    ]
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
    elif "retry_after_in" in body and body.get("retry_after") is None:
        errors.append(FieldError("body", "retry_after_in", "invalid", "retry_after_in needs retry_after."))
    retry_after_format = body.get("retry_after_format", "seconds")
    if retry_after_format not in _FORMATS:
        errors.append(FieldError("body", "retry_after_format", "invalid", "retry_after_format: seconds or http-date."))
    elif "retry_after_format" in body and body.get("retry_after") is None:
        errors.append(FieldError("body", "retry_after_format", "invalid", "retry_after_format needs retry_after."))
    probability = body.get("probability", 1.0)
    if isinstance(probability, bool) or not isinstance(probability, int | float) or not 0 < probability <= 1:
        errors.append(FieldError("body", "probability", "invalid", "probability must be a number in (0, 1]."))
    slug = body.get("type")
    if slug is not None and (not isinstance(slug, str) or re.fullmatch(r"[a-z][a-z-]*", slug) is None):
        errors.append(FieldError("body", "type", "invalid", "type must be an error slug such as endpoint-not-found."))
    if errors or pattern is None or status is None or count is None:
        raise validation_failed(errors)
    return Fault(
        str(method).upper(),
        pattern,
        status,
        count,
        retry_after,
        placement,
        float(probability),
        slug,
        retry_after_format,
    )


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

"""Domain errors of the simulator, rendered by the app as RFC 9457 problem+json.

The store raises these instead of building HTTP responses so that it stays plain, testable code;
only ``app.py`` knows how a problem becomes a response.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

ERROR_TYPE_BASE = "https://docs.kordiam.app/docs/errors/"

Scope = Literal["body", "query", "path", "header", "global"]

# Titles follow the error catalogue in the Kordiam docs; unknown slugs fall back to a generic title. `server-error` is
# the simulator's own: the catalogue's 5xx section is not visible (reference 3.3), and the bridge reads no 5xx type.
_TITLES: dict[str, str] = {
    "validation-failed": "Validation failed",
    "bad-request": "Bad request",
    "date-format-error": "Date format error",
    "unsupported-version": "Unsupported version",
    "business-error": "Business rule violated",
    "unauthorized": "Unauthorized",
    "token-revoked": "Token revoked",
    "access-denied": "Access denied",
    "endpoint-not-found": "Endpoint not found",
    "resource-not-found": "Resource not found",
    "method-not-allowed": "Method not allowed",
    "conflict": "Conflict",
    "unsupported-media-type": "Unsupported media type",
    "too-many-requests": "Too many requests",
    "server-error": "Server error",
}


@dataclass(frozen=True)
class FieldError:
    """One item of a validation problem's ``errors`` array."""

    scope: Scope
    path: str | None
    code: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"scope": self.scope, "path": self.path, "code": self.code, "message": self.message}


# eq=False keeps the exception hashable, which logging and traceback machinery rely on.
@dataclass(eq=False)
class SimulatorProblem(Exception):
    """An API error: HTTP status, Kordiam error slug and the optional problem extensions."""

    status: int
    slug: str
    detail: str
    errors: tuple[FieldError, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    extensions: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(f"{self.status} {self.slug}: {self.detail}")

    @property
    def title(self) -> str:
        return _TITLES.get(self.slug, self.slug.replace("-", " ").capitalize())

    def to_json(self, instance: str, trace_id: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": ERROR_TYPE_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
            "traceId": trace_id,
        }
        if self.errors:
            body["errors"] = [error.to_json() for error in self.errors]
        body.update(self.extensions)
        return body


def not_found(detail: str) -> SimulatorProblem:
    return SimulatorProblem(404, "resource-not-found", detail)


def validation_failed(errors: Iterable[FieldError], detail: str = "Request validation failed.") -> SimulatorProblem:
    return SimulatorProblem(400, "validation-failed", detail, errors=tuple(errors))


def bad_request(detail: str) -> SimulatorProblem:
    return SimulatorProblem(400, "bad-request", detail)


def unauthorized(detail: str, slug: str = "unauthorized") -> SimulatorProblem:
    # The WWW-Authenticate header tells generic HTTP clients which scheme to retry with.
    return SimulatorProblem(401, slug, detail, headers={"WWW-Authenticate": "Bearer"})

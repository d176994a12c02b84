"""The bridge's error taxonomy: every failure is either worth retrying later or not.

The queue layer turns a ``TransientError`` into "retry later" (a visibility back-off) and a ``PermanentError``
into a dead letter with its reason; nothing else decides a message's fate.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base class for errors the bridge raises on purpose."""


class ConfigError(BridgeError):
    """A configuration value is missing or wrong; ``key`` names it as the user wrote it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class TransientError(BridgeError):
    """The call may succeed later: timeouts, connection errors, 5xx, 409, 429."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(BridgeError):
    """Retrying the same input cannot help: validation errors, most 4xx, unknown shapes."""


class KordiamUnavailable(TransientError):
    """Kordiam did not answer usefully within the retry budget."""


class KordiamRejected(PermanentError):
    """Kordiam answered with a 4xx that retrying cannot fix."""

    def __init__(self, message: str, *, status: int, problem_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.problem_type = problem_type


class KordiamAuthFailed(KordiamRejected):
    """The client credentials were refused (401 even with a fresh token, or 403)."""


class KordiamCredentialsRefused(KordiamAuthFailed):
    """Kordiam refused the worker's own credentials: the token endpoint said no, or a fresh token got 401.

    A fault of the whole worker, never of the message that met it: the worker stops taking messages until a
    token works again (``bridge.pipeline.credentials``). A 403 stays a ``KordiamAuthFailed`` of one request.
    """


class UnexpectedResponse(PermanentError):
    """An answer whose shape the bridge does not understand (not JSON, missing fields, wrong types)."""


class ChannelUnavailable(TransientError):
    """A channel's target system is down, slow or throttling."""


class ChannelRejected(PermanentError):
    """A channel's target system refused the content or the credentials."""

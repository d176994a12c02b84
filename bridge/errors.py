"""The bridge's error taxonomy: every failure is either worth retrying later or not.

    BridgeError                       raised on purpose by the bridge
    ├── ConfigError                   a setting is missing or wrong (start-up, exit code 2; never a message's)
    │   └── QueueUnreachable          no answer from SQS or the broker: wrong, or down (``status`` reports it)
    ├── TransientError                may succeed later; ``retry_after`` is the earliest retry the far end asked for
    │   ├── KordiamUnavailable
    │   │   └── KordiamRedirected     its address answers a redirect, not followed: the setting to fix
    │   ├── ChannelUnavailable
    │   │   └── ChannelCircuitOpen    its breaker fails calls fast: parked, not retried (bridge.pipeline.parking)
    │   ├── ElementBusy               (bridge.state) another worker holds the element's lease
    │   ├── StaleWrite                (bridge.pipeline.sync) a newer version was recorded meanwhile
    │   └── StateUnavailable          (bridge.state.base) when the probe fails too: a pause, not the message's
    │       └── StateAccessRefused    (bridge.state.dynamodb) the worker's own role: refused at start, a pause later
    ├── PermanentError                retrying the same input cannot help
    │   ├── KordiamRejected
    │   │   └── KordiamAuthFailed
    │   │       └── KordiamCredentialsRefused   the worker's own credentials: a pause, not the message's fault
    │   ├── UnexpectedResponse
    │   ├── ChannelRejected
    │   │   └── ChannelCredentialsRefused   the bridge's own credentials for a channel: parked, not the message's
    │   └── StateRejected             (bridge.state.dynamodb) DynamoDB refused the request itself (validation)
    ├── SyncFailed                    (bridge.pipeline.sync) carries one (stage, error) per failed stage
    └── AdminError                    (bridge.queue.QueueAdmin) an operator command could not do its job (never a
                                      message's)

``bridge.pipeline.fate`` alone turns a failure into a message's outcome: a ``PermanentError`` is dead-lettered
with its reason, anything else (a ``TransientError``, or an error nobody classified) is retried later; a sync that
failed in several stages is retried if any of them may heal. A body no decoder accepts (``PoisonMessage``) is
dead-lettered at once. The queue layer only carries the outcome out, spends the retry budget and retries a
handler that raised instead of answering.
"""

from __future__ import annotations

import errno
import os
import socket


def shown(name: object) -> str:
    """``name`` (a file, a key, a variable or an argument the user gave) as a one-line error quotes it: as it is, or,
    when it holds a line break or another character that is not printable, in ``repr``'s quotes and escapes
    (``'bridge\\x1b[31m.toml'``): raw, it would break the line in two, or reach the terminal as an escape sequence."""
    text = str(name)
    return text if text.isprintable() else repr(text)


class BridgeError(Exception):
    """Base class for errors the bridge raises on purpose."""


class ConfigError(BridgeError):
    """A configuration value is missing or wrong; ``key`` names it as the user wrote it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{shown(key)}: {problem}")
        self.key = key
        self.problem = problem

    @classmethod
    def cannot_listen(cls, error: OSError, host: str, port: int, *, port_key: str, host_key: str) -> ConfigError:
        """A server that could not bind: the port's setting when it is taken, else the host's."""
        key = port_key if error.errno == errno.EADDRINUSE else host_key
        if isinstance(error, socket.gaierror):  # its errno is the resolver's (-2), which os.strerror does not know
            reason = f"cannot resolve {host}: {error.strerror or error}".lower()
        else:
            reason = os.strerror(error.errno).lower() if error.errno else str(error)
        return cls(key, f"cannot listen on {host}:{port}: {reason}")


class QueueUnreachable(ConfigError):
    """The queue's endpoint or broker did not answer at all. At a start it cannot be told from a wrong address, so
    it stops the start as any setting would; ``status`` reports it as a problem beside what else it can see."""


class TransientError(BridgeError):
    """The call may succeed later: timeouts, connection errors, 5xx, 409, 429."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(BridgeError):
    """Retrying the same input cannot help: validation errors, most 4xx, unknown shapes."""


class KordiamUnavailable(TransientError):
    """Kordiam did not answer usefully within the retry budget."""


class KordiamRedirected(KordiamUnavailable):
    """Kordiam's address answered a redirect, which the bridge does not follow (the request's bearer token or client
    secret would go with it to wherever it points): the API moved, or ``kordiam.base_url`` names the wrong address.
    A fault of the worker's setting, not of the message that met it: at start-up a configuration error, later an
    outage the probe confirms (``bridge.pipeline.kordiam_outage``)."""


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


class ChannelCircuitOpen(ChannelUnavailable):
    """A channel's circuit breaker is open (``bridge.channels.guard``): the call never reached the target, which
    failed ``breaker_threshold`` calls in a row. The channel is down for every message alike, so the sync engine
    parks the element for it instead of spending the message's retries, and requeues it once a call to the
    channel succeeds again (``bridge.pipeline.parking``). ``probing``: the breaker's one probe call is in flight,
    so its outcome, not ``retry_after``, says when the channel may be tried again."""

    def __init__(self, message: str, *, retry_after: float | None = None, probing: bool = False) -> None:
        super().__init__(message, retry_after=retry_after)
        self.probing = probing


class ChannelRejected(PermanentError):
    """A channel's target system refused the content or the credentials."""


class ChannelCredentialsRefused(ChannelRejected):
    """A channel's target refused to authenticate the bridge (HTTP 401, a token endpoint saying no, an unknown AWS
    key): the bridge's own secret is wrong or revoked, for every message alike. The sync engine parks the element
    for that channel instead of failing the message (``bridge.pipeline.parking``). A 403 is not this: the account
    is known, but may not do this one thing, which can be one item's matter."""


class AdminError(BridgeError):
    """An operator command could not do its job (queue missing, endpoint unreachable, access denied)."""

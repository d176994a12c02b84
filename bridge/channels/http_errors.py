"""HTTP answers to the bridge's errors, for every channel that speaks HTTP (one mapping, one home).

No answer (timeout, connection refused or reset, DNS) → ``ChannelUnavailable``. An answer: 408, 409, 425, 429
and 5xx → ``ChannelUnavailable`` with the server's ``Retry-After``; 401 → ``ChannelCredentialsRefused`` and 403 →
``ChannelRejected``, both telling the operator which setting to check; a 3xx (the bridge does not follow
redirects) → ``ChannelRejected`` with where it pointed; any other 4xx → ``ChannelRejected`` with the server's own
message. A body that should be JSON and is not → ``ChannelRejected``.
"""

from __future__ import annotations

from typing import Any

from bridge.errors import BridgeError, ChannelCredentialsRefused, ChannelRejected, ChannelUnavailable
from bridge.http import HttpResponse, retry_after_seconds


def unreachable(label: str, action: str, url: str, error: BaseException) -> ChannelUnavailable:
    """The bridge's error for a request that got no answer (every channel that speaks HTTP)."""
    reason = str(error) or type(error).__name__
    return ChannelUnavailable(f"{label}: {action}: {url} unreachable: {reason}")


def http_error(
    response: HttpResponse,
    label: str,
    action: str,
    *,
    refused: str,
    redirect: str = "set url to the address the target uses",
    said: str | None = None,
) -> BridgeError:
    """The bridge's error for a failed answer (every channel that speaks HTTP).

    Transient statuses become ``ChannelUnavailable`` with the server's ``Retry-After``; the rest
    ``ChannelRejected`` (a 401 as ``ChannelCredentialsRefused``). ``refused`` tells the operator what to check on a
    401/403, ``redirect`` on a 3xx; ``said`` is what the server said (default: ``server_message``).
    """
    status = response.status_code
    prefix = f"{label}: {action}: HTTP {status}"
    said = server_message(response) if said is None else said
    if status in (408, 409, 425, 429) or status >= 500:
        return ChannelUnavailable(f"{prefix} {said}", retry_after=retry_after_seconds(response.headers))
    if status == 401:
        return ChannelCredentialsRefused(f"{prefix} {said} — {refused}")
    if status == 403:
        return ChannelRejected(f"{prefix} {said} — {refused}")
    if 300 <= status < 400:
        location = response.headers.get("location", "?")
        return ChannelRejected(f"{prefix}: redirected to {location}; {redirect}")
    return ChannelRejected(f"{prefix} {said}")


def server_message(response: HttpResponse) -> str:
    """What the server said: a JSON ``message``/``error``/``detail``/``title``, else the start of the text."""
    said = _json_message(response)
    if said:
        return said
    text = " ".join(response.text.split())[:200]
    return text or response.reason_phrase or "no details"


def _json_message(response: HttpResponse) -> str | None:
    """A JSON body's ``code``/``error``/``message``/``detail``/``title``/``error_description``, joined."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    parts: list[str] = []
    for key in ("code", "error", "message", "detail", "title", "error_description"):
        value = body.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            text = str(value).strip()
            if text not in parts:
                parts.append(text)
    return ": ".join(parts)[:500] if parts else None


def said_instead(response: HttpResponse) -> str:
    """``"; it answered: …"`` with what a success answer without the expected fields said, if it said anything:
    a CMS that reports a refusal in a 200 (``{"success": false, "message": …}``) names its reason there."""
    said = _json_message(response)
    return f"; it answered: {said}" if said else ""


def response_json(response: HttpResponse, label: str, action: str) -> Any:
    if not response.content.strip():
        return None
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("content-type", "no content type")
        start = " ".join(response.text.split())[:80]
        raise ChannelRejected(
            f"{label}: {action}: HTTP {response.status_code} with something that is not JSON ({kind}: {start!r})"
        ) from None

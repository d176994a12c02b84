"""HTTP answers to the bridge's errors, for every channel that speaks HTTP (one mapping, one home).

No answer (timeout, connection refused or reset, DNS) → ``ChannelUnavailable``. An answer: 408, 409, 425, 429
and 5xx → ``ChannelUnavailable`` with the server's ``Retry-After``; 401 → ``ChannelCredentialsRefused`` and 403 →
``ChannelRejected``, both telling the operator which setting to check; a 3xx (the bridge does not follow
redirects) → ``ChannelRejected`` with where it pointed; any other 4xx → ``ChannelRejected`` with the server's own
message. A body that should be JSON and is not → ``ChannelRejected``.

"Gone" (``item_gone``): a 404 counts as the receiver saying its item does not exist only when the receiver's own
application wrote it; anything else in front of it (a proxy, a web server, a router without the route) answers 404
too, and taking that for "gone" would forget an item that stays online. See ``item_gone``.
"""

from __future__ import annotations

import re
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
    said = server_message(response) if said is None else response.redact(said)
    if status in (408, 409, 425, 429) or status >= 500:
        return ChannelUnavailable(f"{prefix} {said}", retry_after=retry_after_seconds(response.headers))
    if status == 401:
        return ChannelCredentialsRefused(f"{prefix} {said} — {refused}")
    if status == 403:
        return ChannelRejected(f"{prefix} {said} — {refused}")
    if 300 <= status < 400:
        location = response.redact(response.headers.get("location", "?"))
        return ChannelRejected(f"{prefix}: redirected to {location}; {redirect}")
    return ChannelRejected(f"{prefix} {said}")


def server_message(response: HttpResponse) -> str:
    """What the server said: a JSON ``message``/``error``/``detail``/``title``, else the start of the text; without
    the request's credentials (``HttpResponse.redact``, before the text is cut: a cut secret would not be found)."""
    said = _json_message(response)
    if said:
        return said
    text = " ".join(response.redact(response.text).split())[:200]
    return text or response.reason_phrase or "no details"


def _json_message(response: HttpResponse) -> str | None:
    """A JSON body's ``code``/``error``/``message``/``detail``/``title``/``error_description``, joined, without
    the request's credentials."""
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
            text = response.redact(str(value).strip())
            if text not in parts:
                parts.append(text)
    return ": ".join(parts)[:500] if parts else None


def said_instead(response: HttpResponse) -> str:
    """``"; it answered: …"`` with what a success answer without the expected fields said, if it said anything:
    a CMS that reports a refusal in a 200 (``{"success": false, "message": …}``) names its reason there."""
    said = _json_message(response)
    return f"; it answered: {said}" if said else ""


def response_json(response: HttpResponse, label: str, action: str, *, quote: bool = True) -> Any:
    """The answer's JSON (None for an empty one); ``ChannelRejected`` quoting its first bytes when it is not JSON.
    ``quote=False`` for a token endpoint's success answer: its first bytes may be the token (a form-encoded
    ``access_token=…``), and the error reaches the log and the dead letter."""
    if not response.content.strip():
        return None
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("content-type", "no content type")
        if quote:
            start = " ".join(response.redact(response.text).split())[:80]
            shown = f"{kind}: {start!r}"
        else:
            shown = f"{kind}, {len(response.content)} bytes, not quoted"
        raise ChannelRejected(
            f"{label}: {action}: HTTP {response.status_code} with something that is not JSON ({shown})"
        ) from None


# The answer of a router that has no such route, whatever the item: WordPress (the connector plugin deactivated,
# or ``url`` wrong under /wp-json/), Kordiam's API, and the usual wording of web frameworks' defaults.
_NO_ROUTE = re.compile(
    r"rest_no_route|endpoint-not-found|\bno route\b|\broute\b.*\bnot found\b|\bno handler\b|\bno static resource\b",
    re.IGNORECASE,
)
_SAYING_KEYS = ("type", "code", "error", "message", "detail", "title", "error_description")
_BARE_NOT_FOUND = frozenset({"not found", "404", "404 not found", "not_found", "notfound", "resource not found"})


def item_gone(response: HttpResponse, *, bare_404_is_gone: bool = False) -> bool:
    """Whether a 404/410 to a request on one item says that item does not exist (so "already deleted" is true).

    Neither protocol (seeds 001 and 002) documents a "not found" answer, so the evidence is the answer itself:
    410 Gone; or a 404 whose body is a JSON object (the receiver's application answered, not a proxy's page or an
    empty answer) that says more than "Not Found" (a framework's default for a path it does not route) and does
    not say that no route matched (``rest_no_route``, ``endpoint-not-found``, "No route …"). Any other 404 is a
    failed call (``not_gone_error``): the receiver may never have seen it. ``bare_404_is_gone`` (the channel's
    setting, for a receiver whose own answer for a missing item is a bare 404): any 404 that does not say that no
    route matched.
    """
    if response.status_code == 410:
        return True
    if response.status_code != 404:
        return False
    try:
        body = response.json()
    except ValueError:
        return bare_404_is_gone
    if not isinstance(body, dict):
        return bare_404_is_gone
    # What it says, not where or when (a framework's default names the path and a timestamp beside "Not Found").
    said = (body.get(key) for key in _SAYING_KEYS)
    words = [value.strip() for value in said if isinstance(value, str) and value.strip()]
    if any(_NO_ROUTE.search(word) for word in words):
        return False
    return bare_404_is_gone or any(word.casefold().rstrip(".!") not in _BARE_NOT_FOUND for word in words)


def answered_gone(response: HttpResponse, label: str, action: str, *, bare_404_is_gone: bool = False) -> bool:
    """Whether a call on one item was answered that the item is gone (``item_gone``); False for any answer but a
    404 or 410. A 404 that is not the receiver's word raises ``not_gone_error``: taken for "gone", a delete would
    forget an item that stays online, and an update would create a second one."""
    if response.status_code not in (404, 410):
        return False
    if item_gone(response, bare_404_is_gone=bare_404_is_gone):
        return True
    raise not_gone_error(response, label, action)


def not_gone_error(response: HttpResponse, label: str, action: str) -> ChannelUnavailable:
    """The error for a 404 that is not the receiver's word on the item (``item_gone``): retried, as the call may
    not have reached the receiver; if it never does, the message's normal failure path names it."""
    said = server_message(response)
    return ChannelUnavailable(
        f"{label}: {action}: HTTP {response.status_code} {said} — not the receiver saying the item is gone "
        "(a proxy's or web server's page, an empty answer, or no such route): check url, and that the receiver "
        "serves it; if this is how the receiver says it no longer has the item, set bare_404_is_gone = true on "
        "the channel"
    )

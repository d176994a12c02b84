"""Kordiam REST API v2 client: OAuth2 client credentials, element reads, feedback writes.

Retries are bounded in attempts and total time (``RetryPolicy``); when the budget runs out the client raises
``KordiamUnavailable`` carrying the server's ``Retry-After``, and the message is retried through the queue.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

import structlog
from pydantic import SecretStr, ValidationError
from yarl import URL

from bridge import redaction
from bridge.errors import (
    BridgeError,
    KordiamAuthFailed,
    KordiamCredentialsRefused,
    KordiamRedirected,
    KordiamRejected,
    KordiamUnavailable,
    UnexpectedResponse,
)
from bridge.http import (
    HttpAnswerTooLarge,
    HttpClient,
    HttpResponse,
    HttpTransportError,
    http_date,
    retry_after_seconds,
)
from bridge.kordiam import assumptions
from bridge.kordiam.models import MAX_ID, CmsLinks, Element, ProblemDetails, Token
from bridge.ops import metrics
from bridge.retry import RetryPolicy

log = structlog.get_logger("bridge.kordiam")

API = "/api/v2"
# Refresh the token this long before Kordiam says it expires, so no request carries a token about to lapse.
TOKEN_EARLY_REFRESH_SECONDS = 60.0
M = TypeVar("M", Element, Token)
# What says a resource is gone, when Kordiam's own error object says it (``_not_found``): 404 as documented, 410 as
# HTTP means it.
GONE_STATUSES = frozenset({404, 410})
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# The probe asks once: it tells whether Kordiam answers now, not whether it will after a while.
ONE_ATTEMPT = RetryPolicy(attempts=1)
# How an OAuth 2 token endpoint refuses client credentials (RFC 6749 5.2: invalid_client is 400 or 401).
OAUTH_REFUSALS = frozenset({400, 401, 403})
# A path of these characters needs no quoting: its URL is the API's, parsed once, with the path appended.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/_-]*")


@dataclass(frozen=True, slots=True)
class UnreadableElement:
    """An element of the modified list that does not parse: only its id is known."""

    id: int


class KordiamClient:
    """One per process, on the process's shared ``HttpClient``."""

    def __init__(
        self,
        http: HttpClient,
        *,
        base_url: str,
        client_id: str,
        client_secret: SecretStr,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._api = URL(f"{self._base}{API}")
        self._client_id = client_id
        self._client_secret = client_secret
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._token_lock = asyncio.Lock()
        # The token fetches that failed so far, and the last one's error: a request that waited for the lock while a
        # fetch failed takes that answer as its own, instead of running a retry budget of its own after it (one
        # budget after another, for every request waiting at an expired token).
        self._token_failures = 0
        self._token_failure: BridgeError | None = None

    # ---- reads -------------------------------------------------------------------------------------------

    async def get_element(self, element_id: int) -> Element | None:
        """The element, or ``None`` when Kordiam says it does not exist or is not visible (a 404 or 410 of its own),
        or answers it with its ``deleted`` flag set. ``UnexpectedResponse`` for an answer about another element."""
        response = await self._request("GET", f"/elements/{element_id}", allow_not_found=True)
        if response is None:
            return None
        body = _json(response)
        element = self._parse(Element, response, body)
        if element.id != element_id:  # a proxy's or cache's mix-up: delivered, it would publish another story
            raise UnexpectedResponse(
                f"GET {response.request.url.path}: answered element {element.id}, not {element_id}"
            )
        # Kordiam's element "deleted" flag (seed 002 lists it among the export triggers): retracted, never published.
        return None if body.get("deleted") in (True, "true") else element

    async def iter_modified_elements(
        self,
        since: datetime,
        *,
        until: datetime | None = None,
        page_size: int = 100,
        on_kordiam_clock: Callable[[datetime], None] | None = None,
    ) -> AsyncIterator[Element | UnreadableElement]:
        """Every element modified at or after ``since``, and at or before ``until`` when given (both bounds
        inclusive, to the second, as Kordiam documents them), by cursor pagination (the API's list is cursor-only);
        one the bridge cannot read as an ``UnreadableElement`` when it names its id. ``UnexpectedResponse`` when a page
        names a cursor already followed (the sweep would loop for ever), or says there is more without a cursor to
        it (the sweep would count the unread pages as swept). ``on_kordiam_clock`` is called with the first page's
        ``Date`` (Kordiam's clock as the list began), when it has one that parses."""
        cursor: str | None = None
        followed: set[str] = set()
        while True:
            params = {"modificationDateFrom": _query_date(since), "size": page_size}
            if until is not None:
                params["modificationDateTo"] = _query_date(until)
            if cursor:
                params["cursor"] = cursor
            response = await self._request("GET", "/elements?" + urlencode(params))
            assert response is not None
            listed_at = http_date(response.headers.get("date")) if cursor is None else None
            if on_kordiam_clock is not None and listed_at is not None:
                on_kordiam_clock(listed_at)
            body = _json(response)
            content = body.get("content")
            if not isinstance(content, list):
                raise UnexpectedResponse("GET /elements: expected a list envelope with `content`")
            for item in content:
                try:
                    yield Element.model_validate(item)
                except ValidationError as error:
                    # One odd element must not stop the sweep. Its notification may be the lost one the sweep is
                    # for, so the caller gets its id to enqueue: the worker's fetch then dead-letters it with the
                    # reason. An item that is not even an object (null, a string) has no id to name.
                    element_id = item.get("id") if isinstance(item, dict) else None
                    log.warning("reconcile_unparsable_element", element_id=element_id, error=str(error)[:300])
                    if isinstance(element_id, int) and not isinstance(element_id, bool) and 0 < element_id <= MAX_ID:
                        yield UnreadableElement(element_id)
            if not body.get("hasMore"):
                return
            cursor = body.get("nextCursor")
            if not cursor:  # ending here would pass the pages never read off as swept
                raise UnexpectedResponse("GET /elements: hasMore but no nextCursor; the rest cannot be read")
            if not isinstance(cursor, str) or cursor in followed:
                raise UnexpectedResponse(
                    f"GET /elements: nextCursor {cursor!r} again, or not a cursor; the list ends here"
                )
            followed.add(cursor)

    # ---- feedback writes ----------------------------------------------------------------------------------

    async def update_publication(
        self,
        element_id: int,
        publication_id: int,
        *,
        external_id: str | None = None,
        cms: CmsLinks | None = None,
    ) -> None:
        """PATCH the publication's ``externalId`` and ``cms`` links (presence-aware: omitted = unchanged)."""
        body: dict[str, Any] = {}
        if external_id is not None:
            body["externalId"] = external_id
        if cms is not None:
            body["cms"] = {
                wire: getattr(cms, ours)
                for ours, wire in assumptions.CMS_FIELDS.items()
                if getattr(cms, ours) is not None
            }
        if body:
            await self._request("PATCH", f"/elements/{element_id}/publications/{publication_id}", json=body)

    async def clear_publication(
        self, element_id: int, publication_id: int, *, external_id: bool = False, cms: Collection[str] = ()
    ) -> None:
        """Clear the publication's ``externalId`` (if ``external_id``) and the named ``cms`` links (our field names,
        ``edit_link``, …) with a presence-aware PATCH: ``null`` clears a field (the API's write semantics), an
        omitted one is left. A publication Kordiam no longer has (404) holds nothing to clear: that returns."""
        body: dict[str, Any] = {}
        if external_id:
            body["externalId"] = None
        if cms:
            body["cms"] = {assumptions.CMS_FIELDS[name]: None for name in cms}
        if body:
            await self._request(
                "PATCH", f"/elements/{element_id}/publications/{publication_id}", json=body, allow_not_found=True
            )

    async def link_external_element(self, element_id: int, *, external_id: str, link: str | None) -> None:
        """Record the element's representation in the main channel's system (the SQS path has no sync reply)."""
        representation: dict[str, Any] = {"externalId": external_id}
        if link:
            representation["link"] = link
        if assumptions.LINK_SYSTEM_URL:
            representation["systemUrl"] = assumptions.LINK_SYSTEM_URL
        wrapper = assumptions.LINK_BODY_WRAPPER
        body = {wrapper: representation} if wrapper else representation
        await self._request("POST", f"/elements/{element_id}/external-element/link", json=body)

    async def unlink_external_element(self, element_id: int) -> None:
        """Remove the element's representation in the main channel's system (``POST …/external-element/unlink``,
        the ``systemUrl`` the link names, if any). An element Kordiam no longer has (404) has nothing to unlink."""
        body: dict[str, Any] = {}
        if assumptions.LINK_SYSTEM_URL:
            body["systemUrl"] = assumptions.LINK_SYSTEM_URL
        await self._request("POST", f"/elements/{element_id}/external-element/unlink", json=body, allow_not_found=True)

    async def publish_publication(self, element_id: int, publication_id: int) -> bool:
        """Mark the publication published; ``False`` if it already was (409)."""
        try:
            # Here 409 means "already published", not a concurrent write to retry.
            await self._request(
                "POST", f"/elements/{element_id}/publications/{publication_id}/publish", conflict_is_final=True
            )
        except KordiamRejected as error:
            if error.status == 409:
                return False
            raise
        return True

    async def probe(self) -> None:
        """Whether Kordiam's API answers at all: one authenticated ``GET /platforms``, one attempt, its token's too.

        ``KordiamUnavailable`` if Kordiam cannot be reached or answers 5xx or 429; any other answer returns, a
        refusal included (Kordiam answered; whether it accepts the worker is the credentials' question).
        """
        try:
            await self.check_access()
        except KordiamCredentialsRefused:
            return

    async def check_access(self) -> None:
        """Whether Kordiam accepts the worker's token for a request it may make: one authenticated
        ``GET /platforms``, one attempt. ``KordiamCredentialsRefused`` if it is refused even with a fresh token,
        ``KordiamUnavailable`` if Kordiam cannot be asked; any other refusal returns (it is not the credentials')."""
        try:
            response = await self._request("GET", "/platforms", retry=ONE_ATTEMPT)
        except KordiamCredentialsRefused:
            raise
        except KordiamRejected:
            return
        assert response is not None
        _json(response)  # a proxy's page answered 200 in Kordiam's place is no answer of Kordiam's

    async def list_reference(self, path: str) -> list[dict[str, Any]]:
        """A reference-data list such as ``/platforms`` or ``/publication-statuses`` (first page)."""
        response = await self._request("GET", path)
        assert response is not None
        content = _json(response).get("content")
        if not isinstance(content, list):
            raise UnexpectedResponse(f"GET {path}: expected a list envelope with `content`")
        return [item for item in content if isinstance(item, dict)]

    # ---- transport -----------------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        allow_not_found: bool = False,
        conflict_is_final: bool = False,
        retry: RetryPolicy | None = None,
    ) -> HttpResponse | None:
        url = self._url(path)
        started = time.monotonic()
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            token = await self._access_token(retry)
            try:
                response = await self._http.request(
                    method,
                    url,
                    json=json,
                    headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                    timeout_seconds=self._timeout,
                )
            except HttpAnswerTooLarge as error:
                raise _too_large(f"{method} {path}", error) from error
            except HttpTransportError as error:
                reason = f"{method} {path}: {type(error).__name__}: {error or 'no detail'}"
                await self._pause_or_raise(reason, attempt, started, retry_after=None, policy=retry)
                continue

            status = response.status_code
            if status < 300:
                if method != "GET" and not _is_json(response):
                    # A proxy's page in Kordiam's place: the write is not known to be done. Each is safe to redo
                    # (PATCH and link are idempotent; a repeated publish is a 409, "already published").
                    await self._pause_or_raise(_not_json(response), attempt, started, retry_after=None, policy=retry)
                    continue
                return response
            if status < 400:
                raise _redirected(method, path, response)
            problem = _problem(response)
            if status in GONE_STATUSES and allow_not_found:
                if _not_found(response, problem):
                    return None
                # Not Kordiam's word on the resource: a retraction on it would take content out of every channel.
                raise KordiamUnavailable(
                    f"{method} {path}: {status} that does not say the resource is gone (no Kordiam error object, or "
                    f"no such endpoint): {problem.slug or 'no error type'}: {problem.summary()}"
                )
            if status == 401 and not refreshed:
                # The token may have been revoked or expired early: fetch a new one, once. Only the one refused is
                # dropped: another request may have replaced it already, and its fresh one is what this one retries.
                refreshed = True
                if self._token == token:
                    self._token = None
                continue
            if status == 401:
                raise KordiamCredentialsRefused(
                    f"{method} {path}: 401 even with a fresh token: {problem.summary()}",
                    status=status,
                    problem_type=problem.slug,
                )
            if status == 403:
                raise KordiamAuthFailed(
                    f"{method} {path}: {status} {problem.summary()}", status=status, problem_type=problem.slug
                )
            if status in RETRYABLE_STATUSES and not (status == 409 and conflict_is_final):
                if status == 429:
                    metrics.KORDIAM_THROTTLED.inc()
                retry_after = _retry_after(response.headers, problem)
                await self._pause_or_raise(
                    f"{method} {path}: {status} {problem.summary()}",
                    attempt,
                    started,
                    retry_after=retry_after,
                    policy=retry,
                )
                continue
            raise KordiamRejected(
                f"{method} {path}: {status} {problem.summary()}", status=status, problem_type=problem.slug
            )

    def _url(self, path: str) -> URL | str:
        # Parsing the whole URL text cost 3-4 µs a call (yarl; every element's URL is new, so its cache misses),
        # two calls a message: a plain path is appended to the API's URL parsed once, the same URL.
        if _PLAIN_PATH.fullmatch(path):
            return self._api.with_path(self._api.raw_path + path, encoded=True)
        return f"{self._base}{API}{path}"

    async def _pause_or_raise(
        self, reason: str, attempt: int, started: float, *, retry_after: float | None, policy: RetryPolicy | None = None
    ) -> None:
        """Sleep before the next attempt, or give up with ``KordiamUnavailable`` once the budget is spent. ``reason``
        may quote a transport error's text: it is redacted here (``bridge.redaction``), since the retry's info line
        is not searched and the outage's text becomes the pause's ``/readyz`` reason."""
        reason = redaction.SECRETS.redact(reason)
        policy = policy or self._retry
        # A Retry-After of 0 asks nothing: the back-off, rather than the budget's retries at once on a throttled API.
        delay = retry_after if retry_after else policy.backoff(attempt)
        elapsed = time.monotonic() - started
        if attempt >= policy.attempts or elapsed + delay > policy.total_seconds:
            attempts = "1 attempt" if attempt == 1 else f"{attempt} attempts"
            raise KordiamUnavailable(f"{reason} (gave up after {attempts})", retry_after=retry_after)
        log.info("kordiam_retry", reason=reason, attempt=attempt, delay=round(delay, 3))
        await asyncio.sleep(delay)

    async def _access_token(self, retry: RetryPolicy | None = None) -> str:
        if self._token is not None and time.monotonic() < self._token_expires_at:
            return self._token
        failures_before = self._token_failures
        async with self._token_lock:
            # Another request may have fetched it while this one waited for the lock, or failed to.
            if self._token is not None and time.monotonic() < self._token_expires_at:
                return self._token
            if self._token_failures != failures_before and self._token_failure is not None:
                raise self._token_failure
            try:
                self._store(await self._fetch_token(retry or self._retry))
            except BridgeError as error:
                self._token_failures += 1
                self._token_failure = error
                raise
            assert self._token is not None
            return self._token

    async def check_credentials(self, *, retry: RetryPolicy | None = None) -> None:
        """Fetch a fresh token (kept for the requests that follow): ``KordiamCredentialsRefused`` if Kordiam
        refuses the credentials, ``KordiamUnavailable`` if it cannot be asked within ``retry``."""
        async with self._token_lock:
            self._store(await self._fetch_token(retry or self._retry))

    def _store(self, token: Token) -> None:
        lifetime = max(1.0, token.expires_in - min(TOKEN_EARLY_REFRESH_SECONDS, token.expires_in / 10))
        self._token = token.access_token
        redaction.SECRETS.remember_token(token.access_token)
        self._token_expires_at = time.monotonic() + lifetime

    async def _fetch_token(self, retry: RetryPolicy) -> Token:
        url = f"{self._base}{API}/auth/token"
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret.get_secret_value(),
        }
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request("POST", url, data=form, timeout_seconds=self._timeout)
            except HttpAnswerTooLarge as error:
                raise _too_large("POST /auth/token", error) from error
            except HttpTransportError as error:
                await self._pause_or_raise(
                    f"POST /auth/token: {type(error).__name__}: {error or 'no detail'}",
                    attempt,
                    started,
                    retry_after=None,
                    policy=retry,
                )
                continue
            if 300 <= response.status_code < 400:
                raise _redirected("POST", "/auth/token", response)
            if response.status_code == 200:
                if refusal := _oauth_error(response):
                    raise KordiamCredentialsRefused(
                        f"Kordiam refused the client credentials of client_id {self._client_id!r}: 200 {refusal}",
                        status=response.status_code,
                        problem_type=refusal.partition(":")[0],
                    )
                try:
                    return self._parse(Token, response)
                except (UnexpectedResponse, KordiamUnavailable) as error:
                    # No token, no request of any message: the worker's fault to pause on (a proxy's maintenance
                    # page, say), not each message's to be dead-lettered for.
                    await self._pause_or_raise(str(error), attempt, started, retry_after=None, policy=retry)
                    continue
            problem = _problem(response)
            if response.status_code in RETRYABLE_STATUSES:
                await self._pause_or_raise(
                    f"POST /auth/token: {response.status_code} {problem.summary()}",
                    attempt,
                    started,
                    retry_after=_retry_after(response.headers, problem),
                    policy=retry,
                )
                continue
            if response.status_code not in OAUTH_REFUSALS:  # no token endpoint here: a wrong base URL, say
                raise KordiamRejected(
                    f"POST {url}: {response.status_code} {problem.summary()}",
                    status=response.status_code,
                    problem_type=problem.slug,
                )
            raise KordiamCredentialsRefused(
                f"Kordiam refused the client credentials of client_id {self._client_id!r}: "
                f"{response.status_code} {problem.summary()}",
                status=response.status_code,
                problem_type=problem.slug,
            )

    @staticmethod
    def _parse(model: type[M], response: HttpResponse, body: dict[str, Any] | None = None) -> M:
        """``body`` (``response``'s, already decoded), or the response's own, as ``model``."""
        # orjson, then pydantic on the dict: cheaper than model_validate_json (21 against 24 µs for the bench's
        # element), because the models' before-validators need Python dicts anyway.
        try:
            return model.model_validate(_json(response) if body is None else body)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            raise UnexpectedResponse(
                f"{response.request.method} {response.request.url.path}: unexpected {model.__name__} shape "
                f"at {where}: {first['msg']}"
            ) from error


def _query_date(moment: datetime) -> str:
    """A date filter as Kordiam writes its dates: UTC, to the second (a fraction is dropped, never rounded up)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(response: HttpResponse) -> dict[str, Any]:
    """The answer's JSON object. ``KordiamUnavailable`` when it is not JSON at all (a proxy's page, an empty or
    cut-off body: no answer of Kordiam's, retried), ``UnexpectedResponse`` when it is JSON but not an object."""
    try:
        body = response.json()
    except ValueError as error:
        raise KordiamUnavailable(_not_json(response)) from error
    if not isinstance(body, dict):
        raise UnexpectedResponse(f"{response.request.method} {response.request.url.path}: answer is not an object")
    return body


def _not_json(response: HttpResponse) -> str:
    content_type = response.headers.get("content-type", "no content type")
    return f"{response.request.method} {response.request.url.path}: answer is not JSON ({content_type})"


def _is_json(response: HttpResponse) -> bool:
    """Whether a success answer is JSON, or has no body at all (a 204, say)."""
    if not response.content.strip():
        return True
    try:
        response.json()
    except ValueError:
        return False
    return True


def _too_large(call: str, error: HttpAnswerTooLarge) -> KordiamUnavailable:
    """No quick retries for an answer past the client's limit: the next would be as large, and a chunked one is
    read up to the limit each time. The message goes back to the queue at once; its receives, and the dead-letter
    reason once they are spent, take over (or the outage's pause, if every call answers so)."""
    return KordiamUnavailable(redaction.SECRETS.redact(f"{call}: {error} (not retried at once)"))


def _redirected(method: str, path: str, response: HttpResponse) -> KordiamRedirected:
    """A redirect, never followed: the request's bearer token (or the token request's client secret) would go with
    it to wherever it points."""
    location = " ".join(response.redact(response.headers.get("location", "nowhere named"))[:200].split())
    return KordiamRedirected(
        f"{method} {path}: {response.status_code} redirect to {location} not followed (the request's credentials "
        "would go with it); if Kordiam's API moved, set kordiam.base_url to its new address"
    )


def _oauth_error(response: HttpResponse) -> str | None:
    """An OAuth 2 error (RFC 6749 5.2: ``error``, ``error_description``) in a token answer without a token, as
    ``error: description``; a token endpoint behind some gateways answers 200 with it."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("access_token") or not isinstance(body.get("error"), str):
        return None
    said = body["error"]
    if isinstance(body.get("error_description"), str):
        said += f": {body['error_description']}"
    return " ".join(response.redact(said)[:200].split())


def _problem(response: HttpResponse) -> ProblemDetails:
    """Problem Details from an error answer; a non-JSON body becomes a problem with its first bytes as detail.
    Whatever it quotes is without the credentials the request carried (``HttpResponse.redact``)."""
    try:
        body = response.json()
        if isinstance(body, dict):
            return ProblemDetails.model_validate(_redacted(body, response))
    except (ValueError, ValidationError):
        pass
    # On one line: the detail goes into log lines, dead-letter reasons and the operator commands' one-line errors.
    text = " ".join(response.redact(response.text)[:200].split())
    return ProblemDetails(title=response.reason_phrase or None, status=response.status_code, detail=text or None)


def _redacted(value: Any, response: HttpResponse) -> Any:
    """``value`` (a decoded JSON answer) with ``response.redact`` applied to every string in it."""
    if isinstance(value, str):
        return response.redact(value)
    if isinstance(value, dict):
        return {key: _redacted(item, response) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item, response) for item in value]
    return value


def _not_found(response: HttpResponse, problem: ProblemDetails) -> bool:
    """Whether a 404 (or 410) is Kordiam saying the resource does not exist or is not visible: a JSON object (Kordiam
    answers errors as Problem Details) whose type is not ``endpoint-not-found``. A proxy's HTML page or an unrouted
    path says nothing of the element."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and problem.slug != "endpoint-not-found"


def _retry_after(headers: Mapping[str, str], problem: ProblemDetails) -> float | None:
    """``Retry-After`` (seconds or an HTTP date) from the header, else ``retryAfter`` from the body."""
    from_header = retry_after_seconds(headers)
    return from_header if from_header is not None else problem.retry_after

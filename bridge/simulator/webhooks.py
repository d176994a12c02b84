"""Kordiam's webhooks, as Kordiam calls them: Global Export (seed 001) and the Platform integration (seed 002).

With ``--global-export-url`` the simulator calls ``POST {url}/element`` on a story's creation, ``PUT``/``DELETE
{url}/element/{id}`` on its update and deletion, where ``{id}`` is the element's linked external id, else the id the
receiver answered to the POST, else ``null`` (seed 001). With ``--platform-url`` it fetches a token at
``{url}/oauth2/token`` (HTTP Basic) before every call, as Kordiam does, and calls ``POST {url}/publication`` /
``PUT``/``DELETE {url}/publication/{id}`` once per publication (``DELETE`` also for a publication an update no longer
has), ``{id}`` being the publication's ``externalId`` or the id answered earlier. A failed call is retried as Kordiam
retries (Global Export 3 × 5 s, Platform 5 × 1 s) and then dropped; every outcome is recorded. Calls run in the
background, one element's calls in order. Bodies are the v1 element model the seeds show (``v1shape``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
import jwt

from bridge.config import HEADER_NAME
from bridge.simulator.v1shape import global_export_body, platform_body

logger = logging.getLogger(__name__)

WebhookEvent = Literal["created", "updated", "deleted"]
GLOBAL_EXPORT_RETRIES = (5.0, 5.0, 5.0)
PLATFORM_RETRIES = (1.0, 1.0, 1.0, 1.0, 1.0)
HEADERS = {"Accept": "application/json, application/*+json", "Content-Type": "application/json;charset=UTF-8"}


@dataclass(frozen=True)
class WebhookAuth:
    """``bearer:TOKEN``, ``jwt:SECRET``, ``api_key:KEY:SECRET`` or ``header:NAME=VALUE`` (repeatable)."""

    type: Literal["bearer", "jwt", "api_key", "headers"]
    token: str = ""
    api_key: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, specs: list[str]) -> WebhookAuth:
        """Raises ``ValueError`` saying what is wrong."""
        if not specs:
            raise ValueError("is required with the URL: bearer:TOKEN, jwt:SECRET, api_key:KEY:SECRET or header:N=V")
        kind, _, rest = specs[0].partition(":")
        if kind == "header":
            pairs = []
            for spec in specs:
                name, equals, value = spec.removeprefix("header:").partition("=")
                if not spec.startswith("header:") or not equals or not name or not value:
                    raise ValueError("header auth is header:NAME=VALUE, repeated for more headers")
                pairs.append((name, value))
            return cls("headers", headers=tuple(pairs))._sendable()
        if len(specs) > 1:
            raise ValueError("only header:NAME=VALUE may be repeated")
        if kind in ("bearer", "jwt") and rest:
            return cls(kind, token=rest)._sendable()  # type: ignore[arg-type]
        key, colon, secret = rest.partition(":")
        if kind == "api_key" and key and colon and secret:
            return cls("api_key", token=secret, api_key=key)._sendable()
        raise ValueError("must be bearer:TOKEN, jwt:SECRET, api_key:KEY:SECRET or header:NAME=VALUE")

    def _sendable(self) -> WebhookAuth:
        """Itself, if a request can carry it: else every call would fail in httpx before it is sent, retried and
        recorded without a status, as if the receiver were unreachable."""
        for name, _ in self.headers:
            if not HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
        values = [value for _, value in self.headers] + [self.token, self.api_key]
        if any(not character.isprintable() for value in values for character in value):
            raise ValueError("a header value must not hold control characters")
        return self


class NoToken(Exception):
    """A token endpoint answered success without a token: a failed attempt, like an error status."""


def _answer(response: httpx.Response) -> Any:
    """The JSON a receiver answered; its text when it is not JSON (recorded as it came), None when empty."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


@dataclass
class WebhookRecord:
    target: str
    method: str
    path: str
    status: int | None
    attempts: int
    answer: Any = None

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__}


@dataclass
class WebhookCaller:
    global_export_url: str | None = None
    global_export_auth: WebhookAuth | None = None
    platform_url: str | None = None
    platform_user: str = ""
    platform_secret: str = ""
    global_export_retries: tuple[float, ...] = GLOBAL_EXPORT_RETRIES
    platform_retries: tuple[float, ...] = PLATFORM_RETRIES
    records: list[WebhookRecord] = field(default_factory=list)
    _answered: dict[int, str] = field(default_factory=dict)
    _publication_ids: dict[int, str] = field(default_factory=dict)
    # The publications last sent to the Platform integration, by element: one gone from the next change is deleted.
    _platform_sent: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)
    _chains: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    _http: httpx.AsyncClient | None = None

    @property
    def enabled(self) -> bool:
        return self.global_export_url is not None or self.platform_url is not None

    async def close(self) -> None:
        await self.idle()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def reset(self) -> None:
        """Back to the start: calls in flight cancelled, records and the ids receivers answered forgotten (element
        and publication ids start over after the store's reset, and must not inherit an earlier element's link)."""
        for chain in self._chains.values():
            chain.cancel()
        self._chains.clear()
        self.records.clear()
        self._answered.clear()
        self._publication_ids.clear()
        self._platform_sent.clear()

    async def idle(self) -> None:
        """Wait until every call started so far has ended (answered or given up)."""
        while pending := [t for t in self._chains.values() if not t.done()]:
            await asyncio.gather(*pending, return_exceptions=True)

    def changed(self, element: dict[str, Any], event: WebhookEvent) -> None:
        """Schedule the webhooks for one change, after the element's earlier calls (Kordiam keeps their order)."""
        snapshot = json.loads(json.dumps(element))
        previous = self._chains.get(snapshot["id"])

        async def chain() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            await self._call_all(snapshot, event)

        self._chains[snapshot["id"]] = asyncio.get_running_loop().create_task(chain())

    async def _call_all(self, element: dict[str, Any], event: WebhookEvent) -> None:
        try:
            if self.global_export_url is not None:
                await self._global_export(self.global_export_url, element, event)
            if self.platform_url is not None:
                await self._platform_all(self.platform_url, element, event)
        except Exception:  # a webhook failure must never break the simulator
            logger.exception("webhook for element %s failed", element.get("id"))

    async def _global_export(self, url: str, element: dict[str, Any], event: WebhookEvent) -> None:
        element_id = int(element["id"])
        linked = (element.get("externalElement") or {}).get("externalId")
        target = str(linked or self._answered.get(element_id) or "null")
        method, path = {"created": ("POST", "/element"), "updated": ("PUT", f"/element/{target}")}.get(
            event, ("DELETE", f"/element/{target}")
        )
        body = None if event == "deleted" else global_export_body(element)
        record = await self._send("global_export", url, method, path, body, self.global_export_retries, self._ge_auth)
        if event == "created" and isinstance(record.answer, dict) and record.answer.get("id") is not None:
            self._answered[element_id] = str(record.answer["id"])

    async def _platform_all(self, url: str, element: dict[str, Any], event: WebhookEvent) -> None:
        """One call per publication; a publication sent before and missing now was taken off its platform, and the
        Platform integration deletes it there too (reference 5.2: DELETE on "removed/deleted")."""
        publications = element.get("publications") or []
        for publication in publications:
            await self._platform(url, element, publication, event)
        earlier = self._platform_sent.pop(int(element["id"]), {})
        if event == "deleted":
            return
        current = {int(publication["id"]): publication for publication in publications}
        for publication_id, publication in earlier.items():
            if publication_id not in current:
                await self._platform(url, element, publication, "deleted")
        self._platform_sent[int(element["id"])] = current

    async def _platform(
        self, url: str, element: dict[str, Any], publication: dict[str, Any], event: WebhookEvent
    ) -> None:
        publication_id = int(publication["id"])
        target = str(publication.get("externalId") or self._publication_ids.get(publication_id) or "null")
        body = None if event == "deleted" else platform_body(element, publication)
        method, path = {"created": ("POST", "/publication"), "updated": ("PUT", f"/publication/{target}")}.get(
            event, ("DELETE", f"/publication/{target}")
        )
        record = await self._send("platform", url, method, path, body, self.platform_retries, self._platform_auth)
        if event != "deleted" and isinstance(record.answer, dict) and record.answer.get("id") is not None:
            self._publication_ids[publication_id] = str(record.answer["id"])

    async def _send(
        self, target: str, url: str, method: str, path: str, body: Any, retries: tuple[float, ...], auth: Any
    ) -> WebhookRecord:
        http = self._client()
        content = None if body is None else json.dumps(body).encode()
        record = WebhookRecord(target, method, path, None, 0)
        for delay in (0.0, *retries):
            await asyncio.sleep(delay)
            record.attempts += 1
            try:
                headers = {**HEADERS, **await auth(url)}
                response = await http.request(method, f"{url}{path}", content=content, headers=headers)
            except (httpx.HTTPError, NoToken) as error:
                logger.warning("webhook %s %s%s: %s", method, url, path, error)
                continue
            record.status = response.status_code
            if response.is_success:
                record.answer = _answer(response)
                break
        self.records.append(record)
        return record

    async def _ge_auth(self, url: str) -> dict[str, str]:
        auth = self.global_export_auth
        assert auth is not None
        if auth.type == "bearer":
            return {"Authorization": f"Bearer {auth.token}"}
        if auth.type == "jwt":  # Kordiam's JWT is a persistent token (seed 001)
            return {"Authorization": f"Bearer {jwt.encode({'sub': 'kordiam'}, auth.token, algorithm='HS256')}"}
        if auth.type == "api_key":
            return await self._token(f"{url}/oauth2/token", auth.api_key, auth.token)
        return dict(auth.headers)

    async def _platform_auth(self, url: str) -> dict[str, str]:
        # Kordiam fetches a new token before every call (seed 002).
        return await self._token(f"{url}/oauth2/token", self.platform_user, self.platform_secret)

    async def _token(self, token_url: str, key: str, secret: str) -> dict[str, str]:
        basic = base64.b64encode(f"{key}:{secret}".encode()).decode()
        response = await self._client().post(
            token_url,
            content=urlencode({"grant_type": "client_credentials", "api_key": key, "api_secret": secret}).encode(),
            headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
        )
        response.raise_for_status()
        token = _answer(response)
        if not isinstance(token, dict) or not isinstance(token.get("access_token"), str):
            raise NoToken(f"POST {token_url}: {response.status_code} without an access_token")
        return {"Authorization": f"Bearer {token['access_token']}"}

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=10.0)
        return self._http

"""``kordiam-platform``: Kordiam's Platform integration protocol (seed 002), towards any CMS with a Kordiam
platform connector (the WordPress plugin, Livingdocs, …), which then works through the bridge unchanged.

Requests, all under ``url`` (e.g. ``https://www.example.org/wp-json/wp-desk-net/v1``):

- ``POST {url}/oauth2/token`` (``token_path``) with HTTP Basic ``api_user:api_secret`` and the form
  ``grant_type=client_credentials&api_key=…&api_secret=…`` → ``{"access_token", "token_type", "expires_in"}``;
  every other request carries ``Authorization: Bearer <access_token>``.
- ``POST {url}/statuses`` with the platform's publication statuses, once per channel start (so after every
  config change, which needs a restart), lazily before the first publication request and guarded by a lock:
  ``{"platform", "activeStatuses": [{id, name, triggersExport: true}], "deactivatedStatuses": [… false]}``,
  one request per platform in ``platforms``. A receiver without that endpoint (404/405/501; seed 002 keeps it
  "for the old versions support") is fine: the statuses are skipped, as they are when it refuses them with
  another 4xx (not 401/403, not 408/409/425/429): they are only information for the CMS.
- ``POST {url}/publication`` (create), ``PUT {url}/publication/{id}`` (update), ``DELETE {url}/publication/{id}``,
  answered ``{"id", "cmsEditLink", "cmsOpenLink", "cmsEditLinkTitle", "cmsOpenLinkTitle"}``: the id becomes the
  publication's external id and the links and their titles go into the ``ChannelResult``, so they flow back to
  Kordiam's publication. The protocol is per publication, so each publication is its own remote item.

Options (``[[channels]]`` keys besides name/type/platforms/statuses/main):

- ``url``: the connector's base address; ``api_user``, ``api_secret`` (secret): the connector's API credentials
- ``token_path`` = "oauth2/token" (Livingdocs: "oauth/token")
- ``token_cache`` = true: reuse a token until shortly before its ``expires_in`` (at most 30 s, or a tenth of its
  lifetime, early) and fetch a new one once when a request with it is answered 401; false fetches a new token
  before every request, exactly as Kordiam does (seed 002), at the price of one more round trip each.
- ``send_statuses`` = true
- ``timeout``: seconds per request, the token's too (default: ``kordiam.timeout``, the shared client's)
- ``platform_statuses`` = the platform's publication statuses for ``/statuses``: ``[{ id, name,
  triggersExport? }]``; default: seed 002's five (5 Published, 4 Top story, 2 Proposal, 1 No Status,
  3 Accepted). Without ``triggersExport`` a status triggers export if the channel's own ``statuses`` routing
  filter lets it through (no filter: all do). Whatever ``/statuses`` says, it is only information for the CMS:
  the channel's ``statuses`` filter is what decides which publications the bridge sends. (The key cannot be
  ``statuses``: every channel already has that key, the routing filter.)

Example::

    [[channels]]
    name = "website"
    type = "kordiam-platform"
    platforms = [99003]
    statuses = ["Published", "Top story", "Proposal", "No Status"]
    url = "https://www.example.org/wp-json/wp-desk-net/v1"
    api_user = "api_5d4be039440a9004126215"
    # api_secret from the environment: BRIDGE_CHANNELS__WEBSITE__API_SECRET=…
    platform_statuses = [
      { id = 5, name = "Published" }, { id = 4, name = "Top story" }, { id = 2, name = "Proposal" },
      { id = 1, name = "No Status" }, { id = 3, name = "Accepted" },
    ]

Body (``platform_publication_body``, seed 002): ``id``, ``slug``, ``title`` and ``description`` (both the
element title), ``note``, ``elementStatus`` (a bare id), ``customFields`` (when any), one ``publication`` (the
v1 shape of ``kordiam_v1.v1_publication``: id, status, platform, category, type, single {start}, published,
assignments), all the element's ``tasks`` (``kordiam_v1.v1_task``, with ``content`` and ``headline``) and
``post_id`` (the CMS id on update, ``null`` on create). Not sent, because the ``Element`` model does not keep
them: a task's ``cost`` and ``files``.

Upsert: with an external id ``PUT``; a 404 there (deleted in the CMS) creates it again with ``POST`` and returns
the new id. Delete: ``DELETE``; a 404 counts as deleted. Either 404 only on the connector's word (410, or a JSON
404 that is not "no route": ``http_errors.item_gone``); any other 404 is ``ChannelUnavailable`` and retried. Errors
as ``kordiam-webhook``: 401/403 → ``ChannelRejected`` naming the channel (after one token refresh when a cached
token was refused); other 4xx → ``ChannelRejected`` with the connector's message; 408/409/425/429, 5xx, timeouts,
connection errors → ``ChannelUnavailable`` with ``Retry-After``; but a ``POST`` answered ``409`` with ``{"id": …}``
(a connector refusing a second item for the publication, the retry of a create whose answer was lost) updates
that item with ``PUT`` and returns its id (``kordiam_platform.adopted``, a warning). Nothing else is retried
in-process: the queue retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from bridge.channels.auth import ProtocolHttp, TokenSource, answer_id, existing_item_id, http_url
from bridge.channels.base import Channel, ChannelContext, ChannelResult
from bridge.channels.http_errors import answered_gone, response_json, said_instead
from bridge.channels.kordiam_v1 import compact, result_links, v1_custom_field, v1_publication, v1_task
from bridge.config import Bool, ChannelSettings, ChannelTimeout, Int, NonBlank, StatusSelector, plausible_secret
from bridge.digits import ascii_digits
from bridge.errors import ChannelRejected
from bridge.http import HttpClient, HttpResponse
from bridge.kordiam.models import Element, Publication, Ref

log = structlog.get_logger(__name__)

CHANNEL_TYPE = "kordiam-platform"


class PlatformStatus(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: Int
    name: NonBlank
    triggers_export: Bool | None = Field(default=None, alias="triggersExport")


# Seed 002's example of POST /statuses.
DEFAULT_PLATFORM_STATUSES = (
    PlatformStatus(id=5, name="Published"),
    PlatformStatus(id=4, name="Top story"),
    PlatformStatus(id=2, name="Proposal"),
    PlatformStatus(id=1, name="No Status"),
    PlatformStatus(id=3, name="Accepted"),
)


class KordiamPlatformOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    api_user: NonBlank
    api_secret: SecretStr
    token_path: str = Field(default="oauth2/token", pattern=r"^/?[A-Za-z0-9._~/-]+$")
    token_cache: Bool = True
    send_statuses: Bool = True
    platform_statuses: tuple[PlatformStatus, ...] = DEFAULT_PLATFORM_STATUSES
    timeout: ChannelTimeout = None  # seconds per request (bridge.config.ChannelTimeout)
    # The receiver answers a bare 404 ({"detail": "Not Found"}, an empty body) for an item it no longer has: count
    # such a 404 as "gone" too (not one saying no route matched), rather than fail every call on that item.
    bare_404_is_gone: Bool = False

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return http_url(value)

    _secret = field_validator("api_secret")(plausible_secret)

    @field_validator("platform_statuses")
    @classmethod
    def _unique(cls, value: tuple[PlatformStatus, ...]) -> tuple[PlatformStatus, ...]:
        ids = [status.id for status in value]
        if len(set(ids)) != len(ids):
            raise ValueError("each status id may appear once")
        return value

    @property
    def token_url(self) -> str:
        return f"{self.url}/{self.token_path.lstrip('/')}"


# --- wire bodies ---------------------------------------------------------------------------------------------


def platform_publication_body(element: Element, publication: Publication, external_id: str | None) -> dict[str, Any]:
    """The ``/publication`` body (seed 002) for one publication of ``element``."""
    return compact(
        {
            "id": element.id,
            "slug": element.slug,
            "title": element.title,
            "description": element.title,
            "note": element.note,
            "elementStatus": element.status.id if element.status else None,
            "customFields": [v1_custom_field(f) for f in element.custom_fields] or None,
            "publication": v1_publication(publication, element.tasks),
            "tasks": [v1_task(task) for task in element.tasks],
            "post_id": _post_id(external_id),
        },
        keep=("tasks", "post_id"),
    )


def platform_statuses_body(
    platform: int, statuses: Iterable[PlatformStatus], route_filter: Sequence[StatusSelector] | None
) -> dict[str, Any]:
    """The ``/statuses`` body (seed 002); ``triggersExport`` defaults to what the routing filter lets through."""
    active: list[dict[str, Any]] = []
    deactivated: list[dict[str, Any]] = []
    for status in statuses:
        triggers = status.triggers_export
        if triggers is None:
            ref = Ref(id=status.id, name=status.name)
            triggers = route_filter is None or any(ref.matches(selector) for selector in route_filter)
        entry = {"id": status.id, "name": status.name, "triggersExport": triggers}
        (active if triggers else deactivated).append(entry)
    return {"platform": platform, "activeStatuses": active, "deactivatedStatuses": deactivated}


def _post_id(external_id: str | None) -> int | str | None:
    if external_id is None or not external_id.strip():
        return None
    text = external_id.strip()
    return int(text) if ascii_digits(text) else text


# --- the adapter ---------------------------------------------------------------------------------------------


class KordiamPlatformChannel:
    """Kordiam's Platform integration protocol: one remote item per publication, its id the external id.

    Upsert ``PUT``s the known id, and ``POST``s when there is none or the CMS answers 404 (deleted there); delete
    treats 404 as done; either only when the 404 is the CMS's word (``item_gone``). The statuses the channel uses
    are sent once per process before the first write. Raises
    ``ChannelRejected`` (401/403 after one token refresh, other 4xx, an answer without an id) and
    ``ChannelUnavailable`` (408/409/425/429, 5xx, unreachable), as the module docstring lists.

    A lost create (the CMS made the item, its answer did not arrive) is not found again: the protocol has no
    lookup, so the retry ``POST``s a second item, as Kordiam's own platform integration would, unless the CMS
    refuses it with a 409 naming the item it has (``{"id": …}``), which is then updated and linked. No
    ``find_items`` either, for the same reason.
    """

    element_scoped = False

    def __init__(
        self,
        name: str,
        options: KordiamPlatformOptions,
        http: HttpClient,
        *,
        platforms: Iterable[int],
        statuses: Sequence[StatusSelector] | None = None,
    ) -> None:
        self.name = name
        self.options = options
        self._platforms = tuple(dict.fromkeys(platforms))
        self._route_filter = tuple(statuses) if statuses is not None else None
        self.tokens = TokenSource(
            http,
            options.token_url,
            options.api_user,
            options.api_secret,
            self._label,
            "check api_user and api_secret",
            cache=options.token_cache,
            timeout=options.timeout,
        )
        self._http = ProtocolHttp(http, self.tokens, self._label, timeout=options.timeout)
        self._statuses_sent = not options.send_statuses
        self._statuses_lock = asyncio.Lock()

    @property
    def _label(self) -> str:
        return f"{CHANNEL_TYPE} channel {self.name!r}"

    # --- Channel Protocol ---

    async def upsert(self, element: Element, publication: Publication, external_id: str | None) -> ChannelResult:
        await self._send_statuses()
        body = platform_publication_body(element, publication, external_id)
        cms_id = external_id.strip() if external_id and external_id.strip() else None
        if cms_id is not None:
            action = f"updating publication {publication.id} of element {element.id} as {cms_id}"
            response = await self._http.request("PUT", self._publication_url(cms_id), action, body)
            if self._gone(response, action):
                log.info("kordiam_platform.publication_gone", channel=self.name, publication=publication.id, cms=cms_id)
                body["post_id"] = None
            elif not response.is_success:
                raise self._http.error(response, action)
            else:
                return self._result(response_json(response, self._label, action), cms_id)
        action = f"creating publication {publication.id} of element {element.id}"
        response = await self._http.request("POST", f"{self.options.url}/publication", action, body)
        existing = existing_item_id(response)
        if existing is not None:
            # It made the item on an earlier try whose answer was lost: update that one and link it.
            log.warning("kordiam_platform.adopted", channel=self.name, publication=publication.id, cms=existing)
            action = f"updating publication {publication.id} of element {element.id} as {existing} (named in a 409)"
            body["post_id"] = _post_id(existing)
            response = await self._http.request("PUT", self._publication_url(existing), action, body)
            if not response.is_success:
                raise self._http.error(response, action)
            return self._result(response_json(response, self._label, action), existing)
        if not response.is_success:
            raise self._http.error(response, action)
        answer = response_json(response, self._label, action)
        if answer_id(answer.get("id") if isinstance(answer, dict) else None) is None:
            raise ChannelRejected(
                f"{self._label}: {action}: HTTP {response.status_code} without the publication's id "
                '(the Platform integration expects {"id", "cmsEditLink", "cmsOpenLink"})' + said_instead(response)
            )
        return self._result(answer, None)

    async def delete(self, element_id: int, publication_id: int, external_id: str) -> None:
        cms_id = external_id.strip()
        if not cms_id:
            return
        await self._send_statuses()
        action = f"deleting publication {publication_id} of element {element_id} ({cms_id})"
        response = await self._http.request("DELETE", self._publication_url(cms_id), action)
        if not (response.is_success or self._gone(response, action)):
            raise self._http.error(response, action)

    async def aclose(self) -> None:
        return None

    # --- helpers ---

    async def _send_statuses(self) -> None:
        """``POST /statuses`` once per channel start, before the first publication request."""
        if self._statuses_sent:
            return
        async with self._statuses_lock:
            if self._statuses_sent:
                return
            for platform in self._platforms:
                body = platform_statuses_body(platform, self.options.platform_statuses, self._route_filter)
                action = f"sending the statuses of platform {platform}"
                response = await self._http.request("POST", f"{self.options.url}/statuses", action, body)
                if response.status_code in (404, 405, 501):
                    log.warning(
                        "kordiam_platform.statuses_unsupported",
                        channel=self.name,
                        status=response.status_code,
                        hint="the connector has no /statuses endpoint; statuses are not sent",
                    )
                    break
                if _refused_for_good(response.status_code):
                    # Only information for the CMS: a connector that refuses it (its own validation) must not
                    # hold back every publication of the channel. Credentials and transient answers still do.
                    log.warning(
                        "kordiam_platform.statuses_refused",
                        channel=self.name,
                        status=response.status_code,
                        answer=response.redact(response.text)[:200],
                        hint="the connector refused the statuses; publications are sent without them",
                    )
                    break
                if not response.is_success:
                    raise self._http.error(response, action)
            self._statuses_sent = True
            log.info("kordiam_platform.statuses_sent", channel=self.name, platforms=list(self._platforms))

    def _gone(self, response: HttpResponse, action: str) -> bool:
        return answered_gone(response, self._label, action, bare_404_is_gone=self.options.bare_404_is_gone)

    def _publication_url(self, cms_id: str) -> str:
        return f"{self.options.url}/publication/{quote(cms_id, safe='')}"

    def _result(self, answer: Any, cms_id: str | None) -> ChannelResult:
        item_id = answer_id(answer.get("id") if isinstance(answer, dict) else None) or cms_id
        assert item_id is not None  # the create path checked the answer's id
        return ChannelResult(external_id=item_id, **result_links(answer, item_id, None, None))


def create(settings: ChannelSettings, options: BaseModel, context: ChannelContext) -> Channel:
    assert isinstance(options, KordiamPlatformOptions)
    return KordiamPlatformChannel(
        settings.name, options, context.http, platforms=settings.platforms, statuses=settings.statuses
    )


def _refused_for_good(status: int) -> bool:
    """A 4xx that is neither about the credentials (401/403) nor one to try again (408/409/425/429)."""
    return 400 <= status < 500 and status not in (401, 403, 408, 409, 425, 429)

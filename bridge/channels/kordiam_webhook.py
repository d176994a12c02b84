"""``kordiam-webhook``: Kordiam's Global Export protocol (seed 001), towards any CMS that already implements it.

The bridge sends what Kordiam's own Global Export would send, so a CMS with a Global Export receiver works
through the bridge unchanged:

- ``POST {url}/element`` with the element, answered ``{"id": …}``: the CMS's id, kept as the external id;
- ``PUT {url}/element/{id}`` with the element when it changes;
- ``DELETE {url}/element/{id}`` when it is gone.

Options (``[[channels]]`` keys besides name/type/platforms/statuses/main):

- ``url``: the receiver's base address (``/element`` is appended)
- ``auth``: a table with ``type`` and its keys (see ``bridge.channels.auth``):
  ``bearer`` {``token``}; ``jwt`` {``secret``, ``issuer`` = "kordiam-bridge", ``audience``, ``subject``,
  ``ttl_seconds`` = 60} (HS256, minted per request); ``api_key`` {``api_key``, ``api_secret``, ``token_url`` =
  ``{url}/oauth2/token``} (exchanged for a bearer token, cached until shortly before ``expires_in``, fetched
  again once on a 401); ``headers`` {``headers`` = {name = value}}. Every secret is a ``SecretStr``.
- ``edit_link_template``, ``open_link_template``: optional, e.g. ``"https://cms.example.org/edit/{id}"``; the
  links Kordiam shows for the publication (the Global Export answers only an id; an answer that carries
  ``cmsEditLink``/``cmsOpenLink`` and their titles, as the Platform integration's does, is used instead).
- ``timeout``: seconds per request, the token's too (default: ``kordiam.timeout``, the shared client's)

Example::

    [[channels]]
    name = "cms"
    type = "kordiam-webhook"
    platforms = [99003, 99004]
    main = true                       # the Kordiam element is linked to the CMS's element (see below)
    url = "https://cms.example.org/kordiam"
    auth = { type = "jwt", audience = "cms" }
    # auth.secret from the environment: BRIDGE_CHANNELS__CMS__AUTH__SECRET=…
    edit_link_template = "https://cms.example.org/edit/{id}"

Body: the v1 "Get Element" shape of seed 001, built by ``global_export_body`` from the ``Element`` model: ``id``,
``title``, ``slug``, ``note``, ``elementStatus`` {id, name}, ``modificationDate`` (UTC, ``…Z``),
``customFields`` (when any), ``externalElement`` {id, link}, ``tasks`` [{id, format, status,
confirmationStatus, assignee {id, name = e-mail, external_id}, deadline {date, time}, note, done, content,
headline}], ``publications`` [{id, status, platform (a bare id), category, type, single {start {date, time}},
published {start}, assignments (booleans positional to ``tasks``)}], ``groups`` [{id, name}]. A field Kordiam
leaves empty is left out. Not sent, because the ``Element`` model does not keep them: a group's ``parent`` and
``selected``, a publication's ``single.issue_label``, a task's text length and files.

One element, one remote item. The Global Export is element-level while the bridge calls ``upsert`` once per
publication routed to the channel, so every publication of an element on this channel maps to ONE remote
element, and every one of them reports that element's id as its external id:

- The body carries the element with the publications on the channel's ``platforms`` (whatever their status:
  the channel's ``statuses`` filter decides when something is sent, as Kordiam's trigger rules do, not what).
- The remote id is looked for in this order: the id this process last used for the element (kept in memory
  for the most recent 10,000 elements, fewer once their bodies pass 16 MiB); the external id the bridge passes
  for the publication (its own or, since the channel is ``element_scoped``, a sibling publication's from the
  shared state store, which survives restarts and is shared by all workers); with
  ``main = true``, the id Kordiam's ``externalElement`` holds (the bridge links the element to the main
  channel's item, as Kordiam's Global Export itself does). Each known id is tried with ``PUT`` until one is
  not answered 404; with none left (all deleted in the CMS, or none known) the element is created with
  ``POST`` and the new id returned. "Answered 404" means the receiver's word (``http_errors.item_gone``); any other
  404 fails the call as unavailable, so a wrong ``url`` or a proxy never makes a second element. So the first
  routed publication of an element creates it and the others, handled after it in the same sync, update it; and
  after a re-creation a publication whose recorded id is the old one still reaches the new element.
- ``delete`` for one publication: if other publications of the element are still on this channel (as far as
  this process has seen: those it exported, and those it held that are still on its platforms), the remote
  element is kept and ``PUT`` without that publication; for the last one, ``DELETE``. So deleting a story
  sends one ``PUT`` per publication but the last, then one ``DELETE``. A 410, or a 404 that is the receiver's
  word (``item_gone``), on ``DELETE`` counts as deleted; any other 404 is ``ChannelUnavailable`` and retried.

After a restart (the memory is per process) or on another worker, this memory is empty; the sync engine
covers both cases: it passes an element-level channel the external id it holds for any publication of the
element (so a publication added later reaches the same remote element), and while another publication on the
channel still stands on the remote element it does not call ``delete`` for one that left: it upserts the
sibling, which sends the element without it (``bridge.pipeline.sync``), even a sibling the ``statuses`` filter
no longer lets through (the story is not deleted and the sibling stands on the element: a ``PUT``, not a
``DELETE``).

Errors: 401/403 → ``ChannelRejected`` naming the channel and the keys to check; 400/404/422 and other 4xx →
``ChannelRejected`` with the receiver's message (a 404 for an element's id that is not the receiver's word:
``ChannelUnavailable``); 408/409/425/429, 5xx, timeouts and connection errors →
``ChannelUnavailable`` (with ``Retry-After``). Nothing is retried in-process: the queue retries. A ``POST``
whose answer has no id is rejected: the bridge could not link the element (Kordiam itself would then send
``PUT /element/null``). A ``POST`` answered ``409`` with ``{"id": …}`` (a receiver that keeps one element per
Kordiam id, refusing the retry of a create whose answer was lost) is not an error: that element is updated with
``PUT`` and its id returned (``kordiam_webhook.adopted``, a warning). A ``PUT``'s answer is read only when it
is JSON (an id or links in it are used): Kordiam reads nothing of it, so an answer that is not JSON (``OK``, a
page) is a success like an empty one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

import structlog
from pydantic import BaseModel, ConfigDict, field_validator

from bridge import jsontext
from bridge.channels.auth import (
    ProtocolHttp,
    WebhookAuth,
    answer_id,
    existing_item_id,
    http_url,
    webhook_authenticator,
)
from bridge.channels.base import Channel, ChannelContext, ChannelResult
from bridge.channels.http_errors import answered_gone, response_json, said_instead
from bridge.channels.kordiam_v1 import (
    compact,
    result_links,
    utc_timestamp,
    v1_custom_field,
    v1_publication,
    v1_ref,
    v1_task,
)
from bridge.config import Bool, ChannelSettings, ChannelTimeout, StatusSelector
from bridge.errors import ChannelRejected
from bridge.http import HttpClient, HttpResponse
from bridge.kordiam.models import Element, Publication
from bridge.locks import KeyedLock
from bridge.valueclass import value_class

log = structlog.get_logger(__name__)

CHANNEL_TYPE = "kordiam-webhook"
REMEMBERED_ELEMENTS = 10_000
# What the remembered bodies may take in all, per channel: a body is as large as the element's texts make it, and
# the count alone would let a channel hold 10,000 of the largest for the process's life.
REMEMBERED_BYTES = 16 * 1024 * 1024


# --- options -------------------------------------------------------------------------------------------------


def link_template(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip()
    if "{id}" not in text:
        raise ValueError("must contain {id}, where the item's id goes")
    http_url(text.replace("{id}", "1").split("?", 1)[0].split("#", 1)[0])
    return text


class KordiamWebhookOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    auth: WebhookAuth
    edit_link_template: str | None = None
    open_link_template: str | None = None
    timeout: ChannelTimeout = None  # seconds per request (bridge.config.ChannelTimeout)
    # The receiver answers a bare 404 ({"detail": "Not Found"}, an empty body) for an item it no longer has: count
    # such a 404 as "gone" too (not one saying no route matched), rather than fail every call on that item.
    bare_404_is_gone: Bool = False

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return http_url(value)

    @field_validator("edit_link_template", "open_link_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return link_template(value)


# --- the Global Export body (seed 001) ------------------------------------------------------------------


def global_export_body(element: Element, publications: Iterable[Publication] | None = None) -> dict[str, Any]:
    """The Global Export body (seed 001) for ``element`` with ``publications`` (default: all of its own)."""
    chosen = element.publications if publications is None else tuple(publications)
    # Key by key, as ``bridge.channels.kordiam_v1``'s builders: absent values left out, the lists always there.
    body: dict[str, Any] = {"id": element.id}
    if element.title is not None:
        body["title"] = element.title
    if element.slug is not None:
        body["slug"] = element.slug
    if element.note is not None:
        body["note"] = element.note
    if element.status is not None:
        body["elementStatus"] = v1_ref(element.status)
    if element.modification_date is not None:
        body["modificationDate"] = utc_timestamp(element.modification_date)
    if element.custom_fields:
        body["customFields"] = [v1_custom_field(f) for f in element.custom_fields]
    external = element.external_element
    if external is not None and (linked := compact({"id": external.external_id, "link": external.link})):
        body["externalElement"] = linked
    body["tasks"] = [v1_task(task) for task in element.tasks]
    body["publications"] = [v1_publication(p, element.tasks) for p in chosen]
    body["groups"] = [v1_ref(group) for group in element.groups]
    return body


def status_passes(publication: Publication, statuses: Sequence[StatusSelector] | None) -> bool:
    """The channel's ``statuses`` filter, as the router applies it."""
    if statuses is None:
        return True
    status = publication.status
    return status is not None and any(status.matches(selector) for selector in statuses)


# --- the adapter ---------------------------------------------------------------------------------------------


@value_class
class RemoteElement:
    """What this process knows of an element's remote item."""

    remote_id: str
    sent: bytes  # the body last sent, as sent (JSON): a dict would keep the parsed element's objects alive too
    held: frozenset[int]  # the publications the remote element stands for (their deliveries point at it)


class KordiamWebhookChannel:
    """Kordiam's Global Export protocol: ONE remote element per Kordiam element (hence ``element_scoped``).

    Every publication of an element on the channel reports the same remote id. Upsert ``PUT``s each known id (this
    process's memory, the passed external id, with ``main`` Kordiam's ``externalElement``) until one is not 404,
    else ``POST``s; delete ``PUT``s the element without the publication while siblings remain, then ``DELETE``s
    (the receiver's 404 or 410 is done, ``item_gone``). Calls for one element are serialised in this process.
    Raises ``ChannelRejected`` (401/403, other 4xx, a create answered without an id) and ``ChannelUnavailable``
    (408/409/425/429, 5xx, unreachable).

    A lost create (the receiver made the element, its answer did not arrive) is not found again: the protocol has
    no lookup and the element carries no mark the receiver must keep, so the retry ``POST``s a second one, as
    Kordiam's own Global Export would, unless the receiver refuses it with a 409 naming the element it has
    (``{"id": …}``), which is then updated and linked. No ``find_items`` either, for the same reason.
    """

    element_scoped = True

    def __init__(
        self,
        name: str,
        options: KordiamWebhookOptions,
        http: HttpClient,
        *,
        platforms: Iterable[int],
        statuses: Sequence[StatusSelector] | None = None,
        main: bool = False,
    ) -> None:
        self.name = name
        self.options = options
        self._platforms = frozenset(platforms)
        self._statuses = tuple(statuses) if statuses is not None else None
        self._main = main
        authenticator = webhook_authenticator(options.auth, http, options.url, self._label, timeout=options.timeout)
        self._http = ProtocolHttp(http, authenticator, self._label, timeout=options.timeout)
        self._remote: OrderedDict[int, RemoteElement] = OrderedDict()
        self._remembered_bytes = 0  # the bodies' bytes in ``_remote``
        self._locks = KeyedLock()

    @property
    def _label(self) -> str:
        return f"{CHANNEL_TYPE} channel {self.name!r}"

    def remote(self, element_id: int) -> RemoteElement | None:
        """What this process knows of the element's remote item (for tests and diagnostics)."""
        return self._remote.get(element_id)

    # --- Channel Protocol ---

    async def upsert(self, element: Element, publication: Publication, external_id: str | None) -> ChannelResult:
        async with self._locks.hold(element.id):
            carried = [p for p in element.publications if p.platform.id in self._platforms]
            if all(p.id != publication.id for p in carried):
                carried.append(publication)  # asked for it explicitly: it belongs to the remote element
            known = self._remote.get(element.id)
            exported = {p.id for p in carried if status_passes(p, self._statuses)} | {publication.id}
            held = exported | (known.held & {p.id for p in carried} if known else set())
            body = jsontext.encode(global_export_body(element, carried))  # once, for every call below
            answer: Any = None
            item_id: str | None = None
            for remote_id in self._candidates(element, external_id, known):
                action = f"updating element {element.id} as {remote_id}"
                response = await self._http.request("PUT", self._element_url(remote_id), action, body)
                if self._gone(response, action):
                    log.info("kordiam_webhook.element_gone", channel=self.name, element=element.id, remote=remote_id)
                    continue
                if not response.is_success:
                    raise self._http.error(response, action)
                answer = _put_answer(response)
                item_id = answer_id(answer.get("id") if isinstance(answer, dict) else None) or remote_id
                break
            if item_id is None:
                action = f"creating element {element.id}"
                response = await self._http.request("POST", f"{self.options.url}/element", action, body)
                existing = existing_item_id(response)
                if existing is not None:
                    # It made the element on an earlier try whose answer was lost: update that one and link it.
                    log.warning("kordiam_webhook.adopted", channel=self.name, element=element.id, remote=existing)
                    action = f"updating element {element.id} as {existing} (the receiver's own, named in its 409)"
                    response = await self._http.request("PUT", self._element_url(existing), action, body)
                    if not response.is_success:
                        raise self._http.error(response, action)
                    answer = _put_answer(response)
                    item_id = answer_id(answer.get("id") if isinstance(answer, dict) else None) or existing
                elif not response.is_success:
                    raise self._http.error(response, action)
                else:
                    answer = response_json(response, self._label, action)
                    item_id = answer_id(answer.get("id") if isinstance(answer, dict) else None)
                if item_id is None:
                    raise ChannelRejected(
                        f"{self._label}: {action}: HTTP {response.status_code} without the element's id "
                        '(the Global Export expects {"id": …})'
                        + said_instead(response)
                        + "; the element cannot be linked"
                    )
            self._remember(element.id, item_id, body, frozenset(held))
            links = result_links(answer, item_id, self.options.edit_link_template, self.options.open_link_template)
            return ChannelResult(external_id=item_id, **links)

    async def delete(self, element_id: int, publication_id: int, external_id: str) -> None:
        remote_id = external_id.strip()
        if not remote_id:
            return
        async with self._locks.hold(element_id):
            known = self._remote.get(element_id)
            if known is not None and known.remote_id == remote_id and known.held - {publication_id}:
                # Other publications of the element still stand on the remote element: keep it, without this one.
                sent = jsontext.decode(known.sent)
                body = jsontext.encode(
                    {**sent, "publications": [p for p in sent.get("publications", []) if p.get("id") != publication_id]}
                )
                action = f"removing publication {publication_id} from element {element_id} ({remote_id})"
                response = await self._http.request("PUT", self._element_url(remote_id), action, body)
                if self._gone(response, action):
                    self._forget(element_id)
                    return
                if not response.is_success:
                    raise self._http.error(response, action)
                self._remember(element_id, remote_id, body, known.held - {publication_id})
                return
            action = f"deleting element {element_id} ({remote_id})"
            response = await self._http.request("DELETE", self._element_url(remote_id), action)
            if not (response.is_success or self._gone(response, action)):
                raise self._http.error(response, action)
            if known is not None and known.remote_id == remote_id:
                self._forget(element_id)

    async def aclose(self) -> None:
        self._remote.clear()
        self._remembered_bytes = 0

    # --- helpers ---

    def _candidates(self, element: Element, external_id: str | None, known: RemoteElement | None) -> list[str]:
        """Ids the element's remote item may have, most trusted first (see the module docstring)."""
        linked = element.external_element.external_id if element.external_element and self._main else None
        found = [known.remote_id if known else None, external_id, linked]
        return list(dict.fromkeys(text.strip() for text in found if text and text.strip()))

    def _gone(self, response: HttpResponse, action: str) -> bool:
        return answered_gone(response, self._label, action, bare_404_is_gone=self.options.bare_404_is_gone)

    def _element_url(self, remote_id: str) -> str:
        return f"{self.options.url}/element/{quote(remote_id, safe='')}"

    def _remember(self, element_id: int, remote_id: str, sent: bytes, held: frozenset[int]) -> None:
        """Keep the most recently written elements, at most ``REMEMBERED_ELEMENTS`` and ``REMEMBERED_BYTES`` of
        bodies: one forgotten costs what a restart does (the delivery's external id is tried instead; a delete
        removes the remote element rather than PUT it without the publication, which only the deletion of the
        whole element asks of a channel whose siblings stand on it, so its other publications' deletes follow)."""
        self._forget(element_id)
        # A copy: orjson's bytes keep the buffer they were written in, about three times their length.
        remote = RemoteElement(remote_id, bytes(memoryview(sent)), held)
        self._remote[element_id] = remote
        self._remembered_bytes += len(remote.sent)
        while len(self._remote) > REMEMBERED_ELEMENTS or self._remembered_bytes > REMEMBERED_BYTES:
            _, oldest = self._remote.popitem(last=False)
            self._remembered_bytes -= len(oldest.sent)

    def _forget(self, element_id: int) -> None:
        forgotten = self._remote.pop(element_id, None)
        if forgotten is not None:
            self._remembered_bytes -= len(forgotten.sent)


def _put_answer(response: HttpResponse) -> Any:
    """A ``PUT``'s answer if it is JSON, else None: seed 001 gives only the ``POST`` an answer (the id), and Kordiam
    reads nothing of a ``PUT``'s, so a receiver may answer it with a page or ``OK``; the update was made."""
    if not response.content.strip():
        return None
    try:
        return response.json()
    except ValueError:
        return None


def create(settings: ChannelSettings, options: BaseModel, context: ChannelContext) -> Channel:
    assert isinstance(options, KordiamWebhookOptions)
    return KordiamWebhookChannel(
        settings.name,
        options,
        context.http,
        platforms=settings.platforms,
        statuses=settings.statuses,
        main=settings.main,
    )

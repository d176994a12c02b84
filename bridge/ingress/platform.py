"""The Platform integration receiver (seed 002), answering as a CMS connector would.

``POST {path}/oauth2/token`` takes HTTP Basic ``api_user:api_secret`` (or seed 002's form body) and answers a
bearer token with ``expires_in``; every other call needs that token. ``POST {path}/publication``, ``PUT``/
``DELETE {path}/publication/{id}`` and ``POST {path}/files`` each become one notification on the queue (the
element body and the event; ``DELETE`` has no body, so the element comes from ``{id}``). ``POST {path}/statuses``
is accepted and not enqueued: the worker reads statuses through the Kordiam API.

Publication answers carry what the state store knows about the publication (the CMS item's id and links, the main
channel's first), or, on first sight, the Kordiam publication id as a stable placeholder id and no links: the
worker's feedback writes the links through the API once a channel delivered the story.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bridge.ingress.auth import KeyExchange
from bridge.ingress.common import (
    ContinueIf,
    ElementCalls,
    Enqueuer,
    authenticate,
    json_object,
    log,
    problem,
    state_unavailable,
    token_route,
)
from bridge.ingress.lookup import ID_SEGMENT, NO_ID, ElementLookup, distinct_elements, id_answer, positive_int
from bridge.pipeline.notification import Event

RECEIVER = "platform"
SOURCE = "ingress-platform"


class PlatformReceiver:
    """Answers Kordiam's Platform integration calls under ``path``."""

    def __init__(self, path: str, exchange: KeyExchange, enqueuer: Enqueuer, lookup: ElementLookup) -> None:
        self.path = path
        self._exchange = exchange
        self._calls = ElementCalls(RECEIVER, SOURCE, exchange, enqueuer)
        self._lookup = lookup

    def routes(self, expect: ContinueIf) -> list[web.RouteDef]:
        publication, checked = f"{self.path}/publication", expect(self._exchange)
        return [
            token_route(f"{self.path}/oauth2/token", self._exchange, RECEIVER, "platform.token", expect),
            web.post(f"{self.path}/statuses", self._statuses, name="platform.statuses", expect_handler=checked),
            web.post(publication, self._create, name="platform.create", expect_handler=checked),
            web.put(f"{publication}/{{{ID_SEGMENT}}}", self._update, name="platform.update", expect_handler=checked),
            web.delete(f"{publication}/{{{ID_SEGMENT}}}", self._delete, name="platform.delete", expect_handler=checked),
            web.post(f"{self.path}/files", self._update, name="platform.files", expect_handler=checked),
        ]

    async def _statuses(self, request: web.Request) -> web.Response:
        if (refused := authenticate(request, self._exchange, RECEIVER)) is not None:
            return refused
        parsed = await json_object(request, "seed 002's statuses")
        if isinstance(parsed, web.Response):
            return parsed
        _, payload = parsed
        # Logged and answered back: a platform id only (a number, or its digits), never whatever else a body holds.
        platform = payload.get("platform")
        if isinstance(platform, bool) or not isinstance(platform, int | str) or positive_int(str(platform)) is None:
            return problem(400, "body must be a JSON object with `platform`, a platform id (seed 002's statuses)")
        log.info("statuses_received", platform=platform)
        return web.json_response({"platform": platform})

    async def _create(self, request: web.Request) -> web.Response:
        return await self._element_call(request, Event.CREATED)

    async def _update(self, request: web.Request) -> web.Response:
        return await self._element_call(request, Event.UPDATED)

    async def _element_call(self, request: web.Request, event: Event) -> web.Response:
        taken = await self._calls.take(request, event)
        if isinstance(taken, web.Response):
            return taken
        payload, notification = taken
        try:
            links = await self._links(notification.element_id, _publication_id(payload), request)
        except Exception as error:  # enqueued already: Kordiam's retry makes the usual harmless duplicate
            return state_unavailable(error)
        return web.json_response(links)

    async def _links(self, element_id: int, publication_id: int | None, request: web.Request) -> dict[str, Any]:
        deliveries = [
            d
            for d in await self._lookup.deliveries(element_id)
            if publication_id is None or d.publication_id == publication_id
        ]
        deliveries.sort(key=lambda d: d.channel != self._lookup.main_channel)
        if deliveries:
            known = deliveries[0]
            return {
                "id": id_answer(known.external_id),
                "cmsEditLink": known.edit_link,
                "cmsOpenLink": known.open_link,
                "cmsEditLinkTitle": known.edit_link_title,
                "cmsOpenLinkTitle": known.open_link_title,
            }
        answered = request.match_info.get("id")
        placeholder: int | str = publication_id or element_id
        if answered is not None and answered.strip().casefold() not in NO_ID:
            placeholder = id_answer(answered)
        return {"id": placeholder, "cmsEditLink": None, "cmsOpenLink": None}

    async def _delete(self, request: web.Request) -> web.Response:
        return await self._calls.delete(request, self._elements_for)

    async def _elements_for(self, external_id: str) -> list[int]:
        """The element whose CMS id the worker delivered, and the element of the placeholder (a Kordiam publication
        id) answered earlier: a number may be both, and only Kordiam knows which one it deleted."""
        found = await self._lookup.element_for_external_id(external_id)
        placeholder = None
        if (publication_id := positive_int(external_id)) is not None:
            placeholder = await self._lookup.element_for_publication(publication_id)
        return distinct_elements(found, placeholder)


def _publication_id(payload: dict[str, Any]) -> int | None:
    publication = payload.get("publication")
    if isinstance(publication, dict) and isinstance(publication.get("id"), int):
        return int(publication["id"])
    return None

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

from bridge.ingress import metrics
from bridge.ingress.auth import KeyExchange
from bridge.ingress.common import (
    Enqueuer,
    QueueUnavailable,
    authenticate,
    element_body,
    log,
    problem,
    token_route,
)
from bridge.ingress.lookup import NO_ID, ElementLookup, positive_int
from bridge.pipeline.notification import Event, Notification, resync_notification

RECEIVER = "platform"
SOURCE = "ingress-platform"


class PlatformReceiver:
    """Answers Kordiam's Platform integration calls under ``path``."""

    def __init__(self, path: str, exchange: KeyExchange, enqueuer: Enqueuer, lookup: ElementLookup) -> None:
        self.path = path
        self._exchange = exchange
        self._enqueuer = enqueuer
        self._lookup = lookup

    def routes(self) -> list[web.RouteDef]:
        return [
            token_route(f"{self.path}/oauth2/token", self._exchange, RECEIVER, "platform.token"),
            web.post(f"{self.path}/statuses", self._statuses, name="platform.statuses"),
            web.post(f"{self.path}/publication", self._create, name="platform.create"),
            web.put(f"{self.path}/publication/{{id}}", self._update, name="platform.update"),
            web.delete(f"{self.path}/publication/{{id}}", self._delete, name="platform.delete"),
            web.post(f"{self.path}/files", self._update, name="platform.files"),
        ]

    async def _statuses(self, request: web.Request) -> web.Response:
        if (refused := authenticate(request, self._exchange, RECEIVER)) is not None:
            return refused
        if request.content_type != "application/json":
            return problem(415, f"Content-Type must be application/json, not {request.content_type or 'missing'}")
        try:
            payload = await request.json()
        except ValueError as error:
            return problem(400, f"body is not JSON: {error}")
        if not isinstance(payload, dict) or "platform" not in payload:
            return problem(400, "body must be a JSON object with `platform` (seed 002's statuses)")
        log.info("statuses_received", platform=payload.get("platform"))
        return web.json_response({"platform": payload["platform"]})

    async def _create(self, request: web.Request) -> web.Response:
        return await self._element_call(request, Event.CREATED)

    async def _update(self, request: web.Request) -> web.Response:
        return await self._element_call(request, Event.UPDATED)

    async def _element_call(self, request: web.Request, event: Event) -> web.Response:
        if (refused := authenticate(request, self._exchange, RECEIVER)) is not None:
            return refused
        parsed = await element_body(request)
        if isinstance(parsed, web.Response):
            return parsed
        body, payload, notification = parsed
        try:
            await self._enqueuer.enqueue(body, notification, event, SOURCE)
        except QueueUnavailable:
            return problem(503, "queue unavailable, retry later")
        publication_id = _publication_id(payload)
        return web.json_response(await self._links(notification.element_id, publication_id, request))

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
                "id": int(known.external_id) if positive_int(known.external_id) else known.external_id,
                "cmsEditLink": known.edit_link,
                "cmsOpenLink": known.open_link,
                "cmsEditLinkTitle": known.edit_link_title,
                "cmsOpenLinkTitle": known.open_link_title,
            }
        answered = request.match_info.get("id")
        placeholder: int | str = publication_id or element_id
        if answered is not None and answered.strip().casefold() not in NO_ID:
            placeholder = int(answered) if positive_int(answered) else answered
        return {"id": placeholder, "cmsEditLink": None, "cmsOpenLink": None}

    async def _delete(self, request: web.Request) -> web.Response:
        if (refused := authenticate(request, self._exchange, RECEIVER)) is not None:
            return refused
        external_id = request.match_info["id"]
        element_id = await self._element_for(external_id)
        if element_id is None:
            metrics.UNMAPPED.labels(RECEIVER).inc()
            log.warning("delete_unmapped", receiver=RECEIVER, external_id=external_id[:80])
            return web.json_response({"id": None, "mapped": False})
        body, _ = resync_notification(element_id, source=SOURCE, event=Event.DELETED.value)
        try:
            await self._enqueuer.enqueue(body, Notification(element_id, Event.DELETED), Event.DELETED, SOURCE)
        except QueueUnavailable:
            return problem(503, "queue unavailable, retry later")
        return web.json_response({"id": int(external_id) if positive_int(external_id) else external_id})

    async def _element_for(self, external_id: str) -> int | None:
        """The CMS id the worker delivered, else the placeholder (a Kordiam publication id) answered earlier."""
        if external_id.strip().casefold() in NO_ID:
            return None
        found = await self._lookup.element_for_external_id(external_id)
        if found is None and (publication_id := positive_int(external_id)) is not None:
            found = await self._lookup.element_for_publication(publication_id)
        return found


def _publication_id(payload: dict[str, Any]) -> int | None:
    publication = payload.get("publication")
    if isinstance(publication, dict) and isinstance(publication.get("id"), int):
        return int(publication["id"])
    return None

"""The Global Export receiver (seed 001): ``POST {path}/element``, ``PUT``/``DELETE {path}/element/{id}``.

Each call becomes one notification on the queue: the element body exactly as Kordiam sent it (its
``modificationDate`` lets the worker skip a stale one) with the event as the ``event`` attribute. ``DELETE`` has no
body, so the element comes from ``{id}`` (``bridge.ingress.lookup``) and the notification is ``{"id", "event"}``.

``POST`` answers ``{"id": <the Kordiam element id>}`` at once: Kordiam stores it as the element's external id and
sends it back in later paths, until the worker's feedback links the real CMS item (``feedback.link_element``).
"""

from __future__ import annotations

from aiohttp import web

from bridge.ingress import metrics
from bridge.ingress.auth import CredentialCheck, KeyExchange
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

RECEIVER = "global_export"
SOURCE = "ingress-global-export"


class GlobalExportReceiver:
    """Answers Kordiam's Global Export calls under ``path``; with ``api_key`` auth also its token path."""

    def __init__(
        self,
        path: str,
        check: CredentialCheck | KeyExchange,
        enqueuer: Enqueuer,
        lookup: ElementLookup,
        *,
        token_path: str | None = None,
    ) -> None:
        self.path = path
        self._check = check
        self._token_path = token_path
        self._enqueuer = enqueuer
        self._lookup = lookup

    def routes(self) -> list[web.RouteDef]:
        routes = [
            web.post(f"{self.path}/element", self._create, name="global_export.create"),
            web.put(f"{self.path}/element/{{id}}", self._update, name="global_export.update"),
            web.delete(f"{self.path}/element/{{id}}", self._delete, name="global_export.delete"),
        ]
        if isinstance(self._check, KeyExchange) and self._token_path is not None:
            routes.append(token_route(f"{self.path}{self._token_path}", self._check, RECEIVER, "global_export.token"))
        return routes

    async def _create(self, request: web.Request) -> web.Response:
        return await self._element_call(request, Event.CREATED, status=201)

    async def _update(self, request: web.Request) -> web.Response:
        return await self._element_call(request, Event.UPDATED, status=200)

    async def _element_call(self, request: web.Request, event: Event, *, status: int) -> web.Response:
        if (refused := authenticate(request, self._check, RECEIVER)) is not None:
            return refused
        parsed = await element_body(request)
        if isinstance(parsed, web.Response):
            return parsed
        body, _, notification = parsed
        try:
            await self._enqueuer.enqueue(body, notification, event, SOURCE)
        except QueueUnavailable:
            return problem(503, "queue unavailable, retry later")
        answered = request.match_info.get("id") if event is Event.UPDATED else None
        return web.json_response({"id": self._answer_id(answered, notification.element_id)}, status=status)

    @staticmethod
    def _answer_id(answered: str | None, element_id: int) -> int | str:
        """The id Kordiam keeps: the one it already holds (a PUT), else the element id (a POST or a null id)."""
        if answered is None or answered.strip().casefold() in NO_ID:
            return element_id
        return int(answered) if positive_int(answered) is not None else answered

    async def _delete(self, request: web.Request) -> web.Response:
        if (refused := authenticate(request, self._check, RECEIVER)) is not None:
            return refused
        external_id = request.match_info["id"]
        element_id = await self._element_for(external_id)
        if element_id is None:
            metrics.UNMAPPED.labels(RECEIVER).inc()
            log.warning("delete_unmapped", receiver=RECEIVER, external_id=external_id[:80])
            # Nothing to enqueue; a 404 would only make Kordiam retry the same unmappable call.
            return web.json_response({"id": None, "mapped": False}, status=200)
        body, _ = resync_notification(element_id, source=SOURCE, event=Event.DELETED.value)
        try:
            await self._enqueuer.enqueue(body, Notification(element_id, Event.DELETED), Event.DELETED, SOURCE)
        except QueueUnavailable:
            return problem(503, "queue unavailable, retry later")
        return web.json_response({"id": self._answer_id(external_id, element_id)}, status=200)

    async def _element_for(self, external_id: str) -> int | None:
        if external_id.strip().casefold() in NO_ID:
            return None
        found = await self._lookup.element_for_external_id(external_id)
        return found if found is not None else positive_int(external_id)

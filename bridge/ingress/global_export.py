"""The Global Export receiver (seed 001): ``POST {path}/element``, ``PUT``/``DELETE {path}/element/{id}``.

Each call becomes one notification on the queue: the element body exactly as Kordiam sent it (its
``modificationDate`` lets the worker skip a stale one) with the event as the ``event`` attribute. ``DELETE`` has no
body, so the element comes from ``{id}`` (``bridge.ingress.lookup``) and the notification is ``{"id", "event"}``.

``POST`` answers ``{"id": <the Kordiam element id>}`` at once: Kordiam stores it as the element's external id and
sends it back in later paths, until the worker's feedback links the real CMS item (``feedback.link_element``).
"""

from __future__ import annotations

from aiohttp import web

from bridge.ingress.auth import CredentialCheck, KeyExchange
from bridge.ingress.common import ContinueIf, ElementCalls, Enqueuer, token_route
from bridge.ingress.lookup import ID_SEGMENT, NO_ID, ElementLookup, distinct_elements, id_answer, positive_int
from bridge.pipeline.notification import Event

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
        self._calls = ElementCalls(RECEIVER, SOURCE, check, enqueuer)
        self._lookup = lookup

    def routes(self, expect: ContinueIf) -> list[web.RouteDef]:
        element, checked = f"{self.path}/element", expect(self._check)
        routes = [
            web.post(element, self._create, name="global_export.create", expect_handler=checked),
            web.put(f"{element}/{{{ID_SEGMENT}}}", self._update, name="global_export.update", expect_handler=checked),
            web.delete(
                f"{element}/{{{ID_SEGMENT}}}", self._delete, name="global_export.delete", expect_handler=checked
            ),
        ]
        if isinstance(self._check, KeyExchange) and self._token_path is not None:
            token_path = f"{self.path}{self._token_path}"
            routes.append(token_route(token_path, self._check, RECEIVER, "global_export.token", expect))
        return routes

    async def _create(self, request: web.Request) -> web.Response:
        return await self._element_call(request, Event.CREATED, status=201)

    async def _update(self, request: web.Request) -> web.Response:
        return await self._element_call(request, Event.UPDATED, status=200)

    async def _element_call(self, request: web.Request, event: Event, *, status: int) -> web.Response:
        taken = await self._calls.take(request, event)
        if isinstance(taken, web.Response):
            return taken
        _, notification = taken
        # The id Kordiam keeps: the one it already holds (a PUT), else the element id (a POST or a null id).
        answered = request.match_info.get("id") if event is Event.UPDATED else None
        if answered is None or answered.strip().casefold() in NO_ID:
            return web.json_response({"id": notification.element_id}, status=status)
        return web.json_response({"id": id_answer(answered)}, status=status)

    async def _delete(self, request: web.Request) -> web.Response:
        return await self._calls.delete(request, self._elements_for)

    async def _elements_for(self, external_id: str) -> list[int]:
        """The element whose CMS id the worker linked, and the element the ingress answered this id for itself: a
        number may be both (a CMS's post id equal to an unlinked element's id), and only Kordiam knows which one
        it deleted."""
        found = await self._lookup.element_for_external_id(external_id)
        return distinct_elements(found, positive_int(external_id))

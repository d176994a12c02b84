"""A Platform integration connector (seed 002) over real HTTP, in a background thread, for ``kordiam-platform``.

It behaves as seed 002 describes the CMS side:

- ``POST {url}/oauth2/token``: reads ``Authorization: Basic base64(api_user:api_secret)``, compares it with its
  own API user and secret, and answers ``{"access_token", "token_type": "bearer", "expires_in"}`` or 401;
- every other request needs ``Authorization: Bearer <an issued, unexpired, unrevoked token>`` (else 401);
- ``POST {url}/statuses``: stores the platform's statuses (404 when built with ``statuses_supported=False``,
  like a connector without that legacy endpoint);
- ``POST {url}/publication``, ``PUT {url}/publication/{id}``, ``DELETE {url}/publication/{id}``: store, replace
  and remove publications; create and update answer ``{"id", "cmsEditLink", "cmsOpenLink",
  "cmsOpenLinkTitle", "cmsEditLinkTitle"}``; an unknown id is a 404.

Inspection: ``publications()``, ``statuses()``, ``token_requests``, ``calls()``; ``remove()`` deletes a
publication "by hand", ``revoke_tokens()`` invalidates every token; failures via ``fail_next``/``stall_next``.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import secrets
import time
from typing import Any

from tests.servers.global_export import Answer, Request, ThreadedJsonServer


class PlatformIntegrationServer(ThreadedJsonServer):
    def __init__(
        self,
        api_user: str = "api_5d4be039440a9004126215",
        api_secret: str = "5d4be039440c5479906369",
        *,
        token_ttl: int = 943199,
        token_path: str = "/oauth2/token",
        statuses_supported: bool = True,
        prefix: str = "/wp-json/wp-desk-net/v1",
    ) -> None:
        super().__init__(prefix=prefix)
        self.api_user = api_user
        self.api_secret = api_secret
        self.token_ttl = token_ttl
        self.token_path = token_path
        self.statuses_supported = statuses_supported
        self.token_requests = 0
        self._tokens: dict[str, float] = {}
        self._publications: dict[str, dict[str, Any]] = {}
        self._statuses: list[dict[str, Any]] = []
        self._ids = itertools.count(9369832)

    # --- inspection ---

    def publications(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return json.loads(json.dumps(self._publications))  # type: ignore[no-any-return]

    def statuses(self) -> list[dict[str, Any]]:
        with self._lock:
            return json.loads(json.dumps(self._statuses))  # type: ignore[no-any-return]

    def remove(self, cms_id: str) -> None:
        with self._lock:
            del self._publications[cms_id]

    def revoke_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def links(self, cms_id: str) -> dict[str, Any]:
        return {
            "id": int(cms_id),
            "cmsEditLink": f"{self.root_url}/wp-admin/post.php?post={cms_id}&action=edit",
            "cmsOpenLink": f"{self.root_url}/?p={cms_id}",
            "cmsOpenLinkTitle": "View post",
            "cmsEditLinkTitle": "Edit post",
        }

    # --- protocol ---

    def route(self, request: Request) -> Answer:
        if request.path == self.token_path:
            if request.method != "POST":
                return 405, {"message": "POST only"}, {}
            return self._issue_token(request)
        authorization = request.header("Authorization") or ""
        token = authorization[7:] if authorization.startswith("Bearer ") else ""
        expiry = self._tokens.get(token)
        if expiry is None or expiry <= time.monotonic():
            return 401, {"code": "rest_forbidden", "message": "Invalid or expired token"}, {}
        parts = [part for part in request.path.split("/") if part]
        if parts == ["statuses"] and request.method == "POST":
            if not self.statuses_supported:
                return 404, {"code": "rest_no_route", "message": "No route was found"}, {}
            body = request.body
            if not (
                isinstance(body, dict)
                and isinstance(body.get("platform"), int)
                and isinstance(body.get("activeStatuses"), list)
                and isinstance(body.get("deactivatedStatuses"), list)
            ):
                return 400, {"message": "platform, activeStatuses and deactivatedStatuses are required"}, {}
            self._statuses.append(body)
            return 200, {"success": True}, {}
        if not parts or parts[0] != "publication" or len(parts) > 2:
            return 404, {"code": "rest_no_route", "message": f"No route {request.method} {request.path}"}, {}
        item = parts[1] if len(parts) == 2 else None
        if request.method == "POST" and item is None:
            invalid = _invalid_publication(request.body)
            if invalid:
                return 422, {"code": "invalid_publication", "message": invalid}, {}
            cms_id = str(next(self._ids))
            self._publications[cms_id] = request.body
            return 201, self.links(cms_id), {}
        if item is None:
            return 405, {"message": f"{request.method} needs a publication id"}, {}
        if request.method == "PUT":
            if item not in self._publications:
                return 404, {"code": "not_found", "message": f"Post {item} does not exist"}, {}
            invalid = _invalid_publication(request.body)
            if invalid:
                return 422, {"code": "invalid_publication", "message": invalid}, {}
            self._publications[item] = request.body
            return 200, self.links(item), {}
        if request.method == "DELETE":
            if self._publications.pop(item, None) is None:
                return 404, {"code": "not_found", "message": f"Post {item} does not exist"}, {}
            return 200, {"success": True}, {}
        return 405, {"message": f"{request.method} not allowed"}, {}

    def _issue_token(self, request: Request) -> Answer:
        self.token_requests += 1
        authorization = request.header("Authorization") or ""
        if not authorization.startswith("Basic "):
            return 401, {"message": "Basic authorization required"}, {}
        try:
            user, _, secret = base64.b64decode(authorization[6:], validate=True).decode().partition(":")
        except (ValueError, binascii.Error):
            return 401, {"message": "malformed Basic authorization"}, {}
        if user != self.api_user or secret != self.api_secret:
            return 401, {"message": "Invalid API user or secret"}, {}
        token = "-".join(secrets.token_hex(4) for _ in range(4))
        self._tokens[token] = time.monotonic() + self.token_ttl
        return 200, {"access_token": token, "token_type": "bearer", "expires_in": self.token_ttl}, {}


def _invalid_publication(body: Any) -> str | None:
    """What the connectors read: the element id and one publication with its id."""
    if not isinstance(body, dict) or not isinstance(body.get("id"), int):
        return "id (the Kordiam element id) is required"
    publication = body.get("publication")
    if not isinstance(publication, dict) or not isinstance(publication.get("id"), int):
        return "publication.id is required"
    if not isinstance(body.get("tasks", []), list):
        return "tasks must be a list"
    return None

"""A small Mailchimp Marketing API v3 server for tests: real HTTP, the campaign endpoints the bridge uses.

Built from Mailchimp's public API reference (paths, bodies, problem-JSON errors), not from a recording; where the
reference does not give the exact wording of an error, the ``detail`` texts here are our own, in Mailchimp's
style. The rules that matter to the adapter are enforced:

- every ``/3.0`` request needs HTTP Basic auth whose password is the API key (any user name) → else 401
  ``API Key Invalid``
- ``schedule_time`` must be on the quarter hour (:00, :15, :30, :45, zero seconds), in the future and at most a
  year ahead; the campaign needs a subject, sender name, reply-to and content → else 400
- a scheduled campaign cannot be edited (settings or content) or deleted until it is unscheduled → 400
- a campaign that is sending or sent cannot be edited, scheduled or unscheduled → 400
- an unknown campaign or audience → 404 ``Resource Not Found``

State lives in memory. ``/_admin`` (no auth) shows it and changes it for tests: ``GET /_admin/campaigns``,
``GET /_admin/requests``, ``POST /_admin/campaigns/{id}/send`` (Mailchimp sends it now), ``POST /_admin/faults``
(``{"status": 429, "count": 1, "retry_after": 2}``: the next requests fail like that; ``{"delay": 3, "path":
"/actions/schedule"}``: the next such request is carried out and its answer held 3 s, lost to a client that gives
up sooner; ``path``, an end of the request path, limits any fault to those requests), ``POST /_admin/reset``.

Run it by hand: ``python -m tests.servers.mailchimp --port 8710`` (key ``test-key-us21``, audience ``list1``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import datetime as dt
import itertools
import json
import secrets
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ERROR_DOCS = "https://mailchimp.com/developer/marketing/docs/errors/"
EDITABLE = frozenset({"save", "paused"})
CAMPAIGN_TYPES = frozenset({"regular", "plaintext", "absplit", "rss", "variate"})


def problem(status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        "type": ERROR_DOCS,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": str(uuid.uuid4()),
    }
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def not_found() -> JSONResponse:
    return problem(404, "Resource Not Found", "The requested resource could not be found.")


def bad_request(detail: str) -> JSONResponse:
    return problem(400, "Bad Request", detail)


def invalid(field_name: str, message: str) -> JSONResponse:
    detail = "The resource submitted could not be validated. For field-specific details, see the 'errors' array."
    return problem(400, "Invalid Resource", detail, [{"field": field_name, "message": message}])


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat()


@dataclass
class Fault:
    """The next ``count`` requests (whose path ends with ``path``, if given) fail with ``status``, or, with
    ``delay``, are carried out and answered only after ``delay`` seconds."""

    status: int
    count: int
    retry_after: float | None = None
    delay: float | None = None
    path: str | None = None


@dataclass
class MailchimpState:
    api_key: str
    lists: dict[str, dict[str, Any]]
    data_centre: str = "us21"
    campaigns: dict[str, dict[str, Any]] = field(default_factory=dict)
    contents: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    web_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(100_001))
    lock: threading.Lock = field(default_factory=threading.Lock)


def create_app(state: MailchimpState) -> Starlette:
    def authorised(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        _, colon, password = decoded.partition(":")
        return bool(colon) and secrets.compare_digest(password, state.api_key)

    async def json_body(request: Request) -> dict[str, Any] | JSONResponse:
        raw = await request.body()
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            return problem(400, "JSON Parse Error", "We encountered an unspecified JSON parsing error.")
        if not isinstance(data, dict):
            return invalid("", "Schema describes object, array found instead")
        return data

    def api(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            state.requests.append({"method": request.method, "path": request.url.path, "time": time.time()})
            if not authorised(request):
                return problem(
                    401,
                    "API Key Invalid",
                    "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
                )
            with state.lock:
                fault = next((f for f in state.faults if f.path is None or request.url.path.endswith(f.path)), None)
                if fault is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        state.faults.remove(fault)
            if fault is not None and fault.delay is not None:
                held: Response = await handler(request)
                await asyncio.sleep(fault.delay)
                return held
            if fault is not None:
                response = problem(
                    fault.status,
                    "Too Many Requests" if fault.status == 429 else "Internal Server Error",
                    "You have exceeded the limit of 10 simultaneous connections."
                    if fault.status == 429
                    else "An unexpected internal error has occurred.",
                )
                if fault.retry_after is not None:
                    response.headers["Retry-After"] = str(int(fault.retry_after))
                return response
            result: Response = await handler(request)
            return result

        return endpoint

    def campaign_view(campaign: dict[str, Any], fields: str | None) -> dict[str, Any]:
        if not fields:
            return campaign
        wanted = {name.strip().split(".")[0] for name in fields.split(",")}
        return {key: value for key, value in campaign.items() if key in wanted}

    async def get_list(request: Request) -> Response:
        audience = state.lists.get(request.path_params["list_id"])
        if audience is None:
            return not_found()
        return JSONResponse(audience)

    async def create_campaign(request: Request) -> Response:
        body = await json_body(request)
        if isinstance(body, JSONResponse):
            return body
        kind = body.get("type")
        if kind not in CAMPAIGN_TYPES:
            return invalid("type", "Value is not one of the allowed values: " + ", ".join(sorted(CAMPAIGN_TYPES)))
        recipients = body.get("recipients") or {}
        settings = body.get("settings") or {}
        if not isinstance(recipients, dict) or not isinstance(settings, dict):
            return invalid("settings", "Schema describes object")
        list_id = recipients.get("list_id")
        if list_id is not None and list_id not in state.lists:
            return invalid("recipients.list_id", "The list_id is not valid.")
        campaign_id = secrets.token_hex(5)
        web_id = next(state.web_ids)
        campaign = {
            "id": campaign_id,
            "web_id": web_id,
            "type": kind,
            "create_time": iso(dt.datetime.now(dt.UTC)),
            "archive_url": f"http://eepurl.com/t{web_id}",
            "long_archive_url": f"https://{state.data_centre}.campaign-archive.com/?u=test&id={campaign_id}",
            "status": "save",
            "emails_sent": 0,
            "send_time": "",
            "content_type": "html",
            "recipients": {"list_id": list_id, "list_name": state.lists[list_id]["name"] if list_id else ""},
            "settings": {key: value for key, value in settings.items() if isinstance(key, str)},
        }
        state.campaigns[campaign_id] = campaign
        return JSONResponse(campaign)

    async def list_campaigns(request: Request) -> Response:
        """``GET /campaigns``: ``list_id``, ``status``, ``sort_field`` (create_time, send_time), ``sort_dir``,
        ``count`` (at most 1,000), ``offset``; ``fields`` as ``campaigns.<key>`` (top-level keys only)."""
        query = request.query_params
        try:
            count, offset = int(query.get("count", "10")), int(query.get("offset", "0"))
        except ValueError:
            return invalid("count", "Value must be an integer.")
        if not 1 <= count <= 1000 or offset < 0:
            return invalid("count", "Value must be between 1 and 1000.")
        found = [
            campaign
            for campaign in state.campaigns.values()
            if query.get("list_id") in (None, campaign["recipients"].get("list_id"))
            and query.get("status") in (None, campaign["status"])
        ]
        sort_field = query.get("sort_field")
        if sort_field is not None:
            if sort_field not in ("create_time", "send_time"):
                return invalid("sort_field", "Value is not one of the allowed values: create_time, send_time")
            # Created in order within one second: dict order breaks the tie, as Mailchimp's ids do.
            found = sorted(found, key=lambda campaign: campaign[sort_field])
            if query.get("sort_dir", "ASC").upper() == "DESC":
                found.reverse()
        fields = query.get("fields")
        wanted = None
        if fields:
            wanted = {name.strip().split(".")[1] for name in fields.split(",") if name.strip().startswith("campaigns.")}
        page = [
            {key: value for key, value in campaign.items() if wanted is None or key in wanted}
            for campaign in found[offset : offset + count]
        ]
        return JSONResponse({"campaigns": page, "total_items": len(found)})

    async def get_campaign(request: Request) -> Response:
        campaign = state.campaigns.get(request.path_params["campaign_id"])
        if campaign is None:
            return not_found()
        return JSONResponse(campaign_view(campaign, request.query_params.get("fields")))

    def refuse_edit(campaign: dict[str, Any]) -> JSONResponse | None:
        if campaign["status"] == "schedule":
            return bad_request("This campaign is scheduled and cannot be edited. Unschedule it first.")
        if campaign["status"] not in EDITABLE:
            return bad_request(f"This campaign has a status of {campaign['status']} and can no longer be edited.")
        return None

    async def update_campaign(request: Request) -> Response:
        campaign = state.campaigns.get(request.path_params["campaign_id"])
        if campaign is None:
            return not_found()
        body = await json_body(request)
        if isinstance(body, JSONResponse):
            return body
        refused = refuse_edit(campaign)
        if refused is not None:
            return refused
        settings = body.get("settings")
        if not isinstance(settings, dict):
            return invalid("settings", "This value should not be blank.")
        recipients = body.get("recipients")
        if isinstance(recipients, dict) and "list_id" in recipients:
            if recipients["list_id"] not in state.lists:
                return invalid("recipients.list_id", "The list_id is not valid.")
            campaign["recipients"] = {
                "list_id": recipients["list_id"],
                "list_name": state.lists[recipients["list_id"]]["name"],
            }
        campaign["settings"].update(settings)
        return JSONResponse(campaign)

    async def delete_campaign(request: Request) -> Response:
        campaign = state.campaigns.get(request.path_params["campaign_id"])
        if campaign is None:
            return not_found()
        if campaign["status"] == "schedule":
            return bad_request("This campaign is scheduled and cannot be deleted. Unschedule it first.")
        if campaign["status"] == "sending":
            return bad_request("This campaign is sending and cannot be deleted.")
        del state.campaigns[campaign["id"]]
        state.contents.pop(campaign["id"], None)
        return Response(status_code=204)

    async def set_content(request: Request) -> Response:
        campaign = state.campaigns.get(request.path_params["campaign_id"])
        if campaign is None:
            return not_found()
        body = await json_body(request)
        if isinstance(body, JSONResponse):
            return body
        refused = refuse_edit(campaign)
        if refused is not None:
            return refused
        if not any(key in body for key in ("html", "plain_text", "url", "template", "archive")):
            return bad_request("One of html, plain_text, url, template or archive is required.")
        if "html" in body and not isinstance(body["html"], str):
            return invalid("html", "Schema describes string")
        content = {"html": body.get("html", ""), "plain_text": body.get("plain_text", ""), "_links": []}
        state.contents[campaign["id"]] = content
        return JSONResponse(content)

    async def get_content(request: Request) -> Response:
        campaign_id = request.path_params["campaign_id"]
        if campaign_id not in state.campaigns:
            return not_found()
        return JSONResponse(state.contents.get(campaign_id, {"html": "", "plain_text": "", "_links": []}))

    async def schedule(request: Request) -> Response:
        campaign = state.campaigns.get(request.path_params["campaign_id"])
        if campaign is None:
            return not_found()
        body = await json_body(request)
        if isinstance(body, JSONResponse):
            return body
        if campaign["status"] == "schedule":
            return bad_request("This campaign is already scheduled. Unschedule it first to change its time.")
        if campaign["status"] not in EDITABLE:
            return bad_request(f"This campaign has a status of {campaign['status']} and cannot be scheduled.")
        raw = body.get("schedule_time")
        if not isinstance(raw, str) or not raw:
            return invalid("schedule_time", "This value should not be blank.")
        try:
            moment = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return invalid("schedule_time", "Data did not match any of the schemas described in anyOf.")
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        if moment.minute % 15 or moment.second or moment.microsecond:
            return bad_request("Schedule time must be on the quarter-hour (:00, :15, :30, :45).")
        now = dt.datetime.now(dt.UTC)
        if moment <= now:
            return bad_request("This campaign cannot be scheduled in the past.")
        if moment > now + dt.timedelta(days=365):
            return bad_request("Campaigns can only be scheduled up to one year in advance.")
        settings = campaign["settings"]
        missing = [
            label
            for label, present in (
                ("subject line", settings.get("subject_line")),
                ("from name", settings.get("from_name")),
                ("reply-to address", settings.get("reply_to")),
                ("audience", campaign["recipients"].get("list_id")),
                ("content", state.contents.get(campaign["id"], {}).get("html")),
            )
            if not present
        ]
        if missing:
            return bad_request("This campaign cannot be scheduled: " + ", ".join(missing) + " missing.")
        campaign["status"] = "schedule"
        campaign["send_time"] = iso(moment)
        return Response(status_code=204)

    async def unschedule(request: Request) -> Response:
        campaign = state.campaigns.get(request.path_params["campaign_id"])
        if campaign is None:
            return not_found()
        if campaign["status"] != "schedule":
            return bad_request(f"This campaign has a status of {campaign['status']} and cannot be unscheduled.")
        campaign["status"] = "save"
        campaign["send_time"] = ""
        return Response(status_code=204)

    # --- admin ---

    async def admin_campaigns(request: Request) -> Response:
        return JSONResponse(
            [{**campaign, "content": state.contents.get(campaign["id"])} for campaign in state.campaigns.values()]
        )

    async def admin_send(request: Request) -> Response:
        campaign = state.campaigns.get(request.path_params["campaign_id"])
        if campaign is None:
            return not_found()
        campaign["status"] = "sent"
        campaign["send_time"] = iso(dt.datetime.now(dt.UTC))
        campaign["emails_sent"] = 3
        return JSONResponse(campaign)

    async def admin_faults(request: Request) -> Response:
        body = await request.json()
        with state.lock:
            state.faults.append(
                Fault(
                    status=int(body.get("status", 200)),
                    count=int(body.get("count", 1)),
                    retry_after=body.get("retry_after"),
                    delay=body.get("delay"),
                    path=body.get("path"),
                )
            )
        return Response(status_code=204)

    async def admin_requests(request: Request) -> Response:
        return JSONResponse(state.requests)

    async def admin_reset(request: Request) -> Response:
        state.campaigns.clear()
        state.contents.clear()
        state.requests.clear()
        state.faults.clear()
        return Response(status_code=204)

    prefix = "/3.0"
    routes = [
        Route(f"{prefix}/lists/{{list_id}}", api(get_list), methods=["GET"]),
        Route(f"{prefix}/campaigns", api(create_campaign), methods=["POST"]),
        Route(f"{prefix}/campaigns", api(list_campaigns), methods=["GET"]),
        Route(f"{prefix}/campaigns/{{campaign_id}}", api(get_campaign), methods=["GET"]),
        Route(f"{prefix}/campaigns/{{campaign_id}}", api(update_campaign), methods=["PATCH"]),
        Route(f"{prefix}/campaigns/{{campaign_id}}", api(delete_campaign), methods=["DELETE"]),
        Route(f"{prefix}/campaigns/{{campaign_id}}/content", api(set_content), methods=["PUT"]),
        Route(f"{prefix}/campaigns/{{campaign_id}}/content", api(get_content), methods=["GET"]),
        Route(f"{prefix}/campaigns/{{campaign_id}}/actions/schedule", api(schedule), methods=["POST"]),
        Route(f"{prefix}/campaigns/{{campaign_id}}/actions/unschedule", api(unschedule), methods=["POST"]),
        Route("/_admin/campaigns", admin_campaigns, methods=["GET"]),
        Route("/_admin/campaigns/{campaign_id}/send", admin_send, methods=["POST"]),
        Route("/_admin/faults", admin_faults, methods=["POST"]),
        Route("/_admin/requests", admin_requests, methods=["GET"]),
        Route("/_admin/reset", admin_reset, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.mailchimp = state
    return app


def default_state(api_key: str = "test-key-us21", list_id: str = "list1") -> MailchimpState:
    audience = {
        "id": list_id,
        "name": "Morning briefing",
        "campaign_defaults": {
            "from_name": "The Daily",
            "from_email": "newsletter@example.org",
            "subject": "",
            "language": "en",
        },
    }
    return MailchimpState(api_key=api_key, lists={list_id: audience})


class RunningMailchimp:
    """The server on uvicorn in a background thread (its own event loop), usable from inside a test's loop."""

    def __init__(self, state: MailchimpState | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = state or default_state()
        self.app = create_app(self.state)
        self._host, self._port = host, port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None

    @property
    def base_url(self) -> str:
        """The API root, as the adapter's ``base_url`` option wants it."""
        assert self.url is not None, "the server is not running"
        return f"{self.url}/3.0"

    def start(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        host, port = sock.getsockname()[:2]
        config = uvicorn.Config(self.app, lifespan="off", log_config=None, access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"mailchimp-{port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise RuntimeError("the Mailchimp test server did not start")
            time.sleep(0.01)
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(5)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(5)
        self._server = self._thread = None
        self.url = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8710)
    parser.add_argument("--api-key", default="test-key-us21")
    parser.add_argument("--list-id", default="list1")
    arguments = parser.parse_args()
    app = create_app(default_state(arguments.api_key, arguments.list_id))
    uvicorn.run(app, host=arguments.host, port=arguments.port)


if __name__ == "__main__":
    main()

"""Tests for the Kordiam API v2 simulator (bridge.simulator)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from bridge.simulator import RunningSimulator, SimulatorSettings, create_app
from bridge.simulator.notify import build_message
from bridge.simulator.webhooks import WebhookAuth

ERRORS = "https://docs.kordiam.app/docs/errors/"
_BEARER = WebhookAuth("bearer", token="ge-token")
START = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)


class FakeClock:
    """A settable clock so expiry and timestamps are tested without sleeping."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def sample_element(title: str = "Budget vote") -> dict[str, Any]:
    return {
        "title": title,
        "slug": "budget-vote",
        "note": "Check figures",
        "elementStatus": {"id": 2, "name": "Accepted"},
        "groups": [{"id": 20082, "name": "Team"}],
        "customFields": [{"id": 7, "value": "x"}],
        "tasks": [
            {
                "format": {"id": 1, "name": "Text"},
                "status": {"id": 2, "name": "Received"},
                "user": {"id": 3, "email": "anna@example.org", "firstName": "Anna", "lastName": "Berg"},
                "deadline": {"date": "2026-11-22", "time": "11:00"},
                "content": {"headline": "Budget passes", "lead": "Lead", "text": "<p>Body</p>"},
                "done": False,
            }
        ],
        "publications": [
            {
                "platform": {"id": 99003, "name": "Website"},
                "category": {"id": 90000, "name": "Politics"},
                "type": {"id": 34, "name": "Article"},
                "schedule": {"kind": "single", "date": "2026-11-23", "timing": {"type": "time", "time": "19:30"}},
                "assignedTaskIds": [],
            }
        ],
    }


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["type"] == ERRORS + slug
    assert problem["status"] == status
    assert problem["instance"] == response.request.url.path
    assert problem["title"] and problem["detail"] and problem["traceId"]
    return problem


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings() -> SimulatorSettings:
    return SimulatorSettings(token_ttl_seconds=3600)


@pytest.fixture
async def client(settings: SimulatorSettings, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as http:
        yield http


async def get_token(client: httpx.AsyncClient) -> str:
    response = await client.post(
        "/api/v2/auth/token",
        json={"grant_type": "client_credentials", "client_id": "demo-client", "client_secret": "demo-secret"},
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


@pytest.fixture
async def api(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The same client with a valid bearer token preset."""
    client.headers["Authorization"] = f"Bearer {await get_token(client)}"
    return client


async def create_element(client: httpx.AsyncClient, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await client.post("/_admin/elements", json=body or sample_element())
    assert response.status_code == 201, response.text
    element: dict[str, Any] = response.json()
    return element


async def notifications(client: httpx.AsyncClient) -> list[tuple[int, str]]:
    response = await client.get("/_admin/notifications")
    return [(item["element_id"], item["event"]) for item in response.json()]


# -- authentication ------------------------------------------------------------------------------------


async def test_token_accepts_json_and_form(client: httpx.AsyncClient) -> None:
    form = {"grant_type": "client_credentials", "client_id": "demo-client", "client_secret": "demo-secret"}
    by_form = await client.post("/api/v2/auth/token", data=form)
    by_json = await client.post("/api/v2/auth/token", json=form)

    for response in (by_form, by_json):
        assert response.status_code == 200
        body = response.json()
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == 3600
        assert body["scope"] == "api.read api.write"
        assert body["access_token"] and body["refresh_token"]
    assert by_form.json()["access_token"] != by_json.json()["access_token"]


@pytest.mark.parametrize(
    "body",
    [
        {"grant_type": "client_credentials", "client_id": "demo-client", "client_secret": "wrong"},
        {"grant_type": "client_credentials", "client_id": "other", "client_secret": "demo-secret"},
        {"grant_type": "password", "client_id": "demo-client", "client_secret": "demo-secret"},
        {"client_id": "demo-client", "client_secret": "demo-secret"},
    ],
)
async def test_token_rejects_bad_credentials_or_grant(client: httpx.AsyncClient, body: dict[str, str]) -> None:
    assert_problem(await client.post("/api/v2/auth/token", json=body), 401, "unauthorized")


async def test_missing_or_unknown_bearer_is_unauthorized(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/v2/platforms"), 401, "unauthorized")
    response = await client.get("/api/v2/platforms", headers={"Authorization": "Bearer nope"})
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_token_expires_after_ttl(client: httpx.AsyncClient, clock: FakeClock) -> None:
    headers = {"Authorization": f"Bearer {await get_token(client)}"}
    clock.advance(3599)
    assert (await client.get("/api/v2/platforms", headers=headers)).status_code == 200
    clock.advance(1)
    assert_problem(await client.get("/api/v2/platforms", headers=headers), 401, "unauthorized")


async def test_revoked_tokens_answer_token_revoked(client: httpx.AsyncClient) -> None:
    headers = {"Authorization": f"Bearer {await get_token(client)}"}
    revoke = await client.post("/_admin/tokens/revoke")
    assert revoke.json() == {"revoked": 1}

    assert_problem(await client.get("/api/v2/platforms", headers=headers), 401, "token-revoked")
    fresh = {"Authorization": f"Bearer {await get_token(client)}"}
    assert (await client.get("/api/v2/platforms", headers=fresh)).status_code == 200


async def test_refresh_token_is_single_use(client: httpx.AsyncClient) -> None:
    issued = await client.post(
        "/api/v2/auth/token",
        json={"grant_type": "client_credentials", "client_id": "demo-client", "client_secret": "demo-secret"},
    )
    refresh = {"refresh_token": issued.json()["refresh_token"]}
    first = await client.post("/api/v2/auth/refresh", json=refresh)
    assert first.status_code == 200
    assert first.json()["refresh_token"] != refresh["refresh_token"]
    assert_problem(await client.post("/api/v2/auth/refresh", json=refresh), 401, "unauthorized")


# -- elements and admin --------------------------------------------------------------------------------


async def test_admin_create_assigns_ids_and_server_fields(api: httpx.AsyncClient) -> None:
    created = await create_element(api)

    assert created["id"] == 1001
    assert created["tasks"][0]["id"] == 5001
    publication = created["publications"][0]
    assert publication["id"] == 7001
    assert publication["status"] == {"id": 1, "name": "No Status"}
    assert created["version"] == 1
    assert created["creationTime"] == created["modificationDate"] == "2026-11-22T10:00:00Z"
    assert "externalElement" not in created

    fetched = await api.get("/api/v2/elements/1001")
    assert fetched.status_code == 200
    assert fetched.json() == created
    assert await notifications(api) == [(1001, "created")]


async def test_admin_replace_merge_delete_and_notifications(api: httpx.AsyncClient, clock: FakeClock) -> None:
    created = await create_element(api)
    task_id = created["tasks"][0]["id"]

    clock.advance(5)
    replacement = sample_element("Budget vote, updated")
    replacement["tasks"] = [{**replacement["tasks"][0], "id": task_id}, {"format": {"id": 2, "name": "Picture"}}]
    replacement["publications"] = []
    replaced = (await api.put("/_admin/elements/1001", json=replacement)).json()
    assert replaced["id"] == 1001
    assert replaced["title"] == "Budget vote, updated"
    assert [task["id"] for task in replaced["tasks"]] == [task_id, 5002]
    assert replaced["publications"] == []
    assert replaced["version"] == 2
    assert replaced["creationTime"] == created["creationTime"]
    assert replaced["modificationDate"] == "2026-11-22T10:00:05Z"

    merged = (await api.patch("/_admin/elements/1001", json={"slug": "new-slug", "note": None})).json()
    assert merged["slug"] == "new-slug"
    assert "note" not in merged
    assert merged["title"] == "Budget vote, updated"
    assert merged["version"] == 3

    assert (await api.delete("/_admin/elements/1001")).status_code == 204
    assert_problem(await api.get("/api/v2/elements/1001"), 404, "resource-not-found")
    assert_problem(await api.get("/_admin/elements/1001"), 404, "resource-not-found")
    assert_problem(await api.delete("/_admin/elements/1001"), 404, "resource-not-found")

    assert await notifications(api) == [(1001, "created"), (1001, "updated"), (1001, "updated"), (1001, "deleted")]
    records = (await api.get("/_admin/notifications")).json()
    assert all(record["sent"] is False for record in records)  # no queue configured: recorded only
    assert records[0]["body"] == {"id": 1001, "event": "created"}


async def test_admin_create_validates_and_rejects_duplicate_ids(api: httpx.AsyncClient) -> None:
    assert_problem(await api.post("/_admin/elements", json={"tasks": "nope"}), 400, "validation-failed")
    assert_problem(await api.post("/_admin/elements", json=[1, 2]), 400, "validation-failed")
    await create_element(api, {**sample_element(), "id": 2000})
    assert_problem(await api.post("/_admin/elements", json={"id": 2000}), 409, "conflict")
    # Generated ids stay clear of explicitly chosen ones.
    assert (await create_element(api))["id"] == 2001


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"id": 2**63}, "id"),
        ({"tasks": [{"id": 2**63}]}, "tasks[0].id"),
        ({"publications": [{"id": 2**63}]}, "publications[0].id"),
    ],
)
async def test_admin_ids_stay_within_kordiams_64_bit_ids(
    api: httpx.AsyncClient, body: dict[str, Any], path: str
) -> None:
    # Kordiam's ids are positive 64-bit integers (the bridge refuses others as no Kordiam element): an element the
    # simulator serves with a larger one is an element Kordiam never sends.
    problem = assert_problem(await api.post("/_admin/elements", json=body), 400, "validation-failed")
    assert [error["path"] for error in problem["errors"]] == [path]
    assert (await create_element(api, {"id": 2**63 - 1}))["id"] == 2**63 - 1


async def test_a_publication_id_is_one_publications_only(api: httpx.AsyncClient) -> None:
    # Kordiam's publication ids are unique across elements (the bridge looks deliveries up by one): a scenario
    # that gave two publications one id would test a state Kordiam never reaches.
    first = await create_element(api, {"publications": [{"id": 7500, "platform": {"id": 99003}}]})
    taken = {"publications": [{"id": 7500, "platform": {"id": 99004}}]}
    problem = assert_problem(await api.post("/_admin/elements", json=taken), 409, "conflict")
    assert "7500" in problem["detail"]
    twice = {"publications": [{"id": 7600}, {"id": 7600}]}
    assert_problem(await api.post("/_admin/elements", json=twice), 409, "conflict")
    assert_problem(await api.post("/_admin/elements", json={"tasks": [{"id": 5500}, {"id": 5500}]}), 409, "conflict")
    second = await create_element(api)
    assert_problem(await api.put(f"/_admin/elements/{second['id']}", json=taken), 409, "conflict")
    assert_problem(await api.patch(f"/_admin/elements/{second['id']}", json=taken), 409, "conflict")
    # An element keeps its own publication's id through a replace; once it is gone, the id is free again.
    assert (await api.put(f"/_admin/elements/{first['id']}", json=first)).status_code == 200
    assert (await api.delete(f"/_admin/elements/{first['id']}")).status_code == 204
    assert (await create_element(api, taken))["publications"][0]["id"] == 7500


async def test_not_found_problem_shape(api: httpx.AsyncClient) -> None:
    problem = assert_problem(await api.get("/api/v2/elements/4242"), 404, "resource-not-found")
    assert problem["title"] == "Resource not found"
    assert "does not exist or is not visible" in problem["detail"]
    assert problem["instance"] == "/api/v2/elements/4242"


async def test_unknown_route_and_method_are_problems(api: httpx.AsyncClient) -> None:
    assert_problem(await api.get("/api/v2/nothing-here"), 404, "endpoint-not-found")
    response = await api.delete("/api/v2/elements/1001")
    assert_problem(response, 405, "method-not-allowed")
    assert "GET" in response.headers["allow"]


async def test_admin_notify_resends_without_changing(api: httpx.AsyncClient) -> None:
    created = await create_element(api)
    response = await api.post("/_admin/elements/1001/notify", json={"event": "updated"})
    assert response.status_code == 200
    assert response.json()["event"] == "updated"
    assert (await api.get("/api/v2/elements/1001")).json() == created
    assert await notifications(api) == [(1001, "created"), (1001, "updated")]
    assert_problem(await api.post("/_admin/elements/1001/notify", json={"event": "moved"}), 400, "validation-failed")


async def test_admin_notify_refuses_a_key_it_does_not_know(api: httpx.AsyncClient) -> None:
    # {"evnt": "deleted"} sent "updated" (the default), silently: the scenario's deletion never announced.
    await create_element(api)
    response = await api.post("/_admin/elements/1001/notify", json={"evnt": "deleted"})
    problem = assert_problem(response, 400, "validation-failed")
    assert [error["path"] for error in problem["errors"]] == ["evnt"]
    assert await notifications(api) == [(1001, "created")]


async def test_reset_clears_everything(api: httpx.AsyncClient) -> None:
    await create_element(api)
    await api.post("/_admin/faults", json={"path": "^/nowhere$", "status": 503})
    assert (await api.post("/_admin/reset")).status_code == 204

    assert (await api.get("/_admin/elements")).json() == []
    assert (await api.get("/_admin/notifications")).json() == []
    assert (await api.get("/_admin/faults")).json() == []
    assert_problem(await api.get("/api/v2/platforms"), 401, "unauthorized")  # tokens are gone
    assert [entry["status"] for entry in (await api.get("/_admin/requests")).json()] == [401]
    api.headers["Authorization"] = f"Bearer {await get_token(api)}"
    assert (await create_element(api))["id"] == 1001


# -- publication PATCH ---------------------------------------------------------------------------------

PUBLICATION_URL = "/api/v2/elements/1001/publications/7001"


@pytest.mark.parametrize(
    ("body", "slug", "path"),
    [
        ({"schedule": {"kind": "single", "date": "2026-11-24"}}, "validation-failed", "schedule"),
        ({"published": {"date": "2026-11-24", "time": "10:00"}}, "validation-failed", "published"),
        ({"statusId": 42}, "validation-failed", "statusId"),
        ({"statusId": None}, "validation-failed", "statusId"),
        ({"statusId": "3"}, "validation-failed", "statusId"),
        ({"platformId": 99004}, "validation-failed", "platformId"),
        ({"cms": {"editUrl": "x"}}, "validation-failed", "cms.editUrl"),
        ({"categoryId": 12345}, "validation-failed", "categoryId"),
        ({"statusId": 5}, "business-error", None),
    ],
)
async def test_patch_publication_is_strict(
    api: httpx.AsyncClient, body: dict[str, Any], slug: str, path: str | None
) -> None:
    await create_element(api)
    problem = assert_problem(await api.patch(PUBLICATION_URL, json=body), 400, slug)
    if path is not None:
        assert [error["path"] for error in problem["errors"]] == [path]
        assert problem["errors"][0]["scope"] == "body"
    element = (await api.get("/api/v2/elements/1001")).json()
    assert element["version"] == 1  # rejected writes change nothing


async def test_patch_publication_updates_and_merges_cms(api: httpx.AsyncClient) -> None:
    await create_element(api)
    first = await api.patch(
        PUBLICATION_URL,
        json={
            "statusId": 3,
            "externalId": "12",
            "categoryId": 90002,
            "cms": {"editLink": "https://cms/edit/12", "openLink": "https://site/12"},
        },
    )
    assert first.status_code == 200, first.text
    publication = first.json()["publications"][0]
    assert publication["status"] == {"id": 3, "name": "Accepted"}
    assert publication["externalId"] == "12"
    assert publication["category"] == {"id": 90002, "name": "Sports"}
    assert first.json()["version"] == 2

    second = await api.patch(PUBLICATION_URL, json={"cms": {"openLink": None, "editLinkTitle": "Edit in CMS"}})
    cms = second.json()["publications"][0]["cms"]
    assert cms == {"editLink": "https://cms/edit/12", "editLinkTitle": "Edit in CMS"}
    assert second.json()["publications"][0]["status"]["id"] == 3  # omitted fields are unchanged

    cleared = await api.patch(PUBLICATION_URL, json={"cms": None, "externalId": None, "typeId": None})
    assert {"cms", "externalId", "type"}.isdisjoint(cleared.json()["publications"][0])


async def test_patch_unknown_publication_or_bad_json(api: httpx.AsyncClient) -> None:
    await create_element(api)
    assert_problem(
        await api.patch("/api/v2/elements/1001/publications/9", json={"statusId": 2}), 404, "resource-not-found"
    )
    bad = await api.patch(PUBLICATION_URL, content=b"{not json", headers={"Content-Type": "application/json"})
    assert_problem(bad, 400, "bad-request")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_json_body_of_another_media_type_is_unsupported(
    api: httpx.AsyncClient, content_type: str | None
) -> None:
    # Kordiam takes JSON requests and answers 415 unsupported-media-type to others: a client that labelled its
    # body wrongly must fail here as it would there, not pass because the simulator parsed the body anyway.
    await create_element(api)
    headers = {} if content_type is None else {"Content-Type": content_type}
    body = json.dumps({"externalId": "cms-1"}).encode()
    assert_problem(await api.patch(PUBLICATION_URL, content=body, headers=headers), 415, "unsupported-media-type")
    link = json.dumps({"externalId": "cms-1"}).encode()
    response = await api.post("/api/v2/elements/1001/external-element/link", content=link, headers=headers)
    assert_problem(response, 415, "unsupported-media-type")
    for accepted in ("application/json", "application/json; charset=utf-8", "application/merge-patch+json"):
        response = await api.patch(PUBLICATION_URL, content=body, headers={"Content-Type": accepted})
        assert response.status_code == 200, response.text


async def test_the_token_endpoint_takes_json_or_a_form_only(client: httpx.AsyncClient) -> None:
    fields = {"grant_type": "client_credentials", "client_id": "demo-client", "client_secret": "demo-secret"}
    plain = await client.post("/api/v2/auth/token", content=json.dumps(fields), headers={"Content-Type": "text/plain"})
    assert_problem(plain, 415, "unsupported-media-type")


async def test_api_writes_send_updated_notifications(api: httpx.AsyncClient) -> None:
    await create_element(api)
    await api.patch(PUBLICATION_URL, json={"statusId": 2})
    await api.post(PUBLICATION_URL + "/publish")
    await api.post("/api/v2/elements/1001/external-element/link", json={"externalId": "wp-12"})
    assert await notifications(api) == [(1001, "created")] + [(1001, "updated")] * 3


async def test_api_writes_can_be_silent(clock: FakeClock) -> None:
    app = create_app(SimulatorSettings(notify_on_api_writes=False), clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as client:
        client.headers["Authorization"] = f"Bearer {await get_token(client)}"
        await create_element(client)
        patched = await client.patch(PUBLICATION_URL, json={"statusId": 2})
        assert patched.json()["version"] == 2  # still a change, just not announced
        assert await notifications(client) == [(1001, "created")]


# -- publish and link ----------------------------------------------------------------------------------


async def test_publish_then_conflict(api: httpx.AsyncClient, clock: FakeClock) -> None:
    await create_element(api)
    clock.now = datetime(2026, 11, 22, 10, 31, 42, tzinfo=UTC)
    published = await api.post(PUBLICATION_URL + "/publish")
    assert published.status_code == 200, published.text
    publication = published.json()["publications"][0]
    assert publication["status"] == {"id": 5, "name": "Published"}
    assert publication["published"] == {"date": "2026-11-22", "time": "10:31"}
    assert published.json()["modificationDate"] == "2026-11-22T10:31:42Z"

    assert_problem(await api.post(PUBLICATION_URL + "/publish"), 409, "conflict")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"systemUrl": "https://cms.example"},
        {"externalId": ""},
        {"externalElement": {"externalId": "wp-12"}},
        {"externalId": 12},
    ],
)
async def test_link_validates_body(api: httpx.AsyncClient, body: dict[str, Any]) -> None:
    await create_element(api)
    response = await api.post("/api/v2/elements/1001/external-element/link", json=body)
    assert_problem(response, 400, "validation-failed")


async def test_link_sets_external_element(api: httpx.AsyncClient) -> None:
    await create_element(api)
    response = await api.post(
        "/api/v2/elements/1001/external-element/link", json={"externalId": "wp-12", "link": "https://wp/?p=12"}
    )
    assert response.status_code == 200
    expected = {"externalId": "wp-12", "link": "https://wp/?p=12", "systemUrl": None}
    assert response.json() == expected
    element = (await api.get("/api/v2/elements/1001")).json()
    assert element["externalElement"] == expected
    assert element["version"] == 2
    missing = await api.post("/api/v2/elements/9/external-element/link", json={"externalId": "x"})
    assert_problem(missing, 404, "resource-not-found")


async def test_unlink_removes_the_external_element_once(api: httpx.AsyncClient) -> None:
    await create_element(api)
    await api.post("/api/v2/elements/1001/external-element/link", json={"externalId": "wp-12", "link": "https://wp/"})
    response = await api.post("/api/v2/elements/1001/external-element/unlink", json={})
    assert response.status_code == 200
    assert response.json() == {"externalId": "wp-12", "link": "https://wp/", "systemUrl": None}
    element = (await api.get("/api/v2/elements/1001")).json()
    assert "externalElement" not in element and element["version"] == 3
    again = await api.post("/api/v2/elements/1001/external-element/unlink")  # no body: the API's is optional
    assert again.json() == {"externalId": None, "link": None, "systemUrl": None}
    assert (await api.get("/api/v2/elements/1001")).json()["version"] == 3  # nothing was linked: nothing changed
    refused = await api.post("/api/v2/elements/1001/external-element/unlink", json={"externalId": "wp-12"})
    assert_problem(refused, 400, "validation-failed")


async def test_patch_null_clears_external_id_and_single_cms_links(api: httpx.AsyncClient) -> None:
    await create_element(api)
    links = {"editLink": "https://e", "openLink": "https://o"}
    await api.patch(PUBLICATION_URL, json={"externalId": "wp-12", "cms": links})
    response = await api.patch(PUBLICATION_URL, json={"externalId": None, "cms": {"editLink": None}})
    assert response.status_code == 200, response.text
    publication = response.json()["publications"][0]
    assert "externalId" not in publication and publication["cms"] == {"openLink": "https://o"}


# -- listing -------------------------------------------------------------------------------------------


async def make_elements(api: httpx.AsyncClient, clock: FakeClock, count: int) -> None:
    for index in range(count):
        await create_element(api, sample_element(f"Story {index}"))
        clock.advance(60)


async def test_list_pages_with_cursor_in_modification_order(api: httpx.AsyncClient, clock: FakeClock) -> None:
    await make_elements(api, clock, 5)
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"size": 2, **({"cursor": cursor} if cursor else {})}
        body = (await api.get("/api/v2/elements", params=params)).json()
        seen += [element["id"] for element in body["content"]]
        assert body["size"] == len(body["content"])
        if not body["hasMore"]:
            assert "nextCursor" not in body
            break
        cursor = body["nextCursor"]
        assert re.fullmatch(r"v1\.[A-Za-z0-9._~\-]+", cursor)
    assert seen == [1001, 1002, 1003, 1004, 1005]


async def test_list_filters_by_modification_date(api: httpx.AsyncClient, clock: FakeClock) -> None:
    await make_elements(api, clock, 4)  # modified at 10:00, 10:01, 10:02, 10:03
    body = (
        await api.get(
            "/api/v2/elements",
            params={"modificationDateFrom": "2026-11-22T10:01:00Z", "modificationDateTo": "2026-11-22T11:02:00+01:00"},
        )
    ).json()
    assert [element["id"] for element in body["content"]] == [1002, 1003]
    whole_day = (await api.get("/api/v2/elements", params={"modificationDateFrom": "2026-11-22"})).json()
    assert len(whole_day["content"]) == 4
    assert whole_day["hasMore"] is False


async def test_list_moves_changed_element_behind_cursor(api: httpx.AsyncClient, clock: FakeClock) -> None:
    await make_elements(api, clock, 3)
    first = (await api.get("/api/v2/elements", params={"size": 2})).json()
    await api.patch("/_admin/elements/1001", json={"note": "late edit"})
    rest = (await api.get("/api/v2/elements", params={"size": 2, "cursor": first["nextCursor"]})).json()
    assert [element["id"] for element in rest["content"]] == [1003, 1001]


@pytest.mark.parametrize(
    ("params", "slug"),
    [
        ({"modificationDateFrom": "yesterday"}, "date-format-error"),
        ({"modificationDateTo": "2026-13-01"}, "date-format-error"),
        ({"size": 101}, "validation-failed"),
        ({"size": 0}, "validation-failed"),
        ({"size": "ten"}, "validation-failed"),
        # Python's int() reads a digit separator; Kordiam's Java number parsing does not.
        ({"size": "1_0"}, "validation-failed"),
        ({"cursor": "v1.!!!"}, "validation-failed"),
        ({"cursor": "garbage"}, "validation-failed"),
        ({"page": 0}, "validation-failed"),
    ],
)
async def test_list_rejects_bad_parameters(api: httpx.AsyncClient, params: dict[str, Any], slug: str) -> None:
    assert_problem(await api.get("/api/v2/elements", params=params), 400, slug)


async def test_list_default_size_is_20(api: httpx.AsyncClient, clock: FakeClock) -> None:
    await make_elements(api, clock, 21)
    body = (await api.get("/api/v2/elements")).json()
    assert len(body["content"]) == 20
    assert body["hasMore"] is True


# -- reference data ------------------------------------------------------------------------------------


async def test_reference_data(api: httpx.AsyncClient) -> None:
    platforms = (await api.get("/api/v2/platforms")).json()
    assert [p["name"] for p in platforms["content"]] == ["Website", "Print", "Newsletter"]
    assert set(platforms["content"][0]) == {"id", "name", "position", "typeCode", "version"}
    assert platforms["hasMore"] is False and platforms["size"] == 3

    statuses = (await api.get("/api/v2/publication-statuses")).json()
    assert {s["id"]: s["name"] for s in statuses["content"]}[5] == "Published"
    assert all(s["active"] for s in statuses["content"])
    per_platform = await api.get("/api/v2/publication-statuses/platform/99004")
    assert per_platform.json() == statuses
    assert_problem(await api.get("/api/v2/publication-statuses/platform/1"), 404, "resource-not-found")


# -- faults and request log ----------------------------------------------------------------------------


async def test_fault_503_twice_then_success(api: httpx.AsyncClient) -> None:
    await create_element(api)
    await api.delete("/_admin/requests")
    added = await api.post(
        "/_admin/faults", json={"method": "GET", "path": r"^/api/v2/elements/\d+$", "status": 503, "count": 2}
    )
    assert added.status_code == 201

    for _ in range(2):
        problem = assert_problem(await api.get("/api/v2/elements/1001"), 503, "server-error")
        assert "retryAfter" not in problem
    assert (await api.get("/api/v2/elements/1001")).status_code == 200
    assert (await api.get("/_admin/faults")).json() == []

    log = (await api.get("/_admin/requests")).json()
    assert [(entry["method"], entry["path"], entry["status"]) for entry in log] == [
        ("GET", "/api/v2/elements/1001", 503),
        ("GET", "/api/v2/elements/1001", 503),
        ("GET", "/api/v2/elements/1001", 200),
    ]


@pytest.mark.parametrize(("placement", "in_header", "in_body"), [("header", True, False), ("body", False, True)])
async def test_fault_429_retry_after(api: httpx.AsyncClient, placement: str, in_header: bool, in_body: bool) -> None:
    await api.post(
        "/_admin/faults",
        json={"method": "*", "path": "/platforms", "status": 429, "retry_after": 1, "retry_after_in": placement},
    )
    response = await api.get("/api/v2/platforms")
    problem = assert_problem(response, 429, "too-many-requests")
    assert (response.headers.get("retry-after") == "1") is in_header
    assert (problem.get("retryAfter") == 1) is in_body
    assert (await api.get("/api/v2/platforms")).status_code == 200


async def test_a_fault_may_answer_another_error_type_than_its_status_implies(api: httpx.AsyncClient) -> None:
    await create_element(api)
    await api.post("/_admin/faults", json={"method": "GET", "path": "/elements/", "status": 404})
    assert_problem(await api.get("/api/v2/elements/1001"), 404, "resource-not-found")
    await api.post("/_admin/faults", json={"path": "/elements/", "status": 404, "type": "endpoint-not-found"})
    assert_problem(await api.get("/api/v2/elements/1001"), 404, "endpoint-not-found")


async def test_fault_definitions_are_validated(api: httpx.AsyncClient) -> None:
    for body in (
        {"status": 200},
        {"status": 503, "path": "("},
        {"status": 503, "retry_after_in": "nowhere"},
        {"status": 404, "type": "Not A Slug"},
    ):
        assert_problem(await api.post("/_admin/faults", json=body), 400, "validation-failed")
    await api.post("/_admin/faults", json={"status": 500, "count": 5})
    assert (await api.delete("/_admin/faults")).status_code == 204
    assert (await api.get("/api/v2/platforms")).status_code == 200


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"status": 429, "retryAfter": 5}, "retryAfter"),
        ({"status": 503, "times": 3}, "times"),
        ({"status": 429, "retry_after_in": "header"}, "retry_after_in"),
    ],
)
async def test_a_fault_key_that_would_do_nothing_is_refused(
    api: httpx.AsyncClient, body: dict[str, Any], path: str
) -> None:
    # Silently ignored, each left a 429 without the Retry-After the test meant to send, or one shot for three.
    problem = assert_problem(await api.post("/_admin/faults", json=body), 400, "validation-failed")
    assert [error["path"] for error in problem["errors"]] == [path]
    assert (await api.get("/_admin/faults")).json() == []
    assert (await api.get("/api/v2/platforms")).status_code == 200


async def test_request_log_redacts_secrets_and_clears(client: httpx.AsyncClient) -> None:
    await get_token(client)
    await client.get("/api/v2/platforms")
    log = (await client.get("/_admin/requests")).json()
    assert [(entry["path"], entry["status"]) for entry in log] == [
        ("/api/v2/auth/token", 200),
        ("/api/v2/platforms", 401),
    ]
    assert log[0]["body"]["client_secret"] == "***"
    assert log[0]["body"]["client_id"] == "demo-client"
    assert log[1]["body"] is None
    assert log[0]["at"].endswith("Z")
    assert (await client.delete("/_admin/requests")).status_code == 204
    assert (await client.get("/_admin/requests")).json() == []


# -- versioning ----------------------------------------------------------------------------------------


async def test_modification_date_and_version_are_monotonic(api: httpx.AsyncClient, clock: FakeClock) -> None:
    await create_element(api)
    versions: list[int] = []
    dates: list[str] = []
    # Same second, then the clock jumping backwards: the date must hold, the version must still move.
    for step in (0, 0.3, -3600, 2):
        clock.advance(step)
        element = (await api.patch(PUBLICATION_URL, json={"statusId": 2})).json()
        versions.append(element["version"])
        dates.append(element["modificationDate"])
    assert versions == [2, 3, 4, 5]
    assert dates == sorted(dates)
    assert dates[:3] == ["2026-11-22T10:00:00Z"] * 3
    assert dates[3] == "2026-11-22T10:00:00Z"  # 2 s after a 1 h jump back is still behind the high-water mark


# -- real HTTP and SQS ---------------------------------------------------------------------------------


async def test_running_simulator_serves_http_inside_an_event_loop() -> None:
    with RunningSimulator(SimulatorSettings()) as running:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", running.base_url)
        assert not running.base_url.endswith(":0")
        async with httpx.AsyncClient(base_url=running.base_url) as http:
            http.headers["Authorization"] = f"Bearer {await get_token(http)}"
            created = await create_element(http)
            fetched = await http.get(f"/api/v2/elements/{created['id']}")
            assert fetched.json() == created
    with pytest.raises(RuntimeError):
        _ = running.base_url


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def sqs_client(endpoint: str) -> Any:
    return boto3.client(
        "sqs",
        region_name="eu-central-1",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def receive_one(sqs: Any, queue_url: str) -> dict[str, Any]:
    response = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=1,
        WaitTimeSeconds=5,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
    )
    messages: list[dict[str, Any]] = response.get("Messages", [])
    assert len(messages) == 1, response
    return messages[0]


def simulator_settings(endpoint: str, queue_url: str) -> SimulatorSettings:
    return SimulatorSettings(queue_url=queue_url, sqs_endpoint_url=endpoint)


@pytest.mark.integration
def test_notifications_reach_sqs(moto_endpoint: str) -> None:
    sqs = sqs_client(moto_endpoint)
    queue_url = sqs.create_queue(QueueName="kordiam-notifications")["QueueUrl"]

    with RunningSimulator(simulator_settings(moto_endpoint, queue_url)) as running, httpx.Client() as http:
        created = http.post(running.base_url + "/_admin/elements", json=sample_element())
        assert created.status_code == 201
        records = http.get(running.base_url + "/_admin/notifications").json()

    message = receive_one(sqs, queue_url)
    assert json.loads(message["Body"]) == {"id": 1001, "event": "created"}
    assert message["MessageAttributes"]["event"] == {"DataType": "String", "StringValue": "created"}
    assert records[0]["sent"] is True
    assert records[0]["message_id"] == message["MessageId"]


@pytest.mark.integration
def test_fifo_notifications_group_by_element(moto_endpoint: str) -> None:
    sqs = sqs_client(moto_endpoint)
    queue_url = sqs.create_queue(QueueName="kordiam.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]

    with RunningSimulator(simulator_settings(moto_endpoint, queue_url)) as running, httpx.Client() as http:
        http.post(running.base_url + "/_admin/elements", json=sample_element())
        http.post(running.base_url + "/_admin/elements/1001/notify", json={"event": "created"})

    first = receive_one(sqs, queue_url)
    assert first["Attributes"]["MessageGroupId"] == "1001"
    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=first["ReceiptHandle"])
    # The deliberate duplicate gets its own dedup id, so SQS delivers it too.
    second = receive_one(sqs, queue_url)
    assert json.loads(second["Body"]) == {"id": 1001, "event": "created"}


@pytest.mark.integration
def test_sqs_failure_is_recorded_not_raised(moto_endpoint: str) -> None:
    missing_queue = moto_endpoint + "/123456789012/does-not-exist"
    with RunningSimulator(simulator_settings(moto_endpoint, missing_queue)) as running, httpx.Client() as http:
        created = http.post(running.base_url + "/_admin/elements", json=sample_element())
        records = http.get(running.base_url + "/_admin/notifications").json()
    assert created.status_code == 201
    assert records[0]["sent"] is False
    assert records[0]["error"]


def test_build_message_for_standard_queue_has_no_fifo_fields() -> None:
    message = build_message("https://sqs.eu-central-1.amazonaws.com/1/q", 7, "deleted")
    assert json.loads(message["MessageBody"]) == {"id": 7, "event": "deleted"}
    assert "MessageGroupId" not in message and "MessageDeduplicationId" not in message


async def test_healthz_answers_without_authentication() -> None:
    app = create_app(SimulatorSettings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as client:
        response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


# -- webhooks ------------------------------------------------------------------------------------------------------


async def test_the_token_request_form_body_is_url_encoded() -> None:
    # Seed 002's form body carries api_key and api_secret: a secret with & = + or a space must arrive as itself
    # at a receiver that reads the form (the Desk-Net WordPress plugin does), not split into other fields.
    from urllib.parse import parse_qs

    from bridge.simulator.webhooks import WebhookCaller

    seen: list[dict[str, list[str]]] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth2/token"):
            seen.append(parse_qs(request.content.decode(), keep_blank_values=True))
            return httpx.Response(200, json={"access_token": "t"})
        return httpx.Response(201, json={"id": "cms-1"})

    caller = WebhookCaller(platform_url="http://cms.test/platform", platform_user="api user", platform_secret="s&x=1+2")
    caller._http = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
    caller.changed({"id": 1001, "publications": [{"id": 7001}]}, "created")
    await caller.close()
    assert seen == [{"grant_type": ["client_credentials"], "api_key": ["api user"], "api_secret": ["s&x=1+2"]}]


async def test_an_answer_that_is_not_json_is_recorded_and_the_next_calls_still_made() -> None:
    # "every outcome is recorded": a receiver that answers 200 with text (or a token answer without a token) ended
    # the change's calls with a logged traceback, unrecorded, and the element's other publications were never sent.
    from bridge.simulator.webhooks import WebhookCaller

    calls: list[str] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth2/token"):
            return httpx.Response(200, json={"access_token": "t"})
        calls.append(request.url.path)
        return httpx.Response(200, text="OK")

    caller = WebhookCaller(
        platform_url="http://cms.test/platform", platform_user="u", platform_secret="s", platform_retries=()
    )
    caller._http = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
    caller.changed({"id": 1001, "publications": [{"id": 7001}, {"id": 7002}]}, "created")
    await caller.close()
    assert calls == ["/platform/publication", "/platform/publication"]
    assert [(record.status, record.answer) for record in caller.records] == [(200, "OK"), (200, "OK")]


async def test_a_token_answer_without_a_token_is_a_failed_attempt() -> None:
    from bridge.simulator.webhooks import WebhookCaller

    def receiver(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="no token here")

    caller = WebhookCaller(
        platform_url="http://cms.test/platform", platform_user="u", platform_secret="s", platform_retries=(0.0,)
    )
    caller._http = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
    caller.changed({"id": 1001, "publications": [{"id": 7001}]}, "created")
    await caller.close()
    assert [(record.status, record.attempts) for record in caller.records] == [(None, 2)]


@pytest.mark.parametrize("version", ["3.0", "2.7", "two", ""])
async def test_an_api_version_kordiam_does_not_serve_is_unsupported_version(
    api: httpx.AsyncClient, version: str
) -> None:
    # reference/kordiam-api.md 3.1: an unsupported or conflicting API-Version header is 400 unsupported-version,
    # with requestedVersion and supportedVersions; the simulator answered as if the header were absent.
    response = await api.get("/api/v2/platforms", headers={"API-Version": version})
    problem = assert_problem(response, 400, "unsupported-version")
    assert (problem["requestedVersion"], problem["supportedVersions"]) == (version, ["2.0"])


@pytest.mark.parametrize("version", ["2.0", "2"])
async def test_the_served_api_version_is_accepted(api: httpx.AsyncClient, version: str) -> None:
    assert (await api.get("/api/v2/platforms", headers={"API-Version": version})).status_code == 200


# -- review I: the simulator no kinder than Kordiam, and robust to what tests send it ----------------------


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
async def test_a_body_with_a_non_json_number_is_refused_and_not_stored(api: httpx.AsyncClient, constant: bytes) -> None:
    # json.loads reads NaN and Infinity, which are not JSON (Kordiam's parser refuses them): stored, the element made
    # every later GET and list of the API a 500 until a reset.
    body = b'{"title": "x", "customFields": [{"id": 7, "number": ' + constant + b"}]}"
    headers = {"Content-Type": "application/json"}
    assert_problem(await api.post("/_admin/elements", content=body, headers=headers), 400, "bad-request")
    assert (await api.get("/api/v2/elements")).status_code == 200
    await create_element(api)
    patch = b'{"externalId": "x", "cms": {"editLink": ' + constant + b"}}"
    assert_problem(await api.patch(PUBLICATION_URL, content=patch, headers=headers), 400, "bad-request")


async def test_a_body_nested_too_deeply_is_a_problem_not_a_crash(api: httpx.AsyncClient) -> None:
    # Python's JSON parser recurses: a deep enough body raised RecursionError, answered by the admin API as a bare
    # text/plain 500 instead of a problem a test can read.
    deep = b"[" * 100_000 + b"]" * 100_000
    headers = {"Content-Type": "application/json"}
    assert_problem(await api.post("/_admin/elements", content=deep, headers=headers), 400, "bad-request")
    assert_problem(await api.post("/_admin/faults", content=deep, headers=headers), 400, "bad-request")


async def test_an_admin_handlers_own_fault_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    # The public API answers its own faults as problem+json 500; the admin API let them through as text/plain.
    app = create_app(SimulatorSettings())

    def broken() -> list[dict[str, Any]]:
        raise RuntimeError("store broke")

    monkeypatch.setattr(app.state.simulator.store, "all", broken)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
        assert_problem(await http.get("/_admin/elements"), 500, "server-error")


async def test_generated_ids_never_pass_kordiams_64_bit_ids(api: httpx.AsyncClient) -> None:
    # An explicit id at the top of the range made the next generated one 2**63: an element Kordiam never sends.
    await create_element(api, {"id": 2**63 - 1, "tasks": [{"id": 2**63 - 1}], "publications": [{"id": 2**63 - 1}]})
    for body in ({"title": "next"}, {"id": 5, "tasks": [{}]}, {"id": 6, "publications": [{}]}):
        response = await api.post("/_admin/elements", json=body)
        assert_problem(response, 409, "conflict")
    assert [element["id"] for element in (await api.get("/_admin/elements")).json()] == [2**63 - 1]


@pytest.mark.parametrize(
    "raw",
    [
        "2026-11-22T10:01:00",  # no offset: Kordiam documents an instant or a date-time with offset
        "2026-11-22T10:01:00 01:00",  # an unencoded "+" decodes to a space: Kordiam's parser refuses it
        "20261122T100100Z",  # ISO 8601 basic format, which fromisoformat reads
        "2026-11-22T10",  # no minutes
        "20261122",  # a date without its dashes
        "2026-11-22 10:01:00Z",  # a space for the T
    ],
)
@pytest.mark.parametrize("name", ["modificationDateFrom", "modificationDateTo"])
async def test_a_query_date_kordiam_refuses_is_refused(api: httpx.AsyncClient, name: str, raw: str) -> None:
    response = await api.get("/api/v2/elements", params={name: raw})
    problem = assert_problem(response, 400, "date-format-error")
    assert name in problem["detail"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-11-22T10:01:00Z", [1001, 1002]),  # inclusive, to the second: as the sweep's windows send it
        ("2026-11-22T10:00:59Z", [1001]),
        ("2026-11-22", [1001, 1002, 1003]),  # a bare date as an upper bound: the end of that day
        ("2026-11-21", []),
    ],
)
async def test_the_upper_modification_date_takes_in_its_own_second(
    api: httpx.AsyncClient, clock: FakeClock, raw: str, expected: list[int]
) -> None:
    await make_elements(api, clock, 3)  # 10:00, 10:01, 10:02
    body = (await api.get("/api/v2/elements", params={"modificationDateTo": raw})).json()
    assert [element["id"] for element in body["content"]] == expected


@pytest.mark.parametrize(
    "raw", ["2026-11-22T10:01:00Z", "2026-11-22T11:01:00+01:00", "2026-11-22T10:01Z", "2026-11-22T10:01:00.5Z"]
)
async def test_documented_query_dates_are_read(api: httpx.AsyncClient, clock: FakeClock, raw: str) -> None:
    await make_elements(api, clock, 2)  # 10:00, 10:01
    body = (await api.get("/api/v2/elements", params={"modificationDateFrom": raw})).json()
    expected = [1002] if raw != "2026-11-22T10:01:00.5Z" else []
    assert [element["id"] for element in body["content"]] == expected


async def test_the_simulator_reads_the_cms_names_from_the_bridges_assumptions(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # README: each assumption lives in bridge/kordiam/assumptions.py and the simulator reads it from there. It kept a
    # copy of the cms names: a corrected assumption would fail against the simulator, not exercise the new names.
    from bridge.kordiam import assumptions

    await create_element(api)
    monkeypatch.setattr(assumptions, "CMS_FIELDS", {"edit_link": "cmsEditLink", "open_link": "cmsOpenLink"})
    response = await api.patch(PUBLICATION_URL, json={"cms": {"cmsEditLink": "https://cms/e"}})
    assert response.status_code == 200, response.text
    assert response.json()["publications"][0]["cms"] == {"cmsEditLink": "https://cms/e"}
    problem = assert_problem(
        await api.patch(PUBLICATION_URL, json={"cms": {"editLink": "x"}}), 400, "validation-failed"
    )
    assert [error["path"] for error in problem["errors"]] == ["cms.editLink"]


async def test_the_simulator_reads_the_link_body_wrapper_from_the_bridges_assumptions(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.kordiam import assumptions

    await create_element(api)
    monkeypatch.setattr(assumptions, "LINK_BODY_WRAPPER", "externalElement")
    link = "/api/v2/elements/1001/external-element/link"
    response = await api.post(link, json={"externalElement": {"externalId": "wp-12"}})
    assert response.status_code == 200, response.text
    assert response.json() == {"externalId": "wp-12", "link": None, "systemUrl": None}
    assert_problem(await api.post(link, json={"externalId": "wp-12"}), 400, "validation-failed")


async def test_answers_are_dated_by_the_simulators_clock(api: httpx.AsyncClient, clock: FakeClock) -> None:
    # Kordiam's Date header and its modificationDate come from one clock, and the bridge's reconciliation reads
    # Kordiam's clock from the list's Date (reconcile.py): the simulator sent none in-process, and over HTTP
    # uvicorn's wall-clock one, so a scenario with a simulator clock behind the worker's could not be tested.
    clock.advance(90)
    listed = await api.get("/api/v2/elements")
    assert listed.headers["date"] == "Sun, 22 Nov 2026 10:01:30 GMT"
    missing = await api.get("/api/v2/elements/4242")
    assert_problem(missing, 404, "resource-not-found")
    assert missing.headers["date"] == "Sun, 22 Nov 2026 10:01:30 GMT"


async def test_a_running_simulator_sends_one_date_its_own() -> None:
    behind = FakeClock(datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC))
    with RunningSimulator(SimulatorSettings(), clock=behind) as running:
        async with httpx.AsyncClient(base_url=running.base_url) as http:
            response = await http.get("/api/v2/platforms")
    assert response.headers.get_list("date") == ["Thu, 02 Jan 2020 03:04:05 GMT"]


async def test_a_fault_can_send_retry_after_as_an_http_date(api: httpx.AsyncClient, clock: FakeClock) -> None:
    # RFC 9110 lets Retry-After be seconds or an HTTP date, and Kordiam's format is not documented (reference 6.7):
    # the bridge reads both, but the simulator could only send seconds, so the date form was never met over HTTP.
    fault = {"path": "/platforms", "status": 429, "retry_after": 30, "retry_after_format": "http-date"}
    assert (await api.post("/_admin/faults", json=fault)).status_code == 201
    problem = assert_problem(response := await api.get("/api/v2/platforms"), 429, "too-many-requests")
    assert response.headers["retry-after"] == "Sun, 22 Nov 2026 10:00:30 GMT"  # the simulator's clock + 30 s
    assert problem["retryAfter"] == 30  # the body's member is documented as seconds
    refused = {"status": 429, "retry_after": 30, "retry_after_format": "minutes"}
    problem = assert_problem(await api.post("/_admin/faults", json=refused), 400, "validation-failed")
    assert [error["path"] for error in problem["errors"]] == ["retry_after_format"]
    alone = {"status": 429, "retry_after_format": "http-date"}
    problem = assert_problem(await api.post("/_admin/faults", json=alone), 400, "validation-failed")
    assert [error["path"] for error in problem["errors"]] == ["retry_after_format"]


async def test_a_publication_taken_off_its_platform_is_deleted_there() -> None:
    # Platform integration (reference 5.2, the Desk-Net plugin): DELETE {base}/publication/{cmsId} when a publication
    # is removed, not only when its story is deleted. An update without the publication sent nothing for it, so the
    # CMS item of an unassigned publication was never removed by the simulator's Kordiam.
    from bridge.simulator.webhooks import WebhookCaller

    calls: list[tuple[str, str]] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth2/token"):
            return httpx.Response(200, json={"access_token": "t"})
        calls.append((request.method, request.url.path))
        cms_id = f"cms-{len(calls)}" if request.method == "POST" else request.url.path.rsplit("/", 1)[-1]
        return httpx.Response(201, json={"id": cms_id})

    caller = WebhookCaller(platform_url="http://cms.test/p", platform_user="u", platform_secret="s")
    caller._http = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
    web, print_ = {"id": 7001, "platform": {"id": 99003}}, {"id": 7002, "platform": {"id": 99004}}
    caller.changed({"id": 1001, "publications": [web, print_]}, "created")
    caller.changed({"id": 1001, "publications": [web]}, "updated")
    caller.changed({"id": 1001, "publications": [web]}, "updated")  # gone already: no second DELETE
    caller.changed({"id": 1001, "publications": [web]}, "deleted")
    await caller.close()
    assert calls == [
        ("POST", "/p/publication"),
        ("POST", "/p/publication"),
        ("PUT", "/p/publication/cms-1"),
        ("DELETE", "/p/publication/cms-2"),
        ("PUT", "/p/publication/cms-1"),
        ("DELETE", "/p/publication/cms-1"),
    ]


async def test_reset_forgets_the_webhooks_calls_and_the_ids_answered() -> None:
    # README: reset is "back to the empty start". The webhook records stayed, and so did the ids receivers answered:
    # the next element 1001 was PUT to the id answered for the element 1001 before the reset.
    calls: list[str] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        return httpx.Response(200, json={"id": "cms-1"} if len(calls) == 1 else {})

    app = create_app(SimulatorSettings(global_export_url="http://cms.test/ge", global_export_auth=_BEARER))
    caller = app.state.simulator.webhooks
    caller._http = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
    caller.global_export_retries = ()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as http:
        await create_element(http)
        assert (await http.get("/_admin/webhooks")).status_code == 200
        assert (await http.post("/_admin/reset")).status_code == 204
        assert (await http.get("/_admin/webhooks")).json() == []
        await create_element(http)  # element 1001 again, its POST answered without an id
        await http.patch("/_admin/elements/1001", json={"note": "n"})
        await http.get("/_admin/webhooks")
    assert calls == ["POST /ge/element", "POST /ge/element", "PUT /ge/element/null"]


@pytest.mark.parametrize("path", ["/api/v2/elements/1001/", "/api/v2/elements/", "/api/v2/platforms/"])
async def test_a_trailing_slash_is_no_route_not_a_redirect(api: httpx.AsyncClient, path: str) -> None:
    # Starlette redirected these (307 to the path without the slash), an answer Kordiam documents nowhere and the
    # bridge never follows; Kordiam's own word for a path it does not route is 404 endpoint-not-found.
    await create_element(api)
    assert_problem(await api.get(path), 404, "endpoint-not-found")


def stored_element() -> dict[str, Any]:
    """sample_element as the store holds it: ids, version and dates set, the publication linked to the task."""
    element = {"id": 1001, "version": 2, **sample_element(), "modificationDate": "2026-11-22T10:00:00Z"}
    element["tasks"][0]["id"] = 5001
    element["publications"][0].update(id=7001, status={"id": 1, "name": "No Status"}, assignedTaskIds=[5001])
    element["externalElement"] = {"externalId": "wp-12", "link": "https://wp/?p=12", "systemUrl": None}
    return element


async def webhook_bodies(caller_kwargs: dict[str, Any], element: dict[str, Any]) -> list[dict[str, Any]]:
    from bridge.simulator.webhooks import WebhookCaller

    bodies: list[dict[str, Any]] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth2/token"):
            return httpx.Response(200, json={"access_token": "t"})
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"id": "cms-1"})

    caller = WebhookCaller(**caller_kwargs)
    caller._http = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
    caller.changed(element, "created")
    await caller.close()
    return bodies


async def test_the_global_export_body_is_v1_shaped_as_seed_001_shows() -> None:
    # Seed 001 (and Livingdocs, reference 5.1): Global Export sends the v1 element model (platform a bare id,
    # single.start, assignments positional to tasks, assignee {id, name: e-mail, external_id}, externalElement.id).
    # The simulator sent its stored v2 element, so the ingress never met Kordiam's shape end to end.
    from bridge.kordiam.models import Element

    element = stored_element()
    [body] = await webhook_bodies({"global_export_url": "http://ge.test", "global_export_auth": _BEARER}, element)
    publication, task = body["publications"][0], body["tasks"][0]
    assert publication["platform"] == 99003 and "schedule" not in publication
    assert publication["single"] == {"start": {"date": "2026-11-23", "time": "19:30"}}
    assert publication["assignments"] == [True] and "assignedTaskIds" not in publication
    assert task["assignee"] == {"id": 3, "name": "anna@example.org"} and "user" not in task
    assert body["externalElement"] == {"id": "wp-12", "link": "https://wp/?p=12"}
    assert "version" not in body and "creationTime" not in body
    # What the bridge reads from it is what it reads from the API's element, but for what v1 does not carry: the
    # platform's name, the task's content (Global Export sends none) and the assignee's names.
    from_webhook, from_api = Element.model_validate(body), Element.model_validate(element)
    v1_carries: dict[str, Any] = {
        "version": True,
        "tasks": {"__all__": {"content", "assignee"}},
        "publications": {"__all__": {"platform"}},
    }
    assert from_webhook.model_dump(exclude=v1_carries) == from_api.model_dump(exclude=v1_carries)
    assert from_webhook.publications[0].platform.id == 99003
    webhook_assignee, api_assignee = from_webhook.tasks[0].assignee, from_api.tasks[0].assignee
    assert webhook_assignee is not None and api_assignee is not None
    assert (webhook_assignee.id, webhook_assignee.email) == (api_assignee.id, api_assignee.email)


async def test_the_platform_body_is_v1_shaped_as_seed_002_shows() -> None:
    # Seed 002: one `publication`, the title also as `description`, the element status as a bare id, and the text
    # task's content as a string with `headline` beside it.
    from bridge.kordiam.models import Element

    element = stored_element()
    settings = {"platform_url": "http://cms.test/p", "platform_user": "u", "platform_secret": "s"}
    [body] = await webhook_bodies(settings, element)
    assert "publications" not in body and body["publication"]["id"] == 7001
    assert body["description"] == body["title"] == "Budget vote" and body["elementStatus"] == 2
    assert body["tasks"][0]["content"] == "<p>Body</p>" and body["tasks"][0]["headline"] == "Budget passes"
    from_webhook, from_api = Element.model_validate(body), Element.model_validate(element)
    v1_carries = {"publications": {"__all__": {"platform"}}}
    assert from_webhook.model_dump(include={"publications"}, exclude=v1_carries) == from_api.model_dump(
        include={"publications"}, exclude=v1_carries
    )
    assert from_webhook.tasks[0].content == from_api.tasks[0].content
    assert from_webhook.status is not None and from_webhook.status.id == 2


@pytest.mark.parametrize(
    "name", ["dateFrom", "dateTo", "creationDateFrom", "creationDateTo", "groupIds", "platformId", "userId", "sort"]
)
async def test_a_list_filter_the_simulator_does_not_implement_is_refused_by_name(
    api: httpx.AsyncClient, clock: FakeClock, name: str
) -> None:
    # Kordiam filters the list by these (reference 3.5, 3.6); the simulator ignored them and answered every
    # element, so a client relying on one would pass here on data Kordiam would never list.
    await make_elements(api, clock, 2)
    problem = assert_problem(await api.get("/api/v2/elements", params={name: "1"}), 400, "bad-request")
    assert name in problem["detail"] and "simulator" in problem["detail"]


async def test_a_410_fault_says_the_resource_is_gone(api: httpx.AsyncClient) -> None:
    # README lets a fault stand for a Kordiam that answers 410 for a deleted element; its problem said bad-request,
    # a type whose status is 400, not the documented "does not exist or is not visible".
    await create_element(api)
    await api.post("/_admin/faults", json={"method": "GET", "path": "/elements/", "status": 410})
    assert_problem(await api.get("/api/v2/elements/1001"), 410, "resource-not-found")

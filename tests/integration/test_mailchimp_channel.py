"""The mailchimp channel against a Mailchimp API v3 server built from Mailchimp's public reference
(``tests/servers/mailchimp.py``), over real HTTP through the bridge's own shared client (aiohttp)."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.channels import ChannelContext
from bridge.channels.mailchimp import MailchimpChannel, MailchimpOptions, create, quarter_hour_ceil
from bridge.config import ChannelSettings, Settings
from bridge.errors import ChannelRejected, ChannelUnavailable
from bridge.http import HttpClient, HttpRequest, HttpResponse, HttpTimeout
from bridge.kordiam.models import Element
from bridge.simulator import RunningSimulator
from tests.servers.mailchimp import RunningMailchimp
from tests.support import SimulatorAdmin, SqsEndpoint, drain, eventually, queue_settled, running_worker, story

pytestmark = pytest.mark.integration

KEY = "test-key-us21"
LIST = "list1"


@pytest.fixture(scope="module")
def server() -> Iterator[RunningMailchimp]:
    with RunningMailchimp() as running:
        yield running


@pytest.fixture
async def mailchimp_admin(server: RunningMailchimp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{server.url}/_admin", timeout=10) as client:
        (await client.post("/reset")).raise_for_status()
        yield client


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient(max_connections=8, timeout=10)
    yield client
    await client.aclose()


def make_channel(server: RunningMailchimp, http: HttpClient, **options: Any) -> MailchimpChannel:
    settings = ChannelSettings(
        name="newsletter",
        type="mailchimp",
        platforms=[99005],
        api_key=options.pop("api_key", KEY),
        list_id=options.pop("list_id", LIST),
        base_url=options.pop("base_url", server.base_url),
        **options,
    )
    channel = create(settings, MailchimpOptions.model_validate(settings.options), ChannelContext(http))
    assert isinstance(channel, MailchimpChannel)
    return channel


@pytest.fixture
async def channel(server: RunningMailchimp, http: HttpClient) -> AsyncIterator[MailchimpChannel]:
    channel = make_channel(server, http, from_name="The Daily Bridge", reply_to="desk@example.org")
    yield channel
    await channel.aclose()


def future(days: int = 2, hour: int = 19, minute: int = 30) -> dt.datetime:
    day = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=days)
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=dt.UTC)


def element(title: str = "Council approves budget", *, when: dt.datetime | None = None, **content: Any) -> Element:
    data = story(title, platforms=(99005,))
    data.update(id=4711, version=3)
    data["tasks"][0]["id"] = 31
    data["tasks"][0]["content"].update(content)
    publication = data["publications"][0]
    publication["id"] = 813
    if when is None:
        publication.pop("schedule")
    else:
        publication["schedule"] = {
            "kind": "single",
            "date": when.date().isoformat(),
            "timing": {"type": "time", "time": when.strftime("%H:%M")},
        }
    return Element.model_validate(data)


async def campaigns(mailchimp_admin: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await mailchimp_admin.get("/campaigns")
    response.raise_for_status()
    return {campaign["id"]: campaign for campaign in response.json()}


async def requests(mailchimp_admin: httpx.AsyncClient) -> list[str]:
    response = await mailchimp_admin.get("/requests")
    return [f"{r['method']} {r['path'].removeprefix('/3.0')}" for r in response.json()]


async def upsert(channel: MailchimpChannel, value: Element, external_id: str | None = None) -> Any:
    return await channel.upsert(value, value.publications[0], external_id)


# --- the life of a newsletter campaign -----------------------------------------------------------------------------


async def test_create_without_a_date_is_a_draft_with_content(
    channel: MailchimpChannel, mailchimp_admin: httpx.AsyncClient
) -> None:
    result = await upsert(channel, element())
    campaign = (await campaigns(mailchimp_admin))[result.external_id]
    assert campaign["status"] == "save" and campaign["send_time"] == ""
    assert campaign["type"] == "regular" and campaign["recipients"]["list_id"] == LIST
    assert campaign["settings"] == {
        "subject_line": "Council approves budget",
        "preview_text": "The lead.",
        "title": "Council approves budget [Kordiam 4711/813]",
        "from_name": "The Daily Bridge",
        "reply_to": "desk@example.org",
    }
    html = campaign["content"]["html"]
    assert "<h1>Council approves budget</h1>" in html and "<p>Body <b>text</b>.</p>" in html and "*|UNSUB|*" in html
    assert result.edit_link == f"https://us21.admin.mailchimp.com/campaigns/edit?id={campaign['web_id']}"
    assert result.open_link == campaign["archive_url"] and result.live is False
    # One look for a campaign made before (none), then the creation.
    assert await requests(mailchimp_admin) == [
        "GET /campaigns",
        "POST /campaigns",
        f"PUT /campaigns/{result.external_id}/content",
    ]


async def test_schedule_reschedule_lose_date_and_delete(
    channel: MailchimpChannel, mailchimp_admin: httpx.AsyncClient
) -> None:
    first = future(minute=37)  # Mailchimp sends on the quarter hour: 19:37 → 19:45
    result = await upsert(channel, element(when=first))
    campaign_id = result.external_id
    campaign = (await campaigns(mailchimp_admin))[campaign_id]
    assert campaign["status"] == "schedule" and result.live is False
    assert campaign["send_time"] == quarter_hour_ceil(first).isoformat()
    assert campaign["send_time"].endswith("T19:45:00+00:00")

    # Reschedule: a scheduled campaign must be unscheduled before it can be edited, then scheduled again.
    second = future(days=3, hour=6, minute=0)
    log_before = len(await requests(mailchimp_admin))
    again = await upsert(channel, element("Budget: the vote", when=second), campaign_id)
    assert again.external_id == campaign_id
    assert (await requests(mailchimp_admin))[log_before:] == [
        f"GET /campaigns/{campaign_id}",
        f"POST /campaigns/{campaign_id}/actions/unschedule",
        f"PATCH /campaigns/{campaign_id}",
        f"PUT /campaigns/{campaign_id}/content",
        f"POST /campaigns/{campaign_id}/actions/schedule",
    ]
    campaign = (await campaigns(mailchimp_admin))[campaign_id]
    assert campaign["status"] == "schedule" and campaign["send_time"] == second.isoformat()
    assert campaign["settings"]["subject_line"] == "Budget: the vote"
    assert "Budget: the vote" in campaign["content"]["html"]

    # The story loses its date: the campaign becomes an unscheduled draft, with the latest content.
    await upsert(channel, element("Budget: postponed"), campaign_id)
    campaign = (await campaigns(mailchimp_admin))[campaign_id]
    assert campaign["status"] == "save" and campaign["send_time"] == ""
    assert "Budget: postponed" in campaign["content"]["html"]

    # Scheduled again, then removed from the newsletter: unscheduled and deleted.
    await upsert(channel, element("Budget: the vote", when=second), campaign_id)
    await channel.delete(4711, 813, campaign_id)
    assert campaign_id not in await campaigns(mailchimp_admin)
    await channel.delete(4711, 813, campaign_id)  # already gone: fine


async def test_a_time_in_the_past_leaves_an_unscheduled_draft(
    channel: MailchimpChannel, mailchimp_admin: httpx.AsyncClient
) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    result = await upsert(channel, element(when=past))
    campaign = (await campaigns(mailchimp_admin))[result.external_id]
    assert campaign["status"] == "save" and campaign["content"]["html"]


async def test_a_campaign_deleted_by_hand_is_created_again(channel: MailchimpChannel, server: RunningMailchimp) -> None:
    result = await upsert(channel, element(when=future()))
    server.state.campaigns.clear()  # someone deleted it in Mailchimp
    again = await upsert(channel, element(when=future()), result.external_id)
    assert again.external_id != result.external_id
    assert server.state.campaigns[again.external_id]["status"] == "schedule"


def losing(http: HttpClient, method: str, path_end: str, *, performed: bool) -> HttpClient:
    """A client whose first ``method`` request to a path ending in ``path_end`` gets no answer: Mailchimp did it
    (``performed``, its answer lost) or never saw it (the connection failed)."""
    lost: list[str] = []

    async def handler(request: HttpRequest) -> HttpResponse:
        if request.method == method and request.url.path.endswith(path_end) and not lost:
            lost.append(request.url.path)
            if performed:
                await http.request(method, str(request.url), content=request.content, headers=request.headers)
            raise HttpTimeout("no answer within 10 s")
        return await http.request(request.method, str(request.url), content=request.content, headers=request.headers)

    return HttpClient.answering(handler)


@pytest.mark.parametrize(
    ("method", "path_end", "performed"),
    [
        ("POST", "/campaigns", True),  # created, its answer lost
        ("PUT", "/content", False),  # created, then its content failed
        ("POST", "/actions/schedule", True),  # scheduled, its answer lost: two would both be sent
    ],
)
async def test_a_retry_after_a_lost_step_makes_no_second_campaign(
    server: RunningMailchimp,
    http: HttpClient,
    mailchimp_admin: httpx.AsyncClient,
    method: str,
    path_end: str,
    performed: bool,
) -> None:
    flaky = make_channel(server, losing(http, method, path_end, performed=performed), from_name="X", reply_to="x@e.org")
    with pytest.raises(ChannelUnavailable, match="unreachable"):
        await upsert(flaky, element(when=future()))
    # The queue's retry, on this worker or another (a fresh channel), with no external id recorded.
    result = await upsert(make_channel(server, http, from_name="X", reply_to="x@e.org"), element(when=future()))
    held = await campaigns(mailchimp_admin)
    assert list(held) == [result.external_id]
    assert held[result.external_id]["status"] == "schedule"
    assert held[result.external_id]["content"]["html"]


async def test_a_story_deleted_before_the_retry_of_a_lost_schedule_loses_its_campaign(
    server: RunningMailchimp,
    mailchimp_admin: httpx.AsyncClient,
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    tmp_path: Path,
) -> None:
    """The whole worker over real connections: Mailchimp schedules the campaign, but its answer comes after the
    channel's timeout, so the bridge records nothing; the story is deleted in Kordiam before the queue's retry.
    The deletion's sync finds the campaign by its mark and deletes it: no newsletter about a deleted story."""
    settings = Settings(
        queue={
            "url": queues[0],
            "endpoint_url": sqs_endpoint.url,
            "concurrency": 4,
            "wait_time_seconds": 1,
            "visibility_timeout": 20,
            # The failed message comes back no sooner than 4 s later: after the deletion's notification.
            "retry_base_seconds": 8,
            "retry_max_seconds": 8,
        },
        kordiam={"base_url": simulator.base_url, "client_id": "demo-client", "client_secret": "demo-secret"},
        state={"url": f"sqlite:///{tmp_path / 'state.db'}"},
        channels=[
            {
                "name": "newsletter",
                "type": "mailchimp",
                "platforms": [99005],
                "api_key": KEY,
                "list_id": LIST,
                "base_url": server.base_url,
                "from_name": "The Daily",
                "reply_to": "news@example.org",
                "timeout": 1,
            }
        ],
        ops={"port": 0},
    )
    body = story("Deleted before the retry", platforms=(99005,))
    when = future()
    body["publications"][0]["schedule"] = {
        "kind": "single",
        "date": when.date().isoformat(),
        "timing": {"type": "time", "time": when.strftime("%H:%M")},
    }
    (await mailchimp_admin.post("/faults", json={"delay": 3, "path": "/actions/schedule"})).raise_for_status()

    async with running_worker(settings):
        element_id = (await admin.create(body))["id"]

        async def scheduled() -> bool:
            return [c["status"] for c in (await campaigns(mailchimp_admin)).values()] == ["schedule"]

        await eventually(scheduled, timeout=30, what="the campaign scheduled (its answer held past the timeout)")
        await admin.delete(element_id)

        async def gone() -> bool:
            return await campaigns(mailchimp_admin) == {}

        await eventually(gone, timeout=30, what="the deleted story's campaign unscheduled and deleted")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=30, what="the queue settled")
    assert await campaigns(mailchimp_admin) == {}
    assert drain(sqs_endpoint.url, queues[1]) == []


async def test_delete_mode_unschedule_keeps_a_draft(
    server: RunningMailchimp, http: HttpClient, mailchimp_admin: httpx.AsyncClient
) -> None:
    channel = make_channel(server, http, delete_mode="unschedule", from_name="X", reply_to="x@example.org")
    result = await upsert(channel, element(when=future()))
    await channel.delete(4711, 813, result.external_id)
    assert (await campaigns(mailchimp_admin))[result.external_id]["status"] == "save"


async def test_sender_defaults_come_from_the_audience(
    server: RunningMailchimp, http: HttpClient, mailchimp_admin: httpx.AsyncClient
) -> None:
    channel = make_channel(server, http)
    await upsert(channel, element(when=future()))
    await upsert(channel, element("Second story", when=future()))
    found = list((await campaigns(mailchimp_admin)).values())
    assert {(c["settings"]["from_name"], c["settings"]["reply_to"]) for c in found} == {
        ("The Daily", "newsletter@example.org")
    }
    assert (await requests(mailchimp_admin)).count(f"GET /lists/{LIST}") == 1, "the audience is read once"


# --- a campaign that was sent ------------------------------------------------------------------------------------


async def test_an_edit_after_sending_is_rejected_clearly(
    channel: MailchimpChannel, mailchimp_admin: httpx.AsyncClient
) -> None:
    result = await upsert(channel, element(when=future()))
    (await mailchimp_admin.post(f"/campaigns/{result.external_id}/send")).raise_for_status()
    with pytest.raises(ChannelRejected, match=rf"campaign {result.external_id} was already sent at .*not applied"):
        await upsert(channel, element("A correction", when=future()), result.external_id)
    assert (await campaigns(mailchimp_admin))[result.external_id]["settings"][
        "subject_line"
    ] == "Council approves budget"


async def test_sent_edits_ignore_reports_the_campaign_live(
    server: RunningMailchimp, http: HttpClient, mailchimp_admin: httpx.AsyncClient
) -> None:
    channel = make_channel(server, http, sent_edits="ignore", from_name="X", reply_to="x@example.org")
    result = await upsert(channel, element(when=future()))
    await mailchimp_admin.post(f"/campaigns/{result.external_id}/send")
    again = await upsert(channel, element("A correction", when=future()), result.external_id)
    assert again.external_id == result.external_id and again.live is True


async def test_a_sent_campaign_is_never_deleted(channel: MailchimpChannel, mailchimp_admin: httpx.AsyncClient) -> None:
    result = await upsert(channel, element(when=future()))
    await mailchimp_admin.post(f"/campaigns/{result.external_id}/send")
    await channel.delete(4711, 813, result.external_id)  # no error: an e-mail cannot be recalled
    assert (await campaigns(mailchimp_admin))[result.external_id]["status"] == "sent"


# --- errors --------------------------------------------------------------------------------------------------------


async def test_wrong_key_is_rejected_naming_the_channel(server: RunningMailchimp, http: HttpClient) -> None:
    channel = make_channel(server, http, api_key="wrong-key-us21", from_name="X", reply_to="x@example.org")
    with pytest.raises(ChannelRejected, match=r"mailchimp channel 'newsletter'.*HTTP 401 API Key Invalid.*api_key"):
        await upsert(channel, element())


async def test_unknown_audience_is_rejected(server: RunningMailchimp, http: HttpClient) -> None:
    channel = make_channel(server, http, list_id="nosuchlist")
    with pytest.raises(ChannelRejected, match="audience list_id 'nosuchlist' does not exist"):
        await upsert(channel, element())


async def test_validation_errors_keep_mailchimps_detail(server: RunningMailchimp, http: HttpClient) -> None:
    channel = make_channel(server, http, list_id="nosuchlist", from_name="X", reply_to="x@example.org")
    with pytest.raises(ChannelRejected, match=r"HTTP 400 Invalid Resource.*recipients\.list_id: The list_id is not"):
        await upsert(channel, element())


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_throttling_and_outages_are_transient(
    channel: MailchimpChannel, mailchimp_admin: httpx.AsyncClient, status: int
) -> None:
    await mailchimp_admin.post("/faults", json={"status": status, "count": 1, "retry_after": 7})
    with pytest.raises(ChannelUnavailable, match=rf"mailchimp channel 'newsletter'.*HTTP {status}") as caught:
        await upsert(channel, element(when=future()))
    assert caught.value.retry_after == 7
    result = await upsert(channel, element(when=future()))  # the next attempt goes through
    assert (await campaigns(mailchimp_admin))[result.external_id]["status"] == "schedule"


async def test_unreachable_is_transient(http: HttpClient, server: RunningMailchimp) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    channel = make_channel(server, http, base_url=f"http://127.0.0.1:{port}/3.0", from_name="X", reply_to="x@e.org")
    with pytest.raises(ChannelUnavailable, match="unreachable"):
        await upsert(channel, element())


# --- the test server keeps Mailchimp's rules (so the adapter is tested against them) ----------------------------------


async def test_server_enforces_mailchimps_rules(server: RunningMailchimp, mailchimp_admin: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, auth=("anyone", KEY), timeout=10) as api:
        assert (await api.get("/campaigns/nope")).json()["title"] == "Resource Not Found"
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as without_key:
            anonymous = await without_key.get("/campaigns/nope")
        assert anonymous.status_code == 401 and anonymous.json()["title"] == "API Key Invalid"
        assert anonymous.headers["content-type"].startswith("application/problem+json")

        settings = {"subject_line": "S", "from_name": "F", "reply_to": "r@example.org", "title": "T"}
        created = await api.post("/campaigns", json={"type": "regular", "recipients": {"list_id": LIST}})
        campaign_id = created.json()["id"]
        when = future()
        no_content = await api.post(
            f"/campaigns/{campaign_id}/actions/schedule", json={"schedule_time": when.isoformat()}
        )
        assert no_content.status_code == 400 and "cannot be scheduled" in no_content.json()["detail"]
        await api.patch(f"/campaigns/{campaign_id}", json={"settings": settings})
        await api.put(f"/campaigns/{campaign_id}/content", json={"html": "<p>x</p>"})

        off_quarter = await api.post(
            f"/campaigns/{campaign_id}/actions/schedule",
            json={"schedule_time": (when + dt.timedelta(minutes=7)).isoformat()},
        )
        assert off_quarter.status_code == 400 and "quarter-hour" in off_quarter.json()["detail"]
        past = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
        in_past = await api.post(f"/campaigns/{campaign_id}/actions/schedule", json={"schedule_time": past.isoformat()})
        assert in_past.status_code == 400 and "past" in in_past.json()["detail"]

        ok = await api.post(f"/campaigns/{campaign_id}/actions/schedule", json={"schedule_time": when.isoformat()})
        assert ok.status_code == 204
        edit = await api.patch(f"/campaigns/{campaign_id}", json={"settings": settings})
        assert edit.status_code == 400 and "Unschedule" in edit.json()["detail"]
        content = await api.put(f"/campaigns/{campaign_id}/content", json={"html": "<p>y</p>"})
        assert content.status_code == 400
        assert (await api.delete(f"/campaigns/{campaign_id}")).status_code == 400
        assert (await api.post(f"/campaigns/{campaign_id}/actions/unschedule")).status_code == 204
        assert (await api.patch(f"/campaigns/{campaign_id}", json={"settings": settings})).status_code == 200
        assert (await api.delete(f"/campaigns/{campaign_id}")).status_code == 204

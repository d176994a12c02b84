"""The worker end to end: real SQS over HTTP (moto server or LocalStack), the Kordiam simulator over HTTP,
folder channels on disk. Every test asserts nothing lost and nothing delivered twice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.config import Settings
from bridge.simulator import RunningSimulator
from tests.support import (
    ChannelLog,
    SimulatorAdmin,
    SqsEndpoint,
    drain,
    eventually,
    queue_depth,
    queue_settled,
    running_worker,
    send,
    sqs_client,
    story,
    worker_settings,
)

pytestmark = pytest.mark.integration


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*")) if folder.exists() else []


SettingsFor = Callable[..., Settings]


@pytest.fixture
def settings_for(
    sqs_endpoint: SqsEndpoint, queues: tuple[str, str], simulator: RunningSimulator, tmp_path: Path
) -> SettingsFor:
    def make(**overrides: Any) -> Settings:
        return worker_settings(
            queue=queues[0], endpoint=sqs_endpoint.url, kordiam=simulator.base_url, workdir=tmp_path, **overrides
        )

    return make


async def feedback_written(admin: SimulatorAdmin, element_id: int) -> bool:
    """Every publication has its externalId in Kordiam, and the element its link."""
    element = await admin.get(element_id)
    return all(p.get("externalId") for p in element["publications"]) and "externalElement" in element


async def test_create_update_delete_with_two_platforms(
    settings_for: SettingsFor,
    admin: SimulatorAdmin,
    channel_log: ChannelLog,
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    tmp_path: Path,
) -> None:
    async with running_worker(settings_for()):
        created = await admin.create(story("Budget passes"))
        element_id = created["id"]
        web_pub, print_pub = (p["id"] for p in created["publications"])

        # Created in both channels, with feedback written back to Kordiam.
        await eventually(lambda: feedback_written(admin, element_id), what="feedback in Kordiam")
        element = await admin.get(element_id)
        web = element["publications"][0]
        assert web["externalId"] == f"{element_id}-{web_pub}"
        assert web["cms"]["editLink"].startswith("file://") and web["cms"]["openLink"].endswith(".html")
        assert element["externalElement"]["externalId"] == f"{element_id}-{web_pub}"  # the first channel is main
        assert files(tmp_path / "web") == [f"{element_id}-{web_pub}.html", f"{element_id}-{web_pub}.json"]
        assert files(tmp_path / "print") == [f"{element_id}-{print_pub}.html", f"{element_id}-{print_pub}.json"]
        page = (tmp_path / "web" / f"{element_id}-{web_pub}.html").read_text()
        assert "<h1>Budget passes</h1>" in page and "<b>text</b>" in page

        # Our own feedback writes come back as notifications; they must settle, not loop.
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="queue to settle after feedback")
        writes_after_create = [
            (r["method"], r["path"])
            for r in await admin.requests()
            if r["method"] in ("PATCH", "POST") and not r["path"].startswith("/api/v2/auth/")
        ]

        # Update: new headline reaches both channels as an update, not a second create.
        updated = story("Budget passes after all")
        updated["publications"] = element["publications"]
        updated["tasks"] = [
            {**element["tasks"][0], "content": {"headline": "Budget passes after all", "text": "<p>v2</p>"}}
        ]
        await admin.replace(element_id, {**element, **{"tasks": updated["tasks"]}, "title": "Budget passes after all"})
        document = tmp_path / "web" / f"{element_id}-{web_pub}.json"
        await eventually(
            lambda: json.loads(document.read_text())["text"]["headline"] == "Budget passes after all",
            what="updated headline in the web channel",
        )
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="queue to settle after update")

        # Remove the print publication: only the print item is retracted.
        element = await admin.get(element_id)
        await admin.replace(element_id, {**element, "publications": [element["publications"][0]]})
        await eventually(lambda: files(tmp_path / "print") == [], what="print item retracted")
        assert files(tmp_path / "web") != []

        # Delete the story: everything is retracted.
        await admin.delete(element_id)
        await eventually(lambda: files(tmp_path / "web") == [], what="web item retracted")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="queue to settle after delete")

    assert channel_log.creates == {("web", element_id, web_pub): 1, ("print", element_id, print_pub): 1}
    assert channel_log.updates[("web", element_id, web_pub)] == 1
    assert channel_log.deletes == {("web", element_id, web_pub): 1, ("print", element_id, print_pub): 1}
    # Feedback is written once, and its own notifications write nothing more: no update loop.
    assert sorted(writes_after_create) == sorted(
        [
            ("PATCH", f"/api/v2/elements/{element_id}/publications/{web_pub}"),
            ("PATCH", f"/api/v2/elements/{element_id}/publications/{print_pub}"),
            ("POST", f"/api/v2/elements/{element_id}/external-element/link"),
        ]
    )
    assert drain(sqs_endpoint.url, queues[1]) == []


async def test_a_publication_moved_to_a_platform_no_channel_takes_loses_its_stale_feedback(
    settings_for: SettingsFor,
    admin: SimulatorAdmin,
    channel_log: ChannelLog,
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    tmp_path: Path,
) -> None:
    async with running_worker(settings_for()):
        created = await admin.create(story("Budget passes"))
        element_id = created["id"]
        web_pub, print_pub = (p["id"] for p in created["publications"])

        await eventually(lambda: feedback_written(admin, element_id), what="feedback in Kordiam")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="queue to settle after feedback")

        # The first clearing PATCH fails past the client's own retries: the message goes back to the queue, and
        # its next receive clears, then retracts.
        await admin.fault(
            method="PATCH", path=rf"/elements/{element_id}/publications/{print_pub}$", status=503, count=4
        )
        element = await admin.get(element_id)
        web, paper = element["publications"]
        await admin.replace(element_id, {**element, "publications": [web, {**paper, "platform": {"id": 99005}}]})

        async def print_feedback_cleared() -> bool:
            moved = (await admin.get(element_id))["publications"][1]
            return "externalId" not in moved and "cms" not in moved

        await eventually(print_feedback_cleared, timeout=30, what="the moved publication's feedback cleared")
        await eventually(lambda: files(tmp_path / "print") == [], what="print item retracted")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="queue to settle after the move")

    element = await admin.get(element_id)
    assert element["publications"][1]["platform"]["id"] == 99005
    assert element["publications"][0]["externalId"] == f"{element_id}-{web_pub}"  # the web publication keeps its own
    assert element["publications"][0]["cms"]["editLink"].startswith("file://")
    assert element["externalElement"]["externalId"] == f"{element_id}-{web_pub}"
    assert files(tmp_path / "web") == [f"{element_id}-{web_pub}.html", f"{element_id}-{web_pub}.json"]
    assert channel_log.deletes == {("print", element_id, print_pub): 1}
    assert drain(sqs_endpoint.url, queues[1]) == []


async def test_duplicate_delivery_creates_nothing_twice(
    settings_for: SettingsFor,
    admin: SimulatorAdmin,
    channel_log: ChannelLog,
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
) -> None:
    created = await admin.create(story())
    for _ in range(4):
        await admin.notify(created["id"], "created")
    async with running_worker(settings_for()):
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="all deliveries processed")
    assert set(channel_log.creates.values()) == {1} and len(channel_log.creates) == 2
    assert sum(channel_log.updates.values()) == 0
    assert drain(sqs_endpoint.url, queues[1]) == []


async def test_out_of_order_delivery(
    settings_for: SettingsFor,
    admin: SimulatorAdmin,
    channel_log: ChannelLog,
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    tmp_path: Path,
) -> None:
    created = await admin.create(story("First"))
    element_id = created["id"]
    async with running_worker(settings_for()):
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="first sync")
        current = await admin.get(element_id)
        # A Global Export body older than what was synced: acknowledged without any work.
        stale = {**current, "modificationDate": "2020-01-01T00:00:00Z"}
        send(sqs_endpoint.url, queues[0], stale)
        # Delete, then a late "updated" for the same element: nothing comes back.
        await admin.delete(element_id)
        await eventually(lambda: files(tmp_path / "web") == [], what="delete")
        send(sqs_endpoint.url, queues[0], {"id": element_id, "event": "updated"})
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="late messages processed")
    assert files(tmp_path / "web") == [] and files(tmp_path / "print") == []
    assert set(channel_log.creates.values()) == {1}
    assert set(channel_log.deletes.values()) == {1}
    assert drain(sqs_endpoint.url, queues[1]) == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("this is not json", "body is not JSON"),
        ('{"hello": "world"}', "no element id"),
        ('{"id": 42, "event": "exploded"}', "unknown event"),
        # Beyond SQLite's 64-bit integers: once a handler crash retried until the DLQ.
        ('{"id": 99999999999999999999}', "larger than the largest element id"),
    ],
)
async def test_poison_message_goes_to_the_dlq_with_a_reason_on_first_receive(
    settings_for: SettingsFor,
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    channel_log: ChannelLog,
    body: str,
    reason: str,
) -> None:
    message_id = send(sqs_endpoint.url, queues[0], body, {"origin": "test"})
    async with running_worker(settings_for()):
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="poison removed from the main queue")
    dead = drain(sqs_endpoint.url, queues[1])
    assert len(dead) == 1
    attributes = {k: v["StringValue"] for k, v in dead[0]["MessageAttributes"].items()}
    assert dead[0]["Body"] == body
    assert attributes["failure.stage"] == "decode"
    assert reason in attributes["failure.reason"]
    assert attributes["failure.attempts"] == "1"
    assert attributes["failure.source_message_id"] == message_id
    assert attributes["origin"] == "test"  # the original attributes travel along


async def test_a_message_received_past_its_budget_on_a_queue_without_redrive_is_dead_lettered(
    settings_for: SettingsFor,
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    admin: SimulatorAdmin,
    channel_log: ChannelLog,
) -> None:
    # A queue with no redrive policy of its own (the DLQ named in queue.dlq_url): a message a worker was killed on
    # at every receive came back for ever. Three receives that ended without an outcome stand for three crashes.
    client = sqs_client(sqs_endpoint.url)
    client.set_queue_attributes(QueueUrl=queues[0], Attributes={"RedrivePolicy": ""})
    created = await admin.create(story("Crashes the worker"))
    await eventually(lambda: queue_depth(sqs_endpoint.url, queues[0]) >= 1, what="the notification on the queue")
    received = 0
    while received < 3:
        answer = client.receive_message(QueueUrl=queues[0], VisibilityTimeout=0, WaitTimeSeconds=1)
        received += len(answer.get("Messages", []))
    async with running_worker(settings_for(dlq_url=queues[1], max_receive_count=3)):
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="the message out of the main queue")
    dead = drain(sqs_endpoint.url, queues[1])
    assert len(dead) == 1
    attributes = {k: v["StringValue"] for k, v in dead[0]["MessageAttributes"].items()}
    assert attributes["failure.stage"] == "receive"
    assert attributes["failure.error_class"] == "ReceivedWithoutOutcome"
    assert "received 4 times" in attributes["failure.reason"]
    # Not handled a fourth time: no channel was written, and Kordiam was not asked for the element.
    assert not channel_log.attempts and not channel_log.creates
    assert not [r for r in await admin.requests() if r["path"] == f"/api/v2/elements/{created['id']}"]


async def test_token_expiry_and_revocation_refresh_the_token(
    settings_for: SettingsFor,
    admin: SimulatorAdmin,
    channel_log: ChannelLog,
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
) -> None:
    async with running_worker(settings_for()):
        first = await admin.create(story("One"))
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="first story")
        await admin.revoke_tokens()
        second = await admin.create(story("Two"))
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="second story")
    requests = await admin.requests()
    assert [r["status"] for r in requests if r["path"] == "/api/v2/auth/token"] == [200, 200]
    assert any(r["status"] == 401 for r in requests)
    assert {key[1] for key in channel_log.creates} == {first["id"], second["id"]}
    assert drain(sqs_endpoint.url, queues[1]) == []


async def test_an_expiring_token_is_renewed_before_it_lapses(
    sqs_endpoint: SqsEndpoint, queues: tuple[str, str], channel_log: ChannelLog, tmp_path: Path
) -> None:
    from bridge.simulator import SimulatorSettings

    short = SimulatorSettings(
        queue_url=queues[0], sqs_endpoint_url=sqs_endpoint.url, region="eu-central-1", token_ttl_seconds=2
    )
    with RunningSimulator(short) as simulator:
        admin = SimulatorAdmin(simulator.base_url)
        settings = worker_settings(
            queue=queues[0], endpoint=sqs_endpoint.url, kordiam=simulator.base_url, workdir=tmp_path
        )
        async with running_worker(settings):
            await admin.create(story("Before expiry"))
            await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="first story")
            await asyncio.sleep(2.5)  # past the first token's lifetime
            await admin.create(story("After expiry"))
            await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="second story")
        requests = await admin.requests()
        await admin.aclose()
    assert [r["status"] for r in requests if r["path"] == "/api/v2/auth/token"] == [200, 200]
    assert all(r["status"] != 401 for r in requests)  # renewed ahead of expiry, never refused
    assert len(channel_log.creates) == 4 and set(channel_log.creates.values()) == {1}


@pytest.mark.parametrize(
    ("status", "retry_after_in", "retry_after_format"),
    [(429, "header", "seconds"), (429, "header", "http-date"), (429, "body", "seconds"), (503, "header", "seconds")],
)
async def test_throttling_and_server_errors_are_retried(
    settings_for: SettingsFor,
    admin: SimulatorAdmin,
    channel_log: ChannelLog,
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    status: int,
    retry_after_in: str,
    retry_after_format: str,
) -> None:
    await admin.fault(
        method="GET",
        path=r"^/api/v2/elements/\d+$",
        status=status,
        count=2,
        retry_after=1,
        retry_after_in=retry_after_in,
        retry_after_format=retry_after_format,
    )
    created = await admin.create(story())
    async with running_worker(settings_for()):
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="delivery despite faults")
    gets = [
        r["status"]
        for r in await admin.requests()
        if r["method"] == "GET" and r["path"].startswith("/api/v2/elements/")
    ]
    assert gets[:3] == [status, status, 200]
    assert len(channel_log.creates) == 2 and set(channel_log.creates.values()) == {1}
    assert {key[1] for key in channel_log.creates} == {created["id"]}
    assert drain(sqs_endpoint.url, queues[1]) == []


async def test_a_long_outage_is_retried_through_the_queue(
    settings_for: SettingsFor,
    admin: SimulatorAdmin,
    channel_log: ChannelLog,
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
) -> None:
    # More failures than the client's in-process budget (4 attempts): the message goes back to the queue with a
    # back-off and succeeds on a later receive, without being re-sent (its receive count grows).
    await admin.fault(method="GET", path=r"^/api/v2/elements/\d+$", status=503, count=5)
    await admin.create(story())
    async with running_worker(settings_for()):
        await eventually(
            lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=30, what="delivery after the outage"
        )
    assert len(channel_log.creates) == 2 and set(channel_log.creates.values()) == {1}
    assert drain(sqs_endpoint.url, queues[1]) == []


async def test_a_channel_failure_retries_only_that_channel(
    settings_for: SettingsFor,
    admin: SimulatorAdmin,
    channel_log: ChannelLog,
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
) -> None:
    from bridge.errors import ChannelUnavailable

    channel_log.fail_next["print"] = [ChannelUnavailable("print system down")]
    created = await admin.create(story())
    async with running_worker(settings_for()):
        await eventually(lambda: len(channel_log.creates) == 2, timeout=30, what="both channels delivered")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="message settled")
    web_pub, print_pub = (p["id"] for p in created["publications"])
    assert channel_log.creates[("web", created["id"], web_pub)] == 1  # not redone on the retry
    assert channel_log.creates[("print", created["id"], print_pub)] == 1
    assert drain(sqs_endpoint.url, queues[1]) == []


async def test_a_permanent_channel_rejection_is_dead_lettered_with_context(
    settings_for: SettingsFor,
    admin: SimulatorAdmin,
    channel_log: ChannelLog,
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
) -> None:
    from bridge.errors import ChannelRejected

    channel_log.fail_next["print"] = [ChannelRejected("401 rest_cannot_create: wrong credentials")] * 5
    created = await admin.create(story())
    async with running_worker(settings_for()):
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=30, what="message settled")
    # The create, and each notification our web feedback caused, failed on the print channel: all are dead
    # letters with the same context, none is lost.
    dead = drain(sqs_endpoint.url, queues[1])
    assert dead
    for message in dead:
        attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
        assert attributes["failure.stage"] == "print"
        assert attributes["failure.error_class"] == "ChannelRejected"
        assert attributes["failure.element_id"] == str(created["id"])
        assert "wrong credentials" in attributes["failure.reason"]
    assert len(channel_log.creates) == 1  # the web channel was not held back


async def test_the_reconciliation_sweep_heals_a_lost_notification(
    settings_for: SettingsFor,
    admin: SimulatorAdmin,
    channel_log: ChannelLog,
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
) -> None:
    created = await admin.create(story("Never notified"))
    assert len(drain(sqs_endpoint.url, queues[0])) == 1  # the notification is lost before any worker sees it
    settings = settings_for()
    settings = settings.model_copy(
        update={"reconcile": settings.reconcile.model_copy(update={"enabled": True, "interval_seconds": 1})}
    )
    async with running_worker(settings):
        await eventually(lambda: len(channel_log.creates) == 2, what="the sweep to enqueue and deliver the story")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="queue settled")
        # Our feedback moves the element's version on once, so one more sweep may re-enqueue it; after that the
        # sweeps must find it synced and stop (a sweep that ignored the state store would fetch it every second).

        async def fetches() -> int:
            path = f"/api/v2/elements/{created['id']}"
            return sum(1 for r in await admin.requests() if r["method"] == "GET" and r["path"] == path)

        await asyncio.sleep(3)
        before = await fetches()
        await asyncio.sleep(3)
        assert await fetches() == before
    assert {key[1] for key in channel_log.creates} == {created["id"]}
    assert set(channel_log.creates.values()) == {1}
    assert drain(sqs_endpoint.url, queues[1]) == []


async def test_elements_parked_for_a_channel_renamed_since_are_counted_and_named_at_start(
    settings_for: SettingsFor,
) -> None:
    # The state file holds an element parked for "newsroom-web", which the configuration has since renamed: no
    # worker calls that channel again, so nothing would requeue it. The worker counts it (the gauge's alert
    # fires) and says which command serves it; it sends nothing by itself.
    from structlog.testing import capture_logs

    from bridge.ops import metrics
    from bridge.state import open_state_store

    settings = settings_for()
    store = await open_state_store(settings.state)
    await store.park(41, "newsroom-web", "HTTP 401: application password revoked")
    await store.close()
    with capture_logs() as lines:
        async with running_worker(settings):
            await eventually(
                lambda: any(line["event"] == "parked_for_unconfigured_channel" for line in lines),
                timeout=30,
                what="the warning",
            )
    [warning] = [line for line in lines if line["event"] == "parked_for_unconfigured_channel"]
    assert (warning["channel"], warning["parked"], warning["log_level"]) == ("newsroom-web", 1, "warning")
    assert "kordiam-bridge parked requeue --channel newsroom-web" in warning["hint"]
    assert metrics.CHANNEL_PARKED_ELEMENTS.labels("newsroom-web")._value.get() == 1
    store = await open_state_store(settings.state)
    try:
        assert [p.element_id for p in await store.parked("newsroom-web")] == [41]  # still there, for the operator
    finally:
        await store.close()

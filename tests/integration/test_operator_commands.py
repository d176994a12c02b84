"""Operator commands against a real SQS endpoint (moto server; LocalStack with ``BRIDGE_TEST_SQS=localstack``):
replay, dlq list/show/redrive, parked list/requeue, status. Every redrive test counts messages: nothing lost, nothing
copied twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from rich.console import Console

from bridge.admin.dlq import dlq_list, dlq_show
from bridge.admin.dlq_delete import delete_dead_letters, dlq_delete
from bridge.admin.parked import parked_list, parked_requeue
from bridge.admin.progress import NoProgress, progress_bar
from bridge.admin.redrive import dlq_redrive, redrive_request
from bridge.admin.rendering import (
    render_dlq_delete,
    render_dlq_list,
    render_dlq_message,
    render_redrive,
    render_replay,
)
from bridge.admin.replay import replay
from bridge.admin.results import RedriveResult, to_json
from bridge.admin.status import collect_status, render_status
from bridge.config import OpsSettings, Settings, load_settings
from bridge.errors import AdminError, ConfigError
from bridge.ops import metrics
from bridge.ops.logging import configure_logging
from bridge.ops.server import OpsServer
from bridge.queue.dead_letter import DeadLetterContext
from bridge.queue.sqs import SqsTransport
from bridge.queue.sqs_admin import MOVE_TASK_POLL_SECONDS, REDRIVE_HOLD_SECONDS, SqsQueueAdmin
from bridge.queue.transport import QueueMessage
from bridge.simulator import RunningSimulator
from bridge.state import Delivery, open_state_store
from tests.servers.fault_proxy import fault_proxy
from tests.support import (
    ChannelLog,
    SimulatorAdmin,
    SqsEndpoint,
    drain,
    eventually,
    make_queues,
    queue_depth,
    queue_settled,
    running_worker,
    send,
    sqs_client,
    story,
    worker_settings,
    write_config,
)


async def redrive(
    transport: SqsTransport,
    *,
    native: bool | None = None,
    stop: asyncio.Event | None = None,
    hold: int = REDRIVE_HOLD_SECONDS,
    poll_interval: float = MOVE_TASK_POLL_SECONDS,
) -> RedriveResult:
    """``dlq redrive`` over a transport the test holds (some tests put a failing client into it)."""
    return await SqsQueueAdmin(transport).redrive(
        redrive_request(limit=None, element_ids=None, native=native),
        progress=NoProgress(),
        stop=stop or asyncio.Event(),
        hold=hold,
        poll_interval=poll_interval,
    )


pytestmark = pytest.mark.integration

NOWHERE = "http://127.0.0.1:9"  # Kordiam is never called by these commands


@pytest.fixture
def settings(sqs_endpoint: SqsEndpoint, queues: tuple[str, str], tmp_path: Path) -> Settings:
    return worker_settings(queue=queues[0], endpoint=sqs_endpoint.url, kordiam=NOWHERE, workdir=tmp_path)


@pytest.fixture
async def transport(settings: Settings) -> AsyncIterator[SqsTransport]:
    async with SqsTransport.connect(settings.queue) as connected:
        await connected.describe()
        yield connected


async def dead_letter(
    transport: SqsTransport,
    element_id: int | None,
    *,
    stage: str = "sync",
    reason: str = "channel web refused the item: HTTP 422",
    error_class: str = "ChannelRejected",
    attributes: dict[str, str] | None = None,
    body: str | None = None,
) -> str:
    """Dead-letter a message the way the worker does; returns its original (main-queue) message id."""
    source_id = str(uuid.uuid4())
    message = QueueMessage(
        message_id=source_id,
        receipt_handle="unused",
        body=body if body is not None else json.dumps({"id": element_id, "event": "updated"}),
        attributes={"event": "updated", **(attributes or {})},
        receive_count=3,
        sent_at=None,
        group_id=None,
    )
    await transport.send_dead_letter(message, DeadLetterContext(stage, reason, error_class, element_id))
    return source_id


def config_file(sqs_endpoint: SqsEndpoint, queues: tuple[str, str], tmp_path: Path) -> Path:
    """A config file for the commands run as processes (no ops endpoint: ops.port 0)."""
    return write_config(
        tmp_path / "bridge.toml",
        queue=queues[0],
        endpoint=sqs_endpoint.url,
        kordiam=NOWHERE,
        workdir=tmp_path,
        ops_port=0,
    )


def receive_all(endpoint: str, queue: str) -> list[dict[str, Any]]:
    """Drain a queue with message and system attributes (FIFO group ids included)."""
    client = sqs_client(endpoint)
    found: list[dict[str, Any]] = []
    while True:
        response = client.receive_message(
            QueueUrl=queue,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return found
        for message in messages:
            found.append(message)
            client.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])


def string_attributes(message: dict[str, Any]) -> dict[str, str]:
    return {k: v["StringValue"] for k, v in message.get("MessageAttributes", {}).items() if "StringValue" in v}


def visible(endpoint: str, queue: str) -> int:
    attributes = sqs_client(endpoint).get_queue_attributes(
        QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def rendered(render: Any, value: Any) -> str:
    console = Console(record=True, width=200, color_system=None)
    render(value, console)
    return console.export_text()


class FlakyClient:
    """The real aiobotocore client, with chosen batch calls failing."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.send_calls = 0
        self.fail_send_calls: set[int] = set()  # these SendMessageBatch calls raise (nothing sent)
        self.refuse_entries: set[str] = set()  # bodies SQS "refuses" within an otherwise good batch
        self.fail_deletes = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def send_message_batch(self, **request: Any) -> Any:
        self.send_calls += 1
        if self.send_calls in self.fail_send_calls:
            raise ClientError(
                {"Error": {"Code": "AWS.SimpleQueueService.NonExistentQueue", "Message": "gone"}}, "SendMessageBatch"
            )
        refused = [e for e in request["Entries"] if e["MessageBody"] in self.refuse_entries]
        accepted = [e for e in request["Entries"] if e["MessageBody"] not in self.refuse_entries]
        response: dict[str, Any] = {"Successful": [], "Failed": []}
        if accepted:
            response = dict(await self._client.send_message_batch(QueueUrl=request["QueueUrl"], Entries=accepted))
            response.setdefault("Failed", [])
        response["Failed"] = [
            *response["Failed"],
            *({"Id": e["Id"], "Code": "InternalError", "SenderFault": False} for e in refused),
        ]
        return response

    async def delete_message_batch(self, **request: Any) -> Any:
        if self.fail_deletes:
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "try later"}}, "DeleteMessageBatch")
        return await self._client.delete_message_batch(**request)


# --------------------------------------------------------------------------------------------------- replay


async def test_replay_enqueues_fresh_notifications(
    settings: Settings, sqs_endpoint: SqsEndpoint, queues: tuple[str, str]
) -> None:
    result = await replay(settings.queue, [101, 102, 101, 103])
    assert [e.element_id for e in result.elements] == [101, 102, 103]  # a repeated id is sent once
    assert result.sent == 3 and result.failed == 0
    assert all(e.message_id for e in result.elements)

    messages = receive_all(sqs_endpoint.url, queues[0])
    assert sorted(json.loads(m["Body"])["id"] for m in messages) == [101, 102, 103]
    for message in messages:
        assert json.loads(message["Body"]) == {"id": json.loads(message["Body"])["id"], "event": "updated"}
        assert string_attributes(message) == {"event": "updated", "source": "replay"}
    assert "enqueued as" in rendered(render_replay, result)


class StopAfterFirstBatch:
    """Ctrl-C while the first batch is on its way."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop

    def start(self, description: str, total: int | None) -> None: ...

    def advance(self, amount: int = 1) -> None:
        self.stop.set()

    def update(self, completed: int, total: int | None = None) -> None: ...


async def test_an_interrupted_replay_says_what_it_sent_and_what_not(
    settings: Settings, sqs_endpoint: SqsEndpoint, queues: tuple[str, str]
) -> None:
    stop = asyncio.Event()
    ids = list(range(1, 26))
    result = await replay(settings.queue, ids, progress=StopAfterFirstBatch(stop), stop=stop)
    assert [e.element_id for e in result.elements] == ids
    assert result.sent == 10 and result.failed == 15
    assert {e.error for e in result.elements[10:]} == {"interrupted (Ctrl-C) before it was sent"}
    assert sorted(json.loads(m["Body"])["id"] for m in receive_all(sqs_endpoint.url, queues[0])) == ids[:10]
    shown = rendered(render_replay, result)
    assert "10 of 25 notification(s) sent" in shown and "interrupted (Ctrl-C): 15 not sent (11 12" in shown


async def test_replay_rejects_bad_ids(settings: Settings) -> None:
    with pytest.raises(ValueError, match="positive integers"):
        await replay(settings.queue, [5, 0])


async def test_replay_and_parked_requeue_to_a_queue_that_does_not_exist_are_one_line(
    settings: Settings, sqs_endpoint: SqsEndpoint
) -> None:
    # As every other command says it: not one "not enqueued" line per element.
    missing = settings.queue.url.rsplit("/", 1)[0] + f"/nope-{uuid.uuid4().hex[:8]}"
    wrong = settings.model_copy(update={"queue": settings.queue.model_copy(update={"url": missing})})
    with pytest.raises(ConfigError, match=r"^queue\.url: queue .*/nope-\w+ is not usable: .*NonExistentQueue"):
        await replay(wrong.queue, [5, 6])
    store = await open_state_store(settings.state)
    await store.park(5, "web", "HTTP 401")
    await store.close()
    with pytest.raises(ConfigError, match=r"^queue\.url: queue .*/nope-\w+ is not usable"):
        await parked_requeue(wrong, channel="web")
    assert (await parked_list(settings)).parked == 1  # nothing unparked


async def test_dlq_delete_from_a_queue_that_does_not_exist_is_a_configuration_error(settings: Settings) -> None:
    # As `dlq list`, `dlq show` and `dlq redrive` say it (exit 2 naming queue.url), not "cannot read the attributes".
    missing = settings.queue.url.rsplit("/", 1)[0] + f"/nope-{uuid.uuid4().hex[:8]}"
    wrong = settings.queue.model_copy(update={"url": missing})
    with pytest.raises(ConfigError, match=r"^queue\.url: queue .*/nope-\w+ is not usable: .*NonExistentQueue"):
        await dlq_delete(wrong, ["some-id"], delete=False)
    with pytest.raises(ConfigError, match=r"^queue\.url: queue .*/nope-\w+ is not usable: .*NonExistentQueue"):
        await dlq_delete(wrong, ["some-id"], delete=True)


async def test_replay_on_a_fifo_queue_groups_by_element(sqs_endpoint: SqsEndpoint, tmp_path: Path) -> None:
    queue, _ = make_queues(sqs_endpoint.url, f"t-{uuid.uuid4().hex[:12]}", fifo=True)
    settings = worker_settings(queue=queue, endpoint=sqs_endpoint.url, kordiam=NOWHERE, workdir=tmp_path)
    # The same element twice in two runs: a fresh deduplication id each time, so nothing is swallowed.
    await replay(settings.queue, [7, 8])
    await replay(settings.queue, [7])
    messages = receive_all(sqs_endpoint.url, queue)
    assert sorted((m["Attributes"]["MessageGroupId"], json.loads(m["Body"])["id"]) for m in messages) == [
        ("7", 7),
        ("7", 7),
        ("8", 8),
    ]


async def test_two_sends_for_one_element_at_the_same_instant_are_both_kept_on_a_fifo_queue(
    sqs_endpoint: SqsEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A coarse clock (or two ingress calls in one tick) must not give two notifications one deduplication id:
    # SQS would swallow the second for five minutes, and with it the change it announces.
    queue, _ = make_queues(sqs_endpoint.url, f"t-{uuid.uuid4().hex[:12]}", fifo=True)
    settings = worker_settings(queue=queue, endpoint=sqs_endpoint.url, kordiam=NOWHERE, workdir=tmp_path)
    monkeypatch.setattr("time.time_ns", lambda: 1_765_000_000_000_000_000)
    async with SqsTransport.connect(settings.queue) as transport:
        await transport.send('{"id": 7, "v": 1}', {"event": "updated"}, group_id="7")
        await transport.send('{"id": 7, "v": 2}', {"event": "updated"}, group_id="7")
    assert sorted(json.loads(m["Body"])["v"] for m in receive_all(sqs_endpoint.url, queue)) == [1, 2]


async def test_replayed_notifications_are_processed_by_the_worker(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    channel_log: ChannelLog,
    tmp_path: Path,
) -> None:
    settings = worker_settings(queue=queues[0], endpoint=sqs_endpoint.url, kordiam=simulator.base_url, workdir=tmp_path)
    created = await admin.create(story("Replayed"))
    async with running_worker(settings):
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="first sync")
        await replay(settings.queue, [created["id"]])
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="replay processed")
    # Processed, idempotently: still one create per channel, nothing dead-lettered.
    assert len(channel_log.creates) == 2 and set(channel_log.creates.values()) == {1}
    assert drain(sqs_endpoint.url, queues[1]) == []


async def test_replay_force_rewrites_what_a_channel_lost(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    tmp_path: Path,
) -> None:
    """Plain replay leaves a channel that holds this version alone (its fingerprint matches), even if the files
    were removed behind the bridge's back; --force writes every channel again."""
    settings = worker_settings(
        queue=queues[0], endpoint=sqs_endpoint.url, kordiam=simulator.base_url, workdir=tmp_path, channel_type="folder"
    )
    created = await admin.create(story("Lost on the channel side"))

    def files() -> list[str]:
        return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob("[wp]*/**/*") if p.is_file())

    async with running_worker(settings):
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="first sync")
        delivered = files()
        assert any(f.startswith("web/") for f in delivered) and any(f.startswith("print/") for f in delivered)
        for name in delivered:
            (tmp_path / name).unlink()

        await replay(settings.queue, [created["id"]])
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="plain replay processed")
        assert files() == []  # "unchanged": nothing written

        forced = await replay(settings.queue, [created["id"]], force=True)
        assert forced.sent == 1
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="forced replay processed")
        assert files() == delivered
    assert drain(sqs_endpoint.url, queues[1]) == []


# --------------------------------------------------------------------------------------------------- dlq list/show


async def test_dlq_list_and_show_give_the_failure_context(
    settings: Settings, transport: SqsTransport, sqs_endpoint: SqsEndpoint, queues: tuple[str, str]
) -> None:
    first = await dead_letter(transport, 11, stage="decode", reason="body is not JSON", error_class="PoisonMessage")
    await dead_letter(transport, 12, reason="x" * 300, attributes={"origin": "kordiam"})
    # A message SQS moved by itself (maxReceiveCount): no failure context, element id from the body.
    moved_by_sqs = send(sqs_endpoint.url, queues[1], {"id": 13, "event": "created"})

    listing = await dlq_list(settings.queue, limit=50)
    assert len(listing.messages) == 3 and not listing.truncated
    by_element = {m.element_id: m for m in listing.messages}
    assert set(by_element) == {11, 12, 13}
    poison = by_element[11]
    assert poison.failure is not None
    assert (poison.failure.stage, poison.failure.reason, poison.failure.error_class) == (
        "decode",
        "body is not JSON",
        "PoisonMessage",
    )
    assert poison.failure.attempts == 3 and poison.failure.source_message_id == first
    age = poison.age_seconds()
    assert age is not None and age < 60
    assert by_element[12].attributes["origin"] == "kordiam"
    assert by_element[13].failure is None and by_element[13].message_id == moved_by_sqs

    # Listing consumed nothing and hid nothing: all three are visible again at once.
    assert visible(sqs_endpoint.url, queues[1]) == 3

    table = rendered(render_dlq_list, listing)
    assert "decode" in table and "PoisonMessage" in table and "(moved by SQS)" in table
    assert "x" * 300 not in table  # the reason is truncated in the table

    shown = await dlq_show(settings.queue, poison.message_id)
    assert shown is not None and shown.message_id == poison.message_id
    assert shown.attributes["failure.reason"] == "body is not JSON"
    assert json.loads(shown.body) == {"id": 11, "event": "updated"}
    assert "SentTimestamp" in shown.system_attributes
    text = rendered(render_dlq_message, shown)
    assert "failure.stage" in text and '"id": 11' in text and "SQS attributes" in text

    # Also found by the id it had on the main queue; an unknown id is None.
    by_source = await dlq_show(settings.queue, first)
    assert by_source is not None and by_source.message_id == poison.message_id
    assert await dlq_show(settings.queue, "no-such-message") is None
    assert visible(sqs_endpoint.url, queues[1]) == 3

    as_json = json.loads(to_json(listing))
    assert as_json["messages"][0]["failure"] is not None or as_json["messages"][0]["element_id"] == 13


async def test_dlq_list_and_show_warn_when_each_look_may_move_dead_letters_on(
    settings: Settings,
    transport: SqsTransport,
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A redrive policy on the dead-letter queue itself: every peek is a receive, and after 2 of them SQS moves the
    # dead letter on, out of the bridge's sight. The commands still look (the operator asked), but say so.
    client = sqs_client(sqs_endpoint.url)
    beyond = client.create_queue(QueueName=f"beyond-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    beyond_arn = client.get_queue_attributes(QueueUrl=beyond, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": beyond_arn, "maxReceiveCount": "2"})
    client.set_queue_attributes(QueueUrl=queues[1], Attributes={"RedrivePolicy": policy})
    configure_logging("info")
    first = await dead_letter(transport, 11)
    assert len((await dlq_list(settings.queue, limit=5)).messages) == 1
    assert await dlq_show(settings.queue, first) is not None
    warnings = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    said = [w for w in warnings if w["event"] == "dead_letter_queue_has_redrive_policy"]
    assert len(said) == 2 and all(w["queue"] == queues[1] for w in said)
    assert f"after 2 looks SQS moves a dead letter on to {beyond_arn}" in said[0]["reason"]


async def test_dlq_list_pages_past_ten_messages(
    settings: Settings, transport: SqsTransport, sqs_endpoint: SqsEndpoint, queues: tuple[str, str]
) -> None:
    for element_id in range(1, 26):
        await dead_letter(transport, element_id)
    listing = await dlq_list(settings.queue, limit=100)
    assert Counter(m.element_id for m in listing.messages) == Counter(range(1, 26))
    assert len({m.message_id for m in listing.messages}) == 25
    short = await dlq_list(settings.queue, limit=12)
    assert len(short.messages) == 12 and short.truncated
    assert visible(sqs_endpoint.url, queues[1]) == 25


async def test_dlq_show_that_stopped_at_its_scan_limit_says_so_rather_than_not_found(
    transport: SqsTransport, sqs_endpoint: SqsEndpoint, queues: tuple[str, str], tmp_path: Path
) -> None:
    # "no dead letter X found" after looking at 3 of 12 tells the operator it is gone when it may well be there.
    for element_id in range(1, 13):
        await dead_letter(transport, element_id)
    path = config_file(sqs_endpoint, queues, tmp_path)
    done = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bridge", "dlq", "show", "no-such-message", "--scan-limit", "3", "--config", str(path)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(done.communicate(), 60)
    lines = err.decode().strip().splitlines()
    assert done.returncode == 1 and out == b""
    assert len(lines) == 1 and "no-such-message" in lines[0], lines
    assert "not among the first 3" in lines[0] and "--scan-limit" in lines[0], lines
    assert visible(sqs_endpoint.url, queues[1]) == 12
    # A search that saw the whole queue still says plainly that there is no such dead letter.
    done = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bridge", "dlq", "show", "no-such-message", "--config", str(path)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(done.communicate(), 60)
    assert done.returncode == 1 and err.decode().strip() == "kordiam-bridge: no dead letter no-such-message found"


async def test_dlq_delete_deletes_exactly_the_named_dead_letters_and_releases_the_rest_at_once(
    settings: Settings, transport: SqsTransport, sqs_endpoint: SqsEndpoint, queues: tuple[str, str]
) -> None:
    for element_id in range(1, 13):  # more than one receive's worth: the search pages
        await dead_letter(transport, element_id)
    poison_source = await dead_letter(transport, None, stage="decode", reason="body is not JSON", body="not json")
    by_element = {m.element_id: m for m in (await dlq_list(settings.queue, limit=50)).messages}
    named = [by_element[12].message_id, poison_source]  # its id in `dlq list`; the id of its `dead_lettered` line

    dry_run = await dlq_delete(settings.queue, named, delete=False)
    assert dry_run.dry_run and [d.error for d in dry_run.deletions] == [None, None]
    assert not any(d.deleted for d in dry_run.deletions)
    assert "would delete" in rendered(render_dlq_delete, dry_run) and visible(sqs_endpoint.url, queues[1]) == 13

    result = await dlq_delete(settings.queue, named, delete=True)
    assert [(d.deleted, d.error) for d in result.deletions] == [(True, None), (True, None)]
    assert (
        result.deletions[1].message is not None
        and result.deletions[1].message.message_id == by_element[None].message_id
    )
    # The rest are visible again at once (released, not left to their hold), and only the two named are gone.
    assert visible(sqs_endpoint.url, queues[1]) == 11
    left = (await dlq_list(settings.queue, limit=50)).messages
    assert Counter(m.element_id for m in left) == Counter(range(1, 12))


async def test_dlq_delete_on_the_command_line_reports_an_unknown_id_and_still_deletes_the_others(
    transport: SqsTransport, sqs_endpoint: SqsEndpoint, queues: tuple[str, str], tmp_path: Path
) -> None:
    source = await dead_letter(transport, 21, stage="decode", reason="unknown event 'exploded'")
    await dead_letter(transport, 22)
    path = config_file(sqs_endpoint, queues, tmp_path)

    async def delete(*argv: str) -> tuple[int | None, str, str]:
        done = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bridge", "dlq", "delete", *argv, "--config", str(path)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(done.communicate(), 60)
        return done.returncode, out.decode(), err.decode()

    code, out, err = await delete(source, "no-such-message")
    assert code == 1 and visible(sqs_endpoint.url, queues[1]) == 2
    assert out.splitlines()[0].startswith("would delete ") and f"(named {source}): element 21, stage decode" in out
    assert err.strip().splitlines()[-1] == "kordiam-bridge: no dead letter no-such-message found"

    code, out, err = await delete("no-such-message", source, "--yes")
    assert code == 1 and visible(sqs_endpoint.url, queues[1]) == 1
    assert len(out.splitlines()) == 1 and out.startswith("deleted ") and "reason unknown event 'exploded'" in out
    lines = err.strip().splitlines()
    assert lines[-1] == "kordiam-bridge: no dead letter no-such-message found"
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    [record] = [line for line in logged if line["event"] == "dead_letter_deleted"]
    assert (record["element_id"], record["reason"], record["stage"]) == (21, "unknown event 'exploded'", "decode")
    assert record["message_id"] in out


async def test_dlq_delete_warns_as_dlq_show_does_and_a_refused_delete_leaves_the_dead_letter_released(
    settings: Settings,
    transport: SqsTransport,
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = sqs_client(sqs_endpoint.url)
    beyond = client.create_queue(QueueName=f"beyond-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    beyond_arn = client.get_queue_attributes(QueueUrl=beyond, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": beyond_arn, "maxReceiveCount": "5"})
    client.set_queue_attributes(QueueUrl=queues[1], Attributes={"RedrivePolicy": policy})
    configure_logging("info")
    first = await dead_letter(transport, 31)
    await dead_letter(transport, 32)
    flaky = FlakyClient(transport._client)
    flaky.fail_deletes = True
    transport._client = flaky

    result = await delete_dead_letters(SqsQueueAdmin(transport), [first], delete=True, scan_limit=10)
    [deletion] = result.deletions
    assert not deletion.deleted and deletion.error is not None and "not deleted: ServiceUnavailable" in deletion.error
    assert visible(sqs_endpoint.url, queues[1]) == 2  # both released at once, the refused one too
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert [w["queue"] for w in logged if w["event"] == "dead_letter_queue_has_redrive_policy"] == [queues[1]]
    assert not [line for line in logged if line["event"] == "dead_letter_deleted"]


async def test_a_fifo_dead_letter_queue_with_more_than_ten_in_one_group_says_the_listing_is_partial(
    sqs_endpoint: SqsEndpoint, tmp_path: Path
) -> None:
    # SQS hands out a FIFO group's next messages only once the ones before them have left the queue: a look at
    # the queue (which holds what it saw) meets the first ten of a group and then nothing. Before, `dlq list` showed
    # those as the whole queue and `dlq show` of the 15th said "no dead letter found".
    queue, dlq = make_queues(sqs_endpoint.url, f"t-{uuid.uuid4().hex[:12]}", fifo=True)
    settings = worker_settings(queue=queue, endpoint=sqs_endpoint.url, kordiam=NOWHERE, workdir=tmp_path)
    sources = []
    async with SqsTransport.connect(settings.queue) as transport:
        await transport.describe()
        for element_id in [5] * 15 + [6]:
            source = str(uuid.uuid4())
            message = QueueMessage(source, "unused", json.dumps({"id": element_id}), {}, 3, None, str(element_id))
            await transport.send_dead_letter(message, DeadLetterContext("sync", "boom", "ChannelRejected", element_id))
            sources.append(source)
    listing = await dlq_list(settings.queue, limit=50)
    assert len(listing.messages) < 16 and listing.held_back == 16 - len(listing.messages)
    summary = rendered(render_dlq_list, listing)
    assert f"about {listing.held_back} more wait behind them in their FIFO message group" in summary
    assert "dlq redrive" in summary
    with pytest.raises(AdminError, match="FIFO message group") as raised:
        await dlq_show(settings.queue, sources[14])
    assert "dlq redrive" in str(raised.value) and "\n" not in str(raised.value)
    assert visible(sqs_endpoint.url, dlq) == 16  # nothing consumed


# --------------------------------------------------------------------------------------------------- redrive


async def test_redrive_moves_every_message_back_without_loss(
    settings: Settings, transport: SqsTransport, sqs_endpoint: SqsEndpoint, queues: tuple[str, str]
) -> None:
    for element_id in range(1, 24):
        await dead_letter(transport, element_id, attributes={"origin": "kordiam", "trace": f"t-{element_id}"})
    before = queue_depth(sqs_endpoint.url, queues[1])
    assert before == 23

    bar_console = Console(record=True, width=120, color_system=None, force_terminal=True)
    with progress_bar(True, bar_console) as progress:
        result = await dlq_redrive(settings.queue, native=False, progress=progress)
    assert "23/23" in bar_console.export_text()
    assert result.method == "manual" and result.ok
    assert len(result.moved) == 23 and result.failed == [] and result.duplicated == []
    assert result.remaining == 0

    assert queue_depth(sqs_endpoint.url, queues[0]) == before
    messages = receive_all(sqs_endpoint.url, queues[0])
    assert sorted(json.loads(m["Body"])["id"] for m in messages) == list(range(1, 24))
    moved_from = {m.dlq_message_id for m in result.moved}
    for message in messages:
        attributes = string_attributes(message)
        element_id = json.loads(message["Body"])["id"]
        assert not any(name.startswith("failure.") for name in attributes)
        assert attributes["origin"] == "kordiam" and attributes["trace"] == f"t-{element_id}"
        assert attributes["event"] == "updated"
        assert attributes["redriven_from"] in moved_from
    assert queue_depth(sqs_endpoint.url, queues[1]) == 0
    assert "moved: 23" in rendered(render_redrive, result)


async def test_redrive_without_a_filter_uses_the_move_task_where_supported(
    settings: Settings, transport: SqsTransport, sqs_endpoint: SqsEndpoint, queues: tuple[str, str]
) -> None:
    for element_id in range(1, 6):
        await dead_letter(transport, element_id)
    result = await dlq_redrive(settings.queue)
    if sqs_endpoint.kind == "moto":
        # moto server does not implement StartMessageMoveTask: the manual copy takes over.
        assert result.method == "manual" and result.fallback_reason
        assert "StartMessageMoveTask unavailable" in result.fallback_reason
    else:
        await eventually(lambda: queue_depth(sqs_endpoint.url, queues[0]) == 5, what="move task")
    assert result.moved_total == 5
    assert sorted(json.loads(m["Body"])["id"] for m in receive_all(sqs_endpoint.url, queues[0])) == [1, 2, 3, 4, 5]
    assert queue_depth(sqs_endpoint.url, queues[1]) == 0


async def test_redrive_by_element_and_with_a_limit(
    settings: Settings, transport: SqsTransport, sqs_endpoint: SqsEndpoint, queues: tuple[str, str]
) -> None:
    for element_id in (1, 2, 3, 4, 5) * 3:
        await dead_letter(transport, element_id)

    chosen = await dlq_redrive(settings.queue, element_ids=[2, 4])
    assert chosen.method == "manual" and chosen.ok
    assert Counter(m.element_id for m in chosen.moved) == Counter([2, 2, 2, 4, 4, 4])
    assert chosen.skipped == 9
    # The others stay, visible again at once (released, not left to expire).
    assert visible(sqs_endpoint.url, queues[1]) == 9
    moved = receive_all(sqs_endpoint.url, queues[0])
    assert sorted(json.loads(m["Body"])["id"] for m in moved) == [2, 2, 2, 4, 4, 4]

    limited = await dlq_redrive(settings.queue, limit=4)
    assert len(limited.moved) == 4 and limited.ok
    assert visible(sqs_endpoint.url, queues[1]) == 5
    assert queue_depth(sqs_endpoint.url, queues[0]) == 4
    with pytest.raises(ValueError, match="move task"):
        await dlq_redrive(settings.queue, limit=1, native=True)


async def test_redrive_ends_while_a_worker_dead_letters_every_copy_again(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    channel_log: ChannelLog,
    tmp_path: Path,
) -> None:
    """The manual copy moves what the DLQ held when it started; the worker's new dead letters of those copies stay
    for a later run and still name the first failure's source message and time."""
    settings = worker_settings(queue=queues[0], endpoint=sqs_endpoint.url, kordiam=simulator.base_url, workdir=tmp_path)
    async with SqsTransport.connect(settings.queue) as transport:
        await transport.describe()
        for _ in range(5):
            await dead_letter(transport, None, stage="decode", body="not json", error_class="PoisonMessage")
    listed = (await dlq_list(settings.queue)).messages
    first = {m.failure.source_message_id: m.failure.first_failed_at for m in listed if m.failure}
    assert len(first) == 5 and all(first.values())

    async with running_worker(settings):
        # The worker dead-letters each copy again at once, under a new id; the run must still end.
        result = await asyncio.wait_for(dlq_redrive(settings.queue, native=False), timeout=120)
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="copies failed again")
        await eventually(lambda: queue_depth(sqs_endpoint.url, queues[1]) == 5, what="copies dead-lettered again")

    assert result.method == "manual" and result.ok
    assert len(result.moved) == 5 and result.failed == [] and result.skipped == 0
    assert 0 <= result.arrived <= 5
    again = receive_all(sqs_endpoint.url, queues[1])
    assert len(again) == 5
    moved_from = {m.dlq_message_id for m in result.moved}
    for message in again:
        attributes = string_attributes(message)
        assert attributes["failure.stage"] == "decode"
        assert attributes["redriven_from"] in moved_from
        # The first failure, not the copy's: same source message id, same time.
        source = attributes["failure.source_message_id"]
        assert source in first and attributes["failure.first_failed_at"] == first[source]


async def test_an_interrupted_redrive_reports_what_it_moved(
    settings: Settings, transport: SqsTransport, sqs_endpoint: SqsEndpoint, queues: tuple[str, str]
) -> None:
    for element_id in range(1, 26):
        await dead_letter(transport, element_id)
    stop = asyncio.Event()

    class InterruptedAfterOneBatch(FlakyClient):
        async def send_message_batch(self, **request: Any) -> Any:
            response = await super().send_message_batch(**request)
            stop.set()  # Ctrl-C while the first batch was being copied
            return response

    transport._client = InterruptedAfterOneBatch(transport._client)
    result = await redrive(transport, native=False, stop=stop)
    assert result.interrupted and not result.ok
    assert len(result.moved) == 10 and result.failed == [] and result.duplicated == []
    assert queue_depth(sqs_endpoint.url, queues[0]) == 10
    assert visible(sqs_endpoint.url, queues[1]) == 15  # the rest released at once, not held
    assert json.loads(to_json(result))["interrupted"] is True
    assert "interrupted (Ctrl-C)" in rendered(render_redrive, result)


async def test_ctrl_c_during_redrive_prints_the_partial_summary_as_json(
    sqs_endpoint: SqsEndpoint, queues: tuple[str, str], tmp_path: Path
) -> None:
    total = 500
    client = sqs_client(sqs_endpoint.url)
    for start in range(0, total, 10):
        entries = [{"Id": str(i), "MessageBody": json.dumps({"id": start + i + 1})} for i in range(10)]
        client.send_message_batch(QueueUrl=queues[1], Entries=entries)
    path = config_file(sqs_endpoint, queues, tmp_path)
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bridge", "dlq", "redrive", "--no-native", "--json", "--config", str(path)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # Interrupted once the first copies arrived, with hundreds still to go.
    await eventually(lambda: queue_depth(sqs_endpoint.url, queues[0]) > 0, what="redrive under way")
    process.send_signal(signal.SIGINT)
    out, err = await process.communicate()
    assert process.returncode == 130, err.decode()
    assert "stopping at the next safe point (Ctrl-C again to exit at once)" in err.decode()
    summary = json.loads(out)
    assert summary["interrupted"] is True and summary["ok"] is False
    moved = len(summary["moved"])
    assert 0 < moved < total and summary["failed"] == [] and summary["duplicated"] == []
    # Nothing lost, nothing doubled: what moved is on the main queue, the rest still in the DLQ.
    await eventually(lambda: queue_depth(sqs_endpoint.url, queues[0]) == moved, what="copies counted")
    await eventually(lambda: queue_depth(sqs_endpoint.url, queues[1]) == total - moved, what="rest released")


async def test_sigterm_during_redrive_stops_as_ctrl_c_does(
    sqs_endpoint: SqsEndpoint, queues: tuple[str, str], tmp_path: Path
) -> None:
    """`timeout 60 kordiam-bridge dlq redrive`, `docker stop`, a Kubernetes job deleted: SIGTERM, not SIGINT. It
    killed the command at once: no summary, and a batch copied but not yet deleted from the DLQ was copied twice
    by the next run (and its held dead letters hidden for REDRIVE_HOLD_SECONDS)."""
    total = 500
    client = sqs_client(sqs_endpoint.url)
    for start in range(0, total, 10):
        entries = [{"Id": str(i), "MessageBody": json.dumps({"id": start + i + 1})} for i in range(10)]
        client.send_message_batch(QueueUrl=queues[1], Entries=entries)
    path = config_file(sqs_endpoint, queues, tmp_path)
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bridge", "dlq", "redrive", "--no-native", "--json", "--config", str(path)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await eventually(lambda: queue_depth(sqs_endpoint.url, queues[0]) > 0, what="redrive under way")
    process.send_signal(signal.SIGTERM)
    out, err = await process.communicate()
    assert process.returncode == 130, err.decode()
    summary = json.loads(out)
    assert summary["interrupted"] is True
    moved = len(summary["moved"])
    assert 0 < moved < total and summary["failed"] == [] and summary["duplicated"] == []
    await eventually(lambda: queue_depth(sqs_endpoint.url, queues[0]) == moved, what="copies counted")
    await eventually(lambda: queue_depth(sqs_endpoint.url, queues[1]) == total - moved, what="rest released")


async def test_a_second_ctrl_c_exits_at_once_while_stderr_is_a_full_pipe(
    sqs_endpoint: SqsEndpoint, queues: tuple[str, str], tmp_path: Path
) -> None:
    """The first Ctrl-C of a redrive says on stderr that it stops at the next safe point. With stderr a pipe nobody
    reads (`2>&1 | less`, scrolled back), that write blocked the event loop, and the second Ctrl-C, handled by the
    loop, never ran: the command could only be killed."""
    client = sqs_client(sqs_endpoint.url)
    for start in range(0, 500, 10):
        entries = [{"Id": str(i), "MessageBody": json.dumps({"id": start + i + 1})} for i in range(10)]
        client.send_message_batch(QueueUrl=queues[1], Entries=entries)
    path = config_file(sqs_endpoint, queues, tmp_path)
    read_end, write_end = os.pipe()
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bridge", "dlq", "redrive", "--no-native", "--json", "--config", str(path)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=write_end,
    )
    os.close(write_end)
    # A file description of the pipe's own, non-blocking (the command's stays blocking), to fill it.
    filler = os.open(f"/proc/self/fd/{read_end}", os.O_WRONLY | os.O_NONBLOCK)
    try:
        await eventually(lambda: queue_depth(sqs_endpoint.url, queues[0]) > 0, what="redrive under way")
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(filler, b"\n" * 4096)
        # Again until it exits: signals sent at once may arrive as one.
        for _ in range(60):
            process.send_signal(signal.SIGINT)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), timeout=0.5)
                break
        assert process.returncode == 130
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        os.close(filler)
        os.close(read_end)


async def test_a_send_failure_midway_loses_nothing(
    settings: Settings, transport: SqsTransport, sqs_endpoint: SqsEndpoint, queues: tuple[str, str]
) -> None:
    for element_id in range(1, 26):
        await dead_letter(transport, element_id)
    flaky = FlakyClient(transport._client)
    flaky.fail_send_calls = {2}  # the second batch: the destination "disappears"
    transport._client = flaky
    result = await redrive(transport, native=False)
    assert not result.ok and result.stopped_reason and "NonExistentQueue" in result.stopped_reason
    assert len(result.moved) == 10 and len(result.failed) == 10
    # Ten copied and deleted; everything else still in the dead-letter queue, visible at once.
    assert queue_depth(sqs_endpoint.url, queues[0]) == 10
    assert visible(sqs_endpoint.url, queues[1]) == 15
    assert "stopped early" in rendered(render_redrive, result)

    # The destination is back: a second run moves the rest; every element arrives exactly once.
    flaky.fail_send_calls = set()
    again = await redrive(transport, native=False)
    assert len(again.moved) == 15 and again.ok
    bodies = [json.loads(m["Body"])["id"] for m in receive_all(sqs_endpoint.url, queues[0])]
    assert sorted(bodies) == list(range(1, 26))
    assert queue_depth(sqs_endpoint.url, queues[1]) == 0


async def test_a_dead_letter_too_large_for_the_main_queue_is_left_alone_and_the_rest_moves(
    settings: Settings, transport: SqsTransport, sqs_endpoint: SqsEndpoint, queues: tuple[str, str]
) -> None:
    """A dead-letter queue may take larger messages than the main queue (1 MiB beside 256 KiB; here 256 KiB beside
    1 KiB), and a dead letter's copy keeps its own attributes. SQS refuses a SendMessageBatch call as a whole for
    one entry over the limit (InvalidParameterValue): the run stopped at that batch, its nine other dead letters not
    moved, and every later run stopped at the same one."""
    for element_id in range(1, 26):
        if element_id in (7, 15):
            body = json.dumps({"id": element_id, "event": "updated", "pad": "x" * 2000})
            await dead_letter(transport, element_id, body=body)
        else:
            await dead_letter(transport, element_id)
    sqs_client(sqs_endpoint.url).set_queue_attributes(QueueUrl=queues[0], Attributes={"MaximumMessageSize": "1024"})

    result = await redrive(transport, native=False)
    assert result.stopped_reason is None
    assert len(result.moved) == 23 and len(result.failed) == 2 and result.duplicated == []
    assert all("shorter than 1024 bytes" in failure.reason for failure in result.failed)
    left = receive_all(sqs_endpoint.url, queues[1])
    assert sorted(json.loads(m["Body"])["id"] for m in left) == [7, 15]
    moved = [json.loads(m["Body"])["id"] for m in receive_all(sqs_endpoint.url, queues[0])]
    assert sorted(moved) == [e for e in range(1, 26) if e not in (7, 15)]


async def test_a_dead_letter_whose_attribute_the_main_queue_refuses_is_left_alone_and_the_rest_moves(
    settings: Settings, transport: SqsTransport, sqs_endpoint: SqsEndpoint, queues: tuple[str, str]
) -> None:
    """SQS refuses a whole SendMessageBatch call for one entry's attribute (InvalidAttributeName, with a message
    naming it), as moto does for an invalid name: only that dead letter stays."""
    for element_id in range(1, 13):
        await dead_letter(transport, element_id, attributes={"x-odd": "1"} if element_id == 4 else None)

    class RefusingAnAttribute(FlakyClient):
        async def send_message_batch(self, **request: Any) -> Any:
            if any("x-odd" in entry["MessageAttributes"] for entry in request["Entries"]):
                error = {"Code": "InvalidAttributeName", "Message": "The message attribute name 'x-odd' is refused."}
                raise ClientError({"Error": error}, "SendMessageBatch")
            return await super().send_message_batch(**request)

    transport._client = RefusingAnAttribute(transport._client)
    result = await redrive(transport, native=False)
    assert result.stopped_reason is None and len(result.moved) == 11
    assert [f.reason for f in result.failed] == ["InvalidAttributeName: The message attribute name 'x-odd' is refused."]
    left = receive_all(sqs_endpoint.url, queues[1])
    assert [json.loads(m["Body"])["id"] for m in left] == [4]
    assert string_attributes(left[0])["failure.stage"] == "sync"  # untouched


class StallingProgress(NoProgress):
    """A progress sink that stalls the run once, at its 40th step, longer than a 1 s hold (a slow endpoint, a
    long scan of a big dead-letter queue)."""

    def __init__(self) -> None:
        self.steps = 0

    def advance(self, amount: int = 1) -> None:
        self.steps += amount
        if self.steps == 40:
            time.sleep(2.5)


async def test_a_filtered_redrive_longer_than_its_hold_still_reaches_every_dead_letter(
    settings: Settings, transport: SqsTransport, sqs_endpoint: SqsEndpoint, queues: tuple[str, str]
) -> None:
    """`dlq redrive --element N` on a big dead-letter queue: the dead letters it skipped came back once their hold
    ran out, before the run reached the end; three receives of only those ended the run as if the queue were done,
    and the element's dead letter further on was not moved (the summary said all well)."""
    for element_id in range(1, 81):
        await dead_letter(transport, element_id)
    result = await SqsQueueAdmin(transport).redrive(
        redrive_request(limit=None, element_ids=[80], native=None),
        progress=StallingProgress(),
        stop=asyncio.Event(),
        hold=1,
    )
    assert [m.element_id for m in result.moved] == [80] and result.ok
    await eventually(lambda: visible(sqs_endpoint.url, queues[1]) == 79, what="the skipped ones released")


async def test_a_receive_failure_midway_ends_the_run_with_its_summary(
    settings: Settings, transport: SqsTransport, sqs_endpoint: SqsEndpoint, queues: tuple[str, str]
) -> None:
    """The endpoint failing a receive after 20 dead letters had moved: the run raised, and the command printed one
    line ("cannot receive from …"), no summary: what had moved was known from nowhere."""
    for element_id in range(1, 26):
        await dead_letter(transport, element_id)

    class ReceiveFailsThird(FlakyClient):
        receives = 0

        async def receive_message(self, **request: Any) -> Any:
            ReceiveFailsThird.receives += 1
            if ReceiveFailsThird.receives == 3:
                raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "try later"}}, "ReceiveMessage")
            return await self._client.receive_message(**request)

    transport._client = ReceiveFailsThird(transport._client)
    result = await redrive(transport, native=False)
    assert len(result.moved) == 20 and result.failed == [] and result.duplicated == [] and not result.ok
    assert result.stopped_reason is not None and "ServiceUnavailable: try later" in result.stopped_reason
    assert "stopped early" in rendered(render_redrive, result)
    assert queue_depth(sqs_endpoint.url, queues[0]) == 20
    assert visible(sqs_endpoint.url, queues[1]) == 5


async def test_refused_entries_stay_in_the_dead_letter_queue(
    settings: Settings, transport: SqsTransport, sqs_endpoint: SqsEndpoint, queues: tuple[str, str]
) -> None:
    for element_id in range(1, 13):
        await dead_letter(transport, element_id)
    flaky = FlakyClient(transport._client)
    flaky.refuse_entries = {json.dumps({"id": 3, "event": "updated"}), json.dumps({"id": 11, "event": "updated"})}
    transport._client = flaky

    result = await redrive(transport, native=False)
    assert len(result.moved) == 10 and sorted(f.reason for f in result.failed) == ["InternalError"] * 2
    assert result.stopped_reason is None  # one refused entry does not stop the run
    left = receive_all(sqs_endpoint.url, queues[1])
    assert sorted(json.loads(m["Body"])["id"] for m in left) == [3, 11]
    assert all(string_attributes(m)["failure.stage"] == "sync" for m in left)  # untouched
    assert queue_depth(sqs_endpoint.url, queues[0]) == 10


async def test_a_failed_delete_duplicates_rather_than_loses(
    settings: Settings, transport: SqsTransport, sqs_endpoint: SqsEndpoint, queues: tuple[str, str]
) -> None:
    for element_id in range(1, 4):
        await dead_letter(transport, element_id)
    flaky = FlakyClient(transport._client)
    flaky.fail_deletes = True
    transport._client = flaky

    result = await redrive(transport, native=False, hold=5)
    assert len(result.moved) == 3 and len(result.duplicated) == 3
    assert queue_depth(sqs_endpoint.url, queues[0]) == 3
    assert queue_depth(sqs_endpoint.url, queues[1]) == 3  # still there (in flight until the hold expires)
    assert "copied but still in the dead-letter queue" in rendered(render_redrive, result)


async def test_redrive_on_fifo_queues_keeps_the_group(sqs_endpoint: SqsEndpoint, tmp_path: Path) -> None:
    queue, dlq = make_queues(sqs_endpoint.url, f"t-{uuid.uuid4().hex[:12]}", fifo=True)
    settings = worker_settings(queue=queue, endpoint=sqs_endpoint.url, kordiam=NOWHERE, workdir=tmp_path)
    async with SqsTransport.connect(settings.queue) as transport:
        await transport.describe()
        for element_id in (5, 5, 6):
            message = QueueMessage(
                message_id=str(uuid.uuid4()),
                receipt_handle="unused",
                body=json.dumps({"id": element_id}),
                attributes={},
                receive_count=3,
                sent_at=None,
                group_id=str(element_id),
            )
            await transport.send_dead_letter(message, DeadLetterContext("sync", "boom", "ChannelRejected", element_id))
    result = await dlq_redrive(settings.queue, native=False)
    assert len(result.moved) == 3 and result.ok
    messages = receive_all(sqs_endpoint.url, queue)
    assert sorted(m["Attributes"]["MessageGroupId"] for m in messages) == ["5", "5", "6"]
    assert queue_depth(sqs_endpoint.url, dlq) == 0


async def test_ctrl_c_cancels_the_move_task_and_reports_what_it_moved(
    settings: Settings, transport: SqsTransport, sqs_endpoint: SqsEndpoint, queues: tuple[str, str]
) -> None:
    stop = asyncio.Event()
    cancelled: list[str] = []

    class EndlessMove(FlakyClient):
        async def start_message_move_task(self, **request: Any) -> Any:
            return {"TaskHandle": "task-2"}

        async def list_message_move_tasks(self, **request: Any) -> Any:
            stop.set()  # Ctrl-C while the task runs
            running = {"TaskHandle": "task-2", "Status": "RUNNING", "ApproximateNumberOfMessagesMoved": 4}
            return {"Results": [running]}

        async def cancel_message_move_task(self, **request: Any) -> Any:
            cancelled.append(request["TaskHandle"])
            return {"ApproximateNumberOfMessagesMoved": 4}

    transport._client = EndlessMove(transport._client)
    result = await redrive(transport, native=True, stop=stop, poll_interval=30)
    assert result.method == "move-task" and result.interrupted and not result.ok
    assert result.moved_total == 4 and cancelled == ["task-2"]
    assert "interrupted (Ctrl-C)" in rendered(render_redrive, result)


async def test_the_move_task_is_followed_to_completion(
    settings: Settings, transport: SqsTransport, sqs_endpoint: SqsEndpoint, queues: tuple[str, str]
) -> None:
    """The StartMessageMoveTask path, against a client that implements it (moto does not) by moving for real."""
    for element_id in range(1, 4):
        await dead_letter(transport, element_id)
    real = transport._client

    class MovingClient(FlakyClient):
        polls = 0

        async def start_message_move_task(self, **request: Any) -> Any:
            self.request = request
            return {"TaskHandle": "task-1"}

        async def list_message_move_tasks(self, **request: Any) -> Any:
            self.polls += 1
            if self.polls == 1:
                return {
                    "Results": [{"TaskHandle": "task-1", "Status": "RUNNING", "ApproximateNumberOfMessagesMoved": 0}]
                }
            for message in receive_all(sqs_endpoint.url, queues[1]):
                send(sqs_endpoint.url, queues[0], message["Body"])
            return {"Results": [{"Status": "COMPLETED", "ApproximateNumberOfMessagesMoved": 3}]}

    moving = MovingClient(real)
    transport._client = moving
    result = await redrive(transport, poll_interval=0.01)
    assert result.method == "move-task" and result.task_status == "COMPLETED" and result.ok
    assert result.moved_total == 3 and result.remaining == 0
    assert moving.request["SourceArn"].endswith(queues[1].rsplit("/", 1)[1])
    assert moving.request["DestinationArn"].endswith(queues[0].rsplit("/", 1)[1])
    assert queue_depth(sqs_endpoint.url, queues[0]) == 3


# How SQS answers a call it refuses (its JSON protocol, with the query protocol's code in a header).
MOVE_TASK_CALL = b"AmazonSQS.StartMessageMoveTask"
ACCESS_DENIED = (
    403,
    '{"__type": "com.amazon.coral.service#AccessDeniedException", "message": "User: arn:aws:iam::123456789012:user/'
    "operator is not authorized to perform: sqs:startmessagemovetask on resource: arn:aws:sqs:eu-west-1:"
    '123456789012:dlq because no identity-based policy allows the sqs:startmessagemovetask action"}',
    {"x-amzn-query-error": "AccessDenied;Sender"},
)
SERVICE_UNAVAILABLE = (
    503,
    '{"__type": "com.amazonaws.sqs#ServiceUnavailable", "message": "Service Unavailable"}',
    {"x-amzn-query-error": "ServiceUnavailable;Server"},
)


async def redrive_command(config: Path, *flags: str) -> tuple[int | None, list[str]]:
    """``dlq redrive`` run as a process: its exit code and its own lines on stderr (not the log's JSON lines)."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bridge", "dlq", "redrive", *flags, "--config", str(config)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    return process.returncode, [line for line in err.decode().splitlines() if line.startswith("kordiam-bridge")]


async def test_redrive_native_on_an_endpoint_without_the_move_task_says_to_run_without_it(
    settings: Settings, transport: SqsTransport, sqs_endpoint: SqsEndpoint, queues: tuple[str, str], tmp_path: Path
) -> None:
    """moto server does not implement StartMessageMoveTask (it answers a bare 500): with --native that is the
    command's configuration to change (exit 2), nothing is moved, and the line says how."""
    if sqs_endpoint.kind != "moto":
        pytest.skip("LocalStack has the move task")
    for element_id in range(1, 4):
        await dead_letter(transport, element_id)
    code, lines = await redrive_command(config_file(sqs_endpoint, queues, tmp_path), "--native")
    assert code == 2, lines
    assert len(lines) == 1 and "--native" in lines[0] and "run without --native" in lines[0], lines
    assert queue_depth(sqs_endpoint.url, queues[1]) == 3 and queue_depth(sqs_endpoint.url, queues[0]) == 0


async def test_redrive_native_refused_to_the_credentials_names_the_iam_action_and_the_default_falls_back(
    sqs_endpoint: SqsEndpoint, queues: tuple[str, str], tmp_path: Path
) -> None:
    async with fault_proxy(sqs_endpoint.url) as proxy:
        settings = worker_settings(queue=queues[0], endpoint=proxy.url(), kordiam=NOWHERE, workdir=tmp_path)
        async with SqsTransport.connect(settings.queue) as transport:
            await transport.describe()
            for element_id in range(1, 4):
                await dead_letter(transport, element_id)
        status, body, headers = ACCESS_DENIED
        proxy.answer_with(status, body, only=MOVE_TASK_CALL, headers=headers)
        config = write_config(
            tmp_path / "bridge.toml",
            queue=queues[0],
            endpoint=proxy.url(),
            kordiam=NOWHERE,
            workdir=tmp_path,
            ops_port=0,
        )
        code, lines = await redrive_command(config, "--native")
        assert code == 2, lines
        assert len(lines) == 1 and "sqs:StartMessageMoveTask" in lines[0] and "AccessDenied" in lines[0], lines
        assert proxy.faulted == 1  # refused once, not retried
        assert queue_depth(sqs_endpoint.url, queues[1]) == 3 and queue_depth(sqs_endpoint.url, queues[0]) == 0
        # Without --native the manual copy needs no such permission: it moves them.
        result = await dlq_redrive(settings.queue)
    assert result.method == "manual" and result.ok and len(result.moved) == 3
    assert result.fallback_reason is not None and "AccessDenied" in result.fallback_reason
    assert queue_depth(sqs_endpoint.url, queues[0]) == 3 and queue_depth(sqs_endpoint.url, queues[1]) == 0


@pytest.mark.parametrize("native", [None, True])
async def test_a_move_task_start_that_may_pass_stops_the_redrive_rather_than_copying_by_hand(
    native: bool | None, sqs_endpoint: SqsEndpoint, queues: tuple[str, str], tmp_path: Path
) -> None:
    """SQS in trouble (here 503 on every attempt botocore makes) is no endpoint without the move task: the run
    stops with one line to run it again, and no manual copy starts against the same struggling endpoint."""
    async with fault_proxy(sqs_endpoint.url) as proxy:
        settings = worker_settings(queue=queues[0], endpoint=proxy.url(), kordiam=NOWHERE, workdir=tmp_path)
        async with SqsTransport.connect(settings.queue) as transport:
            await transport.describe()
            for element_id in range(1, 4):
                await dead_letter(transport, element_id)
        status, body, headers = SERVICE_UNAVAILABLE
        proxy.answer_with(status, body, only=MOVE_TASK_CALL, headers=headers)
        with pytest.raises(AdminError, match="may pass") as raised:
            await dlq_redrive(settings.queue, native=native)
    assert "ServiceUnavailable" in str(raised.value) and "again" in str(raised.value)
    assert "\n" not in str(raised.value)
    assert queue_depth(sqs_endpoint.url, queues[1]) == 3 and queue_depth(sqs_endpoint.url, queues[0]) == 0


# --------------------------------------------------------------------------------------------------- status


async def test_status_reports_depths_and_an_oldest_age_estimate(
    settings: Settings, transport: SqsTransport, sqs_endpoint: SqsEndpoint, queues: tuple[str, str]
) -> None:
    for element_id in (1, 2, 3):
        send(sqs_endpoint.url, queues[0], {"id": element_id})
    await dead_letter(transport, 9)
    await dead_letter(transport, 10)

    report = await collect_status(settings)
    assert (report.queue.visible, report.queue.in_flight, report.queue.delayed) == (3, 0, 0)
    assert report.dead_letter.visible == 2
    # The main queue is not peeked unless asked: a peek counts as a receive towards maxReceiveCount.
    assert report.queue.oldest_age_seconds is None and "not sampled" in (report.queue.age_note or "")
    assert report.dead_letter.oldest_age_seconds is not None and report.dead_letter.sampled == 2
    assert any("2 message(s) in the dead-letter queue" in p for p in report.problems)
    # No worker endpoint (ops.port 0) and no state yet: reported, not raised; and status created no database.
    assert report.worker.reachable is False and report.state.available is False
    assert not settings.state.sqlite_path.exists()
    assert [c.name for c in report.channels] == ["web", "print"] and report.channels[0].errors is None

    sampled = await collect_status(settings, sample_main=True)
    assert sampled.queue.oldest_age_seconds is not None and sampled.queue.sampled == 3
    assert sampled.queue.oldest_age_seconds < 60
    assert "from all 3" in (sampled.queue.age_note or "")
    assert queue_depth(sqs_endpoint.url, queues[0]) == 3 and visible(sqs_endpoint.url, queues[0]) == 3

    text = rendered(render_status, sampled)
    assert "dead-letter queue" in text and "Problems" in text
    as_json = json.loads(to_json(sampled))
    assert as_json["queue"]["visible"] == 3 and as_json["dead_letter"]["visible"] == 2


async def test_parked_requeue_puts_a_channels_parked_elements_on_the_queue_and_unparks_them(
    settings: Settings, sqs_endpoint: SqsEndpoint, queues: tuple[str, str]
) -> None:
    store = await open_state_store(settings.state)
    # "web-old" was renamed in the configuration while an element was parked for it: listed after the configured
    # channels, and requeued by hand to the channels configured now.
    for element_id, channel in ((20, "web"), (10, "web"), (10, "print"), (30, "web-old")):
        await store.park(element_id, channel, "HTTP 401: application password revoked")
    await store.close()

    listing = await parked_list(settings)
    assert [(p.channel, p.element_id) for p in listing.elements] == [
        ("web", 10),
        ("web", 20),
        ("print", 10),
        ("web-old", 30),
    ]
    assert listing.unconfigured == ["web-old"]

    result = await parked_requeue(settings, channel="web")
    assert [(e.element_id, e.channels, e.error) for e in result.elements] == [(10, ["web"], None), (20, ["web"], None)]
    assert result.sent == 2 and result.failed == 0

    messages = receive_all(sqs_endpoint.url, queues[0])
    assert sorted(json.loads(m["Body"])["id"] for m in messages) == [10, 20]
    for message in messages:
        assert json.loads(message["Body"]) == {"id": json.loads(message["Body"])["id"], "event": "updated"}
        attributes = string_attributes(message)
        assert (attributes["event"], attributes["source"]) == ("updated", "parked-requeue")
        assert attributes["parked-since"].startswith("web=")  # parked again, it keeps its first parking time
    # The first element sent for the channel asks a worker holding it back to try it at once; only the first.
    assert sorted(string_attributes(m).get("try-channels", "") for m in messages) == ["", "web"]

    renamed = await parked_requeue(settings, channel="web-old")
    assert [(e.element_id, e.channels, e.error) for e in renamed.elements] == [(30, ["web-old"], None)]
    [message] = receive_all(sqs_endpoint.url, queues[0])
    assert json.loads(message["Body"])["id"] == 30

    store = await open_state_store(settings.state, read_only=True)
    try:
        assert await store.parked_count("web") == 0 and await store.parked_count("web-old") == 0
        assert [p.element_id for p in await store.parked("print")] == [10]  # another channel's: still parked
    finally:
        await store.close()
    assert (await parked_list(settings)).unconfigured == []


async def test_status_reads_the_state_store_and_the_worker_endpoint(
    settings: Settings, sqs_endpoint: SqsEndpoint, queues: tuple[str, str]
) -> None:
    store = await open_state_store(settings.state)
    modified = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    for publication in (1, 2):
        await store.record(
            Delivery(
                element_id=40,
                channel="web",
                publication_id=publication,
                external_id=f"40-{publication}",
                fingerprint="f",
                live=publication == 1,
                modification_date=modified,
            )
        )
    await store.close()
    metrics.CHANNEL_ERRORS.labels(channel="print", kind="unavailable").inc(2)
    for channel in ("web", "print"):  # the registry is the process's: another test's worker may have left them set
        metrics.BREAKER_STATE.labels(channel).set(0)
        metrics.CHANNEL_CREDENTIALS_REFUSED.labels(channel).set(0)

    refused = "Kordiam refuses the client credentials: 401"
    server = OpsServer("127.0.0.1", 0, healthy=lambda: True, ready=lambda: True, not_ready_reason=lambda: refused)
    await server.start()
    try:
        with_ops = settings.model_copy(update={"ops": OpsSettings(host="127.0.0.1", port=server.port)})
        report = await collect_status(with_ops)
        # Failing now: its circuit breaker open (print), or refusing the bridge's credentials (web).
        metrics.BREAKER_STATE.labels("print").set(2)
        metrics.CHANNEL_CREDENTIALS_REFUSED.labels("web").set(1)
        failing = await collect_status(with_ops)
    finally:
        metrics.BREAKER_STATE.labels("print").set(0)
        metrics.CHANNEL_CREDENTIALS_REFUSED.labels("web").set(0)
        await server.stop()

    web, printed = report.channels
    assert (web.name, web.deliveries, web.elements, web.live, web.latest_synced) == ("web", 2, 1, 1, modified)
    assert report.worker.reachable and report.worker.healthy is True and report.worker.ready is False
    assert printed.errors is not None and printed.errors.get("unavailable", 0) >= 2
    assert report.state.available
    # A paused worker is alive but takes no messages: a problem (exit 1), with /readyz's reason.
    assert f"worker not ready: {refused}" in report.problems
    # Writes that failed once and healed are counted in the table, but are no problem: cron's exit code would stay
    # at 1 until the worker restarted.
    assert not [p for p in report.problems if p.startswith("channel ")]
    assert [p for p in failing.problems if p.startswith("channel ")] == [
        "channel web: refuses the bridge's credentials",
        "channel print: failing now (circuit breaker open)",
    ]
    assert "unavailable" in rendered(render_status, report) and refused in rendered(render_status, report)


async def test_status_with_an_unreachable_worker_endpoint(settings: Settings) -> None:
    unreachable = settings.model_copy(update={"ops": OpsSettings(host="127.0.0.1", port=9)})
    report = await collect_status(unreachable, ops_timeout=1)
    assert report.worker.reachable is False and report.worker.endpoint == "http://127.0.0.1:9"
    assert any("not reachable" in p for p in report.problems)
    assert "not reachable" in rendered(render_status, report)


async def test_status_prints_the_control_characters_a_worker_answered_escaped(settings: Settings) -> None:
    # What /readyz answers is quoted as it came; before, its escape sequences reached the operator's terminal raw.
    hostile = "Kordiam answered 500: \x1b[2J\x1b]0;owned\x07 [bold]x[/bold]\x9b31m"
    server = OpsServer("127.0.0.1", 0, healthy=lambda: True, ready=lambda: False, not_ready_reason=lambda: hostile)
    await server.start()
    try:
        report = await collect_status(
            settings.model_copy(update={"ops": OpsSettings(host="127.0.0.1", port=server.port)})
        )
    finally:
        await server.stop()
    assert report.worker.not_ready_reason == hostile  # --json quotes it exactly: JSON escapes them itself
    text = rendered(render_status, report)
    assert not any(control in text for control in "\x1b\x07\x9b"), text
    assert "Kordiam answered 500: \\x1b[2J\\x1b]0;owned\\x07 [bold]x[/bold]\\x9b31m" in text


async def test_status_exit_code_says_whether_it_found_problems(
    sqs_endpoint: SqsEndpoint, queues: tuple[str, str], tmp_path: Path
) -> None:
    path = config_file(sqs_endpoint, queues, tmp_path)
    settings = load_settings(
        path, overrides={"kordiam": {"base_url": NOWHERE, "client_id": "c", "client_secret": "s3cret-value"}}
    )
    await (await open_state_store(settings.state)).close()  # a state store that exists, empty

    async def status() -> tuple[int, dict[str, Any]]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "status", "--json", "--config", str(path), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await process.communicate()
        assert process.returncode is not None
        return process.returncode, json.loads(out)

    code, report = await status()
    assert (code, report["problems"]) == (0, [])
    send(sqs_endpoint.url, queues[1], {"id": 5})
    code, report = await status()
    assert (code, report["problems"]) == (1, ["1 message(s) in the dead-letter queue"])


def test_redrive_result_is_json_serialisable() -> None:
    result = RedriveResult("manual", "q", "d")
    assert json.loads(to_json(result))["ok"] is True

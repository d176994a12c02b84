"""Fault injection: break things on purpose and prove nothing is lost, nothing is delivered twice, and the
worker stays up. Every case is bounded in time and records its figures (see conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sqlite3
import string
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from bridge.errors import ChannelRejected
from bridge.simulator import RunningSimulator
from bridge.state import SqliteStateStore
from bridge.state.base import StateUnavailable
from bridge.state.sqlite import WAL_SYNC_SECONDS
from tests.faults.conftest import Figures, assert_each_story_once
from tests.support import (
    ChannelLog,
    SimulatorAdmin,
    SqsEndpoint,
    WorkerProcess,
    consumer_paused,
    deliveries,
    delivery,
    drain,
    eventually,
    fill,
    free_port,
    make_queues,
    queue_settled,
    resumed_and_delivered,
    running_worker,
    send,
    small_filesystem,
    sqs_client,
    stop_worker_mid_batch,
    story,
    worker_process,
    worker_settings,
    write_config,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def queues(sqs_endpoint: SqsEndpoint, request: pytest.FixtureRequest) -> tuple[str, str]:
    """Queues that allow 10 receives (outages here last several back-offs by design), or as many as a test asks
    for by parametrizing ``queues`` indirectly."""
    name = f"f-{abs(hash(request.node.nodeid)) % 10**10}-{int(time.time() * 1000) % 10**6}"
    queue, dlq = make_queues(sqs_endpoint.url, name, max_receive_count=getattr(request, "param", 10))
    # Messages up to SQS's 1 MiB limit.
    sqs_client(sqs_endpoint.url).set_queue_attributes(QueueUrl=queue, Attributes={"MaximumMessageSize": "1048576"})
    sqs_client(sqs_endpoint.url).set_queue_attributes(QueueUrl=dlq, Attributes={"MaximumMessageSize": "1048576"})
    return queue, dlq


@pytest.mark.localstack
@pytest.mark.parametrize(
    ("sig", "queues"),
    [(signal.SIGKILL, 3), (signal.SIGKILL, 5), (signal.SIGTERM, 5)],
    ids=["sigkill-maxreceive3", "sigkill-maxreceive5", "sigterm-maxreceive5"],
    indirect=["queues"],
)
async def test_worker_stopped_mid_batch_then_restarted(
    sig: signal.Signals,
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    tmp_path: Path,
    figures: Figures,
) -> None:
    # The default state.lease_seconds (120 s): a killed worker's leases are recognised as its own, not waited out.
    # A killed worker's in-flight messages come back after this visibility timeout, not after the default.
    config, ops_port = process_config(sqs_endpoint, queues, simulator, tmp_path, visibility_timeout=6)
    stories, stop_seconds = await stop_worker_mid_batch(sig, config, admin, tmp_path)
    delivered_before = len(deliveries(tmp_path))

    expected = sorted(
        (s["id"], channel, p["id"])
        for s in stories
        for channel, p in zip(("web", "print"), s["publications"], strict=True)
    )
    async with worker_process(config, ops_port, tmp_path / "worker-2.log", ready_within=None) as (second, _):
        restarted = time.monotonic()
        await eventually(lambda: deliveries(tmp_path) == expected, timeout=60, what="every story delivered")
        all_delivered = time.monotonic() - restarted
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=30, what="queue settled")
    files = sorted(p.name for p in (tmp_path / "web").glob("*.json")) + sorted(
        p.name for p in (tmp_path / "print").glob("*.json")
    )
    expected_files = sorted(f"{e}-{p}.json" for e, ch, p in expected if ch == "web") + sorted(
        f"{e}-{p}.json" for e, ch, p in expected if ch == "print"
    )
    dead = drain(sqs_endpoint.url, queues[1])
    for created in stories:
        element = await admin.get(created["id"])
        assert all(p.get("externalId") for p in element["publications"])
    figures.sent = len(stories)
    figures.delivered = len(deliveries(tmp_path))
    figures.dead_lettered = len(dead)
    figures.duplicates = len(files) - len(set(files)) + len(set(files) - set(expected_files))
    figures.lost = len(set(expected_files) - set(files))
    events = second.events()
    redrive = sqs_client(sqs_endpoint.url).get_queue_attributes(QueueUrl=queues[0], AttributeNames=["RedrivePolicy"])
    figures.notes = {
        "max_receive_count": json.loads(redrive["Attributes"]["RedrivePolicy"])["maxReceiveCount"],
        "delivered_before_stop": delivered_before,
        "stop_seconds": round(stop_seconds, 2),
        "leases_taken_over": sum(1 for e in events if e.get("event") == "lease_taken_over"),
        "highest_receive_count": highest_receive_count(events),
        "restart_to_all_delivered_seconds": round(all_delivered, 2),
        "busy_retries": sum(1 for e in events if "ElementBusy" in str(e.get("reason", ""))),
    }
    assert files == expected_files
    assert figures.notes["busy_retries"] == 0
    # The stop costs no message a receive of its own: the second worker's is at most its second. (A message released
    # at a SIGTERM while the first worker's aborted long polls still ran on the server was taken by them: a third.)
    assert figures.notes["highest_receive_count"] <= 2
    assert_each_story_once(figures)


async def test_kordiam_answering_30_percent_5xx_and_bursts_of_429(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    channel_log: ChannelLog,
    tmp_path: Path,
    figures: Figures,
) -> None:
    await admin.fault(method="*", path=r"^/api/v2/", status=503, count=1_000_000, probability=0.3)
    await admin.fault(method="GET", path=r"^/api/v2/elements/", status=429, count=10, retry_after=1)
    settings_ = worker_settings(
        queue=queues[0], endpoint=sqs_endpoint.url, kordiam=simulator.base_url, workdir=tmp_path, concurrency=8
    )
    async with running_worker(settings_) as worker:
        stories = [await admin.create(story(f"Flaky {n}")) for n in range(20)]
        await eventually(lambda: len(channel_log.creates) == 40, timeout=90, what="40 deliveries")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=60, what="queue settled")
        assert not worker.done()
    requests = await admin.requests()
    dead = drain(sqs_endpoint.url, queues[1])
    figures.sent = len(stories)
    figures.delivered = len(channel_log.creates)
    figures.dead_lettered = len(dead)
    figures.duplicates = channel_log.duplicates()
    figures.lost = 40 - len(channel_log.creates)
    figures.notes = {
        "kordiam_requests": len(requests),
        "answered_5xx": sum(r["status"] >= 500 for r in requests),
        "answered_429": sum(r["status"] == 429 for r in requests),
    }
    assert figures.notes["answered_5xx"] > 10 and figures.notes["answered_429"] == 10
    assert_each_story_once(figures)


@pytest.mark.parametrize("workers", [1, 2], ids=["one-worker", "two-workers"])
async def test_a_channel_down_for_a_while_delays_only_itself(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    channel_log: ChannelLog,
    tmp_path: Path,
    figures: Figures,
    workers: int,
) -> None:
    # Two workers share the queue and the state file: each parks what meets its own open breaker, and the parked
    # elements are requeued by whichever sees print accept a call first (by both, at worst: a duplicate requeue
    # finds the fingerprints matching and writes nothing).
    settings_ = worker_settings(
        queue=queues[0], endpoint=sqs_endpoint.url, kordiam=simulator.base_url, workdir=tmp_path, concurrency=8
    )
    settings_ = settings_.model_copy(
        update={
            "channels": [
                c.model_copy(update={"breaker_threshold": 3, "breaker_cooldown": 1.0}) for c in settings_.channels
            ]
        }
    )
    down_for = 6.0

    def print_count(metric: str) -> float:
        return REGISTRY.get_sample_value(metric, {"channel": "print"}) or 0.0

    parked_before = print_count("bridge_channel_parked_total")
    requeued_before = print_count("bridge_channel_requeued_total")
    channel_log.down_until["print"] = time.monotonic() + down_for
    async with contextlib.AsyncExitStack() as running:
        tasks = [await running.enter_async_context(running_worker(settings_)) for _ in range(workers)]
        stories = [await admin.create(story(f"Outage {n}")) for n in range(12)]
        await eventually(lambda: len([k for k in channel_log.creates if k[0] == "web"]) == 12, what="web deliveries")
        web_done = max(channel_log.written_at["web"])
        await eventually(lambda: len(channel_log.creates) == 24, timeout=60, what="print deliveries after recovery")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=30, what="queue settled")
        assert not any(task.done() for task in tasks)
    dead = drain(sqs_endpoint.url, queues[1])
    figures.sent = len(stories)
    figures.delivered = len(channel_log.creates)
    figures.dead_lettered = len(dead)
    figures.duplicates = channel_log.duplicates()
    figures.lost = 24 - len(channel_log.creates)
    parked = print_count("bridge_channel_parked_total") - parked_before
    figures.notes = {
        "print_down_seconds": down_for,
        "web_done_while_print_down": web_done < channel_log.down_until["print"],
        "print_attempts": channel_log.attempts["print"],
        "print_parked": int(parked),
        "print_requeued": int(print_count("bridge_channel_requeued_total") - requeued_before),
        "print_caught_up_after_s": round(max(channel_log.written_at["print"]) - channel_log.down_until["print"], 1),
        "print_updates": sum(n for key, n in channel_log.updates.items() if key[0] == "print"),
    }
    # The website was not held back by the print outage, and print caught up once it returned.
    assert web_done < channel_log.down_until["print"]
    assert min(channel_log.written_at["print"]) >= channel_log.down_until["print"]
    assert_each_story_once(figures)
    # Once the breaker opened, print's stories were parked instead of retried, and requeued once it was back.
    assert parked >= 1


async def test_a_channel_rejecting_permanently_dead_letters_with_context(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    channel_log: ChannelLog,
    tmp_path: Path,
    figures: Figures,
) -> None:
    channel_log.fail_next["print"] = [ChannelRejected("print: 401 rest_forbidden: wrong credentials")] * 1000
    settings_ = worker_settings(
        queue=queues[0], endpoint=sqs_endpoint.url, kordiam=simulator.base_url, workdir=tmp_path
    )
    async with running_worker(settings_) as worker:
        stories = [await admin.create(story(f"Rejected {n}")) for n in range(8)]
        await eventually(lambda: len(channel_log.creates) == 8, what="web deliveries")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=30, what="queue settled")
        assert not worker.done()
    dead = drain(sqs_endpoint.url, queues[1])
    ids = {str(s["id"]) for s in stories}
    for message in dead:
        attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
        assert attributes["failure.stage"] == "print"
        assert attributes["failure.error_class"] == "ChannelRejected"
        assert attributes["failure.element_id"] in ids
        assert "wrong credentials" in attributes["failure.reason"]
    figures.sent = len(stories)
    figures.delivered = len(channel_log.creates)
    figures.dead_lettered = len(dead)
    figures.duplicates = channel_log.duplicates()
    figures.lost = len(ids - {str(json.loads(m["Body"])["id"]) for m in dead})
    figures.notes = {"print_written": sum(1 for k in channel_log.creates if k[0] == "print")}
    assert {k[0] for k in channel_log.creates} == {"web"}  # the website was unaffected
    assert (figures.duplicates, figures.lost) == (0, 0) and figures.dead_lettered >= len(stories)


# Message bodies SQS accepts (valid XML characters) that no decoder may accept.
SQS_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00\ufffe\uffff").filter(
        lambda c: c in "\t\n\r" or ord(c) >= 0x20
    ),
    min_size=1,
    max_size=200,
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | SQS_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(SQS_TEXT, children, max_size=4),
    max_leaves=12,
)
NOT_JSON = SQS_TEXT.filter(lambda text: not _is_json(text))
NOT_OBJECT = JSON_VALUES.filter(lambda value: not isinstance(value, dict)).map(json.dumps)
NO_ID = st.dictionaries(
    SQS_TEXT.filter(lambda key: key not in ("id", "elementId", "Type", "detail", "detail-type", "source")),
    JSON_VALUES,
    min_size=1,
    max_size=5,
).map(json.dumps)
BAD_ID = st.one_of(
    st.integers(max_value=0), st.floats(allow_nan=False), st.text(alphabet=string.ascii_letters, min_size=1), st.none()
).map(lambda bad: json.dumps({"id": bad}))
POISON = st.one_of(NOT_JSON, NOT_OBJECT, NO_ID, BAD_ID)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bodies=st.lists(POISON, min_size=25, max_size=25))
async def test_malformed_bodies_big_messages_and_hostile_html(
    bodies: list[str],
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    channel_log: ChannelLog,
    tmp_path: Path,
    figures: Figures,
) -> None:
    drain(sqs_endpoint.url, queues[1])
    big = "x" * (1024 * 1024 - 2048)  # near SQS's 1 MiB limit, leaving room for the failure attributes
    hostile: dict[str, Any] = story("Ünïcødé 日本語 🎉 <b>bold</b>", platforms=(99003,))
    hostile["tasks"][0]["content"]["text"] = (
        '<p onmouseover="steal()">Text 🎉 日本語</p><script>alert(1)</script><a href="javascript:evil()">x</a>'
        "<style>body{display:none}</style><img src=x onerror=alert(2)>"
    )
    settings_ = worker_settings(
        queue=queues[0], endpoint=sqs_endpoint.url, kordiam=simulator.base_url, workdir=tmp_path
    )
    async with running_worker(settings_) as worker:
        for body in bodies:
            send(sqs_endpoint.url, queues[0], body)
        send(sqs_endpoint.url, queues[0], big)
        send(sqs_endpoint.url, queues[0], json.dumps({"id": 424242, "padding": big[:500_000]}))  # valid, no element
        created = await admin.create(hostile)
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=60, what="every message settled")
        assert not worker.done()
    dead = drain(sqs_endpoint.url, queues[1])
    reasons = [m["MessageAttributes"]["failure.reason"]["StringValue"] for m in dead]
    assert all(m["MessageAttributes"]["failure.stage"]["StringValue"] == "decode" for m in dead)
    assert sorted(m["Body"] for m in dead) == sorted([*bodies, big])
    assert all(reason for reason in reasons)
    page = next((tmp_path / "web").glob(f"{created['id']}-*.html")).read_text(encoding="utf-8")
    assert "日本語" in page and "🎉" in page
    for hostile_part in ("<script", "onmouseover", "javascript:", "onerror", "<style"):
        assert hostile_part not in page
    figures.sent = len(bodies) + 3
    # Hypothesis runs several examples in one test call: count this example's story only.
    figures.delivered = sum(n for key, n in channel_log.creates.items() if key[1] == created["id"])
    figures.dead_lettered = len(dead)
    figures.duplicates = channel_log.duplicates()
    figures.lost = len(bodies) + 1 - len(dead)
    figures.notes = {"largest_body_bytes": len(big)}
    assert (figures.delivered, figures.duplicates, figures.lost) == (1, 0, 0)


async def test_on_a_full_disk_the_state_probe_fails_as_the_writes_of_messages_do(tmp_path: Path) -> None:
    # A group commit that fails on a full disk leaves the WAL frames it did write allocated past the WAL's end; a
    # probe that writes one page fits in them. Before, the probe passed while every message's write failed: the
    # worker resumed, paused again at the next message, and a message whose own check passed spent a receive.
    with small_filesystem(tmp_path / "state", "2m") as disk:
        store = SqliteStateStore(disk / "state.db")
        await store.open()
        try:
            filler = fill(disk)
            writes = [store.record(delivery(element_id=n, publication_id=n)) for n in range(1, 40)]
            failed = await asyncio.gather(*writes, return_exceptions=True)
            assert all(isinstance(error, StateUnavailable) for error in failed), failed
            with pytest.raises(StateUnavailable, match="database or disk is full"):
                await store.probe()
            filler.unlink()
            await store.probe()  # the disk freed: the store answers again
            assert await store.record(delivery(element_id=1, publication_id=1))
        finally:
            await store.close()


async def test_a_full_disk_under_the_folder_channel_heals_and_nothing_is_dead_lettered(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    tmp_path: Path,
    figures: Figures,
) -> None:
    settings_ = worker_settings(
        queue=queues[0], endpoint=sqs_endpoint.url, kordiam=simulator.base_url, workdir=tmp_path, channel_type="folder"
    )
    # A short breaker cool-down: the web channel's breaker opens on the full disk, and the case need not wait 30 s.
    settings_ = settings_.model_copy(
        update={"channels": [c.model_copy(update={"breaker_cooldown": 2.0}) for c in settings_.channels]}
    )

    def web_failures() -> float:
        return REGISTRY.get_sample_value("bridge_channel_errors_total", {"channel": "web", "kind": "transient"}) or 0.0

    failures_before = web_failures()
    with small_filesystem(tmp_path / "web") as web:
        filler = fill(web)
        async with running_worker(settings_) as worker:
            stories = [await admin.create(story(f"Full disk {n}")) for n in range(6)]
            await eventually(lambda: len(list((tmp_path / "print").glob("*.json"))) == 6, what="print deliveries")
            # The web writes have failed (the disk is full) and wait to be retried; the print ones went through.
            await eventually(lambda: web_failures() - failures_before >= len(stories), what="web write failures")
            failed_writes = web_failures() - failures_before
            assert list(web.glob("*.json")) == []
            filler.unlink()
            freed = time.monotonic()
            await eventually(lambda: len(list(web.glob("*.json"))) == 6, timeout=60, what="web deliveries after")
            healed_after = time.monotonic() - freed
            await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=30, what="queue settled")
            assert not worker.done()
        written = sorted(p.name for p in web.glob("*.json"))
    dead = drain(sqs_endpoint.url, queues[1])
    expected = sorted(f"{s['id']}-{s['publications'][0]['id']}.json" for s in stories)
    figures.sent = len(stories)
    figures.delivered = len(written) + len(list((tmp_path / "print").glob("*.json")))
    figures.dead_lettered = len(dead)
    figures.lost = len(set(expected) - set(written))
    figures.notes = {
        "web_writes_failed_enospc": int(failed_writes),
        "delivered_after_freeing_s": round(healed_after, 1),
    }
    assert written == expected
    assert (figures.dead_lettered, figures.lost) == (0, 0)


async def test_a_state_file_held_locked_by_another_program_pauses_the_worker_and_nothing_is_dead_lettered(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    figures: Figures,
) -> None:
    # Another program (an operator's sqlite3 shell, a backup) holds the state file's write lock: every message's
    # lease fails, the worker's fault and not theirs. Before, each was retried and dead-lettered on its third receive.
    monkeypatch.setattr("bridge.state.sqlite.BUSY_TIMEOUT_MS", 1000)  # each locked write gives up after 1 s, not 5
    monkeypatch.setattr("bridge.pipeline.pause.FIRST_RETRY_SECONDS", 0.2)
    probes = 0
    real_probe = SqliteStateStore.probe

    async def counted_probe(self: SqliteStateStore) -> None:
        nonlocal probes
        probes += 1
        await real_probe(self)

    monkeypatch.setattr(SqliteStateStore, "probe", counted_probe)
    settings_ = worker_settings(
        queue=queues[0], endpoint=sqs_endpoint.url, kordiam=simulator.base_url, workdir=tmp_path, channel_type="folder"
    )

    async with running_worker(settings_) as worker:
        stories = [await admin.create(story("Before the lock"))]
        await eventually(lambda: len(deliveries(tmp_path)) == 2, what="the story before delivered")
        holder = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the write lock, held
        locked_at = time.monotonic()
        stories += [await admin.create(story(f"Locked {n}")) for n in range(4)]
        await eventually(consumer_paused, what="the worker paused")
        # Held through several probes: longer than three receives of each message would have taken.
        await eventually(lambda: probes >= 5, timeout=60, what="probes while the file is locked")
        holder.rollback()
        holder.close()
        held = time.monotonic() - locked_at
        await resumed_and_delivered(sqs_endpoint.url, queues[0], tmp_path, 2 * len(stories))
        assert not worker.done()
    dead = drain(sqs_endpoint.url, queues[1])
    figures.sent = len(stories)
    figures.delivered = len(deliveries(tmp_path))
    figures.dead_lettered = len(dead)
    figures.lost = 2 * figures.sent - figures.delivered
    figures.notes = {"lock_held_s": round(held, 1), "probes": probes}
    assert (figures.dead_lettered, figures.lost) == (0, 0)


@pytest.mark.parametrize("queues", [3], indirect=True)
async def test_kordiam_down_for_longer_than_the_receives_last_pauses_the_worker_and_nothing_is_dead_lettered(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    figures: Figures,
) -> None:
    # Kordiam's API answers every call 503 for longer than three receives of a message take (each receive spends
    # the client's retries, then the queue's back-off). Before, every message was dead-lettered on its third
    # receive and had to be redriven; now the worker pauses until Kordiam answers and delivers them all.
    monkeypatch.setattr("bridge.pipeline.pause.FIRST_RETRY_SECONDS", 0.2)
    settings_ = worker_settings(
        queue=queues[0], endpoint=sqs_endpoint.url, kordiam=simulator.base_url, workdir=tmp_path, channel_type="folder"
    )

    async def probes() -> int:
        return sum(1 for r in await admin.requests() if r.get("path") == "/api/v2/platforms")

    async with running_worker(settings_) as worker:
        stories = [await admin.create(story("Before the outage"))]
        await eventually(lambda: len(deliveries(tmp_path)) == 2, what="the story before delivered")
        await admin.fault(method="*", path=r"^/api/v2/(elements|platforms)", status=503, count=1_000_000)
        down_at = time.monotonic()
        stories += [await admin.create(story(f"Outage {n}")) for n in range(4)]
        await eventually(consumer_paused, timeout=30, what="the worker paused")
        # Down through several probes: longer than three receives of each message would have taken.
        await eventually(lambda: probes_seen(probes, 6), timeout=60, what="probes while Kordiam is down")
        await admin.clear_faults()
        down = time.monotonic() - down_at
        await resumed_and_delivered(sqs_endpoint.url, queues[0], tmp_path, 2 * len(stories))
        assert not worker.done()
    dead = drain(sqs_endpoint.url, queues[1])
    figures.sent = len(stories)
    figures.delivered = len(deliveries(tmp_path))
    figures.dead_lettered = len(dead)
    figures.lost = 2 * figures.sent - figures.delivered
    figures.notes = {"kordiam_down_s": round(down, 1), "probes": await probes()}
    assert (figures.dead_lettered, figures.lost) == (0, 0)


@pytest.mark.parametrize("queues", [3], indirect=True)
async def test_kordiam_writes_down_while_its_reads_answer_park_the_feedback_and_dead_letter_nothing(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    channel_log: ChannelLog,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    figures: Figures,
) -> None:
    # Kordiam answers its reads (the element fetch, the outage probe's GET /platforms) but every feedback write
    # (PATCH of a publication, POST of a link or a publish) 503, for longer than three receives of a message take.
    # Before, the probe found Kordiam healthy, the failures counted against each message and all 6 were
    # dead-lettered on their third receive. Now the feedback's breaker opens, the elements are parked for
    # kordiam-feedback (their channel items written and recorded), and requeued once a write succeeds again.
    monkeypatch.setattr("bridge.pipeline.sync.FEEDBACK_BREAKER_COOLDOWN", 1.0)
    settings_ = worker_settings(
        queue=queues[0], endpoint=sqs_endpoint.url, kordiam=simulator.base_url, workdir=tmp_path
    )
    writes = r"^/api/v2/elements/\d+/(publications|external-element)"

    async def failed_writes() -> int:
        return sum(
            1
            for r in await admin.requests()
            if r.get("method") in ("PATCH", "POST") and re.search(writes, str(r.get("path"))) and r.get("status") == 503
        )

    async with running_worker(settings_):
        for method in ("PATCH", "POST"):
            await admin.fault(method=method, path=writes, status=503, count=1_000_000)
        stories = [await admin.create(story(f"Writes down {n}")) for n in range(6)]
        await eventually(lambda: len(deliveries(tmp_path)) == 2 * len(stories), timeout=30, what="delivered")
        # Every message has ended (done, or dead-lettered before the fix) while the writes still fail, and the
        # breaker's first probe (a requeued element's feedback, 4 attempts) failed too.
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=60, what="queue settled")
        await eventually(lambda: writes_failed(failed_writes, 4 * (len(stories) + 1)), timeout=30, what="a probe")
        dead_while_down = drain(sqs_endpoint.url, queues[1])
        figures.dead_lettered = len(dead_while_down)
        reasons = [m["MessageAttributes"]["failure.reason"]["StringValue"] for m in dead_while_down]
        assert not dead_while_down, f"{len(dead_while_down)} dead-lettered: {reasons[:1]}"
        parked_while_down = parked_feedback(tmp_path)
        await admin.clear_faults()
        await eventually(lambda: all_linked(admin, stories), timeout=30, what="every story linked")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=30, what="queue settled")
        parked_after = parked_feedback(tmp_path)
    dead = drain(sqs_endpoint.url, queues[1])
    figures.sent = len(stories)
    figures.delivered = len(deliveries(tmp_path))
    figures.dead_lettered = len(dead)
    figures.duplicates = channel_log.duplicates()
    figures.lost = 2 * figures.sent - figures.delivered
    figures.notes = {
        "failed_writes": await failed_writes(),
        "parked_while_down": parked_while_down,
        "channel_updates": sum(channel_log.updates.values()),
    }
    assert (figures.dead_lettered, figures.duplicates, figures.lost) == (0, 0, 0)
    assert parked_while_down == len(stories)
    assert parked_after == 0
    # The requeued syncs wrote only the feedback: no channel item was written a second time.
    assert sum(channel_log.updates.values()) == 0


async def writes_failed(failed: Callable[[], Awaitable[int]], at_least: int) -> bool:
    return await failed() >= at_least


def parked_feedback(workdir: Path) -> int:
    """Elements parked for Kordiam's feedback in the worker's state file."""
    with contextlib.closing(sqlite3.connect(workdir / "state.db")) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM parked WHERE channel = 'kordiam-feedback'").fetchone()
        return int(count)


async def all_linked(admin: SimulatorAdmin, stories: list[dict[str, Any]]) -> bool:
    elements = [await admin.get(s["id"]) for s in stories]
    return all(all(p.get("externalId") for p in element["publications"]) for element in elements)


async def probes_seen(probes: Callable[[], Awaitable[int]], at_least: int) -> bool:
    return await probes() >= at_least


async def test_wrong_kordiam_credentials_stop_the_worker_at_start(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    tmp_path: Path,
    figures: Figures,
) -> None:
    config, _ = process_config(sqs_endpoint, queues, simulator, tmp_path)
    stories = [await admin.create(story(f"Waiting {n}")) for n in range(3)]
    worker = WorkerProcess(config, tmp_path / "worker.log", client_secret="wrong-secret")
    try:
        code = worker.process.wait(timeout=60)
    finally:
        worker.kill()
    lines = worker.log.read_text(encoding="utf-8").strip().splitlines()
    assert code == 2
    assert re.fullmatch(
        # The secret came from BRIDGE_KORDIAM__CLIENT_SECRET (WorkerProcess sets it), so the line names it.
        r"kordiam-bridge: configuration error: BRIDGE_KORDIAM__CLIENT_SECRET \(kordiam\.client_secret\): Kordiam "
        r"refused the client credentials of "
        r"client_id 'demo-client': 401 Unauthorized; Invalid client credentials .*\(check kordiam\.client_id and "
        r"the secret\)",
        lines[-1],
    ), lines[-1]
    assert not any("Traceback" in line for line in lines)
    # Nothing was received: the notifications wait in the queue, none spent a receive or reached the DLQ.
    waiting = sqs_client(sqs_endpoint.url).receive_message(
        QueueUrl=queues[0], MaxNumberOfMessages=10, AttributeNames=["ApproximateReceiveCount"], WaitTimeSeconds=1
    )["Messages"]
    dead = drain(sqs_endpoint.url, queues[1])
    figures.sent = len(stories)
    figures.dead_lettered = len(dead)
    figures.notes = {"exit_code": code, "waiting_in_queue": len(waiting)}
    assert len(waiting) == len(stories)
    assert {m["Attributes"]["ApproximateReceiveCount"] for m in waiting} == {"1"}  # this receive, the first
    assert dead == []


async def test_credentials_refused_under_a_running_worker_pause_it_until_a_token_works(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    tmp_path: Path,
    figures: Figures,
) -> None:
    config, ops_port = process_config(sqs_endpoint, queues, simulator, tmp_path)
    async with worker_process(config, ops_port, tmp_path / "worker.log", ready_within=20) as (worker, ops):
        before = [await admin.create(story(f"Before {n}")) for n in range(4)]
        await eventually(lambda: len(deliveries(tmp_path)) == 8, what="stories before the rotation")
        # The secret is rotated: every token the worker holds is revoked and the token endpoint refuses every token
        # request until the secret is fixed (the faults are cleared). The refusals go in first: a call still in
        # flight for the stories before (their feedback) that met the revocation first would have fetched a fresh
        # token, and the worker would never be refused. Not a count of refusals: messages that meet the revocation
        # at once each refresh, and a count they used up left the worker's own check a token (no pause, a flake).
        await admin.fault(method="POST", path=r"^/api/v2/auth/token$", status=401, count=1_000)
        await admin.revoke_tokens()
        during = [await admin.create(story(f"During {n}")) for n in range(8)]

        await eventually(
            lambda: not_ready_because(ops, "refuses the client credentials"), what="/readyz not ready with the reason"
        )
        paused_metrics = (await ops.get("/metrics")).text
        assert "bridge_consumer_paused 1.0" in paused_metrics
        assert (await ops.get("/healthz")).status_code == 200  # paused on purpose, not stalled
        await admin.clear_faults()  # the secret is fixed: the worker's next check gets a token
        await eventually(lambda: worker.ready(ops_port), timeout=90, what="worker ready again")
        await eventually(lambda: len(deliveries(tmp_path)) == 24, timeout=60, what="every story delivered")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=30, what="queue settled")
        resumed_metrics = (await ops.get("/metrics")).text
    events = worker.events()
    refused = [e for e in events if e.get("event") == "kordiam_credentials_refused"]
    resumed = [e for e in events if e.get("event") == "consumer_resumed"]
    dead = drain(sqs_endpoint.url, queues[1])
    auth_failures = _metric(resumed_metrics, "bridge_kordiam_auth_failures_total")
    figures.sent = len(before) + len(during)
    figures.delivered = len(deliveries(tmp_path))
    figures.dead_lettered = len(dead)
    figures.lost = 2 * figures.sent - figures.delivered
    figures.notes = {
        "auth_failures_counted": auth_failures,
        "paused_seconds": resumed[0]["paused_seconds"] if resumed else None,
        "highest_receive_count": highest_receive_count(events),
    }
    assert worker.process.returncode == 0
    assert len(refused) == 1 and refused[0]["level"] == "error" and len(resumed) == 1
    assert auth_failures >= 1 and "bridge_consumer_paused 0.0" in resumed_metrics
    assert figures.notes["highest_receive_count"] == 1  # the messages that met the refusal waited in hand
    assert (figures.dead_lettered, figures.lost) == (0, 0)


def _metric(exposition: str, name: str) -> float:
    return next(float(line.split()[-1]) for line in exposition.splitlines() if line.startswith(name + " "))


def process_config(
    sqs_endpoint: SqsEndpoint, queues: tuple[str, str], simulator: RunningSimulator, workdir: Path, **extra: Any
) -> tuple[Path, int]:
    """A config file for a worker process (two folder channels in ``workdir``) and its ops port. ``extra`` goes to
    ``write_config``, and may replace the SQS ``endpoint`` or the ``kordiam`` URL (a proxy in front of either)."""
    ops_port = free_port()
    peers = {"endpoint": sqs_endpoint.url, "kordiam": simulator.base_url}
    config = write_config(workdir / "bridge.toml", queue=queues[0], workdir=workdir, ops_port=ops_port, **peers | extra)
    return config, ops_port


async def not_ready_because(ops: httpx.AsyncClient, reason: str) -> bool:
    """``/readyz`` answers 503 with ``reason`` in its reason (False while the endpoint is not up yet)."""
    try:
        answer = await ops.get("/readyz")
    except httpx.TransportError:
        return False
    return answer.status_code == 503 and reason in answer.json()["reason"]


def highest_receive_count(events: list[dict[str, object]]) -> int:
    """The highest ``ApproximateReceiveCount`` a worker's log lines name."""
    return max((int(str(e["receive_count"])) for e in events if "receive_count" in e), default=0)


async def test_kordiam_unreachable_at_start_the_worker_waits_not_ready_then_starts(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    tmp_path: Path,
    figures: Figures,
) -> None:
    config, ops_port = process_config(sqs_endpoint, queues, simulator, tmp_path)
    stories = [await admin.create(story(f"Early {n}")) for n in range(3)]
    # Kordiam answers the start-up check and the first retry with 503: not a configuration error.
    await admin.fault(method="POST", path=r"^/api/v2/auth/token$", status=503, count=2)
    async with worker_process(config, ops_port, tmp_path / "worker.log", ready_within=None) as (worker, ops):
        await eventually(
            lambda: not_ready_because(ops, "not reachable at start-up"),
            what="/readyz not ready while Kordiam is unreachable",
        )
        await eventually(lambda: worker.ready(ops_port), timeout=60, what="ready once Kordiam answers")
        await eventually(lambda: len(deliveries(tmp_path)) == 6, timeout=60, what="every story delivered")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=30, what="queue settled")
    events = worker.events()
    dead = drain(sqs_endpoint.url, queues[1])
    figures.sent = len(stories)
    figures.delivered = len(deliveries(tmp_path))
    figures.dead_lettered = len(dead)
    figures.notes = {
        "highest_receive_count": highest_receive_count(events),
        "paused_seconds": next(e["paused_seconds"] for e in events if e.get("event") == "consumer_resumed"),
    }
    assert worker.process.returncode == 0 and figures.notes["highest_receive_count"] == 1 and dead == []
    # Up but paused: the ready line says why, and the resumption follows it.
    [ready] = [e for e in events if e.get("event") == "worker_ready"]
    assert "not reachable at start-up" in str(ready["paused"])
    names = [e.get("event") for e in events]
    assert names.index("worker_ready") < names.index("consumer_resumed")


async def test_waiting_for_a_live_workers_lease_spends_no_receive(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    channel_log: ChannelLog,
    tmp_path: Path,
    figures: Figures,
) -> None:
    """Another worker (a live process: this one) holds an element for longer than the old 10 s lease wait."""

    def retries() -> float:
        return REGISTRY.get_sample_value("bridge_message_outcomes_total", {"outcome": "retry"}) or 0.0

    def received() -> float:
        return REGISTRY.get_sample_value("bridge_messages_received_total") or 0.0

    held_for = 12.0
    other_worker = SqliteStateStore(tmp_path / "state.db")
    await other_worker.open()
    retries_before, received_before = retries(), received()
    settings_ = worker_settings(
        queue=queues[0], endpoint=sqs_endpoint.url, kordiam=simulator.base_url, workdir=tmp_path
    )
    created = await admin.create(story("Held elsewhere"))  # its notification waits in the queue
    holding: Any = other_worker.lease(created["id"])
    await holding.__aenter__()  # before the worker starts: it can only meet the element held
    try:
        async with running_worker(settings_) as worker:
            await asyncio.sleep(held_for)
            # It received the message and waited for the lease.
            assert received() - received_before == 1 and channel_log.creates == {}
            await holding.__aexit__(None, None, None)
            holding = None
            await eventually(lambda: len(channel_log.creates) == 2, what="delivered once the lease is free")
            await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="queue settled")
            assert not worker.done()
    finally:
        if holding is not None:
            await holding.__aexit__(None, None, None)
        await other_worker.close()
    dead = drain(sqs_endpoint.url, queues[1])
    figures.sent = 1
    figures.delivered = len(channel_log.creates)
    figures.dead_lettered = len(dead)
    figures.duplicates = channel_log.duplicates()
    figures.notes = {"lease_held_seconds": held_for, "retries": int(retries() - retries_before)}
    # It waited in hand: no retry through the queue, so no receive spent on the other worker's lease.
    assert figures.notes["retries"] == 0
    assert (figures.dead_lettered, figures.duplicates) == (0, 0)


def written_files(workdir: Path) -> list[str]:
    """The folder channels' items (``web/…``, ``print/…``): the test reads these, never the state file, which may
    sit on a full or read-only disk."""
    return sorted(f"{channel}/{p.name}" for channel in ("web", "print") for p in (workdir / channel).glob("*.json"))


def expected_files(stories: list[dict[str, Any]]) -> list[str]:
    return sorted(
        f"{channel}/{s['id']}-{p['id']}.json"
        for s in stories
        for channel, p in zip(("web", "print"), s["publications"], strict=True)
    )


def creates_per_item(events: list[dict[str, Any]]) -> dict[str, int]:
    """How often the worker's log says it created each channel item (``done`` and ``channel_synced`` lines): more
    than once is a story published twice."""
    created: dict[str, int] = {}
    for event in events:
        if event.get("event") == "done":
            actions = dict(event.get("channels") or {})
        elif event.get("event") == "channel_synced":
            actions = {f"{event['channel']}/{event['publication_id']}": event["action"]}
        else:
            continue
        for item, action in actions.items():
            if action == "created":
                key = f"{event.get('element_id')}:{item}"
                created[key] = created.get(key, 0) + 1
    return created


async def metric_value(ops: httpx.AsyncClient, name: str) -> float:
    return _metric((await ops.get("/metrics")).text, name)


def failed_probes(events: list[dict[str, Any]]) -> int:
    return sum(e.get("event") == "state_store_still_unavailable" for e in events)


async def paused_on_the_state_store(ops: httpx.AsyncClient, worker: WorkerProcess, what: str) -> float:
    """The worker paused for its state store: ``/readyz`` names it, ``/healthz`` stays 200 (paused on purpose, not
    stalled), and the probes keep failing (1, 2, 4 s apart: longer than three receives of a message would take).
    The outages counted."""
    await eventually(
        lambda: not_ready_because(ops, "the state store cannot serve the worker"),
        timeout=60,
        what="/readyz not ready, naming the state store",
    )
    assert (await ops.get("/healthz")).status_code == 200
    outages = await metric_value(ops, "bridge_state_outages_total")
    await eventually(lambda: failed_probes(worker.events()) >= 3, timeout=60, what=what)
    return outages


def count_deliveries(
    figures: Figures, stories: list[dict[str, Any]], events: list[dict[str, Any]], dead: list[Any], tmp_path: Path
) -> None:
    """The figures of a case whose stories are written to files: sent, delivered, dead-lettered, created twice, lost."""
    figures.sent = len(stories)
    figures.delivered = len(written_files(tmp_path))
    figures.dead_lettered = len(dead)
    figures.duplicates = sum(n - 1 for n in creates_per_item(events).values())
    figures.lost = len(set(expected_files(stories)) - set(written_files(tmp_path)))


@pytest.mark.parametrize("queues", [3], indirect=True)
async def test_the_state_files_disk_filled_mid_run_pauses_the_worker_and_it_heals_once_freed(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    tmp_path: Path,
    figures: Figures,
) -> None:
    # The state file (and its -wal and -shm) on a small filesystem that fills up while stories flow: the WAL cannot
    # grow, every write fails with SQLITE_FULL. The worker's own fault: it pauses, nothing is dead-lettered (three
    # receives allowed, the disk stays full for longer than they would take), and it heals once the disk is freed.
    with small_filesystem(tmp_path / "state", "2m") as disk:
        config, ops_port = process_config(
            sqs_endpoint, queues, simulator, tmp_path, state_url=f"sqlite:///{disk / 'state.db'}", visibility_timeout=6
        )
        async with worker_process(config, ops_port, tmp_path / "worker.log", ready_within=20) as (worker, ops):
            stories = [await admin.create(story(f"Before {n}")) for n in range(4)]
            await eventually(lambda: written_files(tmp_path) == expected_files(stories), what="stories before")
            filler = fill(disk)
            full_at = time.monotonic()
            stories += [await admin.create(story(f"Full {n}")) for n in range(6)]
            outages = await paused_on_the_state_store(ops, worker, "probes failing while the disk is full")
            filler.unlink()
            full_for = time.monotonic() - full_at
            stories += [await admin.create(story(f"After {n}")) for n in range(2)]
            await eventually(lambda: worker.ready(ops_port), timeout=90, what="ready again once the disk is freed")
            await eventually(
                lambda: written_files(tmp_path) == expected_files(stories), timeout=60, what="every story delivered"
            )
            await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=60, what="queue settled")
        events = worker.events()
        recorded = deliveries(disk)
    count_deliveries(figures, stories, events, drain(sqs_endpoint.url, queues[1]), tmp_path)
    figures.notes = {
        "full_for_s": round(full_for, 1),
        "outages_counted": outages,
        "highest_receive_count": highest_receive_count(events),
        "failed_probes": failed_probes(events),
    }
    assert worker.process.returncode == 0
    assert outages >= 1
    # One pause, one resumption: no probe passed while the disk was full (the worker did not flap).
    assert [e["level"] for e in events if e.get("event") == "state_store_unavailable"] == ["error"]
    assert [e.get("event") for e in events if e.get("event") == "consumer_resumed"] == ["consumer_resumed"]
    assert not any("Traceback" in line for line in worker.log.read_text(encoding="utf-8").splitlines())
    # Every item recorded in the state, and none created twice on its channel (an item whose record failed is
    # rewritten in place by the forced re-sync: ``updated``, the same file).
    assert len(recorded) == 2 * len(stories)
    assert_each_story_once(figures)


@pytest.mark.parametrize("queues", [3], indirect=True)
async def test_a_worker_stopped_on_a_full_state_disk_leaves_its_wal_and_a_restart_is_exit_75_until_it_is_freed(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    tmp_path: Path,
    figures: Figures,
) -> None:
    # The disk fills under a running worker, which pauses. Stopped, its close cannot checkpoint the WAL into the
    # database file (the file would have to grow), so the WAL stays, and its index with it: a restart opens the file
    # without writing anything. Before, that worker started and paused at its first message; the start promises to
    # stop on a full disk (exit 75), and does. Once freed, the same start delivers every story once, nothing is
    # dead-lettered, and the WAL goes back into the database file. 4 MiB: the last start checks the disk's room as
    # the probe does (a 512 KiB row written, then zeroed: 1 MiB of WAL), and its close copies that into the file.
    with small_filesystem(tmp_path / "state", "4m") as disk:
        config, ops_port = process_config(
            sqs_endpoint, queues, simulator, tmp_path, state_url=f"sqlite:///{disk / 'state.db'}", visibility_timeout=6
        )
        async with worker_process(config, ops_port, tmp_path / "worker-1.log", ready_within=20) as (first, ops):
            stories = [await admin.create(story(f"Before {n}")) for n in range(4)]
            await eventually(lambda: written_files(tmp_path) == expected_files(stories), what="stories before")
            filler = fill(disk)
            stories += [await admin.create(story(f"Full {n}")) for n in range(6)]
            await paused_on_the_state_store(ops, first, "probes failing while the disk is full")
        wal_left = (disk / "state.db-wal").stat().st_size
        restarted = WorkerProcess(config, tmp_path / "worker-2.log")
        try:
            restart_code: int | None = restarted.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            restart_code = None  # still running: it started on the full disk
        finally:
            restarted.kill()
        lines = restarted.log.read_text(encoding="utf-8").strip().splitlines()
        filler.unlink()
        async with worker_process(config, ops_port, tmp_path / "worker-3.log", ready_within=None) as (again, _):
            await eventually(lambda: again.ready(ops_port), timeout=60, what="the same start, once there is room")
            stories += [await admin.create(story(f"After {n}")) for n in range(2)]
            await eventually(
                lambda: written_files(tmp_path) == expected_files(stories), timeout=60, what="every story delivered"
            )
            await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=60, what="queue settled")
        events = first.events() + again.events()
        wal_at_the_end = (disk / "state.db-wal").exists()
        recorded = deliveries(disk)
    count_deliveries(figures, stories, events, drain(sqs_endpoint.url, queues[1]), tmp_path)
    figures.notes = {
        "wal_left_bytes": wal_left,
        "restart_exit_code": restart_code,
        "highest_receive_count": highest_receive_count(events),
        "failed_probes": failed_probes(events),
    }
    logs = first.log.read_text(encoding="utf-8") + again.log.read_text(encoding="utf-8")
    assert not any("Traceback" in line for line in logs.splitlines() + lines)
    assert (first.process.returncode, again.process.returncode) == (0, 0)
    assert wal_left > 0
    assert restart_code == 75, lines[-3:]
    assert re.fullmatch(
        r"kordiam-bridge: cannot start now \(a fault that may pass, not the configuration\): SQLite "
        + re.escape(str(disk / "state.db"))
        + r": the disk holding it is full \(database or disk is full\)",
        lines[-1],
    ), lines[-1]
    # The last worker's close checkpointed the WAL into the database file and removed it.
    assert not wal_at_the_end
    # The messages the first worker held were released at its stop (one receive), received again by the last:
    # none came near the queue's three.
    assert figures.notes["highest_receive_count"] <= 2
    assert len(recorded) == 2 * len(stories)
    assert_each_story_once(figures)


@contextlib.contextmanager
def ext4_filesystem(path: Path, image: Path, size: str = "16M") -> Iterator[Path]:
    """An ext4 file system in ``image`` (a loop device) mounted at ``path``, as a state volume is: the kernel
    remounts it read-only after an I/O error (``abort_to_read_only``)."""
    path.mkdir(parents=True)
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(path)], check=False, capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a loop device here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def abort_to_read_only(path: Path) -> None:
    """What ext4 does on an I/O error with ``errors=remount-ro``: the file system read-only under every open file.
    (``mount -o remount,ro`` is refused while a file is open for writing: the worker's state file always is.)"""
    aborted = subprocess.run(["mount", "-o", "remount,abort", str(path)], check=False, capture_output=True)
    if aborted.returncode != 0:
        pytest.skip(f"this kernel's ext4 cannot be aborted: {aborted.stderr.decode().strip()}")


def remount_checked(path: Path, image: Path) -> None:
    """The operator's fix: unmount, check the file system, mount it again read-write."""
    subprocess.run(["umount", str(path)], check=True)
    checked = subprocess.run(["e2fsck", "-fy", str(image)], check=False, capture_output=True)
    assert checked.returncode in (0, 1), checked.stdout.decode()  # 1: errors corrected
    subprocess.run(["mount", "-o", "loop", str(image), str(path)], check=True)


@pytest.mark.parametrize("queues", [3], indirect=True)
async def test_the_state_files_disk_turned_read_only_mid_run_pauses_the_worker_and_a_restart_after_the_fix_heals(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    tmp_path: Path,
    figures: Figures,
) -> None:
    # The kernel remounts the state file's ext4 volume read-only under a running worker (errors=remount-ro after an
    # I/O error). Every write fails; the worker's own fault: it pauses, nothing is dead-lettered. An aborted ext4
    # cannot be made writable again under open files: the operator stops the worker, checks and remounts the
    # volume, and starts it again; every story is delivered, none twice.
    with ext4_filesystem(tmp_path / "state", tmp_path / "state.img") as disk:
        config, ops_port = process_config(
            sqs_endpoint, queues, simulator, tmp_path, state_url=f"sqlite:///{disk / 'state.db'}", visibility_timeout=6
        )
        async with worker_process(config, ops_port, tmp_path / "worker-1.log", ready_within=20) as (first, ops):
            stories = [await admin.create(story(f"Before {n}")) for n in range(4)]
            await eventually(lambda: written_files(tmp_path) == expected_files(stories), what="stories before")
            # The fault comes after the WAL's sync window: what a host crash or the kernel's remount may lose is
            # the commits of the last WAL_SYNC_SECONDS, where the kernel's writeback alone would leave 30 s of them.
            await asyncio.sleep(5 * WAL_SYNC_SECONDS)
            abort_to_read_only(disk)
            stories += [await admin.create(story(f"Read-only {n}")) for n in range(6)]
            outages = await paused_on_the_state_store(ops, first, "probes failing while the disk is read-only")
        remount_checked(disk, tmp_path / "state.img")
        stories += [await admin.create(story(f"After {n}")) for n in range(2)]
        async with worker_process(config, ops_port, tmp_path / "worker-2.log", ready_within=None) as (second, _):
            await eventually(
                lambda: written_files(tmp_path) == expected_files(stories), timeout=60, what="every story delivered"
            )
            # A story delivered before the disk turned read-only changes: its items are updated, not created again
            # (the delivery acknowledged before the fault is still in the state after the kernel's remount).
            first_story = stories[0]["id"]
            await admin.patch(first_story, {"title": "Before 0, corrected"})
            await eventually(
                lambda: any(
                    e.get("event") == "done" and e.get("element_id") == first_story and e.get("changed")
                    for e in second.events()
                ),
                timeout=60,
                what="the corrected story synced",
            )
            await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=60, what="queue settled")
        events = first.events() + second.events()
        recorded = deliveries(disk)
    count_deliveries(figures, stories, events, drain(sqs_endpoint.url, queues[1]), tmp_path)
    figures.notes = {
        "outages_counted": outages,
        "highest_receive_count": highest_receive_count(events),
        "failed_probes": failed_probes(events),
        "exit_codes": (first.process.returncode, second.process.returncode),
    }
    logs = first.log.read_text(encoding="utf-8") + second.log.read_text(encoding="utf-8")
    assert not any("Traceback" in line for line in logs.splitlines())
    assert (first.process.returncode, second.process.returncode) == (0, 0)
    assert outages >= 1
    assert [e["level"] for e in first.events() if e.get("event") == "state_store_unavailable"] == ["error"]
    assert len(recorded) == 2 * len(stories)
    assert_each_story_once(figures)


@pytest.mark.parametrize("existing", [False, True], ids=["new-file", "existing-file"])
async def test_a_full_disk_under_the_state_file_at_start_is_exit_75_and_the_same_start_works_once_freed(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    tmp_path: Path,
    figures: Figures,
    existing: bool,
) -> None:
    # A full disk is no setting to fix: a restart with back-off starts the worker once there is room (exit 75),
    # not "fix what the line names" (exit 2). SQLite says "database or disk is full" for a new file, and "disk I/O
    # error" for an existing one (its shared-memory index cannot grow).
    with small_filesystem(tmp_path / "state", "1m") as disk:
        if existing:
            made = SqliteStateStore(disk / "state.db")
            await made.open()
            await made.close()
        config, ops_port = process_config(
            sqs_endpoint, queues, simulator, tmp_path, state_url=f"sqlite:///{disk / 'state.db'}"
        )
        stories = [await admin.create(story(f"Waiting {n}")) for n in range(3)]
        filler = fill(disk)
        refused = WorkerProcess(config, tmp_path / "worker-1.log")
        try:
            code = refused.process.wait(timeout=60)
        finally:
            refused.kill()
        lines = refused.log.read_text(encoding="utf-8").strip().splitlines()
        filler.unlink()
        async with worker_process(config, ops_port, tmp_path / "worker-2.log", ready_within=None) as (second, _):
            await eventually(lambda: second.ready(ops_port), timeout=60, what="the same start, once there is room")
            await eventually(
                lambda: written_files(tmp_path) == expected_files(stories), timeout=60, what="every story delivered"
            )
            await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=30, what="queue settled")
    dead = drain(sqs_endpoint.url, queues[1])
    figures.sent = len(stories)
    figures.delivered = len(written_files(tmp_path))
    figures.dead_lettered = len(dead)
    figures.notes = {"exit_code": code, "existing_file": existing}
    assert code == 75, lines[-1]
    assert re.fullmatch(
        r"kordiam-bridge: cannot start now \(a fault that may pass, not the configuration\): SQLite "
        + re.escape(str(disk / "state.db"))
        + r": the disk holding it is full \((database or disk is full|disk I/O error)\)",
        lines[-1],
    ), lines[-1]
    assert not any("Traceback" in line for line in lines)
    assert second.process.returncode == 0 and dead == []

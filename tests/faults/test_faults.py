"""Fault injection: break things on purpose and prove nothing is lost, nothing is delivered twice, and the
worker stays up. Every case is bounded in time and records its figures (see conftest.py)."""

from __future__ import annotations

import json
import signal
import string
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.errors import ChannelRejected
from bridge.simulator import RunningSimulator
from tests.faults.conftest import Figures
from tests.support import (
    ChannelLog,
    SimulatorAdmin,
    SqsEndpoint,
    WorkerProcess,
    deliveries,
    drain,
    eventually,
    free_port,
    make_queues,
    queue_settled,
    running_worker,
    send,
    sqs_client,
    stop_worker_mid_batch,
    story,
    worker_settings,
    write_config,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def queues(sqs_endpoint: SqsEndpoint, request: pytest.FixtureRequest) -> tuple[str, str]:
    """Queues that allow 10 receives: outages here last several back-offs by design."""
    name = f"f-{abs(hash(request.node.nodeid)) % 10**10}-{int(time.time() * 1000) % 10**6}"
    queue, dlq = make_queues(sqs_endpoint.url, name, max_receive_count=10)
    # Messages up to SQS's 1 MiB limit.
    sqs_client(sqs_endpoint.url).set_queue_attributes(QueueUrl=queue, Attributes={"MaximumMessageSize": "1048576"})
    sqs_client(sqs_endpoint.url).set_queue_attributes(QueueUrl=dlq, Attributes={"MaximumMessageSize": "1048576"})
    return queue, dlq


@pytest.mark.localstack
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
async def test_worker_stopped_mid_batch_then_restarted(
    sig: signal.Signals,
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    tmp_path: Path,
    figures: Figures,
) -> None:
    config = write_config(
        tmp_path / "bridge.toml",
        queue=queues[0],
        endpoint=sqs_endpoint.url,
        kordiam=simulator.base_url,
        workdir=tmp_path,
        ops_port=free_port(),
        # A killed worker's leases and in-flight messages come back after these, not after the defaults.
        state_extra="lease_seconds = 3",
        visibility_timeout=6,
    )
    stories, stop_seconds = await stop_worker_mid_batch(sig, config, admin, tmp_path)
    delivered_before = len(deliveries(tmp_path))

    second = WorkerProcess(config, tmp_path / "worker-2.log")
    expected = sorted(
        (s["id"], channel, p["id"])
        for s in stories
        for channel, p in zip(("web", "print"), s["publications"], strict=True)
    )
    try:
        await eventually(lambda: deliveries(tmp_path) == expected, timeout=60, what="every story delivered")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=30, what="queue settled")
    finally:
        second.terminate()
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
    figures.notes = {"delivered_before_stop": delivered_before, "stop_seconds": round(stop_seconds, 2)}
    assert files == expected_files
    assert (figures.dead_lettered, figures.duplicates, figures.lost) == (0, 0, 0)


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
    assert (figures.dead_lettered, figures.duplicates, figures.lost) == (0, 0, 0)


async def test_a_channel_down_for_a_while_delays_only_itself(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    channel_log: ChannelLog,
    tmp_path: Path,
    figures: Figures,
) -> None:
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
    channel_log.down_until["print"] = time.monotonic() + down_for
    async with running_worker(settings_) as worker:
        stories = [await admin.create(story(f"Outage {n}")) for n in range(12)]
        await eventually(lambda: len([k for k in channel_log.creates if k[0] == "web"]) == 12, what="web deliveries")
        web_done = max(channel_log.written_at["web"])
        await eventually(lambda: len(channel_log.creates) == 24, timeout=60, what="print deliveries after recovery")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=30, what="queue settled")
        assert not worker.done()
    dead = drain(sqs_endpoint.url, queues[1])
    figures.sent = len(stories)
    figures.delivered = len(channel_log.creates)
    figures.dead_lettered = len(dead)
    figures.duplicates = channel_log.duplicates()
    figures.lost = 24 - len(channel_log.creates)
    figures.notes = {
        "print_down_seconds": down_for,
        "web_done_while_print_down": web_done < channel_log.down_until["print"],
        "print_attempts": channel_log.attempts["print"],
    }
    # The website was not held back by the print outage, and print caught up once it returned.
    assert web_done < channel_log.down_until["print"]
    assert min(channel_log.written_at["print"]) >= channel_log.down_until["print"]
    assert (figures.dead_lettered, figures.duplicates, figures.lost) == (0, 0, 0)


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

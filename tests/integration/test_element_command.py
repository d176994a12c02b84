"""``kordiam-bridge element``: what the bridge did with one element, run as the operator runs it (a process, on
a real SQLite state store a worker wrote, the Kordiam simulator over HTTP, SQS on moto server)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from bridge.admin.element import element_report
from bridge.config import KordiamCommandSettings, StateSettings, StatusSettings, load_settings
from bridge.queue.sqs import SqsTransport
from bridge.simulator import RunningSimulator
from bridge.state import open_state_store
from bridge.state.dynamodb import create_table
from tests.integration.test_operator_commands import dead_letter
from tests.support import (
    REGION,
    SimulatorAdmin,
    SqsEndpoint,
    eventually,
    queue_settled,
    running_worker,
    story,
    worker_settings,
    write_config,
)

pytestmark = pytest.mark.integration


async def element(config: Path, *args: str) -> tuple[int, str, str]:
    """The command as a process: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "element",
        *args,
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "BRIDGE_KORDIAM__CLIENT_SECRET": "demo-secret", "COLUMNS": "200"},
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def element_json(config: Path, *args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = await element(config, *args, "--json")
    assert code in (0, 1), err
    return code, json.loads(out)


def verdicts(report: dict[str, Any]) -> dict[tuple[str, int], str]:
    return {(c["channel"], c["publication_id"]): c["verdict"] for c in report["kordiam"]["checks"]}


async def test_element_says_what_the_store_holds_and_whether_each_channel_is_in_line_with_kordiam(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path / "bridge.toml",
        queue=queues[0],
        endpoint=sqs_endpoint.url,
        kordiam=simulator.base_url,
        workdir=tmp_path,
        ops_port=0,
    )
    settings = worker_settings(
        queue=queues[0], endpoint=sqs_endpoint.url, kordiam=simulator.base_url, workdir=tmp_path, channel_type="folder"
    )
    created = await admin.create(story("Not on the website"))
    element_id = created["id"]
    web, print_ = (p["id"] for p in created["publications"])
    async with running_worker(settings):
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="first sync")

    # Synced: the store's mark and both deliveries, each channel in line with Kordiam, and the replay line.
    code, report = await element_json(config, str(element_id), "--kordiam", "--dlq")
    assert (code, report["problems"]) == (0, []), report
    assert report["seen"] is True and report["deleted"] is False and report["synced_version"] is not None
    assert report["fetch_started_at"] is not None and report["lease"] is None and report["parked"] == []
    assert [(d["channel"], d["publication_id"]) for d in report["deliveries"]] == [("print", print_), ("web", web)]
    assert all(d["recorded_at"] and d["fingerprint"].startswith("2:") for d in report["deliveries"])
    assert verdicts(report) == {
        ("web", web): "in line",
        ("web", print_): "not exported to this channel (status filter, platform)",
        ("print", web): "not exported to this channel (status filter, platform)",
        ("print", print_): "in line",
    }
    assert report["kordiam"]["replay"] == f"kordiam-bridge replay --config {config} {element_id}"
    assert report["dead_letters"]["messages"] == [] and report["dead_letters"]["partial"] is False

    # Edited in Kordiam while no worker ran: both channels would be written again (exit 1), and the text says so.
    await admin.patch(element_id, {"title": "Edited after the sync"})
    code, report = await element_json(config, str(element_id), "--kordiam")
    assert code == 1
    assert verdicts(report)[("web", web)] == verdicts(report)[("print", print_)] == "would be sent again"
    code, out, _ = await element(config, str(element_id), "--kordiam")
    assert code == 1
    assert "would be sent again" in out and f"kordiam-bridge replay --config {config} {element_id}" in out
    assert "Problems" in out

    # Dead-lettered and parked: both are problems; a look stopped by --scan-limit says it was partial.
    async with running_worker(settings):  # takes the edit's notification off the queue first
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="edit synced")
    async with SqsTransport.connect(settings.queue) as transport:
        await transport.describe()
        await dead_letter(transport, 999)
        await dead_letter(transport, element_id)
    store = await open_state_store(load_settings(config, model=StatusSettings).state)
    try:
        await store.park(element_id, "web", "HTTP 401 from the CMS")
    finally:
        await store.close()
    code, report = await element_json(config, str(element_id), "--dlq")
    assert code == 1
    assert [m["element_id"] for m in report["dead_letters"]["messages"]] == [element_id]
    [parked, dead] = report["problems"]
    assert parked.startswith("parked for web since ") and parked.endswith(": HTTP 401 from the CMS")
    assert dead == f"1 dead letter(s) in {queues[1]}"
    code, out, _ = await element(config, str(element_id), "--dlq", "--scan-limit", "1")
    assert "raise --scan-limit" in out and "Parked for web" in out


async def test_an_element_the_store_never_saw_is_said_plainly_and_a_kordiam_deletion_is_in_line(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path / "bridge.toml",
        queue=queues[0],
        endpoint=sqs_endpoint.url,
        kordiam=simulator.base_url,
        workdir=tmp_path,
        ops_port=0,
    )
    await (await open_state_store(load_settings(config, model=StatusSettings).state)).close()  # a store, empty
    code, out, err = await element(config, "4711")
    assert (code, err) == (0, "")
    assert "never seen element 4711" in out and "No problems found" in out
    code, report = await element_json(config, "4711", "--kordiam")
    assert code == 0 and report["seen"] is False
    assert report["kordiam"]["found"] is False and report["kordiam"]["checks"] == []


async def test_element_configuration_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "bridge.toml",
        queue="http://127.0.0.1:9/000000000000/q",
        endpoint="http://127.0.0.1:9",
        kordiam="http://127.0.0.1:9",
        workdir=tmp_path,
        ops_port=0,
    )
    code, out, err = await element(config, "12")  # no state file yet: nothing is made
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "does not exist" in err and not (tmp_path / "state.db").exists()
    code, _, err = await element(config, "0")
    assert code == 2 and "is not an element id" in err
    code, _, err = await element(config, "12", "--scan-limit", "5")  # bounds nothing without --dlq
    assert code == 2 and "give it with --dlq" in err


async def test_element_reads_a_dynamodb_store_as_it_reads_sqlite(
    moto_url: str,
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    tmp_path: Path,
) -> None:
    """The same report from the shared table: deliveries with their time, the mark, a lease a worker holds now,
    a parked channel; and against the simulator, each channel in line."""
    table = f"bridge-state-{uuid.uuid4().hex[:12]}"
    await create_table(moto_url, table, region=REGION)
    worker = worker_settings(
        queue=queues[0], endpoint=sqs_endpoint.url, kordiam=simulator.base_url, workdir=tmp_path, channel_type="folder"
    ).model_copy(update={"state": StateSettings(url=f"dynamodb://{table}", endpoint_url=moto_url, region=REGION)})
    settings = KordiamCommandSettings(
        queue=worker.queue, state=worker.state, channels=worker.channels, kordiam=worker.kordiam
    )
    created = await admin.create(story("Shared table"))
    element_id = created["id"]
    async with running_worker(worker):
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="first sync")

    report = await element_report(settings, element_id, kordiam=True)
    assert report.seen and report.problems == [] and report.lease is None
    assert [(d.channel, d.recorded_at is not None) for d in report.deliveries] == [("print", True), ("web", True)]
    web, print_ = (p["id"] for p in created["publications"])
    assert report.kordiam is not None
    checks = {(c.channel, c.publication_id): c.verdict for c in report.kordiam.checks}
    assert checks[("web", web)] == checks[("print", print_)] == "in line"

    store = await open_state_store(settings.state, default_region=REGION)
    try:
        await store.park(element_id, "print", "circuit open")
        async with store.lease(element_id):
            held = await element_report(settings, element_id)
    finally:
        await store.close()
    assert held.lease is not None and held.lease.held and held.lease.pid == os.getpid()
    assert [p.channel for p in held.parked] == ["print"] and len(held.problems) == 1

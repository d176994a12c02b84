"""``kordiam-bridge run`` as a real process: the command users run, its ops endpoints, and SIGTERM.

These tests also make up the LocalStack pass of ``make test`` (``BRIDGE_TEST_SQS=localstack pytest -m localstack``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.simulator import RunningSimulator
from tests.support import (
    HeldKordiam,
    SimulatorAdmin,
    SqsEndpoint,
    WorkerProcess,
    deliveries,
    drain,
    eventually,
    free_port,
    held_kordiam,
    queue_depth,
    queue_settled,
    send,
    story,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.localstack]


@pytest.fixture
def config(
    sqs_endpoint: SqsEndpoint, queues: tuple[str, str], simulator: RunningSimulator, tmp_path: Path
) -> Iterator[tuple[Path, int]]:
    port = free_port()
    yield (
        write_config(
            tmp_path / "bridge.toml",
            queue=queues[0],
            endpoint=sqs_endpoint.url,
            kordiam=simulator.base_url,
            workdir=tmp_path,
            ops_port=port,
        ),
        port,
    )


async def test_run_processes_create_update_delete(
    config: tuple[Path, int], admin: SimulatorAdmin, sqs_endpoint: SqsEndpoint, queues: tuple[str, str], tmp_path: Path
) -> None:
    path, ops_port = config
    worker = WorkerProcess(path, tmp_path / "worker.log")
    try:
        ops = httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops_port}")

        async def ready() -> bool:
            try:
                return (await ops.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, what="/readyz")
        assert (await ops.get("/healthz")).json() == {"status": "ok"}

        created = await admin.create(story("Election night"))
        element_id = created["id"]
        web_pub, print_pub = (p["id"] for p in created["publications"])
        web_json = tmp_path / "web" / f"{element_id}-{web_pub}.json"
        await eventually(web_json.exists, what="created in the web channel")
        await eventually((tmp_path / "print" / f"{element_id}-{print_pub}.json").exists, what="print")

        element = await admin.get(element_id)
        await admin.replace(element_id, {**element, "title": "Election night: results"})
        await eventually(
            lambda: json.loads(web_json.read_text())["element"]["title"] == "Election night: results", what="update"
        )
        await admin.delete(element_id)
        await eventually(lambda: not web_json.exists(), what="delete")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="queue settled")

        metrics = (await ops.get("/metrics")).text
        assert (
            "bridge_messages_received_total" in metrics and 'bridge_message_outcomes_total{outcome="done"}' in metrics
        )
        await ops.aclose()
    finally:
        code, _ = worker.terminate()
    assert code == 0
    outcomes = [e for e in worker.events() if e.get("event") == "done"]
    assert outcomes and all(e.get("message_id") and e.get("element_id") == element_id for e in outcomes)
    assert deliveries(tmp_path) == []
    assert drain(sqs_endpoint.url, queues[1]) == []


async def test_the_outcome_series_the_dead_letter_alert_reads_exist_before_the_first_dead_letter(
    config: tuple[Path, int], sqs_endpoint: SqsEndpoint, queues: tuple[str, str], tmp_path: Path
) -> None:
    # The README's KordiamBridgeDeadLetters rule is `increase(bridge_message_outcomes_total{outcome="dead_letter"}
    # [10m]) > 0`. Prometheus' increase() needs the series before the event: one that first appears at 1 and stays
    # there reads as an increase of 0, so the first dead letter of a worker's life would never fire the alert.
    path, ops_port = config
    worker = WorkerProcess(path, tmp_path / "worker.log")
    try:
        await eventually(lambda: worker.ready(ops_port), what="/readyz")

        async def outcomes() -> dict[str, float]:
            async with httpx.AsyncClient() as client:
                text = (await client.get(f"http://127.0.0.1:{ops_port}/metrics")).text
            return {
                sample.labels["outcome"]: sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "bridge_message_outcomes_total"
            }

        assert await outcomes() == {"done": 0.0, "retry": 0.0, "dead_letter": 0.0}
        send(sqs_endpoint.url, queues[0], "not json")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="poison dead-lettered")
        assert (await outcomes())["dead_letter"] == 1.0
    finally:
        worker.terminate()


async def test_sigterm_mid_batch_loses_nothing(
    config: tuple[Path, int], admin: SimulatorAdmin, sqs_endpoint: SqsEndpoint, queues: tuple[str, str], tmp_path: Path
) -> None:
    path, _ = config
    stories = [await admin.create(story(f"Story {n}")) for n in range(16)]
    # Slow some fetches down (429 with Retry-After: 1 s) so that work is in flight when SIGTERM arrives.
    await admin.fault(method="GET", path=r"^/api/v2/elements/\d+$", status=429, count=8, retry_after=1)
    worker = WorkerProcess(path, tmp_path / "worker-1.log")
    try:
        await eventually(lambda: len(list((tmp_path / "web").glob("*.json"))) >= 2, what="first deliveries")
        code, seconds = worker.terminate()
    finally:
        worker.kill()
    assert code == 0
    assert seconds < 25, f"shutdown took {seconds:.1f} s"
    events = [e.get("event") for e in worker.events()]
    assert "consumer_draining" in events and "consumer_stopped" in events

    # A second worker finishes the rest: every story in every channel exactly once, nothing dead-lettered.
    second = WorkerProcess(path, tmp_path / "worker-2.log")
    try:
        expected = sorted(
            (s["id"], ch, p["id"]) for s in stories for ch, p in zip(("web", "print"), s["publications"], strict=True)
        )
        await eventually(lambda: deliveries(tmp_path) == expected, timeout=60, what="all stories delivered")
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), timeout=30, what="queue settled")
    finally:
        second.terminate()
    assert len(list((tmp_path / "web").glob("*.json"))) == 16
    assert len(list((tmp_path / "print").glob("*.json"))) == 16
    assert drain(sqs_endpoint.url, queues[1]) == []
    for created in stories:
        element = await admin.get(created["id"])
        assert all(p.get("externalId") for p in element["publications"])


async def test_wrong_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[queue]\nurl = "http://x/q"\nconcurrency = "many"\n', encoding="utf-8")
    result = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "run", "--config", str(path), stderr=asyncio.subprocess.PIPE
    )
    _, err = await result.communicate()
    assert result.returncode == 2
    assert err.decode().strip() == (
        "kordiam-bridge: configuration error: queue.concurrency: Input should be a valid integer, "
        "unable to parse string as an integer (and 2 more problems)"
    )


async def test_a_folder_that_cannot_be_written_stops_the_worker_at_start(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("where the folder should be", encoding="utf-8")
    path = write_config(
        tmp_path / "bridge.toml",
        queue="http://127.0.0.1:9/000000000000/never-reached",
        endpoint="http://127.0.0.1:9",
        kordiam="http://127.0.0.1:9",
        workdir=tmp_path / "a-file",
        state_url=f"sqlite:///{tmp_path / 'state.db'}",
        ops_port=free_port(),
    )
    result = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "run",
        "--config",
        str(path),
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "BRIDGE_KORDIAM__CLIENT_SECRET": "demo-secret"},
    )
    _, err = await result.communicate()
    assert result.returncode == 2
    assert err.decode().strip() == (
        f"kordiam-bridge: configuration error: channels[0].path: {tmp_path / 'a-file' / 'web'} is not a writable "
        "directory: Not a directory (ENOTDIR)"
    )


async def test_operator_commands_on_dead_letters_made_by_the_worker(
    config: tuple[Path, int], sqs_endpoint: SqsEndpoint, queues: tuple[str, str], tmp_path: Path
) -> None:
    from tests.support import send

    path, _ = config
    for body in ("not json", '{"hello": 1}'):
        send(sqs_endpoint.url, queues[0], body)
    worker = WorkerProcess(path, tmp_path / "worker.log")
    try:
        await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="poison dead-lettered")
    finally:
        worker.terminate()

    def cli(*args: str, code: int = 0) -> Any:
        env = {**os.environ, "BRIDGE_KORDIAM__CLIENT_SECRET": "demo-secret"}
        done = subprocess.run(
            [sys.executable, "-m", "bridge", *args, "--config", str(path), "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert done.returncode == code, done.stderr
        return json.loads(done.stdout)

    listing = cli("dlq", "list")
    stages = sorted(m["failure"]["stage"] for m in listing["messages"])
    assert stages == ["decode", "decode"]
    reasons = sorted(m["failure"]["reason"] for m in listing["messages"])
    assert "body is not JSON" in reasons[0] and "no element id" in reasons[1]
    shown = cli("dlq", "show", listing["messages"][0]["message_id"])
    assert shown["body"] in ("not json", '{"hello": 1}')
    # Dead letters (and the stopped worker) are problems: exit 1, for scripts and cron.
    status = cli("status", code=1)
    assert status["dead_letter"]["visible"] + status["dead_letter"]["in_flight"] == 2
    assert "2 message(s) in the dead-letter queue" in status["problems"]
    moved = cli("dlq", "redrive")
    assert moved["moved_total"] == 2 and moved["ok"]
    await eventually(lambda: queue_depth(sqs_endpoint.url, queues[0]) == 2, what="messages back on the queue")
    assert drain(sqs_endpoint.url, queues[1]) == []


async def run_process(config: Path) -> asyncio.subprocess.Process:
    """``kordiam-bridge run`` as a real process, its stderr piped."""
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bridge", "run", "--config", str(config)),
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "BRIDGE_KORDIAM__CLIENT_SECRET": "demo-secret"},
    )


async def test_run_with_the_ops_port_taken_is_one_line_naming_it(config: tuple[Path, int]) -> None:
    path, ops_port = config
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ops_port))
        taken.listen()
        result = await run_process(path)
        _, err = await result.communicate()
    assert result.returncode == 2
    lines = [line for line in err.decode().splitlines() if not line.startswith("{")]  # JSON logs aside
    assert lines == [
        f"kordiam-bridge: configuration error: ops.port: cannot listen on 127.0.0.1:{ops_port}: address already in use"
    ]


async def test_run_with_more_attempts_than_the_redrive_policy_is_one_line_naming_it(config: tuple[Path, int]) -> None:
    # SQS would dead-letter a failing message itself before the worker's count, without its reason.
    path, _ = config
    path.write_text(path.read_text().replace("[queue]\n", "[queue]\nmax_receive_count = 1000\n", 1))
    result = await run_process(path)
    try:
        # Without the check the worker starts and runs: it must not outlive the test.
        _, err = await asyncio.wait_for(result.communicate(), timeout=60)
    finally:
        if result.returncode is None:
            result.kill()
            await result.wait()
    assert result.returncode == 2
    lines = [line for line in err.decode().splitlines() if not line.startswith("{")]  # JSON logs aside
    assert len(lines) == 1 and lines[0].startswith(
        "kordiam-bridge: configuration error: queue.max_receive_count: 1000 is more than the queue's redrive policy "
        "maxReceiveCount ("
    ), lines


async def until_held(kordiam: HeldKordiam, process: asyncio.subprocess.Process) -> None:
    """Until the worker's request is held (the worker has installed its signal handlers by then)."""
    held, ended = asyncio.create_task(kordiam.held.wait()), asyncio.create_task(process.wait())
    await asyncio.wait({held, ended}, return_when=asyncio.FIRST_COMPLETED)
    held.cancel()
    if ended.done():
        assert process.stderr is not None
        raise AssertionError(f"the worker exited first: {(await process.stderr.read()).decode()[-3000:]}")
    ended.cancel()


def with_kordiam_timeout(path: Path, seconds: int) -> Path:
    text = path.read_text()
    path.write_text(
        text.replace('client_id = "demo-client"\ntimeout = 5\n', f'client_id = "demo-client"\ntimeout = {seconds}\n')
    )
    assert f"timeout = {seconds}" in path.read_text()
    return path


async def test_ctrl_c_while_the_first_token_request_hangs_stops_at_once(tmp_path: Path) -> None:
    """A stop during start-up cancels what start-up waits for. Before, Ctrl-C while Kordiam held the first token
    request waited out kordiam.timeout (here 120 s, the longest it may be: the suite's own timeout ended the
    test first), then went on starting."""
    async with held_kordiam(answer_token=False) as kordiam:
        path = write_config(
            tmp_path / "bridge.toml",
            queue="http://127.0.0.1:9/000000000000/never-reached",
            endpoint="http://127.0.0.1:9",
            kordiam=kordiam.url,
            workdir=tmp_path,
            ops_port=free_port(),
        )
        process = await run_process(with_kordiam_timeout(path, 120))
        await until_held(kordiam, process)
        process.send_signal(signal.SIGINT)
        _, err = await process.communicate()
        # The worker is gone while Kordiam still holds the token request, unanswered.
        assert not kordiam.released.is_set()
    assert kordiam.held_requests == ["POST /api/v2/auth/token HTTP/1.1"]
    assert process.returncode == 0
    events = [json.loads(line)["event"] for line in err.decode().splitlines()]  # every line a JSON log line
    assert events[-2:] == ["shutdown_requested", "stopped_during_start_up"]


async def test_a_second_ctrl_c_exits_at_once(
    sqs_endpoint: SqsEndpoint, queues: tuple[str, str], tmp_path: Path
) -> None:
    """The first Ctrl-C asks for a drain; while the drain waits for a message whose Kordiam fetch never returns,
    the second one is the way out: one line, exit 130."""
    async with held_kordiam(answer_token=True) as kordiam:
        path = write_config(
            tmp_path / "bridge.toml",
            queue=queues[0],
            endpoint=sqs_endpoint.url,
            kordiam=kordiam.url,
            workdir=tmp_path,
            ops_port=free_port(),
        )
        path.write_text(path.read_text().replace("shutdown_timeout = 20\n", "shutdown_timeout = 120\n"))
        send(sqs_endpoint.url, queues[0], {"id": 7, "event": "updated"})
        process = await run_process(with_kordiam_timeout(path, 120))
        await until_held(kordiam, process)  # the message's element fetch: the drain will wait for it
        process.send_signal(signal.SIGINT)
        assert process.stderr is not None
        while b"shutdown_requested" not in (line := await process.stderr.readline()):
            assert line, "the worker ended on the first Ctrl-C"
        process.send_signal(signal.SIGINT)
        _, err = await process.communicate()
    assert kordiam.held_requests == ["GET /api/v2/elements/7 HTTP/1.1"]
    assert process.returncode == 130
    lines = [line for line in err.decode().splitlines() if not line.startswith("{")]  # JSON logs aside
    assert lines == ["kordiam-bridge: interrupted again, exiting now without draining"]


async def test_a_second_ctrl_c_exits_at_once_while_its_log_pipe_is_full(config: tuple[Path, int]) -> None:
    """A worker whose stderr is a pipe nobody reads any more (the test that started it has failed, a log shipper
    has stalled) blocks in the write of its next log line, and its event loop with it. SIGTERM and Ctrl-C used to
    be handled only by that loop: the worker logged `shutdown_requested` (and blocked there), and no Ctrl-C after
    reached it; only SIGKILL ended it. A second Ctrl-C must exit even then."""
    path, ops_port = config
    read_end, write_end = os.pipe()
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bridge", "run", "--config", str(path)),
        stderr=write_end,
        env={**os.environ, "BRIDGE_KORDIAM__CLIENT_SECRET": "demo-secret"},
    )
    os.close(write_end)
    # A file description of the pipe's own, non-blocking (the worker's stays blocking), to fill it.
    filler = os.open(f"/proc/self/fd/{read_end}", os.O_WRONLY | os.O_NONBLOCK)
    try:

        async def ready() -> bool:
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(f"http://127.0.0.1:{ops_port}/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, what="/readyz")
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(filler, b"\n" * 4096)
        process.send_signal(signal.SIGTERM)  # its `shutdown_requested` line blocks
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


class FreezableProxy:
    """A TCP proxy to ``upstream`` that, once frozen, still accepts connections and reads what they send but
    forwards nothing either way: a server that hangs (stopped with SIGSTOP, a half-open connection), not one
    that refuses."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").rstrip("/").split(":")
        self.upstream = (host, int(port))
        self.frozen = asyncio.Event()
        self.url = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)

        async def pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
            while chunk := await source.read(65536):
                if not self.frozen.is_set():
                    target.write(chunk)
                    await target.drain()

        with contextlib.suppress(OSError):
            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        for end in (writer, upstream_writer):
            end.close()


async def test_sigterm_while_sqs_hangs_exits_by_the_shutdown_deadline(
    sqs_endpoint: SqsEndpoint, queues: tuple[str, str], tmp_path: Path
) -> None:
    """A message whose Kordiam fetch never returns is released at the shutdown deadline; with SQS not answering
    (frozen, connections left open) that release, and the flush of deletes, used to wait out botocore's read
    timeout and its retries (here about 40 s, with the default wait time more than 90 s) after a deadline of 3 s:
    past ECS's stop timeout, so SIGKILL. The worker gives up what SQS does not take by the deadline."""
    proxy = FreezableProxy(sqs_endpoint.url)
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", 0)
    proxy.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with held_kordiam(answer_token=True) as kordiam:
        path = write_config(
            tmp_path / "bridge.toml",
            queue=queues[0],
            endpoint=proxy.url,
            kordiam=kordiam.url,
            workdir=tmp_path,
            ops_port=free_port(),
        )
        path.write_text(path.read_text().replace("shutdown_timeout = 20\n", "shutdown_timeout = 3\n"))
        send(sqs_endpoint.url, queues[0], {"id": 7, "event": "updated"})
        process = await run_process(with_kordiam_timeout(path, 120))
        try:
            await until_held(kordiam, process)  # the message's element fetch: the drain will wait for it
            proxy.frozen.set()
            process.send_signal(signal.SIGTERM)
            # The deadline plus a generous margin, well short of the ~40 s it took.
            _, err = await asyncio.wait_for(process.communicate(), timeout=3 + 20)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            server.close()
    assert process.returncode == 0, err.decode()[-3000:]
    events = [json.loads(line)["event"] for line in err.decode().splitlines()]
    assert "releasing_unfinished" in events and "consumer_stopped" in events


@pytest.mark.parametrize("backend", ["sqs", "stomp"])
async def test_sigterm_while_the_queue_holds_the_start_stops_at_once(backend: str, tmp_path: Path) -> None:
    """The start's step after Kordiam's token: the queue's connection and description. An endpoint or a broker that
    accepts the connection and never answers would hold the start until botocore's read timeout (SQS) or the first
    connection's 15 s (ActiveMQ), and the start would then end as unreachable (exit 2); a SIGTERM meanwhile ends it at
    once, exit 0."""
    held = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.set()
        with contextlib.suppress(OSError):
            await reader.read()  # until the worker closes it
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    if backend == "sqs":
        queue, endpoint = f"http://{address}/000000000000/never-answered", f"http://{address}"
    else:
        queue, endpoint = f"stomp://{address}/queue/never-answered", f"stomp://{address}/queue/never-answered.dlq"
    async with held_kordiam(answer_token=True) as kordiam:
        path = write_config(
            tmp_path / "bridge.toml",
            queue=queue,
            endpoint=endpoint,
            kordiam=kordiam.url,
            workdir=tmp_path,
            ops_port=free_port(),
        )
        process = await run_process(path)
        waiting, ended = asyncio.create_task(held.wait()), asyncio.create_task(process.wait())
        await asyncio.wait({waiting, ended}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        assert not ended.done(), "the worker ended before it connected to the queue"
        ended.cancel()
        process.send_signal(signal.SIGTERM)
        _, err = await process.communicate()
    server.close()
    assert process.returncode == 0
    events = [json.loads(line)["event"] for line in err.decode().splitlines()]  # every line a JSON log line
    assert events[-2:] == ["shutdown_requested", "stopped_during_start_up"]

"""`make bench`: the bridge against the simplest aiohttp loop, same workload, same machine, same run.

    python -m bench.run --messages 5000 --concurrency 1,8,32,128 --kordiam-latency-ms 20 --channel-latency-ms 50
                        [--sqs localstack|moto] [--rounds 1] [--smoke] [--out bench/results]
    python -m bench.run --queue activemq --broker stomp://127.0.0.1:61613 --concurrency 32

    python -m bench.run --workload backlog [--backlog-notifications 3000 --backlog-elements 300] [--concurrency 32]
                        [--queue activemq --broker stomp://127.0.0.1:61613]

``--workload backlog`` is the preloaded-backlog workload of ``bench.backlog``, with its targets and the queue's
floor (``bench.floor``), on SQS or ActiveMQ.

With ``--queue activemq`` the same workloads run on ActiveMQ (STOMP) against ``bench.stomp_loop``, the simplest
STOMP loop; the queue's depth comes from the broker's statistics plugin (``StompQueues``).

Per concurrency C and per implementation (bridge, simple loop), on a fresh queue (with a DLQ):
1. start the worker as a subprocess; send one warm-up message and wait for it at the channel stub (so start-up
   and imports are not counted);
2. send n messages {"id": k} with SendMessageBatch, recording each id's send time client-side (same clock as the
   stub's arrival time; it stands in for SentTimestamp);
3. wait until the channel stub has seen all n element ids and the queue is empty (all deleted);
4. read the worker's CPU (user+sys, psutil) and peak RSS (VmHWM), and /proc/stat idle over the window; SIGTERM.

With ``--rounds R`` every implementation runs R times per concurrency, interleaved, the order rotating each round;
each one's CPU per message over the simple loop's is paired by round (``cpu_ratios`` in the JSON: median, min,
max). The machine is shared and drifts by more than a few per cent over minutes: one round's ratio alone can
miss a 1.5x line either way (see README, "Performance").

Throughput = n / (last channel arrival - first send). Latency = channel arrival - send time: it includes the time
a message waits in the queue behind the burst, as a real burst would. The bridge runs with
feedback.link_element = false and publish_when_live = false so it makes the same 3 HTTP calls per message as the
simple loop (GET element, POST channel, PATCH publication).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.util
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import boto3
import psutil  # type: ignore[import-untyped]
import stompman

from bench import backlog, diagnostics
from bridge.pipeline.covering import DEFAULT_CLOCK_SKEW_SECONDS

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
REGION = "eu-central-1"
LOCALSTACK = "http://127.0.0.1:4566"
LOADER_THREADS = 8
# The figures every run reports (the smoke test checks them).
FIELDS = (
    "impl",
    "concurrency",
    "messages",
    "msg_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "work_p50_ms",
    "work_p99_ms",
    "cpu_s_per_1000",
    "cpu_user_ms_per_msg",
    "cpu_system_ms_per_msg",
    "worker_cpu_pct",
    "peak_rss_mb",
    "machine_idle_pct",
    "elapsed_s",
    "load_s",
    "limited_by",
)
# What a run's throughput is limited by (see limited_by).
LATENCY_BOUND = 0.75  # of the latency ceiling C / (sum of the stub latencies)
CPU_BOUND_PCT = 75.0  # of one core: the worker's event loop runs on one, and queues up well before 100 %
MACHINE_BOUND_IDLE_PCT = 10.0
# Runs get element ids 100,000 apart below the ingress's 50,000,000: 4 concurrencies x every impl x this many
# rounds fits.
MAX_ROUNDS = 20
SMOKE_CLOCK_SKEW_SECONDS = 1.0  # the backlog waits it out (plus a second) before the worker starts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_json(url: str, method: str = "GET") -> Any:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def machine_info() -> dict[str, Any]:
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
    }


def cpu_idle_total() -> tuple[float, float]:
    with open("/proc/stat") as stat:
        fields = [float(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return idle, sum(fields[:8])


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class Stubs:
    def __init__(self, kordiam_ms: float, channel_ms: float, log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.stubs", "--port", str(self.port),
             "--kordiam-latency-ms", str(kordiam_ms), "--channel-latency-ms", str(channel_ms)],
            cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                self.stats()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"stubs did not start, see {log}") from None
                time.sleep(0.1)

    def stats(self) -> dict[str, Any]:
        return dict(http_json(self.base + "/_stats"))

    def reset(self) -> None:
        http_json(self.base + "/_reset", "POST")

    def get(self, path: str) -> dict[str, Any]:
        return dict(http_json(self.base + path))

    def post(self, path: str, body: dict[str, Any]) -> None:
        request = urllib.request.Request(self.base + path, method="POST", data=json.dumps(body).encode())
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def make_queues(sqs: Any, name: str) -> tuple[str, str]:
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "5"})
    queue = sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": redrive, "VisibilityTimeout": "60"})[
        "QueueUrl"
    ]
    return queue, dlq


def send_ids(sqs: Any, queue: str, ids: list[int], sent: dict[str, float], threads: int = 1) -> None:
    """SendMessageBatch by 10, from `threads` threads so the loader does not set the pace (boto3 clients are
    thread-safe)."""
    chunks = [ids[start : start + 10] for start in range(0, len(ids), 10)]
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda chunk: send_ids(sqs, queue, chunk, sent), chunks))
        return
    for chunk in chunks:
        # Entry ids by position: a backlog sends one element more than once in a batch.
        entries = [{"Id": str(n), "MessageBody": json.dumps({"id": i})} for n, i in enumerate(chunk)]
        now = time.time()
        for i in chunk:
            sent[str(i)] = now
        answer = sqs.send_message_batch(QueueUrl=queue, Entries=entries)
        if answer.get("Failed"):
            raise RuntimeError(f"SendMessageBatch failed: {answer['Failed']}")


def queue_depth(sqs: Any, queue: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


class SqsQueues:
    """The bench's queue operations on SQS (LocalStack or moto)."""

    kind = "sqs"

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.sqs = boto3.client("sqs", region_name=REGION, endpoint_url=endpoint,
                                aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip

    def create(self, name: str) -> tuple[str, str]:
        return make_queues(self.sqs, name)

    def send(self, queue: str, ids: list[int], sent: dict[str, float], threads: int = 1) -> None:
        send_ids(self.sqs, queue, ids, sent, threads)

    def depth(self, queue: str) -> int:
        return queue_depth(self.sqs, queue)

    def queue_toml(self, queue: str, dlq: str) -> str:
        return (
            f'url = "{queue}"\ndlq_url = "{dlq}"\nendpoint_url = "{self.endpoint}"\nregion = "{REGION}"\n'
            "wait_time_seconds = 1\nvisibility_timeout = 60"
        )

    def simple_command(self, queue: str, base: str, concurrency: int) -> list[str]:
        return [sys.executable, "-m", "bench.simple_loop", "--queue-url", queue, "--endpoint-url", self.endpoint,
                "--base-url", base, "--concurrency", str(concurrency)]  # fmt: skip

    def floor_command(self, queue: str) -> list[str]:
        return [sys.executable, "-m", "bench.floor", "--queue-url", queue, "--endpoint-url", self.endpoint]

    def close(self) -> None:
        """Nothing to close: boto3's client holds no connection the bench must end."""


class StompQueues:
    """The bench's queue operations on ActiveMQ (STOMP): the broker creates queues on first use.

    One STOMP connection, on an event loop of its own in a thread, serves every call (the bench itself is
    synchronous). A queue's depth comes from the broker's statistics plugin (``scripts/activemq.sh`` enables it):
    a request to ``ActiveMQ.Statistics.Destination.<queue>`` answered on a temporary queue, as JSON.
    """

    kind = "activemq"

    def __init__(self, broker: str) -> None:
        self.broker = broker.rstrip("/")
        parsed = urlparse(self.broker)
        self.server = stompman.ConnectionParameters(parsed.hostname or "127.0.0.1", parsed.port or 61613, "", "")
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="bench-stomp", daemon=True).start()
        self._exit = contextlib.AsyncExitStack()
        self._client: stompman.Client | None = None
        self._replies: asyncio.Queue[stompman.MessageFrame] | None = None
        self._reply_to = f"/temp-queue/bench-stats-{uuid.uuid4().hex}"

    def _call(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=120)

    async def _connected(self) -> stompman.Client:
        if self._client is None:
            client = stompman.Client([self.server], no_message_restart_interval=None)
            self._client = await self._exit.enter_async_context(client)
            replies: asyncio.Queue[stompman.MessageFrame] = asyncio.Queue()
            self._replies = replies
            subscription = await self._client.subscribe(
                self._reply_to,
                replies.put,
                ack="auto",
                headers={"transformation": "jms-map-json"},
                on_suppressed_exception=lambda error, frame: None,
                receipt_timeout=10,
            )
            # The client waits for its subscriptions to end before it disconnects.
            self._exit.push_async_callback(subscription.unsubscribe)
        return self._client

    def create(self, name: str) -> tuple[str, str]:
        queue, dlq = f"{self.broker}/queue/{name}", f"{self.broker}/queue/{name}-dlq"

        async def touch() -> None:
            # A queue exists once something used it: the statistics plugin answers only for existing queues.
            client = await self._connected()
            for url in (queue, dlq):
                subscription = await client.subscribe(
                    urlparse(url).path, _ignore, ack="auto", on_suppressed_exception=lambda error, frame: None,
                    receipt_timeout=10,
                )  # fmt: skip
                await subscription.unsubscribe()

        self._call(touch())
        return queue, dlq

    def send(self, queue: str, ids: list[int], sent: dict[str, float], threads: int = 1) -> None:
        self._call(self._send(urlparse(queue).path, ids, sent))

    async def _send(self, destination: str, ids: list[int], sent: dict[str, float]) -> None:
        client = await self._connected()
        for index, element_id in enumerate(ids):
            sent[str(element_id)] = time.time()
            # Persistent, like Kordiam's; a receipt on the last one confirms the broker holds them all.
            await client.send(json.dumps({"id": element_id}).encode(), destination,
                              headers={"persistent": "true"},
                              receipt_timeout=30 if index == len(ids) - 1 else None)  # fmt: skip

    def depth(self, queue: str) -> int:
        """Messages on the queue not yet acknowledged (delivered or not): the broker's ``size``."""
        return self._call(self._depth(urlparse(queue).path.removeprefix("/queue/")))

    async def _depth(self, name: str) -> int:
        client = await self._connected()
        assert self._replies is not None
        while not self._replies.empty():  # a late answer to an earlier request
            self._replies.get_nowait()
        await client.send(b"", f"/queue/ActiveMQ.Statistics.Destination.{name}", headers={"reply-to": self._reply_to})
        async with asyncio.timeout(10):
            while True:
                frame = await self._replies.get()
                entries = json.loads(frame.body)["map"]["entry"]
                # Entries are {"string": key, "long": value} or {"string": [key, value]}.
                stats = {e["string"] if isinstance(e["string"], str) else e["string"][0]: e for e in entries}
                destination = stats["destinationName"]["string"][1]
                if destination == f"queue://{name}":
                    return int(stats["size"]["long"])

    def queue_toml(self, queue: str, dlq: str) -> str:
        return f'url = "{queue}"\ndlq_url = "{dlq}"'

    def simple_command(self, queue: str, base: str, concurrency: int) -> list[str]:
        return [sys.executable, "-m", "bench.stomp_loop", "--queue-url", queue, "--base-url", base,
                "--concurrency", str(concurrency)]  # fmt: skip

    def floor_command(self, queue: str) -> list[str]:
        return [sys.executable, "-m", "bench.floor", "--queue-url", queue]

    def close(self) -> None:
        if self._client is not None:
            self._call(self._exit.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)


async def _ignore(frame: stompman.MessageFrame) -> None:
    """A handler for a subscription that exists only to make its queue exist."""


Queues = SqsQueues | StompQueues


def bridge_command(
    config_dir: Path,
    queue_toml: str,
    base: str,
    concurrency: int,
    log_level: str,
    clock_skew_seconds: float = DEFAULT_CLOCK_SKEW_SECONDS,
) -> list[str]:
    config = config_dir / "bridge.toml"
    config.write_text(
        f"""
[queue]
{queue_toml}
concurrency = {concurrency}
shutdown_timeout = 5
clock_skew_seconds = {clock_skew_seconds}

[kordiam]
base_url = "{base}"
client_id = "bench"

[state]
url = "sqlite:///{config_dir}/state.db"

[[channels]]
name = "cms"
type = "kordiam-webhook"
platforms = [99003]
url = "{base}"
auth = {{ type = "headers", headers = {{ X-Bench = "bench-header" }} }}

[feedback]
enabled = true
link_element = false
publish_when_live = false

[ops]
host = "127.0.0.1"
port = 0
log_level = "{log_level}"
"""
    )
    return [sys.executable, "-m", "bridge", "run", "--config", str(config)]


# The bridge's diagnostic variants (bench.diagnostics): the real worker with one part swapped out.
DIAGNOSTIC_IMPLS = {f"bridge-{variant}": variant for variant in diagnostics.VARIANTS}
IMPLS = ("bridge", "simple", *DIAGNOSTIC_IMPLS)


def worker_command(
    impl: str,
    run_dir: Path,
    queues: Queues,
    queue: str,
    dlq: str,
    base: str,
    concurrency: int,
    log_level: str,
    clock_skew_seconds: float = DEFAULT_CLOCK_SKEW_SECONDS,
) -> list[str]:
    if impl == "simple":
        return queues.simple_command(queue, base, concurrency)
    return bridge_command(run_dir, queues.queue_toml(queue, dlq), base, concurrency, log_level, clock_skew_seconds)


def worker_env(impl: str = "bridge") -> dict[str, str]:
    env = {
        **os.environ,
        "BRIDGE_KORDIAM__CLIENT_SECRET": "bench-secret",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }
    variant = DIAGNOSTIC_IMPLS.get(impl)
    if variant is not None:  # its sitecustomize installs the variant as the worker's interpreter starts
        folder = Path(diagnostics.__file__).parent
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), str(ROOT), os.environ.get("PYTHONPATH")]))
        env["BENCH_DIAGNOSTIC"] = variant
    return env


def check_variant(impl: str, log: Path) -> None:
    """Refuse to measure a diagnostic impl whose variant did not install: it would pass for the bridge."""
    variant = DIAGNOSTIC_IMPLS.get(impl)
    if variant is not None and f"{diagnostics.MARKER} {variant}" not in log.read_text(errors="replace"):
        raise RuntimeError(f"{impl}: the diagnostic variant did not install in the worker, see {log}")


def run_one(
    impl: str,
    concurrency: int,
    n: int,
    offset: int,
    queues: Queues,
    stubs: Stubs,
    workdir: Path,
    log_level: str,
    timeout: float,
    round_: int = 1,
) -> dict[str, Any]:
    run_dir = workdir / (f"{impl}-{concurrency}" if round_ == 1 else f"{impl}-{concurrency}-r{round_}")
    run_dir.mkdir(parents=True, exist_ok=True)
    queue, dlq = queues.create(f"bench-{impl}-{concurrency}-{offset}")
    stubs.reset()
    command = worker_command(impl, run_dir, queues, queue, dlq, stubs.base, concurrency, log_level)
    log = run_dir / "worker.log"
    process = subprocess.Popen(command, cwd=ROOT, env=worker_env(impl), stdout=log.open("w"), stderr=subprocess.STDOUT)
    worker = psutil.Process(process.pid)
    sent: dict[str, float] = {}
    try:
        # Warm-up: one message through the whole path, so start-up is not measured.
        queues.send(queue, [offset], {})

        def wait(condition: Callable[[dict[str, Any]], bool], what: str, limit: float) -> dict[str, Any]:
            deadline = time.monotonic() + limit
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{impl} exited with {process.returncode} {what}, see {log}")
                stats = stubs.stats()
                if condition(stats):
                    return stats
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{impl} at C={concurrency}: timed out {what} ({stats['counts']}), see {log}")
                time.sleep(0.1)

        wait(lambda s: str(offset) in s["arrivals"] and queues.depth(queue) == 0, "warming up", 60)
        check_variant(impl, log)
        times_before = worker.cpu_times()
        cpu_before = times_before.user + times_before.system
        idle_before, total_before = cpu_idle_total()
        started = time.time()
        ids = list(range(offset + 1, offset + 1 + n))
        queues.send(queue, ids, sent, threads=LOADER_THREADS)
        loaded = time.time()
        wanted = set(sent)
        stats = wait(lambda s: wanted <= s["arrivals"].keys(), "waiting for the channel writes", timeout)
        deadline = time.monotonic() + 60
        while queues.depth(queue) and time.monotonic() < deadline:
            time.sleep(0.1)
        finished = time.time()
        times_after = worker.cpu_times()
        cpu_after = times_after.user + times_after.system
        idle_after, total_after = cpu_idle_total()
        rss = peak_rss_mb(process.pid)
        left = queues.depth(queue)
        calls = stubs.stats()["counts"]  # after the queue drained: every PATCH is in
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    arrivals = {k: v for k, v in stats["arrivals"].items() if k in wanted}
    latencies = [(arrivals[k] - sent[k]) * 1000 for k in wanted]
    # From the worker's first GET of the element to the channel write: the worker's own path, without queue wait.
    work = [(arrivals[k] - stats["fetched"][k]) * 1000 for k in wanted if k in stats["fetched"]]
    span = max(arrivals.values()) - started
    return {
        "impl": impl,
        "concurrency": concurrency,
        "messages": n,
        "round": round_,
        "processed": len(arrivals),
        "left_in_queue": left,
        "msg_per_s": round(n / span, 1),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "work_p50_ms": round(percentile(work, 50), 1),
        "work_p99_ms": round(percentile(work, 99), 1),
        "cpu_s_per_1000": round((cpu_after - cpu_before) / n * 1000, 3),
        # The split says where a gap is: the interpreter's own work (user) or system calls (system).
        "cpu_user_ms_per_msg": round((times_after.user - times_before.user) / n * 1000, 3),
        "cpu_system_ms_per_msg": round((times_after.system - times_before.system) / n * 1000, 3),
        "peak_rss_mb": round(rss, 1),
        "machine_idle_pct": round(100 * (idle_after - idle_before) / max(1.0, total_after - total_before), 1),
        "worker_cpu_pct": round(100 * (cpu_after - cpu_before) / max(0.001, finished - started), 1),
        "elapsed_s": round(finished - started, 2),
        "load_s": round(loaded - started, 2),
        "stub_calls": calls,
    }


def messages_for(n: int, concurrency: int) -> int:
    """Fewer messages at low concurrency so the bench stays short (C=1 runs at about 11 msg/s)."""
    if concurrency <= 1:
        return min(n, 200)
    if concurrency <= 8:
        return min(n, 1000)
    return n


def loop_runs(results: list[dict[str, Any]]) -> dict[tuple[int, int], dict[str, Any]]:
    """The simple loop's run of each (concurrency, round): the one every other run of that round is compared with."""
    return {(row["concurrency"], row["round"]): row for row in results if row["impl"] == "simple"}


def over_loop(row: dict[str, Any], loops: dict[tuple[int, int], dict[str, Any]], field: str) -> float | None:
    """``row[field]`` over the loop's in the same concurrency and round; None without such a loop run (or a zero)."""
    base = loops.get((row["concurrency"], row["round"]))
    if base is None or not base[field]:
        return None
    return float(row[field] / base[field])


def paired_cpu_ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each impl's CPU per message over the simple loop's, paired by round: the median and range over the rounds.

    The machine is shared, and its speed drifts over minutes by more than the effects being compared; a ratio of
    two runs made seconds apart (one round) cancels most of the drift, and the median of several rounds the rest.
    """
    loops = loop_runs(results)
    paired: dict[tuple[str, int], list[float]] = {}
    for row in results:
        if row["impl"] != "simple" and (ratio := over_loop(row, loops, "cpu_s_per_1000")) is not None:
            paired.setdefault((row["impl"], row["concurrency"]), []).append(ratio)
    return [
        {
            "impl": impl,
            "concurrency": concurrency,
            "rounds": len(ratios),
            "median": round(statistics.median(ratios), 3),
            "min": round(min(ratios), 3),
            "max": round(max(ratios), 3),
        }
        for (impl, concurrency), ratios in sorted(paired.items(), key=lambda item: (item[0][1], item[0][0]))
    ]


def plot(results: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for impl, style, color in (("bridge", "o-", "tab:blue"), ("simple", "s--", "tab:orange")):
        rows = sorted((r for r in results if r["impl"] == impl), key=lambda r: r["concurrency"])
        xs = [r["concurrency"] for r in rows]
        left.plot(xs, [r["msg_per_s"] for r in rows], style, color=color, label=impl)
        right.plot(xs, [r["p99_ms"] for r in rows], style, color=color, label=f"{impl}: send -> channel")
        if all("work_p99_ms" in r for r in rows):
            work = [r["work_p99_ms"] for r in rows]
            right.plot(xs, work, style[0] + ":", color=color, label=f"{impl}: GET -> channel")
    right.set_yscale("log")
    for axis, label in ((left, "messages / s"), (right, "p99 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrency")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def limited_by(row: dict[str, Any], seconds_per_message: float) -> str:
    """Which limit a run met: the stubs' latency, the worker's one core, the machine's CPU, or the emulator."""
    ceiling = row["concurrency"] / seconds_per_message
    if row["msg_per_s"] >= LATENCY_BOUND * ceiling:
        return "latency"
    if row["worker_cpu_pct"] >= CPU_BOUND_PCT:
        return "worker CPU"
    if row["machine_idle_pct"] <= MACHINE_BOUND_IDLE_PCT:
        return "machine CPU"
    return "emulator"


def print_table(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="kordiam-bridge vs the simplest aiohttp loop (latency: send -> channel write)")
    columns = {
        "impl": "impl",
        "concurrency": "C",
        "messages": "n",
        "msg_per_s": "msg/s",
        "ratio_to_simple": "x simple",
        "cpu_ratio_to_simple": "CPU x simple",
        "p50_ms": "p50 ms",
        "p99_ms": "p99 ms",
        "work_p99_ms": "GET>ch p99",
        "cpu_s_per_1000": "CPU ms/msg",
        "worker_cpu_pct": "worker %",
        "peak_rss_mb": "RSS MB",
        "machine_idle_pct": "idle %",
        "limited_by": "limit",
    }
    if any(row["round"] > 1 for row in results):
        columns = {"round": "round", **columns}
    for header in columns.values():
        table.add_column(header, justify="right", no_wrap=True)
    for row in results:
        table.add_row(*("" if row.get(key) is None else str(row[key]) for key in columns))
    Console(width=max(130, Console().width)).print(table)


def print_cpu_ratios(ratios: list[dict[str, Any]]) -> None:
    for row in ratios:
        spread = "" if row["rounds"] == 1 else f" (min {row['min']:.2f}, max {row['max']:.2f})"
        print(
            f"bench: CPU per message, {row['impl']} / simple at C={row['concurrency']}: {row['median']:.2f}x, "
            f"median of {row['rounds']} round{'s' if row['rounds'] > 1 else ''}{spread}",
            file=sys.stderr,
        )


def accepts_connections(url: str) -> bool:
    """Whether a TCP connect to the URL's host and port succeeds (stomp:// defaults to 61613)."""
    parsed = urlparse(url)
    default_port = {"https": 443, "stomp": 61613}.get(parsed.scheme, 80)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def write_report(report: dict[str, Any], results: list[dict[str, Any]], args: argparse.Namespace, today: str) -> None:
    """Write the run's JSON to ``args.out``, and its chart when matplotlib is there (``make bench`` installs it)."""
    args.out.mkdir(parents=True, exist_ok=True)
    stem = today if args.queue == "sqs" else f"{today}-activemq"
    written = args.out / f"{stem}.json"
    written.write_text(json.dumps(report, indent=2) + "\n")
    if importlib.util.find_spec("matplotlib") is None:  # the figures are the result; the chart is extra
        print(f"bench: wrote {written}; no chart: matplotlib is missing (make bench installs it)", file=sys.stderr)
        return
    machine = report["machine"]
    queue_name = f"SQS {args.sqs}" if args.queue == "sqs" else "ActiveMQ (STOMP)"
    title = (
        f"{today}: {machine['cores']} cores, {machine['cpu_model']}, Python {machine['python']}, "
        f"{queue_name}, Kordiam {args.kordiam_latency_ms:g} ms, channel {args.channel_latency_ms:g} ms"
    )
    plot([row for row in results if row["round"] == 1], args.out / f"{stem}.png", title)
    print(f"bench: wrote {written} and .png", file=sys.stderr)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--concurrency", default=None, help="default: 1,8,32,128 (steady), 32 (backlog)")
    parser.add_argument("--workload", choices=["steady", "backlog"], default="steady")
    parser.add_argument("--backlog-notifications", type=int, default=3000)
    parser.add_argument("--backlog-elements", type=int, default=300)
    parser.add_argument("--kordiam-latency-ms", type=float, default=20)
    parser.add_argument("--channel-latency-ms", type=float, default=50)
    parser.add_argument("--queue", choices=["sqs", "activemq"], default="sqs")
    parser.add_argument("--broker", default="stomp://127.0.0.1:61613", help="ActiveMQ for --queue activemq")
    parser.add_argument("--sqs", choices=["localstack", "moto"], default="localstack")
    parser.add_argument("--endpoint", default=None, help="SQS endpoint (default: LocalStack, or an embedded moto)")
    parser.add_argument(
        "--impl",
        default="bridge,simple",
        help=f"comma-separated, of {', '.join(IMPLS)}; the bridge-* variants show where the bridge's CPU goes "
        "(bench/diagnostics/patches.py)",
    )
    parser.add_argument("--log-level", default="info", help="the bridge's ops.log_level (production: info)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--ingress-requests", type=int, default=3000, help="webhook calls per ingress receiver (bench.ingress); 0: none"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every impl this often per concurrency, interleaved (the order rotates each round); the CPU ratios "
        "to the simple loop are paired by round and reported as their median",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="20 messages (backlog: 60 over 6 elements, a 1 s clock-skew allowance), C=4, 1 ms latencies, moto",
    )
    args = parser.parse_args(argv)
    # The worker's queue.clock_skew_seconds: the backlog waits it out before the worker starts.
    args.clock_skew_seconds = DEFAULT_CLOCK_SKEW_SECONDS
    if args.smoke:
        args.messages, args.concurrency, args.sqs = 20, "4", "moto"
        # The covering rule is the same at any allowance; the smoke run need not wait out the default's 5 s twice.
        args.clock_skew_seconds = SMOKE_CLOCK_SKEW_SECONDS
        args.backlog_notifications, args.backlog_elements = 60, 6
        args.kordiam_latency_ms = args.channel_latency_ms = 1
        args.timeout = 120
        args.ingress_requests = 0  # tests/bench/test_smoke.py runs bench.ingress's own smoke
    args.concurrency = args.concurrency or ("32" if args.workload == "backlog" else "1,8,32,128")
    try:
        concurrencies = [int(c) for c in args.concurrency.split(",")]
    except ValueError:
        concurrencies = []
    if not concurrencies or min(concurrencies) < 1:
        parser.error(f"--concurrency: expected positive whole numbers separated by commas, got {args.concurrency!r}")
    if not 1 <= args.rounds <= MAX_ROUNDS:
        parser.error(f"--rounds: expected a whole number from 1 to {MAX_ROUNDS}, got {args.rounds}")
    if not args.smoke and args.out.exists() and not args.out.is_dir():
        parser.error(f"--out: {args.out} exists and is not a folder")
    impls = args.impl.split(",")
    unknown = [impl for impl in impls if impl not in IMPLS]
    if unknown:
        parser.error(f"--impl: unknown {', '.join(map(repr, unknown))} (one or more of {', '.join(IMPLS)})")
    if args.workload == "backlog" and not set(impls) <= {"bridge", "simple"}:
        parser.error("--impl: the backlog workload runs bridge and simple only")
    if args.workload == "backlog" and args.rounds > 1:
        parser.error("--rounds: the backlog workload runs once (its figures are counts, not CPU ratios)")

    moto_server = None
    endpoint = args.endpoint
    if endpoint is None and args.sqs == "moto" and args.queue == "sqs":
        sys.path.insert(0, str(ROOT))
        from tests.support import start_moto

        moto_server, endpoint = start_moto()
    endpoint = endpoint or LOCALSTACK
    if moto_server is None:  # an unreachable queue would fail the first run with a botocore or STOMP traceback
        if args.queue == "activemq" and not accepts_connections(args.broker):
            parser.error(f"--broker: nothing answers at {args.broker} (scripts/activemq.sh start runs one)")
        if args.queue == "sqs" and not accepts_connections(endpoint):
            parser.error(f"--endpoint: nothing answers at {endpoint} (scripts/localstack.sh start, or --sqs moto)")
    queues: Queues = StompQueues(args.broker) if args.queue == "activemq" else SqsQueues(endpoint)
    workdir = Path(tempfile.mkdtemp(prefix="kordiam-bench-"))
    stubs = Stubs(args.kordiam_latency_ms, args.channel_latency_ms, workdir / "stubs.log")
    results: list[dict[str, Any]] = []
    ingress_results: list[dict[str, Any]] = []
    run_offset = int(time.time()) % 1000 * 10_000_000
    if args.workload == "backlog":
        try:
            return run_backlog(args, queues, stubs, workdir, concurrencies[0], run_offset, endpoint)
        finally:
            stubs.stop()
            queues.close()
            if moto_server is not None:
                moto_server.stop()
    try:
        runs = 0
        for concurrency in concurrencies:
            n = messages_for(args.messages, concurrency)
            for round_ in range(1, args.rounds + 1):
                turn = (round_ - 1) % len(impls)  # each impl goes first in some round: no order favours one
                for impl in impls[turn:] + impls[:turn]:
                    runs += 1
                    offset = run_offset + runs * 100_000
                    which = f" round {round_}" if args.rounds > 1 else ""
                    print(f"bench: {impl} C={concurrency}{which} n={n} …", file=sys.stderr, flush=True)
                    result = run_one(impl, concurrency, n, offset, queues, stubs, workdir, args.log_level,
                                     args.timeout, round_)  # fmt: skip
                    print(f"bench:   {result['msg_per_s']} msg/s, p99 {result['p99_ms']} ms", file=sys.stderr,
                          flush=True)  # fmt: skip
                    results.append(result)
        if isinstance(queues, SqsQueues) and args.ingress_requests > 0:
            from bench import ingress  # it builds on this module

            ingress_results = ingress.measure(queues, workdir, args.ingress_requests, ingress.CONCURRENCY,
                                              run_offset + 50_000_000, args.log_level)  # fmt: skip
    finally:
        stubs.stop()
        queues.close()
        if moto_server is not None:
            moto_server.stop()

    seconds_per_message = (2 * args.kordiam_latency_ms + args.channel_latency_ms) / 1000
    loops = loop_runs(results)
    for row in results:
        throughput, cpu = over_loop(row, loops, "msg_per_s"), over_loop(row, loops, "cpu_s_per_1000")
        row["ratio_to_simple"] = round(throughput, 3) if throughput is not None else None
        row["cpu_ratio_to_simple"] = round(cpu, 3) if cpu is not None else None
        row["limited_by"] = limited_by(row, seconds_per_message)
    cpu_ratios = paired_cpu_ratios(results)
    today = dt.date.today().isoformat()
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "workload": {
            "queue": args.queue,
            "sqs": args.sqs if args.queue == "sqs" else None,
            "endpoint": endpoint if args.queue == "sqs" else args.broker,
            "messages_requested": args.messages,
            "kordiam_latency_ms": args.kordiam_latency_ms,
            "channel_latency_ms": args.channel_latency_ms,
            "bridge_log_level": args.log_level,
            "calls_per_message": "GET element, POST channel, PATCH publication (link_element = false); delete batched",
            "latency": "channel arrival - client-side send time (stands in for SentTimestamp; same clock)",
            "work_latency": "channel arrival - the stub's first GET of the element (the worker's own path)",
            "throughput": "n / (last channel arrival - first send), after a warm-up message; load_s = time to send "
            f"all n ({LOADER_THREADS} threads): when it is close to elapsed_s the loader set the pace",
            "limited_by": f"latency: >= {LATENCY_BOUND:g} x C / (2 x Kordiam + channel latency); worker CPU: the "
            f"worker used >= {CPU_BOUND_PCT:g} % of one core; machine CPU: <= {MACHINE_BOUND_IDLE_PCT:g} % idle; "
            "emulator: none of these (SQS calls set the pace)",
        },
        "results": results,
        "cpu_ratios": cpu_ratios,
        "workdir": str(workdir),
    }
    print_table(results)
    print_cpu_ratios(cpu_ratios)
    if ingress_results:
        from bench.ingress import print_table as print_ingress_table

        report["ingress"] = ingress_results
        print_ingress_table(ingress_results)
    if not args.smoke:
        write_report(report, results, args, today)
    return report


def run_backlog(
    args: argparse.Namespace,
    queues: Queues,
    stubs: Stubs,
    workdir: Path,
    concurrency: int,
    run_offset: int,
    endpoint: str,
) -> dict[str, Any]:
    """The backlog workload (``bench.backlog``) for each implementation and the queue's floor, then its targets."""
    rows = []
    for index, impl in enumerate(args.impl.split(",")):
        plan = backlog.Backlog(args.backlog_notifications, args.backlog_elements, run_offset + (index + 1) * 100_000)
        run_dir = workdir / f"backlog-{impl}-{concurrency}"
        run_dir.mkdir(parents=True, exist_ok=True)
        queue, dlq = queues.create(f"backlog-{impl}-{concurrency}-{plan.offset}")
        command = worker_command(
            impl, run_dir, queues, queue, dlq, stubs.base, concurrency, args.log_level, args.clock_skew_seconds
        )
        print(f"bench: backlog {impl} C={concurrency} …", file=sys.stderr, flush=True)
        row = backlog.drain(
            impl, command, worker_env(impl), queues, queue, dlq, stubs, plan, run_dir, args.timeout, LOADER_THREADS,
            args.clock_skew_seconds,
        )  # fmt: skip
        print(f"bench:   {row['element_gets']} GETs, drained in {row['drain_s']} s", file=sys.stderr, flush=True)
        rows.append({"concurrency": concurrency, **row})
    plan = backlog.Backlog(args.backlog_notifications, args.backlog_elements, run_offset + 900_000)
    queue, _ = queues.create(f"backlog-floor-{plan.offset}")
    print("bench: backlog queue floor …", file=sys.stderr, flush=True)
    queue_floor = backlog.floor(queues.floor_command(queue), queues, queue, plan, LOADER_THREADS, args.timeout)
    print(f"bench:   drained in {queue_floor['drain_s']} s", file=sys.stderr, flush=True)
    checks = backlog.targets(rows, queue_floor)
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "workload": {
            "kind": "backlog",
            "queue": args.queue,
            "clock_skew_seconds": args.clock_skew_seconds,
            "sqs": args.sqs if args.queue == "sqs" else None,
            "endpoint": endpoint if args.queue == "sqs" else args.broker,
            "kordiam_latency_ms": args.kordiam_latency_ms,
            "channel_latency_ms": args.channel_latency_ms,
            "bridge_log_level": args.log_level,
            "what": backlog.__doc__,
        },
        "results": rows,
        "floor": queue_floor,
        "targets": checks,
        "workdir": str(workdir),
    }
    backlog.print_report(rows, checks, queue_floor)
    if not args.smoke:
        args.out.mkdir(parents=True, exist_ok=True)
        suffix = "backlog" if args.queue == "sqs" else "backlog-activemq"
        path = args.out / f"{dt.date.today().isoformat()}-{suffix}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"bench: wrote {path}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()

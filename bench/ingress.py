"""`make bench`, the webhook ingress: calls per second and answer times at C concurrent clients, local queue.

    python -m bench.ingress [--endpoint http://127.0.0.1:4566] [--requests 3000] [--concurrency 32]
                            [--sqs localstack|moto] [--smoke]

``bench.run`` calls ``measure`` after the worker's runs on SQS. Per receiver (Global Export ``POST /element`` with
a bearer token; Platform integration ``POST /publication`` with the token from its ``/oauth2/token``):
1. start ``kordiam-bridge ingress`` as a subprocess on a fresh queue (SQLite state, log level info, rate limit
   out of the way: every client here has the same address); one warm-up call, so start-up is not measured;
2. C clients (one kept-alive HTTP/1.1 connection each, as Kordiam's senders hold them; a lean client,
   see ``KeepAliveConnection``) send n calls in all, a ~3 KB element with its own id each;
   an answer time runs from the request's send to its answer's last byte;
3. read the ingress's CPU (user+sys, psutil), its mean enqueue time (``bridge_ingress_enqueue_seconds``) and the
   CPU left on the machine (/proc/stat idle); check the queue holds one message for every 2xx answer (the
   durability rule: answer only once it is held).

The target: p99 answer time under 50 ms at C=32 (Kordiam's retry window is seconds; a slow answer ties up its
sender). The load generator shares the machine's cores with the ingress and the queue, so its figures are a bound.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import psutil  # type: ignore[import-untyped]

from bench.run import LOCALSTACK, REGION, ROOT, SqsQueues, cpu_idle_total, free_port, peak_rss_mb, percentile
from bench.stubs import ELEMENT_TEMPLATE

P99_TARGET_MS = 50.0
CONCURRENCY = 32
TOKEN = "bench-ingress-token"
API_USER = "bench-api-user"
API_SECRET = "bench-api-secret"
RECEIVERS = ("global_export", "platform")
# The figures every ingress run reports (the smoke test checks them).
FIELDS = (
    "receiver",
    "route",
    "concurrency",
    "requests",
    "answered_2xx",
    "other_statuses",
    "req_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "enqueue_mean_ms",
    "cpu_ms_per_request",
    "ingress_cpu_pct",
    "peak_rss_mb",
    "machine_idle_pct",
    "queued",
    "p99_target_met",
)


def ingress_config(directory: Path, queue_toml: str, port: int, log_level: str) -> Path:
    config = directory / "bridge.toml"
    config.write_text(
        f"""
[queue]
{queue_toml}

[state]
url = "sqlite:///{directory}/state.db"

[[channels]]
name = "cms"
type = "folder"
platforms = [99003]
path = "{directory}/cms"

[ingress]
host = "127.0.0.1"
port = {port}
rate_limit_per_second = 100000
rate_limit_burst = 1000000
log_level = "{log_level}"

[ingress.global_export]
path = "/kordiam"
auth = {{ type = "bearer" }}

[ingress.platform]
path = "/platform"
api_user = "{API_USER}"
"""
    )
    return config


def global_export_body(element_id: int) -> bytes:
    body = copy.deepcopy(ELEMENT_TEMPLATE)
    body["id"] = element_id
    return json.dumps(body).encode()


def platform_body(element_id: int) -> bytes:
    """Seed 002's shape: the element with the one publication the call is about."""
    body = copy.deepcopy(ELEMENT_TEMPLATE)
    body["id"] = element_id
    body["publication"] = body.pop("publications")[0]
    body["publication"]["id"] = 10_000_000 + element_id
    return json.dumps(body).encode()


class IngressProcess:
    """``python -m bridge ingress`` on a port of its own, its output in ``log``."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        env = {
            **os.environ,
            "BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__TOKEN": TOKEN,
            "BRIDGE_INGRESS__PLATFORM__API_SECRET": API_SECRET,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
        }
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        command = [sys.executable, "-m", "bridge", "ingress", "--config", str(config)]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        self.ps = psutil.Process(self.process.pid)

    async def ready(self, http: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the ingress exited with {self.process.returncode}, see {self.log}")
            try:
                async with http.get(self.base + "/readyz") as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the ingress did not become ready, see {self.log}")
            await asyncio.sleep(0.1)

    def cpu_seconds(self) -> float:
        return float(sum(self.ps.cpu_times()[:2]))

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def enqueue_seconds(http: aiohttp.ClientSession, base: str) -> tuple[float, float]:
    """The ingress's ``bridge_ingress_enqueue_seconds`` sum and count."""
    async with http.get(base + "/metrics") as answer:
        text = await answer.text()
    values = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        for key in values:
            if line.startswith(f"bridge_ingress_enqueue_seconds_{key} "):
                values[key] = float(line.split()[1])
    return values["sum"], values["count"]


async def platform_token(http: aiohttp.ClientSession, base: str) -> str:
    basic = base64.b64encode(f"{API_USER}:{API_SECRET}".encode()).decode()
    async with http.post(base + "/platform/oauth2/token", headers={"Authorization": f"Basic {basic}"}) as answer:
        answer.raise_for_status()
        return str((await answer.json())["access_token"])


class KeepAliveConnection:
    """One kept-alive HTTP/1.1 connection that sends pre-encoded requests and reads each answer's status and body.

    The load generator shares the machine's two cores with the ingress and the queue: aiohttp's client spent about
    0.4 ms of CPU per call here (the bench's CPU less the ingress's), more than half what the ingress spent, so the
    figures measured the generator too. This client does only what a sender must (write the request, read the
    status line, the headers and a ``Content-Length`` body): under 0.1 ms per call. Kordiam's senders, on their own
    machines, cost the ingress nothing.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(self, request: bytes) -> int:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(request)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the ingress closed the connection")
        status = int(status_line.split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"transfer-encoding":
                raise ValueError(f"unexpected Transfer-Encoding: {value.strip().decode()}")
        await self.reader.readexactly(length)
        if close:
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def encode_request(method: str, host: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def load(
    base: str, receiver: str, ids: list[int], concurrency: int, headers: dict[str, str]
) -> tuple[list[float], Counter[int]]:
    """``len(ids)`` calls from ``concurrency`` clients, each on one kept-alive connection; answer times in ms."""
    route = "/kordiam/element" if receiver == "global_export" else "/platform/publication"
    make_body = global_export_body if receiver == "global_export" else platform_body
    url = urlparse(base)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    # Built before the clock starts.
    requests = [encode_request("POST", url.netloc, route, headers, make_body(element_id)) for element_id in ids]
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    next_index = iter(range(len(requests)))

    async def client() -> None:
        connection = KeepAliveConnection(host, port)
        try:
            for index in next_index:
                started = time.perf_counter()
                status = await connection.call(requests[index])
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[status] += 1
        finally:
            await connection.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, statuses


async def measure_receiver(
    receiver: str, queues: SqsQueues, workdir: Path, n: int, concurrency: int, offset: int, log_level: str
) -> dict[str, Any]:
    run_dir = workdir / f"ingress-{receiver}-{concurrency}"
    run_dir.mkdir(parents=True, exist_ok=True)
    queue, dlq = queues.create(f"bench-ingress-{receiver}-{concurrency}-{offset}")
    port = free_port()
    ingress = IngressProcess(ingress_config(run_dir, queues.queue_toml(queue, dlq), port, log_level), port,
                             run_dir / "ingress.log")  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:
            await ingress.ready(http)
            if receiver == "global_export":
                headers = {"Authorization": f"Bearer {TOKEN}"}
            else:
                headers = {"Authorization": f"Bearer {await platform_token(http, ingress.base)}"}
            headers["Content-Type"] = "application/json"
            warm_up, _ = await load(ingress.base, receiver, [offset], 1, headers)
            enqueue_sum_before, enqueue_count_before = await enqueue_seconds(http, ingress.base)
            cpu_before = ingress.cpu_seconds()
            idle_before, total_before = cpu_idle_total()
            started = time.perf_counter()
            latencies, statuses = await load(
                ingress.base, receiver, list(range(offset + 1, offset + 1 + n)), concurrency, headers
            )
            elapsed = time.perf_counter() - started
            cpu = ingress.cpu_seconds() - cpu_before
            idle_after, total_after = cpu_idle_total()
            enqueue_sum, enqueue_count = await enqueue_seconds(http, ingress.base)
        rss = peak_rss_mb(ingress.process.pid)
    finally:
        ingress.stop()
    # The warm-up call is on the queue too. Then the queues go: thousands of messages left in the emulator slow
    # every later run down.
    queued = queues.depth(queue) - len(warm_up)
    for url in (queue, dlq):
        queues.sqs.delete_queue(QueueUrl=url)
    answered = sum(count for status, count in statuses.items() if 200 <= status < 300)
    enqueues = max(1.0, enqueue_count - enqueue_count_before)
    p99 = percentile(latencies, 99)
    return {
        "receiver": receiver,
        "route": "Global Export POST /element" if receiver == "global_export" else "Platform POST /publication",
        "concurrency": concurrency,
        "requests": n,
        "answered_2xx": answered,
        "other_statuses": {str(status): count for status, count in statuses.items() if not 200 <= status < 300},
        "req_per_s": round(n / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "p99_ms": round(p99, 1),
        "max_ms": round(max(latencies), 1),
        "enqueue_mean_ms": round((enqueue_sum - enqueue_sum_before) / enqueues * 1000, 2),
        "cpu_ms_per_request": round(cpu / n * 1000, 3),
        "ingress_cpu_pct": round(100 * cpu / elapsed, 1),
        "peak_rss_mb": round(rss, 1),
        "machine_idle_pct": round(100 * (idle_after - idle_before) / max(1.0, total_after - total_before), 1),
        "queued": queued,
        "p99_target_met": p99 < P99_TARGET_MS,
    }


def measure(
    queues: SqsQueues, workdir: Path, n: int, concurrency: int, offset: int, log_level: str = "info"
) -> list[dict[str, Any]]:
    """One run per receiver; ``offset`` keeps the element ids (and queue names) of runs apart."""
    results = []
    for index, receiver in enumerate(RECEIVERS):
        print(f"bench: ingress {receiver} C={concurrency} n={n} …", file=sys.stderr, flush=True)
        row = asyncio.run(
            measure_receiver(receiver, queues, workdir, n, concurrency, offset + index * 100_000, log_level)
        )
        verdict = "met" if row["p99_target_met"] else "NOT met"
        print(f"bench:   {row['req_per_s']} req/s, p99 {row['p99_ms']} ms (target < {P99_TARGET_MS:g} ms: "
              f"{verdict})", file=sys.stderr, flush=True)  # fmt: skip
        results.append(row)
    return results


def print_table(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"webhook ingress, local queue (answer time: send -> answer; target p99 < {P99_TARGET_MS:g} ms)"
    table = Table(title=title)
    columns = {
        "route": "route",
        "concurrency": "C",
        "requests": "n",
        "req_per_s": "req/s",
        "p50_ms": "p50 ms",
        "p99_ms": "p99 ms",
        "max_ms": "max ms",
        "enqueue_mean_ms": "enq. ms",
        "cpu_ms_per_request": "CPU ms",
        "ingress_cpu_pct": "CPU %",
        "peak_rss_mb": "RSS MB",
        "machine_idle_pct": "idle %",
        "p99_target_met": "p99 < 50",
    }
    for header in columns.values():
        table.add_column(header, justify="right", no_wrap=True)
    for row in results:
        cells = [str(row[key]) for key in columns]
        cells[-1] = "yes" if row["p99_target_met"] else "NO"
        table.add_row(*cells)
    Console(width=max(140, Console().width)).print(table)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m bench.ingress")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--sqs", choices=["localstack", "moto"], default="localstack")
    parser.add_argument("--endpoint", default=None, help="SQS endpoint (default: LocalStack, or an embedded moto)")
    parser.add_argument("--log-level", default="info", help="the ingress's ingress.log_level (production: info)")
    parser.add_argument("--smoke", action="store_true", help="40 calls, C=4, moto")
    args = parser.parse_args(argv)
    if args.smoke:
        args.requests, args.concurrency, args.sqs = 40, 4, "moto"
    moto_server = None
    endpoint = args.endpoint
    if endpoint is None and args.sqs == "moto":
        sys.path.insert(0, str(ROOT))
        from tests.support import start_moto

        moto_server, endpoint = start_moto()
    try:
        workdir = Path(tempfile.mkdtemp(prefix="kordiam-bench-ingress-"))
        offset = int(time.time()) % 1000 * 10_000_000
        results = measure(SqsQueues(endpoint or LOCALSTACK), workdir, args.requests, args.concurrency, offset,
                          args.log_level)  # fmt: skip
    finally:
        if moto_server is not None:
            moto_server.stop()
    print_table(results)
    return results


if __name__ == "__main__":
    main()

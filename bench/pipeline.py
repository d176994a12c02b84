"""The bridge's own CPU per message, without the network.

    python -m bench.pipeline [--messages 4000] [--concurrency 32] [--kordiam-latency-ms 0 --channel-latency-ms 0]
                             [--profile]

Runs what the worker runs for each message (decode the notification, fetch and validate the element, build and
send the Global Export body, record the delivery in the real SQLite store, write the feedback, log the outcome)
with the bench's configuration, but Kordiam and the channel answer in process at once, with the stubs' bodies.
What it reports is the part of a message's cost that only the bridge pays: in `make bench` the worker adds the
network work (three HTTP calls, its share of a receive and a batch delete), which costs what the simple loop's
does. `--profile` prints cProfile's costliest functions (cProfile inflates many small calls; py-spy on this
command gives fairer shares).

With latencies (`make bench` uses 20 and 50 ms) the answers wait that long, as the stubs do: the worker then runs
as it does at C=32 in `make bench`, bound by latency, with its events spread over many passes of the event loop
instead of batched, and it pays more per message (fewer writes share a SQLite commit, more passes and wake-ups).
That regime is measured here without the emulator's noise; each wait costs the event loop a timer, a few µs of
the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import os
import pstats
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from bench.run import REGION, bridge_command
from bench.stubs import PUBLICATION_ID_OFFSET, TOKEN_ANSWER, element
from bridge.config import load_settings
from bridge.http import HttpClient, HttpRequest, HttpResponse
from bridge.ops.heap import settle_after_startup
from bridge.ops.logging import configure_logging
from bridge.pipeline.handler import MessageHandler
from bridge.queue.outcome import Done
from bridge.queue.transport import QueueMessage
from bridge.state import open_state_store
from bridge.worker import build_pipeline

JSON_HEADERS = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"}))
TOKEN = json.dumps(TOKEN_ANSWER).encode()
WARM_UP_MESSAGES = 200


def answering(bodies: dict[int, bytes], *, kordiam_latency: float = 0.0, channel_latency: float = 0.0) -> HttpClient:
    """Kordiam and the channel as the stubs answer them, in process (element bodies made beforehand): at once, or
    after the given latencies in seconds."""

    async def answer(request: HttpRequest) -> HttpResponse:
        path = request.url.path
        latency = channel_latency if request.method == "POST" else kordiam_latency
        if latency:
            await asyncio.sleep(latency)
        if request.method == "GET":
            return HttpResponse(200, JSON_HEADERS, bodies[int(path.rsplit("/", 1)[1])], request, "OK")
        if path.endswith("/auth/token"):
            return HttpResponse(200, JSON_HEADERS, TOKEN, request, "OK")
        if request.method == "POST":  # the channel: the remote id is the element id
            # orjson: this parse is the stub's cost, not the bridge's; json's took ~9 µs of a message's figure.
            remote = orjson.loads(request.content or b"{}")["id"]
            return HttpResponse(200, JSON_HEADERS, b'{"id": "%d"}' % remote, request, "OK")
        return HttpResponse(200, JSON_HEADERS, b"{}", request, "OK")  # the feedback PATCH

    return HttpClient.answering(answer)


def element_bodies(element_ids: Iterable[int]) -> dict[int, bytes]:
    """``bench.stubs.element`` of each id, filled into one made beforehand: a deep copy and a ``json.dumps`` per
    element cost some 530 k instructions each, the bench's own, which a cachegrind difference of two runs' lengths
    would count as the bridge's (a quarter of its figure)."""
    sentinel = 987_654_321
    made = element(sentinel)
    top, rest = made.split(b"%d" % sentinel)
    middle, end = rest.split(b"%d" % (PUBLICATION_ID_OFFSET + sentinel))
    return {i: b"%s%d%s%d%s" % (top, i, middle, PUBLICATION_ID_OFFSET + i, end) for i in element_ids}


async def measure(
    messages: int,
    concurrency: int,
    *,
    profile: bool = False,
    kordiam_latency: float = 0.0,
    channel_latency: float = 0.0,
) -> float:
    """CPU microseconds per message over ``messages`` distinct elements, ``concurrency`` at a time."""
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as folder:
        workdir = Path(folder)
        base = "http://127.0.0.1:9"  # never dialled: every request is answered in process
        queue = f'url = "{base}/000/bench"\ndlq_url = "{base}/000/bench-dlq"\nendpoint_url = "{base}"'
        bridge_command(workdir, queue, base, concurrency, "info")
        kordiam = {"base_url": base, "client_id": "bench", "client_secret": "bench-secret"}
        settings = load_settings(workdir / "bridge.toml", overrides={"kordiam": kordiam})
        warm_up = range(1, WARM_UP_MESSAGES + 1)
        measured = range(WARM_UP_MESSAGES + 1, WARM_UP_MESSAGES + messages + 1)
        bodies = element_bodies([*warm_up, *measured])
        http = answering(bodies, kordiam_latency=kordiam_latency, channel_latency=channel_latency)
        state = await open_state_store(settings.state, default_region=REGION)
        pipeline = build_pipeline(settings, http, state)
        threshold = gc.get_threshold()
        try:
            await _run(pipeline.handler, warm_up, concurrency)
            settle_after_startup()  # as `kordiam-bridge run` does
            profiler = cProfile.Profile() if profile else None
            started = time.process_time()
            if profiler is not None:
                profiler.enable()
            await _run(pipeline.handler, measured, concurrency)
            if profiler is not None:
                profiler.disable()
            cpu = time.process_time() - started
        finally:
            gc.unfreeze()
            gc.set_threshold(*threshold)
            for channel in pipeline.channels:
                await channel.aclose()
            await state.close()
            await http.aclose()
        if profiler is not None:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return cpu / messages * 1e6


async def _run(handler: MessageHandler, element_ids: Iterable[int], concurrency: int) -> None:
    slots = asyncio.Semaphore(concurrency)

    async def one(element_id: int) -> None:
        async with slots:
            message = QueueMessage(
                f"m-{element_id}", f"r-{element_id}", json.dumps({"id": element_id}), {}, 1, time.time(), None
            )
            outcome = await handler(message)
            if not isinstance(outcome, Done):
                raise RuntimeError(f"element {element_id} did not sync: {outcome}")

    await asyncio.gather(*(one(element_id) for element_id in element_ids))


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--kordiam-latency-ms", type=float, default=0.0, help="each Kordiam answer waits this long")
    parser.add_argument("--channel-latency-ms", type=float, default=0.0, help="each channel answer waits this long")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    if min(args.messages, args.concurrency) < 1 or min(args.kordiam_latency_ms, args.channel_latency_ms) < 0:
        parser.error("--messages and --concurrency must be at least 1, latencies at least 0")
    # The worker's log line per message is part of its cost: rendered as in production, written to nowhere.
    configure_logging("info")
    with open(os.devnull, "w") as nowhere, contextlib.redirect_stderr(nowhere):
        per_message = asyncio.run(
            measure(
                args.messages,
                args.concurrency,
                profile=args.profile,
                kordiam_latency=args.kordiam_latency_ms / 1000,
                channel_latency=args.channel_latency_ms / 1000,
            )
        )
    latency = (
        f", latencies {args.kordiam_latency_ms:g}/{args.channel_latency_ms:g} ms"
        if (args.kordiam_latency_ms or args.channel_latency_ms)
        else ""
    )
    print(
        f"bench.pipeline: {per_message:.0f} µs of CPU per message "
        f"({args.messages} messages, C={args.concurrency}{latency})"
    )
    return per_message


if __name__ == "__main__":
    main()

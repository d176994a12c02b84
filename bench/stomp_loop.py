"""The limit on ActiveMQ: the simplest asyncio STOMP loop doing the bridge's per-message work, no framework.

    python -m bench.stomp_loop --queue-url stomp://HOST:PORT/queue/NAME --base-url http://127.0.0.1:P --concurrency C

One stompman subscription (``ack: client-individual``, the broker's prefetch = C, so at most C in flight) -> per
message: GET element -> POST it to the channel -> PATCH the publication's externalId -> ACK. aiohttp
ClientSession (keep-alive) for every HTTP call. Runs until SIGTERM; bench.run measures it like the bridge.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from urllib.parse import urlparse

import aiohttp
import stompman

from bench.simple_loop import sync_element


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    base = args.base_url.rstrip("/")
    queue = urlparse(args.queue_url)
    server = stompman.ConnectionParameters(queue.hostname or "127.0.0.1", queue.port or 61613, "", "")
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http,
        stompman.Client([server], no_message_restart_interval=None, max_concurrent_handlers=None) as client,
    ):

        async def handle(frame: stompman.AckableMessageFrame) -> None:
            await sync_element(http, base, json.loads(frame.body)["id"])
            await frame.ack()

        subscription = await client.subscribe_with_manual_ack(
            queue.path, handle, ack="client-individual", headers={"activemq.prefetchSize": str(args.concurrency)}
        )
        await stop.wait()
        await subscription.unsubscribe()


def cli() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()

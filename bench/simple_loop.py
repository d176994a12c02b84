"""The limit: the simplest asyncio loop doing the bridge's per-message work, no framework (performance.md).

    python -m bench.simple_loop --queue-url URL --endpoint-url URL --base-url http://127.0.0.1:P --concurrency C

receive 10 (aiobotocore) -> per message, at most C in flight: GET element -> POST it to the channel -> PATCH the
publication's externalId -> delete, batched by 10. aiohttp ClientSession (keep-alive) for every HTTP call. Runs
until SIGTERM; bench.run measures its CPU and RSS exactly like the bridge's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from typing import Any

import aiohttp
from aiobotocore.session import get_session

AUTH = {"Authorization": "Bearer bench"}


async def sync_element(http: aiohttp.ClientSession, base: str, element_id: int) -> None:
    """The per-message work: GET the element, POST it to the channel, PATCH the publication's externalId."""
    async with http.get(f"{base}/api/v2/elements/{element_id}", headers=AUTH) as response:
        response.raise_for_status()
        element = await response.json()
    async with http.post(f"{base}/element", json=element, headers={"X-Bench": "bench-header"}) as response:
        response.raise_for_status()
        remote_id = (await response.json())["id"]
    publication_id = element["publications"][0]["id"]
    async with http.patch(
        f"{base}/api/v2/elements/{element_id}/publications/{publication_id}",
        json={"externalId": str(remote_id)},
        headers=AUTH,
    ) as response:
        response.raise_for_status()


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    semaphore = asyncio.Semaphore(args.concurrency)
    deletions: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    base = args.base_url.rstrip("/")
    connector = aiohttp.TCPConnector(limit=0)
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        get_session().create_client(
            "sqs",
            region_name="eu-central-1",
            endpoint_url=args.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ) as sqs,
    ):

        async def handle(message: dict[str, Any]) -> None:
            try:
                await sync_element(http, base, json.loads(message["Body"])["id"])
                await deletions.put({"Id": message["MessageId"], "ReceiptHandle": message["ReceiptHandle"]})
            finally:
                semaphore.release()

        async def deleter() -> None:
            while True:
                batch = [await deletions.get()]
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        while len(batch) < 10:
                            batch.append(await deletions.get())
                await sqs.delete_message_batch(QueueUrl=args.queue_url, Entries=batch)

        tasks: set[asyncio.Task[None]] = set()
        delete_task = asyncio.create_task(deleter())
        while not stop.is_set():
            receive = asyncio.ensure_future(
                sqs.receive_message(QueueUrl=args.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            )
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({receive, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not receive.done():
                receive.cancel()
                break
            for message in receive.result().get("Messages", []):
                await semaphore.acquire()
                task = asyncio.create_task(handle(message))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        delete_task.cancel()


def cli() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()

"""The queue's own floor for a drain: receive and delete (ACK) a preloaded queue with no work per message.

    python -m bench.floor --queue-url URL --endpoint-url URL --expect N [--pollers 16]    (SQS)
    python -m bench.floor --queue-url stomp://HOST:PORT/queue/NAME --expect N [--prefetch 1000]  (ActiveMQ)

SQS: ``--pollers`` loops on one aiobotocore client, each receiving batches of 10 and handing each batch straight
to a DeleteMessageBatch of its own (not awaited by the poller, so receives and deletes overlap); 16 by default, as
many as helped (on LocalStack here 16 drained 3,030 messages in 1.42–1.50 s, 4 in 1.66–2.14 s, 8 in 1.59–1.87 s,
32 and 64 no faster). ActiveMQ: one
stompman subscription (``client-individual``, the broker's prefetch ``--prefetch``), each message ACKed as it
arrives. Prints one JSON line: ``drain_s`` from the first message received
to the last delete answered (SQS) or ACK written (ActiveMQ), and ``messages``. What a worker that did nothing
with its messages would need on this queue and machine: a worker's drain can approach it, never beat it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any
from urllib.parse import urlparse

REGION = "eu-central-1"


async def drain_sqs(queue_url: str, endpoint: str, expect: int, pollers: int, limit: float) -> dict[str, Any]:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    first: list[float] = []
    last = 0.0
    # Distinct message ids deleted: SQS delivers at least once, and moto's server can hand one message to two
    # concurrent receives; a duplicate is deleted too but drains nothing.
    deleted: set[str] = set()
    duplicates = 0
    done = asyncio.Event()
    config = AioConfig(max_pool_connections=4 * pollers + 8, parameter_validation=False)
    async with get_session().create_client(
        "sqs",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    ) as sqs:

        async def delete(batch: list[dict[str, Any]]) -> None:
            nonlocal last, duplicates
            entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(batch)]
            answer = await sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
            if answer.get("Failed"):
                raise RuntimeError(f"DeleteMessageBatch failed: {answer['Failed']}")
            last = time.time()
            for message in batch:
                if message["MessageId"] in deleted:
                    duplicates += 1
                deleted.add(message["MessageId"])
            if len(deleted) >= expect:
                done.set()

        calls: set[asyncio.Task[None]] = set()

        async def poll() -> None:
            while not done.is_set():
                answer = await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
                batch = answer.get("Messages", [])
                if not batch:
                    continue
                if not first:
                    first.append(time.time())
                call = asyncio.create_task(delete(batch))
                calls.add(call)
                call.add_done_callback(calls.discard)

        tasks = [asyncio.create_task(poll()) for _ in range(pollers)]
        try:
            async with asyncio.timeout(limit):
                await done.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, *calls, return_exceptions=True)
    drain_s = round(last - first[0], 3)
    return {"messages": len(deleted), "duplicates": duplicates, "drain_s": drain_s, "pollers": pollers}


async def drain_stomp(queue_url: str, expect: int, prefetch: int, limit: float) -> dict[str, Any]:
    import stompman

    queue = urlparse(queue_url)
    server = stompman.ConnectionParameters(queue.hostname or "127.0.0.1", queue.port or 61613, "", "")
    first: list[float] = []
    last = 0.0
    acked = 0
    done = asyncio.Event()
    async with stompman.Client([server], no_message_restart_interval=None, max_concurrent_handlers=None) as client:

        async def handle(frame: stompman.AckableMessageFrame) -> None:
            nonlocal last, acked
            if not first:
                first.append(time.time())
            await frame.ack()
            last = time.time()
            acked += 1
            if acked >= expect:
                done.set()

        subscription = await client.subscribe_with_manual_ack(
            queue.path, handle, ack="client-individual", headers={"activemq.prefetchSize": str(prefetch)}
        )
        try:
            async with asyncio.timeout(limit):
                await done.wait()
        finally:
            await subscription.unsubscribe()
    return {"messages": acked, "drain_s": round(last - first[0], 3), "prefetch": prefetch}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--endpoint-url", default=None, help="SQS endpoint; not for stomp://")
    parser.add_argument("--expect", type=int, required=True, help="messages on the queue: the drain ends there")
    parser.add_argument("--pollers", type=int, default=16)
    parser.add_argument("--prefetch", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)
    if args.queue_url.startswith("stomp"):
        result = asyncio.run(drain_stomp(args.queue_url, args.expect, args.prefetch, args.timeout))
    else:
        result = asyncio.run(drain_sqs(args.queue_url, args.endpoint_url, args.expect, args.pollers, args.timeout))
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()

"""The cyclic garbage collector, set up for one long-running process (the worker, the ingress).

Measured with `make bench` (C=128): with CPython's defaults the collector took about a sixth of the worker's CPU.
Most of it went on full collections that walk every object start-up built (botocore's service models, pydantic's
schemas, the channels), about 110,000 objects that live as long as the process. Freezing them after start-up
takes them out of every later collection. What a message allocates is freed by reference counting the moment
the message is settled; only reference cycles wait for the collector, so the first generation can be collected
far less often than every 700 allocations without holding more memory for long. The ingress (``python -m
bench.ingress``, 32 clients): a full collection took about 90 ms, every call in flight waiting on it; frozen,
1.4 ms.
"""

from __future__ import annotations

import gc

# Allocations (net of frees) between two young collections; CPython's default is 700.
YOUNG_GENERATION_THRESHOLD = 10_000


def settle_after_startup() -> None:
    """Collect start-up's garbage, freeze what survives, and collect the young generation less often.

    For a process that runs one worker or one ingress until it exits: what is frozen is never collected again.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)

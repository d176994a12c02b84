"""The event loop the long-lived commands (``run``, ``ingress``) run on: uvloop where it is installed.

Measured with ``make bench`` on the 2-core machines: the webhook ingress spends 0.74 ms of CPU per call on uvloop
against 0.89 ms on asyncio's own loop (aiohttp's server and client do less work per socket event), and the
worker's CPU per message drops the same way. The benchmarks' simplest loops run on this same loop, so the bridge
is compared with them like for like.

``KORDIAM_BRIDGE_EVENT_LOOP=asyncio`` is the way back to asyncio's own loop, e.g. to rule uvloop out when chasing a
fault; any other value than ``uvloop`` or ``asyncio`` is a configuration error.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from bridge.errors import ConfigError

T = TypeVar("T")
ENV = "KORDIAM_BRIDGE_EVENT_LOOP"
CHOICES = ("uvloop", "asyncio")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """The chosen loop's constructor: uvloop unless ``KORDIAM_BRIDGE_EVENT_LOOP=asyncio`` or it is not installed."""
    choice = os.environ.get(ENV, "uvloop").strip().lower() or "uvloop"
    if choice not in CHOICES:
        raise ConfigError(ENV, f"{choice!r} is not one of {', '.join(CHOICES)}")
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:  # not built for this platform (uvloop has no Windows wheels)
            return asyncio.new_event_loop
        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    try:
        factory = loop_factory()
    except ConfigError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)

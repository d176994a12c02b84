"""Ctrl-C and SIGTERM in two steps, and the way out of a process whose event loop may be stuck: the handlers run
while the loop cannot, so standard library only."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import sys
from collections.abc import Callable, Iterator
from typing import NoReturn

EXIT_INTERRUPTED = 130


def exit_at_once(line: str) -> NoReturn:
    """Exit 130 now, without clean-up, saying ``line`` on stderr if it can be said without waiting.

    Called from a signal handler, which may have interrupted a write to ``sys.stderr`` (writing to it again would
    fail as a reentrant call) or a write that waits for a full pipe (this one would wait too): so straight to the
    file descriptor, and only if it takes the line at once.
    """
    if sys.stderr is not None:  # None: closed (`2>&-`), nowhere to say it
        with contextlib.suppress(OSError):
            ready = select.poll()
            ready.register(sys.stderr.fileno(), select.POLLOUT)
            if ready.poll(0):
                os.write(sys.stderr.fileno(), f"{line}\n".encode())
    os._exit(EXIT_INTERRUPTED)


@contextlib.contextmanager
def two_steps(
    signals: tuple[signal.Signals, ...], first: Callable[[signal.Signals], None], again: str
) -> Iterator[None]:
    """While inside, the first of ``signals`` calls ``first`` with it on the running event loop; a SIGINT after that
    exits at once (``exit_at_once(again)``), any other signal after it is ignored. The previous handlers come back
    on leaving.

    The handlers are Python's own (``signal.signal``), not the loop's (``loop.add_signal_handler``): the loop's run
    only when the loop next gets control, and a loop blocked in a write (its stderr a pipe nobody reads any more)
    never does, so no Ctrl-C ended such a process, only SIGKILL. Python runs its handlers in the main thread even
    while that write waits; they count the signals themselves and leave the rest (which logs) to the loop.
    """
    loop = asyncio.get_running_loop()
    requested = False

    def on_signal(number: int, _: object) -> None:
        nonlocal requested
        sig = signal.Signals(number)
        if requested:
            if sig is signal.SIGINT:
                exit_at_once(again)
            return
        requested = True
        loop.call_soon_threadsafe(first, sig)

    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

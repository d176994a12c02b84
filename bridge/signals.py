"""The way out of a process whose event loop may be stuck: used from signal handlers, so standard library only."""

from __future__ import annotations

import contextlib
import os
import select
import sys
from typing import NoReturn

EXIT_INTERRUPTED = 130


def exit_at_once(line: str) -> NoReturn:
    """Exit 130 now, without clean-up, saying ``line`` on stderr if it can be said without waiting.

    Called from a signal handler, which may have interrupted a write to ``sys.stderr`` (writing to it again would
    fail as a reentrant call) or a write that waits for a full pipe (this one would wait too): so straight to the
    file descriptor, and only if it takes the line at once.
    """
    with contextlib.suppress(OSError):
        ready = select.poll()
        ready.register(sys.stderr.fileno(), select.POLLOUT)
        if ready.poll(0):
            os.write(sys.stderr.fileno(), f"{line}\n".encode())
    os._exit(EXIT_INTERRUPTED)

"""One lock per key, created on demand and dropped when nobody holds or waits for it.

A generic utility below every layer: the pipeline (one message per element) and the Kordiam webhook channel
(one Global Export document per element) both use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from types import TracebackType


class KeyedLock:
    """Two messages for one element never run at the same time in this process; waiters go in arrival order."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    def hold(self, key: Hashable) -> _KeyHold:
        """``async with locks.hold(key):`` runs its block while no other holder of ``key`` runs its own."""
        return _KeyHold(self._locks, key)

    def __len__(self) -> int:
        return len(self._locks)


class _KeyHold:
    # A class, not an @asynccontextmanager: every message enters two of these, and a generator-based context
    # costs about three times as much to enter and leave.
    __slots__ = ("_key", "_lock", "_locks")

    def __init__(self, locks: dict[Hashable, tuple[asyncio.Lock, int]], key: Hashable) -> None:
        self._locks = locks
        self._key = key

    async def __aenter__(self) -> None:
        held = self._locks.get(self._key)
        lock, users = held if held is not None else (asyncio.Lock(), 0)
        self._locks[self._key] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:  # cancelled while waiting: no longer a user
            self._leave()
            raise
        self._lock = lock

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._lock.release()
        self._leave()

    def _leave(self) -> None:
        lock, users = self._locks[self._key]
        if users <= 1:
            del self._locks[self._key]
        else:
            self._locks[self._key] = (lock, users - 1)

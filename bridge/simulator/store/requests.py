"""The request log: every API call the simulator answered, for the tests to inspect."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from bridge.simulator.store.base import JSONObject


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    status: int
    body: Any
    at: str

    def to_json(self) -> JSONObject:
        return {
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "body": self.body,
            "at": self.at,
        }


class RequestLog:
    """API requests as the simulator saw them; bounded so a long-running demo cannot grow without limit."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: deque[RecordedRequest] = deque(maxlen=max_entries)

    def record(self, entry: RecordedRequest) -> None:
        self._entries.append(entry)

    def entries(self) -> list[RecordedRequest]:
        return list(self._entries)

    def clear(self) -> None:
        self._entries.clear()

"""Logs on stderr, one line an event: JSON (default, for log pipelines) or ``console`` (readable, for local use).

The bridge's own events (structlog), the libraries' stdlib logging (botocore, aiohttp, uvicorn…) and Python
``warnings`` all pass through the same renderer, so every line of a JSON log is JSON. While a command draws a
progress bar, ``logs_through`` sends the lines to the bar's console, which prints them above the bar.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any, Literal

import structlog

from bridge import jsontext

LogFormat = Literal["json", "console"]


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of writing (it may be replaced after configuration), or
    to the sink ``logs_through`` installed."""

    sink: Callable[[str], None] | None = None

    def write(self, text: str) -> int:
        if self.sink is not None:
            self.sink(text.removesuffix("\n"))
            return len(text)
        return sys.stderr.write(text)

    def flush(self) -> None:
        if self.sink is None:
            sys.stderr.flush()


_STDERR = _CurrentStderr()


def _json_line(event: dict[str, Any], default: Callable[[Any], Any] | None = None, **_: Any) -> str:
    """structlog's JSON serializer: ``bridge.jsontext`` (orjson) instead of ``json.dumps``, a line per event."""
    return jsontext.encode(event, default=default).decode()


def configure_logging(level: str = "info", *, log_format: LogFormat = "json") -> None:
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(serializer=_json_line)
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0)
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=_STDERR),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    # Libraries log through stdlib logging: the same renderer, the same stream, at warning level and above.
    handler = logging.StreamHandler(_STDERR)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                timestamper,
                structlog.processors.format_exc_info,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(numeric, logging.WARNING))
    # `warnings.warn(...)` becomes a record of the `py.warnings` logger.
    logging.captureWarnings(True)


@contextlib.contextmanager
def logs_through(sink: Callable[[str], None]) -> Iterator[None]:
    """While inside, every log line goes to ``sink`` (one rendered line, without its newline)."""
    previous, _STDERR.sink = _STDERR.sink, sink
    try:
        yield
    finally:
        _STDERR.sink = previous

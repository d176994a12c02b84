"""Logs on stderr, one line an event: JSON (default, for log pipelines) or ``console`` (readable, for local use).

The bridge's own events (structlog), the libraries' stdlib logging (botocore, aiohttp, uvicorn…) and Python
``warnings`` all pass through the same renderer, so every line of a JSON log is JSON. While a command draws a
progress bar, ``logs_through`` sends the lines to the bar's console, which prints them above the bar.

A command's format is known only once its configuration is read, and reading it may log (a ``BRIDGE_*`` variable
that sets nothing): ``configure_logging(hold=True)`` keeps such lines until the command configures its own format,
which prints them in it (or ``release_held_logs`` prints them as JSON, for a command that never does).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any, Literal

import structlog

from bridge import jsontext, redaction
from bridge.ops.clock import utc_now_iso
from bridge.terminal import visible

LogFormat = Literal["json", "console"]


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of writing (it may be replaced after configuration), or
    to the sink ``logs_through`` installed; nowhere when stderr is closed or cannot take a line."""

    sink: Callable[[str], None] | None = None

    def write(self, text: str) -> int:
        if self.sink is not None:
            self.sink(text.removesuffix("\n"))
            return len(text)
        if sys.stderr is None:  # closed (`2>&-`): the lines go where stderr went, the command goes on
            return len(text)
        # A log line never fails what logged it (a message's outcome, a retry): a stderr that cannot take it (a
        # pipe whose reader went away: journald restarted, a log shipper died; a full disk) loses the line only.
        try:
            return sys.stderr.write(text)
        except OSError:
            return len(text)

    def flush(self) -> None:
        if self.sink is None and sys.stderr is not None:
            with contextlib.suppress(OSError):
                sys.stderr.flush()


_STDERR = _CurrentStderr()


def _json_line(event: dict[str, Any], default: Callable[[Any], Any] | None = None, **_: Any) -> str:
    """structlog's JSON serializer: ``bridge.jsontext`` (orjson) instead of ``json.dumps``, a line per event."""
    return jsontext.encode(event, default=default).decode()


def _timestamp(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog's ``TimeStamper(fmt="iso", utc=True)``: the same ``timestamp`` text, a fifth of its cost."""
    event["timestamp"] = utc_now_iso("Z")
    return event


# The levels whose lines quote what went wrong (a server's answer, an exception), and so pass through
# ``bridge.redaction`` (``add_log_level`` names ``exception`` error and ``warn`` warning).
_QUOTING_LEVELS = frozenset({"warning", "error", "critical"})


def _redact_quoted(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A warning, error or critical line's text (its event with structlog's ``%``-arguments already in, its fields,
    a traceback's text) without the process's secrets (``bridge.redaction``), in both chains, the bridge's and the
    libraries'. An info or debug line (every line of a message's success) returns at once."""
    if event.get("level") not in _QUOTING_LEVELS:
        return event
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redaction.SECRETS.redact(value)
    return event


def _console_renderer() -> structlog.types.Processor:
    """structlog's readable lines, with what they quote of a peer's answer (an event's text, a field, a traceback)
    unable to reach the terminal as an escape sequence or to forge a line: its control characters written out
    (``bridge.terminal``). structlog quotes a field with a space or a line break as ``repr`` does, which escapes
    them already, and never the event; a traceback keeps its line breaks."""
    render = structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0)

    def rendered(logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        if "event" in event:
            event["event"] = visible(str(event["event"]))
        return visible(str(render(logger, method, event)), keep="\n")

    return rendered


# The bridge's own events logged while held: each as it would have been rendered, but for the renderer.
_held: list[dict[str, Any]] | None = None


def _hold(_: Any, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    if _held is not None:
        _held.append(dict(event))
    raise structlog.DropEvent


def configure_logging(level: str = "info", *, log_format: LogFormat = "json", hold: bool = False) -> None:
    """Log at ``level`` and above in ``log_format``. With ``hold``, the bridge's own lines are kept until the next
    call (or ``release_held_logs``), which prints them in its format; any held before are printed first."""
    global _held
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(serializer=_json_line) if log_format == "json" else _console_renderer()
    )
    held, _held = _held, [] if hold else None
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _timestamp,
            structlog.processors.format_exc_info,
            _redact_quoted,
            _hold if hold else renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=_STDERR),  # type: ignore[arg-type]
        # A logger caches the configuration it first logged with: none may keep the holding one.
        cache_logger_on_first_use=not hold,
    )
    # Libraries log through stdlib logging: the same renderer, the same stream, at warning level and above.
    handler = logging.StreamHandler(_STDERR)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                _timestamp,
                structlog.processors.format_exc_info,
                _redact_quoted,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(numeric, logging.WARNING))
    # `warnings.warn(...)` becomes a record of the `py.warnings` logger.
    logging.captureWarnings(True)
    for event in held or ():
        method = str(event.get("level", "info"))
        if logging.getLevelNamesMapping().get(method.upper(), logging.INFO) >= numeric:
            _STDERR.write(f"{renderer(None, method, event)!s}\n")


def release_held_logs() -> None:
    """Print the lines held since ``configure_logging(hold=True)`` as JSON, if no command's format came since."""
    if _held is not None:
        configure_logging("info")


@contextlib.contextmanager
def logs_through(sink: Callable[[str], None]) -> Iterator[None]:
    """While inside, every log line goes to ``sink`` (one rendered line, without its newline)."""
    previous, _STDERR.sink = _STDERR.sink, sink
    try:
        yield
    finally:
        _STDERR.sink = previous

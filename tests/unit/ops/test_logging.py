"""Logs: every line of a JSON log is JSON (libraries and warnings too), a readable format, and no log line
inside a progress bar."""

from __future__ import annotations

import argparse
import io
import json
import logging
import re
import subprocess
import sys

import pytest
import structlog
from rich.console import Console

from bridge.cli import _progress
from bridge.ops.logging import configure_logging, logs_through


def test_library_logging_and_warnings_are_json_lines_too() -> None:
    script = (
        "import logging, warnings\n"
        "from bridge.ops.logging import configure_logging\n"
        "configure_logging('info')\n"
        "logging.getLogger('botocore.credentials').warning('found credentials in %s', 'env')\n"
        "warnings.warn('this is deprecated', DeprecationWarning, stacklevel=1)\n"
        "logging.getLogger('aiohttp.access').info('below warning: not shown')\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(line["logger"], line["level"]) for line in lines] == [
        ("botocore.credentials", "warning"),
        ("py.warnings", "warning"),
    ]
    assert lines[0]["event"] == "found credentials in env"
    assert "this is deprecated" in lines[1]["event"]


def test_the_console_format_is_readable(capsys: object) -> None:
    stream = io.StringIO()
    sys_stderr, sys.stderr = sys.stderr, stream
    try:
        configure_logging("info", log_format="console")
        structlog.get_logger("bridge.test").info("done", outcome="done", element_id=1001)
    finally:
        sys.stderr = sys_stderr
        configure_logging("info")
    line = stream.getvalue().strip()
    assert not line.startswith("{")
    assert "[info     ] done" in line and "element_id=1001" in line and "outcome=done" in line


def test_the_console_format_shows_the_control_characters_a_peer_sent_escaped() -> None:
    # The event, a field and a traceback quote what a peer answered; before, their escape sequences reached the
    # terminal raw, and a line break in an event forged a log line of its own.
    hostile = "answered \x1b[2J\x1b]0;owned\x07\x9b31m"
    shown = "answered \\x1b[2J\\x1b]0;owned\\x07\\x9b31m"
    forged = "\n2026-12-07T00:00:00Z [error    ] forged"
    stream = io.StringIO()
    sys_stderr, sys.stderr = sys.stderr, stream
    try:
        configure_logging("info", log_format="console")
        log = structlog.get_logger("bridge.test")
        log.warning("channel_refused", reason=hostile + forged, code="\x1b[2J\x07")
        try:
            raise RuntimeError(hostile)
        except RuntimeError:
            log.exception(f"fetch_failed {hostile}{forged}")
        logging.getLogger("aiohttp.client").warning("peer said %s", hostile + forged)
    finally:
        sys.stderr = sys_stderr
        configure_logging("info")
    text = stream.getvalue()
    assert not any(control in text for control in "\x1b\x07\x9b"), text
    first, second, *traceback, library = text.splitlines()
    # A field with a space or a line break structlog quotes as repr does; one without it leaves as it is.
    assert first.endswith(
        f"channel_refused code=\\x1b[2J\\x07 reason='{shown}\\n2026-12-07T00:00:00Z [error    ] forged'"
    )
    assert second.endswith(f"fetch_failed {shown}\\n2026-12-07T00:00:00Z [error    ] forged")
    # A traceback keeps its own line breaks.
    assert traceback[0] == "Traceback (most recent call last):" and traceback[-1] == f"RuntimeError: {shown}"
    assert library.endswith(f"peer said {shown}\\n2026-12-07T00:00:00Z [error    ] forged [aiohttp.client]")


def test_log_lines_are_printed_above_the_progress_bar_not_inside_it() -> None:
    configure_logging("info")
    terminal = io.StringIO()
    console = Console(file=terminal, force_terminal=True, width=100, color_system=None)
    with _progress(argparse.Namespace(progress=True), console) as progress:
        progress.start("replaying 2 element(s)", 2)
        progress.advance()
        structlog.get_logger("bridge.admin").info("replayed", queue="q", sent=2, total=2)
        progress.advance()
    # What the terminal shows: each line from its last carriage return on, without control sequences.
    shown = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line.split("\r")[-1]) for line in terminal.getvalue().split("\n")]
    logged = [line for line in shown if "replayed" in line]
    assert len(logged) == 1 and json.loads(logged[0])["event"] == "replayed"  # a whole line of its own
    assert "2/2" in shown[-2]  # and the bar is drawn again below it


def test_a_log_line_reaches_the_progress_bar_s_sink_as_one_line() -> None:
    configure_logging("info")
    lines: list[str] = []
    with logs_through(lines.append):
        structlog.get_logger("bridge.admin").info("replayed", queue="q", sent=2)
    # One call per line: print() wrote the newline apart, and the bar's console drew it as a blank line.
    assert len(lines) == 1 and json.loads(lines[0])["event"] == "replayed"


def test_the_simulator_logs_through_the_same_renderer() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge", "simulator", "--port", "0"], stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        lines: list[str] = []
        while not any("startup complete" in line for line in lines):
            line = process.stderr.readline()
            assert line, f"the simulator ended: {lines}"
            lines.append(line)
    finally:
        process.terminate()
        process.wait(timeout=30)
    records = [json.loads(line) for line in lines]  # uvicorn's lines are JSON too
    assert {record.get("logger") for record in records if record["event"] != "simulator_listening"} == {"uvicorn.error"}
    assert [record["event"] for record in records].count("simulator_listening") == 1


def test_held_lines_come_out_in_the_next_format_and_at_its_level_only() -> None:
    stream = io.StringIO()
    sys_stderr, sys.stderr = sys.stderr, stream
    try:
        configure_logging("info", hold=True)
        log = structlog.get_logger("bridge.test")
        log.warning("early", variable="BRIDGE_X")
        log.info("early_info")
        assert stream.getvalue() == ""  # held, not printed in a format the command may not use
        configure_logging("warning", log_format="console")
        log.warning("later")
    finally:
        sys.stderr = sys_stderr
        configure_logging("info")
    early, later = stream.getvalue().splitlines()
    assert not early.startswith("{") and "early" in early and "variable=BRIDGE_X" in early
    assert "later" in later  # the logger used while held did not keep the holding configuration


def test_a_closed_stderr_drops_the_log_lines_and_the_command_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # `kordiam-bridge run 2>&-`: Python's sys.stderr is None. Before: the worker's first log line raised
    # AttributeError and it exited 1 without a word (nowhere to say it); now the lines go where stderr went.
    monkeypatch.setattr(sys, "stderr", None)
    configure_logging("info")
    structlog.get_logger().info("worker_started", queue="q")
    structlog.get_logger().error("channel_failed", error="boom")
    logging.getLogger("aiobotocore").warning("a library's warning")


class _BrokenStderr(io.StringIO):
    """stderr a pipe whose reader went away (journald restarted, a log shipper died), or a full disk."""

    def __init__(self, error: OSError) -> None:
        super().__init__()
        self.error = error

    def write(self, text: str) -> int:
        raise self.error


@pytest.mark.parametrize("error", [BrokenPipeError(32, "Broken pipe"), OSError(28, "No space left on device")])
def test_a_log_line_stderr_cannot_take_is_dropped_not_raised_into_the_worker(
    monkeypatch: pytest.MonkeyPatch, error: OSError
) -> None:
    # Before: the BrokenPipeError came out of the log call itself, wherever the worker logged (a message's outcome,
    # a retry): `run` with its stderr a broken pipe exited 141 at its first line.
    monkeypatch.setattr(sys, "stderr", _BrokenStderr(error))
    configure_logging("info")
    structlog.get_logger().info("done", element_id=1)
    structlog.get_logger().error("channel_failed", error="boom")
    logging.getLogger("aiobotocore").warning("a library's warning")

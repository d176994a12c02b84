"""Progress reporting for long operator commands: a rich bar on a terminal, nothing elsewhere. The hook itself
(``ProgressSink``) is the queue layer's, which reports through it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from bridge.queue.transport import NoProgress, ProgressSink

__all__ = ["NoProgress", "ProgressSink", "RichProgress", "StderrConsole", "progress_bar"]


class StderrConsole(Console):
    """rich on stderr: the progress bar, and the log lines printed above it. A stderr that cannot take it (a pipe
    whose reader went away) silences it; rich's own answer, stdout pointed at /dev/null and SystemExit(1), would
    lose the command's output on stdout and its exit code."""

    def __init__(self) -> None:
        super().__init__(stderr=True)

    def on_broken_pipe(self) -> None:
        self.quiet = True


class RichProgress:
    """A ``ProgressSink`` drawn as a rich progress bar (on stderr, so ``--json`` output on stdout stays clean)."""

    def __init__(self, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console or StderrConsole(),
            transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._progress.stop()

    def start(self, description: str, total: int | None) -> None:
        if self._task is not None:
            self._progress.update(self._task, visible=False)
        self._task = self._progress.add_task(description, total=total)

    def advance(self, amount: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, amount)

    def update(self, completed: int, total: int | None = None) -> None:
        if self._task is not None:
            if total is not None:
                self._progress.update(self._task, completed=completed, total=total)
            else:
                self._progress.update(self._task, completed=completed)


@contextlib.contextmanager
def progress_bar(enabled: bool | None = None, console: Console | None = None) -> Iterator[ProgressSink]:
    """A rich bar when ``enabled`` (default: when stderr is a terminal), else a sink that reports nothing."""
    console = console or StderrConsole()
    if enabled is None:
        enabled = console.is_terminal
    if not enabled:
        yield NoProgress()
        return
    with RichProgress(console) as bar:
        yield bar

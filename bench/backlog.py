"""The backlog workload of `make bench` (#14): a queue preloaded with many notifications per element, drained.

    python -m bench.run --workload backlog [--backlog-notifications 3000 --backlog-elements 300] [--concurrency 32]

What it stands for: the worker was down for a while (or a channel was slow) while editors kept saving, so the
queue holds several notifications for each element, interleaved as they arrived. Per implementation (bridge,
simple loop), on a fresh queue with a DLQ:
1. send N notifications ``{"id": e}`` over M elements, round by round (every element once, then again…);
2. wait until the newest of them is older than the bridge's clock-skew allowance (as a real backlog is), then
   start the worker;
3. mid-drain (when the queue holds half of N or less), change a tenth of the elements in the Kordiam stub (a new
   version each) and send one fresh notification for each;
4. wait until the channel holds every element in its newest version and the queue is empty.
Figures: element GETs and channel writes per element, drain time (the stub's first element GET until the bench
saw the queue empty, polling every 50 ms; ``calls_s`` ends at the stub's last call instead, which for the bridge
comes before the last covered notifications are deleted), the worker's CPU over the drain, and what reached the
DLQ. ``targets`` checks the bridge's figures against the issue's targets, the drain time against the simple
loop's.

The queue floor (``floor``): the same N + changes messages preloaded on a fresh queue and drained by
``bench.floor``, which receives and deletes (ACKs) them with no work at all: no worker can drain the backlog
faster on this queue and machine, so the bridge's drain time is read against it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil  # type: ignore[import-untyped]

from bridge.pipeline.covering import DEFAULT_CLOCK_SKEW_SECONDS

ROOT = Path(__file__).resolve().parent.parent
# Targets from issue #14.
GETS_PER_ELEMENT = 1.2  # plus one per mid-drain change
DRAIN_SPEEDUP = 5.0  # the simple loop's drain time / the bridge's
CHANGED_SHARE = 10  # one element in ten changes mid-drain


class BacklogQueues(Protocol):
    """What the workload needs of the bench's queue operations (``bench.run.SqsQueues``, ``StompQueues``)."""

    def send(self, queue: str, ids: list[int], sent: dict[str, float], threads: int = 1) -> None: ...

    def depth(self, queue: str) -> int: ...

    def floor_command(self, queue: str) -> list[str]: ...


class BacklogStubs(Protocol):
    base: str

    def reset(self) -> None: ...

    def post(self, path: str, body: dict[str, Any]) -> None: ...

    def get(self, path: str) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Backlog:
    """N notifications over M elements (ids ``offset + 1 …``), and the elements that change mid-drain."""

    notifications: int
    elements: int
    offset: int

    @property
    def element_ids(self) -> list[int]:
        return list(range(self.offset + 1, self.offset + 1 + self.elements))

    @property
    def interleaved(self) -> list[int]:
        """Every element once, then again, …: the order editors' saves arrive in."""
        ids = self.element_ids
        return [ids[n % self.elements] for n in range(self.notifications)]

    @property
    def changed(self) -> list[int]:
        return self.element_ids[::CHANGED_SHARE]


def drain(
    impl: str,
    command: list[str],
    env: dict[str, str],
    queues: BacklogQueues,
    queue: str,
    dlq: str,
    stubs: BacklogStubs,
    backlog: Backlog,
    run_dir: Path,
    timeout: float,
    loader_threads: int,
    clock_skew_seconds: float = DEFAULT_CLOCK_SKEW_SECONDS,
) -> dict[str, Any]:
    """One implementation through the whole workload on a fresh ``queue``; the figures of the run (see the module
    docstring). ``clock_skew_seconds`` is the worker's ``queue.clock_skew_seconds``."""
    stubs.reset()
    queues.send(queue, backlog.interleaved, {}, threads=loader_threads)
    # A real backlog is minutes old; this one only needs to be older than the covering rule's allowance.
    time.sleep(clock_skew_seconds + 1)
    log = run_dir / "worker.log"
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    worker = psutil.Process(process.pid)
    changed_at_depth: int | None = None
    finished, emptied = False, 0.0
    cpu_before: float | None = None
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{impl} exited with {process.returncode} during the backlog, see {log}")
            if cpu_before is None and stubs.get("/_backlog")["first_get"]:
                cpu_before = sum(worker.cpu_times()[:2])  # from the first fetch: start-up is not counted
            depth = queues.depth(queue)
            if changed_at_depth is None and depth <= backlog.notifications // 2:
                # Kordiam's order: the save, then its notification.
                stubs.post("/_change", {"ids": backlog.changed})
                queues.send(queue, backlog.changed, {})
                changed_at_depth = depth
                continue
            if changed_at_depth is not None and depth == 0 and not stale(stubs.get("/_backlog"), backlog):
                finished, emptied = True, time.time()
                break
            time.sleep(0.05)
        cpu = sum(worker.cpu_times()[:2]) - (cpu_before or 0.0)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    seen = stubs.get("/_backlog")
    sent = backlog.notifications + len(backlog.changed)
    gets, writes = sum(seen["gets"].values()), sum(seen["writes"].values())
    return {
        "impl": impl,
        "notifications": sent,
        "elements": backlog.elements,
        "changed_mid_drain": len(backlog.changed),
        "changed_at_depth": changed_at_depth,
        "finished": finished,
        "element_gets": gets,
        "gets_per_element": round(gets / backlog.elements, 3),
        "channel_writes": writes,
        "writes_per_element": round(writes / backlog.elements, 3),
        "drain_s": round((emptied or seen["last_call"]) - seen["first_get"], 2),
        "calls_s": round(seen["last_call"] - seen["first_get"], 2),
        "cpu_ms_per_notification": round(cpu / sent * 1000, 3),
        "stale_elements": len(stale(seen, backlog)),
        "dead_lettered": queues.depth(dlq),
    }


def floor(command: list[str], queues: BacklogQueues, queue: str, backlog: Backlog, loader_threads: int,
          timeout: float) -> dict[str, Any]:  # fmt: skip
    """The queue's floor (``bench.floor``) for the same number of messages as the workload sends."""
    ids = backlog.interleaved + backlog.changed
    queues.send(queue, ids, {}, threads=loader_threads)
    done = subprocess.run(
        [*command, "--expect", str(len(ids)), "--timeout", str(timeout)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout + 30, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"bench.floor exited with {done.returncode}: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.splitlines()[-1])
    return {
        "impl": "floor",
        "notifications": len(ids),
        "drained": result["messages"],
        "duplicates": result.get("duplicates", 0),  # delivered twice (SQS: at least once), deleted, not counted
        "drain_s": result["drain_s"],
        "msg_per_s": round(len(ids) / result["drain_s"], 1) if result["drain_s"] > 0 else None,
        "left_in_queue": queues.depth(queue),
        "settings": {k: v for k, v in result.items() if k not in {"messages", "duplicates", "drain_s"}},
    }


def stale(seen: dict[str, Any], backlog: Backlog) -> list[int]:
    """Elements the channel does not hold in their newest version."""
    versions, written = seen["versions"], seen["written"]
    return [e for e in backlog.element_ids if written.get(str(e), 0) != versions.get(str(e), 1)]


def targets(rows: list[dict[str, Any]], queue_floor: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The issue's targets against the bridge's row (and the simple loop's, for the drain time; the queue's floor
    is named beside it)."""
    bridge = next((r for r in rows if r["impl"] == "bridge"), None)
    simple = next((r for r in rows if r["impl"] == "simple"), None)
    if bridge is None:
        return []
    allowed = GETS_PER_ELEMENT * bridge["elements"] + bridge["changed_mid_drain"]
    checks: list[tuple[str, str, Callable[[], bool]]] = [
        (
            f"element GETs <= {GETS_PER_ELEMENT:g} per element + 1 per mid-drain change",
            f"{bridge['element_gets']} (allowed {allowed:g})",
            lambda: bridge["element_gets"] <= allowed,
        ),
        (
            "every element in its newest version",
            f"{bridge['stale_elements']} stale",
            lambda: bridge["finished"] and bridge["stale_elements"] == 0,
        ),
        ("nothing dead-lettered", f"{bridge['dead_lettered']} in the DLQ", lambda: bridge["dead_lettered"] == 0),
    ]
    if simple is not None:
        speedup = simple["drain_s"] / bridge["drain_s"] if bridge["drain_s"] > 0 else float("inf")
        against_floor = ""
        if queue_floor is not None and queue_floor["drain_s"] > 0:
            against_floor = (
                f" (the queue's floor {queue_floor['drain_s']} s: the bridge at "
                f"{bridge['drain_s'] / queue_floor['drain_s']:.1f}x it, the simple loop at "
                f"{simple['drain_s'] / queue_floor['drain_s']:.1f}x)"
            )
        checks.append(
            (
                f"drain >= {DRAIN_SPEEDUP:g}x faster than the simple loop",
                f"{bridge['drain_s']} s vs {simple['drain_s']} s: {speedup:.1f}x{against_floor}",
                lambda: speedup >= DRAIN_SPEEDUP,
            )
        )
    return [{"target": target, "measured": measured, "met": bool(met())} for target, measured, met in checks]


def print_report(
    rows: list[dict[str, Any]], checks: list[dict[str, Any]], queue_floor: dict[str, Any] | None = None
) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="backlog: preloaded notifications, a tenth of the elements changed mid-drain")
    columns = {
        "impl": "impl",
        "notifications": "notif.",
        "elements": "el.",
        "changed_mid_drain": "changed",
        "element_gets": "GETs",
        "gets_per_element": "GETs/el.",
        "channel_writes": "writes",
        "writes_per_element": "writes/el.",
        "drain_s": "drain s",
        "cpu_ms_per_notification": "CPU ms/n.",
        "stale_elements": "stale",
        "dead_lettered": "DLQ",
    }
    for header in columns.values():
        table.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*(str(row[key]) for key in columns))
    console = Console(width=max(130, Console().width))
    console.print(table)
    if queue_floor is not None:
        console.print(
            f"queue floor: {queue_floor['drained']} messages received and deleted with no work in "
            f"{queue_floor['drain_s']} s ({queue_floor['msg_per_s']} msg/s; {queue_floor['settings']})"
        )
    for check in checks:
        console.print(f"{'MET    ' if check['met'] else 'NOT MET'}  {check['target']}: {check['measured']}")

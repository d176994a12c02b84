"""A tiny run of the benchmark harness (20 messages, C=4, 1 ms stubs, moto server), so `make bench` never rots.

It asserts the report's shape and that both workers delivered every message, never a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import math
import socket
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

pytest.importorskip("psutil", reason="the bench extra is not installed")

from bench import ingress, state_statements
from bench.backlog import Backlog
from bench.pipeline import element_bodies, measure
from bench.run import FIELDS, StompQueues, check_variant, limited_by, main, paired_cpu_ratios, write_report
from bench.stubs import element


def test_the_pipeline_benchs_element_bodies_are_the_stubs_own() -> None:
    ids = [1, 9, 10, 99, 12_345, 9_999_999, 10_000_000, 987_654_321]
    assert element_bodies(ids) == {element_id: element(element_id) for element_id in ids}


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_bench_smoke_run_reports_every_field_and_delivers_everything() -> None:
    report = main(["--smoke", "--rounds", "2"])

    assert report["machine"]["cores"] >= 1
    assert report["machine"]["python"]
    # Two rounds, interleaved, the order rotated: bridge first in round 1, simple first in round 2.
    order = [(row["round"], row["impl"]) for row in report["results"]]
    assert order == [(1, "bridge"), (1, "simple"), (2, "simple"), (2, "bridge")]
    workdir = Path(report["workdir"])
    assert (workdir / "bridge-4" / "worker.log").exists() and (workdir / "bridge-4-r2" / "worker.log").exists()
    # The CPU ratio is paired within each round; the summary is their median.
    for row in report["results"]:
        loop = next(r for r in report["results"] if r["impl"] == "simple" and r["round"] == row["round"])
        assert row["cpu_ratio_to_simple"] == round(row["cpu_s_per_1000"] / loop["cpu_s_per_1000"], 3)
    [summary] = report["cpu_ratios"]
    assert summary["impl"] == "bridge" and summary["rounds"] == 2
    assert summary["min"] <= summary["median"] <= summary["max"]
    results = {row["impl"]: row for row in report["results"] if row["round"] == 1}
    assert set(results) == {"bridge", "simple"}
    for impl, row in results.items():
        for field in FIELDS:
            assert field in row, (impl, field)
            if isinstance(row[field], float):
                assert not math.isnan(row[field]), (impl, field)
        assert row["processed"] == row["messages"] == 20, impl
        assert row["left_in_queue"] == 0, impl
        assert row["msg_per_s"] > 0 and row["peak_rss_mb"] > 0, impl
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"], impl
        # Same work per message: one GET, one channel POST, one PATCH (+ the warm-up message).
        calls = row["stub_calls"]
        assert calls["get"] >= 20 and calls["post"] >= 20 and calls["patch"] >= 20, (impl, calls)
        assert calls["link"] == 0, (impl, calls)
        assert row["limited_by"] in {"latency", "worker CPU", "machine CPU", "emulator"}, impl
    assert results["bridge"]["ratio_to_simple"] > 0
    assert results["simple"]["ratio_to_simple"] == 1.0


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_the_diagnostic_variants_run_the_worker_with_their_part_swapped_out() -> None:
    report = main(
        ["--smoke", "--impl", "bridge,bridge-queue-only,bridge-memory-state,bridge-local-leases,bridge-lean-http"]
    )
    results = {row["impl"]: row for row in report["results"]}
    for impl, row in results.items():
        assert row["processed"] == row["messages"] == 20 and row["left_in_queue"] == 0, impl
    workdir = Path(report["workdir"])
    # The real worker keeps its state in SQLite; the memory-state variant never opens a file.
    assert (workdir / "bridge-4" / "state.db").exists()
    assert not (workdir / "bridge-memory-state-4" / "state.db").exists()

    # The queue-only variant's work is the simple loop's: no sync runs, so no sync logs its outcome. Counted by
    # message: SQS delivers at least once, and moto server's concurrent receives now and then hand one message
    # to two pollers (getmoto/moto#519); the second sync of it then finds nothing to change.
    def synced(impl: str) -> set[str]:
        lines = (workdir / f"{impl}-4" / "worker.log").read_text().splitlines()
        events = [json.loads(line) for line in lines if line.startswith("{")]
        return {event["message_id"] for event in events if event["event"] == "done"}

    assert len(synced("bridge")) == len(synced("bridge-memory-state")) == len(synced("bridge-local-leases")) == 21
    assert len(synced("bridge-lean-http")) == 21
    assert synced("bridge-queue-only") == set()

    # The local-leases variant keeps its deliveries and marks in SQLite like the real worker: only leases moved.
    def marks(impl: str) -> int:
        with closing(sqlite3.connect(workdir / f"{impl}-4" / "state.db")) as db:
            return int(db.execute("SELECT COUNT(*) FROM elements WHERE fetched_at IS NOT NULL").fetchone()[0])

    assert marks("bridge") == marks("bridge-local-leases") == marks("bridge-lean-http") == 21


def test_a_diagnostic_run_whose_variant_did_not_install_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text("bench-diagnostic: installed queue-only\n")
    check_variant("bridge-queue-only", log)
    check_variant("bridge", tmp_path / "absent.log")  # the real worker has no variant to check
    with pytest.raises(RuntimeError, match="did not install"):
        check_variant("bridge-memory-state", log)


def test_cpu_ratios_pair_each_impl_with_the_loop_of_its_own_round() -> None:
    def row(impl: str, concurrency: int, round_: int, cpu: float) -> dict[str, object]:
        return {"impl": impl, "concurrency": concurrency, "round": round_, "cpu_s_per_1000": cpu}

    results = [
        # Round 2 ran on a machine 50 % slower: paired, its ratio is what round 1's was.
        row("simple", 32, 1, 0.8), row("bridge", 32, 1, 1.2), row("bridge-local-leases", 32, 1, 1.0),
        row("bridge", 32, 2, 1.8), row("simple", 32, 2, 1.2),
        row("simple", 32, 3, 0.9), row("bridge", 32, 3, 1.62),
        row("bridge", 128, 1, 1.0),  # no loop at this concurrency: nothing to pair with
    ]  # fmt: skip
    assert paired_cpu_ratios(results) == [
        {"impl": "bridge", "concurrency": 32, "rounds": 3, "median": 1.5, "min": 1.5, "max": 1.8},
        {"impl": "bridge-local-leases", "concurrency": 32, "rounds": 1, "median": 1.25, "min": 1.25, "max": 1.25},
    ]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--impl", "bogus"], "--impl: unknown 'bogus' (one or more of"),
        (["--concurrency", "x"], "--concurrency: expected positive whole numbers separated by commas, got 'x'"),
        (["--concurrency", "0,32"], "--concurrency: expected positive whole numbers separated by commas, got '0,32'"),
        (["--workload", "backlog", "--impl", "bridge-queue-only"], "--impl: the backlog workload runs bridge and"),
        (["--rounds", "0"], "--rounds: expected a whole number from 1 to 20, got 0"),
        (["--workload", "backlog", "--rounds", "3"], "--rounds: the backlog workload runs once"),
        (["--out", "{file}"], "--out: {file} exists and is not a folder"),
        (["--endpoint", "http://127.0.0.1:{port}"], "--endpoint: nothing answers at http://127.0.0.1:{port}"),
        (["--queue", "activemq", "--broker", "stomp://127.0.0.1:{port}"], "--broker: nothing answers at stomp://"),
    ],
)
def test_a_wrong_argument_is_one_line_and_exit_2_before_anything_runs(
    argv: list[str], error: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "a-file"
    file.write_text("")
    values = {"file": str(file), "port": str(_closed_port())}

    with pytest.raises(SystemExit) as exit:
        main([arg.format(**values) for arg in argv])

    assert exit.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("python -m bench.run: error: " + error.format(**values)), last


def test_a_run_without_matplotlib_writes_its_json_and_says_in_one_line_why_there_is_no_chart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "matplotlib" else find_spec(name))
    args = argparse.Namespace(out=tmp_path / "out", queue="sqs")
    report = {"results": [{"impl": "bridge", "concurrency": 32}]}

    write_report(report, report["results"], args, "2026-12-05")

    assert json.loads((tmp_path / "out" / "2026-12-05.json").read_text()) == report
    assert list((tmp_path / "out").iterdir()) == [tmp_path / "out" / "2026-12-05.json"]
    assert capsys.readouterr().err.splitlines() == [
        f"bench: wrote {tmp_path / 'out' / '2026-12-05.json'}; no chart: matplotlib is missing (make bench installs it)"
    ]


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_ingress_bench_smoke_run_reports_every_field_and_queues_every_answered_call() -> None:
    rows = {row["receiver"]: row for row in ingress.main(["--smoke"])}

    assert set(rows) == {"global_export", "platform"}
    for receiver, row in rows.items():
        for field in ingress.FIELDS:
            assert field in row, (receiver, field)
        assert row["answered_2xx"] == row["requests"] == 40, (receiver, row["other_statuses"])
        # Answered only once the queue held it: one message for every 2xx answer.
        assert row["queued"] == row["answered_2xx"], receiver
        assert 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"], receiver
        assert row["req_per_s"] > 0 and row["cpu_ms_per_request"] > 0 and row["enqueue_mean_ms"] > 0, receiver
        assert row["p99_target_met"] == (row["p99_ms"] < ingress.P99_TARGET_MS), receiver


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_bench_backlog_smoke_run_reports_the_targets_and_fetches_by_the_rule() -> None:
    report = main(["--workload", "backlog", "--smoke"])

    rows = {row["impl"]: row for row in report["results"]}
    assert set(rows) == {"bridge", "simple"}
    for impl, row in rows.items():
        assert row["notifications"] == 61 and row["elements"] == 6 and row["changed_mid_drain"] == 1, impl
        assert row["finished"] and row["stale_elements"] == 0 and row["dead_lettered"] == 0, impl
        assert row["changed_at_depth"] is not None and row["drain_s"] > 0, impl
    # Counts, not timings: the simple loop fetches once per notification; the bridge by the covering rule.
    assert rows["simple"]["element_gets"] == 61
    met = {check["target"].split(" ")[0]: check["met"] for check in report["targets"]}
    assert set(met) == {"element", "every", "nothing", "drain"}
    assert met["element"] and met["every"] and met["nothing"], report["targets"]
    # The queue's floor drained the same number of messages, and left none.
    assert report["floor"]["drained"] == 61 and report["floor"]["left_in_queue"] == 0, report["floor"]


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_bench_backlog_smoke_run_on_activemq_reads_the_brokers_depth(activemq: str) -> None:
    report = main(["--workload", "backlog", "--smoke", "--queue", "activemq", "--broker", activemq])

    rows = {row["impl"]: row for row in report["results"]}
    assert set(rows) == {"bridge", "simple"}
    for impl, row in rows.items():
        assert row["changed_at_depth"] is not None and row["changed_at_depth"] <= 30, impl
        assert row["finished"] and row["stale_elements"] == 0 and row["dead_lettered"] == 0, impl
    assert rows["simple"]["element_gets"] == 61
    assert report["floor"]["drained"] == 61 and report["floor"]["left_in_queue"] == 0, report["floor"]


@pytest.mark.integration
def test_the_bench_reads_an_activemq_queues_depth_from_the_broker(activemq: str) -> None:
    # The backlog workload's mid-drain change and its end both wait on this figure.
    queues = StompQueues(activemq)
    try:
        queue, dlq = queues.create(f"bench-depth-{time.time_ns()}")
        assert queues.depth(queue) == 0 and queues.depth(dlq) == 0
        queues.send(queue, [1, 2, 2], {})
        assert queues.depth(queue) == 3
    finally:
        queues.close()


def test_a_backlog_arrives_interleaved_and_a_tenth_of_it_changes() -> None:
    plan = Backlog(notifications=25, elements=10, offset=100)
    assert plan.interleaved[:12] == [*range(101, 111), 101, 102]
    assert len(plan.interleaved) == 25
    assert plan.changed == [101]


@pytest.mark.parametrize(
    ("msg_per_s", "worker_cpu_pct", "machine_idle_pct", "expected"),
    [
        (300.0, 60.0, 50.0, "latency"),  # 32 in flight / 0.09 s = 356 msg/s at most
        (200.0, 92.0, 30.0, "worker CPU"),
        (200.0, 60.0, 5.0, "machine CPU"),
        (200.0, 60.0, 40.0, "emulator"),
    ],
)
def test_each_run_names_what_limited_it(
    msg_per_s: float, worker_cpu_pct: float, machine_idle_pct: float, expected: str
) -> None:
    row = {
        "concurrency": 32,
        "msg_per_s": msg_per_s,
        "worker_cpu_pct": worker_cpu_pct,
        "machine_idle_pct": machine_idle_pct,
    }
    assert limited_by(row, 0.09) == expected


@pytest.mark.timeout(120)
def test_pipeline_cost_run_syncs_every_message() -> None:
    # measure() raises unless every message ends Done, through the real SQLite store and the bench's channel.
    per_message = asyncio.run(measure(20, 4))
    assert per_message > 0
    assert gc.get_freeze_count() == 0  # the collector is left as it was found


def test_state_statements_run_records_every_message_and_refuses_too_few(capsys: pytest.CaptureFixture[str]) -> None:
    # measure() raises unless every element ends delivered, marked and released in the real SQLite store.
    spent = asyncio.run(state_statements.measure(120, cold=True))
    assert len(spent) == 120 and min(spent) > 0
    with pytest.raises(SystemExit) as refused:
        state_statements.main(["--messages", "5"])
    assert refused.value.code == 2 and "at least 200" in capsys.readouterr().err

"""The Prometheus rules the README offers: they name metrics the worker exports, and they fire for each way the
worker can stop delivering that /metrics shows."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import bridge.ops.metrics  # noqa: F401  (registers the worker's metrics)

README = Path(__file__).resolve().parents[3] / "README.md"


def alert_rules() -> dict[str, str]:
    block = re.search(r"```yaml\n(groups:\n.*?)```", README.read_text(), re.DOTALL)
    assert block is not None, "README: the Prometheus rules block"
    groups = yaml.safe_load(block.group(1))["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def test_the_rules_name_only_metrics_the_worker_exports() -> None:
    # By family: a labelled metric has no sample before its first use.
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    exported = {family.name + suffix for family in REGISTRY.collect() for suffix in suffixes.get(family.type, ("",))}
    for name, expr in alert_rules().items():
        for metric in re.findall(r"\bbridge_[a-z_]+", expr):
            assert metric in exported, f"{name}: {metric}"


def test_a_worker_paused_on_a_fault_of_its_own_is_alerted_on() -> None:
    # While paused it picks nothing up: no message age is observed and nothing is dead-lettered, so only the
    # gauge shows it.
    assert any("bridge_consumer_paused" in expr for expr in alert_rules().values())

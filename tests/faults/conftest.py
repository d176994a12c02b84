"""The fault-injection suite's report: every case records its figures, printed at the end of the run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPORT = Path(__file__).parents[2] / ".cache" / "faults-report.json"


@dataclass
class Figures:
    case: str
    sent: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    lost: int = 0
    notes: dict[str, Any] = field(default_factory=dict)


RESULTS: list[Figures] = []


def assert_each_story_once(figures: Figures) -> None:
    """The fault cost nothing: no message dead-lettered, no item delivered twice, none lost."""
    assert (figures.dead_lettered, figures.duplicates, figures.lost) == (0, 0, 0), (
        f"dead_lettered={figures.dead_lettered} duplicates={figures.duplicates} lost={figures.lost}"
    )


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    found = Figures(case=request.node.name)
    yield found
    RESULTS.append(found)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    terminalreporter.section("fault injection: sent / delivered / dead-lettered / duplicates / lost")
    for result in RESULTS:
        notes = ", ".join(f"{k}={v}" for k, v in result.notes.items())
        terminalreporter.write_line(
            f"{result.case}: sent={result.sent} delivered={result.delivered} dead_lettered={result.dead_lettered} "
            f"duplicates={result.duplicates} lost={result.lost}" + (f" ({notes})" if notes else "")
        )
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps([asdict(r) for r in RESULTS], indent=2), encoding="utf-8")

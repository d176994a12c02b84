"""``kordiam-bridge demo --webhooks`` (``make demo-webhooks``): its own checks must pass end to end.

Run as a process, as ``make`` runs it: the demo points the process's logging at its log file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_over_webhooks_ends_with_every_story_checked(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "demo", "--webhooks", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Global Export webhooks → ingress → SQS" in done.stdout
    assert "Every story landed in its channels once, and its feedback is in Kordiam." in done.stdout
    assert sorted(p.name for p in (tmp_path / "website").glob("*.html")) == ["1001-7001.html", "1002-7003.html"]

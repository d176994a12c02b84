"""``make help`` is the list of targets: every phony target is on it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_make_help_lists_every_target() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    phony = re.search(r"^\.PHONY:((?:.*\\\n)*.*)$", makefile, re.MULTILINE)
    assert phony is not None
    targets = set(phony.group(1).replace("\\\n", " ").split()) - {"help"}
    shown = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    listed = {word for line in shown.splitlines() for word in re.findall(r"[a-z-]+", line.split("  ")[0])}
    assert sorted(targets - listed) == []

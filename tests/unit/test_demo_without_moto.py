"""`kordiam-bridge demo` on a production install (no `demo` extra): one line saying how to get it, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# moto counts as not installed: a None entry in sys.modules makes every import of it raise ImportError.
WITHOUT_MOTO = """
import sys
sys.modules["moto"] = None
from bridge.cli import main
sys.exit(main(["demo", "--workdir", sys.argv[1]]))
"""


def test_demo_without_moto_names_the_extra_and_exits_2(tmp_path: Path) -> None:
    workdir = tmp_path / "demo-output"
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_MOTO, str(workdir)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "pip install 'kordiam-bridge[demo]'" in result.stderr and "demo image" in result.stderr
    assert not workdir.exists()  # nothing started, nothing written

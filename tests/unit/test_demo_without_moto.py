"""`kordiam-bridge demo` on a production install (no `demo` extra): one line saying how to get it, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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


def test_the_demo_clears_only_its_own_output(tmp_path: Path) -> None:
    from bridge.demo import _fresh_workdir
    from bridge.errors import ConfigError

    earlier = tmp_path / "demo-output"
    (earlier / "website").mkdir(parents=True)
    (earlier / "website" / "1-2.html").write_text("old")
    (earlier / "worker.log").write_text("old")
    assert _fresh_workdir(earlier) == earlier and list(earlier.iterdir()) == []

    # --workdir ~/site by mistake: its website folder is someone's work, not the demo's.
    site = tmp_path / "site"
    (site / "website").mkdir(parents=True)
    (site / "index.html").write_text("mine")
    with pytest.raises(ConfigError) as raised:
        _fresh_workdir(site)
    assert raised.value.key == "--workdir" and "index.html" in raised.value.problem
    assert (site / "website").is_dir() and (site / "index.html").read_text() == "mine"

    with pytest.raises(ConfigError, match="is not a directory"):
        _fresh_workdir(site / "index.html")
    with pytest.raises(ConfigError, match="cannot use"):
        _fresh_workdir(Path("/proc/kordiam-demo"))

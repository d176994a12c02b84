"""scripts/activemq.sh and scripts/localstack.sh when a start fails: one line that says why, exit 1, nothing left.

The service itself is a stand-in that never answers (a fake `java`, a fake LocalStack virtualenv), so these run
without the real broker or LocalStack, in a state dir of their own, on a port nothing listens on.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port

ROOT = Path(__file__).parents[2]
SCRIPTS = ROOT / "scripts"
NEVER_ANSWERS = "#!/usr/bin/env python3\nimport time\ntime.sleep(600)\n"


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (zombies have an empty one)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "home"
    yield state
    for pid in processes_mentioning(str(state)):  # what a failed test left
        os.kill(pid, signal.SIGKILL)


def assert_failed_cleanly(result: subprocess.CompletedProcess[str], home: Path, reason: str) -> None:
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert re.search(reason, last), f"the last line does not say why: {last!r}"
    assert processes_mentioning(str(home)) == [], "the failed start left its process running"
    assert not list(home.glob("*.pid"))


@pytest.mark.skipif(
    not Path("/usr/share/activemq/bin/activemq.jar").exists() or not Path("/usr/share/java/xstream.jar").exists(),
    reason="needs Debian's activemq packages (scripts/activemq.sh start installs them)",
)
def test_activemq_start_that_never_answers_stops_what_it_started(tmp_path: Path, home: Path) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "java").write_text(NEVER_ANSWERS)
    (fake_bin / "java").chmod(0o755)
    env = dict(
        os.environ,
        PATH=f"{fake_bin}:{os.environ['PATH']}",
        ACTIVEMQ_HOME=str(home),
        ACTIVEMQ_PORT=str(free_port()),
        ACTIVEMQ_START_TIMEOUT="2",
    )
    command = [str(SCRIPTS / "activemq.sh"), "start"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert_failed_cleanly(result, home, r"no STOMP answer .* within 2 s")


def fake_localstack_venv(home: Path) -> None:
    """What localstack.sh takes for its ready virtualenv: the pinned version importable, the stamp of its pins."""
    venv = home / "venv"
    site = venv / "site"
    (site / "localstack" / "runtime").mkdir(parents=True)
    (site / "localstack" / "__init__.py").write_text("")
    (site / "localstack" / "runtime" / "__init__.py").write_text("")
    (site / "localstack" / "runtime" / "main.py").write_text("import time\ntime.sleep(600)\n")
    script = (SCRIPTS / "localstack.sh").read_text()
    version = re.search(r'^LOCALSTACK_VERSION="([^"]+)"', script, re.M)
    assert version
    dist = site / f"localstack_core-{version.group(1)}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: localstack-core\nVersion: {version.group(1)}\n")
    (venv / "bin").mkdir()
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH="{site}" exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    pins_block = re.search(r"^PINS=\(\n(.*?)^\)", script, re.M | re.S)
    assert pins_block
    pins = [
        line.strip().strip('"').replace("$LOCALSTACK_VERSION", version.group(1))
        for line in pins_block.group(1).splitlines()
    ]
    (venv / ".kordiam-bridge-stamp").write_text(hashlib.sha256(("\n".join(pins) + "\n").encode()).hexdigest() + "\n")


def test_localstack_start_that_never_gets_healthy_stops_what_it_started(home: Path) -> None:
    fake_localstack_venv(home)
    env = dict(os.environ, LOCALSTACK_HOME=str(home), LOCALSTACK_PORT=str(free_port()), LOCALSTACK_START_TIMEOUT="2")
    command = [str(SCRIPTS / "localstack.sh"), "start"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert "installing localstack-core" not in result.stderr, "the fake virtualenv was not taken for ready"
    assert_failed_cleanly(result, home, r"not healthy .* within 2 s")


def test_localstack_stop_ends_a_start_still_under_way(home: Path) -> None:
    """`make test` starts the tests' LocalStack in the background; a failing or interrupted `make test` stops it,
    which must not wait for that start (install and boot take minutes) before stopping what it launched."""
    fake_localstack_venv(home)
    env = dict(os.environ, LOCALSTACK_HOME=str(home), LOCALSTACK_PORT=str(free_port()), LOCALSTACK_START_TIMEOUT="600")
    start = subprocess.Popen(
        [str(SCRIPTS / "localstack.sh"), "start"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    launched = 0
    try:
        deadline = time.monotonic() + 60  # a guard against a hang, not a measurement
        while not launched:
            assert start.poll() is None and time.monotonic() < deadline, "the start never launched LocalStack"
            time.sleep(0.05)
            with contextlib.suppress(FileNotFoundError, ValueError):
                launched = int((home / "localstack.pid").read_text())
        command = [str(SCRIPTS / "localstack.sh"), "stop"]
        # The start waits 600 s for a health that never comes: a stop that waited for it would not return.
        stopped = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert stopped.returncode == 0, stopped.stderr
        _, start_errors = start.communicate(timeout=60)
        assert start.returncode != 0, start_errors
        # LocalStack's command line does not name its home: it is known by its pid.
        assert not running(launched), "the LocalStack the start launched was left running"
        assert processes_mentioning(str(home)) == [], "the start left a process running"
        assert not list(home.glob("*.pid"))
    finally:
        start.kill()
        start.wait()
        if launched and running(launched):
            os.killpg(launched, signal.SIGKILL)


def running(pid: int) -> bool:
    """Whether pid runs (a zombie has ended: its state in /proc is Z)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False

"""``make help`` is the list of targets: every phony target is on it."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
# What a make that runs these tests (`make test`) hands its sub-makes: "Entering directory" lines (-w) and its flags.
PARENT_MAKE = ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")


def make(
    *arguments: str, cwd: Path = ROOT, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``make`` as a user types it in a shell, also when the tests run under `make test`."""
    environment = {name: value for name, value in os.environ.items() if name not in PARENT_MAKE}
    return subprocess.run(
        ["make", "--no-print-directory", *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def test_make_help_lists_every_target() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    phony = re.search(r"^\.PHONY:((?:.*\\\n)*.*)$", makefile, re.MULTILINE)
    assert phony is not None
    targets = set(phony.group(1).replace("\\\n", " ").split()) - {"help"}
    shown = make("-s", "help").stdout
    listed = {word for line in shown.splitlines() for word in re.findall(r"[a-z-]+", line.split("  ")[0])}
    assert sorted(targets - listed) == []


def start_detached(*argv: str) -> int:
    """Start argv in a session of its own, not as our child (init reaps it, so `kill -0` fails once it ends)."""
    shell = f"setsid {' '.join(argv)} >/dev/null 2>&1 </dev/null & echo $!"
    return int(subprocess.run(["bash", "-c", shell], capture_output=True, text=True, check=True).stdout)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has ended all the same.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_make_clean_stops_the_services_whose_state_it_deletes(tmp_path: Path) -> None:
    """`make clean` deletes .cache; a broker or database left running there would hold its port with no pid file."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    sleeper = f"{sys.executable} -c 'import time; time.sleep(600)'"
    pid_files = {
        ".cache/localstack/localstack.pid": "localstack",
        ".cache/localstack-tests/localstack.pid": "localstack",
        ".cache/activemq/activemq.pid": "activemq",
        ".cache/activemq-tests/activemq.pid": "activemq",
        ".cache/wordpress/php.pid": "php",
        ".cache/wordpress/db/mariadbd.pid": "mariadbd",
    }
    pids = []
    try:
        for pid_file, name in pid_files.items():
            pid = start_detached(sleeper, name)  # the scripts know their process by a word in its command line
            pids.append(pid)
            (tmp_path / pid_file).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / pid_file).write_text(f"{pid}\n")
        result = make("-s", "clean", cwd=tmp_path, check=False)
        assert result.returncode == 0, result.stderr
        assert not (tmp_path / ".cache").exists()
        assert [pid for pid in pids if alive(pid)] == []
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_make_run_passes_config_only_when_given() -> None:
    """Without CONFIG, `make run` leaves the file to $BRIDGE_CONFIG, or to the CLI's one-line error naming both."""

    def command(*variables: str) -> str:
        return make("-n", "run", *variables).stdout.strip().splitlines()[-1]

    assert command().endswith("/kordiam-bridge run")
    assert command("CONFIG=my bridge.toml").endswith("/kordiam-bridge run --config 'my bridge.toml'")


def test_make_down_takes_down_either_emulator() -> None:
    """Compose v2's `down` leaves the containers of a profile it is not given (docker/compose#13027): a stack
    started with `make up EMULATOR=localstack` must come down with a plain `make down` too."""
    for emulator in ("moto", "localstack"):
        shown = make("-n", "down", f"EMULATOR={emulator}")
        assert re.search(r"--profile moto --profile localstack down$", shown.stdout.strip()), shown.stdout


def test_make_test_discards_the_background_image_prepare_when_the_localstack_pass_fails(tmp_path: Path) -> None:
    """`make test` starts the images' prepare (and its Docker engine) in the background; only `image-test` or
    `docker.sh discard` stops that engine again, so a failing pass before `image-test` must discard it."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    calls = tmp_path / "docker-calls"
    (tmp_path / "scripts").mkdir()
    for script in ("wordpress.sh", "activemq.sh", "localstack.sh"):
        (tmp_path / "scripts" / script).write_text("#!/bin/sh\n")
    (tmp_path / "scripts" / "docker.sh").write_text(f'#!/bin/sh\necho "$1" >>{calls}\n')
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("ruff", "lint-imports", "mypy"):
        (bin_dir / tool).write_text("#!/bin/sh\n")
    # The main pass passes; the LocalStack pass (`-m localstack`) fails.
    (bin_dir / "pytest").write_text('#!/bin/sh\ncase "$*" in *"-m localstack"*) exit 1 ;; esac\n')
    for path in [*(tmp_path / "scripts").iterdir(), *bin_dir.iterdir()]:
        path.chmod(0o755)
    # The virtualenv is up to date (its stamp names pyproject.toml's checksum): nothing is installed.
    pyproject = (tmp_path / "pyproject.toml").read_bytes()
    checksum = subprocess.run(["cksum"], input=pyproject, capture_output=True, check=True)
    (tmp_path / ".venv" / f".installed-{checksum.stdout.split()[0].decode()}").touch()
    result = make("test", cwd=tmp_path, check=False)
    assert result.returncode != 0, result.stdout + result.stderr
    assert calls.read_text().split() == ["prepare-background", "discard"], result.stdout + result.stderr

"""``make help`` is the list of targets: every phony target is on it."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


def fake_make_test_tree(tmp_path: Path, pytest_script: str, docker_script: str) -> None:
    """The Makefile with stand-in scripts and tools, the virtualenv up to date: `make test` runs only the stand-ins.
    The service scripts log `localstack start` and the like to calls (docker.sh: what docker_script does); the
    passes run through the real scripts/interruptible.sh and scripts/main-pass.sh."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    calls = tmp_path / "calls"
    (tmp_path / "scripts").mkdir()
    for script in ("interruptible.sh", "main-pass.sh"):
        shutil.copy(ROOT / "scripts" / script, tmp_path / "scripts" / script)
    for script in ("wordpress", "localstack"):
        (tmp_path / "scripts" / f"{script}.sh").write_text(f'#!/bin/sh\necho "{script} $1" >>{calls}\n')
    # The broker's start is the `start` stage: it waits there when $STAGE names it (see WAIT_HERE).
    (tmp_path / "scripts" / "activemq.sh").write_text(
        f'#!/bin/sh\nCALLS={calls}\n{WAIT_HERE}echo "activemq $1" >>$CALLS\n'
        '[ "$STAGE" != start ] || [ "$1" != start ] || wait_here start\n'
    )
    (tmp_path / "scripts" / "docker.sh").write_text(f"#!/bin/sh\nCALLS={calls}\n{docker_script}")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("ruff", "lint-imports", "mypy"):
        (bin_dir / tool).write_text("#!/bin/sh\n")
    (bin_dir / "pytest").write_text(f"#!/bin/sh\nCALLS={calls}\n{pytest_script}")
    for path in [*(tmp_path / "scripts").iterdir(), *bin_dir.iterdir()]:
        path.chmod(0o755)
    # The virtualenv is up to date (its stamp names pyproject.toml's checksum): nothing is installed.
    pyproject = (tmp_path / "pyproject.toml").read_bytes()
    checksum = subprocess.run(["cksum"], input=pyproject, capture_output=True, check=True)
    (tmp_path / ".venv" / f".installed-{checksum.stdout.split()[0].decode()}").touch()


def test_make_test_discards_the_background_image_prepare_when_the_localstack_pass_fails(tmp_path: Path) -> None:
    """`make test` starts the images' prepare (and its Docker engine) in the background; only `image-test` or
    `docker.sh discard` stops that engine again, so a failing pass before `image-test` must discard it."""
    # The main pass passes; the LocalStack pass (`-m localstack`) fails.
    fake_make_test_tree(
        tmp_path,
        pytest_script='case "$*" in *"-m localstack"*) exit 1 ;; esac\n',
        docker_script='echo "$1" >>$CALLS.docker\n',
    )
    result = make("test", cwd=tmp_path, check=False)
    assert result.returncode != 0, result.stdout + result.stderr
    docker_calls = (tmp_path / "calls.docker").read_text().split()
    assert docker_calls == ["prepare-background", "discard"], result.stdout + result.stderr


def test_a_failing_unit_run_fails_make_test_though_the_service_tests_pass(tmp_path: Path) -> None:
    """The main pass runs the unit tests beside the service tests: a failure in either fails it, and `make test`
    stops there (no LocalStack pass; the background prepare discarded), the unit run's output shown."""
    fake_make_test_tree(
        tmp_path,
        pytest_script='echo "pytest $*" >>$CALLS\ncase "$*" in *tests/unit*) echo "unit run failed"; exit 1 ;; esac\n',
        docker_script='echo "$1" >>$CALLS.docker\n',
    )
    result = make("test", cwd=tmp_path, check=False)
    assert result.returncode != 0, result.stdout + result.stderr
    runs = [line for line in (tmp_path / "calls").read_text().splitlines() if line.startswith("pytest ")]
    assert len(runs) == 2 and not any("-m localstack" in run for run in runs), runs
    assert "unit run failed" in result.stdout
    assert (tmp_path / "calls.docker").read_text().split() == ["prepare-background", "discard"]


# The stand-ins for the passes: `wait_here STAGE` logs `STAGE pid PID` and `STAGE waiting`, and runs on until a
# signal ends it, when $STAGE names that pass (or, with $PASS_STEPS, until it has slept that many tenths of a second:
# it then logs `STAGE ran to its end`). The main and the LocalStack pass exit 2 on SIGINT, as pytest does (a
# KeyboardInterrupt); `docker.sh test` dies of it, as the script waiting for the prepare's lock does. SIGTERM ends
# them all.
WAIT_HERE = """wait_here() {
  echo "$1 pid $$" >>$CALLS
  echo "$1 waiting" >>$CALLS
  steps=0
  while [ -z "$PASS_STEPS" ] || [ $steps -lt "$PASS_STEPS" ]; do sleep 0.1; steps=$((steps + 1)); done
  echo "$1 ran to its end" >>$CALLS
}
"""
INTERRUPTIBLE_PYTEST = (
    WAIT_HERE
    + """stage=main
case "$*" in *"-m localstack"*) stage=localstack ;; esac
echo "pytest $stage" >>$CALLS
trap "exit 2" INT
[ "$STAGE" != "$stage" ] || wait_here "$stage"
"""
)
INTERRUPTIBLE_DOCKER = (
    WAIT_HERE
    + """echo "docker $1" >>$CALLS
[ "$1" != test ] || [ "$STAGE" != image ] || wait_here image
"""
)


# Runs a command as a terminal's make gets it: a test run started in the background (`cmd &`, as CI may start it) has
# SIGINT ignored, and an ignored signal stays ignored across exec, in make and its recipe shells too (a shell cannot
# reset it: `trap - INT` does nothing for a signal ignored on entry). The same pid, so make's group is signalled.
INTERRUPTIBLE = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])",
]


@pytest.mark.parametrize("stage", ["start", "main", "localstack", "image"])
@pytest.mark.parametrize(
    ("interruption", "to_group"),
    [(signal.SIGINT, True), (signal.SIGTERM, True), (signal.SIGTERM, False)],
    ids=["ctrl-c", "sigterm-to-group", "sigterm-to-make-alone"],
)
def test_an_interrupted_make_test_stops_the_pass_and_what_it_started(
    tmp_path: Path, stage: str, interruption: signal.Signals, to_group: bool
) -> None:
    """Ctrl-C (SIGINT to make's process group, as the terminal sends it), SIGTERM to that group, or SIGTERM to make's
    pid alone (as some CI runners send it), during the services' start (WordPress up, the broker starting) or each of
    the passes after `make test` started LocalStack and the images' prepare in the background. The step stops, and
    the services with it: make passes a SIGTERM it gets alone to its recipe's shell only, which must pass it on
    (before, the shell's trap ran once the pass had ended by itself, a whole test run later, and a runner's SIGKILL
    after its grace period left pytest, the brokers and the prepares running). LocalStack's start and the prepare
    never get the signal (the prepare has a process group of its own, LocalStack's start ignores SIGINT like every
    background job of a shell), so make must stop them, and exit non-zero."""
    fake_make_test_tree(tmp_path, pytest_script=INTERRUPTIBLE_PYTEST, docker_script=INTERRUPTIBLE_DOCKER)
    environment = {name: value for name, value in os.environ.items() if name not in PARENT_MAKE}
    command = ["make", "--no-print-directory", "test"]
    # The pass ends by itself after 300 steps (30 s): a pass the signal never reached says so, rather than hang.
    run = subprocess.Popen(
        [*INTERRUPTIBLE, *command],
        cwd=tmp_path,
        env=dict(environment, STAGE=stage, PASS_STEPS="300"),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    calls = tmp_path / "calls"
    passes = 2 if stage == "main" else 1  # the main pass: the unit tests and the service tests, side by side
    try:
        deadline = time.monotonic() + 60  # a guard against a hang, not a measurement
        while not (calls.exists() and calls.read_text().splitlines().count(f"{stage} waiting") == passes):
            assert run.poll() is None and time.monotonic() < deadline, f"make test never reached the {stage} pass"
            time.sleep(0.05)
        if to_group:
            os.killpg(run.pid, interruption)
        else:
            os.kill(run.pid, interruption)
        output, _ = run.communicate(timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode != 0, output
    logged = calls.read_text().splitlines()
    after = logged[logged.index(f"{stage} waiting") + 1 :]
    assert f"{stage} ran to its end" not in after, f"the {stage} pass never got the signal: {after}\n{output}"
    pass_pids = [int(line.removeprefix(f"{stage} pid ")) for line in logged if line.startswith(f"{stage} pid ")]
    assert len(pass_pids) == passes, logged
    assert not [pid for pid in pass_pids if alive(pid)], f"the {stage} pass outlived make: {after}\n{output}"
    assert "docker discard" in after, output
    if stage != "image":  # the LocalStack pass stopped its LocalStack before the image test began
        assert "localstack stop" in after, output
    if stage in ("start", "main"):
        assert "wordpress stop" in after and "activemq stop" in after, output

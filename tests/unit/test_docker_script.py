"""scripts/docker.sh build against a stand-in `docker` CLI (DOCKER=...): what it leaves on the engine.

A rebuild supersedes the images under the same tags, and the legacy builder keeps each build's builder stage as
an untagged image; left there, every `make image-test` after a change added about 1 GB to the engine for good.

`prepare` then `test` against a stand-in engine (a fake `dockerd` and `docker`): which images the test trusts, and
that the engine a prepare started is stopped by the test that follows, whatever it builds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
BUILDER_LABEL = "org.kordiam-bridge.builder"

# The stand-in keeps its images in state.json: {"tags": {tag: id}, "images": {id: {"labels": {...}, "created": n}}}
# and logs every call to calls.json. `build` gives the tag a new id and, like the legacy builder, leaves a new
# untagged builder-stage image labelled with its EXTRAS.
FAKE_DOCKER = r"""
import json, sys
from pathlib import Path
state_file, calls_file = Path(sys.argv[0]).with_name("state.json"), Path(sys.argv[0]).with_name("calls.json")
state, calls = json.loads(state_file.read_text()), json.loads(calls_file.read_text())
args = sys.argv[1:]
calls.append(args)
calls_file.write_text(json.dumps(calls))
tags, images = state["tags"], state["images"]
def tagged():
    return set(tags.values())
if args[0] == "info":
    pass
elif args[0] == "build":
    tag = args[args.index("-t") + 1]
    extras = next((a.split("=", 1)[1] for a in args if a.startswith("EXTRAS=")), "")
    state["clock"] += 1
    new = f"sha256:new-{tag}-{state['clock']}"
    images[new] = {"labels": {}, "created": state["clock"]}
    images[f"sha256:stage-{extras}-{state['clock']}"] = {"labels": {"LABEL": extras}, "created": state["clock"]}
    tags[tag] = new
    print(new)
elif args[:2] == ["image", "inspect"]:
    fmt, name = args[3], args[4]
    image_id = tags.get(name, name)
    if image_id not in images:
        sys.exit(1)
    if "Size" in fmt:
        print(123000000)
    elif "Labels" in fmt:
        print(images[image_id]["labels"].get("LABEL", "<no value>"))
    else:
        print(image_id)
elif args[0] == "images":
    dangling = [i for i in images if i not in tagged()]
    if any("label=" in a for a in args):
        dangling = [i for i in dangling if "LABEL" in images[i]["labels"]]
    for image_id in sorted(dangling, key=lambda i: -images[i]["created"]):
        print(image_id)
elif args[:2] == ["image", "rm"]:
    for image_id in args[2:]:
        if image_id in tagged():
            sys.exit(1)
        images.pop(image_id, None)
else:
    sys.exit(f"fake docker: unexpected {args}")
state_file.write_text(json.dumps(state))
""".replace("LABEL", BUILDER_LABEL)


def test_a_rebuild_removes_what_it_superseded_and_nothing_else(tmp_path: Path) -> None:
    docker = tmp_path / "docker"
    docker.write_text(f"#!{sys.executable}\n{FAKE_DOCKER}")
    docker.chmod(0o755)
    images = {
        "sha256:old-prod": {"labels": {}, "created": 1},
        "sha256:old-demo": {"labels": {}, "created": 1},
        "sha256:stage-demo-older": {"labels": {BUILDER_LABEL: "demo"}, "created": 1},
        "sha256:stage--older": {"labels": {BUILDER_LABEL: ""}, "created": 1},
        "sha256:someone-elses": {"labels": {}, "created": 1},
    }
    tags = {"t-prod:local": "sha256:old-prod", "t-demo:local": "sha256:old-demo"}
    (tmp_path / "state.json").write_text(json.dumps({"tags": tags, "images": images, "clock": 1}))
    (tmp_path / "calls.json").write_text("[]")
    env = dict(os.environ, DOCKER=str(docker), BASE_IMAGE="base:x", IMAGE="t-prod:local", DEMO_IMAGE="t-demo:local")
    result = subprocess.run(
        [str(ROOT / "scripts" / "docker.sh"), "build"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    left = set(json.loads((tmp_path / "state.json").read_text())["images"])
    # Superseded: the two old images and the older demo builder stage. Kept: the new images, the newest builder
    # stage of each EXTRAS (the legacy builder's layer cache), and what the script did not make.
    assert left == {
        "sha256:new-t-prod:local-2",
        "sha256:new-t-demo:local-3",
        "sha256:stage--2",
        "sha256:stage-demo-3",
        "sha256:someone-elses",
    }


def test_engine_stop_leaves_a_process_alone_that_a_stale_pid_file_names(tmp_path: Path) -> None:
    """After a reboot or a crash the pid in engine/dockerd.pid may belong to anything: engine-stop runs as root."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        (tmp_path / "engine").mkdir()
        (tmp_path / "engine" / "dockerd.pid").write_text(f"{bystander.pid}\n")
        env = dict(os.environ, KORDIAM_BRIDGE_CACHE=str(tmp_path))
        command = [str(ROOT / "scripts" / "docker.sh"), "engine-stop"]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=90, check=False)
        assert result.returncode == 0, result.stderr
        assert bystander.poll() is None, "engine-stop signalled a process that is not dockerd"
        assert "not dockerd" in result.stderr
        assert not (tmp_path / "engine" / "dockerd.pid").exists()
    finally:
        bystander.kill()
        bystander.wait()


# A stand-in engine for `prepare` and `test`: `dockerd` runs until SIGTERM with a marker file while it runs, and
# `docker info` answers while the marker is there. `build` logs itself; the first build (when EDIT_DURING_BUILD is set)
# edits a source file, as a developer editing during `make test`'s main pass would. While the file BLOCK_BUILDS names
# exists, a build logs `build-blocked` and runs on until it is removed, or logs `build-stopped` when SIGTERM ends it.
FAKE_DOCKERD = """#!/bin/bash
touch "$FAKE_ENGINE_UP"
trap 'rm -f "$FAKE_ENGINE_UP"; exit 0' TERM
while :; do sleep 0.1; done
"""
FAKE_ENGINE_DOCKER = """#!/bin/bash
case "$1" in
  info) [[ -f "$FAKE_ENGINE_UP" ]] ;;
  version) echo 20.10 ;;
  build)
    echo build >>"$FAKE_CALLS"
    if [[ -n "${BLOCK_BUILDS:-}" && -f "$BLOCK_BUILDS" ]]; then
      trap 'echo build-stopped >>"$FAKE_CALLS"; exit 143' TERM
      echo build-blocked >>"$FAKE_CALLS"
      while [[ -f "$BLOCK_BUILDS" ]]; do sleep 0.1; done
    fi
    if [[ -n "${EDIT_DURING_BUILD:-}" && ! -f "$EDIT_DURING_BUILD.done" ]]; then
      echo "# edited" >>"$EDIT_DURING_BUILD"; touch "$EDIT_DURING_BUILD.done"
    fi ;;
  image) [[ "$2" == inspect ]] && echo 1000000 ;;
  images) ;;
  *) exit 1 ;;
esac
"""
FAKE_BUILDAH = """#!/bin/bash
case "$1" in
  --version) echo "buildah version 1.28.0" ;;
  inspect) echo "[CMD kordiam-bridge-healthcheck]" ;;
  *) echo id ;;
esac
"""


def _engine_sandbox(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A git checkout holding scripts/docker.sh and one source file, stand-ins on PATH, its own cache."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "bridge").mkdir()
    (repo / "scripts" / "docker.sh").write_bytes((ROOT / "scripts" / "docker.sh").read_bytes())
    (repo / "scripts" / "docker.sh").chmod(0o755)
    (repo / "bridge" / "source.py").write_text("VALUE = 1\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (
        ("dockerd", FAKE_DOCKERD),
        ("docker", FAKE_ENGINE_DOCKER),
        ("buildah", FAKE_BUILDAH),
        ("docker-compose", "#!/bin/sh\n"),
        ("iptables", "#!/bin/sh\n"),
    ):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = dict(
        os.environ,
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        DOCKER=str(bin_dir / "docker"),
        BASE_IMAGE="base:x",
        KORDIAM_BRIDGE_CACHE=str(tmp_path / "cache"),
        FAKE_ENGINE_UP=str(tmp_path / "engine-up"),
        FAKE_CALLS=str(tmp_path / "calls"),
        PYTHON="/bin/true",
    )
    return repo, env


def _docker_sh(repo: Path, env: dict[str, str], action: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    command = [str(repo / "scripts" / "docker.sh"), action]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _wait_for_call(tmp_path: Path, call: str) -> None:
    """Until the stand-ins log `call` (a minute at most: a guard against a hang, not a measurement)."""
    calls, deadline = tmp_path / "calls", time.monotonic() + 60
    while not (calls.exists() and call in calls.read_text().split()):
        assert time.monotonic() < deadline, f"the stand-ins never logged {call!r}"
        time.sleep(0.05)


def _stop_fake_engine(tmp_path: Path) -> None:
    pid_file = tmp_path / "cache" / "engine" / "dockerd.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


@pytest.mark.skipif(os.geteuid() != 0, reason="engine-start starts an engine only as root")
def test_a_test_that_rebuilds_after_a_source_change_still_stops_the_engine_the_prepare_started(
    tmp_path: Path,
) -> None:
    repo, env = _engine_sandbox(tmp_path)
    try:
        prepared = _docker_sh(repo, env, "prepare")
        assert prepared.returncode == 0, prepared.stderr
        assert (tmp_path / "engine-up").exists()
        (repo / "bridge" / "source.py").write_text("VALUE = 2\n")
        tested = _docker_sh(repo, env, "test")
        assert tested.returncode == 0, tested.stderr
        assert "sources changed" in tested.stderr
        assert not (tmp_path / "engine-up").exists(), "the engine the prepare started was left running"
    finally:
        _stop_fake_engine(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="engine-start starts an engine only as root")
def test_a_source_edited_while_the_images_build_makes_the_test_build_them_again(tmp_path: Path) -> None:
    repo, env = _engine_sandbox(tmp_path)
    env["EDIT_DURING_BUILD"] = str(repo / "bridge" / "source.py")
    try:
        prepared = _docker_sh(repo, env, "prepare")
        assert prepared.returncode == 0, prepared.stderr
        builds = (tmp_path / "calls").read_text().count("build")
        tested = _docker_sh(repo, env, "test")
        assert tested.returncode == 0, tested.stderr
        assert (tmp_path / "calls").read_text().count("build") > builds, "images built from older sources were used"
    finally:
        _stop_fake_engine(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="engine-start starts an engine only as root")
def test_discard_stops_a_background_prepare_midway_and_leaves_nothing_a_later_test_would_reuse(tmp_path: Path) -> None:
    """`make test` discards the prepare when a pass fails: the operator gets the prompt back when the prepare is
    stopped (its builds and the engine it started), not when it would have finished minutes later."""
    repo, env = _engine_sandbox(tmp_path)
    block = tmp_path / "block-builds"
    block.touch()
    env["BLOCK_BUILDS"] = str(block)
    try:
        started = _docker_sh(repo, env, "prepare-background")
        assert started.returncode == 0, started.stderr
        _wait_for_call(tmp_path, "build-blocked")
        # The build runs on until it is stopped: a discard that waited for it would never return.
        discarded = _docker_sh(repo, env, "discard", timeout=60)
        assert discarded.returncode == 0, discarded.stderr
        assert "build-stopped" in (tmp_path / "calls").read_text().split()
        assert not (tmp_path / "engine-up").exists(), "the engine the prepare started was left running"
        assert not (repo / ".cache" / "image-prepared").exists()
        block.unlink()
        builds = (tmp_path / "calls").read_text().split().count("build")
        tested = _docker_sh(repo, env, "test")
        assert tested.returncode == 0, tested.stderr
        assert "did not finish" in tested.stderr
        assert (tmp_path / "calls").read_text().split().count("build") > builds, "half-built images were used"
    finally:
        block.unlink(missing_ok=True)
        _stop_fake_engine(tmp_path)

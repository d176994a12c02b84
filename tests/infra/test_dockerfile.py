"""The container image: the Dockerfile's properties (no Docker engine or hadolint here) and its helper scripts."""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra.support import DOCKERFILE, INFRA, REPO, Stage, parse_dockerfile

BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "clang", "cargo", "rustc", "python3-dev", "libc6-dev")
HEALTHCHECK = INFRA / "docker" / "healthcheck.py"


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(item, str) for item in value), args
    return value


def test_multi_stage_on_a_pinned_slim_python(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    for stage in stages:
        assert re.fullmatch(r"python:3\.1[1-3](\.\d+)?-slim-bookworm(@sha256:[0-9a-f]{64})?", stage.base), stage.base
    # The virtualenv's interpreter is a symlink into the base: every stage must use the same one.
    assert len({stage.base for stage in stages}) == 1
    assert stages[0].name == "builder" and stages[-1].name == "runtime"


def test_final_stage_has_no_build_tools(stages: list[Stage]) -> None:
    final = stages[-1]
    for run in final.all("RUN"):
        assert "apt-get install" not in run.args and "pip install" not in run.args, run
        for tool in BUILD_TOOLS:
            assert not re.search(rf"\b{re.escape(tool)}\b", run.args), f"{tool} in the final stage: {run.args}"
    copies = final.all("COPY")
    from_builder = [c.args for c in copies if c.args.startswith("--from=builder")]
    assert any("/opt/venv /opt/venv" in args for args in from_builder)
    # Only the virtualenv and tini come from the builder: no pip cache, no sources.
    assert all(("/opt/venv" in args) or ("tini" in args) for args in from_builder)
    assert not any("--from=builder /src" in args or "/root/.cache" in args for args in from_builder)


def test_runs_as_a_fixed_non_root_user(stages: list[Stage]) -> None:
    users = stages[-1].all("USER")
    assert users, "no USER in the final stage"
    user = users[-1].args
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, user
    assert user not in ("root", "0", "0:0")


def test_entrypoint_is_tini_then_the_worker_and_run_is_the_default(stages: list[Stage]) -> None:
    final = stages[-1]
    entrypoint = exec_form(final.all("ENTRYPOINT")[-1].args)
    assert entrypoint[0] == "/usr/bin/tini" and entrypoint[-1] == "kordiam-bridge"
    assert "-s" not in entrypoint  # tini is PID 1: no subreaper mode needed
    assert exec_form(final.all("CMD")[-1].args) == ["run"]
    assert final.all("STOPSIGNAL")[-1].args == "SIGTERM"
    # tini comes from Debian (the static build, so the final stage needs no apt).
    assert any("tini-static /usr/bin/tini" in c.args for c in final.all("COPY"))
    assert "install -y --no-install-recommends tini" in " ".join(r.args for r in stages[0].all("RUN"))


def test_healthcheck_calls_healthz_without_curl(stages: list[Stage]) -> None:
    final = stages[-1]
    healthcheck = final.all("HEALTHCHECK")[-1].args
    options, _, command = healthcheck.partition("CMD ")
    assert re.search(r"--interval=\d+s", options) and re.search(r"--start-period=\d+s", options)
    assert exec_form(command) == ["kordiam-bridge-healthcheck"]
    assert any("healthcheck.py /usr/local/bin/kordiam-bridge-healthcheck" in c.args for c in final.all("COPY"))
    assert "curl" not in DOCKERFILE.read_text().split("HEALTHCHECK", 1)[1]
    assert "/healthz" in HEALTHCHECK.read_text()


def test_ops_server_listens_on_every_interface(stages: list[Stage]) -> None:
    env = " ".join(i.args for i in stages[-1].all("ENV"))
    assert "BRIDGE_OPS__HOST=0.0.0.0" in env
    assert "PYTHONUNBUFFERED=1" in env
    assert "9090" in stages[-1].all("EXPOSE")[-1].args


def test_dockerignore_sends_only_what_the_build_needs() -> None:
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!bridge/", "!infra/docker/"} <= set(rules)
    copied = re.findall(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE)
    for sources in copied:
        for source in sources.split():
            assert (REPO / source).exists(), f"COPY source {source} does not exist"


# --- the helper scripts -----------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def ops_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def run_healthcheck(port: int) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env["BRIDGE_OPS__PORT"] = str(port)
    env["BRIDGE_HEALTHCHECK_TIMEOUT"] = "2"
    result = subprocess.run([sys.executable, str(HEALTHCHECK)], env=env, capture_output=True, timeout=20, check=False)
    return result.returncode


def test_healthcheck_script_follows_healthz(ops_server: http.server.HTTPServer) -> None:
    port = ops_server.server_address[1]
    _Handler.status = 200
    assert run_healthcheck(port) == 0
    _Handler.status = 503
    assert run_healthcheck(port) == 1
    ops_server.shutdown()
    ops_server.server_close()
    assert run_healthcheck(port) == 1  # nothing listening
    assert os.access(HEALTHCHECK, os.X_OK)
    assert HEALTHCHECK.read_text().startswith("#!/usr/bin/env python3\n")


def test_runtime_requirements_leave_the_demo_emulator_out() -> None:
    script = INFRA / "docker" / "requirements.py"
    plain = subprocess.run(
        [sys.executable, str(script), str(REPO / "pyproject.toml")], capture_output=True, text=True, check=True
    ).stdout.split()
    demo = subprocess.run(
        [sys.executable, str(script), str(REPO / "pyproject.toml"), "--with-demo"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert not any(line.lower().startswith("moto") for line in plain)
    assert any(line.lower().startswith("moto") for line in demo)
    assert any(line.startswith("aiobotocore") for line in plain)
    assert len(demo) == len(plain) + 1


def test_slim_botocore_keeps_only_the_listed_services(tmp_path: Path) -> None:
    sys.path.insert(0, str(INFRA / "docker"))
    try:
        import slim_botocore
    finally:
        sys.path.pop(0)
    data = tmp_path / "botocore" / "data"
    for service in ("sqs", "dynamodb", "sts", "ec2", "s3"):
        (data / service / "2012-11-05").mkdir(parents=True)
    (data / "endpoints.json").write_text("{}")
    assert slim_botocore.slim(tmp_path, {"sqs", "dynamodb", "sts"}) == 2
    assert sorted(p.name for p in data.iterdir()) == ["dynamodb", "endpoints.json", "sqs", "sts"]
    with pytest.raises(SystemExit, match="no model for: kinesis"):
        slim_botocore.slim(tmp_path, {"sqs", "kinesis"})


def test_the_worker_calls_no_aws_service_the_image_drops() -> None:
    kept = re.search(r'ARG BOTOCORE_SERVICES="([^"]+)"', DOCKERFILE.read_text())
    assert kept
    services = set(kept.group(1).split())
    used = set()
    for path in (REPO / "bridge").rglob("*.py"):
        used.update(re.findall(r"create_client\(\s*\"([a-z0-9-]+)\"", path.read_text()))
    assert used, "found no create_client calls in bridge/"
    assert used <= services, f"bridge/ creates clients for {sorted(used - services)}, which the image removes"

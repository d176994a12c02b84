"""The Dockerfile's properties that running the image cannot show (tests/image runs it), and its helper scripts."""

from __future__ import annotations

import http.server
import importlib
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


def test_stages_share_one_debian_base_with_debians_python(stages: list[Stage]) -> None:
    default = re.search(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert default and re.fullmatch(r"debian:bookworm-slim(@sha256:[0-9a-f]{64})?", default.group(1))
    assert [(stage.base, stage.name) for stage in stages] == [
        ("${BASE_IMAGE}", "python"),
        ("python", "builder"),
        ("python", "runtime"),
    ]
    assert "python3 " in stages[0].all("RUN")[0].args


def test_builds_without_fetching_anything_first_and_without_buildkit() -> None:
    """The image test builds with BuildKit and the legacy builder; this keeps buildah and offline BuildKit too."""
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)  # BuildKit would pull a frontend
    for stage in parse_dockerfile(text):
        for instruction in stage.instructions:
            assert not re.search(r"--(chmod|chown|link|mount|exclude|parents)\b", instruction.args), instruction
            assert "<<" not in instruction.args, f"heredoc (BuildKit only): {instruction}"


def test_final_stage_installs_nothing_and_takes_only_the_virtualenv(stages: list[Stage]) -> None:
    final = stages[-1]
    for run in final.all("RUN"):
        assert "apt-get install" not in run.args and "pip install" not in run.args, run
        for tool in BUILD_TOOLS:
            assert not re.search(rf"\b{re.escape(tool)}\b", run.args), f"{tool} in the final stage: {run.args}"
        assert "--system" not in run.args  # uid 10001 is above SYS_UID_MAX: useradd would warn
    from_builder = [c.args for c in final.all("COPY") if c.args.startswith("--from=")]
    assert from_builder == ["--from=builder /opt/venv /opt/venv"]  # no pip cache, no sources


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


def test_healthcheck_script_finds_the_port_in_the_config_file(
    ops_server: http.server.HTTPServer, tmp_path: Path
) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(f"[ops]\nport = {ops_server.server_address[1]}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env["BRIDGE_CONFIG"] = str(config)
    _Handler.status = 200
    result = subprocess.run([sys.executable, str(HEALTHCHECK)], env=env, capture_output=True, timeout=20, check=False)
    assert result.returncode == 0, result.stderr


def test_healthcheck_asks_the_ops_port_the_worker_listens_on(tmp_path: Path) -> None:
    """The worker takes ops.port from its config file unless BRIDGE_OPS__PORT overrides it; so must the check."""
    sys.path.insert(0, str(INFRA / "docker"))
    try:
        healthcheck = importlib.import_module("healthcheck")
    finally:
        sys.path.pop(0)
    config = tmp_path / "bridge.toml"
    config.write_text('[queue]\nurl = "x"\n\n[ops]\nhost = "0.0.0.0"\nport = 9191\n')
    worker = ["/usr/bin/tini", "--", "kordiam-bridge", "run", "--config", str(config)]
    assert healthcheck.healthz_url({}, worker) == "http://127.0.0.1:9191/healthz"
    assert healthcheck.healthz_url({}, [*worker[:4], f"--config={config}"]) == "http://127.0.0.1:9191/healthz"
    assert healthcheck.healthz_url({"BRIDGE_CONFIG": str(config)}, worker[:4]) == "http://127.0.0.1:9191/healthz"
    assert healthcheck.healthz_url({"BRIDGE_OPS__PORT": "9292"}, worker) == "http://127.0.0.1:9292/healthz"
    assert healthcheck.healthz_url({}, worker[:4]) == "http://127.0.0.1:9090/healthz"  # no file: the default
    # A file the check cannot read leaves the default: the worker would not have started on it either.
    assert healthcheck.healthz_url({}, [*worker[:4], "--config", str(tmp_path / "none.toml")]).endswith(":9090/healthz")
    url = "http://127.0.0.1:8780/healthz"
    assert healthcheck.healthz_url({"BRIDGE_HEALTHCHECK_URL": url}, worker) == url


@pytest.mark.parametrize(
    ("environ", "file_port", "port"),
    [
        ({"BRIDGE_OPS__PORT": " 9292\n"}, "9191", 9292),
        ({"bridge_ops__port": "9292"}, "9191", 9292),
        ({}, '"9191"', 9191),
        ({}, "9191.0", 9191),
        ({}, '" 9191 "', 9191),
    ],
)
def test_healthcheck_reads_the_port_as_the_worker_does(
    tmp_path: Path, environ: dict[str, str], file_port: str, port: int
) -> None:
    # Before: http://127.0.0.1: 9292/healthz, :9191.0 … for a port the worker listens on: unhealthy for ever.
    sys.path.insert(0, str(INFRA / "docker"))
    try:
        healthcheck = importlib.import_module("healthcheck")
    finally:
        sys.path.pop(0)
    config = tmp_path / "bridge.toml"
    config.write_text(f"[ops]\nport = {file_port}\n")
    worker = ["/usr/bin/tini", "--", "kordiam-bridge", "run", "--config", str(config)]
    assert healthcheck.healthz_url(environ, worker) == f"http://127.0.0.1:{port}/healthz"


def test_healthcheck_asks_the_ingress_port_when_the_container_runs_the_ingress(tmp_path: Path) -> None:
    """`kordiam-bridge ingress` serves /healthz on ingress.port and runs no ops server."""
    sys.path.insert(0, str(INFRA / "docker"))
    try:
        healthcheck = importlib.import_module("healthcheck")
    finally:
        sys.path.pop(0)
    config = tmp_path / "bridge.toml"
    config.write_text("[ops]\nport = 9191\n\n[ingress]\nport = 8781\n")
    ingress = ["/usr/bin/tini", "--", "/opt/venv/bin/kordiam-bridge", "ingress"]
    assert healthcheck.healthz_url({}, ingress) == "http://127.0.0.1:8780/healthz"
    assert healthcheck.healthz_url({}, [*ingress, "--config", str(config)]) == "http://127.0.0.1:8781/healthz"
    environ = {"BRIDGE_INGRESS__PORT": "8782", "BRIDGE_OPS__PORT": "9292"}
    assert healthcheck.healthz_url(environ, [*ingress, "--config", str(config)]) == "http://127.0.0.1:8782/healthz"


def test_runtime_requirements_leave_the_demo_emulator_out() -> None:
    script = INFRA / "docker" / "requirements.py"

    def requirements(*extras: str) -> list[str]:
        arguments = [arg for extra in extras for arg in ("--extra", extra)]
        command = [sys.executable, str(script), str(REPO / "pyproject.toml"), *arguments]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()

    plain, demo, dev = requirements(), requirements("demo"), requirements("dev")
    assert not any(line.lower().startswith("moto") for line in plain)
    assert any(line.startswith("aiobotocore") for line in plain)
    assert [line for line in demo if line not in plain] == ["moto[server,sqs,dynamodb]>=5.1,<5.3"]
    # dev names "kordiam-bridge[demo]": expanded, since the project itself is on no index.
    assert "moto[server,sqs,dynamodb]>=5.1,<5.3" in dev and not any(line.startswith("kordiam-bridge") for line in dev)


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


# --- reproducible dependencies ----------------------------------------------------------------------------------

LOCK = INFRA / "docker" / "requirements.lock"


def locked_versions() -> dict[str, str]:
    pins: dict[str, str] = {}
    for text in LOCK.read_text().splitlines():
        line = text.split("#", 1)[0].strip()
        if line:
            name, separator, version = line.partition("==")
            assert separator and version and " " not in version, f"not an exact pin: {line!r}"
            pins[canonical(name)] = version
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_requirement_of_both_images_is_pinned_in_the_lock() -> None:
    """Ranges in pyproject.toml alone would let two builds of one commit install different packages."""
    from packaging.requirements import Requirement

    sys.path.insert(0, str(INFRA / "docker"))
    try:
        import requirements
    finally:
        sys.path.pop(0)
    pins = locked_versions()
    for line in requirements.requirements(str(REPO / "pyproject.toml"), ["demo", "otel"]):
        requirement = Requirement(line)
        name = canonical(requirement.name)
        assert name in pins, f"{name} is not in {LOCK.name}"
        assert requirement.specifier.contains(pins[name]), f"{LOCK.name} pins {name}=={pins[name]}, not {line}"


def test_the_build_installs_the_lock_and_refuses_a_package_outside_it() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"pip install [^\n]*-c /tmp/build/requirements\.lock", text)
    assert "requirements.py --check-locked /tmp/build/requirements.lock" in text
    sys.path.insert(0, str(INFRA / "docker"))
    try:
        import requirements
    finally:
        sys.path.pop(0)
    lock = {"aiohttp": "3.14.5", "typing-extensions": "4.16.0"}
    assert requirements.unlocked({"aiohttp": "3.14.5", "typing_extensions": "4.16.0", "pip": "23.0.1"}, lock) == []
    assert requirements.unlocked({"aiohttp": "3.14.6", "Yarl": "1.25.1"}, lock) == [
        "aiohttp 3.14.6 (locked: 3.14.5)",
        "Yarl 1.25.1 (locked: none)",
    ]

"""docker-compose.yml without a Docker engine: its secrets, the LocalStack profile, and that its pieces fit.

tests/image runs the moto profile for real (`make image-test`); these keep what that run cannot show: the
LocalStack profile (its image is in no registry reachable here), the absence of secrets, the configuration's
agreement with the services. The queue-creation script runs for real against a moto server, and the worker's own
start-up check (redrive policy → dead-letter queue) runs against what it created.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from bridge.config import IngressCommandSettings, load_settings
from bridge.ingress.app import IngressServer
from tests.infra.support import COMPOSE_DIR, COMPOSE_FILE, REPO

SECRETISH = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL|API_KEY", re.IGNORECASE)
EMULATOR_DUMMIES = {"test"}
INTERPOLATION = re.compile(r"^\$\{([A-Z_][A-Z0-9_]*)(?::?-([^}]*))?\}$")
CREATE_QUEUES = COMPOSE_DIR / "create_queues.py"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def interpolate(value: str) -> str:
    """Resolve ${VAR:-default} the way compose does when VAR is unset."""
    return re.sub(r"\$\{[A-Z_][A-Z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, duration
    return float(match.group(1))


def command_options(command: list[str]) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in command if arg.startswith("--") and "=" in arg)


# --- structure --------------------------------------------------------------------------------------------------


def test_services_and_profiles(compose: dict[str, Any]) -> None:
    found = services(compose)
    assert set(found) == {"localstack", "moto", "sqs-init", "simulator", "worker", "ingress"}
    assert found["localstack"]["profiles"] == ["localstack"] and found["moto"]["profiles"] == ["moto"]
    for name in ("sqs-init", "simulator", "worker", "ingress"):
        assert sorted(found[name]["profiles"]) == ["localstack", "moto"]
    # Both emulators answer as "sqs" on port 4566, so one worker configuration fits either.
    for name in ("localstack", "moto"):
        assert found[name]["networks"]["default"]["aliases"] == ["sqs"]
        assert found[name]["ports"] == ["127.0.0.1:${BRIDGE_SQS_PORT:-4566}:4566"]


def test_the_stack_runs_the_images_docker_sh_builds(compose: dict[str, Any]) -> None:
    """`make up` and the image test build with scripts/docker.sh, whose IMAGE / DEMO_IMAGE name the tags: the stack
    must run those tags, not a fixed name that may hold an older build (or none, and compose builds another)."""
    script = (REPO / "scripts" / "docker.sh").read_text()
    for variable, default in (("IMAGE", "kordiam-bridge:local"), ("DEMO_IMAGE", "kordiam-bridge-demo:local")):
        assert f'{variable}="${{{variable}:-{default}}}"' in script
    found = services(compose)
    for name, variable, default in (
        ("sqs-init", "IMAGE", "kordiam-bridge:local"),
        ("simulator", "IMAGE", "kordiam-bridge:local"),
        ("worker", "IMAGE", "kordiam-bridge:local"),
        ("ingress", "IMAGE", "kordiam-bridge:local"),
        ("moto", "DEMO_IMAGE", "kordiam-bridge-demo:local"),
    ):
        match = INTERPOLATION.match(found[name]["image"])
        assert match and (match.group(1), match.group(2)) == (variable, default), (name, found[name]["image"])


def test_localstack_is_pinned_to_the_last_tag_without_a_token(compose: dict[str, Any]) -> None:
    # tests/image runs the moto profile; LocalStack's image is in no registry these machines reach.
    localstack = services(compose)["localstack"]
    match = INTERPOLATION.match(localstack["image"])
    assert match and match.group(1) == "LOCALSTACK_IMAGE" and match.group(2) == "localstack/localstack:4.14.0"
    assert localstack["environment"]["LOCALSTACK_AUTH_TOKEN"] is None  # passed through, never written here
    assert "SQS" in localstack["environment"]["SERVICES"].upper()
    test = localstack["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python3", "-c"]
    compile(test[3], "localstack-healthcheck", "exec")


def test_the_queues_exist_before_the_worker_and_the_simulator_start(compose: dict[str, Any]) -> None:
    """With either emulator: no depends_on on a service of one profile only (Compose 1.29 has no `required`)."""
    found = services(compose)
    for name in ("simulator", "worker", "ingress"):
        assert found[name]["depends_on"]["sqs-init"] == {"condition": "service_completed_successfully"}
    assert found["worker"]["depends_on"]["simulator"] == {"condition": "service_healthy"}
    init = found["sqs-init"]
    assert "depends_on" not in init and init["restart"] == "no" and init["healthcheck"] == {"disable": True}
    assert int(init["environment"]["BRIDGE_INIT_WAIT_SECONDS"]) >= 60  # waits for the emulator itself
    for service in found.values():
        for dependency in (service.get("depends_on") or {}).values():
            assert "required" not in dependency


def test_ingress_gets_time_to_finish_its_calls(compose: dict[str, Any]) -> None:
    """On SIGTERM the ingress finishes the calls in progress (up to IngressServer.shutdown_timeout) before it exits;
    compose's default grace of 10 s would SIGKILL it in the middle, and Kordiam would see its call cut off."""
    ingress = services(compose)["ingress"]
    assert ingress["stop_signal"] == "SIGTERM"
    assert seconds(ingress["stop_grace_period"]) >= IngressServer.shutdown_timeout + 5


def test_worker_gets_time_to_drain_and_runs_locked_down(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = services(compose)["worker"]
    assert worker["stop_signal"] == "SIGTERM"
    settings = compose_settings(compose, monkeypatch)
    assert seconds(worker["stop_grace_period"]) >= settings.queue.shutdown_timeout + 10
    assert worker["read_only"] is True and worker["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in worker["security_opt"]
    assert "bridge-data:/var/lib/kordiam-bridge" in worker["volumes"]
    assert "./infra/compose/bridge.toml:/etc/kordiam-bridge/bridge.toml:ro" in worker["volumes"]
    assert worker["command"] == ["run", "--config", "/etc/kordiam-bridge/bridge.toml"]
    for name, service in services(compose).items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"


def test_no_secret_is_written_into_the_file(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        for key, value in (service.get("environment") or {}).items():
            if not SECRETISH.search(key):
                continue
            if value is None or value in EMULATOR_DUMMIES:
                continue  # passed through from the environment, or the emulators' dummy key
            assert INTERPOLATION.match(str(value)), f"{name}: {key} is hard-coded"
        for arg in service.get("command") or []:
            if SECRETISH.search(arg.split("=", 1)[0]):
                assert INTERPOLATION.match(arg.split("=", 1)[1]), f"{name}: {arg} is hard-coded"
    text = COMPOSE_FILE.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text), "an AWS access key id in docker-compose.yml"


# --- the pieces fit ---------------------------------------------------------------------------------------------


def compose_settings(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    worker = services(compose)["worker"]
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)
    for key, value in worker["environment"].items():
        if key.startswith("BRIDGE_"):
            monkeypatch.setenv(key, interpolate(str(value)))
    return load_settings(COMPOSE_DIR / "bridge.toml")


def test_worker_config_matches_the_simulator_and_the_queues(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = compose_settings(compose, monkeypatch)
    found = services(compose)
    simulator = command_options(found["simulator"]["command"])
    init = found["sqs-init"]["environment"]

    assert settings.queue.url == simulator["queue-url"]
    assert settings.queue.endpoint_url == simulator["sqs-endpoint-url"] == "http://sqs:4566"
    assert settings.queue.region == simulator["region"] == init["BRIDGE_INIT_REGION"]
    assert settings.queue.url.rsplit("/", 1)[1] == init["BRIDGE_INIT_QUEUE_NAME"]
    assert settings.queue.dlq_url and settings.queue.dlq_url.rsplit("/", 1)[1] == init["BRIDGE_INIT_DLQ_NAME"]
    assert "/000000000000/" in settings.queue.url  # LocalStack's account; moto is given the same one
    assert found["moto"]["environment"]["MOTO_ACCOUNT_ID"] == "000000000000"
    assert settings.queue.visibility_timeout == int(init["BRIDGE_INIT_VISIBILITY_TIMEOUT"])

    base = urlparse(settings.kordiam.base_url)
    assert (base.hostname, base.port) == ("simulator", int(simulator["port"]))
    assert settings.kordiam.client_id == simulator["client-id"]
    assert settings.kordiam.client_secret.get_secret_value() == interpolate(simulator["client-secret"])

    assert settings.ops.port == 9090 and "127.0.0.1:${BRIDGE_OPS_PORT:-9090}:9090" in found["worker"]["ports"]
    assert settings.state.backend == "sqlite" and str(settings.state.sqlite_path).startswith("/var/lib/kordiam-bridge")
    for channel in settings.channels:
        assert str(channel.options["path"]).startswith("/var/lib/kordiam-bridge/"), channel.name


@pytest.fixture
def moto_server() -> Iterator[str]:
    """A moto server in its own process with LocalStack's account id, like compose's moto service."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, MOTO_ACCOUNT_ID="000000000000")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, "moto server exited"
                assert time.monotonic() < deadline, "moto server did not start within 30 s"
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def run_create_queues(endpoint: str, environment: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_INIT_")}
    env.update({k: str(v) for k, v in environment.items() if k.startswith(("BRIDGE_INIT_", "AWS_"))})
    env["BRIDGE_INIT_ENDPOINT_URL"] = endpoint
    return subprocess.run(
        [sys.executable, str(CREATE_QUEUES)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def test_queues_created_at_start_give_the_worker_its_dead_letter_queue(
    compose: dict[str, Any], moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    from bridge.queue.sqs import SqsTransport

    environment = services(compose)["sqs-init"]["environment"]
    for _ in range(2):  # idempotent: a restarted emulator container runs the hook again
        result = run_create_queues(moto_server, environment)
        assert result.returncode == 0, result.stderr
    assert "dead-letter queue" in result.stdout

    client = boto3.client(
        "sqs",
        endpoint_url=moto_server,
        region_name="eu-central-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    queue = client.get_queue_url(QueueName="kordiam-notifications")["QueueUrl"]
    dlq = client.get_queue_url(QueueName="kordiam-notifications-dlq")["QueueUrl"]
    dlq_attributes = client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["All"])["Attributes"]
    assert dlq_attributes["MessageRetentionPeriod"] == str(14 * 24 * 3600)
    assert dlq_attributes["QueueArn"] == "arn:aws:sqs:eu-central-1:000000000000:kordiam-notifications-dlq"

    # The worker's own start-up check, with the compose configuration pointed at this server and no dlq_url:
    # it must find the DLQ through the redrive policy the hook set.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "test")
    settings = compose_settings(compose, monkeypatch)
    queue_settings = settings.queue.model_copy(update={"url": queue, "endpoint_url": moto_server, "dlq_url": None})
    async with SqsTransport.connect(queue_settings) as transport:
        info = await transport.describe()
    assert info.has_redrive and info.max_receive_count == int(environment["BRIDGE_INIT_MAX_RECEIVE_COUNT"])
    assert info.dlq_url.rsplit("/", 1)[1] == "kordiam-notifications-dlq"
    assert urlparse(settings.queue.url).path == urlparse(queue).path  # the configured URL names this queue


def test_create_queues_fails_loudly_without_an_endpoint() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_create_queues(f"http://127.0.0.1:{port}", {"BRIDGE_INIT_WAIT_SECONDS": "1"})
    assert result.returncode != 0 and "not reachable" in result.stderr


# --- the webhook ingress ----------------------------------------------------------------------------------------


def ingress_settings(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    ingress = services(compose)["ingress"]
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)
    for key, value in ingress["environment"].items():
        if key.startswith("BRIDGE_"):
            monkeypatch.setenv(key, interpolate(str(value)))
    return load_settings(COMPOSE_DIR / "bridge.toml", model=IngressCommandSettings)


def test_ingress_runs_the_worker_image_and_config(compose: dict[str, Any]) -> None:
    found = services(compose)
    ingress, worker = found["ingress"], found["worker"]
    assert ingress["image"] == worker["image"] and ingress["build"] == worker["build"]
    assert ingress["command"] == ["ingress", "--config", "/etc/kordiam-bridge/bridge.toml"]
    config_mount = "./infra/compose/bridge.toml:/etc/kordiam-bridge/bridge.toml:ro"
    assert config_mount in ingress["volumes"] and config_mount in worker["volumes"]
    # PUT/DELETE ids are mapped back through the worker's SQLite state store: the same volume.
    assert "bridge-data:/var/lib/kordiam-bridge" in ingress["volumes"]
    assert ingress["read_only"] is True and ingress["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in ingress["security_opt"]


def test_ingress_listens_beyond_the_container_on_its_published_port(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ingress = services(compose)["ingress"]
    settings = ingress_settings(compose, monkeypatch)
    assert settings.ingress.host == "0.0.0.0"  # the default 127.0.0.1 is unreachable through the published port
    assert ingress["ports"] == [f"127.0.0.1:${{BRIDGE_INGRESS_PORT:-{settings.ingress.port}}}:{settings.ingress.port}"]
    assert ingress["healthcheck"]["test"] == ["CMD", "kordiam-bridge-healthcheck"]
    health_url = ingress["environment"]["BRIDGE_HEALTHCHECK_URL"]
    assert health_url == f"http://127.0.0.1:{settings.ingress.port}/healthz"
    # It sends to the queue the worker consumes, and sees the worker's state.
    worker = compose_settings(compose, monkeypatch)
    settings = ingress_settings(compose, monkeypatch)
    assert settings.queue.url == worker.queue.url and settings.queue.endpoint_url == worker.queue.endpoint_url
    assert settings.state.url == worker.state.url


def test_ingress_secrets_come_from_the_environment_only(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = services(compose)["ingress"]["environment"]
    for key in ("BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__TOKEN", "BRIDGE_INGRESS__PLATFORM__API_SECRET"):
        assert INTERPOLATION.match(str(environment[key])), f"{key} is hard-coded"
    # Neither secret is in the config file: without the environment the receivers do not validate.
    file_text = (COMPOSE_DIR / "bridge.toml").read_text()
    assert not re.search(r"^\s*(token|api_secret|secret)\s*=", file_text, re.MULTILINE)
    assert "token =" not in file_text and "api_secret =" not in file_text
    settings = ingress_settings(compose, monkeypatch)
    assert settings.ingress.global_export is not None and settings.ingress.platform is not None
    assert settings.ingress.global_export.auth.type == "bearer"
